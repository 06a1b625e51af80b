/* SPDX-License-Identifier: Apache-2.0 */
/* dl_log: JSON log records built in memory and written with one write(2) each. */
#include "common/dl_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define DL_LOG_SERVICE_MAX 64
#define DL_LOG_STACK_BUF 2048

static atomic_int dl_log_min_level = DL_LOG_INFO;
static atomic_int dl_log_fd = 2;
static char dl_log_service[DL_LOG_SERVICE_MAX] = "driftlock";
/* Serialises the write(2) calls so that records longer than PIPE_BUF do not interleave. */
static pthread_mutex_t dl_log_write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const dl_log_secret_words[] = {
	"password", "passwd", "secret", "token", "api_key", "apikey",
	"authorization", "cookie", "credential", "dsn",
};

static const char *const dl_log_reserved_keys[] = { "ts", "level", "service", "msg" };

/* A record being built: starts in a stack buffer, moves to the heap when it outgrows it. */
struct dl_log_buf {
	char *p;
	size_t len;
	size_t cap;
	bool heap;
	bool failed;
};

static void dl_log_buf_put(struct dl_log_buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap * 2;
		char *p;

		while (cap < b->len + n)
			cap *= 2;
		p = b->heap ? realloc(b->p, cap) : malloc(cap);
		if (!p) {
			b->failed = true;
			return;
		}
		if (!b->heap)
			memcpy(p, b->p, b->len);
		b->p = p;
		b->cap = cap;
		b->heap = true;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void dl_log_buf_puts(struct dl_log_buf *b, const char *s)
{
	dl_log_buf_put(b, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes available), or 0 if it is not one.
 * Rejects overlong forms, surrogates and code points above U+10FFFF. */
static size_t dl_log_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	}
	return len;
}

/* Appends s as a quoted JSON string, cut to DL_LOG_VALUE_MAX bytes. */
static void dl_log_buf_json_string(struct dl_log_buf *b, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str);
	bool cut = false;
	size_t i = 0;

	if (n > DL_LOG_VALUE_MAX) {
		n = DL_LOG_VALUE_MAX;
		while (n > 0 && (s[n] & 0xc0) == 0x80)
			n--;
		cut = true;
	}
	dl_log_buf_put(b, "\"", 1);
	while (i < n) {
		size_t run = i;
		size_t seq;

		/* Copy plain printable ASCII in runs; it is by far the common case. */
		while (run < n && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\')
			run++;
		if (run > i) {
			dl_log_buf_put(b, (const char *)s + i, run - i);
			i = run;
			continue;
		}
		switch (s[i]) {
		case '"': dl_log_buf_put(b, "\\\"", 2); i++; continue;
		case '\\': dl_log_buf_put(b, "\\\\", 2); i++; continue;
		case '\n': dl_log_buf_put(b, "\\n", 2); i++; continue;
		case '\r': dl_log_buf_put(b, "\\r", 2); i++; continue;
		case '\t': dl_log_buf_put(b, "\\t", 2); i++; continue;
		case '\b': dl_log_buf_put(b, "\\b", 2); i++; continue;
		case '\f': dl_log_buf_put(b, "\\f", 2); i++; continue;
		default: break;
		}
		if (s[i] < 0x80) {
			char esc[8];

			snprintf(esc, sizeof(esc), "\\u%04x", s[i]);
			dl_log_buf_put(b, esc, 6);
			i++;
			continue;
		}
		seq = dl_log_utf8_len(s + i, n - i);
		if (seq == 0) {
			dl_log_buf_put(b, "\\ufffd", 6);
			i++;
		} else {
			dl_log_buf_put(b, (const char *)s + i, seq);
			i += seq;
		}
	}
	if (cut)
		dl_log_buf_put(b, "...", 3);
	dl_log_buf_put(b, "\"", 1);
}

static bool dl_log_key_is_secret(const char *key)
{
	for (size_t i = 0; i < sizeof(dl_log_secret_words) / sizeof(dl_log_secret_words[0]); i++) {
		if (strcasestr(key, dl_log_secret_words[i]))
			return true;
	}
	return false;
}

static bool dl_log_key_is_reserved(const char *key)
{
	for (size_t i = 0; i < sizeof(dl_log_reserved_keys) / sizeof(dl_log_reserved_keys[0]); i++) {
		if (strcmp(key, dl_log_reserved_keys[i]) == 0)
			return true;
	}
	return false;
}

#define DL_LOG_TS_LEN 48

static void dl_log_format_ts(char out[DL_LOG_TS_LEN])
{
	struct timespec now;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = strftime(out, DL_LOG_TS_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, DL_LOG_TS_LEN - n, ".%03dZ", (int)(now.tv_nsec / 1000000L) % 1000);
}

static void dl_log_emit(const char *line, size_t len)
{
	int fd = atomic_load(&dl_log_fd);
	size_t off = 0;

	pthread_mutex_lock(&dl_log_write_lock);
	while (off < len) {
		ssize_t w = write(fd, line + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	pthread_mutex_unlock(&dl_log_write_lock);
}

/* Builds and writes one record; fields is NULL for a record without fields. */
static void dl_log_record(dl_log_level lvl, const char *msg, va_list *fields)
{
	char stack[DL_LOG_STACK_BUF];
	struct dl_log_buf b = { .p = stack, .cap = sizeof(stack) };
	char ts[DL_LOG_TS_LEN];
	int saved_errno = errno;

	dl_log_format_ts(ts);
	dl_log_buf_puts(&b, "{\"ts\":\"");
	dl_log_buf_puts(&b, ts);
	dl_log_buf_puts(&b, "\",\"level\":\"");
	dl_log_buf_puts(&b, dl_log_level_name(lvl));
	dl_log_buf_puts(&b, "\",\"service\":");
	dl_log_buf_json_string(&b, dl_log_service);
	dl_log_buf_puts(&b, ",\"msg\":");
	dl_log_buf_json_string(&b, msg ? msg : "");
	for (;;) {
		const char *key, *value;

		if (!fields)
			break;
		key = va_arg(*fields, const char *);
		if (!key)
			break;
		value = va_arg(*fields, const char *);
		dl_log_buf_put(&b, ",", 1);
		if (dl_log_key_is_reserved(key)) {
			char renamed[16];

			snprintf(renamed, sizeof(renamed), "_%s", key);
			dl_log_buf_json_string(&b, renamed);
		} else {
			dl_log_buf_json_string(&b, key);
		}
		dl_log_buf_put(&b, ":", 1);
		if (!value) {
			dl_log_buf_puts(&b, "null");
			break;
		}
		dl_log_buf_json_string(&b, dl_log_key_is_secret(key) ? "***" : value);
	}
	dl_log_buf_puts(&b, "}\n");

	if (b.failed) {
		/* Service name (<= 63 bytes, <= 6 bytes each escaped) and ts fit without allocating. */
		char small[1024];
		struct dl_log_buf f = { .p = small, .cap = sizeof(small) };

		dl_log_buf_puts(&f, "{\"ts\":\"");
		dl_log_buf_puts(&f, ts);
		dl_log_buf_puts(&f, "\",\"level\":\"error\",\"service\":");
		dl_log_buf_json_string(&f, dl_log_service);
		dl_log_buf_puts(&f, ",\"msg\":\"log record dropped: out of memory\"}\n");
		dl_log_emit(f.p, f.len);
	} else {
		dl_log_emit(b.p, b.len);
	}
	if (b.heap)
		free(b.p);
	errno = saved_errno;
}

void dl_log_setup(const char *service, dl_log_level min_level, int fd)
{
	size_t n = 0;

	if (!service)
		service = "driftlock";
	/* Cut at a character boundary so the name stays valid UTF-8. */
	n = strlen(service);
	if (n > DL_LOG_SERVICE_MAX - 1) {
		n = DL_LOG_SERVICE_MAX - 1;
		while (n > 0 && ((unsigned char)service[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(dl_log_service, service, n);
	dl_log_service[n] = '\0';
	atomic_store(&dl_log_min_level, (int)min_level);
	atomic_store(&dl_log_fd, fd < 0 ? 2 : fd);
}

void dl_log_set_level(dl_log_level min_level)
{
	atomic_store(&dl_log_min_level, (int)min_level);
}

bool dl_log_enabled(dl_log_level lvl)
{
	return (int)lvl >= atomic_load(&dl_log_min_level);
}

int dl_log_level_parse(const char *s, dl_log_level *ret)
{
	dl_log_level lvl;

	if (!s)
		return -EINVAL;
	if (strcasecmp(s, "debug") == 0)
		lvl = DL_LOG_DEBUG;
	else if (strcasecmp(s, "info") == 0)
		lvl = DL_LOG_INFO;
	else if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0)
		lvl = DL_LOG_WARN;
	else if (strcasecmp(s, "error") == 0)
		lvl = DL_LOG_ERROR;
	else
		return -EINVAL;
	*ret = lvl;
	return 0;
}

const char *dl_log_level_name(dl_log_level lvl)
{
	switch (lvl) {
	case DL_LOG_DEBUG: return "debug";
	case DL_LOG_INFO: return "info";
	case DL_LOG_WARN: return "warn";
	case DL_LOG_ERROR: return "error";
	}
	return "unknown";
}

void dl_log_writev(dl_log_level lvl, const char *msg, va_list fields)
{
	va_list copy;

	if (!dl_log_enabled(lvl))
		return;
	va_copy(copy, fields);
	dl_log_record(lvl, msg, &copy);
	va_end(copy);
}

void dl_log_write(dl_log_level lvl, const char *msg, ...)
{
	va_list ap;

	if (!dl_log_enabled(lvl))
		return;
	va_start(ap, msg);
	dl_log_record(lvl, msg, &ap);
	va_end(ap);
}

void dl_log_writef(dl_log_level lvl, const char *fmt, ...)
{
	char stack[512];
	char *heap = NULL;
	const char *msg = stack;
	va_list ap;
	int n;

	if (!dl_log_enabled(lvl))
		return;
	va_start(ap, fmt);
	n = vsnprintf(stack, sizeof(stack), fmt, ap);
	va_end(ap);
	if (n < 0) {
		msg = "log message could not be formatted";
	} else if ((size_t)n >= sizeof(stack)) {
		/* Only what can be written is formatted: the record cuts at DL_LOG_VALUE_MAX. */
		size_t want = (size_t)n < DL_LOG_VALUE_MAX + 4 ? (size_t)n + 1 : DL_LOG_VALUE_MAX + 4;

		heap = malloc(want);
		if (heap) {
			va_start(ap, fmt);
			vsnprintf(heap, want, fmt, ap);
			va_end(ap);
			msg = heap;
		}
	}
	dl_log_record(lvl, msg, NULL);
	free(heap);
}
