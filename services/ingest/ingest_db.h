/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_db: PostgreSQL work off the event loop. A fixed pool of worker threads, each with its
 * own dl_pg connection (the ingest role), runs jobs; each job's completion runs back on the
 * loop thread. So a slow query never stalls ingestion or other requests. */
#ifndef DL_INGEST_DB_H
#define DL_INGEST_DB_H

#include <stddef.h>

#include <event2/event.h>

#include "common/dl_pg.h"
#include "services/ingest/ingest.h"

/* Runs on a worker thread with that worker's connection. Must not touch loop-owned state
 * (requests, metrics, the ctx) other than through arg. Returns 0 or a negative errno; it
 * fills whatever result it keeps in arg. -ENOTCONN / -ECONNRESET / -ETIMEDOUT mean the
 * database is unavailable (callers answer 503). */
typedef int (*ingest_db_work_fn)(dl_pg *pg, void *arg);

/* Runs on the loop thread after work returned rc (or with -ECANCELED when the pool shut down
 * before the job ran, or -EAGAIN when the queue was full and the job never ran). */
typedef void (*ingest_db_done_fn)(int rc, void *arg);

/* Starts nthreads workers (1-64) connecting to dsn with opts; queue_max bounds jobs waiting
 * (beyond it submissions fail with -EAGAIN: answer 503). Connections are made lazily by each
 * worker and re-made by dl_pg. Returns 0 and *ret, or negative with text in errbuf. */
int ingest_db_new(struct event_base *base, const char *dsn, const dl_pg_options *opts,
		  int nthreads, size_t queue_max, char *errbuf, size_t errlen, ingest_db **ret);

/* Queues a job. Returns 0 (done will be called exactly once, later, on the loop) or -EAGAIN
 * (queue full) / -ESHUTDOWN (pool stopping) / -ENOMEM; then done is never called. */
int ingest_db_submit(ingest_db *db, ingest_db_work_fn work, ingest_db_done_fn done, void *arg);

/* Jobs queued or running (a gauge, and the drain waits for 0). */
size_t ingest_db_pending(const ingest_db *db);

/* Stops the workers after the jobs queued so far; jobs not started get done(-ECANCELED).
 * Frees the pool. Must be called on the loop thread; accepts NULL. */
void ingest_db_free(ingest_db *db);

#endif /* DL_INGEST_DB_H */
