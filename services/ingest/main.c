/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-ingest: the public HTTP front door: wires the configuration, connections and modules. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_http.h"
#include "common/dl_log.h"
#include "common/dl_main.h"
#include "common/dl_metrics.h"
#include "common/dl_pgpool.h"
#include "common/dl_service.h"
#include "services/ingest/ingest.h"
#include "services/ingest/ingest_config.h"
#include "services/ingest/ingest_auth.h"
#include "services/ingest/ingest_body.h"
#include "services/ingest/ingest_events.h"
#include "services/ingest/ingest_ratelimit.h"
#include "services/ingest/ingest_usage.h"
#include "services/ingest/ingest_read.h"
#include "services/ingest/ingest_sse.h"

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
	{ "DRIFTLOCK_INGEST_REUSEPORT", DL_CONFIG_BOOL, offsetof(ingest_config, reuseport), "false",
	  0, 0, NULL,
	  "Listen with SO_REUSEPORT so several ingest processes on one host share the public "
	  "port (the kernel spreads connections); each process is one event loop." },
	{ "DRIFTLOCK_INGEST_CORS_ORIGINS", DL_CONFIG_STRING, offsetof(ingest_config, cors_origins), "",
	  0, 4096, NULL,
	  "Browser origins allowed to call the API (comma-separated, exact, e.g. "
	  "https://console.example.com); empty turns CORS off." },
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
	{ "DRIFTLOCK_API_KEY_SECRET", DL_CONFIG_SECRET, offsetof(ingest_config, api_key_secret),
	  NULL, 32, 1024, NULL,
	  "Server secret keying the API key hashes (HMAC-SHA-256), at least 32 bytes; the same "
	  "for every replica and driftlock-admin. Required." },
	{ "DRIFTLOCK_INGEST_AUTH_CACHE_TTL", DL_CONFIG_DURATION_MS,
	  offsetof(ingest_config, auth_cache_ttl_ms), "10s", 100, 30000, NULL,
	  "How long a checked API key is trusted before it is checked again (a revoked key "
	  "stops working within it)." },
	{ "DRIFTLOCK_INGEST_AUTH_NEGATIVE_TTL", DL_CONFIG_DURATION_MS,
	  offsetof(ingest_config, auth_negative_ttl_ms), "5s", 100, 30000, NULL,
	  "How long an unknown or revoked API key is answered 401 from the cache (capped at "
	  "the cache TTL)." },
	{ "DRIFTLOCK_INGEST_AUTH_CACHE_KEYS", DL_CONFIG_INT,
	  offsetof(ingest_config, auth_cache_keys), "10000", 16, 10000000, NULL,
	  "Valid API keys cached (least recently used evicted); a quarter as many bad ones." },
	{ "DRIFTLOCK_INGEST_RATELIMIT_LEASE", DL_CONFIG_DURATION_MS,
	  offsetof(ingest_config, rl_lease_ms), "100ms", 1, 1000, NULL,
	  "Rate limit tokens a replica takes from Redis per call, as this much of the plan's "
	  "rate (fewer Redis calls, coarser sharing)." },
	{ "DRIFTLOCK_INGEST_RATELIMIT_TIMEOUT", DL_CONFIG_DURATION_MS,
	  offsetof(ingest_config, rl_timeout_ms), "250ms", 10, 10000, NULL,
	  "Redis deadline for a rate limit call; past it the limiter fails open to a local "
	  "per-replica limit." },
	{ "DRIFTLOCK_INGEST_MAX_EVENT", DL_CONFIG_BYTES, offsetof(ingest_config, max_event_bytes),
	  "64KiB", 256, INGEST_BODY_EVENT_BYTES_CAP, NULL,
	  "Largest single event (its JSON text) accepted by POST /v1/events." },
	{ "DRIFTLOCK_INGEST_MAX_EVENTS", DL_CONFIG_INT, offsetof(ingest_config, max_events), "10000",
	  1, 1000000, NULL, "Most events in one POST /v1/events request." },
	{ "DRIFTLOCK_INGEST_MAX_DEPTH", DL_CONFIG_INT, offsetof(ingest_config, max_depth), "31", 2,
	  31, NULL, "Deepest JSON nesting of one event (the event object is level 1)." },
	{ "DRIFTLOCK_INGEST_PRODUCER_QUEUE", DL_CONFIG_INT,
	  offsetof(ingest_config, producer_queue_max), "200000", 1000, 10000000, NULL,
	  "Events waiting for Kafka's acknowledgement; a request that does not fit gets 503." },
	{ "DRIFTLOCK_INGEST_PRODUCE_TIMEOUT", DL_CONFIG_DURATION_MS,
	  offsetof(ingest_config, produce_timeout_ms), "10s", 1000, 300000, NULL,
	  "How long an event may wait for Kafka before its request is answered 503." },
	{ "DRIFTLOCK_INGEST_LINGER", DL_CONFIG_DURATION_MS, offsetof(ingest_config, linger_ms), "2ms",
	  0, 1000, NULL, "How long the producer waits to fill a batch (latency against throughput)." },
	{ "DRIFTLOCK_INGEST_DB_THREADS", DL_CONFIG_INT, offsetof(ingest_config, db_threads), "4", 1,
	  64, NULL, "PostgreSQL connections (one worker thread each) for the read API and key look-ups." },
	{ "DRIFTLOCK_INGEST_DB_QUEUE", DL_CONFIG_INT, offsetof(ingest_config, db_queue), "1024", 1,
	  1000000, NULL, "Database jobs waiting for a connection; beyond it requests get 503." },
	{ "DRIFTLOCK_INGEST_DB_STATEMENT_TIMEOUT", DL_CONFIG_DURATION_MS,
	  offsetof(ingest_config, db_statement_timeout_ms), "5s", 100, 600000, NULL,
	  "Longest a read API query may run." },
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
	ingest_ctx ctx;
	ingest_events *events;
	struct event *drain_timer;
	dl_metric *m_requests; /* ingest_http_requests_total{route,method,status} */
	dl_metric *m_seconds;  /* ingest_http_request_seconds{route} */
	dl_metric *m_db_pending;
} ingest_state;

/* librdkafka settings from the config, kept until exit (dl_main_spec.kafka_conf). */
static char conf_timeout[24], conf_linger[24], conf_queue[24];
static const char *conf_pairs[] = {
	"message.timeout.ms", conf_timeout,
	"linger.ms", conf_linger,
	"queue.buffering.max.messages", conf_queue,
	NULL,
};

static const char *const *ingest_kafka_conf(const void *cfgp)
{
	const ingest_config *cfg = cfgp;

	snprintf(conf_timeout, sizeof(conf_timeout), "%lld", (long long)cfg->produce_timeout_ms);
	snprintf(conf_linger, sizeof(conf_linger), "%lld", (long long)cfg->linger_ms);
	/* librdkafka's own cap sits above ours, so our check answers 503 before it refuses. */
	snprintf(conf_queue, sizeof(conf_queue), "%lld", (long long)cfg->producer_queue_max * 2);
	return conf_pairs;
}

static void ingest_observe(const char *route, const char *method, int status, double secs,
			   const char *request_id, void *opaque)
{
	ingest_state *st = opaque;
	char code[8];
	const char *lv[] = { route, method, code };
	const char *rv[] = { route, code };

	(void)request_id;
	snprintf(code, sizeof(code), "%d", status);
	dl_metric_inc(st->m_requests, lv, 1);
	dl_metric_observe(st->m_seconds, rv, secs);
}

/* Draining: stop accepting, then wait for the requests in flight (they may be waiting for
 * Kafka acknowledgements or the database) before telling the service it may exit. */
static void ingest_drain_poll_cb(evutil_socket_t fd, short what, void *opaque)
{
	ingest_state *st = opaque;
	size_t inflight = dl_http_server_inflight(st->ctx.http);

	(void)fd;
	(void)what;
	dl_metric_set(st->m_db_pending, NULL, (double)dl_pgpool_pending(st->ctx.db));
	if (inflight == 0 && ingest_events_inflight(st->events) == 0 &&
	    dl_pgpool_pending(st->ctx.db) == 0) {
		event_del(st->drain_timer);
		dl_service_drained(st->ctx.svc);
	}
}

static void ingest_drain(dl_service *svc, void *opaque)
{
	ingest_state *st = opaque;
	struct timeval tv = { 0, INGEST_DRAIN_POLL_MS * 1000 };

	(void)svc;
	dl_http_server_stop_accepting(st->ctx.http);
	ingest_sse_drain(st->ctx.sse); /* open streams would hold the drain forever */
	event_add(st->drain_timer, &tv);
}

static int ingest_metrics_new(ingest_state *st)
{
	static const double buckets[] = { .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1,
					  2.5, 5, 10 };

	st->m_requests = dl_metrics_counter(st->ctx.metrics, "driftlock_ingest_http_requests_total",
					    "Public API requests finished, by route, method and "
					    "status (499: the client went away).",
					    3, "route", "method", "status");
	st->m_seconds = dl_metrics_histogram(st->ctx.metrics, "driftlock_ingest_http_request_seconds",
					     "Public API request latency by route and status.",
					     buckets, sizeof(buckets) / sizeof(buckets[0]), 2, "route",
					     "status");
	st->m_db_pending = dl_metrics_gauge(st->ctx.metrics, "driftlock_ingest_db_jobs_pending",
					    "Database jobs queued or running.", 0);
	return st->m_requests && st->m_seconds && st->m_db_pending ? 0 : -ENOMEM;
}

/* Splits the comma-separated allow-list into dl_http's CORS origins. */
static int ingest_set_cors(dl_http_server *http, const char *list, char *errbuf, size_t errlen)
{
	const char *origins[64];
	char *copy, *save = NULL, *tok;
	size_t n = 0;
	int r;

	if (!list || !*list)
		return 0;
	copy = strdup(list);
	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		if (n == sizeof(origins) / sizeof(origins[0])) {
			snprintf(errbuf, errlen, "DRIFTLOCK_INGEST_CORS_ORIGINS: more than %zu origins",
				 n);
			free(copy);
			return -EINVAL;
		}
		origins[n++] = tok;
	}
	r = dl_http_server_set_cors(http, origins, n, NULL);
	if (r < 0)
		snprintf(errbuf, errlen, "DRIFTLOCK_INGEST_CORS_ORIGINS: invalid origin list");
	free(copy);
	return r;
}

static int ingest_setup(dl_service *svc, dl_deps *deps, void *cfgp, void **ret_state,
			char *errbuf, size_t errlen)
{
	ingest_config *cfg = cfgp;
	dl_http_limits limits = { 0 };
	dl_pg_options pgo = { 0 };
	ingest_state *st;
	char port[16];
	int r, bound = 0;

	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	st->ctx.cfg = cfg;
	st->ctx.svc = svc;
	st->ctx.base = dl_service_base(svc);
	st->ctx.metrics = dl_service_metrics(svc);
	st->ctx.producer = dl_deps_kafka(deps);
	r = ingest_metrics_new(st);
	if (r < 0) {
		snprintf(errbuf, errlen, "cannot register metrics");
		goto out_free_state;
	}
	limits.max_body_bytes = (size_t)cfg->max_body;
	limits.max_header_bytes = (size_t)cfg->max_header;
	limits.max_connections = (unsigned)cfg->max_connections;
	limits.request_timeout_s = (int)((cfg->request_timeout_ms + 999) / 1000);
	r = dl_http_server_new(st->ctx.base, &limits, errbuf, errlen, &st->ctx.http);
	if (r < 0)
		goto out_free_state;
	dl_http_server_set_observer(st->ctx.http, ingest_observe, st);
	r = ingest_set_cors(st->ctx.http, cfg->cors_origins, errbuf, errlen);
	if (r < 0)
		goto out_free_http;
	pgo.statement_timeout_ms = (int)cfg->db_statement_timeout_ms;
	pgo.application_name = "driftlock-ingest";
	r = dl_pgpool_new(st->ctx.base, cfg->pg_dsn, &pgo, (int)cfg->db_threads,
			  (size_t)cfg->db_queue, errbuf, errlen, &st->ctx.db);
	if (r < 0)
		goto out_free_http;
	r = ingest_auth_new(st->ctx.db, st->ctx.metrics,
			    &(ingest_auth_options){
				    .secret = cfg->api_key_secret,
				    .secret_len = strlen(cfg->api_key_secret),
				    .ttl_ms = cfg->auth_cache_ttl_ms,
				    .negative_ttl_ms = cfg->auth_negative_ttl_ms,
				    .max_keys = (size_t)cfg->auth_cache_keys,
			    },
			    errbuf, errlen, &st->ctx.auth);
	if (r < 0)
		goto out_free_db;
	r = ingest_ratelimit_new(st->ctx.base, st->ctx.metrics,
				 &(ingest_ratelimit_options){
					 .redis_url = cfg->redis_url,
					 .lease_ms = cfg->rl_lease_ms,
					 .timeout_ms = cfg->rl_timeout_ms,
					 .max_keys = (size_t)cfg->auth_cache_keys,
				 },
				 errbuf, errlen, &st->ctx.rl);
	if (r < 0)
		goto out_free_auth;
	/* The quota gate and GET /v1/usage read metering's live counts on the limiter's
	 * Redis connection. */
	r = ingest_usage_new(st->ctx.rl, st->ctx.metrics, &st->ctx.usage, errbuf, errlen);
	if (r < 0)
		goto out_free_rl;
	ingest_auth_set_usage(st->ctx.auth, st->ctx.usage);
	r = ingest_events_new(&st->ctx, errbuf, errlen, &st->events);
	if (r < 0)
		goto out_free_usage;
	r = ingest_read_register(&st->ctx, errbuf, errlen);
	if (r < 0)
		goto out_free_events;
	r = ingest_sse_new(&st->ctx, errbuf, errlen, &st->ctx.sse);
	if (r < 0)
		goto out_free_events;
	dl_http_server_set_reuseport(st->ctx.http, cfg->reuseport);
	r = dl_http_server_listen(st->ctx.http, cfg->http_addr, (int)cfg->http_port, &bound);
	if (r < 0) {
		snprintf(errbuf, errlen, "public API cannot listen on %s:%lld", cfg->http_addr,
			 (long long)cfg->http_port);
		goto out_free_sse;
	}
	st->drain_timer = event_new(st->ctx.base, -1, EV_PERSIST, ingest_drain_poll_cb, st);
	if (!st->drain_timer) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free_sse;
	}
	dl_service_on_drain(svc, ingest_drain, st);
	snprintf(port, sizeof(port), "%d", bound);
	dl_log_info("public API listening", "addr", cfg->http_addr, "port", port);
	/* One line per route: what operators (and the OpenAPI check) see this build serve. */
	for (size_t i = 0; i < dl_http_server_nroutes(st->ctx.http); i++) {
		const char *method, *pattern;

		if (dl_http_server_route(st->ctx.http, i, &method, &pattern) == 0)
			dl_log_info("public API route", "method", method, "pattern", pattern);
	}
	*ret_state = st;
	return 0;

out_free_sse:
	ingest_sse_free(st->ctx.sse);
out_free_events:
	ingest_events_free(st->events);
out_free_usage:
	ingest_usage_free(st->ctx.usage);
out_free_rl:
	ingest_ratelimit_free(st->ctx.rl);
out_free_auth:
	ingest_auth_free(st->ctx.auth);
out_free_db:
	dl_pgpool_free(st->ctx.db);
out_free_http:
	dl_http_server_free(st->ctx.http);
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
	ingest_sse_free(st->ctx.sse);
	/* Before the server: what waits on it is still answered on live requests. */
	ingest_usage_free(st->ctx.usage);
	dl_http_server_free(st->ctx.http);
	ingest_events_free(st->events);
	ingest_ratelimit_free(st->ctx.rl);
	ingest_auth_free(st->ctx.auth);
	dl_pgpool_free(st->ctx.db);
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
	.kafka_conf = ingest_kafka_conf,
	.setup = ingest_setup,
	.teardown = ingest_teardown,
};

int main(int argc, char **argv)
{
	return dl_main_run(&ingest_spec, argc, argv);
}
