/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for common/dl_time: RFC 3339 and epoch-ms parsing, formatting, clocks. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/dl_time.h"

static int parse(const char *s, int64_t *ms, char *err)
{
	return dl_time_parse_rfc3339(s, strlen(s), ms, err, 128);
}

START_TEST(test_parse_utc_millis)
{
	int64_t ms = 0;
	char err[128] = "";

	ck_assert_int_eq(parse("2026-11-26T17:55:07.123Z", &ms, err), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707123));
	ck_assert_int_eq(parse("1970-01-01T00:00:00Z", &ms, err), 0);
	ck_assert_int_eq(ms, 0);
	ck_assert_int_eq(parse("1970-01-01t00:00:00.001z", &ms, err), 0);
	ck_assert_int_eq(ms, 1);
	/* 2000 is a leap year (divisible by 400). */
	ck_assert_int_eq(parse("2000-02-29T12:00:00Z", &ms, err), 0);
	ck_assert_int_eq(ms, INT64_C(951825600000));
}
END_TEST

START_TEST(test_parse_offsets_and_fractions)
{
	int64_t ms = 0;
	char err[128] = "";

	ck_assert_int_eq(parse("2026-11-26T18:55:07.123+01:00", &ms, err), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707123));
	ck_assert_int_eq(parse("2026-11-26T12:25:07.123-05:30", &ms, err), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707123));
	ck_assert_int_eq(parse("2026-11-26T17:55:07-00:00", &ms, err), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707000));
	/* One digit is tenths; digits past the millisecond are truncated, not rounded. */
	ck_assert_int_eq(parse("2026-11-26T17:55:07.5Z", &ms, err), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707500));
	ck_assert_int_eq(parse("2026-11-26T17:55:07.999999999Z", &ms, err), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707999));
	/* A leap second is the last millisecond of its minute. */
	ck_assert_int_eq(parse("2016-12-31T23:59:60Z", &ms, err), 0);
	ck_assert_int_eq(ms, INT64_C(1483228799999));
}
END_TEST

START_TEST(test_parse_rejects_invalid)
{
	static const char *bad[] = {
		"", "2026-11-26", "2026-11-26T17:55:07", "2026-11-26 17:55:07Z",
		"2026-11-26T17:55:07.Z", "2026-11-26T17:55:07.123", "2026-11-26T17:55:07+0100",
		"2026-11-26T17:55:07Zjunk", "26-11-26T17:55:07Z", "2026-1-26T17:55:07Z",
		"2026-11-26T17:55:07+01", "x026-11-26T17:55:07Z",
	};
	int64_t ms = 42;
	char err[128];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(parse(bad[i], &ms, err) == -EINVAL, "accepted \"%s\"", bad[i]);
		ck_assert_str_eq(err, "not an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS[.sss](Z|+hh:mm))");
	}
	ck_assert_int_eq(ms, 42);
}
END_TEST

START_TEST(test_parse_rejects_impossible_dates)
{
	int64_t ms = 42;
	char err[128];

	ck_assert_int_eq(parse("2026-13-01T00:00:00Z", &ms, err), -EINVAL);
	ck_assert_str_eq(err, "month 13 out of range 01..12");
	ck_assert_int_eq(parse("2026-02-29T00:00:00Z", &ms, err), -EINVAL);
	ck_assert_str_eq(err, "day 29 does not exist in 2026-02");
	ck_assert_int_eq(parse("1900-02-29T00:00:00Z", &ms, err), -EINVAL);
	ck_assert_int_eq(parse("2026-04-31T00:00:00Z", &ms, err), -EINVAL);
	ck_assert_int_eq(parse("2026-04-00T00:00:00Z", &ms, err), -EINVAL);
	ck_assert_int_eq(parse("2026-04-01T24:00:00Z", &ms, err), -EINVAL);
	ck_assert_str_eq(err, "time 24:00:00 out of range");
	ck_assert_int_eq(parse("2026-04-01T23:60:00Z", &ms, err), -EINVAL);
	ck_assert_int_eq(parse("2026-04-01T23:00:00+24:00", &ms, err), -EINVAL);
	ck_assert_str_eq(err, "UTC offset 24:00 out of range");
	ck_assert_int_eq(ms, 42);
}
END_TEST

START_TEST(test_range_edges)
{
	int64_t ms = 42;
	char err[128];
	char buf[DL_TIME_RFC3339_BUFSZ];

	ck_assert_int_eq(parse("0001-01-01T00:00:00.000Z", &ms, err), 0);
	ck_assert_int_eq(ms, DL_TIME_MIN_MS);
	ck_assert_int_eq(parse("9999-12-31T23:59:59.999Z", &ms, err), 0);
	ck_assert_int_eq(ms, DL_TIME_MAX_MS);
	ck_assert_int_eq(parse("0000-12-31T23:59:59Z", &ms, err), -ERANGE);
	ck_assert_str_eq(err, "timestamp -62135596801000 ms is outside years 0001..9999");
	/* Valid text whose offset pushes it past the range. */
	ck_assert_int_eq(parse("9999-12-31T23:59:59Z", &ms, err), 0);
	ck_assert_int_eq(parse("9999-12-31T23:59:59-01:00", &ms, err), -ERANGE);
	ck_assert_int_eq(parse("0001-01-01T00:00:00+01:00", &ms, err), -ERANGE);

	ck_assert_int_eq(dl_time_format_rfc3339(DL_TIME_MIN_MS, buf, sizeof(buf), err, sizeof(err)), 0);
	ck_assert_str_eq(buf, "0001-01-01T00:00:00.000Z");
	ck_assert_int_eq(dl_time_format_rfc3339(DL_TIME_MAX_MS, buf, sizeof(buf), err, sizeof(err)), 0);
	ck_assert_str_eq(buf, "9999-12-31T23:59:59.999Z");
	strcpy(buf, "untouched");
	ck_assert_int_eq(dl_time_format_rfc3339(DL_TIME_MAX_MS + 1, buf, sizeof(buf), err, sizeof(err)),
			 -ERANGE);
	ck_assert_str_eq(buf, "untouched");
	ck_assert_int_eq(dl_time_format_rfc3339(0, buf, DL_TIME_RFC3339_LEN, err, sizeof(err)), -ENOSPC);
	ck_assert_str_eq(buf, "untouched");
	ck_assert_int_eq(dl_time_check_ms(DL_TIME_MIN_MS - 1, err, sizeof(err)), -ERANGE);
	ck_assert_int_eq(dl_time_check_ms(0, err, sizeof(err)), 0);
}
END_TEST

START_TEST(test_format)
{
	char buf[DL_TIME_RFC3339_BUFSZ];

	ck_assert_int_eq(dl_time_format_rfc3339(INT64_C(1795715707123), buf, sizeof(buf), NULL, 0), 0);
	ck_assert_str_eq(buf, "2026-11-26T17:55:07.123Z");
	ck_assert_int_eq(strlen(buf), DL_TIME_RFC3339_LEN);
	ck_assert_int_eq(dl_time_format_rfc3339(0, buf, sizeof(buf), NULL, 0), 0);
	ck_assert_str_eq(buf, "1970-01-01T00:00:00.000Z");
	/* Before the epoch: floor, not truncation toward zero. */
	ck_assert_int_eq(dl_time_format_rfc3339(-1, buf, sizeof(buf), NULL, 0), 0);
	ck_assert_str_eq(buf, "1969-12-31T23:59:59.999Z");
	ck_assert_int_eq(dl_time_format_rfc3339(INT64_C(951782400000), buf, sizeof(buf), NULL, 0), 0);
	ck_assert_str_eq(buf, "2000-02-29T00:00:00.000Z");
}
END_TEST

/* Days from 1600 to 2400 (a step of one day plus 1h02m03.004s, so every time of day and date
 * shows up) format and parse back to themselves and match libc's gmtime_r. Check's assertions
 * write to a pipe, so the loop only counts and the assertion comes after it. */
START_TEST(test_round_trip_matches_gmtime)
{
	int64_t ms, back, start = INT64_C(-11676096000000), end = INT64_C(13569465600000);
	int64_t first_bad = 0;
	char buf[DL_TIME_RFC3339_BUFSZ], expect[64];
	long checked = 0, bad = 0;
	struct tm tm;
	time_t t;

	for (ms = start; ms < end; ms += 86400000 + 3723004, checked++) {
		t = (time_t)((ms - ((ms % 1000) + 1000) % 1000) / 1000);
		if (dl_time_format_rfc3339(ms, buf, sizeof(buf), NULL, 0) != 0 ||
		    dl_time_parse_rfc3339(buf, strlen(buf), &back, NULL, 0) != 0 || back != ms ||
		    gmtime_r(&t, &tm) == NULL ||
		    strftime(expect, sizeof(expect), "%Y-%m-%dT%H:%M:%S", &tm) != 19 ||
		    strncmp(buf, expect, 19) != 0) {
			if (bad++ == 0)
				first_bad = ms;
		}
	}
	ck_assert_int_gt(checked, 280000);
	ck_assert_msg(bad == 0, "%ld of %ld timestamps wrong, first at %lld ms", bad, checked,
		      (long long)first_bad);
}
END_TEST

START_TEST(test_epoch_ms)
{
	int64_t ms = 42;
	char err[128];

	ck_assert_int_eq(dl_time_parse_epoch_ms("1795715707123", 13, &ms, err, sizeof(err)), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707123));
	ck_assert_int_eq(dl_time_parse_epoch_ms("-1", 2, &ms, err, sizeof(err)), 0);
	ck_assert_int_eq(ms, -1);
	ms = 42;
	ck_assert_int_eq(dl_time_parse_epoch_ms("12a", 3, &ms, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "not epoch milliseconds (a decimal integer)");
	ck_assert_int_eq(dl_time_parse_epoch_ms("-", 1, &ms, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(dl_time_parse_epoch_ms("", 0, &ms, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(dl_time_parse_epoch_ms("253402300800000", 15, &ms, err, sizeof(err)),
			 -ERANGE);
	ck_assert_str_eq(err, "epoch milliseconds outside years 0001..9999");
	ck_assert_int_eq(dl_time_parse_epoch_ms("99999999999999999999999999", 26, &ms, err,
						sizeof(err)), -ERANGE);
	ck_assert_int_eq(ms, 42);

	/* dl_time_parse picks the form by content. */
	ck_assert_int_eq(dl_time_parse("1795715707123", 13, &ms, err, sizeof(err)), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707123));
	ck_assert_int_eq(dl_time_parse("2026-11-26T17:55:07.123Z", 24, &ms, err, sizeof(err)), 0);
	ck_assert_int_eq(ms, INT64_C(1795715707123));
	ck_assert_int_eq(dl_time_parse("soon", 4, &ms, err, sizeof(err)), -EINVAL);
	/* A length shorter than the string bounds what is read. */
	ck_assert_int_eq(dl_time_parse("2026-11-26T17:55:07.123Zjunk", 24, &ms, err, sizeof(err)), 0);
}
END_TEST

START_TEST(test_clocks)
{
	struct timespec ts;
	int64_t now, a, b;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = dl_time_now_ms();
	ck_assert_int_ge(now, (int64_t)ts.tv_sec * 1000);
	ck_assert_int_le(now, (int64_t)ts.tv_sec * 1000 + 5000);
	a = dl_time_mono_ns();
	ts.tv_sec = 0;
	ts.tv_nsec = 2000000;
	nanosleep(&ts, NULL);
	b = dl_time_mono_ns();
	ck_assert_int_ge(b - a, 2000000);
	ck_assert_int_lt(b - a, INT64_C(5000000000));
}
END_TEST

static void *parse_many(void *arg)
{
	char buf[DL_TIME_RFC3339_BUFSZ];
	int64_t ms, back, base = (int64_t)(intptr_t)arg;
	int i;

	for (i = 0; i < 20000; i++) {
		ms = base + (int64_t)i * 7919123;
		if (dl_time_format_rfc3339(ms, buf, sizeof(buf), NULL, 0) != 0 ||
		    dl_time_parse_rfc3339(buf, strlen(buf), &back, NULL, 0) != 0 || back != ms)
			return (void *)1;
	}
	return NULL;
}

START_TEST(test_threads)
{
	pthread_t th[4];
	void *res;
	int i;

	for (i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, parse_many,
						(void *)(intptr_t)(i * 100000000000LL)), 0);
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(th[i], &res), 0);
		ck_assert_ptr_null(res);
	}
}
END_TEST

static Suite *dl_time_suite(void)
{
	Suite *s = suite_create("dl_time");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_parse_utc_millis);
	tcase_add_test(tc, test_parse_offsets_and_fractions);
	tcase_add_test(tc, test_parse_rejects_invalid);
	tcase_add_test(tc, test_parse_rejects_impossible_dates);
	tcase_add_test(tc, test_range_edges);
	tcase_add_test(tc, test_format);
	tcase_add_test(tc, test_round_trip_matches_gmtime);
	tcase_add_test(tc, test_epoch_ms);
	tcase_add_test(tc, test_clocks);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dl_time_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
