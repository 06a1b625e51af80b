/* SPDX-License-Identifier: Apache-2.0 */
/* mtr_store: stores anomaly batches in PostgreSQL and counts each new one once per billing
 * period, with threshold notifications and usage records written to the outbox in the same
 * transaction. */
#ifndef DL_METERING_STORE_H
#define DL_METERING_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dl_metrics.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_topics.h"

/*
 * One batch = one transaction (infra/sql/0013_metering.sql, dl_metering_store): the anomalies
 * are grouped by org (orgs in id order, so concurrent workers lock counters in one order); per
 * org the transaction is scoped to that org (row-level security) and
 *   - every anomaly is inserted with ON CONFLICT (org_id, id) DO NOTHING; only inserted rows
 *     count, each in dl_usage_period(org, detected_at) (the subscription's period, else the UTC
 *     month), so one batch may count in two periods;
 *   - usage_counters moves by the inserted rows; a threshold t of 70/90/100/120 % of the plan's
 *     included anomalies (none when included is 0) crossed by the batch (before * 100 <
 *     t * included <= after * 100) inserts a usage_alerts row, and only a row actually inserted
 *     writes a notification to the outbox (driftlock.notifications.v1, key org id, id
 *     "usage-{org}-{period_start_ms}-{t}", kind usage_threshold, see docs/operations.md);
 *   - for an org whose effective policy is allow_overage (over_quota allow_overage on a plan
 *     with overage_allowed; otherwise allow_overage behaves as soft_cap), every period whose
 *     count the batch raised above included gets one usage record in the outbox
 *     (driftlock.usage.v1, id "usage-{org}-{period_start_ms}-{quantity}", quantity = the
 *     period's count after the batch, overage = quantity - included).
 * Messages leave through the outbox relay (dl_outbox) after the commit.
 */

typedef struct mtr_store mtr_store;

/* An org's current billing period (at the time of the call) as the store left it. over_quota
 * is the effective policy ("soft_cap", "block" or "allow_overage"; allow_overage on a plan
 * without overage reads "soft_cap"); blocked = over_quota is block and
 * anomalies * 100 >= included * 120. */
typedef struct mtr_org_usage {
	char org_id[PROTO_ORG_ID_LEN + 1];
	int64_t period_start_ms, period_end_ms, anomalies, included;
	char over_quota[16];
	bool blocked;
} mtr_org_usage;

/* An anomaly of the batch that was not stored: index into the batch and a static reason
 * ("unknown_org": its org does not exist, e.g. deleted). The caller dead-letters it. */
typedef struct mtr_store_rejected {
	size_t index;
	const char *reason;
} mtr_store_rejected;

typedef struct mtr_store_result {
	size_t stored, duplicates, notifications, usage_records;
	mtr_org_usage *orgs; /* owned by the store, valid until the next call */
	size_t norgs;
	mtr_store_rejected *rejected; /* owned by the store, valid until the next call */
	size_t nrejected;
} mtr_store_result;

/* Creates a store with its own PostgreSQL connection to pg_dsn (the metering role) and its
 * metrics (driftlock_metering_store_*) in m (may be NULL). When the server is unreachable the
 * store is still created and connects on the next call (each call then tries once, bounded by
 * a 5 s connect timeout). Returns 0 and *ret (mtr_store_free), or -EINVAL (a DSN libpq cannot
 * parse) / -ENOMEM with text in errbuf. */
int mtr_store_new(const char *pg_dsn, dl_metrics_registry *m, mtr_store **ret, char *errbuf,
		  size_t errlen);

/* Stores and counts the n anomalies a[] (n <= 100000) in ONE transaction; fills *res. Anomalies
 * of an org that does not exist are listed in res->rejected and do not fail the batch.
 * On any error the transaction was rolled back, nothing of the batch is stored or counted and
 * the caller retries the same batch later: -ECONNREFUSED when the database is unavailable
 * (unreachable, connection lost, server shutting down), -EAGAIN (serialization failure or
 * deadlock), -ETIMEDOUT (statement timeout), -EIO (any other SQL error), -ENOMEM, -EINVAL
 * (n too large); text in errbuf. One thread at a time. */
int mtr_store_batch(mtr_store *s, const struct proto_anomaly *a, size_t n, mtr_store_result *res,
		    char *errbuf, size_t errlen);

/* Every org's current period usage (for the Redis rebuild) into res->orgs / res->norgs (the
 * other counts 0). Codes as mtr_store_batch. */
int mtr_store_usage_all(mtr_store *s, mtr_store_result *res, char *errbuf, size_t errlen);

/* Deletes anomalies detected before now_ms minus their org's plan retention_days, at most
 * batch_rows (1..100000) per call, one org at a time (index anomalies_org_time_id_idx); call
 * repeatedly: 0 with *ret_deleted == 0 means nothing is left. Codes as mtr_store_batch. */
int mtr_store_retention(mtr_store *s, int64_t now_ms, size_t batch_rows, size_t *ret_deleted,
			char *errbuf, size_t errlen);

/* Closes the connection and frees s. Accepts NULL. */
void mtr_store_free(mtr_store *s);

#endif /* DL_METERING_STORE_H */
