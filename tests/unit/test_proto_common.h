/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers the proto/ unit suites share: examples and schemas from the source tree, JSON edits,
 * and the checks every message gets (limits, required fields against its JSON Schema). */
#ifndef DL_TESTS_PROTO_COMMON_H
#define DL_TESTS_PROTO_COMMON_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static inline void *proto_test_malloc(size_t n)
{
	void *p = malloc(n);

	ck_assert_ptr_nonnull(p);
	return p;
}

/* Decodes buf and releases the result; returns the decoder's code. */
typedef int (*proto_test_decode_fn)(const char *buf, size_t len, char *errbuf, size_t errlen);

static inline char *proto_test_read(const char *rel)
{
	const char *root = getenv("DRIFTLOCK_SOURCE_ROOT");
	char path[4096];
	FILE *f;
	long n;
	char *buf;

	ck_assert_msg(root != NULL, "DRIFTLOCK_SOURCE_ROOT is not set (meson test sets it)");
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = proto_test_malloc((size_t)n + 1);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* proto/examples/<msg>.v1.json: the documented example, valid by the schema. */
static inline char *proto_test_example(const char *msg)
{
	char rel[256];

	snprintf(rel, sizeof(rel), "proto/examples/%s.v1.json", msg);
	return proto_test_read(rel);
}

static inline cJSON *proto_test_example_json(const char *msg)
{
	char *text = proto_test_example(msg);
	cJSON *root = cJSON_Parse(text);

	ck_assert_ptr_nonnull(root);
	free(text);
	return root;
}

/* Prints root and decodes it with fn; returns the code, the error in err. */
static inline int proto_test_decode_json(proto_test_decode_fn fn, const cJSON *root, char *err,
					 size_t errlen)
{
	char *text = cJSON_PrintUnformatted(root);
	int rc;

	ck_assert_ptr_nonnull(text);
	err[0] = '\0';
	rc = fn(text, strlen(text), err, errlen);
	free(text);
	return rc;
}

/* The object a dotted path ("a.b[].c") leads to, the last name in *ret_name; "[]" steps into the
 * first array item. NULL if the example lacks a step. */
static inline cJSON *proto_test_walk(cJSON *root, const char *path, char *ret_name, size_t n)
{
	char buf[256], *tok, *save = NULL, *next;
	cJSON *cur = root;

	snprintf(buf, sizeof(buf), "%s", path);
	tok = strtok_r(buf, ".", &save);
	while (tok != NULL) {
		size_t len = strlen(tok);
		int arr = len > 2 && strcmp(tok + len - 2, "[]") == 0;

		next = strtok_r(NULL, ".", &save);
		if (arr)
			tok[len - 2] = '\0';
		if (next == NULL) {
			snprintf(ret_name, n, "%s", tok);
			return cur;
		}
		cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
		if (cur != NULL && arr)
			cur = cJSON_GetArrayItem(cur, 0);
		if (cur == NULL)
			return NULL;
		tok = next;
	}
	return NULL;
}

/* Collects the dotted paths of every "required" member of a JSON Schema object, walking nested
 * "properties" and array "items" ("explanation.evidence[].name"), following local $refs. */
static inline void proto_test_schema_required(const cJSON *schema, const cJSON *node,
					      const char *prefix, char ***set, size_t *n)
{
	const cJSON *ref = cJSON_GetObjectItemCaseSensitive(node, "$ref");
	const cJSON *req, *props, *it;
	char path[256];

	if (cJSON_IsString(ref) && strncmp(ref->valuestring, "#/$defs/", 8) == 0) {
		node = cJSON_GetObjectItemCaseSensitive(
			cJSON_GetObjectItemCaseSensitive(schema, "$defs"), ref->valuestring + 8);
		ck_assert_ptr_nonnull(node);
	}
	req = cJSON_GetObjectItemCaseSensitive(node, "required");
	cJSON_ArrayForEach(it, req) {
		snprintf(path, sizeof(path), "%s%s", prefix, it->valuestring);
		*set = realloc(*set, (*n + 1) * sizeof(**set));
		(*set)[(*n)++] = strdup(path);
	}
	props = cJSON_GetObjectItemCaseSensitive(node, "properties");
	cJSON_ArrayForEach(it, props) {
		const cJSON *items = cJSON_GetObjectItemCaseSensitive(it, "items");

		if (cJSON_GetObjectItemCaseSensitive(it, "properties") != NULL) {
			if (snprintf(path, sizeof(path), "%s%s.", prefix, it->string) >= (int)sizeof(path))
				ck_abort_msg("schema path too long: %s%s", prefix, it->string);
			proto_test_schema_required(schema, it, path, set, n);
		} else if (items != NULL) {
			if (snprintf(path, sizeof(path), "%s%s[].", prefix, it->string) >= (int)sizeof(path))
				ck_abort_msg("schema path too long: %s%s", prefix, it->string);
			proto_test_schema_required(schema, items, path, set, n);
		}
	}
}

static inline int proto_test_in(const char *const *list, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(list[i], s) == 0)
			return 1;
	return 0;
}

/* The schema's required set equals the decoder's list, and removing each required member from
 * the example makes the decoder fail naming exactly that member ("<msg>.a.b[0].c: is required").
 * Also: every schema property that is not required can be removed and the example still decodes. */
static inline void proto_test_required_matches_schema(const char *msg,
						      const char *const *c_required,
						      proto_test_decode_fn fn)
{
	char rel[256], err[512], name[128], expect[300];
	char **set = NULL;
	size_t n = 0, nc = 0, i;
	cJSON *schema, *root, *obj;
	char *text;

	snprintf(rel, sizeof(rel), "proto/schemas/%s.v1.schema.json", msg);
	text = proto_test_read(rel);
	schema = cJSON_Parse(text);
	free(text);
	ck_assert_msg(schema != NULL, "%s is not valid JSON", rel);
	proto_test_schema_required(schema, schema, "", &set, &n);

	while (c_required[nc] != NULL)
		nc++;
	for (i = 0; i < n; i++)
		ck_assert_msg(proto_test_in(c_required, nc, set[i]),
			      "%s requires %s but the C decoder does not list it", rel, set[i]);
	for (i = 0; i < nc; i++)
		ck_assert_msg(proto_test_in((const char *const *)set, n, c_required[i]),
			      "the C decoder requires %s but %s does not", c_required[i], rel);
	ck_assert_int_eq(n, nc);

	for (i = 0; i < nc; i++) {
		const char *p;
		char *q;

		root = proto_test_example_json(msg);
		obj = proto_test_walk(root, c_required[i], name, sizeof(name));
		ck_assert_msg(obj != NULL && cJSON_GetObjectItemCaseSensitive(obj, name) != NULL,
			      "example %s lacks %s", msg, c_required[i]);
		cJSON_DeleteItemFromObjectCaseSensitive(obj, name);
		ck_assert_msg(proto_test_decode_json(fn, root, err, sizeof(err)) < 0,
			      "%s decoded without %s", msg, c_required[i]);
		/* "a[].b" is reported as "a[0].b". */
		q = expect + snprintf(expect, sizeof(expect), "%s.", msg);
		for (p = c_required[i]; *p; p++) {
			if (p[0] == '[' && p[1] == ']') {
				q += sprintf(q, "[0]");
				p++;
			} else {
				*q++ = *p;
			}
		}
		strcpy(q, ": is required");
		ck_assert_str_eq(err, expect);
		cJSON_Delete(root);
	}
	for (i = 0; i < n; i++)
		free(set[i]);
	free(set);
	cJSON_Delete(schema);
}

/* A required-by-schema optional member: removing it keeps the example valid. */
static inline void proto_test_optional_ok(const char *msg, const char *path,
					  proto_test_decode_fn fn)
{
	char err[512], name[128];
	cJSON *root = proto_test_example_json(msg), *obj;

	obj = proto_test_walk(root, path, name, sizeof(name));
	ck_assert_ptr_nonnull(obj);
	ck_assert_ptr_nonnull(cJSON_GetObjectItemCaseSensitive(obj, name));
	cJSON_DeleteItemFromObjectCaseSensitive(obj, name);
	ck_assert_msg(proto_test_decode_json(fn, root, err, sizeof(err)) == 0,
		      "%s without %s: %s", msg, path, err);
	cJSON_Delete(root);
}

/* Replaces member `path` of the example with `json` (NULL: a raw replacement) and expects the
 * decoder to fail with exactly `expect`. */
static inline void proto_test_reject(const char *msg, proto_test_decode_fn fn, const char *path,
				     const char *json, const char *expect)
{
	char err[512], name[128];
	cJSON *root = proto_test_example_json(msg), *obj, *val;

	obj = proto_test_walk(root, path, name, sizeof(name));
	ck_assert_msg(obj != NULL, "bad path %s", path);
	val = cJSON_Parse(json);
	ck_assert_msg(val != NULL, "bad test JSON %s", json);
	if (cJSON_GetObjectItemCaseSensitive(obj, name) != NULL)
		cJSON_ReplaceItemInObjectCaseSensitive(obj, name, val);
	else
		cJSON_AddItemToObject(obj, name, val);
	ck_assert_msg(proto_test_decode_json(fn, root, err, sizeof(err)) < 0,
		      "%s accepted %s = %s", msg, path, json);
	ck_assert_str_eq(err, expect);
	cJSON_Delete(root);
}

/* Limits every message shares: size, depth, malformed text, non-objects, bad UTF-8, trailing
 * data, wrong schema, and unknown members (ignored). */
static inline void proto_test_common_limits(const char *msg, const char *schema_name,
					    size_t max_bytes, int max_depth, proto_test_decode_fn fn)
{
	char err[512], expect[256];
	char *text = proto_test_example(msg), *big, *p;
	size_t len = strlen(text), i;
	cJSON *root;

	/* The example itself decodes. */
	err[0] = '\0';
	ck_assert_msg(fn(text, len, err, sizeof(err)) == 0, "%s example: %s", msg, err);

	/* Truncated: malformed. */
	ck_assert_int_lt(fn(text, len - 2, err, sizeof(err)), 0);
	snprintf(expect, sizeof(expect), "%s: malformed JSON at byte", msg);
	ck_assert_msg(strncmp(err, expect, strlen(expect)) == 0, "%s", err);

	/* Trailing data after the object. */
	big = proto_test_malloc(len + 8);
	memcpy(big, text, len);
	memcpy(big + len, " {}", 3);
	ck_assert_int_lt(fn(big, len + 3, err, sizeof(err)), 0);
	snprintf(expect, sizeof(expect), "%s: unexpected data after the JSON value at byte %zu", msg,
		 len + 1);
	ck_assert_str_eq(err, expect);
	free(big);

	ck_assert_int_lt(fn("[1,2]", 5, err, sizeof(err)), 0);
	snprintf(expect, sizeof(expect), "%s: must be a JSON object", msg);
	ck_assert_str_eq(err, expect);
	ck_assert_int_lt(fn("", 0, err, sizeof(err)), 0);
	snprintf(expect, sizeof(expect), "%s: empty message", msg);
	ck_assert_str_eq(err, expect);

	/* Oversized: one byte over the limit, made of whitespace after a valid example. */
	big = proto_test_malloc(max_bytes + 1);
	memcpy(big, text, len);
	memset(big + len, ' ', max_bytes + 1 - len);
	ck_assert_int_eq(fn(big, max_bytes, err, sizeof(err)), 0);
	ck_assert_int_lt(fn(big, max_bytes + 1, err, sizeof(err)), 0);
	snprintf(expect, sizeof(expect), "%s: message of %zu bytes exceeds the limit of %zu bytes",
		 msg, max_bytes + 1, max_bytes);
	ck_assert_str_eq(err, expect);
	free(big);

	/* Too deep: an unknown member nested to exactly the limit passes, one more level fails. */
	big = proto_test_malloc(len + 2 * (size_t)max_depth + 64);
	for (i = 0; i < 2; i++) {
		int levels = max_depth - 1 + (int)i, d;

		p = big + sprintf(big, "{\"deep\":");
		for (d = 0; d < levels; d++)
			*p++ = '[';
		for (d = 0; d < levels; d++)
			*p++ = ']';
		sprintf(p, ",%s", text + 1);
		err[0] = '\0';
		if (i == 0) {
			ck_assert_msg(fn(big, strlen(big), err, sizeof(err)) == 0, "%s", err);
		} else {
			ck_assert_int_lt(fn(big, strlen(big), err, sizeof(err)), 0);
			snprintf(expect, sizeof(expect),
				 "%s: JSON nesting deeper than %d levels at byte %d", msg, max_depth,
				 8 + max_depth - 1);
			ck_assert_str_eq(err, expect);
		}
	}
	free(big);

	/* Invalid UTF-8 inside a string, and a raw control character. */
	big = proto_test_malloc(len + 64);
	sprintf(big, "{\"x\":\"\xc3\x28\",%s", text + 1);
	ck_assert_int_lt(fn(big, strlen(big), err, sizeof(err)), 0);
	snprintf(expect, sizeof(expect), "%s: invalid UTF-8 at byte 6", msg);
	ck_assert_str_eq(err, expect);
	sprintf(big, "{\"x\":\"a\tb\",%s", text + 1);
	ck_assert_int_lt(fn(big, strlen(big), err, sizeof(err)), 0);
	snprintf(expect, sizeof(expect), "%s: control character in a string at byte 7", msg);
	ck_assert_str_eq(err, expect);
	free(big);

	/* Unknown members, even nested objects, are ignored. */
	root = cJSON_Parse(text);
	cJSON_AddItemToObject(root, "added_in_v1_1", cJSON_Parse("{\"a\":[1,{\"b\":\"\xc3\xa9\"}]}"));
	ck_assert_msg(proto_test_decode_json(fn, root, err, sizeof(err)) == 0, "%s", err);
	cJSON_Delete(root);

	/* The schema member must name this message. */
	snprintf(expect, sizeof(expect), "%s.schema: must be \"%s\"", msg, schema_name);
	proto_test_reject(msg, fn, "schema", "\"driftlock.other.v1\"", expect);
	proto_test_reject(msg, fn, "schema", "2", expect);
	free(text);
}

#endif /* DL_TESTS_PROTO_COMMON_H */
