/* SPDX-License-Identifier: Apache-2.0 */
/* proto_json_scan: a strict, allocation-free validating scan of one JSON object that reports
 * where chosen top-level members are, for decoders that must not build a tree of everything
 * (ingest's request bodies, the detector's envelopes with their payloads). */
#ifndef DL_PROTO_JSON_SCAN_H
#define DL_PROTO_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

/* Where one wanted top-level member is (the first occurrence wins). */
struct proto_json_member {
	bool seen;
	char type;    /* 's' string, 'n' number, 'o' anything else (object, array, literal) */
	bool escaped; /* a string with backslash escapes */
	size_t off;   /* string: first byte after the quote; otherwise the value's first byte */
	size_t len;   /* string: bytes between the quotes; otherwise the value's bytes */
	size_t voff;  /* any type: the whole value's first byte (a string's opening quote) */
	size_t vlen;  /* any type: the whole value's bytes */
};

/* Why a scan stopped. */
struct proto_json_scan_error {
	size_t pos;       /* offset in the buffer */
	const char *code; /* invalid_json, not_an_object, too_deep */
	char why[160];    /* e.g. "expected ',' or '}'" */
};

/* Validates the one JSON object that starts at the first non-whitespace byte at or after
 * p[start], reading no byte at or past lim: strict RFC 8259 grammar, nesting at most max_depth (at most 64),
 * UTF-8 and control characters in strings, \u escapes (surrogates paired, as cJSON requires).
 * For each of the nnames (at most 16) names, m[i] says where the top-level member of that name
 * is; a name written with escapes ("st\u0072eam") counts too. *ret_end is the byte after the
 * closing brace. One pass, no allocation, no recursion. 0, or -EINVAL with *err filled. */
int proto_json_scan_object(const unsigned char *p, size_t start, size_t lim, int max_depth,
			   const char *const *names, size_t nnames, struct proto_json_member *m,
			   size_t *ret_end, struct proto_json_scan_error *err);

/* Decodes the content of a string already checked by the scan (len bytes between its quotes)
 * into dst, NUL-terminated, for comparison with ASCII-only rules: an escape of anything but
 * printable ASCII becomes 0x80, which no such rule accepts. Returns the length, or -1 when it
 * does not fit dstsz - 1. */
int proto_json_unescape_ascii(const unsigned char *s, size_t len, char *dst, size_t dstsz);

#endif /* DL_PROTO_JSON_SCAN_H */
