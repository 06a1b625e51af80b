/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for the driftlock-detector binary with its stream settings and direct
 * producers, against the real broker, PostgreSQL and Redis: a stream's sensitivity and pause
 * changed in PostgreSQL (as the API would) apply without a restart; its status in PostgreSQL
 * follows; raw events a Kafka producer publishes with an API key are judged like envelopes,
 * and bad ones go to the dead-letter topic while the partition moves on. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "common/dl_id.h"
#include "common/dl_kafka.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_dlq.h"
#include "proto/proto_topics.h"
#include "services/detector/cbad/cbad.h"
#include "tests/support/det_scenario.h"
#include "tests/support/dl_itest.h"

#define SCENARIO "audit-log"

static const char *const live_env[] = { "DRIFTLOCK_DETECTOR_CHECKPOINT_INTERVAL=500ms",
					"DRIFTLOCK_DETECTOR_SETTINGS_POLL=1s",
					"DRIFTLOCK_DETECTOR_STATUS_FLUSH=500ms", NULL };

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
	return dl_time_mono_ns() / 1000000;
}

/* The value of the sample line starting with `sample` on the admin port's /metrics (0 when
 * absent: counters with labels appear at their first increment). */
static double metric_value(int admin_port, const char *sample)
{
	static char text[1 << 17];
	const char *at;

	ck_assert_int_eq(dl_itest_http(admin_port, "GET", "/metrics", NULL, NULL, 0, text,
				       sizeof(text), NULL, 0),
			 200);
	for (at = strstr(text, sample); at && at != text && at[-1] != '\n';
	     at = strstr(at + 1, sample))
		;
	return at ? strtod(at + strlen(sample), NULL) : 0;
}

/* Waits until the metric reaches at least want; returns how long it took (ms) or -1. */
static int64_t wait_metric(int admin_port, const char *sample, double want, int timeout_ms)
{
	int64_t t0 = now_ms();

	while (now_ms() - t0 < timeout_ms) {
		if (metric_value(admin_port, sample) >= want)
			return now_ms() - t0;
		sleep_ms(100);
	}
	return -1;
}

/* One column of the stream's row (NULL-safe text), "" when there is no row. */
static void stream_col(const char *org, const char *stream, const char *expr, char *out,
		       size_t outlen)
{
	char sql[256];
	const char *params[] = { org, stream, NULL };

	snprintf(sql, sizeof(sql),
		 "SELECT coalesce((%s)::text, '') FROM streams WHERE org_id = $1 AND name = $2",
		 expr);
	out[0] = '\0';
	dl_itest_sql(sql, params, out, outlen);
}

/* Waits until the stream's events_seen in PostgreSQL is want. */
static bool wait_events_seen(const char *org, const char *stream, long long want, int timeout_ms)
{
	int64_t t0 = now_ms();
	char v[64];

	while (now_ms() - t0 < timeout_ms) {
		stream_col(org, stream, "events_seen", v, sizeof(v));
		if (v[0] && atoll(v) == want)
			return true;
		sleep_ms(200);
	}
	return false;
}

/* A direct producer's message: value as is, key, the line's time as the message timestamp,
 * and the driftlock-api-key / driftlock-stream headers when not NULL. */
static void produce_raw(dl_kafka_producer *prod, const char *key, const void *value, size_t len,
			int64_t ts_ms, const char *apikey, const char *stream)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(2);
	rd_kafka_resp_err_t e;

	if (apikey)
		rd_kafka_header_add(h, "driftlock-api-key", -1, apikey, -1);
	if (stream)
		rd_kafka_header_add(h, "driftlock-stream", -1, stream, -1);
	e = rd_kafka_producev(dl_kafka_producer_handle(prod), RD_KAFKA_V_TOPIC(DL_TOPIC_EVENTS),
			      RD_KAFKA_V_KEY(key, strlen(key)),
			      RD_KAFKA_V_VALUE((void *)value, len),
			      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
			      RD_KAFKA_V_TIMESTAMP(ts_ms), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
	if (e)
		rd_kafka_headers_destroy(h);
	ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(e));
}

#define LIVE_LINES 6000
#define LIVE_A 3000 /* [0, A): sensitivity 0 */
#define LIVE_B 4500 /* [A, B): sensitivity 1 */
#define LIVE_C 5000 /* [B, C): paused; [C, n): resumed, sensitivity 1 */

/*
 * A stream registered with sensitivity 0 runs on it; an UPDATE of streams.sensitivity to 1 (as
 * the API does) applies within 10 s without a restart; a pause skips the stream's events, a
 * resume takes them again on the same detector. The anomaly set equals CBAD's on the same
 * events with the same changes at the same points. Meanwhile the stream's row in PostgreSQL
 * follows: events_seen, calibrating/active, last_event_at.
 */
START_TEST(test_live_settings_and_status)
{
	det_scenario sc = { 0 };
	dl_kafka_producer *prod;
	dl_itest_proc p;
	char org[DL_ID_UUID_LEN + 1], apikey[128], err[256], v[128], ts[64];
	const char *stream = "live-settings";
	const char *params[3];
	bool *want, *seen;
	size_t nwant = 0, nwant_a = 0, nwant_b = 0, nwant_c = 0, got;
	cbad_settings cs;
	cbad_detector *d;
	cbad_result res;
	cbad_status cst, cst_end;
	int64_t took;

	det_scenario_load(&sc, SCENARIO, LIVE_LINES);
	/* What CBAD alone finds with the same changes at the same points. */
	want = calloc(sc.n, sizeof(*want));
	seen = calloc(sc.n, sizeof(*seen));
	cbad_settings_default(&cs);
	cs.sensitivity = 0;
	ck_assert_int_eq(cbad_detector_new(&cs, &d, err, sizeof(err)), 0);
	for (size_t i = 0; i < sc.n; i++) {
		if (i == LIVE_A)
			ck_assert_int_eq(cbad_detector_set_sensitivity(d, 1), 0);
		if (i >= LIVE_B && i < LIVE_C)
			continue;
		cbad_detector_process(d, sc.lines[i], sc.lens[i], sc.ts[i], &res);
		want[i] = res.anomaly;
		nwant += res.anomaly;
		nwant_a += i < LIVE_A && res.anomaly;
		nwant_b += i >= LIVE_A && i < LIVE_B && res.anomaly;
		nwant_c += i >= LIVE_C && res.anomaly;
		if (i == LIVE_A - 1)
			cbad_detector_status(d, &cst);
	}
	cbad_detector_status(d, &cst_end);
	cbad_detector_free(d);
	/* The changes matter: sensitivity 1 finds anomalies in both later parts. */
	ck_assert_uint_gt(nwant_b, 0);
	ck_assert_uint_gt(nwant_c, 0);

	dl_itest_org_with_key("itest-live-settings", NULL, org, apikey, sizeof(apikey));
	params[0] = org;
	params[1] = stream;
	params[2] = NULL;
	/* Created through the API before its first event, with sensitivity 0. */
	dl_itest_sql("INSERT INTO streams (org_id, name, sensitivity) VALUES ($1, $2, 0)", params,
		     NULL, 0);
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
					       "itest-detector-live", NULL, err, sizeof(err), &prod),
			 0);
	dl_itest_start("detector", live_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);

	/* Part A at sensitivity 0; the status follows in PostgreSQL. */
	det_scenario_produce(prod, &sc, org, stream, 0, LIVE_A);
	ck_assert_msg(wait_events_seen(org, stream, LIVE_A, 90000),
		      "events_seen did not reach %d, see %s", LIVE_A, p.log_path);
	stream_col(org, stream, "status", v, sizeof(v));
	ck_assert_str_eq(v, cst.calibrating ? "calibrating" : "active");
	stream_col(org, stream, "(extract(epoch FROM last_event_at) * 1000)::bigint", v,
		   sizeof(v));
	snprintf(ts, sizeof(ts), "%lld", (long long)sc.ts[LIVE_A - 1]);
	ck_assert_str_eq(v, ts);
	got = det_scenario_read_anomalies(org, nwant_a, 20000, seen, sc.n);
	ck_assert_uint_eq(got, nwant_a);

	/* Sensitivity 1 through SQL, as the API does: applied within 10 s, no restart. */
	dl_itest_sql("UPDATE streams SET sensitivity = 1 WHERE org_id = $1 AND name = $2", params,
		     NULL, 0);
	took = wait_metric(p.admin_port, "driftlock_detector_settings_changes_total ", 1, 10000);
	ck_assert_msg(took >= 0, "sensitivity change not applied within 10 s, see %s", p.log_path);
	det_scenario_produce(prod, &sc, org, stream, LIVE_A, LIVE_B);
	ck_assert_msg(wait_events_seen(org, stream, LIVE_B, 90000), "part B not processed");

	/* Paused: its events are skipped and counted; the row stays paused. */
	dl_itest_sql("UPDATE streams SET status = 'paused' WHERE org_id = $1 AND name = $2", params,
		     NULL, 0);
	took = wait_metric(p.admin_port, "driftlock_detector_settings_changes_total ", 2, 10000);
	ck_assert_msg(took >= 0, "pause not applied within 10 s, see %s", p.log_path);
	det_scenario_produce(prod, &sc, org, stream, LIVE_B, LIVE_C);
	ck_assert_msg(wait_metric(p.admin_port,
				  "driftlock_detector_events_total{outcome=\"paused\"} ",
				  LIVE_C - LIVE_B, 60000) >= 0,
		      "paused events not skipped, see %s", p.log_path);
	sleep_ms(1500); /* a status flush */
	stream_col(org, stream, "status", v, sizeof(v));
	ck_assert_str_eq(v, "paused");
	stream_col(org, stream, "events_seen", v, sizeof(v));
	ck_assert_int_eq(atoll(v), LIVE_B);

	/* Resumed: the same detector goes on. */
	dl_itest_sql("UPDATE streams SET status = 'active' WHERE org_id = $1 AND name = $2", params,
		     NULL, 0);
	took = wait_metric(p.admin_port, "driftlock_detector_settings_changes_total ", 3, 10000);
	ck_assert_msg(took >= 0, "resume not applied within 10 s, see %s", p.log_path);
	det_scenario_produce(prod, &sc, org, stream, LIVE_C, sc.n);
	ck_assert_msg(wait_events_seen(org, stream, (long long)(sc.n - (LIVE_C - LIVE_B)), 90000),
		      "part C not processed, see %s", p.log_path);
	got = det_scenario_read_anomalies(org, nwant, 30000, seen, sc.n);
	ck_assert_uint_eq(got, nwant);
	for (size_t i = 0; i < sc.n; i++)
		ck_assert_msg(seen[i] == want[i], "line %zu: detector %d, CBAD alone %d", i, seen[i],
			      want[i]);
	sleep_ms(1500); /* a status flush after the last event */
	stream_col(org, stream, "status", v, sizeof(v));
	ck_assert_str_eq(v, cst_end.calibrating ? "calibrating" : "active");

	dl_itest_stop_clean(&p, 30000, "detector");
	dl_kafka_producer_free(prod);
	free(seen);
	free(want);
	det_scenario_free(&sc);
}
END_TEST

#define DIRECT_LINES 4000

/*
 * Raw events published straight to Kafka with a valid driftlock-api-key give the anomalies
 * CBAD finds on them (as envelopes would); messages with an unknown key, without a key (and not
 * an envelope), or without a stream are dead letters with their reason, and the partition moves
 * on to the valid messages behind them.
 */
START_TEST(test_live_direct_producers)
{
	det_scenario sc = { 0 };
	dl_kafka_producer *prod;
	dl_itest_proc p;
	char org[DL_ID_UUID_LEN + 1], apikey[128], badkey[128], err[256], key[PROTO_STREAM_KEY_MAX + 1];
	char v[64];
	const char *stream = "direct-log", *stream2 = "direct-after";
	bool *want;
	size_t nwant = 0, got, nbad = 0;
	dl_itest_msg *m = NULL;
	struct proto_anomaly *a = malloc(sizeof(*a));
	struct proto_dlq dq;
	bool reasons[3] = { false, false, false };
	static const char obj_without_stream[] = "{\"level\":\"error\",\"msg\":\"no stream\"}";

	det_scenario_load(&sc, SCENARIO, DIRECT_LINES);
	want = det_scenario_expected(&sc, &nwant);
	ck_assert_uint_gt(nwant, 0);
	dl_itest_org_with_key("itest-live-direct", NULL, org, apikey, sizeof(apikey));
	/* Same shape, another key: well-formed but unknown. */
	snprintf(badkey, sizeof(badkey), "%s", apikey);
	badkey[strlen(badkey) - 1] = badkey[strlen(badkey) - 1] == 'A' ? 'B' : 'A';
	ck_assert_int_eq(proto_topics_stream_key(org, stream, key, sizeof(key), NULL, NULL, 0), 0);
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
					       "itest-detector-direct", NULL, err, sizeof(err),
					       &prod),
			 0);
	dl_itest_start("detector", live_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);

	/* Poison first, on the same key (so the same partition) as the valid events after it. */
	produce_raw(prod, key, sc.lines[0], sc.lens[0], sc.ts[0], badkey, stream);
	produce_raw(prod, key, sc.lines[0], sc.lens[0], sc.ts[0], NULL, stream);
	produce_raw(prod, key, obj_without_stream, strlen(obj_without_stream), sc.ts[0], apikey,
		    NULL);
	/* The lines carry "stream":"audit-log"; the header names the stream instead. */
	for (size_t i = 0; i < sc.n; i++) {
		produce_raw(prod, key, sc.lines[i], sc.lens[i], sc.ts[i], apikey, stream);
		if ((i & 1023) == 0)
			dl_kafka_producer_poll(prod, 0);
	}
	ck_assert_int_eq(dl_kafka_producer_flush(prod, 30000), 0);

	/* As many anomalies as CBAD finds, each at the time of one of the lines it flags. */
	got = dl_itest_topic_read(DL_TOPIC_ANOMALIES, org, nwant, 120000, &m);
	ck_assert_msg(got == nwant, "%zu anomalies, CBAD alone %zu; see %s", got, nwant,
		      p.log_path);
	for (size_t i = 0; i < got; i++) {
		bool found = false;

		ck_assert_msg(proto_anomaly_decode(m[i].value, m[i].len, a, err, sizeof(err)) == 0,
			      "%s", err);
		ck_assert_str_eq(a->org_id, org);
		ck_assert_str_eq(a->stream, stream);
		ck_assert(dl_id_is_uuid(a->event_id)); /* derived from where the message is */
		for (size_t j = 0; j < sc.n && !found; j++)
			found = want[j] && sc.ts[j] == a->event_ts_ms;
		ck_assert_msg(found, "anomaly at %lld is not one CBAD finds",
			      (long long)a->event_ts_ms);
	}
	dl_itest_msgs_free(m, got);
	ck_assert_msg(wait_events_seen(org, stream, (long long)sc.n, 30000),
		      "events_seen of the direct stream is not %zu", sc.n);

	/* The three dead letters, with their reasons. */
	got = dl_itest_topic_read(DL_TOPIC_DLQ, org, 3, 30000, &m);
	ck_assert_uint_eq(got, 3);
	for (size_t i = 0; i < got; i++) {
		memset(&dq, 0, sizeof(dq));
		ck_assert_msg(proto_dlq_decode(m[i].value, m[i].len, &dq, err, sizeof(err)) == 0,
			      "%s", err);
		ck_assert_str_eq(dq.service, "detector");
		if (strcmp(dq.reason_code, "invalid_api_key") == 0)
			reasons[0] = true;
		else if (strcmp(dq.reason_code, "missing_stream") == 0)
			reasons[2] = true;
		else if (strcmp(dq.reason_code, "schema_mismatch") == 0 ||
			 strcmp(dq.reason_code, "invalid_event") == 0)
			reasons[1] = true; /* no key: not a direct producer's, the envelope's reason */
		else
			nbad++;
		/* the key never appears in a dead letter's reason */
		ck_assert_ptr_null(strstr(dq.reason_message, apikey));
		proto_dlq_free(&dq);
	}
	dl_itest_msgs_free(m, got);
	ck_assert_uint_eq(nbad, 0);
	ck_assert(reasons[0] && reasons[1] && reasons[2]);

	/* A stream named only in the payload, and a key the detector has cached: accepted. */
	{
		char k2[PROTO_STREAM_KEY_MAX + 1];
		char line[256];

		ck_assert_int_eq(proto_topics_stream_key(org, stream2, k2, sizeof(k2), NULL, NULL,
							 0),
				 0);
		snprintf(line, sizeof(line), "{\"stream\":\"%s\",\"msg\":\"hello\"}", stream2);
		produce_raw(prod, k2, line, strlen(line), sc.ts[0], apikey, NULL);
		ck_assert_int_eq(dl_kafka_producer_flush(prod, 30000), 0);
		ck_assert_msg(wait_events_seen(org, stream2, 1, 30000),
			      "a stream named in the payload was not registered");
		stream_col(org, stream2, "status", v, sizeof(v));
		ck_assert_str_eq(v, "calibrating");
	}

	dl_itest_stop_clean(&p, 30000, "detector");
	dl_kafka_producer_free(prod);
	free(a);
	free(want);
	det_scenario_free(&sc);
}
END_TEST

/* Events of an org that does not exist are dead letters ("unknown_org"), and the partition
 * moves on to the next stream's events. */
START_TEST(test_live_unknown_org)
{
	det_scenario sc = { 0 };
	dl_kafka_producer *prod;
	dl_itest_proc p;
	char ghost[DL_ID_UUID_LEN + 1], org[DL_ID_UUID_LEN + 1], apikey[128], err[256];
	dl_itest_msg *m = NULL;
	struct proto_dlq dq;
	size_t got;

	det_scenario_load(&sc, SCENARIO, 10);
	ck_assert_int_eq(dl_id_new(ghost), 0);
	dl_itest_org_with_key("itest-live-ghost", NULL, org, apikey, sizeof(apikey));
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
					       "itest-detector-ghost", NULL, err, sizeof(err),
					       &prod),
			 0);
	dl_itest_start("detector", live_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);
	det_scenario_produce(prod, &sc, ghost, "nobody", 0, 2);
	det_scenario_produce(prod, &sc, org, "somebody", 0, sc.n);
	got = dl_itest_topic_read(DL_TOPIC_DLQ, ghost, 2, 30000, &m);
	ck_assert_uint_eq(got, 2);
	for (size_t i = 0; i < got; i++) {
		memset(&dq, 0, sizeof(dq));
		ck_assert_msg(proto_dlq_decode(m[i].value, m[i].len, &dq, err, sizeof(err)) == 0,
			      "%s", err);
		ck_assert_str_eq(dq.reason_code, "unknown_org");
		proto_dlq_free(&dq);
	}
	dl_itest_msgs_free(m, got);
	ck_assert(wait_events_seen(org, "somebody", (long long)sc.n, 30000));
	dl_itest_stop_clean(&p, 30000, "detector");
	dl_kafka_producer_free(prod);
	det_scenario_free(&sc);
}
END_TEST

#define RESTART_LINES 5000
#define RESTART_A 3000 /* [0, A): defaults; then stopped, sensitivity 1 while down */
#define RESTART_B 4500 /* [A, B): restored, sensitivity 1; then window_events 100 */

/*
 * A sensitivity changed while no worker holds the stream applies to the detector restored from
 * its snapshot (learned state kept); a change of another setting (window_events) gives the
 * stream a new detector that calibrates again. The anomaly set equals CBAD's with the same
 * changes at the same points.
 */
START_TEST(test_live_restore_and_structural_change)
{
	det_scenario sc = { 0 };
	dl_kafka_producer *prod;
	dl_itest_proc p;
	char org[DL_ID_UUID_LEN + 1], apikey[128], err[256], v[128];
	const char *stream = "live-restart";
	const char *params[] = { NULL, NULL, NULL };
	bool *want, *seen;
	size_t nwant = 0, nwant_b = 0, got;
	cbad_settings cs;
	cbad_detector *d;
	cbad_result res;
	cbad_status cst;

	det_scenario_load(&sc, SCENARIO, RESTART_LINES);
	want = calloc(sc.n, sizeof(*want));
	seen = calloc(sc.n, sizeof(*seen));
	cbad_settings_default(&cs);
	ck_assert_int_eq(cbad_detector_new(&cs, &d, err, sizeof(err)), 0);
	for (size_t i = 0; i < sc.n; i++) {
		if (i == RESTART_A)
			ck_assert_int_eq(cbad_detector_set_sensitivity(d, 1), 0);
		if (i == RESTART_B) {
			cbad_detector_free(d);
			ck_assert_int_eq(cbad_settings_apply_json(&cs, "{\"window_events\":100}", 21,
								  err, sizeof(err)),
					 0);
			cs.sensitivity = 1;
			ck_assert_int_eq(cbad_detector_new(&cs, &d, err, sizeof(err)), 0);
		}
		cbad_detector_process(d, sc.lines[i], sc.lens[i], sc.ts[i], &res);
		want[i] = res.anomaly;
		nwant += res.anomaly;
		nwant_b += i >= RESTART_A && i < RESTART_B && res.anomaly;
	}
	cbad_detector_status(d, &cst);
	cbad_detector_free(d);
	ck_assert_uint_gt(nwant_b, 0);

	dl_itest_org_with_key("itest-live-restart", NULL, org, apikey, sizeof(apikey));
	params[0] = org;
	params[1] = stream;
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
					       "itest-detector-restart", NULL, err, sizeof(err),
					       &prod),
			 0);
	dl_itest_start("detector", live_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);
	det_scenario_produce(prod, &sc, org, stream, 0, RESTART_A);
	ck_assert_msg(wait_events_seen(org, stream, RESTART_A, 90000), "part A not processed");
	dl_itest_stop_clean(&p, 30000, "detector");

	/* Changed while no worker holds the stream. */
	dl_itest_sql("UPDATE streams SET sensitivity = 1 WHERE org_id = $1 AND name = $2", params,
		     NULL, 0);
	dl_itest_start("detector", live_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);
	det_scenario_produce(prod, &sc, org, stream, RESTART_A, RESTART_B);
	ck_assert_msg(wait_events_seen(org, stream, RESTART_B, 90000), "part B not processed");
	ck_assert_double_gt(metric_value(p.admin_port,
					 "driftlock_detector_snapshot_loads_total{result=\"restored\"} "),
			    0);

	/* Another window: a new detector, calibrating again. */
	dl_itest_sql("UPDATE streams SET settings = '{\"window_events\": 100}' "
		     "WHERE org_id = $1 AND name = $2",
		     params, NULL, 0);
	ck_assert_msg(wait_metric(p.admin_port, "driftlock_detector_settings_changes_total ", 1,
				  10000) >= 0,
		      "settings change not applied within 10 s, see %s", p.log_path);
	det_scenario_produce(prod, &sc, org, stream, RESTART_B, sc.n);
	got = det_scenario_read_anomalies(org, nwant, 60000, seen, sc.n);
	ck_assert_uint_eq(got, nwant);
	for (size_t i = 0; i < sc.n; i++)
		ck_assert_msg(seen[i] == want[i], "line %zu: detector %d, CBAD alone %d", i, seen[i],
			      want[i]);
	sleep_ms(1500); /* a status flush after the last event */
	stream_col(org, stream, "status", v, sizeof(v));
	ck_assert_str_eq(v, cst.calibrating ? "calibrating" : "active");
	ck_assert(cst.calibrating); /* 500 events into a new 1000-event baseline */
	dl_itest_stop_clean(&p, 30000, "detector");
	dl_kafka_producer_free(prod);
	free(seen);
	free(want);
	det_scenario_free(&sc);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("detector_live");
	TCase *tc = tcase_create("live");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_live_settings_and_status);
	tcase_add_test(tc, test_live_direct_producers);
	tcase_add_test(tc, test_live_unknown_org);
	tcase_add_test(tc, test_live_restore_and_structural_change);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
