/* SPDX-License-Identifier: Apache-2.0 */
/* ingest: what the modules of driftlock-ingest share (configuration, connections, metrics). */
#ifndef DL_INGEST_H
#define DL_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "common/dl_http.h"
#include "common/dl_kafka.h"
#include "common/dl_metrics.h"
#include "common/dl_service.h"

typedef struct dl_pgpool dl_pgpool;
typedef struct ingest_auth ingest_auth;
typedef struct ingest_ratelimit ingest_ratelimit;
typedef struct ingest_sse ingest_sse;
typedef struct ingest_usage ingest_usage;
typedef struct ingest_config ingest_config; /* ingest_config.h */

/* One per process, made by main.c's setup; every module reads it, none frees what it did not
 * make. Everything runs on the loop thread unless a comment says otherwise. */
typedef struct ingest_ctx {
	const ingest_config *cfg;
	dl_service *svc;
	struct event_base *base;
	dl_http_server *http;         /* the public listener */
	dl_metrics_registry *metrics; /* served on the admin port's /metrics */
	dl_kafka_producer *producer;  /* idempotent, acks=all (dl_deps) */
	dl_pgpool *db;                /* PostgreSQL worker pool (dl_pgpool.h) */
	ingest_auth *auth;            /* API keys (ingest_auth.h) */
	ingest_ratelimit *rl;         /* per key and per org limits in Redis (ingest_ratelimit.h) */
	ingest_sse *sse;              /* live anomalies (ingest_sse.h) */
	ingest_usage *usage;          /* live usage from Redis (ingest_usage.h) */
} ingest_ctx;

/* Who is calling: filled by authentication, valid for the request. */
typedef struct ingest_principal {
	char org_id[37];          /* lowercase uuid */
	char key_id[37];          /* the api_keys row */
	char plan[33];            /* plans.code */
	char billing_status[16];  /* ok | grace | suspended */
	char over_quota[16];      /* soft_cap | block | allow_overage */
	int64_t rate_per_s;       /* plans.ingest_events_per_second */
	int64_t rate_burst;       /* plans.ingest_burst */
	int64_t included;         /* plans.included_anomalies */
	int64_t period_anomalies; /* usage_counters.anomalies of the current period (cached; the
	                           * quota gate replaces it by the live count, ingest_usage.h) */
} ingest_principal;

#endif /* DL_INGEST_H */
