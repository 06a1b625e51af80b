/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_usage: an org's live usage of the current billing period, read from the hash metering keeps in Redis, cached for a second. */
#ifndef DL_INGEST_USAGE_H
#define DL_INGEST_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dl_http.h"
#include "common/dl_metrics.h"
#include "services/ingest/ingest.h"

/*
 * Metering writes "dl:usage:{org}" (period_start_ms, period_end_ms, anomalies, included, ...)
 * after each committed batch and marks "dl:usage:ready" once Redis holds every org
 * (services/metering/mtr_usage.h). The live value is used only when the marker exists and the
 * hash's period contains now; otherwise (Redis down, emptied, no hash, another period) the
 * caller uses what PostgreSQL said. Each org is read from Redis at most once a second per
 * process (requests of an org arriving meanwhile share the answer), on the rate limiter's
 * async connection, so the quota gate sees an org cross 120 % about a second after metering
 * stored the anomaly that crossed it.
 */

/* How many orgs the cache holds (a fixed table: an org whose slot is busy with another org's
 * read uses the database's value). */
#define INGEST_USAGE_SLOTS 4096
/* Requests waiting on one org's read; more use the database's value at once. */
#define INGEST_USAGE_MAX_WAITERS 1024
/* How long one read answers an org. */
#define INGEST_USAGE_TTL_MS 1000

typedef struct ingest_usage ingest_usage;

typedef struct ingest_usage_live {
	int64_t period_start_ms, period_end_ms;
	int64_t anomalies, included;
} ingest_usage_live;

/* live is the org's live usage, or NULL when the database's value must be used; valid during
 * the call only. */
typedef void (*ingest_usage_cb)(dl_http_req *req, const ingest_usage_live *live, void *arg);

/* Makes the reader on rl's Redis connection (borrowed; must outlive it, or be freed after it:
 * see ingest_usage_free). Returns 0 and *ret, or -ENOMEM with text; *ret untouched on failure.
 * Loop thread. */
int ingest_usage_new(ingest_ratelimit *rl, dl_metrics_registry *metrics, ingest_usage **ret,
		     char *errbuf, size_t errlen);

/* Calls cb(req, live, arg) with org_id's live usage: at once from the cache, else once Redis
 * answered (or failed, or timed out: then live is NULL). u NULL calls cb with NULL at once.
 * Loop thread. */
void ingest_usage_get(ingest_usage *u, const char *org_id, dl_http_req *req, ingest_usage_cb cb,
		      void *arg);

/* Frees u. Requests still waiting for Redis get cb(.., NULL, ..) at once (the database's value);
 * reads in flight finish harmlessly later. Accepts NULL. Loop thread. */
void ingest_usage_free(ingest_usage *u);

#endif /* DL_INGEST_USAGE_H */
