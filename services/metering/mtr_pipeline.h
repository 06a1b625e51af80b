/* SPDX-License-Identifier: Apache-2.0 */
/* mtr_pipeline: metering's consumer thread: anomalies in batches, one store transaction per
 * batch, then the batch's offsets committed, live usage published and the outbox relayed. */
#ifndef DL_METERING_PIPELINE_H
#define DL_METERING_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dl_kafka.h"
#include "common/dl_metrics.h"
#include "proto/proto_anomaly.h"

typedef struct mtr_pipeline mtr_pipeline;

/* An anomaly of the batch the store refused (its org does not exist): its index in the array
 * given to store and a static reason code; the pipeline dead-letters its message. */
typedef struct mtr_pipeline_rejected {
	size_t index;
	const char *reason;
} mtr_pipeline_rejected;

/* What a stored batch did (the store's own counts); rejected is owned by the ops and valid
 * until their next call. */
typedef struct mtr_pipeline_counts {
	size_t stored, duplicates, notifications, usage_records;
	const mtr_pipeline_rejected *rejected;
	size_t nrejected;
} mtr_pipeline_counts;

/*
 * The effects of a batch, all called on the pipeline's thread (never concurrently).
 * store: one transaction for the n anomalies; 0 with *ret filled once it committed. A failure
 * rolled back and the same batch is retried with backoff (partitions paused, /readyz not
 * ready until it is stored); -ECONNREFUSED, -ENOTCONN, -ECONNRESET or -EPIPE say the database
 * is unreachable (logged as such). Required.
 * publish: live usage of the last stored batch (Redis); NULL = none.
 * relay: produces the outbox rows left pending; NULL = relay off (another process relays).
 * usage_ready / usage_rebuild: whether live usage holds every org (false: rebuild it from the
 * database and mark it ready); NULL = no live usage.
 * retention: deletes up to batch_rows expired anomalies, *ret_deleted 0 when nothing is left;
 * NULL = none.
 * Every failure carries text in errbuf; the pipeline logs it and goes on.
 */
typedef struct mtr_pipeline_ops {
	int (*store)(void *opaque, const struct proto_anomaly *a, size_t n,
		     mtr_pipeline_counts *ret, char *errbuf, size_t errlen);
	int (*publish)(void *opaque, char *errbuf, size_t errlen);
	int (*relay)(void *opaque, size_t *ret_sent, char *errbuf, size_t errlen);
	int (*usage_ready)(void *opaque, bool *ret_ready, char *errbuf, size_t errlen);
	int (*usage_rebuild)(void *opaque, char *errbuf, size_t errlen);
	int (*retention)(void *opaque, int64_t now_ms, size_t batch_rows, size_t *ret_deleted,
			 char *errbuf, size_t errlen);
	void *opaque;
} mtr_pipeline_ops;

typedef struct mtr_pipeline_options {
	const char *brokers;
	const char *group_id;             /* "driftlock-metering" */
	const char *topic;                /* DL_TOPIC_ANOMALIES */
	const char *const *consumer_conf; /* NULL or librdkafka key, value pairs, NULL-ended */
	size_t batch_max;                 /* messages per batch, 1..10000 */
	int64_t batch_ms;                 /* longest wait to fill a batch */
	int64_t retry_max_ms;             /* backoff cap while the database is unavailable */
	int64_t relay_interval_ms;        /* periodic relay pass (rows a crash left behind) */
	int64_t retention_interval_ms;    /* 0 = no retention job */
	size_t retention_batch;           /* rows deleted per statement */
	int64_t usage_check_ms;           /* how often live usage is checked for a rebuild */
} mtr_pipeline_options;

/*
 * Creates the pipeline: a consumer of opts->topic in opts->group_id (manual commits), dead
 * letters produced with producer (borrowed; used only from the pipeline's thread from start
 * until free, so it must not be the loop's producer), effects through ops (copied). Metrics
 * driftlock_metering_* are registered in m. Nothing runs until mtr_pipeline_start().
 * Returns 0, or -EINVAL / -ENOMEM with text in errbuf (*ret untouched). Any thread.
 */
int mtr_pipeline_new(dl_kafka_producer *producer, const mtr_pipeline_ops *ops,
		     dl_metrics_registry *m, const mtr_pipeline_options *opts, mtr_pipeline **ret,
		     char *errbuf, size_t errlen);

/* Starts the consumer thread. Returns 0, or negative with text in errbuf. Call once. */
int mtr_pipeline_start(mtr_pipeline *p, char *errbuf, size_t errlen);

/* Asks the thread to stop: it finishes the batch in hand (or gives it up while the database is
 * unavailable: nothing of it is committed), commits what was stored, relays, leaves the group.
 * Any thread; returns at once. */
void mtr_pipeline_stop(mtr_pipeline *p);

/* True once the thread has left the group after mtr_pipeline_stop(). Any thread. */
bool mtr_pipeline_finished(const mtr_pipeline *p);

/* False while the last store attempt found the database unavailable (for /readyz). Any thread. */
bool mtr_pipeline_db_up(const mtr_pipeline *p);

/* Stops the thread if running, joins it and frees everything. Accepts NULL. */
void mtr_pipeline_free(mtr_pipeline *p);

#endif /* DL_METERING_PIPELINE_H */
