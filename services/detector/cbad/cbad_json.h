/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_json: a bounded, allocation-free scanner of one JSON object's scalar fields (internal to cbad). */
#ifndef DL_CBAD_JSON_H
#define DL_CBAD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad.h"

#define CBAD_JSON_MAX_DEPTH 8 /* deeper objects are skipped (still checked for validity) */

typedef enum cbad_json_type {
	CBAD_JSON_NUMBER = 1,
	CBAD_JSON_STRING,
	CBAD_JSON_BOOL,
	CBAD_JSON_NULL,
} cbad_json_type;

/* One scalar field. str/str_len point into the scanned bytes: for a string, the raw bytes
 * between the quotes (escapes not decoded, escaped says whether there are any); for a number,
 * a bool or null, the literal token. Valid as long as the scanned bytes are. */
typedef struct cbad_json_field {
	char path[CBAD_FIELD_NAME_MAX]; /* dotted path of nested keys: "req.latency_ms" */
	uint64_t path_hash;             /* FNV-1a of path */
	cbad_json_type type;
	bool escaped;
	double num; /* NUMBER: its value; BOOL: 0 or 1 */
	const char *str;
	uint32_t str_len;
} cbad_json_field;

/* Scans the JSON object in raw[0..len) (leading and trailing white space allowed; need not be
 * NUL-terminated) and stores up to max of its scalar fields, in document order, into out.
 * Objects are descended into up to CBAD_JSON_MAX_DEPTH; arrays are skipped; fields whose
 * dotted path does not fit CBAD_FIELD_NAME_MAX are skipped. Never reads outside raw[0..len)
 * and never allocates. Returns the number of fields stored, or -EINVAL when the bytes are not
 * one well-formed JSON object (out is then unspecified). */
int cbad_json_scan(const char *raw, size_t len, cbad_json_field *out, size_t max);

/* FNV-1a 64 of n bytes, continuing from h (start with CBAD_JSON_HASH_INIT). */
#define CBAD_JSON_HASH_INIT 1469598103934665603ULL
uint64_t cbad_json_hash(uint64_t h, const void *p, size_t n);

#endif /* DL_CBAD_JSON_H */
