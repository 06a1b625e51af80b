/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for proto/proto_event: the event envelope codec and its JSON Schema. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_time.h"
#include "proto/proto_event.h"
#include "test_proto_common.h"

#define ORG "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f"

static int decode_fn(const char *buf, size_t len, char *err, size_t errlen)
{
	struct proto_event ev;
	int rc = proto_event_decode(buf, len, &ev, err, errlen);

	if (rc == 0)
		proto_event_free(&ev);
	return rc;
}

static void fill(struct proto_event *ev, const char *payload)
{
	memset(ev, 0, sizeof(*ev));
	strcpy(ev->id, "0193a6c2-7f1e-7b3a-9c4d-5e6f7a8b9c0d");
	strcpy(ev->org_id, ORG);
	strcpy(ev->stream, "checkout-api.logs");
	ev->ts_ms = INT64_C(1795715707123);
	ev->received_at_ms = INT64_C(1795715707180);
	ev->source = PROTO_EVENT_SOURCE_KAFKA;
	ev->payload = strdup(payload);
	ev->payload_len = strlen(payload);
}

START_TEST(test_round_trip)
{
	/* Spacing, number spelling and escapes must survive byte for byte. */
	static const char payload[] = "{ \"msg\" : \"caf\\u00e9 \xe2\x82\xac\", \"latency\": 81.50, \"n\": 1e3 }";
	struct proto_event in, out;
	char err[256], *json = NULL;
	size_t len = 0, i;

	fill(&in, payload);
	in.nattributes = 2;
	strcpy(in.attributes[0].key, "host");
	strcpy(in.attributes[0].value, "web-3");
	strcpy(in.attributes[1].key, "note");
	strcpy(in.attributes[1].value, "quote \" and \xc3\xa9");
	ck_assert_int_eq(proto_event_encode(&in, &json, &len, err, sizeof(err)), 0);
	ck_assert_int_eq(strlen(json), len);
	ck_assert_ptr_nonnull(strstr(json, "\"ts\":\"2026-11-26T17:55:07.123Z\""));
	ck_assert_ptr_nonnull(strstr(json, "\"schema\":\"driftlock.event.v1\""));
	ck_assert_ptr_nonnull(strstr(json, payload));

	ck_assert_int_eq(proto_event_decode(json, len, &out, err, sizeof(err)), 0);
	ck_assert_str_eq(out.id, in.id);
	ck_assert_str_eq(out.org_id, in.org_id);
	ck_assert_str_eq(out.stream, in.stream);
	ck_assert_int_eq(out.ts_ms, in.ts_ms);
	ck_assert_int_eq(out.received_at_ms, in.received_at_ms);
	ck_assert_int_eq(out.source, PROTO_EVENT_SOURCE_KAFKA);
	ck_assert_str_eq(out.payload, payload);
	ck_assert_int_eq(out.payload_len, strlen(payload));
	ck_assert_int_eq(out.nattributes, 2);
	for (i = 0; i < 2; i++) {
		ck_assert_str_eq(out.attributes[i].key, in.attributes[i].key);
		ck_assert_str_eq(out.attributes[i].value, in.attributes[i].value);
	}
	proto_event_free(&out);
	ck_assert_ptr_null(out.payload);
	proto_event_free(&in);
	proto_event_free(NULL);
	free(json);
}
END_TEST

START_TEST(test_example_keeps_payload_bytes)
{
	char *text = proto_test_example("event"), err[256];
	const char *expect = "{\"level\": \"error\", \"msg\": \"card declined\", \"status\": 402, "
			     "\"latency_ms\": 81.50, \"user\": {\"id\": \"u_42\", \"tags\": [\"pro\", \"eu\"]}}";
	struct proto_event ev;

	ck_assert_int_eq(proto_event_decode(text, strlen(text), &ev, err, sizeof(err)), 0);
	ck_assert_str_eq(ev.payload, expect);
	ck_assert_int_eq(ev.source, PROTO_EVENT_SOURCE_HTTP);
	ck_assert_int_eq(ev.nattributes, 2);
	ck_assert_str_eq(ev.attributes[1].key, "region");
	ck_assert_str_eq(ev.attributes[1].value, "eu-west-1");
	proto_event_free(&ev);
	free(text);
}
END_TEST

START_TEST(test_payload_forms)
{
	static const char *payloads[] = {
		"\"GET /checkout 502 \\\"upstream\\\" 81ms\"", "42.0", "null", "true", "[1, [2], {}]",
		"\"\"", "{}",
	};
	struct proto_event in, out;
	char err[256], *json;
	size_t len, i;

	for (i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
		fill(&in, payloads[i]);
		ck_assert_msg(proto_event_encode(&in, &json, &len, err, sizeof(err)) == 0, "%s", err);
		ck_assert_int_eq(proto_event_decode(json, len, &out, err, sizeof(err)), 0);
		ck_assert_str_eq(out.payload, payloads[i]);
		proto_event_free(&out);
		proto_event_free(&in);
		free(json);
	}
	/* Whitespace around the value is not part of it. */
	{
		const char *t = "{\"schema\":\"driftlock.event.v1\",\"payload\" :\n [ 1 ] \n,\"id\":\"e1\","
				"\"org_id\":\"" ORG "\",\"stream\":\"s\",\"ts\":\"2026-11-26T18:55:07.5+01:00\","
				"\"received_at\":\"2026-11-26T17:55:07Z\",\"source\":\"http\"}";

		ck_assert_int_eq(proto_event_decode(t, strlen(t), &out, err, sizeof(err)), 0);
		ck_assert_str_eq(out.payload, "[ 1 ]");
		ck_assert_int_eq(out.ts_ms, INT64_C(1795715707500));
		ck_assert_int_eq(out.nattributes, 0);
		proto_event_free(&out);
	}
}
END_TEST

START_TEST(test_rejects_bad_fields)
{
	char long_stream[140];

	memset(long_stream, 'a', 131);
	long_stream[0] = '"';
	long_stream[130] = '"';
	long_stream[131] = '\0';
	proto_test_reject("event", decode_fn, "id", "12", "event.id: must be a string");
	proto_test_reject("event", decode_fn, "id", "\"\"",
			  "event.id: must be 1-128 characters of A-Za-z0-9._:-");
	proto_test_reject("event", decode_fn, "stream", "\"bad stream!\"",
			  "event.stream: must be 1-128 characters of A-Za-z0-9._:-");
	proto_test_reject("event", decode_fn, "stream", long_stream,
			  "event.stream: must be 1-128 characters of A-Za-z0-9._:-");
	proto_test_reject("event", decode_fn, "org_id", "\"0B7E4F3C-5A1D-4C8E-9F2A-1D3E5B7C9A0F\"",
			  "event.org_id: must be a lowercase UUID (8-4-4-4-12 hex digits)");
	proto_test_reject("event", decode_fn, "org_id", "\"acme\"",
			  "event.org_id: must be a lowercase UUID (8-4-4-4-12 hex digits)");
	proto_test_reject("event", decode_fn, "ts", "\"yesterday\"",
			  "event.ts: not an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS[.sss](Z|+hh:mm))");
	proto_test_reject("event", decode_fn, "ts", "1795715707123",
			  "event.ts: must be an RFC 3339 timestamp string");
	proto_test_reject("event", decode_fn, "received_at", "\"2026-02-30T00:00:00Z\"",
			  "event.received_at: day 30 does not exist in 2026-02");
	proto_test_reject("event", decode_fn, "source", "\"ftp\"",
			  "event.source: must be one of \"http\", \"kafka\"");
	proto_test_reject("event", decode_fn, "source", "null",
			  "event.source: must be one of \"http\", \"kafka\"");
	proto_test_reject("event", decode_fn, "attributes", "[]",
			  "event.attributes: must be an object");
	proto_test_reject("event", decode_fn, "attributes.host", "3",
			  "event.attributes.host: must be a string");
	proto_test_reject("event", decode_fn, "attributes", "{\"bad key\":\"v\"}",
			  "event.attributes: keys must be 1-64 characters of A-Za-z0-9._:-");
	proto_test_reject("event", decode_fn, "attributes", "{\"a\":\"1\",\"a\":\"2\"}",
			  "event.attributes: duplicate key \"a\"");
}
END_TEST

START_TEST(test_attribute_limits)
{
	char json[8192], *p, err[256];
	cJSON *root;
	int i;

	p = json + sprintf(json, "{");
	for (i = 0; i < PROTO_EVENT_ATTRS_MAX + 1; i++)
		p += sprintf(p, "%s\"k%d\":\"v\"", i ? "," : "", i);
	strcpy(p, "}");
	proto_test_reject("event", decode_fn, "attributes", json,
			  "event.attributes: must have at most 32 members");
	/* Exactly 32 pass. */
	root = proto_test_example_json("event");
	strcpy(strrchr(json, ','), "}");
	cJSON_ReplaceItemInObjectCaseSensitive(root, "attributes", cJSON_Parse(json));
	ck_assert_msg(proto_test_decode_json(decode_fn, root, err, sizeof(err)) == 0, "%s", err);
	cJSON_Delete(root);

	/* Values: 256 characters (multi-byte ones count once) pass, 257 fail. */
	p = json + sprintf(json, "\"");
	for (i = 0; i < PROTO_EVENT_ATTR_VALUE_MAX; i++)
		p += sprintf(p, "\xc3\xa9");
	strcpy(p, "\"");
	root = proto_test_example_json("event");
	cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItem(root, "attributes"), "host",
					       cJSON_Parse(json));
	ck_assert_msg(proto_test_decode_json(decode_fn, root, err, sizeof(err)) == 0, "%s", err);
	cJSON_Delete(root);
	strcpy(p, "x\"");
	proto_test_reject("event", decode_fn, "attributes.host", json,
			  "event.attributes.host: must be at most 256 characters long");
}
END_TEST

START_TEST(test_payload_depth)
{
	/* The envelope is level 1, so the payload may nest 31 levels, not 32. */
	char buf[512], *p, err[256];
	int levels, d;

	for (levels = PROTO_EVENT_MAX_DEPTH - 1; levels <= PROTO_EVENT_MAX_DEPTH; levels++) {
		p = buf + sprintf(buf, "{\"schema\":\"driftlock.event.v1\",\"id\":\"e\",\"org_id\":\"" ORG
				  "\",\"stream\":\"s\",\"ts\":\"2026-11-26T17:55:07Z\",\"received_at\":"
				  "\"2026-11-26T17:55:07Z\",\"source\":\"http\",\"payload\":");
		for (d = 0; d < levels; d++)
			*p++ = '[';
		for (d = 0; d < levels; d++)
			*p++ = ']';
		strcpy(p, "}");
		err[0] = '\0';
		if (levels < PROTO_EVENT_MAX_DEPTH) {
			ck_assert_msg(decode_fn(buf, strlen(buf), err, sizeof(err)) == 0, "%s", err);
		} else {
			ck_assert_int_eq(decode_fn(buf, strlen(buf), err, sizeof(err)), -EINVAL);
			ck_assert_ptr_nonnull(strstr(err, "event: JSON nesting deeper than 32 levels"));
		}
	}
}
END_TEST

START_TEST(test_encode_rejects)
{
	struct proto_event ev;
	char err[256], *json = (char *)"untouched", *big;
	size_t len = 7;

	fill(&ev, "{\"a\":");
	ck_assert_int_eq(proto_event_encode(&ev, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "event.payload: malformed JSON at byte 4");
	proto_event_free(&ev);

	fill(&ev, "{}");
	strcpy(ev.stream, "no spaces allowed");
	ck_assert_int_eq(proto_event_encode(&ev, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "event.stream: must be 1-128 characters of A-Za-z0-9._:-");
	strcpy(ev.stream, "s");
	ev.ts_ms = DL_TIME_MAX_MS + 1;
	ck_assert_int_eq(proto_event_encode(&ev, &json, &len, err, sizeof(err)), -ERANGE);
	ck_assert_str_eq(err, "event.ts: timestamp 253402300800000 ms is outside years 0001..9999");
	ev.ts_ms = 0;
	ev.source = (enum proto_event_source)9;
	ck_assert_int_eq(proto_event_encode(&ev, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "event.source: invalid enum value 9");
	ev.source = PROTO_EVENT_SOURCE_HTTP;
	ev.payload_len = 1;
	ck_assert_int_eq(proto_event_encode(&ev, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "event.payload: payload_len does not match the text");
	proto_event_free(&ev);

	/* A payload that fits alone but not inside the envelope. */
	big = malloc(PROTO_EVENT_MAX_BYTES);
	memset(big, 'x', PROTO_EVENT_MAX_BYTES - 100);
	big[0] = '"';
	big[PROTO_EVENT_MAX_BYTES - 101] = '"';
	big[PROTO_EVENT_MAX_BYTES - 100] = '\0';
	fill(&ev, big);
	free(big);
	ck_assert_int_eq(proto_event_encode(&ev, &json, &len, err, sizeof(err)), -EMSGSIZE);
	ck_assert_ptr_nonnull(strstr(err, "event: message of "));
	ck_assert_ptr_nonnull(strstr(err, " bytes exceeds the limit of 1048576 bytes"));
	proto_event_free(&ev);
	ck_assert_str_eq(json, "untouched");
	ck_assert_int_eq(len, 7);
}
END_TEST

/* The payload is found by a scan of the top level, not by a tree: a "payload" inside the payload
 * or in another member is not it, the first of two wins, an escaped name is still the name, and
 * a malformed payload fails the envelope. */
START_TEST(test_payload_found_by_scan)
{
	static const char head[] = "{\"schema\":\"driftlock.event.v1\","
				   "\"id\":\"e1\",\"org_id\":\"" ORG "\",\"stream\":\"s\","
				   "\"ts\":\"2026-11-27T00:00:00Z\","
				   "\"received_at\":\"2026-11-27T00:00:01Z\",\"source\":\"http\",";
	static const struct {
		const char *tail, *payload;
	} cases[] = {
		{ "\"attributes\":{\"payload\":\"no\"},\"payload\":{\"payload\":[1,\"}\"]}}",
		  "{\"payload\":[1,\"}\"]}" },
		{ "\"payload\": [ 1 , 2 ] ,\"payload\":3}", "[ 1 , 2 ]" },
		{ "\"pay\\u006coad\":\"a \\\" b\"}", "\"a \\\" b\"" },
		{ "\"payload\":-0.5e+2 }", "-0.5e+2" },
	};
	struct proto_event ev;
	char buf[1024], err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), "%s%s", head, cases[i].tail);
		err[0] = '\0';
		ck_assert_msg(proto_event_decode(buf, strlen(buf), &ev, err, sizeof(err)) == 0,
			      "case %zu: %s", i, err);
		ck_assert_str_eq(ev.payload, cases[i].payload);
		ck_assert_uint_eq(ev.payload_len, strlen(cases[i].payload));
		/* The header reads the same with or without attributes (tree or spans). */
		ck_assert_str_eq(ev.id, "e1");
		ck_assert_str_eq(ev.org_id, ORG);
		ck_assert_str_eq(ev.stream, "s");
		ck_assert_int_eq(ev.ts_ms, INT64_C(1795737600000));
		ck_assert_int_eq(ev.received_at_ms, INT64_C(1795737601000));
		ck_assert_int_eq(ev.source, PROTO_EVENT_SOURCE_HTTP);
		proto_event_free(&ev);
	}
	/* An escaped header value is the same text (the general path reads it). */
	snprintf(buf, sizeof(buf), "%s\"payload\":1}", head);
	{
		char *e = strstr(buf, "\"e1\"");

		ck_assert_ptr_nonnull(e);
		memmove(e + 7, e + 2, strlen(e + 2) + 1);
		memcpy(e + 1, "\\u0065", 6);
	}
	ck_assert_msg(proto_event_decode(buf, strlen(buf), &ev, err, sizeof(err)) == 0, "%s", err);
	ck_assert_str_eq(ev.id, "e1");
	proto_event_free(&ev);
	snprintf(buf, sizeof(buf), "%s\"payload\":{\"a\":01}}", head);
	ck_assert_int_eq(proto_event_decode(buf, strlen(buf), &ev, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strncmp(err, "event: malformed JSON at byte", 29) == 0, "%s", err);
}
END_TEST

START_TEST(test_decode_failure_leaves_output)
{
	struct proto_event ev;
	char err[256];

	memset(&ev, 'Z', sizeof(ev));
	ck_assert_int_eq(proto_event_decode("{\"schema\":\"driftlock.event.v1\"}", 31, &ev, err,
					    sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "event.id: is required");
	ck_assert_int_eq(ev.id[0], 'Z');
	ck_assert_int_eq(ev.stream[PROTO_STREAM_MAX], 'Z');
}
END_TEST

START_TEST(test_required_matches_schema)
{
	proto_test_required_matches_schema("event", proto_event_required_fields, decode_fn);
	proto_test_optional_ok("event", "attributes", decode_fn);
}
END_TEST

START_TEST(test_common_limits)
{
	proto_test_common_limits("event", PROTO_EVENT_SCHEMA, PROTO_EVENT_MAX_BYTES,
				 PROTO_EVENT_MAX_DEPTH, decode_fn);
}
END_TEST

static Suite *proto_event_suite(void)
{
	Suite *s = suite_create("proto_event");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_example_keeps_payload_bytes);
	tcase_add_test(tc, test_payload_forms);
	tcase_add_test(tc, test_rejects_bad_fields);
	tcase_add_test(tc, test_attribute_limits);
	tcase_add_test(tc, test_payload_depth);
	tcase_add_test(tc, test_encode_rejects);
	tcase_add_test(tc, test_payload_found_by_scan);
	tcase_add_test(tc, test_decode_failure_leaves_output);
	tcase_add_test(tc, test_required_matches_schema);
	tcase_add_test(tc, test_common_limits);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_event_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
