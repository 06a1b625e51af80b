/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for GET /v1/stream/anomalies: anomalies put on the real topic arrive over
 * SSE for their org only, a reconnect with Last-Event-ID replays what was missed from
 * PostgreSQL and the recent ring without duplicates, heartbeats, caps and drain. */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/dl_id.h"
#include "common/dl_kafka.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_topics.h"
#include "tests/support/dl_itest.h"

#define SSE_CAP (32 << 20)

/* ---- an SSE client on its own thread (libcurl) ---- */

typedef struct sse_conn {
	pthread_t thread;
	pthread_mutex_t mu;
	char url[512];
	char auth[300];
	char last_id[300];
	char *buf; /* everything received, NUL-terminated */
	size_t len;
	char hdrs[8192];
	size_t hlen;
	long status;
	atomic_int stop;
	atomic_int done;
} sse_conn;

static size_t sse_on_body(char *p, size_t sz, size_t n, void *arg)
{
	sse_conn *c = arg;
	size_t add = sz * n;

	pthread_mutex_lock(&c->mu);
	if (c->len + add < SSE_CAP) {
		memcpy(c->buf + c->len, p, add);
		c->len += add;
		c->buf[c->len] = '\0';
	}
	pthread_mutex_unlock(&c->mu);
	return atomic_load(&c->stop) ? 0 : add;
}

static size_t sse_on_header(char *p, size_t sz, size_t n, void *arg)
{
	sse_conn *c = arg;
	size_t add = sz * n;

	pthread_mutex_lock(&c->mu);
	if (c->hlen + add < sizeof(c->hdrs)) {
		memcpy(c->hdrs + c->hlen, p, add);
		c->hlen += add;
		c->hdrs[c->hlen] = '\0';
	}
	pthread_mutex_unlock(&c->mu);
	return add;
}

static int sse_on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c2, curl_off_t d)
{
	sse_conn *c = arg;

	(void)a;
	(void)b;
	(void)c2;
	(void)d;
	return atomic_load(&c->stop) ? 1 : 0;
}

static void *sse_main(void *arg)
{
	sse_conn *c = arg;
	CURL *h = curl_easy_init();
	struct curl_slist *hl = NULL;
	char last[340];
	long status = 0;

	hl = curl_slist_append(hl, c->auth);
	if (c->last_id[0] != '\0') {
		snprintf(last, sizeof(last), "Last-Event-ID: %s", c->last_id);
		hl = curl_slist_append(hl, last);
	}
	curl_easy_setopt(h, CURLOPT_URL, c->url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sse_on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, sse_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, sse_on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 120000L);
	curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	pthread_mutex_lock(&c->mu);
	c->status = status;
	pthread_mutex_unlock(&c->mu);
	curl_slist_free_all(hl);
	curl_easy_cleanup(h);
	atomic_store(&c->done, 1);
	return NULL;
}

static sse_conn *sse_open_q(int port, const char *key, const char *last_id, const char *query)
{
	sse_conn *c = calloc(1, sizeof(*c));

	ck_assert_ptr_nonnull(c);
	c->buf = calloc(1, SSE_CAP);
	ck_assert_ptr_nonnull(c->buf);
	pthread_mutex_init(&c->mu, NULL);
	snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%d/v1/stream/anomalies%s", port,
		 query ? query : "");
	snprintf(c->auth, sizeof(c->auth), "Authorization: Bearer %s", key);
	snprintf(c->last_id, sizeof(c->last_id), "%s", last_id ? last_id : "");
	ck_assert_int_eq(pthread_create(&c->thread, NULL, sse_main, c), 0);
	return c;
}

static sse_conn *sse_open(int port, const char *key, const char *last_id)
{
	return sse_open_q(port, key, last_id, NULL);
}

static void sse_close(sse_conn *c)
{
	atomic_store(&c->stop, 1);
	pthread_join(c->thread, NULL);
	pthread_mutex_destroy(&c->mu);
	free(c->buf);
	free(c);
}

/* A copy of what c received so far (caller frees). */
static char *sse_text(sse_conn *c)
{
	char *s;

	pthread_mutex_lock(&c->mu);
	s = strdup(c->buf);
	pthread_mutex_unlock(&c->mu);
	ck_assert_ptr_nonnull(s);
	return s;
}

static int count_of(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* Waits until c's text contains needle at least times times; false after timeout_ms. */
static bool sse_wait(sse_conn *c, const char *needle, int times, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		char *t = sse_text(c);
		int n = count_of(t, needle);

		free(t);
		if (n >= times)
			return true;
		if (atomic_load(&c->done))
			return false;
		usleep(50 * 1000);
	}
	return false;
}

/* ---- anomalies ---- */

static dl_kafka_producer *producer(void)
{
	dl_kafka_producer *p = NULL;
	char err[256];

	ck_assert_msg(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"), "itest-sse",
					    NULL, err, sizeof(err), &p) == 0,
		      "producer: %s", err);
	return p;
}

static void make_anomaly(struct proto_anomaly *a, const char *org, const char *id, int64_t ms)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->id, sizeof(a->id), "%s", id);
	snprintf(a->org_id, sizeof(a->org_id), "%s", org);
	snprintf(a->stream, sizeof(a->stream), "checkout.logs");
	snprintf(a->event_id, sizeof(a->event_id), "ev-%s", id);
	a->event_ts_ms = ms - 100;
	a->detected_at_ms = ms;
	a->kind = PROTO_ANOMALY_KIND_EVENT;
	a->score = 12.5;
	a->p_value = 0.001;
	a->severity = PROTO_ANOMALY_SEVERITY_HIGH;
	a->nsignals = 1;
	snprintf(a->signals[0].name, sizeof(a->signals[0].name), "bits_excess");
	a->signals[0].value = 12.5;
	snprintf(a->explanation.summary, sizeof(a->explanation.summary),
		 "a \"new\" error line\nnever seen before");
	snprintf(a->explanation.signal, sizeof(a->explanation.signal), "bits_excess");
	a->explanation.value = 12.5;
	a->explanation.baseline_low = 0.5;
	a->explanation.baseline_median = 1.0;
	a->explanation.baseline_high = 2.0;
	snprintf(a->excerpt, sizeof(a->excerpt), "{\"msg\":\"boom\"}");
	snprintf(a->detector.version, sizeof(a->detector.version), "cbad-test");
	a->detector.sensitivity = 0.5;
}

static void produce_anomaly(dl_kafka_producer *p, const struct proto_anomaly *a)
{
	char key[PROTO_STREAM_KEY_MAX + 1], err[256];
	char *json = NULL;
	size_t len = 0;

	ck_assert_msg(proto_anomaly_encode(a, &json, &len, err, sizeof(err)) == 0, "%s", err);
	snprintf(key, sizeof(key), "%s:%s", a->org_id, a->stream);
	ck_assert_msg(dl_kafka_producer_produce(p, DL_TOPIC_ANOMALIES, key, strlen(key), json, len,
						NULL, NULL, NULL, err, sizeof(err)) == 0,
		      "produce: %s", err);
	ck_assert_int_eq(dl_kafka_producer_flush(p, 10000), 0);
	free(json);
}

/* Stores a as metering would (as the admin role). */
static void store_anomaly(const struct proto_anomaly *a)
{
	char ev[40], det[40], score[32], err[128];
	const char *params[7];

	ck_assert_int_eq(dl_time_format_rfc3339(a->event_ts_ms, ev, sizeof(ev), err, sizeof(err)),
			 0);
	ck_assert_int_eq(
		dl_time_format_rfc3339(a->detected_at_ms, det, sizeof(det), err, sizeof(err)), 0);
	snprintf(score, sizeof(score), "%.17g", a->score);
	params[0] = a->org_id;
	params[1] = a->id;
	params[2] = a->stream;
	params[3] = a->event_id;
	params[4] = ev;
	params[5] = det;
	params[6] = NULL;
	ck_assert_int_eq(a->severity, PROTO_ANOMALY_SEVERITY_HIGH);
	dl_itest_sql("INSERT INTO anomalies (org_id, id, stream, event_id, event_ts, detected_at,"
		     " kind, score, p_value, severity, signals, explanation_summary,"
		     " explanation_signal, explanation_value, baseline_low, baseline_median,"
		     " baseline_high, excerpt, detector_version, detector_sensitivity)"
		     " VALUES ($1, $2, $3, $4, $5, $6, 'event', 12.5, 0.001, 'high',"
		     " '{\"bits_excess\": 12.5}', E'a \"new\" error line\\nnever seen before',"
		     " 'bits_excess', 12.5, 0.5, 1.0, 2.0, '{\"msg\":\"boom\"}', 'cbad-test', 0.5)",
		     params, NULL, 0);
}

static void unique_id(const char *tag, char *out, size_t outlen)
{
	char u[DL_ID_UUID_LEN + 1];

	ck_assert_int_eq(dl_id_new(u), 0);
	snprintf(out, outlen, "%s-%s", tag, u);
}

/* The frames of text: for each "event: anomaly" frame, its id: cursor and decoded data. */
typedef struct frame {
	char cursor[300];
	struct proto_anomaly a;
} frame;

static size_t parse_frames(const char *text, frame *out, size_t max)
{
	size_t n = 0;
	const char *p = text, *end;

	/* Frames end with a blank line; a frame not complete yet is left out. */
	for (; n < max && (end = strstr(p, "\n\n")) != NULL; p = end + 2) {
		const char *id, *ev, *data;
		char err[256];

		ev = strstr(p, "event: anomaly\n");
		if (ev == NULL || ev > end)
			continue;
		id = strstr(p, "id: ");
		data = strstr(p, "data: ");
		ck_assert_msg(id != NULL && id < ev && (id == p || id[-1] == '\n'),
			      "an anomaly frame without id: %.300s", p);
		ck_assert_msg(data != NULL && data < end, "an anomaly frame without data");
		snprintf(out[n].cursor, sizeof(out[n].cursor), "%.*s",
			 (int)(strchr(id, '\n') - id - 4), id + 4);
		data += 6;
		ck_assert_msg(memchr(data, '\n', (size_t)(end - data)) == NULL,
			      "anomaly data spans lines");
		ck_assert_msg(proto_anomaly_decode(data, (size_t)(end - data), &out[n].a, err,
						   sizeof(err)) == 0,
			      "frame data does not decode: %s", err);
		n++;
	}
	return n;
}

static int find_frame(const frame *f, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(f[i].a.id, id) == 0)
			return (int)i;
	return -1;
}

/* ---- the service ---- */

static dl_itest_proc ingest;

static void start_ingest(const char *const *extra)
{
	char body[65536];
	int waited;

	dl_itest_start("ingest", extra, &ingest);
	ck_assert_msg(dl_itest_wait_ready(&ingest, 90000), "ingest not ready (log %s)",
		      ingest.log_path);
	/* The stream consumer joins its own group and gets every partition. */
	for (waited = 0; waited < 60000; waited += 200) {
		const char *m;

		ck_assert_int_eq(dl_itest_http(ingest.admin_port, "GET", "/metrics", NULL, NULL, 0,
					       body, sizeof(body), NULL, 0),
				 200);
		m = strstr(body, "\ndriftlock_ingest_sse_partitions ");
		if (m != NULL && atof(m + strlen("\ndriftlock_ingest_sse_partitions ")) > 0)
			break;
		usleep(200 * 1000);
	}
	ck_assert_msg(waited < 60000, "the SSE consumer got no partitions (log %s)",
		      ingest.log_path);
}

/* Produces probe anomalies for org until one arrives on c: the consumer's start position
 * ("latest") is resolved only after it got its partitions. */
static void wait_live(dl_kafka_producer *p, sse_conn *c, const char *org)
{
	for (int i = 0; i < 60; i++) {
		struct proto_anomaly a;
		char id[64];

		unique_id("probe", id, sizeof(id));
		make_anomaly(&a, org, id, dl_time_now_ms());
		produce_anomaly(p, &a);
		if (sse_wait(c, id, 1, 1000))
			return;
	}
	ck_abort_msg("no probe anomaly arrived over SSE (log %s)", ingest.log_path);
}

static double metric(const char *name)
{
	char body[65536], pat[128];
	const char *m;

	ck_assert_int_eq(dl_itest_http(ingest.admin_port, "GET", "/metrics", NULL, NULL, 0, body,
				       sizeof(body), NULL, 0),
			 200);
	snprintf(pat, sizeof(pat), "\n%s ", name);
	m = strstr(body, pat);
	ck_assert_msg(m != NULL, "metric %s missing", name);
	return atof(m + strlen(pat));
}

/* ---- tests ---- */

START_TEST(test_sse_live_for_the_right_org_only)
{
	static frame fa[64], fb[64];
	char org_a[37], org_b[37], key_a[128], key_b[128], id_a[64], id_b[64], id_c[64];
	char resp[4096];
	char hdrs[8192], v[128];
	const char *h[] = { "Authorization: Bearer dlk_not_a_key", NULL };

	dl_kafka_producer *p;
	struct proto_anomaly a, b, a2;
	sse_conn *sa, *sb, *sc;
	char *ta, *tb, *tc;
	size_t na, nb;
	int ia, ib;

	dl_itest_org_with_key("sse-a", NULL, org_a, key_a, sizeof(key_a));
	dl_itest_org_with_key("sse-b", NULL, org_b, key_b, sizeof(key_b));
	start_ingest(NULL);
	ck_assert_int_eq(dl_itest_http(ingest.public_port, "GET", "/v1/stream/anomalies", NULL,
				       NULL, 0, resp, sizeof(resp), NULL, 0),
			 401);
	ck_assert_int_eq(dl_itest_http(ingest.public_port, "GET", "/v1/stream/anomalies", h, NULL,
				       0, resp, sizeof(resp), NULL, 0),
			 401);
	p = producer();
	sa = sse_open(ingest.public_port, key_a, NULL);
	sb = sse_open(ingest.public_port, key_b, NULL);
	sc = sse_open_q(ingest.public_port, key_a, NULL,
			"?severity=critical,low&min_score=10&stream=checkout.logs");
	wait_live(p, sa, org_a);
	wait_live(p, sb, org_b);
	ck_assert(sse_wait(sc, "retry: 3000", 1, 5000));

	unique_id("live-a", id_a, sizeof(id_a));
	unique_id("live-b", id_b, sizeof(id_b));
	make_anomaly(&a, org_a, id_a, dl_time_now_ms());
	make_anomaly(&b, org_b, id_b, dl_time_now_ms());
	produce_anomaly(p, &a);
	produce_anomaly(p, &b);
	ck_assert(sse_wait(sa, id_a, 1, 15000));
	ck_assert(sse_wait(sb, id_b, 1, 15000));
	/* The filtered stream gets only what matches: critical, score >= 10, its stream. */
	unique_id("crit", id_c, sizeof(id_c));
	make_anomaly(&a2, org_a, id_c, dl_time_now_ms());
	a2.severity = PROTO_ANOMALY_SEVERITY_CRITICAL;
	produce_anomaly(p, &a2);
	a2.score = 9.5;
	snprintf(a2.id, sizeof(a2.id), "%s-low-score", id_c);
	produce_anomaly(p, &a2);
	ck_assert(sse_wait(sc, id_c, 1, 15000));
	ck_assert(sse_wait(sa, "-low-score", 1, 15000));
	usleep(500 * 1000); /* time for a wrong delivery to show up */
	tc = sse_text(sc);
	ck_assert_int_eq(count_of(tc, "event: anomaly"), 1);
	ck_assert_ptr_null(strstr(tc, id_a));
	free(tc);
	ta = sse_text(sa);
	tb = sse_text(sb);
	ck_assert_ptr_null(strstr(ta, id_b));
	ck_assert_ptr_null(strstr(tb, id_a));
	ck_assert_ptr_null(strstr(ta, org_b));
	ck_assert_ptr_null(strstr(tb, org_a));

	/* The frame: id: <ms>.<id>, event: anomaly, data: the anomaly as produced. */
	na = parse_frames(ta, fa, 64);
	nb = parse_frames(tb, fb, 64);
	ia = find_frame(fa, na, id_a);
	ib = find_frame(fb, nb, id_b);
	ck_assert_int_ge(ia, 0);
	ck_assert_int_ge(ib, 0);
	ck_assert_str_eq(fa[ia].a.org_id, org_a);
	ck_assert_str_eq(fa[ia].a.stream, "checkout.logs");
	ck_assert_int_eq(fa[ia].a.detected_at_ms, a.detected_at_ms);
	ck_assert_str_eq(fa[ia].a.explanation.summary, a.explanation.summary);
	snprintf(v, sizeof(v), "%" PRId64 ".%s", a.detected_at_ms, id_a);
	/* Probes came earlier; a's key is the greatest so far, so its cursor is its own. */
	ck_assert_str_eq(fa[ia].cursor, v);
	ck_assert_ptr_nonnull(strstr(ta, "retry: 3000\n\n"));
	pthread_mutex_lock(&sa->mu);
	snprintf(hdrs, sizeof(hdrs), "%s", sa->hdrs);
	pthread_mutex_unlock(&sa->mu);
	ck_assert_ptr_nonnull(strstr(hdrs, "HTTP/1.1 200"));
	ck_assert(dl_itest_header(hdrs, "Content-Type", v, sizeof(v)));
	ck_assert_str_eq(v, "text/event-stream");
	ck_assert(dl_itest_header(hdrs, "Cache-Control", v, sizeof(v)));
	ck_assert_str_eq(v, "no-cache");
	ck_assert_double_eq(metric("driftlock_ingest_sse_clients"), 3);
	free(ta);
	free(tb);
	sse_close(sa);
	sse_close(sb);
	sse_close(sc);
	/* A filter that is not one. */
	snprintf(resp, sizeof(resp), "Authorization: Bearer %s", key_a);
	h[0] = resp;
	ck_assert_int_eq(dl_itest_http(ingest.public_port, "GET",
				       "/v1/stream/anomalies?severity=urgent", h, NULL, 0, hdrs,
				       sizeof(hdrs), NULL, 0),
			 400);
	ck_assert_ptr_nonnull(strstr(hdrs, "\"invalid_parameter\""));
	dl_kafka_producer_free(p);
	ck_assert_int_eq(dl_itest_stop(&ingest, 20000), 0);
}
END_TEST

START_TEST(test_sse_resume_with_last_event_id)
{
	static frame f[128];
	char org[37], key[128], other[37], okey[128], cursor[300], resp[4096], hdrs[4096];
	char ids[7][64];
	const char *h[3];
	char hk[200];
	dl_kafka_producer *p;
	struct proto_anomaly x[7], x7;
	int64_t t0 = dl_time_now_ms();
	sse_conn *c;
	char *t;
	size_t n;

	dl_itest_org_with_key("sse-resume", NULL, org, key, sizeof(key));
	dl_itest_org_with_key("sse-resume-other", NULL, other, okey, sizeof(okey));
	start_ingest(NULL);
	p = producer();
	for (int i = 0; i < 7; i++)
		unique_id("r", ids[i], sizeof(ids[i]));

	/* x1 live; its cursor is where the client stops. */
	c = sse_open(ingest.public_port, key, NULL);
	wait_live(p, c, org);
	make_anomaly(&x[1], org, ids[1], t0 + 60000);
	produce_anomaly(p, &x[1]);
	ck_assert(sse_wait(c, ids[1], 1, 15000));
	t = sse_text(c);
	n = parse_frames(t, f, 128);
	free(t);
	ck_assert_int_ge(find_frame(f, n, ids[1]), 0);
	snprintf(cursor, sizeof(cursor), "%s", f[n - 1].cursor);
	snprintf(resp, sizeof(resp), "%" PRId64 ".%s", x[1].detected_at_ms, ids[1]);
	ck_assert_str_eq(cursor, resp);
	sse_close(c);
	store_anomaly(&x[1]); /* metering caught up with it */

	/* Missed while away: x0 is older than the cursor (not replayed), x2 and x3 stored by
	 * metering, x4 only on the topic (not stored yet: the seam), x6 another org's. */
	make_anomaly(&x[0], org, ids[0], t0 + 59000);
	make_anomaly(&x[2], org, ids[2], t0 + 61000);
	make_anomaly(&x[3], org, ids[3], t0 + 61000); /* same time as x2: ordered by id */
	make_anomaly(&x[4], org, ids[4], t0 + 62000);
	make_anomaly(&x[6], other, ids[6], t0 + 61500);
	store_anomaly(&x[0]);
	store_anomaly(&x[2]);
	store_anomaly(&x[3]);
	store_anomaly(&x[6]);
	produce_anomaly(p, &x[2]);
	produce_anomaly(p, &x[4]);
	usleep(2000 * 1000); /* ingest's consumer reads x2 and x4 into its recent ring */

	c = sse_open(ingest.public_port, key, cursor);
	ck_assert(sse_wait(c, ids[4], 1, 15000));
	/* Then live again. x3 reaches this process only now (metering had stored it first): it
	 * was replayed, so it is not sent again. x5 is stored by metering right away. */
	produce_anomaly(p, &x[3]);
	make_anomaly(&x[5], org, ids[5], t0 + 63000);
	store_anomaly(&x[5]);
	produce_anomaly(p, &x[5]);
	ck_assert(sse_wait(c, ids[5], 1, 15000));
	usleep(500 * 1000);
	t = sse_text(c);
	n = parse_frames(t, f, 128);
	ck_assert_msg(n == 4, "expected x2 x3 x4 x5 once each, got %zu frames:\n%s", n, t);
	free(t);
	{
		int i2 = find_frame(f, n, ids[2]), i3 = find_frame(f, n, ids[3]);
		int first = strcmp(ids[2], ids[3]) < 0 ? i2 : i3;

		ck_assert_int_ge(i2, 0);
		ck_assert_int_ge(i3, 0);
		ck_assert_int_eq(first, 0); /* same ms: bytewise id order */
		ck_assert_int_eq(find_frame(f, n, ids[4]), 2);
		ck_assert_int_eq(find_frame(f, n, ids[5]), 3);
		ck_assert_int_lt(find_frame(f, n, ids[0]), 0);
		ck_assert_int_lt(find_frame(f, n, ids[1]), 0);
		ck_assert_int_lt(find_frame(f, n, ids[6]), 0);
	}
	/* Cursors only grow, and the last one is x5's. */
	snprintf(resp, sizeof(resp), "%" PRId64 ".%s", x[5].detected_at_ms, ids[5]);
	ck_assert_str_eq(f[3].cursor, resp);
	ck_assert_str_eq(f[3].a.explanation.summary, "a \"new\" error line\nnever seen before");
	ck_assert_double_ge(metric("driftlock_ingest_sse_replayed_rows_total"), 3);
	sse_close(c);

	/* A cursor this API never sent. */
	snprintf(hk, sizeof(hk), "Authorization: Bearer %s", key);
	h[0] = hk;
	h[1] = "Last-Event-ID: not-a-cursor";
	h[2] = NULL;
	ck_assert_int_eq(dl_itest_http(ingest.public_port, "GET", "/v1/stream/anomalies", h, NULL,
				       0, resp, sizeof(resp), hdrs, sizeof(hdrs)),
			 400);
	ck_assert_ptr_nonnull(strstr(resp, "\"invalid_parameter\""));
	ck_assert_ptr_nonnull(strstr(resp, "Last-Event-ID"));

	/* Filters apply to the replay too: only x7, on another stream. */
	make_anomaly(&x7, org, "r7-billing", t0 + 61200);
	snprintf(x7.id, sizeof(x7.id), "%s-b", ids[0]);
	snprintf(x7.stream, sizeof(x7.stream), "billing.logs");
	store_anomaly(&x7);
	c = sse_open_q(ingest.public_port, key, cursor, "?stream=billing.logs");
	ck_assert(sse_wait(c, x7.id, 1, 15000));
	usleep(500 * 1000);
	t = sse_text(c);
	ck_assert_int_eq(count_of(t, "event: anomaly"), 1);
	free(t);
	sse_close(c);
	c = sse_open_q(ingest.public_port, key, cursor, "?severity=low,medium");
	ck_assert(sse_wait(c, "retry: 3000", 1, 5000));
	usleep(1500 * 1000); /* the replay ran: nothing stored is low or medium */
	t = sse_text(c);
	ck_assert_int_eq(count_of(t, "event: anomaly"), 0);
	free(t);
	sse_close(c);
	dl_kafka_producer_free(p);
	ck_assert_int_eq(dl_itest_stop(&ingest, 20000), 0);
}
END_TEST

START_TEST(test_sse_heartbeat_caps_and_drain)
{
	static const char *const extra[] = { "DRIFTLOCK_INGEST_SSE_HEARTBEAT=300ms",
					     "DRIFTLOCK_INGEST_SSE_MAX_STREAMS_PER_ORG=2", NULL };
	char org[37], key[128], resp[4096], hdrs[4096], hk[200], v[64];
	const char *h[] = { hk, NULL };
	struct timespec a, b;
	sse_conn *c1, *c2;
	int status;

	dl_itest_org_with_key("sse-hb", NULL, org, key, sizeof(key));
	start_ingest(extra);
	c1 = sse_open(ingest.public_port, key, NULL);
	c2 = sse_open(ingest.public_port, key, NULL);
	/* Nothing happens on the topic for this org: comment lines keep the streams alive. */
	ck_assert(sse_wait(c1, ": heartbeat\n\n", 3, 5000));
	ck_assert(sse_wait(c2, ": heartbeat\n\n", 1, 5000));
	ck_assert_double_eq(metric("driftlock_ingest_sse_clients"), 2);

	/* A third stream for the org is over its cap. */
	snprintf(hk, sizeof(hk), "Authorization: Bearer %s", key);
	ck_assert_int_eq(dl_itest_http(ingest.public_port, "GET", "/v1/stream/anomalies", h, NULL,
				       0, resp, sizeof(resp), hdrs, sizeof(hdrs)),
			 429);
	ck_assert_ptr_nonnull(strstr(resp, "\"too_many_streams\""));
	ck_assert(dl_itest_header(hdrs, "Retry-After", v, sizeof(v)));

	/* SIGTERM: the open streams end promptly and the process exits cleanly. */
	clock_gettime(CLOCK_MONOTONIC, &a);
	status = dl_itest_stop(&ingest, 15000);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ck_assert_msg(status == 0, "ingest did not exit cleanly (status %d, log %s)", status,
		      ingest.log_path);
	ck_assert_int_lt(b.tv_sec - a.tv_sec, 10);
	for (int i = 0; i < 100 && !(atomic_load(&c1->done) && atomic_load(&c2->done)); i++)
		usleep(50 * 1000);
	ck_assert(atomic_load(&c1->done) && atomic_load(&c2->done));
	pthread_mutex_lock(&c1->mu);
	ck_assert_int_eq(c1->status, 200);
	pthread_mutex_unlock(&c1->mu);
	sse_close(c1);
	sse_close(c2);
}
END_TEST

/* A client that stops reading: raw socket with a small receive buffer. */
static int raw_stream(int port, const char *key)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), rcv = 4096;
	char req[512], buf[512];
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)), 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	snprintf(req, sizeof(req),
		 "GET /v1/stream/anomalies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
		 key);
	ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	n = read(fd, buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 12);
	buf[n] = '\0';
	ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
	return fd;
}

static bool file_has(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	bool found = false;

	ck_assert_ptr_nonnull(f);
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

START_TEST(test_sse_slow_client_dropped)
{
	static const char *const extra[] = { "DRIFTLOCK_INGEST_SSE_BUFFER=64KiB", NULL };
	char org[37], key[128], buf[65536];
	dl_kafka_producer *p;
	sse_conn *fast;
	int fd, waited;
	int64_t t0 = dl_time_now_ms();
	bool eof = false;

	dl_itest_org_with_key("sse-slow", NULL, org, key, sizeof(key));
	start_ingest(extra);
	p = producer();
	fast = sse_open(ingest.public_port, key, NULL);
	wait_live(p, fast, org);
	fd = raw_stream(ingest.public_port, key);
	/* About 12 MB of anomalies: far more than socket buffers and the 64 KiB budget hold. */
	for (int i = 0; i < 4000; i++) {
		struct proto_anomaly a;
		char id[64], err[256], k[PROTO_STREAM_KEY_MAX + 1];
		char *json = NULL;
		size_t len = 0;

		snprintf(id, sizeof(id), "slow-%d-%" PRId64, i, t0);
		make_anomaly(&a, org, id, t0 + i);
		memset(a.excerpt, 'x', 1000);
		a.excerpt[1000] = '\0';
		memset(a.explanation.summary, 'y', 1000);
		a.explanation.summary[1000] = '\0';
		ck_assert_int_eq(proto_anomaly_encode(&a, &json, &len, err, sizeof(err)), 0);
		snprintf(k, sizeof(k), "%s:%s", a.org_id, a.stream);
		while (dl_kafka_producer_produce(p, DL_TOPIC_ANOMALIES, k, strlen(k), json, len,
						 NULL, NULL, NULL, err, sizeof(err)) == -ENOBUFS)
			dl_kafka_producer_poll(p, 100);
		free(json);
	}
	ck_assert_int_eq(dl_kafka_producer_flush(p, 30000), 0);
	for (waited = 0; waited < 30000; waited += 200) {
		if (metric("driftlock_ingest_sse_slow_disconnects_total") >= 1)
			break;
		usleep(200 * 1000);
	}
	ck_assert_msg(waited < 30000, "the client that stopped reading was not dropped (log %s)",
		      ingest.log_path);
	ck_assert(file_has(ingest.log_path, "too slow to keep up, disconnected"));
	/* Its connection is closed: what was in flight, then end of file. */
	for (waited = 0; waited < 10000 && !eof; waited += 10) {
		struct pollfd pf = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		n = read(fd, buf, sizeof(buf));
		eof = n <= 0;
	}
	ck_assert(eof);
	close(fd);
	/* The client that kept up is still connected and got the last one. */
	{
		char last[64];

		snprintf(last, sizeof(last), "slow-3999-%" PRId64, t0);
		bool got = sse_wait(fast, last, 1, 30000);
		char *t = sse_text(fast);

		ck_assert_msg(got, "the client that keeps up missed anomalies (log %s, consumed %g, "
			      "received %zu bytes, %d frames, done %d)",
			      ingest.log_path, metric("driftlock_ingest_sse_consumed_total"),
			      strlen(t), count_of(t, "event: anomaly"), atomic_load(&fast->done));
		free(t);
		ck_assert(!atomic_load(&fast->done));
	}
	sse_close(fast);
	dl_kafka_producer_free(p);
	ck_assert_int_eq(dl_itest_stop(&ingest, 20000), 0);
}
END_TEST

static Suite *ingest_sse_suite(void)
{
	Suite *s = suite_create("ingest_sse");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_sse_live_for_the_right_org_only);
	tcase_add_test(tc, test_sse_resume_with_last_event_id);
	tcase_add_test(tc, test_sse_heartbeat_caps_and_drain);
	tcase_add_test(tc, test_sse_slow_client_dropped);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	sr = srunner_create(ingest_sse_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	curl_global_cleanup();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
