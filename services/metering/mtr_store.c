/* SPDX-License-Identifier: Apache-2.0 */
/* mtr_store: anomaly batches into PostgreSQL, counted once per billing period, with threshold
 * notifications and usage records in the outbox of the same transaction. */
#include "services/metering/mtr_store.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_id.h"
#include "common/dl_pg.h"
#include "common/dl_time.h"
#include "proto/proto_notification.h"
#include "proto/proto_usage.h"

#define MTR_STORE_BATCH_MAX 100000
#define MTR_STORE_RETENTION_MAX 100000
#define MTR_STORE_PAGE 5000
#define MTR_NIL_UUID "00000000-0000-0000-0000-000000000000"


/* A growable text buffer for the per-org JSON rows. */
typedef struct mtr_buf {
	char *p;
	size_t len, cap;
	bool oom;
} mtr_buf;

typedef struct mtr_due {
	char org[PROTO_ORG_ID_LEN + 1];
	char cutoff[64];
} mtr_due;

struct mtr_store {
	char *dsn;
	dl_pg *pg;
	bool prepared;
	size_t *idx; /* batch order: indices of a[] sorted by org */
	size_t idx_cap;
	mtr_buf json, scratch; /* the COPY text of a batch; one JSON value on its way into it */
	mtr_org_usage *orgs;
	size_t orgs_cap;
	mtr_store_rejected *rejected;
	size_t rejected_cap;
	/* retention cursor: the current page of orgs with expired anomalies */
	mtr_due *due;
	size_t ndue, due_pos;
	bool due_more;
	char due_after[PROTO_ORG_ID_LEN + 1];
	dl_metric *m_anomalies, *m_notifications, *m_usage_records, *m_errors, *m_seconds,
		*m_retention;
};

static const char sql_store[] = "SELECT r_kind, r_period_start_ms, r_period_end_ms, r_added, "
				"r_counted, r_threshold, r_plan, r_over_quota, r_included, "
				"r_overage_allowed FROM dl_metering_store($1::uuid)";
/* The batch's rows reach dl_metering_store (0019) through COPY into this table of the session:
 * parsing one JSON parameter cost the server a third of its time per anomaly. Created in each
 * batch's transaction when missing (a reconnect starts a new session without it); emptied at
 * every commit. Columns in the order row_copy writes them. */
static const char sql_stage[] =
	"CREATE TEMP TABLE IF NOT EXISTS mtr_stage (org_id uuid, id text, stream text,"
	" event_id text, event_ts_ms bigint, detected_at_ms bigint, kind text,"
	" score double precision, p_value double precision, severity text, signals jsonb,"
	" window_start_ms bigint, window_end_ms bigint, window_events integer,"
	" entity_field text, entity_value text, explanation_summary text,"
	" explanation_signal text, explanation_value double precision,"
	" baseline_low double precision, baseline_median double precision,"
	" baseline_high double precision, evidence jsonb, excerpt text, detector_version text,"
	" detector_sensitivity double precision) ON COMMIT DELETE ROWS";
static const char sql_copy[] = "COPY mtr_stage FROM STDIN";
static const char sql_outbox[] = "INSERT INTO outbox (org_id, topic, key, payload) "
				 "VALUES ($1::uuid, $2, $1, $3)";
static const char sql_usage_all[] =
	"SELECT org_id, period_start_ms, period_end_ms, counted, included, over_quota, "
	"overage_allowed FROM dl_metering_usage_all($1::uuid, $2::integer)";
static const char sql_due[] =
	"SELECT org_id, cutoff FROM dl_metering_retention_due("
	"timestamptz 'epoch' + $1::bigint * interval '1 millisecond', $2::uuid, $3::integer)";
static const char sql_org[] = "SELECT set_config('driftlock.org_id', $1, true)";
/* Oldest first through anomalies_org_time_id_idx, then primary-key deletes (EXPLAIN in
 * docs/operations.md). */
static const char sql_retention[] =
	"DELETE FROM anomalies WHERE org_id = $1::uuid AND id = ANY (ARRAY("
	"SELECT a.id FROM anomalies AS a WHERE a.org_id = $1::uuid "
	"AND a.detected_at < $2::timestamptz ORDER BY a.detected_at LIMIT $3::integer))";

static void buf_reserve(mtr_buf *b, size_t more)
{
	char *p;
	size_t cap;

	if (b->oom || b->len + more + 1 <= b->cap)
		return;
	cap = b->cap ? b->cap : 65536;
	while (cap < b->len + more + 1)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void buf_raw(mtr_buf *b, const char *s, size_t n)
{
	buf_reserve(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_str(mtr_buf *b, const char *s)
{
	buf_raw(b, s, strlen(s));
}

/* A JSON string; the input is UTF-8 already (the decoder checked it). */
static void buf_jstr(mtr_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *run = p;

	buf_raw(b, "\"", 1);
	for (; *p; p++) {
		char esc[7];

		if (*p >= 0x20 && *p != '"' && *p != '\\')
			continue;
		buf_raw(b, (const char *)run, (size_t)(p - run));
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			buf_raw(b, esc, 2);
		} else {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[*p >> 4];
			esc[5] = hex[*p & 15];
			buf_raw(b, esc, 6);
		}
		run = p + 1;
	}
	buf_raw(b, (const char *)run, (size_t)(p - run));
	buf_raw(b, "\"", 1);
}

static void buf_num(mtr_buf *b, double v)
{
	char tmp[40];
	int n;

	if (!isfinite(v)) {
		buf_raw(b, "null", 4);
		return;
	}
	/* The shortest of 15 or 17 digits that reads back as v (0.61, not 0.60999999999999999). */
	n = snprintf(tmp, sizeof(tmp), "%.15g", v);
	if (strtod(tmp, NULL) != v)
		n = snprintf(tmp, sizeof(tmp), "%.17g", v);
	buf_raw(b, tmp, (size_t)n);
}

static void buf_int(mtr_buf *b, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

	buf_raw(b, tmp, (size_t)n);
}

static void buf_key(mtr_buf *b, const char *k)
{
	buf_raw(b, ",\"", 2);
	buf_str(b, k);
	buf_raw(b, "\":", 2);
}


/* Text for COPY's text format: backslash, tab, newline and carriage return escaped (the input
 * is NUL-terminated UTF-8, so nothing else needs it). */
static void buf_copy_text(mtr_buf *b, const char *s, size_t n)
{
	const char *run = s, *end = s + n, *p;

	for (p = s; p < end; p++) {
		char esc[2] = { '\\', 0 };

		switch (*p) {
		case '\\': esc[1] = '\\'; break;
		case '\t': esc[1] = 't'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		default: continue;
		}
		buf_raw(b, run, (size_t)(p - run));
		buf_raw(b, esc, 2);
		run = p + 1;
	}
	buf_raw(b, run, (size_t)(end - run));
}

static void col_text(mtr_buf *b, const char *s)
{
	buf_raw(b, "\t", 1);
	buf_copy_text(b, s, strlen(s));
}

static void col_int(mtr_buf *b, int64_t v)
{
	buf_raw(b, "\t", 1);
	buf_int(b, v);
}

/* A double column; COPY reads "null" as no number, so a non-finite value is NULL (\N). */
static void col_num(mtr_buf *b, double v)
{
	buf_raw(b, "\t", 1);
	if (isfinite(v))
		buf_num(b, v);
	else
		buf_raw(b, "\\N", 2);
}

static void col_null(mtr_buf *b)
{
	buf_raw(b, "\t\\N", 3);
}

/* A JSON column: the value written into scratch, then escaped for COPY. */
static void col_json(mtr_buf *b, mtr_buf *scratch)
{
	buf_raw(b, "\t", 1);
	buf_copy_text(b, scratch->p ? scratch->p : "", scratch->len);
	b->oom |= scratch->oom;
}

static const char *const kind_names[] = {"event", "window", "value", "entity", "rate"};
static const char *const severity_names[] = {"low", "medium", "high", "critical"};

/* One anomaly as a line of COPY text for mtr_stage (sql_stage's column order). */
static void row_copy(mtr_buf *b, mtr_buf *scratch, const struct proto_anomaly *a)
{
	size_t i;

	buf_str(b, a->org_id);
	col_text(b, a->id);
	col_text(b, a->stream);
	col_text(b, a->event_id);
	col_int(b, a->event_ts_ms);
	col_int(b, a->detected_at_ms);
	col_text(b, (unsigned)a->kind < 5 ? kind_names[a->kind] : "");
	col_num(b, a->score);
	col_num(b, a->p_value);
	col_text(b, (unsigned)a->severity < 4 ? severity_names[a->severity] : "");
	scratch->len = 0;
	buf_raw(scratch, "{", 1);
	for (i = 0; i < a->nsignals && i < PROTO_ANOMALY_SIGNALS_MAX; i++) {
		if (i)
			buf_raw(scratch, ",", 1);
		buf_jstr(scratch, a->signals[i].name);
		buf_raw(scratch, ":", 1);
		buf_num(scratch, a->signals[i].value);
	}
	buf_raw(scratch, "}", 1);
	col_json(b, scratch);
	if (a->has_window) {
		col_int(b, a->window.start_ts_ms);
		col_int(b, a->window.end_ts_ms);
		col_int(b, a->window.events);
	} else {
		col_null(b);
		col_null(b);
		col_null(b);
	}
	if (a->has_entity) {
		col_text(b, a->entity.field);
		col_text(b, a->entity.value);
	} else {
		col_null(b);
		col_null(b);
	}
	col_text(b, a->explanation.summary);
	col_text(b, a->explanation.signal);
	col_num(b, a->explanation.value);
	col_num(b, a->explanation.baseline_low);
	col_num(b, a->explanation.baseline_median);
	col_num(b, a->explanation.baseline_high);
	/* evidence keeps the message's shape: [{"name", "value"?, "bits"?, "detail"?}] */
	scratch->len = 0;
	buf_raw(scratch, "[", 1);
	for (i = 0; i < a->explanation.nevidence && i < PROTO_ANOMALY_EVIDENCE_MAX; i++) {
		const struct proto_anomaly_evidence *e = &a->explanation.evidence[i];

		buf_str(scratch, i ? ",{\"name\":" : "{\"name\":");
		buf_jstr(scratch, e->name);
		if (e->has_value) {
			buf_key(scratch, "value");
			buf_num(scratch, e->value);
		}
		if (e->has_bits) {
			buf_key(scratch, "bits");
			buf_num(scratch, e->bits);
		}
		if (e->has_detail) {
			buf_key(scratch, "detail");
			buf_jstr(scratch, e->detail);
		}
		buf_raw(scratch, "}", 1);
	}
	buf_raw(scratch, "]", 1);
	col_json(b, scratch);
	col_text(b, a->excerpt);
	col_text(b, a->detector.version);
	col_num(b, a->detector.sensitivity);
	buf_raw(b, "\n", 1);
}

/* dl_pg codes -> the store's: the database being unavailable is one code the caller can act
 * on (pause and retry), whatever way the connection failed. */
static int map_err(mtr_store *s, int r)
{
	const char *st = s->pg ? dl_pg_last_sqlstate(s->pg) : "08001";

	if (r == -ENOTCONN || r == -ECONNRESET || strncmp(st, "08", 2) == 0 ||
	    strncmp(st, "57P", 3) == 0)
		return -ECONNREFUSED;
	if (r == -EAGAIN || r == -ETIMEDOUT || r == -ENOMEM || r == -EINVAL)
		return r;
	return -EIO;
}

static void count_error(mtr_store *s, int r)
{
	const char *lv[] = {r == -ECONNREFUSED ? "unavailable" : "other"};

	dl_metric_inc(s->m_errors, lv, 1);
}

static int ensure_conn(mtr_store *s, char *errbuf, size_t errlen)
{
	static const struct {
		const char *name, *sql;
		int nparams;
	} stmts[] = {
		{"mtr_store", sql_store, 1},         {"mtr_outbox", sql_outbox, 3},
		{"mtr_usage_all", sql_usage_all, 2}, {"mtr_due", sql_due, 3},
		{"mtr_org", sql_org, 1},             {"mtr_retention", sql_retention, 3},
	};
	dl_pg_options opts = {.connect_timeout_s = 5,
			      .statement_timeout_ms = 30000,
			      .application_name = "driftlock-metering-store"};
	size_t i;
	int r;

	if (!s->pg) {
		r = dl_pg_connect(s->dsn, &opts, errbuf, errlen, &s->pg);
		if (r < 0)
			return r == -EINVAL || r == -ENOMEM ? r : -ECONNREFUSED;
	}
	if (s->prepared)
		return 0;
	for (i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
		r = dl_pg_prepare(s->pg, stmts[i].name, stmts[i].sql, stmts[i].nparams, errbuf,
				  errlen);
		if (r < 0)
			return map_err(s, r);
	}
	s->prepared = true;
	return 0;
}

int mtr_store_new(const char *pg_dsn, dl_metrics_registry *m, mtr_store **ret, char *errbuf,
		  size_t errlen)
{
	mtr_store *s;
	char err[256];
	int r;

	if (!pg_dsn || !ret) {
		snprintf(errbuf, errlen, "mtr_store: no dsn");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s || !(s->dsn = strdup(pg_dsn))) {
		free(s);
		snprintf(errbuf, errlen, "mtr_store: out of memory");
		return -ENOMEM;
	}
	if (m) {
		s->m_anomalies = dl_metrics_counter(
			m, "driftlock_metering_store_anomalies_total",
			"Anomalies handled by the store, by result (stored, duplicate, rejected).", 1,
			"result");
		s->m_notifications = dl_metrics_counter(
			m, "driftlock_metering_store_notifications_total",
			"Usage-threshold notifications written to the outbox.", 0);
		s->m_usage_records = dl_metrics_counter(
			m, "driftlock_metering_store_usage_records_total",
			"Usage records (billable overage) written to the outbox.", 0);
		s->m_errors = dl_metrics_counter(
			m, "driftlock_metering_store_errors_total",
			"Store calls rolled back, by cause (unavailable, other).", 1, "cause");
		s->m_seconds = dl_metrics_histogram(
			m, "driftlock_metering_store_batch_seconds",
			"Time of one mtr_store_batch transaction.", NULL, 0, 0);
		s->m_retention = dl_metrics_counter(
			m, "driftlock_metering_retention_deleted_total",
			"Anomalies deleted by the retention job.", 0);
	}
	snprintf(s->due_after, sizeof(s->due_after), MTR_NIL_UUID);
	/* Unreachable now is not fatal: the next call connects. A DSN libpq cannot parse is. */
	r = ensure_conn(s, err, sizeof(err));
	if (r == -EINVAL || r == -ENOMEM) {
		snprintf(errbuf, errlen, "mtr_store: %s", err);
		mtr_store_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

void mtr_store_free(mtr_store *s)
{
	if (!s)
		return;
	dl_pg_free(s->pg);
	free(s->dsn);
	free(s->idx);
	free(s->json.p);
	free(s->scratch.p);
	free(s->orgs);
	free(s->rejected);
	free(s->due);
	free(s);
}

static _Thread_local const struct proto_anomaly *sort_base;

static int cmp_idx(const void *x, const void *y)
{
	size_t i = *(const size_t *)x, j = *(const size_t *)y;
	int c = strcmp(sort_base[i].org_id, sort_base[j].org_id);

	if (c)
		return c;
	return i < j ? -1 : i > j;
}

static int grow(void **p, size_t *cap, size_t want, size_t size)
{
	void *np;
	size_t ncap;

	if (want <= *cap)
		return 0;
	ncap = *cap ? *cap : 16;
	while (ncap < want)
		ncap *= 2;
	np = realloc(*p, ncap * size);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = ncap;
	return 0;
}

static int add_org(mtr_store *s, size_t *norgs, const char *org, int64_t ps, int64_t pe,
		   int64_t counted, int64_t included, const char *over_quota)
{
	mtr_org_usage *u;

	if (grow((void **)&s->orgs, &s->orgs_cap, *norgs + 1, sizeof(*s->orgs)) < 0)
		return -ENOMEM;
	u = &s->orgs[(*norgs)++];
	memset(u, 0, sizeof(*u));
	snprintf(u->org_id, sizeof(u->org_id), "%s", org);
	u->period_start_ms = ps;
	u->period_end_ms = pe;
	u->anomalies = counted;
	u->included = included;
	snprintf(u->over_quota, sizeof(u->over_quota), "%s", over_quota);
	u->blocked = strcmp(over_quota, "block") == 0 && counted * 100 >= included * 120;
	return 0;
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static const char *effective_policy(const char *over_quota, bool overage_allowed)
{
	if (strcmp(over_quota, "allow_overage") == 0 && !overage_allowed)
		return "soft_cap";
	return over_quota;
}

static int outbox_put(mtr_store *s, const char *org, const char *topic, const char *payload,
		      char *errbuf, size_t errlen)
{
	const char *v[] = {org, topic, payload};
	int r = dl_pg_exec(s->pg, "mtr_outbox", 3, v, NULL, errbuf, errlen);

	return r < 0 ? map_err(s, r) : 0;
}

static int put_notification(mtr_store *s, const char *org, int threshold, int64_t counted,
			    int64_t included, int64_t ps, int64_t pe, const char *plan,
			    const char *policy, char *errbuf, size_t errlen)
{
	struct proto_notification n;
	char start[40], end[40], data[512], *json = NULL;
	const char *action = "notice";
	size_t len;
	int r;

	if (threshold == 120)
		action = strcmp(policy, "block") == 0		? "blocked"
			 : strcmp(policy, "allow_overage") == 0 ? "overage"
								: "warn";
	if (dl_time_format_rfc3339(ps, start, sizeof(start), errbuf, errlen) < 0 ||
	    dl_time_format_rfc3339(pe, end, sizeof(end), errbuf, errlen) < 0)
		return -EIO;
	memset(&n, 0, sizeof(n));
	snprintf(n.id, sizeof(n.id), "usage-%s-%" PRId64 "-%d", org, ps, threshold);
	snprintf(n.org_id, sizeof(n.org_id), "%s", org);
	snprintf(n.kind, sizeof(n.kind), "usage_threshold");
	snprintf(data, sizeof(data),
		 "{\"threshold\":%d,\"counted\":%" PRId64 ",\"included\":%" PRId64
		 ",\"percent\":%" PRId64 ",\"period_start\":\"%s\",\"period_end\":\"%s\","
		 "\"plan\":\"%s\",\"over_quota\":\"%s\",\"action\":\"%s\"}",
		 threshold, counted, included, included > 0 ? counted * 100 / included : 0, start,
		 end, plan, policy, action);
	n.data = data;
	n.data_len = strlen(data);
	n.created_at_ms = dl_time_now_ms();
	r = proto_notification_encode(&n, &json, &len, errbuf, errlen);
	if (r < 0)
		return r == -ENOMEM ? r : -EIO;
	r = outbox_put(s, org, DL_TOPIC_NOTIFICATIONS, json, errbuf, errlen);
	free(json);
	return r;
}

static int put_usage(mtr_store *s, const char *org, int64_t quantity, int64_t included,
		     int64_t ps, int64_t pe, const char *plan, char *errbuf, size_t errlen)
{
	struct proto_usage u;
	char *json = NULL;
	size_t len;
	int r;

	memset(&u, 0, sizeof(u));
	snprintf(u.id, sizeof(u.id), "usage-%s-%" PRId64 "-%" PRId64, org, ps, quantity);
	snprintf(u.org_id, sizeof(u.org_id), "%s", org);
	u.period_start_ms = ps;
	u.period_end_ms = pe;
	u.metric = PROTO_USAGE_METRIC_ANOMALIES;
	u.quantity = quantity;
	u.overage = quantity > included ? quantity - included : 0;
	snprintf(u.plan, sizeof(u.plan), "%s", plan);
	u.recorded_at_ms = dl_time_now_ms();
	r = proto_usage_encode(&u, &json, &len, errbuf, errlen);
	if (r < 0)
		return r == -ENOMEM ? r : -EIO;
	r = outbox_put(s, org, DL_TOPIC_USAGE, json, errbuf, errlen);
	free(json);
	return r;
}

/* Stores the group a[idx[0..n-1]] of one org; fills the result. */
static int store_org(mtr_store *s, const struct proto_anomaly *a, const size_t *idx, size_t n,
		     mtr_store_result *res, size_t *nrejected, size_t *norgs, char *errbuf,
		     size_t errlen)
{
	const char *org = a[idx[0]].org_id;
	const char *v[1];
	char plan[PROTO_USAGE_PLAN_MAX + 1] = "", over[16] = "soft_cap";
	const char *policy = "soft_cap";
	int64_t included = 0;
	size_t added = 0, i;
	PGresult *r = NULL;
	int rc = 0, row, rows;

	if (!dl_id_is_uuid(org))
		goto reject;
	v[0] = org;
	rc = dl_pg_exec(s->pg, "mtr_store", 1, v, &r, errbuf, errlen);
	if (rc < 0)
		return map_err(s, rc);
	rows = PQntuples(r);
	for (row = 0; row < rows && rc == 0; row++) {
		const char *kind = PQgetvalue(r, row, 0);
		int64_t ps = col_i64(r, row, 1), pe = col_i64(r, row, 2);
		int64_t counted = col_i64(r, row, 4);

		if (strcmp(kind, "missing") == 0) {
			PQclear(r);
			goto reject;
		} else if (strcmp(kind, "org") == 0) {
			snprintf(plan, sizeof(plan), "%s", PQgetvalue(r, row, 6));
			snprintf(over, sizeof(over), "%s", PQgetvalue(r, row, 7));
			included = col_i64(r, row, 8);
			policy = effective_policy(over, PQgetvalue(r, row, 9)[0] == 't');
		} else if (strcmp(kind, "period") == 0) {
			int64_t add = col_i64(r, row, 3);

			added += (size_t)add;
			if (strcmp(policy, "allow_overage") == 0 && add > 0 && counted > included) {
				rc = put_usage(s, org, counted, included, ps, pe, plan, errbuf,
					       errlen);
				res->usage_records += rc == 0;
			}
		} else if (strcmp(kind, "alert") == 0) {
			rc = put_notification(s, org, (int)col_i64(r, row, 5), counted, included,
					      ps, pe, plan, policy, errbuf, errlen);
			res->notifications += rc == 0;
		} else if (strcmp(kind, "current") == 0) {
			rc = add_org(s, norgs, org, ps, pe, counted, included, policy);
		}
	}
	PQclear(r);
	if (rc < 0)
		return rc;
	res->stored += added;
	res->duplicates += n - added;
	return 0;

reject:
	if (grow((void **)&s->rejected, &s->rejected_cap, *nrejected + n, sizeof(*s->rejected)) <
	    0)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		s->rejected[*nrejected].index = idx[i];
		s->rejected[*nrejected].reason = "unknown_org";
		(*nrejected)++;
	}
	return 0;
}

/* The result of a raw libpq call inside the store's transaction, as the store's codes. */
static int copy_err(mtr_store *s, PGresult *r, const char *what, char *errbuf, size_t errlen)
{
	PGconn *c = dl_pg_conn(s->pg);
	const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

	snprintf(errbuf, errlen, "mtr_store: %s: %s", what,
		 r ? PQresultErrorMessage(r) : PQerrorMessage(c));
	if (PQstatus(c) != CONNECTION_OK || (st && (strncmp(st, "08", 2) == 0 ||
						   strncmp(st, "57P", 3) == 0)))
		return -ECONNREFUSED;
	return -EIO;
}

/* Puts the rows of a[] whose org is a UUID into mtr_stage (one COPY; other rows are the
 * caller's to reject). */
static int stage_rows(mtr_store *s, const struct proto_anomaly *a, size_t n, char *errbuf,
		      size_t errlen)
{
	PGconn *c = dl_pg_conn(s->pg);
	PGresult *r;
	size_t i;
	int rc;

	s->json.len = 0;
	s->json.oom = false;
	s->scratch.oom = false;
	for (i = 0; i < n; i++)
		if (dl_id_is_uuid(a[i].org_id))
			row_copy(&s->json, &s->scratch, &a[i]);
	if (s->json.oom) {
		snprintf(errbuf, errlen, "mtr_store: out of memory");
		return -ENOMEM;
	}
	r = PQexec(c, sql_stage);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		rc = copy_err(s, r, "staging table", errbuf, errlen);
		PQclear(r);
		return rc;
	}
	PQclear(r);
	r = PQexec(c, sql_copy);
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		rc = copy_err(s, r, "COPY", errbuf, errlen);
		PQclear(r);
		return rc;
	}
	PQclear(r);
	if (PQputCopyData(c, s->json.p ? s->json.p : "", (int)s->json.len) != 1 ||
	    PQputCopyEnd(c, NULL) != 1)
		return copy_err(s, NULL, "COPY", errbuf, errlen);
	rc = 0;
	while ((r = PQgetResult(c)) != NULL) {
		if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK)
			rc = copy_err(s, r, "COPY", errbuf, errlen);
		PQclear(r);
	}
	return rc;
}

int mtr_store_batch(mtr_store *s, const struct proto_anomaly *a, size_t n, mtr_store_result *res,
		    char *errbuf, size_t errlen)
{
	mtr_store_result out = {0};
	int64_t t0 = dl_time_mono_ns();
	size_t i, start, norgs = 0, nrejected = 0;
	int r;

	if (n > MTR_STORE_BATCH_MAX) {
		snprintf(errbuf, errlen, "mtr_store: batch of %zu over %d", n, MTR_STORE_BATCH_MAX);
		return -EINVAL;
	}
	if (n == 0) {
		out.orgs = s->orgs;
		out.rejected = s->rejected;
		*res = out;
		return 0;
	}
	if (grow((void **)&s->idx, &s->idx_cap, n, sizeof(*s->idx)) < 0) {
		snprintf(errbuf, errlen, "mtr_store: out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < n; i++)
		s->idx[i] = i;
	sort_base = a;
	qsort(s->idx, n, sizeof(*s->idx), cmp_idx);

	r = ensure_conn(s, errbuf, errlen);
	if (r < 0)
		goto out_count;
	r = dl_pg_begin(s->pg, errbuf, errlen);
	if (r < 0) {
		r = map_err(s, r);
		goto out_count;
	}
	r = stage_rows(s, a, n, errbuf, errlen);
	for (start = 0; start < n && r == 0; start = i) {
		for (i = start + 1; i < n && strcmp(a[s->idx[i]].org_id, a[s->idx[start]].org_id) == 0;
		     i++)
			;
		r = store_org(s, a, s->idx + start, i - start, &out, &nrejected, &norgs, errbuf,
			      errlen);
	}
	if (r < 0)
		goto out_rollback;
	r = dl_pg_commit(s->pg, errbuf, errlen);
	if (r < 0) {
		r = map_err(s, r);
		goto out_count;
	}
	{
		const char *st[] = {"stored"}, *du[] = {"duplicate"}, *rj[] = {"rejected"};

		dl_metric_inc(s->m_anomalies, st, (double)out.stored);
		dl_metric_inc(s->m_anomalies, du, (double)out.duplicates);
		dl_metric_inc(s->m_anomalies, rj, (double)nrejected);
		dl_metric_inc(s->m_notifications, NULL, (double)out.notifications);
		dl_metric_inc(s->m_usage_records, NULL, (double)out.usage_records);
		dl_metric_observe(s->m_seconds, NULL, (double)(dl_time_mono_ns() - t0) / 1e9);
	}
	out.orgs = s->orgs;
	out.norgs = norgs;
	out.rejected = s->rejected;
	out.nrejected = nrejected;
	*res = out;
	return 0;

out_rollback:
	{
		char ignore[64];

		(void)dl_pg_rollback(s->pg, ignore, sizeof(ignore));
	}
out_count:
	count_error(s, r);
	return r;
}

int mtr_store_usage_all(mtr_store *s, mtr_store_result *res, char *errbuf, size_t errlen)
{
	char after[PROTO_ORG_ID_LEN + 1] = MTR_NIL_UUID, limit[16];
	mtr_store_result out = {0};
	size_t norgs = 0;
	int r, rows, row;

	snprintf(limit, sizeof(limit), "%d", MTR_STORE_PAGE);
	r = ensure_conn(s, errbuf, errlen);
	if (r < 0)
		goto out_count;
	do {
		const char *v[] = {after, limit};
		PGresult *pr = NULL;

		r = dl_pg_exec(s->pg, "mtr_usage_all", 2, v, &pr, errbuf, errlen);
		if (r < 0) {
			r = map_err(s, r);
			goto out_count;
		}
		rows = PQntuples(pr);
		for (row = 0; row < rows && r == 0; row++)
			r = add_org(s, &norgs, PQgetvalue(pr, row, 0), col_i64(pr, row, 1),
				    col_i64(pr, row, 2), col_i64(pr, row, 3), col_i64(pr, row, 4),
				    effective_policy(PQgetvalue(pr, row, 5),
						     PQgetvalue(pr, row, 6)[0] == 't'));
		if (rows > 0)
			snprintf(after, sizeof(after), "%s", PQgetvalue(pr, rows - 1, 0));
		PQclear(pr);
		if (r < 0) {
			snprintf(errbuf, errlen, "mtr_store: out of memory");
			goto out_count;
		}
	} while (rows == MTR_STORE_PAGE);
	out.orgs = s->orgs;
	out.norgs = norgs;
	out.rejected = s->rejected;
	*res = out;
	return 0;

out_count:
	count_error(s, r);
	return r;
}

/* The next page of orgs with expired anomalies; s->ndue == 0 when there is none. */
static int due_fetch(mtr_store *s, int64_t now_ms, char *errbuf, size_t errlen)
{
	char now[24], limit[16];
	const char *v[] = {now, s->due_after, limit};
	PGresult *pr = NULL;
	int r, rows, row;

	snprintf(now, sizeof(now), "%" PRId64, now_ms);
	snprintf(limit, sizeof(limit), "%d", MTR_STORE_PAGE);
	r = dl_pg_exec(s->pg, "mtr_due", 3, v, &pr, errbuf, errlen);
	if (r < 0)
		return map_err(s, r);
	rows = PQntuples(pr);
	free(s->due);
	s->due = rows ? calloc((size_t)rows, sizeof(*s->due)) : NULL;
	if (rows && !s->due) {
		PQclear(pr);
		return -ENOMEM;
	}
	for (row = 0; row < rows; row++) {
		snprintf(s->due[row].org, sizeof(s->due[row].org), "%s", PQgetvalue(pr, row, 0));
		snprintf(s->due[row].cutoff, sizeof(s->due[row].cutoff), "%s",
			 PQgetvalue(pr, row, 1));
	}
	s->ndue = (size_t)rows;
	s->due_pos = 0;
	s->due_more = rows == MTR_STORE_PAGE;
	if (rows)
		snprintf(s->due_after, sizeof(s->due_after), "%s", s->due[rows - 1].org);
	PQclear(pr);
	return 0;
}

static int delete_some(mtr_store *s, const mtr_due *d, size_t batch_rows, size_t *ret,
		       char *errbuf, size_t errlen)
{
	char limit[24];
	const char *v[] = {d->org, d->cutoff, limit};
	const char *ov[] = {d->org};
	PGresult *pr = NULL;
	int r;

	snprintf(limit, sizeof(limit), "%zu", batch_rows);
	r = dl_pg_begin(s->pg, errbuf, errlen);
	if (r < 0)
		return map_err(s, r);
	r = dl_pg_exec(s->pg, "mtr_org", 1, ov, NULL, errbuf, errlen);
	if (r == 0)
		r = dl_pg_exec(s->pg, "mtr_retention", 3, v, &pr, errbuf, errlen);
	if (r < 0) {
		char ignore[64];

		r = map_err(s, r);
		(void)dl_pg_rollback(s->pg, ignore, sizeof(ignore));
		return r;
	}
	*ret = (size_t)strtoull(PQcmdTuples(pr), NULL, 10);
	PQclear(pr);
	r = dl_pg_commit(s->pg, errbuf, errlen);
	return r < 0 ? map_err(s, r) : 0;
}

int mtr_store_retention(mtr_store *s, int64_t now_ms, size_t batch_rows, size_t *ret_deleted,
			char *errbuf, size_t errlen)
{
	size_t deleted = 0;
	int r;

	if (batch_rows == 0 || batch_rows > MTR_STORE_RETENTION_MAX) {
		snprintf(errbuf, errlen, "mtr_store: retention batch must be 1..%d",
			 MTR_STORE_RETENTION_MAX);
		return -EINVAL;
	}
	r = ensure_conn(s, errbuf, errlen);
	if (r < 0)
		goto out_count;
	for (;;) {
		if (s->due_pos >= s->ndue) {
			/* A pass ends when a page came back short: start over next time. */
			if (s->ndue > 0 && !s->due_more) {
				s->ndue = s->due_pos = 0;
				snprintf(s->due_after, sizeof(s->due_after), MTR_NIL_UUID);
				break;
			}
			r = due_fetch(s, now_ms, errbuf, errlen);
			if (r < 0)
				goto out_count;
			if (s->ndue == 0) {
				snprintf(s->due_after, sizeof(s->due_after), MTR_NIL_UUID);
				break;
			}
		}
		r = delete_some(s, &s->due[s->due_pos], batch_rows, &deleted, errbuf, errlen);
		if (r < 0)
			goto out_count;
		if (deleted < batch_rows)
			s->due_pos++;
		if (deleted > 0)
			break;
	}
	dl_metric_inc(s->m_retention, NULL, (double)deleted);
	*ret_deleted = deleted;
	return 0;

out_count:
	count_error(s, r);
	return r;
}
