/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for det_keys: direct producers' API keys checked against the stored hashes
 * with the detector's own role, keys made by driftlock-admin as an operator makes them. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/dl_metrics.h"
#include "common/dl_pgpool.h"
#include "services/detector/det_keys.h"
#include "tests/support/dl_itest.h"

typedef struct got {
	int calls, rc;
	char org[37];
} got;

static void on_key(int rc, const char *org_id, void *arg)
{
	got *g = arg;

	g->calls++;
	g->rc = rc;
	snprintf(g->org, sizeof(g->org), "%s", org_id ? org_id : "");
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nothing(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void spin_until(struct event_base *base, const int *calls, int want)
{
	struct event *tick = event_new(base, -1, EV_PERSIST, nothing, NULL);
	struct timeval tv = { 0, 50000 };
	int64_t t0 = mono_ms();

	/* A ticking timer so the loop wakes even while nothing else is pending. */
	event_add(tick, &tv);
	while (*calls < want && mono_ms() - t0 < 10000)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(tick);
}

static double metric(dl_metrics_registry *m, const char *name, const char *label)
{
	dl_metric *f = dl_metrics_counter(m, name, NULL, 1, "result");
	const char *lv[1] = { label };
	double v = 0;

	if (dl_metric_get(f, lv, &v) < 0)
		return 0;
	return v;
}

typedef struct fixture {
	struct event_base *base;
	dl_metrics_registry *m;
	dl_pgpool *pool;
	det_keys *k;
} fixture;

static void fixture_start(fixture *f, int64_t ttl_ms)
{
	const char *secret = dl_itest_env("DRIFTLOCK_API_KEY_SECRET");
	char err[256];

	memset(f, 0, sizeof(*f));
	f->base = event_base_new();
	f->m = dl_metrics_registry_new();
	ck_assert_int_eq(dl_pgpool_new(f->base, dl_itest_env("DRIFTLOCK_PG_DSN_DETECTOR"), NULL,
				       2, 64, err, sizeof(err), &f->pool),
			 0);
	ck_assert_msg(det_keys_new(f->base, f->pool, f->m,
				   &(det_keys_options){ .secret = secret,
							.secret_len = strlen(secret),
							.ttl_ms = ttl_ms,
							.negative_ttl_ms = ttl_ms },
				   &f->k, err, sizeof(err)) == 0,
		      "%s", err);
}

static void fixture_stop(fixture *f)
{
	det_keys_free(f->k);
	dl_pgpool_free(f->pool);
	dl_metrics_registry_free(f->m);
	event_base_free(f->base);
}

/* A valid key gives its org; concurrent checks share one look-up; the next check is a cache
 * hit answered at once; a key nobody issued is refused. */
START_TEST(test_key_gives_org)
{
	fixture f;
	char org[37], key[128];
	got g[8];
	got bad = { 0 };
	static const char unknown[] = "dlk_0000000000000000000000000000000000000000001";

	dl_itest_org_with_key("det_keys itest", NULL, org, key, sizeof(key));
	fixture_start(&f, 10000);
	memset(g, 0, sizeof(g));
	for (int i = 0; i < 8; i++)
		det_keys_check(f.k, key, strlen(key), on_key, &g[i]);
	ck_assert_int_eq(g[0].calls, 0);
	spin_until(f.base, &g[7].calls, 1);
	for (int i = 0; i < 8; i++) {
		ck_assert_int_eq(g[i].calls, 1);
		ck_assert_int_eq(g[i].rc, 0);
		ck_assert_str_eq(g[i].org, org);
	}
	ck_assert_double_eq(metric(f.m, "driftlock_detector_keys_lookups_total", "found"), 1);
	ck_assert_double_eq(metric(f.m, "driftlock_detector_keys_checks_total", "coalesced"), 7);

	/* Cached: answered before the call returns. */
	memset(&g[0], 0, sizeof(g[0]));
	det_keys_check(f.k, key, strlen(key), on_key, &g[0]);
	ck_assert_int_eq(g[0].calls, 1);
	ck_assert_str_eq(g[0].org, org);

	det_keys_check(f.k, unknown, strlen(unknown), on_key, &bad);
	spin_until(f.base, &bad.calls, 1);
	ck_assert_int_eq(bad.rc, -EACCES);
	ck_assert_str_eq(bad.org, "");
	/* Refused again from the cache, without a second look-up. */
	det_keys_check(f.k, unknown, strlen(unknown), on_key, &bad);
	ck_assert_int_eq(bad.calls, 2);
	ck_assert_int_eq(bad.rc, -EACCES);
	ck_assert_double_eq(metric(f.m, "driftlock_detector_keys_lookups_total", "not_found"), 1);
	fixture_stop(&f);
}
END_TEST

/* A revoked key stops working once its cache entry expires (the TTL bounds how long). */
START_TEST(test_revoked_key_refused_after_ttl)
{
	fixture f;
	char org[37], key[128];
	got g = { 0 };
	int64_t t0;

	dl_itest_org_with_key("det_keys revoke", NULL, org, key, sizeof(key));
	fixture_start(&f, 300);
	det_keys_check(f.k, key, strlen(key), on_key, &g);
	spin_until(f.base, &g.calls, 1);
	ck_assert_int_eq(g.rc, 0);
	ck_assert_int_eq(dl_itest_sql("UPDATE api_keys SET revoked_at = now() "
				      "WHERE org_id = $1::uuid",
				      (const char *const[]){ org, NULL }, NULL, 0),
			 1);
	t0 = mono_ms();
	while (mono_ms() - t0 < 400)
		event_base_loop(f.base, EVLOOP_NONBLOCK);
	memset(&g, 0, sizeof(g));
	det_keys_check(f.k, key, strlen(key), on_key, &g);
	spin_until(f.base, &g.calls, 1);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_int_eq(g.rc, -EACCES);
	fixture_stop(&f);
}
END_TEST

/* The database down: a transient error, never "unknown key" (the message must not be
 * dead-lettered for it). */
START_TEST(test_database_down_is_transient)
{
	const char *secret = dl_itest_env("DRIFTLOCK_API_KEY_SECRET");
	struct event_base *base = event_base_new();
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_pgpool *pool = NULL;
	det_keys *k = NULL;
	char err[256], org[37], key[128];
	got g = { 0 };

	dl_itest_org_with_key("det_keys down", NULL, org, key, sizeof(key));
	ck_assert_int_eq(dl_pgpool_new(base, "postgresql://driftlock_detector@127.0.0.1:1/none",
				       NULL, 1, 4, err, sizeof(err), &pool),
			 0);
	ck_assert_int_eq(det_keys_new(base, pool, m,
				      &(det_keys_options){ .secret = secret,
							   .secret_len = strlen(secret) },
				      &k, err, sizeof(err)),
			 0);
	det_keys_check(k, key, strlen(key), on_key, &g);
	spin_until(base, &g.calls, 1);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_int_eq(g.rc, -ENOTCONN);
	det_keys_free(k);
	dl_pgpool_free(pool);
	dl_metrics_registry_free(m);
	event_base_free(base);
}
END_TEST

static Suite *det_keys_suite(void)
{
	Suite *s = suite_create("det_keys");
	TCase *tc = tcase_create("postgres");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_key_gives_org);
	tcase_add_test(tc, test_revoked_key_refused_after_ttl);
	tcase_add_test(tc, test_database_down_is_transient);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(det_keys_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
