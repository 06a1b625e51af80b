/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_events: POST /v1/events, events into driftlock.events.v1, answered after Kafka's acks. */
#include "services/ingest/ingest_events.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/dl_id.h"
#include "common/dl_log.h"
#include "common/dl_time.h"
#include "proto/proto_event.h"
#include "proto/proto_topics.h"
#include "services/ingest/ingest_auth.h"
#include "services/ingest/ingest_body.h"
#include "services/ingest/ingest_config.h"
#include "services/ingest/ingest_ratelimit.h"

#define ENVELOPE_OVERHEAD 512 /* the envelope's fixed members around a payload */
#define RETRY_AFTER_S "1"

/*
 * One request's life: authenticate (and the billing gate) -> parse the body -> take the
 * accepted events from the rate limits -> queue every accepted event to the producer -> wait
 * for a delivery report for each -> 202 only when all were acknowledged by Kafka (acks=all,
 * idempotent producer), else 503 with Retry-After.
 *
 * Before queuing anything the producer's queue is checked for room for the whole request, so a
 * full queue refuses the request as a whole (503) instead of leaving half of it queued. If a
 * produce still fails midway, the events already queued are waited for and the answer is 503:
 * a retry then sends those again, and events that carry a client "id" get the same event id,
 * which is how the detector drops the copy (docs/api.md).
 */

struct ingest_events {
	ingest_ctx *ctx;
	size_t inflight; /* posts waiting for deliveries */
	dl_metric *m_events;      /* ingest_events_total{result} */
	dl_metric *m_rejected;    /* ingest_events_rejected_total{reason} */
	dl_metric *m_queue;       /* ingest_producer_queue_depth */
	dl_metric *m_ack_seconds; /* ingest_kafka_ack_seconds */
	ingest_body_metrics body_metrics;
	char *envbuf; /* one envelope at a time (produce copies it), reused across requests */
	size_t envcap;
};

typedef struct ingest_post {
	ingest_events *ev;
	dl_http_req *req;
	ingest_body_batch batch;
	char org_id[37];
	int64_t received_ms;
	int64_t produce_start_ns;
	size_t total;   /* outcomes expected: one per accepted event */
	size_t acked;   /* delivery reports: success */
	size_t failed;  /* delivery reports: failure, or produce refused */
	char fail_reason[160];
	bool replied;
} ingest_post;

static void post_free(ingest_post *p)
{
	ingest_body_batch_free(&p->batch);
	free(p);
}

/* RFC 3339 text of ms, remembering the last one per slot: the receive time is the same for
 * every event of a request and event times repeat, while formatting is a printf each. */
static int format_ms(int slot, int64_t ms, char out[40])
{
	static __thread int64_t last_ms[2] = { INT64_MIN, INT64_MIN };
	static __thread char last[2][40];

	if (ms != last_ms[slot]) {
		if (dl_time_format_rfc3339(ms, last[slot], sizeof(last[slot]), NULL, 0) < 0)
			return -EINVAL;
		last_ms[slot] = ms;
	}
	memcpy(out, last[slot], sizeof(last[slot]));
	return 0;
}

size_t ingest_events_envelope(char *buf, size_t cap, const char *id, const char *org_id,
			      const char *stream, int64_t ts_ms, int64_t received_ms,
			      const char *payload, size_t payload_len)
{
	char ts[40], rx[40];
	int n;

	if (format_ms(0, ts_ms, ts) < 0 || format_ms(1, received_ms, rx) < 0)
		return 0;
	n = snprintf(buf, cap,
		     "{\"schema\":\"" PROTO_EVENT_SCHEMA "\",\"id\":\"%s\",\"org_id\":\"%s\","
		     "\"stream\":\"%s\",\"ts\":\"%s\",\"received_at\":\"%s\",\"source\":\"http\","
		     "\"payload\":",
		     id, org_id, stream, ts, rx);
	if (n < 0 || (size_t)n + payload_len + 2 > cap)
		return 0;
	memcpy(buf + n, payload, payload_len);
	buf[n + payload_len] = '}';
	buf[n + payload_len + 1] = '\0';
	return (size_t)n + payload_len + 1;
}

/* Adds the body's per-event rejections to obj as "rejected": [{index, code, reason}]. */
static int add_rejections(cJSON *obj, const ingest_body_batch *b)
{
	cJSON *arr = cJSON_AddArrayToObject(obj, "rejected");
	size_t i;

	if (!arr)
		return -ENOMEM;
	for (i = 0; i < b->nrejects; i++) {
		cJSON *r = cJSON_CreateObject();

		if (!r)
			return -ENOMEM;
		cJSON_AddItemToArray(arr, r);
		if (!cJSON_AddNumberToObject(r, "index", (double)b->rejects[i].index) ||
		    !cJSON_AddStringToObject(r, "code", b->rejects[i].code) ||
		    !cJSON_AddStringToObject(r, "reason", b->rejects[i].message))
			return -ENOMEM;
	}
	return 0;
}

static void count_rejections(ingest_events *ev, const ingest_body_batch *b)
{
	size_t i;

	for (i = 0; i < b->nrejects; i++) {
		const char *lv[] = { b->rejects[i].code };

		dl_metric_inc(ev->m_rejected, lv, 1);
	}
}

/* The final answer once every queued event has its delivery report. */
static void post_finish(ingest_post *p)
{
	ingest_events *ev = p->ev;
	double secs = (double)(dl_time_mono_ns() - p->produce_start_ns) / 1e9;

	dl_metric_observe(ev->m_ack_seconds, NULL, secs);
	ev->inflight--;
	if (p->failed > 0) {
		const char *lv[] = { "unavailable" };

		dl_metric_inc(ev->m_events, lv, (double)p->batch.nevents);
		dl_log_warn("events not acknowledged by Kafka", "org", p->org_id, "request_id",
			    dl_http_req_id(p->req), "reason", p->fail_reason);
		dl_http_req_set_header(p->req, "Retry-After", RETRY_AFTER_S);
		dl_http_reply_error(p->req, 503, "unavailable",
				    "Kafka did not acknowledge %zu of the %zu events (%s); retry the "
				    "request (events that carry an id are not duplicated by a retry)",
				    p->failed, p->batch.nevents, p->fail_reason);
	} else if (p->batch.nrejects == 0) {
		/* The common answer, without building a JSON tree (ids are A-Za-z0-9._:-). */
		const char *lv[] = { "accepted" };
		char body[256];
		int n = snprintf(body, sizeof(body),
				 "{\"accepted\":%zu,\"rejected\":[],\"request_id\":\"%s\"}",
				 p->acked, dl_http_req_id(p->req));

		dl_metric_inc(ev->m_events, lv, (double)p->acked);
		dl_http_reply_json_text(p->req, 202, body, (size_t)n);
	} else {
		const char *lv[] = { "accepted" };
		cJSON *body = cJSON_CreateObject();

		dl_metric_inc(ev->m_events, lv, (double)p->acked);
		if (!body || !cJSON_AddNumberToObject(body, "accepted", (double)p->acked) ||
		    add_rejections(body, &p->batch) < 0 ||
		    !cJSON_AddStringToObject(body, "request_id", dl_http_req_id(p->req))) {
			cJSON_Delete(body);
			dl_http_reply_error(p->req, 500, "internal_error", "out of memory");
		} else {
			dl_http_reply_json(p->req, 202, body);
			cJSON_Delete(body);
		}
	}
	post_free(p);
}

static void on_delivery(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	ingest_post *p = opaque;

	(void)partition;
	(void)offset;
	if (err) {
		if (!p->failed)
			snprintf(p->fail_reason, sizeof(p->fail_reason), "%s", rd_kafka_err2str(err));
		p->failed++;
	} else {
		p->acked++;
	}
	if (p->acked + p->failed == p->total)
		post_finish(p);
}

/* Derives the event id: from the client's id when it sent one (so a retry is the same event
 * downstream), else a new UUIDv7. */
static void event_id(const ingest_post *p, const ingest_body_event *e, char out[DL_ID_UUID_LEN + 1])
{
	char buf[37 + 1 + 129 + 1 + 129];
	int n;

	if (!e->client_id[0]) {
		dl_id_new(out);
		return;
	}
	n = snprintf(buf, sizeof(buf), "%s\n%s\n%s", p->org_id, e->stream, e->client_id);
	dl_id_derive("driftlock.event", buf, (size_t)n, out);
}

/* Queues every accepted event; the reply follows from the last delivery report. */
/* The rate limiter refused the request (and replied): only the batch is left to free. */
static void post_release(void *arg)
{
	post_free(arg);
}

static void post_produce(dl_http_req *req, void *arg)
{
	ingest_post *p = arg;
	ingest_events *ev = p->ev;
	const ingest_config *cfg = ev->ctx->cfg;
	size_t cap = (size_t)cfg->max_event_bytes + ENVELOPE_OVERHEAD, i;
	char *buf;
	int depth;

	(void)req;
	depth = dl_kafka_producer_queue_depth(ev->ctx->producer);
	dl_metric_set(ev->m_queue, NULL, depth);
	if (depth < 0 || (size_t)depth + p->batch.nevents > (size_t)cfg->producer_queue_max) {
		const char *lv[] = { "queue_full" };

		dl_metric_inc(ev->m_events, lv, (double)p->batch.nevents);
		dl_http_req_set_header(p->req, "Retry-After", RETRY_AFTER_S);
		dl_http_reply_error(p->req, 503, "overloaded",
				    "the event queue is full; nothing was accepted, retry later");
		post_free(p);
		return;
	}
	if (ev->envcap < cap) {
		buf = realloc(ev->envbuf, cap);
		if (!buf) {
			dl_http_reply_error(p->req, 500, "internal_error", "out of memory");
			post_free(p);
			return;
		}
		ev->envbuf = buf;
		ev->envcap = cap;
	}
	buf = ev->envbuf;
	ev->inflight++;
	p->produce_start_ns = dl_time_mono_ns();
	/* Delivery reports are served from the loop (dl_kafka_producer_poll), never inside
	 * produce, so none arrives before this function returns; total is final by then. */
	p->total = p->batch.nevents;
	for (i = 0; i < p->batch.nevents; i++) {
		const ingest_body_event *e = &p->batch.events[i];
		char id[DL_ID_UUID_LEN + 1], key[PROTO_STREAM_KEY_MAX + 1], errbuf[160];
		size_t keylen, len;
		int r;

		event_id(p, e, id);
		len = ingest_events_envelope(buf, cap, id, p->org_id, e->stream, e->ts_ms,
					     p->received_ms, e->payload, e->payload_len);
		if (!len ||
		    proto_topics_stream_key(p->org_id, e->stream, key, sizeof(key), &keylen, NULL,
					    0) < 0) {
			snprintf(p->fail_reason, sizeof(p->fail_reason), "envelope");
			p->failed += p->batch.nevents - i;
			break;
		}
		r = dl_kafka_producer_produce(ev->ctx->producer, DL_TOPIC_EVENTS, key, keylen, buf,
					      len, NULL, on_delivery, p, errbuf, sizeof(errbuf));
		if (r < 0) {
			snprintf(p->fail_reason, sizeof(p->fail_reason), "%s", errbuf);
			p->failed += p->batch.nevents - i;
			break;
		}
	}
	if (p->acked + p->failed == p->total)
		post_finish(p);
}

static void post_authenticated(dl_http_req *req, const ingest_principal *who, void *arg)
{
	ingest_events *ev = arg;
	const ingest_config *cfg = ev->ctx->cfg;
	ingest_body_limits lim = {
		.max_event_bytes = (size_t)cfg->max_event_bytes,
		.max_body_bytes = (size_t)cfg->max_body,
		.max_events = (size_t)cfg->max_events,
		.max_depth = (int)cfg->max_depth,
	};
	char code[32], errbuf[256];
	const char *body;
	size_t len;
	ingest_post *p;
	int status = 400, r;

	p = calloc(1, sizeof(*p));
	if (!p) {
		dl_http_reply_error(req, 500, "internal_error", "out of memory");
		return;
	}
	p->ev = ev;
	p->req = req;
	p->received_ms = dl_time_now_ms();
	snprintf(p->org_id, sizeof(p->org_id), "%s", who->org_id);
	body = dl_http_req_body(req, &len);
	r = ingest_body_parse(dl_http_req_header(req, "Content-Type"),
			      dl_http_req_header(req, "Content-Encoding"), body, len,
			      dl_http_req_query(req, "stream"), p->received_ms, &lim, &p->batch,
			      &status, code, sizeof(code), errbuf, sizeof(errbuf));
	if (r < 0) {
		const char *lv[] = { code };

		dl_metric_inc(ev->m_rejected, lv, 1);
		dl_http_reply_error(req, status, code, "%s", errbuf);
		post_free(p);
		return;
	}
	ingest_body_metrics_batch(&ev->body_metrics, &p->batch, len);
	count_rejections(ev, &p->batch);
	if (p->batch.nevents == 0) {
		cJSON *details = cJSON_CreateObject();

		if (details && add_rejections(details, &p->batch) == 0)
			dl_http_reply_error_details(req, 400, "no_valid_events",
						    cJSON_GetObjectItem(details, "rejected"),
						    "none of the %zu events is valid",
						    p->batch.nrejects);
		else
			dl_http_reply_error(req, 400, "no_valid_events", "no valid event");
		cJSON_Delete(details);
		post_free(p);
		return;
	}
	ingest_ratelimit_take(ev->ctx, req, who, (int64_t)p->batch.nevents, post_produce,
			      post_release, p);
}

static void post_events_cb(dl_http_req *req, void *opaque)
{
	ingest_events *ev = opaque;

	ingest_auth_request(ev->ctx, req, INGEST_AUTH_BILLING_GATE, post_authenticated, ev);
}

int ingest_events_new(ingest_ctx *ctx, char *errbuf, size_t errlen, ingest_events **ret)
{
	ingest_events *ev = calloc(1, sizeof(*ev));
	static const double ack_buckets[] = { .001, .002, .005, .01, .02, .05, .1, .25, .5, 1,
					      2.5, 5, 10, 30 };
	int r;

	if (!ev) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	ev->ctx = ctx;
	ev->m_events = dl_metrics_counter(ctx->metrics, "driftlock_ingest_events_total",
					  "Events of valid requests by outcome: accepted (acknowledged "
					  "by Kafka), unavailable (not acknowledged), queue_full.",
					  1, "result");
	ev->m_rejected = dl_metrics_counter(ctx->metrics, "driftlock_ingest_events_rejected_total",
					    "Events or bodies refused by validation, by reason code.",
					    1, "reason");
	ev->m_queue = dl_metrics_gauge(ctx->metrics, "driftlock_ingest_producer_queue_depth",
				       "Messages in the Kafka producer's queue, not yet acknowledged.",
				       0);
	ev->m_ack_seconds = dl_metrics_histogram(ctx->metrics, "driftlock_ingest_kafka_ack_seconds",
						 "Time from queuing a request's events to the last "
						 "acknowledgement.",
						 ack_buckets,
						 sizeof(ack_buckets) / sizeof(ack_buckets[0]), 0);
	if (!ev->m_events || !ev->m_rejected || !ev->m_queue || !ev->m_ack_seconds ||
	    ingest_body_metrics_init(&ev->body_metrics, ctx->metrics) < 0) {
		snprintf(errbuf, errlen, "cannot register the events metrics");
		free(ev);
		return -ENOMEM;
	}
	r = dl_http_route(ctx->http, "POST", "/v1/events", post_events_cb, ev, "/v1/events");
	if (r < 0) {
		snprintf(errbuf, errlen, "cannot register POST /v1/events");
		free(ev);
		return r;
	}
	*ret = ev;
	return 0;
}

size_t ingest_events_inflight(const ingest_events *ev)
{
	return ev ? ev->inflight : 0;
}

void ingest_events_free(ingest_events *ev)
{
	if (ev)
		free(ev->envbuf);
	free(ev);
}
