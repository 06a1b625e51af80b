/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-detector: the Kafka consumer group that runs CBAD per stream: wires the configuration, connections and modules. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_log.h"
#include "common/dl_main.h"
#include "common/dl_pgpool.h"
#include "common/dl_service.h"
#include "common/dl_time.h"
#include "proto/proto_topics.h"
#include "services/detector/cbad/cbad.h"
#include "services/detector/det_keys.h"
#include "services/detector/det_pipeline.h"
#include "services/detector/det_settings.h"
#include "services/detector/det_state.h"

#define DETECTOR_GROUP "driftlock-detector"
#define DETECTOR_DRAIN_POLL_MS 50
#define DETECTOR_DRAIN_STATUS_MAX_MS 10000 /* longest wait for the last status write */

typedef struct detector_config {
	dl_service_config svc;
	char *kafka_brokers;
	char *pg_dsn;
	char *redis_url;
	char *group_id;
	int64_t checkpoint_ms;
	int64_t idle_evict_ms;
	int64_t barrier_timeout_ms;
	int64_t batch_max;
	int64_t max_streams;
	int64_t linger_ms;
	int64_t session_timeout_ms;
	char *api_key_secret;
	int64_t db_threads;
	int64_t db_queue;
	int64_t db_statement_timeout_ms;
	int64_t settings_poll_ms;
	int64_t status_flush_ms;
	int64_t key_cache_ttl_ms;
} detector_config;

static const dl_config_param detector_params[] = {
	DL_SERVICE_CONFIG_PARAMS(detector_config, svc, "9102"),
	DL_DEPS_PARAM_KAFKA(detector_config, kafka_brokers),
	DL_DEPS_PARAM_PG(detector_config, pg_dsn),
	DL_DEPS_PARAM_REDIS(detector_config, redis_url),
	{ "DRIFTLOCK_DETECTOR_GROUP", DL_CONFIG_STRING, offsetof(detector_config, group_id),
	  DETECTOR_GROUP, 1, 255, NULL,
	  "Kafka consumer group of the detector workers (they share the partitions)." },
	{ "DRIFTLOCK_DETECTOR_CHECKPOINT_INTERVAL", DL_CONFIG_DURATION_MS,
	  offsetof(detector_config, checkpoint_ms), "5s", 100, 600000, NULL,
	  "How often the changed streams are snapshotted to Redis and offsets committed (what a "
	  "crash replays at most)." },
	{ "DRIFTLOCK_DETECTOR_IDLE_EVICT", DL_CONFIG_DURATION_MS,
	  offsetof(detector_config, idle_evict_ms), "10m", 1000, 86400000, NULL,
	  "A stream without events this long is dropped from memory (its snapshot stays)." },
	{ "DRIFTLOCK_DETECTOR_BARRIER_TIMEOUT", DL_CONFIG_DURATION_MS,
	  offsetof(detector_config, barrier_timeout_ms), "10s", 100, 300000, NULL,
	  "Longest wait for Kafka to acknowledge the anomalies before a checkpoint is postponed." },
	{ "DRIFTLOCK_DETECTOR_BATCH", DL_CONFIG_INT, offsetof(detector_config, batch_max), "256", 1,
	  100000, NULL, "Events processed per loop turn before the loop serves anything else." },
	{ "DRIFTLOCK_DETECTOR_MAX_STREAMS", DL_CONFIG_INT, offsetof(detector_config, max_streams),
	  "100000", 1, 100000000, NULL,
	  "Streams held in memory at once; the least recently seen beyond it are evicted." },
	{ "DRIFTLOCK_DETECTOR_LINGER", DL_CONFIG_DURATION_MS, offsetof(detector_config, linger_ms),
	  "5ms", 0, 1000, NULL,
	  "How long the producer waits to fill a batch of anomalies (latency against throughput)." },
	{ "DRIFTLOCK_DETECTOR_SESSION_TIMEOUT", DL_CONFIG_DURATION_MS,
	  offsetof(detector_config, session_timeout_ms), "45s", 6000, 300000, NULL,
	  "A worker silent this long is dropped from the group and its partitions move to the "
	  "others (they resume from its snapshots)." },
	{ "DRIFTLOCK_API_KEY_SECRET", DL_CONFIG_SECRET, offsetof(detector_config, api_key_secret),
	  NULL, 32, 1024, NULL,
	  "Server secret keying the API key hashes (HMAC-SHA-256), at least 32 bytes; the same "
	  "as ingest's, so direct Kafka producers' keys are checked. Required." },
	{ "DRIFTLOCK_DETECTOR_DB_THREADS", DL_CONFIG_INT, offsetof(detector_config, db_threads), "2",
	  1, 64, NULL,
	  "PostgreSQL connections (one worker thread each) for stream settings, status and API "
	  "key look-ups." },
	{ "DRIFTLOCK_DETECTOR_DB_QUEUE", DL_CONFIG_INT, offsetof(detector_config, db_queue), "1024",
	  1, 1000000, NULL,
	  "Database jobs waiting for a connection; beyond it a look-up fails and is retried." },
	{ "DRIFTLOCK_DETECTOR_DB_STATEMENT_TIMEOUT", DL_CONFIG_DURATION_MS,
	  offsetof(detector_config, db_statement_timeout_ms), "5s", 100, 600000, NULL,
	  "Longest a settings, status or API key query may run." },
	{ "DRIFTLOCK_DETECTOR_SETTINGS_POLL", DL_CONFIG_DURATION_MS,
	  offsetof(detector_config, settings_poll_ms), "2s", DET_SETTINGS_POLL_MIN_MS,
	  DET_SETTINGS_POLL_MAX_MS, NULL,
	  "How often changed stream settings (sensitivity, pause, detector settings) are read; a "
	  "change through the API applies within it." },
	{ "DRIFTLOCK_DETECTOR_STATUS_FLUSH", DL_CONFIG_DURATION_MS,
	  offsetof(detector_config, status_flush_ms), "2s", DET_SETTINGS_FLUSH_MIN_MS,
	  DET_SETTINGS_FLUSH_MAX_MS, NULL,
	  "How often the streams' status (calibrating/active, events seen, last event) is written "
	  "to PostgreSQL, in one transaction." },
	{ "DRIFTLOCK_DETECTOR_KEY_CACHE_TTL", DL_CONFIG_DURATION_MS,
	  offsetof(detector_config, key_cache_ttl_ms), "10s", 100, 60000, NULL,
	  "How long a direct producer's checked API key is trusted before it is checked again (a "
	  "revoked key stops working within it)." },
};

typedef struct detector_state {
	dl_service *svc;
	dl_deps *deps;
	det_state *state; /* made once Redis is connected */
	dl_pgpool *db;
	det_settings *settings;
	det_keys *keys;
	det_pipeline *pipeline;
	struct event *drain_timer;
	int64_t drain_started_ms;
} detector_state;

/* librdkafka settings of the producer and the consumer, kept until exit. */
static char conf_linger[24], conf_session[24];
static const char *consumer_pairs[] = { "session.timeout.ms", conf_session, NULL };
static const char *conf_pairs[] = { "linger.ms", conf_linger, NULL };

static const char *const *detector_kafka_conf(const void *cfgp)
{
	const detector_config *cfg = cfgp;

	snprintf(conf_linger, sizeof(conf_linger), "%lld", (long long)cfg->linger_ms);
	return conf_pairs;
}

/* det_state needs a live Redis connection, which dl_deps makes in its readiness check. */
static det_state *state_get(detector_state *st, char *errbuf, size_t errlen)
{
	dl_redis *redis;

	if (st->state)
		return st->state;
	redis = dl_deps_redis(st->deps);
	if (!redis) {
		snprintf(errbuf, errlen, "redis: not connected yet");
		return NULL;
	}
	if (det_state_new(redis, dl_service_metrics(st->svc), &st->state, errbuf, errlen) < 0)
		return NULL;
	return st->state;
}

static int store_save_many(void *opaque, const det_pipeline_snapshot *items, size_t n,
			   char *errbuf, size_t errlen)
{
	det_state *s = state_get(opaque, errbuf, errlen);
	det_state_item *di;
	int r;

	if (!s)
		return -ENOTCONN;
	di = calloc(n, sizeof(*di));
	if (!di)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		di[i] = (det_state_item){ items[i].org_id, items[i].stream, items[i].d,
					  items[i].partition, items[i].next_offset };
	r = det_state_save_many(s, di, n, errbuf, errlen);
	free(di);
	return r;
}

static int store_load(void *opaque, const char *org_id, const char *stream, cbad_detector **ret,
		      int32_t *ret_partition, int64_t *ret_next_offset, char *errbuf, size_t errlen)
{
	det_state *s = state_get(opaque, errbuf, errlen);

	if (!s)
		return -ENOTCONN;
	return det_state_load(s, org_id, stream, ret, ret_partition, ret_next_offset, errbuf,
			      errlen);
}

/* After the pipeline drained: the last status reaches PostgreSQL before the process exits. */
static void detector_drain_poll_cb(evutil_socket_t fd, short what, void *opaque)
{
	detector_state *st = opaque;

	(void)fd;
	(void)what;
	if (det_settings_pending(st->settings) > 0 &&
	    dl_time_mono_ns() / 1000000 - st->drain_started_ms < DETECTOR_DRAIN_STATUS_MAX_MS)
		return;
	if (det_settings_pending(st->settings) > 0)
		dl_log_warn("drain: stream status not written", "error", "PostgreSQL did not answer in time");
	event_del(st->drain_timer);
	dl_service_drained(st->svc);
}

static void detector_drained(void *opaque)
{
	detector_state *st = opaque;
	struct timeval tv = { 0, DETECTOR_DRAIN_POLL_MS * 1000 };

	det_settings_flush(st->settings);
	st->drain_started_ms = dl_time_mono_ns() / 1000000;
	if (event_add(st->drain_timer, &tv) < 0)
		dl_service_drained(st->svc);
}

static void detector_drain(dl_service *svc, void *opaque)
{
	detector_state *st = opaque;

	(void)svc;
	det_pipeline_drain(st->pipeline, detector_drained, st);
}

static int detector_setup(dl_service *svc, dl_deps *deps, void *cfgp, void **ret_state,
			  char *errbuf, size_t errlen)
{
	detector_config *cfg = cfgp;
	detector_state *st;
	det_pipeline_store store;
	det_pipeline_options o;
	det_keys_options ko;
	dl_pg_options pgo;
	cbad_settings defaults;
	struct event_base *base = dl_service_base(svc);
	dl_metrics_registry *m = dl_service_metrics(svc);
	int r;

	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	st->svc = svc;
	st->deps = deps;
	st->drain_timer = event_new(base, -1, EV_PERSIST, detector_drain_poll_cb, st);
	if (!st->drain_timer) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free_state;
	}
	pgo = (dl_pg_options){ .statement_timeout_ms = (int)cfg->db_statement_timeout_ms,
			       .application_name = "driftlock-detector" };
	r = dl_pgpool_new(base, cfg->pg_dsn, &pgo, (int)cfg->db_threads, (size_t)cfg->db_queue,
			  errbuf, errlen, &st->db);
	if (r < 0)
		goto out_free_timer;
	r = det_settings_new(base, st->db, m, cfg->settings_poll_ms, cfg->status_flush_ms,
			     &st->settings, errbuf, errlen);
	if (r < 0)
		goto out_free_db;
	ko = (det_keys_options){ .secret = cfg->api_key_secret,
				 .secret_len = strlen(cfg->api_key_secret),
				 .ttl_ms = cfg->key_cache_ttl_ms };
	r = det_keys_new(base, st->db, m, &ko, &st->keys, errbuf, errlen);
	if (r < 0)
		goto out_free_settings;
	cbad_settings_default(&defaults);
	snprintf(conf_session, sizeof(conf_session), "%lld", (long long)cfg->session_timeout_ms);
	store = (det_pipeline_store){ store_save_many, store_load, st };
	o = (det_pipeline_options){
		.brokers = cfg->kafka_brokers,
		.group_id = cfg->group_id,
		.topic = DL_TOPIC_EVENTS,
		.consumer_conf = consumer_pairs,
		.defaults = &defaults,
		.checkpoint_ms = cfg->checkpoint_ms,
		.idle_evict_ms = cfg->idle_evict_ms,
		.barrier_timeout_ms = cfg->barrier_timeout_ms,
		.batch_max = (size_t)cfg->batch_max,
		.max_streams = (size_t)cfg->max_streams,
		.settings = st->settings,
		.keys = st->keys,
	};
	r = det_pipeline_new(base, dl_deps_kafka(deps), &store, m, &o, &st->pipeline, errbuf,
			     errlen);
	if (r < 0)
		goto out_free_keys;
	r = det_pipeline_start(st->pipeline);
	if (r < 0) {
		snprintf(errbuf, errlen, "cannot start consuming");
		goto out_free_pipeline;
	}
	dl_service_on_drain(svc, detector_drain, st);
	dl_log_info("consuming", "topic", DL_TOPIC_EVENTS, "group", cfg->group_id);
	*ret_state = st;
	return 0;

out_free_pipeline:
	det_settings_on_change(st->settings, NULL, NULL);
	det_pipeline_free(st->pipeline);
out_free_keys:
	det_keys_free(st->keys);
out_free_settings:
	det_settings_free(st->settings);
out_free_db:
	dl_pgpool_free(st->db);
out_free_timer:
	event_free(st->drain_timer);
out_free_state:
	free(st);
	return r;
}

static void detector_teardown(void *opaque)
{
	detector_state *st = opaque;

	if (!st)
		return;
	/* Their callbacks point into the pipeline: they go first (the pipeline's free does not
	 * touch them), then the pool their jobs run on. */
	det_settings_free(st->settings);
	det_keys_free(st->keys);
	det_pipeline_free(st->pipeline);
	dl_pgpool_free(st->db);
	det_state_free(st->state);
	event_free(st->drain_timer);
	free(st);
}

static const dl_main_spec detector_spec = {
	.name = "detector",
	.prog = "driftlock-detector",
	.summary = "Runs compression-based anomaly detection on every stream of driftlock.events.v1 and produces anomalies to driftlock.anomalies.v1.",
	.params = detector_params,
	.nparams = sizeof(detector_params) / sizeof(detector_params[0]),
	.config_size = sizeof(detector_config),
	.svc_offset = offsetof(detector_config, svc),
	.kafka_offset = offsetof(detector_config, kafka_brokers),
	.pg_offset = offsetof(detector_config, pg_dsn),
	.redis_offset = offsetof(detector_config, redis_url),
	.kafka_conf = detector_kafka_conf,
	.setup = detector_setup,
	.teardown = detector_teardown,
};

int main(int argc, char **argv)
{
	return dl_main_run(&detector_spec, argc, argv);
}
