/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for ingest's quota gate and GET /v1/usage on metering's live usage in Redis (dl:usage:{org}, dl:usage:ready), with PostgreSQL as the fallback. */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/dl_redis.h"
#include "tests/support/dl_itest.h"

#define RESP_CAP 65536

static const char EVENT[] = "{\"stream\":\"quota.test\",\"msg\":\"hello\"}";

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static dl_redis *redis(void)
{
	dl_redis *r = NULL;
	char err[256] = "";

	ck_assert_msg(dl_redis_connect_url(dl_itest_env("DRIFTLOCK_REDIS_URL"), 2000, 2000, err,
					   sizeof(err), &r) == 0, "%s", err);
	return r;
}

static void rcmd(dl_redis *r, int argc, const char **argv)
{
	redisReply *reply = NULL;
	char err[256] = "";

	ck_assert_msg(dl_redis_command_argv(r, argc, argv, NULL, &reply, err, sizeof(err)) == 0,
		      "%s: %s", argv[0], err);
	freeReplyObject(reply);
}

/* What metering's mtr_usage_publish writes, and the ready marker. */
static void write_live(dl_redis *r, const char *org, int64_t start_ms, int64_t end_ms,
		       int64_t anomalies, int64_t included, const char *policy)
{
	char key[64], s[24], e[24], n[24], inc[24], now[24];
	bool blocked = strcmp(policy, "block") == 0 && anomalies * 100 >= included * 120;
	const char *hset[16] = { "HSET", key, "period_start_ms", s, "period_end_ms", e,
				 "anomalies", n, "included", inc, "over_quota", policy,
				 "blocked", blocked ? "1" : "0", "updated_ms", now };
	const char *ready[3] = { "SET", "dl:usage:ready", now };

	snprintf(key, sizeof(key), "dl:usage:%s", org);
	snprintf(s, sizeof(s), "%" PRId64, start_ms);
	snprintf(e, sizeof(e), "%" PRId64, end_ms);
	snprintf(n, sizeof(n), "%" PRId64, anomalies);
	snprintf(inc, sizeof(inc), "%" PRId64, included);
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL) * 1000);
	rcmd(r, 16, hset);
	rcmd(r, 3, ready);
}

static void flushdb(dl_redis *r)
{
	const char *argv[1] = { "FLUSHDB" };

	rcmd(r, 1, argv);
}

/* The org's current period in PostgreSQL (dl_usage_period at now), in epoch ms. */
static void period_of(const char *org, int64_t *start, int64_t *end)
{
	const char *p[2] = { org, NULL };
	char v[64];

	dl_itest_sql("SELECT floor(extract(epoch FROM period_start) * 1000)::bigint::text || ' ' || "
		     "floor(extract(epoch FROM period_end) * 1000)::bigint::text "
		     "FROM dl_usage_period($1::uuid, now())", p, v, sizeof(v));
	ck_assert_int_eq(sscanf(v, "%" SCNd64 " %" SCNd64, start, end), 2);
}

static void set_policy(const char *org, const char *policy)
{
	const char *p[3] = { org, policy, NULL };

	dl_itest_sql("UPDATE organizations SET over_quota = $2 WHERE id = $1::uuid", p, NULL, 0);
}

static void set_db_count(const char *org, int64_t n)
{
	char v[24];
	const char *p[3] = { org, v, NULL };

	snprintf(v, sizeof(v), "%" PRId64, n);
	dl_itest_sql("INSERT INTO usage_counters (org_id, period_start, period_end, anomalies) "
		     "SELECT $1::uuid, d.period_start, d.period_end, $2::bigint "
		     "FROM dl_usage_period($1::uuid, now()) AS d "
		     "ON CONFLICT (org_id, period_start) DO UPDATE SET anomalies = EXCLUDED.anomalies",
		     p, NULL, 0);
}

static long post_one(int port, const char *key, char *resp)
{
	char auth[320];
	const char *headers[3] = { "Content-Type: application/json", auth, NULL };

	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
	return dl_itest_http(port, "POST", "/v1/events", headers, EVENT, strlen(EVENT), resp,
			     RESP_CAP, NULL, 0);
}

/* Posts every 100 ms until the answer is want; returns the seconds it took (fails after
 * limit_s). */
static double wait_status(int port, const char *key, long want, double limit_s, char *resp)
{
	double t0 = now_s();
	long st;

	for (;;) {
		st = post_one(port, key, resp);
		if (st == want)
			return now_s() - t0;
		ck_assert_msg(now_s() - t0 < limit_s, "wanted %ld, still %ld after %.1f s: %s", want,
			      st, limit_s, resp);
		usleep(100 * 1000);
	}
}

static void reason_of(const char *body, char *out, size_t outlen)
{
	cJSON *j = cJSON_Parse(body);
	cJSON *r = cJSON_GetObjectItem(
		cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "details"), "reason");

	snprintf(out, outlen, "%s", cJSON_IsString(r) ? r->valuestring : "");
	cJSON_Delete(j);
}

static void start_ingest(dl_itest_proc *p)
{
	/* A long key cache: what changes within a test comes from Redis, not a fresh look-up. */
	static const char *const extra[] = { "DRIFTLOCK_INGEST_AUTH_CACHE_TTL=30s", NULL };

	dl_itest_start("ingest", extra, p);
	ck_assert_msg(dl_itest_wait_ready(p, 90000), "ingest not ready (log %s)", p->log_path);
}

/* A block org: 402 within about a second of the live count reaching 120 %, 202 again when the
 * hash is of a period that no longer contains now (rollover) or under 120 %. PostgreSQL says 0
 * throughout, so every 402 here comes from Redis. */
START_TEST(test_block_follows_live_count)
{
	char org[37], key[256], resp[RESP_CAP], reason[64];
	dl_redis *r = redis();
	int64_t start, end;
	dl_itest_proc p;
	double took;

	dl_itest_org_with_key("quota-block", "developer", org, key, sizeof(key));
	set_policy(org, "block");
	period_of(org, &start, &end);
	flushdb(r);
	start_ingest(&p);
	ck_assert_int_eq(post_one(p.public_port, key, resp), 202);

	/* Developer includes 1,000: 1,199 is under 120 %. */
	write_live(r, org, start, end, 1199, 1000, "block");
	sleep(2);
	ck_assert_int_eq(post_one(p.public_port, key, resp), 202);
	write_live(r, org, start, end, 1200, 1000, "block");
	took = wait_status(p.public_port, key, 402, 10, resp);
	ck_assert_msg(took <= 1.6, "402 after %.2f s", took);
	reason_of(resp, reason, sizeof(reason));
	ck_assert_str_eq(reason, "quota_blocked");
	ck_assert_msg(strstr(resp, "1200") && strstr(resp, "1000"), "numbers missing: %s", resp);

	/* Rollover: the hash is of the period that just ended; the database's new period is
	 * empty. */
	write_live(r, org, start - 31LL * 86400000, start, 1500, 1000, "block");
	took = wait_status(p.public_port, key, 202, 10, resp);
	ck_assert_msg(took <= 1.6, "202 after %.2f s", took);

	/* Back over 120 %, then under it again. */
	write_live(r, org, start, end, 1300, 1000, "block");
	wait_status(p.public_port, key, 402, 10, resp);
	write_live(r, org, start, end, 1100, 1000, "block");
	wait_status(p.public_port, key, 202, 10, resp);
	ck_assert_int_eq(dl_itest_stop(&p, 20000) & 0xff, 0);
	dl_redis_free(r);
}
END_TEST

/* Redis emptied (no dl:usage:ready): the database's count gates; a hash without the marker is
 * not trusted. */
START_TEST(test_falls_back_to_postgres)
{
	char org[37], key[256], resp[RESP_CAP], reason[64];
	const char *del[2] = { "DEL", "dl:usage:ready" };
	dl_redis *r = redis();
	int64_t start, end;
	dl_itest_proc p;

	dl_itest_org_with_key("quota-fallback", "developer", org, key, sizeof(key));
	set_policy(org, "block");
	set_db_count(org, 1250);
	period_of(org, &start, &end);
	flushdb(r);
	start_ingest(&p);
	ck_assert_int_eq(post_one(p.public_port, key, resp), 402);
	reason_of(resp, reason, sizeof(reason));
	ck_assert_str_eq(reason, "quota_blocked");
	ck_assert_msg(strstr(resp, "1250"), "the database's count is not the one shown: %s", resp);

	/* With the marker the live count answers ... */
	write_live(r, org, start, end, 10, 1000, "block");
	wait_status(p.public_port, key, 202, 10, resp);
	/* ... without it (Redis emptied, not rebuilt yet), the database again. */
	rcmd(r, 2, del);
	wait_status(p.public_port, key, 402, 10, resp);
	ck_assert_int_eq(dl_itest_stop(&p, 20000) & 0xff, 0);
	dl_redis_free(r);
}
END_TEST

/* soft_cap and allow_overage keep ingesting far past 120 %, whatever Redis or the database
 * say. */
START_TEST(test_soft_cap_and_overage_never_refused)
{
	char org1[37], key1[256], org2[37], key2[256], resp[RESP_CAP];
	dl_redis *r = redis();
	int64_t start, end;
	dl_itest_proc p;

	dl_itest_org_with_key("quota-soft", "developer", org1, key1, sizeof(key1));
	dl_itest_org_with_key("quota-overage", "pro", org2, key2, sizeof(key2));
	set_policy(org2, "allow_overage");
	set_db_count(org1, 5000);
	set_db_count(org2, 500000);
	period_of(org1, &start, &end);
	flushdb(r);
	write_live(r, org1, start, end, 5000, 1000, "soft_cap");
	write_live(r, org2, start, end, 500000, 50000, "allow_overage");
	start_ingest(&p);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(post_one(p.public_port, key1, resp), 202);
		ck_assert_int_eq(post_one(p.public_port, key2, resp), 202);
		sleep(1);
	}
	ck_assert_int_eq(dl_itest_stop(&p, 20000) & 0xff, 0);
	dl_redis_free(r);
}
END_TEST

/* GET /v1/usage: the live count while Redis holds it, the database's otherwise, and says
 * which. */
START_TEST(test_usage_reports_its_source)
{
	char org[37], key[256], auth[320], resp[RESP_CAP];
	const char *headers[2] = { auth, NULL };
	dl_redis *r = redis();
	int64_t start, end;
	dl_itest_proc p;
	cJSON *j;
	double t0;

	dl_itest_org_with_key("quota-usage", "developer", org, key, sizeof(key));
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
	set_db_count(org, 700);
	period_of(org, &start, &end);
	flushdb(r);
	start_ingest(&p);
	ck_assert_int_eq(dl_itest_http(p.public_port, "GET", "/v1/usage", headers, NULL, 0, resp,
				       RESP_CAP, NULL, 0), 200);
	j = cJSON_Parse(resp);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "source")->valuestring, "database");
	ck_assert_int_eq(cJSON_GetObjectItem(j, "anomalies")->valueint, 700);
	cJSON_Delete(j);

	/* Metering stored more since: the live count answers within about a second. */
	write_live(r, org, start, end, 1234, 1000, "soft_cap");
	t0 = now_s();
	for (;;) {
		ck_assert_int_eq(dl_itest_http(p.public_port, "GET", "/v1/usage", headers, NULL, 0,
					       resp, RESP_CAP, NULL, 0), 200);
		j = cJSON_Parse(resp);
		if (strcmp(cJSON_GetObjectItem(j, "source")->valuestring, "live") == 0)
			break;
		cJSON_Delete(j);
		ck_assert_msg(now_s() - t0 < 5, "never live: %s", resp);
		usleep(100 * 1000);
	}
	ck_assert_int_eq(cJSON_GetObjectItem(j, "anomalies")->valueint, 1234);
	ck_assert_int_eq(cJSON_GetObjectItem(j, "overage")->valueint, 234);
	ck_assert(cJSON_GetObjectItem(j, "percent_used")->valuedouble > 123.39 &&
		  cJSON_GetObjectItem(j, "percent_used")->valuedouble < 123.41);
	ck_assert_int_eq(cJSON_GetObjectItem(j, "included")->valueint, 1000);
	cJSON_Delete(j);
	ck_assert_int_eq(dl_itest_stop(&p, 20000) & 0xff, 0);
	dl_redis_free(r);
}
END_TEST

static Suite *ingest_quota_suite(void)
{
	Suite *s = suite_create("ingest_quota");
	TCase *t = tcase_create("ingest");

	tcase_set_timeout(t, 240);
	tcase_add_test(t, test_block_follows_live_count);
	tcase_add_test(t, test_falls_back_to_postgres);
	tcase_add_test(t, test_soft_cap_and_overage_never_refused);
	tcase_add_test(t, test_usage_reports_its_source);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(ingest_quota_suite());
	int failed;

	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
