/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for proto/proto_usage: the usage record codec and its JSON Schema. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_usage.h"
#include "test_proto_common.h"

static int decode_fn(const char *buf, size_t len, char *err, size_t errlen)
{
	struct proto_usage u;

	return proto_usage_decode(buf, len, &u, err, errlen);
}

static void fill(struct proto_usage *u)
{
	memset(u, 0, sizeof(*u));
	strcpy(u->id, "usage:0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f:2026-11:51234");
	strcpy(u->org_id, "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f");
	u->period_start_ms = INT64_C(1793491200000);
	u->period_end_ms = INT64_C(1796083200000);
	u->metric = PROTO_USAGE_METRIC_ANOMALIES;
	u->quantity = 9007199254740991;
	u->overage = 9007199254740991 - 50000;
	strcpy(u->plan, "enterprise");
	u->recorded_at_ms = INT64_C(1795715708001);
}

START_TEST(test_round_trip)
{
	struct proto_usage in, out;
	char err[256], *json;
	size_t len;

	fill(&in);
	ck_assert_int_eq(proto_usage_encode(&in, &json, &len, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(json, "\"quantity\":9007199254740991"));
	ck_assert_ptr_nonnull(strstr(json, "\"period_start\":\"2026-11-01T00:00:00.000Z\""));
	ck_assert_ptr_nonnull(strstr(json, "\"metric\":\"anomalies\""));
	memset(&out, 0x55, sizeof(out));
	ck_assert_int_eq(proto_usage_decode(json, len, &out, err, sizeof(err)), 0);
	ck_assert_str_eq(out.id, in.id);
	ck_assert_str_eq(out.org_id, in.org_id);
	ck_assert_int_eq(out.period_start_ms, in.period_start_ms);
	ck_assert_int_eq(out.period_end_ms, in.period_end_ms);
	ck_assert_int_eq(out.metric, PROTO_USAGE_METRIC_ANOMALIES);
	ck_assert_int_eq(out.quantity, in.quantity);
	ck_assert_int_eq(out.overage, in.overage);
	ck_assert_str_eq(out.plan, "enterprise");
	ck_assert_int_eq(out.recorded_at_ms, in.recorded_at_ms);
	proto_usage_free(&out);
	ck_assert_int_eq(out.quantity, 0);
	proto_usage_free(NULL);
	free(json);
}
END_TEST

START_TEST(test_example)
{
	char *text = proto_test_example("usage"), err[256];
	struct proto_usage u;

	ck_assert_int_eq(proto_usage_decode(text, strlen(text), &u, err, sizeof(err)), 0);
	ck_assert_int_eq(u.quantity, 51234);
	ck_assert_int_eq(u.overage, 1234);
	ck_assert_str_eq(u.plan, "pro");
	free(text);
}
END_TEST

START_TEST(test_rejects)
{
	proto_test_reject("usage", decode_fn, "quantity", "-1",
			  "usage.quantity: must be an integer >= 0");
	proto_test_reject("usage", decode_fn, "quantity", "12.5",
			  "usage.quantity: must be an integer");
	proto_test_reject("usage", decode_fn, "quantity", "\"12\"",
			  "usage.quantity: must be an integer");
	proto_test_reject("usage", decode_fn, "quantity", "1e20",
			  "usage.quantity: must be an integer between 0 and 9007199254740991");
	proto_test_reject("usage", decode_fn, "overage", "51235",
			  "usage.overage: must not exceed quantity");
	proto_test_reject("usage", decode_fn, "metric", "\"events\"",
			  "usage.metric: must be one of \"anomalies\"");
	proto_test_reject("usage", decode_fn, "plan", "\"Pro Plan\"",
			  "usage.plan: must be 1-32 characters of a-z0-9_-");
	proto_test_reject("usage", decode_fn, "period_end", "\"2026-11-01T00:00:00Z\"",
			  "usage.period_end: must be after period_start");
	proto_test_reject("usage", decode_fn, "period_start", "\"2026-11-01\"",
			  "usage.period_start: not an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS[.sss](Z|+hh:mm))");
	proto_test_reject("usage", decode_fn, "id", "\"a b\"",
			  "usage.id: must be 1-128 characters of A-Za-z0-9._:-");
	proto_test_reject("usage", decode_fn, "org_id", "null",
			  "usage.org_id: must be a string");
}
END_TEST

START_TEST(test_encode_rejects)
{
	struct proto_usage u;
	char err[256], *json = (char *)"untouched";
	size_t len = 7;

	fill(&u);
	u.quantity = 9007199254740992;
	ck_assert_int_eq(proto_usage_encode(&u, &json, &len, err, sizeof(err)), -ERANGE);
	ck_assert_str_eq(err, "usage.quantity: must be at most 9007199254740991");
	fill(&u);
	u.quantity = 10;
	u.overage = 11;
	ck_assert_int_eq(proto_usage_encode(&u, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "usage.overage: must not exceed quantity");
	fill(&u);
	u.metric = (enum proto_usage_metric)1;
	ck_assert_int_eq(proto_usage_encode(&u, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "usage.metric: invalid enum value 1");
	fill(&u);
	u.period_end_ms = u.period_start_ms;
	ck_assert_int_eq(proto_usage_encode(&u, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "usage.period_end: must be after period_start");
	ck_assert_str_eq(json, "untouched");
	ck_assert_int_eq(len, 7);
}
END_TEST

START_TEST(test_required_matches_schema)
{
	proto_test_required_matches_schema("usage", proto_usage_required_fields, decode_fn);
}
END_TEST

START_TEST(test_common_limits)
{
	proto_test_common_limits("usage", PROTO_USAGE_SCHEMA, PROTO_USAGE_MAX_BYTES,
				 PROTO_USAGE_MAX_DEPTH, decode_fn);
}
END_TEST

static Suite *proto_usage_suite(void)
{
	Suite *s = suite_create("proto_usage");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_example);
	tcase_add_test(tc, test_rejects);
	tcase_add_test(tc, test_encode_rejects);
	tcase_add_test(tc, test_required_matches_schema);
	tcase_add_test(tc, test_common_limits);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_usage_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
