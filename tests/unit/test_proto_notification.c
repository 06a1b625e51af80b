/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for proto/proto_notification: the notification codec and its JSON Schema. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_notification.h"
#include "test_proto_common.h"

static int decode_fn(const char *buf, size_t len, char *err, size_t errlen)
{
	struct proto_notification n;
	int rc = proto_notification_decode(buf, len, &n, err, errlen);

	if (rc == 0)
		proto_notification_free(&n);
	return rc;
}

static void fill(struct proto_notification *n, const char *data)
{
	memset(n, 0, sizeof(*n));
	strcpy(n->id, "payment_failed:in_1Pq2:0b7e4f3c");
	strcpy(n->org_id, "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f");
	strcpy(n->kind, "payment_failed");
	n->data = strdup(data);
	n->data_len = strlen(data);
	n->created_at_ms = INT64_C(1795715708010);
}

START_TEST(test_round_trip)
{
	static const char data[] = "{\"invoice\": \"in_1Pq2\", \"amount_due\": 4900, \"grace_until\": "
				   "\"2026-12-03T17:55:08.010Z\", \"retry\": [1, 3, 5]}";
	struct proto_notification in, out;
	char err[256], *json;
	size_t len;

	fill(&in, data);
	ck_assert_int_eq(proto_notification_encode(&in, &json, &len, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(json, data));
	ck_assert_int_eq(proto_notification_decode(json, len, &out, err, sizeof(err)), 0);
	ck_assert_str_eq(out.id, in.id);
	ck_assert_str_eq(out.org_id, in.org_id);
	ck_assert_str_eq(out.kind, "payment_failed");
	ck_assert_str_eq(out.data, data);
	ck_assert_int_eq(out.data_len, strlen(data));
	ck_assert_int_eq(out.created_at_ms, in.created_at_ms);
	proto_notification_free(&out);
	ck_assert_ptr_null(out.data);
	proto_notification_free(&in);
	proto_notification_free(NULL);
	free(json);
}
END_TEST

START_TEST(test_example)
{
	char *text = proto_test_example("notification"), err[256];
	struct proto_notification n;

	ck_assert_int_eq(proto_notification_decode(text, strlen(text), &n, err, sizeof(err)), 0);
	ck_assert_str_eq(n.kind, "usage_threshold");
	ck_assert(strncmp(n.data, "{\"percent\": 90, ", 16) == 0);
	ck_assert_int_eq(n.data[n.data_len - 1], '}');
	proto_notification_free(&n);
	free(text);
}
END_TEST

START_TEST(test_rejects)
{
	proto_test_reject("notification", decode_fn, "data", "[1]",
			  "notification.data: must be an object");
	proto_test_reject("notification", decode_fn, "data", "\"x\"",
			  "notification.data: must be an object");
	proto_test_reject("notification", decode_fn, "kind", "\"Payment Failed\"",
			  "notification.kind: must be 1-64 characters of a-z0-9_");
	proto_test_reject("notification", decode_fn, "kind", "42",
			  "notification.kind: must be a string");
	proto_test_reject("notification", decode_fn, "created_at", "\"2026-11-26T17:55:08\"",
			  "notification.created_at: not an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS[.sss](Z|+hh:mm))");
	proto_test_reject("notification", decode_fn, "id", "\"\"",
			  "notification.id: must be 1-128 characters of A-Za-z0-9._:-");
	/* A kind this version does not know is still a valid message. */
	{
		char err[256];
		cJSON *root = proto_test_example_json("notification");

		cJSON_ReplaceItemInObject(root, "kind", cJSON_CreateString("invoice_upcoming"));
		ck_assert_int_eq(proto_test_decode_json(decode_fn, root, err, sizeof(err)), 0);
		cJSON_Delete(root);
	}
}
END_TEST

START_TEST(test_encode_rejects)
{
	struct proto_notification n;
	char err[256], *json = (char *)"untouched";
	size_t len = 7;

	fill(&n, "[1,2]");
	ck_assert_int_eq(proto_notification_encode(&n, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "notification.data: must be a JSON object");
	proto_notification_free(&n);
	fill(&n, "{\"a\":}");
	ck_assert_int_eq(proto_notification_encode(&n, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "notification.data: malformed JSON at byte 5");
	proto_notification_free(&n);
	fill(&n, "{}");
	strcpy(n.kind, "x-y");
	ck_assert_int_eq(proto_notification_encode(&n, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "notification.kind: must be 1-64 characters of a-z0-9_");
	proto_notification_free(&n);
	ck_assert_int_eq(proto_notification_encode(&n, &json, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "notification.data: is required");
	ck_assert_str_eq(json, "untouched");
	ck_assert_int_eq(len, 7);
}
END_TEST

START_TEST(test_required_matches_schema)
{
	proto_test_required_matches_schema("notification", proto_notification_required_fields,
					   decode_fn);
}
END_TEST

START_TEST(test_common_limits)
{
	proto_test_common_limits("notification", PROTO_NOTIFICATION_SCHEMA,
				 PROTO_NOTIFICATION_MAX_BYTES, PROTO_NOTIFICATION_MAX_DEPTH, decode_fn);
}
END_TEST

static Suite *proto_notification_suite(void)
{
	Suite *s = suite_create("proto_notification");
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
	SRunner *sr = srunner_create(proto_notification_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
