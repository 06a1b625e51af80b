/* SPDX-License-Identifier: Apache-2.0 */
/* det_pipeline: the detector's consumer loop: events in, one CBAD detector per stream, anomalies
 * and dead letters out, offsets committed once what they cover is durable. */
#include "services/detector/det_pipeline.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_id.h"
#include "common/dl_log.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_dlq.h"
#include "proto/proto_event.h"
#include "proto/proto_topics.h"
#include "services/detector/det_anomaly.h"

#define DET_TICK_MS 100
#define DET_BUCKETS 4096
#define DET_IDLE_PER_TURN 16
#define DET_MAX_PARTITIONS 100000
#define DET_LOG_EVERY_MS 10000
#define DET_LOOKUP_RETRY_MS 1000 /* a failed settings or key look-up is asked again after this */
#define DET_DIRECT_ID_NS "driftlock.detector.direct_event.v1"

/*
 * Delivery and checkpoints.
 *
 * Every anomaly and dead letter is produced with a det_out record that lives until Kafka
 * acknowledged it; a failed delivery is produced again (the producer is idempotent and anomaly
 * ids are derived, so a duplicate is harmless), and while any record waits for a retry no new
 * message is taken. A checkpoint is a barrier: processing stops until every record was
 * acknowledged, then every stream changed since the last checkpoint is snapshotted in one
 * pipelined write with the offset its partition reached, and only then are those offsets
 * committed. On a crash the next owner replays from the last commit; a stream whose snapshot
 * already covers an event (its offset is below the snapshot's next_offset) skips it, so no event
 * is judged twice by one detector and none of its anomalies was unacknowledged when the
 * snapshot was written.
 */

typedef struct det_stream {
	struct det_stream *next;      /* hash chain */
	struct det_stream *idle_next; /* streams whose cbad idle work is pending */
	bool idle_queued;
	char key[PROTO_STREAM_KEY_MAX + 1];
	char org_id[PROTO_ORG_ID_LEN + 1];
	char stream[PROTO_STREAM_MAX + 1];
	cbad_detector *d;
	int32_t partition;
	int64_t skip_below; /* events below this offset are already in the restored state */
	bool dirty;
	bool paused; /* the user paused the stream: its events are skipped */
	bool status_queued; /* processed events not yet reported to det_settings */
	struct det_stream *status_next;
	int64_t last_event_ms; /* event time of the last processed event */
	int64_t last_seen_ms; /* monotonic */
} det_stream;

/* A look-up the held message waits for (a new stream's settings, a direct producer's key). */
enum det_lookup { DET_LOOKUP_NONE, DET_LOOKUP_INFLIGHT, DET_LOOKUP_DONE };

typedef struct det_part {
	bool assigned;
	int64_t processed_next; /* next offset to process; -1 before the first message */
	int64_t committed;
} det_part;

typedef struct det_out {
	struct det_out *next; /* retry list */
	det_pipeline *p;
	const char *topic;
	char *key;
	size_t keylen;
	char *value;
	size_t len;
} det_out;

enum det_phase { DET_RUNNING, DET_BARRIER, DET_CLOSED };

struct det_pipeline {
	struct event_base *base;
	dl_kafka_producer *producer;
	dl_kafka_consumer *consumer;
	det_pipeline_store store;
	det_pipeline_options opts;
	cbad_settings defaults;
	char topic[PROTO_DLQ_TOPIC_MAX + 1];

	struct event *wake_ev, *work_ev, *tick_ev;
	enum det_phase phase;
	int64_t barrier_started_ms, last_checkpoint_ms;
	bool draining;
	bool freeing; /* det_pipeline_free: revocations save nothing */
	void (*drain_done)(void *opaque);
	void *drain_opaque;

	det_stream *buckets[DET_BUCKETS];
	size_t nstreams;
	det_stream *idle_head;

	det_part *parts;
	size_t nparts;

	int64_t last_unavailable_log_ms; /* one warning per DET_LOG_EVERY_MS while waiting */
	size_t inflight; /* det_out records not yet acknowledged */
	det_out *retry_head;
	rd_kafka_message_t *held; /* taken but not processed: its stream's state is unavailable */

	/* The settings of the stream key (org_id:stream) a held message waits for. */
	struct {
		enum det_lookup state;
		char key[PROTO_STREAM_KEY_MAX + 1];
		int rc;
		cbad_settings s;
		bool paused;
		int64_t retry_at_ms;
	} sl;
	/* The org of the API key of the direct producer's message (partition, offset). */
	struct {
		enum det_lookup state;
		int32_t partition;
		int64_t offset;
		int rc;
		char org_id[PROTO_ORG_ID_LEN + 1];
		int64_t retry_at_ms;
	} kc;
	det_stream *status_head; /* streams with status to report */

	size_t nassigned;
	dl_metric *m_partitions;
	dl_metric *m_events, *m_anomalies, *m_dlq, *m_streams, *m_memory, *m_checkpoints,
		*m_checkpoint_seconds, *m_retries, *m_evictions, *m_inflight;
};

static int64_t mono_ms(void)
{
	return dl_time_mono_ns() / 1000000;
}

static size_t hash_key(const char *k)
{
	uint64_t h = 1469598103934665603ull;

	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 1099511628211ull;
	return (size_t)(h % DET_BUCKETS);
}

static det_stream *stream_find(det_pipeline *p, const char *key)
{
	for (det_stream *s = p->buckets[hash_key(key)]; s; s = s->next)
		if (strcmp(s->key, key) == 0)
			return s;
	return NULL;
}

static void stream_unlink_idle(det_pipeline *p, det_stream *s)
{
	for (det_stream **pp = &p->idle_head; *pp; pp = &(*pp)->idle_next) {
		if (*pp == s) {
			*pp = s->idle_next;
			break;
		}
	}
	s->idle_queued = false;
}

/* Reports s's status to det_settings (buffered there, written in batches). */
static void stream_report(det_pipeline *p, det_stream *s)
{
	cbad_status st;

	if (!p->opts.settings || p->freeing || !s->d)
		return;
	cbad_detector_status(s->d, &st);
	det_settings_status(p->opts.settings, s->org_id, s->stream, &st, s->last_event_ms);
}

static void stream_unlink_status(det_pipeline *p, det_stream *s)
{
	for (det_stream **pp = &p->status_head; *pp; pp = &(*pp)->status_next) {
		if (*pp == s) {
			*pp = s->status_next;
			break;
		}
	}
	s->status_queued = false;
	stream_report(p, s);
}

/* Reports the status of every stream that processed events since the last report. */
static void status_report(det_pipeline *p)
{
	while (p->status_head) {
		det_stream *s = p->status_head;

		p->status_head = s->status_next;
		s->status_queued = false;
		stream_report(p, s);
	}
}

/* Stops watching the settings of a stream leaving memory (evicted or revoked). */
static void stream_forget(det_pipeline *p, det_stream *s)
{
	if (s->status_queued)
		stream_unlink_status(p, s); /* its last status first */
	if (p->opts.settings && !p->freeing)
		det_settings_forget(p->opts.settings, s->org_id, s->stream);
}

static void stream_free(det_pipeline *p, det_stream *s)
{
	det_stream **pp = &p->buckets[hash_key(s->key)];

	while (*pp && *pp != s)
		pp = &(*pp)->next;
	if (*pp)
		*pp = s->next;
	if (s->idle_queued)
		stream_unlink_idle(p, s);
	if (s->status_queued)
		stream_unlink_status(p, s);
	cbad_detector_free(s->d);
	free(s);
	p->nstreams--;
	dl_metric_set(p->m_streams, NULL, (double)p->nstreams);
}

static det_part *part_get(det_pipeline *p, int32_t partition)
{
	if (partition < 0 || partition >= DET_MAX_PARTITIONS)
		return NULL;
	if ((size_t)partition >= p->nparts) {
		size_t n = (size_t)partition + 1;
		det_part *np = realloc(p->parts, n * sizeof(*np));

		if (!np)
			return NULL;
		for (size_t i = p->nparts; i < n; i++)
			np[i] = (det_part){ .assigned = false, .processed_next = -1, .committed = -1 };
		p->parts = np;
		p->nparts = n;
	}
	return &p->parts[partition];
}

/* ---- producing ---- */

static void out_free(det_out *o)
{
	if (!o)
		return;
	free(o->key);
	free(o->value);
	free(o);
}

static void on_delivery(void *opaque, rd_kafka_resp_err_t err, int32_t partition, int64_t offset)
{
	det_out *o = opaque;
	det_pipeline *p = o->p;

	(void)partition;
	(void)offset;
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		p->inflight--;
		out_free(o);
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
		/* The producer is going away: nothing was committed past this record. */
		p->inflight--;
		out_free(o);
		return;
	}
	dl_log_warn("produce failed, retrying", "topic", o->topic, "error", rd_kafka_err2str(err));
	dl_metric_inc(p->m_retries, NULL, 1);
	o->next = p->retry_head;
	p->retry_head = o;
}

/* Produces o (taking it); on a transient failure it waits in the retry list. */
static void out_send(det_pipeline *p, det_out *o)
{
	char err[256] = "";
	int r = dl_kafka_producer_produce(p->producer, o->topic, o->key, o->keylen, o->value,
					  o->len, NULL, on_delivery, o, err, sizeof(err));

	if (r == 0)
		return;
	if (r == -EMSGSIZE || r == -ENOENT) {
		/* Permanent: the record can never be written; say so loudly and let go of it. */
		dl_log_error("produce refused, record dropped", "topic", o->topic, "error", err);
		p->inflight--;
		out_free(o);
		return;
	}
	dl_metric_inc(p->m_retries, NULL, 1);
	o->next = p->retry_head;
	p->retry_head = o;
}

static void retry_flush(det_pipeline *p)
{
	det_out *list = p->retry_head;

	p->retry_head = NULL;
	while (list) {
		det_out *o = list;

		list = o->next;
		o->next = NULL;
		out_send(p, o);
	}
}

/* Queues value (taken) for topic with a copy of key. Returns 0 or -ENOMEM. */
static int out_queue(det_pipeline *p, const char *topic, const void *key, size_t keylen,
		     char *value, size_t len)
{
	det_out *o = calloc(1, sizeof(*o));

	if (!o) {
		free(value);
		return -ENOMEM;
	}
	if (keylen) {
		o->key = malloc(keylen);
		if (!o->key) {
			free(o);
			free(value);
			return -ENOMEM;
		}
		memcpy(o->key, key, keylen);
	}
	o->p = p;
	o->topic = topic;
	o->keylen = keylen;
	o->value = value;
	o->len = len;
	p->inflight++;
	out_send(p, o);
	return 0;
}

/* ---- dead letters ---- */

static void dead_letter(det_pipeline *p, const rd_kafka_message_t *msg, const char *code,
			const char *why)
{
	struct proto_dlq d;
	rd_kafka_headers_t *hdrs = NULL;
	struct proto_dlq_header h[PROTO_DLQ_HEADERS_MAX];
	const char *labels[] = { code };
	char *json = NULL, err[256] = "", off[24], part[16];
	size_t len = 0;

	memset(&d, 0, sizeof(d));
	memset(h, 0, sizeof(h));
	snprintf(d.source_topic, sizeof(d.source_topic), "%s", p->topic);
	d.source_partition = msg->partition;
	d.source_offset = msg->offset;
	d.has_key = msg->key != NULL;
	d.key = msg->key;
	d.key_len = msg->key_len <= PROTO_DLQ_KEY_MAX ? msg->key_len : PROTO_DLQ_KEY_MAX;
	/* Bytes beyond the dead letter's own limit are cut; the reason says how long it was. */
	d.value = msg->payload;
	d.value_len = msg->len <= PROTO_DLQ_VALUE_MAX ? msg->len : PROTO_DLQ_VALUE_MAX;
	if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
		const char *name;
		const void *val;
		size_t vlen;

		for (size_t i = 0; d.nheaders < PROTO_DLQ_HEADERS_MAX &&
				   rd_kafka_header_get_all(hdrs, i, &name, &val, &vlen) ==
					   RD_KAFKA_RESP_ERR_NO_ERROR;
		     i++) {
			struct proto_dlq_header *x = &h[d.nheaders];

			if (!*name || strlen(name) > PROTO_DLQ_HEADER_KEY_MAX)
				continue;
			snprintf(x->key, sizeof(x->key), "%s", name);
			x->has_value = val != NULL;
			x->value = (uint8_t *)val;
			x->value_len = vlen <= PROTO_DLQ_HEADER_VALUE_MAX ? vlen
									  : PROTO_DLQ_HEADER_VALUE_MAX;
			d.nheaders++;
		}
	}
	d.headers = d.nheaders ? h : NULL;
	snprintf(d.reason_code, sizeof(d.reason_code), "%s", code);
	snprintf(d.reason_message, sizeof(d.reason_message), "%.1000s", why && *why ? why : code);
	snprintf(d.service, sizeof(d.service), "detector");
	d.failed_at_ms = dl_time_now_ms();
	snprintf(off, sizeof(off), "%lld", (long long)msg->offset);
	snprintf(part, sizeof(part), "%d", (int)msg->partition);
	dl_metric_inc(p->m_dlq, labels, 1);
	if (proto_dlq_encode(&d, &json, &len, err, sizeof(err)) < 0) {
		/* Header text that is not valid UTF-8 is the likely cause: retry without them. */
		d.nheaders = 0;
		d.headers = NULL;
		if (proto_dlq_encode(&d, &json, &len, err, sizeof(err)) < 0) {
			dl_log_error("dead letter cannot be encoded, message skipped", "partition",
				     part, "offset", off, "reason", code, "error", err);
			return;
		}
	}
	dl_log_warn("message sent to the dead-letter topic", "partition", part, "offset", off,
		    "reason", code, "detail", d.reason_message);
	out_queue(p, DL_TOPIC_DLQ, msg->key, msg->key ? msg->key_len : 0, json, len);
}

static const char *decode_reason(int rc, const char *err)
{
	if (rc == -EMSGSIZE)
		return "too_large";
	if (strncmp(err, "event: ", 7) == 0)
		return "malformed_json";
	if (strncmp(err, "event.schema:", 13) == 0)
		return "schema_mismatch";
	return "invalid_event";
}

/* ---- streams ---- */

/* True when a and b differ only in their sensitivity (which a detector changes live). */
static bool settings_same_structure(const cbad_settings *a, const cbad_settings *b)
{
	if (a->baseline_events != b->baseline_events || a->baseline_bytes != b->baseline_bytes ||
	    a->window_events != b->window_events || a->hop_events != b->hop_events ||
	    a->zstd_level != b->zstd_level || a->mask != b->mask ||
	    a->max_event_bytes != b->max_event_bytes || a->max_entities != b->max_entities ||
	    a->nentity_fields != b->nentity_fields || a->nvalue_fields != b->nvalue_fields ||
	    a->seed != b->seed)
		return false;
	for (size_t i = 0; i < a->nentity_fields && i < CBAD_MAX_ENTITY_FIELDS; i++)
		if (strncmp(a->entity_fields[i], b->entity_fields[i], CBAD_FIELD_NAME_MAX) != 0)
			return false;
	for (size_t i = 0; i < a->nvalue_fields && i < CBAD_MAX_VALUE_FIELDS; i++)
		if (strncmp(a->value_fields[i], b->value_fields[i], CBAD_FIELD_NAME_MAX) != 0)
			return false;
	return true;
}

/*
 * Brings s's detector to cfg: the sensitivity in place (learned state kept); any other change
 * (windows, baseline, entity or value fields, masks...) needs a new detector, which calibrates
 * again. why says what triggered it, for the log. Returns 0 or a negative errno (the detector is
 * kept then).
 */
static int stream_apply(det_pipeline *p, det_stream *s, const cbad_settings *cfg, const char *why)
{
	const cbad_settings *cur = cbad_detector_settings(s->d);
	cbad_detector *nd = NULL;
	char err[256] = "", sens[32];
	int r;

	(void)p;
	if (settings_same_structure(cur, cfg)) {
		if (cur->sensitivity == cfg->sensitivity)
			return 0;
		r = cbad_detector_set_sensitivity(s->d, cfg->sensitivity);
		if (r < 0)
			return r;
		s->dirty = true;
		snprintf(sens, sizeof(sens), "%.3f", cfg->sensitivity);
		dl_log_info("stream sensitivity changed", "org", s->org_id, "stream", s->stream,
			    "sensitivity", sens, "cause", why);
		return 0;
	}
	r = cbad_detector_new(cfg, &nd, err, sizeof(err));
	if (r < 0) {
		dl_log_error("stream settings changed but no detector can be made from them; the "
			     "old one is kept",
			     "org", s->org_id, "stream", s->stream, "error", err);
		return r;
	}
	cbad_detector_free(s->d);
	s->d = nd;
	s->dirty = true;
	dl_log_info("stream settings changed: new detector, calibrating again", "org", s->org_id,
		    "stream", s->stream, "cause", why);
	return 0;
}

/* The stream of ev, restored from its snapshot or created, on settings cfg. Returns 0, -EAGAIN
 * when the state store cannot answer now (retry later), -ENOMEM. */
static int stream_get(det_pipeline *p, const struct proto_event *ev, const char *key,
		      int32_t partition, const cbad_settings *cfg, bool paused, det_stream **ret)
{
	det_stream *s = stream_find(p, key);
	char err[256] = "";
	int32_t spart = -1;
	int64_t snext = -1;
	int r;

	if (s) {
		*ret = s;
		return 0;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	snprintf(s->key, sizeof(s->key), "%s", key);
	memcpy(s->org_id, ev->org_id, sizeof(s->org_id));
	memcpy(s->stream, ev->stream, sizeof(s->stream));
	s->partition = partition;
	s->skip_below = -1;
	s->paused = paused;
	s->last_event_ms = -1;
	r = p->store.load(p->store.opaque, ev->org_id, ev->stream, &s->d, &spart, &snext, err,
			  sizeof(err));
	if (r == 0) {
		if (spart == partition)
			s->skip_below = snext;
		else
			dl_log_warn("snapshot from another partition: state kept, offsets ignored",
				    "org", ev->org_id, "stream", ev->stream);
		dl_log_debug("stream restored", "org", ev->org_id, "stream", ev->stream);
		/* The settings may have changed while no worker held the stream. */
		stream_apply(p, s, cfg, "settings changed since the snapshot");
	} else if (r == -ENOENT || r == -EBADMSG) {
		/* None, or one that cannot be used: start afresh; the next checkpoint replaces it. */
		if (r == -EBADMSG)
			dl_log_warn("stream snapshot unusable, calibrating again", "org", ev->org_id,
				    "stream", ev->stream, "error", err);
		r = cbad_detector_new(cfg, &s->d, err, sizeof(err));
		if (r < 0) {
			dl_log_error("cannot create a detector", "org", ev->org_id, "stream",
				     ev->stream, "error", err);
			free(s);
			return r;
		}
	} else {
		/* Creating a fresh detector here would overwrite the snapshot with a warm-up: wait. */
		if (mono_ms() - p->last_unavailable_log_ms >= DET_LOG_EVERY_MS) {
			p->last_unavailable_log_ms = mono_ms();
			dl_log_warn("stream state unavailable, waiting", "org", ev->org_id, "stream",
				    ev->stream, "error", err);
		}
		free(s);
		return -EAGAIN;
	}
	s->next = p->buckets[hash_key(key)];
	p->buckets[hash_key(key)] = s;
	p->nstreams++;
	dl_metric_set(p->m_streams, NULL, (double)p->nstreams);
	*ret = s;
	return 0;
}

/* The bytes CBAD judges: a JSON string payload (a raw log line) is unquoted first, anything
 * else is judged as sent. *ret_tmp is set when a copy was made (caller frees). */
static const char *event_text(const struct proto_event *ev, size_t *ret_len, char **ret_tmp)
{
	cJSON *v;

	*ret_tmp = NULL;
	*ret_len = ev->payload_len;
	if (ev->payload_len < 2 || ev->payload[0] != '"')
		return ev->payload;
	v = cJSON_ParseWithLength(ev->payload, ev->payload_len);
	if (v && cJSON_IsString(v)) {
		*ret_tmp = strdup(v->valuestring);
		if (*ret_tmp)
			*ret_len = strlen(*ret_tmp);
	}
	cJSON_Delete(v);
	return *ret_tmp ? *ret_tmp : ev->payload;
}

/* ---- look-ups the held message waits for ---- */

static bool lookup_transient(int rc)
{
	return rc != -ENOENT && rc != -EINVAL && rc != -EACCES;
}

static void lookup_log(det_pipeline *p, const char *what, int rc)
{
	char code[16];

	if (mono_ms() - p->last_unavailable_log_ms < DET_LOG_EVERY_MS)
		return;
	p->last_unavailable_log_ms = mono_ms();
	snprintf(code, sizeof(code), "%d", rc);
	dl_log_warn(what, "errno", code, "error", strerror(-rc));
}

static void on_settings(int rc, const char *org_id, const char *stream, const cbad_settings *cfg,
			double sensitivity, bool paused, void *arg)
{
	det_pipeline *p = arg;
	char key[PROTO_STREAM_KEY_MAX + 2];

	(void)sensitivity; /* already in cfg->sensitivity */
	snprintf(key, sizeof(key), "%s:%s", org_id ? org_id : "", stream ? stream : "");
	if (p->sl.state != DET_LOOKUP_INFLIGHT || strcmp(key, p->sl.key) != 0)
		return;
	p->sl.state = DET_LOOKUP_DONE;
	p->sl.rc = rc < 0 ? rc : (cfg ? 0 : -EIO);
	if (p->sl.rc == 0) {
		p->sl.s = *cfg;
		p->sl.paused = paused;
	} else if (lookup_transient(p->sl.rc)) {
		p->sl.retry_at_ms = mono_ms() + DET_LOOKUP_RETRY_MS;
		lookup_log(p, "stream settings unavailable, its events wait", p->sl.rc);
	}
	event_active(p->work_ev, 0, 0);
}

/*
 * The settings of a stream new to this process. Returns 0 with them in p->sl; 1 when its events
 * are dead letters (*ret_code, *ret_why); -EAGAIN while they are being read or cannot be now.
 */
static int settings_for(det_pipeline *p, const struct proto_event *ev, const char *key,
			const char **ret_code, const char **ret_why)
{
	if (p->sl.state == DET_LOOKUP_INFLIGHT)
		return -EAGAIN; /* one at a time; a stale one (revoked message) still answers */
	if (p->sl.state == DET_LOOKUP_DONE && strcmp(p->sl.key, key) == 0) {
		if (p->sl.rc == 0)
			return 0;
		if (p->sl.rc == -ENOENT) {
			p->sl.state = DET_LOOKUP_NONE;
			*ret_code = "unknown_org";
			*ret_why = "event: the org does not exist";
			return 1;
		}
		if (p->sl.rc == -EINVAL) {
			p->sl.state = DET_LOOKUP_NONE;
			*ret_code = "invalid_stream";
			*ret_why = "event: the org id or the stream name is not valid";
			return 1;
		}
		if (mono_ms() < p->sl.retry_at_ms)
			return -EAGAIN;
	}
	p->sl.state = DET_LOOKUP_INFLIGHT;
	snprintf(p->sl.key, sizeof(p->sl.key), "%s", key);
	det_settings_get(p->opts.settings, ev->org_id, ev->stream, on_settings, p);
	return -EAGAIN;
}

/* A change of a held stream's settings, sensitivity or pause (det_settings' poller). */
static void on_settings_change(int rc, const char *org_id, const char *stream,
			       const cbad_settings *cfg, double sensitivity, bool paused,
			       void *arg)
{
	det_pipeline *p = arg;
	char key[PROTO_STREAM_KEY_MAX + 2];
	det_stream *s;

	(void)sensitivity;
	if (rc < 0 || !cfg || !org_id || !stream)
		return;
	snprintf(key, sizeof(key), "%s:%s", org_id, stream);
	s = stream_find(p, key);
	if (!s)
		return; /* picked up when it is next loaded */
	if (s->paused != paused) {
		s->paused = paused;
		dl_log_info(paused ? "stream paused: its events are skipped" : "stream resumed",
			    "org", org_id, "stream", stream);
	}
	stream_apply(p, s, cfg, "settings changed");
}

static void on_key(int rc, const char *org_id, void *arg)
{
	det_pipeline *p = arg;

	if (p->kc.state != DET_LOOKUP_INFLIGHT)
		return;
	p->kc.state = DET_LOOKUP_DONE;
	p->kc.rc = rc < 0 ? rc : (org_id ? 0 : -EIO);
	if (p->kc.rc == 0) {
		snprintf(p->kc.org_id, sizeof(p->kc.org_id), "%s", org_id);
	} else if (lookup_transient(p->kc.rc)) {
		p->kc.retry_at_ms = mono_ms() + DET_LOOKUP_RETRY_MS;
		lookup_log(p, "API key check unavailable, the direct producer's events wait",
			   p->kc.rc);
	}
	event_active(p->work_ev, 0, 0);
}

/* The event id of a direct producer's message: its top-level "id" string when that is a valid
 * id, else derived from where the message is (so a replay gives the same id). */
static void direct_event_id(const det_pipeline *p, const rd_kafka_message_t *msg, char *out,
			    size_t outlen)
{
	char buf[PROTO_DLQ_TOPIC_MAX + 64], id[DL_ID_UUID_LEN + 1];
	const char *payload = msg->payload;
	int n;

	if (msg->len > 0 && payload[0] == '{') {
		cJSON *v = cJSON_ParseWithLength(payload, msg->len);
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, "id");

		if (cJSON_IsString(m) && dl_id_is_valid_token(m->valuestring, PROTO_ID_MAX)) {
			snprintf(out, outlen, "%s", m->valuestring);
			cJSON_Delete(v);
			return;
		}
		cJSON_Delete(v);
	}
	n = snprintf(buf, sizeof(buf), "%s%c%d%c%lld", p->topic, '\0', (int)msg->partition, '\0',
		     (long long)msg->offset);
	dl_id_derive(DET_DIRECT_ID_NS, buf, (size_t)n, id);
	snprintf(out, outlen, "%s", id);
}

/*
 * Reads msg, which is not an envelope (env_code, env_why: why), as a direct producer's raw
 * event. Returns 0 with *ev filled (caller frees), 1 when it was dead-lettered, -EAGAIN while
 * its API key is being checked or cannot be now.
 */
static int direct_event(det_pipeline *p, const rd_kafka_message_t *msg, const char *env_code,
			const char *env_why, struct proto_event *ev)
{
	rd_kafka_headers_t *hdrs = NULL;
	det_keys_direct d;
	const char *reason = NULL;
	char err[256] = "";
	bool mine;
	rd_kafka_timestamp_type_t tstype;
	int64_t ts;
	int r;

	if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
		hdrs = NULL;
	r = det_keys_direct_parse(hdrs, msg->payload, msg->len, &d, &reason, err, sizeof(err));
	if (r == -ENOENT) {
		dead_letter(p, msg, env_code, env_why);
		return 1;
	}
	if (r < 0) {
		dead_letter(p, msg, reason ? reason : "invalid_event", err);
		return 1;
	}
	if (p->kc.state == DET_LOOKUP_INFLIGHT)
		return -EAGAIN;
	mine = p->kc.state == DET_LOOKUP_DONE && p->kc.partition == msg->partition &&
	       p->kc.offset == msg->offset;
	if (!mine || (lookup_transient(p->kc.rc) && p->kc.rc < 0 &&
		      mono_ms() >= p->kc.retry_at_ms)) {
		p->kc.state = DET_LOOKUP_INFLIGHT;
		p->kc.partition = msg->partition;
		p->kc.offset = msg->offset;
		det_keys_check(p->opts.keys, d.key, strlen(d.key), on_key, p); /* may answer now */
		if (p->kc.state != DET_LOOKUP_DONE)
			return -EAGAIN;
	}
	if (p->kc.rc == -EINVAL || p->kc.rc == -EACCES) {
		dead_letter(p, msg, "invalid_api_key",
			    "event: the driftlock-api-key header is not a valid key of any org");
		return 1;
	}
	if (p->kc.rc < 0)
		return -EAGAIN;
	proto_event_init(ev);
	direct_event_id(p, msg, ev->id, sizeof(ev->id));
	snprintf(ev->org_id, sizeof(ev->org_id), "%s", p->kc.org_id);
	snprintf(ev->stream, sizeof(ev->stream), "%s", d.stream);
	ts = rd_kafka_message_timestamp(msg, &tstype);
	ev->received_at_ms = dl_time_now_ms();
	ev->ts_ms = ts > 0 ? ts : ev->received_at_ms;
	ev->source = PROTO_EVENT_SOURCE_KAFKA;
	ev->payload = malloc(msg->len + 1);
	if (!ev->payload)
		return -EAGAIN;
	memcpy(ev->payload, msg->payload, msg->len);
	ev->payload[msg->len] = '\0';
	ev->payload_len = msg->len;
	return 0;
}

/* ---- processing ---- */

/* Processes one message. Returns 0 when it is done with (the caller destroys it), -EAGAIN when
 * it must be retried later (the caller holds it). */
static int process_message(det_pipeline *p, const rd_kafka_message_t *msg)
{
	static const char *const processed[] = { "processed" }, *const replayed[] = { "replayed" },
			  *const paused[] = { "paused" };
	struct proto_event ev;
	det_part *part = part_get(p, msg->partition);
	char err[512] = "", key[PROTO_STREAM_KEY_MAX + 1];
	size_t keylen = 0, tlen;
	det_stream *s = NULL;
	cbad_result res;
	char *tmp;
	const char *text;
	int r;

	if (!part)
		return 0;
	proto_event_init(&ev);
	if (!msg->payload || msg->len == 0) {
		dead_letter(p, msg, "empty", "event: empty message");
		goto out_done;
	}
	r = proto_event_decode(msg->payload, msg->len, &ev, err, sizeof(err));
	if (r < 0 && p->opts.keys) {
		/* Not an envelope: perhaps a direct producer's raw event. */
		r = direct_event(p, msg, decode_reason(r, err), err, &ev);
		if (r == -EAGAIN)
			return -EAGAIN;
		if (r > 0)
			goto out_done;
	} else if (r < 0) {
		dead_letter(p, msg, decode_reason(r, err), err);
		goto out_done;
	}
	if (proto_topics_stream_key(ev.org_id, ev.stream, key, sizeof(key), &keylen, NULL, 0) < 0 ||
	    !msg->key || msg->key_len != keylen || memcmp(msg->key, key, keylen) != 0) {
		/* Another key may be another partition: that stream's state would be split. */
		dead_letter(p, msg, "key_mismatch",
			    "event: the message key is not the envelope's org_id:stream");
		goto out_free_event;
	}
	s = stream_find(p, key);
	if (!s && p->opts.settings) {
		const char *code = NULL, *why = NULL;

		r = settings_for(p, &ev, key, &code, &why);
		if (r == -EAGAIN) {
			proto_event_free(&ev);
			return -EAGAIN;
		}
		if (r > 0) {
			dead_letter(p, msg, code, why);
			goto out_free_event;
		}
		r = stream_get(p, &ev, key, msg->partition, &p->sl.s, p->sl.paused, &s);
		if (r == 0)
			p->sl.state = DET_LOOKUP_NONE;
	} else {
		r = stream_get(p, &ev, key, msg->partition, &p->defaults, false, &s);
	}
	if (r == -EAGAIN) {
		proto_event_free(&ev);
		return -EAGAIN;
	}
	if (r < 0) {
		dead_letter(p, msg, "detector_unavailable", "detector: cannot create the stream's detector");
		goto out_free_event;
	}
	s->last_seen_ms = mono_ms();
	if (msg->offset < s->skip_below) {
		dl_metric_inc(p->m_events, replayed, 1);
		goto out_free_event;
	}
	if (s->paused) {
		dl_metric_inc(p->m_events, paused, 1);
		goto out_free_event;
	}
	text = event_text(&ev, &tlen, &tmp);
	cbad_detector_process(s->d, text, tlen, ev.ts_ms, &res);
	free(tmp);
	s->dirty = true;
	s->last_event_ms = ev.ts_ms;
	if (!s->status_queued) {
		s->status_queued = true;
		s->status_next = p->status_head;
		p->status_head = s;
	}
	if (!s->idle_queued && cbad_detector_idle_pending(s->d)) {
		s->idle_queued = true;
		s->idle_next = p->idle_head;
		p->idle_head = s;
	}
	dl_metric_inc(p->m_events, processed, 1);
	if (res.anomaly) {
		struct proto_anomaly *a = malloc(sizeof(*a));
		const char *labels[2] = { cbad_kind_name(res.kind), cbad_severity_name(res.severity) };
		char *json = NULL;
		size_t len = 0;

		r = a ? det_anomaly_from_result(&ev, &res,
						cbad_detector_settings(s->d)->sensitivity,
						dl_time_now_ms(), a)
		      : -ENOMEM;
		if (r == 0)
			r = proto_anomaly_encode(a, &json, &len, err, sizeof(err));
		free(a);
		if (r < 0) {
			dl_log_error("anomaly cannot be encoded", "org", ev.org_id, "stream",
				     ev.stream, "event_id", ev.id, "error", err);
			dead_letter(p, msg, "anomaly_invalid", err);
		} else {
			dl_metric_inc(p->m_anomalies, labels, 1);
			out_queue(p, DL_TOPIC_ANOMALIES, key, keylen, json, len);
		}
	}
out_free_event:
	proto_event_free(&ev);
out_done:
	part->processed_next = msg->offset + 1;
	return 0;
}

/* ---- checkpoints ---- */

static void commit_parts(det_pipeline *p, const rd_kafka_topic_partition_list_t *only, bool sync)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
	rd_kafka_resp_err_t e;

	if (!l)
		return;
	for (size_t i = 0; i < p->nparts; i++) {
		det_part *pt = &p->parts[i];

		if (pt->processed_next < 0 || pt->processed_next == pt->committed)
			continue;
		if (only && !rd_kafka_topic_partition_list_find(only, p->topic, (int32_t)i))
			continue;
		rd_kafka_topic_partition_list_add(l, p->topic, (int32_t)i)->offset =
			pt->processed_next;
		pt->committed = pt->processed_next;
	}
	if (l->cnt > 0) {
		e = rd_kafka_commit(dl_kafka_consumer_handle(p->consumer), l, sync ? 0 : 1);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			dl_log_warn("offset commit failed", "error", rd_kafka_err2str(e));
	}
	rd_kafka_topic_partition_list_destroy(l);
}

/* Snapshots the dirty streams (of the partitions in only, or all) in one write. Returns 0 when
 * every one was written. */
static int save_dirty(det_pipeline *p, const rd_kafka_topic_partition_list_t *only)
{
	det_pipeline_snapshot *items;
	det_stream **which;
	size_t n = 0, cap = p->nstreams;
	char err[256] = "";
	int r = 0;

	if (cap == 0)
		return 0;
	items = calloc(cap, sizeof(*items));
	which = calloc(cap, sizeof(*which));
	if (!items || !which) {
		r = -ENOMEM;
		goto out_free;
	}
	for (size_t b = 0; b < DET_BUCKETS; b++) {
		for (det_stream *s = p->buckets[b]; s; s = s->next) {
			det_part *pt = part_get(p, s->partition);

			if (!s->dirty || !pt)
				continue;
			if (only && !rd_kafka_topic_partition_list_find(only, p->topic, s->partition))
				continue;
			items[n] = (det_pipeline_snapshot){ s->org_id, s->stream, s->d, s->partition,
							    pt->processed_next };
			which[n++] = s;
		}
	}
	if (n == 0)
		goto out_free;
	r = p->store.save_many(p->store.opaque, items, n, err, sizeof(err));
	if (r < 0) {
		dl_log_error("snapshot failed: offsets not committed", "error", err);
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		which[i]->dirty = false;
		which[i]->skip_below = items[i].next_offset;
	}
out_free:
	free(which);
	free(items);
	return r;
}

/* Drops clean streams idle past the limit, and the least recently seen beyond max_streams. */
static void evict(det_pipeline *p)
{
	int64_t now = mono_ms();
	double mem = 0;
	cbad_status st;

	for (size_t b = 0; b < DET_BUCKETS; b++) {
		det_stream *s = p->buckets[b];

		while (s) {
			det_stream *nx = s->next;

			if (!s->dirty && now - s->last_seen_ms >= p->opts.idle_evict_ms) {
				dl_metric_inc(p->m_evictions, NULL, 1);
				stream_forget(p, s);
				stream_free(p, s);
			} else {
				cbad_detector_status(s->d, &st);
				mem += (double)st.memory_bytes;
			}
			s = nx;
		}
	}
	while (p->opts.max_streams && p->nstreams > p->opts.max_streams) {
		det_stream *oldest = NULL;

		for (size_t b = 0; b < DET_BUCKETS; b++)
			for (det_stream *s = p->buckets[b]; s; s = s->next)
				if (!s->dirty && (!oldest || s->last_seen_ms < oldest->last_seen_ms))
					oldest = s;
		if (!oldest)
			break;
		cbad_detector_status(oldest->d, &st);
		mem -= (double)st.memory_bytes;
		dl_metric_inc(p->m_evictions, NULL, 1);
		stream_forget(p, oldest);
		stream_free(p, oldest);
	}
	dl_metric_set(p->m_memory, NULL, mem > 0 ? mem : 0);
}

static void checkpoint_finish(det_pipeline *p)
{
	static const char *const ok[] = { "ok" }, *const failed[] = { "save_failed" };
	int64_t t0 = dl_time_mono_ns();
	int r = save_dirty(p, NULL);

	if (r == 0) {
		commit_parts(p, NULL, p->draining);
		dl_metric_inc(p->m_checkpoints, ok, 1);
	} else {
		dl_metric_inc(p->m_checkpoints, failed, 1);
	}
	dl_metric_observe(p->m_checkpoint_seconds, NULL,
			  (double)(dl_time_mono_ns() - t0) / 1e9);
	evict(p);
	p->last_checkpoint_ms = mono_ms();
	p->phase = DET_RUNNING;
}

static void drain_finish(det_pipeline *p)
{
	char err[256] = "";

	if (dl_kafka_consumer_close(p->consumer, err, sizeof(err)) < 0)
		dl_log_warn("leaving the consumer group failed", "error", err);
	p->phase = DET_CLOSED;
	event_del(p->tick_ev);
	event_del(p->wake_ev);
	if (p->drain_done)
		p->drain_done(p->drain_opaque);
}

/* Advances a barrier: finishes the checkpoint once every record was acknowledged. */
static void barrier_step(det_pipeline *p)
{
	static const char *const timeout[] = { "barrier_timeout" };

	if (p->phase != DET_BARRIER)
		return;
	dl_kafka_producer_poll(p->producer, 0);
	retry_flush(p);
	if (p->inflight == 0) {
		checkpoint_finish(p);
		if (p->draining)
			drain_finish(p);
		return;
	}
	if (mono_ms() - p->barrier_started_ms >= p->opts.barrier_timeout_ms) {
		dl_log_warn("Kafka acknowledgements late: checkpoint postponed");
		dl_metric_inc(p->m_checkpoints, timeout, 1);
		p->last_checkpoint_ms = mono_ms();
		if (p->draining) {
			dl_log_error("drain: records unacknowledged, state not saved");
			drain_finish(p);
			return;
		}
		p->phase = DET_RUNNING;
	}
}

static void barrier_start(det_pipeline *p)
{
	p->phase = DET_BARRIER;
	p->barrier_started_ms = mono_ms();
	barrier_step(p);
}

/* ---- rebalances ---- */

static void on_assign(void *opaque, const rd_kafka_topic_partition_list_t *parts)
{
	det_pipeline *p = opaque;

	for (int i = 0; i < parts->cnt; i++) {
		det_part *pt = part_get(p, parts->elems[i].partition);

		if (!pt)
			continue;
		if (!pt->assigned)
			p->nassigned++;
		*pt = (det_part){ .assigned = true, .processed_next = -1, .committed = -1 };
	}
	dl_metric_set(p->m_partitions, NULL, (double)p->nassigned);
	{
		char n[16];

		snprintf(n, sizeof(n), "%d", parts->cnt);
		dl_log_info("partitions assigned", "count", n);
	}
}

static void on_revoke(void *opaque, const rd_kafka_topic_partition_list_t *parts, bool lost)
{
	det_pipeline *p = opaque;
	bool saved = false;

	if (p->held && rd_kafka_topic_partition_list_find(parts, p->topic, p->held->partition)) {
		rd_kafka_message_destroy(p->held);
		p->held = NULL;
	}
	if (!lost && !p->freeing) {
		/* Blocking, but rare: the partitions move only after their work is durable. */
		retry_flush(p);
		dl_kafka_producer_flush(p->producer, (int)p->opts.barrier_timeout_ms);
		retry_flush(p);
		dl_kafka_producer_flush(p->producer, (int)p->opts.barrier_timeout_ms / 4 + 1);
		if (p->inflight == 0 && save_dirty(p, parts) == 0) {
			commit_parts(p, parts, true);
			saved = true;
		}
		if (!saved)
			dl_log_error("revoked partitions not checkpointed: the next owner replays from the last commit");
	}
	for (size_t b = 0; b < DET_BUCKETS; b++) {
		det_stream *s = p->buckets[b];

		while (s) {
			det_stream *nx = s->next;

			if (rd_kafka_topic_partition_list_find(parts, p->topic, s->partition)) {
				stream_forget(p, s);
				stream_free(p, s);
			}
			s = nx;
		}
	}
	for (int i = 0; i < parts->cnt; i++) {
		det_part *pt = part_get(p, parts->elems[i].partition);

		if (pt && pt->assigned)
			p->nassigned--;
		if (pt)
			*pt = (det_part){ .assigned = false, .processed_next = -1, .committed = -1 };
	}
	dl_metric_set(p->m_partitions, NULL, (double)p->nassigned);
}

/* ---- the loop ---- */

static void do_idle_work(det_pipeline *p)
{
	for (int i = 0; i < DET_IDLE_PER_TURN && p->idle_head; i++) {
		det_stream *s = p->idle_head;

		p->idle_head = s->idle_next;
		s->idle_queued = false;
		cbad_detector_idle(s->d);
	}
	if (p->idle_head)
		event_active(p->work_ev, 0, 0);
}

static void work_cb(evutil_socket_t fd, short what, void *opaque)
{
	det_pipeline *p = opaque;
	char err[256] = "";
	size_t n = 0;

	(void)fd;
	(void)what;
	if (p->phase != DET_RUNNING || p->draining)
		return;
	retry_flush(p);
	if (p->retry_head)
		return; /* back-pressure: wait for the producer */
	if (p->held) {
		if (process_message(p, p->held) < 0)
			return;
		rd_kafka_message_destroy(p->held);
		p->held = NULL;
	}
	while (n < p->opts.batch_max && p->phase == DET_RUNNING && !p->retry_head) {
		rd_kafka_message_t *msg = NULL;
		int r = dl_kafka_consumer_poll(p->consumer, 0, &msg, err, sizeof(err));

		if (r < 0) {
			dl_log_debug("consumer", "error", err);
			if (r == -EIO)
				dl_log_error("consumer failed", "error", err);
			break;
		}
		if (!msg) {
			do_idle_work(p);
			return;
		}
		n++;
		if (process_message(p, msg) < 0) {
			p->held = msg;
			return;
		}
		rd_kafka_message_destroy(msg);
	}
	if (n >= p->opts.batch_max) {
		/* More may wait. Yield to the loop first: an event made active from a callback
		 * runs in the same pass of libevent's active queue, before it polls I/O again, so
		 * event_active() here starved the admin port and the group's rebalance callbacks
		 * for a whole backlog. A zero timeout runs work_cb after the next poll instead. */
		static const struct timeval now = { 0, 0 };

		event_add(p->work_ev, &now);
	}
}

static void wake_cb(evutil_socket_t fd, short what, void *opaque)
{
	work_cb(fd, what, opaque);
}

static void tick_cb(evutil_socket_t fd, short what, void *opaque)
{
	det_pipeline *p = opaque;

	(void)fd;
	(void)what;
	dl_metric_set(p->m_inflight, NULL, (double)p->inflight);
	status_report(p); /* det_settings buffers it and writes in batches */
	if (p->phase == DET_BARRIER) {
		barrier_step(p);
		return;
	}
	if (p->phase != DET_RUNNING)
		return;
	if (mono_ms() - p->last_checkpoint_ms >= p->opts.checkpoint_ms) {
		barrier_start(p);
		return;
	}
	work_cb(-1, 0, p);
}

/* ---- setup ---- */

static int metrics_new(det_pipeline *p, dl_metrics_registry *m)
{
	static const double secs[] = { .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5 };

	p->m_events = dl_metrics_counter(m, "driftlock_detector_events_total",
					 "Events taken from the events topic: processed by CBAD, or "
					 "replayed (already in a restored snapshot, skipped).",
					 1, "outcome");
	p->m_anomalies = dl_metrics_counter(m, "driftlock_detector_anomalies_total",
					    "Anomalies produced, by kind and severity.", 2, "kind",
					    "severity");
	p->m_dlq = dl_metrics_counter(m, "driftlock_detector_dlq_total",
				      "Messages sent to the dead-letter topic, by reason code.", 1,
				      "reason");
	p->m_partitions = dl_metrics_gauge(m, "driftlock_detector_partitions",
					   "Partitions of the events topic this worker owns.", 0);
	p->m_streams = dl_metrics_gauge(m, "driftlock_detector_streams",
					"Stream detectors held in memory.", 0);
	p->m_memory = dl_metrics_gauge(m, "driftlock_detector_stream_memory_bytes",
				       "Memory the held stream detectors use (at the last checkpoint).",
				       0);
	p->m_checkpoints = dl_metrics_counter(m, "driftlock_detector_checkpoints_total",
					      "Checkpoints (snapshot, then commit), by result.", 1,
					      "result");
	p->m_checkpoint_seconds = dl_metrics_histogram(
		m, "driftlock_detector_checkpoint_seconds",
		"Time to snapshot the changed streams and commit, after the barrier.", secs,
		sizeof(secs) / sizeof(secs[0]), 0);
	p->m_retries = dl_metrics_counter(m, "driftlock_detector_produce_retries_total",
					  "Anomalies or dead letters produced again after a failure.",
					  0);
	p->m_evictions = dl_metrics_counter(m, "driftlock_detector_evictions_total",
					    "Streams dropped from memory (idle or over the limit); "
					    "their snapshot stays.",
					    0);
	p->m_inflight = dl_metrics_gauge(m, "driftlock_detector_produce_inflight",
					 "Anomalies and dead letters waiting for Kafka's acknowledgement.",
					 0);
	return p->m_partitions && p->m_events && p->m_anomalies && p->m_dlq && p->m_streams && p->m_memory &&
			       p->m_checkpoints && p->m_checkpoint_seconds && p->m_retries &&
			       p->m_evictions && p->m_inflight
		       ? 0
		       : -ENOMEM;
}

int det_pipeline_new(struct event_base *base, dl_kafka_producer *producer,
		     const det_pipeline_store *store, dl_metrics_registry *m,
		     const det_pipeline_options *opts, det_pipeline **ret, char *errbuf,
		     size_t errlen)
{
	const char *topics[] = { opts->topic, NULL };
	dl_kafka_rebalance_cbs cbs;
	det_pipeline *p;
	int r;

	if (!producer || !store || !store->save_many || !store->load || !opts->defaults ||
	    opts->batch_max == 0 || opts->checkpoint_ms <= 0 || opts->barrier_timeout_ms <= 0) {
		snprintf(errbuf, errlen, "det_pipeline: a producer, a state store, settings and "
					 "positive limits are required");
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	p->base = base;
	p->producer = producer;
	p->store = *store;
	p->opts = *opts;
	p->defaults = *opts->defaults;
	snprintf(p->topic, sizeof(p->topic), "%s", opts->topic);
	p->opts.topic = p->topic;
	r = metrics_new(p, m);
	if (r < 0) {
		snprintf(errbuf, errlen, "cannot register metrics");
		goto out_free;
	}
	cbs = (dl_kafka_rebalance_cbs){ .on_assign = on_assign, .on_revoke = on_revoke,
					.opaque = p };
	r = dl_kafka_consumer_new(opts->brokers, opts->group_id, topics, opts->consumer_conf, &cbs,
				  errbuf, errlen, &p->consumer);
	if (r < 0)
		goto out_free;
	p->wake_ev = event_new(base, dl_kafka_consumer_wakeup_fd(p->consumer), EV_READ | EV_PERSIST,
			       wake_cb, p);
	p->work_ev = event_new(base, -1, 0, work_cb, p);
	p->tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, p);
	if (!p->wake_ev || !p->work_ev || !p->tick_ev) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free_events;
	}
	p->last_checkpoint_ms = mono_ms();
	p->kc.partition = -1;
	if (p->opts.settings)
		det_settings_on_change(p->opts.settings, on_settings_change, p);
	*ret = p;
	return 0;

out_free_events:
	if (p->tick_ev)
		event_free(p->tick_ev);
	if (p->work_ev)
		event_free(p->work_ev);
	if (p->wake_ev)
		event_free(p->wake_ev);
	dl_kafka_consumer_free(p->consumer);
out_free:
	free(p);
	return r;
}

int det_pipeline_start(det_pipeline *p)
{
	struct timeval tv = { 0, DET_TICK_MS * 1000 };

	if (event_add(p->wake_ev, NULL) < 0 || event_add(p->tick_ev, &tv) < 0)
		return -ENOMEM;
	event_active(p->work_ev, 0, 0);
	return 0;
}

int det_pipeline_set_sensitivity(det_pipeline *p, const char *org_id, const char *stream,
				 double sensitivity)
{
	char key[PROTO_STREAM_KEY_MAX + 1];
	det_stream *s;

	if (proto_topics_stream_key(org_id, stream, key, sizeof(key), NULL, NULL, 0) < 0)
		return -EINVAL;
	s = stream_find(p, key);
	if (!s)
		return -ENOENT;
	if (cbad_detector_set_sensitivity(s->d, sensitivity) < 0)
		return -EINVAL;
	s->dirty = true;
	return 0;
}

void det_pipeline_drain(det_pipeline *p, void (*done)(void *opaque), void *opaque)
{
	p->drain_done = done;
	p->drain_opaque = opaque;
	p->draining = true;
	status_report(p);
	if (p->opts.settings)
		det_settings_on_change(p->opts.settings, NULL, NULL);
	if (p->phase == DET_CLOSED) {
		if (done)
			done(opaque);
		return;
	}
	if (p->held) {
		/* Not processed: the next owner starts from it (it is after the commit). */
		rd_kafka_message_destroy(p->held);
		p->held = NULL;
	}
	barrier_start(p);
}

size_t det_pipeline_streams(const det_pipeline *p)
{
	return p->nstreams;
}

void det_pipeline_free(det_pipeline *p)
{
	if (!p)
		return;
	p->freeing = true;
	if (p->held)
		rd_kafka_message_destroy(p->held);
	/* Delivery reports point at p: serve them all before it goes, purging what is left. */
	dl_kafka_producer_flush(p->producer, 2000);
	rd_kafka_purge(dl_kafka_producer_handle(p->producer),
		       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	dl_kafka_producer_poll(p->producer, 0);
	event_free(p->tick_ev);
	event_free(p->work_ev);
	event_free(p->wake_ev);
	/* Closing may call on_revoke, which frees the streams of the revoked partitions. */
	dl_kafka_consumer_free(p->consumer);
	for (size_t b = 0; b < DET_BUCKETS; b++)
		while (p->buckets[b])
			stream_free(p, p->buckets[b]);
	while (p->retry_head) {
		det_out *o = p->retry_head;

		p->retry_head = o->next;
		out_free(o);
	}
	free(p->parts);
	free(p);
}
