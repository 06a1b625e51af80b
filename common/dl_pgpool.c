/* SPDX-License-Identifier: Apache-2.0 */
/* dl_pgpool: a pool of worker threads, each with its own PostgreSQL connection, for the loop. */
#include "common/dl_pgpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#define DL_PGPOOL_MAX_THREADS 64
#define DL_PGPOOL_CONNECT_BACKOFF_MS 500 /* a worker that failed to connect waits this long */

/*
 * Why threads and not libpq's asynchronous API on the loop: every module's database work is
 * written against dl_pg (prepared statements, reconnect rules, org-scoped transactions), which
 * is synchronous. A worker thread per connection keeps that code simple and keeps the loop
 * free: the loop only queues a job and, later, runs its completion. Jobs move between two
 * lists under one mutex; a worker wakes the loop through an eventfd when it finished one.
 */

typedef struct dl_pgpool_job {
	struct dl_pgpool_job *next;
	dl_pgpool_work_fn work;
	dl_pgpool_done_fn done;
	void *arg;
	int rc;
} dl_pgpool_job;

typedef struct dl_pgpool_worker {
	struct dl_pgpool *db;
	pthread_t thread;
	bool started;
	dl_pg *pg;
	int64_t retry_at_ms; /* no connection attempt before this (monotonic) */
} dl_pgpool_worker;

struct dl_pgpool {
	struct event_base *base;
	struct event *done_ev;
	int efd;
	char *dsn;
	dl_pg_options opts;
	char app_name[64];
	pthread_mutex_t mu;
	pthread_cond_t cond;
	dl_pgpool_job *todo_head, *todo_tail; /* queued, not started */
	dl_pgpool_job *done_head, *done_tail; /* finished, completion not run yet */
	size_t queued;                        /* todo list length */
	size_t pending;                       /* submitted, completion not run yet */
	size_t queue_max;
	bool stopping;
	int nworkers;
	dl_pgpool_worker workers[];
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void list_push(dl_pgpool_job **head, dl_pgpool_job **tail, dl_pgpool_job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

static dl_pgpool_job *list_pop(dl_pgpool_job **head, dl_pgpool_job **tail)
{
	dl_pgpool_job *j = *head;

	if (j) {
		*head = j->next;
		if (!*head)
			*tail = NULL;
	}
	return j;
}

/* The connection of w, made on first need; NULL while the database cannot be reached (then
 * the next attempt waits for a backoff so a down database is not hammered by every job). */
static dl_pg *worker_pg(dl_pgpool_worker *w)
{
	char errbuf[256];
	int64_t now = mono_ms();

	if (w->pg)
		return w->pg;
	if (now < w->retry_at_ms)
		return NULL;
	if (dl_pg_connect(w->db->dsn, &w->db->opts, errbuf, sizeof(errbuf), &w->pg) < 0) {
		w->pg = NULL;
		w->retry_at_ms = now + DL_PGPOOL_CONNECT_BACKOFF_MS;
		return NULL;
	}
	return w->pg;
}

static void *worker_main(void *opaque)
{
	dl_pgpool_worker *w = opaque;
	dl_pgpool *db = w->db;
	uint64_t one = 1;

	for (;;) {
		dl_pgpool_job *j;
		dl_pg *pg;

		pthread_mutex_lock(&db->mu);
		while (!db->todo_head && !db->stopping)
			pthread_cond_wait(&db->cond, &db->mu);
		if (db->stopping) {
			/* Jobs not started are cancelled by dl_pgpool_free on the loop. */
			pthread_mutex_unlock(&db->mu);
			break;
		}
		j = list_pop(&db->todo_head, &db->todo_tail);
		db->queued--;
		pthread_mutex_unlock(&db->mu);

		pg = worker_pg(w);
		j->rc = pg ? j->work(pg, j->arg) : -ENOTCONN;

		pthread_mutex_lock(&db->mu);
		list_push(&db->done_head, &db->done_tail, j);
		pthread_mutex_unlock(&db->mu);
		if (write(db->efd, &one, sizeof(one)) < 0) {
			/* The counter cannot overflow in practice; the loop drains the list anyway. */
		}
	}
	dl_pg_free(w->pg);
	w->pg = NULL;
	return NULL;
}

/* Runs the completions of finished jobs on the loop. */
static void run_done(dl_pgpool *db)
{
	dl_pgpool_job *list;

	pthread_mutex_lock(&db->mu);
	list = db->done_head;
	db->done_head = db->done_tail = NULL;
	pthread_mutex_unlock(&db->mu);
	while (list) {
		dl_pgpool_job *j = list;

		list = j->next;
		db->pending--;
		j->done(j->rc, j->arg);
		free(j);
	}
}

static void done_cb(evutil_socket_t fd, short what, void *opaque)
{
	uint64_t n;

	(void)what;
	if (read(fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: another wakeup already drained it; the list is what counts. */
	}
	run_done(opaque);
}

int dl_pgpool_new(struct event_base *base, const char *dsn, const dl_pg_options *opts,
		 int nthreads, size_t queue_max, char *errbuf, size_t errlen, dl_pgpool **ret)
{
	dl_pgpool *db;
	int i, r;

	if (nthreads < 1 || nthreads > DL_PGPOOL_MAX_THREADS || queue_max == 0 || !dsn) {
		snprintf(errbuf, errlen, "database pool: threads must be 1-%d and the queue > 0",
			 DL_PGPOOL_MAX_THREADS);
		return -EINVAL;
	}
	db = calloc(1, sizeof(*db) + (size_t)nthreads * sizeof(db->workers[0]));
	if (!db)
		goto out_nomem;
	db->base = base;
	db->queue_max = queue_max;
	db->efd = -1;
	if (opts)
		db->opts = *opts;
	snprintf(db->app_name, sizeof(db->app_name), "%s",
		 db->opts.application_name ? db->opts.application_name : "driftlock");
	db->opts.application_name = db->app_name;
	db->dsn = strdup(dsn);
	if (!db->dsn)
		goto out_free_db;
	db->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (db->efd < 0) {
		r = -errno;
		snprintf(errbuf, errlen, "database pool: eventfd: %s", strerror(errno));
		goto out_free_fail;
	}
	db->done_ev = event_new(base, db->efd, EV_READ | EV_PERSIST, done_cb, db);
	if (!db->done_ev || event_add(db->done_ev, NULL) < 0)
		goto out_free_db;
	pthread_mutex_init(&db->mu, NULL);
	pthread_cond_init(&db->cond, NULL);
	db->nworkers = nthreads;
	for (i = 0; i < nthreads; i++) {
		db->workers[i].db = db;
		r = pthread_create(&db->workers[i].thread, NULL, worker_main, &db->workers[i]);
		if (r != 0) {
			snprintf(errbuf, errlen, "database pool: cannot start a thread: %s",
				 strerror(r));
			dl_pgpool_free(db);
			return -r;
		}
		db->workers[i].started = true;
	}
	*ret = db;
	return 0;

out_free_db:
	r = -ENOMEM;
	snprintf(errbuf, errlen, "out of memory");
out_free_fail:
	if (db) {
		if (db->done_ev)
			event_free(db->done_ev);
		if (db->efd >= 0)
			close(db->efd);
		free(db->dsn);
		free(db);
	}
	return r;
out_nomem:
	snprintf(errbuf, errlen, "out of memory");
	return -ENOMEM;
}

int dl_pgpool_submit(dl_pgpool *db, dl_pgpool_work_fn work, dl_pgpool_done_fn done, void *arg)
{
	dl_pgpool_job *j;

	if (db->stopping)
		return -ESHUTDOWN;
	if (db->queued >= db->queue_max)
		return -EAGAIN;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->work = work;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&db->mu);
	list_push(&db->todo_head, &db->todo_tail, j);
	db->queued++;
	pthread_cond_signal(&db->cond);
	pthread_mutex_unlock(&db->mu);
	db->pending++;
	return 0;
}

size_t dl_pgpool_pending(const dl_pgpool *db)
{
	return db ? db->pending : 0;
}

void dl_pgpool_free(dl_pgpool *db)
{
	dl_pgpool_job *j;
	int i;

	if (!db)
		return;
	pthread_mutex_lock(&db->mu);
	db->stopping = true;
	pthread_cond_broadcast(&db->cond);
	pthread_mutex_unlock(&db->mu);
	for (i = 0; i < db->nworkers; i++)
		if (db->workers[i].started)
			pthread_join(db->workers[i].thread, NULL);
	/* Finished jobs first (their outcome is known), then the ones that never ran. */
	run_done(db);
	while ((j = list_pop(&db->todo_head, &db->todo_tail))) {
		db->pending--;
		j->done(-ECANCELED, j->arg);
		free(j);
	}
	pthread_cond_destroy(&db->cond);
	pthread_mutex_destroy(&db->mu);
	event_free(db->done_ev);
	close(db->efd);
	free(db->dsn);
	free(db);
}
