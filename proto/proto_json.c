/* SPDX-License-Identifier: Apache-2.0 */
/* proto_json: bounded JSON parsing, typed member access and writing for the proto codecs. */
#include "proto/proto_json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_time.h"
#include "proto/proto_topics.h"

void proto_json_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errbuf == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

static int field_err(char *errbuf, size_t errlen, const char *path, const char *name,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Always returns -EINVAL so callers can `return field_err(...)`. */
static int field_err(char *errbuf, size_t errlen, const char *path, const char *name,
		     const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	proto_json_err(errbuf, errlen, "%s.%s: %s", path, name, why);
	return -EINVAL;
}

size_t proto_json_utf8_seq(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xBF;
	size_t n, i;

	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	/* Second-byte limits exclude overlong forms, surrogates and code points past U+10FFFF. */
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (avail < n || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return n;
}

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* One linear pass over the bytes: depth, UTF-8 and control characters in strings, and, when
 * want != SIZE_MAX, the byte span of the value of top-level member number `want`. Grammar is
 * left to cJSON, which only runs once this pass has bounded the depth. */
static int scan(const char *buf, size_t len, const char *what, int max_depth, size_t want,
		size_t *ret_off, size_t *ret_len, char *errbuf, size_t errlen)
{
	const unsigned char *p = (const unsigned char *)buf;
	size_t i = 0, member = 0, vstart = 0, vend;
	int depth = 0, capturing = 0;

	while (i < len) {
		unsigned char c = p[i];

		if (c == '"') {
			for (i++; i < len && p[i] != '"';) {
				if (p[i] == '\\') {
					i += 2;
				} else if (p[i] < 0x20) {
					proto_json_err(errbuf, errlen,
						       "%s: control character in a string at byte %zu",
						       what, i);
					return -EINVAL;
				} else if (p[i] >= 0x80) {
					size_t n = proto_json_utf8_seq(p + i, len - i);

					if (n == 0) {
						proto_json_err(errbuf, errlen,
							       "%s: invalid UTF-8 at byte %zu", what, i);
						return -EINVAL;
					}
					i += n;
				} else {
					i++;
				}
			}
			i++;
			continue;
		}
		switch (c) {
		case '{':
		case '[':
			if (++depth > max_depth) {
				proto_json_err(errbuf, errlen,
					       "%s: JSON nesting deeper than %d levels at byte %zu",
					       what, max_depth, i);
				return -EINVAL;
			}
			break;
		case '}':
		case ']':
			if (depth == 1 && capturing)
				goto out_found;
			depth--;
			break;
		case ':':
			if (depth == 1) {
				if (member == want) {
					capturing = 1;
					vstart = i + 1;
				}
				member++;
			}
			break;
		case ',':
			if (depth == 1 && capturing)
				goto out_found;
			break;
		default:
			break;
		}
		i++;
	}
	return want == SIZE_MAX ? 0 : -ENOENT;

out_found:
	vend = i;
	while (vstart < vend && is_ws(buf[vstart]))
		vstart++;
	while (vend > vstart && is_ws(buf[vend - 1]))
		vend--;
	*ret_off = vstart;
	*ret_len = vend - vstart;
	return 0;
}

int proto_json_parse(const char *buf, size_t len, const char *what, size_t max_bytes,
		     int max_depth, bool want_object, cJSON **ret_root, char *errbuf, size_t errlen)
{
	const char *end = NULL;
	cJSON *root;
	size_t pos;
	int rc;

	if (buf == NULL || len == 0) {
		proto_json_err(errbuf, errlen, "%s: empty message", what);
		return -EINVAL;
	}
	if (len > max_bytes) {
		proto_json_err(errbuf, errlen, "%s: message of %zu bytes exceeds the limit of %zu bytes",
			       what, len, max_bytes);
		return -EMSGSIZE;
	}
	rc = scan(buf, len, what, max_depth, SIZE_MAX, NULL, NULL, errbuf, errlen);
	if (rc < 0)
		return rc;
	root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
	if (root == NULL) {
		pos = (end != NULL && end >= buf && end <= buf + len) ? (size_t)(end - buf) : 0;
		proto_json_err(errbuf, errlen, "%s: malformed JSON at byte %zu", what, pos);
		return -EINVAL;
	}
	for (pos = (size_t)(end - buf); pos < len && is_ws(buf[pos]); pos++)
		;
	if (pos != len) {
		proto_json_err(errbuf, errlen, "%s: unexpected data after the JSON value at byte %zu",
			       what, pos);
		rc = -EINVAL;
		goto out_delete_root;
	}
	if (want_object && !cJSON_IsObject(root)) {
		proto_json_err(errbuf, errlen, "%s: must be a JSON object", what);
		rc = -EINVAL;
		goto out_delete_root;
	}
	*ret_root = root;
	return 0;

out_delete_root:
	cJSON_Delete(root);
	return rc;
}

int proto_json_raw_member(const char *buf, size_t len, const cJSON *root, const char *name,
			  char **ret_text, size_t *ret_len)
{
	const cJSON *it;
	size_t index = 0, off, n;
	char *text;

	/* cJSON keeps members in document order, so the i-th child is the i-th ':' at depth 1. */
	for (it = root->child; it != NULL; it = it->next, index++)
		if (it->string != NULL && strcmp(it->string, name) == 0)
			break;
	if (it == NULL || scan(buf, len, "", INT32_MAX, index, &off, &n, NULL, 0) < 0)
		return -ENOENT;
	text = malloc(n + 1);
	if (text == NULL)
		return -ENOMEM;
	memcpy(text, buf + off, n);
	text[n] = '\0';
	*ret_text = text;
	*ret_len = n;
	return 0;
}

size_t proto_json_utf8_chars(const char *s, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			n++;
	return n;
}

static const cJSON *member(const cJSON *obj, const char *name)
{
	return cJSON_GetObjectItemCaseSensitive(obj, name);
}

/* The common prologue: absent is an error only when required. 1 = present, 0 = absent. */
static int lookup(const cJSON *obj, const char *path, const char *name, bool required,
		  const cJSON **ret, bool *ret_present, char *errbuf, size_t errlen)
{
	const cJSON *it = member(obj, name);

	if (it == NULL) {
		if (required)
			return field_err(errbuf, errlen, path, name, "is required");
		if (ret_present != NULL)
			*ret_present = false;
		return 0;
	}
	*ret = it;
	return 1;
}

static bool chars_ok(enum proto_json_chars chars, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		char c = s[i];
		bool lower = c >= 'a' && c <= 'z', digit = c >= '0' && c <= '9';
		bool upper = c >= 'A' && c <= 'Z';

		switch (chars) {
		case PROTO_JSON_ID:
			if (!(lower || upper || digit || c == '.' || c == '_' || c == ':' || c == '-'))
				return false;
			break;
		case PROTO_JSON_SNAKE:
			if (!(lower || digit || c == '_'))
				return false;
			break;
		case PROTO_JSON_SLUG:
			if (!(lower || digit || c == '_' || c == '-'))
				return false;
			break;
		case PROTO_JSON_TOPIC:
			if (!(lower || upper || digit || c == '.' || c == '_' || c == '-'))
				return false;
			break;
		default:
			break;
		}
	}
	return true;
}

bool proto_json_chars_ok(enum proto_json_chars chars, const char *s, size_t len, size_t min_chars,
			 size_t max_chars)
{
	if (chars == PROTO_JSON_TEXT || chars == PROTO_JSON_UUID)
		return false; /* not ASCII-only sets */
	return len >= min_chars && len <= max_chars && chars_ok(chars, s, len);
}

static const char *chars_name(enum proto_json_chars chars)
{
	switch (chars) {
	case PROTO_JSON_ID:
		return "A-Za-z0-9._:-";
	case PROTO_JSON_SNAKE:
		return "a-z0-9_";
	case PROTO_JSON_SLUG:
		return "a-z0-9_-";
	case PROTO_JSON_TOPIC:
		return "A-Za-z0-9._-";
	default:
		return "";
	}
}

int proto_json_string(const cJSON *obj, const char *path, const char *name, bool required,
		      enum proto_json_chars chars, size_t min_chars, size_t max_chars, char *dst,
		      size_t dstsz, bool *ret_present, char *errbuf, size_t errlen)
{
	const cJSON *it = NULL;
	size_t len, n;
	char why[96];
	int rc;

	rc = lookup(obj, path, name, required, &it, ret_present, errbuf, errlen);
	if (rc <= 0)
		return rc;
	if (!cJSON_IsString(it) || it->valuestring == NULL)
		return field_err(errbuf, errlen, path, name, "must be a string");
	len = strlen(it->valuestring);
	if (chars == PROTO_JSON_UUID) {
		if (proto_topics_check_org_id(it->valuestring, len, why, sizeof(why)) < 0)
			return field_err(errbuf, errlen, path, name, "%s", why);
	} else {
		n = chars == PROTO_JSON_TEXT ? proto_json_utf8_chars(it->valuestring, len) : len;
		if (chars != PROTO_JSON_TEXT && (n < min_chars || n > max_chars ||
						 !chars_ok(chars, it->valuestring, len)))
			return field_err(errbuf, errlen, path, name, "must be %zu-%zu characters of %s",
					 min_chars, max_chars, chars_name(chars));
		if (chars == PROTO_JSON_TEXT && min_chars == 0 && n > max_chars)
			return field_err(errbuf, errlen, path, name,
					 "must be at most %zu characters long", max_chars);
		if (chars == PROTO_JSON_TEXT && (n < min_chars || n > max_chars))
			return field_err(errbuf, errlen, path, name,
					 "must be %zu-%zu characters long", min_chars, max_chars);
	}
	if (len >= dstsz)
		return field_err(errbuf, errlen, path, name, "is too long");
	memcpy(dst, it->valuestring, len + 1);
	if (ret_present != NULL)
		*ret_present = true;
	return 0;
}

int proto_json_number(const cJSON *obj, const char *path, const char *name, bool required,
		      double min, double max, double *ret, bool *ret_present, char *errbuf,
		      size_t errlen)
{
	const cJSON *it = NULL;
	int rc;

	rc = lookup(obj, path, name, required, &it, ret_present, errbuf, errlen);
	if (rc <= 0)
		return rc;
	if (!cJSON_IsNumber(it))
		return field_err(errbuf, errlen, path, name, "must be a number");
	if (!isfinite(it->valuedouble))
		return field_err(errbuf, errlen, path, name, "must be a finite number");
	if (it->valuedouble < min || it->valuedouble > max) {
		if (isinf(max))
			return field_err(errbuf, errlen, path, name, "must be >= %g", min);
		return field_err(errbuf, errlen, path, name, "must be between %g and %g", min, max);
	}
	*ret = it->valuedouble;
	if (ret_present != NULL)
		*ret_present = true;
	return 0;
}

int proto_json_int(const cJSON *obj, const char *path, const char *name, bool required,
		   int64_t min, int64_t max, int64_t *ret, bool *ret_present, char *errbuf,
		   size_t errlen)
{
	const cJSON *it = NULL;
	double v;
	int rc;

	rc = lookup(obj, path, name, required, &it, ret_present, errbuf, errlen);
	if (rc <= 0)
		return rc;
	if (!cJSON_IsNumber(it))
		return field_err(errbuf, errlen, path, name, "must be an integer");
	v = it->valuedouble;
	if (!isfinite(v) || floor(v) != v)
		return field_err(errbuf, errlen, path, name, "must be an integer");
	if (v < (double)min || v > (double)max) {
		if (max >= PROTO_JSON_INT_MAX && v < (double)min)
			return field_err(errbuf, errlen, path, name, "must be an integer >= %lld",
					 (long long)min);
		return field_err(errbuf, errlen, path, name, "must be an integer between %lld and %lld",
				 (long long)min, (long long)max);
	}
	*ret = (int64_t)v;
	if (ret_present != NULL)
		*ret_present = true;
	return 0;
}

int proto_json_time(const cJSON *obj, const char *path, const char *name, bool required,
		    int64_t *ret_ms, bool *ret_present, char *errbuf, size_t errlen)
{
	const cJSON *it = NULL;
	char why[128];
	int64_t ms;
	int rc;

	rc = lookup(obj, path, name, required, &it, ret_present, errbuf, errlen);
	if (rc <= 0)
		return rc;
	if (!cJSON_IsString(it) || it->valuestring == NULL)
		return field_err(errbuf, errlen, path, name,
				 "must be an RFC 3339 timestamp string");
	if (dl_time_parse_rfc3339(it->valuestring, strlen(it->valuestring), &ms, why,
				  sizeof(why)) < 0)
		return field_err(errbuf, errlen, path, name, "%s", why);
	*ret_ms = ms;
	if (ret_present != NULL)
		*ret_present = true;
	return 0;
}

int proto_json_enum(const cJSON *obj, const char *path, const char *name, bool required,
		    const char *const *names, int *ret, bool *ret_present, char *errbuf,
		    size_t errlen)
{
	const cJSON *it = NULL;
	char list[256] = "";
	size_t used = 0;
	int rc, i;

	rc = lookup(obj, path, name, required, &it, ret_present, errbuf, errlen);
	if (rc <= 0)
		return rc;
	if (cJSON_IsString(it) && it->valuestring != NULL) {
		for (i = 0; names[i] != NULL; i++) {
			if (strcmp(names[i], it->valuestring) == 0) {
				*ret = i;
				if (ret_present != NULL)
					*ret_present = true;
				return 0;
			}
		}
	}
	for (i = 0; names[i] != NULL && used < sizeof(list); i++)
		used += (size_t)snprintf(list + used, sizeof(list) - used, "%s\"%s\"",
					 i ? ", " : "", names[i]);
	return field_err(errbuf, errlen, path, name, "must be one of %s", list);
}

int proto_json_container(const cJSON *obj, const char *path, const char *name, bool required,
			 int type, const cJSON **ret, char *errbuf, size_t errlen)
{
	const cJSON *it = NULL;
	int rc;

	rc = lookup(obj, path, name, required, &it, NULL, errbuf, errlen);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		*ret = NULL;
		return 0;
	}
	if (type == cJSON_Object && !cJSON_IsObject(it))
		return field_err(errbuf, errlen, path, name, "must be an object");
	if (type == cJSON_Array && !cJSON_IsArray(it))
		return field_err(errbuf, errlen, path, name, "must be an array");
	*ret = it;
	return 0;
}

int proto_json_schema(const cJSON *obj, const char *path, const char *expected, char *errbuf,
		      size_t errlen)
{
	const cJSON *it = member(obj, "schema");

	if (it == NULL)
		return field_err(errbuf, errlen, path, "schema", "is required");
	if (!cJSON_IsString(it) || it->valuestring == NULL || strcmp(it->valuestring, expected) != 0)
		return field_err(errbuf, errlen, path, "schema", "must be \"%s\"", expected);
	return 0;
}

int proto_json_put_string(cJSON *obj, const char *name, const char *value)
{
	return cJSON_AddStringToObject(obj, name, value) != NULL ? 0 : -ENOMEM;
}

int proto_json_put_number(cJSON *obj, const char *name, double value)
{
	char buf[32];
	int prec;

	/* cJSON prints 15 digits and accepts an approximate read-back; we want the shortest text
	 * that reads back to exactly the same double. Non-finite values become null, which every
	 * decoder rejects as "must be a number". */
	if (!isfinite(value))
		return cJSON_AddNullToObject(obj, name) != NULL ? 0 : -ENOMEM;
	for (prec = 15; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, value);
		if (strtod(buf, NULL) == value)
			break;
	}
	return cJSON_AddRawToObject(obj, name, buf) != NULL ? 0 : -ENOMEM;
}

int proto_json_put_time(cJSON *obj, const char *path, const char *name, int64_t ms, char *errbuf,
			size_t errlen)
{
	char buf[DL_TIME_RFC3339_BUFSZ], why[128];

	if (dl_time_format_rfc3339(ms, buf, sizeof(buf), why, sizeof(why)) < 0) {
		proto_json_err(errbuf, errlen, "%s.%s: %s", path, name, why);
		return -ERANGE;
	}
	return proto_json_put_string(obj, name, buf);
}

int proto_json_put_enum(cJSON *obj, const char *path, const char *name, const char *const *names,
			int value, char *errbuf, size_t errlen)
{
	int n;

	for (n = 0; names[n] != NULL; n++)
		;
	if (value < 0 || value >= n) {
		proto_json_err(errbuf, errlen, "%s.%s: invalid enum value %d", path, name, value);
		return -EINVAL;
	}
	return proto_json_put_string(obj, name, names[value]);
}

int proto_json_print(const cJSON *root, char **ret_json, size_t *ret_len)
{
	char *s = cJSON_PrintUnformatted(root);

	if (s == NULL)
		return -ENOMEM;
	*ret_json = s;
	*ret_len = strlen(s);
	return 0;
}

int proto_json_emit(cJSON *root, proto_json_validate_fn validate, char **ret_json,
		    size_t *ret_len, char *errbuf, size_t errlen)
{
	char *json;
	size_t n;
	int rc;

	rc = proto_json_print(root, &json, &n);
	if (rc < 0)
		goto out_delete_root;
	rc = validate(json, n, errbuf, errlen);
	if (rc < 0) {
		free(json);
		goto out_delete_root;
	}
	*ret_json = json;
	*ret_len = n;
out_delete_root:
	cJSON_Delete(root);
	return rc;
}
