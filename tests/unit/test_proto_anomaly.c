/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for proto/proto_anomaly: the anomaly codec and its JSON Schema. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_anomaly.h"
#include "test_proto_common.h"

static int decode_fn(const char *buf, size_t len, char *err, size_t errlen)
{
	struct proto_anomaly *a = proto_test_malloc(sizeof(*a));
	int rc = proto_anomaly_decode(buf, len, a, err, errlen);

	free(a);
	return rc;
}

static struct proto_anomaly *sample(void)
{
	struct proto_anomaly *a = calloc(1, sizeof(*a));
	size_t i;

	ck_assert_ptr_nonnull(a);
	strcpy(a->id, "5f0c1a2b-3c4d-8e5f-9a6b-7c8d9e0f1a2b");
	strcpy(a->org_id, "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f");
	strcpy(a->stream, "payments:eu");
	strcpy(a->event_id, "evt_42");
	a->event_ts_ms = INT64_C(1795715707123);
	a->detected_at_ms = INT64_C(1795715707402);
	a->kind = PROTO_ANOMALY_KIND_ENTITY;
	a->score = 17.125;
	a->p_value = 0.1 + 0.2; /* not exactly representable in short decimal */
	a->severity = PROTO_ANOMALY_SEVERITY_CRITICAL;
	a->nsignals = PROTO_ANOMALY_SIGNALS_MAX;
	for (i = 0; i < a->nsignals; i++) {
		snprintf(a->signals[i].name, sizeof(a->signals[i].name), "sig.%zu", i);
		a->signals[i].value = (double)i / 3.0 - 5;
	}
	a->has_window = true;
	a->window.start_ts_ms = INT64_C(1795715400000);
	a->window.end_ts_ms = INT64_C(1795715707123);
	a->window.events = 9007199254740991;
	a->has_entity = true;
	strcpy(a->entity.field, "card.bin");
	strcpy(a->entity.value, "");
	strcpy(a->explanation.summary, "Card BIN 4242 declined 40\xc3\x97 more than usual \"today\".");
	strcpy(a->explanation.signal, "sig.3");
	a->explanation.value = -2.5;
	a->explanation.baseline_low = -3;
	a->explanation.baseline_median = -3;
	a->explanation.baseline_high = 1e300;
	a->explanation.nevidence = PROTO_ANOMALY_EVIDENCE_MAX;
	for (i = 0; i < a->explanation.nevidence; i++) {
		struct proto_anomaly_evidence *e = &a->explanation.evidence[i];

		snprintf(e->name, sizeof(e->name), "ev-%zu", i);
		e->has_value = i % 2 == 0;
		e->value = 1e-9 * (double)i;
		e->has_bits = i % 3 == 0;
		e->bits = (double)i * 1.5;
		e->has_detail = i % 4 == 0;
		snprintf(e->detail, sizeof(e->detail), "detail %zu \xe2\x82\xac", i);
	}
	strcpy(a->excerpt, "{\"card\":\"****4242\"}");
	strcpy(a->detector.version, "cbad-0.1.0");
	a->detector.sensitivity = 1;
	return a;
}

START_TEST(test_round_trip)
{
	struct proto_anomaly *in = sample(), *out = calloc(1, sizeof(*out));
	char err[256], *json;
	size_t len, i;

	ck_assert_int_eq(proto_anomaly_encode(in, &json, &len, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(json, "\"kind\":\"entity\""));
	ck_assert_ptr_nonnull(strstr(json, "\"severity\":\"critical\""));
	ck_assert_ptr_nonnull(strstr(json, "\"detected_at\":\"2026-11-26T17:55:07.402Z\""));
	ck_assert_int_eq(proto_anomaly_decode(json, len, out, err, sizeof(err)), 0);
	ck_assert_str_eq(out->id, in->id);
	ck_assert_str_eq(out->org_id, in->org_id);
	ck_assert_str_eq(out->stream, in->stream);
	ck_assert_str_eq(out->event_id, in->event_id);
	ck_assert_int_eq(out->event_ts_ms, in->event_ts_ms);
	ck_assert_int_eq(out->detected_at_ms, in->detected_at_ms);
	ck_assert_int_eq(out->kind, in->kind);
	ck_assert(out->score == in->score);
	ck_assert(out->p_value == in->p_value);
	ck_assert_int_eq(out->severity, in->severity);
	ck_assert_int_eq(out->nsignals, in->nsignals);
	for (i = 0; i < in->nsignals; i++) {
		ck_assert_str_eq(out->signals[i].name, in->signals[i].name);
		ck_assert(out->signals[i].value == in->signals[i].value);
	}
	ck_assert(out->has_window && out->has_entity);
	ck_assert_int_eq(out->window.start_ts_ms, in->window.start_ts_ms);
	ck_assert_int_eq(out->window.end_ts_ms, in->window.end_ts_ms);
	ck_assert_int_eq(out->window.events, in->window.events);
	ck_assert_str_eq(out->entity.field, in->entity.field);
	ck_assert_str_eq(out->entity.value, "");
	ck_assert_str_eq(out->explanation.summary, in->explanation.summary);
	ck_assert_str_eq(out->explanation.signal, in->explanation.signal);
	ck_assert(out->explanation.value == in->explanation.value);
	ck_assert(out->explanation.baseline_low == in->explanation.baseline_low);
	ck_assert(out->explanation.baseline_median == in->explanation.baseline_median);
	ck_assert(out->explanation.baseline_high == in->explanation.baseline_high);
	ck_assert_int_eq(out->explanation.nevidence, in->explanation.nevidence);
	for (i = 0; i < in->explanation.nevidence; i++) {
		const struct proto_anomaly_evidence *x = &in->explanation.evidence[i];
		const struct proto_anomaly_evidence *y = &out->explanation.evidence[i];

		ck_assert_str_eq(y->name, x->name);
		ck_assert_int_eq(y->has_value, x->has_value);
		ck_assert(!x->has_value || y->value == x->value);
		ck_assert_int_eq(y->has_bits, x->has_bits);
		ck_assert(!x->has_bits || y->bits == x->bits);
		ck_assert_int_eq(y->has_detail, x->has_detail);
		if (x->has_detail)
			ck_assert_str_eq(y->detail, x->detail);
	}
	ck_assert_str_eq(out->excerpt, in->excerpt);
	ck_assert_str_eq(out->detector.version, in->detector.version);
	ck_assert(out->detector.sensitivity == 1);

	/* Without the optional parts. */
	free(json);
	in->kind = PROTO_ANOMALY_KIND_EVENT;
	in->has_window = in->has_entity = false;
	in->nsignals = 0;
	in->explanation.nevidence = 0;
	ck_assert_int_eq(proto_anomaly_encode(in, &json, &len, err, sizeof(err)), 0);
	ck_assert_ptr_null(strstr(json, "\"window\""));
	ck_assert_ptr_nonnull(strstr(json, "\"signals\":{}"));
	ck_assert_ptr_nonnull(strstr(json, "\"evidence\":[]"));
	ck_assert_int_eq(proto_anomaly_decode(json, len, out, err, sizeof(err)), 0);
	ck_assert(!out->has_window && !out->has_entity);
	ck_assert_int_eq(out->nsignals, 0);
	proto_anomaly_free(out);
	ck_assert_int_eq(out->id[0], '\0');
	proto_anomaly_free(NULL);
	free(json);
	free(in);
	free(out);
}
END_TEST

START_TEST(test_example)
{
	char *text = proto_test_example("anomaly"), err[256];
	struct proto_anomaly *a = calloc(1, sizeof(*a));

	ck_assert_int_eq(proto_anomaly_decode(text, strlen(text), a, err, sizeof(err)), 0);
	ck_assert_int_eq(a->kind, PROTO_ANOMALY_KIND_WINDOW);
	ck_assert_int_eq(a->severity, PROTO_ANOMALY_SEVERITY_HIGH);
	ck_assert(a->p_value == 0.0004);
	ck_assert_int_eq(a->nsignals, 3);
	ck_assert_str_eq(a->signals[2].name, "rate_ratio");
	ck_assert_int_eq(a->window.events, 1200);
	ck_assert_int_eq(a->explanation.nevidence, 2);
	ck_assert(!a->explanation.evidence[0].has_value && a->explanation.evidence[0].has_bits);
	ck_assert(a->explanation.evidence[1].has_value && a->explanation.evidence[1].value == 402);
	ck_assert_str_eq(a->entity.value, "u_42");
	free(a);
	free(text);
}
END_TEST

START_TEST(test_rejects_ranges_and_enums)
{
	proto_test_reject("anomaly", decode_fn, "p_value", "1.5",
			  "anomaly.p_value: must be between 0 and 1");
	proto_test_reject("anomaly", decode_fn, "p_value", "-0.01",
			  "anomaly.p_value: must be between 0 and 1");
	proto_test_reject("anomaly", decode_fn, "p_value", "\"0.5\"",
			  "anomaly.p_value: must be a number");
	proto_test_reject("anomaly", decode_fn, "score", "-1", "anomaly.score: must be >= 0");
	proto_test_reject("anomaly", decode_fn, "score", "true", "anomaly.score: must be a number");
	proto_test_reject("anomaly", decode_fn, "severity", "\"urgent\"",
			  "anomaly.severity: must be one of \"low\", \"medium\", \"high\", \"critical\"");
	proto_test_reject("anomaly", decode_fn, "kind", "\"Event\"",
			  "anomaly.kind: must be one of \"event\", \"window\", \"value\", \"entity\", \"rate\"");
	proto_test_reject("anomaly", decode_fn, "detector.sensitivity", "2",
			  "anomaly.detector.sensitivity: must be between 0 and 1");
	proto_test_reject("anomaly", decode_fn, "detector.version", "\"\"",
			  "anomaly.detector.version: must be 1-64 characters of A-Za-z0-9._:-");
	proto_test_reject("anomaly", decode_fn, "detector", "[]",
			  "anomaly.detector: must be an object");
	proto_test_reject("anomaly", decode_fn, "explanation", "\"x\"",
			  "anomaly.explanation: must be an object");
	proto_test_reject("anomaly", decode_fn, "explanation.baseline.low", "0.5",
			  "anomaly.explanation.baseline: must have low <= median <= high");
	proto_test_reject("anomaly", decode_fn, "explanation.value", "null",
			  "anomaly.explanation.value: must be a number");
	proto_test_reject("anomaly", decode_fn, "window.end_ts", "\"2026-11-26T17:50:06.999Z\"",
			  "anomaly.window.end_ts: must not be before start_ts");
	proto_test_reject("anomaly", decode_fn, "window.events", "1.5",
			  "anomaly.window.events: must be an integer");
	proto_test_reject("anomaly", decode_fn, "window.events", "-1",
			  "anomaly.window.events: must be an integer >= 0");
	proto_test_reject("anomaly", decode_fn, "window.events", "1e16",
			  "anomaly.window.events: must be an integer between 0 and 9007199254740991");
	proto_test_reject("anomaly", decode_fn, "event_ts", "\"2026-11-26T17:55:07.123+25:00\"",
			  "anomaly.event_ts: UTC offset 25:00 out of range");
	proto_test_reject("anomaly", decode_fn, "entity.field", "\"a b\"",
			  "anomaly.entity.field: must be 1-64 characters of A-Za-z0-9._:-");
	proto_test_reject("anomaly", decode_fn, "event_id", "\"e/1\"",
			  "anomaly.event_id: must be 1-128 characters of A-Za-z0-9._:-");
}
END_TEST

START_TEST(test_rejects_non_finite)
{
	char *text = proto_test_example("anomaly"), *p, err[256];
	char buf[8192];

	p = strstr(text, "0.0004");
	ck_assert_ptr_nonnull(p);
	snprintf(buf, sizeof(buf), "%.*s1e999%s", (int)(p - text), text, p + 6);
	ck_assert_int_eq(decode_fn(buf, strlen(buf), err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "anomaly.p_value: must be a finite number");
	free(text);
}
END_TEST

START_TEST(test_kind_needs_its_part)
{
	char err[256];
	cJSON *root = proto_test_example_json("anomaly");

	cJSON_DeleteItemFromObject(root, "window");
	ck_assert_int_eq(proto_test_decode_json(decode_fn, root, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "anomaly.window: is required when kind is \"window\"");
	cJSON_ReplaceItemInObject(root, "kind", cJSON_CreateString("entity"));
	cJSON_DeleteItemFromObject(root, "entity");
	ck_assert_int_eq(proto_test_decode_json(decode_fn, root, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "anomaly.entity: is required when kind is \"entity\"");
	cJSON_ReplaceItemInObject(root, "kind", cJSON_CreateString("rate"));
	ck_assert_int_eq(proto_test_decode_json(decode_fn, root, err, sizeof(err)), 0);
	cJSON_Delete(root);
}
END_TEST

START_TEST(test_counts_and_lengths)
{
	char buf[8192], *p;
	int i;

	p = buf + sprintf(buf, "{");
	for (i = 0; i <= PROTO_ANOMALY_SIGNALS_MAX; i++)
		p += sprintf(p, "%s\"s%d\":%d", i ? "," : "", i, i);
	strcpy(p, "}");
	proto_test_reject("anomaly", decode_fn, "signals", buf,
			  "anomaly.signals: must have at most 32 members");
	proto_test_reject("anomaly", decode_fn, "signals.ncd", "\"high\"",
			  "anomaly.signals.ncd: must be a number");
	proto_test_reject("anomaly", decode_fn, "signals", "{\"no way\":1}",
			  "anomaly.signals: names must be 1-64 characters of A-Za-z0-9._:-");
	proto_test_reject("anomaly", decode_fn, "signals", "{\"a\":1,\"a\":2}",
			  "anomaly.signals: duplicate name \"a\"");

	p = buf + sprintf(buf, "[");
	for (i = 0; i <= PROTO_ANOMALY_EVIDENCE_MAX; i++)
		p += sprintf(p, "%s{\"name\":\"e%d\"}", i ? "," : "", i);
	strcpy(p, "]");
	proto_test_reject("anomaly", decode_fn, "explanation.evidence", buf,
			  "anomaly.explanation.evidence: must have at most 16 items");
	proto_test_reject("anomaly", decode_fn, "explanation.evidence", "[{\"name\":\"a\"},3]",
			  "anomaly.explanation.evidence[1]: must be an object");
	proto_test_reject("anomaly", decode_fn, "explanation.evidence",
			  "[{\"name\":\"a\"},{\"name\":\"b\",\"bits\":-1}]",
			  "anomaly.explanation.evidence[1].bits: must be >= 0");
	proto_test_reject("anomaly", decode_fn, "explanation.evidence", "{}",
			  "anomaly.explanation.evidence: must be an array");

	/* 1024 characters pass even when each is 3 bytes; 1025 fail. */
	p = buf + sprintf(buf, "\"");
	for (i = 0; i < PROTO_ANOMALY_SUMMARY_MAX; i++)
		p += sprintf(p, "\xe2\x82\xac");
	strcpy(p, "\"");
	{
		cJSON *root = proto_test_example_json("anomaly");
		char err[256];

		cJSON_ReplaceItemInObject(root, "excerpt", cJSON_Parse(buf));
		cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "explanation"), "summary",
					  cJSON_Parse(buf));
		ck_assert_msg(proto_test_decode_json(decode_fn, root, err, sizeof(err)) == 0, "%s", err);
		cJSON_Delete(root);
	}
	strcpy(p, "x\"");
	proto_test_reject("anomaly", decode_fn, "excerpt", buf,
			  "anomaly.excerpt: must be at most 1024 characters long");
	proto_test_reject("anomaly", decode_fn, "explanation.summary", buf,
			  "anomaly.explanation.summary: must be 1-1024 characters long");
	proto_test_reject("anomaly", decode_fn, "explanation.summary", "\"\"",
			  "anomaly.explanation.summary: must be 1-1024 characters long");
}
END_TEST

START_TEST(test_encode_rejects)
{
	struct proto_anomaly *a = sample();
	char err[256], *json = (char *)"untouched";
	size_t len = 7;

	a->p_value = NAN;
	ck_assert_int_eq(proto_anomaly_encode(a, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "anomaly.p_value: must be a number");
	a->p_value = 1.0000001;
	ck_assert_int_eq(proto_anomaly_encode(a, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "anomaly.p_value: must be between 0 and 1");
	a->p_value = 0.5;
	a->nsignals = 33;
	ck_assert_int_eq(proto_anomaly_encode(a, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "anomaly.signals: must have at most 32 members");
	a->nsignals = 1;
	a->severity = (enum proto_anomaly_severity)4;
	ck_assert_int_eq(proto_anomaly_encode(a, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "anomaly.severity: invalid enum value 4");
	a->severity = PROTO_ANOMALY_SEVERITY_LOW;
	a->has_entity = false;
	ck_assert_int_eq(proto_anomaly_encode(a, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "anomaly.entity: is required when kind is \"entity\"");
	ck_assert_str_eq(json, "untouched");
	ck_assert_int_eq(len, 7);
	free(a);
}
END_TEST

START_TEST(test_required_matches_schema)
{
	proto_test_required_matches_schema("anomaly", proto_anomaly_required_fields, decode_fn);
	proto_test_optional_ok("anomaly", "entity", decode_fn);
	proto_test_optional_ok("anomaly", "explanation.evidence[].bits", decode_fn);
	proto_test_optional_ok("anomaly", "explanation.evidence[].detail", decode_fn);
}
END_TEST

START_TEST(test_common_limits)
{
	proto_test_common_limits("anomaly", PROTO_ANOMALY_SCHEMA, PROTO_ANOMALY_MAX_BYTES,
				 PROTO_ANOMALY_MAX_DEPTH, decode_fn);
}
END_TEST

static Suite *proto_anomaly_suite(void)
{
	Suite *s = suite_create("proto_anomaly");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_example);
	tcase_add_test(tc, test_rejects_ranges_and_enums);
	tcase_add_test(tc, test_rejects_non_finite);
	tcase_add_test(tc, test_kind_needs_its_part);
	tcase_add_test(tc, test_counts_and_lengths);
	tcase_add_test(tc, test_encode_rejects);
	tcase_add_test(tc, test_required_matches_schema);
	tcase_add_test(tc, test_common_limits);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_anomaly_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
