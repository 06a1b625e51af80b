/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for dl_id: UUIDv7 format and ordering, UUIDv8 derivation, checks and tokens. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/dl_id.h"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

START_TEST(test_new_format)
{
	char id[DL_ID_UUID_LEN + 1];
	int64_t before = now_ms(), after, ms;

	ck_assert_int_eq(dl_id_new(id), 0);
	after = now_ms();
	ck_assert_uint_eq(strlen(id), DL_ID_UUID_LEN);
	ck_assert(dl_id_is_uuid(id));
	ck_assert_int_eq(id[14], '7');
	ck_assert_ptr_nonnull(strchr("89ab", id[19]));
	for (size_t i = 0; i < DL_ID_UUID_LEN; i++)
		ck_assert_msg(id[i] == '-' || (id[i] >= '0' && id[i] <= '9') ||
			      (id[i] >= 'a' && id[i] <= 'f'), "not lowercase hex: %s", id);
	ms = dl_id_uuid7_ms(id);
	/* The timestamp is the wall clock, or at most a little ahead of it when earlier calls
	 * in this process exhausted a millisecond's sequence. */
	ck_assert_int_ge(ms, before);
	ck_assert_int_le(ms, after + 5);
}
END_TEST

START_TEST(test_new_strictly_increasing)
{
	enum { N = 200000 };
	char (*ids)[DL_ID_UUID_LEN + 1] = malloc(sizeof(*ids) * N);

	ck_assert_ptr_nonnull(ids);
	for (size_t i = 0; i < N; i++)
		ck_assert_int_eq(dl_id_new(ids[i]), 0);
	for (size_t i = 1; i < N; i++)
		ck_assert_msg(strcmp(ids[i - 1], ids[i]) < 0, "id %zu not after %zu: %s <= %s", i,
			      i - 1, ids[i], ids[i - 1]);
	/* 200000 ids take far less than 200000 ms, so many shared a millisecond. */
	ck_assert_int_lt(dl_id_uuid7_ms(ids[N - 1]) - dl_id_uuid7_ms(ids[0]), N);
	free(ids);
}
END_TEST

enum { THREADS = 4, PER_THREAD = 20000 };
static char thread_ids[THREADS * PER_THREAD][DL_ID_UUID_LEN + 1];

static void *make_ids(void *arg)
{
	size_t t = (size_t)arg;

	for (size_t i = 0; i < PER_THREAD; i++) {
		if (dl_id_new(thread_ids[t * PER_THREAD + i]) != 0)
			return (void *)1;
	}
	return NULL;
}

START_TEST(test_new_threads_unique_and_ordered)
{
	pthread_t th[THREADS];

	for (size_t t = 0; t < THREADS; t++)
		ck_assert_int_eq(pthread_create(&th[t], NULL, make_ids, (void *)t), 0);
	for (size_t t = 0; t < THREADS; t++) {
		void *res;

		ck_assert_int_eq(pthread_join(th[t], &res), 0);
		ck_assert_ptr_null(res);
	}
	for (size_t t = 0; t < THREADS; t++) {
		for (size_t i = 1; i < PER_THREAD; i++)
			ck_assert(strcmp(thread_ids[t * PER_THREAD + i - 1],
					 thread_ids[t * PER_THREAD + i]) < 0);
	}
	qsort(thread_ids, THREADS * PER_THREAD, sizeof(thread_ids[0]), cmp_str);
	for (size_t i = 1; i < THREADS * PER_THREAD; i++)
		ck_assert_str_ne(thread_ids[i - 1], thread_ids[i]);
}
END_TEST

START_TEST(test_derive_known_answer)
{
	char id[DL_ID_UUID_LEN + 1];

	/* Computed independently with Python:
	 *   h = bytearray(hashlib.sha256(ns + b"\x00" + data).digest()[:16])
	 *   h[6] = (h[6] & 0x0f) | 0x80; h[8] = (h[8] & 0x3f) | 0x80
	 * and printed 8-4-4-4-12 in lowercase hex. */
	dl_id_derive("driftlock.anomaly", "org:stream:evt-1", strlen("org:stream:evt-1"), id);
	ck_assert_str_eq(id, "2f9d9c42-ce83-85cb-bf7d-3d7ba7de811b");
	dl_id_derive("", NULL, 0, id);
	ck_assert_str_eq(id, "6e340b9c-ffb3-8a98-9ca5-44e6bb780a2c");
	dl_id_derive(NULL, NULL, 0, id);
	ck_assert_str_eq(id, "6e340b9c-ffb3-8a98-9ca5-44e6bb780a2c");
}
END_TEST

START_TEST(test_derive_deterministic_and_namespaced)
{
	char a[DL_ID_UUID_LEN + 1], b[DL_ID_UUID_LEN + 1], c[DL_ID_UUID_LEN + 1];
	char d[DL_ID_UUID_LEN + 1], e[DL_ID_UUID_LEN + 1];
	const unsigned char bin[] = { 0x00, 0xff, 0x10, 0x00 };

	dl_id_derive("ns1", "payload", 7, a);
	dl_id_derive("ns1", "payload", 7, b);
	ck_assert_str_eq(a, b);
	dl_id_derive("ns2", "payload", 7, c);
	ck_assert_str_ne(a, c);
	/* The 0x00 separator keeps "a"+"bc" apart from "ab"+"c". */
	dl_id_derive("a", "bc", 2, d);
	dl_id_derive("ab", "c", 1, e);
	ck_assert_str_ne(d, e);
	/* Binary data with NUL bytes is hashed by length, not as a string. */
	dl_id_derive("ns1", bin, sizeof(bin), d);
	dl_id_derive("ns1", bin, 1, e);
	ck_assert_str_ne(d, e);
	ck_assert(dl_id_is_uuid(a));
	ck_assert_int_eq(a[14], '8');
	ck_assert_ptr_nonnull(strchr("89ab", a[19]));
	ck_assert_int_eq(dl_id_uuid7_ms(a), -EINVAL);
}
END_TEST

START_TEST(test_is_uuid)
{
	ck_assert(dl_id_is_uuid("01890a5d-ac96-774b-bcce-b302099a8057"));
	ck_assert(dl_id_is_uuid("01890A5D-AC96-774B-BCCE-B302099A8057"));
	ck_assert(dl_id_is_uuid("00000000-0000-0000-0000-000000000000"));
	ck_assert(!dl_id_is_uuid(NULL));
	ck_assert(!dl_id_is_uuid(""));
	ck_assert(!dl_id_is_uuid("01890a5d-ac96-774b-bcce-b302099a805"));
	ck_assert(!dl_id_is_uuid("01890a5d-ac96-774b-bcce-b302099a80577"));
	ck_assert(!dl_id_is_uuid("01890a5dac96-774b-bcce-b302099a8057-"));
	ck_assert(!dl_id_is_uuid("01890a5d-ac96-774b-bcce-b302099a805g"));
	ck_assert(!dl_id_is_uuid("{1890a5d-ac96-774b-bcce-b302099a8057"));
	ck_assert(!dl_id_is_uuid("01890a5d_ac96_774b_bcce_b302099a8057"));
}
END_TEST

START_TEST(test_uuid7_ms)
{
	/* 0x01890a5dac96 = 1688096058518 ms = 2023-06-30T03:34:18.518Z */
	ck_assert_int_eq(dl_id_uuid7_ms("01890a5d-ac96-774b-bcce-b302099a8057"), 1688096058518LL);
	ck_assert_int_eq(dl_id_uuid7_ms("01890A5D-AC96-774B-BCCE-B302099A8057"), 1688096058518LL);
	/* version 4, wrong variant, not a uuid */
	ck_assert_int_eq(dl_id_uuid7_ms("01890a5d-ac96-474b-bcce-b302099a8057"), -EINVAL);
	ck_assert_int_eq(dl_id_uuid7_ms("01890a5d-ac96-774b-7cce-b302099a8057"), -EINVAL);
	ck_assert_int_eq(dl_id_uuid7_ms("evt-1"), -EINVAL);
	ck_assert_int_eq(dl_id_uuid7_ms(NULL), -EINVAL);
}
END_TEST

START_TEST(test_is_valid_token)
{
	char s[DL_ID_TOKEN_MAX + 2];

	ck_assert(dl_id_is_valid_token("a", DL_ID_TOKEN_MAX));
	ck_assert(dl_id_is_valid_token("Evt_1.2:3-x", DL_ID_TOKEN_MAX));
	ck_assert(!dl_id_is_valid_token("", DL_ID_TOKEN_MAX));
	ck_assert(!dl_id_is_valid_token(NULL, DL_ID_TOKEN_MAX));
	ck_assert(!dl_id_is_valid_token("a b", DL_ID_TOKEN_MAX));
	ck_assert(!dl_id_is_valid_token("a/b", DL_ID_TOKEN_MAX));
	ck_assert(!dl_id_is_valid_token("caf\xc3\xa9", DL_ID_TOKEN_MAX));
	ck_assert(!dl_id_is_valid_token("a\nb", DL_ID_TOKEN_MAX));
	memset(s, 'x', DL_ID_TOKEN_MAX);
	s[DL_ID_TOKEN_MAX] = '\0';
	ck_assert(dl_id_is_valid_token(s, DL_ID_TOKEN_MAX));
	s[DL_ID_TOKEN_MAX] = 'x';
	s[DL_ID_TOKEN_MAX + 1] = '\0';
	ck_assert(!dl_id_is_valid_token(s, DL_ID_TOKEN_MAX));
	ck_assert(dl_id_is_valid_token("abc", 3));
	ck_assert(!dl_id_is_valid_token("abcd", 3));
}
END_TEST

START_TEST(test_hex)
{
	const unsigned char data[] = { 0x00, 0x01, 0xab, 0xff };
	char out[9];
	char small[8] = "keep";

	ck_assert_int_eq(dl_id_hex(data, sizeof(data), out, sizeof(out)), 0);
	ck_assert_str_eq(out, "0001abff");
	ck_assert_int_eq(dl_id_hex(data, sizeof(data), small, sizeof(small)), -ENOSPC);
	ck_assert_str_eq(small, "keep");
	ck_assert_int_eq(dl_id_hex(data, 0, out, 1), 0);
	ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_random_token)
{
	char a[64], b[64];
	char small[20] = "keep";
	const char *alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

	/* smallest L with 62^L >= 256^n, checked with Python integers */
	ck_assert_uint_eq(dl_id_random_token_len(1), 2);
	ck_assert_uint_eq(dl_id_random_token_len(16), 22);
	ck_assert_uint_eq(dl_id_random_token_len(24), 33);
	ck_assert_uint_eq(dl_id_random_token_len(32), 43);
	ck_assert_uint_eq(dl_id_random_token_len(64), 86);

	ck_assert_int_eq(dl_id_random_token("dlk_live_", 32, a, sizeof(a)), 0);
	ck_assert_uint_eq(strlen(a), strlen("dlk_live_") + 43);
	ck_assert_int_eq(strncmp(a, "dlk_live_", 9), 0);
	ck_assert_uint_eq(strspn(a + 9, alphabet), 43);
	ck_assert_int_eq(dl_id_random_token("dlk_live_", 32, b, sizeof(b)), 0);
	ck_assert_str_ne(a, b);

	ck_assert_int_eq(dl_id_random_token(NULL, 16, a, 23), 0);
	ck_assert_uint_eq(strlen(a), 22);
	ck_assert_int_eq(dl_id_random_token(NULL, 16, small, sizeof(small)), -ENOSPC);
	ck_assert_str_eq(small, "keep");
	ck_assert_int_eq(dl_id_random_token("p", 0, a, sizeof(a)), -EINVAL);
	ck_assert_int_eq(dl_id_random_token("p", 65, a, sizeof(a)), -EINVAL);
}
END_TEST

static Suite *dl_id_suite(void)
{
	Suite *s = suite_create("dl_id");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_new_format);
	tcase_add_test(tc, test_new_strictly_increasing);
	tcase_add_test(tc, test_new_threads_unique_and_ordered);
	tcase_add_test(tc, test_derive_known_answer);
	tcase_add_test(tc, test_derive_deterministic_and_namespaced);
	tcase_add_test(tc, test_is_uuid);
	tcase_add_test(tc, test_uuid7_ms);
	tcase_add_test(tc, test_is_valid_token);
	tcase_add_test(tc, test_hex);
	tcase_add_test(tc, test_random_token);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dl_id_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
