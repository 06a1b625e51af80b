/* SPDX-License-Identifier: Apache-2.0 */
/* test_ingest_read: the read API's query parameters, page cursors and PATCH/PUT bodies. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "services/ingest/ingest_read_params.h"

/* Query parameters as a NULL-terminated list of name, value pairs. */
static const char *get_pair(void *src, const char *name)
{
	const char *const *kv = src;

	for (; kv[0]; kv += 2)
		if (!strcmp(kv[0], name))
			return kv[1];
	return NULL;
}

#define Q(...) ((void *)(const char *const[]){ __VA_ARGS__, NULL })

static int aq(void *src, ingest_anomaly_query *q, char *param, char *err)
{
	return ingest_read_parse_anomaly_query(get_pair, src, q, param, 32, err, 320);
}

START_TEST(test_anomaly_query_defaults)
{
	ingest_anomaly_query q;
	char param[32] = "", err[320] = "";

	ck_assert_int_eq(aq(Q(NULL), &q, param, err), 0);
	ck_assert_int_eq(q.limit, 50);
	ck_assert(!q.has_stream && !q.has_status && !q.has_from && !q.has_to);
	ck_assert(!q.has_min_score && !q.has_cursor);
	ck_assert_uint_eq(q.severity_mask, 0);
}
END_TEST

START_TEST(test_anomaly_query_all_filters)
{
	ingest_anomaly_query q;
	char param[32] = "", err[320] = "";

	ck_assert_int_eq(aq(Q("stream", "checkout.api", "severity", "high,critical", "status",
			      "acknowledged", "from", "2026-11-26T17:00:00Z", "to",
			      "2026-11-26T18:00:00.5+01:00", "min_score", "2.5", "limit", "500"),
			    &q, param, err),
			 0);
	ck_assert(q.has_stream);
	ck_assert_str_eq(q.stream, "checkout.api");
	ck_assert_uint_eq(q.severity_mask, INGEST_SEV_HIGH | INGEST_SEV_CRITICAL);
	ck_assert_str_eq(q.status, "acknowledged");
	ck_assert_int_eq(q.from_ms, 1795712400000LL);
	/* 18:00:00.5 at +01:00 is 17:00:00.500 UTC. */
	ck_assert_int_eq(q.to_ms, 1795712400500LL);
	ck_assert_double_eq(q.min_score, 2.5);
	ck_assert_int_eq(q.limit, 500);
}
END_TEST

/* Each bad value is refused naming its parameter. */
START_TEST(test_anomaly_query_rejections)
{
	static const struct {
		const char *name, *value;
	} cases[] = {
		{ "limit", "0" },        { "limit", "501" },      { "limit", "-1" },
		{ "limit", "ten" },      { "limit", "" },         { "limit", "5x" },
		{ "limit", "+5" },       { "severity", "urgent" }, { "severity", "high," },
		{ "severity", "" },      { "severity", ",low" },  { "status", "open" },
		{ "status", "" },        { "from", "yesterday" }, { "from", "2026-02-30T00:00:00Z" },
		{ "to", "1764179707123" }, { "min_score", "-1" }, { "min_score", "nan" },
		{ "min_score", "inf" },  { "min_score", "0x10" }, { "min_score", "" },
		{ "min_score", "1e999" }, { "stream", "" },       { "stream", "a b" },
		{ "cursor", "!!!" },     { "cursor", "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ingest_anomaly_query q;
		char param[32] = "", err[320] = "";

		ck_assert_msg(aq(Q(cases[i].name, cases[i].value), &q, param, err) == -EINVAL,
			      "%s=%s accepted", cases[i].name, cases[i].value);
		ck_assert_str_eq(param, cases[i].name);
		ck_assert_msg(!strncmp(err, cases[i].name, strlen(cases[i].name)),
			      "message \"%s\" does not name %s", err, cases[i].name);
	}
}
END_TEST

START_TEST(test_anomaly_query_range_order)
{
	ingest_anomaly_query q;
	char param[32] = "", err[320] = "";

	ck_assert_int_eq(aq(Q("from", "2026-01-02T00:00:00Z", "to", "2026-01-01T00:00:00Z"), &q,
			    param, err),
			 -EINVAL);
	ck_assert_str_eq(param, "to");
	ck_assert_int_eq(aq(Q("from", "2026-01-01T00:00:00Z", "to", "2026-01-01T00:00:00Z"), &q,
			    param, err),
			 -EINVAL);
}
END_TEST

START_TEST(test_cursor_round_trip)
{
	ingest_read_cursor c = { .key = 1764179707123456LL, .id = "5f0c1a2b-3c4d:8e5f.9a6b_x" }, d;
	ingest_read_cursor neg = { .key = -5, .id = "a" };
	char text[INGEST_READ_CURSOR_MAX + 1];

	ck_assert_int_eq(ingest_read_cursor_encode('a', &c, text, sizeof(text)), 0);
	/* base64url without padding: safe in a query string as is. */
	ck_assert_uint_eq(strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				       "0123456789-_"),
			  strlen(text));
	memset(&d, 0, sizeof(d));
	ck_assert_int_eq(ingest_read_cursor_decode('a', text, &d), 0);
	ck_assert_int_eq(d.key, c.key);
	ck_assert_str_eq(d.id, c.id);
	/* A stream cursor is not an anomaly cursor. */
	ck_assert_int_eq(ingest_read_cursor_decode('s', text, &d), -EINVAL);
	ck_assert_int_eq(ingest_read_cursor_encode('s', &neg, text, sizeof(text)), 0);
	ck_assert_int_eq(ingest_read_cursor_decode('s', text, &d), 0);
	ck_assert_int_eq(d.key, -5);
	ck_assert_str_eq(d.id, "a");
	/* Every id length 1..128 round-trips (all padding cases). */
	for (int n = 1; n <= 128; n++) {
		ingest_read_cursor e = { .key = n };

		memset(e.id, 'z', (size_t)n);
		e.id[n] = '\0';
		ck_assert_int_eq(ingest_read_cursor_encode('a', &e, text, sizeof(text)), 0);
		ck_assert_int_eq(ingest_read_cursor_decode('a', text, &d), 0);
		ck_assert_str_eq(d.id, e.id);
		ck_assert_int_eq(d.key, n);
	}
	ck_assert_int_eq(ingest_read_cursor_encode('a', &c, text, 8), -ENOSPC);
}
END_TEST

/* base64url of a chosen plaintext, to feed the decoder forged cursors. */
static void forge(const char *plain, char *out)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = (const unsigned char *)plain;
	size_t n = strlen(plain), o = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);

		out[o++] = al[v >> 18 & 63];
		out[o++] = al[v >> 12 & 63];
		if (i + 1 < n)
			out[o++] = al[v >> 6 & 63];
		if (i + 2 < n)
			out[o++] = al[v & 63];
	}
	out[o] = '\0';
}

START_TEST(test_cursor_forgeries)
{
	static const char *const bad[] = {
		"a1:12:",       "a1::x",         "a1:1x:id",      "a2:1:id",     "a1:1:bad id",
		"a1:-:id",      "a1:99999999999999999999:id",    "b1:1:id",     "a1",
		"a1:1:id'--",   "a1:+1:id",
	};
	ingest_read_cursor d = { .key = 7, .id = "keep" };
	char text[INGEST_READ_CURSOR_MAX + 8], big[INGEST_READ_CURSOR_MAX + 2];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		forge(bad[i], text);
		ck_assert_msg(ingest_read_cursor_decode('a', text, &d) == -EINVAL, "%s accepted",
			      bad[i]);
	}
	forge("a1:42:ok", text);
	ck_assert_int_eq(ingest_read_cursor_decode('a', text, &d), 0);
	ck_assert_int_eq(d.key, 42);
	/* Standard base64 characters and padding are not base64url. */
	ck_assert_int_eq(ingest_read_cursor_decode('a', "YTE6NDI6b2s=", &d), -EINVAL);
	ck_assert_int_eq(ingest_read_cursor_decode('a', "YTE+NDI6b2s", &d), -EINVAL);
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(ingest_read_cursor_decode('a', big, &d), -EINVAL);
	/* An embedded NUL byte ("a1:1:i\0d") is refused. */
	ck_assert_int_eq(ingest_read_cursor_decode('a', "YTE6MTppAGQ", &d), -EINVAL);
	ck_assert_int_eq(d.key, 42);
}
END_TEST

START_TEST(test_stream_query)
{
	ingest_stream_query q;
	ingest_read_cursor c = { .key = 0, .id = "web.logs" };
	char param[32] = "", err[320] = "", text[INGEST_READ_CURSOR_MAX + 1];

	ck_assert_int_eq(ingest_read_cursor_encode('s', &c, text, sizeof(text)), 0);
	ck_assert_int_eq(ingest_read_parse_stream_query(get_pair, Q("cursor", text, "limit", "7"),
							&q, param, 32, err, 320),
			 0);
	ck_assert(q.has_cursor);
	ck_assert_str_eq(q.cursor.id, "web.logs");
	ck_assert_int_eq(q.limit, 7);
	ck_assert_int_eq(ingest_read_parse_stream_query(get_pair, Q("limit", "1000"), &q, param,
							32, err, 320),
			 -EINVAL);
	ck_assert_str_eq(param, "limit");
}
END_TEST

static int patch(const char *json, ingest_anomaly_patch *p, char *err)
{
	cJSON *b = cJSON_Parse(json);
	int r;

	ck_assert_ptr_nonnull(b);
	r = ingest_read_parse_anomaly_patch(b, p, err, 320);
	cJSON_Delete(b);
	return r;
}

START_TEST(test_patch_body)
{
	ingest_anomaly_patch p;
	char err[320] = "", big[1100 * 3 + 64], *w;

	ck_assert_int_eq(patch("{\"status\":\"resolved\",\"note\":\"fixed in v2 \\u00e9\"}", &p,
			       err),
			 0);
	ck_assert_str_eq(p.status, "resolved");
	ck_assert(p.has_note && !p.note_null);
	ck_assert_str_eq(p.note, "fixed in v2 \xc3\xa9");
	ck_assert_int_eq(patch("{\"status\":\"new\",\"note\":null}", &p, err), 0);
	ck_assert(p.has_note && p.note_null);
	ck_assert_int_eq(patch("{\"status\":\"dismissed\"}", &p, err), 0);
	ck_assert(!p.has_note);

	ck_assert_int_eq(patch("{\"note\":\"x\"}", &p, err), -EINVAL);
	ck_assert_str_eq(err, "status: is required");
	ck_assert_int_eq(patch("{\"status\":\"closed\"}", &p, err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "status:"));
	ck_assert_int_eq(patch("{\"status\":1}", &p, err), -EINVAL);
	ck_assert_int_eq(patch("{\"status\":\"new\",\"note\":5}", &p, err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "note:"));
	ck_assert_int_eq(patch("{\"status\":\"new\",\"owner\":\"bob\"}", &p, err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "owner"));
	ck_assert_int_eq(patch("[1]", &p, err), -EINVAL);
	/* 1024 characters (3-byte each) pass, 1025 do not: characters, not bytes. */
	w = big + sprintf(big, "{\"status\":\"new\",\"note\":\"");
	for (int i = 0; i < 1024; i++)
		w += sprintf(w, "\xe2\x82\xac");
	strcpy(w, "\"}");
	ck_assert_int_eq(patch(big, &p, err), 0);
	strcpy(w, "x\"}");
	ck_assert_int_eq(patch(big, &p, err), -EINVAL);
	ck_assert_str_eq(err, "note: must be at most 1024 characters");
	/* A lone surrogate escape decodes to invalid UTF-8. */
	ck_assert_int_eq(patch("{\"status\":\"new\",\"note\":\"\xed\xa0\x80\"}", &p, err), -EINVAL);
	ck_assert_str_eq(err, "note: must be valid UTF-8");
}
END_TEST

static int put(const char *json, ingest_stream_put *p, char *err)
{
	cJSON *b = cJSON_Parse(json);
	int r;

	ck_assert_ptr_nonnull(b);
	r = ingest_read_parse_stream_put(b, p, err, 320);
	cJSON_Delete(b);
	return r;
}

START_TEST(test_put_body)
{
	ingest_stream_put p;
	char err[320] = "";

	ck_assert_int_eq(put("{\"sensitivity\":0.8}", &p, err), 0);
	ck_assert(p.has_sensitivity && !p.sensitivity_null);
	ck_assert_double_eq(p.sensitivity, 0.8);
	ck_assert_ptr_null(p.settings_json);
	ingest_stream_put_clear(&p);

	ck_assert_int_eq(put("{\"sensitivity\":null,\"settings\":{\"entity_fields\":[\"user.id\"],"
			     "\"window_events\":400,\"mask\":[\"uuids\",\"ips\"]}}",
			     &p, err),
			 0);
	ck_assert(p.has_sensitivity && p.sensitivity_null);
	ck_assert_ptr_nonnull(p.settings_json);
	ck_assert_ptr_nonnull(strstr(p.settings_json, "\"window_events\":400"));
	ingest_stream_put_clear(&p);
	ck_assert_ptr_null(p.settings_json);

	ck_assert_int_eq(put("{\"settings\":{}}", &p, err), 0);
	ck_assert_str_eq(p.settings_json, "{}");
	ingest_stream_put_clear(&p);
}
END_TEST

START_TEST(test_put_rejections)
{
	static const struct {
		const char *json, *expect;
	} cases[] = {
		{ "{}", "body: must set sensitivity, settings or both" },
		{ "{\"sensitivity\":1.5}", "sensitivity:" },
		{ "{\"sensitivity\":-0.1}", "sensitivity:" },
		{ "{\"sensitivity\":\"high\"}", "sensitivity:" },
		{ "{\"settings\":[]}", "settings: must be a JSON object" },
		{ "{\"settings\":{\"colour\":1}}", "settings.colour: unknown setting" },
		{ "{\"settings\":{\"window_events\":8}}", "settings.window_events: must be 16..65536" },
		{ "{\"settings\":{\"window_events\":\"400\"}}", "settings.window_events:" },
		{ "{\"settings\":{\"window_events\":1.5}}", "settings.window_events:" },
		{ "{\"settings\":{\"hop_events\":5000}}", "settings.hop_events:" },
		{ "{\"settings\":{\"zstd_level\":20}}", "settings.zstd_level:" },
		{ "{\"settings\":{\"mask\":[\"phones\"]}}", "settings.mask:" },
		{ "{\"settings\":{\"entity_fields\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}",
		  "settings.entity_fields:" },
		{ "{\"settings\":{\"sensitivity\":0.2}}", "settings.sensitivity:" },
		{ "{\"sensitivity\":0.5,\"paused\":true}", "body: unknown member \"paused\"" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ingest_stream_put p = { .settings_json = NULL };
		char err[320] = "";

		ck_assert_msg(put(cases[i].json, &p, err) == -EINVAL, "%s accepted",
			      cases[i].json);
		ck_assert_msg(!strncmp(err, cases[i].expect, strlen(cases[i].expect)),
			      "%s: got \"%s\", want \"%s...\"", cases[i].json, err,
			      cases[i].expect);
		/* Refused: nothing allocated, *ret untouched. */
		ck_assert_ptr_null(p.settings_json);
	}
}
END_TEST

START_TEST(test_put_settings_size)
{
	/* 16 value fields of 63 bytes fit; the byte cap is checked on the JSON as stored. */
	char json[4096], *w = json;
	ingest_stream_put p;
	char err[320] = "";

	w += sprintf(w, "{\"settings\":{\"value_fields\":[");
	for (int i = 0; i < 16; i++)
		w += sprintf(w, "%s\"%063d\"", i ? "," : "", i);
	strcpy(w, "]}}");
	ck_assert_int_eq(put(json, &p, err), 0);
	ck_assert_uint_le(strlen(p.settings_json), INGEST_READ_SETTINGS_MAX);
	ingest_stream_put_clear(&p);
}
END_TEST

static Suite *ingest_read_suite(void)
{
	Suite *s = suite_create("ingest_read");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_anomaly_query_defaults);
	tcase_add_test(tc, test_anomaly_query_all_filters);
	tcase_add_test(tc, test_anomaly_query_rejections);
	tcase_add_test(tc, test_anomaly_query_range_order);
	tcase_add_test(tc, test_cursor_round_trip);
	tcase_add_test(tc, test_cursor_forgeries);
	tcase_add_test(tc, test_stream_query);
	tcase_add_test(tc, test_patch_body);
	tcase_add_test(tc, test_put_body);
	tcase_add_test(tc, test_put_rejections);
	tcase_add_test(tc, test_put_settings_size);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ingest_read_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
