/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for det_settings: names and org ids accepted, effective settings, argument checks. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include <event2/event.h>

#include "common/dl_metrics.h"
#include "common/dl_pgpool.h"
#include "services/detector/det_settings.h"

START_TEST(test_stream_names)
{
	char longest[DET_SETTINGS_STREAM_MAX + 2];

	ck_assert(det_settings_stream_valid("web.api"));
	ck_assert(det_settings_stream_valid("a"));
	ck_assert(det_settings_stream_valid("Payments:EU-west_1.v2"));
	ck_assert(!det_settings_stream_valid(NULL));
	ck_assert(!det_settings_stream_valid(""));
	ck_assert(!det_settings_stream_valid("web api"));
	ck_assert(!det_settings_stream_valid("web/api"));
	ck_assert(!det_settings_stream_valid("x\"y"));
	ck_assert(!det_settings_stream_valid("caf\xc3\xa9"));
	memset(longest, 'a', DET_SETTINGS_STREAM_MAX);
	longest[DET_SETTINGS_STREAM_MAX] = '\0';
	ck_assert(det_settings_stream_valid(longest));
	longest[DET_SETTINGS_STREAM_MAX] = 'a';
	longest[DET_SETTINGS_STREAM_MAX + 1] = '\0';
	ck_assert(!det_settings_stream_valid(longest));
}
END_TEST

START_TEST(test_org_ids)
{
	ck_assert(det_settings_org_valid("3f9dafa2-4d62-4edf-a78f-bf6fc088d933"));
	ck_assert(det_settings_org_valid("3F9DAFA2-4D62-4EDF-A78F-BF6FC088D933"));
	ck_assert(!det_settings_org_valid(NULL));
	ck_assert(!det_settings_org_valid(""));
	ck_assert(!det_settings_org_valid("3f9dafa2-4d62-4edf-a78f-bf6fc088d93"));
	ck_assert(!det_settings_org_valid("3f9dafa2-4d62-4edf-a78f-bf6fc088d9333"));
	ck_assert(!det_settings_org_valid("3f9dafa2x4d62-4edf-a78f-bf6fc088d933"));
	ck_assert(!det_settings_org_valid("3f9dafa2-4d62-4edf-a78f-bf6fc088d93g"));
	ck_assert(!det_settings_org_valid("'; DROP TABLE streams; --0000000000"));
}
END_TEST

START_TEST(test_resolve)
{
	cbad_settings s, def;
	char err[256];
	static const char json[] = "{\"window_events\": 64, \"entity_fields\": [\"host\"]}";

	cbad_settings_default(&def);
	/* No stored settings: the defaults with the effective sensitivity. */
	ck_assert_int_eq(det_settings_resolve("{}", 2, 0.8, &s, err, sizeof(err)), 0);
	ck_assert_uint_eq(s.window_events, def.window_events);
	ck_assert_double_eq(s.sensitivity, 0.8);
	ck_assert_int_eq(det_settings_resolve(NULL, 0, 0.5, &s, err, sizeof(err)), 0);
	ck_assert_uint_eq(s.baseline_events, def.baseline_events);

	/* Stored settings applied on the defaults; the sensitivity comes from the column. */
	ck_assert_int_eq(det_settings_resolve(json, strlen(json), 0.25, &s, err, sizeof(err)), 0);
	ck_assert_uint_eq(s.window_events, 64);
	ck_assert_uint_eq(s.nentity_fields, 1);
	ck_assert_str_eq(s.entity_fields[0], "host");
	ck_assert_uint_eq(s.baseline_events, def.baseline_events);
	ck_assert_double_eq(s.sensitivity, 0.25);
}
END_TEST

START_TEST(test_resolve_refused)
{
	cbad_settings s, def;
	char err[256] = "";
	static const char bad[] = "{\"window_events\": 3}";
	static const char unknown[] = "{\"windows\": 64}";

	cbad_settings_default(&def);
	/* Out of range: an error naming the field, and the defaults with the sensitivity. */
	ck_assert_int_eq(det_settings_resolve(bad, strlen(bad), 0.9, &s, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "window_events"));
	ck_assert_uint_eq(s.window_events, def.window_events);
	ck_assert_double_eq(s.sensitivity, 0.9);

	ck_assert_int_eq(det_settings_resolve(unknown, strlen(unknown), 0.5, &s, err, sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(det_settings_resolve("not json", 8, 0.5, &s, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(det_settings_resolve("{}", 2, 1.5, &s, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "sensitivity"));
	ck_assert_double_eq(s.sensitivity, def.sensitivity);
}
END_TEST

typedef struct got {
	int calls, rc;
	bool had_settings;
} got;

static void on_settings(int rc, const char *org_id, const char *stream, const cbad_settings *s,
			double sensitivity, bool paused, void *arg)
{
	got *g = arg;

	(void)org_id;
	(void)stream;
	(void)sensitivity;
	(void)paused;
	g->calls++;
	g->rc = rc;
	g->had_settings = s != NULL;
}

START_TEST(test_arguments)
{
	struct event_base *base = event_base_new();
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_pgpool *pool = NULL;
	det_settings *ds = NULL;
	char err[256];
	got g = { 0 };

	/* The pool connects lazily: no server is needed to check arguments. */
	ck_assert_int_eq(dl_pgpool_new(base, "postgresql://127.0.0.1:1/none", NULL, 1, 4, err,
				       sizeof(err), &pool),
			 0);
	ck_assert_int_eq(det_settings_new(base, pool, m, 50, 2000, &ds, err, sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(det_settings_new(base, pool, m, 20000, 2000, &ds, err, sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(det_settings_new(base, pool, m, 1000, 0, &ds, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(ds);
	ck_assert_int_eq(det_settings_new(base, pool, m, 1000, 2000, &ds, err, sizeof(err)), 0);

	/* Bad identities are refused at once, without a query. */
	det_settings_get(ds, "not-a-uuid", "web.api", on_settings, &g);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_int_eq(g.rc, -EINVAL);
	ck_assert(!g.had_settings);
	det_settings_get(ds, "3f9dafa2-4d62-4edf-a78f-bf6fc088d933", "web api", on_settings, &g);
	ck_assert_int_eq(g.calls, 2);
	ck_assert_int_eq(g.rc, -EINVAL);
	ck_assert_uint_eq(det_settings_pending(ds), 0);

	/* Status of an invalid stream is not buffered; a valid one is, once per stream. */
	cbad_status st = { .calibrating = true, .progress = 0.5, .events_seen = 10 };
	det_settings_status(ds, "3f9dafa2-4d62-4edf-a78f-bf6fc088d933", "bad name", &st, 1);
	ck_assert_uint_eq(det_settings_pending(ds), 0);
	det_settings_status(ds, "3f9dafa2-4d62-4edf-a78f-bf6fc088d933", "web.api", &st, 1);
	det_settings_status(ds, "3F9DAFA2-4D62-4EDF-A78F-BF6FC088D933", "web.api", &st, 2);
	ck_assert_uint_eq(det_settings_pending(ds), 1);

	det_settings_free(ds);
	det_settings_free(NULL);
	dl_pgpool_free(pool);
	dl_metrics_registry_free(m);
	event_base_free(base);
}
END_TEST

static Suite *det_settings_suite(void)
{
	Suite *s = suite_create("det_settings");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_stream_names);
	tcase_add_test(tc, test_org_ids);
	tcase_add_test(tc, test_resolve);
	tcase_add_test(tc, test_resolve_refused);
	tcase_add_test(tc, test_arguments);
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
	return failed ? 1 : 0;
}
