/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for cbad_rate: Poisson tails by hand, bursts and drops of a kind, calibration, state. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_rate.h"

static uint64_t rng = 0x2545F4914F6CDD1DULL;

static double u01(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

START_TEST(test_poisson_by_hand)
{
	/* P(X >= 1 | 1) = 1 - e^-1; P(X >= 3 | 1) = 1 - e^-1 (1 + 1 + 1/2); P(X <= 0 | 2) = e^-2;
	 * P(X <= 2 | 10) = e^-10 (1 + 10 + 50) */
	ck_assert_double_eq_tol(cbad_rate_log10_upper(1, 1), log10(1 - exp(-1)), 1e-9);
	ck_assert_double_eq_tol(cbad_rate_log10_upper(3, 1), log10(1 - exp(-1) * 2.5), 1e-9);
	ck_assert_double_eq_tol(cbad_rate_log10_lower(0, 2), log10(exp(-2)), 1e-9);
	ck_assert_double_eq_tol(cbad_rate_log10_lower(2, 10), log10(exp(-10) * 61), 1e-9);
	/* far tails do not underflow: P(X >= 40 | 0.5) ~ 0.5^40 e^-0.5 / 40! */
	ck_assert_double_eq_tol(cbad_rate_log10_upper(40, 0.5),
				(40 * log(0.5) - 0.5 - lgamma(41)) / log(10), 0.01);
	ck_assert(cbad_rate_log10_upper(0, 1) == 0);
	ck_assert(cbad_rate_log10_upper(NAN, 1) == 0);
}
END_TEST

static void feed(cbad_rate *r, const char *kind, cbad_rate_verdict *b, cbad_rate_verdict *d)
{
	cbad_rate_key k = {.key = strlen(kind) * 1000003u + (uint64_t)kind[0], .label = kind,
			   .label_len = strlen(kind)};

	cbad_rate_observe(r, &k, 1, true, b, d);
}

START_TEST(test_burst)
{
	cbad_rate *r;
	cbad_rate_verdict b, d;
	double pmin = 1;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	/* "fail" is 3 % of the events, then makes up most of them for a while */
	for (int i = 0; i < 6000; i++)
		feed(r, u01() < 0.03 ? "fail" : "ok", &b, &d);
	ck_assert(b.valid);
	for (int i = 0; i < 40; i++) {
		feed(r, u01() < 0.7 ? "fail" : "ok", &b, &d);
		if (!strcmp(b.label, "fail") && b.p_value < pmin)
			pmin = b.p_value;
	}
	ck_assert_double_lt(pmin, 1e-4);
	cbad_rate_free(r);
}
END_TEST

/* The shares are exact from the stream's first events: a kind that is every event reads a share
 * of 1 (the lazy decay once counted the step of each occurrence twice: 0.508), and a young
 * stream's long share is divided by the weight its first events have (it starts at 0), so the
 * only kind of a stream never drifts like a slow burst. */
START_TEST(test_share_exact)
{
	cbad_rate *r;
	cbad_rate_verdict b, d;
	double st_first = -1;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 9000; i++) {
		feed(r, "only", &b, &d);
		if (!b.valid)
			continue;
		ck_assert_double_eq_tol(b.observed, CBAD_RATE_SHORT + 1.0, 0.02);
		ck_assert_double_eq_tol(b.expected, CBAD_RATE_SHORT, 0.01);
		if (st_first < 0)
			st_first = b.stat;
		ck_assert_double_eq_tol(b.stat, st_first, 1e-3);
		ck_assert_double_gt(b.p_value, 0.01);
	}
	ck_assert(st_first >= 0);
	cbad_rate_free(r);

	/* one kind in four, in turn: about 8 of every 32 events, early and late */
	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 9000; i++) {
		feed(r, i % 4 == 0 ? "quarter" : (i % 4 == 1 ? "b" : (i % 4 == 2 ? "cc" : "ddd")), &b,
		     &d);
		if ((i == 1000 || i == 8000) && b.valid && !strcmp(b.label, "quarter"))
			ck_assert_double_eq_tol(b.expected, CBAD_RATE_SHORT / 4.0, 0.3);
		if (i == 1000 || i == 8000)
			ck_assert(b.valid);
	}
	cbad_rate_free(r);
}
END_TEST

/* The public EW helpers (an entity's shares in cbad_entity) read exact shares too: something
 * at every event is observed 33 times in 32 events plus this one, against 32 expected (decayed
 * over now - last as well as by the learn, it read 17 of 33). */
/* The only kind of a stream, after a short excursion of another kind (20 events) and its
 * return: its count against its long share is ordinary by the Poisson law (33 of 33 against
 * ~31.8), while its burst calibrator, which had seen one constant count for thousands of
 * events, ranks every slightly higher count as a record. The reported p is never below the
 * Poisson tail of the count (it was ~3e-4 for a hundred events after the return). */
START_TEST(test_burst_not_below_poisson)
{
	cbad_rate *r;
	cbad_rate_verdict b, d;
	double pmin = 1.0;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 10000; i++) {
		feed(r, i >= 9000 && i < 9020 ? "other" : "only", &b, &d);
		if (!b.valid)
			continue;
		ck_assert_double_ge(b.p_value,
				    pow(10.0, cbad_rate_log10_upper_ew(b.observed, b.expected,
								       CBAD_RATE_SHORT)) *
					    (1 - 1e-12));
		if (i >= 9020 && !strcmp(b.label, "only") && b.p_value < pmin)
			pmin = b.p_value;
	}
	ck_assert_double_gt(pmin, 0.01);
	cbad_rate_free(r);
}
END_TEST

/* The burst's floor is the law of its statistic, an exponentially weighted count: on a
 * Bernoulli kind of share 0.1 the floor's tail is never thinner than the count's own (what
 * the floor says is rare is at least that rare), while the plain Poisson tail of the same count
 * overstates it several times (its variance is twice the count's). */
START_TEST(test_burst_floor_is_ew_law)
{
	const double r = 1.0 - 1.0 / CBAD_RATE_SHORT, q = 0.1, lam = q * CBAD_RATE_SHORT;
	const double cs[] = {7.0, 8.0, 9.0};
	long hits[3] = {0}, n = 0;
	double x = lam;

	for (long t = 0; t < 2000000; t++) {
		x = x * r + (u01() < q ? 1.0 : 0.0);
		if (t < 1000)
			continue;
		n++;
		for (int i = 0; i < 3; i++)
			hits[i] += x >= cs[i];
	}
	for (int i = 0; i < 3; i++) {
		double emp = (double)hits[i] / (double)n;
		double pew = pow(10.0, cbad_rate_log10_upper_ew(cs[i], lam, CBAD_RATE_SHORT));
		double ppo = pow(10.0, cbad_rate_log10_upper(cs[i], lam));

		ck_assert_double_ge(pew, emp);
		ck_assert_double_gt(ppo, 3.0 * emp);
		ck_assert_double_lt(pew, ppo);
	}
	/* above its mean the law's tail is never above the plain Poisson one (cbad_rate_observe
	 * computes it only when the calibrated p is below the latter) */
	for (double l = 0.01; l < 40.0; l *= 1.1)
		for (double c = l * 1.0001 + 1e-9; c < l + 40.0; c += 0.0137 + c / 50)
			ck_assert_double_le(cbad_rate_log10_upper_ew(c, l, CBAD_RATE_SHORT),
					    cbad_rate_log10_upper(c, l) + 1e-12);
	/* and below its mean the lower tail likewise (the drop's, over CBAD_RATE_MID) */
	for (double l = 0.5; l < 400.0; l *= 1.1)
		for (double c = 0; c < l * 0.9999; c += 0.0137 + c / 50)
			ck_assert_double_le(cbad_rate_log10_lower_ew(c, l, CBAD_RATE_MID),
					    cbad_rate_log10_lower(c, l) + 1e-12);
}
END_TEST

START_TEST(test_ew_helpers_exact)
{
	cbad_rate_ew e = {0};
	double obs, ex;

	for (uint64_t now = 0; now < 9000; now++) {
		if (now >= 300) {
			(void)cbad_rate_ew_burst(&e, now, CBAD_RATE_SHORT, CBAD_RATE_LONG,
						 1.0 / CBAD_RATE_LONG, &obs, &ex);
			ck_assert_double_eq_tol(obs, CBAD_RATE_SHORT + 1.0, 0.02);
			ck_assert_double_eq_tol(ex, CBAD_RATE_SHORT, 0.02);
		}
		cbad_rate_ew_learn(&e, now, CBAD_RATE_SHORT, CBAD_RATE_LONG);
	}
	/* every other event: 16 of 32 */
	memset(&e, 0, sizeof(e));
	for (uint64_t now = 0; now < 9000; now += 2) {
		if (now >= 300) {
			(void)cbad_rate_ew_burst(&e, now, CBAD_RATE_SHORT, CBAD_RATE_LONG,
						 1.0 / CBAD_RATE_LONG, &obs, &ex);
			ck_assert_double_eq_tol(obs, CBAD_RATE_SHORT / 2.0 + 1.0, 0.3);
			ck_assert_double_eq_tol(ex, CBAD_RATE_SHORT / 2.0, 0.3);
		}
		cbad_rate_ew_learn(&e, now, CBAD_RATE_SHORT, CBAD_RATE_LONG);
	}
}
END_TEST

/* A lasting change of the mix (a kind replaced for good by a new one, as when a field is
 * renamed) is a burst at first and the new normal after about CBAD_RATE_LASTING events: the
 * new kind's expected count then comes from its share over the last CBAD_RATE_LASTING events,
 * not from the long memory that still holds the ~4000 events before it appeared. */
START_TEST(test_lasting_change)
{
	cbad_rate *r;
	cbad_rate_verdict b, d;
	double pmin = 1, exsum = 0;
	int nex = 0;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 6000; i++)
		feed(r, u01() < 0.1 ? "old" : "ok", &b, &d);
	for (int i = 0; i < 3000; i++) {
		feed(r, u01() < 0.1 ? "new" : "ok", &b, &d);
		if (!b.valid || strcmp(b.label, "new"))
			continue;
		if (i < 64 && b.p_value < pmin)
			pmin = b.p_value;
		if (i >= 2000 && i < 2200) {
			exsum += b.expected;
			nex++;
		}
	}
	ck_assert_double_lt(pmin, 1e-3);
	ck_assert_int_gt(nex, 5);
	/* 3.2 of 32 at the new share; the long share alone gives 3.2 x (1 - e^(-2100/4096)) = 1.3,
	 * the last 2048 events 3.2 x (1 - e^(-2100/2048)) = 2.0 */
	ck_assert_double_gt(exsum / nex, 1.8);
	cbad_rate_free(r);
}
END_TEST

/* Events that are judged but not learned (the detector found them strange) still count in the
 * windows: a burst made only of such events is found, while the calibration is not taught. */
START_TEST(test_burst_unlearned)
{
	cbad_rate *r;
	cbad_rate_verdict b, d;
	double pmin = 1;
	cbad_rate_key k = {.key = 777, .label = "fail", .label_len = 4};

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 6000; i++)
		feed(r, u01() < 0.03 ? "fail" : "ok", &b, &d);
	k.key = strlen("fail") * 1000003u + (uint64_t)'f';
	for (int i = 0; i < 40; i++) {
		cbad_rate_observe(r, &k, 1, false, &b, &d);
		if (b.valid && b.p_value < pmin)
			pmin = b.p_value;
	}
	ck_assert_double_lt(pmin, 1e-4);
	/* without counting, the window would hold the ~1 "fail" of normal traffic */
	ck_assert_double_ge(b.observed, 12);
	cbad_rate_free(r);
}
END_TEST

/* A long burst interleaved with ordinary events, every event learned (as the detector does when
 * only the rate channel finds them strange): the burst's own statistics do not become the
 * calibration, so its last events are as strange as its first (cbad_rate_calib_learn). */
START_TEST(test_long_burst)
{
	cbad_rate *r;
	cbad_rate_verdict b, d;
	double plate = 0;
	int nlate = 0;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 6000; i++)
		feed(r, u01() < 0.01 ? "fail" : (u01() < 0.5 ? "ok" : "view"), &b, &d);
	/* 400 events in which one in four fails: about 100 failures, far past the 2 % budget of
	 * cbad_values_calib_learn */
	for (int i = 0; i < 400; i++) {
		feed(r, i % 4 == 0 ? "fail" : (u01() < 0.5 ? "ok" : "view"), &b, &d);
		if (i >= 300 && i % 4 == 0 && !strcmp(b.label, "fail")) {
			plate = b.p_value > plate ? b.p_value : plate;
			nlate++;
		}
	}
	ck_assert_int_gt(nlate, 20);
	ck_assert_double_lt(plate, 1e-3);
	cbad_rate_free(r);
}
END_TEST

/* Only ordinary statistics are learned, however many strange ones came. */
START_TEST(test_calib_learn)
{
	cbad_values_calib c;
	double p0;

	cbad_values_calib_init(&c);
	for (int i = 0; i < 256; i++)
		cbad_rate_calib_learn(&c, -log10(u01()), 0.5);
	p0 = cbad_values_calib_p_logp(&c, 8.0);
	ck_assert_double_lt(p0, 1e-4);
	for (int i = 0; i < 200; i++)
		cbad_rate_calib_learn(&c, 8.0, cbad_values_calib_p_logp(&c, 8.0));
	ck_assert_double_eq(cbad_values_calib_p_logp(&c, 8.0), p0);
}
END_TEST

START_TEST(test_drop)
{
	cbad_rate *r;
	cbad_rate_verdict b, d;
	double pmin = 1;
	int drops = 0;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 8000; i++)
		feed(r, u01() < 0.3 ? "login" : "view", &b, &d);
	/* logins stop */
	for (int i = 0; i < 3000; i++) {
		feed(r, "view", &b, &d);
		if (d.valid && !strcmp(d.label, "login")) {
			drops++;
			if (d.p_value < pmin)
				pmin = d.p_value;
		}
	}
	ck_assert_int_gt(drops, 0);
	ck_assert_double_lt(pmin, 1e-3);
	cbad_rate_free(r);
}
END_TEST

/* The drop's floor is its count's law too: two kinds in strict alternation give one drop
 * statistic for thousands of events, and a calibrator of that history ranks any count a little
 * lower as a record. Four events of one missing in 256 are ordinary by the law. */
START_TEST(test_drop_not_below_law)
{
	cbad_rate *r;
	cbad_rate_verdict b, d;
	double pmin = 1.0;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 10000; i++) {
		bool a = i % 2 == 0 && !(i >= 9000 && i < 9008);

		feed(r, a ? "a" : "b", &b, &d);
		if (!d.valid)
			continue;
		ck_assert_double_ge(d.p_value,
				    pow(10.0, cbad_rate_log10_lower_ew(d.observed, d.expected,
								       CBAD_RATE_MID)) *
					    (1 - 1e-12));
		if (i >= 9000 && !strcmp(d.label, "a") && d.p_value < pmin)
			pmin = d.p_value;
	}
	ck_assert_double_gt(pmin, 0.01);
	cbad_rate_free(r);
}
END_TEST

/* With a stable mix, the burst p-value is calibrated: P(p < a) is not far above a. */
START_TEST(test_calibrated)
{
	static const char *const kinds[] = {"a", "bb", "ccc", "dddd", "eeeee"};
	static const double share[] = {0.5, 0.3, 0.15, 0.04, 0.01};
	cbad_rate *r;
	cbad_rate_verdict b, d;
	long n = 0, b2 = 0, b3 = 0;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	for (int i = 0; i < 60000; i++) {
		double u = u01(), acc = 0;
		int k = 0;

		for (; k < 4; k++) {
			acc += share[k];
			if (u < acc)
				break;
		}
		feed(r, kinds[k], &b, &d);
		if (b.valid) {
			n++;
			b2 += b.p_value < 0.01;
			b3 += b.p_value < 0.001;
		}
	}
	ck_assert_double_le((double)b2 / n, 0.02);
	ck_assert_double_le((double)b3 / n, 0.003);
	cbad_rate_free(r);
}
END_TEST

START_TEST(test_state)
{
	cbad_rate *r, *r2;
	cbad_rate_verdict b, d, b2, d2;
	cbad_writer w = {0};
	cbad_reader rd;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	ck_assert_int_eq(cbad_rate_new(&r2), 0);
	for (int i = 0; i < 3000; i++)
		feed(r, u01() < 0.1 ? "x" : "y", &b, &d);
	cbad_rate_save(r, &w);
	cbad_reader_init(&rd, w.buf, w.len);
	ck_assert_int_eq(cbad_rate_load(r2, &rd), 0);
	for (int i = 0; i < 2000; i++) {
		const char *k = u01() < 0.2 ? "x" : "y";

		feed(r, k, &b, &d);
		feed(r2, k, &b2, &d2);
		ck_assert(memcmp(&b, &b2, sizeof(b)) == 0);
		ck_assert(memcmp(&d, &d2, sizeof(d)) == 0);
	}
	cbad_reader_init(&rd, w.buf, w.len / 2);
	ck_assert_int_eq(cbad_rate_load(r2, &rd), -EINVAL);
	cbad_writer_free(&w);
	cbad_rate_free(r);
	cbad_rate_free(r2);
	cbad_rate_free(NULL);
}
END_TEST

/* An unlabeled table gives the same verdicts as a labeled one: a burst's label from the event,
 * a drop's key to rebuild it from, no label text; its state round trip is exact too. */
START_TEST(test_unlabeled)
{
	cbad_rate *r, *u, *u2;
	cbad_rate_verdict b, d, ub, ud;
	cbad_writer w = {0};
	cbad_reader rd;
	int drops = 0;

	ck_assert_int_eq(cbad_rate_new(&r), 0);
	ck_assert_int_eq(cbad_rate_new_unlabeled(&u), 0);
	ck_assert_int_eq(cbad_rate_new_unlabeled(&u2), 0);
	ck_assert_uint_lt(cbad_rate_memory(u), cbad_rate_memory(r));
	for (int i = 0; i < 11000; i++) {
		const char *k = i < 8000 && u01() < 0.3 ? "login" : (u01() < 0.05 ? "fail" : "view");

		feed(r, k, &b, &d);
		feed(u, k, &ub, &ud);
		ck_assert(b.valid == ub.valid && b.p_value == ub.p_value && b.stat == ub.stat);
		ck_assert_str_eq(b.label, ub.label);
		ck_assert(d.valid == ud.valid && d.p_value == ud.p_value && d.key == ud.key);
		ck_assert_str_eq(ud.label, "");
		drops += d.valid && !strcmp(d.label, "login") &&
			 d.key == strlen("login") * 1000003u + (uint64_t)'l';
		if (i == 9000) {
			cbad_rate_save(u, &w);
			cbad_reader_init(&rd, w.buf, w.len);
			ck_assert_int_eq(cbad_rate_load(u2, &rd), 0);
		}
		if (i > 9000) {
			feed(u2, k, &b, &d);
			ck_assert(memcmp(&b, &ub, sizeof(b)) == 0);
			ck_assert(memcmp(&d, &ud, sizeof(d)) == 0);
		}
	}
	ck_assert_int_gt(drops, 0);
	cbad_writer_free(&w);
	cbad_rate_free(r);
	cbad_rate_free(u);
	cbad_rate_free(u2);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cbad_rate");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_poisson_by_hand);
	tcase_add_test(tc, test_burst);
	tcase_add_test(tc, test_share_exact);
	tcase_add_test(tc, test_burst_not_below_poisson);
	tcase_add_test(tc, test_burst_floor_is_ew_law);
	tcase_add_test(tc, test_ew_helpers_exact);
	tcase_add_test(tc, test_lasting_change);
	tcase_add_test(tc, test_burst_unlearned);
	tcase_add_test(tc, test_long_burst);
	tcase_add_test(tc, test_calib_learn);
	tcase_add_test(tc, test_drop);
	tcase_add_test(tc, test_drop_not_below_law);
	tcase_add_test(tc, test_calibrated);
	tcase_add_test(tc, test_state);
	tcase_add_test(tc, test_unlabeled);
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
