/* SPDX-License-Identifier: Apache-2.0 */
/* mtr_usage: each org's live usage of its current billing period in Redis, and the marker that Redis holds every org. */
#ifndef DL_METERING_USAGE_H
#define DL_METERING_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dl_metrics.h"
#include "common/dl_redis.h"
#include "services/metering/mtr_store.h"

/*
 * The keys (docs/operations.md, "Live usage in Redis"; readers: ingest's quota gate and
 * GET /v1/usage):
 *   dl:usage:{org_id}  hash: period_start_ms, period_end_ms, anomalies, included, over_quota,
 *                      blocked ("1" when over_quota is block and anomalies * 100 >=
 *                      included * 120), updated_ms; expires 40 days after its last write.
 *   dl:usage:ready     epoch ms of the last rebuild from PostgreSQL: while it exists, every
 *                      org's current period is in Redis (an org without a hash, or whose hash
 *                      is of another period, has not counted anything this period yet).
 * Values are the absolute totals the store committed, never increments, so a write repeated
 * after a Redis reconnect is harmless. A write never moves an org back: one for an older
 * period, or with a lower count in the same period (two workers publishing out of order), is
 * dropped by the script that writes it.
 *
 * Threading: used by one thread at a time, the one that owns the borrowed dl_redis.
 */
#define MTR_USAGE_KEY_PREFIX "dl:usage:"
#define MTR_USAGE_READY_KEY "dl:usage:ready"
#define MTR_USAGE_TTL_MS (40LL * 24 * 3600 * 1000)

typedef struct mtr_usage mtr_usage;

/* Makes the publisher on r (borrowed, must outlive it) with its metrics in m
 * (driftlock_metering_usage_published_total, driftlock_metering_usage_errors_total).
 * Returns 0 and *ret (mtr_usage_free), or -ENOMEM with text; *ret untouched on failure. */
int mtr_usage_new(dl_redis *r, dl_metrics_registry *m, mtr_usage **ret, char *errbuf,
		  size_t errlen);

/* Writes the n orgs' hashes, pipelined (one script call per org, in chunks), each with its
 * 40-day TTL. Returns 0 when Redis accepted every write, else the first failure: -ENOTCONN /
 * -ETIMEDOUT / -EIO (connection; the next call reconnects), -EREMOTEIO (Redis refused a write)
 * with text in errbuf. A failed publish is repaired by the next one for the org or by a
 * rebuild; callers may simply go on. */
int mtr_usage_publish(mtr_usage *u, const mtr_org_usage *orgs, size_t n, char *errbuf,
		      size_t errlen);

/* *ret_ready = whether dl:usage:ready exists (false: Redis was emptied or restarted without
 * persistence, rebuild from mtr_store_usage_all). Returns 0 or a dl_redis code with text;
 * *ret_ready untouched on failure. */
int mtr_usage_ready(mtr_usage *u, bool *ret_ready, char *errbuf, size_t errlen);

/* Sets dl:usage:ready to now_ms (call after a complete rebuild was published). Returns 0 or a
 * dl_redis code with text. */
int mtr_usage_mark_ready(mtr_usage *u, int64_t now_ms, char *errbuf, size_t errlen);

/* Frees u (not the dl_redis). Accepts NULL. */
void mtr_usage_free(mtr_usage *u);

#endif /* DL_METERING_USAGE_H */
