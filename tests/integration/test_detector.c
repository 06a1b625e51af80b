/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for the driftlock-detector binary against the real broker and Redis: a
 * labeled scenario on driftlock.events.v1 gives its anomalies on driftlock.anomalies.v1, and
 * after a SIGTERM and a restart the detector resumes from its snapshots instead of calibrating
 * again. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/dl_id.h"
#include "common/dl_kafka.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_topics.h"
#include "tests/support/det_scenario.h"
#include "tests/support/dl_itest.h"

#define STREAM "audit-log"
#define NLINES 8000
#define SPLIT 5000

static const char *const detector_env[] = { "DRIFTLOCK_DETECTOR_CHECKPOINT_INTERVAL=500ms",
					    NULL };

START_TEST(test_detector_scenario_and_restart)
{
	det_scenario sc = { 0 };
	dl_kafka_producer *prod;
	dl_itest_proc p;
	char org[DL_ID_UUID_LEN + 1], err[256], metrics[1 << 16];
	size_t nwant, nfirst = 0, got;
	bool *want, *seen;

	det_scenario_load(&sc, STREAM, NLINES);
	want = det_scenario_expected(&sc, &nwant);
	for (size_t i = 0; i < SPLIT; i++)
		nfirst += want[i];
	ck_assert_uint_gt(nfirst, 0);
	ck_assert_uint_gt(nwant, nfirst);
	{
		/* a real org: the detector registers the stream under it (an unknown org's events
		 * are dead letters) */
		char apikey[128];

		dl_itest_org_with_key("itest-detector", NULL, org, apikey, sizeof(apikey));
	}
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
					       "itest-detector", NULL, err, sizeof(err), &prod),
			 0);
	seen = calloc(sc.n, sizeof(*seen));

	dl_itest_start("detector", detector_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);
	det_scenario_produce(prod, &sc, org, STREAM, 0, SPLIT);
	got = det_scenario_read_anomalies(org, nfirst, 90000, seen, sc.n);
	ck_assert_uint_eq(got, nfirst);
	ck_assert_int_eq(dl_itest_http(p.admin_port, "GET", "/metrics", NULL, NULL, 0, metrics,
				       sizeof(metrics), NULL, 0),
			 200);
	ck_assert_ptr_nonnull(strstr(metrics, "driftlock_detector_events_total{outcome=\"processed\"}"));
	ck_assert_ptr_nonnull(strstr(metrics, "driftlock_detector_streams "));
	dl_itest_stop_clean(&p, 30000, "detector");

	/* The rest arrives while it is down; the restarted worker takes it from the snapshot. */
	det_scenario_produce(prod, &sc, org, STREAM, SPLIT, sc.n);
	dl_itest_start("detector", detector_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);
	got = det_scenario_read_anomalies(org, nwant, 90000, seen, sc.n);
	ck_assert_uint_eq(got, nwant); /* nothing before the commit was produced again */
	for (size_t i = 0; i < sc.n; i++)
		ck_assert_msg(seen[i] == want[i], "line %zu: detector %d, CBAD alone %d", i, seen[i],
			      want[i]);
	/* the stream came back from Redis, not from a new warm-up */
	ck_assert_int_eq(dl_itest_http(p.admin_port, "GET", "/metrics", NULL, NULL, 0, metrics,
				       sizeof(metrics), NULL, 0),
			 200);
	ck_assert_msg(strstr(metrics, "driftlock_detector_snapshot_loads_total{result=\"restored\"} "),
		      "no snapshot restored:\n%s", metrics);
	dl_itest_stop_clean(&p, 30000, "detector");
	dl_kafka_producer_free(prod);
	free(seen);
	free(want);
	det_scenario_free(&sc);
}
END_TEST

/* The value of the sample line starting with `sample` ("name " or "name{labels} ") on the
 * admin port's /metrics, or -1 when absent. */
static double metric_value(int admin_port, const char *sample)
{
	static char text[1 << 17];
	const char *at;

	if (dl_itest_http(admin_port, "GET", "/metrics", NULL, NULL, 0, text, sizeof(text), NULL,
			  0) != 200)
		return -1;
	for (at = strstr(text, sample); at && at != text && at[-1] != '\n';
	     at = strstr(at + 1, sample))
		;
	return at ? strtod(at + strlen(sample), NULL) : -1;
}

#define KILL_STREAMS 8
#define SPLIT2 6500

/* Produces lines [from, to) of the scenario to every stream, interleaved line by line. */
static void produce_streams(dl_kafka_producer *prod, const det_scenario *sc, const char *org,
			    char (*stream)[32], char (*key)[PROTO_STREAM_KEY_MAX + 1], size_t from,
			    size_t to)
{
	char err[256];

	for (size_t i = from; i < to; i++) {
		for (int k = 0; k < KILL_STREAMS; k++) {
			size_t len = 0;
			char *json = det_scenario_envelope(sc, i, org, stream[k], &len);

			ck_assert_int_eq(dl_kafka_producer_produce(prod, DL_TOPIC_EVENTS, key[k],
								   strlen(key[k]), json, len, NULL,
								   NULL, NULL, err, sizeof(err)),
					 0);
			free(json);
		}
		if ((i & 255) == 0)
			dl_kafka_producer_poll(prod, 0);
	}
	ck_assert_int_eq(dl_kafka_producer_flush(prod, 30000), 0);
}

/* Two workers share the partitions; one is killed with SIGKILL while it holds work it has not
 * committed; the other takes its partitions over from the snapshots. The set of anomaly ids
 * equals the one an uninterrupted CBAD gives on the same events (duplicates allowed: the ids
 * are what downstream deduplicates on). */
START_TEST(test_detector_two_workers_one_killed)
{
	static const char *const env[] = { "DRIFTLOCK_DETECTOR_CHECKPOINT_INTERVAL=2s",
					   "DRIFTLOCK_DETECTOR_SESSION_TIMEOUT=6s", NULL };
	det_scenario sc = { 0 };
	dl_kafka_producer *prod;
	dl_itest_proc a, b;
	char org[DL_ID_UUID_LEN + 1], key[KILL_STREAMS][PROTO_STREAM_KEY_MAX + 1], err[256];
	char stream[KILL_STREAMS][32];
	size_t nwant, nfirst = 0, expected = 0, expected_first = 0, distinct = 0;
	bool *want, *seen;
	dl_itest_msg *m = NULL;
	size_t got;
	int status;
	double pa = 0, pb = 0, done_a, ckpt_a;

	det_scenario_load(&sc, STREAM, NLINES);
	want = det_scenario_expected(&sc, &nwant);
	for (size_t i = 0; i < SPLIT; i++)
		nfirst += want[i];
	expected = nwant * KILL_STREAMS;
	expected_first = nfirst * KILL_STREAMS;
	{
		/* a real org: the detector registers the stream under it (an unknown org's events
		 * are dead letters) */
		char apikey[128];

		dl_itest_org_with_key("itest-detector", NULL, org, apikey, sizeof(apikey));
	}
	for (int k = 0; k < KILL_STREAMS; k++) {
		snprintf(stream[k], sizeof(stream[k]), "audit-%d", k);
		ck_assert_int_eq(proto_topics_stream_key(org, stream[k], key[k], sizeof(key[k]), NULL,
							 NULL, 0),
				 0);
	}
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
					       "itest-detector", NULL, err, sizeof(err), &prod),
			 0);

	dl_itest_start("detector", env, &a);
	dl_itest_start("detector", env, &b);
	ck_assert_msg(dl_itest_wait_ready(&a, 30000), "worker a not ready, see %s", a.log_path);
	ck_assert_msg(dl_itest_wait_ready(&b, 30000), "worker b not ready, see %s", b.log_path);
	for (int t = 0; t < 300 && !(pa > 0 && pb > 0 && pa + pb >= 2); t++) {
		usleep(100000);
		pa = metric_value(a.admin_port, "driftlock_detector_partitions ");
		pb = metric_value(b.admin_port, "driftlock_detector_partitions ");
	}
	ck_assert_msg(pa > 0 && pb > 0, "the partitions were not split: a %g, b %g", pa, pb);

	/* Part one, interleaved over the streams as producers send; a checkpoints it. */
	produce_streams(prod, &sc, org, stream, key, 0, SPLIT);
	got = dl_itest_topic_read(DL_TOPIC_ANOMALIES, org, expected_first, 90000, &m);
	ck_assert_uint_ge(got, expected_first);
	dl_itest_msgs_free(m, got);
	done_a = metric_value(a.admin_port, "driftlock_detector_events_total{outcome=\"processed\"} ");
	ck_assert_msg(done_a > 0, "worker a processed nothing: the kill would prove nothing");
	ckpt_a = metric_value(a.admin_port, "driftlock_detector_checkpoints_total{result=\"ok\"} ");
	for (int t = 0; t < 100; t++) {
		usleep(100000);
		if (metric_value(a.admin_port,
				 "driftlock_detector_checkpoints_total{result=\"ok\"} ") > ckpt_a)
			break;
	}
	/* Part two; a is killed as soon as it has processed it, before its next checkpoint (2 s
	 * later at most), so that work is neither snapshotted nor committed. */
	produce_streams(prod, &sc, org, stream, key, SPLIT, SPLIT2);
	for (int t = 0; t < 400; t++) {
		if (metric_value(a.admin_port,
				 "driftlock_detector_events_total{outcome=\"processed\"} ") > done_a &&
		    metric_value(b.admin_port,
				 "driftlock_detector_events_total{outcome=\"processed\"} ") > 0)
			break;
		usleep(10000);
	}
	ck_assert_int_eq(kill(a.pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(a.pid, &status, 0), a.pid);
	produce_streams(prod, &sc, org, stream, key, SPLIT2, sc.n);

	/* b owns everything once a's session timed out, and catches up */
	seen = calloc(sc.n * KILL_STREAMS, sizeof(*seen));
	got = 0;
	/* b owns every partition once a's session timed out; then wait until it is idle */
	{
		double last = -1, now;
		int stable = 0;

		for (int t = 0; t < 900 && stable < 30; t++) {
			usleep(100000);
			if (metric_value(b.admin_port, "driftlock_detector_partitions ") < pa + pb)
				continue;
			now = metric_value(b.admin_port,
					   "driftlock_detector_events_total{outcome=\"processed\"} ");
			stable = now == last ? stable + 1 : 0;
			last = now;
		}
		ck_assert_msg(stable >= 30, "worker b did not take over and settle, see %s",
			      b.log_path);
	}
	{
		struct proto_anomaly *an = malloc(sizeof(*an));

		/* everything there is (replays may have added duplicates) */
		got = dl_itest_topic_read(DL_TOPIC_ANOMALIES, org, (size_t)-1, 15000, &m);
		for (size_t i = 0; i < got; i++) {
			size_t line;
			int k;

			ck_assert_int_eq(proto_anomaly_decode(m[i].value, m[i].len, an, err,
							      sizeof(err)),
					 0);
			ck_assert_int_eq(sscanf(an->stream, "audit-%d", &k), 1);
			ck_assert_int_eq(sscanf(an->event_id, "ev-%zu", &line), 1);
			ck_assert(k >= 0 && k < KILL_STREAMS && line < sc.n);
			ck_assert_msg(want[line],
				      "stream %d line %zu: an anomaly CBAD alone does not report", k,
				      line);
			seen[(size_t)k * sc.n + line] = true;
		}
		dl_itest_msgs_free(m, got);
		free(an);
		distinct = 0;
		for (size_t i = 0; i < sc.n * KILL_STREAMS; i++)
			distinct += seen[i];
	}
	for (int k = 0; k < KILL_STREAMS; k++)
		for (size_t i = 0; i < sc.n; i++)
			ck_assert_msg(seen[(size_t)k * sc.n + i] == want[i],
				      "stream %d line %zu: detector %d, CBAD alone %d", k, i,
				      seen[(size_t)k * sc.n + i], want[i]);
	ck_assert_uint_eq(distinct, expected);
	ck_assert_double_eq(metric_value(b.admin_port, "driftlock_detector_partitions "), pa + pb);
	/* b took a's streams over from their snapshots, not from a new warm-up */
	ck_assert_msg(metric_value(b.admin_port,
				   "driftlock_detector_snapshot_loads_total{result=\"restored\"} ") > 0,
		      "worker b restored no snapshot");
	fprintf(stderr, "kill test: %zu anomaly messages for %zu distinct ids (%zu replayed after "
			"the kill)\n",
		got, distinct, got - distinct);
	dl_itest_stop_clean(&b, 30000, "worker b");
	dl_kafka_producer_free(prod);
	free(seen);
	free(want);
	det_scenario_free(&sc);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("detector");
	TCase *tc = tcase_create("binary");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_detector_scenario_and_restart);
	tcase_add_test(tc, test_detector_two_workers_one_killed);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
