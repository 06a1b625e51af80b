/* SPDX-License-Identifier: Apache-2.0 */
/* proto_json_scan: strict one-pass JSON object validation with the spans of chosen members. */
#include "proto/proto_json_scan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proto/proto_json.h"

#define SCAN_NAMES_MAX 16

static bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex4(const unsigned char *s)
{
	int v = 0;

	for (int i = 0; i < 4; i++) {
		unsigned char c = s[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static int scan_fail(struct proto_json_scan_error *sc, size_t pos, const char *code,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int scan_fail(struct proto_json_scan_error *sc, size_t pos, const char *code,
		     const char *fmt, ...)
{
	va_list ap;

	sc->pos = pos;
	sc->code = code;
	va_start(ap, fmt);
	vsnprintf(sc->why, sizeof(sc->why), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

#define SWAR_ONES UINT64_C(0x0101010101010101)
#define SWAR_HIGH UINT64_C(0x8080808080808080)

/* True when one of the 8 bytes of v needs a closer look in a string: '"', '\\', a control
 * character (< 0x20) or a UTF-8 byte (>= 0x80). The usual "has a zero byte" bit tricks; they
 * may flag a byte after a true hit, never miss one. */
static bool swar_special(uint64_t v)
{
	uint64_t quote = v ^ (SWAR_ONES * '"'), bslash = v ^ (SWAR_ONES * '\\');

	return (((quote - SWAR_ONES) & ~quote) | ((bslash - SWAR_ONES) & ~bslash) |
		(v - SWAR_ONES * 0x20) | v) &
	       SWAR_HIGH;
}

/* Scans the string whose opening quote is at *pi, up to lim: UTF-8, control characters and
 * escapes (a \u escape of a surrogate must be a proper pair, as cJSON requires). Leaves *pi
 * after the closing quote. */
static int scan_string(const unsigned char *p, size_t *pi, size_t lim, bool *ret_escaped,
		       struct proto_json_scan_error *sc)
{
	size_t i = *pi + 1;
	bool escaped = false;

	for (;;) {
		unsigned char c;

		/* Eight plain bytes at a time, then byte by byte up to the special one. */
		while (i + 8 <= lim) {
			uint64_t v;

			memcpy(&v, p + i, 8);
			if (swar_special(v))
				break;
			i += 8;
		}
		while (i < lim && (c = p[i]) >= 0x20 && c < 0x80 && c != '"' && c != '\\')
			i++;
		if (i >= lim)
			return scan_fail(sc, i, "invalid_json", "unterminated string");
		c = p[i];
		if (c == '"')
			break;
		if (c == '\\') {
			escaped = true;
			if (i + 1 >= lim)
				return scan_fail(sc, i, "invalid_json", "unterminated string");
			c = p[i + 1];
			if (c == 'u') {
				int cp;

				if (i + 6 > lim || (cp = hex4(p + i + 2)) < 0)
					return scan_fail(sc, i, "invalid_json",
							 "invalid \\u escape");
				if (cp >= 0xDC00 && cp <= 0xDFFF)
					return scan_fail(sc, i, "invalid_json",
							 "unpaired surrogate in a \\u escape");
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					int lo;

					if (i + 12 > lim || p[i + 6] != '\\' || p[i + 7] != 'u' ||
					    (lo = hex4(p + i + 8)) < 0xDC00 || lo > 0xDFFF)
						return scan_fail(sc, i, "invalid_json",
								 "unpaired surrogate in a \\u escape");
					i += 6;
				}
				i += 6;
			} else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' ||
				   c == 'n' || c == 'r' || c == 't') {
				i += 2;
			} else {
				return scan_fail(sc, i, "invalid_json", "invalid escape in a string");
			}
		} else if (c < 0x20) {
			return scan_fail(sc, i, "invalid_json", "control character in a string");
		} else {
			size_t n = proto_json_utf8_seq(p + i, lim - i);

			if (n == 0)
				return scan_fail(sc, i, "invalid_json", "invalid UTF-8");
			i += n;
		}
	}
	*pi = i + 1;
	*ret_escaped = escaped;
	return 0;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Scans a number (RFC 8259 grammar) at *pi. */
static int scan_number(const unsigned char *p, size_t *pi, size_t lim, struct proto_json_scan_error *sc)
{
	size_t i = *pi;

	if (p[i] == '-')
		i++;
	if (i < lim && p[i] == '0') {
		i++;
	} else if (i < lim && is_digit(p[i])) {
		while (i < lim && is_digit(p[i]))
			i++;
	} else {
		return scan_fail(sc, i, "invalid_json", "malformed number");
	}
	if (i < lim && p[i] == '.') {
		if (++i >= lim || !is_digit(p[i]))
			return scan_fail(sc, i, "invalid_json", "malformed number");
		while (i < lim && is_digit(p[i]))
			i++;
	}
	if (i < lim && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < lim && (p[i] == '+' || p[i] == '-'))
			i++;
		if (i >= lim || !is_digit(p[i]))
			return scan_fail(sc, i, "invalid_json", "malformed number");
		while (i < lim && is_digit(p[i]))
			i++;
	}
	*pi = i;
	return 0;
}

int proto_json_unescape_ascii(const unsigned char *s, size_t len, char *dst, size_t dstsz)
{
	size_t i = 0, n = 0;

	while (i < len) {
		unsigned char c = s[i];

		if (n + 1 >= dstsz)
			return -1;
		if (c != '\\') {
			dst[n++] = (char)c;
			i++;
			continue;
		}
		c = s[i + 1];
		if (c == 'u') {
			int cp = hex4(s + i + 2);

			dst[n++] = (cp >= 0x20 && cp < 0x7f) ? (char)cp : (char)0x80;
			i += (cp >= 0xD800 && cp <= 0xDBFF) ? 12 : 6;
			continue;
		}
		switch (c) {
		case 'b': dst[n++] = '\b'; break;
		case 'f': dst[n++] = '\f'; break;
		case 'n': dst[n++] = '\n'; break;
		case 'r': dst[n++] = '\r'; break;
		case 't': dst[n++] = '\t'; break;
		default: dst[n++] = (char)c; break;
		}
		i += 2;
	}
	dst[n] = '\0';
	return (int)n;
}

/* Which of names[0..n) the key of len bytes at s is, or -1. */
static int member_of(const unsigned char *s, size_t len, bool escaped, const char *const *names,
		     size_t n)
{
	char key[64];

	if (n == 0)
		return -1;
	if (escaped) {
		/* "st\u0072eam" is "stream" too; a key of more escapes than fit is none of ours. */
		if (len > 6 * (sizeof(key) - 1) ||
		    proto_json_unescape_ascii(s, len, key, sizeof(key)) < 0)
			return -1;
		s = (const unsigned char *)key;
		len = strlen(key);
	}
	for (size_t i = 0; i < n; i++)
		if (strlen(names[i]) == len && memcmp(s, names[i], len) == 0)
			return (int)i;
	return -1;
}

enum scan_state { S_VALUE, S_VALUE_OR_CLOSE, S_KEY, S_KEY_OR_CLOSE, S_COLON, S_NEXT };

int proto_json_scan_object(const unsigned char *p, size_t start, size_t lim, int max_depth,
			   const char *const *names, size_t nnames, struct proto_json_member *m,
			   size_t *ret_end, struct proto_json_scan_error *sc)
{
	enum scan_state st = S_VALUE;
	uint64_t is_obj = 0; /* bit d-1: the container at depth d is an object */
	int depth = 0, want = -1, open_member = -1;
	size_t i = start;

	if (max_depth > 64) /* is_obj has a bit per level */
		max_depth = 64;
	if (nnames > SCAN_NAMES_MAX)
		return scan_fail(sc, start, "invalid_json", "too many members asked for");
	memset(m, 0, nnames * sizeof(*m));
	for (;;) {
		unsigned char c;

		while (i < lim && is_ws(p[i]))
			i++;
		if (i >= lim)
			return scan_fail(sc, i, "invalid_json", "unexpected end of the JSON");
		c = p[i];
		switch (st) {
		case S_VALUE_OR_CLOSE:
			if (c == ']')
				goto close;
			/* fall through */
		case S_VALUE: {
			size_t vstart = i;
			struct proto_json_member *mm = (depth == 1 && want >= 0 && !m[want].seen) ?
						    &m[want] : NULL;
			bool escaped = false;

			if (depth == 0 && c != '{')
				return scan_fail(sc, i, "not_an_object", "not a JSON object");
			if (c == '{' || c == '[') {
				if (depth >= max_depth)
					return scan_fail(sc, i, "too_deep",
							 "JSON nesting deeper than %d levels",
							 max_depth);
				if (c == '{')
					is_obj |= UINT64_C(1) << depth;
				else
					is_obj &= ~(UINT64_C(1) << depth);
				depth++;
				st = c == '{' ? S_KEY_OR_CLOSE : S_VALUE_OR_CLOSE;
				i++;
				if (mm != NULL) {
					mm->seen = true;
					mm->type = 'o';
					mm->off = mm->voff = vstart;
					open_member = want;
				}
				want = -1;
				continue;
			}
			if (c == '"') {
				if (scan_string(p, &i, lim, &escaped, sc) < 0)
					return -EINVAL;
				if (mm != NULL) {
					mm->type = 's';
					mm->off = vstart + 1;
					mm->len = i - vstart - 2;
				}
			} else if (c == '-' || is_digit(c)) {
				if (scan_number(p, &i, lim, sc) < 0)
					return -EINVAL;
				if (mm != NULL) {
					mm->type = 'n';
					mm->off = vstart;
					mm->len = i - vstart;
				}
			} else if (c == 't' && lim - i >= 4 && memcmp(p + i, "true", 4) == 0) {
				i += 4;
			} else if (c == 'f' && lim - i >= 5 && memcmp(p + i, "false", 5) == 0) {
				i += 5;
			} else if (c == 'n' && lim - i >= 4 && memcmp(p + i, "null", 4) == 0) {
				i += 4;
			} else {
				return scan_fail(sc, i, "invalid_json", "expected a JSON value");
			}
			if (mm != NULL) {
				mm->seen = true;
				mm->escaped = escaped;
				if (mm->type != 's' && mm->type != 'n') {
					mm->type = 'o';
					mm->off = vstart;
					mm->len = i - vstart;
				}
				mm->voff = vstart;
				mm->vlen = i - vstart;
			}
			want = -1;
			st = S_NEXT;
			continue;
		}
		case S_KEY_OR_CLOSE:
			if (c == '}')
				goto close;
			/* fall through */
		case S_KEY: {
			size_t kstart = i;
			bool escaped;

			if (c != '"')
				return scan_fail(sc, i, "invalid_json", "expected a member name");
			if (scan_string(p, &i, lim, &escaped, sc) < 0)
				return -EINVAL;
			want = depth == 1 ? member_of(p + kstart + 1, i - kstart - 2, escaped,
						      names, nnames) :
					    -1;
			st = S_COLON;
			continue;
		}
		case S_COLON:
			if (c != ':')
				return scan_fail(sc, i, "invalid_json", "expected ':'");
			i++;
			st = S_VALUE;
			continue;
		case S_NEXT:
			if (c == ',') {
				i++;
				st = (is_obj >> (depth - 1)) & 1 ? S_KEY : S_VALUE;
				continue;
			}
			if (c == ((is_obj >> (depth - 1)) & 1 ? '}' : ']'))
				goto close;
			return scan_fail(sc, i, "invalid_json",
					 (is_obj >> (depth - 1)) & 1 ? "expected ',' or '}'" :
								       "expected ',' or ']'");
		}
		continue;
close:
		i++;
		if (--depth == 0)
			break;
		if (depth == 1 && open_member >= 0) {
			m[open_member].len = m[open_member].vlen = i - m[open_member].voff;
			open_member = -1;
		}
		st = S_NEXT;
	}
	*ret_end = i;
	return 0;
}

