/* SPDX-License-Identifier: Apache-2.0 */
/* Integration tests for det_state against the real Redis named by DRIFTLOCK_REDIS_URL: restored detectors give the same results, pipelined saves, missing and unusable snapshots, latency. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "common/dl_metrics.h"
#include "common/dl_redis.h"
#include "common/dl_time.h"
#include "services/detector/cbad/cbad.h"
#include "services/detector/det_state.h"

/* Events of a labeled stream, read once by main() (the forked tests inherit them). */
typedef struct test_event {
	char *text;
	size_t len;
	int64_t ts_ms;
} test_event;

static test_event *events;
static size_t nevents;
/* A detector whose snapshot is about 300 KiB, and how many events it took. */
static cbad_detector *big;
static size_t big_events;
static char org[40];

static const char *redis_url(void)
{
	const char *url = getenv("DRIFTLOCK_REDIS_URL");

	ck_assert_msg(url != NULL && url[0] != '\0',
		      "DRIFTLOCK_REDIS_URL is not set (source the stack.env of infra/stack.sh)");
	return url;
}

static dl_redis *connect_redis(void)
{
	dl_redis *r = NULL;
	char err[256] = "";

	ck_assert_msg(dl_redis_connect_url(redis_url(), 2000, 5000, err, sizeof(err), &r) == 0,
		      "%s", err);
	return r;
}

static redisReply *cmd(dl_redis *r, int argc, const char **argv, const size_t *lens)
{
	redisReply *reply = NULL;
	char err[256] = "";

	ck_assert_msg(dl_redis_command_argv(r, argc, argv, lens, &reply, err, sizeof(err)) == 0,
		      "%s: %s", argv[0], err);
	return reply;
}

static det_state *new_state(dl_redis *r, dl_metrics_registry *m)
{
	det_state *s = NULL;
	char err[256] = "";

	ck_assert_msg(det_state_new(r, m, &s, err, sizeof(err)) == 0, "%s", err);
	return s;
}

static cbad_detector *new_detector(void)
{
	cbad_settings st;
	cbad_detector *d = NULL;
	char err[256] = "";

	cbad_settings_default(&st);
	ck_assert_int_eq(cbad_detector_new(&st, &d, err, sizeof(err)), 0);
	return d;
}

static void feed(cbad_detector *d, size_t from, size_t to)
{
	cbad_result r;

	for (size_t i = from; i < to; i++)
		ck_assert_int_eq(cbad_detector_process(d, events[i].text, events[i].len,
						       events[i].ts_ms, &r), 0);
}

static double metric(dl_metrics_registry *m, dl_metric *f, const char *const *labels)
{
	double v = -1;

	(void)m;
	ck_assert_ptr_nonnull(f);
	if (dl_metric_get(f, labels, &v) < 0)
		return 0;
	return v;
}

/* A detector restored from Redis gives, on the events that follow, exactly the results the
 * original gives; one started afresh does not. */
START_TEST(test_round_trip_same_results)
{
	dl_redis *r = connect_redis();
	dl_metrics_registry *m = dl_metrics_registry_new();
	det_state *s = new_state(r, m);
	cbad_detector *d1 = new_detector(), *d2 = NULL, *fresh = new_detector();
	const size_t split = 2500, end = 4500;
	int32_t partition = -1;
	int64_t offset = -1;
	cbad_status st1, st2;
	size_t anomalies = 0, differ = 0;
	char err[512] = "";
	const char *restored[1] = { "restored" };

	ck_assert_uint_ge(nevents, end);
	feed(d1, 0, split);
	ck_assert_msg(det_state_save(s, org, "orders-app", d1, 3, 80000 + (int64_t)split, err,
				     sizeof(err)) == 0, "%s", err);
	ck_assert_msg(det_state_load(s, org, "orders-app", &d2, &partition, &offset, err,
				     sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(partition, 3);
	ck_assert_int_eq(offset, 80000 + (int64_t)split);
	cbad_detector_status(d1, &st1);
	cbad_detector_status(d2, &st2);
	ck_assert(!st2.calibrating);
	ck_assert_uint_eq(st2.events_seen, split);
	ck_assert_uint_eq(st2.anomalies, st1.anomalies);

	for (size_t i = split; i < end; i++) {
		cbad_result a, b, c;

		ck_assert_int_eq(cbad_detector_process(d1, events[i].text, events[i].len,
						       events[i].ts_ms, &a), 0);
		ck_assert_int_eq(cbad_detector_process(d2, events[i].text, events[i].len,
						       events[i].ts_ms, &b), 0);
		ck_assert_int_eq(cbad_detector_process(fresh, events[i].text, events[i].len,
						       events[i].ts_ms, &c), 0);
		ck_assert_msg(a.score == b.score && a.p_value == b.p_value, "event %zu: %g/%g vs %g/%g",
			      i, a.score, a.p_value, b.score, b.p_value);
		ck_assert_int_eq(a.anomaly, b.anomaly);
		ck_assert_int_eq(a.kind, b.kind);
		ck_assert_int_eq(a.severity, b.severity);
		ck_assert_str_eq(a.summary, b.summary);
		anomalies += a.anomaly;
		differ += a.calibrating != c.calibrating || a.score != c.score;
	}
	/* The comparison covered anomalies, and restoring mattered (a new detector calibrates). */
	ck_assert_uint_gt(anomalies, 0);
	ck_assert_uint_gt(differ, (end - split) / 2);
	ck_assert(metric(m, dl_metrics_counter(m, "driftlock_detector_snapshot_loads_total", NULL,
					       1, "result"), restored) == 1);
	ck_assert(metric(m, dl_metrics_counter(m, "driftlock_detector_snapshot_saves_total", NULL,
					       0), NULL) == 1);

	cbad_detector_free(fresh);
	cbad_detector_free(d2);
	cbad_detector_free(d1);
	ck_assert_int_eq(det_state_delete(s, org, "orders-app", err, sizeof(err)), 0);
	det_state_free(s);
	dl_metrics_registry_free(m);
	dl_redis_free(r);
}
END_TEST

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Median save and load times of d over 21 rounds, printed with what they are; returns the
 * larger median in ms. */
static double measure(det_state *s, const cbad_detector *d, const char *what)
{
	enum { ROUNDS = 21 };
	double save_ms[ROUNDS], load_ms[ROUNDS], ser_ms[ROUNDS];
	void *buf = NULL;
	size_t len = 0;
	cbad_status st;
	char err[512] = "";

	for (int i = 0; i < ROUNDS; i++) {
		cbad_detector *got = NULL;
		int64_t t0 = dl_time_mono_ns(), t1, t2, t3;

		ck_assert_msg(det_state_save(s, org, "timed", d, 0, i, err, sizeof(err)) == 0, "%s",
			      err);
		t1 = dl_time_mono_ns();
		ck_assert_msg(det_state_load(s, org, "timed", &got, NULL, NULL, err, sizeof(err)) == 0,
			      "%s", err);
		t2 = dl_time_mono_ns();
		ck_assert_int_eq(cbad_detector_save(d, &buf, &len, err, sizeof(err)), 0);
		t3 = dl_time_mono_ns();
		free(buf);
		cbad_detector_free(got);
		save_ms[i] = (double)(t1 - t0) / 1e6;
		load_ms[i] = (double)(t2 - t1) / 1e6;
		ser_ms[i] = (double)(t3 - t2) / 1e6;
	}
	qsort(save_ms, ROUNDS, sizeof(double), cmp_double);
	qsort(load_ms, ROUNDS, sizeof(double), cmp_double);
	qsort(ser_ms, ROUNDS, sizeof(double), cmp_double);
	cbad_detector_status(d, &st);
	printf("det_state: %s (memory %zu bytes), snapshot %zu bytes: save median %.2f ms max %.2f "
	       "ms (engine serialisation alone %.2f ms), load median %.2f ms max %.2f ms\n", what,
	       st.memory_bytes, len, save_ms[ROUNDS / 2], save_ms[ROUNDS - 1], ser_ms[ROUNDS / 2],
	       load_ms[ROUNDS / 2], load_ms[ROUNDS - 1]);
	ck_assert_int_eq(det_state_delete(s, org, "timed", err, sizeof(err)), 0);
	return save_ms[ROUNDS / 2] > load_ms[ROUNDS / 2] ? save_ms[ROUNDS / 2] : load_ms[ROUNDS / 2];
}

/* Save and load of a 300 KiB snapshot, and of a default detector of a labeled stream: the
 * numbers docs/operations.md quotes. */
START_TEST(test_latency_300k)
{
	dl_redis *r = connect_redis();
	det_state *s = new_state(r, NULL);
	cbad_detector *typical = new_detector();
	void *buf = NULL;
	size_t len = 0;
	double worst;
	char err[512] = "", what[96];

	ck_assert_ptr_nonnull(big);
	ck_assert_int_eq(cbad_detector_save(big, &buf, &len, err, sizeof(err)), 0);
	free(buf);
	ck_assert_uint_ge(len, 300 * 1024);
	snprintf(what, sizeof(what), "%zu-event detector, 1 MiB baseline", big_events);
	worst = measure(s, big, what);
	/* On the loop these must stay short: a revoke saves many, an assign loads many. */
	ck_assert_msg(worst < 100, "median %.1f ms", worst);
	feed(typical, 0, 20000);
	worst = measure(s, typical, "orders-app, 20000 events, default settings");
	ck_assert_msg(worst < 50, "median %.1f ms", worst);
	cbad_detector_free(typical);
	det_state_free(s);
	dl_redis_free(r);
}
END_TEST

/* Many streams in one call, more than one pipelined round of bytes; each reads back as its own. */
START_TEST(test_save_many_pipelined)
{
	enum { N = 40 };
	dl_redis *r = connect_redis();
	dl_metrics_registry *m = dl_metrics_registry_new();
	det_state *s = new_state(r, m);
	cbad_detector *small = new_detector();
	det_state_item items[N];
	char names[N][32], err[512] = "";
	int64_t t0, t1;

	feed(small, 0, 700);
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "many-%02d", i);
		/* 30 of them are 300 KiB: 9 MiB, more than one pipelined round. */
		items[i] = (det_state_item){ .org_id = org, .stream = names[i],
					     .d = i % 4 != 0 ? big : small, .partition = i % 6,
					     .next_offset = 1000 + i };
	}
	t0 = dl_time_mono_ns();
	ck_assert_msg(det_state_save_many(s, items, N, err, sizeof(err)) == 0, "%s", err);
	t1 = dl_time_mono_ns();
	printf("det_state: save_many of %d streams (%d of 300 KiB) in %.1f ms\n", N, N * 3 / 4,
	       (double)(t1 - t0) / 1e6);
	for (int i = 0; i < N; i++) {
		cbad_detector *d = NULL;
		int32_t p = -1;
		int64_t o = -1;
		cbad_status want, got;

		ck_assert_msg(det_state_load(s, org, names[i], &d, &p, &o, err, sizeof(err)) == 0,
			      "%s: %s", names[i], err);
		ck_assert_int_eq(p, i % 6);
		ck_assert_int_eq(o, 1000 + i);
		cbad_detector_status(items[i].d, &want);
		cbad_detector_status(d, &got);
		ck_assert_uint_eq(got.events_seen, want.events_seen);
		cbad_detector_free(d);
		ck_assert_int_eq(det_state_delete(s, org, names[i], err, sizeof(err)), 0);
	}
	ck_assert(metric(m, dl_metrics_counter(m, "driftlock_detector_snapshot_saves_total", NULL,
					       0), NULL) == N);
	{
		char *text = NULL, want[64];

		ck_assert_int_eq(dl_metrics_render(m, &text, NULL), 0);
		snprintf(want, sizeof(want), "\ndriftlock_detector_snapshot_bytes_count %d\n", N);
		ck_assert_msg(strstr(text, want) != NULL, "%s", text);
		ck_assert_msg(strstr(text, "\ndriftlock_detector_snapshot_seconds_count{op=\"save_many\"} 1\n")
			      != NULL, "%s", text);
		free(text);
	}
	ck_assert_int_eq(det_state_save_many(s, items, 0, err, sizeof(err)), 0);
	cbad_detector_free(small);
	det_state_free(s);
	dl_metrics_registry_free(m);
	dl_redis_free(r);
}
END_TEST

static long long client_id(dl_redis *r)
{
	const char *argv[2] = { "CLIENT", "ID" };
	redisReply *reply = cmd(r, 2, argv, NULL);
	long long id = reply->integer;

	freeReplyObject(reply);
	return id;
}

/* One bad item does not keep the others from being written, and says which it was; a connection
 * killed under the state is re-made by the next pipelined save. */
START_TEST(test_save_many_partial_and_reconnect)
{
	dl_redis *r = connect_redis(), *admin = connect_redis();
	dl_metrics_registry *m = dl_metrics_registry_new();
	det_state *s = new_state(r, m);
	cbad_detector *d = new_detector(), *got = NULL;
	det_state_item items[3] = {
		{ .org_id = org, .stream = "part-a", .d = d, .partition = 1, .next_offset = 10 },
		{ .org_id = org, .stream = "bad stream", .d = d, .partition = 1, .next_offset = 11 },
		{ .org_id = org, .stream = "part-c", .d = d, .partition = 1, .next_offset = 12 },
	};
	char err[512] = "", idtext[32];
	const char *kill[4] = { "CLIENT", "KILL", "ID", idtext };
	const char *labels[2] = { "save_many", "invalid" };
	int64_t o = -1;

	feed(d, 0, 300);
	ck_assert_int_eq(det_state_save_many(s, items, 3, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "bad stream") != NULL && strstr(err, "1 of 3 not written"),
		      "%s", err);
	ck_assert_int_eq(det_state_load(s, org, "part-a", &got, NULL, &o, err, sizeof(err)), 0);
	ck_assert_int_eq(o, 10);
	cbad_detector_free(got);
	ck_assert_int_eq(det_state_load(s, org, "part-c", &got, NULL, &o, err, sizeof(err)), 0);
	ck_assert_int_eq(o, 12);
	cbad_detector_free(got);
	ck_assert(metric(m, dl_metrics_counter(m, "driftlock_detector_snapshot_failures_total",
					       NULL, 2, "op", "reason"), labels) == 1);

	/* The server drops our connection: the next save_many re-makes it and writes. */
	snprintf(idtext, sizeof(idtext), "%lld", client_id(r));
	freeReplyObject(cmd(admin, 4, kill, NULL));
	items[0].next_offset = 20;
	items[2].next_offset = 22;
	items[1] = items[0];
	ck_assert_msg(det_state_save_many(s, items, 3, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(det_state_load(s, org, "part-c", &got, NULL, &o, err, sizeof(err)), 0);
	ck_assert_int_eq(o, 22);
	cbad_detector_free(got);
	ck_assert_int_eq(det_state_delete(s, org, "part-a", err, sizeof(err)), 0);
	ck_assert_int_eq(det_state_delete(s, org, "part-c", err, sizeof(err)), 0);
	cbad_detector_free(d);
	det_state_free(s);
	dl_metrics_registry_free(m);
	dl_redis_free(admin);
	dl_redis_free(r);
}
END_TEST

static long long pttl(dl_redis *r, const char *stream)
{
	char key[DET_STATE_KEY_MAX], err[256];
	const char *argv[2] = { "PTTL", key };
	redisReply *reply;
	long long v;

	ck_assert_int_gt(det_state_key(org, stream, key, sizeof(key), err, sizeof(err)), 0);
	reply = cmd(r, 2, argv, NULL);
	v = reply->integer;
	freeReplyObject(reply);
	return v;
}

START_TEST(test_missing_delete_and_expiry)
{
	dl_redis *r = connect_redis();
	dl_metrics_registry *m = dl_metrics_registry_new();
	det_state *s = new_state(r, m);
	cbad_detector *d = new_detector(), *got = (cbad_detector *)&got;
	int32_t p = -7;
	int64_t o = -7;
	char err[512] = "";
	const char *missing[1] = { "missing" };

	ck_assert_int_eq(det_state_load(s, org, "never-seen", &got, &p, &o, err, sizeof(err)),
			 -ENOENT);
	ck_assert_ptr_eq(got, (cbad_detector *)&got);
	ck_assert_int_eq(p, -7);
	ck_assert_int_eq(o, -7);
	ck_assert(metric(m, dl_metrics_counter(m, "driftlock_detector_snapshot_loads_total", NULL,
					       1, "result"), missing) == 1);
	ck_assert_int_eq(det_state_delete(s, org, "never-seen", err, sizeof(err)), 0);

	feed(d, 0, 200);
	ck_assert_int_eq(det_state_save(s, org, "expiring", d, 0, 1, err, sizeof(err)), 0);
	/* Expires after the default 30 days unless saved again. */
	ck_assert_int_gt(pttl(r, "expiring"), DET_STATE_TTL_MS - 60000);
	ck_assert_int_le(pttl(r, "expiring"), DET_STATE_TTL_MS);
	ck_assert_int_eq(det_state_set_limits(s, DET_STATE_MAX_BYTES, 0), 0);
	ck_assert_int_eq(det_state_save(s, org, "expiring", d, 0, 2, err, sizeof(err)), 0);
	ck_assert_int_eq(pttl(r, "expiring"), -1);
	ck_assert_int_eq(det_state_set_limits(s, DET_STATE_MAX_BYTES, 1000), -EINVAL);
	ck_assert_int_eq(det_state_set_limits(s, 100, 0), -EINVAL);
	ck_assert_int_eq(det_state_delete(s, org, "expiring", err, sizeof(err)), 0);
	got = (cbad_detector *)&got;
	ck_assert_int_eq(det_state_load(s, org, "expiring", &got, &p, &o, err, sizeof(err)),
			 -ENOENT);
	ck_assert_ptr_eq(got, (cbad_detector *)&got);

	/* Bad names are refused before Redis. */
	ck_assert_int_eq(det_state_save(s, "not-an-org", "x", d, 0, 0, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(det_state_save(s, org, "x", d, -1, 0, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(det_state_load(s, org, "a/b", &got, NULL, NULL, err, sizeof(err)), -EINVAL);
	cbad_detector_free(d);
	det_state_free(s);
	dl_metrics_registry_free(m);
	dl_redis_free(r);
}
END_TEST

static void raw_set(dl_redis *r, const char *stream, const void *val, size_t len)
{
	char key[DET_STATE_KEY_MAX], err[256];
	const char *argv[3] = { "SET", key, val };
	size_t lens[3];

	lens[1] = (size_t)det_state_key(org, stream, key, sizeof(key), err, sizeof(err));
	lens[0] = 3;
	lens[2] = len;
	freeReplyObject(cmd(r, 3, argv, lens));
}

static redisReply *raw_get(dl_redis *r, const char *stream)
{
	char key[DET_STATE_KEY_MAX], err[256];
	const char *argv[2] = { "GET", key };

	ck_assert_int_gt(det_state_key(org, stream, key, sizeof(key), err, sizeof(err)), 0);
	return cmd(r, 2, argv, NULL);
}

/* Whatever sits under a stream's key that is not its own intact snapshot is refused with the
 * reason, never loaded. */
START_TEST(test_unusable_values_refused)
{
	dl_redis *r = connect_redis();
	dl_metrics_registry *m = dl_metrics_registry_new();
	det_state *s = new_state(r, m);
	cbad_detector *d = new_detector(), *got = NULL;
	redisReply *v;
	char key[DET_STATE_KEY_MAX], err[512] = "";
	const char *hset[4] = { "HSET", key, "f", "v" };
	const char *refused[1] = { "refused" };
	det_state_header h;
	const void *engine;
	size_t elen;
	int64_t o = -1;

	feed(d, 0, 300);
	ck_assert_int_eq(det_state_save(s, org, "src", d, 2, 300, err, sizeof(err)), 0);

	raw_set(r, "garbage", "hello world, not a snapshot at all", 34);
	ck_assert_int_eq(det_state_load(s, org, "garbage", &got, NULL, NULL, err, sizeof(err)),
			 -EBADMSG);
	ck_assert_msg(strstr(err, "garbage") != NULL && strstr(err, "not a detector snapshot"),
		      "%s", err);

	/* Another stream's snapshot copied under this key. */
	v = raw_get(r, "src");
	raw_set(r, "copy", v->str, v->len);
	ck_assert_int_eq(det_state_load(s, org, "copy", &got, NULL, NULL, err, sizeof(err)),
			 -EBADMSG);
	ck_assert_msg(strstr(err, "another stream") != NULL, "%s", err);

	/* Truncated in Redis (a partial write from some other tool). */
	raw_set(r, "src", v->str, v->len - 100);
	ck_assert_int_eq(det_state_load(s, org, "src", &got, NULL, NULL, err, sizeof(err)),
			 -EBADMSG);

	/* An intact header around engine state of an unknown engine version. */
	ck_assert_int_eq(det_state_decode(v->str, v->len, NULL, &h, &engine, &elen, err,
					  sizeof(err)), 0);
	{
		void *val = NULL;
		size_t vlen = 0;
		char *eng = malloc(elen);

		memcpy(eng, engine, elen);
		eng[4] = (char)0x7f;
		snprintf(h.identity, sizeof(h.identity), "%s:%s", org, "src");
		ck_assert_int_eq(det_state_encode(&h, eng, elen, DET_STATE_MAX_BYTES, &val, &vlen,
						  err, sizeof(err)), 0);
		raw_set(r, "src", val, vlen);
		free(val);
		free(eng);
	}
	ck_assert_int_eq(det_state_load(s, org, "src", &got, NULL, NULL, err, sizeof(err)),
			 -EBADMSG);
	ck_assert_msg(strstr(err, "engine refused") != NULL, "%s", err);
	freeReplyObject(v);

	/* Not a string. */
	ck_assert_int_gt(det_state_key(org, "hash", key, sizeof(key), err, sizeof(err)), 0);
	freeReplyObject(cmd(r, 4, hset, NULL));
	ck_assert_int_eq(det_state_load(s, org, "hash", &got, NULL, NULL, err, sizeof(err)),
			 -EBADMSG);
	ck_assert_msg(strstr(err, "not a string") != NULL, "%s", err);
	ck_assert(metric(m, dl_metrics_counter(m, "driftlock_detector_snapshot_loads_total", NULL,
					       1, "result"), refused) == 5);

	/* Size limit: a 300 KiB snapshot is refused on save (the old one stays) and on load. */
	ck_assert_int_eq(det_state_save(s, org, "sized", big, 4, 40, err, sizeof(err)), 0);
	ck_assert_int_eq(det_state_set_limits(s, 64 * 1024, DET_STATE_TTL_MS), 0);
	ck_assert_int_eq(det_state_save(s, org, "sized", big, 4, 41, err, sizeof(err)), -EMSGSIZE);
	ck_assert_msg(strstr(err, "over the limit") != NULL, "%s", err);
	ck_assert_int_eq(det_state_load(s, org, "sized", &got, NULL, NULL, err, sizeof(err)),
			 -EBADMSG);
	ck_assert_msg(strstr(err, "over the limit") != NULL, "%s", err);
	ck_assert_int_eq(det_state_set_limits(s, DET_STATE_MAX_BYTES, DET_STATE_TTL_MS), 0);
	ck_assert_int_eq(det_state_load(s, org, "sized", &got, NULL, &o, err, sizeof(err)), 0);
	ck_assert_int_eq(o, 40);
	cbad_detector_free(got);

	/* The next save replaces an unusable value. */
	ck_assert_int_eq(det_state_save(s, org, "garbage", d, 0, 5, err, sizeof(err)), 0);
	ck_assert_int_eq(det_state_load(s, org, "garbage", &got, NULL, &o, err, sizeof(err)), 0);
	ck_assert_int_eq(o, 5);
	cbad_detector_free(got);

	const char *gone[] = { "garbage", "copy", "src", "hash", "sized" };
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
		ck_assert_int_eq(det_state_delete(s, org, gone[i], err, sizeof(err)), 0);
	cbad_detector_free(d);
	det_state_free(s);
	dl_metrics_registry_free(m);
	dl_redis_free(r);
}
END_TEST

/* A deterministic application-log stream (an orders service: requests, payments, a rare
 * error burst), so the suite needs no data outside the repository. Not a Check test: runs
 * once in main(); returns false on any problem. */
static bool synth_stream(size_t max)
{
	static const char *const routes[] = { "OrderController", "CartController",
					      "PaymentService", "InventoryClient" };
	static const char *const errors[] = {
		"db.Pool - connection refused to db-2:5432, retries exhausted",
		"web.OrderController - java.lang.NullPointerException at OrderMapper.toDto(OrderMapper.java:88)",
		"billing.Ledger - java.lang.OutOfMemoryError: Java heap space while loading 2419883 rows",
		"inventory.StockClient - HTTP 503 from stock-service: circuit breaker OPEN for 30s",
		"auth.TokenFilter - SECURITY signature verification failed for kid=rotated-2024-01",
		"queue.Dispatcher - deadlock detected: thread-7 waits for lock held by thread-3",
		"cache.Redis - READONLY You can't write against a read only replica",
		"fs.Archive - disk /var/lib/orders is 99% full, refusing to write segment",
	};
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	char line[512];

	events = calloc(max, sizeof(*events));
	for (nevents = 0; events != NULL && nevents < max; nevents++) {
		int len;

		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		if (nevents % 997 == 500)
			/* A failure never seen before each time: novelty the detector must find. */
			len = snprintf(line, sizeof(line),
				       "{\"msg\":\"ERROR [pool-%u] c.a.orders.%s\",\"latency_ms\":%u}",
				       (unsigned)(x >> 60), errors[(nevents / 997) % 8],
				       9000 + (unsigned)(x >> 20) % 3000);
		else
			len = snprintf(line, sizeof(line),
				       "{\"msg\":\"INFO  [http-nio-8080-exec-%u] c.a.orders.web.%s - "
				       "Received order request %u from user u_%05u\",\"latency_ms\":%u}",
				       (unsigned)(x >> 58), routes[(x >> 30) % 4],
				       (unsigned)(x >> 8) % 9000000, (unsigned)(x >> 36) % 20000,
				       20 + (unsigned)(x >> 48) % 80);
		events[nevents].text = strndup(line, (size_t)len);
		events[nevents].len = (size_t)len;
		events[nevents].ts_ms = 1795737600000LL + (int64_t)nevents * 250;
		if (events[nevents].text == NULL)
			return false;
	}
	return nevents == max;
}

/* A detector whose snapshot reaches 300 KiB: a larger baseline (8000 events, 1 MiB) of the
 * stream's events, each carrying a random 160-letter trace token the compressor cannot shrink
 * (no hex digits: those are masked; the labeled streams alone compress to under 200 KiB at
 * any setting). */
static bool build_big(void)
{
	cbad_settings st;
	cbad_result r;
	static const char letters[] = "ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ";
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	char err[256], ev[16384 + 100];

	cbad_settings_default(&st);
	st.baseline_events = 8000;
	st.baseline_bytes = 1024 * 1024;
	if (cbad_settings_validate(&st, err, sizeof(err)) < 0 ||
	    cbad_detector_new(&st, &big, err, sizeof(err)) < 0)
		return false;
	for (size_t i = 0; i < nevents; i++) {
		int len;

		len = snprintf(ev, sizeof(ev), "%.*s,\"trace\":\"", (int)events[i].len - 1,
			       events[i].text);
		for (int k = 0; k < 160; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			ev[len++] = letters[(x >> 32) % 40];
		}
		len += snprintf(ev + len, sizeof(ev) - (size_t)len, "\"}");
		if (cbad_detector_process(big, ev, (size_t)len, events[i].ts_ms, &r))
			return false;
		if ((i + 1) % 250 == 0) {
			void *buf = NULL;
			size_t blen = 0;

			if (cbad_detector_save(big, &buf, &blen, err, sizeof(err)) < 0)
				return false;
			free(buf);
			if (blen >= 300 * 1024) {
				big_events = i + 1;
				return true;
			}
		}
	}
	return false;
}

int main(void)
{
	Suite *su = suite_create("det_state");
	TCase *tc = tcase_create("redis");
	SRunner *sr;
	int failed;

	if (!synth_stream(30000) || !build_big()) {
		fprintf(stderr, "test_det_state: cannot make the test stream or a 300 KiB "
			"detector from it\n");
		return 1;
	}
	snprintf(org, sizeof(org), "00000000-0000-4000-8000-%012x", (unsigned)getpid());

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_round_trip_same_results);
	tcase_add_test(tc, test_latency_300k);
	tcase_add_test(tc, test_save_many_pipelined);
	tcase_add_test(tc, test_save_many_partial_and_reconnect);
	tcase_add_test(tc, test_missing_delete_and_expiry);
	tcase_add_test(tc, test_unusable_values_refused);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
