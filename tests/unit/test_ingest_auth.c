/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for ingest's API key look-up cache (the key format and hash: test_dl_apikey.c). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_apikey.h"
#include "services/ingest/ingest_authcache.h"

static const char SECRET[] = "0123456789abcdef0123456789abcdef";

/* ---------------------------------------------------------------- cache */

static void hash_of(int i, uint8_t out[DL_APIKEY_HASH_LEN])
{
	static dl_apikey_hasher *h;
	char key[32], err[64];

	if (!h)
		ck_assert_int_eq(dl_apikey_hasher_new(SECRET, strlen(SECRET), err, sizeof(err), &h),
				 0);
	snprintf(key, sizeof(key), "key-%d", i);
	ck_assert_int_eq(dl_apikey_hash(h, key, strlen(key), out), 0);
}

static ingest_principal principal(int i)
{
	ingest_principal p;

	memset(&p, 0, sizeof(p));
	snprintf(p.org_id, sizeof(p.org_id), "00000000-0000-4000-8000-%012d", i);
	snprintf(p.key_id, sizeof(p.key_id), "10000000-0000-4000-8000-%012d", i);
	strcpy(p.plan, "pro");
	strcpy(p.billing_status, "ok");
	strcpy(p.over_quota, "soft_cap");
	p.rate_per_s = 1000;
	p.rate_burst = 10000;
	p.included = 50000;
	p.period_anomalies = i;
	return p;
}

START_TEST(test_cache_valid_invalid_expiry)
{
	ingest_authcache *c = NULL;
	uint8_t h1[32], h2[32], h3[32];
	ingest_principal p = principal(7), got;
	bool refresh = true;

	hash_of(1, h1);
	hash_of(2, h2);
	hash_of(3, h3);
	ck_assert_int_eq(ingest_authcache_new(4, 4, &c), 0);
	ck_assert_int_eq(ingest_authcache_get(c, h1, 0, 1000, &got, &refresh), INGEST_AUTHCACHE_MISS);
	ck_assert(!refresh);
	ck_assert_int_eq(ingest_authcache_put(c, h1, &p, 1000, 10000, 7500), 0);
	ck_assert_int_eq(ingest_authcache_put(c, h2, NULL, 1000, 5000, 5000), 0);
	memset(&got, 0, sizeof(got));
	ck_assert_int_eq(ingest_authcache_get(c, h1, 1000, 1000, &got, &refresh),
			 INGEST_AUTHCACHE_VALID);
	ck_assert(!refresh);
	ck_assert_str_eq(got.org_id, p.org_id);
	ck_assert_str_eq(got.key_id, p.key_id);
	ck_assert_int_eq(got.period_anomalies, 7);
	ck_assert_int_eq(ingest_authcache_get(c, h2, 1000, 1000, NULL, NULL),
			 INGEST_AUTHCACHE_INVALID);
	ck_assert_int_eq(ingest_authcache_get(c, h3, 1000, 1000, NULL, NULL), INGEST_AUTHCACHE_MISS);
	/* The negative entry lapses at its own, shorter TTL. */
	ck_assert_int_eq(ingest_authcache_get(c, h2, 5999, 1000, NULL, NULL),
			 INGEST_AUTHCACHE_INVALID);
	ck_assert_int_eq(ingest_authcache_get(c, h2, 6000, 1000, NULL, NULL), INGEST_AUTHCACHE_MISS);
	ck_assert_uint_eq(ingest_authcache_count(c, false), 0);
	/* The valid one is trusted until exactly its TTL, never after. */
	ck_assert_int_eq(ingest_authcache_get(c, h1, 10999, 1000, NULL, NULL),
			 INGEST_AUTHCACHE_VALID);
	ck_assert_int_eq(ingest_authcache_get(c, h1, 11000, 1000, NULL, NULL),
			 INGEST_AUTHCACHE_MISS);
	ck_assert_uint_eq(ingest_authcache_count(c, true), 0);
	ingest_authcache_free(c);
}
END_TEST

START_TEST(test_cache_refresh_once)
{
	ingest_authcache *c = NULL;
	uint8_t h[32];
	ingest_principal p = principal(1);
	bool refresh = false;

	hash_of(1, h);
	ck_assert_int_eq(ingest_authcache_new(4, 4, &c), 0);
	ck_assert_int_eq(ingest_authcache_put(c, h, &p, 0, 10000, 7500), 0);
	ingest_authcache_get(c, h, 7499, 1000, NULL, &refresh);
	ck_assert(!refresh);
	/* Due: the first caller is told to refresh, the next ones not until retry_ms passed. */
	ingest_authcache_get(c, h, 7500, 1000, NULL, &refresh);
	ck_assert(refresh);
	ingest_authcache_get(c, h, 7600, 1000, NULL, &refresh);
	ck_assert(!refresh);
	ingest_authcache_get(c, h, 8500, 1000, NULL, &refresh);
	ck_assert(refresh);
	/* A refresh that found the key revoked replaces the valid entry at once. */
	ck_assert_int_eq(ingest_authcache_put(c, h, NULL, 8600, 5000, 5000), 0);
	ck_assert_int_eq(ingest_authcache_get(c, h, 8600, 1000, NULL, &refresh),
			 INGEST_AUTHCACHE_INVALID);
	ck_assert_uint_eq(ingest_authcache_count(c, true), 0);
	ck_assert_uint_eq(ingest_authcache_count(c, false), 1);
	ingest_authcache_forget(c, h);
	ck_assert_int_eq(ingest_authcache_get(c, h, 8600, 1000, NULL, NULL), INGEST_AUTHCACHE_MISS);
	ingest_authcache_free(c);
}
END_TEST

START_TEST(test_cache_bad_keys_never_evict_good)
{
	ingest_authcache *c = NULL;
	uint8_t h[32];
	ingest_principal p;
	int i;

	ck_assert_int_eq(ingest_authcache_new(8, 4, &c), 0);
	for (i = 0; i < 8; i++) {
		p = principal(i);
		hash_of(i, h);
		ck_assert_int_eq(ingest_authcache_put(c, h, &p, 0, 10000, 10000), 0);
	}
	/* A flood of unknown keys churns only the negative side. */
	for (i = 1000; i < 3000; i++) {
		hash_of(i, h);
		ck_assert_int_eq(ingest_authcache_put(c, h, NULL, 0, 5000, 5000), 0);
		ck_assert_uint_le(ingest_authcache_count(c, false), 4);
	}
	ck_assert_uint_eq(ingest_authcache_count(c, true), 8);
	for (i = 0; i < 8; i++) {
		hash_of(i, h);
		ck_assert_int_eq(ingest_authcache_get(c, h, 1, 1000, &p, NULL), INGEST_AUTHCACHE_VALID);
		ck_assert_int_eq(p.period_anomalies, i);
	}
	/* The newest bad keys are the ones kept. */
	hash_of(2999, h);
	ck_assert_int_eq(ingest_authcache_get(c, h, 1, 1000, NULL, NULL), INGEST_AUTHCACHE_INVALID);
	hash_of(1000, h);
	ck_assert_int_eq(ingest_authcache_get(c, h, 1, 1000, NULL, NULL), INGEST_AUTHCACHE_MISS);
	ingest_authcache_free(c);
}
END_TEST

START_TEST(test_cache_lru_eviction)
{
	ingest_authcache *c = NULL;
	uint8_t h[32];
	ingest_principal p;
	int i;

	ck_assert_int_eq(ingest_authcache_new(3, 1, &c), 0);
	for (i = 0; i < 3; i++) {
		p = principal(i);
		hash_of(i, h);
		ck_assert_int_eq(ingest_authcache_put(c, h, &p, 0, 10000, 10000), 0);
	}
	/* Key 0 is used, so key 1 is the least recently used when key 3 arrives. */
	hash_of(0, h);
	ck_assert_int_eq(ingest_authcache_get(c, h, 1, 1000, NULL, NULL), INGEST_AUTHCACHE_VALID);
	p = principal(3);
	hash_of(3, h);
	ck_assert_int_eq(ingest_authcache_put(c, h, &p, 2, 10000, 10000), 0);
	ck_assert_uint_eq(ingest_authcache_count(c, true), 3);
	hash_of(1, h);
	ck_assert_int_eq(ingest_authcache_get(c, h, 3, 1000, NULL, NULL), INGEST_AUTHCACHE_MISS);
	for (i = 0; i < 4; i++) {
		if (i == 1)
			continue;
		hash_of(i, h);
		ck_assert_int_eq(ingest_authcache_get(c, h, 3, 1000, NULL, NULL),
				 INGEST_AUTHCACHE_VALID);
	}
	/* Replacing an entry does not grow the cache. */
	hash_of(0, h);
	p = principal(0);
	ck_assert_int_eq(ingest_authcache_put(c, h, &p, 4, 10000, 10000), 0);
	ck_assert_uint_eq(ingest_authcache_count(c, true), 3);
	ck_assert_int_eq(ingest_authcache_new(0, 1, &c), -EINVAL);
	ingest_authcache_free(c);
	ingest_authcache_free(NULL);
}
END_TEST

START_TEST(test_cache_many_keys)
{
	ingest_authcache *c = NULL;
	uint8_t h[32];
	ingest_principal p;
	int i, hits = 0;

	ck_assert_int_eq(ingest_authcache_new(1000, 250, &c), 0);
	for (i = 0; i < 5000; i++) {
		p = principal(i);
		hash_of(i, h);
		ck_assert_int_eq(ingest_authcache_put(c, h, &p, i, 10000, 10000), 0);
	}
	ck_assert_uint_eq(ingest_authcache_count(c, true), 1000);
	for (i = 0; i < 5000; i++) {
		hash_of(i, h);
		if (ingest_authcache_get(c, h, 5000, 1000, &p, NULL) == INGEST_AUTHCACHE_VALID) {
			ck_assert_int_eq(p.period_anomalies, i);
			ck_assert_int_ge(i, 4000);
			hits++;
		}
	}
	ck_assert_int_eq(hits, 1000);
	ingest_authcache_free(c);
}
END_TEST

static Suite *ingest_auth_suite(void)
{
	Suite *s = suite_create("ingest_auth");
	TCase *t = tcase_create("cache");
	tcase_add_test(t, test_cache_valid_invalid_expiry);
	tcase_add_test(t, test_cache_refresh_once);
	tcase_add_test(t, test_cache_bad_keys_never_evict_good);
	tcase_add_test(t, test_cache_lru_eviction);
	tcase_add_test(t, test_cache_many_keys);
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
