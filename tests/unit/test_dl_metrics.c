/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for dl_metrics: exposition text, validation, cardinality bounds and concurrency. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dl_metrics.h"

#define DROPPED_HEAD                                                                         \
	"# HELP dl_metrics_dropped_total Metric updates dropped by the registry (too many label " \
	"combinations or invalid updates).\n"                                                     \
	"# TYPE dl_metrics_dropped_total counter\n"

static char *render(dl_metrics_registry *reg)
{
	char *text = NULL;
	size_t len = 0;

	ck_assert_int_eq(dl_metrics_render(reg, &text, &len), 0);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(len, strlen(text));
	return text;
}

static double dropped(dl_metrics_registry *reg)
{
	dl_metric *d = dl_metrics_counter(reg, "dl_metrics_dropped_total", NULL, 0);
	double v = -1;

	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(dl_metric_get(d, NULL, &v), 0);
	return v;
}

START_TEST(test_empty_registry)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	char *text;

	ck_assert_ptr_nonnull(reg);
	text = render(reg);
	ck_assert_str_eq(text, DROPPED_HEAD "dl_metrics_dropped_total 0\n");
	free(text);
	dl_metrics_registry_free(reg);
	dl_metrics_registry_free(NULL);
}
END_TEST

START_TEST(test_counter_and_gauge_exposition)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	dl_metric *req = dl_metrics_counter(reg, "http_requests_total", "Requests served.", 2,
					    "method", "code");
	dl_metric *depth = dl_metrics_gauge(reg, "queue_depth", "Items waiting.", 0);
	dl_metric *empty = dl_metrics_gauge(reg, "lag_seconds", "Consumer lag.", 1, "partition");
	const char *get200[] = { "GET", "200" };
	const char *post500[] = { "POST", "500" };
	char *text;
	double v;

	ck_assert_ptr_nonnull(req);
	ck_assert_ptr_nonnull(depth);
	ck_assert_ptr_nonnull(empty);
	dl_metric_inc(req, get200, 1);
	dl_metric_inc(req, post500, 1);
	dl_metric_inc(req, get200, 1);
	dl_metric_set(depth, NULL, 3.5);
	dl_metric_inc(depth, NULL, -1);
	text = render(reg);
	ck_assert_str_eq(text, DROPPED_HEAD "dl_metrics_dropped_total 0\n"
			       "# HELP http_requests_total Requests served.\n"
			       "# TYPE http_requests_total counter\n"
			       "http_requests_total{method=\"GET\",code=\"200\"} 2\n"
			       "http_requests_total{method=\"POST\",code=\"500\"} 1\n"
			       "# HELP queue_depth Items waiting.\n"
			       "# TYPE queue_depth gauge\n"
			       "queue_depth 2.5\n"
			       "# HELP lag_seconds Consumer lag.\n"
			       "# TYPE lag_seconds gauge\n");
	free(text);
	ck_assert_int_eq(dl_metric_get(req, get200, &v), 0);
	ck_assert_double_eq(v, 2);
	ck_assert_int_eq(dl_metric_get(req, (const char *[]){ "PUT", "200" }, &v), -ENOENT);
	ck_assert_int_eq(dl_metric_get(req, NULL, &v), -EINVAL);
	ck_assert_int_eq(dl_metric_get(NULL, NULL, &v), -ENOENT);
	ck_assert_double_eq(v, 2);
	dl_metrics_registry_free(reg);
}
END_TEST

START_TEST(test_histogram_exposition)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	static const double buckets[] = { 0.25, 0.5, 1 };
	dl_metric *h = dl_metrics_histogram(reg, "req_seconds", "Latency.", buckets, 3, 1, "route");
	dl_metric *plain = dl_metrics_histogram(reg, "batch_size", NULL, buckets, 3, 0);
	const char *ev[] = { "/v1/events" };
	char *text;
	double v;

	ck_assert_ptr_nonnull(h);
	ck_assert_ptr_nonnull(plain);
	dl_metric_observe(h, ev, 0.125);
	dl_metric_observe(h, ev, 0.25); /* upper bounds are inclusive */
	dl_metric_observe(h, ev, 0.75);
	dl_metric_observe(h, ev, 3);
	text = render(reg);
	ck_assert_str_eq(text, DROPPED_HEAD "dl_metrics_dropped_total 0\n"
			       "# HELP req_seconds Latency.\n"
			       "# TYPE req_seconds histogram\n"
			       "req_seconds_bucket{route=\"/v1/events\",le=\"0.25\"} 2\n"
			       "req_seconds_bucket{route=\"/v1/events\",le=\"0.5\"} 2\n"
			       "req_seconds_bucket{route=\"/v1/events\",le=\"1\"} 3\n"
			       "req_seconds_bucket{route=\"/v1/events\",le=\"+Inf\"} 4\n"
			       "req_seconds_sum{route=\"/v1/events\"} 4.125\n"
			       "req_seconds_count{route=\"/v1/events\"} 4\n"
			       "# TYPE batch_size histogram\n"
			       "batch_size_bucket{le=\"0.25\"} 0\n"
			       "batch_size_bucket{le=\"0.5\"} 0\n"
			       "batch_size_bucket{le=\"1\"} 0\n"
			       "batch_size_bucket{le=\"+Inf\"} 0\n"
			       "batch_size_sum 0\n"
			       "batch_size_count 0\n");
	free(text);
	ck_assert_int_eq(dl_metric_get(h, ev, &v), 0);
	ck_assert_double_eq(v, 4);
	dl_metrics_registry_free(reg);
}
END_TEST

START_TEST(test_default_buckets)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	dl_metric *h = dl_metrics_histogram(reg, "op_seconds", "Op time.", NULL, 0, 0);
	char *text;

	ck_assert_ptr_nonnull(h);
	dl_metric_observe(h, NULL, 0.3);
	text = render(reg);
	ck_assert_ptr_nonnull(strstr(text,
		"op_seconds_bucket{le=\"0.005\"} 0\n"
		"op_seconds_bucket{le=\"0.01\"} 0\n"
		"op_seconds_bucket{le=\"0.025\"} 0\n"
		"op_seconds_bucket{le=\"0.05\"} 0\n"
		"op_seconds_bucket{le=\"0.1\"} 0\n"
		"op_seconds_bucket{le=\"0.25\"} 0\n"
		"op_seconds_bucket{le=\"0.5\"} 1\n"
		"op_seconds_bucket{le=\"1\"} 1\n"
		"op_seconds_bucket{le=\"2.5\"} 1\n"
		"op_seconds_bucket{le=\"5\"} 1\n"
		"op_seconds_bucket{le=\"10\"} 1\n"
		"op_seconds_bucket{le=\"+Inf\"} 1\n"
		"op_seconds_sum 0.3\n"
		"op_seconds_count 1\n"));
	free(text);
	dl_metrics_registry_free(reg);
}
END_TEST

START_TEST(test_escaping_and_values)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	dl_metric *g = dl_metrics_gauge(reg, "ns:odd_value", "Help with \\ and\nnewline \"quoted\".",
					1, "v");
	char *text;

	ck_assert_ptr_nonnull(g);
	dl_metric_set(g, (const char *[]){ "a\"b\\c\nd" }, 0.1);
	dl_metric_set(g, (const char *[]){ "third" }, 1.0 / 3.0);
	dl_metric_set(g, (const char *[]){ "big" }, 1e20);
	dl_metric_set(g, (const char *[]){ "neg" }, -42);
	dl_metric_set(g, (const char *[]){ "inf" }, INFINITY);
	dl_metric_set(g, (const char *[]){ "utf8" }, -0.0);
	dl_metric_set(g, (const char *[]){ "caf\xc3\xa9" }, 1234567890123.0);
	text = render(reg);
	ck_assert_str_eq(text, DROPPED_HEAD "dl_metrics_dropped_total 0\n"
			       "# HELP ns:odd_value Help with \\\\ and\\nnewline \"quoted\".\n"
			       "# TYPE ns:odd_value gauge\n"
			       "ns:odd_value{v=\"a\\\"b\\\\c\\nd\"} 0.1\n"
			       "ns:odd_value{v=\"third\"} 0.3333333333333333\n"
			       "ns:odd_value{v=\"big\"} 1e+20\n"
			       "ns:odd_value{v=\"neg\"} -42\n"
			       "ns:odd_value{v=\"inf\"} +Inf\n"
			       "ns:odd_value{v=\"utf8\"} 0\n"
			       "ns:odd_value{v=\"caf\xc3\xa9\"} 1234567890123\n");
	free(text);
	dl_metrics_registry_free(reg);
}
END_TEST

START_TEST(test_validation_and_duplicates)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	static const double good[] = { 1, 2 };
	static const double unsorted[] = { 2, 1 };
	static const double equal[] = { 1, 1 };
	const double with_nan[] = { 1, NAN };
	const double with_inf[] = { 1, INFINITY };
	dl_metric *c, *h;

	ck_assert_ptr_null(dl_metrics_counter(NULL, "x_total", "x", 0));
	ck_assert_ptr_null(dl_metrics_counter(reg, "bad-name", "x", 0));
	ck_assert_ptr_null(dl_metrics_counter(reg, "1abc", "x", 0));
	ck_assert_ptr_null(dl_metrics_counter(reg, "", "x", 0));
	ck_assert_ptr_null(dl_metrics_counter(reg, NULL, "x", 0));
	ck_assert_ptr_null(dl_metrics_counter(reg, "a_total", "x", 1, "__reserved"));
	ck_assert_ptr_null(dl_metrics_counter(reg, "a_total", "x", 1, "a-b"));
	ck_assert_ptr_null(dl_metrics_counter(reg, "a_total", "x", 1, "a:b"));
	ck_assert_ptr_null(dl_metrics_counter(reg, "a_total", "x", 1, "9a"));
	ck_assert_ptr_null(dl_metrics_counter(reg, "a_total", "x", 2, "org", "org"));
	ck_assert_ptr_null(dl_metrics_counter(reg, "a_total", "x", 5, "a", "b", "c", "d", "e"));
	ck_assert_ptr_null(dl_metrics_histogram(reg, "h", "x", good, 2, 1, "le"));
	ck_assert_ptr_null(dl_metrics_histogram(reg, "h", "x", unsorted, 2, 0));
	ck_assert_ptr_null(dl_metrics_histogram(reg, "h", "x", equal, 2, 0));
	ck_assert_ptr_null(dl_metrics_histogram(reg, "h", "x", with_nan, 2, 0));
	ck_assert_ptr_null(dl_metrics_histogram(reg, "h", "x", with_inf, 2, 0));
	ck_assert_ptr_null(dl_metrics_histogram(reg, "h", "x", good, 0, 0));

	c = dl_metrics_counter(reg, "a_total", "x", 4, "le", "b", "c", "d");
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_eq(dl_metrics_counter(reg, "a_total", "other help", 4, "le", "b", "c", "d"), c);
	ck_assert_ptr_null(dl_metrics_gauge(reg, "a_total", "x", 4, "le", "b", "c", "d"));
	ck_assert_ptr_null(dl_metrics_counter(reg, "a_total", "x", 4, "le", "b", "c", "e"));
	ck_assert_ptr_null(dl_metrics_counter(reg, "a_total", "x", 0));
	h = dl_metrics_histogram(reg, "h", "x", good, 2, 0);
	ck_assert_ptr_nonnull(h);
	ck_assert_ptr_eq(dl_metrics_histogram(reg, "h", "x", good, 2, 0), h);
	ck_assert_ptr_null(dl_metrics_histogram(reg, "h", "x", good, 1, 0));
	ck_assert_ptr_null(dl_metrics_histogram(reg, "h", "x", NULL, 0, 0));
	dl_metrics_registry_free(reg);
}
END_TEST

START_TEST(test_invalid_updates_dropped)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	dl_metric *c = dl_metrics_counter(reg, "c_total", "x", 1, "org");
	dl_metric *g = dl_metrics_gauge(reg, "g", "x", 0);
	dl_metric *h = dl_metrics_histogram(reg, "h", "x", NULL, 0, 0);
	const char *org[] = { "o1" };
	const char *null_value[] = { NULL };
	double v;

	dl_metric_inc(c, org, -1);        /* counters never go down */
	dl_metric_inc(c, org, NAN);
	dl_metric_inc(c, org, INFINITY);
	dl_metric_inc(c, NULL, 1);        /* labels missing */
	dl_metric_inc(c, null_value, 1);
	dl_metric_set(c, org, 5);         /* set is for gauges */
	dl_metric_observe(g, NULL, 1);    /* observe is for histograms */
	dl_metric_set(g, NULL, NAN);
	dl_metric_inc(h, NULL, 1);
	dl_metric_observe(h, NULL, NAN);
	dl_metric_inc(NULL, NULL, 1);     /* no-op, not counted */
	ck_assert_double_eq(dropped(reg), 10);
	ck_assert_int_eq(dl_metric_get(c, org, &v), -ENOENT);
	dl_metric_inc(c, org, 0.5);
	ck_assert_int_eq(dl_metric_get(c, org, &v), 0);
	ck_assert_double_eq(v, 0.5);
	dl_metrics_registry_free(reg);
}
END_TEST

START_TEST(test_children_bounded)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	dl_metric *c = dl_metrics_counter(reg, "by_stream_total", "x", 1, "stream");
	char name[32];
	const char *lv[] = { name };
	char *text;
	double v;
	size_t lines = 0;

	for (int i = 0; i < DL_METRICS_MAX_CHILDREN; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		dl_metric_inc(c, lv, 1);
	}
	ck_assert_double_eq(dropped(reg), 0);
	snprintf(name, sizeof(name), "one-too-many");
	dl_metric_inc(c, lv, 1);
	dl_metric_inc(c, lv, 1);
	ck_assert_double_eq(dropped(reg), 2);
	ck_assert_int_eq(dl_metric_get(c, lv, &v), -ENOENT);
	/* Existing children keep counting. */
	snprintf(name, sizeof(name), "s7");
	dl_metric_inc(c, lv, 1);
	ck_assert_int_eq(dl_metric_get(c, lv, &v), 0);
	ck_assert_double_eq(v, 2);
	text = render(reg);
	for (const char *p = text; (p = strstr(p, "by_stream_total{")); p++)
		lines++;
	ck_assert_uint_eq(lines, DL_METRICS_MAX_CHILDREN);
	ck_assert_ptr_nonnull(strstr(text, "dl_metrics_dropped_total 2\n"));
	ck_assert_ptr_nonnull(strstr(text, "by_stream_total{stream=\"s7\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(text, "by_stream_total{stream=\"s999\"} 1\n"));
	free(text);
	dl_metrics_registry_free(reg);
}
END_TEST

enum { THREADS = 8, ITERATIONS = 100000 };

struct worker_arg {
	dl_metric *total, *by_thread, *hist, *gauge;
	dl_metrics_registry *reg;
	size_t id;
};

static void *worker(void *p)
{
	struct worker_arg *a = p;
	char id[8];
	const char *lv[] = { id, "shared" };

	snprintf(id, sizeof(id), "t%zu", a->id);
	for (int i = 0; i < ITERATIONS; i++) {
		dl_metric_inc(a->total, NULL, 1);
		dl_metric_inc(a->by_thread, lv, 1);
		dl_metric_observe(a->hist, NULL, (i % 2) ? 0.5 : 2);
		dl_metric_inc(a->gauge, NULL, (i % 2) ? 1 : -1);
		if (i % 10000 == 0) {
			char *text = NULL;

			if (dl_metrics_render(a->reg, &text, NULL) == 0)
				free(text);
		}
	}
	return NULL;
}

START_TEST(test_concurrent_updates_exact)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	static const double buckets[] = { 1 };
	struct worker_arg args[THREADS];
	pthread_t th[THREADS];
	char id[8];
	const char *lv[] = { id, "shared" };
	char *text;
	char expect[256];
	double v;

	for (size_t t = 0; t < THREADS; t++) {
		args[t] = (struct worker_arg){
			.total = dl_metrics_counter(reg, "events_total", "x", 0),
			.by_thread = dl_metrics_counter(reg, "by_thread_total", "x", 2, "thread", "kind"),
			.hist = dl_metrics_histogram(reg, "sizes", "x", buckets, 1, 0),
			.gauge = dl_metrics_gauge(reg, "inflight", "x", 0),
			.reg = reg,
			.id = t,
		};
		ck_assert_ptr_nonnull(args[t].total);
		ck_assert_ptr_nonnull(args[t].by_thread);
		ck_assert_ptr_nonnull(args[t].hist);
		ck_assert_ptr_nonnull(args[t].gauge);
	}
	for (size_t t = 0; t < THREADS; t++)
		ck_assert_int_eq(pthread_create(&th[t], NULL, worker, &args[t]), 0);
	for (size_t t = 0; t < THREADS; t++)
		ck_assert_int_eq(pthread_join(th[t], NULL), 0);

	ck_assert_int_eq(dl_metric_get(args[0].total, NULL, &v), 0);
	ck_assert_double_eq(v, (double)THREADS * ITERATIONS);
	for (size_t t = 0; t < THREADS; t++) {
		snprintf(id, sizeof(id), "t%zu", t);
		ck_assert_int_eq(dl_metric_get(args[0].by_thread, lv, &v), 0);
		ck_assert_double_eq(v, ITERATIONS);
	}
	ck_assert_int_eq(dl_metric_get(args[0].gauge, NULL, &v), 0);
	ck_assert_double_eq(v, 0);
	text = render(reg);
	snprintf(expect, sizeof(expect),
		 "sizes_bucket{le=\"1\"} %d\nsizes_bucket{le=\"+Inf\"} %d\n"
		 "sizes_sum %d\nsizes_count %d\n",
		 THREADS * ITERATIONS / 2, THREADS * ITERATIONS,
		 THREADS * ITERATIONS / 2 * 2 + THREADS * ITERATIONS / 4, THREADS * ITERATIONS);
	ck_assert_msg(strstr(text, expect) != NULL, "missing:\n%s", expect);
	snprintf(expect, sizeof(expect), "events_total %d\n", THREADS * ITERATIONS);
	ck_assert_ptr_nonnull(strstr(text, expect));
	ck_assert_ptr_nonnull(strstr(text, "dl_metrics_dropped_total 0\n"));
	free(text);
	dl_metrics_registry_free(reg);
}
END_TEST

static Suite *dl_metrics_suite(void)
{
	Suite *s = suite_create("dl_metrics");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_empty_registry);
	tcase_add_test(tc, test_counter_and_gauge_exposition);
	tcase_add_test(tc, test_histogram_exposition);
	tcase_add_test(tc, test_default_buckets);
	tcase_add_test(tc, test_escaping_and_values);
	tcase_add_test(tc, test_validation_and_duplicates);
	tcase_add_test(tc, test_invalid_updates_dropped);
	tcase_add_test(tc, test_children_bounded);
	tcase_add_test(tc, test_concurrent_updates_exact);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dl_metrics_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
