/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for cbad_json: fields and dotted paths, numbers, limits, and invalid bytes. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_json.h"

/* Scans a copy of s in a buffer of exactly its length, so that ASan catches any read past it. */
static int scan_exact(const char *s, size_t len, cbad_json_field *f, size_t max)
{
	char *b = malloc(len ? len : 1);
	int n;

	ck_assert_ptr_nonnull(b);
	memcpy(b, s, len);
	n = cbad_json_scan(b, len, f, max);
	free(b);
	return n;
}

START_TEST(test_fields_and_paths)
{
	const char *ev = " {\"host\":\"web-3\",\"cpu\":97.5,\"ok\":true,\"none\":null,"
			 "\"req\":{\"ms\":12,\"tags\":[1,{\"x\":2}],\"deep\":{\"a\":\"b\\\"c\"}},"
			 "\"n\":-2.5e3} ";
	cbad_json_field f[16];
	int n = cbad_json_scan(ev, strlen(ev), f, 16);

	ck_assert_int_eq(n, 7);
	ck_assert_str_eq(f[0].path, "host");
	ck_assert_int_eq(f[0].type, CBAD_JSON_STRING);
	ck_assert_int_eq(f[0].str_len, 5);
	ck_assert(memcmp(f[0].str, "web-3", 5) == 0);
	ck_assert_str_eq(f[1].path, "cpu");
	ck_assert_int_eq(f[1].type, CBAD_JSON_NUMBER);
	ck_assert(f[1].num == 97.5);
	ck_assert_str_eq(f[2].path, "ok");
	ck_assert_int_eq(f[2].type, CBAD_JSON_BOOL);
	ck_assert(f[2].num == 1.0);
	ck_assert_int_eq(f[3].type, CBAD_JSON_NULL);
	ck_assert_str_eq(f[4].path, "req.ms");
	ck_assert(f[4].num == 12.0);
	/* arrays are skipped, nested objects give dotted paths, escapes are kept raw */
	ck_assert_str_eq(f[5].path, "req.deep.a");
	ck_assert(f[5].escaped);
	ck_assert_int_eq(f[5].str_len, 4);
	ck_assert_str_eq(f[6].path, "n");
	ck_assert(f[6].num == -2500.0);
	ck_assert(f[1].path_hash == cbad_json_hash(CBAD_JSON_HASH_INIT, "cpu", 3));
}
END_TEST

START_TEST(test_numbers)
{
	static const struct {
		const char *text;
		double want;
	} cases[] = {
		{"0", 0.0},		 {"-0.05", -0.05},	 {"1.5", 1.5},	   {"1e3", 1000.0},
		{"2.5E-2", 0.025},	 {"123456789", 123456789.0}, {"0.001", 0.001},
		{"12345678901234567890123", 1.2345678901234568e22},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char ev[64];
		cbad_json_field f[1];
		int len = snprintf(ev, sizeof(ev), "{\"v\":%s}", cases[i].text);

		ck_assert_int_eq(cbad_json_scan(ev, (size_t)len, f, 1), 1);
		ck_assert_msg(f[0].num == cases[i].want ||
				      (f[0].num - cases[i].want) / cases[i].want < 1e-15,
			      "%s gave %.17g", cases[i].text, f[0].num);
		ck_assert_int_eq(f[0].str_len, strlen(cases[i].text));
	}
}
END_TEST

START_TEST(test_invalid)
{
	static const char *const bad[] = {
		"",	     "[]",	    "{",	 "{\"a\"}",	"{\"a\":}",   "{\"a\":1,}",
		"{\"a\":01}", "{\"a\":1.}", "{\"a\":-}",  "{\"a\":tru}", "{\"a\":1} x", "{\"a\":\"x}",
		"{\"a\":1 \"b\":2}", "{a:1}", "plain log line", "{\"a\":\"\x01\"}", "{\"a\":[1,2}",
	};
	cbad_json_field f[4];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(scan_exact(bad[i], strlen(bad[i]), f, 4) == -EINVAL, "accepted %s",
			      bad[i]);
	ck_assert_int_eq(cbad_json_scan(NULL, 3, f, 4), -EINVAL);
}
END_TEST

/* String ends: an escaped quote or backslash never ends a string, a lone backslash at the end
 * of the input or a control byte is refused, bytes >= 0x80 are plain. */
START_TEST(test_string_ends)
{
	static const char *const bad[] = {
		"{\"a\":\"x\\\"}", "{\"a\":\"x\\", "{\"a\":\"x\\\\", "{\"a\":\"\x1f\"}",
		"{\"a\":\"\n\"}",
	};
	const char *ok = "{\"a\":\"x\\\\\",\"b\":\"\xc3\xa9t\xc3\xa9\",\"c\":\"q\\\"\\\"\"}";
	cbad_json_field f[4];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(scan_exact(bad[i], strlen(bad[i]), f, 4) == -EINVAL, "accepted %s",
			      bad[i]);
	ck_assert_int_eq(scan_exact(ok, strlen(ok), f, 4), 3);
	ck_assert_int_eq(cbad_json_scan(ok, strlen(ok), f, 4), 3);
	ck_assert(f[0].escaped);
	ck_assert_int_eq(f[0].str_len, 3);
	ck_assert(!f[1].escaped);
	ck_assert_int_eq(f[1].str_len, 5);
	ck_assert(f[2].escaped);
	ck_assert_int_eq(f[2].str_len, 5);
	ck_assert(memcmp(f[2].str, "q\\\"\\\"", 5) == 0);
}
END_TEST

START_TEST(test_limits)
{
	char deep[1200], key[200], ev[400];
	cbad_json_field f[2];
	size_t o = 0;
	int n;

	/* nesting beyond the hard limit is refused, not recursed into */
	for (int i = 0; i < 500; i++)
		deep[o++] = '[';
	for (int i = 0; i < 500; i++)
		deep[o++] = ']';
	n = snprintf(ev, sizeof(ev), "{\"a\":");
	{
		char *big = malloc(o + 8);

		memcpy(big, ev, (size_t)n);
		memcpy(big + n, deep, o);
		big[n + o] = '}';
		ck_assert_int_eq(scan_exact(big, (size_t)n + o + 1, f, 2), -EINVAL);
		free(big);
	}
	/* a key too long for a path is skipped, the rest is kept; max is respected */
	memset(key, 'k', 100);
	key[100] = '\0';
	n = snprintf(ev, sizeof(ev), "{\"%s\":1,\"b\":2,\"c\":3,\"d\":4}", key);
	ck_assert_int_eq(cbad_json_scan(ev, (size_t)n, f, 2), 2);
	ck_assert_str_eq(f[0].path, "b");
	ck_assert_str_eq(f[1].path, "c");
}
END_TEST

START_TEST(test_random_bytes)
{
	/* mutations of a valid event: never a crash or a read out of bounds (ASan build) */
	const char *seed = "{\"a\":{\"b\":[1,2,{\"c\":\"d\\u00e9\"}],\"e\":-1.5e-3},\"f\":true}";
	size_t len = strlen(seed);
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	char buf[128];
	cbad_json_field f[8];
	int valid = 0;

	for (int it = 0; it < 20000; it++) {
		size_t n = len;

		memcpy(buf, seed, len);
		for (int m = 0; m < 3; m++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			if (x % 3 == 0 && n > 1)
				n = 1 + (size_t)(x >> 8) % (n - 1);
			else
				buf[(x >> 16) % n] = (char)(x >> 40);
		}
		valid += scan_exact(buf, n, f, 8) >= 0;
	}
	ck_assert_int_gt(valid, 0); /* some mutations stay valid JSON */
	ck_assert_int_lt(valid, 20000);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cbad_json");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_fields_and_paths);
	tcase_add_test(tc, test_numbers);
	tcase_add_test(tc, test_invalid);
	tcase_add_test(tc, test_string_ends);
	tcase_add_test(tc, test_limits);
	tcase_add_test(tc, test_random_bytes);
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
