/* SPDX-License-Identifier: Apache-2.0 */
/* dl_pgpool: PostgreSQL work off the event loop. A fixed pool of worker threads, each with its
 * own dl_pg connection (the service's role, from the dsn), runs jobs; each job's completion runs
 * back on the loop thread. So a slow query never stalls the loop (requests, consumers). */
#ifndef DL_COMMON_PGPOOL_H
#define DL_COMMON_PGPOOL_H

#include <stddef.h>

#include <event2/event.h>

#include "common/dl_pg.h"

typedef struct dl_pgpool dl_pgpool;

/* Runs on a worker thread with that worker's connection. Must not touch loop-owned state
 * (requests, metrics, the caller's context) other than through arg. Returns 0 or a negative
 * errno; it fills whatever result it keeps in arg. -ENOTCONN / -ECONNRESET / -ETIMEDOUT mean
 * the database is unavailable (an HTTP caller answers 503, a consumer retries later). */
typedef int (*dl_pgpool_work_fn)(dl_pg *pg, void *arg);

/* Runs on the loop thread after work returned rc (or with -ECANCELED when the pool shut down
 * before the job ran, or -EAGAIN when the queue was full and the job never ran). */
typedef void (*dl_pgpool_done_fn)(int rc, void *arg);

/* Starts nthreads workers (1-64) connecting to dsn with opts; queue_max bounds jobs waiting
 * (beyond it submissions fail with -EAGAIN). Connections are made lazily by each worker and
 * re-made by dl_pg; opts NULL or its application_name NULL means "driftlock". Returns 0 and
 * *ret, or negative with text in errbuf. */
int dl_pgpool_new(struct event_base *base, const char *dsn, const dl_pg_options *opts,
		 int nthreads, size_t queue_max, char *errbuf, size_t errlen, dl_pgpool **ret);

/* Queues a job. Returns 0 (done will be called exactly once, later, on the loop) or -EAGAIN
 * (queue full) / -ESHUTDOWN (pool stopping) / -ENOMEM; then done is never called. */
int dl_pgpool_submit(dl_pgpool *db, dl_pgpool_work_fn work, dl_pgpool_done_fn done, void *arg);

/* Jobs queued or running (a gauge, and the drain waits for 0). */
size_t dl_pgpool_pending(const dl_pgpool *db);

/* Stops the workers after the jobs queued so far; jobs not started get done(-ECANCELED).
 * Frees the pool. Must be called on the loop thread; accepts NULL. */
void dl_pgpool_free(dl_pgpool *db);

#endif /* DL_COMMON_PGPOOL_H */
