/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for dl_apikey: the key format, where requests carry it, and its keyed hash. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_apikey.h"
#include "common/dl_id.h"

static const char SECRET[] = "0123456789abcdef0123456789abcdef";
static const char KEY1[] = "dlk_0000000000000000000000000000000000000000001";

/* ---------------------------------------------------------------- key format */

START_TEST(test_new_key_format)
{
	char a[DL_APIKEY_LEN + 1], b[DL_APIKEY_LEN + 1];

	ck_assert_int_eq(dl_apikey_new(a, sizeof(a)), 0);
	ck_assert_int_eq(dl_apikey_new(b, sizeof(b)), 0);
	ck_assert_uint_eq(strlen(a), DL_APIKEY_LEN);
	ck_assert(strncmp(a, "dlk_", 4) == 0);
	ck_assert(dl_apikey_well_formed(a));
	ck_assert_str_ne(a, b);
	/* At least 160 random bits: 43 base62 characters carry 256. */
	ck_assert_uint_eq(dl_id_random_token_len(DL_APIKEY_RANDOM_BYTES), DL_APIKEY_LEN - 4);
	ck_assert_int_ge(DL_APIKEY_RANDOM_BYTES * 8, 160);
	ck_assert_int_eq(dl_apikey_new(a, DL_APIKEY_LEN), -ENOSPC);
}
END_TEST

START_TEST(test_well_formed)
{
	char k[64];

	ck_assert(dl_apikey_well_formed(KEY1));
	ck_assert(!dl_apikey_well_formed(NULL));
	ck_assert(!dl_apikey_well_formed(""));
	ck_assert(!dl_apikey_well_formed("dlk_"));
	ck_assert(!dl_apikey_well_formed("dlx_0000000000000000000000000000000000000000001"));
	ck_assert(!dl_apikey_well_formed("dlk_000000000000000000000000000000000000000001"));
	ck_assert(!dl_apikey_well_formed("dlk_00000000000000000000000000000000000000000012"));
	strcpy(k, KEY1);
	k[20] = '-';
	ck_assert(!dl_apikey_well_formed(k));
	k[20] = ' ';
	ck_assert(!dl_apikey_well_formed(k));
}
END_TEST

START_TEST(test_from_headers)
{
	char out[DL_APIKEY_LEN + 1], bearer[128], spaced[128];

	snprintf(bearer, sizeof(bearer), "Bearer %s", KEY1);
	ck_assert_int_eq(dl_apikey_from_headers(bearer, NULL, out, sizeof(out)), 0);
	ck_assert_str_eq(out, KEY1);
	snprintf(spaced, sizeof(spaced), "  bearer \t %s  ", KEY1);
	memset(out, 0, sizeof(out));
	ck_assert_int_eq(dl_apikey_from_headers(spaced, NULL, out, sizeof(out)), 0);
	ck_assert_str_eq(out, KEY1);
	memset(out, 0, sizeof(out));
	ck_assert_int_eq(dl_apikey_from_headers(NULL, KEY1, out, sizeof(out)), 0);
	ck_assert_str_eq(out, KEY1);
	/* Authorization wins over X-Api-Key. */
	ck_assert_int_eq(dl_apikey_from_headers("Bearer garbage", KEY1, out, sizeof(out)),
			 -EINVAL);
	/* Missing: nothing, or only blanks. */
	ck_assert_int_eq(dl_apikey_from_headers(NULL, NULL, out, sizeof(out)), -ENOENT);
	ck_assert_int_eq(dl_apikey_from_headers("  ", " ", out, sizeof(out)), -ENOENT);
	/* Present but not a key. */
	ck_assert_int_eq(dl_apikey_from_headers("Basic dXNlcjpwdw==", NULL, out, sizeof(out)),
			 -EINVAL);
	ck_assert_int_eq(dl_apikey_from_headers("Bearer", NULL, out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(dl_apikey_from_headers(NULL, "dlk_short", out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(dl_apikey_from_headers(KEY1, NULL, out, sizeof(out)), -EINVAL);
	/* A buffer too small is refused, never overrun. */
	strcpy(out, "untouched");
	ck_assert_int_eq(dl_apikey_from_headers(NULL, KEY1, out, DL_APIKEY_LEN), -EINVAL);
	ck_assert_str_eq(out, "untouched");
}
END_TEST

START_TEST(test_display_prefix)
{
	char p[DL_APIKEY_DISPLAY_LEN + 1];

	ck_assert_int_eq(dl_apikey_display_prefix(KEY1, p, sizeof(p)), 0);
	ck_assert_str_eq(p, "dlk_00000000");
	ck_assert_int_eq(dl_apikey_display_prefix("nope", p, sizeof(p)), -EINVAL);
	ck_assert_int_eq(dl_apikey_display_prefix(KEY1, p, 5), -ENOSPC);
}
END_TEST

/* ---------------------------------------------------------------- hash */

static void hex(const uint8_t *h, char out[65])
{
	ck_assert_int_eq(dl_id_hex(h, DL_APIKEY_HASH_LEN, out, 65), 0);
}

START_TEST(test_hash_known_vector)
{
	dl_apikey_hasher *h = NULL, *h2 = NULL;
	uint8_t a[DL_APIKEY_HASH_LEN], b[DL_APIKEY_HASH_LEN];
	char x[65], err[128], bytea[67];
	char other[] = "0123456789abcdef0123456789abcdeX";

	ck_assert_int_eq(dl_apikey_hasher_new(SECRET, strlen(SECRET), err, sizeof(err), &h), 0);
	/* HMAC-SHA-256(secret, key), as Python's hmac module computes it. */
	ck_assert_int_eq(dl_apikey_hash(h, KEY1, strlen(KEY1), a), 0);
	hex(a, x);
	ck_assert_str_eq(x, "948c90068e35b3c9538ae37d162fd3fac89becc00c4ac36b8f5135098bf646c8");
	/* The hasher is re-keyed with the same secret for every hash. */
	ck_assert_int_eq(dl_apikey_hash(h, "other", 5, b), 0);
	ck_assert_int_eq(dl_apikey_hash(h, KEY1, strlen(KEY1), b), 0);
	ck_assert(dl_apikey_hash_equal(a, b));
	/* Another secret gives another hash. */
	ck_assert_int_eq(dl_apikey_hasher_new(other, strlen(other), err, sizeof(err), &h2), 0);
	ck_assert_int_eq(dl_apikey_hash(h2, KEY1, strlen(KEY1), b), 0);
	hex(b, x);
	ck_assert_str_eq(x, "0d839fa4c5a4dbc30b9fa346d3273c4ed9234cfca1067e5927b912dc51e07b7b");
	ck_assert(!dl_apikey_hash_equal(a, b));
	dl_apikey_hash_bytea(a, bytea);
	ck_assert_str_eq(bytea,
			 "\\x948c90068e35b3c9538ae37d162fd3fac89becc00c4ac36b8f5135098bf646c8");
	dl_apikey_hasher_free(h);
	dl_apikey_hasher_free(h2);
	dl_apikey_hasher_free(NULL);
}
END_TEST

START_TEST(test_hash_short_secret)
{
	dl_apikey_hasher *h = NULL;
	char err[128] = "";

	ck_assert_int_eq(dl_apikey_hasher_new(SECRET, 31, err, sizeof(err), &h), -EINVAL);
	ck_assert_ptr_null(h);
	ck_assert_ptr_nonnull(strstr(err, "32 bytes"));
	ck_assert_int_eq(dl_apikey_hasher_new(NULL, 0, err, sizeof(err), &h), -EINVAL);
}
END_TEST

static Suite *dl_apikey_suite(void)
{
	Suite *s = suite_create("dl_apikey");
	TCase *t = tcase_create("apikey");

	tcase_add_test(t, test_new_key_format);
	tcase_add_test(t, test_well_formed);
	tcase_add_test(t, test_from_headers);
	tcase_add_test(t, test_display_prefix);
	tcase_add_test(t, test_hash_known_vector);
	tcase_add_test(t, test_hash_short_secret);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(dl_apikey_suite());
	int failed;

	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
