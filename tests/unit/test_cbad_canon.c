/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_canon: masking of volatile tokens, template ids and redaction of secrets. */
#include <check.h>
#include <string.h>

#include "services/detector/cbad/cbad.h"
#include "services/detector/cbad/cbad_canon.h"

static const char *mask_all(const char *in)
{
	static char out[1024];
	size_t n = cbad_canon_mask(in, strlen(in), CBAD_MASK_ALL, out, sizeof(out) - 1);

	ck_assert_uint_le(n, strlen(in));
	out[n] = '\0';
	return out;
}

static const char *redact(const char *in)
{
	static char out[1024];

	cbad_canon_redact(in, strlen(in), out, sizeof(out));
	return out;
}

START_TEST(test_mask_kinds)
{
	ck_assert_str_eq(mask_all("{\"ts\":\"2024-03-12T13:29:36.085Z\",\"n\":3}"),
			 "{\"ts\":\"<T>\",\"n\":3}");
	ck_assert_str_eq(mask_all("at 2024-03-12 13:29:36,123 INFO"), "at <T> INFO");
	ck_assert_str_eq(mask_all("id=550e8400-e29b-41d4-a716-446655440000 ok"), "id=<U> ok");
	ck_assert_str_eq(mask_all("f47ac10b-58cc-4372-a567-0e02b2c3d479"), "<U>");
	ck_assert_str_eq(mask_all("user u086840"), "user u#");
	ck_assert_str_eq(mask_all("txn tx_32ede808141a0c8c done"), "txn tx_<H> done");
	ck_assert_str_eq(mask_all("from 62.97.23.98 and 10.0.0.1:8080"), "from <IP> and <IP>");
	ck_assert_str_eq(mask_all("mail bob.smith@example.com now"), "mail <E> now");
	ck_assert_str_eq(mask_all("order 4490498 for u_01281 took 33 ms"),
			 "order # for u_# took 33 ms");
	/* Small counts and words stay: they carry meaning. */
	ck_assert_str_eq(mask_all("status 200 retry 3 deadbeef"), "status 200 retry 3 deadbeef");
	ck_assert_str_eq(mask_all("version 1.2.3"), "version 1.2.3");
	/* Words without digits take the copy path; the kinds they can still be are masked. */
	ck_assert_str_eq(mask_all("id abcdefab-abcd-abcd-abcd-abcdefabcdef end"), "id <U> end");
	ck_assert_str_eq(mask_all("to ops@example.org and first-last_name.x:y+z"),
			 "to <E> and first-last_name.x:y+z");
	ck_assert_str_eq(mask_all("{\"k\":\"some-long-value-without-any-digit-at-all\",\"b\":true}"),
			 "{\"k\":\"some-long-value-without-any-digit-at-all\",\"b\":true}");
}
END_TEST

START_TEST(test_mask_json_numbers)
{
	/* In JSON, measurements (a fraction, an exponent, or 4+ digits) outside strings become
	 * "#"; small integers stay, and numbers inside strings follow the text rules. */
	ck_assert_str_eq(mask_all("{\"value\":23.5}"), "{\"value\":#}");
	ck_assert_str_eq(mask_all("{\"a\": -0.1e5, \"b\":[1.5,2], \"s\":200}"),
			 "{\"a\": #, \"b\":[#,2], \"s\":200}");
	ck_assert_str_eq(mask_all("{\"m\":\"took 1.5 s\",\"n\":1.5}"),
			 "{\"m\":\"took 1.5 s\",\"n\":#}");
	/* An escaped quote does not end a string. */
	ck_assert_str_eq(mask_all("{\"m\":\"a\\\" 2.5\",\"n\":2.5}"),
			 "{\"m\":\"a\\\" 2.5\",\"n\":#}");
	/* A plain line is text, not JSON; without CBAD_MASK_NUMBERS nothing is masked. */
	ck_assert_str_eq(mask_all("took 23.5 ms"), "took 23.5 ms");
	{
		char out[64];
		const char *in = "{\"value\":23.5}";
		size_t n = cbad_canon_mask(in, strlen(in), CBAD_MASK_ALL & ~CBAD_MASK_NUMBERS, out,
					   sizeof(out) - 1);

		out[n] = '\0';
		ck_assert_str_eq(out, in);
	}
}
END_TEST

START_TEST(test_mask_bits_respected)
{
	char out[128];
	const char *in = "ip 62.97.23.98 id 4490498";
	size_t n = cbad_canon_mask(in, strlen(in), 0, out, sizeof(out));

	ck_assert_uint_eq(n, strlen(in));
	ck_assert_int_eq(memcmp(out, in, n), 0);
	n = cbad_canon_mask(in, strlen(in), CBAD_MASK_IPS, out, sizeof(out));
	out[n] = '\0';
	ck_assert_str_eq(out, "ip <IP> id 4490498");
	/* A short output buffer truncates without overflowing. */
	n = cbad_canon_mask(in, strlen(in), CBAD_MASK_ALL, out, 5);
	ck_assert_uint_le(n, 5);
}
END_TEST

START_TEST(test_mask_truncates_to_prefix)
{
	/* Words of every length near the ends of both buffers (the word copy's fast path): a
	 * truncated form is the full form cut at the capacity, and no byte past it is written. */
	static const char in[] = "{\"msg\":\"a bb ccc dddddddddddddddd eeeeeeeeeeeeeeeee id=42 "
				 "x 2024-05-01T10:00:00Z 10.0.0.1 deadbeef01 ok\",\"n\":12.5}";
	char full[sizeof(in)], part[sizeof(in) + 1];
	size_t n = cbad_canon_mask(in, sizeof(in) - 1, CBAD_MASK_ALL, full, sizeof(full));

	/* The form is not NUL-terminated: compare its last 19 bytes. */
	ck_assert_uint_ge(n, 19);
	ck_assert_mem_eq(full + n - 19, "<IP> <H> ok\",\"n\":#}", 19);
	for (size_t cap = 0; cap <= sizeof(in) - 1; cap++) {
		memset(part, 0x7f, sizeof(part));
		size_t m = cbad_canon_mask(in, sizeof(in) - 1, CBAD_MASK_ALL, part, cap);

		ck_assert_uint_eq(m, cap < n ? cap : n);
		ck_assert_mem_eq(part, full, m);
		for (size_t k = cap; k < sizeof(part); k++)
			ck_assert_int_eq(part[k], 0x7f);
	}
}
END_TEST

START_TEST(test_template_ignores_numbers)
{
	const char *a = "GET /orders/12 -> 200 in 33 ms";
	const char *b = "GET /orders/97 -> 200 in 1045 ms";
	const char *c = "GET /orders/97 -> ERR in 1045 ms";

	ck_assert_uint_eq(cbad_canon_template(a, strlen(a)), cbad_canon_template(b, strlen(b)));
	ck_assert_uint_ne(cbad_canon_template(a, strlen(a)), cbad_canon_template(c, strlen(c)));
	ck_assert_uint_ne(cbad_canon_template("", 0), 0);
}
END_TEST

/* The template id is the 64-bit FNV-1a of the form with its ASCII digits dropped (ids are
 * stable across versions: the rate channel reports them), whatever the bytes and length. */
START_TEST(test_template_is_fnv_without_digits)
{
	uint64_t x = 42;
	char buf[300];

	for (int t = 0; t < 20000; t++) {
		size_t len = (size_t)(t % 300);
		uint64_t h = 0xcbf29ce484222325ull;

		for (size_t i = 0; i < len; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			/* mostly letters, some digits, now and then any byte */
			buf[i] = (char)((x >> 60) == 0 ? (x >> 24) & 0xff
				       : (x >> 60) < 4 ? '0' + (x >> 33) % 10 : 'a' + (x >> 33) % 26);
			if (!(buf[i] >= '0' && buf[i] <= '9'))
				h = (h ^ (unsigned char)buf[i]) * 0x100000001b3ull;
		}
		ck_assert_uint_eq(cbad_canon_template(buf, len), h ? h : 1);
	}
}
END_TEST

START_TEST(test_redact_secrets)
{
	ck_assert_str_eq(redact("login password=hunter2 ok"), "login password=[REDACTED] ok");
	ck_assert_str_eq(redact("{\"api_key\":\"abc123xyz\"}"), "{\"api_key\":\"[REDACTED]\"}");
	ck_assert_str_eq(redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc"),
			 "Authorization: [REDACTED]");
	ck_assert_str_eq(redact("use Bearer abcdefgh12345678 now"), "use Bearer [REDACTED] now");
	ck_assert_str_eq(redact("key AKIAIOSFODNN7EXAMPLE here"), "key [REDACTED] here");
	ck_assert_str_eq(redact("tok sk-live-4f9a8b7c6d5e4f3a2b1c"), "tok [REDACTED]");
	ck_assert_str_eq(redact("x aB3dE5gH7jK9mN1pQ3sT5vX7 y"), "x [REDACTED] y");
	ck_assert_str_eq(redact("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----!"),
			 "[REDACTED]!");
}
END_TEST

START_TEST(test_redact_personal)
{
	ck_assert_str_eq(redact("mail bob.smith@example.com now"), "mail [EMAIL] now");
	/* 4111 1111 1111 1111 passes Luhn; the same with the last digit changed does not. */
	ck_assert_str_eq(redact("card 4111 1111 1111 1111 ok"), "card [CARD] ok");
	ck_assert_str_eq(redact("card 4111111111111111"), "card [CARD]");
	ck_assert_str_eq(redact("ref 4111111111111112"), "ref 4111111111111112");
	/* IPs and ordinary ids stay: operators need them. */
	ck_assert_str_eq(redact("from 62.97.23.98 user u_01281 req chatcmpl-6f6ea422b4871346dc07e1fd"),
			 "from 62.97.23.98 user u_01281 req chatcmpl-6f6ea422b4871346dc07e1fd");
}
END_TEST

START_TEST(test_redact_truncates)
{
	char out[8];
	size_t n = cbad_canon_redact("password=hunter2 and more", 25, out, sizeof(out));

	ck_assert_uint_le(n, 7);
	ck_assert_uint_eq(strlen(out), n);
	ck_assert_ptr_null(strstr(out, "hunter"));
}
END_TEST

int main(void)
{
	Suite *su = suite_create("cbad_canon");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_mask_kinds);
	tcase_add_test(tc, test_mask_json_numbers);
	tcase_add_test(tc, test_mask_bits_respected);
	tcase_add_test(tc, test_mask_truncates_to_prefix);
	tcase_add_test(tc, test_template_ignores_numbers);
	tcase_add_test(tc, test_template_is_fnv_without_digits);
	tcase_add_test(tc, test_redact_secrets);
	tcase_add_test(tc, test_redact_personal);
	tcase_add_test(tc, test_redact_truncates);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
