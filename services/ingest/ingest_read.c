/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_read: the read API (anomalies, streams, usage) served from PostgreSQL. */
#include "services/ingest/ingest_read.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "common/dl_http.h"
#include "common/dl_log.h"
#include "common/dl_metrics.h"
#include "common/dl_pg.h"
#include "common/dl_pgpool.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_topics.h"
#include "services/ingest/ingest_auth.h"
#include "services/ingest/ingest_read_params.h"
#include "services/ingest/ingest_usage.h"

#define READ_HISTORY_MAX 100 /* status changes shown with one anomaly, newest first */
#define READ_RETRY_AFTER_DB "2"
#define READ_RETRY_AFTER_QUEUE "1"

enum read_op {
	OP_ANOMALY_LIST,
	OP_ANOMALY_GET,
	OP_ANOMALY_PATCH,
	OP_STREAM_LIST,
	OP_STREAM_GET,
	OP_STREAM_PUT,
	OP_USAGE,
};

typedef struct read_route {
	enum read_op op;
	const char *method;
	const char *pattern; /* also the route name in metrics */
} read_route;

static const read_route read_routes[] = {
	{ OP_ANOMALY_LIST, "GET", "/v1/anomalies" },
	{ OP_ANOMALY_GET, "GET", "/v1/anomalies/{id}" },
	{ OP_ANOMALY_PATCH, "PATCH", "/v1/anomalies/{id}" },
	{ OP_STREAM_LIST, "GET", "/v1/streams" },
	{ OP_STREAM_GET, "GET", "/v1/streams/{stream}" },
	{ OP_STREAM_PUT, "PUT", "/v1/streams/{stream}" },
	{ OP_USAGE, "GET", "/v1/usage" },
};

/* The module's state: one ingest_ctx per process, so one registration. */
static struct {
	ingest_ctx *ctx;
	dl_metric *db_seconds; /* {route} */
	dl_metric *failures;   /* {route, reason}: queue_full, unavailable, error */
} rs;

/* One request's work. The loop thread fills the input and owns req; the worker reads the
 * input and writes only the result members; done (loop) replies and frees. */
typedef struct read_job {
	const read_route *route;
	dl_http_req *req;
	char org_id[37];
	char actor[64]; /* "api_key:<id>", recorded with status changes */
	char target[129]; /* the {id} or {stream} of the path */
	union {
		ingest_anomaly_query aq;
		ingest_stream_query sq;
		ingest_anomaly_patch patch;
	} in;
	ingest_stream_put put;
	int64_t start_ns;
	bool has_live; /* GET /v1/usage: metering's live count (ingest_usage.h) */
	ingest_usage_live live;
	/* results */
	int status;
	char code[40];
	char message[256];
	char *json; /* the 2xx body */
	char errtext[256]; /* why the work failed, for the log only */
} read_job;

/* Statements, prepared on each worker connection before its first use. */
#define MS(c) "floor(extract(epoch FROM " c ") * 1000)::bigint"

/* Column order read by anomaly_json(). detected_at is kept to the microsecond for cursors. */
#define ANOMALY_COLS                                                                             \
	"a.id, a.stream, a.event_id, " MS("a.event_ts") ", "                                     \
	"(extract(epoch FROM a.detected_at) * 1000000)::bigint, a.kind, a.score, a.p_value, "   \
	"a.severity, a.signals::text, " MS("a.window_start") ", " MS("a.window_end") ", "        \
	"a.window_events, a.entity_field, a.entity_value, a.explanation_summary, "              \
	"a.explanation_signal, a.explanation_value, a.baseline_low, a.baseline_median, "         \
	"a.baseline_high, a.evidence::text, a.excerpt, a.detector_version, "                     \
	"a.detector_sensitivity, a.status, a.status_note, " MS("a.status_changed_at") ", "       \
	"a.org_id::text"

enum {
	AC_ID, AC_STREAM, AC_EVENT_ID, AC_EVENT_TS, AC_DETECTED_US, AC_KIND, AC_SCORE, AC_P_VALUE,
	AC_SEVERITY, AC_SIGNALS, AC_WSTART, AC_WEND, AC_WEVENTS, AC_EFIELD, AC_EVALUE, AC_SUMMARY,
	AC_SIGNAL, AC_VALUE, AC_BLOW, AC_BMEDIAN, AC_BHIGH, AC_EVIDENCE, AC_EXCERPT, AC_DVERSION,
	AC_DSENS, AC_STATUS, AC_NOTE, AC_STATUS_AT, AC_ORG,
};

#define STREAM_COLS                                                                              \
	"s.name, s.status, s.calibration_progress, s.events_seen, s.anomalies_count, "          \
	MS("s.last_event_at") ", " MS("s.last_anomaly_at") ", " MS("s.created_at") ", "           \
	MS("s.updated_at") ", s.sensitivity, o.sensitivity, s.settings::text"

enum {
	SC_NAME, SC_STATUS, SC_PROGRESS, SC_EVENTS, SC_ANOMALIES, SC_LAST_EVENT, SC_LAST_ANOMALY,
	SC_CREATED, SC_UPDATED, SC_SENS, SC_ORG_SENS, SC_SETTINGS,
};

typedef struct read_stmt {
	const char *name;
	const char *sql;
	int nparams;
} read_stmt;

/* Every statement names org_id = $1 as well: RLS scopes the transaction, the predicate says
 * what the query means and lets the planner use the (org_id, ...) indexes. */
static const read_stmt read_stmts[] = {
	{ "read_anomaly_list",
	  "SELECT " ANOMALY_COLS " FROM anomalies AS a WHERE a.org_id = $1::uuid"
	  " AND ($2::text IS NULL OR a.stream = $2)"
	  " AND ($3::text[] IS NULL OR a.severity = ANY ($3::text[]))"
	  " AND ($4::text IS NULL OR a.status = $4)"
	  " AND ($5::bigint IS NULL OR a.detected_at >= 'epoch'::timestamptz"
	  "      + $5::bigint * interval '1 millisecond')"
	  " AND ($6::bigint IS NULL OR a.detected_at < 'epoch'::timestamptz"
	  "      + $6::bigint * interval '1 millisecond')"
	  " AND ($7::float8 IS NULL OR a.score >= $7::float8)"
	  " AND ($8::bigint IS NULL OR (a.detected_at, a.id) < ('epoch'::timestamptz"
	  "      + $8::bigint * interval '1 microsecond', $9::text))"
	  " ORDER BY a.detected_at DESC, a.id DESC LIMIT $10::integer",
	  10 },
	{ "read_anomaly_get",
	  "SELECT " ANOMALY_COLS " FROM anomalies AS a WHERE a.org_id = $1::uuid AND a.id = $2",
	  2 },
	{ "read_anomaly_history",
	  "SELECT h.from_status, h.to_status, h.note, h.actor, " MS("h.changed_at")
	  " FROM anomaly_status_history AS h WHERE h.org_id = $1::uuid AND h.anomaly_id = $2"
	  " ORDER BY h.changed_at DESC, h.id DESC LIMIT $3::integer",
	  3 },
	{ "read_set_actor", "SELECT pg_catalog.set_config('driftlock.actor', $1, true)", 1 },
	{ "read_anomaly_patch",
	  "UPDATE anomalies SET status = $3,"
	  " status_note = CASE WHEN $4::boolean THEN $5::text ELSE status_note END"
	  " WHERE org_id = $1::uuid AND id = $2 RETURNING id",
	  5 },
	{ "read_stream_list",
	  "SELECT " STREAM_COLS " FROM streams AS s JOIN organizations AS o ON o.id = s.org_id"
	  " WHERE s.org_id = $1::uuid AND o.id = $1::uuid AND ($2::text IS NULL OR s.name > $2)"
	  " ORDER BY s.name LIMIT $3::integer",
	  3 },
	{ "read_stream_get",
	  "SELECT " STREAM_COLS " FROM streams AS s JOIN organizations AS o ON o.id = s.org_id"
	  " WHERE s.org_id = $1::uuid AND o.id = $1::uuid AND s.name = $2",
	  2 },
	{ "read_stream_update",
	  "UPDATE streams SET"
	  " sensitivity = CASE WHEN $3::boolean THEN $4::float8 ELSE sensitivity END,"
	  " settings = COALESCE($5::jsonb, settings)"
	  " WHERE org_id = $1::uuid AND name = $2 RETURNING name",
	  5 },
	/* A new stream counts against the plan's max_streams (NULL = unlimited). */
	{ "read_stream_insert",
	  "INSERT INTO streams (org_id, name, sensitivity, settings)"
	  " SELECT $1::uuid, $2, CASE WHEN $3::boolean THEN $4::float8 END,"
	  "        COALESCE($5::jsonb, '{}'::jsonb)"
	  " WHERE (SELECT count(*) FROM streams WHERE org_id = $1::uuid) <"
	  "       COALESCE((SELECT p.max_streams FROM organizations AS o"
	  "                 JOIN plans AS p ON p.code = o.plan WHERE o.id = $1::uuid),"
	  "                2147483647)"
	  " ON CONFLICT (org_id, name) DO NOTHING RETURNING name",
	  5 },
	{ "read_usage",
	  "SELECT u.plan, p.display_name, " MS("u.period_start") ", " MS("u.period_end") ","
	  " u.counted, u.included, u.percent, u.overage, u.overage_allowed,"
	  " u.overage_cost_microusd, p.overage_microusd, u.billing_status, u.over_quota,"
	  " (SELECT COALESCE(array_to_json(array_agg(ua.threshold ORDER BY ua.threshold))::text,"
	  "                  '[]')"
	  "    FROM usage_alerts AS ua"
	  "   WHERE ua.org_id = $1::uuid AND ua.period_start = u.period_start)"
	  " FROM usage_current_period AS u JOIN plans AS p ON p.code = u.plan"
	  " WHERE u.org_id = $1::uuid",
	  1 },
};

/* Runs on the worker: failures keep the server's text in the job for the log. */
static int read_exec(dl_pg *pg, read_job *job, const char *name, int n, const char *const *vals,
		     PGresult **ret)
{
	return dl_pg_exec(pg, name, n, vals, ret, job->errtext, sizeof(job->errtext));
}

static void job_answer(read_job *job, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void job_answer(read_job *job, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	job->status = status;
	snprintf(job->code, sizeof(job->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(job->message, sizeof(job->message), fmt, ap);
	va_end(ap);
}

/* Takes ownership of body (deleted here); sets the 2xx reply. */
static int job_body(read_job *job, int status, cJSON *body)
{
	if (!body)
		return -ENOMEM;
	job->json = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);
	if (!job->json)
		return -ENOMEM;
	job->status = status;
	return 0;
}

/* Column readers: SQL NULL becomes JSON null. */
static bool col_null(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col);
}

static const char *col_text(const PGresult *r, int row, int col)
{
	return PQgetvalue(r, row, col);
}

static int64_t col_int(const PGresult *r, int row, int col)
{
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static double col_num(const PGresult *r, int row, int col)
{
	return strtod(PQgetvalue(r, row, col), NULL);
}

static bool put_text(cJSON *o, const char *name, const PGresult *r, int row, int col)
{
	if (col_null(r, row, col))
		return cJSON_AddNullToObject(o, name) != NULL;
	return cJSON_AddStringToObject(o, name, col_text(r, row, col)) != NULL;
}

static bool put_num(cJSON *o, const char *name, const PGresult *r, int row, int col)
{
	if (col_null(r, row, col))
		return cJSON_AddNullToObject(o, name) != NULL;
	return cJSON_AddNumberToObject(o, name, col_num(r, row, col)) != NULL;
}

static bool put_ms(cJSON *o, const char *name, int64_t ms)
{
	char buf[DL_TIME_RFC3339_BUFSZ];

	if (dl_time_format_rfc3339(ms, buf, sizeof(buf), NULL, 0) < 0)
		return cJSON_AddNullToObject(o, name) != NULL;
	return cJSON_AddStringToObject(o, name, buf) != NULL;
}

/* A column of epoch milliseconds as an RFC 3339 string. */
static bool put_time(cJSON *o, const char *name, const PGresult *r, int row, int col)
{
	if (col_null(r, row, col))
		return cJSON_AddNullToObject(o, name) != NULL;
	return put_ms(o, name, col_int(r, row, col));
}

/* A jsonb column (bounded by its CHECK) as JSON. */
static bool put_json(cJSON *o, const char *name, const PGresult *r, int row, int col)
{
	cJSON *v = cJSON_Parse(col_text(r, row, col));

	if (!v)
		return false;
	if (!cJSON_AddItemToObject(o, name, v)) {
		cJSON_Delete(v);
		return false;
	}
	return true;
}

static int64_t us_to_ms(int64_t us)
{
	return us >= 0 ? us / 1000 : -((-us + 999) / 1000);
}

/* One anomaly row as the Anomaly of proto/openapi.yaml: the driftlock.anomaly.v1 message plus
 * status, status_note and status_changed_at. NULL when out of memory. */
static cJSON *anomaly_json(const PGresult *r, int row)
{
	cJSON *a = cJSON_CreateObject(), *o;
	bool ok;

	if (!a)
		return NULL;
	ok = cJSON_AddStringToObject(a, "schema", PROTO_ANOMALY_SCHEMA) &&
	     put_text(a, "id", r, row, AC_ID) && put_text(a, "org_id", r, row, AC_ORG) &&
	     put_text(a, "stream", r, row, AC_STREAM) &&
	     put_text(a, "event_id", r, row, AC_EVENT_ID) &&
	     put_time(a, "event_ts", r, row, AC_EVENT_TS) &&
	     put_ms(a, "detected_at", us_to_ms(col_int(r, row, AC_DETECTED_US))) &&
	     put_text(a, "kind", r, row, AC_KIND) && put_num(a, "score", r, row, AC_SCORE) &&
	     put_num(a, "p_value", r, row, AC_P_VALUE) &&
	     put_text(a, "severity", r, row, AC_SEVERITY) &&
	     put_json(a, "signals", r, row, AC_SIGNALS);
	if (ok && !col_null(r, row, AC_WSTART)) {
		ok = (o = cJSON_AddObjectToObject(a, "window")) &&
		     put_time(o, "start_ts", r, row, AC_WSTART) &&
		     put_time(o, "end_ts", r, row, AC_WEND) &&
		     put_num(o, "events", r, row, AC_WEVENTS);
	}
	if (ok && !col_null(r, row, AC_EFIELD)) {
		ok = (o = cJSON_AddObjectToObject(a, "entity")) &&
		     put_text(o, "field", r, row, AC_EFIELD) &&
		     put_text(o, "value", r, row, AC_EVALUE);
	}
	if (ok) {
		cJSON *b;

		ok = (o = cJSON_AddObjectToObject(a, "explanation")) &&
		     put_text(o, "summary", r, row, AC_SUMMARY) &&
		     put_text(o, "signal", r, row, AC_SIGNAL) &&
		     put_num(o, "value", r, row, AC_VALUE) &&
		     (b = cJSON_AddObjectToObject(o, "baseline")) &&
		     put_num(b, "low", r, row, AC_BLOW) &&
		     put_num(b, "median", r, row, AC_BMEDIAN) &&
		     put_num(b, "high", r, row, AC_BHIGH) &&
		     put_json(o, "evidence", r, row, AC_EVIDENCE);
	}
	ok = ok && put_text(a, "excerpt", r, row, AC_EXCERPT) &&
	     (o = cJSON_AddObjectToObject(a, "detector")) &&
	     put_text(o, "version", r, row, AC_DVERSION) &&
	     put_num(o, "sensitivity", r, row, AC_DSENS) &&
	     put_text(a, "status", r, row, AC_STATUS) &&
	     put_text(a, "status_note", r, row, AC_NOTE) &&
	     put_time(a, "status_changed_at", r, row, AC_STATUS_AT);
	if (!ok) {
		cJSON_Delete(a);
		return NULL;
	}
	return a;
}

static cJSON *stream_json(const PGresult *r, int row)
{
	cJSON *s = cJSON_CreateObject();
	bool ok;

	if (!s)
		return NULL;
	ok = put_text(s, "stream", r, row, SC_NAME) && put_text(s, "status", r, row, SC_STATUS) &&
	     put_num(s, "calibration_progress", r, row, SC_PROGRESS) &&
	     put_num(s, "events_seen", r, row, SC_EVENTS) &&
	     put_num(s, "anomalies", r, row, SC_ANOMALIES) &&
	     put_time(s, "last_event_at", r, row, SC_LAST_EVENT) &&
	     put_time(s, "last_anomaly_at", r, row, SC_LAST_ANOMALY) &&
	     put_num(s, "sensitivity", r, row, SC_SENS) &&
	     put_num(s, "effective_sensitivity", r, row,
		     col_null(r, row, SC_SENS) ? SC_ORG_SENS : SC_SENS) &&
	     put_json(s, "settings", r, row, SC_SETTINGS) &&
	     put_time(s, "created_at", r, row, SC_CREATED) &&
	     put_time(s, "updated_at", r, row, SC_UPDATED);
	if (!ok) {
		cJSON_Delete(s);
		return NULL;
	}
	return s;
}

/* Answers one page: the first limit rows of res (which holds one more when a next page
 * exists) through row(), and next_cursor from c (kind 'a' or 's') or null. Takes res. */
static int page_answer(read_job *job, PGresult *res, int limit,
		       cJSON *(*row)(const PGresult *, int), char kind, const ingest_read_cursor *c)
{
	int n = PQntuples(res);
	cJSON *body = cJSON_CreateObject();
	cJSON *data = body ? cJSON_AddArrayToObject(body, "data") : NULL;

	if (!data)
		goto out_nomem;
	for (int i = 0; i < n && i < limit; i++) {
		cJSON *item = row(res, i);

		if (!item || !cJSON_AddItemToArray(data, item)) {
			cJSON_Delete(item);
			goto out_nomem;
		}
	}
	if (n > limit) {
		char text[INGEST_READ_CURSOR_MAX + 1];

		if (ingest_read_cursor_encode(kind, c, text, sizeof(text)) < 0 ||
		    !cJSON_AddStringToObject(body, "next_cursor", text))
			goto out_nomem;
	} else if (!cJSON_AddNullToObject(body, "next_cursor")) {
		goto out_nomem;
	}
	PQclear(res);
	return job_body(job, 200, body);

out_nomem:
	cJSON_Delete(body);
	PQclear(res);
	return -ENOMEM;
}

static int work_anomaly_list(dl_pg *pg, read_job *job)
{
	const ingest_anomaly_query *q = &job->in.aq;
	char sev[64] = "", from[24], to[24], score[40], key[24], limit[16];
	const char *vals[10];
	ingest_read_cursor c = { .key = 0 };
	PGresult *res;
	int r;

	if (q->severity_mask) {
		/* A text[] literal of validated enum words. */
		strcat(sev, "{");
		for (int i = 0; ingest_read_severities[i]; i++) {
			if (!(q->severity_mask & (1u << i)))
				continue;
			if (sev[1])
				strcat(sev, ",");
			strcat(sev, ingest_read_severities[i]);
		}
		strcat(sev, "}");
	}
	snprintf(from, sizeof(from), "%" PRId64, q->from_ms);
	snprintf(to, sizeof(to), "%" PRId64, q->to_ms);
	snprintf(score, sizeof(score), "%.17g", q->min_score);
	snprintf(key, sizeof(key), "%" PRId64, q->cursor.key);
	/* One row more than the page tells whether there is a next page. */
	snprintf(limit, sizeof(limit), "%d", q->limit + 1);
	vals[0] = job->org_id;
	vals[1] = q->has_stream ? q->stream : NULL;
	vals[2] = q->severity_mask ? sev : NULL;
	vals[3] = q->has_status ? q->status : NULL;
	vals[4] = q->has_from ? from : NULL;
	vals[5] = q->has_to ? to : NULL;
	vals[6] = q->has_min_score ? score : NULL;
	vals[7] = q->has_cursor ? key : NULL;
	vals[8] = q->has_cursor ? q->cursor.id : NULL;
	vals[9] = limit;
	r = read_exec(pg, job, "read_anomaly_list", 10, vals, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) > q->limit) {
		int last = q->limit - 1;

		c.key = col_int(res, last, AC_DETECTED_US);
		snprintf(c.id, sizeof(c.id), "%s", col_text(res, last, AC_ID));
	}
	return page_answer(job, res, q->limit, anomaly_json, 'a', &c);
}

/* The anomaly job->target with its history, as a body; 404 when it is not in the org. */
static int work_anomaly_answer(dl_pg *pg, read_job *job)
{
	char hmax[16];
	const char *vals[3] = { job->org_id, job->target, hmax };
	PGresult *res, *hist;
	cJSON *a, *list;
	int r;

	r = read_exec(pg, job, "read_anomaly_get", 2, vals, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) == 0) {
		PQclear(res);
		job_answer(job, 404, "not_found", "no anomaly %s in this org", job->target);
		return 0;
	}
	a = anomaly_json(res, 0);
	PQclear(res);
	if (!a)
		return -ENOMEM;
	snprintf(hmax, sizeof(hmax), "%d", READ_HISTORY_MAX);
	r = read_exec(pg, job, "read_anomaly_history", 3, vals, &hist);
	if (r < 0) {
		cJSON_Delete(a);
		return r;
	}
	list = cJSON_AddArrayToObject(a, "status_history");
	for (int i = 0; list && i < PQntuples(hist); i++) {
		cJSON *h = cJSON_CreateObject();

		if (h && !cJSON_AddItemToArray(list, h)) {
			cJSON_Delete(h);
			h = NULL;
		}
		/* Once in the list, h is freed with a. */
		if (!h || !put_text(h, "from", hist, i, 0) || !put_text(h, "to", hist, i, 1) ||
		    !put_text(h, "note", hist, i, 2) || !put_text(h, "actor", hist, i, 3) ||
		    !put_time(h, "changed_at", hist, i, 4))
			list = NULL;
	}
	PQclear(hist);
	if (!list) {
		cJSON_Delete(a);
		return -ENOMEM;
	}
	return job_body(job, 200, a);
}

static int work_anomaly_patch(dl_pg *pg, read_job *job)
{
	const ingest_anomaly_patch *p = &job->in.patch;
	const char *actor[1] = { job->actor };
	const char *vals[5] = { job->org_id, job->target, p->status, p->has_note ? "t" : "f",
				p->has_note && !p->note_null ? p->note : NULL };
	PGresult *res;
	int r, n;

	r = read_exec(pg, job, "read_set_actor", 1, actor, NULL);
	if (r < 0)
		return r;
	r = read_exec(pg, job, "read_anomaly_patch", 5, vals, &res);
	if (r < 0)
		return r;
	n = PQntuples(res);
	PQclear(res);
	if (n == 0) {
		job_answer(job, 404, "not_found", "no anomaly %s in this org", job->target);
		return 0;
	}
	return work_anomaly_answer(pg, job);
}

static int work_stream_list(dl_pg *pg, read_job *job)
{
	const ingest_stream_query *q = &job->in.sq;
	char limit[16];
	const char *vals[3] = { job->org_id, q->has_cursor ? q->cursor.id : NULL, limit };
	ingest_read_cursor c = { .key = 0 };
	PGresult *res;
	int r;

	snprintf(limit, sizeof(limit), "%d", q->limit + 1);
	r = read_exec(pg, job, "read_stream_list", 3, vals, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) > q->limit)
		snprintf(c.id, sizeof(c.id), "%s", col_text(res, q->limit - 1, SC_NAME));
	return page_answer(job, res, q->limit, stream_json, 's', &c);
}

static int work_stream_get(dl_pg *pg, read_job *job)
{
	const char *vals[2] = { job->org_id, job->target };
	PGresult *res;
	cJSON *s;
	int r;

	r = read_exec(pg, job, "read_stream_get", 2, vals, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) == 0) {
		PQclear(res);
		job_answer(job, 404, "not_found", "no stream %s in this org", job->target);
		return 0;
	}
	s = stream_json(res, 0);
	PQclear(res);
	if (!s)
		return -ENOMEM;
	return job_body(job, 200, s);
}

/* Updates the row, or creates it (within the plan's stream limit); a detector registering the
 * stream between the two is caught by ON CONFLICT and the update is tried once more. */
static int work_stream_put(dl_pg *pg, read_job *job)
{
	const ingest_stream_put *p = &job->put;
	char sens[40];
	const char *vals[5] = { job->org_id, job->target, p->has_sensitivity ? "t" : "f",
				p->has_sensitivity && !p->sensitivity_null ? sens : NULL,
				p->settings_json };
	const char *const order[] = { "read_stream_update", "read_stream_insert",
				      "read_stream_update" };
	PGresult *res;
	int r;

	snprintf(sens, sizeof(sens), "%.17g", p->sensitivity);
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		int n;

		r = read_exec(pg, job, order[i], 5, vals, &res);
		if (r < 0)
			return r;
		n = PQntuples(res);
		PQclear(res);
		if (n > 0)
			return work_stream_get(pg, job);
	}
	job_answer(job, 409, "stream_limit_reached",
		   "the org has as many streams as its plan allows; stream %s was not created",
		   job->target);
	return 0;
}

static int work_usage(dl_pg *pg, read_job *job)
{
	const char *vals[1] = { job->org_id };
	int64_t counted, included, overage;
	PGresult *res;
	cJSON *u, *t;
	bool ok, allowed, live;
	int r;

	r = read_exec(pg, job, "read_usage", 1, vals, &res);
	if (r < 0)
		return r;
	if (PQntuples(res) == 0) {
		/* The org row is gone (deleted while its key was cached). */
		PQclear(res);
		job_answer(job, 404, "not_found", "no usage for this org");
		return 0;
	}
	allowed = col_text(res, 0, 8)[0] == 't';
	/* The live count answers when it is of the period the database computed for now; the
	 * rest (plan, price, thresholds) is the database's. */
	live = job->has_live && job->live.period_start_ms == col_int(res, 0, 2);
	counted = live ? job->live.anomalies : col_int(res, 0, 4);
	included = col_int(res, 0, 5);
	overage = counted > included ? counted - included : 0;
	u = cJSON_CreateObject();
	t = cJSON_Parse(col_text(res, 0, 13));
	if (u && t && !cJSON_AddItemToObject(u, "thresholds_reached", t))
		cJSON_Delete(t);
	ok = u && t && put_text(u, "plan", res, 0, 0) && put_text(u, "plan_name", res, 0, 1) &&
	     put_time(u, "period_start", res, 0, 2) && put_time(u, "period_end", res, 0, 3) &&
	     cJSON_AddNumberToObject(u, "anomalies", (double)counted) &&
	     put_num(u, "included", res, 0, 5) &&
	     (included > 0
		      ? cJSON_AddNumberToObject(u, "percent_used",
						round(10000.0 * (double)counted / (double)included) /
							100.0) != NULL
		      : cJSON_AddNullToObject(u, "percent_used") != NULL) &&
	     cJSON_AddNumberToObject(u, "overage", (double)overage) &&
	     cJSON_AddBoolToObject(u, "overage_allowed", allowed) &&
	     put_num(u, "overage_price_microusd", res, 0, 10) &&
	     (allowed ? cJSON_AddNumberToObject(u, "estimated_overage_microusd",
						(double)overage * col_num(res, 0, 10)) != NULL
		      : cJSON_AddNullToObject(u, "estimated_overage_microusd") != NULL) &&
	     cJSON_AddStringToObject(u, "source", live ? "live" : "database") &&
	     put_text(u, "billing_status", res, 0, 11) && put_text(u, "over_quota", res, 0, 12) &&
	     cJSON_GetObjectItemCaseSensitive(u, "thresholds_reached");
	PQclear(res);
	if (!ok) {
		if (!u)
			cJSON_Delete(t);
		cJSON_Delete(u);
		return -ENOMEM;
	}
	return job_body(job, 200, u);
}

/* The job on a worker thread: prepare (a no-op once done on this connection), then one
 * transaction scoped to the caller's org. */
static int read_work(dl_pg *pg, void *arg)
{
	read_job *job = arg;
	int r;

	for (size_t i = 0; i < sizeof(read_stmts) / sizeof(read_stmts[0]); i++) {
		r = dl_pg_prepare(pg, read_stmts[i].name, read_stmts[i].sql, read_stmts[i].nparams,
				  job->errtext, sizeof(job->errtext));
		if (r < 0)
			return r;
	}
	r = dl_pg_begin_org(pg, job->org_id, job->errtext, sizeof(job->errtext));
	if (r < 0)
		return r;
	switch (job->route->op) {
	case OP_ANOMALY_LIST:
		r = work_anomaly_list(pg, job);
		break;
	case OP_ANOMALY_GET:
		r = work_anomaly_answer(pg, job);
		break;
	case OP_ANOMALY_PATCH:
		r = work_anomaly_patch(pg, job);
		break;
	case OP_STREAM_LIST:
		r = work_stream_list(pg, job);
		break;
	case OP_STREAM_GET:
		r = work_stream_get(pg, job);
		break;
	case OP_STREAM_PUT:
		r = work_stream_put(pg, job);
		break;
	case OP_USAGE:
		r = work_usage(pg, job);
		break;
	}
	if (r < 0) {
		dl_pg_rollback(pg, NULL, 0);
		goto out_drop;
	}
	r = dl_pg_commit(pg, job->errtext, sizeof(job->errtext));
	if (r < 0)
		goto out_drop;
	return 0;

out_drop:
	free(job->json);
	job->json = NULL;
	job->status = 0;
	return r;
}

static void read_job_free(read_job *job)
{
	if (!job)
		return;
	ingest_stream_put_clear(&job->put);
	free(job->json);
	free(job);
}

static void read_fail_count(read_job *job, const char *reason)
{
	const char *labels[2] = { job->route->pattern, reason };

	dl_metric_inc(rs.failures, labels, 1);
}

static bool db_unavailable(int rc)
{
	return rc == -ENOTCONN || rc == -ECONNRESET || rc == -ETIMEDOUT || rc == -ECANCELED ||
	       rc == -EAGAIN || rc == -ESHUTDOWN;
}

/* On the loop: the one reply. */
static void read_done(int rc, void *arg)
{
	read_job *job = arg;
	dl_http_req *req = job->req;
	const char *labels[1] = { job->route->pattern };

	dl_metric_observe(rs.db_seconds, labels,
			  (double)(dl_time_mono_ns() - job->start_ns) / 1e9);
	if (rc == 0 && job->json) {
		dl_http_reply_json_text(req, job->status, job->json, strlen(job->json));
	} else if (rc == 0 && job->status) {
		dl_http_reply_error(req, job->status, job->code, "%s", job->message);
	} else if (db_unavailable(rc)) {
		read_fail_count(job, "unavailable");
		dl_log_warn("read API: database unavailable", "request_id", dl_http_req_id(req),
			    "org", job->org_id, "route", job->route->pattern, "error",
			    job->errtext[0] ? job->errtext : strerror(-rc));
		dl_http_req_set_header(req, "Retry-After", READ_RETRY_AFTER_DB);
		dl_http_reply_error(req, 503, "unavailable",
				    "the database is unavailable; retry later");
	} else {
		read_fail_count(job, "error");
		dl_log_error("read API: query failed", "request_id", dl_http_req_id(req), "org",
			     job->org_id, "route", job->route->pattern, "error",
			     job->errtext[0] ? job->errtext : strerror(rc < 0 ? -rc : EIO));
		dl_http_reply_error(req, 500, "internal_error",
				    "the request could not be completed");
	}
	read_job_free(job);
}

/* Replies 400 invalid_parameter naming the parameter. Consumes req. */
static void reply_bad_param(dl_http_req *req, const char *param, const char *msg)
{
	cJSON *d = cJSON_CreateArray(), *o = cJSON_CreateObject();

	if (d && o && cJSON_AddStringToObject(o, "parameter", param) && cJSON_AddItemToArray(d, o))
		o = NULL;
	cJSON_Delete(o);
	dl_http_reply_error_details(req, 400, "invalid_parameter", d, "%s", msg);
	cJSON_Delete(d);
}

static const char *req_query_get(void *src, const char *name)
{
	return dl_http_req_query(src, name);
}

/* Reads the JSON body of PATCH and PUT. Replies itself and returns negative on failure. */
static int read_body(dl_http_req *req, cJSON **ret)
{
	char err[160];
	size_t len = 0;
	int r;

	dl_http_req_body(req, &len);
	if (len > INGEST_READ_PUT_BODY_MAX) {
		dl_http_reply_error(req, 413, "payload_too_large",
				    "body: must be at most %d bytes", INGEST_READ_PUT_BODY_MAX);
		return -E2BIG;
	}
	r = dl_http_req_json(req, INGEST_READ_BODY_DEPTH, ret, err, sizeof(err));
	if (r == -EMEDIUMTYPE)
		dl_http_reply_error(req, 415, "unsupported_media_type",
				    "body: Content-Type must be application/json");
	else if (r == -E2BIG)
		dl_http_reply_error(req, 400, "too_deep", "body: JSON nested more than %d levels",
				    INGEST_READ_BODY_DEPTH);
	else if (r == -EINVAL)
		dl_http_reply_error(req, 400, "invalid_json", "body: %s", err);
	else if (r < 0)
		dl_http_reply_error(req, 500, "internal_error", "out of memory");
	return r;
}

/* Fills the job's input from the request. Replies itself (400/404/413/415) and returns
 * negative when the request is refused before any query. */
static int read_input(read_job *job)
{
	dl_http_req *req = job->req;
	char param[32], err[320];
	const char *target;
	cJSON *body = NULL;
	int r = 0;

	switch (job->route->op) {
	case OP_ANOMALY_GET:
	case OP_ANOMALY_PATCH:
		target = dl_http_req_param(req, "id");
		/* A malformed id names no anomaly: the same answer as an unknown one. */
		if (!target || proto_topics_check_id(target, strlen(target), NULL, 0) < 0) {
			dl_http_reply_error(req, 404, "not_found", "no such anomaly in this org");
			return -ENOENT;
		}
		snprintf(job->target, sizeof(job->target), "%s", target);
		break;
	case OP_STREAM_GET:
	case OP_STREAM_PUT:
		target = dl_http_req_param(req, "stream");
		if (!target || proto_topics_check_stream(target, strlen(target), NULL, 0) < 0) {
			reply_bad_param(req, "stream",
					"stream: must be 1-128 characters of A-Za-z0-9._:-");
			return -EINVAL;
		}
		snprintf(job->target, sizeof(job->target), "%s", target);
		break;
	default:
		break;
	}
	switch (job->route->op) {
	case OP_ANOMALY_LIST:
		r = ingest_read_parse_anomaly_query(req_query_get, req, &job->in.aq, param,
						    sizeof(param), err, sizeof(err));
		if (r < 0)
			reply_bad_param(req, param, err);
		return r;
	case OP_STREAM_LIST:
		r = ingest_read_parse_stream_query(req_query_get, req, &job->in.sq, param,
						   sizeof(param), err, sizeof(err));
		if (r < 0)
			reply_bad_param(req, param, err);
		return r;
	case OP_ANOMALY_PATCH:
		r = read_body(req, &body);
		if (r < 0)
			return r;
		r = ingest_read_parse_anomaly_patch(body, &job->in.patch, err, sizeof(err));
		break;
	case OP_STREAM_PUT:
		r = read_body(req, &body);
		if (r < 0)
			return r;
		r = ingest_read_parse_stream_put(body, &job->put, err, sizeof(err));
		break;
	default:
		return 0;
	}
	cJSON_Delete(body);
	if (r == -ENOMEM)
		dl_http_reply_error(req, 500, "internal_error", "out of memory");
	else if (r < 0)
		dl_http_reply_error(req, 400, "invalid_body", "%s", err);
	return r;
}

static void read_submit(read_job *job);
static void read_usage_live(dl_http_req *req, const ingest_usage_live *live, void *arg);

static void read_authed(dl_http_req *req, const ingest_principal *who, void *arg)
{
	const read_route *rt = arg;
	read_job *job = calloc(1, sizeof(*job));

	if (!job) {
		dl_http_reply_error(req, 500, "internal_error", "out of memory");
		return;
	}
	job->route = rt;
	job->req = req;
	job->start_ns = dl_time_mono_ns();
	snprintf(job->org_id, sizeof(job->org_id), "%s", who->org_id);
	snprintf(job->actor, sizeof(job->actor), "api_key:%s", who->key_id);
	if (read_input(job) < 0) {
		read_job_free(job);
		return;
	}
	if (rt->op == OP_USAGE) {
		ingest_usage_get(rs.ctx->usage, job->org_id, req, read_usage_live, job);
		return;
	}
	read_submit(job);
}

/* GET /v1/usage: the live count (or none) arrived; now the database. */
static void read_usage_live(dl_http_req *req, const ingest_usage_live *live, void *arg)
{
	read_job *job = arg;

	(void)req;
	if (live) {
		job->has_live = true;
		job->live = *live;
	}
	read_submit(job);
}

static void read_submit(read_job *job)
{
	dl_http_req *req = job->req;
	const read_route *rt = job->route;
	int r;

	r = dl_pgpool_submit(rs.ctx->db, read_work, read_done, job);
	if (r < 0) {
		read_fail_count(job, r == -EAGAIN ? "queue_full" : "unavailable");
		dl_log_warn("read API: database queue refused the request", "request_id",
			    dl_http_req_id(req), "org", job->org_id, "route", rt->pattern, "error",
			    strerror(-r));
		dl_http_req_set_header(req, "Retry-After",
				       r == -EAGAIN ? READ_RETRY_AFTER_QUEUE : READ_RETRY_AFTER_DB);
		dl_http_reply_error(req, 503, "unavailable",
				    r == -EAGAIN ? "too many requests are waiting for the database; "
						   "retry later"
						 : "the database is unavailable; retry later");
		read_job_free(job);
	}
}

static void read_handle(dl_http_req *req, void *opaque)
{
	ingest_auth_request(rs.ctx, req, 0, read_authed, opaque);
}

int ingest_read_register(ingest_ctx *ctx, char *errbuf, size_t errlen)
{
	static const double buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
					  0.25,  0.5,    1,     2.5,  5,     10 };
	int r;

	rs.ctx = ctx;
	rs.db_seconds = dl_metrics_histogram(
		ctx->metrics, "driftlock_ingest_read_db_seconds",
		"Read API: seconds from authentication to the database answer, by route.",
		buckets, sizeof(buckets) / sizeof(buckets[0]), 1, "route");
	rs.failures = dl_metrics_counter(
		ctx->metrics, "driftlock_ingest_read_failures_total",
		"Read API requests answered 5xx, by route and reason (queue_full, unavailable, "
		"error).",
		2, "route", "reason");
	if (!rs.db_seconds || !rs.failures) {
		snprintf(errbuf, errlen, "read API: cannot register metrics");
		return -ENOMEM;
	}
	for (size_t i = 0; i < sizeof(read_routes) / sizeof(read_routes[0]); i++) {
		const read_route *rt = &read_routes[i];

		r = dl_http_route(ctx->http, rt->method, rt->pattern, read_handle, (void *)rt,
				  NULL);
		if (r < 0) {
			snprintf(errbuf, errlen, "read API: cannot add route %s %s: %s",
				 rt->method, rt->pattern, strerror(-r));
			return r;
		}
	}
	return 0;
}
