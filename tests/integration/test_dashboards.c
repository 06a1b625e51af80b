/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for the ops dashboards: every sql block of docs/dashboards.md and every
 * panel of infra/grafana runs as driftlock_dashboard against anomalies a real run produced (the
 * detector finds them, metering stores them), and the anomaly questions answer with them. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "common/dl_id.h"
#include "common/dl_kafka.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_topics.h"
#include "tests/support/det_scenario.h"
#include "tests/support/dl_itest.h"

#define STREAM "audit-log"
#define NLINES 8000
#define MAX_BLOCKS 64

/* The views whose queries must answer with rows once anomalies are stored. */
static const char *const anomaly_views[] = { "anomalies_hourly", "anomalies_daily",
					     "noisy_streams", "anomaly_latency_hourly",
					     "usage_current_period", "stream_status", NULL };

static char *slurp(const char *rel)
{
	char path[1024];
	FILE *f;
	char *buf;
	long len;

	snprintf(path, sizeof(path), "%s/%s", dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), rel);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	ck_assert_int_ge(len, 0);
	rewind(f);
	buf = malloc((size_t)len + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

/* The ```sql fenced blocks of md, as malloc'd strings. */
static size_t sql_blocks(const char *md, char **ret, size_t max)
{
	size_t n = 0;
	const char *p = md;

	while ((p = strstr(p, "```sql\n")) != NULL) {
		const char *body = p + strlen("```sql\n");
		const char *end = strstr(body, "\n```");

		ck_assert_msg(end != NULL, "unterminated sql block in docs/dashboards.md");
		ck_assert_uint_lt(n, max);
		ret[n] = strndup(body, (size_t)(end - body));
		ck_assert_ptr_nonnull(ret[n]);
		n++;
		p = end + 4;
	}
	return n;
}

static bool about_anomalies(const char *sql)
{
	for (size_t i = 0; anomaly_views[i]; i++)
		if (strstr(sql, anomaly_views[i]))
			return true;
	return false;
}

/* Runs sql as the connected role; fails the test on an error. Returns the rows. */
static PGresult *dash_query(PGconn *c, const char *sql, const char *const *params, int nparams)
{
	PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);

	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "as driftlock_dashboard:\n%s\n-> %s",
		      sql, PQresultErrorMessage(r));
	return r;
}

/* sql with every $__timeFilter(col) replaced by the last 24 hours of col (Grafana's macro). */
static char *grafana_expand(const char *sql)
{
	static const char macro[] = "$__timeFilter(";
	size_t cap = strlen(sql) * 4 + 1, o = 0;
	char *out = malloc(cap);
	const char *p = sql, *m;

	ck_assert_ptr_nonnull(out);
	while ((m = strstr(p, macro)) != NULL) {
		const char *col = m + strlen(macro), *close = strchr(col, ')');
		int w;

		ck_assert_ptr_nonnull(close);
		memcpy(out + o, p, (size_t)(m - p));
		o += (size_t)(m - p);
		w = snprintf(out + o, cap - o, "(%.*s BETWEEN now() - interval '24 hours' AND now())",
			     (int)(close - col), col);
		ck_assert(w > 0 && (size_t)w < cap - o);
		o += (size_t)w;
		p = close + 1;
	}
	snprintf(out + o, cap - o, "%s", p);
	return out;
}

START_TEST(test_dashboards_real_run)
{
	det_scenario sc = { 0 };
	dl_kafka_producer *prod;
	dl_itest_proc det, mtr;
	dl_itest_msg *msgs = NULL;
	char org[DL_ID_UUID_LEN + 1], apikey[128], err[256], out[256], nstored_s[32];
	char *md, *blocks[MAX_BLOCKS], *dash_json;
	size_t nwant, got, nblocks, nstored = 0;
	bool *want;
	PGconn *c;
	PGresult *r;
	cJSON *dash, *panel;
	int npanels = 0;

	/* A real run: the detector finds the anomalies of a labelled sample of audit-log. */
	det_scenario_load(&sc, STREAM, NLINES);
	want = det_scenario_expected(&sc, &nwant);
	ck_assert_uint_gt(nwant, 0);
	dl_itest_org_with_key("itest-dashboards", "pro", org, apikey, sizeof(apikey));
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
					       "itest-dashboards", NULL, err, sizeof(err), &prod),
			 0);
	dl_itest_start("detector", NULL, &det);
	ck_assert_msg(dl_itest_wait_ready(&det, 30000), "detector not ready, see %s", det.log_path);
	dl_itest_start("metering", NULL, &mtr);
	ck_assert_msg(dl_itest_wait_ready(&mtr, 30000), "metering not ready, see %s", mtr.log_path);
	det_scenario_produce(prod, &sc, org, STREAM, 0, sc.n);
	got = dl_itest_topic_read(DL_TOPIC_ANOMALIES, org, nwant, 120000, &msgs);
	ck_assert_uint_eq(got, nwant);
	dl_itest_stop_clean(&det, 30000, "detector");

	/* Metering stores them (and counts them in the period and the stream). */
	for (size_t i = 0; i < got; i++) {
		struct proto_anomaly a;

		ck_assert_int_eq(proto_anomaly_decode(msgs[i].value, msgs[i].len, &a, err,
						      sizeof(err)),
				 0);
		ck_assert_str_eq(a.org_id, org);
	}
	for (int t = 0; t < 600; t++) {
		const char *p[] = { org, NULL };

		dl_itest_sql("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid", p, nstored_s,
			     sizeof(nstored_s));
		nstored = (size_t)strtoull(nstored_s, NULL, 10);
		if (nstored >= nwant)
			break;
		usleep(100 * 1000);
	}
	ck_assert_uint_eq(nstored, nwant);
	snprintf(nstored_s, sizeof(nstored_s), "%zu", nstored);
	dl_itest_stop_clean(&mtr, 30000, "metering");

	c = PQconnectdb(dl_itest_env("DRIFTLOCK_PG_DSN_DASHBOARD"));
	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "dashboard role: %s", PQerrorMessage(c));
	r = dash_query(c, "SELECT current_user", NULL, 0);
	ck_assert_str_eq(PQgetvalue(r, 0, 0), "driftlock_dashboard");
	PQclear(r);

	/* Every query of docs/dashboards.md, as pasted into psql. */
	md = slurp("docs/dashboards.md");
	nblocks = sql_blocks(md, blocks, MAX_BLOCKS);
	ck_assert_uint_ge(nblocks, 8);
	for (size_t i = 0; i < nblocks; i++) {
		r = dash_query(c, blocks[i], NULL, 0);
		/* other suites may share the stack: the run's own numbers are checked below */
		if (about_anomalies(blocks[i]))
			ck_assert_msg(PQntuples(r) > 0, "no rows from:\n%s", blocks[i]);
		PQclear(r);
		free(blocks[i]);
	}
	free(md);

	/* What the views say about the run is what was stored. */
	{
		const char *p[] = { org, NULL };

		r = dash_query(c, "SELECT sum(anomalies)::text FROM anomalies_hourly"
				  " WHERE org_id = $1 AND hour >= now() - interval '24 hours'",
			       p, 1);
		ck_assert_str_eq(PQgetvalue(r, 0, 0), nstored_s);
		PQclear(r);
		r = dash_query(c, "SELECT anomalies::text, share_pct::text, rank_in_org::text"
				  " FROM noisy_streams WHERE org_id = $1 AND span = '24h'",
			       p, 1);
		ck_assert_int_eq(PQntuples(r), 1);
		ck_assert_str_eq(PQgetvalue(r, 0, 0), nstored_s);
		ck_assert_str_eq(PQgetvalue(r, 0, 1), "100.00");
		ck_assert_str_eq(PQgetvalue(r, 0, 2), "1");
		PQclear(r);
		r = dash_query(c, "SELECT counted::text, included::text FROM usage_current_period"
				  " WHERE org_id = $1",
			       p, 1);
		ck_assert_str_eq(PQgetvalue(r, 0, 0), nstored_s);
		ck_assert_str_eq(PQgetvalue(r, 0, 1), "50000");
		PQclear(r);
		/* latency: anomalies are stored after their event and detected before stored */
		r = dash_query(c, "SELECT sum(anomalies)::text, bool_and(detected_p50_ms >= 0"
				  " AND stored_p50_ms >= detected_p50_ms"
				  " AND stored_p99_ms >= stored_p50_ms)::text"
				  " FROM anomaly_latency_hourly WHERE org_id = $1",
			       p, 1);
		ck_assert_str_eq(PQgetvalue(r, 0, 0), nstored_s);
		ck_assert_str_eq(PQgetvalue(r, 0, 1), "true");
		PQclear(r);
	}

	/* The Grafana dashboard: valid JSON, every panel's query runs as the dashboard role. */
	{
		char cmd[1200];

		snprintf(cmd, sizeof(cmd),
			 "python3 -m json.tool '%s/infra/grafana/dashboards/driftlock-ops.json'"
			 " >/dev/null && echo valid",
			 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"));
		ck_assert_int_eq(dl_itest_run(cmd, out, sizeof(out)), 0);
		ck_assert_str_eq(out, "valid\n");
	}
	dash_json = slurp("infra/grafana/dashboards/driftlock-ops.json");
	dash = cJSON_Parse(dash_json);
	ck_assert_ptr_nonnull(dash);
	cJSON_ArrayForEach(panel, cJSON_GetObjectItem(dash, "panels"))
	{
		cJSON *t;

		cJSON_ArrayForEach(t, cJSON_GetObjectItem(panel, "targets"))
		{
			const char *raw = cJSON_GetStringValue(cJSON_GetObjectItem(t, "rawSql"));
			char *sql;

			ck_assert_ptr_nonnull(raw);
			sql = grafana_expand(raw);
			r = dash_query(c, sql, NULL, 0);
			if (about_anomalies(sql))
				ck_assert_msg(PQntuples(r) > 0, "panel \"%s\": no rows",
					      cJSON_GetStringValue(cJSON_GetObjectItem(panel, "title")));
			PQclear(r);
			free(sql);
			npanels++;
		}
	}
	ck_assert_int_ge(npanels, 8);
	cJSON_Delete(dash);
	free(dash_json);
	{
		/* the data source's password comes from the environment, never the file */
		char *ds = slurp("infra/grafana/provisioning/datasources/driftlock.yaml");

		ck_assert_ptr_nonnull(strstr(ds, "user: driftlock_dashboard"));
		ck_assert_ptr_nonnull(strstr(ds, "password: ${DRIFTLOCK_DASHBOARD_PG_PASSWORD}"));
		ck_assert_ptr_null(strstr(ds, dl_itest_env("DRIFTLOCK_PG_PASSWORD_DASHBOARD")));
		free(ds);
	}

	/* The role reads and never writes. */
	r = PQexec(c, "DELETE FROM anomalies");
	ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
	PQclear(r);

	PQfinish(c);
	dl_itest_msgs_free(msgs, got);
	dl_kafka_producer_free(prod);
	free(want);
	det_scenario_free(&sc);
}
END_TEST

static Suite *dashboards_suite(void)
{
	Suite *s = suite_create("dashboards");
	TCase *tc = tcase_create("real_run");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_dashboards_real_run);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dashboards_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
