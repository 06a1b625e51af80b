/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for services/metering/mtr_pipeline against the real broker: every anomaly
 * reaches the store once and the batch's offsets are committed after it; poison goes to the
 * dead-letter topic with its reason; while the store cannot reach the database nothing is
 * committed, and once it can the held batch is stored. The store here is a recorder in this
 * process (mtr_store itself has its own suite against PostgreSQL). */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dl_kafka.h"
#include "common/dl_metrics.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_dlq.h"
#include "proto/proto_topics.h"
#include "services/metering/mtr_pipeline.h"
#include "tests/support/dl_itest.h"
#include "tests/support/mtr_scenario.h"

#define STREAM "checkout"
#define MAXIDS 256

/* ---- the recording store: keeps the ids of one org, can play "database unavailable" ---- */

typedef struct rec_store {
	pthread_mutex_t mu;
	char org[PROTO_ORG_ID_LEN + 1];
	char ids[MAXIDS][PROTO_ID_MAX + 1];
	size_t times[MAXIDS]; /* how often each id was stored (committed) */
	size_t nids;
	size_t attempts, failures, relays;
	bool down;
} rec_store;

static int rec_store_batch(void *opaque, const struct proto_anomaly *a, size_t n,
			   mtr_pipeline_counts *ret, char *errbuf, size_t errlen)
{
	rec_store *s = opaque;
	mtr_pipeline_counts c = { 0 };

	pthread_mutex_lock(&s->mu);
	s->attempts++;
	if (s->down) {
		s->failures++;
		pthread_mutex_unlock(&s->mu);
		snprintf(errbuf, errlen, "connection refused");
		return -ECONNREFUSED;
	}
	for (size_t i = 0; i < n; i++) {
		size_t j;

		if (strcmp(a[i].org_id, s->org) != 0)
			continue;
		for (j = 0; j < s->nids && strcmp(s->ids[j], a[i].id) != 0; j++)
			;
		if (j == s->nids && s->nids < MAXIDS)
			snprintf(s->ids[s->nids++], sizeof(s->ids[0]), "%s", a[i].id);
		if (j < MAXIDS) {
			if (s->times[j]++ == 0)
				c.stored++;
			else
				c.duplicates++;
		}
	}
	pthread_mutex_unlock(&s->mu);
	*ret = c;
	return 0;
}

static int rec_relay(void *opaque, size_t *ret_sent, char *errbuf, size_t errlen)
{
	rec_store *s = opaque;

	(void)errbuf;
	(void)errlen;
	pthread_mutex_lock(&s->mu);
	s->relays++;
	pthread_mutex_unlock(&s->mu);
	*ret_sent = 0;
	return 0;
}

static size_t rec_get(rec_store *s, size_t *ret_attempts, size_t *ret_failures)
{
	size_t n;

	pthread_mutex_lock(&s->mu);
	n = s->nids;
	if (ret_attempts)
		*ret_attempts = s->attempts;
	if (ret_failures)
		*ret_failures = s->failures;
	pthread_mutex_unlock(&s->mu);
	return n;
}

static void rec_set_down(rec_store *s, bool down)
{
	pthread_mutex_lock(&s->mu);
	s->down = down;
	pthread_mutex_unlock(&s->mu);
}

static void rec_init(rec_store *s, const char *org)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	snprintf(s->org, sizeof(s->org), "%s", org);
}

/* ---- helpers ---- */

static void fresh_org(char org[PROTO_ORG_ID_LEN + 1])
{
	unsigned r1 = (unsigned)getpid(), r2 = (unsigned)(dl_time_now_ms() & 0xffffffff);

	snprintf(org, PROTO_ORG_ID_LEN + 1, "%08x-%04x-4%03x-8%03x-%012llx", r2, r1 & 0xffff,
		 (unsigned)(dl_time_mono_ns() & 0xfff), r1 & 0xfff,
		 (unsigned long long)(dl_time_mono_ns() & 0xffffffffffffULL));
}

typedef struct rig {
	dl_kafka_producer *prod;
	dl_metrics_registry *m;
	mtr_pipeline *p;
	rec_store st;
	char group[96];
} rig;

static void rig_start(rig *g, const char *org, const char *group)
{
	mtr_pipeline_ops ops = { rec_store_batch, NULL, rec_relay, NULL, NULL, NULL, &g->st };
	mtr_pipeline_options o = {
		.brokers = dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
		.group_id = group,
		.topic = DL_TOPIC_ANOMALIES,
		.batch_max = 10,
		.batch_ms = 50,
		.retry_max_ms = 400,
		.relay_interval_ms = 1000,
		.retention_interval_ms = 0,
		.retention_batch = 100,
		.usage_check_ms = 1000,
	};
	char err[512] = "";

	if (!g->prod) {
		ck_assert_int_eq(dl_kafka_producer_new(o.brokers, "itest-mtr", NULL, err,
						       sizeof(err), &g->prod), 0);
		g->m = dl_metrics_registry_new();
		ck_assert_ptr_nonnull(g->m);
		rec_init(&g->st, org);
	}
	snprintf(g->group, sizeof(g->group), "%s", group);
	ck_assert_msg(mtr_pipeline_new(g->prod, &ops, g->m, &o, &g->p, err, sizeof(err)) == 0,
		      "%s", err);
	ck_assert_msg(mtr_pipeline_start(g->p, err, sizeof(err)) == 0, "%s", err);
}

static void rig_free(rig *g)
{
	mtr_pipeline_free(g->p);
	dl_kafka_producer_free(g->prod);
	dl_metrics_registry_free(g->m);
}

static bool wait_ids(rec_store *s, size_t want, int timeout_ms)
{
	int64_t until = dl_time_mono_ns() / 1000000 + timeout_ms;

	while (dl_time_mono_ns() / 1000000 < until) {
		if (rec_get(s, NULL, NULL) >= want)
			return true;
		usleep(50000);
	}
	return rec_get(s, NULL, NULL) >= want;
}

static bool wait_committed(const char *group, int32_t partition, int64_t want, int timeout_ms)
{
	int64_t until = dl_time_mono_ns() / 1000000 + timeout_ms;

	while (dl_time_mono_ns() / 1000000 < until) {
		if (mtr_scenario_committed(group, partition) >= want)
			return true;
		usleep(200000);
	}
	return false;
}

static double metric(dl_metrics_registry *m, const char *name, const char *label)
{
	char *text = NULL, line[256];
	size_t len = 0;
	const char *at;
	double v = -1;

	ck_assert_int_eq(dl_metrics_render(m, &text, &len), 0);
	if (label)
		snprintf(line, sizeof(line), "\n%s{result=\"%s\"} ", name, label);
	else
		snprintf(line, sizeof(line), "\n%s ", name);
	at = strstr(text, line);
	if (at)
		v = strtod(at + strlen(line), NULL);
	free(text);
	return v;
}

/* ---- tests ---- */

START_TEST(test_each_stored_once_then_committed_poison_dead_lettered)
{
	struct proto_anomaly *a = calloc(25, sizeof(*a));
	int32_t parts[25], ppart;
	int64_t offs[25], poff, last = -1;
	char org[PROTO_ORG_ID_LEN + 1], group[96], key[128];
	dl_itest_msg *dlq = NULL;
	struct proto_dlq d;
	char err[256] = "";
	size_t ndlq;
	rig g = { 0 };

	ck_assert_ptr_nonnull(a);
	fresh_org(org);
	for (size_t i = 0; i < 25; i++)
		mtr_scenario_anomaly(&a[i], org, STREAM, org, i, dl_time_now_ms());
	/* The poison sits between good anomalies of the same key (same partition). */
	mtr_scenario_produce(a, 12, parts, offs);
	snprintf(key, sizeof(key), "%s:%s", org, STREAM);
	poff = mtr_scenario_produce_raw(key, "{\"schema\":\"driftlock.anomaly.v1\",\"id\":", 38,
					&ppart);
	mtr_scenario_produce(a + 12, 13, parts + 12, offs + 12);
	ck_assert_int_eq(ppart, parts[0]);
	for (size_t i = 0; i < 25; i++)
		if (offs[i] > last)
			last = offs[i];

	snprintf(group, sizeof(group), "itest-mtr-%s", org);
	rig_start(&g, org, group);
	ck_assert_msg(wait_ids(&g.st, 25, 60000), "stored %zu of 25", rec_get(&g.st, NULL, NULL));
	ck_assert_msg(wait_committed(group, parts[0], last + 1, 20000),
		      "committed offset %lld, want %lld", (long long)mtr_scenario_committed(group, parts[0]),
		      (long long)(last + 1));
	/* Every anomaly reached the store exactly once. */
	pthread_mutex_lock(&g.st.mu);
	ck_assert_uint_eq(g.st.nids, 25);
	for (size_t i = 0; i < g.st.nids; i++)
		ck_assert_msg(g.st.times[i] == 1, "%s stored %zu times", g.st.ids[i], g.st.times[i]);
	pthread_mutex_unlock(&g.st.mu);
	ck_assert(mtr_pipeline_db_up(g.p));
	ck_assert_double_ge(metric(g.m, "driftlock_metering_anomalies_total", "stored"), 25);

	/* The poison is on the dead-letter topic with where it came from and why. */
	ndlq = dl_itest_topic_read(DL_TOPIC_DLQ, key, 1, 30000, &dlq);
	ck_assert_uint_eq(ndlq, 1);
	memset(&d, 0, sizeof(d));
	ck_assert_msg(proto_dlq_decode(dlq[0].value, dlq[0].len, &d, err, sizeof(err)) == 0, "%s",
		      err);
	ck_assert_str_eq(d.source_topic, DL_TOPIC_ANOMALIES);
	ck_assert_int_eq(d.source_partition, ppart);
	ck_assert_int_eq(d.source_offset, poff);
	ck_assert_str_eq(d.service, "metering");
	ck_assert_msg(strcmp(d.reason_code, "malformed_json") == 0 ||
			      strcmp(d.reason_code, "invalid_anomaly") == 0,
		      "reason %s", d.reason_code);
	ck_assert_uint_eq(d.value_len, 38);
	proto_dlq_free(&d);
	dl_itest_msgs_free(dlq, ndlq);
	/* The fresh group also read older poison on the topic: at least this one. */
	ck_assert_double_ge(metric(g.m, "driftlock_metering_anomalies_total", "dead_letter"), 1);

	/* A stop leaves the group; nothing more to store. */
	mtr_pipeline_stop(g.p);
	for (int i = 0; i < 200 && !mtr_pipeline_finished(g.p); i++)
		usleep(50000);
	ck_assert(mtr_pipeline_finished(g.p));
	rig_free(&g);
	free(a);
}
END_TEST

START_TEST(test_database_down_holds_commit_then_catches_up)
{
	struct proto_anomaly a[6];
	int32_t parts[6];
	int64_t offs[6], last = -1;
	char org[PROTO_ORG_ID_LEN + 1], group[96];
	size_t attempts = 0, failures = 0;
	rig g = { 0 };

	fresh_org(org);
	for (size_t i = 0; i < 6; i++) {
		mtr_scenario_anomaly(&a[i], org, STREAM, org, i, dl_time_now_ms());
		snprintf(a[i].stream, sizeof(a[i].stream), STREAM); /* one key: one partition */
	}
	mtr_scenario_produce(a, 6, parts, offs);
	for (size_t i = 0; i < 6; i++)
		if (offs[i] > last)
			last = offs[i];
	snprintf(group, sizeof(group), "itest-mtr-down-%s", org);
	rig_start(&g, org, group);
	rec_set_down(&g.st, true);

	/* Retries happen (with backoff), readiness says down, nothing is committed. */
	for (int i = 0; i < 200; i++) {
		rec_get(&g.st, &attempts, &failures);
		if (failures >= 3)
			break;
		usleep(100000);
	}
	ck_assert_uint_ge(failures, 3);
	ck_assert(!mtr_pipeline_db_up(g.p));
	ck_assert_double_eq(metric(g.m, "driftlock_metering_db_up", NULL), 0);
	ck_assert_uint_eq(rec_get(&g.st, NULL, NULL), 0);
	ck_assert_int_eq(mtr_scenario_committed(group, parts[0]), -1);
	sleep(2); /* the group holds: still nothing committed, still retrying */
	ck_assert_int_eq(mtr_scenario_committed(group, parts[0]), -1);

	/* Back: the held batch is stored, each anomaly once, and the offsets move. */
	rec_set_down(&g.st, false);
	ck_assert(wait_ids(&g.st, 6, 60000));
	ck_assert(wait_committed(group, parts[0], last + 1, 30000));
	ck_assert(mtr_pipeline_db_up(g.p));
	pthread_mutex_lock(&g.st.mu);
	ck_assert_uint_eq(g.st.nids, 6);
	for (size_t i = 0; i < g.st.nids; i++)
		ck_assert_uint_eq(g.st.times[i], 1);
	pthread_mutex_unlock(&g.st.mu);
	rig_free(&g);
}
END_TEST

START_TEST(test_stop_during_outage_commits_nothing_next_start_reads_again)
{
	struct proto_anomaly a[4];
	int32_t parts[4];
	int64_t offs[4], last = -1;
	char org[PROTO_ORG_ID_LEN + 1], group[96];
	size_t failures = 0;
	rig g = { 0 };

	fresh_org(org);
	for (size_t i = 0; i < 4; i++)
		mtr_scenario_anomaly(&a[i], org, STREAM, org, i, dl_time_now_ms());
	mtr_scenario_produce(a, 4, parts, offs);
	for (size_t i = 0; i < 4; i++)
		if (offs[i] > last)
			last = offs[i];
	snprintf(group, sizeof(group), "itest-mtr-stop-%s", org);
	rig_start(&g, org, group);
	rec_set_down(&g.st, true);
	for (int i = 0; i < 200 && failures < 1; i++) {
		rec_get(&g.st, NULL, &failures);
		usleep(50000);
	}
	ck_assert_uint_ge(failures, 1);
	mtr_pipeline_stop(g.p);
	for (int i = 0; i < 300 && !mtr_pipeline_finished(g.p); i++)
		usleep(50000);
	ck_assert(mtr_pipeline_finished(g.p));
	mtr_pipeline_free(g.p);
	g.p = NULL;
	ck_assert_int_eq(mtr_scenario_committed(group, parts[0]), -1);

	/* The next process of the group reads the batch again and stores it. */
	rec_set_down(&g.st, false);
	rig_start(&g, org, group);
	ck_assert(wait_ids(&g.st, 4, 60000));
	ck_assert(wait_committed(group, parts[0], last + 1, 30000));
	rig_free(&g);
}
END_TEST

static Suite *mtr_pipeline_suite(void)
{
	Suite *s = suite_create("mtr_pipeline");
	TCase *tc = tcase_create("broker");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_each_stored_once_then_committed_poison_dead_lettered);
	tcase_add_test(tc, test_database_down_holds_commit_then_catches_up);
	tcase_add_test(tc, test_stop_during_outage_commits_nothing_next_start_reads_again);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(mtr_pipeline_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
