/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for proto/proto_topics: topic names, id rules and the "org_id:stream" key. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_topics.h"

#define ORG "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f"

START_TEST(test_topic_names)
{
	ck_assert_str_eq(DL_TOPIC_EVENTS, "driftlock.events.v1");
	ck_assert_str_eq(DL_TOPIC_ANOMALIES, "driftlock.anomalies.v1");
	ck_assert_str_eq(DL_TOPIC_USAGE, "driftlock.usage.v1");
	ck_assert_str_eq(DL_TOPIC_NOTIFICATIONS, "driftlock.notifications.v1");
	ck_assert_str_eq(DL_TOPIC_DLQ, "driftlock.dlq.v1");
}
END_TEST

START_TEST(test_org_id)
{
	char err[128];

	ck_assert_int_eq(proto_topics_check_org_id(ORG, 36, err, sizeof(err)), 0);
	ck_assert_int_eq(proto_topics_check_org_id("00000000-0000-0000-0000-000000000000", 36, NULL,
						   0), 0);
	ck_assert_int_eq(proto_topics_check_org_id("0B7E4F3C-5A1D-4C8E-9F2A-1D3E5B7C9A0F", 36, err,
						   sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "must be a lowercase UUID (8-4-4-4-12 hex digits)");
	ck_assert_int_eq(proto_topics_check_org_id("0b7e4f3c5a1d-4c8e-9f2a-1d3e5b7c9a0f-", 36, NULL,
						   0), -EINVAL);
	ck_assert_int_eq(proto_topics_check_org_id("0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0g", 36, NULL,
						   0), -EINVAL);
	ck_assert_int_eq(proto_topics_check_org_id(ORG, 35, NULL, 0), -EINVAL);
	ck_assert_int_eq(proto_topics_check_org_id(NULL, 0, NULL, 0), -EINVAL);
	ck_assert_int_eq(proto_topics_check_org_id("{0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f}", 38,
						   NULL, 0), -EINVAL);
}
END_TEST

START_TEST(test_stream_and_id)
{
	char name[200], err[128];
	int c;

	ck_assert_int_eq(proto_topics_check_stream("checkout-api.logs:v2_eu", 23, err, sizeof(err)),
			 0);
	memset(name, 'a', sizeof(name));
	ck_assert_int_eq(proto_topics_check_stream(name, PROTO_STREAM_MAX, NULL, 0), 0);
	ck_assert_int_eq(proto_topics_check_stream(name, PROTO_STREAM_MAX + 1, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(err, "must be 1-128 characters of A-Za-z0-9._:-");
	ck_assert_int_eq(proto_topics_check_stream("", 0, NULL, 0), -EINVAL);
	ck_assert_int_eq(proto_topics_check_id(name, PROTO_ID_MAX, NULL, 0), 0);
	ck_assert_int_eq(proto_topics_check_id(name, PROTO_ID_MAX + 1, NULL, 0), -EINVAL);
	/* Every byte outside the set is refused, including NUL and non-ASCII. */
	for (c = 0; c < 256; c++) {
		char s[3] = { 'a', (char)c, 'b' };
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			 c == '.' || c == '_' || c == ':' || c == '-';

		ck_assert_int_eq(proto_topics_check_stream(s, 3, NULL, 0) == 0, ok);
		ck_assert_int_eq(proto_topics_check_id(s, 3, NULL, 0) == 0, ok);
	}
}
END_TEST

START_TEST(test_stream_key)
{
	char key[PROTO_STREAM_KEY_MAX + 1], org[PROTO_ORG_ID_LEN + 1], stream[PROTO_STREAM_MAX + 1];
	char long_stream[PROTO_STREAM_MAX + 1], err[128];
	size_t len = 0;

	ck_assert_int_eq(proto_topics_stream_key(ORG, "app:logs", key, sizeof(key), &len, err,
						 sizeof(err)), 0);
	ck_assert_str_eq(key, ORG ":app:logs");
	ck_assert_int_eq(len, strlen(ORG ":app:logs"));
	ck_assert_int_eq(proto_topics_split_stream_key(key, len, org, stream, err, sizeof(err)), 0);
	ck_assert_str_eq(org, ORG);
	ck_assert_str_eq(stream, "app:logs");

	/* The longest key fits PROTO_STREAM_KEY_MAX + 1 exactly. */
	memset(long_stream, 'z', PROTO_STREAM_MAX);
	long_stream[PROTO_STREAM_MAX] = '\0';
	ck_assert_int_eq(proto_topics_stream_key(ORG, long_stream, key, sizeof(key), &len, NULL, 0),
			 0);
	ck_assert_int_eq(len, PROTO_STREAM_KEY_MAX);
	strcpy(key, "untouched");
	ck_assert_int_eq(proto_topics_stream_key(ORG, long_stream, key, PROTO_STREAM_KEY_MAX, &len,
						 err, sizeof(err)), -ENOSPC);
	ck_assert_str_eq(key, "untouched");

	ck_assert_int_eq(proto_topics_stream_key("ACME", "s", key, sizeof(key), &len, err,
						 sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "org_id: must be a lowercase UUID (8-4-4-4-12 hex digits)");
	ck_assert_int_eq(proto_topics_stream_key(ORG, "a b", key, sizeof(key), &len, err,
						 sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "stream: must be 1-128 characters of A-Za-z0-9._:-");
	ck_assert_int_eq(proto_topics_stream_key(ORG, NULL, key, sizeof(key), NULL, NULL, 0),
			 -EINVAL);

	strcpy(org, "keep");
	ck_assert_int_eq(proto_topics_split_stream_key(ORG ":", strlen(ORG ":"), org, stream, err,
						       sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "key: must be \"<org uuid>:<stream>\"");
	ck_assert_int_eq(proto_topics_split_stream_key(ORG "/s", strlen(ORG "/s"), org, stream,
						       NULL, 0), -EINVAL);
	ck_assert_int_eq(proto_topics_split_stream_key(ORG, 36, org, stream, NULL, 0), -EINVAL);
	ck_assert_str_eq(org, "keep");
}
END_TEST

static Suite *proto_topics_suite(void)
{
	Suite *s = suite_create("proto_topics");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_topic_names);
	tcase_add_test(tc, test_org_id);
	tcase_add_test(tc, test_stream_and_id);
	tcase_add_test(tc, test_stream_key);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_topics_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
