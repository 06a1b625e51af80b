/* SPDX-License-Identifier: Apache-2.0 */
/* dl_time: RFC 3339 and epoch-millisecond timestamps, with our own civil-date arithmetic so
 * nothing depends on the process time zone or on libc's non-reentrant helpers. */
#include "common/dl_time.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MS_PER_DAY INT64_C(86400000)

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errbuf == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
	static const unsigned dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Reads exactly n decimal digits at s[*pos]; false if any is not a digit. */
static bool digits(const char *s, size_t len, size_t *pos, size_t n, unsigned *ret)
{
	unsigned v = 0;
	size_t i;

	if (*pos + n > len)
		return false;
	for (i = 0; i < n; i++) {
		char c = s[*pos + i];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (unsigned)(c - '0');
	}
	*pos += n;
	*ret = v;
	return true;
}

static bool expect(const char *s, size_t len, size_t *pos, char c1, char c2)
{
	if (*pos >= len || (s[*pos] != c1 && s[*pos] != c2))
		return false;
	(*pos)++;
	return true;
}

int dl_time_check_ms(int64_t ms, char *errbuf, size_t errlen)
{
	if (ms < DL_TIME_MIN_MS || ms > DL_TIME_MAX_MS) {
		set_err(errbuf, errlen, "timestamp %lld ms is outside years 0001..9999", (long long)ms);
		return -ERANGE;
	}
	return 0;
}

int dl_time_parse_rfc3339(const char *s, size_t len, int64_t *ret_ms, char *errbuf, size_t errlen)
{
	static const char syntax[] = "not an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS[.sss](Z|+hh:mm))";
	unsigned year = 0, mon = 0, day = 0, hour = 0, min = 0, sec = 0, oh = 0, om = 0, frac = 0, scale = 100;
	size_t pos = 0;
	int64_t ms;
	int sign = 0;

	if (s == NULL)
		len = 0;
	if (!digits(s, len, &pos, 4, &year) || !expect(s, len, &pos, '-', '-') ||
	    !digits(s, len, &pos, 2, &mon) || !expect(s, len, &pos, '-', '-') ||
	    !digits(s, len, &pos, 2, &day) || !expect(s, len, &pos, 'T', 't') ||
	    !digits(s, len, &pos, 2, &hour) || !expect(s, len, &pos, ':', ':') ||
	    !digits(s, len, &pos, 2, &min) || !expect(s, len, &pos, ':', ':') ||
	    !digits(s, len, &pos, 2, &sec))
		goto out_syntax;
	if (pos < len && s[pos] == '.') {
		size_t start = ++pos;

		/* Digits past the millisecond are truncated, never rounded into the next second. */
		while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
			frac += (unsigned)(s[pos] - '0') * scale;
			scale /= 10;
			pos++;
		}
		if (pos == start)
			goto out_syntax;
	}
	if (expect(s, len, &pos, 'Z', 'z')) {
		sign = 0;
	} else if (pos < len && (s[pos] == '+' || s[pos] == '-')) {
		sign = s[pos] == '+' ? 1 : -1;
		pos++;
		if (!digits(s, len, &pos, 2, &oh) || !expect(s, len, &pos, ':', ':') ||
		    !digits(s, len, &pos, 2, &om))
			goto out_syntax;
	} else {
		goto out_syntax;
	}
	if (pos != len)
		goto out_syntax;

	if (mon < 1 || mon > 12) {
		set_err(errbuf, errlen, "month %02u out of range 01..12", mon);
		return -EINVAL;
	}
	if (day < 1 || day > days_in_month(year, mon)) {
		set_err(errbuf, errlen, "day %02u does not exist in %04u-%02u", day, year, mon);
		return -EINVAL;
	}
	if (hour > 23 || min > 59 || sec > 60) {
		set_err(errbuf, errlen, "time %02u:%02u:%02u out of range", hour, min, sec);
		return -EINVAL;
	}
	if (oh > 23 || om > 59) {
		set_err(errbuf, errlen, "UTC offset %02u:%02u out of range", oh, om);
		return -EINVAL;
	}
	if (sec == 60) {
		/* A leap second sorts after :59 and before the next minute. */
		sec = 59;
		frac = 999;
	}
	ms = days_from_civil(year, mon, day) * MS_PER_DAY +
	     ((int64_t)hour * 3600 + (int64_t)min * 60 + sec) * 1000 + frac;
	ms -= (int64_t)sign * ((int64_t)oh * 3600 + (int64_t)om * 60) * 1000;
	if (dl_time_check_ms(ms, errbuf, errlen) < 0)
		return -ERANGE;
	*ret_ms = ms;
	return 0;

out_syntax:
	set_err(errbuf, errlen, "%s", syntax);
	return -EINVAL;
}

int dl_time_parse_epoch_ms(const char *s, size_t len, int64_t *ret_ms, char *errbuf, size_t errlen)
{
	bool neg = false;
	int64_t v = 0;
	size_t i = 0;

	if (s != NULL && len > 0 && s[0] == '-') {
		neg = true;
		i = 1;
	}
	if (s == NULL || i == len) {
		set_err(errbuf, errlen, "not epoch milliseconds (a decimal integer)");
		return -EINVAL;
	}
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9') {
			set_err(errbuf, errlen, "not epoch milliseconds (a decimal integer)");
			return -EINVAL;
		}
		/* Stop accumulating once past the range: no overflow, still a range error. */
		if (v <= DL_TIME_MAX_MS)
			v = v * 10 + (s[i] - '0');
	}
	if (neg)
		v = -v;
	if (v > DL_TIME_MAX_MS || v < DL_TIME_MIN_MS) {
		set_err(errbuf, errlen, "epoch milliseconds outside years 0001..9999");
		return -ERANGE;
	}
	*ret_ms = v;
	return 0;
}

int dl_time_parse(const char *s, size_t len, int64_t *ret_ms, char *errbuf, size_t errlen)
{
	size_t i = (s != NULL && len > 0 && s[0] == '-') ? 1 : 0;
	bool all_digits = s != NULL && i < len;

	for (; all_digits && i < len; i++)
		all_digits = s[i] >= '0' && s[i] <= '9';
	if (all_digits)
		return dl_time_parse_epoch_ms(s, len, ret_ms, errbuf, errlen);
	return dl_time_parse_rfc3339(s, len, ret_ms, errbuf, errlen);
}

int dl_time_format_rfc3339(int64_t ms, char *buf, size_t buflen, char *errbuf, size_t errlen)
{
	int64_t days, rem, y;
	unsigned m, d;

	if (dl_time_check_ms(ms, errbuf, errlen) < 0)
		return -ERANGE;
	if (buf == NULL || buflen < DL_TIME_RFC3339_BUFSZ) {
		set_err(errbuf, errlen, "buffer of %zu bytes is too small for a timestamp", buflen);
		return -ENOSPC;
	}
	days = ms / MS_PER_DAY;
	rem = ms % MS_PER_DAY;
	if (rem < 0) {
		rem += MS_PER_DAY;
		days--;
	}
	civil_from_days(days, &y, &m, &d);
	snprintf(buf, buflen, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", (int)y, m, d,
		 (int)(rem / 3600000), (int)(rem / 60000 % 60), (int)(rem / 1000 % 60),
		 (int)(rem % 1000));
	return 0;
}

int64_t dl_time_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dl_time_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
