/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for tests/bench/bench_scoring: stream metrics and NAB scoring on hand-made cases. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/bench/bench_scoring.h"

START_TEST(test_stream_metrics_by_hand)
{
	/* Labeled lines 2, 3 (kind 0) and 8 (kind 1); flagged 3, 5, 8. */
	const double score[10] = { 0.1, 0.2, 0.9, 0.5, 0.3, 0.5, 0.1, 0.2, 0.8, 0.0 };
	const bool flag[10] = { 0, 0, 0, 1, 0, 1, 0, 0, 1, 0 };
	const uint8_t label[10] = { 0, 0, 1, 1, 0, 0, 0, 0, 1, 0 };
	const uint8_t kind[10] = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 };
	const int64_t ts[10] = { 0, 1000, 2000, 3500, 4000, 5000, 6000, 7000, 8000, 9000 };
	bench_scoring_stream m;

	ck_assert_int_eq(bench_scoring_stream_metrics(score, flag, label, kind, 2, ts, 10, &m), 0);
	ck_assert_uint_eq(m.tp, 2);
	ck_assert_uint_eq(m.fp, 1);
	ck_assert_uint_eq(m.fn, 1);
	ck_assert_double_eq_tol(m.precision, 2.0 / 3.0, 1e-12);
	ck_assert_double_eq_tol(m.recall, 2.0 / 3.0, 1e-12);
	ck_assert_double_eq_tol(m.f1, 2.0 / 3.0, 1e-12);
	/* thresholds 0.9: P 1 R 1/3; 0.8: P 1 R 2/3; 0.5 (two lines, flagged together): P 3/4 R 1 */
	ck_assert_double_eq_tol(m.best_f1, 6.0 / 7.0, 1e-12);
	ck_assert_double_eq(m.best_threshold, 0.5);
	ck_assert_double_eq_tol(m.pr_auc, 1.0 / 3.0 + 1.0 / 3.0 + 0.25, 1e-12);
	ck_assert_uint_eq(m.episodes, 2);
	ck_assert_uint_eq(m.episodes_detected, 2);
	ck_assert_double_eq(m.episode_recall, 1.0);
	ck_assert_double_eq(m.ttd_median, 0.5);
	ck_assert_double_eq(m.ttd_max, 1.0);
	ck_assert_double_eq(m.ttd_max_s, 1.5);
	ck_assert_uint_eq(m.kinds[0].labels, 2);
	ck_assert_uint_eq(m.kinds[0].labels_flagged, 1);
	ck_assert_double_eq(m.kinds[0].ttd_max, 1.0);
	ck_assert_uint_eq(m.kinds[1].episodes_detected, 1);
	ck_assert_double_eq(m.kinds[1].ttd_max, 0.0);
}
END_TEST

START_TEST(test_episode_gap_and_ties)
{
	enum { N = 500 };
	double score[N];
	bool flag[N];
	uint8_t label[N], kind[N];
	bench_scoring_stream m;

	memset(flag, 0, sizeof(flag));
	memset(label, 0, sizeof(label));
	memset(kind, 0, sizeof(kind));
	for (size_t i = 0; i < N; i++)
		score[i] = 0.25; /* all tied: one threshold, everything flagged together */
	/* 10 and 210 are 200 apart: one episode; 411 is 201 after 210: a second one. */
	label[10] = label[210] = label[411] = 1;
	flag[411] = true;
	ck_assert_int_eq(bench_scoring_stream_metrics(score, flag, label, kind, 1, NULL, N, &m), 0);
	ck_assert_uint_eq(m.episodes, 2);
	ck_assert_uint_eq(m.episodes_detected, 1);
	ck_assert_double_eq(m.episode_recall, 0.5);
	ck_assert_double_eq(m.ttd_median, 0.0);
	ck_assert_double_eq_tol(m.best_f1, 2.0 * (3.0 / N) / (3.0 / N + 1.0), 1e-12);
	ck_assert_double_eq_tol(m.pr_auc, 3.0 / N, 1e-12);
	/* no positives at all: every metric is 0, not NaN */
	memset(label, 0, sizeof(label));
	ck_assert_int_eq(bench_scoring_stream_metrics(score, flag, label, kind, 1, NULL, N, &m), 0);
	ck_assert_double_eq(m.f1, 0.0);
	ck_assert_double_eq(m.pr_auc, 0.0);
	ck_assert_double_eq(m.best_f1, 0.0);
}
END_TEST

START_TEST(test_nab_sigmoid_and_probation)
{
	ck_assert_double_eq_tol(bench_scoring_nab_sigmoid(-1.0), 0.986614, 1e-6);
	ck_assert_double_eq_tol(bench_scoring_nab_sigmoid(0.0), 0.0, 1e-15);
	ck_assert_double_eq_tol(bench_scoring_nab_sigmoid(1.0), -0.986614, 1e-6);
	ck_assert_double_eq(bench_scoring_nab_sigmoid(3.0001), -1.0);
	ck_assert_uint_eq(bench_scoring_nab_probation(1000), 150);
	ck_assert_uint_eq(bench_scoring_nab_probation(4032), 604);
	ck_assert_uint_eq(bench_scoring_nab_probation(22695), 750);
}
END_TEST

/* The README's single-file reference: n = 1000, windows 500-599 and 800-849, detections at
 * 100, 300, 520, 560, 650 and 990. */
static const size_t readme_windows[2][2] = { { 500, 599 }, { 800, 849 } };

static void readme_file(double *score, bench_scoring_nab_file *f)
{
	static const size_t det[] = { 100, 300, 520, 560, 650, 990 };

	for (size_t i = 0; i < 1000; i++)
		score[i] = 0.0;
	for (size_t k = 0; k < sizeof(det) / sizeof(det[0]); k++)
		score[det[k]] = 1.0;
	*f = (bench_scoring_nab_file){ score, 1000, readme_windows, 2 };
}

START_TEST(test_nab_readme_reference)
{
	double score[1000], theta, raw, norm;
	bench_scoring_nab_file f;

	readme_file(score, &f);
	ck_assert_double_eq_tol(bench_scoring_nab_file_score(&f, 1.0, &bench_scoring_nab_standard),
				-0.337336, 1e-6);
	ck_assert_double_eq_tol(bench_scoring_nab_file_score(&f, 1.0, &bench_scoring_nab_low_fp),
				-0.651778, 1e-6);
	ck_assert_double_eq_tol(bench_scoring_nab_file_score(&f, 1.0, &bench_scoring_nab_low_fn),
				-1.337336, 1e-6);
	/* Optimised: theta 1 beats "no detections" (-2) and theta 0 (every row detected). */
	ck_assert_int_eq(bench_scoring_nab_optimise(&f, 1, &bench_scoring_nab_standard, &theta, &raw,
						    &norm), 0);
	ck_assert_double_eq(theta, 1.0);
	ck_assert_double_eq_tol(raw, -0.337336, 1e-6);
	ck_assert_double_eq_tol(norm, 100.0 * (-0.337336 + 2.0) / 4.0, 1e-4);
	ck_assert_double_eq_tol(bench_scoring_nab_normalise(47.3936, 55, &bench_scoring_nab_standard),
				93.09, 0.01);
	ck_assert_double_eq_tol(bench_scoring_nab_normalise(-33.4270, 55, &bench_scoring_nab_low_fn),
				46.41, 0.01);
}
END_TEST

START_TEST(test_nab_optimise_matches_brute_force)
{
	enum { N = 1200 };
	static const size_t win[3][2] = { { 300, 339 }, { 600, 699 }, { 1000, 1019 } };
	double score[N];
	uint64_t x = 42;

	for (int round = 0; round < 20; round++) {
		bench_scoring_nab_file f = { score, N, win, 3 };
		double theta, raw, norm, best = -3.0;

		for (size_t i = 0; i < N; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			/* few distinct values, so ties are common */
			score[i] = (double)((x >> 33) % 40) / 40.0;
		}
		for (size_t i = 0; i < N; i++) {
			double s = bench_scoring_nab_file_score(&f, score[i],
								&bench_scoring_nab_standard);
			if (i >= bench_scoring_nab_probation(N) && s > best)
				best = s;
		}
		ck_assert_int_eq(bench_scoring_nab_optimise(&f, 1, &bench_scoring_nab_standard, &theta,
							    &raw, &norm), 0);
		ck_assert_double_eq_tol(raw, best, 1e-9);
		ck_assert_double_eq_tol(bench_scoring_nab_file_score(&f, theta,
								     &bench_scoring_nab_standard),
					raw, 1e-9);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("bench_scoring");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_stream_metrics_by_hand);
	tcase_add_test(tc, test_episode_gap_and_ties);
	tcase_add_test(tc, test_nab_sigmoid_and_probation);
	tcase_add_test(tc, test_nab_readme_reference);
	tcase_add_test(tc, test_nab_optimise_matches_brute_force);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
