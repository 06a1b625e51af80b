/* SPDX-License-Identifier: Apache-2.0 */
/* Check suite for ingest_sse_frame: SSE frames, resumable cursors and the buffer policy. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/ingest/ingest_sse_frame.h"

static char *frame(const char *id, const char *event, const char *data, size_t len)
{
	char *out = NULL;
	size_t n = 0;

	ck_assert_int_eq(ingest_sse_frame_format(id, event, data, len, &out, &n), 0);
	ck_assert_uint_eq(n, strlen(out));
	return out;
}

START_TEST(test_frame_fields)
{
	const char *json = "{\"id\":\"a1\",\"score\":2.5}";
	char *f = frame("1764179707402.a1", "anomaly", json, strlen(json));

	ck_assert_str_eq(f, "id: 1764179707402.a1\nevent: anomaly\n"
			    "data: {\"id\":\"a1\",\"score\":2.5}\n\n");
	free(f);
	f = frame(NULL, NULL, "", 0);
	ck_assert_str_eq(f, "data: \n\n");
	free(f);
	f = frame(NULL, "replay_truncated", "{}", 2);
	ck_assert_str_eq(f, "event: replay_truncated\ndata: {}\n\n");
	free(f);
}
END_TEST

/* A newline inside data must not end the frame or start a forged field. */
START_TEST(test_frame_splits_lines)
{
	const char *evil = "a\n\nid: 999\r\nevent: x\rb\n";
	char *f = frame("1.x", "anomaly", evil, strlen(evil));

	ck_assert_str_eq(f, "id: 1.x\nevent: anomaly\n"
			    "data: a\ndata: \ndata: id: 999\ndata: event: x\ndata: b\ndata: \n\n");
	/* Exactly one blank line, at the end. */
	ck_assert_ptr_eq(strstr(f, "\n\n"), f + strlen(f) - 2);
	free(f);
}
END_TEST

START_TEST(test_frame_rejects_bad_fields)
{
	char *out = (char *)0x1;
	size_t n = 7;

	ck_assert_int_eq(ingest_sse_frame_format("1.a\n", NULL, "x", 1, &out, &n), -EINVAL);
	ck_assert_int_eq(ingest_sse_frame_format(NULL, "an\romaly", "x", 1, &out, &n), -EINVAL);
	ck_assert_int_eq(ingest_sse_frame_format(NULL, NULL, NULL, 3, &out, &n), -EINVAL);
	ck_assert_ptr_eq(out, (char *)0x1);
	ck_assert_uint_eq(n, 7);
}
END_TEST

START_TEST(test_cursor_round_trip_and_order)
{
	ingest_sse_key a = { 1764179707402, "5f0c1a2b-3c4d-8e5f-9a6b-7c8d9e0f1a2b" }, b, c;
	char text[INGEST_SSE_CURSOR_MAX + 1];

	ck_assert_int_eq(ingest_sse_cursor_format(&a, text, sizeof(text)), 0);
	ck_assert_str_eq(text, "1764179707402.5f0c1a2b-3c4d-8e5f-9a6b-7c8d9e0f1a2b");
	ck_assert_int_eq(ingest_sse_cursor_parse(text, &b), 0);
	ck_assert_int_eq(b.ms, a.ms);
	ck_assert_str_eq(b.id, a.id);
	ck_assert_int_eq(ingest_sse_key_cmp(&a, &b), 0);
	/* An id may itself contain dots: only the first one separates. */
	ck_assert_int_eq(ingest_sse_cursor_parse("0.a.b.c", &c), 0);
	ck_assert_int_eq(c.ms, 0);
	ck_assert_str_eq(c.id, "a.b.c");
	ck_assert_int_lt(ingest_sse_key_cmp(&c, &a), 0);
	/* Same time: bytewise by id ("B" < "a" as in COLLATE "C"). */
	b = a;
	snprintf(b.id, sizeof(b.id), "B");
	c = a;
	snprintf(c.id, sizeof(c.id), "a");
	ck_assert_int_lt(ingest_sse_key_cmp(&b, &c), 0);
	ck_assert_int_gt(ingest_sse_key_cmp(&c, &b), 0);
	b.ms = a.ms + 1;
	ck_assert_int_gt(ingest_sse_key_cmp(&b, &c), 0);
}
END_TEST

START_TEST(test_cursor_rejects)
{
	static const char *const bad[] = {
		"", ".", "12", "12.", ".abc", "-1.a", "1 .a", "x1.a", "1.a b", "1.a\n",
		"12345678901234567890.a", /* 20 digits */
		"9223372036854775808.a",  /* 2^63 */
		"1.é",
	};
	ingest_sse_key k = { 42, "keep" };
	char id129[140], text[INGEST_SSE_CURSOR_MAX + 1];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(ingest_sse_cursor_parse(bad[i], &k) == -EINVAL, "accepted %s", bad[i]);
		ck_assert_int_eq(k.ms, 42);
	}
	ck_assert_int_eq(ingest_sse_cursor_parse(NULL, &k), -EINVAL);
	ck_assert_int_eq(ingest_sse_cursor_parse("9223372036854775807.a", &k), 0);
	ck_assert_int_eq(k.ms, INT64_MAX);
	memcpy(id129, "1.", 2);
	memset(id129 + 2, 'a', 129);
	id129[131] = '\0';
	ck_assert_int_eq(ingest_sse_cursor_parse(id129, &k), -EINVAL);
	k.ms = -1;
	ck_assert_int_eq(ingest_sse_cursor_format(&k, text, sizeof(text)), -EINVAL);
	k.ms = 1;
	k.id[0] = '\0';
	ck_assert_int_eq(ingest_sse_cursor_format(&k, text, sizeof(text)), -EINVAL);
}
END_TEST

START_TEST(test_buffer_policy)
{
	ck_assert(!ingest_sse_over_budget(0, 0, 100, 100));
	ck_assert(ingest_sse_over_budget(0, 0, 101, 100));
	ck_assert(!ingest_sse_over_budget(40, 30, 30, 100));
	ck_assert(ingest_sse_over_budget(40, 30, 31, 100));
	ck_assert(ingest_sse_over_budget(101, 0, 0, 100));
	ck_assert(ingest_sse_over_budget(50, 51, 0, 100));
	/* No wrap-around with huge values. */
	ck_assert(ingest_sse_over_budget(SIZE_MAX, SIZE_MAX, SIZE_MAX, 100));
	ck_assert(ingest_sse_over_budget(1, 1, SIZE_MAX, SIZE_MAX));
}
END_TEST

static Suite *ingest_sse_frame_suite(void)
{
	Suite *s = suite_create("ingest_sse_frame");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_frame_fields);
	tcase_add_test(tc, test_frame_splits_lines);
	tcase_add_test(tc, test_frame_rejects_bad_fields);
	tcase_add_test(tc, test_cursor_round_trip_and_order);
	tcase_add_test(tc, test_cursor_rejects);
	tcase_add_test(tc, test_buffer_policy);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ingest_sse_frame_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
