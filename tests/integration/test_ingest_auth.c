/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for ingest's API keys, billing gate and shared rate limits: the real binaries (driftlock-admin, two driftlock-ingest replicas) on the real stack. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/support/dl_itest.h"

#define RESP_CAP 65536
#define HDRS_CAP 8192

static const char EVENT[] = "{\"stream\":\"auth.test\",\"msg\":\"hello\"}";

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void start_ingest(const char *const *extra, dl_itest_proc *p)
{
	dl_itest_start("ingest", extra, p);
	ck_assert_msg(dl_itest_wait_ready(p, 90000), "ingest not ready (log %s)", p->log_path);
}

/* POSTs body to /v1/events with one authentication header line (NULL = none). */
static long post_events(int port, const char *auth, const char *ctype, const char *body,
			char *resp, char *hdrs)
{
	char ct[128];
	const char *headers[3] = { ct, auth, NULL };

	snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
	return dl_itest_http(port, "POST", "/v1/events", headers, body, strlen(body), resp,
			     RESP_CAP, hdrs, hdrs ? HDRS_CAP : 0);
}

static long post_one(int port, const char *auth, char *resp, char *hdrs)
{
	return post_events(port, auth, "application/json", EVENT, resp, hdrs);
}

/* The error code of a JSON error body ("" when none), and its details.reason when asked. */
static void error_of(const char *body, char *code, size_t codelen, char *reason, size_t rlen)
{
	cJSON *j = cJSON_Parse(body), *e = cJSON_GetObjectItem(j, "error");
	cJSON *c = cJSON_GetObjectItem(e, "code");
	cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "details"), "reason");

	snprintf(code, codelen, "%s", cJSON_IsString(c) ? c->valuestring : "");
	if (reason)
		snprintf(reason, rlen, "%s", cJSON_IsString(r) ? r->valuestring : "");
	cJSON_Delete(j);
}

static void bearer(char *out, size_t outlen, const char *key)
{
	snprintf(out, outlen, "Authorization: Bearer %s", key);
}

/* Sends one event every 100 ms until the status differs from 202; returns that status and
 * the seconds it took, failing after limit_s. */
static long wait_refused(int port, const char *auth, double limit_s, double *ret_s, char *resp)
{
	double t0 = now_s();
	long st;

	for (;;) {
		st = post_one(port, auth, resp, NULL);
		if (st != 202 || now_s() - t0 > limit_s)
			break;
		usleep(100 * 1000);
	}
	*ret_s = now_s() - t0;
	return st;
}

/* A key made by driftlock-admin authenticates by either header and is stamped as used. */
START_TEST(test_admin_key_authenticates)
{
	char org[37], key[256], auth[320], xkey[320], resp[RESP_CAP], out[128], sql_out[64];
	const char *params[2] = { org, NULL };
	dl_itest_proc p;
	long st;

	dl_itest_org_with_key("auth-ok", "enterprise", org, key, sizeof(key));
	ck_assert_uint_eq(strlen(key), 47);
	ck_assert(strncmp(key, "dlk_", 4) == 0);
	/* Only the keyed hash is stored: the key itself is nowhere in the table. */
	ck_assert_int_eq(dl_itest_sql("SELECT count(*)::text FROM api_keys WHERE org_id = $1::uuid "
				      "AND octet_length(key_hash) = 32",
				      params, sql_out, sizeof(sql_out)),
			 1);
	ck_assert_str_eq(sql_out, "1");
	start_ingest(NULL, &p);
	bearer(auth, sizeof(auth), key);
	st = post_one(p.public_port, auth, resp, NULL);
	ck_assert_msg(st == 202, "bearer: %ld %s", st, resp);
	snprintf(xkey, sizeof(xkey), "X-Api-Key: %s", key);
	st = post_one(p.public_port, xkey, resp, NULL);
	ck_assert_msg(st == 202, "x-api-key: %ld %s", st, resp);
	/* last_used_at is written by the look-up. */
	ck_assert_int_eq(dl_itest_sql("SELECT count(*)::text FROM api_keys WHERE org_id = $1::uuid "
				      "AND last_used_at > now() - interval '1 minute'",
				      params, out, sizeof(out)),
			 1);
	ck_assert_str_eq(out, "1");
	ck_assert_int_eq(dl_itest_stop(&p, 20000) & 0xff, 0);
}
END_TEST

/* 401 for a missing key, a malformed one and a well-formed unknown one. */
START_TEST(test_missing_and_invalid_keys)
{
	char org[37], key[256], auth[320], resp[RESP_CAP], hdrs[HDRS_CAP], code[64], v[128];
	dl_itest_proc p;
	long st;

	dl_itest_org_with_key("auth-401", "developer", org, key, sizeof(key));
	start_ingest(NULL, &p);
	st = post_one(p.public_port, NULL, resp, hdrs);
	ck_assert_int_eq(st, 401);
	error_of(resp, code, sizeof(code), NULL, 0);
	ck_assert_str_eq(code, "missing_api_key");
	ck_assert(dl_itest_header(hdrs, "WWW-Authenticate", v, sizeof(v)));
	ck_assert(strncmp(v, "Bearer", 6) == 0);

	st = post_one(p.public_port, "Authorization: Bearer not-a-key", resp, NULL);
	ck_assert_int_eq(st, 401);
	error_of(resp, code, sizeof(code), NULL, 0);
	ck_assert_str_eq(code, "invalid_api_key");

	st = post_one(p.public_port, "Authorization: Basic dXNlcjpwYXNz", resp, NULL);
	ck_assert_int_eq(st, 401);

	/* Well-formed, right prefix, never issued (the real key with its last character
	 * changed): twice, the second answered from the negative cache. */
	key[46] = key[46] == 'A' ? 'B' : 'A';
	bearer(auth, sizeof(auth), key);
	for (int i = 0; i < 2; i++) {
		st = post_one(p.public_port, auth, resp, NULL);
		ck_assert_int_eq(st, 401);
		error_of(resp, code, sizeof(code), NULL, 0);
		ck_assert_str_eq(code, "invalid_api_key");
	}
	ck_assert_int_eq(dl_itest_stop(&p, 20000) & 0xff, 0);
}
END_TEST

/* A key revoked with driftlock-admin stops working within the cache TTL (2 s here). */
START_TEST(test_revoked_key_stops_within_ttl)
{
	static const char *const extra[] = { "DRIFTLOCK_INGEST_AUTH_CACHE_TTL=2s", NULL };
	char org[37], key[256], auth[320], resp[RESP_CAP], cmd[512], out[512], code[64];
	dl_itest_proc p;
	double took;
	long st;

	dl_itest_org_with_key("auth-revoke", "enterprise", org, key, sizeof(key));
	start_ingest(extra, &p);
	bearer(auth, sizeof(auth), key);
	st = post_one(p.public_port, auth, resp, NULL);
	ck_assert_msg(st == 202, "before revoke: %ld %s", st, resp);
	snprintf(cmd, sizeof(cmd), "%s/services/ingest/driftlock-admin key revoke --prefix %.12s",
		 dl_itest_env("DRIFTLOCK_BUILD_ROOT"), key);
	ck_assert_int_eq(dl_itest_run(cmd, out, sizeof(out)), 0);
	ck_assert_msg(strstr(out, "revoked"), "admin said: %s", out);
	st = wait_refused(p.public_port, auth, 10, &took, resp);
	ck_assert_msg(st == 401, "after revoke: %ld %s", st, resp);
	ck_assert_msg(took <= 2.5, "the revoked key worked for %.2f s", took);
	error_of(resp, code, sizeof(code), NULL, 0);
	ck_assert_str_eq(code, "invalid_api_key");
	ck_assert_int_eq(dl_itest_stop(&p, 20000) & 0xff, 0);
}
END_TEST

/* Suspended orgs and orgs over a blocking quota get 402 with the reason; 119.9 % still passes. */
START_TEST(test_payment_required)
{
	static const char *const extra[] = { "DRIFTLOCK_INGEST_AUTH_CACHE_TTL=1s", NULL };
	char org[37], key[256], auth[320], org2[37], key2[256], auth2[320], resp[RESP_CAP],
		code[64], reason[64];
	const char *p1[2] = { org, NULL }, *p2[2] = { org2, NULL };
	dl_itest_proc p;
	double took;
	long st;

	dl_itest_org_with_key("auth-suspended", "developer", org, key, sizeof(key));
	dl_itest_org_with_key("auth-blocked", "developer", org2, key2, sizeof(key2));
	start_ingest(extra, &p);
	bearer(auth, sizeof(auth), key);
	bearer(auth2, sizeof(auth2), key2);
	ck_assert_int_eq(post_one(p.public_port, auth, resp, NULL), 202);

	dl_itest_sql("UPDATE organizations SET billing_status = 'suspended' WHERE id = $1::uuid", p1,
		     NULL, 0);
	st = wait_refused(p.public_port, auth, 10, &took, resp);
	ck_assert_msg(st == 402, "suspended: %ld %s", st, resp);
	ck_assert(took <= 1.5);
	error_of(resp, code, sizeof(code), reason, sizeof(reason));
	ck_assert_str_eq(code, "payment_required");
	ck_assert_str_eq(reason, "billing_suspended");
	ck_assert_msg(strstr(resp, "suspended"), "the message does not say why: %s", resp);

	/* Developer includes 1,000 anomalies: 1,199 found is under 120 %. */
	dl_itest_sql("UPDATE organizations SET over_quota = 'block' WHERE id = $1::uuid", p2, NULL,
		     0);
	dl_itest_sql("INSERT INTO usage_counters (org_id, period_start, period_end, anomalies) "
		     "SELECT $1::uuid, d.period_start, d.period_end, 1199 "
		     "FROM dl_usage_period($1::uuid, now()) AS d",
		     p2, NULL, 0);
	st = post_one(p.public_port, auth2, resp, NULL);
	ck_assert_msg(st == 202, "at 119.9 %%: %ld %s", st, resp);
	dl_itest_sql("UPDATE usage_counters SET anomalies = 1200 WHERE org_id = $1::uuid", p2, NULL,
		     0);
	st = wait_refused(p.public_port, auth2, 10, &took, resp);
	ck_assert_msg(st == 402, "at 120 %%: %ld %s", st, resp);
	error_of(resp, code, sizeof(code), reason, sizeof(reason));
	ck_assert_str_eq(code, "payment_required");
	ck_assert_str_eq(reason, "quota_blocked");
	ck_assert_msg(strstr(resp, "1200") && strstr(resp, "1000"), "numbers missing: %s", resp);
	/* The soft cap (the default policy) keeps ingesting at the same count. */
	dl_itest_sql("UPDATE organizations SET over_quota = 'soft_cap' WHERE id = $1::uuid", p2,
		     NULL, 0);
	sleep(2);
	ck_assert_int_eq(post_one(p.public_port, auth2, resp, NULL), 202);
	ck_assert_int_eq(dl_itest_stop(&p, 20000) & 0xff, 0);
}
END_TEST

/* The developer plan (50 events/s, burst 500) spread over two ingest processes: together
 * they admit one budget, then both answer 429 with the headers and body. */
START_TEST(test_rate_limit_shared_by_two_replicas)
{
	char org[37], key[256], auth[320], resp[RESP_CAP], hdrs[HDRS_CAP], code[64], v[64],
		body[100 * 48];
	dl_itest_proc a, b;
	long accepted = 0, st;
	int refused[2] = { 0, 0 }, i;
	double t0, elapsed;
	size_t off = 0;

	for (i = 0; i < 100; i++)
		off += (size_t)snprintf(body + off, sizeof(body) - off, "{\"msg\":\"e%d\"}\n", i);
	dl_itest_org_with_key("auth-ratelimit", "developer", org, key, sizeof(key));
	start_ingest(NULL, &a);
	start_ingest(NULL, &b);
	bearer(auth, sizeof(auth), key);
	t0 = now_s();
	for (i = 0; i < 16; i++) {
		int port = i % 2 ? b.public_port : a.public_port;
		const char *ct = "Content-Type: application/x-ndjson";
		const char *headers[3] = { ct, auth, NULL };

		st = dl_itest_http(port, "POST", "/v1/events?stream=rl.test", headers, body,
				   off, resp, RESP_CAP, hdrs, HDRS_CAP);
		ck_assert_msg(st == 202 || st == 429, "batch %d: %ld %s", i, st, resp);
		ck_assert(dl_itest_header(hdrs, "X-RateLimit-Limit", v, sizeof(v)));
		ck_assert_str_eq(v, "50");
		ck_assert(dl_itest_header(hdrs, "X-RateLimit-Remaining", v, sizeof(v)));
		if (st == 202) {
			accepted += 100;
			continue;
		}
		refused[i % 2]++;
		ck_assert(dl_itest_header(hdrs, "Retry-After", v, sizeof(v)));
		ck_assert_int_ge(atoi(v), 1);
		error_of(resp, code, sizeof(code), NULL, 0);
		ck_assert_str_eq(code, "rate_limited");
		ck_assert_msg(strstr(resp, "50 events/s"), "429 does not name the limit: %s", resp);
	}
	elapsed = now_s() - t0;
	/* One budget: the burst plus what refilled meanwhile (one replica alone would admit as
	 * much; two unshared ones twice as much). */
	ck_assert_msg(accepted <= 500 + (long)(elapsed * 50) + 100,
		      "accepted %ld events in %.2f s", accepted, elapsed);
	ck_assert_int_ge(accepted, 400);
	ck_assert_int_gt(refused[0], 0);
	ck_assert_int_gt(refused[1], 0);
	ck_assert_int_eq(dl_itest_stop(&a, 20000) & 0xff, 0);
	ck_assert_int_eq(dl_itest_stop(&b, 20000) & 0xff, 0);
}
END_TEST

static Suite *ingest_auth_suite(void)
{
	Suite *s = suite_create("ingest_auth");
	TCase *t = tcase_create("ingest");

	tcase_set_timeout(t, 240);
	tcase_add_test(t, test_admin_key_authenticates);
	tcase_add_test(t, test_missing_and_invalid_keys);
	tcase_add_test(t, test_revoked_key_stops_within_ttl);
	tcase_add_test(t, test_payment_required);
	tcase_add_test(t, test_rate_limit_shared_by_two_replicas);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(ingest_auth_suite());
	int failed;

	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
