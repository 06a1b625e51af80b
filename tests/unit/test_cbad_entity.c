/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for cbad_entity: an entity judged against its own history, hours, bounded memory, state. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_entity.h"
#include "services/detector/cbad/cbad_json.h"
#include "services/detector/cbad/cbad_values.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

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

static uint64_t key_of(const char *s)
{
	return cbad_json_hash(CBAD_JSON_HASH_INIT, s, strlen(s));
}

static double find(const cbad_entity_signal *s, size_t n, cbad_entity_what w)
{
	double p = 1;

	for (size_t i = 0; i < n; i++)
		if (s[i].what == w && s[i].p_value < p)
			p = s[i].p_value;
	return p;
}

/* Ten hosts, each at its own CPU level (10, 20, ... 100): 95 is normal for the fleet, not for
 * the host that usually sits at 20. */
START_TEST(test_own_history)
{
	cbad_entity *e;
	cbad_entity_signal s[32];
	char name[16];
	uint64_t t = 0;
	size_t k;
	double v[1];

	ck_assert_int_eq(cbad_entity_new(64, 1, &e), 0);
	for (int round = 0; round < 200; round++)
		for (int h = 0; h < 10; h++) {
			snprintf(name, sizeof(name), "web-%d", h);
			v[0] = 10.0 * (h + 1) + gauss();
			cbad_entity_observe(e, key_of(name), name, strlen(name), v, -1, false, t++,
					    true, s, 32);
		}
	ck_assert_uint_eq(cbad_entity_count(e), 10);
	v[0] = 95.0;
	k = cbad_entity_observe(e, key_of("web-1"), "web-1", 5, v, -1, false, t++, true, s, 32);
	ck_assert_double_lt(find(s, k, CBAD_ENTITY_SPIKE), 1e-4);
	ck_assert_str_eq(cbad_entity_last_label(e), "web-1");
	v[0] = 90.3; /* web-8's own level is 90 */
	k = cbad_entity_observe(e, key_of("web-8"), "web-8", 5, v, -1, false, t++, true, s, 32);
	ck_assert_double_gt(find(s, k, CBAD_ENTITY_SPIKE), 0.01);
	/* a stuck host: its own value repeated */
	for (int i = 0; i < 8; i++) {
		v[0] = 33.3;
		k = cbad_entity_observe(e, key_of("web-2"), "web-2", 5, v, -1, false, t++, true, s,
					32);
	}
	ck_assert_double_lt(find(s, k, CBAD_ENTITY_FLAT), 1e-4);
	cbad_entity_free(e);
}
END_TEST

/* A user who acts 9:00-17:00 for weeks, then at 03:00. */
START_TEST(test_hours)
{
	cbad_entity *e;
	cbad_entity_signal s[8];
	uint64_t t = 0;
	size_t k;
	double pday = 1, pnight;

	ck_assert_int_eq(cbad_entity_new(64, 0, &e), 0);
	for (int i = 0; i < 3000; i++) {
		char name[16];
		int u = (int)(u01() * 20);
		int hour = 9 + (int)(u01() * 8);

		if (u >= 15) /* service accounts act around the clock */
			hour = (int)(u01() * 24);
		snprintf(name, sizeof(name), "user%d", u);
		/* 150 events a day: 20 days */
		cbad_entity_observe(e, key_of(name), name, strlen(name), NULL, (i / 150) * 24 + hour,
				    true, t++, true, s, 8);
	}
	k = cbad_entity_observe(e, key_of("user3"), "user3", 5, NULL, 20 * 24 + 11, true, t++, false,
				s, 8);
	pday = find(s, k, CBAD_ENTITY_HOUR);
	k = cbad_entity_observe(e, key_of("user3"), "user3", 5, NULL, 20 * 24 + 3, true, t++, false,
				s, 8);
	pnight = find(s, k, CBAD_ENTITY_HOUR);
	ck_assert_double_gt(pday, 0.05);
	ck_assert_double_lt(pnight, 2e-3);
	/* for a service account, 03:00 is ordinary */
	k = cbad_entity_observe(e, key_of("user17"), "user17", 6, NULL, 20 * 24 + 3, true, t++, false,
				s, 8);
	ck_assert_double_gt(find(s, k, CBAD_ENTITY_HOUR), 0.01);
	/* and it could never be strange at any hour (its smallest possible p is above the default
	 * alpha), while the office user's could be as small as its night's */
	for (size_t i = 0; i < k; i++)
		if (s[i].what == CBAD_ENTITY_HOUR)
			ck_assert_double_gt(s[i].p_min, 1e-3);
	k = cbad_entity_observe(e, key_of("user3"), "user3", 5, NULL, 20 * 24 + 12, true, t++, false,
				s, 8);
	for (size_t i = 0; i < k; i++)
		if (s[i].what == CBAD_ENTITY_HOUR) {
			ck_assert_double_le(s[i].p_min, pnight * (1 + 1e-9));
			ck_assert_double_le(s[i].p_min, s[i].p_value);
			pday = s[i].p_min;
		}
	/* computed once a day: the same later that day, even after other entities' events moved
	 * the calibration */
	for (int i = 0; i < 50; i++) {
		char name[16];

		snprintf(name, sizeof(name), "user%d", (int)(u01() * 20));
		cbad_entity_observe(e, key_of(name), name, strlen(name), NULL, 20 * 24 + 13, true,
				    t++, true, s, 8);
	}
	k = cbad_entity_observe(e, key_of("user3"), "user3", 5, NULL, 20 * 24 + 14, true, t++, false,
				s, 8);
	for (size_t i = 0; i < k; i++)
		if (s[i].what == CBAD_ENTITY_HOUR)
			ck_assert_double_eq(s[i].p_min, pday);
	cbad_entity_free(e);
}
END_TEST

/* Entities are bounded: 5000 distinct ones through a table of 64; the recently seen stay. */
START_TEST(test_bounded)
{
	cbad_entity *e;
	cbad_entity_signal s[8];
	double v[2] = {1, 2};
	size_t mem;
	bool fresh_found = false;

	ck_assert_int_eq(cbad_entity_new(64, 2, &e), 0);
	for (uint64_t i = 0; i < 5000; i++) {
		char name[16];

		snprintf(name, sizeof(name), "ip%llu", (unsigned long long)i);
		cbad_entity_observe(e, key_of(name), name, strlen(name), v, -1, false, i, true, s, 8);
		/* a regular keeps coming back */
		cbad_entity_observe(e, key_of("regular"), "regular", 7, v, -1, false, i, true, s, 8);
	}
	ck_assert_uint_le(cbad_entity_count(e), 64);
	mem = cbad_entity_memory(e);
	ck_assert_uint_le(mem, 64 * (128 + 2 * 40) + 16 * 1024 + 4096);
	/* the regular was never evicted: its history has all 5000 visits' worth of rate */
	cbad_entity_observe(e, key_of("regular"), "regular", 7, v, -1, false, 5000, false, s, 8);
	for (size_t i = 0; i < 8; i++)
		if (s[i].what == CBAD_ENTITY_RATE)
			fresh_found = s[i].base_median > 10; /* ~half of every 128 events */
	ck_assert(fresh_found);
	cbad_entity_free(e);
	cbad_entity_free(NULL);
	ck_assert_int_eq(cbad_entity_new(0, 1, &e), -EINVAL);
}
END_TEST

/* A long burst from one entity (one event in eight for 1400 events, a scan of a couple of
 * minutes) is judged against its share before the burst to its end: its expected count stays
 * near its old share, and its last events are as strange as its first ones. Learned throughout,
 * as the detector does when only this channel finds them strange. */
START_TEST(test_long_burst)
{
	cbad_entity *e;
	cbad_entity_signal s[8];
	double v[1] = {NAN};
	uint64_t t = 0;
	double exp_first = -1, exp_last = 0, p_last = 1;

	ck_assert_int_eq(cbad_entity_new(256, 1, &e), 0);
	/* 200 ordinary clients, the future scanner among them at its ordinary share */
	for (; t < 8000; t++) {
		char name[16];

		snprintf(name, sizeof(name), "c%d", (int)(u01() * 200));
		cbad_entity_observe(e, key_of(name), name, strlen(name), v, -1, false, t, true, s, 8);
	}
	for (int b = 0; b < 1400; b++, t++) {
		char name[16];
		size_t k;

		if (b % 8 == 0)
			snprintf(name, sizeof(name), "c7");
		else
			snprintf(name, sizeof(name), "c%d", (int)(u01() * 200));
		k = cbad_entity_observe(e, key_of(name), name, strlen(name), v, -1, false, t, true, s,
					8);
		if (b % 8 != 0)
			continue;
		for (size_t i = 0; i < k; i++) {
			if (s[i].what != CBAD_ENTITY_RATE)
				continue;
			if (exp_first < 0 && b >= 256)
				exp_first = s[i].base_median;
			exp_last = s[i].base_median;
			p_last = s[i].p_value;
		}
	}
	/* one client in 200 is about 0.64 of 128 events, the burst about 16 of them; the EW shares
	 * only approximate windows, so part of the burst still leaks into the baseline (1.9 at the
	 * end; 4.7 when the baseline was the share before the last 128 events) */
	ck_assert_double_gt(exp_first, 0);
	ck_assert_double_lt(exp_last, 2.5);
	ck_assert_double_lt(p_last, 1e-3);
	/* the burst ends; 64 events later the client comes back once: its 128-event count still
	 * holds about 10 of the burst's events, but nothing of it is going on now */
	for (int b = 0; b < 64; b++, t++) {
		char name[16];

		snprintf(name, sizeof(name), "c%d", 8 + (int)(u01() * 192));
		cbad_entity_observe(e, key_of(name), name, strlen(name), v, -1, false, t, true, s, 8);
	}
	{
		size_t k = cbad_entity_observe(e, key_of("c7"), "c7", 2, v, -1, false, t++, true, s, 8);

		ck_assert_double_gt(find(s, k, CBAD_ENTITY_RATE), 0.01);
	}
	cbad_entity_free(e);
}
END_TEST

/* The entity's burst is never rarer than its statistic's law (the weighted count's, as the
 * stream's burst): two entities in strict alternation give the calibrator one constant count,
 * so a few extra events of one would rank as a record, while the law finds them ordinary. */
START_TEST(test_burst_not_below_law)
{
	cbad_entity *e;
	cbad_entity_signal s[8];
	double v[1] = {NAN};
	uint64_t t = 0;
	double pmin = 1.0;

	ck_assert_int_eq(cbad_entity_new(16, 1, &e), 0);
	for (; t < 40000; t++) {
		const char *name = t % 2 ? "b" : "a";

		cbad_entity_observe(e, key_of(name), name, 1, v, -1, false, t, true, s, 8);
	}
	for (int i = 0; i < 4; i++, t++) {
		size_t k = cbad_entity_observe(e, key_of("a"), "a", 1, v, -1, false, t, true, s, 8);

		if (find(s, k, CBAD_ENTITY_RATE) < pmin)
			pmin = find(s, k, CBAD_ENTITY_RATE);
	}
	ck_assert_double_gt(pmin, 0.05);
	cbad_entity_free(e);
}
END_TEST

/* Ten hosts with their own levels and autocorrelated noise; one steps up by 8 of its sigmas
 * and stays there. The spike and step tests of the value model see its first values only (the
 * one-step prediction catches up within ~8 values); the long-run level step keeps the strange
 * p for the values after, and a lone spike of the same size is no level step. A field left out
 * of the level mask (a status code) gets no level test. */
START_TEST(test_level_step)
{
	cbad_entity *e;
	cbad_entity_signal s[32];
	double ar[10] = {0}, v[1];
	uint64_t t = 0;
	size_t k;
	int strange = 0;

	ck_assert_int_eq(cbad_entity_new(64, 1, &e), 0);
	for (int round = 0; round < 600; round++)
		for (int h = 0; h < 10; h++) {
			char name[16];

			snprintf(name, sizeof(name), "h%d", h);
			ar[h] = 0.7 * ar[h] + 0.71 * gauss();
			v[0] = 10.0 * (h + 1) + (h == 3 && round == 400 ? 8.0 : ar[h]);
			k = cbad_entity_observe(e, key_of(name), name, strlen(name), v, -1, false, t++,
						true, s, 32);
			/* the lone spike's next value is back at its level: no level step */
			if (h == 3 && round == 401)
				ck_assert_double_gt(find(s, k, CBAD_ENTITY_LEVEL), 0.01);
		}
	/* h3 steps up by 8 sigma and stays */
	for (int round = 0; round < 30; round++)
		for (int h = 0; h < 10; h++) {
			char name[16];

			snprintf(name, sizeof(name), "h%d", h);
			ar[h] = 0.7 * ar[h] + 0.71 * gauss();
			v[0] = 10.0 * (h + 1) + ar[h] + (h == 3 ? 8.0 : 0.0);
			k = cbad_entity_observe(e, key_of(name), name, strlen(name), v, -1, false, t++,
						true, s, 32);
			if (h == 3 && round >= 2 && round < 20)
				strange += find(s, k, CBAD_ENTITY_LEVEL) < 1e-3;
			if (h != 3)
				ck_assert_double_gt(find(s, k, CBAD_ENTITY_LEVEL), 1e-4);
		}
	ck_assert_int_ge(strange, 15);
	/* left out of the level mask: no level test at all */
	cbad_entity_set_level_mask(e, 0);
	v[0] = 1000.0;
	k = cbad_entity_observe(e, key_of("h3"), "h3", 2, v, -1, false, t++, true, s, 32);
	ck_assert_double_eq(find(s, k, CBAD_ENTITY_LEVEL), 1.0);
	cbad_entity_free(e);
}
END_TEST

START_TEST(test_state)
{
	cbad_entity *a, *b;
	cbad_entity_signal s1[16], s2[16];
	cbad_writer w = {0};
	cbad_reader r;
	uint64_t t = 0;
	size_t nhour = 0;

	ck_assert_int_eq(cbad_entity_new(32, 1, &a), 0);
	ck_assert_int_eq(cbad_entity_new(32, 1, &b), 0);
	for (int i = 0; i < 2000; i++) {
		char name[8];
		double v = u01() * 10;

		snprintf(name, sizeof(name), "h%d", i % 7);
		/* 20 events an hour: hour tests and their daily smallest p (saved) from day 2 */
		cbad_entity_observe(a, key_of(name), name, strlen(name), &v, (int64_t)(t / 20), true,
				    t, true, s1, 16);
		t++;
	}
	cbad_entity_save(a, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_entity_load(b, &r), 0);
	for (int i = 0; i < 500; i++) {
		char name[8];
		double v = u01() * 10;
		size_t k1, k2;

		snprintf(name, sizeof(name), "h%d", i % 9);
		k1 = cbad_entity_observe(a, key_of(name), name, strlen(name), &v, (int64_t)(t / 20),
					 true, t, true, s1, 16);
		k2 = cbad_entity_observe(b, key_of(name), name, strlen(name), &v, (int64_t)(t / 20),
					 true, t, true, s2, 16);
		t++;
		ck_assert_uint_eq(k1, k2);
		ck_assert(memcmp(s1, s2, k1 * sizeof(s1[0])) == 0);
		for (size_t j = 0; j < k1; j++)
			nhour += s1[j].what == CBAD_ENTITY_HOUR;
	}
	ck_assert_uint_gt(nhour, 0);
	cbad_entity_free(b);
	ck_assert_int_eq(cbad_entity_new(32, 1, &b), 0);
	cbad_reader_init(&r, w.buf, w.len - 10);
	ck_assert_int_eq(cbad_entity_load(b, &r), -EINVAL);
	cbad_writer_free(&w);
	cbad_entity_free(a);
	cbad_entity_free(b);
}
END_TEST

/* Per value field state only for the value fields there are, and a table of one saves and
 * loads to the same bytes (the format keeps CBAD_ENTITY_MAX_VALUES of each). */
START_TEST(test_values_sized)
{
	cbad_entity *e1, *e4, *b;
	cbad_entity_signal s1[16];
	cbad_writer w1 = {0}, w2 = {0};
	cbad_reader r;
	size_t per = sizeof(cbad_values_lcalib) + 2 * sizeof(cbad_values_calib) +
		     sizeof(cbad_values_runs);

	ck_assert_int_eq(cbad_entity_new(32, 1, &e1), 0);
	ck_assert_int_eq(cbad_entity_new(32, 4, &e4), 0);
	ck_assert_uint_eq(cbad_entity_memory(e4) - cbad_entity_memory(e1), 3 * per);
	for (int i = 0; i < 1000; i++) {
		char name[8];
		double v = u01() * 10;

		snprintf(name, sizeof(name), "h%d", i % 5);
		cbad_entity_observe(e1, key_of(name), name, strlen(name), &v, i % 24, true,
				    (uint64_t)i, true, s1, 16);
	}
	cbad_entity_save(e1, &w1);
	ck_assert(!w1.failed);
	ck_assert_int_eq(cbad_entity_new(32, 1, &b), 0);
	cbad_reader_init(&r, w1.buf, w1.len);
	ck_assert_int_eq(cbad_entity_load(b, &r), 0);
	ck_assert_uint_eq(r.off, w1.len);
	ck_assert_uint_eq(cbad_entity_memory(b), cbad_entity_memory(e1));
	cbad_entity_save(b, &w2);
	ck_assert_uint_eq(w2.len, w1.len);
	ck_assert(memcmp(w1.buf, w2.buf, w1.len) == 0);
	cbad_writer_free(&w1);
	cbad_writer_free(&w2);
	cbad_entity_free(b);
	cbad_entity_free(e1);
	cbad_entity_free(e4);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cbad_entity");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_own_history);
	tcase_add_test(tc, test_hours);
	tcase_add_test(tc, test_bounded);
	tcase_add_test(tc, test_long_burst);
	tcase_add_test(tc, test_burst_not_below_law);
	tcase_add_test(tc, test_level_step);
	tcase_add_test(tc, test_state);
	tcase_add_test(tc, test_values_sized);
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
