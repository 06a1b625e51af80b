/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for POST /v1/events: events on the real topic byte for byte, limits, errors, broker outage. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zlib.h>
#include <zstd.h>

#include "proto/proto_event.h"
#include "proto/proto_topics.h"
#include "tests/support/dl_itest.h"

#define RESP_CAP 65536

static char auth_hdr[512];

static long post(int port, const char *path, const char *ctype, const char *enc, const void *body,
		 size_t len, char *resp, char *hdrs)
{
	char ct[128], ce[128];
	const char *h[4] = { auth_hdr, ct, NULL, NULL };

	snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
	if (enc) {
		snprintf(ce, sizeof(ce), "Content-Encoding: %s", enc);
		h[2] = ce;
	}
	return dl_itest_http(port, "POST", path, h, body, len, resp, RESP_CAP, hdrs, hdrs ? 8192 : 0);
}

/* The error code of a JSON error body, or "" */
static const char *error_code(const char *body, char *out, size_t outlen)
{
	cJSON *j = cJSON_Parse(body), *e, *c;

	out[0] = '\0';
	e = cJSON_GetObjectItem(j, "error");
	c = cJSON_GetObjectItem(e, "code");
	if (cJSON_IsString(c))
		snprintf(out, outlen, "%s", c->valuestring);
	cJSON_Delete(j);
	return out;
}

static double json_number(const char *body, const char *name)
{
	cJSON *j = cJSON_Parse(body), *n = cJSON_GetObjectItem(j, name);
	double v = cJSON_IsNumber(n) ? n->valuedouble : -1;

	cJSON_Delete(j);
	return v;
}

static void start_ingest(const char *const *extra, dl_itest_proc *p)
{
	dl_itest_start("ingest", extra, p);
	ck_assert_msg(dl_itest_wait_ready(p, 90000), "ingest not ready (log %s)", p->log_path);
}

/* Finds the envelope whose payload equals want among msgs; returns its index or -1. */
static int find_payload(dl_itest_msg *msgs, size_t n, const char *want, struct proto_event *ret)
{
	for (size_t i = 0; i < n; i++) {
		struct proto_event ev;
		char errbuf[256];

		ck_assert_msg(proto_event_decode(msgs[i].value, msgs[i].len, &ev, errbuf,
						 sizeof(errbuf)) == 0,
			      "envelope on the topic does not decode: %s", errbuf);
		if (ev.payload_len == strlen(want) && !memcmp(ev.payload, want, ev.payload_len)) {
			*ret = ev;
			return (int)i;
		}
		proto_event_free(&ev);
	}
	return -1;
}

/* Every accepted event is on driftlock.events.v1 keyed org:stream with the exact bytes sent;
 * a client id gives the same event id on a retry; rejected lines are named by index. */
START_TEST(test_events_on_topic_byte_for_byte)
{
	static const char *const sent[] = {
		"{\"stream\":\"web.access\",\"ts\":\"2026-11-26T17:55:07.123Z\",\"path\":\"/a\", \"status\":200}",
		"{\"stream\":\"web.access\",\"ts\":1795715707123,\"msg\":\"caf\\u00e9 \xc3\xa9\",\"n\":1.50}",
		"{\"path\":\"/default-stream\",\"nested\":{\"a\":[1,2,{\"b\":null}]}}",
		"{\"stream\":\"web.access\",\"id\":\"client-retry-1\",\"status\":500}",
	};
	char org[37], key[256], resp[RESP_CAP], code[64], prefix[64], body[4096];
	dl_itest_msg *msgs = NULL;
	struct proto_event ev, ev2;
	dl_itest_proc p;
	size_t n;
	long st;
	int i0, i1;

	dl_itest_org_with_key("events-bytes", "enterprise", org, key, sizeof(key));
	snprintf(auth_hdr, sizeof(auth_hdr), "Authorization: Bearer %s", key);
	start_ingest(NULL, &p);

	/* One object. */
	st = post(p.public_port, "/v1/events", "application/json", NULL, sent[0], strlen(sent[0]),
		  resp, NULL);
	ck_assert_msg(st == 202, "single: %ld %s", st, resp);
	ck_assert_int_eq((int)json_number(resp, "accepted"), 1);
	/* An array of one, with a default stream for the member that names none. */
	snprintf(body, sizeof(body), "[%s]", sent[2]);
	st = post(p.public_port, "/v1/events?stream=web.default", "application/json", NULL, body,
		  strlen(body), resp, NULL);
	ck_assert_msg(st == 202, "array: %ld %s", st, resp);
	/* NDJSON: two good lines around a bad one; the bad one is rejected by its index. */
	snprintf(body, sizeof(body), "%s\n{\"stream\":\"bad stream!\"}\n%s\n", sent[1], sent[3]);
	st = post(p.public_port, "/v1/events", "application/x-ndjson", NULL, body, strlen(body),
		  resp, NULL);
	ck_assert_msg(st == 202, "ndjson: %ld %s", st, resp);
	ck_assert_int_eq((int)json_number(resp, "accepted"), 2);
	ck_assert_msg(strstr(resp, "\"index\":1"), "rejection index missing: %s", resp);
	/* The client's retry of the event with an id. */
	st = post(p.public_port, "/v1/events", "application/json", NULL, sent[3], strlen(sent[3]),
		  resp, NULL);
	ck_assert_msg(st == 202, "retry: %ld %s", st, resp);
	ck_assert_str_eq(error_code(resp, code, sizeof(code)), "");

	/* What an operator sees on /metrics after these requests. */
	{
		static char metrics[1 << 20];

		ck_assert_int_eq(dl_itest_http(p.admin_port, "GET", "/metrics", NULL, NULL, 0, metrics,
					       sizeof(metrics), NULL, 0),
				 200);
		ck_assert_ptr_nonnull(strstr(metrics,
					     "driftlock_ingest_events_total{result=\"accepted\"} 5"));
		ck_assert_ptr_nonnull(strstr(metrics, "driftlock_ingest_events_rejected_total{reason="
						      "\"invalid_stream\"} 1"));
		ck_assert_ptr_nonnull(strstr(metrics, "driftlock_ingest_producer_queue_depth"));
		ck_assert_ptr_nonnull(strstr(metrics, "driftlock_ingest_http_request_seconds_bucket{"
						      "route=\"/v1/events\",status=\"202\""));
		ck_assert_ptr_nonnull(strstr(metrics, "driftlock_ingest_http_requests_total{route="
						      "\"/v1/events\",method=\"POST\",status=\"202\"} 4"));
	}

	snprintf(prefix, sizeof(prefix), "%s:", org);
	n = dl_itest_topic_read(DL_TOPIC_EVENTS, prefix, 5, 60000, &msgs);
	ck_assert_uint_eq(n, 5);
	for (size_t i = 0; i < 3; i++) {
		char want_key[256];
		int at = find_payload(msgs, n, sent[i], &ev);

		ck_assert_msg(at >= 0, "event %zu not on the topic byte for byte", i);
		ck_assert_str_eq(ev.org_id, org);
		ck_assert_str_eq(ev.stream, i == 2 ? "web.default" : "web.access");
		snprintf(want_key, sizeof(want_key), "%s:%s", org, ev.stream);
		ck_assert_str_eq(msgs[at].key, want_key);
		ck_assert_int_eq(ev.source, PROTO_EVENT_SOURCE_HTTP);
		if (i < 2)
			ck_assert_int_eq(ev.ts_ms, 1795715707123LL);
		proto_event_free(&ev);
	}
	/* Both copies of the event with a client id carry one event id. */
	i0 = find_payload(msgs, n, sent[3], &ev);
	ck_assert_int_ge(i0, 0);
	i1 = -1;
	for (size_t i = (size_t)i0 + 1; i < n && i1 < 0; i++)
		if (find_payload(msgs + i, 1, sent[3], &ev2) == 0)
			i1 = (int)i;
	ck_assert_msg(i1 >= 0, "the retry is not on the topic");
	ck_assert_str_eq(ev.id, ev2.id);
	proto_event_free(&ev);
	proto_event_free(&ev2);
	dl_itest_msgs_free(msgs, n);
	ck_assert_int_eq(dl_itest_stop(&p, 15000), 0);
}
END_TEST

static size_t gzip_buf(const char *in, size_t len, unsigned char *out, size_t cap)
{
	z_stream z = { 0 };
	size_t n;

	ck_assert_int_eq(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)in;
	z.avail_in = (unsigned)len;
	z.next_out = out;
	z.avail_out = (unsigned)cap;
	ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
	n = z.total_out;
	deflateEnd(&z);
	return n;
}

/* Every limit and error code, each with a JSON body naming the problem. */
START_TEST(test_events_limits_and_errors)
{
	const char *const extra[] = { "DRIFTLOCK_INGEST_MAX_BODY=64KiB",
				      "DRIFTLOCK_INGEST_MAX_EVENT=1KiB",
				      "DRIFTLOCK_INGEST_MAX_EVENTS=5", "DRIFTLOCK_INGEST_MAX_DEPTH=4",
				      "DRIFTLOCK_INGEST_CORS_ORIGINS=https://console.example.com",
				      NULL };
	char org[37], key[256], resp[RESP_CAP], hdrs[8192], code[64], *big;
	unsigned char *zbuf;
	const char *one = "{\"stream\":\"s\",\"v\":1}";
	const char *hdr_none[] = { "Content-Type: application/json", NULL };
	const char *hdr_bad[] = { "Content-Type: application/json",
				  "Authorization: Bearer dlk_notarealkey0000000000000000000000", NULL };
	dl_itest_proc p;
	size_t zlen, i, off;
	long st;

	dl_itest_org_with_key("events-limits", "enterprise", org, key, sizeof(key));
	snprintf(auth_hdr, sizeof(auth_hdr), "X-Api-Key: %s", key);
	start_ingest(extra, &p);

	/* Who may send. */
	st = dl_itest_http(p.public_port, "POST", "/v1/events", hdr_none, one, strlen(one), resp,
			   RESP_CAP, NULL, 0);
	ck_assert_int_eq(st, 401);
	ck_assert_str_eq(error_code(resp, code, sizeof(code)), "missing_api_key");
	st = dl_itest_http(p.public_port, "POST", "/v1/events", hdr_bad, one, strlen(one), resp,
			   RESP_CAP, NULL, 0);
	ck_assert_int_eq(st, 401);
	ck_assert_str_eq(error_code(resp, code, sizeof(code)), "invalid_api_key");

	/* Media type, syntax, nothing valid. */
	st = post(p.public_port, "/v1/events", "text/plain", NULL, one, strlen(one), resp, NULL);
	ck_assert_int_eq(st, 415);
	ck_assert_str_ne(error_code(resp, code, sizeof(code)), "");
	st = post(p.public_port, "/v1/events", "application/json", NULL, "{\"stream\":", 10, resp,
		  NULL);
	ck_assert_int_eq(st, 400);
	ck_assert_str_ne(error_code(resp, code, sizeof(code)), "");
	st = post(p.public_port, "/v1/events", "application/x-ndjson", NULL,
		  "{\"v\":1}\n{\"stream\":\"\"}\n", 22, resp, NULL);
	ck_assert_msg(st == 400, "no stream anywhere: %ld %s", st, resp);
	ck_assert_msg(strstr(resp, "\"index\":0") && strstr(resp, "\"index\":1"),
		      "each rejection named: %s", resp);

	/* An event over 1 KiB and one nested 5 deep are rejected by index; the good one passes. */
	big = malloc(70 * 1024);
	off = (size_t)sprintf(big, "%s\n{\"stream\":\"s\",\"pad\":\"", one);
	for (i = 0; i < 1100; i++)
		big[off++] = 'x';
	off += (size_t)sprintf(big + off, "\"}\n{\"stream\":\"s\",\"a\":{\"b\":{\"c\":{\"d\":{}}}}}\n");
	st = post(p.public_port, "/v1/events", "application/x-ndjson", NULL, big, off, resp, NULL);
	ck_assert_msg(st == 202, "partial: %ld %s", st, resp);
	ck_assert_int_eq((int)json_number(resp, "accepted"), 1);
	ck_assert_msg(strstr(resp, "\"index\":1") && strstr(resp, "\"index\":2"), "%s", resp);

	/* More than 5 events: 413. */
	off = 0;
	for (i = 0; i < 6; i++)
		off += (size_t)sprintf(big + off, "%s\n", one);
	st = post(p.public_port, "/v1/events", "application/x-ndjson", NULL, big, off, resp, NULL);
	ck_assert_int_eq(st, 413);

	/* A body over 64 KiB: 413, and the connection's next request still works. */
	memset(big, ' ', 70 * 1024);
	memcpy(big, one, strlen(one));
	st = post(p.public_port, "/v1/events", "application/json", NULL, big, 70 * 1024, resp, NULL);
	ck_assert_int_eq(st, 413);
	ck_assert_str_eq(error_code(resp, code, sizeof(code)), "payload_too_large");

	/* gzip accepted; a gzip bomb (small on the wire, over 64 KiB inflated) refused with 413. */
	zbuf = malloc(128 * 1024);
	zlen = gzip_buf(one, strlen(one), zbuf, 128 * 1024);
	st = post(p.public_port, "/v1/events", "application/json", "gzip", zbuf, zlen, resp, hdrs);
	ck_assert_msg(st == 202, "gzip: %ld %s", st, resp);
	memset(big, ' ', 70 * 1024);
	memcpy(big, one, strlen(one));
	zlen = gzip_buf(big, 70 * 1024, zbuf, 128 * 1024);
	ck_assert_uint_lt(zlen, 4096);
	st = post(p.public_port, "/v1/events", "application/json", "gzip", zbuf, zlen, resp, NULL);
	ck_assert_int_eq(st, 413);
	/* zstd accepted; an unknown encoding is 415. */
	zlen = ZSTD_compress(zbuf, 128 * 1024, one, strlen(one), 3);
	ck_assert(!ZSTD_isError(zlen));
	st = post(p.public_port, "/v1/events", "application/json", "zstd", zbuf, zlen, resp, NULL);
	ck_assert_msg(st == 202, "zstd: %ld %s", st, resp);
	st = post(p.public_port, "/v1/events", "application/json", "br", one, strlen(one), resp,
		  NULL);
	ck_assert_int_eq(st, 415);

	/* CORS: the allow-listed origin is answered with its header, another one is not; the
	 * security headers and request id are on every answer. */
	{
		char ohdr[] = "Origin: https://console.example.com", val[256];
		const char *h[] = { auth_hdr, "Content-Type: application/json", ohdr, NULL };

		st = dl_itest_http(p.public_port, "POST", "/v1/events", h, one, strlen(one), resp,
				   RESP_CAP, hdrs, sizeof(hdrs));
		ck_assert_int_eq(st, 202);
		ck_assert(dl_itest_header(hdrs, "Access-Control-Allow-Origin", val, sizeof(val)));
		ck_assert_str_eq(val, "https://console.example.com");
		ck_assert(dl_itest_header(hdrs, "X-Content-Type-Options", val, sizeof(val)));
		ck_assert(dl_itest_header(hdrs, "X-Request-Id", val, sizeof(val)));
		memcpy(ohdr + 8, "https://evil.example.co", 23);
		st = dl_itest_http(p.public_port, "POST", "/v1/events", h, one, strlen(one), resp,
				   RESP_CAP, hdrs, sizeof(hdrs));
		ck_assert_int_eq(st, 202);
		ck_assert(!dl_itest_header(hdrs, "Access-Control-Allow-Origin", val, sizeof(val)));
	}

	free(zbuf);
	free(big);
	ck_assert_int_eq(dl_itest_stop(&p, 15000), 0);
}
END_TEST

/* With the broker stopped, requests get 503 + Retry-After; no 2xx is ever given for an event
 * that is not on the topic once the broker is back. */
START_TEST(test_events_broker_down)
{
	const char *const extra[] = { "DRIFTLOCK_INGEST_PRODUCE_TIMEOUT=3s", NULL };
	char org[37], key[256], resp[RESP_CAP], hdrs[8192], retry[32], cmd[1024], prefix[64];
	char body[256];
	int ok_ids[64], nok = 0, n503 = 0, i;
	dl_itest_msg *msgs = NULL;
	dl_itest_proc p;
	size_t n;
	long st;

	dl_itest_org_with_key("events-outage", "enterprise", org, key, sizeof(key));
	snprintf(auth_hdr, sizeof(auth_hdr), "Authorization: Bearer %s", key);
	start_ingest(extra, &p);
	snprintf(body, sizeof(body), "{\"stream\":\"outage\",\"seq\":%d}", 0);
	ck_assert_int_eq(post(p.public_port, "/v1/events", "application/json", NULL, body,
			      strlen(body), resp, NULL),
			 202);
	ok_ids[nok++] = 0;

	snprintf(cmd, sizeof(cmd), "%s/infra/stack.sh stop --only kafka --run-dir %s >/dev/null",
		 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), dl_itest_env("DRIFTLOCK_RUN_DIR"));
	ck_assert_int_eq(system(cmd), 0);
	for (i = 1; i <= 3; i++) {
		snprintf(body, sizeof(body), "{\"stream\":\"outage\",\"seq\":%d}", i);
		st = post(p.public_port, "/v1/events", "application/json", NULL, body, strlen(body),
			  resp, hdrs);
		if (st == 202) {
			ok_ids[nok++] = i;
		} else {
			ck_assert_msg(st == 503, "broker down: %ld %s", st, resp);
			ck_assert(dl_itest_header(hdrs, "Retry-After", retry, sizeof(retry)));
			n503++;
		}
	}
	ck_assert_int_ge(n503, 1);

	snprintf(cmd, sizeof(cmd), "%s/infra/stack.sh start --run-dir %s >/dev/null",
		 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), dl_itest_env("DRIFTLOCK_RUN_DIR"));
	ck_assert_int_eq(system(cmd), 0);
	/* Back: requests succeed again within a minute, on the same ingest process. */
	st = 0;
	for (i = 100; i < 160 && st != 202; i++) {
		snprintf(body, sizeof(body), "{\"stream\":\"outage\",\"seq\":%d}", i);
		st = post(p.public_port, "/v1/events", "application/json", NULL, body, strlen(body),
			  resp, NULL);
		if (st == 202)
			ok_ids[nok++] = i;
		else
			sleep(1);
	}
	ck_assert_msg(st == 202, "no 202 after the broker came back: %ld %s", st, resp);

	snprintf(prefix, sizeof(prefix), "%s:", org);
	n = dl_itest_topic_read(DL_TOPIC_EVENTS, prefix, (size_t)nok + 3, 30000, &msgs);
	for (i = 0; i < nok; i++) {
		struct proto_event ev;

		snprintf(body, sizeof(body), "{\"stream\":\"outage\",\"seq\":%d}", ok_ids[i]);
		ck_assert_msg(find_payload(msgs, n, body, &ev) >= 0,
			      "event %d was answered 202 but is not on the topic", ok_ids[i]);
		proto_event_free(&ev);
	}
	dl_itest_msgs_free(msgs, n);
	ck_assert_int_eq(dl_itest_stop(&p, 15000), 0);
}
END_TEST

static Suite *ingest_events_suite(void)
{
	Suite *s = suite_create("ingest_events");
	TCase *tc = tcase_create("events");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_events_on_topic_byte_for_byte);
	tcase_add_test(tc, test_events_limits_and_errors);
	tcase_add_test(tc, test_events_broker_down);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ingest_events_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
