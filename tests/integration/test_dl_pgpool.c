/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for dl_pgpool: jobs on the pool's own connections, completions on the loop. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/dl_pgpool.h"
#include "tests/support/dl_itest.h"

typedef struct job {
	pthread_t worker;   /* the thread that ran the work */
	pthread_t done_on;  /* the thread that ran the completion */
	int rc;
	int done;
	char value[64];
	int *remaining;
	struct event_base *base;
} job;

static int work_select(dl_pg *pg, void *arg)
{
	job *j = arg;
	PGresult *res = NULL;
	char errbuf[256];
	int r;

	j->worker = pthread_self();
	r = dl_pg_prepare(pg, "itest_db_select", "SELECT $1::int + 1", 1, errbuf, sizeof(errbuf));
	if (r < 0)
		return r;
	r = dl_pg_exec(pg, "itest_db_select", 1, (const char *const[]){ "41" }, &res, errbuf,
		       sizeof(errbuf));
	if (r < 0)
		return r;
	snprintf(j->value, sizeof(j->value), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return 0;
}

static int work_sleep(dl_pg *pg, void *arg)
{
	char errbuf[256];

	(void)arg;
	if (dl_pg_prepare(pg, "itest_db_sleep", "SELECT pg_sleep(0.3)", 0, errbuf,
			  sizeof(errbuf)) < 0)
		return -EIO;
	return dl_pg_exec(pg, "itest_db_sleep", 0, NULL, NULL, errbuf, sizeof(errbuf));
}

static void job_done(int rc, void *arg)
{
	job *j = arg;

	j->rc = rc;
	j->done++;
	j->done_on = pthread_self();
	if (--*j->remaining == 0)
		event_base_loopbreak(j->base);
}

/* 64 jobs over 4 connections: each completes once, on the loop thread, with its result. */
START_TEST(test_db_jobs_complete_on_loop)
{
	struct event_base *base = event_base_new();
	dl_pgpool *db = NULL;
	char errbuf[256];
	job jobs[64];
	int remaining = 64, i;

	memset(jobs, 0, sizeof(jobs));
	ck_assert_int_eq(dl_pgpool_new(base, dl_itest_env("DRIFTLOCK_PG_DSN_INGEST"), NULL, 4, 128,
				       errbuf, sizeof(errbuf), &db),
			 0);
	for (i = 0; i < 64; i++) {
		jobs[i].remaining = &remaining;
		jobs[i].base = base;
		ck_assert_int_eq(dl_pgpool_submit(db, work_select, job_done, &jobs[i]), 0);
	}
	ck_assert_uint_eq(dl_pgpool_pending(db), 64);
	event_base_dispatch(base);
	for (i = 0; i < 64; i++) {
		ck_assert_int_eq(jobs[i].done, 1);
		ck_assert_int_eq(jobs[i].rc, 0);
		ck_assert_str_eq(jobs[i].value, "42");
		ck_assert(pthread_equal(jobs[i].done_on, pthread_self()));
		ck_assert(!pthread_equal(jobs[i].worker, pthread_self()));
	}
	ck_assert_uint_eq(dl_pgpool_pending(db), 0);
	dl_pgpool_free(db);
	event_base_free(base);
}
END_TEST

/* A full queue refuses at once; freeing the pool cancels what never ran, exactly once each. */
START_TEST(test_db_queue_full_and_cancel)
{
	struct event_base *base = event_base_new();
	dl_pgpool *db = NULL;
	char errbuf[256];
	job jobs[8];
	int remaining = 1000, i, accepted = 0, refused = 0, cancelled = 0, ran = 0;

	memset(jobs, 0, sizeof(jobs));
	ck_assert_int_eq(dl_pgpool_new(base, dl_itest_env("DRIFTLOCK_PG_DSN_INGEST"), NULL, 1, 3,
				       errbuf, sizeof(errbuf), &db),
			 0);
	for (i = 0; i < 8; i++) {
		jobs[i].remaining = &remaining;
		jobs[i].base = base;
		if (dl_pgpool_submit(db, work_sleep, job_done, &jobs[i]) == 0)
			accepted++;
		else
			refused++;
	}
	/* One may already be running on the single worker: 3 or 4 accepted. */
	ck_assert_int_ge(accepted, 3);
	ck_assert_int_le(accepted, 4);
	ck_assert_int_eq(accepted + refused, 8);
	dl_pgpool_free(db);
	for (i = 0; i < 8; i++) {
		ck_assert_int_le(jobs[i].done, 1);
		if (jobs[i].done && jobs[i].rc == -ECANCELED)
			cancelled++;
		else if (jobs[i].done)
			ran++;
	}
	ck_assert_int_eq(cancelled + ran, accepted);
	ck_assert_int_ge(cancelled, 1);
	event_base_free(base);
}
END_TEST

/* A database that cannot be reached fails jobs with -ENOTCONN instead of blocking. */
START_TEST(test_db_unreachable)
{
	struct event_base *base = event_base_new();
	dl_pgpool *db = NULL;
	char errbuf[256], dsn[128];
	job j;
	int remaining = 1;

	memset(&j, 0, sizeof(j));
	j.remaining = &remaining;
	j.base = base;
	snprintf(dsn, sizeof(dsn), "postgresql://nobody@127.0.0.1:%d/none?connect_timeout=2",
		 dl_itest_free_port());
	ck_assert_int_eq(dl_pgpool_new(base, dsn, NULL, 1, 4, errbuf, sizeof(errbuf), &db), 0);
	ck_assert_int_eq(dl_pgpool_submit(db, work_select, job_done, &j), 0);
	event_base_dispatch(base);
	ck_assert_int_eq(j.done, 1);
	ck_assert_int_eq(j.rc, -ENOTCONN);
	dl_pgpool_free(db);
	event_base_free(base);
}
END_TEST

static Suite *dl_pgpool_suite(void)
{
	Suite *s = suite_create("dl_pgpool");
	TCase *tc = tcase_create("pool");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_db_jobs_complete_on_loop);
	tcase_add_test(tc, test_db_queue_full_and_cancel);
	tcase_add_test(tc, test_db_unreachable);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dl_pgpool_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
