/* SPDX-License-Identifier: Apache-2.0 */
/* Integration test for mtr_usage: live usage hashes and the ready marker in the real Redis. */
#include "services/metering/mtr_usage.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_redis.h"
#include "tests/support/dl_itest.h"

/* A database of its own, so FLUSHDB here never touches what other suites keep in db 0. */
#define TEST_DB 7

static dl_redis *connect_test_db(void)
{
	const char *url = dl_itest_env("DRIFTLOCK_REDIS_URL");
	const char *slash = strrchr(url, '/');
	char u[512], err[256] = "";
	dl_redis *r = NULL;

	ck_assert(slash > url + strlen("redis://"));
	snprintf(u, sizeof(u), "%.*s/%d", (int)(slash - url), url, TEST_DB);
	ck_assert_msg(dl_redis_connect_url(u, 2000, 2000, err, sizeof(err), &r) == 0, "%s", err);
	return r;
}

static redisReply *cmd(dl_redis *r, int argc, const char **argv)
{
	redisReply *reply = NULL;
	char err[256] = "";

	ck_assert_msg(dl_redis_command_argv(r, argc, argv, NULL, &reply, err, sizeof(err)) == 0,
		      "%s: %s", argv[0], err);
	return reply;
}

/* HGET key field into out ("" when missing). */
static void hget(dl_redis *r, const char *key, const char *field, char *out, size_t outlen)
{
	const char *argv[3] = { "HGET", key, field };
	redisReply *reply = cmd(r, 3, argv);

	snprintf(out, outlen, "%s", reply->type == REDIS_REPLY_STRING ? reply->str : "");
	freeReplyObject(reply);
}

static long long pttl(dl_redis *r, const char *key)
{
	const char *argv[2] = { "PTTL", key };
	redisReply *reply = cmd(r, 2, argv);
	long long v = reply->integer;

	freeReplyObject(reply);
	return v;
}

static void flushdb(dl_redis *r)
{
	const char *argv[1] = { "FLUSHDB" };

	freeReplyObject(cmd(r, 1, argv));
}

static mtr_org_usage org(const char *id, int64_t start, int64_t n, int64_t included,
			 const char *policy)
{
	mtr_org_usage o;

	memset(&o, 0, sizeof(o));
	snprintf(o.org_id, sizeof(o.org_id), "%s", id);
	o.period_start_ms = start;
	o.period_end_ms = start + 30LL * 86400000;
	o.anomalies = n;
	o.included = included;
	snprintf(o.over_quota, sizeof(o.over_quota), "%s", policy);
	o.blocked = strcmp(policy, "block") == 0 && n * 100 >= included * 120;
	return o;
}

#define ORG_A "0b6f7a52-1d0e-4c3e-9d59-3c1b2a000001"
#define ORG_B "0b6f7a52-1d0e-4c3e-9d59-3c1b2a000002"
#define P1 1793491200000LL /* 2026-11-01T00:00:00Z */
#define P2 1796083200000LL /* 2026-12-01T00:00:00Z */

START_TEST(test_publish_reads_back_absolute_values_with_ttl)
{
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_redis *r = connect_test_db();
	mtr_usage *u = NULL;
	mtr_org_usage orgs[2];
	char v[64], err[256] = "";
	long long ttl;

	flushdb(r);
	ck_assert_msg(mtr_usage_new(r, m, &u, err, sizeof(err)) == 0, "%s", err);
	orgs[0] = org(ORG_A, P1, 1250, 1000, "block");
	orgs[1] = org(ORG_B, P1, 10, 50000, "soft_cap");
	ck_assert_msg(mtr_usage_publish(u, orgs, 2, err, sizeof(err)) == 0, "%s", err);

	hget(r, "dl:usage:" ORG_A, "anomalies", v, sizeof(v));
	ck_assert_str_eq(v, "1250");
	hget(r, "dl:usage:" ORG_A, "included", v, sizeof(v));
	ck_assert_str_eq(v, "1000");
	hget(r, "dl:usage:" ORG_A, "blocked", v, sizeof(v));
	ck_assert_str_eq(v, "1");
	hget(r, "dl:usage:" ORG_A, "over_quota", v, sizeof(v));
	ck_assert_str_eq(v, "block");
	hget(r, "dl:usage:" ORG_A, "period_start_ms", v, sizeof(v));
	ck_assert_str_eq(v, "1793491200000");
	hget(r, "dl:usage:" ORG_A, "period_end_ms", v, sizeof(v));
	ck_assert_str_eq(v, "1796083200000");
	hget(r, "dl:usage:" ORG_A, "updated_ms", v, sizeof(v));
	ck_assert_msg(strtoll(v, NULL, 10) > P1 - 86400000LL * 365, "updated_ms %s", v);
	hget(r, "dl:usage:" ORG_B, "blocked", v, sizeof(v));
	ck_assert_str_eq(v, "0");
	ttl = pttl(r, "dl:usage:" ORG_B);
	ck_assert_msg(ttl > 39LL * 86400000 && ttl <= 40LL * 86400000, "ttl %lld", ttl);

	/* Absolute values: publishing the same totals twice leaves them as they are. */
	ck_assert_msg(mtr_usage_publish(u, orgs, 2, err, sizeof(err)) == 0, "%s", err);
	hget(r, "dl:usage:" ORG_A, "anomalies", v, sizeof(v));
	ck_assert_str_eq(v, "1250");

	/* A late, lower count of the same period does not move it back; a new period does. */
	orgs[0] = org(ORG_A, P1, 1100, 1000, "block");
	ck_assert_msg(mtr_usage_publish(u, orgs, 1, err, sizeof(err)) == 0, "%s", err);
	hget(r, "dl:usage:" ORG_A, "anomalies", v, sizeof(v));
	ck_assert_str_eq(v, "1250");
	orgs[0] = org(ORG_A, P2, 3, 1000, "block");
	ck_assert_msg(mtr_usage_publish(u, orgs, 1, err, sizeof(err)) == 0, "%s", err);
	hget(r, "dl:usage:" ORG_A, "anomalies", v, sizeof(v));
	ck_assert_str_eq(v, "3");
	hget(r, "dl:usage:" ORG_A, "blocked", v, sizeof(v));
	ck_assert_str_eq(v, "0");
	/* ... and the old period's late write does not come back over it. */
	orgs[0] = org(ORG_A, P1, 1300, 1000, "block");
	ck_assert_msg(mtr_usage_publish(u, orgs, 1, err, sizeof(err)) == 0, "%s", err);
	hget(r, "dl:usage:" ORG_A, "period_start_ms", v, sizeof(v));
	ck_assert_str_eq(v, "1796083200000");

	mtr_usage_free(u);
	dl_redis_free(r);
	dl_metrics_registry_free(m);
}
END_TEST

START_TEST(test_many_orgs_in_one_publish)
{
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_redis *r = connect_test_db();
	mtr_usage *u = NULL;
	mtr_org_usage *orgs = calloc(700, sizeof(*orgs));
	char id[37], key[64], v[32], err[256] = "";
	size_t i;

	flushdb(r);
	ck_assert_msg(mtr_usage_new(r, m, &u, err, sizeof(err)) == 0, "%s", err);
	for (i = 0; i < 700; i++) {
		snprintf(id, sizeof(id), "0b6f7a52-1d0e-4c3e-9d59-%012zu", i);
		orgs[i] = org(id, P1, (int64_t)i, 1000, "soft_cap");
	}
	ck_assert_msg(mtr_usage_publish(u, orgs, 700, err, sizeof(err)) == 0, "%s", err);
	for (i = 0; i < 700; i += 233) {
		snprintf(key, sizeof(key), "dl:usage:0b6f7a52-1d0e-4c3e-9d59-%012zu", i);
		hget(r, key, "anomalies", v, sizeof(v));
		ck_assert_int_eq(strtoll(v, NULL, 10), (long long)i);
	}
	hget(r, "dl:usage:0b6f7a52-1d0e-4c3e-9d59-000000000699", "anomalies", v, sizeof(v));
	ck_assert_str_eq(v, "699");
	free(orgs);
	mtr_usage_free(u);
	dl_redis_free(r);
	dl_metrics_registry_free(m);
}
END_TEST

START_TEST(test_ready_marker_and_flushdb)
{
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_redis *r = connect_test_db();
	mtr_usage *u = NULL;
	char v[32], err[256] = "";
	bool ready = true;

	flushdb(r);
	ck_assert_msg(mtr_usage_new(r, m, &u, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(mtr_usage_ready(u, &ready, err, sizeof(err)) == 0, "%s", err);
	ck_assert(!ready);
	ck_assert_msg(mtr_usage_mark_ready(u, P1 + 42, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(mtr_usage_ready(u, &ready, err, sizeof(err)) == 0, "%s", err);
	ck_assert(ready);
	{
		const char *argv[2] = { "GET", "dl:usage:ready" };
		redisReply *reply = cmd(r, 2, argv);

		snprintf(v, sizeof(v), "%s", reply->str ? reply->str : "");
		freeReplyObject(reply);
	}
	ck_assert_str_eq(v, "1793491200042");

	/* Redis emptied: not ready, so metering rebuilds from PostgreSQL. */
	flushdb(r);
	ck_assert_msg(mtr_usage_ready(u, &ready, err, sizeof(err)) == 0, "%s", err);
	ck_assert(!ready);
	mtr_usage_free(u);
	dl_redis_free(r);
	dl_metrics_registry_free(m);
}
END_TEST

START_TEST(test_publish_survives_a_killed_connection)
{
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_redis *r = connect_test_db();
	dl_redis *admin = connect_test_db();
	const char *kill[4] = { "CLIENT", "KILL", "TYPE", "normal" };
	mtr_usage *u = NULL;
	mtr_org_usage o = org(ORG_B, P1, 77, 1000, "soft_cap");
	char v[32], err[256] = "";
	int rc;

	flushdb(r);
	ck_assert_msg(mtr_usage_new(r, m, &u, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(mtr_usage_publish(u, &o, 1, err, sizeof(err)) == 0, "%s", err);
	freeReplyObject(cmd(admin, 4, kill));
	dl_redis_free(admin);
	/* The first call after the kill may fail; the next one reconnects and writes. */
	o.anomalies = 78;
	rc = mtr_usage_publish(u, &o, 1, err, sizeof(err));
	if (rc < 0)
		ck_assert_msg(mtr_usage_publish(u, &o, 1, err, sizeof(err)) == 0, "%s", err);
	admin = connect_test_db();
	hget(admin, "dl:usage:" ORG_B, "anomalies", v, sizeof(v));
	ck_assert_str_eq(v, "78");
	dl_redis_free(admin);
	mtr_usage_free(u);
	dl_redis_free(r);
	dl_metrics_registry_free(m);
}
END_TEST

static Suite *mtr_usage_suite(void)
{
	Suite *s = suite_create("mtr_usage");
	TCase *tc = tcase_create("redis");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_publish_reads_back_absolute_values_with_ttl);
	tcase_add_test(tc, test_many_orgs_in_one_publish);
	tcase_add_test(tc, test_ready_marker_and_flushdb);
	tcase_add_test(tc, test_publish_survives_a_killed_connection);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(mtr_usage_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
