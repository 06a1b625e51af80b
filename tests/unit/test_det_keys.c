/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for det_keys: direct producers' messages read (key, stream, payload) and refused with
 * a dead-letter reason; malformed keys refused without a look-up. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#include "common/dl_metrics.h"
#include "common/dl_pgpool.h"
#include "services/detector/det_keys.h"

static const char KEY[] = "dlk_0000000000000000000000000000000000000000001";
static const char SECRET[] = "0123456789abcdef0123456789abcdef";

/* Headers from name, value pairs (NULL-terminated). */
static rd_kafka_headers_t *headers(const char *const *kv)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(4);

	for (; kv && kv[0]; kv += 2)
		ck_assert_int_eq(rd_kafka_header_add(h, kv[0], -1, kv[1], kv[1] ? -1 : 0),
				 RD_KAFKA_RESP_ERR_NO_ERROR);
	return h;
}

static int parse(const char *const *kv, const char *payload, det_keys_direct *d,
		 const char **reason, char *err, size_t errlen)
{
	rd_kafka_headers_t *h = headers(kv);
	int r = det_keys_direct_parse(h, payload, payload ? strlen(payload) : 0, d, reason, err,
				      errlen);

	rd_kafka_headers_destroy(h);
	return r;
}

START_TEST(test_direct_key_and_stream)
{
	det_keys_direct d;
	const char *reason = "x";
	char err[256];

	/* Stream from the header: the payload may be any JSON value. */
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-stream",
						       "web.api", NULL },
			       "\"GET /health 200\"", &d, &reason, err, sizeof(err)),
			 0);
	ck_assert_str_eq(d.key, KEY);
	ck_assert_str_eq(d.stream, "web.api");
	ck_assert(d.stream_from_header);
	ck_assert_ptr_null(reason);

	/* Stream from the payload's top-level "stream" member. */
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, NULL },
			       "{\"stream\": \"payments:eu\", \"level\": \"error\"}", &d, &reason,
			       err, sizeof(err)),
			 0);
	ck_assert_str_eq(d.stream, "payments:eu");
	ck_assert(!d.stream_from_header);

	/* The header wins over the member. */
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-stream",
						       "from.header", NULL },
			       "{\"stream\": \"from.payload\"}", &d, &reason, err, sizeof(err)),
			 0);
	ck_assert_str_eq(d.stream, "from.header");
}
END_TEST

START_TEST(test_direct_refused)
{
	det_keys_direct d, before;
	const char *reason = NULL;
	char err[256];
	char *big;

	memset(&d, 0x5a, sizeof(d));
	before = d;
	/* Not a direct producer's message at all. */
	ck_assert_int_eq(parse(NULL, "{\"stream\": \"a\"}", &d, &reason, err, sizeof(err)),
			 -ENOENT);
	ck_assert_int_eq(parse((const char *const[]){ "traceparent", "00-1", NULL }, "{}", &d,
			       &reason, err, sizeof(err)),
			 -ENOENT);
	ck_assert_int_eq(memcmp(&d, &before, sizeof(d)), 0);

	/* The key: malformed, repeated, empty. The message never repeats it. */
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", "dlk_short",
						       "driftlock-stream", "a", NULL },
			       "{}", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "invalid_api_key");
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-api-key",
						       KEY, "driftlock-stream", "a", NULL },
			       "{}", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "invalid_api_key");
	ck_assert_ptr_null(strstr(err, KEY));
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", NULL,
						       "driftlock-stream", "a", NULL },
			       "{}", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "invalid_api_key");

	/* The stream: missing, not a string, invalid, repeated header. */
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, NULL },
			       "{\"level\": \"error\"}", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "missing_stream");
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, NULL },
			       "{\"stream\": 42}", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "missing_stream");
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, NULL },
			       "[\"stream\"]", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "missing_stream");
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, NULL },
			       "{\"stream\": \"web api\"}", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "invalid_stream");
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-stream",
						       "", NULL },
			       "{}", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "invalid_stream");
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-stream",
						       "a", "driftlock-stream", "b", NULL },
			       "{}", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "invalid_stream");

	/* The payload: not JSON, too deep, too large. */
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-stream",
						       "a", NULL },
			       "level=error msg=boom", &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "malformed_json");
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-stream",
						       "a", NULL },
			       NULL, &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "malformed_json");
	big = malloc(DET_KEYS_RAW_MAX_BYTES + 64);
	memset(big, '[', 40);
	memset(big + 40, ']', 40);
	big[80] = '\0';
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-stream",
						       "a", NULL },
			       big, &d, &reason, err, sizeof(err)),
			 -EINVAL);
	ck_assert_str_eq(reason, "malformed_json");
	big[0] = '"';
	memset(big + 1, 'x', DET_KEYS_RAW_MAX_BYTES + 8);
	big[DET_KEYS_RAW_MAX_BYTES + 9] = '"';
	big[DET_KEYS_RAW_MAX_BYTES + 10] = '\0';
	ck_assert_int_eq(parse((const char *const[]){ "driftlock-api-key", KEY, "driftlock-stream",
						       "a", NULL },
			       big, &d, &reason, err, sizeof(err)),
			 -EMSGSIZE);
	ck_assert_str_eq(reason, "too_large");
	free(big);
	ck_assert_int_eq(memcmp(&d, &before, sizeof(d)), 0);
}
END_TEST

typedef struct got {
	int calls, rc;
	bool had_org;
} got;

static void on_key(int rc, const char *org_id, void *arg)
{
	got *g = arg;

	g->calls++;
	g->rc = rc;
	g->had_org = org_id != NULL;
}

START_TEST(test_check_malformed_and_options)
{
	struct event_base *base = event_base_new();
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_pgpool *pool = NULL;
	det_keys *k = NULL;
	char err[256];
	got g = { 0 };

	ck_assert_int_eq(dl_pgpool_new(base, "postgresql://127.0.0.1:1/none", NULL, 1, 4, err,
				       sizeof(err), &pool),
			 0);
	/* A short secret or a TTL beyond a minute is refused at start. */
	ck_assert_int_eq(det_keys_new(base, pool, m,
				      &(det_keys_options){ .secret = SECRET, .secret_len = 16 },
				      &k, err, sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(det_keys_new(base, pool, m,
				      &(det_keys_options){ .secret = SECRET,
							   .secret_len = strlen(SECRET),
							   .ttl_ms = 120000 },
				      &k, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_null(k);
	ck_assert_int_eq(det_keys_new(base, pool, m,
				      &(det_keys_options){ .secret = SECRET,
							   .secret_len = strlen(SECRET) },
				      &k, err, sizeof(err)),
			 0);
	/* Malformed keys are answered at once, without a look-up. */
	det_keys_check(k, "dlk_short", 9, on_key, &g);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_int_eq(g.rc, -EINVAL);
	ck_assert(!g.had_org);
	det_keys_check(k, "dlx_0000000000000000000000000000000000000000001", strlen(KEY), on_key,
		       &g);
	ck_assert_int_eq(g.calls, 2);
	ck_assert_int_eq(g.rc, -EINVAL);
	det_keys_check(k, NULL, 0, on_key, &g);
	ck_assert_int_eq(g.calls, 3);
	ck_assert_int_eq(g.rc, -EINVAL);
	det_keys_free(k);
	det_keys_free(NULL);
	dl_pgpool_free(pool);
	dl_metrics_registry_free(m);
	event_base_free(base);
}
END_TEST

static Suite *det_keys_suite(void)
{
	Suite *s = suite_create("det_keys");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_direct_key_and_stream);
	tcase_add_test(tc, test_direct_refused);
	tcase_add_test(tc, test_check_malformed_and_options);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(det_keys_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
