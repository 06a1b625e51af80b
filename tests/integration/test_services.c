/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for the five service binaries: start against the real stack, ready, metrics, JSON logs, SIGTERM. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "tests/support/dl_itest.h"
#include "tests/support/dl_test_http.h"

static const char *const services[] = { "ingest", "detector", "metering", "billing", "notifier" };
#define NSERVICES (sizeof(services) / sizeof(services[0]))

static long http_get(int port, const char *path, char *body)
{
	return dl_test_http_get(port, path, body, 65536);
}

static long wait_status(int port, const char *path, long want, int timeout_ms, char *body)
{
	long st = 0;

	for (int waited = 0; waited < timeout_ms; waited += 100) {
		st = http_get(port, path, body);
		if (st == want)
			return st;
		usleep(100 * 1000);
	}
	return st;
}

/* Every line the service wrote must be one JSON object with ts, level, service and msg. */
static int check_json_log(const dl_itest_proc *r, const char *svc, const char *must_have_msg)
{
	FILE *f = fopen(r->log_path, "r");
	char line[8192];
	int lines = 0, found = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		cJSON *j = cJSON_Parse(line);
		cJSON *s, *m;

		ck_assert_msg(j != NULL, "log line is not JSON: %s", line);
		ck_assert_ptr_nonnull(cJSON_GetObjectItem(j, "ts"));
		ck_assert_ptr_nonnull(cJSON_GetObjectItem(j, "level"));
		s = cJSON_GetObjectItem(j, "service");
		m = cJSON_GetObjectItem(j, "msg");
		ck_assert(cJSON_IsString(s) && !strcmp(s->valuestring, svc));
		ck_assert(cJSON_IsString(m));
		if (!strcmp(m->valuestring, must_have_msg))
			found = 1;
		ck_assert_msg(!strstr(line, "PASSWORD") && !strstr(line, "password="),
			      "a log line carries a password: %s", line);
		lines++;
		cJSON_Delete(j);
	}
	fclose(f);
	ck_assert_int_gt(lines, 0);
	return found;
}

START_TEST(test_service_ready_metrics_drain)
{
	const char *svc = services[_i];
	char *body = malloc(65536);
	dl_itest_proc r;
	int status;

	dl_itest_start(svc, NULL, &r);
	ck_assert_msg(wait_status(r.admin_port, "/readyz", 200, 30000, body) == 200,
		      "%s never became ready: %s", svc, body);
	ck_assert_ptr_nonnull(strstr(body, "\"status\":\"ready\""));
	ck_assert_ptr_nonnull(strstr(body, "\"kafka\":\"ok\""));
	ck_assert_ptr_nonnull(strstr(body, "\"postgres\":\"ok\""));

	ck_assert_int_eq(http_get(r.admin_port, "/healthz", body), 200);
	ck_assert_ptr_nonnull(strstr(body, "\"status\":\"ok\""));

	ck_assert_int_eq(http_get(r.admin_port, "/metrics", body), 200);
	ck_assert_ptr_nonnull(strstr(body, "# TYPE driftlock_build_info gauge"));
	ck_assert_ptr_nonnull(strstr(body, "driftlock_ready 1"));
	ck_assert_ptr_nonnull(strstr(body, "driftlock_dependency_up{dependency=\"kafka\"} 1"));
	ck_assert_ptr_nonnull(strstr(body, "process_resident_memory_bytes"));

	/* Unknown admin paths answer with the JSON error body. */
	ck_assert_int_eq(http_get(r.admin_port, "/nope", body), 404);
	ck_assert_ptr_nonnull(strstr(body, "\"error\""));
	if (!strcmp(svc, "ingest")) {
		ck_assert_int_eq(http_get(r.public_port, "/v1/unknown", body), 404);
		ck_assert_ptr_nonnull(strstr(body, "\"request_id\""));
	}

	status = dl_itest_stop(&r, 15000);
	ck_assert_msg(status >= 0, "%s did not exit within 15 s of SIGTERM", svc);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "%s exited with status %d after SIGTERM", svc, status);
	ck_assert_msg(check_json_log(&r, svc, "draining"), "%s did not log draining", svc);
	unlink(r.log_path);
	free(body);
}
END_TEST

/* With PostgreSQL unreachable the service runs but is not ready, and says why; it never
 * crashes, and it still drains on SIGTERM. */
START_TEST(test_service_not_ready_without_postgres)
{
	const char *svc = services[_i];
	char *body = malloc(65536);
	char bad_dsn[128];
	const char *extra[2];
	dl_itest_proc r;
	int status;

	snprintf(bad_dsn, sizeof(bad_dsn),
		 "DRIFTLOCK_PG_DSN=postgresql://nobody:secretpw@127.0.0.1:%d/driftlock", dl_itest_free_port());
	extra[0] = bad_dsn;
	extra[1] = NULL;
	dl_itest_start(svc, extra, &r);
	ck_assert_int_eq(wait_status(r.admin_port, "/healthz", 200, 20000, body), 200);
	ck_assert_int_eq(http_get(r.admin_port, "/readyz", body), 503);
	ck_assert_ptr_nonnull(strstr(body, "\"postgres\""));
	ck_assert_ptr_null(strstr(body, "secretpw"));
	ck_assert_int_eq(http_get(r.admin_port, "/metrics", body), 200);
	ck_assert_ptr_nonnull(strstr(body, "driftlock_dependency_up{dependency=\"postgres\"} 0"));
	status = dl_itest_stop(&r, 15000);
	ck_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	unlink(r.log_path);
	free(body);
}
END_TEST

static int run_capture(const char *cmd, char *out, size_t outlen)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	ck_assert_ptr_nonnull(p);
	n = fread(out, 1, outlen - 1, p);
	out[n] = '\0';
	return pclose(p);
}

/* --help exits 0 and lists the variables; a bad value stops the start with exit 2 and a
 * message naming the variable. */
START_TEST(test_service_config_errors)
{
	const char *svc = services[_i];
	const char *build = dl_itest_env("DRIFTLOCK_BUILD_ROOT");
	char cmd[1024], *out = malloc(65536);
	int st;

	snprintf(cmd, sizeof(cmd), "%s/services/%s/driftlock-%s --help", build, svc, svc);
	st = run_capture(cmd, out, 65536);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_ptr_nonnull(strstr(out, "DRIFTLOCK_ADMIN_PORT"));
	ck_assert_ptr_nonnull(strstr(out, "DRIFTLOCK_PG_DSN"));

	snprintf(cmd, sizeof(cmd),
		 "env -i DRIFTLOCK_PG_DSN=x DRIFTLOCK_ADMIN_PORT=70000 "
		 "%s/services/%s/driftlock-%s 2>&1",
		 build, svc, svc);
	st = run_capture(cmd, out, 65536);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
	ck_assert_msg(strstr(out, "DRIFTLOCK_ADMIN_PORT") != NULL, "message: %s", out);

	snprintf(cmd, sizeof(cmd), "env -i %s/services/%s/driftlock-%s 2>&1", build, svc, svc);
	st = run_capture(cmd, out, 65536);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
	ck_assert_msg(strstr(out, "DRIFTLOCK_PG_DSN") != NULL, "message: %s", out);
	free(out);
}
END_TEST

/* docs/configuration.md must list every variable of every service, as --help-markdown prints it. */
START_TEST(test_configuration_doc_current)
{
	const char *build = dl_itest_env("DRIFTLOCK_BUILD_ROOT");
	const char *src = dl_itest_env("DRIFTLOCK_SOURCE_ROOT");
	char cmd[1024], *out = malloc(65536), *doc = malloc(1 << 20);
	FILE *f;
	size_t n;

	snprintf(cmd, sizeof(cmd), "%s/docs/configuration.md", src);
	f = fopen(cmd, "r");
	ck_assert_msg(f != NULL, "docs/configuration.md is missing");
	n = fread(doc, 1, (1 << 20) - 1, f);
	doc[n] = '\0';
	fclose(f);
	for (size_t i = 0; i < NSERVICES; i++) {
		snprintf(cmd, sizeof(cmd), "%s/services/%s/driftlock-%s --help-markdown", build,
			 services[i], services[i]);
		ck_assert_int_eq(run_capture(cmd, out, 65536), 0);
		ck_assert_msg(strstr(doc, out) != NULL,
			      "docs/configuration.md is out of date for %s: run "
			      "infra/gen-config-docs.sh",
			      services[i]);
	}
	free(out);
	free(doc);
}
END_TEST

static Suite *services_suite(void)
{
	Suite *s = suite_create("services");
	TCase *tc = tcase_create("shell");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_service_ready_metrics_drain, 0, NSERVICES);
	tcase_add_loop_test(tc, test_service_not_ready_without_postgres, 0, NSERVICES);
	tcase_add_loop_test(tc, test_service_config_errors, 0, NSERVICES);
	tcase_add_test(tc, test_configuration_doc_current);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(services_suite());
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	curl_global_cleanup();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
