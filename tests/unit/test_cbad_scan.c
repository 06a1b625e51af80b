/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for driftlock-scan: runs the built binary on small inputs and checks what a user sees. */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct run_out {
	int status;
	char *out, *err;
	size_t nlines; /* lines of out */
} run_out;

static char tmpdir[256];

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return buf;
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_cbad_scan.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Runs driftlock-scan ARGS with stdin from the file `input` (NULL: /dev/null). */
static run_out run(const char *args, const char *input)
{
	const char *root = getenv("DRIFTLOCK_BUILD_ROOT");
	char cmd[4096], outp[300], errp[300];
	run_out r;
	int st;

	ck_assert_msg(root && *root, "DRIFTLOCK_BUILD_ROOT is not set");
	snprintf(outp, sizeof(outp), "%s/out", tmpdir);
	snprintf(errp, sizeof(errp), "%s/err", tmpdir);
	snprintf(cmd, sizeof(cmd), "cd '%s' && '%s/services/detector/scan/driftlock-scan' %s < %s > out 2> err",
		 tmpdir, root, args, input ? input : "/dev/null");
	st = system(cmd);
	ck_assert(WIFEXITED(st));
	r.status = WEXITSTATUS(st);
	r.out = slurp(outp);
	r.err = slurp(errp);
	r.nlines = 0;
	for (const char *p = r.out; *p; p++)
		r.nlines += *p == '\n';
	return r;
}

static void run_free(run_out *r)
{
	free(r->out);
	free(r->err);
}

/* n ordinary JSON events of one stream, one a second. */
static void normal_events(FILE *f, int n, int first)
{
	for (int i = first; i < first + n; i++)
		fprintf(f,
			"{\"stream\":\"web\",\"ts\":\"2024-03-12T13:%02d:%02d.000Z\",\"method\":\"GET\",\"path\":\"/api/items/%d\",\"status\":200,\"latency_ms\":%d}\n",
			(i / 60) % 60, i % 60, 1000 + (i * 7919) % 5000, 20 + (i * 31) % 15);
}

START_TEST(test_bad_lines_reported_and_skipped)
{
	char in[300];
	FILE *f;
	run_out r;

	snprintf(in, sizeof(in), "%s/in.ndjson", tmpdir);
	f = fopen(in, "w");
	ck_assert_ptr_nonnull(f);
	normal_events(f, 2, 0);
	fputs("{\"stream\":\"web\",\"ts\": broken\n", f); /* line 3 */
	fputs("plain text log line\n", f);             /* line 4: fine */
	fputs("{\"ts\":\"not a time\"}\n", f);          /* line 5 */
	normal_events(f, 1, 2);                         /* line 6 */
	fclose(f);
	r = run("--scores", in);
	ck_assert_int_eq(r.status, 0);
	ck_assert_uint_eq(r.nlines, 6); /* one line per input line, skipped ones included */
	ck_assert_ptr_nonnull(strstr(r.err, "line 3: invalid JSON"));
	ck_assert_ptr_nonnull(strstr(r.err, "line 5: invalid \"ts\""));
	ck_assert_ptr_null(strstr(r.err, "line 4"));
	ck_assert_ptr_null(strstr(r.err, "line 6"));
	{
		/* line 3's score line says it was skipped; line 6 was scored */
		char *l3 = strstr(r.out, "{\"line\":3,");
		char *l6 = strstr(r.out, "{\"line\":6,");

		ck_assert_ptr_nonnull(l3);
		ck_assert_ptr_nonnull(l6);
		ck_assert(strncmp(l3, "{\"line\":3,\"score\":null", 22) == 0);
		ck_assert(strncmp(l6, "{\"line\":6,\"score\":null", 22) != 0);
	}
	run_free(&r);
}
END_TEST

START_TEST(test_over_long_line_skipped)
{
	char in[300], big[2100];
	FILE *f;
	run_out r;

	snprintf(in, sizeof(in), "%s/in.ndjson", tmpdir);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	f = fopen(in, "w");
	ck_assert_ptr_nonnull(f);
	normal_events(f, 1, 0);
	fprintf(f, "{\"msg\":\"%s\"}\n", big);
	normal_events(f, 1, 1);
	fclose(f);
	r = run("--scores --max-line-bytes 1000", in);
	ck_assert_int_eq(r.status, 0);
	ck_assert_uint_eq(r.nlines, 3);
	ck_assert_ptr_nonnull(strstr(r.err, "line 2: longer than --max-line-bytes (1000)"));
	ck_assert_ptr_nonnull(strstr(r.out, "{\"line\":3,\"score\":0")); /* scanned on */
	run_free(&r);
}
END_TEST

START_TEST(test_scores_one_line_per_input_line)
{
	char in[300];
	FILE *f;
	run_out r, r2;
	const char *p;
	size_t k = 0;

	snprintf(in, sizeof(in), "%s/in.ndjson", tmpdir);
	f = fopen(in, "w");
	ck_assert_ptr_nonnull(f);
	normal_events(f, 1500, 0);
	fclose(f);
	r = run("--scores", in);
	ck_assert_int_eq(r.status, 0);
	ck_assert_uint_eq(r.nlines, 1500);
	for (p = r.out; *p; k++) {
		const char *nl = strchr(p, '\n');
		cJSON *o = cJSON_ParseWithLength(p, (size_t)(nl - p));
		cJSON *line = cJSON_GetObjectItem(o, "line"), *score = cJSON_GetObjectItem(o, "score");
		cJSON *pv = cJSON_GetObjectItem(o, "p_value"), *an = cJSON_GetObjectItem(o, "anomaly");

		ck_assert_ptr_nonnull(o);
		ck_assert(cJSON_IsNumber(line) && line->valuedouble == (double)(k + 1));
		ck_assert(cJSON_IsNumber(score) && score->valuedouble >= 0.0 &&
			  score->valuedouble <= 1.0);
		ck_assert(cJSON_IsNumber(pv) && pv->valuedouble >= 0.0 && pv->valuedouble <= 1.0);
		ck_assert(cJSON_IsBool(an));
		cJSON_Delete(o);
		p = nl + 1;
	}
	/* deterministic: the same input gives byte-identical scores */
	r2 = run("--scores", in);
	ck_assert_str_eq(r.out, r2.out);
	run_free(&r2);
	/* gzip input gives the same scores as plain input */
	{
		char cmd[1024];

		snprintf(cmd, sizeof(cmd), "gzip -c '%s' > '%s/in.ndjson.gz'", in, tmpdir);
		ck_assert_int_eq(system(cmd), 0);
		r2 = run("--scores in.ndjson.gz", NULL);
		ck_assert_int_eq(r2.status, 0);
		ck_assert_str_eq(r.out, r2.out);
		run_free(&r2);
	}
	run_free(&r);
}
END_TEST

/* A long run of one kind of event, then a handful of events unlike anything before. */
static void write_with_anomalies(const char *in)
{
	FILE *f = fopen(in, "w");

	ck_assert_ptr_nonnull(f);
	normal_events(f, 3000, 0);
	for (int i = 0; i < 5; i++)
		fprintf(f,
			"{\"stream\":\"web\",\"ts\":\"2024-03-12T14:00:%02d.000Z\",\"method\":\"POST\",\"path\":\"/admin/../../etc/passwd?q=' OR 1=1; DROP TABLE users --\",\"status\":500,\"latency_ms\":9999,\"error\":\"java.lang.NullPointerException at com.example.Foo.bar(Foo.java:42) zq%dxv\"}\n",
			i, i);
	normal_events(f, 50, 3000);
	fclose(f);
}

START_TEST(test_ndjson_anomalies_parseable)
{
	static const char *keys[] = { "line", "stream", "ts", "kind", "score", "p_value",
				      "severity", "signal", "summary", "evidence", "excerpt" };
	char in[300];
	run_out r;
	const char *p;
	size_t n = 0;
	bool flagged_novel = false;

	snprintf(in, sizeof(in), "%s/in.ndjson", tmpdir);
	write_with_anomalies(in);
	r = run("", in);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(r.nlines >= 1, "no anomaly in an obvious case; stderr: %s", r.err);
	for (p = r.out; *p; n++) {
		const char *nl = strchr(p, '\n');
		cJSON *o = cJSON_ParseWithLength(p, (size_t)(nl - p)), *line;

		ck_assert_msg(o != NULL, "not JSON: %.*s", (int)(nl - p), p);
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			ck_assert_msg(cJSON_GetObjectItemCaseSensitive(o, keys[k]) != NULL,
				      "missing %s", keys[k]);
		ck_assert_str_eq(cJSON_GetObjectItem(o, "stream")->valuestring, "web");
		ck_assert(cJSON_IsArray(cJSON_GetObjectItem(o, "evidence")));
		ck_assert(strlen(cJSON_GetObjectItem(o, "summary")->valuestring) > 0);
		line = cJSON_GetObjectItem(o, "line");
		if (line->valuedouble >= 3001 && line->valuedouble <= 3005)
			flagged_novel = true;
		cJSON_Delete(o);
		p = nl + 1;
	}
	ck_assert_msg(flagged_novel, "none of the five novel events (lines 3001-3005) flagged:\n%.1500s",
		      r.out);
	/* --format text: a header and one row per anomaly, the same anomalies */
	{
		run_out t = run("--format text", in);

		ck_assert_int_eq(t.status, 0);
		ck_assert_uint_eq(t.nlines, n + 1);
		ck_assert(strncmp(t.out, "line", 4) == 0);
		ck_assert_ptr_nonnull(strstr(t.out, "summary"));
		ck_assert_ptr_nonnull(strstr(t.out, "300")); /* a line number in 3001..3005 */
		run_free(&t);
	}
	run_free(&r);
}
END_TEST

START_TEST(test_flags_validated)
{
	static const struct {
		const char *args;
		int status;
		const char *err;
	} cases[] = {
		{ "--sensitivity 1.5", 2, "--sensitivity" },
		{ "--sensitivity abc", 2, "--sensitivity" },
		{ "--format xml", 2, "--format" },
		{ "--baseline 12x", 2, "--baseline" },
		{ "--mask timestamps,bogus", 2, "bogus" },
		{ "--settings '{\"no_such_key\":1}'", 2, "--settings" },
		{ "--settings 'not json'", 2, "--settings" },
		{ "--no-such-flag", 2, "--no-such-flag" },
		{ "--window", 2, "--window" },
		{ "no-such-file.ndjson", 1, "no-such-file.ndjson: cannot open" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		run_out r = run(cases[i].args, NULL);

		ck_assert_msg(r.status == cases[i].status, "%s: exit %d", cases[i].args, r.status);
		ck_assert_msg(strstr(r.err, cases[i].err) != NULL, "%s: stderr '%s'", cases[i].args,
			      r.err);
		ck_assert_str_eq(r.out, "");
		run_free(&r);
	}
	{
		run_out r = run("--help", NULL);

		ck_assert_int_eq(r.status, 0);
		ck_assert_ptr_nonnull(strstr(r.out, "usage: driftlock-scan"));
		ck_assert_ptr_nonnull(strstr(r.out, "Exit status"));
		run_free(&r);
	}
	{
		/* valid flags are accepted; a higher sensitivity never flags fewer lines */
		char in[300];
		run_out lo, hi;

		snprintf(in, sizeof(in), "%s/in.ndjson", tmpdir);
		write_with_anomalies(in);
		lo = run("--sensitivity 0.1 --mask all --entity path --window 100 --hop 50", in);
		hi = run("--sensitivity 0.9 --mask all --entity path --window 100 --hop 50", in);
		ck_assert_int_eq(lo.status, 0);
		ck_assert_int_eq(hi.status, 0);
		ck_assert_uint_ge(hi.nlines, lo.nlines);
		run_free(&lo);
		run_free(&hi);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cbad_scan");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_bad_lines_reported_and_skipped);
	tcase_add_test(tc, test_over_long_line_skipped);
	tcase_add_test(tc, test_scores_one_line_per_input_line);
	tcase_add_test(tc, test_ndjson_anomalies_parseable);
	tcase_add_test(tc, test_flags_validated);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
