/* SPDX-License-Identifier: Apache-2.0 */
/* dl_outbox: the outbox relay: pending rows of this role to Kafka, then marked sent in one statement. */
#include "common/dl_outbox.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "common/dl_pg.h"

/* dl_outbox_pending caps a read at 1000 rows. */
#define OUTBOX_MAX_ROWS 1000
/* Headers per message; a row with more is failed rather than sent without some of them. */
#define OUTBOX_MAX_HEADERS 16
/* A header name or value longer than this is refused the same way. */
#define OUTBOX_MAX_HEADER_LEN 1024

static const char SQL_PENDING[] =
	"SELECT p.id::text, p.topic, p.key, p.payload, p.headers::text, "
	"extract(epoch FROM now() - p.created_at)::float8 "
	"FROM dl_outbox_pending($1::integer) AS p ORDER BY p.id";
static const char SQL_SENT[] = "SELECT dl_outbox_mark_sent($1::bigint[])";
static const char SQL_FAILED[] = "SELECT dl_outbox_mark_failed($1::bigint[], $2::text[])";

struct dl_outbox {
	dl_pg *pg;
	dl_kafka_producer *p;
	dl_metric *m_sent;
	dl_metric *m_failed;
	dl_metric *m_pending;
	dl_metric *m_oldest;
};

/* One row of a pass; the delivery report's opaque. */
typedef struct relay_row {
	const char *id; /* in the pass's PGresult */
	bool waiting;   /* produced, no report yet */
	bool ok;
	char err[256];
	size_t *outstanding;
} relay_row;

/* A growing text buffer for the array literals of the two marking statements. */
typedef struct sbuf {
	char *s;
	size_t len, cap;
	bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
	char *ns;
	size_t cap;

	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		ns = realloc(b->s, cap);
		if (!ns) {
			b->oom = true;
			return;
		}
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

/* Appends s as one double-quoted element of a PostgreSQL array literal. */
static void sb_array_text(sbuf *b, const char *s)
{
	sb_put(b, "\"", 1);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			sb_put(b, "\\", 1);
		sb_put(b, s, 1);
	}
	sb_put(b, "\"", 1);
}

static void on_delivery(void *opaque, rd_kafka_resp_err_t err, int32_t partition,
			int64_t offset)
{
	relay_row *row = opaque;

	(void)partition;
	(void)offset;
	row->waiting = false;
	row->ok = err == RD_KAFKA_RESP_ERR_NO_ERROR;
	if (!row->ok)
		snprintf(row->err, sizeof(row->err), "delivery failed: %s", rd_kafka_err2str(err));
	(*row->outstanding)--;
}

/*
 * Turns the row's headers (a jsonb array of {"key": .., "value": ..}) into the NULL-terminated
 * name, value list dl_kafka_producer_produce takes; the strings live in *ret_tree.
 * Returns 0 or -EINVAL with the reason in row->err.
 */
static int parse_headers(const char *text, cJSON **ret_tree,
			 const char *out[2 * OUTBOX_MAX_HEADERS + 1], relay_row *row)
{
	cJSON *tree = cJSON_Parse(text), *h;
	size_t n = 0;

	if (!tree || !cJSON_IsArray(tree)) {
		snprintf(row->err, sizeof(row->err), "headers are not a JSON array");
		goto out_invalid;
	}
	cJSON_ArrayForEach(h, tree) {
		cJSON *k = cJSON_GetObjectItemCaseSensitive(h, "key");
		cJSON *v = cJSON_GetObjectItemCaseSensitive(h, "value");

		if (n == OUTBOX_MAX_HEADERS) {
			snprintf(row->err, sizeof(row->err), "more than %d headers",
				 OUTBOX_MAX_HEADERS);
			goto out_invalid;
		}
		if (!cJSON_IsString(k) || !cJSON_IsString(v) || !k->valuestring[0] ||
		    strlen(k->valuestring) > OUTBOX_MAX_HEADER_LEN ||
		    strlen(v->valuestring) > OUTBOX_MAX_HEADER_LEN) {
			snprintf(row->err, sizeof(row->err),
				 "header %zu is not {\"key\": string, \"value\": string} "
				 "of at most %d bytes each", n, OUTBOX_MAX_HEADER_LEN);
			goto out_invalid;
		}
		out[2 * n] = k->valuestring;
		out[2 * n + 1] = v->valuestring;
		n++;
	}
	out[2 * n] = NULL;
	*ret_tree = tree;
	return 0;

out_invalid:
	cJSON_Delete(tree);
	return -EINVAL;
}

/* Produces row i of res; on failure fills row->err and returns a negative code. */
static int produce_row(dl_outbox *o, const PGresult *res, int i, relay_row *row)
{
	const char *hdrs[2 * OUTBOX_MAX_HEADERS + 1];
	const char *topic = PQgetvalue(res, i, 1);
	const char *key = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);
	cJSON *tree = NULL;
	char err[200];
	int r;

	r = parse_headers(PQgetvalue(res, i, 4), &tree, hdrs, row);
	if (r < 0)
		return r;
	row->waiting = true;
	r = dl_kafka_producer_produce(o->p, topic, key, key ? strlen(key) : 0,
				      PQgetvalue(res, i, 3), (size_t)PQgetlength(res, i, 3),
				      hdrs[0] ? hdrs : NULL, on_delivery, row, err, sizeof(err));
	cJSON_Delete(tree);
	if (r < 0) {
		row->waiting = false;
		snprintf(row->err, sizeof(row->err), "produce failed: %s", err);
		return r;
	}
	(*row->outstanding)++;
	return 0;
}

/* Runs one marking statement; returns 0 or a dl_pg code with text. */
static int mark(dl_outbox *o, const char *name, int nparams, const char *const *values,
		char *errbuf, size_t errlen)
{
	return dl_pg_exec(o->pg, name, nparams, values, NULL, errbuf, errlen);
}

int dl_outbox_relay(dl_outbox *o, size_t max, size_t *ret_sent, char *errbuf, size_t errlen)
{
	sbuf sent_ids = { 0 }, failed_ids = { 0 }, failed_errs = { 0 };
	size_t outstanding = 0, nsent = 0, nfailed = 0;
	relay_row *rows = NULL;
	PGresult *res = NULL;
	double oldest = 0;
	char limit[16];
	const char *params[2];
	int i, n, r;

	if (max == 0 || max > OUTBOX_MAX_ROWS)
		max = OUTBOX_MAX_ROWS;
	snprintf(limit, sizeof(limit), "%zu", max);
	params[0] = limit;
	r = dl_pg_exec(o->pg, "dl_outbox_pending", 1, params, &res, errbuf, errlen);
	if (r < 0)
		return r;
	n = PQntuples(res);
	if (n < 0 || n > OUTBOX_MAX_ROWS)
		n = 0;
	for (i = 0; i < n; i++) {
		double age = strtod(PQgetvalue(res, i, 5), NULL);

		if (age > oldest)
			oldest = age;
	}
	dl_metric_set(o->m_pending, NULL, n);
	dl_metric_set(o->m_oldest, NULL, oldest);
	if (n == 0)
		goto out_done;

	rows = calloc((size_t)n, sizeof(*rows));
	if (!rows) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_clear;
	}
	for (i = 0; i < n; i++) {
		rows[i].id = PQgetvalue(res, i, 0);
		rows[i].outstanding = &outstanding;
		produce_row(o, res, i, &rows[i]);
	}
	/* librdkafka reports every message by message.timeout.ms at the latest, so this ends;
	 * the rows must outlive their reports (they are the reports' opaque). */
	while (outstanding > 0)
		dl_kafka_producer_poll(o->p, 100);

	sb_str(&sent_ids, "{");
	sb_str(&failed_ids, "{");
	sb_str(&failed_errs, "{");
	for (i = 0; i < n; i++) {
		if (rows[i].ok) {
			if (nsent++)
				sb_str(&sent_ids, ",");
			sb_str(&sent_ids, rows[i].id);
		} else {
			if (nfailed++) {
				sb_str(&failed_ids, ",");
				sb_str(&failed_errs, ",");
			}
			sb_str(&failed_ids, rows[i].id);
			sb_array_text(&failed_errs, rows[i].err);
		}
	}
	sb_str(&sent_ids, "}");
	sb_str(&failed_ids, "}");
	sb_str(&failed_errs, "}");
	if (sent_ids.oom || failed_ids.oom || failed_errs.oom) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free;
	}
	if (nsent) {
		params[0] = sent_ids.s;
		r = mark(o, "dl_outbox_mark_sent", 1, params, errbuf, errlen);
		if (r < 0)
			goto out_free;
		dl_metric_inc(o->m_sent, NULL, (double)nsent);
	}
	if (nfailed) {
		params[0] = failed_ids.s;
		params[1] = failed_errs.s;
		r = mark(o, "dl_outbox_mark_failed", 2, params, errbuf, errlen);
		if (r < 0)
			goto out_free;
		dl_metric_inc(o->m_failed, NULL, (double)nfailed);
	}
out_done:
	if (ret_sent)
		*ret_sent = nsent;
	r = 0;
out_free:
	free(sent_ids.s);
	free(failed_ids.s);
	free(failed_errs.s);
	free(rows);
out_clear:
	PQclear(res);
	return r;
}

static dl_metric *metric(dl_metrics_registry *m, bool counter, const char *prefix,
			 const char *suffix, const char *help)
{
	char name[128];

	if ((size_t)snprintf(name, sizeof(name), "%s_%s", prefix, suffix) >= sizeof(name))
		return NULL;
	return counter ? dl_metrics_counter(m, name, help, 0) : dl_metrics_gauge(m, name, help, 0);
}

int dl_outbox_new(const char *pg_dsn, dl_kafka_producer *p, dl_metrics_registry *m,
		  const char *metric_prefix, dl_outbox **ret, char *errbuf, size_t errlen)
{
	dl_pg_options opts = { .statement_timeout_ms = 30000,
			       .application_name = "driftlock-outbox" };
	dl_outbox *o;
	int r;

	if (!pg_dsn || !p || !metric_prefix || !metric_prefix[0]) {
		snprintf(errbuf, errlen, "dl_outbox_new needs a DSN, a producer and a metric prefix");
		return -EINVAL;
	}
	o = calloc(1, sizeof(*o));
	if (!o) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	o->p = p;
	o->m_sent = metric(m, true, metric_prefix, "outbox_sent_total",
			   "Outbox rows produced, acknowledged and marked sent.");
	o->m_failed = metric(m, true, metric_prefix, "outbox_failed_total",
			     "Outbox rows whose produce or delivery failed (retried by the next "
			     "pass).");
	o->m_pending = metric(m, false, metric_prefix, "outbox_pending",
			      "Outbox rows seen pending at the last relay pass.");
	o->m_oldest = metric(m, false, metric_prefix, "outbox_oldest_seconds",
			     "Age of the oldest outbox row pending at the last relay pass.");
	if (!o->m_sent || !o->m_failed || !o->m_pending || !o->m_oldest) {
		snprintf(errbuf, errlen, "cannot register the outbox metrics (prefix %s)",
			 metric_prefix);
		r = -EINVAL;
		goto out_free;
	}
	r = dl_pg_connect(pg_dsn, &opts, errbuf, errlen, &o->pg);
	if (r < 0)
		goto out_free;
	r = dl_pg_prepare(o->pg, "dl_outbox_pending", SQL_PENDING, 1, errbuf, errlen);
	if (r == 0)
		r = dl_pg_prepare(o->pg, "dl_outbox_mark_sent", SQL_SENT, 1, errbuf, errlen);
	if (r == 0)
		r = dl_pg_prepare(o->pg, "dl_outbox_mark_failed", SQL_FAILED, 2, errbuf, errlen);
	if (r < 0)
		goto out_close;
	*ret = o;
	return 0;

out_close:
	dl_pg_free(o->pg);
out_free:
	free(o);
	return r;
}

void dl_outbox_free(dl_outbox *o)
{
	if (!o)
		return;
	dl_pg_free(o->pg);
	free(o);
}
