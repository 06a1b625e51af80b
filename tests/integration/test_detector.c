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

static void produce_lines(dl_kafka_producer *prod, const det_scenario *sc, const char *org,
			  const char *key, size_t from, size_t to)
{
	char err[256];

	for (size_t i = from; i < to; i++) {
		size_t len = 0;
		char *json = det_scenario_envelope(sc, i, org, STREAM, &len);

		ck_assert_int_eq(dl_kafka_producer_produce(prod, DL_TOPIC_EVENTS, key, strlen(key),
							   json, len, NULL, NULL, NULL, err,
							   sizeof(err)),
				 0);
		free(json);
		if ((i & 1023) == 0)
			dl_kafka_producer_poll(prod, 0);
	}
	ck_assert_int_eq(dl_kafka_producer_flush(prod, 30000), 0);
}

/* Reads this org's anomalies: every one decodes and names an event of the scenario; sets seen[]
 * and returns how many messages there were (duplicates included). */
static size_t read_anomalies(const char *org, size_t want, int timeout_ms, bool *seen, size_t n)
{
	dl_itest_msg *m = NULL;
	size_t got = dl_itest_topic_read(DL_TOPIC_ANOMALIES, org, want, timeout_ms, &m);
	struct proto_anomaly *a = malloc(sizeof(*a));
	char err[256], id[PROTO_ID_MAX + 1];

	for (size_t i = 0; i < got; i++) {
		size_t line;

		ck_assert_msg(proto_anomaly_decode(m[i].value, m[i].len, a, err, sizeof(err)) == 0,
			      "%s", err);
		ck_assert_str_eq(a->org_id, org);
		ck_assert_int_eq(sscanf(a->event_id, "ev-%zu", &line), 1);
		ck_assert_uint_lt(line, n);
		snprintf(id, sizeof(id), "%s", a->id);
		ck_assert(dl_id_is_uuid(id));
		seen[line] = true;
	}
	dl_itest_msgs_free(m, got);
	free(a);
	return got;
}

START_TEST(test_detector_scenario_and_restart)
{
	det_scenario sc = { 0 };
	dl_kafka_producer *prod;
	dl_itest_proc p;
	char org[DL_ID_UUID_LEN + 1], key[PROTO_STREAM_KEY_MAX + 1], err[256], metrics[1 << 16];
	size_t nwant, nfirst = 0, got;
	bool *want, *seen;
	int status;

	det_scenario_load(&sc, STREAM, NLINES);
	want = det_scenario_expected(&sc, &nwant);
	for (size_t i = 0; i < SPLIT; i++)
		nfirst += want[i];
	ck_assert_uint_gt(nfirst, 0);
	ck_assert_uint_gt(nwant, nfirst);
	ck_assert_int_eq(dl_id_new(org), 0);
	ck_assert_int_eq(proto_topics_stream_key(org, STREAM, key, sizeof(key), NULL, NULL, 0), 0);
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
					       "itest-detector", NULL, err, sizeof(err), &prod),
			 0);
	seen = calloc(sc.n, sizeof(*seen));

	dl_itest_start("detector", detector_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);
	produce_lines(prod, &sc, org, key, 0, SPLIT);
	got = read_anomalies(org, nfirst, 90000, seen, sc.n);
	ck_assert_uint_eq(got, nfirst);
	ck_assert_int_eq(dl_itest_http(p.admin_port, "GET", "/metrics", NULL, NULL, 0, metrics,
				       sizeof(metrics), NULL, 0),
			 200);
	ck_assert_ptr_nonnull(strstr(metrics, "driftlock_detector_events_total{outcome=\"processed\"}"));
	ck_assert_ptr_nonnull(strstr(metrics, "driftlock_detector_streams "));
	status = dl_itest_stop(&p, 30000);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "detector did not drain cleanly (status %d), see %s", status, p.log_path);

	/* The rest arrives while it is down; the restarted worker takes it from the snapshot. */
	produce_lines(prod, &sc, org, key, SPLIT, sc.n);
	dl_itest_start("detector", detector_env, &p);
	ck_assert_msg(dl_itest_wait_ready(&p, 30000), "detector not ready, see %s", p.log_path);
	got = read_anomalies(org, nwant, 90000, seen, sc.n);
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
	status = dl_itest_stop(&p, 30000);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "detector did not drain cleanly (status %d), see %s", status, p.log_path);
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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
