/* SPDX-License-Identifier: Apache-2.0 */
/* mtr_scenario: anomalies for metering's suites: valid driftlock.anomaly.v1 messages of an org,
 * produced to driftlock.anomalies.v1 keyed org:stream, and a group's committed offsets. */
#include "tests/support/mtr_scenario.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "proto/proto_topics.h"
#include "tests/support/dl_itest.h"

void mtr_scenario_anomaly(struct proto_anomaly *a, const char *org, const char *stream,
			  const char *tag, size_t i, int64_t detected_at_ms)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->id, sizeof(a->id), "%s-%zu", tag, i);
	snprintf(a->org_id, sizeof(a->org_id), "%s", org);
	snprintf(a->stream, sizeof(a->stream), "%s", stream);
	snprintf(a->event_id, sizeof(a->event_id), "ev-%s-%zu", tag, i);
	a->event_ts_ms = detected_at_ms - 250;
	a->detected_at_ms = detected_at_ms;
	a->kind = PROTO_ANOMALY_KIND_VALUE;
	a->score = 12.5 + (double)i;
	a->p_value = 0.001;
	a->severity = PROTO_ANOMALY_SEVERITY_HIGH;
	a->nsignals = 1;
	snprintf(a->signals[0].name, sizeof(a->signals[0].name), "value.latency_ms");
	a->signals[0].value = 900 + (double)i;
	snprintf(a->explanation.summary, sizeof(a->explanation.summary),
		 "latency_ms %zu is far above its usual 40..60", 900 + i);
	snprintf(a->explanation.signal, sizeof(a->explanation.signal), "value.latency_ms");
	a->explanation.value = 900 + (double)i;
	a->explanation.baseline_low = 40;
	a->explanation.baseline_median = 50;
	a->explanation.baseline_high = 60;
	snprintf(a->excerpt, sizeof(a->excerpt), "{\"latency_ms\":%zu}", 900 + i);
	snprintf(a->detector.version, sizeof(a->detector.version), "cbad-test");
	a->detector.sensitivity = 0.5;
}

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	int64_t *slot = m->_private;

	(void)rk;
	(void)opaque;
	ck_assert_msg(m->err == RD_KAFKA_RESP_ERR_NO_ERROR, "delivery: %s",
		      rd_kafka_err2str(m->err));
	if (slot) {
		slot[0] = m->partition;
		slot[1] = m->offset;
	}
}

static rd_kafka_t *producer_dr(void)
{
	char err[512];
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_t *rk;

	ck_assert(rd_kafka_conf_set(c, "bootstrap.servers", dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
				    err, sizeof(err)) == RD_KAFKA_CONF_OK);
	ck_assert(rd_kafka_conf_set(c, "enable.idempotence", "true", err, sizeof(err)) ==
		  RD_KAFKA_CONF_OK);
	rd_kafka_conf_set_dr_msg_cb(c, on_dr);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
	ck_assert_msg(rk != NULL, "producer: %s", err);
	return rk;
}

static void produce_at(rd_kafka_t *rk, const char *key, const void *value, size_t len,
		       int64_t *slot)
{
	rd_kafka_resp_err_t e;

	e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(DL_TOPIC_ANOMALIES),
			      RD_KAFKA_V_KEY(key, strlen(key)),
			      RD_KAFKA_V_VALUE((void *)value, len),
			      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(slot),
			      RD_KAFKA_V_END);
	ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(e));
}

void mtr_scenario_produce(const struct proto_anomaly *a, size_t n, int32_t *partitions,
			  int64_t *offsets)
{
	rd_kafka_t *rk = producer_dr();
	int64_t *slots = calloc(2 * (n ? n : 1), sizeof(*slots));

	ck_assert_ptr_nonnull(slots);
	for (size_t i = 0; i < n; i++) {
		char key[PROTO_STREAM_KEY_MAX + 1], err[256] = "", *json = NULL;
		size_t len = 0;

		ck_assert_msg(proto_anomaly_encode(&a[i], &json, &len, err, sizeof(err)) == 0,
			      "encode: %s", err);
		snprintf(key, sizeof(key), "%s:%s", a[i].org_id, a[i].stream);
		produce_at(rk, key, json, len, &slots[2 * i]);
		free(json);
		rd_kafka_poll(rk, 0);
	}
	ck_assert_int_eq(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
	for (size_t i = 0; i < n; i++) {
		if (partitions)
			partitions[i] = (int32_t)slots[2 * i];
		if (offsets)
			offsets[i] = slots[2 * i + 1];
	}
	free(slots);
	rd_kafka_destroy(rk);
}

int64_t mtr_scenario_produce_raw(const char *key, const void *value, size_t len,
				 int32_t *ret_partition)
{
	rd_kafka_t *rk = producer_dr();
	int64_t slot[2] = { -1, -1 };

	produce_at(rk, key, value, len, slot);
	ck_assert_int_eq(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_destroy(rk);
	*ret_partition = (int32_t)slot[0];
	return slot[1];
}

int64_t mtr_scenario_committed(const char *group, int32_t partition)
{
	char err[512];
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t e;
	rd_kafka_t *rk;
	int64_t off;

	ck_assert(rd_kafka_conf_set(c, "bootstrap.servers", dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"),
				    err, sizeof(err)) == RD_KAFKA_CONF_OK);
	ck_assert(rd_kafka_conf_set(c, "group.id", group, err, sizeof(err)) == RD_KAFKA_CONF_OK);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
	ck_assert_msg(rk != NULL, "consumer: %s", err);
	l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, DL_TOPIC_ANOMALIES, partition);
	e = rd_kafka_committed(rk, l, 15000);
	ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "committed: %s", rd_kafka_err2str(e));
	off = l->elems[0].offset < 0 ? -1 : l->elems[0].offset;
	rd_kafka_topic_partition_list_destroy(l);
	rd_kafka_destroy(rk);
	return off;
}
