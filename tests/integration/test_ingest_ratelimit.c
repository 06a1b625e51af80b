/* SPDX-License-Identifier: Apache-2.0 */
/* Integration tests for ingest_ratelimit against the real Redis: two limiters ("replicas") behind two HTTP listeners share one budget. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "common/dl_http.h"
#include "common/dl_id.h"
#include "common/dl_metrics.h"
#include "services/ingest/ingest.h"
#include "services/ingest/ingest_ratelimit.h"

static const char *need_env(const char *name)
{
	const char *v = getenv(name);

	ck_assert_msg(v && *v, "%s is not set: run the integration suites through infra/test.sh",
		      name);
	return v;
}

typedef struct replica {
	ingest_ctx ctx;
	dl_http_server *http;
	int port;
} replica;

typedef struct harness {
	struct event_base *base;
	dl_metrics_registry *metrics;
	replica r[2];
	pthread_t loop;
} harness;

static void allowed_cb(dl_http_req *req, void *arg)
{
	(void)arg;
	dl_http_reply_json_text(req, 200, "{\"ok\":true}", 11);
}

/* GET /take/{org}/{key}?cost=&rate=&burst= : the principal comes from the request. */
static void take_handler(dl_http_req *req, void *opaque)
{
	replica *r = opaque;
	ingest_principal who;

	memset(&who, 0, sizeof(who));
	snprintf(who.org_id, sizeof(who.org_id), "%s", dl_http_req_param(req, "org"));
	snprintf(who.key_id, sizeof(who.key_id), "%s", dl_http_req_param(req, "key"));
	who.rate_per_s = strtoll(dl_http_req_query(req, "rate"), NULL, 10);
	who.rate_burst = strtoll(dl_http_req_query(req, "burst"), NULL, 10);
	ingest_ratelimit_take(&r->ctx, req, &who, strtoll(dl_http_req_query(req, "cost"), NULL, 10),
			      allowed_cb, NULL, NULL);
}

static void *loop_main(void *arg)
{
	harness *h = arg;

	event_base_loop(h->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void harness_start(harness *h, const char *redis_url, int64_t timeout_ms)
{
	ingest_ratelimit_options o = { .redis_url = redis_url, .timeout_ms = timeout_ms };
	char err[256] = "";
	int i;

	memset(h, 0, sizeof(*h));
	ck_assert_int_eq(evthread_use_pthreads(), 0);
	h->base = event_base_new();
	h->metrics = dl_metrics_registry_new();
	for (i = 0; i < 2; i++) {
		replica *r = &h->r[i];

		ck_assert_int_eq(dl_http_server_new(h->base, NULL, err, sizeof(err), &r->http), 0);
		ck_assert_int_eq(dl_http_server_listen(r->http, "127.0.0.1", 0, &r->port), 0);
		ck_assert_int_eq(dl_http_route(r->http, "GET", "/take/{org}/{key}", take_handler, r,
					       "take"),
				 0);
		ck_assert_msg(ingest_ratelimit_new(h->base, h->metrics, &o, err, sizeof(err),
						   &r->ctx.rl) == 0,
			      "%s", err);
	}
	ck_assert_int_eq(pthread_create(&h->loop, NULL, loop_main, h), 0);
}

static void harness_stop(harness *h)
{
	event_base_loopbreak(h->base);
	pthread_join(h->loop, NULL);
	for (int i = 0; i < 2; i++) {
		ingest_ratelimit_free(h->r[i].ctx.rl);
		dl_http_server_free(h->r[i].http);
	}
	dl_metrics_registry_free(h->metrics);
	event_base_free(h->base);
}

typedef struct answer {
	long status;
	long limit, remaining, retry_after; /* -1 when absent */
	char body[4096];
} answer;

static size_t on_header(char *data, size_t size, size_t n, void *opaque)
{
	answer *a = opaque;
	size_t len = size * n;
	char line[256];

	snprintf(line, sizeof(line), "%.*s", (int)(len < 255 ? len : 255), data);
	if (strncasecmp(line, "X-RateLimit-Limit:", 18) == 0)
		a->limit = strtol(line + 18, NULL, 10);
	else if (strncasecmp(line, "X-RateLimit-Remaining:", 22) == 0)
		a->remaining = strtol(line + 22, NULL, 10);
	else if (strncasecmp(line, "Retry-After:", 12) == 0)
		a->retry_after = strtol(line + 12, NULL, 10);
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *opaque)
{
	answer *a = opaque;
	size_t have = strlen(a->body), add = size * n;

	if (have + add >= sizeof(a->body))
		add = sizeof(a->body) - 1 - have;
	memcpy(a->body + have, data, add);
	a->body[have + add] = '\0';
	return size * n;
}

static answer take(harness *h, int replica_i, const char *org, const char *key, long cost,
		   long rate, long burst)
{
	answer a = { .limit = -1, .remaining = -1, .retry_after = -1 };
	char url[512];
	CURL *c = curl_easy_init();

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/take/%s/%s?cost=%ld&rate=%ld&burst=%ld",
		 h->r[replica_i].port, org, key, cost, rate, burst);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
	curl_easy_cleanup(c);
	return a;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void new_ids(char org[37], char key[37])
{
	ck_assert_int_eq(dl_id_new(org), 0);
	ck_assert_int_eq(dl_id_new(key), 0);
}

static double degraded_gauge(harness *h)
{
	double v = -1;

	ck_assert_int_eq(dl_metric_get(dl_metrics_gauge(h->metrics,
						       "driftlock_ingest_ratelimit_degraded",
						       "1 while Redis is unreachable and each replica "
						       "limits on its own (fail open), else 0.",
						       0),
				      NULL, &v),
			 0);
	return v;
}

static void check_429_body(const answer *a, const char *limit)
{
	cJSON *j = cJSON_Parse(a->body), *e, *d;

	ck_assert_msg(j, "429 body is not JSON: %s", a->body);
	e = cJSON_GetObjectItem(j, "error");
	ck_assert_str_eq(cJSON_GetObjectItem(e, "code")->valuestring, "rate_limited");
	d = cJSON_GetObjectItem(e, "details");
	ck_assert_ptr_nonnull(d);
	ck_assert_str_eq(cJSON_GetObjectItem(d, "limit")->valuestring, limit);
	ck_assert_int_eq(cJSON_GetObjectItem(d, "retry_after_s")->valueint, a->retry_after);
	cJSON_Delete(j);
}

/* A burst of 10 at 5/s: about 10 single events pass at once, then 429 with its headers. */
START_TEST(test_limit_headers_and_429)
{
	harness h;
	char org[37], key[37];
	int ok = 0, i;
	answer a, refused = { 0 };
	double t0;

	harness_start(&h, need_env("DRIFTLOCK_REDIS_URL"), 0);
	new_ids(org, key);
	t0 = now_s();
	for (i = 0; i < 30; i++) {
		a = take(&h, 0, org, key, 1, 5, 10);
		ck_assert_int_eq(a.limit, 5);
		ck_assert_int_ge(a.remaining, 0);
		if (a.status == 200) {
			ck_assert_int_eq(a.retry_after, -1);
			ok++;
		} else {
			ck_assert_int_eq(a.status, 429);
			refused = a;
		}
	}
	/* Never more than the burst plus the refill during the loop. */
	ck_assert_int_le(ok, 10 + (int)((now_s() - t0) * 5) + 1);
	ck_assert_int_ge(ok, 9);
	ck_assert_int_eq(refused.status, 429);
	ck_assert_int_ge(refused.retry_after, 1);
	ck_assert_int_le(refused.retry_after, 2);
	check_429_body(&refused, "org");
	/* After Retry-After the same request passes. */
	sleep((unsigned)refused.retry_after);
	a = take(&h, 0, org, key, 1, 5, 10);
	ck_assert_int_eq(a.status, 200);
	harness_stop(&h);
}
END_TEST

/* Two replicas alternating draw on one budget: together they admit what one would. */
START_TEST(test_shared_between_replicas)
{
	harness h;
	char org[37], key[37];
	int ok[2] = { 0, 0 }, refused[2] = { 0, 0 }, i;
	double t0, elapsed;
	answer a;

	harness_start(&h, need_env("DRIFTLOCK_REDIS_URL"), 0);
	new_ids(org, key);
	t0 = now_s();
	for (i = 0; i < 60; i++) {
		a = take(&h, i % 2, org, key, 1, 10, 20);
		ck_assert(a.status == 200 || a.status == 429);
		if (a.status == 200)
			ok[i % 2]++;
		else
			refused[i % 2]++;
	}
	elapsed = now_s() - t0;
	/* Unshared, each replica alone would admit 20 + 10/s. */
	ck_assert_msg(ok[0] + ok[1] <= 20 + (int)(elapsed * 10) + 1,
		      "admitted %d + %d in %.2f s", ok[0], ok[1], elapsed);
	ck_assert_int_ge(ok[0] + ok[1], 15);
	ck_assert_int_gt(ok[0], 0);
	ck_assert_int_gt(ok[1], 0);
	ck_assert_int_gt(refused[0], 0);
	ck_assert_int_gt(refused[1], 0);
	harness_stop(&h);
}
END_TEST

/* Another key of the same org finds the org's budget spent. */
START_TEST(test_org_budget_shared_by_keys)
{
	harness h;
	char org[37], key1[37], key2[37];
	answer a;

	harness_start(&h, need_env("DRIFTLOCK_REDIS_URL"), 0);
	new_ids(org, key1);
	ck_assert_int_eq(dl_id_new(key2), 0);
	a = take(&h, 0, org, key1, 100, 10, 100);
	ck_assert_int_eq(a.status, 200);
	a = take(&h, 1, org, key2, 20, 10, 100);
	ck_assert_int_eq(a.status, 429);
	ck_assert_int_ge(a.retry_after, 1);
	check_429_body(&a, "org");
	/* Another org is untouched. */
	new_ids(org, key2);
	a = take(&h, 1, org, key2, 20, 10, 100);
	ck_assert_int_eq(a.status, 200);
	harness_stop(&h);
}
END_TEST

/* A batch larger than the burst passes on a full bucket and leaves a debt to wait out. */
START_TEST(test_batch_larger_than_burst)
{
	harness h;
	char org[37], key[37];
	answer a;

	harness_start(&h, need_env("DRIFTLOCK_REDIS_URL"), 0);
	new_ids(org, key);
	a = take(&h, 0, org, key, 25, 5, 10);
	ck_assert_int_eq(a.status, 200);
	a = take(&h, 1, org, key, 1, 5, 10);
	ck_assert_int_eq(a.status, 429);
	/* 15 events of debt plus one at 5/s: more than 3 s. */
	ck_assert_int_ge(a.retry_after, 3);
	ck_assert_int_le(a.retry_after, 5);
	harness_stop(&h);
}
END_TEST

/* Redis unreachable: fail open with a local limit per replica, and say so in the metric. */
START_TEST(test_fail_open_without_redis)
{
	harness h;
	char org[37], key[37];
	int ok = 0, i;
	double degraded = -1;
	answer a;

	/* A port nothing listens on: the connection is refused at once. */
	harness_start(&h, "redis://127.0.0.1:1/0", 100);
	new_ids(org, key);
	for (i = 0; i < 20; i++) {
		a = take(&h, 0, org, key, 1, 5, 10);
		ck_assert(a.status == 200 || a.status == 429);
		ok += a.status == 200;
		if (a.status == 429)
			check_429_body(&a, "api_key");
	}
	ck_assert_int_ge(ok, 10);
	ck_assert_int_le(ok, 12);
	/* Per replica: the other one has its own local budget. */
	a = take(&h, 1, org, key, 1, 5, 10);
	ck_assert_int_eq(a.status, 200);
	degraded = degraded_gauge(&h);
	ck_assert(degraded == 1.0);
	harness_stop(&h);
}
END_TEST

/* A Redis that accepts the connection and never answers: each request waits at most about the
 * timeout, then the limiter fails open. */
START_TEST(test_fail_open_on_timeout)
{
	struct sockaddr_in a = { 0 };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char url[64], org[37], key[37];
	double t0, took;
	harness h;
	answer r;

	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 16), 0); /* the kernel completes connections; nobody reads */
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", ntohs(a.sin_port));
	harness_start(&h, url, 200);
	new_ids(org, key);
	t0 = now_s();
	r = take(&h, 0, org, key, 1, 5, 10);
	took = now_s() - t0;
	ck_assert_int_eq(r.status, 200);
	ck_assert_msg(took >= 0.15 && took < 1.5, "answered after %.3f s", took);
	ck_assert(degraded_gauge(&h) == 1.0);
	/* Once degraded, requests no longer wait for the silent server. */
	t0 = now_s();
	r = take(&h, 0, org, key, 1, 5, 10);
	ck_assert_int_eq(r.status, 200);
	ck_assert_double_lt(now_s() - t0, 0.15);
	harness_stop(&h);
	close(fd);
}
END_TEST

static Suite *ingest_ratelimit_suite(void)
{
	Suite *s = suite_create("ingest_ratelimit");
	TCase *t = tcase_create("redis");

	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_limit_headers_and_429);
	tcase_add_test(t, test_shared_between_replicas);
	tcase_add_test(t, test_org_budget_shared_by_keys);
	tcase_add_test(t, test_batch_larger_than_burst);
	tcase_add_test(t, test_fail_open_without_redis);
	tcase_add_test(t, test_fail_open_on_timeout);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(ingest_ratelimit_suite());
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
