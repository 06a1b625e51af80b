/* SPDX-License-Identifier: Apache-2.0 */
/* dl_time: timestamps as int64 milliseconds since the Unix epoch, parsed from and formatted as
 * RFC 3339, plus the realtime and monotonic clocks. */
#ifndef DL_COMMON_TIME_H
#define DL_COMMON_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Length of the canonical form "2026-11-26T17:55:07.123Z", and the buffer size that holds it. */
#define DL_TIME_RFC3339_LEN 24
#define DL_TIME_RFC3339_BUFSZ (DL_TIME_RFC3339_LEN + 1)

/* The range every function here accepts: 0001-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z. */
#define DL_TIME_MIN_MS INT64_C(-62135596800000)
#define DL_TIME_MAX_MS INT64_C(253402300799999)

/* Parses an RFC 3339 date-time of exactly `len` bytes ("YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)",
 * 'T' and 'Z' in either case) into epoch milliseconds. Fractional digits beyond the third are
 * truncated; a leap second (:60) is read as the last millisecond of its minute.
 * Failure: -EINVAL (syntax, impossible date) or -ERANGE (outside DL_TIME_MIN_MS..MAX_MS), with a
 * reason in errbuf (may be NULL); *ret_ms is untouched. Thread-safe, no allocation. */
int dl_time_parse_rfc3339(const char *s, size_t len, int64_t *ret_ms, char *errbuf, size_t errlen);

/* Parses decimal epoch milliseconds ("1764179707123", optionally with a leading '-') of exactly
 * `len` bytes. Failure: -EINVAL (not a decimal integer) or -ERANGE (outside the accepted range),
 * reason in errbuf, *ret_ms untouched. Thread-safe, no allocation. */
int dl_time_parse_epoch_ms(const char *s, size_t len, int64_t *ret_ms, char *errbuf, size_t errlen);

/* Parses either form: all digits (with an optional '-') is epoch milliseconds, anything else
 * must be RFC 3339. Same failures and guarantees as the two functions above. */
int dl_time_parse(const char *s, size_t len, int64_t *ret_ms, char *errbuf, size_t errlen);

/* Checks that `ms` lies in DL_TIME_MIN_MS..DL_TIME_MAX_MS. Returns 0 or -ERANGE with a reason. */
int dl_time_check_ms(int64_t ms, char *errbuf, size_t errlen);

/* Formats `ms` as "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, always milliseconds) into buf, NUL-terminated.
 * Failure: -ERANGE (ms outside the accepted range) or -ENOSPC (buflen < DL_TIME_RFC3339_BUFSZ),
 * with a reason in errbuf; buf is untouched. Thread-safe, no allocation. */
int dl_time_format_rfc3339(int64_t ms, char *buf, size_t buflen, char *errbuf, size_t errlen);

/* Wall-clock time (CLOCK_REALTIME) in epoch milliseconds. Cannot fail on Linux. Thread-safe. */
int64_t dl_time_now_ms(void);

/* Monotonic time (CLOCK_MONOTONIC) in nanoseconds from an arbitrary origin, for durations and
 * timeouts. Cannot fail on Linux. Thread-safe. */
int64_t dl_time_mono_ns(void);

#endif /* DL_COMMON_TIME_H */
