/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-ingest: the public HTTP front door (service shell: config, admin port, connections, public listener). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_http.h"
#include "common/dl_log.h"
#include "common/dl_main.h"
#include "common/dl_service.h"
#include "services/ingest/ingest.h"
#include "services/ingest/ingest_config.h"

#define INGEST_DRAIN_POLL_MS 50


static const dl_config_param ingest_params[] = {
	DL_SERVICE_CONFIG_PARAMS(ingest_config, svc, "9101"),
	DL_DEPS_PARAM_KAFKA(ingest_config, kafka_brokers),
	DL_DEPS_PARAM_PG(ingest_config, pg_dsn),
	DL_DEPS_PARAM_REDIS(ingest_config, redis_url),
	{ "DRIFTLOCK_INGEST_ADDR", DL_CONFIG_STRING, offsetof(ingest_config, http_addr), "127.0.0.1",
	  0, 0, NULL, "Address the public HTTP API listens on." },
	{ "DRIFTLOCK_INGEST_PORT", DL_CONFIG_INT, offsetof(ingest_config, http_port), "8080", 0,
	  65535, NULL, "Port of the public HTTP API (0 = any free port)." },
	{ "DRIFTLOCK_INGEST_MAX_BODY", DL_CONFIG_BYTES, offsetof(ingest_config, max_body), "8MiB",
	  1024, 256.0 * 1024 * 1024, NULL, "Largest request body accepted, after transfer decoding." },
	{ "DRIFTLOCK_INGEST_MAX_HEADER", DL_CONFIG_BYTES, offsetof(ingest_config, max_header),
	  "16KiB", 1024, 1024 * 1024, NULL, "Largest request line plus headers accepted." },
	{ "DRIFTLOCK_INGEST_MAX_CONNECTIONS", DL_CONFIG_INT,
	  offsetof(ingest_config, max_connections), "1024", 1, 100000, NULL,
	  "Client connections served at once; more are refused with 503." },
	{ "DRIFTLOCK_INGEST_REQUEST_TIMEOUT", DL_CONFIG_DURATION_MS,
	  offsetof(ingest_config, request_timeout_ms), "30s", 1000, 600000, NULL,
	  "Inactivity timeout of a client connection." },
	{ "DRIFTLOCK_INGEST_SSE_MAX_STREAMS", DL_CONFIG_INT,
	  offsetof(ingest_config, sse_max_streams), "1000", 1, 100000, NULL,
	  "Open GET /v1/stream/anomalies streams per process; more are refused with 503." },
	{ "DRIFTLOCK_INGEST_SSE_MAX_STREAMS_PER_ORG", DL_CONFIG_INT,
	  offsetof(ingest_config, sse_max_streams_per_org), "20", 1, 100000, NULL,
	  "Open anomaly streams per org and process; more are refused with 429." },
	{ "DRIFTLOCK_INGEST_SSE_HEARTBEAT", DL_CONFIG_DURATION_MS,
	  offsetof(ingest_config, sse_heartbeat_ms), "15s", 100, 300000, NULL,
	  "A heartbeat comment is sent on an anomaly stream after this much silence." },
	{ "DRIFTLOCK_INGEST_SSE_BUFFER", DL_CONFIG_BYTES, offsetof(ingest_config, sse_buffer_bytes),
	  "1MiB", 64 * 1024, 256.0 * 1024 * 1024, NULL,
	  "Bytes waiting for one stream client; a client further behind is disconnected." },
	{ "DRIFTLOCK_INGEST_SSE_REPLAY_MAX", DL_CONFIG_INT, offsetof(ingest_config, sse_replay_max),
	  "1000", 1, 10000, NULL,
	  "Anomalies replayed per connection after Last-Event-ID; the rest on the next reconnect." },
	{ "DRIFTLOCK_INGEST_SSE_RECENT", DL_CONFIG_INT, offsetof(ingest_config, sse_recent), "4096",
	  16, 1000000, NULL,
	  "Recent anomalies kept in memory to replay those metering has not stored yet." },
};

typedef struct ingest_state {
	dl_service *svc;
	dl_http_server *http;
	struct event *drain_timer;
} ingest_state;

/* Draining: stop accepting, then wait for the requests in flight (they may be waiting for
 * Kafka acknowledgements) before telling the service it may exit. */
static void ingest_drain_poll_cb(evutil_socket_t fd, short what, void *opaque)
{
	ingest_state *st = opaque;
	size_t inflight = dl_http_server_inflight(st->http);

	(void)fd;
	(void)what;
	if (inflight == 0) {
		event_del(st->drain_timer);
		dl_service_drained(st->svc);
	}
}

static void ingest_drain(dl_service *svc, void *opaque)
{
	ingest_state *st = opaque;
	struct timeval tv = { 0, INGEST_DRAIN_POLL_MS * 1000 };

	(void)svc;
	dl_http_server_stop_accepting(st->http);
	event_add(st->drain_timer, &tv);
}

static int ingest_setup(dl_service *svc, dl_deps *deps, void *cfgp, void **ret_state,
			char *errbuf, size_t errlen)
{
	ingest_config *cfg = cfgp;
	dl_http_limits limits = { 0 };
	ingest_state *st;
	char port[16];
	int r, bound = 0;

	(void)deps;
	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	st->svc = svc;
	limits.max_body_bytes = (size_t)cfg->max_body;
	limits.max_header_bytes = (size_t)cfg->max_header;
	limits.max_connections = (unsigned)cfg->max_connections;
	limits.request_timeout_s = (int)((cfg->request_timeout_ms + 999) / 1000);
	r = dl_http_server_new(dl_service_base(svc), &limits, errbuf, errlen, &st->http);
	if (r < 0)
		goto out_free_state;
	r = dl_http_server_listen(st->http, cfg->http_addr, (int)cfg->http_port, &bound);
	if (r < 0) {
		snprintf(errbuf, errlen, "public API cannot listen on %s:%lld", cfg->http_addr,
			 (long long)cfg->http_port);
		goto out_free_http;
	}
	st->drain_timer = event_new(dl_service_base(svc), -1, EV_PERSIST, ingest_drain_poll_cb, st);
	if (!st->drain_timer) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free_http;
	}
	dl_service_on_drain(svc, ingest_drain, st);
	snprintf(port, sizeof(port), "%d", bound);
	dl_log_info("public API listening", "addr", cfg->http_addr, "port", port);
	*ret_state = st;
	return 0;

out_free_http:
	dl_http_server_free(st->http);
out_free_state:
	free(st);
	return r;
}

static void ingest_teardown(void *opaque)
{
	ingest_state *st = opaque;

	if (!st)
		return;
	if (st->drain_timer)
		event_free(st->drain_timer);
	dl_http_server_free(st->http);
	free(st);
}

static const dl_main_spec ingest_spec = {
	.name = "ingest",
	.prog = "driftlock-ingest",
	.summary = "The public HTTP API: accepts events into driftlock.events.v1 and serves "
		   "anomalies, streams and usage.",
	.params = ingest_params,
	.nparams = sizeof(ingest_params) / sizeof(ingest_params[0]),
	.config_size = sizeof(ingest_config),
	.svc_offset = offsetof(ingest_config, svc),
	.kafka_offset = offsetof(ingest_config, kafka_brokers),
	.pg_offset = offsetof(ingest_config, pg_dsn),
	.redis_offset = offsetof(ingest_config, redis_url),
	.setup = ingest_setup,
	.teardown = ingest_teardown,
};

int main(int argc, char **argv)
{
	return dl_main_run(&ingest_spec, argc, argv);
}
