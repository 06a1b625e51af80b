/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for proto/proto_dlq: the dead-letter codec, its base64 and its JSON Schema. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_dlq.h"
#include "test_proto_common.h"

static int decode_fn(const char *buf, size_t len, char *err, size_t errlen)
{
	struct proto_dlq d;
	int rc = proto_dlq_decode(buf, len, &d, err, errlen);

	if (rc == 0)
		proto_dlq_free(&d);
	return rc;
}

static void fill(struct proto_dlq *d)
{
	memset(d, 0, sizeof(*d));
	strcpy(d->source_topic, "driftlock.anomalies.v1");
	d->source_partition = 2147483647;
	d->source_offset = 9007199254740991;
	strcpy(d->reason_code, "schema_mismatch");
	strcpy(d->reason_message, "anomaly.p_value: must be between 0 and 1");
	strcpy(d->service, "metering");
	d->failed_at_ms = INT64_C(1795715709000);
}

START_TEST(test_round_trip_all_byte_values)
{
	struct proto_dlq in, out;
	char err[256], *json;
	size_t len, i, k;

	fill(&in);
	/* Every remainder mod 3 of the base64 tail, and all 256 byte values. */
	for (k = 0; k < 4; k++) {
		in.value_len = 256 + k;
		in.value = malloc(in.value_len);
		for (i = 0; i < in.value_len; i++)
			in.value[i] = (uint8_t)(i * 7 + k);
		in.has_key = k % 2 == 0;
		in.key = in.has_key ? (uint8_t *)strdup("0b7e4f3c:s") : NULL;
		in.key_len = in.has_key ? 10 : 0;
		in.nheaders = 2;
		in.headers = calloc(2, sizeof(*in.headers));
		strcpy(in.headers[0].key, "traceparent");
		in.headers[0].has_value = true;
		in.headers[0].value = (uint8_t *)strdup("00-ab-01");
		in.headers[0].value_len = 8;
		strcpy(in.headers[1].key, "x-null");

		ck_assert_int_eq(proto_dlq_encode(&in, &json, &len, err, sizeof(err)), 0);
		ck_assert_int_eq(proto_dlq_decode(json, len, &out, err, sizeof(err)), 0);
		ck_assert_str_eq(out.source_topic, in.source_topic);
		ck_assert_int_eq(out.source_partition, in.source_partition);
		ck_assert_int_eq(out.source_offset, in.source_offset);
		ck_assert_int_eq(out.has_key, in.has_key);
		ck_assert_int_eq(out.key_len, in.key_len);
		if (in.has_key)
			ck_assert_mem_eq(out.key, in.key, in.key_len);
		ck_assert_int_eq(out.value_len, in.value_len);
		ck_assert_mem_eq(out.value, in.value, in.value_len);
		ck_assert_int_eq(out.nheaders, 2);
		ck_assert_str_eq(out.headers[0].key, "traceparent");
		ck_assert(out.headers[0].has_value);
		ck_assert_mem_eq(out.headers[0].value, "00-ab-01", 8);
		ck_assert_str_eq(out.headers[1].key, "x-null");
		ck_assert(!out.headers[1].has_value);
		ck_assert_str_eq(out.reason_code, in.reason_code);
		ck_assert_str_eq(out.reason_message, in.reason_message);
		ck_assert_str_eq(out.service, "metering");
		ck_assert_int_eq(out.failed_at_ms, in.failed_at_ms);
		if (!in.has_key)
			ck_assert_ptr_nonnull(strstr(json, "\"key\":null"));
		proto_dlq_free(&out);
		ck_assert_ptr_null(out.headers);
		free(json);
		free(in.value);
		free(in.key);
		free(in.headers[0].value);
		free(in.headers);
	}
	/* An empty value and no headers. */
	fill(&in);
	ck_assert_int_eq(proto_dlq_encode(&in, &json, &len, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(json, "\"value\":\"\",\"headers\":[]"));
	ck_assert_int_eq(proto_dlq_decode(json, len, &out, err, sizeof(err)), 0);
	ck_assert_int_eq(out.value_len, 0);
	ck_assert_int_eq(out.nheaders, 0);
	proto_dlq_free(&out);
	proto_dlq_free(NULL);
	free(json);
}
END_TEST

START_TEST(test_example)
{
	char *text = proto_test_example("dlq"), err[256];
	struct proto_dlq d;

	ck_assert_int_eq(proto_dlq_decode(text, strlen(text), &d, err, sizeof(err)), 0);
	ck_assert(d.has_key);
	ck_assert_int_eq(d.key_len, 54);
	ck_assert_mem_eq(d.key, "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f:checkout-api.logs", 54);
	ck_assert_int_eq(d.value_len, 36);
	ck_assert_mem_eq(d.value, "{\"schema\":\"driftlock.event.v1\",\"id\":", 36);
	ck_assert_int_eq(d.nheaders, 2);
	ck_assert_int_eq(d.headers[0].value_len, 55);
	ck_assert(!d.headers[1].has_value);
	ck_assert_int_eq(d.source_offset, 1048576);
	proto_dlq_free(&d);
	free(text);
}
END_TEST

START_TEST(test_rejects)
{
	proto_test_reject("dlq", decode_fn, "value", "\"abc\"",
			  "dlq.value: must be padded base64 (RFC 4648)");
	proto_test_reject("dlq", decode_fn, "value", "\"ab=c\"",
			  "dlq.value: must be padded base64 (RFC 4648)");
	proto_test_reject("dlq", decode_fn, "value", "\"ab-_\"",
			  "dlq.value: must be padded base64 (RFC 4648)");
	proto_test_reject("dlq", decode_fn, "value", "\"QR==\"",
			  "dlq.value: must be padded base64 (RFC 4648)");
	proto_test_reject("dlq", decode_fn, "value", "null", "dlq.value: must be a base64 string");
	proto_test_reject("dlq", decode_fn, "key", "7", "dlq.key: must be a base64 string or null");
	proto_test_reject("dlq", decode_fn, "headers", "{}", "dlq.headers: must be an array");
	proto_test_reject("dlq", decode_fn, "headers", "[{\"key\":\"a\",\"value_b64\":null},\"x\"]",
			  "dlq.headers[1]: must be an object");
	proto_test_reject("dlq", decode_fn, "headers", "[{\"key\":\"\",\"value_b64\":null}]",
			  "dlq.headers[0].key: must be 1-128 characters long");
	proto_test_reject("dlq", decode_fn, "headers", "[{\"key\":\"a\",\"value_b64\":\"*\"}]",
			  "dlq.headers[0].value_b64: must be padded base64 (RFC 4648)");
	proto_test_reject("dlq", decode_fn, "source_partition", "-1",
			  "dlq.source_partition: must be an integer between 0 and 2147483647");
	proto_test_reject("dlq", decode_fn, "source_partition", "2147483648",
			  "dlq.source_partition: must be an integer between 0 and 2147483647");
	proto_test_reject("dlq", decode_fn, "source_offset", "1.5",
			  "dlq.source_offset: must be an integer");
	proto_test_reject("dlq", decode_fn, "source_topic", "\"a:b\"",
			  "dlq.source_topic: must be 1-249 characters of A-Za-z0-9._-");
	proto_test_reject("dlq", decode_fn, "reason.code", "\"Bad-Code\"",
			  "dlq.reason.code: must be 1-64 characters of a-z0-9_");
	proto_test_reject("dlq", decode_fn, "reason.message", "\"\"",
			  "dlq.reason.message: must be 1-1024 characters long");
	proto_test_reject("dlq", decode_fn, "reason", "\"oops\"", "dlq.reason: must be an object");
	proto_test_reject("dlq", decode_fn, "service", "\"Detector\"",
			  "dlq.service: must be 1-64 characters of a-z0-9_-");
}
END_TEST

START_TEST(test_counts_and_sizes)
{
	char *buf = proto_test_malloc(8192), *p, err[256];
	struct proto_dlq d;
	size_t len;
	cJSON *root;
	int i;

	p = buf + sprintf(buf, "[");
	for (i = 0; i <= PROTO_DLQ_HEADERS_MAX; i++)
		p += sprintf(p, "%s{\"key\":\"h%d\",\"value_b64\":\"YQ==\"}", i ? "," : "", i);
	strcpy(p, "]");
	proto_test_reject("dlq", decode_fn, "headers", buf, "dlq.headers: must have at most 64 items");
	free(buf);

	/* A key one byte over its decoded limit. */
	fill(&d);
	d.has_key = true;
	d.key_len = PROTO_DLQ_KEY_MAX + 1;
	d.key = calloc(1, d.key_len);
	ck_assert_int_eq(proto_dlq_encode(&d, &buf, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "dlq.key: must decode to at most 16384 bytes");
	d.key_len = PROTO_DLQ_KEY_MAX;
	ck_assert_int_eq(proto_dlq_encode(&d, &buf, &len, err, sizeof(err)), 0);
	root = cJSON_Parse(buf);
	ck_assert_ptr_nonnull(root);
	free(buf);
	cJSON_Delete(root);
	free(d.key);

	/* The largest value still fits in a message. */
	fill(&d);
	d.value_len = PROTO_DLQ_VALUE_MAX;
	d.value = calloc(1, d.value_len);
	ck_assert_int_eq(proto_dlq_encode(&d, &buf, &len, err, sizeof(err)), 0);
	free(buf);
	d.value_len++;
	d.value = realloc(d.value, d.value_len);
	ck_assert_int_eq(proto_dlq_encode(&d, &buf, &len, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "dlq.value: must decode to at most 2097152 bytes");
	free(d.value);
}
END_TEST

START_TEST(test_required_matches_schema)
{
	proto_test_required_matches_schema("dlq", proto_dlq_required_fields, decode_fn);
}
END_TEST

START_TEST(test_common_limits)
{
	proto_test_common_limits("dlq", PROTO_DLQ_SCHEMA, PROTO_DLQ_MAX_BYTES, PROTO_DLQ_MAX_DEPTH,
				 decode_fn);
}
END_TEST

static Suite *proto_dlq_suite(void)
{
	Suite *s = suite_create("proto_dlq");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_round_trip_all_byte_values);
	tcase_add_test(tc, test_example);
	tcase_add_test(tc, test_rejects);
	tcase_add_test(tc, test_counts_and_sizes);
	tcase_add_test(tc, test_required_matches_schema);
	tcase_add_test(tc, test_common_limits);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_dlq_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
