/* SPDX-License-Identifier: Apache-2.0 */
/* Check suite for dl_service, dl_deps and dl_main: admin endpoints, readiness, draining, config errors. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "tests/support/dl_test_http.h"
#include <event2/event.h>

#include "common/dl_deps.h"
#include "common/dl_service.h"

typedef struct test_cfg {
	dl_service_config svc;
	char *pg_dsn;
} test_cfg;

static const dl_config_param test_params[] = {
	DL_SERVICE_CONFIG_PARAMS(test_cfg, svc, "0"),
	DL_DEPS_PARAM_PG(test_cfg, pg_dsn),
};
#define NPARAMS (sizeof(test_params) / sizeof(test_params[0]))

static long http_get(int port, const char *path, char *body)
{
	return dl_test_http_get(port, path, body, 8192);
}

/* The readiness check under test: its answer is switched by the client thread. */
static volatile int check_ok;

static int toggled_check(void *opaque, char *errbuf, size_t errlen)
{
	(void)opaque;
	if (check_ok)
		return 0;
	snprintf(errbuf, errlen, "thing is unreachable");
	return -ENOTCONN;
}

typedef struct client_result {
	int port;
	long healthz, readyz_down, readyz_up, metrics;
	char down_body[8192], up_body[8192], metrics_body[8192];
	int drain_calls;
	dl_service *svc;
	struct event *drain_timer;
} client_result;

static void *client_thread(void *opaque)
{
	client_result *r = opaque;
	char body[8192];

	r->healthz = http_get(r->port, "/healthz", body);
	r->readyz_down = http_get(r->port, "/readyz", r->down_body);
	check_ok = 1;
	/* The check interval is 100 ms: wait for a re-check. */
	for (int i = 0; i < 50; i++) {
		r->readyz_up = http_get(r->port, "/readyz", r->up_body);
		if (r->readyz_up == 200)
			break;
		usleep(50 * 1000);
	}
	r->metrics = http_get(r->port, "/metrics", r->metrics_body);
	kill(getpid(), SIGTERM);
	return NULL;
}

static void drain_done_cb(evutil_socket_t fd, short what, void *opaque)
{
	client_result *r = opaque;

	(void)fd;
	(void)what;
	dl_service_drained(r->svc);
}

/* Draining takes a turn of the loop: the service says it is done from a timer. */
static void on_drain(dl_service *svc, void *opaque)
{
	client_result *r = opaque;
	struct timeval tv = { 0, 50 * 1000 };

	ck_assert(dl_service_draining(svc));
	r->drain_calls++;
	evtimer_add(r->drain_timer, &tv);
}

START_TEST(test_admin_endpoints_and_drain)
{
	dl_service_config cfg = { 0 };
	char errbuf[256];
	client_result *r = calloc(1, sizeof(*r));
	dl_service *svc;
	pthread_t th;

	cfg.log_level = (char *)"error";
	cfg.admin_addr = (char *)"127.0.0.1";
	cfg.admin_port = 0;
	cfg.drain_timeout_ms = 5000;
	cfg.check_interval_ms = 100;
	ck_assert_int_eq(dl_service_new("unit", "0.0.0", &cfg, &svc, errbuf, sizeof(errbuf)), 0);
	ck_assert_int_gt(dl_service_admin_port(svc), 0);
	ck_assert_int_eq(dl_service_add_check(svc, "thing", toggled_check, NULL), 0);
	r->svc = svc;
	r->port = dl_service_admin_port(svc);
	r->drain_timer = evtimer_new(dl_service_base(svc), drain_done_cb, r);
	dl_service_on_drain(svc, on_drain, r);
	check_ok = 0;

	ck_assert_int_eq(pthread_create(&th, NULL, client_thread, r), 0);
	ck_assert_int_eq(dl_service_run(svc), 0);
	pthread_join(th, NULL);

	ck_assert_int_eq(r->healthz, 200);
	ck_assert_int_eq(r->readyz_down, 503);
	ck_assert_ptr_nonnull(strstr(r->down_body, "\"thing\":\"thing is unreachable\""));
	ck_assert_int_eq(r->readyz_up, 200);
	ck_assert_ptr_nonnull(strstr(r->up_body, "\"thing\":\"ok\""));
	ck_assert_int_eq(r->metrics, 200);
	ck_assert_ptr_nonnull(strstr(r->metrics_body, "driftlock_dependency_up{dependency=\"thing\"} 1"));
	ck_assert_ptr_nonnull(strstr(r->metrics_body, "driftlock_build_info{service=\"unit\",version=\"0.0.0\"} 1"));
	/* Every admin request is counted by route, method and status. */
	ck_assert_ptr_nonnull(strstr(r->metrics_body, "driftlock_admin_http_requests_total{route=\"healthz\",method=\"GET\",status=\"200\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(r->metrics_body, "driftlock_admin_http_requests_total{route=\"readyz\",method=\"GET\",status=\"503\"}"));
	ck_assert_ptr_nonnull(strstr(r->metrics_body, "driftlock_admin_http_requests_total{route=\"readyz\",method=\"GET\",status=\"200\"} 1\n"));
	ck_assert_int_eq(r->drain_calls, 1);
	event_free(r->drain_timer);
	dl_service_free(svc);
	free(r);
}
END_TEST

static void never_drained(dl_service *svc, void *opaque)
{
	(void)svc;
	(void)opaque;
}

static void *sigterm_thread(void *opaque)
{
	(void)opaque;
	usleep(100 * 1000);
	kill(getpid(), SIGTERM);
	return NULL;
}

/* A drain that never finishes is cut off by the drain timeout: run reports it. */
START_TEST(test_drain_timeout)
{
	dl_service_config cfg = { 0 };
	char errbuf[256];
	dl_service *svc;
	pthread_t th;

	cfg.log_level = (char *)"error";
	cfg.admin_addr = (char *)"127.0.0.1";
	cfg.drain_timeout_ms = 200;
	cfg.check_interval_ms = 1000;
	ck_assert_int_eq(dl_service_new("unit", "0.0.0", &cfg, &svc, errbuf, sizeof(errbuf)), 0);
	dl_service_on_drain(svc, never_drained, NULL);
	pthread_create(&th, NULL, sigterm_thread, NULL);
	ck_assert_int_eq(dl_service_run(svc), -ETIMEDOUT);
	pthread_join(th, NULL);
	dl_service_free(svc);
}
END_TEST

START_TEST(test_args_and_config_errors)
{
	test_cfg cfg = { 0 };
	char *help[] = { (char *)"prog", (char *)"--help", NULL };
	char *bad[] = { (char *)"prog", (char *)"--frobnicate", NULL };
	char *none[] = { (char *)"prog", NULL };
	FILE *saved;

	/* --help prints to stdout and asks for exit 0. */
	saved = stdout;
	stdout = fopen("/dev/null", "w");
	ck_assert_int_eq(dl_service_args(2, help, "prog", "summary", test_params, NPARAMS, &cfg), 1);
	fclose(stdout);
	stdout = saved;

	ck_assert_int_eq(dl_service_args(2, bad, "prog", "summary", test_params, NPARAMS, &cfg), -1);

	unsetenv("DRIFTLOCK_PG_DSN");
	ck_assert_int_eq(dl_service_args(1, none, "prog", "summary", test_params, NPARAMS, &cfg), -1);

	setenv("DRIFTLOCK_PG_DSN", "postgresql://u:p@127.0.0.1:1/db", 1);
	setenv("DRIFTLOCK_ADMIN_PORT", "99999", 1);
	ck_assert_int_eq(dl_service_args(1, none, "prog", "summary", test_params, NPARAMS, &cfg), -1);

	setenv("DRIFTLOCK_ADMIN_PORT", "0", 1);
	setenv("DRIFTLOCK_DRAIN_TIMEOUT", "3s", 1);
	ck_assert_int_eq(dl_service_args(1, none, "prog", "summary", test_params, NPARAMS, &cfg), 0);
	ck_assert_int_eq(cfg.svc.drain_timeout_ms, 3000);
	ck_assert_str_eq(cfg.pg_dsn, "postgresql://u:p@127.0.0.1:1/db");
	dl_config_free(test_params, NPARAMS, &cfg);
}
END_TEST

static int closed_port(void)
{
	struct sockaddr_in a = { 0 };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* Dependencies that are down make the service not ready, with a reason and no password. */
START_TEST(test_deps_down_not_ready)
{
	dl_service_config cfg = { 0 };
	char errbuf[256], dsn[128], url[128];
	dl_service *svc;
	dl_deps *deps;

	cfg.log_level = (char *)"error";
	cfg.admin_addr = (char *)"127.0.0.1";
	cfg.drain_timeout_ms = 1000;
	cfg.check_interval_ms = 1000;
	ck_assert_int_eq(dl_service_new("unit", "0.0.0", &cfg, &svc, errbuf, sizeof(errbuf)), 0);
	ck_assert_int_eq(dl_deps_new(svc, &deps), 0);

	ck_assert_int_eq(dl_deps_use_redis(deps, "http://nope", errbuf, sizeof(errbuf)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(errbuf, "redis://"));

	snprintf(dsn, sizeof(dsn), "postgresql://u:hunter2@127.0.0.1:%d/db", closed_port());
	snprintf(url, sizeof(url), "redis://:hunter2@127.0.0.1:%d/0", closed_port());
	ck_assert_int_eq(dl_deps_use_pg(deps, dsn, errbuf, sizeof(errbuf)), 0);
	ck_assert_int_eq(dl_deps_use_redis(deps, url, errbuf, sizeof(errbuf)), 0);
	ck_assert(!dl_service_check_now(svc));
	ck_assert_ptr_null(dl_deps_pg(deps));
	ck_assert_ptr_null(dl_deps_redis(deps));
	dl_deps_free(deps, 0);
	dl_service_free(svc);
}
END_TEST

static Suite *service_suite(void)
{
	Suite *s = suite_create("dl_service");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_admin_endpoints_and_drain);
	tcase_add_test(tc, test_drain_timeout);
	tcase_add_test(tc, test_args_and_config_errors);
	tcase_add_test(tc, test_deps_down_not_ready);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(service_suite());
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	curl_global_cleanup();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
