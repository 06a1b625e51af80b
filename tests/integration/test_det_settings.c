/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for det_settings: registration, live settings changes and batched status,
 * against the real PostgreSQL with the detector's own role. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/dl_metrics.h"
#include "common/dl_pgpool.h"
#include "services/detector/det_settings.h"
#include "tests/support/dl_itest.h"

#define MAX_SEEN 32

typedef struct seen {
	int rc;
	char org[37], stream[160];
	cbad_settings s;
	double sensitivity;
	bool paused;
} seen;

typedef struct fixture {
	struct event_base *base;
	dl_metrics_registry *m;
	dl_pgpool *pool;
	det_settings *ds;
	seen gets[MAX_SEEN];
	int ngets;
	seen changes[MAX_SEEN];
	int nchanges;
} fixture;

static void record(seen *v, int *n, int rc, const char *org, const char *stream,
		   const cbad_settings *s, double sensitivity, bool paused)
{
	seen *x;

	ck_assert_int_lt(*n, MAX_SEEN);
	x = &v[(*n)++];
	memset(x, 0, sizeof(*x));
	x->rc = rc;
	snprintf(x->org, sizeof(x->org), "%s", org);
	snprintf(x->stream, sizeof(x->stream), "%s", stream);
	if (s)
		x->s = *s;
	x->sensitivity = sensitivity;
	x->paused = paused;
}

static void on_get(int rc, const char *org, const char *stream, const cbad_settings *s,
		   double sensitivity, bool paused, void *arg)
{
	fixture *f = arg;

	record(f->gets, &f->ngets, rc, org, stream, s, sensitivity, paused);
}

static void on_change(int rc, const char *org, const char *stream, const cbad_settings *s,
		      double sensitivity, bool paused, void *arg)
{
	fixture *f = arg;

	record(f->changes, &f->nchanges, rc, org, stream, s, sensitivity, paused);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the loop until *counter reaches want or timeout_ms passed; returns the ms it took. */
static int64_t spin_until(fixture *f, const int *counter, int want, int64_t timeout_ms)
{
	int64_t t0 = mono_ms();

	/* det_settings' own timers wake the loop at least every poll interval. */
	while (*counter < want && mono_ms() - t0 < timeout_ms)
		event_base_loop(f->base, EVLOOP_ONCE);
	return mono_ms() - t0;
}

/* Runs the loop for ms milliseconds. */
static void spin_for(fixture *f, int64_t ms)
{
	int64_t t0 = mono_ms();

	while (mono_ms() - t0 < ms)
		event_base_loop(f->base, EVLOOP_ONCE);
}

static void fixture_start(fixture *f)
{
	char err[256];

	memset(f, 0, sizeof(*f));
	f->base = event_base_new();
	f->m = dl_metrics_registry_new();
	ck_assert_int_eq(dl_pgpool_new(f->base, dl_itest_env("DRIFTLOCK_PG_DSN_DETECTOR"), NULL,
				       2, 64, err, sizeof(err), &f->pool),
			 0);
	ck_assert_msg(det_settings_new(f->base, f->pool, f->m, 200, 300, &f->ds, err,
				       sizeof(err)) == 0,
		      "%s", err);
	det_settings_on_change(f->ds, on_change, f);
}

static void fixture_stop(fixture *f)
{
	det_settings_free(f->ds);
	dl_pgpool_free(f->pool);
	dl_metrics_registry_free(f->m);
	event_base_free(f->base);
}

static void new_org(double sensitivity, char org[37])
{
	char sens[32];

	snprintf(sens, sizeof(sens), "%.2f", sensitivity);
	ck_assert_int_eq(dl_itest_sql("INSERT INTO organizations (name, sensitivity) "
				      "VALUES ('det_settings itest', $1::float8) RETURNING id",
				      (const char *const[]){ sens, NULL }, org, 37),
			 1);
}

static void stream_col(const char *org, const char *stream, const char *expr, char *out,
		       size_t len)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "SELECT %s FROM streams WHERE org_id = $1::uuid AND name = $2",
		 expr);
	ck_assert_int_eq(dl_itest_sql(sql, (const char *const[]){ org, stream, NULL }, out, len),
			 1);
}

/* A stream seen for the first time is registered with its org's defaults; known streams are
 * read with their stored settings; unknown orgs are refused. */
START_TEST(test_register_and_read)
{
	fixture f;
	char org[37], other[37], v[64];
	cbad_settings def;

	cbad_settings_default(&def);
	fixture_start(&f);
	new_org(0.3, org);
	new_org(0.5, other);
	ck_assert_int_eq(dl_itest_sql("INSERT INTO streams (org_id, name, sensitivity, settings) "
				      "VALUES ($1::uuid, 'configured', 0.9, "
				      "'{\"window_events\": 64}')",
				      (const char *const[]){ other, NULL }, NULL, 0),
			 1);

	det_settings_get(f.ds, org, "web.api", on_get, &f);
	det_settings_get(f.ds, other, "configured", on_get, &f);
	det_settings_get(f.ds, "00000000-0000-4000-8000-000000000001", "web.api", on_get, &f);
	spin_until(&f, &f.ngets, 3, 10000);
	ck_assert_int_eq(f.ngets, 3);
	for (int i = 0; i < 3; i++) {
		seen *g = &f.gets[i];

		if (!strcmp(g->org, org)) {
			ck_assert_int_eq(g->rc, 0);
			ck_assert_double_eq_tol(g->sensitivity, 0.3, 1e-9);
			ck_assert_double_eq_tol(g->s.sensitivity, 0.3, 1e-9);
			ck_assert_uint_eq(g->s.window_events, def.window_events);
			ck_assert(!g->paused);
		} else if (!strcmp(g->org, other)) {
			ck_assert_int_eq(g->rc, 0);
			ck_assert_double_eq_tol(g->sensitivity, 0.9, 1e-9);
			ck_assert_uint_eq(g->s.window_events, 64);
		} else {
			ck_assert_int_eq(g->rc, -ENOENT);
		}
	}
	/* The row exists now, as the read API shows it. */
	stream_col(org, "web.api", "status || ' ' || events_seen", v, sizeof(v));
	ck_assert_str_eq(v, "calibrating 0");
	/* Registering again is a read, not a second row or an error. */
	det_settings_get(f.ds, org, "web.api", on_get, &f);
	spin_until(&f, &f.ngets, 4, 10000);
	ck_assert_int_eq(f.gets[3].rc, 0);
	ck_assert_int_eq(dl_itest_sql("SELECT 1 FROM streams WHERE org_id = $1::uuid",
				      (const char *const[]){ org, NULL }, NULL, 0),
			 1);
	ck_assert_int_eq(f.nchanges, 0);
	fixture_stop(&f);
}
END_TEST

/* Changes made as the API makes them (the stream's settings and sensitivity, the org's
 * sensitivity, pause) reach the watched stream within the poll interval; unwatched and
 * forgotten streams get nothing. */
START_TEST(test_changes_applied_live)
{
	fixture f;
	char org[37];
	int64_t took;

	fixture_start(&f);
	new_org(0.5, org);
	det_settings_get(f.ds, org, "live", on_get, &f);
	det_settings_get(f.ds, org, "forgotten", on_get, &f);
	spin_until(&f, &f.ngets, 2, 10000);
	ck_assert_int_eq(f.gets[0].rc, 0);
	ck_assert_int_eq(f.gets[1].rc, 0);
	det_settings_forget(f.ds, org, "forgotten");

	/* The stream's own settings and sensitivity. */
	ck_assert_int_eq(dl_itest_sql("UPDATE streams SET settings = '{\"window_events\": 32, "
				      "\"entity_fields\": [\"host\"]}', sensitivity = 0.8 "
				      "WHERE org_id = $1::uuid AND name IN ('live', 'forgotten')",
				      (const char *const[]){ org, NULL }, NULL, 0),
			 2);
	took = spin_until(&f, &f.nchanges, 1, 10000);
	ck_assert_int_eq(f.nchanges, 1);
	ck_assert_msg(took < 3000, "the change took %lld ms", (long long)took);
	ck_assert_int_eq(f.changes[0].rc, 0);
	ck_assert_str_eq(f.changes[0].stream, "live");
	ck_assert_uint_eq(f.changes[0].s.window_events, 32);
	ck_assert_str_eq(f.changes[0].s.entity_fields[0], "host");
	ck_assert_double_eq_tol(f.changes[0].sensitivity, 0.8, 1e-9);

	/* Delivered once: the overlap re-reads the row but it did not change again. */
	spin_for(&f, 1500);
	ck_assert_int_eq(f.nchanges, 1);

	/* Back to the org's sensitivity, then the org's sensitivity changes. */
	ck_assert_int_eq(dl_itest_sql("UPDATE streams SET sensitivity = NULL "
				      "WHERE org_id = $1::uuid AND name = 'live'",
				      (const char *const[]){ org, NULL }, NULL, 0),
			 1);
	spin_until(&f, &f.nchanges, 2, 10000);
	ck_assert_int_eq(f.nchanges, 2);
	ck_assert_double_eq_tol(f.changes[1].sensitivity, 0.5, 1e-9);
	ck_assert_int_eq(dl_itest_sql("UPDATE organizations SET sensitivity = 0.65 "
				      "WHERE id = $1::uuid",
				      (const char *const[]){ org, NULL }, NULL, 0),
			 1);
	spin_until(&f, &f.nchanges, 3, 10000);
	ck_assert_int_eq(f.nchanges, 3);
	ck_assert_double_eq_tol(f.changes[2].sensitivity, 0.65, 1e-9);
	ck_assert_uint_eq(f.changes[2].s.window_events, 32);

	/* Pause. */
	ck_assert_int_eq(dl_itest_sql("UPDATE streams SET status = 'paused' "
				      "WHERE org_id = $1::uuid AND name = 'live'",
				      (const char *const[]){ org, NULL }, NULL, 0),
			 1);
	spin_until(&f, &f.nchanges, 4, 10000);
	ck_assert_int_eq(f.nchanges, 4);
	ck_assert(f.changes[3].paused);
	fixture_stop(&f);
}
END_TEST

/* Status is written in batches for streams of several orgs, never moves counters backwards,
 * keeps a paused stream paused, and does not look like a settings change. */
START_TEST(test_status_batches)
{
	fixture f;
	char a[37], b[37], v[128];
	cbad_status st = { .calibrating = true, .progress = 0.4, .events_seen = 400 };
	const char *flushes[2] = { "ok" };
	double ok = 0;
	dl_metric *mf;

	fixture_start(&f);
	new_org(0.5, a);
	new_org(0.5, b);
	det_settings_get(f.ds, a, "s1", on_get, &f);
	det_settings_get(f.ds, a, "s2", on_get, &f);
	det_settings_get(f.ds, b, "s1", on_get, &f);
	spin_until(&f, &f.ngets, 3, 10000);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(f.gets[i].rc, 0);

	/* Many updates per stream between flushes: the last one is written. */
	for (int i = 0; i < 100; i++) {
		st.events_seen = 301 + (uint64_t)i;
		det_settings_status(f.ds, a, "s1", &st, 1790000000000 + i);
	}
	det_settings_status(f.ds, b, "s1", &st, 1790000000000);
	st.calibrating = false;
	st.events_seen = 5000;
	det_settings_status(f.ds, a, "s2", &st, 1790000123456);
	ck_assert_uint_ge(det_settings_pending(f.ds), 3);
	det_settings_flush(f.ds);
	while (det_settings_pending(f.ds) > 0)
		event_base_loop(f.base, EVLOOP_ONCE);

	stream_col(a, "s1", "status || ' ' || calibration_progress || ' ' || events_seen || ' ' "
		   "|| (extract(epoch FROM last_event_at) * 1000)::bigint", v, sizeof(v));
	ck_assert_str_eq(v, "calibrating 0.4 400 1790000000099");
	stream_col(b, "s1", "status || ' ' || events_seen", v, sizeof(v));
	ck_assert_str_eq(v, "calibrating 400");
	stream_col(a, "s2", "status || ' ' || calibration_progress || ' ' || events_seen", v,
		   sizeof(v));
	ck_assert_str_eq(v, "active 1 5000");
	mf = dl_metrics_counter(f.m, "driftlock_detector_status_flushes_total", NULL, 1, "result");
	ck_assert_int_eq(dl_metric_get(mf, flushes, &ok), 0);
	ck_assert_double_eq(ok, 1);

	/* A replay from an older snapshot reports fewer events: the count does not go back. A
	 * paused stream stays paused. */
	ck_assert_int_eq(dl_itest_sql("UPDATE streams SET status = 'paused' "
				      "WHERE org_id = $1::uuid AND name = 's2'",
				      (const char *const[]){ a, NULL }, NULL, 0),
			 1);
	spin_until(&f, &f.nchanges, 1, 10000);
	ck_assert_int_eq(f.nchanges, 1);
	ck_assert(f.changes[0].paused);
	st.events_seen = 10;
	det_settings_status(f.ds, a, "s2", &st, -1);
	det_settings_flush(f.ds);
	while (det_settings_pending(f.ds) > 0)
		event_base_loop(f.base, EVLOOP_ONCE);
	stream_col(a, "s2", "status || ' ' || events_seen || ' ' "
		   "|| (extract(epoch FROM last_event_at) * 1000)::bigint", v, sizeof(v));
	ck_assert_str_eq(v, "paused 5000 1790000123456");

	/* None of these writes was delivered as a settings change. */
	spin_for(&f, 1000);
	ck_assert_int_eq(f.nchanges, 1);
	fixture_stop(&f);
}
END_TEST

static Suite *det_settings_suite(void)
{
	Suite *s = suite_create("det_settings");
	TCase *tc = tcase_create("postgres");

	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_register_and_read);
	tcase_add_test(tc, test_changes_applied_live);
	tcase_add_test(tc, test_status_batches);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(det_settings_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
