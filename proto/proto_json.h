/* SPDX-License-Identifier: Apache-2.0 */
/* proto_json: the bounded JSON reading and writing every proto codec shares (size and depth
 * limits, UTF-8 checks, typed fields with errors that name the field). Internal to proto/. */
#ifndef DL_PROTO_JSON_H
#define DL_PROTO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* Largest integer a JSON number carries exactly (2^53 - 1). */
#define PROTO_JSON_INT_MAX INT64_C(9007199254740991)

/* What a string field may contain. Length limits count Unicode code points, as JSON Schema's
 * maxLength does; for the ASCII-only sets that equals bytes. */
enum proto_json_chars {
	PROTO_JSON_TEXT,  /* any UTF-8 text */
	PROTO_JSON_ID,    /* A-Za-z0-9._:- */
	PROTO_JSON_SNAKE, /* a-z0-9_ */
	PROTO_JSON_SLUG,  /* a-z0-9_- */
	PROTO_JSON_TOPIC, /* A-Za-z0-9._- */
	PROTO_JSON_UUID,  /* lowercase UUID text (org ids) */
};

/* Writes "<fmt...>" into errbuf (may be NULL). */
/* Length of the valid UTF-8 sequence starting with the non-ASCII byte at s (2-4), or 0 when it
 * is not one: no overlong forms, surrogates or code points past U+10FFFF. avail bytes exist. */
size_t proto_json_utf8_seq(const unsigned char *s, size_t avail);

/* True when the len bytes at s (no escapes: the text itself) are min_chars..max_chars characters
 * of the ASCII-only set chars (PROTO_JSON_ID, _SNAKE, _SLUG or _TOPIC): the rule
 * proto_json_string applies, for decoders reading a span without a tree. */
bool proto_json_chars_ok(enum proto_json_chars chars, const char *s, size_t len, size_t min_chars,
			 size_t max_chars);

void proto_json_err(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Checks `len` bytes of buf against the message limits and parses them: at most max_bytes, valid
 * UTF-8, no raw control characters inside strings, nesting at most max_depth (checked by a scan
 * before cJSON recurses), one JSON value and nothing after it. If want_object, the value must be
 * an object. `what` names the message in errors ("anomaly: malformed JSON at byte 17").
 * Success: *ret_root owns the tree (cJSON_Delete). Failure: -EINVAL (or -EMSGSIZE for size,
 * -ENOMEM), *ret_root untouched. Thread-safe. */
int proto_json_parse(const char *buf, size_t len, const char *what, size_t max_bytes,
		     int max_depth, bool want_object, cJSON **ret_root, char *errbuf, size_t errlen);

/* Copies the exact bytes of the value of the first top-level member `name` of buf (which
 * proto_json_parse accepted as root) into a new NUL-terminated string (caller frees).
 * Failure: -ENOENT (no such member) or -ENOMEM; outputs untouched. */
int proto_json_raw_member(const char *buf, size_t len, const cJSON *root, const char *name,
			  char **ret_text, size_t *ret_len);

/* Typed members of object `obj` at `path` ("anomaly.explanation"). Each one, when the member is
 * absent: returns -EINVAL "<path>.<name>: is required" if required, else 0 with *ret_present
 * false (ret_present may be NULL). Wrong type, range or content: -EINVAL naming the field and
 * the rule. Outputs are written only on success. */
int proto_json_string(const cJSON *obj, const char *path, const char *name, bool required,
		      enum proto_json_chars chars, size_t min_chars, size_t max_chars, char *dst,
		      size_t dstsz, bool *ret_present, char *errbuf, size_t errlen);
int proto_json_number(const cJSON *obj, const char *path, const char *name, bool required,
		      double min, double max, double *ret, bool *ret_present, char *errbuf,
		      size_t errlen);
int proto_json_int(const cJSON *obj, const char *path, const char *name, bool required,
		   int64_t min, int64_t max, int64_t *ret, bool *ret_present, char *errbuf,
		   size_t errlen);
int proto_json_time(const cJSON *obj, const char *path, const char *name, bool required,
		    int64_t *ret_ms, bool *ret_present, char *errbuf, size_t errlen);
/* names: NULL-terminated list; *ret is the index of the match. */
int proto_json_enum(const cJSON *obj, const char *path, const char *name, bool required,
		    const char *const *names, int *ret, bool *ret_present, char *errbuf,
		    size_t errlen);
/* type: cJSON_Object or cJSON_Array. *ret borrows from obj. */
int proto_json_container(const cJSON *obj, const char *path, const char *name, bool required,
			 int type, const cJSON **ret, char *errbuf, size_t errlen);
/* The "schema" member must equal `expected`. */
int proto_json_schema(const cJSON *obj, const char *path, const char *expected, char *errbuf,
		      size_t errlen);

/* Counts the code points of valid UTF-8. */
size_t proto_json_utf8_chars(const char *s, size_t len);

/* Writers: add a member to obj; -ENOMEM if cJSON cannot allocate, -ERANGE (with "<path>.<name>:
 * ..." in errbuf) for a timestamp outside dl_time's range, -EINVAL for an enum index outside
 * names. */
int proto_json_put_string(cJSON *obj, const char *name, const char *value);
int proto_json_put_number(cJSON *obj, const char *name, double value);
int proto_json_put_time(cJSON *obj, const char *path, const char *name, int64_t ms, char *errbuf,
			size_t errlen);
int proto_json_put_enum(cJSON *obj, const char *path, const char *name, const char *const *names,
			int value, char *errbuf, size_t errlen);

/* Prints root compactly into a malloc'ed string (*ret_json, caller frees) of *ret_len bytes.
 * Failure: -ENOMEM, outputs untouched. */
int proto_json_print(const cJSON *root, char **ret_json, size_t *ret_len);

/* A message's own decoder run as a check: 0 when json is a valid message, else negative with
 * the reason in errbuf. */
typedef int (*proto_json_validate_fn)(const char *json, size_t len, char *errbuf, size_t errlen);

/* Prints root and runs validate on the text, so every encoder applies the same rules as its
 * decoder. Takes ownership of root (always deleted). On success *ret_json (caller frees) and
 * *ret_len are set; on failure they are untouched and the error is validate's or -ENOMEM. */
int proto_json_emit(cJSON *root, proto_json_validate_fn validate, char **ret_json,
		    size_t *ret_len, char *errbuf, size_t errlen);

#endif /* DL_PROTO_JSON_H */
