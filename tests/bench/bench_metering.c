/* SPDX-License-Identifier: Apache-2.0 */
/* bench_metering: fills driftlock.anomalies.v1, times driftlock-metering through /metrics, and times a plain COPY and multi-row INSERT of the same rows. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_topics.h"
#include "tests/bench/bench_service.h"

/*
 * Modes (tests/bench/metering.sh runs them; each prints one JSON line):
 *   fill       produces --anomalies driftlock.anomaly.v1 messages to driftlock.anomalies.v1:
 *              anomaly i belongs to org (i % --orgs) and one of its 8 streams, is detected at
 *              --base-ms + i / 10 ms (inside the current period) and looks like the detector's
 *              (signals, explanation with evidence, excerpt; every 10th a window anomaly)
 *   reference  the same rows (same --orgs, --anomalies, --base-ms) into bench_anomalies, a
 *              scratch copy of the anomalies table (LIKE anomalies INCLUDING ALL: its columns,
 *              defaults, checks and indexes): once by COPY FROM STDIN, once by multi-row INSERT
 *              statements of --rows rows (parameterised), each in transactions of --rows rows
 *   watch      polls the admin /metrics of the service on --port every 10 ms until
 *              driftlock_metering_anomalies_total{result="stored"} reaches --anomalies: the
 *              wall-clock time then (ms) and the seconds since the watch started
 */

#define NCOLS 26
#define STREAMS_PER_ORG 8

typedef struct opts {
	const char *mode, *brokers, *dsn;
	long anomalies, orgs, seconds, rows;
	int64_t base_ms;
	int port;
} opts;

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "bench_metering: %s: %s\n", what, detail);
	exit(1);
}

static const char *const kinds[] = { "event", "window", "value", "entity", "rate" };
static const char *const severities[] = { "low", "medium", "high", "critical" };
static const char *const tokens[] = { "login_failed", "token_refresh", "role_granted",
				      "mfa_challenge", "export_started", "key_rotated" };

/* Anomaly i of the benchmark (deterministic in i, orgs and base_ms). */
static void anomaly_of(long i, long orgs, int64_t base_ms, struct proto_anomaly *a)
{
	long org = i % orgs, stream = (i / orgs) % STREAMS_PER_ORG;
	const char *tok = tokens[i % 6];
	bool window = i % 10 == 0;

	memset(a, 0, sizeof(*a));
	snprintf(a->id, sizeof(a->id), "bm-%08ld-%04ld", i, org);
	snprintf(a->org_id, sizeof(a->org_id), "b1000000-0000-4000-8000-%012u",
		 (unsigned)(org + 1));
	snprintf(a->stream, sizeof(a->stream), "bench-%02ld.audit", stream);
	snprintf(a->event_id, sizeof(a->event_id), "ev-%08ld", i);
	a->detected_at_ms = base_ms + i / 10;
	a->event_ts_ms = a->detected_at_ms - 40 - i % 200;
	a->kind = window ? PROTO_ANOMALY_KIND_WINDOW : PROTO_ANOMALY_KIND_EVENT;
	a->score = 12.5 + (double)(i % 400) / 8;
	a->p_value = 0.0001 + (double)(i % 97) / 100000;
	a->severity = (enum proto_anomaly_severity)(i % 17 == 0 ? 3 : i % 5 == 0 ? 2 : i % 2);
	a->nsignals = 3;
	snprintf(a->signals[0].name, sizeof(a->signals[0].name), "bits_excess");
	a->signals[0].value = a->score;
	snprintf(a->signals[1].name, sizeof(a->signals[1].name), "ncd");
	a->signals[1].value = 0.31 + (double)(i % 50) / 100;
	snprintf(a->signals[2].name, sizeof(a->signals[2].name), "p_value");
	a->signals[2].value = a->p_value;
	if (window) {
		a->has_window = true;
		a->window.start_ts_ms = a->event_ts_ms - 300000;
		a->window.end_ts_ms = a->event_ts_ms;
		a->window.events = 1200 + i % 300;
	}
	snprintf(a->explanation.summary, sizeof(a->explanation.summary),
		 "bench-%02ld.audit: this event costs %.1f bits more than its baseline predicts; "
		 "token \"%s\" is rare in the last 10000 events.",
		 stream, a->score, tok);
	snprintf(a->explanation.signal, sizeof(a->explanation.signal), "bits_excess");
	a->explanation.value = a->score;
	a->explanation.baseline_low = 1.5;
	a->explanation.baseline_median = 4.25;
	a->explanation.baseline_high = 9.75;
	a->explanation.nevidence = 2;
	snprintf(a->explanation.evidence[0].name, sizeof(a->explanation.evidence[0].name),
		 "new_token");
	a->explanation.evidence[0].has_bits = true;
	a->explanation.evidence[0].bits = a->score / 2;
	a->explanation.evidence[0].has_detail = true;
	snprintf(a->explanation.evidence[0].detail, sizeof(a->explanation.evidence[0].detail),
		 "token \"%s\" rarely seen in baseline", tok);
	snprintf(a->explanation.evidence[1].name, sizeof(a->explanation.evidence[1].name),
		 "field.action");
	a->explanation.evidence[1].has_value = true;
	a->explanation.evidence[1].value = (double)(i % 13);
	snprintf(a->excerpt, sizeof(a->excerpt),
		 "{\"ts\":\"2026-11-26T17:55:07Z\",\"actor\":\"user-%ld\",\"action\":\"%s\","
		 "\"ip\":\"[redacted]\",\"resource\":\"projects/%ld/keys\",\"outcome\":\"denied\"}",
		 i % 5000, tok, i % 300);
	snprintf(a->detector.version, sizeof(a->detector.version), "cbad-0.1.0");
	a->detector.sensitivity = 0.5;
}

static void json_num(char *buf, size_t len, double v)
{
	snprintf(buf, len, "%.17g", v);
}

/* The row metering stores for a, as text columns in bench_anomalies' column order (see
 * columns[]); NULL for an absent optional part. Strings point into r. */
typedef struct row {
	char text[NCOLS][1536];
	const char *v[NCOLS];
} row;

static const char columns[] =
	"org_id, id, stream, event_id, event_ts, detected_at, kind, score, p_value, severity,"
	" signals, window_start, window_end, window_events, entity_field, entity_value,"
	" explanation_summary, explanation_signal, explanation_value, baseline_low,"
	" baseline_median, baseline_high, evidence, excerpt, detector_version,"
	" detector_sensitivity";

/* Appends s to a JSON string literal in buf (quotes and backslashes escaped). */
static size_t json_str(char *buf, size_t cap, size_t o, const char *s)
{
	if (o < cap)
		buf[o++] = '"';
	for (; *s && o + 2 < cap; s++) {
		if (*s == '"' || *s == '\\')
			buf[o++] = '\\';
		buf[o++] = *s;
	}
	if (o < cap)
		buf[o++] = '"';
	buf[o < cap ? o : cap - 1] = '\0';
	return o;
}

static void row_of(const struct proto_anomaly *a, row *r)
{
	char err[128], num[64];
	size_t o;
	int k = 0;

	for (int c = 0; c < NCOLS; c++)
		r->v[c] = r->text[c];
	snprintf(r->text[k++], sizeof(r->text[0]), "%s", a->org_id);
	snprintf(r->text[k++], sizeof(r->text[0]), "%s", a->id);
	snprintf(r->text[k++], sizeof(r->text[0]), "%s", a->stream);
	snprintf(r->text[k++], sizeof(r->text[0]), "%s", a->event_id);
	dl_time_format_rfc3339(a->event_ts_ms, r->text[k++], sizeof(r->text[0]), err, sizeof(err));
	dl_time_format_rfc3339(a->detected_at_ms, r->text[k++], sizeof(r->text[0]), err,
			       sizeof(err));
	snprintf(r->text[k++], sizeof(r->text[0]), "%s", kinds[a->kind]);
	json_num(r->text[k++], sizeof(r->text[0]), a->score);
	json_num(r->text[k++], sizeof(r->text[0]), a->p_value);
	snprintf(r->text[k++], sizeof(r->text[0]), "%s", severities[a->severity]);
	o = 0;
	r->text[k][o++] = '{';
	for (size_t s = 0; s < a->nsignals; s++) {
		json_num(num, sizeof(num), a->signals[s].value);
		o = json_str(r->text[k], sizeof(r->text[0]), o, a->signals[s].name);
		o += (size_t)snprintf(r->text[k] + o, sizeof(r->text[0]) - o, ":%s%s", num,
				      s + 1 < a->nsignals ? "," : "}");
	}
	k++;
	if (a->has_window) {
		dl_time_format_rfc3339(a->window.start_ts_ms, r->text[k++], sizeof(r->text[0]), err,
				       sizeof(err));
		dl_time_format_rfc3339(a->window.end_ts_ms, r->text[k++], sizeof(r->text[0]), err,
				       sizeof(err));
		snprintf(r->text[k++], sizeof(r->text[0]), "%" PRId64, a->window.events);
	} else {
		r->v[k++] = NULL;
		r->v[k++] = NULL;
		r->v[k++] = NULL;
	}
	if (a->has_entity) {
		snprintf(r->text[k++], sizeof(r->text[0]), "%s", a->entity.field);
		snprintf(r->text[k++], sizeof(r->text[0]), "%s", a->entity.value);
	} else {
		r->v[k++] = NULL;
		r->v[k++] = NULL;
	}
	snprintf(r->text[k++], sizeof(r->text[0]), "%.1500s", a->explanation.summary);
	snprintf(r->text[k++], sizeof(r->text[0]), "%s", a->explanation.signal);
	json_num(r->text[k++], sizeof(r->text[0]), a->explanation.value);
	json_num(r->text[k++], sizeof(r->text[0]), a->explanation.baseline_low);
	json_num(r->text[k++], sizeof(r->text[0]), a->explanation.baseline_median);
	json_num(r->text[k++], sizeof(r->text[0]), a->explanation.baseline_high);
	o = 0;
	r->text[k][o++] = '[';
	for (size_t e = 0; e < a->explanation.nevidence; e++) {
		const struct proto_anomaly_evidence *ev = &a->explanation.evidence[e];

		o += (size_t)snprintf(r->text[k] + o, sizeof(r->text[0]) - o, "{\"name\":");
		o = json_str(r->text[k], sizeof(r->text[0]), o, ev->name);
		if (ev->has_value) {
			json_num(num, sizeof(num), ev->value);
			o += (size_t)snprintf(r->text[k] + o, sizeof(r->text[0]) - o, ",\"value\":%s",
					      num);
		}
		if (ev->has_bits) {
			json_num(num, sizeof(num), ev->bits);
			o += (size_t)snprintf(r->text[k] + o, sizeof(r->text[0]) - o, ",\"bits\":%s",
					      num);
		}
		if (ev->has_detail) {
			o += (size_t)snprintf(r->text[k] + o, sizeof(r->text[0]) - o, ",\"detail\":");
			o = json_str(r->text[k], sizeof(r->text[0]), o, ev->detail);
		}
		o += (size_t)snprintf(r->text[k] + o, sizeof(r->text[0]) - o, "}%s",
				      e + 1 < a->explanation.nevidence ? "," : "");
	}
	snprintf(r->text[k] + o, sizeof(r->text[0]) - o, "]");
	k++;
	snprintf(r->text[k++], sizeof(r->text[0]), "%.1500s", a->excerpt);
	snprintf(r->text[k++], sizeof(r->text[0]), "%s", a->detector.version);
	json_num(r->text[k++], sizeof(r->text[0]), a->detector.sensitivity);
	if (k != NCOLS)
		die("row_of", "column count");
}

static int mode_fill(const opts *o)
{
	rd_kafka_t *rk = bench_producer_new("bench_metering", o->brokers);
	struct proto_anomaly *a = malloc(sizeof(*a));
	char key[PROTO_STREAM_KEY_MAX + 1], err[256];
	size_t bytes = 0;
	int64_t t0 = bench_now_ns();

	if (!a)
		die("fill", "out of memory");
	for (long i = 0; i < o->anomalies; i++) {
		char *json;
		size_t len;
		int keylen;
		rd_kafka_resp_err_t e;

		anomaly_of(i, o->orgs, o->base_ms, a);
		if (proto_anomaly_encode(a, &json, &len, err, sizeof(err)) < 0)
			die("proto_anomaly_encode", err);
		keylen = snprintf(key, sizeof(key), "%s:%s", a->org_id, a->stream);
		bytes += len;
		for (;;) {
			e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(DL_TOPIC_ANOMALIES),
					      RD_KAFKA_V_KEY(key, (size_t)keylen),
					      RD_KAFKA_V_VALUE(json, len),
					      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END);
			if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
				break;
			rd_kafka_poll(rk, 10);
		}
		if (e)
			die("produce", rd_kafka_err2str(e));
		rd_kafka_poll(rk, 0);
	}
	if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
		die("flush", "anomalies not acknowledged in 60 s");
	rd_kafka_destroy(rk);
	free(a);
	printf("{\"anomalies\":%ld,\"orgs\":%ld,\"streams\":%ld,\"message_bytes_avg\":%.0f,"
	       "\"seconds\":%.3f}\n",
	       o->anomalies, o->orgs, o->orgs * STREAMS_PER_ORG,
	       (double)bytes / (double)o->anomalies, (double)(bench_now_ns() - t0) / 1e9);
	return 0;
}

static void pg_ok(PGconn *c, PGresult *r, ExecStatusType want, const char *what)
{
	if (PQresultStatus(r) != want)
		die(what, PQresultErrorMessage(r));
	PQclear(r);
	(void)c;
}

static void pg_cmd(PGconn *c, const char *sql)
{
	pg_ok(c, PQexec(c, sql), PGRES_COMMAND_OK, sql);
}

/* COPY text format: backslash, tab, newline and carriage return escaped; NULL as \N. */
static size_t copy_field(char *buf, size_t cap, size_t o, const char *v)
{
	if (!v) {
		buf[o++] = '\\';
		buf[o++] = 'N';
		return o;
	}
	for (; *v && o + 2 < cap; v++) {
		switch (*v) {
		case '\\': buf[o++] = '\\'; buf[o++] = '\\'; break;
		case '\t': buf[o++] = '\\'; buf[o++] = 't'; break;
		case '\n': buf[o++] = '\\'; buf[o++] = 'n'; break;
		case '\r': buf[o++] = '\\'; buf[o++] = 'r'; break;
		default: buf[o++] = *v;
		}
	}
	return o;
}

/* Seconds to COPY every row into bench_anomalies (empty), in one COPY per --rows rows, each
 * in its own transaction (as metering commits a batch). */
static double run_copy(PGconn *c, const opts *o, row *r, struct proto_anomaly *a)
{
	static char line[NCOLS * 3200];
	char sql[512];
	int64_t t0 = bench_now_ns();

	snprintf(sql, sizeof(sql), "COPY bench_anomalies (%s) FROM STDIN", columns);
	for (long i = 0; i < o->anomalies;) {
		long end = i + o->rows < o->anomalies ? i + o->rows : o->anomalies;

		pg_ok(c, PQexec(c, sql), PGRES_COPY_IN, "COPY");
		for (; i < end; i++) {
			size_t n = 0;

			anomaly_of(i, o->orgs, o->base_ms, a);
			row_of(a, r);
			for (int k = 0; k < NCOLS; k++) {
				n = copy_field(line, sizeof(line) - 2, n, r->v[k]);
				line[n++] = k + 1 < NCOLS ? '\t' : '\n';
			}
			if (PQputCopyData(c, line, (int)n) != 1)
				die("PQputCopyData", PQerrorMessage(c));
		}
		if (PQputCopyEnd(c, NULL) != 1)
			die("PQputCopyEnd", PQerrorMessage(c));
		pg_ok(c, PQgetResult(c), PGRES_COMMAND_OK, "COPY end");
	}
	return (double)(bench_now_ns() - t0) / 1e9;
}

/* Seconds to INSERT every row into bench_anomalies (empty) by parameterised multi-row INSERT
 * statements of --rows rows, one transaction each. */
static double run_insert(PGconn *c, const opts *o, row *rows, struct proto_anomaly *a)
{
	size_t cap = 256 + (size_t)o->rows * NCOLS * 10;
	char *sql = malloc(cap);
	const char **params = malloc(sizeof(*params) * (size_t)o->rows * NCOLS);
	int64_t t0;

	if (!sql || !params)
		die("insert", "out of memory");
	t0 = bench_now_ns();
	for (long i = 0; i < o->anomalies;) {
		long n = i + o->rows < o->anomalies ? o->rows : o->anomalies - i;
		size_t off = (size_t)snprintf(sql, cap, "INSERT INTO bench_anomalies (%s) VALUES ",
					      columns);

		for (long j = 0; j < n; j++) {
			anomaly_of(i + j, o->orgs, o->base_ms, a);
			row_of(a, &rows[j]);
			off += (size_t)snprintf(sql + off, cap - off, "%s(", j ? "," : "");
			for (int k = 0; k < NCOLS; k++) {
				params[j * NCOLS + k] = rows[j].v[k];
				off += (size_t)snprintf(sql + off, cap - off, "$%ld%s",
							j * NCOLS + k + 1, k + 1 < NCOLS ? "," : ")");
			}
		}
		snprintf(sql + off, cap - off, " ON CONFLICT (org_id, id) DO NOTHING");
		pg_ok(c, PQexecParams(c, sql, (int)(n * NCOLS), NULL, params, NULL, NULL, 0),
		      PGRES_COMMAND_OK, "INSERT");
		i += n;
	}
	free(params);
	free(sql);
	return (double)(bench_now_ns() - t0) / 1e9;
}

static long count_rows(PGconn *c)
{
	PGresult *r = PQexec(c, "SELECT count(*) FROM bench_anomalies");
	long n;

	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		die("count", PQresultErrorMessage(r));
	n = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	return n;
}

static int mode_reference(const opts *o)
{
	PGconn *c = PQconnectdb(o->dsn);
	struct proto_anomaly *a = malloc(sizeof(*a));
	row *rows = malloc(sizeof(*rows) * (size_t)o->rows);
	double tc, ti;

	if (PQstatus(c) != CONNECTION_OK)
		die("connect", PQerrorMessage(c));
	if (!a || !rows)
		die("reference", "out of memory");
	pg_cmd(c, "CREATE TABLE IF NOT EXISTS bench_anomalies (LIKE anomalies INCLUDING ALL)");
	pg_cmd(c, "TRUNCATE bench_anomalies");
	tc = run_copy(c, o, &rows[0], a);
	if (count_rows(c) != o->anomalies)
		die("COPY", "row count differs");
	pg_cmd(c, "TRUNCATE bench_anomalies");
	ti = run_insert(c, o, rows, a);
	if (count_rows(c) != o->anomalies)
		die("INSERT", "row count differs");
	pg_cmd(c, "TRUNCATE bench_anomalies");
	PQfinish(c);
	free(rows);
	free(a);
	printf("{\"anomalies\":%ld,\"rows_per_statement\":%ld,\"copy_seconds\":%.3f,"
	       "\"copy_per_s\":%.0f,\"insert_seconds\":%.3f,\"insert_per_s\":%.0f}\n",
	       o->anomalies, o->rows, tc, (double)o->anomalies / tc, ti,
	       (double)o->anomalies / ti);
	return 0;
}


static int mode_watch(const opts *o)
{
	int64_t t0 = bench_now_ns(), deadline = t0 + (int64_t)o->seconds * 1000000000LL;
	double v;

	for (;;) {
		v = bench_metric_sum(o->port, "driftlock_metering_anomalies_total", "result=\"stored\"");
		if (v >= (double)o->anomalies)
			break;
		if (bench_now_ns() > deadline) {
			fprintf(stderr, "bench_metering: watch: %.0f of %ld anomalies after %ld s\n",
				v, o->anomalies, o->seconds);
			return 1;
		}
		usleep(10000);
	}
	printf("{\"anomalies\":%.0f,\"done_ms\":%lld,\"seconds_from_start\":%.3f}\n", v,
	       (long long)bench_wall_ms(), (double)(bench_now_ns() - t0) / 1e9);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "brokers", required_argument, NULL, 'b' }, { "dsn", required_argument, NULL, 'd' },
		{ "anomalies", required_argument, NULL, 'n' }, { "orgs", required_argument, NULL, 'o' },
		{ "base-ms", required_argument, NULL, 't' }, { "rows", required_argument, NULL, 'r' },
		{ "seconds", required_argument, NULL, 's' }, { "port", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 }
	};
	opts o = { .anomalies = 200000, .orgs = 4, .seconds = 600, .rows = 1000 };
	int ch;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'b': o.brokers = optarg; break;
		case 'd': o.dsn = optarg; break;
		case 'n': o.anomalies = atol(optarg); break;
		case 'o': o.orgs = atol(optarg); break;
		case 't': o.base_ms = atoll(optarg); break;
		case 'r': o.rows = atol(optarg); break;
		case 's': o.seconds = atol(optarg); break;
		case 'p': o.port = atoi(optarg); break;
		default: return 2;
		}
	}
	/* 26 parameters a row: a statement holds at most 65535 */
	if (optind >= argc || o.anomalies <= 0 || o.orgs <= 0 || o.orgs > 999 || o.rows <= 0 ||
	    o.rows > 2500) {
		fprintf(stderr, "usage: bench_metering fill|reference|watch [--brokers B] [--dsn D]"
				" [--anomalies N] [--orgs K<=999] [--base-ms MS] [--rows R<=2500]"
				" [--port P] [--seconds S]\n");
		return 2;
	}
	o.mode = argv[optind];
	if (strcmp(o.mode, "watch") == 0)
		return o.port ? mode_watch(&o) : 2;
	if (o.base_ms <= 0)
		die("--base-ms", "required");
	if (strcmp(o.mode, "fill") == 0)
		return o.brokers ? mode_fill(&o) : 2;
	if (strcmp(o.mode, "reference") == 0)
		return o.dsn ? mode_reference(&o) : 2;
	return 2;
}
