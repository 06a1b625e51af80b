/* SPDX-License-Identifier: Apache-2.0 */
/* dl_outbox: relays the outbox table's pending rows of the calling database role to Kafka and marks them sent. */
#ifndef DL_COMMON_OUTBOX_H
#define DL_COMMON_OUTBOX_H

#include <stddef.h>

#include "common/dl_kafka.h"
#include "common/dl_metrics.h"

/*
 * The outbox pattern (infra/sql/0009_outbox.sql, 0014_outbox_usage.sql): a service writes the
 * messages a change must announce into the outbox table in the same transaction as the change;
 * after the commit, dl_outbox_relay() produces the rows this database role created and marks
 * them sent. A crash between the commit and the mark re-sends on the next pass with the same
 * payload (so the same message id): delivery is at least once, consumers dedupe by id.
 *
 * Threading and blocking: a dl_outbox is used by one thread at a time, the thread that also
 * serves the producer's delivery reports (dl_kafka_producer_poll); every call blocks.
 */
typedef struct dl_outbox dl_outbox;

/*
 * Connects its own dl_pg to pg_dsn (the service's role: it relays only the rows that role
 * created) and registers the metrics <metric_prefix>_outbox_sent_total, _outbox_failed_total,
 * _outbox_pending (rows seen pending at the last pass) and _outbox_oldest_seconds (age of the
 * oldest of them) in m. p is borrowed (an idempotent producer, dl_kafka_producer_new) and must
 * outlive the outbox. Returns 0 and *ret (dl_outbox_free), or -EINVAL (bad prefix), -ENOMEM,
 * or a dl_pg_connect code (-ENOTCONN: database unreachable) with text in errbuf; *ret
 * untouched on failure.
 */
int dl_outbox_new(const char *pg_dsn, dl_kafka_producer *p, dl_metrics_registry *m,
		  const char *metric_prefix, dl_outbox **ret, char *errbuf, size_t errlen);

/*
 * One relay pass: reads up to max (1..1000; 0 = 1000) of the oldest pending rows
 * (dl_outbox_pending), produces each to its topic with its key and headers, waits for every
 * delivery report (serving the producer's reports meanwhile: bounded by its
 * message.timeout.ms), then marks the delivered rows sent in one statement; rows whose produce
 * or delivery failed get attempts + 1 and last_error in one more statement and stay pending
 * for the next pass. *ret_sent (may be NULL) is the number marked sent.
 * Returns 0 when the pass completed, even if some rows failed (the failed count is in the
 * metrics and the table), or a dl_pg code (-ENOTCONN, -ECONNRESET, -EIO, ...) when the
 * database could not be read or updated: rows already produced are then sent again by a later
 * pass. The connection reconnects on a later call (dl_pg). Text in errbuf.
 */
int dl_outbox_relay(dl_outbox *o, size_t max, size_t *ret_sent, char *errbuf, size_t errlen);

/* Closes the connection and frees o (not the producer). Accepts NULL. */
void dl_outbox_free(dl_outbox *o);

#endif /* DL_COMMON_OUTBOX_H */
