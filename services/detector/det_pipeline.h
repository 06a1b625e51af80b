/* SPDX-License-Identifier: Apache-2.0 */
/* det_pipeline: the detector's consumer loop: events in, one CBAD detector per stream, anomalies
 * and dead letters out, offsets committed once what they cover is durable. */
#ifndef DL_DETECTOR_PIPELINE_H
#define DL_DETECTOR_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "common/dl_kafka.h"
#include "common/dl_metrics.h"
#include "services/detector/cbad/cbad.h"
#include "services/detector/det_keys.h"
#include "services/detector/det_settings.h"

typedef struct det_pipeline det_pipeline;

/* One stream's detector to snapshot, and the offset of its partition the snapshot covers
 * (the next one to process). Same shape as det_state_item. */
typedef struct det_pipeline_snapshot {
	const char *org_id, *stream;
	const cbad_detector *d;
	int32_t partition;
	int64_t next_offset;
} det_pipeline_snapshot;

/*
 * Where detector state is kept between processes (det_state in Redis). Both calls are
 * synchronous on the loop thread. save_many returns 0 only when every item was written.
 * load returns 0 with a detector the pipeline then owns, -ENOENT when the stream has no
 * snapshot, -EBADMSG when it has one that cannot be used (both: the stream starts afresh),
 * another negative code (text in errbuf) when it cannot say now: the pipeline then waits and
 * asks again rather than overwrite the snapshot with a fresh warm-up.
 */
typedef struct det_pipeline_store {
	int (*save_many)(void *opaque, const det_pipeline_snapshot *items, size_t n,
			 char *errbuf, size_t errlen);
	int (*load)(void *opaque, const char *org_id, const char *stream, cbad_detector **ret,
		    int32_t *ret_partition, int64_t *ret_next_offset, char *errbuf, size_t errlen);
	void *opaque;
} det_pipeline_store;

typedef struct det_pipeline_options {
	const char *brokers;
	const char *group_id;             /* "driftlock-detector" */
	const char *topic;                /* DL_TOPIC_EVENTS */
	const char *const *consumer_conf; /* NULL or librdkafka key, value pairs, NULL-ended */
	const cbad_settings *defaults;    /* settings of a stream new to this process (copied) */
	int64_t checkpoint_ms;  /* how often state is snapshotted and offsets committed */
	int64_t idle_evict_ms;  /* a stream without events this long is dropped from memory */
	int64_t barrier_timeout_ms; /* longest wait for Kafka's acks before a checkpoint */
	size_t batch_max;       /* messages processed per loop turn before yielding */
	size_t max_streams;     /* streams held at once; the least recently used beyond it evicted */
	/* Stream settings and status (borrowed; NULL = every stream runs on defaults). A new
	 * stream's events wait for its settings; a paused stream's events are skipped; changes
	 * apply live (a sensitivity in place, other settings with a new detector); status is
	 * reported after each batch. Free it before the pipeline (the pipeline's free does not
	 * touch it). */
	det_settings *settings;
	/* Direct producers' API keys (borrowed; NULL = only envelopes). A message that is not an
	 * envelope but carries a driftlock-api-key header is read as a raw event of the key's org.
	 * Free it before the pipeline. */
	det_keys *keys;
} det_pipeline_options;

/*
 * Creates the pipeline on base: a consumer of opts->topic in opts->group_id whose wake-up fd
 * is served by the loop, producing anomalies and dead letters with producer (borrowed, its
 * delivery reports served by the caller's loop, e.g. dl_deps) and snapshots through store
 * (copied; required). Metrics driftlock_detector_* are registered in m.
 * Nothing is consumed until det_pipeline_start(). Returns 0, or -EINVAL / -ENOMEM with text in
 * errbuf (*ret untouched). Loop thread.
 */
int det_pipeline_new(struct event_base *base, dl_kafka_producer *producer,
		     const det_pipeline_store *store, dl_metrics_registry *m,
		     const det_pipeline_options *opts, det_pipeline **ret, char *errbuf,
		     size_t errlen);

/* Joins the group and starts consuming. Returns 0 or -ENOMEM. */
int det_pipeline_start(det_pipeline *p);

/*
 * Changes the sensitivity of a stream held now (the settings poller's change callback); a
 * stream not held picks its settings up when it is next loaded. Returns 0, -ENOENT (not
 * held) or -EINVAL (out of 0..1).
 */
int det_pipeline_set_sensitivity(det_pipeline *p, const char *org_id, const char *stream,
				 double sensitivity);

/*
 * Starts the drain: stops taking messages, waits for Kafka's acknowledgements, snapshots every
 * stream, commits, leaves the group. done(opaque) is called from the loop when finished (the
 * state is saved unless a failure was logged). Call once.
 */
void det_pipeline_drain(det_pipeline *p, void (*done)(void *opaque), void *opaque);

/* Streams held now (for tests and /metrics). */
size_t det_pipeline_streams(const det_pipeline *p);

/* Closes the consumer if still open (without saving) and frees everything. Accepts NULL. */
void det_pipeline_free(det_pipeline *p);

#endif /* DL_DETECTOR_PIPELINE_H */
