/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for services/detector/det_pipeline against the real broker: a labeled
 * scenario yields the anomalies CBAD finds on it, poison goes to the dead-letter topic and the
 * partition moves on, a restart resumes from the snapshot instead of calibrating again. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <zlib.h>

#include "common/dl_id.h"
#include "common/dl_kafka.h"
#include "common/dl_metrics.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_dlq.h"
#include "proto/proto_event.h"
#include "proto/proto_topics.h"
#include "services/detector/cbad/cbad.h"
#include "services/detector/det_pipeline.h"
#include "tests/support/det_scenario.h"
#include "tests/support/dl_itest.h"

#define STREAM "audit-log"

/* ---- a state store kept in this process: what det_state does in Redis, for the pipeline's
 * contract (save the engine's bytes, give them back) ---- */

typedef struct mem_snap {
	char key[PROTO_STREAM_KEY_MAX + 1];
	void *buf;
	size_t len;
	int32_t partition;
	int64_t next_offset;
} mem_snap;

typedef struct mem_store {
	mem_snap snaps[16];
	size_t n, saves, loads, restored;
} mem_store;

static mem_snap *mem_find(mem_store *m, const char *org, const char *stream, bool create)
{
	char key[PROTO_STREAM_KEY_MAX + 1];

	snprintf(key, sizeof(key), "%s:%s", org, stream);
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->snaps[i].key, key) == 0)
			return &m->snaps[i];
	if (!create || m->n == 16)
		return NULL;
	snprintf(m->snaps[m->n].key, sizeof(m->snaps[m->n].key), "%s", key);
	return &m->snaps[m->n++];
}

static int mem_save_many(void *opaque, const det_pipeline_snapshot *items, size_t n, char *errbuf,
			 size_t errlen)
{
	mem_store *m = opaque;

	for (size_t i = 0; i < n; i++) {
		mem_snap *s = mem_find(m, items[i].org_id, items[i].stream, true);
		void *buf = NULL;
		size_t len = 0;

		if (!s || cbad_detector_save(items[i].d, &buf, &len, errbuf, errlen) < 0)
			return -EIO;
		free(s->buf);
		s->buf = buf;
		s->len = len;
		s->partition = items[i].partition;
		s->next_offset = items[i].next_offset;
		m->saves++;
	}
	return 0;
}

static int mem_load(void *opaque, const char *org, const char *stream, cbad_detector **ret,
		    int32_t *ret_partition, int64_t *ret_next_offset, char *errbuf, size_t errlen)
{
	mem_store *m = opaque;
	mem_snap *s = mem_find(m, org, stream, false);
	int r;

	m->loads++;
	if (!s)
		return -ENOENT;
	r = cbad_detector_load(s->buf, s->len, ret, errbuf, errlen);
	if (r < 0)
		return -EBADMSG; /* what det_state says of a corrupt value */
	*ret_partition = s->partition;
	*ret_next_offset = s->next_offset;
	m->restored++;
	return 0;
}

/* ---- Kafka and loop helpers ---- */

static void create_topic(const char *name, int partitions)
{
	char err[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	rd_kafka_NewTopic_t *nt;
	rd_kafka_queue_t *q;
	rd_kafka_event_t *ev;
	const rd_kafka_CreateTopics_result_t *res;
	const rd_kafka_topic_result_t **tr;
	size_t n;

	rd_kafka_conf_set(conf, "bootstrap.servers", dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"), err,
			  sizeof(err));
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	ck_assert_ptr_nonnull(rk);
	nt = rd_kafka_NewTopic_new(name, partitions, 1, err, sizeof(err));
	ck_assert_ptr_nonnull(nt);
	q = rd_kafka_queue_new(rk);
	rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
	ev = rd_kafka_queue_poll(q, 30000);
	ck_assert_ptr_nonnull(ev);
	res = rd_kafka_event_CreateTopics_result(ev);
	ck_assert_ptr_nonnull(res);
	tr = rd_kafka_CreateTopics_result_topics(res, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_msg(rd_kafka_topic_result_error(tr[0]) == RD_KAFKA_RESP_ERR_NO_ERROR,
		      "create topic: %s", rd_kafka_topic_result_error_string(tr[0]));
	rd_kafka_event_destroy(ev);
	rd_kafka_NewTopic_destroy(nt);
	rd_kafka_queue_destroy(q);
	rd_kafka_destroy(rk);
}

typedef struct harness {
	struct event_base *base;
	dl_kafka_producer *prod;
	struct event *prod_ev, *check_ev;
	dl_metrics_registry *reg;
	det_pipeline *p;
	mem_store *store;
	char topic[64], group[64], org[DL_ID_UUID_LEN + 1], key[PROTO_STREAM_KEY_MAX + 1];
	bool (*until)(struct harness *h);
	double want;
	bool drained;
} harness;

static void prod_cb(evutil_socket_t fd, short what, void *arg)
{
	harness *h = arg;

	(void)fd;
	(void)what;
	dl_kafka_producer_poll(h->prod, 0);
}

static void check_cb(evutil_socket_t fd, short what, void *arg)
{
	harness *h = arg;

	(void)fd;
	(void)what;
	dl_kafka_producer_poll(h->prod, 0);
	if (h->until && h->until(h))
		event_base_loopbreak(h->base);
}

static double metric(harness *h, const char *name, const char *label, const char *value)
{
	dl_metric *m = label ? dl_metrics_counter(h->reg, name, NULL, 1, label)
			     : dl_metrics_counter(h->reg, name, NULL, 0);
	const char *lv[] = { value };
	double v = 0;

	if (m && dl_metric_get(m, label ? lv : NULL, &v) < 0)
		v = 0;
	return v;
}

static bool until_processed(harness *h)
{
	return metric(h, "driftlock_detector_events_total", "outcome", "processed") >= h->want;
}

static bool until_drained(harness *h)
{
	return h->drained;
}

static void run(harness *h, bool (*until)(harness *h), int timeout_ms)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	struct timeval every = { 0, 20000 };

	h->until = until;
	event_add(h->check_ev, &every);
	event_base_loopexit(h->base, &tv);
	event_base_dispatch(h->base);
	event_del(h->check_ev);
}

static void harness_init(harness *h, mem_store *store, int partitions)
{
	char err[512];

	memset(h, 0, sizeof(*h));
	h->store = store;
	h->base = event_base_new();
	ck_assert_ptr_nonnull(h->base);
	/* a UUIDv7 is a valid lowercase org id: a fresh org, topic and group for every test */
	ck_assert_int_eq(dl_id_new(h->org), 0);
	snprintf(h->topic, sizeof(h->topic), "itest.det.%s", h->org + 24);
	snprintf(h->group, sizeof(h->group), "itest-det-%s", h->org);
	ck_assert_int_eq(proto_topics_stream_key(h->org, STREAM, h->key, sizeof(h->key), NULL,
						 NULL, 0),
			 0);
	create_topic(h->topic, partitions);
	ck_assert_int_eq(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"), "itest-det",
					       (const char *const[]){ "linger.ms", "5", NULL }, err,
					       sizeof(err), &h->prod),
			 0);
	h->prod_ev = event_new(h->base, dl_kafka_producer_wakeup_fd(h->prod), EV_READ | EV_PERSIST,
			       prod_cb, h);
	h->check_ev = event_new(h->base, -1, EV_PERSIST, check_cb, h);
	event_add(h->prod_ev, NULL);
}

static void pipeline_start(harness *h, int64_t checkpoint_ms)
{
	cbad_settings s;
	det_pipeline_options o;
	det_pipeline_store st = { mem_save_many, mem_load, h->store };
	char err[512] = "";

	cbad_settings_default(&s);
	memset(&o, 0, sizeof(o));
	o.brokers = dl_itest_env("DRIFTLOCK_KAFKA_BROKERS");
	o.group_id = h->group;
	o.topic = h->topic;
	o.defaults = &s;
	o.checkpoint_ms = checkpoint_ms;
	o.idle_evict_ms = 600000;
	o.barrier_timeout_ms = 10000;
	o.batch_max = 256;
	o.max_streams = 1000;
	h->reg = dl_metrics_registry_new();
	ck_assert_ptr_nonnull(h->reg);
	ck_assert_msg(det_pipeline_new(h->base, h->prod, &st, h->reg, &o, &h->p, err, sizeof(err)) == 0,
		      "%s", err);
	ck_assert_int_eq(det_pipeline_start(h->p), 0);
}

static void on_drained(void *arg)
{
	((harness *)arg)->drained = true;
}

static void pipeline_stop(harness *h)
{
	h->drained = false;
	det_pipeline_drain(h->p, on_drained, h);
	run(h, until_drained, 60000);
	ck_assert_msg(h->drained, "drain did not finish");
	det_pipeline_free(h->p);
	h->p = NULL;
	dl_metrics_registry_free(h->reg);
	h->reg = NULL;
}

static void harness_free(harness *h)
{
	dl_kafka_producer_flush(h->prod, 10000);
	event_free(h->prod_ev);
	event_free(h->check_ev);
	dl_kafka_producer_free(h->prod);
	event_base_free(h->base);
}

static void produce_raw(harness *h, const void *key, size_t keylen, const char *value, size_t len)
{
	char err[256];

	ck_assert_int_eq(dl_kafka_producer_produce(h->prod, h->topic, key, keylen, value, len, NULL,
						   NULL, NULL, err, sizeof(err)),
			 0);
}

/* Produces lines [from, to) of the scenario as ingest's envelopes (event id "ev-<line>"). */
static void produce_lines(harness *h, const det_scenario *sc, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++) {
		size_t len = 0;
		char *json = det_scenario_envelope(sc, i, h->org, STREAM, &len);

		produce_raw(h, h->key, strlen(h->key), json, len);
		free(json);
		if ((i & 1023) == 0)
			dl_kafka_producer_poll(h->prod, 0);
	}
	ck_assert_int_eq(dl_kafka_producer_flush(h->prod, 30000), 0);
}

/* The anomalies of this org on the anomalies topic, as a per-line flag array; checks each one
 * decodes and names this stream. Returns the number of distinct lines. */
static size_t anomalies_seen(harness *h, size_t want, bool *seen, size_t n)
{
	dl_itest_msg *m = NULL;
	size_t got = dl_itest_topic_read(DL_TOPIC_ANOMALIES, h->org, want, 60000, &m), distinct = 0;
	struct proto_anomaly *a = malloc(sizeof(*a));
	char err[256];

	for (size_t i = 0; i < got; i++) {
		size_t line;

		ck_assert_msg(proto_anomaly_decode(m[i].value, m[i].len, a, err, sizeof(err)) == 0,
			      "%s", err);
		ck_assert_str_eq(a->stream, STREAM);
		ck_assert_str_eq(m[i].key, h->key);
		ck_assert_uint_gt(strlen(a->explanation.summary), 0);
		ck_assert_int_eq(sscanf(a->event_id, "ev-%zu", &line), 1);
		ck_assert_uint_lt(line, n);
		if (!seen[line])
			distinct++;
		seen[line] = true;
	}
	dl_itest_msgs_free(m, got);
	free(a);
	return distinct;
}

static void mem_free(mem_store *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->snaps[i].buf);
}

/* A labeled scenario through the pipeline gives exactly the anomalies CBAD finds on it, one
 * per event, on the anomalies topic; at least one labeled anomaly is among them. */
START_TEST(test_scenario_yields_anomalies)
{
	det_scenario sc = { 0 };
	mem_store store = { 0 };
	harness h;
	size_t nwant, got, labeled = 0;
	bool *want, *seen;

	det_scenario_load(&sc, "audit-log", 8000);
	want = det_scenario_expected(&sc, &nwant);
	ck_assert_uint_gt(nwant, 0);
	harness_init(&h, &store, 2);
	produce_lines(&h, &sc, 0, sc.n);
	pipeline_start(&h, 1000);
	h.want = (double)sc.n;
	run(&h, until_processed, 120000);
	ck_assert_double_eq(metric(&h, "driftlock_detector_events_total", "outcome", "processed"),
			    (double)sc.n);
	pipeline_stop(&h);
	seen = calloc(sc.n, sizeof(*seen));
	got = anomalies_seen(&h, nwant, seen, sc.n);
	ck_assert_uint_eq(got, nwant);
	for (size_t i = 0; i < sc.n; i++) {
		ck_assert_msg(seen[i] == want[i], "line %zu: pipeline %d, CBAD alone %d", i, seen[i],
			      want[i]);
		labeled += seen[i] && sc.label[i];
	}
	ck_assert_uint_gt(labeled, 0);
	/* the drain snapshotted the stream at the end of the partition */
	ck_assert_uint_eq(store.n, 1);
	free(seen);
	free(want);
	harness_free(&h);
	mem_free(&store);
	det_scenario_free(&sc);
}
END_TEST

/* Poison (not JSON, wrong schema, a key that is not the envelope's) goes to the dead-letter
 * topic with its reason and source offset; the events after it are processed and committed. */
START_TEST(test_poison_to_dlq)
{
	det_scenario sc = { 0 };
	mem_store store = { 0 };
	harness h;
	dl_itest_msg *m = NULL;
	size_t got;
	struct proto_dlq d;
	char err[256], bad[512];
	bool reasons[3] = { false, false, false };

	det_scenario_load(&sc, "audit-log", 8000);
	harness_init(&h, &store, 1);
	produce_raw(&h, h.key, strlen(h.key), "{\"schema\":", 10);
	snprintf(bad, sizeof(bad),
		 "{\"schema\":\"driftlock.event.v0\",\"id\":\"x\",\"org_id\":\"%s\",\"stream\":\"%s\","
		 "\"ts\":\"2026-01-01T00:00:00Z\",\"received_at\":\"2026-01-01T00:00:00Z\","
		 "\"source\":\"http\",\"payload\":1}",
		 h.org, STREAM);
	produce_raw(&h, h.key, strlen(h.key), bad, strlen(bad));
	produce_lines(&h, &sc, 0, 300);
	/* a valid envelope under another stream's key */
	{
		char okey[PROTO_STREAM_KEY_MAX + 1];

		snprintf(okey, sizeof(okey), "%s:other", h.org);
		snprintf(bad, sizeof(bad),
			 "{\"schema\":\"driftlock.event.v1\",\"id\":\"y\",\"org_id\":\"%s\",\"stream\":\"%s\","
			 "\"ts\":\"2026-01-01T00:00:00Z\",\"received_at\":\"2026-01-01T00:00:00Z\","
			 "\"source\":\"http\",\"payload\":1}",
			 h.org, STREAM);
		produce_raw(&h, okey, strlen(okey), bad, strlen(bad));
	}
	produce_lines(&h, &sc, 300, 400);
	pipeline_start(&h, 1000);
	h.want = 400;
	run(&h, until_processed, 60000);
	ck_assert_double_eq(metric(&h, "driftlock_detector_events_total", "outcome", "processed"),
			    400);
	ck_assert_double_eq(metric(&h, "driftlock_detector_dlq_total", "reason", "malformed_json"),
			    1);
	ck_assert_double_eq(metric(&h, "driftlock_detector_dlq_total", "reason", "schema_mismatch"),
			    1);
	ck_assert_double_eq(metric(&h, "driftlock_detector_dlq_total", "reason", "key_mismatch"), 1);
	pipeline_stop(&h);

	got = dl_itest_topic_read(DL_TOPIC_DLQ, h.org, 3, 60000, &m);
	ck_assert_uint_eq(got, 3);
	for (size_t i = 0; i < got; i++) {
		memset(&d, 0, sizeof(d));
		ck_assert_msg(proto_dlq_decode(m[i].value, m[i].len, &d, err, sizeof(err)) == 0, "%s",
			      err);
		ck_assert_str_eq(d.source_topic, h.topic);
		ck_assert_str_eq(d.service, "detector");
		if (strcmp(d.reason_code, "malformed_json") == 0) {
			ck_assert_int_eq(d.source_offset, 0);
			ck_assert_uint_eq(d.value_len, 10);
			ck_assert_int_eq(memcmp(d.value, "{\"schema\":", 10), 0);
			reasons[0] = true;
		} else if (strcmp(d.reason_code, "schema_mismatch") == 0) {
			ck_assert_int_eq(d.source_offset, 1);
			ck_assert_ptr_nonnull(strstr(d.reason_message, "event.schema"));
			reasons[1] = true;
		} else if (strcmp(d.reason_code, "key_mismatch") == 0) {
			ck_assert_int_eq(d.source_offset, 302);
			reasons[2] = true;
		}
		proto_dlq_free(&d);
	}
	ck_assert(reasons[0] && reasons[1] && reasons[2]);
	dl_itest_msgs_free(m, got);

	/* everything was committed: the group's next member has nothing to redo */
	pipeline_start(&h, 1000);
	h.want = 1;
	run(&h, until_processed, 5000);
	ck_assert_double_eq(metric(&h, "driftlock_detector_events_total", "outcome", "processed"), 0);
	ck_assert_double_eq(metric(&h, "driftlock_detector_dlq_total", "reason", "malformed_json"),
			    0);
	pipeline_stop(&h);
	harness_free(&h);
	mem_free(&store);
	det_scenario_free(&sc);
}
END_TEST

/* Stopped after the first 5000 events and started again, the pipeline restores the stream from
 * its snapshot (no second warm-up) and the anomalies over the whole run are exactly those of an
 * uninterrupted CBAD on the same events. */
START_TEST(test_restart_resumes_from_snapshot)
{
	det_scenario sc = { 0 };
	mem_store store = { 0 };
	harness h;
	size_t nwant, got;
	bool *want, *seen;
	cbad_detector *d;
	cbad_status st;
	char err[256];

	det_scenario_load(&sc, "audit-log", 8000);
	want = det_scenario_expected(&sc, &nwant);
	harness_init(&h, &store, 2);
	produce_lines(&h, &sc, 0, 5000);
	pipeline_start(&h, 1000);
	h.want = 5000;
	run(&h, until_processed, 120000);
	pipeline_stop(&h);
	ck_assert_uint_eq(store.n, 1);
	ck_assert_uint_eq(store.restored, 0);

	produce_lines(&h, &sc, 5000, sc.n);
	pipeline_start(&h, 1000);
	h.want = (double)(sc.n - 5000);
	run(&h, until_processed, 120000);
	/* only the new events: nothing before the commit came back */
	ck_assert_double_eq(metric(&h, "driftlock_detector_events_total", "outcome", "processed"),
			    (double)(sc.n - 5000));
	pipeline_stop(&h);
	ck_assert_uint_eq(store.restored, 1);
	ck_assert_int_eq(cbad_detector_load(store.snaps[0].buf, store.snaps[0].len, &d, err,
					    sizeof(err)),
			 0);
	cbad_detector_status(d, &st);
	ck_assert_uint_eq(st.events_seen, sc.n);
	ck_assert(!st.calibrating);
	cbad_detector_free(d);

	seen = calloc(sc.n, sizeof(*seen));
	got = anomalies_seen(&h, nwant, seen, sc.n);
	ck_assert_uint_eq(got, nwant);
	for (size_t i = 0; i < sc.n; i++)
		ck_assert_msg(seen[i] == want[i], "line %zu: pipeline %d, CBAD alone %d", i, seen[i],
			      want[i]);
	free(seen);
	free(want);
	harness_free(&h);
	mem_free(&store);
	det_scenario_free(&sc);
}
END_TEST

/* A snapshot that cannot be used does not stop the stream: it calibrates again and the drain
 * writes a good snapshot over the bad one. */
START_TEST(test_corrupt_snapshot_starts_afresh)
{
	det_scenario sc = { 0 };
	mem_store store = { 0 };
	harness h;
	cbad_detector *d;
	cbad_status st;
	char err[256];
	mem_snap *bad;

	det_scenario_load(&sc, "audit-log", 8000);
	harness_init(&h, &store, 1);
	bad = mem_find(&store, h.org, STREAM, true);
	bad->buf = strdup("not a detector");
	bad->len = strlen("not a detector");
	bad->partition = 0;
	bad->next_offset = 1000000;
	produce_lines(&h, &sc, 0, 300);
	pipeline_start(&h, 1000);
	h.want = 300;
	run(&h, until_processed, 60000);
	ck_assert_double_eq(metric(&h, "driftlock_detector_events_total", "outcome", "processed"),
			    300);
	pipeline_stop(&h);
	ck_assert_int_eq(cbad_detector_load(store.snaps[0].buf, store.snaps[0].len, &d, err,
					    sizeof(err)),
			 0);
	cbad_detector_status(d, &st);
	ck_assert_uint_eq(st.events_seen, 300);
	ck_assert_int_eq(store.snaps[0].next_offset, 300);
	cbad_detector_free(d);
	harness_free(&h);
	mem_free(&store);
	det_scenario_free(&sc);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("det_pipeline");
	TCase *tc = tcase_create("broker");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 280);
	tcase_add_test(tc, test_scenario_yields_anomalies);
	tcase_add_test(tc, test_poison_to_dlq);
	tcase_add_test(tc, test_restart_resumes_from_snapshot);
	tcase_add_test(tc, test_corrupt_snapshot_starts_afresh);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
