/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_calib: conformal p-values, their calibration on exchangeable data, and state. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_calib.h"

static uint64_t rng = 88172645463325252ull;

static double uniform(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

START_TEST(test_hand_values)
{
	cbad_calib *c;

	ck_assert_int_eq(cbad_calib_new(16, 0.5, &c), 0);
	ck_assert_double_eq(cbad_calib_pvalue(c, 3.0), 1.0);
	for (int i = 1; i <= 10; i++)
		cbad_calib_add(c, i);
	/* (1 + #{>= s}) / (1 + n) */
	ck_assert_double_eq_tol(cbad_calib_pvalue(c, 5.5), 6.0 / 11, 1e-12);
	ck_assert_double_eq_tol(cbad_calib_pvalue(c, 10), 2.0 / 11, 1e-12);
	ck_assert_double_eq_tol(cbad_calib_pvalue(c, 0), 1.0, 1e-12);
	/* Beyond the largest: 1/11 * exp(-(s - 10)/scale), scale = mean excess of the top 4 over
	 * the 4th largest = (0+1+2+3)/4 = 1.5. */
	ck_assert_double_eq_tol(cbad_calib_pvalue(c, 13), exp(-3 / 1.5) / 11, 1e-12);
	ck_assert_double_lt(cbad_calib_pvalue(c, 20), cbad_calib_pvalue(c, 13));
	ck_assert_double_eq(cbad_calib_quantile(c, 0.0), 1);
	ck_assert_double_eq(cbad_calib_quantile(c, 1.0), 10);
	/* The ring forgets the oldest. */
	for (int i = 0; i < 16; i++)
		cbad_calib_add(c, 100);
	ck_assert_uint_eq(cbad_calib_count(c), 16);
	ck_assert_double_eq(cbad_calib_quantile(c, 0.0), 100);
	cbad_calib_free(c);
}
END_TEST

START_TEST(test_exchangeable_calibrated)
{
	static const double alphas[] = {0.1, 0.05, 0.01};
	cbad_calib *c;
	long hits[3] = {0}, n = 0;

	ck_assert_int_eq(cbad_calib_new(1000, 1e-6, &c), 0);
	for (int i = 0; i < 1000; i++)
		cbad_calib_add(c, -log(uniform()));
	for (int i = 0; i < 100000; i++) {
		double s = -log(uniform()), p = cbad_calib_pvalue(c, s);

		for (int k = 0; k < 3; k++)
			hits[k] += p < alphas[k];
		n++;
		cbad_calib_add(c, s);
	}
	for (int k = 0; k < 3; k++) {
		double share = (double)hits[k] / n;

		ck_assert_msg(fabs(share - alphas[k]) < 0.2 * alphas[k] + 0.001,
			      "alpha %g: share %g", alphas[k], share);
	}
	cbad_calib_free(c);
}
END_TEST

START_TEST(test_capped_add)
{
	cbad_calib *c;

	ck_assert_int_eq(cbad_calib_new(16, 1.0, &c), 0);
	for (int i = 1; i <= 10; i++)
		cbad_calib_add(c, i);
	/* A clear outlier is remembered as the largest, not as itself. */
	cbad_calib_add_capped(c, 1000);
	ck_assert_double_eq(cbad_calib_quantile(c, 1.0), 10);
	/* A borderline one (within one tail scale) is remembered as is. */
	cbad_calib_add_capped(c, 10.5);
	ck_assert_double_eq(cbad_calib_quantile(c, 1.0), 10.5);
	cbad_calib_free(c);
}
END_TEST

/* The full-ring insert (one move between the leaving and the entering score) keeps exactly
 * the array of removing the oldest score's first copy and inserting the new one before the
 * first score >= it: checked bit for bit against that, with many ties, signed zeros and
 * infinities, through every quantile. */
START_TEST(test_full_ring_order)
{
	static const double pool[] = {0.0, -0.0, 1.0, 1.0, 2.5, -3.0, INFINITY, -INFINITY, 7.0};
	enum { CAP = 64 };
	double ring[CAP], sorted[CAP];
	uint32_t n = 0, head = 0;
	uint64_t x = 88172645463325252ull;
	cbad_calib *c = NULL;

	ck_assert_int_eq(cbad_calib_new(CAP, 1.0, &c), 0);
	for (int t = 0; t < 20000; t++) {
		double s;
		uint32_t i;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		s = x % 3 ? pool[(x >> 8) % 9] : (double)((x >> 16) % 1000) / 8.0;
		cbad_calib_add(c, s);
		if (n == CAP) {
			double old = ring[head];

			for (i = 0; i < n && sorted[i] < old; i++)
				;
			memmove(sorted + i, sorted + i + 1, (n - i - 1) * sizeof(double));
			n--;
			ring[head] = s;
			head = (head + 1) % CAP;
		} else {
			ring[(head + n) % CAP] = s;
		}
		for (i = 0; i < n && sorted[i] < s; i++)
			;
		memmove(sorted + i + 1, sorted + i, (n - i) * sizeof(double));
		sorted[i] = s;
		n++;
		ck_assert_uint_eq(cbad_calib_count(c), n);
		for (uint32_t k = 0; k < n; k++) {
			double q = n > 1 ? (double)k / (n - 1) : 0, got = cbad_calib_quantile(c, q);

			ck_assert_int_eq(memcmp(&got, &sorted[k], sizeof(got)), 0);
		}
	}
	cbad_calib_free(c);
}
END_TEST

START_TEST(test_state_round_trip)
{
	cbad_calib *a, *b, *wrong;
	cbad_writer w = {0};
	cbad_reader r;

	ck_assert_int_eq(cbad_calib_new(64, 1.0, &a), 0);
	ck_assert_int_eq(cbad_calib_new(64, 1.0, &b), 0);
	ck_assert_int_eq(cbad_calib_new(32, 1.0, &wrong), 0);
	for (int i = 0; i < 100; i++)
		cbad_calib_add(a, uniform() * 50);
	cbad_calib_save(a, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_calib_load(b, &r), 0);
	for (int i = 0; i < 100; i++) {
		double s = uniform() * 60;

		ck_assert_double_eq(cbad_calib_pvalue(a, s), cbad_calib_pvalue(b, s));
		cbad_calib_add(a, s);
		cbad_calib_add(b, s);
	}
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_calib_load(wrong, &r), -EINVAL);
	cbad_reader_init(&r, w.buf, w.len / 2);
	ck_assert_int_eq(cbad_calib_load(b, &r), -EINVAL);
	cbad_writer_free(&w);
	cbad_calib_free(a);
	cbad_calib_free(b);
	cbad_calib_free(wrong);
}
END_TEST

/* Whole-number scores are held as floats (half the memory); the first score that is not a float
 * moves them to doubles. Either way the ranks are those of the exact scores, checked against
 * a plain count over the last cap scores, across the move and ring turns. */
START_TEST(test_narrow_until_inexact)
{
	enum { CAP = 64 };
	cbad_calib *c;
	double last[CAP];
	size_t narrow;

	ck_assert_int_eq(cbad_calib_new(CAP, 1.0, &c), 0);
	for (int i = 0; i < 400; i++) {
		double s = i < 200 ? (double)(8 * (i * 37 % 101)) : 0.1 * (i * 53 % 97);

		if (i == 150)
			narrow = cbad_calib_memory(c);
		cbad_calib_add(c, s);
		last[i % CAP] = s;
		for (int q = 0; q < 5; q++) {
			uint32_t n = i + 1 < CAP ? (uint32_t)i + 1 : CAP, ge = 0;
			double t = last[(uint32_t)(i * 7 + q) % n];

			for (uint32_t k = 0; k < n; k++)
				ge += last[k] >= t;
			ck_assert_double_eq(cbad_calib_pvalue(c, t), (1.0 + ge) * (1.0 / (1.0 + n)));
		}
	}
	ck_assert_uint_lt(narrow, cbad_calib_memory(c));
	ck_assert_uint_le(narrow + CAP * 2 * sizeof(float), cbad_calib_memory(c));
	/* A score just beyond float precision is kept exactly. */
	cbad_calib_add(c, 1.0 + 1e-12);
	ck_assert_double_eq_tol(cbad_calib_pvalue(c, 1.0 + 1e-12) - cbad_calib_pvalue(c, 1.0 + 2e-12),
				1.0 / (1.0 + CAP), 1e-12);
	cbad_calib_free(c);
}
END_TEST

int main(void)
{
	Suite *su = suite_create("cbad_calib");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_hand_values);
	tcase_add_test(tc, test_exchangeable_calibrated);
	tcase_add_test(tc, test_capped_add);
	tcase_add_test(tc, test_state_round_trip);
	tcase_add_test(tc, test_full_ring_order);
	tcase_add_test(tc, test_narrow_until_inexact);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
