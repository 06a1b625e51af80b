/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-metering: stores and counts anomalies for billing: wires the configuration, the
 * consumer thread (mtr_pipeline), the store, live usage in Redis and the outbox relay. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_kafka.h"
#include "common/dl_log.h"
#include "common/dl_main.h"
#include "common/dl_outbox.h"
#include "common/dl_redis.h"
#include "common/dl_service.h"
#include "common/dl_time.h"
#include "proto/proto_topics.h"
#include "services/metering/mtr_pipeline.h"
#include "services/metering/mtr_store.h"
#include "services/metering/mtr_usage.h"

#define METERING_GROUP "driftlock-metering"
#define METERING_RETENTION_BATCH 5000
#define METERING_RELAY_MAX 1000        /* outbox rows per relay call */
#define METERING_USAGE_CHECK_MS 5000   /* how often Redis is checked for a rebuild */
#define METERING_REDIS_TIMEOUT_MS 2000
#define METERING_DRAIN_POLL_MS 50

typedef struct metering_config {
	dl_service_config svc;
	char *kafka_brokers;
	char *pg_dsn;
	char *redis_url;
	char *group_id;
	int64_t batch_max;
	int64_t batch_ms;
	int64_t retry_max_ms;
	bool relay;
	int64_t relay_interval_ms;
	int64_t retention_interval_s;
	int64_t session_timeout_ms;
} metering_config;

static const dl_config_param metering_params[] = {
	DL_SERVICE_CONFIG_PARAMS(metering_config, svc, "9103"),
	DL_DEPS_PARAM_KAFKA(metering_config, kafka_brokers),
	DL_DEPS_PARAM_PG(metering_config, pg_dsn),
	DL_DEPS_PARAM_REDIS(metering_config, redis_url),
	{ "DRIFTLOCK_METERING_GROUP", DL_CONFIG_STRING, offsetof(metering_config, group_id),
	  METERING_GROUP, 1, 255, NULL,
	  "Kafka consumer group of the metering workers (they share the anomalies' partitions)." },
	{ "DRIFTLOCK_METERING_BATCH", DL_CONFIG_INT, offsetof(metering_config, batch_max), "1000",
	  1, 10000, NULL,
	  "Anomalies stored per PostgreSQL transaction at most. A batch holds each anomaly decoded "
	  "(about 30 KiB of fixed-size fields), so 1000 is about 30 MiB and 10000 about 300 MiB." },
	{ "DRIFTLOCK_METERING_BATCH_MS", DL_CONFIG_DURATION_MS, offsetof(metering_config, batch_ms),
	  "100ms", 1, 60000, NULL,
	  "Longest wait to fill a batch before what arrived is stored (latency against "
	  "throughput)." },
	{ "DRIFTLOCK_METERING_RETRY_MAX_MS", DL_CONFIG_DURATION_MS,
	  offsetof(metering_config, retry_max_ms), "5000ms", 100, 600000, NULL,
	  "Longest pause between two attempts to store a held batch while PostgreSQL is "
	  "unavailable (the backoff doubles from 100 ms up to it)." },
	{ "DRIFTLOCK_METERING_RELAY", DL_CONFIG_BOOL, offsetof(metering_config, relay), "true", 0,
	  0, NULL,
	  "Whether this process relays the outbox (notifications, usage records) to Kafka after "
	  "each batch; false = store only, another metering process relays." },
	{ "DRIFTLOCK_METERING_RELAY_INTERVAL_MS", DL_CONFIG_DURATION_MS,
	  offsetof(metering_config, relay_interval_ms), "5000ms", 100, 3600000, NULL,
	  "How often the outbox is relayed besides after each batch (rows a crash left "
	  "pending)." },
	{ "DRIFTLOCK_METERING_RETENTION_INTERVAL_S", DL_CONFIG_INT,
	  offsetof(metering_config, retention_interval_s), "86400", 0, 31536000, NULL,
	  "Seconds between two retention passes (anomalies older than the plan's retention are "
	  "deleted in batches of 5000 rows; the first pass runs at start); 0 disables it." },
	{ "DRIFTLOCK_METERING_SESSION_TIMEOUT", DL_CONFIG_DURATION_MS,
	  offsetof(metering_config, session_timeout_ms), "45s", 6000, 300000, NULL,
	  "A worker silent this long is dropped from the group and its partitions move to the "
	  "others (they resume from the last commit)." },
};

/* What runs on the pipeline's thread: the store, the relay and live usage, each with its
 * own connection (none is shared with the event loop). */
typedef struct metering_effects {
	const metering_config *cfg;
	dl_metrics_registry *m;
	dl_kafka_producer *producer; /* the pipeline thread's own (borrowed from the state) */
	mtr_store *store;
	dl_outbox *outbox; /* connected on the first relay; NULL when the relay is off */
	dl_redis *redis;   /* connected lazily */
	mtr_usage *usage;
	mtr_store_result last; /* of the last stored batch */
	mtr_pipeline_rejected *rejected;
	size_t rejected_cap;
} metering_effects;

typedef struct metering_state {
	dl_service *svc;
	metering_effects fx;
	dl_kafka_producer *producer; /* the pipeline thread's own */
	mtr_pipeline *pipeline;
	struct event *drain_timer;
} metering_state;

static char conf_session[24];
static const char *consumer_pairs[] = { "session.timeout.ms", conf_session, NULL };

static int fx_store(void *opaque, const struct proto_anomaly *a, size_t n,
		    mtr_pipeline_counts *ret, char *errbuf, size_t errlen)
{
	metering_effects *fx = opaque;
	mtr_store_result res;
	int r;

	memset(&res, 0, sizeof(res));
	r = mtr_store_batch(fx->store, a, n, &res, errbuf, errlen);
	if (r < 0)
		return r;
	if (res.nrejected > fx->rejected_cap) {
		mtr_pipeline_rejected *x = realloc(fx->rejected, res.nrejected * sizeof(*x));

		if (!x) {
			snprintf(errbuf, errlen, "out of memory");
			return -ENOMEM;
		}
		fx->rejected = x;
		fx->rejected_cap = res.nrejected;
	}
	for (size_t i = 0; i < res.nrejected; i++)
		fx->rejected[i] = (mtr_pipeline_rejected){ res.rejected[i].index,
							    res.rejected[i].reason };
	fx->last = res;
	*ret = (mtr_pipeline_counts){ res.stored,       res.duplicates,  res.notifications,
				      res.usage_records, fx->rejected, res.nrejected };
	return 0;
}

/* Live usage needs Redis; a connection lost is made again on the next call. */
static mtr_usage *fx_usage(metering_effects *fx, char *errbuf, size_t errlen)
{
	if (fx->usage)
		return fx->usage;
	if (!fx->redis && dl_redis_connect_url(fx->cfg->redis_url, METERING_REDIS_TIMEOUT_MS,
					       METERING_REDIS_TIMEOUT_MS, errbuf, errlen,
					       &fx->redis) < 0)
		return NULL;
	if (mtr_usage_new(fx->redis, fx->m, &fx->usage, errbuf, errlen) < 0)
		return NULL;
	return fx->usage;
}

static int fx_publish(void *opaque, char *errbuf, size_t errlen)
{
	metering_effects *fx = opaque;
	mtr_usage *u;

	if (fx->last.norgs == 0)
		return 0;
	u = fx_usage(fx, errbuf, errlen);
	if (!u)
		return -ENOTCONN;
	return mtr_usage_publish(u, fx->last.orgs, fx->last.norgs, errbuf, errlen);
}

static int fx_relay(void *opaque, size_t *ret_sent, char *errbuf, size_t errlen)
{
	metering_effects *fx = opaque;
	size_t total = 0, sent;
	int r;

	/* Connected on first use: a start while PostgreSQL is down is not a failure. */
	if (!fx->outbox) {
		r = dl_outbox_new(fx->cfg->pg_dsn, fx->producer, fx->m, "driftlock_metering",
				  &fx->outbox, errbuf, errlen);
		if (r < 0)
			return r;
	}
	/* Until a pass finds fewer rows than it may take: a backlog leaves in one go. */
	do {
		sent = 0;
		r = dl_outbox_relay(fx->outbox, METERING_RELAY_MAX, &sent, errbuf, errlen);
		total += sent;
	} while (r == 0 && sent == METERING_RELAY_MAX);
	*ret_sent = total;
	return r;
}

static int fx_usage_ready(void *opaque, bool *ret_ready, char *errbuf, size_t errlen)
{
	metering_effects *fx = opaque;
	mtr_usage *u = fx_usage(fx, errbuf, errlen);

	if (!u)
		return -ENOTCONN;
	return mtr_usage_ready(u, ret_ready, errbuf, errlen);
}

static int fx_usage_rebuild(void *opaque, char *errbuf, size_t errlen)
{
	metering_effects *fx = opaque;
	mtr_usage *u = fx_usage(fx, errbuf, errlen);
	mtr_store_result res;
	int64_t now = dl_time_now_ms();
	char n[24];
	int r;

	if (!u)
		return -ENOTCONN;
	memset(&res, 0, sizeof(res));
	r = mtr_store_usage_all(fx->store, &res, errbuf, errlen);
	if (r < 0)
		return r;
	r = mtr_usage_publish(u, res.orgs, res.norgs, errbuf, errlen);
	if (r < 0)
		return r;
	/* The store's buffer now holds the rebuild, not the last batch. */
	fx->last.norgs = 0;
	r = mtr_usage_mark_ready(u, now, errbuf, errlen);
	if (r == 0) {
		snprintf(n, sizeof(n), "%zu", res.norgs);
		dl_log_info("live usage rebuilt from PostgreSQL", "orgs", n);
	}
	return r;
}

static int fx_retention(void *opaque, int64_t now_ms, size_t batch_rows, size_t *ret_deleted,
			char *errbuf, size_t errlen)
{
	metering_effects *fx = opaque;
	int r = mtr_store_retention(fx->store, now_ms, batch_rows, ret_deleted, errbuf, errlen);

	if (r == 0 && *ret_deleted > 0) {
		char n[24];

		snprintf(n, sizeof(n), "%zu", *ret_deleted);
		dl_log_info("retention: expired anomalies deleted", "rows", n);
	}
	return r;
}

static int metering_db_check(void *opaque, char *errbuf, size_t errlen)
{
	metering_state *st = opaque;

	if (mtr_pipeline_db_up(st->pipeline))
		return 0;
	snprintf(errbuf, errlen, "batches are not stored: PostgreSQL unavailable");
	return -EIO;
}

static void metering_drain_poll_cb(evutil_socket_t fd, short what, void *opaque)
{
	metering_state *st = opaque;

	(void)fd;
	(void)what;
	if (!mtr_pipeline_finished(st->pipeline))
		return;
	event_del(st->drain_timer);
	dl_service_drained(st->svc);
}

/* SIGTERM: the thread finishes its batch, commits, relays and leaves the group; the loop
 * watches for it (the admin port answers meanwhile). */
static void metering_drain(dl_service *svc, void *opaque)
{
	metering_state *st = opaque;
	struct timeval tv = { 0, METERING_DRAIN_POLL_MS * 1000 };

	(void)svc;
	mtr_pipeline_stop(st->pipeline);
	if (event_add(st->drain_timer, &tv) < 0)
		dl_service_drained(st->svc);
}

static void effects_free(metering_effects *fx)
{
	mtr_usage_free(fx->usage);
	dl_redis_free(fx->redis);
	dl_outbox_free(fx->outbox);
	mtr_store_free(fx->store);
	free(fx->rejected);
}

static int metering_setup(dl_service *svc, dl_deps *deps, void *cfgp, void **ret_state,
			  char *errbuf, size_t errlen)
{
	metering_config *cfg = cfgp;
	metering_state *st;
	mtr_pipeline_ops ops;
	mtr_pipeline_options o;
	dl_metrics_registry *m = dl_service_metrics(svc);
	int r;

	(void)deps;
	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	st->svc = svc;
	st->fx.cfg = cfg;
	st->fx.m = m;
	st->drain_timer = event_new(dl_service_base(svc), -1, EV_PERSIST, metering_drain_poll_cb,
				    st);
	if (!st->drain_timer) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free_state;
	}
	/* The pipeline thread's own producer (dead letters, outbox): the loop's one serves its
	 * delivery reports from the loop thread. */
	r = dl_kafka_producer_new(cfg->kafka_brokers, "driftlock-metering", NULL, errbuf, errlen,
				  &st->producer);
	if (r < 0)
		goto out_free_timer;
	st->fx.producer = st->producer;
	r = mtr_store_new(cfg->pg_dsn, m, &st->fx.store, errbuf, errlen);
	if (r < 0)
		goto out_free_producer;
	snprintf(conf_session, sizeof(conf_session), "%lld", (long long)cfg->session_timeout_ms);
	ops = (mtr_pipeline_ops){
		.store = fx_store,
		.publish = fx_publish,
		.relay = cfg->relay ? fx_relay : NULL,
		.usage_ready = fx_usage_ready,
		.usage_rebuild = fx_usage_rebuild,
		.retention = fx_retention,
		.opaque = &st->fx,
	};
	o = (mtr_pipeline_options){
		.brokers = cfg->kafka_brokers,
		.group_id = cfg->group_id,
		.topic = DL_TOPIC_ANOMALIES,
		.consumer_conf = consumer_pairs,
		.batch_max = (size_t)cfg->batch_max,
		.batch_ms = cfg->batch_ms,
		.retry_max_ms = cfg->retry_max_ms,
		.relay_interval_ms = cfg->relay_interval_ms,
		.retention_interval_ms = cfg->retention_interval_s * 1000,
		.retention_batch = METERING_RETENTION_BATCH,
		.usage_check_ms = METERING_USAGE_CHECK_MS,
	};
	r = mtr_pipeline_new(st->producer, &ops, m, &o, &st->pipeline, errbuf, errlen);
	if (r < 0)
		goto out_free_effects;
	r = dl_service_add_check(svc, "metering_store", metering_db_check, st);
	if (r < 0) {
		snprintf(errbuf, errlen, "out of memory");
		goto out_free_pipeline;
	}
	r = mtr_pipeline_start(st->pipeline, errbuf, errlen);
	if (r < 0)
		goto out_free_pipeline;
	dl_service_on_drain(svc, metering_drain, st);
	dl_log_info("consuming", "topic", DL_TOPIC_ANOMALIES, "group", cfg->group_id, "relay",
		    cfg->relay ? "on" : "off");
	*ret_state = st;
	return 0;

out_free_pipeline:
	mtr_pipeline_free(st->pipeline);
out_free_effects:
	effects_free(&st->fx);
out_free_producer:
	dl_kafka_producer_free(st->producer);
out_free_timer:
	event_free(st->drain_timer);
out_free_state:
	free(st);
	return r;
}

static void metering_teardown(void *opaque)
{
	metering_state *st = opaque;

	if (!st)
		return;
	/* The thread goes first (it uses everything below), then what it used. */
	mtr_pipeline_free(st->pipeline);
	effects_free(&st->fx);
	dl_kafka_producer_free(st->producer);
	event_free(st->drain_timer);
	free(st);
}

static const dl_main_spec metering_spec = {
	.name = "metering",
	.prog = "driftlock-metering",
	.summary = "Stores and counts every anomaly of driftlock.anomalies.v1 in PostgreSQL, keeps live usage in Redis and emits usage-threshold notifications and usage records.",
	.params = metering_params,
	.nparams = sizeof(metering_params) / sizeof(metering_params[0]),
	.config_size = sizeof(metering_config),
	.svc_offset = offsetof(metering_config, svc),
	.kafka_offset = offsetof(metering_config, kafka_brokers),
	.pg_offset = offsetof(metering_config, pg_dsn),
	.redis_offset = offsetof(metering_config, redis_url),
	.setup = metering_setup,
	.teardown = metering_teardown,
};

int main(int argc, char **argv)
{
	return dl_main_run(&metering_spec, argc, argv);
}
