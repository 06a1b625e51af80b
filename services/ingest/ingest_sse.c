/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_sse: GET /v1/stream/anomalies, the caller's org's new anomalies as Server-Sent Events,
 * live from driftlock.anomalies.v1 and, after a reconnect, replayed from PostgreSQL. */
#include "services/ingest/ingest_sse.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#include "common/dl_http.h"
#include "common/dl_id.h"
#include "common/dl_kafka.h"
#include "common/dl_log.h"
#include "common/dl_metrics.h"
#include "common/dl_pg.h"
#include "common/dl_pgpool.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_topics.h"
#include "services/ingest/ingest_auth.h"
#include "services/ingest/ingest_config.h"
#include "services/ingest/ingest_sse_frame.h"

#define SSE_ORG_BUCKETS 256
#define SSE_POLL_BUDGET 256 /* messages served per loop turn before yielding */
#define SSE_FRAME_OVERHEAD (16 + INGEST_SSE_CURSOR_MAX) /* id/event lines around the data */
#define SSE_RETRY_MS "3000"
#define SSE_TICK_MAX_MS 1000

/*
 * How a stream resumes (the seam between replay and live).
 *
 * Every anomaly has a key: (detected_at in ms, id), ordered by time then bytewise by id. Each
 * frame's "id:" is a cursor: the greatest key this connection has sent so far (a frame that
 * arrives out of key order carries the earlier high-water cursor, so a cursor never goes
 * back). A client that reconnects with Last-Event-ID c is sent exactly the anomalies of its
 * org with key > c, each once:
 *   1. the client is attached to the live fan-out at once, but live anomalies are held back;
 *   2. PostgreSQL is asked (in ctx->db, RLS-scoped) for rows with key > c in key order, and
 *      the in-memory ring of anomalies this process consumed recently adds those metering may
 *      not have stored yet; both merge by key, duplicates (same id) dropped;
 *   3. the merged list is sent (at most sse_replay_max frames; when there were more, the
 *      stream ends after them and the client's automatic reconnect continues from there);
 *   4. the held live anomalies are sent, except those already replayed; from then on, live
 *      anomalies are sent unless already replayed or with key <= c.
 * What can still be missed, honestly: an anomaly with a key below the client's cursor that
 * reached this process after the frames around it (detectors on different partitions are not
 * synchronised), and an anomaly that metering had not stored when the client resumed and
 * that this process did not consume (it started after it, or the ring evicted it). Use
 * GET /v1/anomalies to reconcile when that matters.
 */

/* One anomaly as sent: its key, org and canonical JSON (proto_anomaly_encode). Shared by the
 * ring and by clients' held-back queues; freed when the last reference goes. */
struct sse_item {
	int refs;
	ingest_sse_key key;
	char org[PROTO_ORG_ID_LEN + 1];
	char stream[PROTO_STREAM_MAX + 1];
	unsigned severity_bit; /* 1u << enum proto_anomaly_severity */
	double score;
	char *json;
	size_t len;
};

struct sse_held {
	struct sse_item *item;
	struct sse_held *next;
};

struct sse_org;
struct sse_job;

struct sse_client {
	ingest_sse *sse;
	struct sse_org *org;
	dl_http_stream *st;
	char org_id[PROTO_ORG_ID_LEN + 1];
	char req_id[160];
	ingest_sse_key hw; /* greatest key sent */
	bool has_hw;
	ingest_sse_key resume; /* the Last-Event-ID it came back with */
	bool has_resume;
	/* Filters (query): NULL/0 = any. */
	char stream[PROTO_STREAM_MAX + 1];
	unsigned severities;
	bool has_min_score;
	double min_score;
	bool replaying;
	bool ended;            /* off every list; freed when its replay job returns */
	struct sse_job *job;   /* replay running in ctx->db */
	struct sse_held *held, *held_tail;
	size_t held_bytes;
	char **replayed; /* ids replayed, sorted, for the live duplicates check */
	size_t nreplayed;
	int64_t last_write_ms;
	struct sse_client *prev, *next;         /* all clients */
	struct sse_client *org_prev, *org_next; /* clients of the same org */
};

struct sse_org {
	char id[PROTO_ORG_ID_LEN + 1];
	size_t n;
	struct sse_client *clients;
	struct sse_org *next;
};

struct sse_row {
	ingest_sse_key key;
	char *json;
	size_t len;
};

/* A replay: filled on a db worker, consumed on the loop. */
struct sse_job {
	struct sse_client *c;
	char org_id[PROTO_ORG_ID_LEN + 1];
	char stream[PROTO_STREAM_MAX + 1]; /* the client's filters, "" = any */
	char severities[64];               /* a text[] literal, "" = any */
	char min_score[32];                /* "" = any */
	ingest_sse_key after;
	int64_t limit;
	struct sse_row *rows;
	size_t nrows;
	size_t bad_rows;
	bool truncated;     /* more rows than the cap: this page ends at cut */
	ingest_sse_key cut; /* the key of the cap-th row */
	char err[256];
};

struct ingest_sse {
	ingest_ctx *ctx;
	const ingest_config *cfg;
	dl_kafka_consumer *consumer;
	struct event *kafka_ev; /* the consumer's wake-up fd */
	struct event *more_ev;  /* more messages than one turn's budget */
	struct event *tick;     /* heartbeats */
	struct proto_anomaly *scratch;
	struct sse_item **ring;
	size_t ring_cap, ring_len, ring_head; /* head: the oldest */
	struct sse_org *orgs[SSE_ORG_BUCKETS];
	struct sse_client *clients;
	size_t nclients;
	bool draining;
	bool consumer_failed;
	size_t assigned; /* partitions assigned to the consumer */
	dl_metric *m_clients;
	dl_metric *m_frames;
	dl_metric *m_slow;
	dl_metric *m_replayed;
	dl_metric *m_refused;
	dl_metric *m_consumed;
	dl_metric *m_partitions;
};

static const struct timeval sse_now = { 0, 0 };
static const char *const lbl_live[] = { "live" };
static const char *const lbl_heartbeat[] = { "heartbeat" };

/* ---- items and the ring ---- */

static void item_unref(struct sse_item *it)
{
	if (it == NULL || --it->refs > 0)
		return;
	free(it->json);
	free(it);
}

static void ring_push(ingest_sse *s, struct sse_item *it)
{
	it->refs++;
	if (s->ring_len == s->ring_cap) {
		item_unref(s->ring[s->ring_head]);
		s->ring[s->ring_head] = it;
		s->ring_head = (s->ring_head + 1) % s->ring_cap;
		return;
	}
	s->ring[(s->ring_head + s->ring_len) % s->ring_cap] = it;
	s->ring_len++;
}

/* ---- orgs ---- */

static unsigned org_bucket(const char *org)
{
	unsigned h = 2166136261u;

	for (; *org != '\0'; org++)
		h = (h ^ (unsigned char)*org) * 16777619u;
	return h % SSE_ORG_BUCKETS;
}

static struct sse_org *org_find(ingest_sse *s, const char *org)
{
	for (struct sse_org *o = s->orgs[org_bucket(org)]; o != NULL; o = o->next)
		if (strcmp(o->id, org) == 0)
			return o;
	return NULL;
}

static struct sse_org *org_get(ingest_sse *s, const char *org)
{
	struct sse_org *o = org_find(s, org);
	unsigned b = org_bucket(org);

	if (o != NULL)
		return o;
	o = calloc(1, sizeof(*o));
	if (o == NULL)
		return NULL;
	snprintf(o->id, sizeof(o->id), "%s", org);
	o->next = s->orgs[b];
	s->orgs[b] = o;
	return o;
}

static void org_put(ingest_sse *s, struct sse_org *o)
{
	struct sse_org **pp;

	if (o->n > 0)
		return;
	for (pp = &s->orgs[org_bucket(o->id)]; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == o) {
			*pp = o->next;
			free(o);
			return;
		}
	}
}

/* ---- clients ---- */

static void client_free(struct sse_client *c)
{
	struct sse_held *h;

	while ((h = c->held) != NULL) {
		c->held = h->next;
		item_unref(h->item);
		free(h);
	}
	for (size_t i = 0; i < c->nreplayed; i++)
		free(c->replayed[i]);
	free(c->replayed);
	free(c);
}

static void client_attach(ingest_sse *s, struct sse_client *c, struct sse_org *o)
{
	c->sse = s;
	c->org = o;
	c->next = s->clients;
	if (s->clients != NULL)
		s->clients->prev = c;
	s->clients = c;
	s->nclients++;
	c->org_next = o->clients;
	if (o->clients != NULL)
		o->clients->org_prev = c;
	o->clients = c;
	o->n++;
	dl_metric_set(s->m_clients, NULL, (double)s->nclients);
}

/* Ends the client's stream and takes it off every list; it is freed now, or by its replay
 * job's completion when one is running. Safe from the stream's own callback. */
static void client_end(struct sse_client *c)
{
	ingest_sse *s = c->sse;
	struct sse_org *o = c->org;

	if (c->ended)
		return;
	c->ended = true;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->org_prev != NULL)
		c->org_prev->org_next = c->org_next;
	else
		o->clients = c->org_next;
	if (c->org_next != NULL)
		c->org_next->org_prev = c->org_prev;
	o->n--;
	org_put(s, o);
	c->org = NULL;
	s->nclients--;
	dl_metric_set(s->m_clients, NULL, (double)s->nclients);
	dl_http_stream_end(c->st);
	c->st = NULL;
	if (c->job == NULL)
		client_free(c);
}

static void client_slow(struct sse_client *c, size_t queued, size_t add)
{
	char q[32], lim[32];

	snprintf(q, sizeof(q), "%zu", queued + c->held_bytes + add);
	snprintf(lim, sizeof(lim), "%lld", (long long)c->sse->cfg->sse_buffer_bytes);
	dl_log_warn("anomaly stream client too slow to keep up, disconnected", "org",
		    c->org_id, "request_id", c->req_id, "pending_bytes", q, "limit_bytes", lim);
	dl_metric_inc(c->sse->m_slow, NULL, 1);
	client_end(c);
}

/* Writes raw bytes if the client's budget allows; false when the client was dropped. */
static bool client_write(struct sse_client *c, const char *data, size_t len)
{
	size_t queued = dl_http_stream_queued(c->st);

	if (ingest_sse_over_budget(queued, c->held_bytes, len,
				   (size_t)c->sse->cfg->sse_buffer_bytes)) {
		client_slow(c, queued, len);
		return false;
	}
	if (dl_http_stream_write(c->st, data, len) != 0) {
		client_end(c);
		return false;
	}
	c->last_write_ms = dl_time_now_ms();
	return true;
}

/* Sends one anomaly frame, its id the connection's high-water cursor. */
static bool client_send(struct sse_client *c, const struct sse_item *it, dl_metric *m,
			const char *const *lbl)
{
	char cursor[INGEST_SSE_CURSOR_MAX + 1];
	char *frame = NULL;
	size_t len = 0;
	bool ok;

	if (!c->has_hw || ingest_sse_key_cmp(&it->key, &c->hw) > 0) {
		c->hw = it->key;
		c->has_hw = true;
	}
	if (ingest_sse_cursor_format(&c->hw, cursor, sizeof(cursor)) != 0 ||
	    ingest_sse_frame_format(cursor, "anomaly", it->json, it->len, &frame, &len) != 0) {
		client_end(c);
		return false;
	}
	ok = client_write(c, frame, len);
	free(frame);
	if (ok)
		dl_metric_inc(m, lbl, 1);
	return ok;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool was_replayed(const struct sse_client *c, const char *id)
{
	return c->nreplayed > 0 &&
	       bsearch(&id, c->replayed, c->nreplayed, sizeof(*c->replayed), cmp_str) != NULL;
}

/* True when it passes c's filters. */
static bool client_wants(const struct sse_client *c, const struct sse_item *it)
{
	return (c->stream[0] == '\0' || strcmp(c->stream, it->stream) == 0) &&
	       (c->severities == 0 || (c->severities & it->severity_bit) != 0) &&
	       (!c->has_min_score || it->score >= c->min_score);
}

/* A live anomaly for c: held back while its replay runs, else sent unless already seen. */
static void client_live(struct sse_client *c, struct sse_item *it)
{
	if (!client_wants(c, it) ||
	    (c->has_resume && ingest_sse_key_cmp(&it->key, &c->resume) <= 0))
		return;
	if (c->replaying) {
		struct sse_held *h;
		size_t queued = dl_http_stream_queued(c->st);

		if (ingest_sse_over_budget(queued, c->held_bytes, it->len + SSE_FRAME_OVERHEAD,
					   (size_t)c->sse->cfg->sse_buffer_bytes)) {
			client_slow(c, queued, it->len);
			return;
		}
		h = calloc(1, sizeof(*h));
		if (h == NULL) {
			client_end(c);
			return;
		}
		h->item = it;
		it->refs++;
		if (c->held_tail != NULL)
			c->held_tail->next = h;
		else
			c->held = h;
		c->held_tail = h;
		c->held_bytes += it->len + SSE_FRAME_OVERHEAD;
		return;
	}
	if (was_replayed(c, it->key.id))
		return;
	client_send(c, it, c->sse->m_frames, lbl_live);
}

/* ---- replay (PostgreSQL, on a db worker) ---- */

/* The stored row rebuilt as the wire message (decoded and re-encoded on the worker, so replayed
 * frames carry the same canonical JSON as live ones). Key order uses COLLATE "C" like
 * ingest_sse_key_cmp. */
static const char sql_replay[] =
	"SELECT floor(extract(epoch FROM detected_at) * 1000)::bigint, id,"
	" (jsonb_build_object("
	"  'schema', 'driftlock.anomaly.v1', 'id', id, 'org_id', org_id, 'stream', stream,"
	"  'event_id', event_id,"
	"  'event_ts', to_char(event_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
	"  'detected_at', to_char(detected_at AT TIME ZONE 'UTC',"
	"                         'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
	"  'kind', kind, 'score', score, 'p_value', p_value, 'severity', severity,"
	"  'signals', signals,"
	"  'explanation', jsonb_build_object('summary', explanation_summary,"
	"    'signal', explanation_signal, 'value', explanation_value,"
	"    'baseline', jsonb_build_object('low', baseline_low, 'median', baseline_median,"
	"                                   'high', baseline_high),"
	"    'evidence', evidence),"
	"  'excerpt', excerpt,"
	"  'detector', jsonb_build_object('version', detector_version,"
	"                                 'sensitivity', detector_sensitivity))"
	" || CASE WHEN window_start IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('window',"
	"    jsonb_build_object("
	"     'start_ts', to_char(window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
	"     'end_ts', to_char(window_end AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
	"     'events', window_events)) END"
	" || CASE WHEN entity_field IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('entity',"
	"    jsonb_build_object('field', entity_field, 'value', entity_value)) END)::text"
	" FROM anomalies"
	" WHERE org_id = $1::uuid"
	"   AND (detected_at, id COLLATE \"C\") >"
	"       ('epoch'::timestamptz + $2::bigint * interval '1 millisecond', $3::text COLLATE \"C\")"
	"   AND ($5::text IS NULL OR stream = $5::text)"
	"   AND ($6::text[] IS NULL OR severity = ANY ($6::text[]))"
	"   AND ($7::float8 IS NULL OR score >= $7::float8)"
	" ORDER BY detected_at, id COLLATE \"C\""
	" LIMIT $4::bigint";

static int replay_work(dl_pg *pg, void *arg)
{
	struct sse_job *job = arg;
	struct proto_anomaly *a = NULL;
	char ms[32], lim[32], err[256];
	const char *params[7];
	PGresult *res = NULL;
	int ntuples, rc;

	rc = dl_pg_prepare(pg, "ingest_sse_replay", sql_replay, 7, job->err, sizeof(job->err));
	if (rc < 0)
		return rc;
	snprintf(ms, sizeof(ms), "%" PRId64, job->after.ms);
	snprintf(lim, sizeof(lim), "%" PRId64, job->limit);
	params[0] = job->org_id;
	params[1] = ms;
	params[2] = job->after.id;
	params[3] = lim;
	params[4] = job->stream[0] != '\0' ? job->stream : NULL;
	params[5] = job->severities[0] != '\0' ? job->severities : NULL;
	params[6] = job->min_score[0] != '\0' ? job->min_score : NULL;
	rc = dl_pg_begin_org(pg, job->org_id, job->err, sizeof(job->err));
	if (rc < 0)
		return rc;
	rc = dl_pg_exec(pg, "ingest_sse_replay", 7, params, &res, job->err, sizeof(job->err));
	if (rc < 0)
		goto out_rollback;
	ntuples = PQntuples(res);
	job->rows = calloc(ntuples > 0 ? (size_t)ntuples : 1, sizeof(*job->rows));
	a = malloc(sizeof(*a));
	if (job->rows == NULL || a == NULL) {
		rc = -ENOMEM;
		goto out_clear;
	}
	for (int i = 0; i < ntuples; i++) {
		const char *json = PQgetvalue(res, i, 2);
		struct sse_row *row = &job->rows[job->nrows];

		if (proto_anomaly_decode(json, (size_t)PQgetlength(res, i, 2), a, err,
					 sizeof(err)) != 0 ||
		    proto_anomaly_encode(a, &row->json, &row->len, err, sizeof(err)) != 0) {
			/* Counted and skipped: one bad row must not stop the replay. */
			job->bad_rows++;
			continue;
		}
		row->key.ms = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		snprintf(row->key.id, sizeof(row->key.id), "%s", PQgetvalue(res, i, 1));
		job->nrows++;
	}
	/* The query asked for one row more than a page: its presence says there is more. */
	if ((int64_t)ntuples >= job->limit && job->limit >= 2) {
		job->truncated = true;
		job->cut.ms = strtoll(PQgetvalue(res, (int)job->limit - 2, 0), NULL, 10);
		snprintf(job->cut.id, sizeof(job->cut.id), "%s",
			 PQgetvalue(res, (int)job->limit - 2, 1));
	}
	rc = 0;
out_clear:
	free(a);
	PQclear(res);
out_rollback:
	/* Read-only: nothing to commit. */
	dl_pg_rollback(pg, NULL, 0);
	return rc;
}

static void replay_finish(struct sse_client *c, struct sse_job *job, int rc);

static void job_free(struct sse_job *job)
{
	for (size_t i = 0; i < job->nrows; i++)
		free(job->rows[i].json);
	free(job->rows);
	free(job);
}

struct sse_merge {
	ingest_sse_key key;
	const char *json;
	size_t len;
};

static int cmp_merge(const void *a, const void *b)
{
	return ingest_sse_key_cmp(&((const struct sse_merge *)a)->key,
				  &((const struct sse_merge *)b)->key);
}

/* Sends the merged replay (rows and ring, key > resume, no duplicates). Returns the number
 * sent, or -1 when the client was dropped. *ret_truncated says there was more than the cap. */
static long replay_send(struct sse_client *c, struct sse_job *job, bool *ret_truncated)
{
	ingest_sse *s = c->sse;
	size_t cap = (size_t)s->cfg->sse_replay_max, n = 0, sent = 0;
	struct sse_merge *m = calloc(job->nrows + s->ring_len + 1, sizeof(*m));
	bool truncated = false;

	if (m == NULL)
		return -1;
	for (size_t i = 0; i < job->nrows; i++)
		m[n++] = (struct sse_merge){ job->rows[i].key, job->rows[i].json, job->rows[i].len };
	/* PostgreSQL's rows stop at the cap's key: ring items beyond it wait for the next page. */
	for (size_t i = 0; i < s->ring_len; i++) {
		struct sse_item *it = s->ring[(s->ring_head + i) % s->ring_cap];

		if (strcmp(it->org, c->org_id) != 0 || !client_wants(c, it) ||
		    ingest_sse_key_cmp(&it->key, &c->resume) <= 0)
			continue;
		m[n++] = (struct sse_merge){ it->key, it->json, it->len };
	}
	qsort(m, n, sizeof(*m), cmp_merge);
	if (job->truncated) {
		/* Nothing past the page's last stored row: the next page starts there. */
		size_t k = 0;

		while (k < n && ingest_sse_key_cmp(&m[k].key, &job->cut) <= 0)
			k++;
		n = k;
		truncated = true;
	}
	c->replayed = calloc(n + 1, sizeof(*c->replayed));
	if (c->replayed == NULL) {
		free(m);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		struct sse_item it = { .key = m[i].key, .json = (char *)m[i].json, .len = m[i].len };

		if (i > 0 && ingest_sse_key_cmp(&m[i].key, &m[i - 1].key) == 0)
			continue; /* the same anomaly from PostgreSQL and from the ring */
		if (sent == cap) {
			truncated = true;
			break;
		}
		c->replayed[c->nreplayed] = strdup(m[i].key.id);
		if (c->replayed[c->nreplayed] == NULL || !client_send(c, &it, s->m_replayed, NULL)) {
			free(m);
			return -1;
		}
		c->nreplayed++;
		sent++;
	}
	free(m);
	qsort(c->replayed, c->nreplayed, sizeof(*c->replayed), cmp_str);
	*ret_truncated = truncated;
	return (long)sent;
}

/* Runs the replay's result on the loop. c->job stays set until the end, so that c ended
 * meanwhile (slow, gone, write failure) is not freed under us; it is freed here then. */
static void replay_done(int rc, void *arg)
{
	struct sse_job *job = arg;
	struct sse_client *c = job->c;

	if (!c->ended)
		replay_finish(c, job, rc);
	c->job = NULL;
	job_free(job);
	if (c->ended)
		client_free(c);
}

static void replay_finish(struct sse_client *c, struct sse_job *job, int rc)
{
	struct sse_held *h;
	bool truncated = false;
	long sent;

	if (job->bad_rows > 0) {
		char n[32];

		snprintf(n, sizeof(n), "%zu", job->bad_rows);
		dl_log_warn("anomaly stream replay skipped rows that do not decode", "org",
			    c->org_id, "request_id", c->req_id, "rows", n);
	}
	if (rc < 0) {
		char code[32];

		snprintf(code, sizeof(code), "%d", rc);
		dl_log_warn("anomaly stream replay failed; the client will reconnect", "org",
			    c->org_id, "request_id", c->req_id, "rc", code, "error", job->err);
		client_end(c);
		return;
	}
	sent = replay_send(c, job, &truncated);
	if (sent < 0) {
		client_end(c);
		return;
	}
	if (c->ended)
		return;
	if (truncated) {
		/* The next page comes with the client's reconnect, from its new Last-Event-ID. */
		client_end(c);
		return;
	}
	c->replaying = false;
	c->held_bytes = 0;
	while ((h = c->held) != NULL) {
		c->held = h->next;
		if (!c->ended && !was_replayed(c, h->item->key.id))
			client_send(c, h->item, c->sse->m_frames, lbl_live);
		item_unref(h->item);
		free(h);
	}
	c->held_tail = NULL;
}

/* ---- Kafka ---- */

static void consume_one(ingest_sse *s, const rd_kafka_message_t *msg)
{
	struct sse_item *it;
	struct sse_org *o;
	char err[256];

	dl_metric_inc(s->m_consumed, NULL, 1);
	if (msg->payload == NULL ||
	    proto_anomaly_decode(msg->payload, msg->len, s->scratch, err, sizeof(err)) != 0) {
		char part[16], off[32];

		snprintf(part, sizeof(part), "%d", (int)msg->partition);
		snprintf(off, sizeof(off), "%lld", (long long)msg->offset);
		dl_log_warn("anomaly stream skipped an undecodable anomaly", "topic",
			    DL_TOPIC_ANOMALIES, "partition", part, "offset", off, "error",
			    msg->payload == NULL ? "empty message" : err);
		return;
	}
	it = calloc(1, sizeof(*it));
	if (it == NULL)
		return;
	if (proto_anomaly_encode(s->scratch, &it->json, &it->len, err, sizeof(err)) != 0) {
		free(it);
		return;
	}
	it->refs = 1;
	it->key.ms = s->scratch->detected_at_ms;
	snprintf(it->key.id, sizeof(it->key.id), "%s", s->scratch->id);
	snprintf(it->org, sizeof(it->org), "%s", s->scratch->org_id);
	snprintf(it->stream, sizeof(it->stream), "%s", s->scratch->stream);
	it->severity_bit = 1u << s->scratch->severity;
	it->score = s->scratch->score;
	for (char *p = it->org; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	ring_push(s, it);
	o = org_find(s, it->org);
	for (struct sse_client *c = o != NULL ? o->clients : NULL, *next; c != NULL; c = next) {
		/* client_live may end c (slow) and, with the last client, free o. */
		next = c->org_next;
		client_live(c, it);
	}
	item_unref(it);
}

static void on_kafka(evutil_socket_t fd, short what, void *arg)
{
	ingest_sse *s = arg;
	/* Per call, at most an eighth of a client's budget (this runs up to three times a turn:
	 * wake-up fd, continuation, tick): the loop writes to the sockets between turns, so a
	 * burst on the topic does not fill up a client that keeps up. */
	size_t bytes = 0, max_bytes = (size_t)s->cfg->sse_buffer_bytes / 8;
	char err[256];

	(void)fd;
	(void)what;
	if (s->consumer_failed)
		return;
	for (int i = 0; i < SSE_POLL_BUDGET && bytes < max_bytes; i++) {
		rd_kafka_message_t *msg = NULL;
		int rc = dl_kafka_consumer_poll(s->consumer, 0, &msg, err, sizeof(err));

		if (rc == -EAGAIN) {
			dl_log_warn("anomaly stream consumer error", "topic", DL_TOPIC_ANOMALIES,
				    "error", err);
			continue;
		}
		if (rc < 0) {
			/* Fatal for this consumer: streams stay open but get no live anomalies
			 * (a restart recreates it; driftlock_ingest_sse_partitions drops to 0). */
			dl_log_error("anomaly stream consumer failed", "topic", DL_TOPIC_ANOMALIES,
				     "error", err);
			s->consumer_failed = true;
			s->assigned = 0;
			dl_metric_set(s->m_partitions, NULL, 0);
			return;
		}
		if (msg == NULL)
			return;
		bytes += msg->len + SSE_FRAME_OVERHEAD;
		consume_one(s, msg);
		rd_kafka_message_destroy(msg);
	}
	/* Budget spent: continue on the next turn, after the loop has written to the sockets (a
	 * zero timer runs after the I/O callbacks of the next turn; event_active would run it
	 * again in this one). */
	event_add(s->more_ev, &sse_now);
}

static void on_assign(void *opaque, const rd_kafka_topic_partition_list_t *parts)
{
	ingest_sse *s = opaque;
	char n[16];

	s->assigned += (size_t)parts->cnt;
	dl_metric_set(s->m_partitions, NULL, (double)s->assigned);
	snprintf(n, sizeof(n), "%zu", s->assigned);
	dl_log_info("anomaly stream consumer assigned", "topic", DL_TOPIC_ANOMALIES, "partitions",
		    n);
}

static void on_revoke(void *opaque, const rd_kafka_topic_partition_list_t *parts, bool lost)
{
	ingest_sse *s = opaque;

	(void)lost;
	s->assigned -= (size_t)parts->cnt < s->assigned ? (size_t)parts->cnt : s->assigned;
	dl_metric_set(s->m_partitions, NULL, (double)s->assigned);
}

/* Heartbeats to clients silent for sse_heartbeat_ms; also polls the consumer in case a
 * wake-up was missed (rebalances are served from the poll). */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	ingest_sse *s = arg;
	int64_t now = dl_time_now_ms();

	(void)fd;
	(void)what;
	for (struct sse_client *c = s->clients, *next; c != NULL; c = next) {
		next = c->next;
		if (now - c->last_write_ms < s->cfg->sse_heartbeat_ms)
			continue;
		if (client_write(c, INGEST_SSE_HEARTBEAT, sizeof(INGEST_SSE_HEARTBEAT) - 1))
			dl_metric_inc(s->m_frames, lbl_heartbeat, 1);
	}
	on_kafka(-1, 0, s);
}

/* ---- the route ---- */

static void on_stream_event(dl_http_stream *st, int event, void *opaque)
{
	struct sse_client *c = opaque;

	(void)st;
	(void)event;
	/* The client went away, or the server drains: either way this stream is over. */
	client_end(c);
}

/* Reads the query filters into c; on a bad one replies 400 and returns -EINVAL. */
static int parse_filters(dl_http_req *req, struct sse_client *c)
{
	static const char *const names[] = { "low", "medium", "high", "critical" };
	const char *stream = dl_http_req_query(req, "stream");
	const char *sev = dl_http_req_query(req, "severity");
	const char *min = dl_http_req_query(req, "min_score");

	if (stream != NULL) {
		if (!dl_id_is_valid_token(stream, PROTO_STREAM_MAX)) {
			dl_http_reply_error(req, 400, "invalid_parameter",
					    "stream must be 1-128 characters of A-Za-z0-9._:-");
			return -EINVAL;
		}
		snprintf(c->stream, sizeof(c->stream), "%s", stream);
	}
	for (const char *p = sev; p != NULL && *p != '\0';) {
		size_t len = strcspn(p, ",");
		unsigned bit = 0;

		for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i]) == len && strncmp(p, names[i], len) == 0)
				bit = 1u << i;
		if (bit == 0) {
			dl_http_reply_error(req, 400, "invalid_parameter",
					    "severity must be a comma-separated list of low, medium, "
					    "high, critical");
			return -EINVAL;
		}
		c->severities |= bit;
		p += len;
		if (*p == ',')
			p++;
	}
	if (min != NULL) {
		char *end = NULL;
		double v = strtod(min, &end);

		if (end == min || *end != '\0' || !(v >= 0) || v > 1e300) {
			dl_http_reply_error(req, 400, "invalid_parameter",
					    "min_score must be a number >= 0");
			return -EINVAL;
		}
		c->has_min_score = true;
		c->min_score = v;
	}
	return 0;
}

/* The client's filters as the replay's text parameters. */
static void job_filters(struct sse_job *job, const struct sse_client *c)
{
	static const char *const names[] = { "low", "medium", "high", "critical" };
	size_t off = 0;

	snprintf(job->stream, sizeof(job->stream), "%s", c->stream);
	if (c->severities != 0) {
		off += (size_t)snprintf(job->severities, sizeof(job->severities), "{");
		for (unsigned i = 0; i < 4; i++)
			if (c->severities & (1u << i))
				off += (size_t)snprintf(job->severities + off,
							sizeof(job->severities) - off, "%s%s",
							off > 1 ? "," : "", names[i]);
		snprintf(job->severities + off, sizeof(job->severities) - off, "}");
	}
	if (c->has_min_score)
		snprintf(job->min_score, sizeof(job->min_score), "%.17g", c->min_score);
}

static void on_auth(dl_http_req *req, const ingest_principal *who, void *arg)
{
	ingest_sse *s = arg;
	const char *last = dl_http_req_header(req, "Last-Event-ID");
	struct sse_client *c;
	struct sse_org *o;
	int rc;

	if (last == NULL)
		last = dl_http_req_query(req, "last_event_id");
	if (s->draining) {
		dl_http_req_set_header(req, "Retry-After", "1");
		dl_http_reply_error(req, 503, "shutting_down",
				    "this server is shutting down; reconnect");
		return;
	}
	if (s->nclients >= (size_t)s->cfg->sse_max_streams) {
		dl_metric_inc(s->m_refused, (const char *const[]){ "server_full" }, 1);
		dl_http_req_set_header(req, "Retry-After", "5");
		dl_http_reply_error(req, 503, "too_many_streams",
				    "this server has %lld anomaly streams open; retry later",
				    (long long)s->cfg->sse_max_streams);
		return;
	}
	o = org_find(s, who->org_id);
	if (o != NULL && o->n >= (size_t)s->cfg->sse_max_streams_per_org) {
		dl_metric_inc(s->m_refused, (const char *const[]){ "org_limit" }, 1);
		dl_http_req_set_header(req, "Retry-After", "5");
		dl_http_reply_error(req, 429, "too_many_streams",
				    "your org has %lld anomaly streams open on this server, the "
				    "most allowed; close one first",
				    (long long)s->cfg->sse_max_streams_per_org);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		dl_http_reply_error(req, 503, "out_of_memory", "the server is out of memory");
		return;
	}
	if (last != NULL && ingest_sse_cursor_parse(last, &c->resume) != 0) {
		free(c);
		dl_http_reply_error(req, 400, "invalid_parameter",
				    "Last-Event-ID must be an id: value this stream sent "
				    "(<milliseconds>.<anomaly id>)");
		return;
	}
	c->has_resume = last != NULL;
	if (parse_filters(req, c) != 0) {
		free(c);
		return; /* replied */
	}
	snprintf(c->org_id, sizeof(c->org_id), "%s", who->org_id);
	snprintf(c->req_id, sizeof(c->req_id), "%s", dl_http_req_id(req));
	c->last_write_ms = dl_time_now_ms();
	o = org_get(s, who->org_id);
	if (o == NULL) {
		free(c);
		dl_http_reply_error(req, 503, "out_of_memory", "the server is out of memory");
		return;
	}
	if (c->has_resume) {
		struct sse_job *job = calloc(1, sizeof(*job));

		if (job != NULL) {
			job->c = c;
			snprintf(job->org_id, sizeof(job->org_id), "%s", c->org_id);
			job->after = c->resume;
			job->limit = s->cfg->sse_replay_max + 1;
			job_filters(job, c);
		}
		rc = job != NULL ? dl_pgpool_submit(s->ctx->db, replay_work, replay_done, job)
				 : -ENOMEM;
		if (rc < 0) {
			free(job);
			org_put(s, o);
			free(c);
			dl_http_req_set_header(req, "Retry-After", "1");
			dl_http_reply_error(req, 503, "unavailable",
					    "the anomaly history is unavailable; retry");
			return;
		}
		c->job = job;
		c->replaying = true;
	}
	client_attach(s, c, o);
	rc = dl_http_stream_start(req, 200, "text/event-stream", on_stream_event, c, &c->st);
	if (rc < 0) {
		client_end(c);
		return;
	}
	dl_log_debug("anomaly stream opened", "org", c->org_id, "request_id", c->req_id,
		     "last_event_id", last != NULL ? last : "");
	client_write(c, "retry: " SSE_RETRY_MS "\n\n", sizeof("retry: " SSE_RETRY_MS "\n\n") - 1);
}

static void on_request(dl_http_req *req, void *opaque)
{
	ingest_sse *s = opaque;

	if (s->draining) {
		dl_http_req_set_header(req, "Retry-After", "1");
		dl_http_reply_error(req, 503, "shutting_down",
				    "this server is shutting down; reconnect");
		return;
	}
	ingest_auth_request(s->ctx, req, 0, on_auth, s);
}

/* ---- lifecycle ---- */

int ingest_sse_new(ingest_ctx *ctx, char *errbuf, size_t errlen, ingest_sse **ret)
{
	static const char *const topics[] = { DL_TOPIC_ANOMALIES, NULL };
	static const char *const conf[] = { "auto.offset.reset", "latest",
					    "enable.partition.eof", "false", NULL };
	const ingest_config *cfg = ctx->cfg;
	dl_kafka_rebalance_cbs cbs = { on_assign, on_revoke, NULL };
	char uuid[DL_ID_UUID_LEN + 1], group[64];
	struct timeval tv;
	int64_t tick_ms;
	ingest_sse *s;
	int rc = -ENOMEM;

	if (cfg->sse_max_streams < 1 || cfg->sse_max_streams_per_org < 1 ||
	    cfg->sse_heartbeat_ms < 1 || cfg->sse_buffer_bytes < 1024 || cfg->sse_replay_max < 1 ||
	    cfg->sse_recent < 1) {
		snprintf(errbuf, errlen, "ingest_sse: the DRIFTLOCK_INGEST_SSE_* settings are out of "
					 "range");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto out_nomem;
	s->ctx = ctx;
	s->cfg = cfg;
	s->ring_cap = (size_t)cfg->sse_recent;
	s->ring = calloc(s->ring_cap, sizeof(*s->ring));
	s->scratch = malloc(sizeof(*s->scratch));
	if (s->ring == NULL || s->scratch == NULL)
		goto out_free;
	s->m_clients = dl_metrics_gauge(ctx->metrics, "driftlock_ingest_sse_clients",
					"Open GET /v1/stream/anomalies streams.", 0);
	s->m_frames = dl_metrics_counter(ctx->metrics, "driftlock_ingest_sse_frames_total",
					 "Frames sent on anomaly streams (live anomalies and "
					 "heartbeats; replayed ones in "
					 "driftlock_ingest_sse_replayed_rows_total).",
					 1, "kind");
	s->m_slow = dl_metrics_counter(ctx->metrics, "driftlock_ingest_sse_slow_disconnects_total",
				       "Stream clients disconnected for falling too far behind.", 0);
	s->m_replayed = dl_metrics_counter(ctx->metrics, "driftlock_ingest_sse_replayed_rows_total",
					   "Anomalies replayed after a Last-Event-ID.", 0);
	s->m_refused = dl_metrics_counter(ctx->metrics, "driftlock_ingest_sse_refused_total",
					  "Streams refused by a connection cap.", 1, "reason");
	s->m_consumed = dl_metrics_counter(ctx->metrics, "driftlock_ingest_sse_consumed_total",
					   "Anomalies read from driftlock.anomalies.v1 for streams.",
					   0);
	s->m_partitions = dl_metrics_gauge(ctx->metrics, "driftlock_ingest_sse_partitions",
					   "Partitions of driftlock.anomalies.v1 assigned to this "
					   "process's stream consumer.",
					   0);
	if (s->m_clients == NULL || s->m_frames == NULL || s->m_slow == NULL ||
	    s->m_replayed == NULL || s->m_refused == NULL || s->m_consumed == NULL ||
	    s->m_partitions == NULL) {
		snprintf(errbuf, errlen, "ingest_sse: cannot register metrics");
		rc = -EINVAL;
		goto out_free;
	}
	/* A group of its own: this process gets every partition, from the end. */
	if (dl_id_new(uuid) != 0) {
		snprintf(errbuf, errlen, "ingest_sse: no random group id");
		rc = -EIO;
		goto out_free;
	}
	snprintf(group, sizeof(group), "driftlock-ingest-sse-%s", uuid);
	cbs.opaque = s;
	rc = dl_kafka_consumer_new(cfg->kafka_brokers, group, topics, conf, &cbs, errbuf, errlen,
				   &s->consumer);
	if (rc < 0)
		goto out_free;
	rc = -ENOMEM;
	s->kafka_ev = event_new(ctx->base, dl_kafka_consumer_wakeup_fd(s->consumer),
				EV_READ | EV_PERSIST, on_kafka, s);
	s->more_ev = event_new(ctx->base, -1, 0, on_kafka, s);
	s->tick = event_new(ctx->base, -1, EV_PERSIST, on_tick, s);
	if (s->kafka_ev == NULL || s->more_ev == NULL || s->tick == NULL)
		goto out_free;
	tick_ms = cfg->sse_heartbeat_ms < SSE_TICK_MAX_MS ? cfg->sse_heartbeat_ms / 2 + 1
							  : SSE_TICK_MAX_MS;
	tv.tv_sec = tick_ms / 1000;
	tv.tv_usec = (tick_ms % 1000) * 1000;
	if (event_add(s->kafka_ev, NULL) != 0 || event_add(s->tick, &tv) != 0)
		goto out_free;
	rc = dl_http_route(ctx->http, "GET", "/v1/stream/anomalies", on_request, s,
			   "stream.anomalies");
	if (rc < 0) {
		snprintf(errbuf, errlen, "ingest_sse: cannot add the route GET /v1/stream/anomalies");
		goto out_free;
	}
	/* Join now rather than on the first wake-up. */
	event_add(s->more_ev, &sse_now);
	*ret = s;
	return 0;

out_nomem:
	snprintf(errbuf, errlen, "ingest_sse: out of memory");
	return -ENOMEM;
out_free:
	if (rc == -ENOMEM)
		snprintf(errbuf, errlen, "ingest_sse: out of memory");
	ingest_sse_free(s);
	return rc;
}

void ingest_sse_drain(ingest_sse *s)
{
	if (s == NULL)
		return;
	s->draining = true;
	while (s->clients != NULL)
		client_end(s->clients);
}

size_t ingest_sse_clients(const ingest_sse *s)
{
	return s != NULL ? s->nclients : 0;
}

void ingest_sse_free(ingest_sse *s)
{
	if (s == NULL)
		return;
	ingest_sse_drain(s);
	if (s->kafka_ev != NULL)
		event_free(s->kafka_ev);
	if (s->more_ev != NULL)
		event_free(s->more_ev);
	if (s->tick != NULL)
		event_free(s->tick);
	dl_kafka_consumer_free(s->consumer);
	for (size_t i = 0; i < s->ring_len; i++)
		item_unref(s->ring[(s->ring_head + i) % s->ring_cap]);
	free(s->ring);
	free(s->scratch);
	free(s);
}
