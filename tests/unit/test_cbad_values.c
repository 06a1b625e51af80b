/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for cbad_values: conformal calibration, the robust value model, flatline runs, state. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_values.h"

static uint64_t rng = 88172645463325252ULL;

static double u01(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(void)
{
	return sqrt(-2 * log(u01())) * cos(6.283185307179586 * u01());
}

START_TEST(test_calib_by_hand)
{
	cbad_values_calib c;

	cbad_values_calib_init(&c);
	ck_assert(!cbad_values_calib_ready(&c));
	ck_assert(cbad_values_calib_p(&c, 5.0) == 1.0);
	/* 100 statistics equal to 1.0 (one bin): a 0 is below all of them, p = 1 */
	for (int i = 0; i < 100; i++)
		cbad_values_calib_add(&c, 1.0);
	ck_assert(cbad_values_calib_ready(&c));
	ck_assert(cbad_values_calib_p(&c, 0.0) == 1.0);
	/* above a history that sits in one bin, only the rank counts: p = (0 + 1) / 101 */
	ck_assert_double_eq_tol(cbad_values_calib_p(&c, 3.0), 1.0 / 101.0, 1e-12);
	/* with 10 of them at 2.0 the tail has a shape: threshold = lower edge of the bin of 1.0
	 * (where the 16th largest is, all 110 at or above it), mean excess over it in log1p
	 * units (10 * 6.5 + 100 * 0.5 bins) / 16 / 110 with the prior 0.5 worth 2, floored at 0.15:
	 * p = 111/111 * exp(-(log1p(5) - edge) / beta) */
	for (int i = 0; i < 10; i++)
		cbad_values_calib_add(&c, 2.0);
	{
		double edge = floor(log1p(1.0) * 16) / 16;
		double beta = ((10 * 6.5 + 100 * 0.5) / 16 + 1.0) / 112;
		double expect;

		if (beta < 0.15)
			beta = 0.15;
		expect = 111.0 / 111.0 * exp(-(log1p(5.0) - edge) / beta);
		ck_assert_double_eq_tol(cbad_values_calib_p(&c, 5.0), expect, expect * 1e-9);
		ck_assert_double_lt(expect, 1.0 / 111.0);
	}
	/* the window forgets: 256 zeros later, 1.0 is above everything */
	for (int i = 0; i < CBAD_CALIB_WINDOW; i++)
		cbad_values_calib_add(&c, 0.0);
	ck_assert_int_eq(c.n, CBAD_CALIB_WINDOW);
	ck_assert_double_le(cbad_values_calib_p(&c, 1.0), 1.0 / 257.0);
	ck_assert_double_eq_tol(cbad_values_calib_quantile(&c, 0.5), 0.0, 0.05);
}
END_TEST

/* On exchangeable statistics, P(p < a) stays close to a (and not far above it). */
START_TEST(test_calib_exchangeable)
{
	for (int dist = 0; dist < 2; dist++) {
		cbad_values_calib c;
		long n = 0, b1 = 0, b2 = 0, b3 = 0;

		cbad_values_calib_init(&c);
		for (long i = 0; i < 200000; i++) {
			double x = dist == 0 ? fabs(gauss()) : -log(u01());

			if (cbad_values_calib_ready(&c)) {
				double p = cbad_values_calib_p(&c, x);

				n++;
				b1 += p < 0.1;
				b2 += p < 0.01;
				b3 += p < 0.001;
			}
			cbad_values_calib_add(&c, x);
		}
		ck_assert_double_eq_tol((double)b1 / n, 0.1, 0.01);
		ck_assert_double_eq_tol((double)b2 / n, 0.01, 0.004);
		ck_assert_double_le((double)b3 / n, 0.0015);
	}
}
END_TEST

/* -log10 p statistics: the exponential tail keeps calibration for calibrated and for
 * over-dispersed inputs, and an extreme statistic gets a p-value far below 1/window. */
START_TEST(test_calib_logp)
{
	for (int dist = 0; dist < 2; dist++) {
		cbad_values_calib c;
		long n = 0, b2 = 0, b3 = 0;
		double scale = dist == 0 ? 1.0 : 1.6;

		cbad_values_calib_init(&c);
		for (long i = 0; i < 200000; i++) {
			double x = -log10(u01()) * scale;

			if (cbad_values_calib_ready(&c)) {
				double p = cbad_values_calib_p_logp(&c, x);

				n++;
				b2 += p < 0.01;
				b3 += p < 0.001;
			}
			cbad_values_calib_add(&c, x);
		}
		ck_assert_double_eq_tol((double)b2 / n, 0.01, 0.004);
		ck_assert_double_le((double)b3 / n, 0.002);
		/* 12 is a 1e-12 event for a calibrated p: well below what ranks alone can say */
		ck_assert_double_lt(cbad_values_calib_p_logp(&c, 12.0), 1e-6);
		ck_assert_double_lt(cbad_values_calib_p_logp(&c, 12.0), cbad_values_calib_p(&c, 12.0));
	}
}
END_TEST

/* The long calibrator: calibrated far below 1/256 on iid statistics learned with their own
 * p-values (the guard must not thin the tail), a lasting anomaly stays rare for a while, and
 * its state round-trips exactly. */
START_TEST(test_lcalib)
{
	for (int dist = 0; dist < 2; dist++) {
		cbad_values_lcalib c, c2;
		long n = 0, b2 = 0, b3 = 0, b4 = 0;
		cbad_writer w = {0};
		cbad_reader r;

		cbad_values_lcalib_init(&c);
		for (long i = 0; i < 300000; i++) {
			double x = dist == 0 ? -log10(u01()) : fabs(gauss());
			double p = cbad_values_lcalib_p(&c, x);

			if (cbad_values_lcalib_ready(&c)) {
				n++;
				b2 += p < 1e-2;
				b3 += p < 1e-3;
				b4 += p < 2.5e-4;
			}
			cbad_values_lcalib_learn(&c, x, p);
		}
		ck_assert_double_eq_tol((double)b2 / n, 0.01, 0.002);
		ck_assert_double_le((double)b3 / n, 0.0012);
		ck_assert_double_le((double)b4 / n, 0.0004);
		/* a step to a statistic never seen: small p, and still small 16 events later */
		for (int i = 0; i < 16; i++) {
			double p = cbad_values_lcalib_p(&c, 30.0);

			ck_assert_double_lt(p, 1e-4);
			cbad_values_lcalib_learn(&c, 30.0, p);
		}
		cbad_values_lcalib_save(&c, &w);
		cbad_reader_init(&r, w.buf, w.len);
		ck_assert_int_eq(cbad_values_lcalib_load(&c2, &r), 0);
		ck_assert(memcmp(&c, &c2, sizeof(c)) == 0);
		cbad_reader_init(&r, w.buf, w.len / 2);
		ck_assert_int_eq(cbad_values_lcalib_load(&c2, &r), -EINVAL);
		cbad_writer_free(&w);
	}
}
END_TEST

/* A learned record is clipped to one bin above the top only when asked: unclipped, a lasting
 * new level (a step, past the run of left-out records) becomes the norm at its own height. */
START_TEST(test_lcalib_clip)
{
	cbad_values_lcalib c[2];

	for (int k = 0; k < 2; k++) {
		cbad_values_lcalib_init(&c[k]);
		for (long i = 0; i < 20000; i++) {
			double x = fabs(gauss());

			cbad_values_lcalib_learn_clip(&c[k], x, cbad_values_lcalib_p(&c[k], x), k == 1);
		}
		/* past the records left out (the skip budget, about 2 % of 2048) */
		for (int i = 0; i < 56; i++)
			cbad_values_lcalib_learn_clip(&c[k], 30.0, cbad_values_lcalib_p(&c[k], 30.0),
						      k == 1);
	}
	/* unclipped: 30 is now within the remembered statistics */
	ck_assert_double_gt(cbad_values_lcalib_p(&c[0], 30.0), 2e-4);
	/* clipped: the tail grew by a bin per learned record, 30 stays far beyond it */
	ck_assert_double_lt(cbad_values_lcalib_p(&c[1], 30.0), 1e-4);
}
END_TEST

START_TEST(test_calib_learn_budget)
{
	cbad_values_calib c;

	cbad_values_calib_init(&c);
	for (int i = 0; i < 200; i++)
		cbad_values_calib_add(&c, u01());
	/* a rare anomaly is not remembered */
	cbad_values_calib_learn(&c, 50.0, 1e-6);
	ck_assert_int_eq(c.n, 200);
	/* a lasting change is: past the skip budget, strange statistics are learned */
	for (int i = 0; i < 100; i++)
		cbad_values_calib_learn(&c, 50.0, 1e-6);
	ck_assert_int_gt(c.n, 250);
}
END_TEST

START_TEST(test_model_spike_and_shift)
{
	cbad_values_model m;
	cbad_values_judgement j;

	cbad_values_model_init(&m);
	ck_assert(!cbad_values_model_ready(&m));
	for (int i = 0; i < 500; i++)
		cbad_values_model_learn(&m, 20.0 + gauss());
	ck_assert(cbad_values_model_ready(&m));
	cbad_values_model_judge(&m, 20.5, &j);
	ck_assert_double_lt(j.z, 3.0);
	ck_assert_double_eq_tol(j.mean, 20.0, 0.3);
	ck_assert_double_eq_tol(j.sigma, 1.0, 0.25);
	cbad_values_model_judge(&m, 40.0, &j);
	ck_assert_double_gt(j.z, 12.0);
	/* one spike barely moves the model (Huber clipping) */
	cbad_values_model_learn(&m, 1000.0);
	cbad_values_model_judge(&m, 20.0, &j);
	ck_assert_double_eq_tol(j.mean, 20.0, 0.5);
	/* ... and a lone spike is no step: the next usual value is not on its side */
	ck_assert_double_lt(j.shift, 3.0);
	/* a lasting step: several strange values in a row on the same side */
	for (int i = 0; i < 6; i++)
		cbad_values_model_learn(&m, 26.0 + gauss() * 0.1);
	cbad_values_model_judge(&m, 26.0, &j);
	ck_assert_double_gt(j.shift, 10.0);
}
END_TEST

START_TEST(test_runs)
{
	cbad_values_model m;
	cbad_values_runs r;
	cbad_values_judgement j;
	double x = 0;

	cbad_values_model_init(&m);
	cbad_values_runs_init(&r);
	for (int i = 0; i < 2000; i++) {
		uint32_t prev = m.n ? m.run : 0;

		x = (i % 50 == 0) ? x : gauss(); /* a repeat now and then */
		cbad_values_model_judge(&m, x, &j);
		if (m.n)
			cbad_values_runs_learn(&r, prev, j.run);
		cbad_values_model_learn(&m, x);
	}
	ck_assert(cbad_values_runs_p(&r, 1) == 1.0);
	ck_assert_double_lt(cbad_values_runs_p(&r, 2), 0.05);
	ck_assert_double_lt(cbad_values_runs_p(&r, 5), cbad_values_runs_p(&r, 4));
	ck_assert_double_lt(cbad_values_runs_p(&r, 6), 1e-6);
	/* judged runs count repeats */
	for (int i = 0; i < 4; i++)
		cbad_values_model_learn(&m, 7.0);
	cbad_values_model_judge(&m, 7.0, &j);
	ck_assert_uint_eq(j.run, 5);
}
END_TEST

START_TEST(test_state)
{
	cbad_values_calib c, c2;
	cbad_values_model m, m2;
	cbad_writer w = {0};
	cbad_reader r;

	cbad_values_calib_init(&c);
	cbad_values_model_init(&m);
	for (int i = 0; i < 300; i++) {
		cbad_values_calib_add(&c, u01() * 3);
		cbad_values_model_learn(&m, gauss());
	}
	cbad_values_calib_save(&c, &w);
	cbad_values_model_save(&m, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_values_calib_load(&c2, &r), 0);
	cbad_values_model_load(&m2, &r);
	ck_assert(!r.failed);
	ck_assert(memcmp(&m, &m2, sizeof(m)) == 0);
	for (double s = 0; s < 10; s += 0.37)
		ck_assert(cbad_values_calib_p(&c, s) == cbad_values_calib_p(&c2, s));
	/* a corrupt bin or a truncated buffer is refused */
	w.buf[8 + 4 + 3] = (uint8_t)200;
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_values_calib_load(&c2, &r), -EINVAL);
	cbad_reader_init(&r, w.buf, 100);
	ck_assert_int_eq(cbad_values_calib_load(&c2, &r), -EINVAL);
	cbad_writer_free(&w);
}
END_TEST

/* The long-run level: calibrated on a stationary series, a value beyond the range the series
 * kept is rare, one inside it is not; a routine excursion that recurs becomes known; the state
 * round-trips exactly. */
/* A statistic's bin is the last edge expm1(b / 16) <= it, at every edge, one ulp either side,
 * two ulps below, and over 2^-30 .. 2^20 (the bin look-up is a table on the exponent and top
 * mantissa bits plus an edge compare): a lone statistic's calibrator reports that bin's centre. */
START_TEST(test_calib_bins)
{
	for (int b = 0; b <= CBAD_CALIB_BINS; b++) {
		double e = expm1(b / 16.0);
		double v[4] = {e, nextafter(e, 0), nextafter(e, INFINITY), nextafter(nextafter(e, 0), 0)};

		for (int k = 0; k < 4; k++) {
			cbad_values_calib c;
			int want = 0;

			for (int i = 1; i < CBAD_CALIB_BINS; i++)
				if (expm1(i / 16.0) <= v[k])
					want = i;
			cbad_values_calib_init(&c);
			cbad_values_calib_add(&c, v[k]);
			ck_assert_double_eq(cbad_values_calib_quantile(&c, 1.0), expm1((want + 0.5) / 16.0));
		}
	}
	for (int e = -30; e < 20; e++)
		for (int m = 0; m < 32; m++) {
			double v = ldexp(1.0 + m / 32.0, e);
			cbad_values_calib c;
			int want = 0;

			for (int i = 1; i < CBAD_CALIB_BINS; i++)
				if (expm1(i / 16.0) <= v)
					want = i;
			cbad_values_calib_init(&c);
			cbad_values_calib_add(&c, v);
			ck_assert_double_eq(cbad_values_calib_quantile(&c, 1.0), expm1((want + 0.5) / 16.0));
		}
}
END_TEST

START_TEST(test_level)
{
	cbad_values_level l, l2;
	cbad_writer w = {0};
	cbad_reader r;
	unsigned low = 0, judged = 0;
	double st, p_far, p_peak_first = 1, p_peak_last = 1;

	cbad_values_level_init(&l);
	ck_assert(cbad_values_level_p(&l, 100) == 1.0);
	for (int i = 0; i < 20000; i++) {
		double x = 10 + gauss();

		st = cbad_values_level_stat(&l, x, 0);
		if (l.cal.seen >= CBAD_LEVEL_MIN_CAL && i >= 4096) {
			judged++;
			low += cbad_values_level_p(&l, st) < 1e-3;
		}
		cbad_values_level_learn(&l, x, st);
	}
	/* iid values: about 1e-3 of them below 1e-3 (the tail fit is conservative here) */
	ck_assert_uint_le(low, judged / 400);
	/* 8 sigma away from the long-run mean: rarer than anything in the last 4096 values */
	p_far = cbad_values_level_p(&l, cbad_values_level_stat(&l, 18, 0));
	ck_assert_double_lt(p_far, 2.5e-4);
	ck_assert_double_gt(cbad_values_level_p(&l, cbad_values_level_stat(&l, 10.5, 0)), 0.3);
	/* a daily peak of 6 sigma, every 288 values: the first ones are rare, the later ones known */
	for (int i = 0; i < 288 * 12; i++) {
		double x = i % 288 == 0 ? 16 : 10 + gauss();

		st = cbad_values_level_stat(&l, x, 0);
		if (i == 0)
			p_peak_first = cbad_values_level_p(&l, st);
		if (i == 288 * 11)
			p_peak_last = cbad_values_level_p(&l, st);
		cbad_values_level_learn(&l, x, st);
	}
	ck_assert_double_lt(p_peak_first, 1e-3);
	ck_assert_double_gt(p_peak_last, 5 * p_peak_first);
	/* the series' resolution floors sigma: a constant series is not infinitely surprised */
	{
		cbad_values_level c;

		cbad_values_level_init(&c);
		for (int i = 0; i < 100; i++)
			cbad_values_level_learn(&c, 5.0, cbad_values_level_stat(&c, 5.0, 0.5));
		ck_assert_double_eq_tol(cbad_values_level_stat(&c, 5.5, 0.5), 2.0, 1e-9);
	}
	cbad_values_level_save(&l, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_values_level_load(&l2, &r), 0);
	ck_assert(memcmp(&l, &l2, sizeof(l)) == 0);
	cbad_reader_init(&r, w.buf, 10);
	ck_assert_int_eq(cbad_values_level_load(&l2, &r), -EINVAL);
	cbad_writer_free(&w);
}
END_TEST

/* The daily shape: a value that is ordinary for the day but not for its time of day (the
 * peak's height at the trough's hour) is rare for the seasonal residual, not for the level. */
START_TEST(test_season)
{
	cbad_values_season s, s2;
	cbad_values_level l;
	cbad_writer w = {0};
	cbad_reader r;
	const int64_t step = 5 * 60 * 1000, t0 = 1396310400000LL; /* 2014-04-01, 5-minute rows */
	unsigned low = 0, judged = 0;
	int64_t ts = t0;
	int slot;
	double st, p_season, p_level;

	ck_assert_int_eq(cbad_values_season_slot(0), -1);
	ck_assert_int_eq(cbad_values_season_slot(t0), 0);
	ck_assert_int_eq(cbad_values_season_slot(t0 + 86400000LL - 1), CBAD_SEASON_SLOTS - 1);
	cbad_values_season_init(&s);
	cbad_values_level_init(&l);
	ck_assert(!cbad_values_season_ready(&s, 0));
	for (int i = 0; i < 288 * 14; i++, ts += step) {
		double x = 10 + 5 * sin(2 * M_PI * (double)(i % 288) / 288.0) + 0.5 * gauss();

		slot = cbad_values_season_slot(ts);
		st = cbad_values_season_stat(&s, slot, x, 0);
		if (cbad_values_season_ready(&s, slot) && s.resid.cal.seen >= CBAD_LEVEL_MIN_CAL &&
		    i >= 288 * 4) {
			judged++;
			low += cbad_values_season_p(&s, st) < 1e-3;
		}
		cbad_values_season_learn(&s, slot, x, st, 0);
		cbad_values_level_learn(&l, x, cbad_values_level_stat(&l, x, 0));
	}
	ck_assert_uint_gt(judged, 288 * 9);
	ck_assert_uint_le(low, judged / 300);
	/* 6 hours into the day (the usual peak, 15) at 18 hours (the usual trough, 5) */
	ts = t0 + 14 * 86400000LL + 18 * 3600000LL;
	slot = cbad_values_season_slot(ts);
	ck_assert(cbad_values_season_ready(&s, slot));
	p_season = cbad_values_season_p(&s, cbad_values_season_stat(&s, slot, 15.0, 0));
	p_level = cbad_values_level_p(&l, cbad_values_level_stat(&l, 15.0, 0));
	ck_assert_double_lt(p_season, 1e-3);
	ck_assert_double_gt(p_level, 0.01);
	/* the usual value of the slot is ordinary */
	ck_assert_double_gt(cbad_values_season_p(&s, cbad_values_season_stat(&s, slot, 5.0, 0)),
			    0.1);

	cbad_values_season_save(&s, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_values_season_load(&s2, &r), 0);
	ck_assert(memcmp(&s, &s2, sizeof(s)) == 0);
	cbad_reader_init(&r, w.buf, 100);
	ck_assert_int_eq(cbad_values_season_load(&s2, &r), -EINVAL);
	cbad_writer_free(&w);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cbad_values");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_calib_by_hand);
	tcase_add_test(tc, test_calib_exchangeable);
	tcase_add_test(tc, test_calib_logp);
	tcase_add_test(tc, test_lcalib);
	tcase_add_test(tc, test_lcalib_clip);
	tcase_add_test(tc, test_calib_learn_budget);
	tcase_add_test(tc, test_model_spike_and_shift);
	tcase_add_test(tc, test_runs);
	tcase_add_test(tc, test_state);
	tcase_add_test(tc, test_level);
	tcase_add_test(tc, test_season);
	tcase_add_test(tc, test_calib_bins);
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
