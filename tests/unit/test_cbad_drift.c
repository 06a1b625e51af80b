/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_drift: compression metrics by hand, and drift of a window's mix of events. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <zstd.h>

#include "services/detector/cbad/cbad_drift.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 32);
}

/* C(x) as the test computes it, independently: zstd at level 3, no checksum, no size. */
static double c_of(const void *p, size_t n)
{
	static unsigned char out[65536];
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	size_t r;

	ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 0);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
	r = ZSTD_compress2(cc, out, sizeof(out), p, n);
	ZSTD_freeCCtx(cc);
	ck_assert(!ZSTD_isError(r));
	return (double)r;
}

START_TEST(test_ncd_by_hand)
{
	unsigned char x[2000], y[2000], xy[4000];
	double cx, cy, cxy, cxx;

	for (size_t i = 0; i < sizeof(x); i++) {
		x[i] = (unsigned char)next();
		y[i] = (unsigned char)next();
	}
	memcpy(xy, x, 2000);
	memcpy(xy + 2000, y, 2000);
	cx = c_of(x, 2000);
	cy = c_of(y, 2000);
	cxy = c_of(xy, 4000);
	ck_assert_double_eq_tol(cbad_drift_ncd(x, 2000, y, 2000, 3),
				(cxy - fmin(cx, cy)) / fmax(cx, cy), 1e-12);
	memcpy(xy + 2000, x, 2000);
	cxx = c_of(xy, 4000);
	ck_assert_double_eq_tol(cbad_drift_ncd(x, 2000, x, 2000, 3), (cxx - cx) / cx, 1e-12);
	/* Identical random inputs are close; independent random inputs are far. */
	ck_assert_double_lt(cbad_drift_ncd(x, 2000, x, 2000, 3), 0.05);
	ck_assert_double_gt(cbad_drift_ncd(x, 2000, y, 2000, 3), 0.95);
	ck_assert_double_eq(cbad_drift_ncd("", 0, "", 0, 3), 0);
	ck_assert_double_eq_tol(cbad_drift_ratio(x, 2000, 3), cx / 2000, 1e-12);
	ck_assert_double_eq(cbad_drift_ratio("", 0, 3), 1.0);
}
END_TEST

START_TEST(test_entropy_by_hand)
{
	unsigned char all[256];

	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	ck_assert_double_eq_tol(cbad_drift_entropy("aabb", 4), 1.0, 1e-12);
	ck_assert_double_eq_tol(cbad_drift_entropy("aaaa", 4), 0.0, 1e-12);
	/* H(2/3, 1/3) = log2(3) - 2/3 */
	ck_assert_double_eq_tol(cbad_drift_entropy("aab", 3), log2(3.0) - 2.0 / 3, 1e-12);
	ck_assert_double_eq_tol(cbad_drift_entropy(all, 256), 8.0, 1e-12);
	ck_assert_double_eq(cbad_drift_entropy("", 0), 0);
}
END_TEST

/* Mix: share_b of template 2, the rest template 1. */
static int feed(cbad_drift *d, int n, double share_b, int64_t *ts, double *min_p, int *nlow)
{
	cbad_drift_report rep;
	int evals = 0;

	for (int i = 0; i < n; i++) {
		uint64_t t = (next() % 1000) < share_b * 1000 ? 2 : 1;

		if (cbad_drift_observe(d, t, (*ts)++, true, &rep)) {
			evals++;
			if (rep.p_value < *min_p)
				*min_p = rep.p_value;
			*nlow += rep.p_value < 0.01;
			cbad_drift_verdict(d, &rep, rep.p_value < 0.001);
			ck_assert_uint_eq(rep.events, 64);
			ck_assert(rep.end_ts > rep.start_ts);
		}
	}
	return evals;
}

START_TEST(test_mix_shift_found)
{
	cbad_drift *d;
	int64_t ts = 0;
	double min_p = 1;
	int nlow = 0, evals;

	ck_assert_int_eq(cbad_drift_new(64, 256, &d), 0);
	/* A stable mix: windows look like the baseline; few small p-values. */
	evals = feed(d, 6000, 0.1, &ts, &min_p, &nlow);
	ck_assert_int_gt(evals, 300);
	ck_assert_int_le(nlow, evals / 20);
	/* The rare template becomes the majority. */
	min_p = 1;
	nlow = 0;
	feed(d, 64, 0.9, &ts, &min_p, &nlow);
	ck_assert_double_lt(min_p, 0.001);
	{
		double share = 0;

		ck_assert_double_gt(cbad_drift_overrep(d, 2, &share), 3);
		ck_assert_double_gt(share, 0.5);
		ck_assert_double_lt(cbad_drift_overrep(d, 1, &share), 1);
	}
	cbad_drift_free(d);
}
END_TEST

/* The share of the drifting template among the newest events: by hand. */
START_TEST(test_recent_share)
{
	cbad_drift *d;
	cbad_drift_report rep, last = {0};
	int64_t ts = 0;

	ck_assert_int_eq(cbad_drift_new(64, 256, &d), 0);
	for (int i = 0; i < 400; i++)
		cbad_drift_observe(d, 1, ts++, true, &rep);
	for (int i = 0; i < 32; i++)
		if (cbad_drift_observe(d, 2, ts++, true, &rep))
			last = rep;
	/* The window holds 32 events of template 1, then 32 of template 2. */
	ck_assert_double_eq_tol(last.top_share, 0.5, 1e-12);
	ck_assert_double_eq_tol(cbad_drift_recent_share(d, last.top_bucket, 16), 1.0, 1e-12);
	ck_assert_double_eq_tol(cbad_drift_recent_share(d, last.top_bucket, 48), 32.0 / 48, 1e-12);
	ck_assert_double_eq_tol(cbad_drift_recent_share(d, last.top_bucket, 1000), 0.5, 1e-12);
	ck_assert_double_eq_tol(cbad_drift_recent_share(d, last.top_bucket, 0), 0.0, 1e-12);
	cbad_drift_free(d);
}
END_TEST

START_TEST(test_state_round_trip)
{
	cbad_drift *a, *b;
	cbad_writer w = {0};
	cbad_reader r;
	cbad_drift_report ra, rb;
	int64_t ts = 0;
	double min_p = 1;
	int nlow = 0;

	ck_assert_int_eq(cbad_drift_new(64, 256, &a), 0);
	ck_assert_int_eq(cbad_drift_new(64, 256, &b), 0);
	feed(a, 2000, 0.3, &ts, &min_p, &nlow);
	cbad_drift_save(a, &w);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_drift_load(b, &r), 0);
	for (int i = 0; i < 1000; i++) {
		uint64_t t = next() % 3;
		bool ea = cbad_drift_observe(a, t, i, true, &ra);
		bool eb = cbad_drift_observe(b, t, i, true, &rb);

		ck_assert_int_eq(ea, eb);
		if (ea) {
			ck_assert_double_eq(ra.kl_bits, rb.kl_bits);
			ck_assert_double_eq(ra.p_value, rb.p_value);
			cbad_drift_verdict(a, &ra, false);
			cbad_drift_verdict(b, &rb, false);
		}
	}
	cbad_reader_init(&r, w.buf, w.len - 3);
	ck_assert_int_eq(cbad_drift_load(b, &r), -EINVAL);
	cbad_writer_free(&w);
	cbad_drift_free(a);
	cbad_drift_free(b);
}
END_TEST

int main(void)
{
	Suite *su = suite_create("cbad_drift");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_ncd_by_hand);
	tcase_add_test(tc, test_entropy_by_hand);
	tcase_add_test(tc, test_mix_shift_found);
	tcase_add_test(tc, test_recent_share);
	tcase_add_test(tc, test_state_round_trip);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
