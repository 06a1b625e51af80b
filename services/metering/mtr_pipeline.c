/* SPDX-License-Identifier: Apache-2.0 */
/* mtr_pipeline: metering's consumer thread: anomalies in batches, one store transaction per
 * batch, then the batch's offsets committed, live usage published and the outbox relayed. */
#include "services/metering/mtr_pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_log.h"
#include "common/dl_time.h"
#include "proto/proto_dlq.h"
#include "proto/proto_topics.h"

#define MTR_DLQ_FLUSH_MS 10000   /* longest wait for the dead letters' acks before a commit */
#define MTR_RETRY_MIN_MS 100
#define MTR_IDLE_POLL_MS 100     /* poll timeout while a batch waits for a retry */
#define MTR_LOG_EVERY_MS 10000

/*
 * One batch at a time, on this module's own thread (librdkafka's and libpq's blocking calls
 * are fine here; the service's event loop stays free for the admin port).
 *
 * Fill: poll until batch_max messages or batch_ms passed. Each message is decoded at once; one
 * that cannot be decoded is dead-lettered and only its offset is kept. Store: the decoded
 * anomalies go to ops.store in one transaction. Commit: once the dead letters were
 * acknowledged and the store committed, the highest offset of each partition in the batch is
 * committed, synchronously. Then live usage and the outbox relay; neither can lose anything
 * (usage is absolute totals; the outbox rows wait in the database), so their failures are
 * logged and the next batch or the periodic pass repairs them.
 *
 * Outage: when the store finds the database unavailable, nothing is committed, every assigned
 * partition is paused (so polling keeps the group membership without taking more messages)
 * and the same batch is retried with a doubling backoff up to retry_max_ms; the partitions
 * resume once it is stored. A rebalance meanwhile drops the revoked partitions' messages from
 * the batch: their next owner reads them again from the last commit.
 */

typedef struct mtr_item {
	rd_kafka_message_t *msg;
	long anomaly;         /* index into anomalies[], -1 when dead-lettered */
	const char *dlq_code; /* static: why it was dead-lettered at decode */
} mtr_item;

struct mtr_pipeline {
	mtr_pipeline_options o;
	mtr_pipeline_ops ops;
	dl_kafka_producer *producer;
	dl_kafka_consumer *consumer;
	char *brokers, *group_id, *topic;

	pthread_t thread;
	bool started;
	atomic_bool stop;
	atomic_bool finished;
	atomic_bool db_up;
	bool paused; /* the assignment is paused for an outage */

	mtr_item *items;
	size_t nitems, cap;
	struct proto_anomaly *anomalies;
	size_t nanomalies, acap;
	size_t dlq_failed; /* dead letters of this batch whose produce failed */

	int64_t next_relay_ms, next_retention_ms, next_usage_check_ms;
	bool retention_running;
	int64_t last_error_log_ms;

	dl_metric *m_anomalies, *m_batches, *m_batch_seconds, *m_lag, *m_db_up;
	dl_metric *m_notifications, *m_usage_records, *m_retention, *m_commit_failures;
	dl_metric *m_relay_failures;
};

static int64_t mono_ms(void)
{
	return dl_time_mono_ns() / 1000000;
}

static bool db_unreachable(int rc)
{
	return rc == -ECONNREFUSED || rc == -ENOTCONN || rc == -ECONNRESET || rc == -EPIPE;
}

/* ---- dead letters ---- */

static void on_dlq_delivery(void *opaque, rd_kafka_resp_err_t err, int32_t partition,
			    int64_t offset)
{
	mtr_pipeline *p = opaque;

	(void)partition;
	(void)offset;
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		p->dlq_failed++;
}

/* Produces msg to the dead-letter topic with the reason (acknowledged before the commit). */
static int dead_letter(mtr_pipeline *p, const rd_kafka_message_t *msg, const char *code,
		       const char *why)
{
	static const char *const dead[] = { "dead_letter" };
	struct proto_dlq d;
	char *json = NULL, err[256] = "", off[24], part[16];
	size_t len = 0;
	int r;

	memset(&d, 0, sizeof(d));
	snprintf(d.source_topic, sizeof(d.source_topic), "%s", p->topic);
	d.source_partition = msg->partition;
	d.source_offset = msg->offset;
	d.has_key = msg->key != NULL;
	d.key = msg->key;
	d.key_len = msg->key_len <= PROTO_DLQ_KEY_MAX ? msg->key_len : PROTO_DLQ_KEY_MAX;
	d.value = msg->payload;
	d.value_len = msg->len <= PROTO_DLQ_VALUE_MAX ? msg->len : PROTO_DLQ_VALUE_MAX;
	snprintf(d.reason_code, sizeof(d.reason_code), "%s", code);
	snprintf(d.reason_message, sizeof(d.reason_message), "%.1000s", why && *why ? why : code);
	snprintf(d.service, sizeof(d.service), "metering");
	d.failed_at_ms = dl_time_now_ms();
	snprintf(off, sizeof(off), "%lld", (long long)msg->offset);
	snprintf(part, sizeof(part), "%d", (int)msg->partition);
	r = proto_dlq_encode(&d, &json, &len, err, sizeof(err));
	if (r < 0) {
		dl_log_error("dead letter cannot be encoded, message skipped", "partition", part,
			     "offset", off, "reason", code, "error", err);
		return 0;
	}
	dl_log_warn("message sent to the dead-letter topic", "partition", part, "offset", off,
		    "reason", code, "detail", d.reason_message);
	r = dl_kafka_producer_produce(p->producer, DL_TOPIC_DLQ, msg->key,
				      msg->key ? msg->key_len : 0, json, len, NULL, on_dlq_delivery,
				      p, err, sizeof(err));
	free(json);
	if (r < 0) {
		p->dlq_failed++;
		dl_log_error("dead letter not produced", "partition", part, "offset", off, "error",
			     err);
		return r;
	}
	dl_metric_inc(p->m_anomalies, dead, 1);
	return 0;
}

static const char *decode_reason(int rc, const char *err)
{
	if (rc == -EMSGSIZE)
		return "too_large";
	if (strncmp(err, "anomaly: ", 9) == 0 || strstr(err, "JSON") || strstr(err, "json"))
		return "malformed_json";
	return "invalid_anomaly";
}

/* ---- the batch ---- */

static int batch_reserve(mtr_pipeline *p)
{
	if (p->nitems == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		mtr_item *x = realloc(p->items, cap * sizeof(*x));

		if (!x)
			return -ENOMEM;
		p->items = x;
		p->cap = cap;
	}
	if (p->nanomalies == p->acap) {
		size_t cap = p->acap ? p->acap * 2 : 16;
		struct proto_anomaly *a = realloc(p->anomalies, cap * sizeof(*a));

		if (!a)
			return -ENOMEM;
		p->anomalies = a;
		p->acap = cap;
	}
	return 0;
}

/* Takes msg into the batch (ownership moves to the batch). */
static void batch_add(mtr_pipeline *p, rd_kafka_message_t *msg)
{
	char err[512] = "";
	int r;

	if (batch_reserve(p) < 0) {
		/* Not taken: without a commit it is read again after a restart. */
		dl_log_error("out of memory, message left for the next owner");
		rd_kafka_message_destroy(msg);
		return;
	}
	r = proto_anomaly_decode(msg->payload, msg->len, &p->anomalies[p->nanomalies], err,
				 sizeof(err));
	if (r == -ENOMEM) {
		dl_log_error("out of memory, message left for the next owner");
		rd_kafka_message_destroy(msg);
		return;
	}
	if (r < 0) {
		dead_letter(p, msg, decode_reason(r, err), err);
		p->items[p->nitems++] = (mtr_item){ msg, -1, decode_reason(r, err) };
		return;
	}
	p->items[p->nitems++] = (mtr_item){ msg, (long)p->nanomalies++, NULL };
}

static void batch_clear(mtr_pipeline *p)
{
	for (size_t i = 0; i < p->nitems; i++)
		rd_kafka_message_destroy(p->items[i].msg);
	p->nitems = 0;
	p->nanomalies = 0;
	p->dlq_failed = 0;
}

/* Moves the anomalies of the items still holding one to the front, in order. */
static void batch_compact(mtr_pipeline *p)
{
	size_t wa = 0;

	for (size_t i = 0; i < p->nitems; i++) {
		mtr_item *it = &p->items[i];

		if (it->anomaly < 0)
			continue;
		if ((size_t)it->anomaly != wa)
			p->anomalies[wa] = p->anomalies[it->anomaly];
		it->anomaly = (long)wa++;
	}
	p->nanomalies = wa;
}

/* Drops the messages of the revoked partitions (not stored yet: the next owner reads them). */
static void batch_drop(mtr_pipeline *p, const rd_kafka_topic_partition_list_t *parts)
{
	size_t w = 0, dropped = 0;

	for (size_t i = 0; i < p->nitems; i++) {
		mtr_item it = p->items[i];
		bool revoked = false;

		for (int j = 0; j < parts->cnt; j++)
			if (parts->elems[j].partition == it.msg->partition &&
			    strcmp(parts->elems[j].topic, p->topic) == 0)
				revoked = true;
		if (revoked) {
			rd_kafka_message_destroy(it.msg);
			dropped++;
			continue;
		}
		p->items[w++] = it;
	}
	p->nitems = w;
	batch_compact(p);
	if (dropped) {
		char n[24];

		snprintf(n, sizeof(n), "%zu", dropped);
		dl_log_info("partitions revoked, their messages left to the next owner", "messages",
			    n);
	}
}

/* ---- rebalances and pausing ---- */

static void set_paused(mtr_pipeline *p, bool pause)
{
	rd_kafka_t *rk = dl_kafka_consumer_handle(p->consumer);
	rd_kafka_topic_partition_list_t *parts = NULL;

	if (rd_kafka_assignment(rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts) {
		if (parts->cnt > 0) {
			if (pause)
				rd_kafka_pause_partitions(rk, parts);
			else
				rd_kafka_resume_partitions(rk, parts);
		}
		rd_kafka_topic_partition_list_destroy(parts);
	}
	p->paused = pause;
}

static void on_assign(void *opaque, const rd_kafka_topic_partition_list_t *parts)
{
	mtr_pipeline *p = opaque;
	rd_kafka_topic_partition_list_t *copy;
	char n[16];

	snprintf(n, sizeof(n), "%d", parts->cnt);
	dl_log_info("partitions assigned", "count", n);
	/* Partitions that arrive during an outage wait like the others. */
	if (!p->paused || parts->cnt == 0)
		return;
	copy = rd_kafka_topic_partition_list_copy(parts);
	if (!copy)
		return;
	rd_kafka_pause_partitions(dl_kafka_consumer_handle(p->consumer), copy);
	rd_kafka_topic_partition_list_destroy(copy);
}

static void on_revoke(void *opaque, const rd_kafka_topic_partition_list_t *parts, bool lost)
{
	(void)lost;
	batch_drop(opaque, parts);
}

/* ---- one batch ---- */

/* Commits, for each partition of the batch, the offset after its last message. */
static void commit_batch(mtr_pipeline *p)
{
	rd_kafka_t *rk = dl_kafka_consumer_handle(p->consumer);
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;

	if (p->nitems == 0)
		return;
	list = rd_kafka_topic_partition_list_new(8);
	if (!list)
		return;
	for (size_t i = 0; i < p->nitems; i++) {
		const rd_kafka_message_t *m = p->items[i].msg;
		rd_kafka_topic_partition_t *tp =
			rd_kafka_topic_partition_list_find(list, p->topic, m->partition);

		if (!tp)
			tp = rd_kafka_topic_partition_list_add(list, p->topic, m->partition);
		if (m->offset + 1 > tp->offset)
			tp->offset = m->offset + 1;
	}
	err = rd_kafka_commit(rk, list, 0);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		/* Stored already: a re-read after a rebalance or restart finds duplicates. */
		dl_metric_inc(p->m_commit_failures, NULL, 1);
		dl_log_warn("offset commit failed, the batch will be read again (stored once)",
			    "error", rd_kafka_err2str(err));
	}
	for (int i = 0; i < list->cnt; i++) {
		int64_t lo = 0, hi = 0;
		char part[16];
		const char *labels[] = { part };

		if (rd_kafka_get_watermark_offsets(rk, p->topic, list->elems[i].partition, &lo,
						   &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		    hi < list->elems[i].offset)
			continue;
		snprintf(part, sizeof(part), "%d", (int)list->elems[i].partition);
		dl_metric_set(p->m_lag, labels, (double)(hi - list->elems[i].offset));
	}
	rd_kafka_topic_partition_list_destroy(list);
}

static void count_stored(mtr_pipeline *p, const mtr_pipeline_counts *c)
{
	static const char *const stored[] = { "stored" }, *const dup[] = { "duplicate" };

	dl_metric_inc(p->m_anomalies, stored, (double)c->stored);
	dl_metric_inc(p->m_anomalies, dup, (double)c->duplicates);
	dl_metric_inc(p->m_notifications, NULL, (double)c->notifications);
	dl_metric_inc(p->m_usage_records, NULL, (double)c->usage_records);
}

/* After a dead letter of the batch was not acknowledged: the undecodable messages are
 * produced again (the store's refusals are produced again by the retried store). */
static void redo_dead_letters(mtr_pipeline *p)
{
	p->dlq_failed = 0;
	for (size_t i = 0; i < p->nitems; i++)
		if (p->items[i].dlq_code)
			dead_letter(p, p->items[i].msg, p->items[i].dlq_code,
				    "the message is not a valid anomaly (produced again)");
}

/* Stores the batch. Returns 0 when it is durable (dead letters acknowledged, anomalies
 * committed), else negative (database unavailable, or Kafka did not take a dead letter). */
static int batch_store(mtr_pipeline *p)
{
	static const char *const ok[] = { "ok" }, *const down[] = { "db_unavailable" },
			  *const failed[] = { "db_error" }, *const kafka[] = { "dlq_failed" };
	mtr_pipeline_counts c = { 0 };
	char err[512] = "";
	int64_t t0 = dl_time_mono_ns();
	int r = 0;

	if (p->nanomalies > 0)
		r = p->ops.store(p->ops.opaque, p->anomalies, p->nanomalies, &c, err, sizeof(err));
	if (r < 0) {
		dl_metric_inc(p->m_batches, db_unreachable(r) ? down : failed, 1);
		atomic_store(&p->db_up, false);
		dl_metric_set(p->m_db_up, NULL, 0);
		if (mono_ms() - p->last_error_log_ms >= MTR_LOG_EVERY_MS) {
			p->last_error_log_ms = mono_ms();
			dl_log_error(db_unreachable(r)
					     ? "database unavailable, batch held and partitions paused"
					     : "batch not stored, held and retried",
				     "error", err);
		}
		return r;
	}
	count_stored(p, &c);
	/* Anomalies the store refused (an org that does not exist) leave as dead letters (again
	 * if the batch is retried: consumers of the dead-letter topic see a duplicate at worst). */
	for (size_t k = 0; k < c.nrejected; k++)
		for (size_t i = 0; i < p->nitems; i++)
			if (p->items[i].anomaly == (long)c.rejected[k].index)
				dead_letter(p, p->items[i].msg, c.rejected[k].reason,
					    "anomaly not stored: its org does not exist");
	if (dl_kafka_producer_flush(p->producer, MTR_DLQ_FLUSH_MS) < 0 || p->dlq_failed > 0) {
		dl_metric_inc(p->m_batches, kafka, 1);
		dl_log_error("dead letters not acknowledged, batch not committed");
		redo_dead_letters(p);
		return -EAGAIN;
	}
	if (!atomic_load(&p->db_up))
		dl_log_info("database available again, partitions resumed");
	atomic_store(&p->db_up, true);
	dl_metric_set(p->m_db_up, NULL, 1);
	dl_metric_inc(p->m_batches, ok, 1);
	dl_metric_observe(p->m_batch_seconds, NULL, (double)(dl_time_mono_ns() - t0) / 1e9);
	return 0;
}

static void relay(mtr_pipeline *p)
{
	char err[512] = "";
	size_t sent = 0;

	if (!p->ops.relay)
		return;
	if (p->ops.relay(p->ops.opaque, &sent, err, sizeof(err)) < 0) {
		dl_metric_inc(p->m_relay_failures, NULL, 1);
		dl_log_warn("outbox relay failed, rows stay pending", "error", err);
	}
	p->next_relay_ms = mono_ms() + p->o.relay_interval_ms;
}

static void after_commit(mtr_pipeline *p)
{
	char err[512] = "";

	if (p->ops.publish && p->ops.publish(p->ops.opaque, err, sizeof(err)) < 0)
		dl_log_warn("live usage not published (readers fall back to PostgreSQL)", "error",
			    err);
	relay(p);
}

/* ---- periodic work between batches ---- */

static void housekeeping(mtr_pipeline *p)
{
	int64_t now = mono_ms();
	char err[512] = "";

	if (!atomic_load(&p->db_up))
		return;
	if (p->ops.relay && now >= p->next_relay_ms)
		relay(p);
	if (p->ops.usage_ready && p->ops.usage_rebuild && now >= p->next_usage_check_ms) {
		bool ready = true;

		p->next_usage_check_ms = now + p->o.usage_check_ms;
		if (p->ops.usage_ready(p->ops.opaque, &ready, err, sizeof(err)) < 0) {
			dl_log_warn("live usage cannot be checked", "error", err);
		} else if (!ready) {
			dl_log_info("live usage missing in Redis, rebuilding it from PostgreSQL");
			if (p->ops.usage_rebuild(p->ops.opaque, err, sizeof(err)) < 0)
				dl_log_warn("live usage not rebuilt", "error", err);
		}
	}
	if (p->ops.retention && p->o.retention_interval_ms > 0 &&
	    (p->retention_running || now >= p->next_retention_ms)) {
		size_t deleted = 0;

		/* One bounded statement per turn, so batches keep flowing while it runs. */
		if (p->ops.retention(p->ops.opaque, dl_time_now_ms(), p->o.retention_batch, &deleted,
				     err, sizeof(err)) < 0) {
			dl_log_warn("retention pass failed", "error", err);
			p->retention_running = false;
			p->next_retention_ms = now + p->o.retention_interval_ms;
			return;
		}
		dl_metric_inc(p->m_retention, NULL, (double)deleted);
		p->retention_running = deleted > 0;
		if (!p->retention_running)
			p->next_retention_ms = now + p->o.retention_interval_ms;
	}
}

/* ---- the thread ---- */

/* Polls until the batch is full or batch_ms passed (or, while a batch is held, for timeout_ms
 * to serve rebalances). */
static void poll_for(mtr_pipeline *p, int64_t timeout_ms, bool fill)
{
	int64_t until = mono_ms() + timeout_ms;

	for (;;) {
		rd_kafka_message_t *msg = NULL;
		char err[512] = "";
		int64_t left = until - mono_ms();
		int r;

		if (left < 0)
			left = 0;
		if (fill && p->nitems >= p->o.batch_max)
			return;
		r = dl_kafka_consumer_poll(p->consumer, (int)left, &msg, err, sizeof(err));
		if (r < 0) {
			if (mono_ms() - p->last_error_log_ms >= MTR_LOG_EVERY_MS) {
				p->last_error_log_ms = mono_ms();
				dl_log_warn("consumer error", "error", err);
			}
		} else if (msg) {
			/* Only a fill takes messages; a paused assignment delivers none, and one
			 * fetched before the pause joins the held batch (it is in order). */
			batch_add(p, msg);
		}
		if (left == 0 || atomic_load(&p->stop))
			return;
	}
}

static void *pipeline_main(void *opaque)
{
	mtr_pipeline *p = opaque;
	int64_t backoff = MTR_RETRY_MIN_MS;
	char err[512] = "";

	while (!atomic_load(&p->stop)) {
		housekeeping(p);
		poll_for(p, p->o.batch_ms, true);
		if (p->nitems == 0)
			continue;
		if (batch_store(p) < 0) {
			if (!p->paused)
				set_paused(p, true);
			/* Keep polling (membership, rebalances) while waiting for the retry. */
			poll_for(p, backoff, false);
			backoff = backoff * 2 > p->o.retry_max_ms ? p->o.retry_max_ms : backoff * 2;
			continue;
		}
		backoff = MTR_RETRY_MIN_MS;
		commit_batch(p);
		batch_clear(p);
		if (p->paused)
			set_paused(p, false);
		after_commit(p);
	}
	/* Stopping: a batch still held was not stored (database unavailable): it is given up,
	 * uncommitted, for the next start. One last try first. */
	if (p->nitems > 0 && batch_store(p) == 0) {
		commit_batch(p);
		after_commit(p);
	} else if (p->nitems > 0) {
		dl_log_warn("stopping with a batch not stored; it is read again on the next start");
	}
	batch_clear(p);
	relay(p);
	if (dl_kafka_consumer_close(p->consumer, err, sizeof(err)) < 0)
		dl_log_warn("leaving the consumer group failed", "error", err);
	atomic_store(&p->finished, true);
	return NULL;
}

/* ---- lifecycle ---- */

int mtr_pipeline_new(dl_kafka_producer *producer, const mtr_pipeline_ops *ops,
		     dl_metrics_registry *m, const mtr_pipeline_options *opts, mtr_pipeline **ret,
		     char *errbuf, size_t errlen)
{
	static const double secs[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
				       1, 2.5, 5, 10 };
	const char *topics[2];
	dl_kafka_rebalance_cbs cbs;
	mtr_pipeline *p;
	int r;

	if (!producer || !ops || !ops->store || !opts || !opts->brokers || !opts->group_id ||
	    !opts->topic || opts->batch_max < 1 || opts->batch_ms < 0 || opts->retry_max_ms < 1 ||
	    opts->relay_interval_ms < 1 || opts->retention_interval_ms < 0 ||
	    opts->retention_batch < 1 || opts->usage_check_ms < 1) {
		snprintf(errbuf, errlen, "mtr_pipeline: invalid options");
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	p->o = *opts;
	p->ops = *ops;
	p->producer = producer;
	p->brokers = strdup(opts->brokers);
	p->group_id = strdup(opts->group_id);
	p->topic = strdup(opts->topic);
	if (!p->brokers || !p->group_id || !p->topic) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free;
	}
	p->o.brokers = p->brokers;
	p->o.group_id = p->group_id;
	p->o.topic = p->topic;
	p->o.consumer_conf = NULL; /* used only here */
	atomic_init(&p->stop, false);
	atomic_init(&p->finished, false);
	atomic_init(&p->db_up, true);

	p->m_anomalies = dl_metrics_counter(m, "driftlock_metering_anomalies_total",
					    "Anomalies consumed, by result: stored, duplicate (already "
					    "stored: a redelivery) or dead_letter.",
					    1, "result");
	p->m_batches = dl_metrics_counter(m, "driftlock_metering_batches_total",
					  "Batch store attempts, by result: ok, db_unavailable "
					  "(retried), rejected (stored one by one), dlq_failed.",
					  1, "result");
	p->m_batch_seconds = dl_metrics_histogram(m, "driftlock_metering_batch_seconds",
						  "Time to store a batch in PostgreSQL.", secs,
						  sizeof(secs) / sizeof(secs[0]), 0);
	p->m_lag = dl_metrics_gauge(m, "driftlock_metering_lag",
				    "Messages of the partition after the last committed batch.", 1,
				    "partition");
	p->m_db_up = dl_metrics_gauge(m, "driftlock_metering_db_up",
				      "1 while the store reaches PostgreSQL, 0 during an outage.", 0);
	p->m_notifications = dl_metrics_counter(m, "driftlock_metering_notifications_total",
						"Usage-threshold notifications written to the outbox.",
						0);
	p->m_usage_records = dl_metrics_counter(m, "driftlock_metering_usage_records_total",
						"Usage records for billing written to the outbox.", 0);
	p->m_retention = dl_metrics_counter(m, "driftlock_metering_retention_deleted_total",
					    "Anomalies deleted by the retention job.", 0);
	p->m_commit_failures = dl_metrics_counter(m, "driftlock_metering_commit_failures_total",
						  "Offset commits that failed (the batch is read "
						  "again and found stored).", 0);
	p->m_relay_failures = dl_metrics_counter(m, "driftlock_metering_relay_failures_total",
						 "Outbox relay passes that failed.", 0);
	dl_metric_set(p->m_db_up, NULL, 1);

	cbs = (dl_kafka_rebalance_cbs){ on_assign, on_revoke, p };
	topics[0] = p->topic;
	topics[1] = NULL;
	r = dl_kafka_consumer_new(p->brokers, p->group_id, topics, opts->consumer_conf, &cbs,
				  errbuf, errlen, &p->consumer);
	if (r < 0)
		goto out_free;
	*ret = p;
	return 0;

out_free:
	free(p->brokers);
	free(p->group_id);
	free(p->topic);
	free(p);
	return r;
}

int mtr_pipeline_start(mtr_pipeline *p, char *errbuf, size_t errlen)
{
	int r = pthread_create(&p->thread, NULL, pipeline_main, p);

	if (r != 0) {
		snprintf(errbuf, errlen, "cannot start the consumer thread: %s", strerror(r));
		return -r;
	}
	p->started = true;
	return 0;
}

void mtr_pipeline_stop(mtr_pipeline *p)
{
	if (p)
		atomic_store(&p->stop, true);
}

bool mtr_pipeline_finished(const mtr_pipeline *p)
{
	return atomic_load(&((mtr_pipeline *)p)->finished);
}

bool mtr_pipeline_db_up(const mtr_pipeline *p)
{
	return atomic_load(&((mtr_pipeline *)p)->db_up);
}

void mtr_pipeline_free(mtr_pipeline *p)
{
	if (!p)
		return;
	if (p->started) {
		atomic_store(&p->stop, true);
		pthread_join(p->thread, NULL);
	}
	batch_clear(p);
	dl_kafka_consumer_free(p->consumer);
	free(p->items);
	free(p->anomalies);
	free(p->brokers);
	free(p->group_id);
	free(p->topic);
	free(p);
}
