/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for cbad_numeric: signals of the three channels, entity heuristic, calibration, determinism, state. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_numeric.h"
#include "services/detector/cbad/cbad_rate.h"

typedef struct gen {
	uint64_t s;
} gen;

static double u01(gen *g)
{
	g->s ^= g->s << 13;
	g->s ^= g->s >> 7;
	g->s ^= g->s << 17;
	return ((double)(g->s >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(gen *g)
{
	return sqrt(-2 * log(u01(g))) * cos(6.283185307179586 * u01(g));
}

/* A host-metrics-like event: 12 hosts at their own levels, a unique request id, a status. */
static int make_event(gen *g, int i, char *buf, size_t cap, int host, double cpu)
{
	return snprintf(buf, cap,
			"{\"ts\":\"t%d\",\"req\":\"r%08x\",\"host\":\"h%02d\",\"status\":\"%s\","
			"\"m\":{\"cpu\":%.1f,\"mem\":%.1f}}",
			i, (unsigned)(u01(g) * 4e9), host, u01(g) < 0.05 ? "fail" : "ok", cpu,
			50 + 3 * gauss(g));
}

static cbad_numeric *make(void)
{
	cbad_settings s;
	cbad_numeric *n = NULL;
	char err[128];

	cbad_settings_default(&s);
	ck_assert_int_eq(cbad_numeric_new(&s, &n, err, sizeof(err)), 0);
	return n;
}

/* Observes (and learns) the i-th event buf[0..len) of a stream with an event every 500 ms. */
static size_t observe_nth(cbad_numeric *n, const char *buf, int len, int i, uint64_t tmpl,
			  cbad_chan_signal *out, size_t max)
{
	cbad_event_view v = {.raw = buf, .len = (size_t)len, .ts_ms = 1700000000000LL + i * 500,
			     .template_id = tmpl};

	return cbad_numeric_observe(n, &v, true, out, max);
}

static size_t step(cbad_numeric *n, gen *g, int i, int host, double cpu, cbad_chan_signal *out,
		   size_t max)
{
	char buf[256];
	int len = make_event(g, i, buf, sizeof(buf), host, cpu);

	return observe_nth(n, buf, len, i, 42, out, max);
}

static double normal_cpu(gen *g, int host)
{
	return 10.0 + 6.0 * host + gauss(g);
}

static const cbad_chan_signal *named(const cbad_chan_signal *s, size_t k, const char *prefix)
{
	for (size_t i = 0; i < k; i++)
		if (!strncmp(s[i].name, prefix, strlen(prefix)))
			return &s[i];
	return NULL;
}

START_TEST(test_heuristic_and_entity_spike)
{
	cbad_numeric *n = make();
	gen g = {0x1234567};
	cbad_chan_signal s[8];
	char ef[4][CBAD_FIELD_NAME_MAX];
	size_t k;
	int i = 0;

	ck_assert_uint_eq(cbad_numeric_entity_fields(n, ef, 4), 0);
	for (; i < 4000; i++)
		step(n, &g, i, i % 12, normal_cpu(&g, i % 12), s, 8);
	/* host recurs: an entity; req is unique, status has 2 values, ts is unique */
	ck_assert_uint_eq(cbad_numeric_entity_fields(n, ef, 4), 1);
	ck_assert_str_eq(ef[0], "host");
	/* host 1 (usually 16) at 70: ordinary for the fleet (10..76), not for host 1 */
	k = step(n, &g, i++, 1, 70.0, s, 8);
	ck_assert_uint_gt(k, 0);
	ck_assert_int_eq(s[0].kind, CBAD_KIND_ENTITY);
	ck_assert_str_eq(s[0].name, "entity:host:m.cpu");
	ck_assert_str_eq(s[0].entity_field, "host");
	ck_assert_str_eq(s[0].entity_value, "h01");
	ck_assert_double_lt(s[0].p_value, 1e-3);
	ck_assert(s[0].base_high < 30 && s[0].base_low > 5);
	ck_assert_msg(strstr(s[0].detail, "h01") && strstr(s[0].detail, "m.cpu"), "detail: %s",
		      s[0].detail);
	for (size_t j = 1; j < k; j++)
		ck_assert_double_ge(s[j].p_value, s[j - 1].p_value);
	cbad_numeric_free(n);
}
END_TEST

/* Host 1 (usually 16) steps to 70 and stays: past its first values, which the spike and step
 * tests see, the long-run level step carries it (calibrated on its own, beside the entity
 * kind), named for the host and the field. */
START_TEST(test_entity_level_step)
{
	cbad_numeric *n = make();
	gen g = {0x7654321};
	cbad_chan_signal s[16];
	int i = 0, strange = 0;

	for (; i < 4000; i++)
		step(n, &g, i, i % 12, normal_cpu(&g, i % 12), s, 16);
	for (int r = 0; r < 12; r++)
		for (int h = 0; h < 12; h++, i++) {
			size_t k = step(n, &g, i, h, h == 1 ? 70.0 + gauss(&g) : normal_cpu(&g, h), s,
					16);

			for (size_t j = 0; h == 1 && r >= 2 && j < k; j++)
				if (!strcmp(s[j].name, "level:host:m.cpu") && s[j].p_value < 1e-3) {
					ck_assert_int_eq(s[j].kind, CBAD_KIND_ENTITY);
					ck_assert_str_eq(s[j].entity_value, "h01");
					strange++;
				}
		}
	ck_assert_int_ge(strange, 8);
	cbad_numeric_free(n);
}
END_TEST

/* A host with a numeric status code: hosts 0-5 sometimes answer 404, hosts 6-11 never. */
static size_t code_step(cbad_numeric *n, gen *g, int i, int host, int code, cbad_chan_signal *out,
			size_t max)
{
	char buf[256];
	int len = snprintf(buf, sizeof(buf), "{\"ts\":\"t%d\",\"host\":\"h%02d\",\"code\":%d,"
			   "\"cpu\":%.1f}", i, host, code, normal_cpu(g, host));

	return observe_nth(n, buf, len, i, 7, out, max);
}

/* A numeric field that is a rate kind's categories (a status code) has no magnitude: a host
 * that always answered 200 answering 404 is no value far above its usual ones (its share is
 * the rate kind's), while its cpu is still judged against its own history. */
START_TEST(test_entity_codes_not_values)
{
	cbad_numeric *n = make();
	gen g = {0x5150};
	cbad_chan_signal s[16];
	size_t k;
	int i = 0;

	for (; i < 4000; i++) {
		int h = i % 12;

		code_step(n, &g, i, h, h < 6 && u01(&g) < 0.1 ? 404 : 200, s, 16);
	}
	k = code_step(n, &g, i++, 7, 404, s, 16);
	for (size_t j = 0; j < k; j++)
		ck_assert_msg(!strstr(s[j].name, "host:code"), "%s p %g", s[j].name, s[j].p_value);
	cbad_numeric_free(n);
}
END_TEST

START_TEST(test_value_and_rate)
{
	cbad_numeric *n = make();
	gen g = {0xabcdef};
	cbad_chan_signal s[16];
	const cbad_chan_signal *v;
	double pmin = 1;
	size_t k;
	int i = 0;

	for (; i < 3000; i++)
		step(n, &g, i, i % 12, normal_cpu(&g, i % 12), s, 16);
	/* a memory spike on the whole stream */
	{
		char buf[256];
		int len = snprintf(buf, sizeof(buf),
				   "{\"host\":\"h03\",\"status\":\"ok\",\"m\":{\"cpu\":28,\"mem\":400}}");
		cbad_event_view ev = {.raw = buf, .len = (size_t)len, .ts_ms = 1700001500000LL,
				      .template_id = 42};

		k = cbad_numeric_observe(n, &ev, false, s, 16);
		v = named(s, k, "value:m.mem");
		ck_assert_ptr_nonnull(v);
		ck_assert_double_lt(v->p_value, 1e-3);
		ck_assert_int_eq(v->kind, CBAD_KIND_VALUE);
		ck_assert(v->value == 400.0);
		ck_assert_double_eq_tol(v->base_median, 50, 3);
	}
	/* a burst of failures: most events fail for a while */
	for (int b = 0; b < 40; b++, i++) {
		char buf[256];
		int len = snprintf(buf, sizeof(buf),
				   "{\"host\":\"h%02d\",\"status\":\"fail\",\"m\":{\"cpu\":%.1f,\"mem\":50}}",
				   i % 12, normal_cpu(&g, i % 12));
		cbad_event_view ev = {.raw = buf, .len = (size_t)len,
				      .ts_ms = 1700000000000LL + i * 500, .template_id = 42};

		k = cbad_numeric_observe(n, &ev, true, s, 16);
		v = named(s, k, "rate:status=fail");
		if (v && v->p_value < pmin)
			pmin = v->p_value;
	}
	ck_assert_double_lt(pmin, 1e-4);
	cbad_numeric_free(n);
}
END_TEST

/* A series of a quantised measurement (4 fractional levels) beside an integer code: the
 * measurement's levels are not categories (no rate:value=... kind), the code's values are (a
 * burst of code=503 is a rate anomaly), and a value beyond the range the series kept over its
 * long history is a level anomaly, named "level:value" in the value kind. */
START_TEST(test_level_values)
{
	cbad_numeric *n = make();
	gen g = {0x5eed};
	cbad_chan_signal s[16];
	const cbad_chan_signal *v;
	size_t k = 0;
	bool any_cat = false;
	double pcode = 1;

	for (int i = 0; i < 3040; i++) {
		char buf[64];
		int len = snprintf(buf, sizeof(buf), "{\"value\":%.2f,\"code\":%d}",
				   1.5 + 0.25 * (int)(u01(&g) * 4),
				   i >= 3000 || u01(&g) < 0.02 ? 503 : 200);
		cbad_event_view ev = {.raw = buf, .len = (size_t)len,
				      .ts_ms = 1700000000000LL + i * 300000LL, .template_id = 7};

		k = cbad_numeric_observe(n, &ev, true, s, 16);
		any_cat |= named(s, k, "rate:value=") != NULL;
		if (i >= 3000 && named(s, k, "rate:code=503"))
			pcode = fmin(pcode, named(s, k, "rate:code=503")->p_value);
	}
	ck_assert(!any_cat);
	ck_assert_double_lt(pcode, 1e-3);
	{
		char buf[64];
		int len = snprintf(buf, sizeof(buf), "{\"value\":%.2f,\"code\":200}", 9.0);
		cbad_event_view ev = {.raw = buf, .len = (size_t)len,
				      .ts_ms = 1700000000000LL + 3040 * 300000LL, .template_id = 7};

		k = cbad_numeric_observe(n, &ev, false, s, 16);
	}
	v = named(s, k, "level:value");
	ck_assert_ptr_nonnull(v);
	ck_assert_int_eq(v->kind, CBAD_KIND_VALUE);
	ck_assert(v->value == 9.0);
	ck_assert_double_lt(v->p_value, 1e-3);
	ck_assert_double_eq_tol(v->base_median, 1.875, 0.1);
	cbad_numeric_free(n);
}
END_TEST

/* A value of an identifier field (many values that recur, not an entity field) that suddenly
 * sends many events is a burst: "user=u999 occurred 20 times in the last 33 events". */
/* A ramp: the one-step prediction lags by the same amount at every value, so every spike
 * statistic is the same and the kind's statistic is constant. A value 1 % of a step off the
 * ramp (z 1.13 against 1.00) is ordinary by the normal law; calibrated by rank alone it was a
 * record in both calibrators (value kind p 9e-4, flagged). A real spike still is one. */
static double ramp_value_p(double bump)
{
	cbad_numeric *n = make();
	cbad_chan_signal s[16];
	const cbad_chan_signal *v;
	size_t k = 0;
	double p;

	for (int i = 0; i <= 3000; i++) {
		char buf[64];
		int len = snprintf(buf, sizeof(buf), "{\"value\":%.4f}",
				   0.01 * i + (i == 3000 ? bump : 0.0));
		cbad_event_view ev = {.raw = buf, .len = (size_t)len,
				      .ts_ms = 1700000000000LL + i * 300000LL, .template_id = 7};

		k = cbad_numeric_observe(n, &ev, i < 3000, s, 16);
	}
	v = named(s, k, "value:value");
	ck_assert_ptr_nonnull(v);
	p = v->p_value;
	cbad_numeric_free(n);
	return p;
}

/* A slow ramp (0.05 sigma more each value) keeps every value and every pair ordinary for the
 * spike and step tests, whose fast predictor follows it, but its prediction errors stay on one
 * side: the CUSUM ("cusum:value") sums them and is the strongest value test on the ramp, while
 * on the noise before it stays ordinary. */
START_TEST(test_cusum_slow_ramp)
{
	for (uint64_t seed = 0; seed < 4; seed++) {
		cbad_numeric *n = make();
		gen g = {0x5eedull + seed * 7919};
		cbad_chan_signal s[32];
		double pre = 1, cus = 1, shift = 1, spike = 1;

		for (int i = 0; i < 3100; i++) {
			char buf[64];
			double x = 50 + gauss(&g) + (i >= 3000 ? 0.05 * (i - 3000) : 0.0);
			int len = snprintf(buf, sizeof(buf), "{\"value\":%.4f}", x);
			cbad_event_view ev = {.raw = buf, .len = (size_t)len,
					      .ts_ms = 1700000000000LL + i * 300000LL, .template_id = 7};
			size_t k = cbad_numeric_observe(n, &ev, true, s, 32);

			for (size_t j = 0; j < k; j++) {
				double p = s[j].p_value;

				if (!strcmp(s[j].name, "cusum:value")) {
					if (i >= 1000 && i < 3000)
						pre = fmin(pre, p);
					else if (i >= 3000)
						cus = fmin(cus, p);
				} else if (i >= 3000 && !strcmp(s[j].name, "shift:value")) {
					shift = fmin(shift, p);
				} else if (i >= 3000 && !strcmp(s[j].name, "value:value")) {
					spike = fmin(spike, p);
				}
			}
		}
		ck_assert_double_gt(pre, 0.02);
		ck_assert_double_lt(cus, 0.01);
		ck_assert_double_lt(cus, shift);
		ck_assert_double_lt(cus, spike);
		cbad_numeric_free(n);
	}
}
END_TEST

START_TEST(test_calibration_not_below_test)
{
	ck_assert_double_gt(ramp_value_p(0.01), 0.01);
	ck_assert_double_gt(ramp_value_p(0.03), 0.01);
	ck_assert_double_lt(ramp_value_p(5.0), 1e-3);
}
END_TEST

START_TEST(test_id_burst)
{
	cbad_numeric *n = make();
	gen g = {0x5eed};
	cbad_chan_signal s[16];
	double pmin = 1, pnormal = 1;
	char buf[256];
	int i = 0;

	for (; i < 4000; i++) {
		int len = snprintf(buf, sizeof(buf),
				   "{\"host\":\"h%02d\",\"user\":\"u%03d\",\"op\":\"%s\",\"id\":\"r%08x\"}",
				   i % 12, (int)(u01(&g) * 400), u01(&g) < 0.5 ? "read" : "write",
				   (unsigned)(u01(&g) * 4e9));
		cbad_event_view ev = {.raw = buf, .len = (size_t)len,
				      .ts_ms = 1700000000000LL + i * 500, .template_id = 42};
		size_t k = cbad_numeric_observe(n, &ev, true, s, 16);
		const cbad_chan_signal *v = named(s, k, "rate:user=");

		if (i > 3000 && v && v->p_value < pnormal)
			pnormal = v->p_value;
	}
	/* one user among 400: ~0.08 of 32 events usually; 1/3000 of normal events may reach 1e-3 */
	ck_assert_double_gt(pnormal, 1e-4);
	for (int b = 0; b < 40; b++, i++) {
		int len = snprintf(buf, sizeof(buf),
				   "{\"host\":\"h%02d\",\"user\":\"%s\",\"op\":\"read\",\"id\":\"r%08x\"}",
				   i % 12, b % 2 ? "u999" : "u001", (unsigned)(u01(&g) * 4e9));
		cbad_event_view ev = {.raw = buf, .len = (size_t)len,
				      .ts_ms = 1700000000000LL + i * 500, .template_id = 42};
		size_t k = cbad_numeric_observe(n, &ev, true, s, 16);

		for (size_t j = 0; j < k; j++)
			if (!strncmp(s[j].name, "rate:user=u999", 14) && s[j].p_value < pmin) {
				pmin = s[j].p_value;
				ck_assert_int_eq(s[j].kind, CBAD_KIND_RATE);
				ck_assert_str_eq(s[j].field, "user");
			}
	}
	/* below the default alpha, after the rate kind's own calibration */
	ck_assert_double_lt(pmin, 1e-3);
	ck_assert_double_lt(pmin, pnormal);
	cbad_numeric_free(n);
}
END_TEST

/* A long burst from one user, one event in four for 240 events (60 of them), every event
 * learned: the burst's statistics are quarantined from the rate kind's calibration, so its
 * last quarter is still flagged (15 of 15; without the quarantine the kind learned the burst
 * and none of them was). */
START_TEST(test_id_burst_long)
{
	cbad_numeric *n = make();
	gen g = {0x5eed};
	cbad_chan_signal s[16];
	char buf[256];
	int i = 0, late = 0, flagged = 0;

	for (; i < 4000; i++) {
		int len = snprintf(buf, sizeof(buf),
				   "{\"host\":\"h%02d\",\"user\":\"u%03d\",\"op\":\"%s\",\"id\":\"r%08x\"}",
				   i % 12, (int)(u01(&g) * 400), u01(&g) < 0.5 ? "read" : "write",
				   (unsigned)(u01(&g) * 4e9));
		cbad_event_view ev = {.raw = buf, .len = (size_t)len,
				      .ts_ms = 1700000000000LL + i * 500, .template_id = 42};

		cbad_numeric_observe(n, &ev, true, s, 16);
	}
	for (int b = 0; b < 240; b++, i++) {
		bool mine = b % 4 == 0;
		int len = snprintf(buf, sizeof(buf),
				   "{\"host\":\"h%02d\",\"user\":\"u%03d\",\"op\":\"%s\",\"id\":\"r%08x\"}",
				   i % 12, mine ? 999 : (int)(u01(&g) * 400),
				   u01(&g) < 0.5 ? "read" : "write", (unsigned)(u01(&g) * 4e9));
		cbad_event_view ev = {.raw = buf, .len = (size_t)len,
				      .ts_ms = 1700000000000LL + i * 500, .template_id = 42};
		size_t k = cbad_numeric_observe(n, &ev, true, s, 16);
		const cbad_chan_signal *v = named(s, k, "rate:user=u999");

		if (mine && b >= 180) {
			late++;
			flagged += v && v->p_value < 1e-3;
		}
	}
	ck_assert_int_eq(late, 15);
	ck_assert_int_ge(flagged, 13);
	cbad_numeric_free(n);
}
END_TEST

/* An event of users paying with their own card (each user has one or two). */
static size_t who_step(cbad_numeric *n, gen *g, int i, const char *user, unsigned card,
		       cbad_chan_signal *s, size_t max)
{
	char buf[256];
	int len = snprintf(buf, sizeof(buf),
			   "{\"host\":\"h%02d\",\"user\":\"%s\",\"card\":\"c%05u\",\"id\":\"r%08x\"}",
			   i % 12, user, card, (unsigned)(u01(g) * 4e9));

	return observe_nth(n, buf, len, i, 42, s, max);
}

/* A user that comes with a new card on every event (card testing) is found by the distinct
 * partner test, and a restored copy continues identically, partner tables included. */
START_TEST(test_who_and_state)
{
	cbad_numeric *a = make(), *c = make();
	gen g = {0xc0ffee};
	cbad_chan_signal s1[16], s3[16];
	cbad_writer w = {0};
	cbad_reader r;
	double pnormal = 1, pmin = 1;
	int i = 0;

	for (; i < 5000; i++) {
		char user[16];
		int u = (int)(u01(&g) * 300);
		size_t k;
		const cbad_chan_signal *v;

		snprintf(user, sizeof(user), "u%03d", u);
		k = who_step(a, &g, i, user, (unsigned)(u * 7 + (u01(&g) < 0.3 ? 1 : 0)), s1, 16);
		v = named(s1, k, "distinct:user:card");
		if (i > 3000 && v && v->p_value < pnormal)
			pnormal = v->p_value;
	}
	ck_assert_double_gt(pnormal, 1e-4);
	cbad_numeric_save(a, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_numeric_load(c, &r), 0);
	ck_assert_uint_eq(r.off, w.len);
	for (int b = 0; b < 60; b++, i++) {
		gen g3 = g;
		bool tester = b % 3 == 0;
		char user[16];
		int u = (int)(u01(&g3) * 300);
		size_t k1, k3;

		snprintf(user, sizeof(user), tester ? "u999" : "u%03d", u);
		g = g3;
		k1 = who_step(a, &g, i, user, tester ? 90000u + (unsigned)b : (unsigned)u * 7, s1, 16);
		k3 = who_step(c, &g3, i, user, tester ? 90000u + (unsigned)b : (unsigned)u * 7, s3, 16);
		ck_assert_uint_eq(k1, k3);
		ck_assert(memcmp(s1, s3, k1 * sizeof(s1[0])) == 0);
		for (size_t j = 0; j < k1; j++)
			if (!strcmp(s1[j].name, "distinct:user:card") && s1[j].p_value < pmin) {
				pmin = s1[j].p_value;
				ck_assert_int_eq(s1[j].kind, CBAD_KIND_RATE);
				ck_assert_str_eq(s1[j].entity_value, "u999");
				ck_assert_str_eq(s1[j].field, "card");
			}
	}
	/* below the default alpha; the kind's own calibration over ~4096 events bounds it */
	ck_assert_double_lt(pmin, 1e-3);
	ck_assert_double_lt(pmin * 100, pnormal);
	cbad_writer_free(&w);
	cbad_numeric_free(a);
	cbad_numeric_free(c);
}
END_TEST

/* On exchangeable normal events, each kind's p-value is calibrated. */
START_TEST(test_calibration)
{
	cbad_numeric *n = make();
	gen g = {0x5151};
	cbad_chan_signal s[16];
	long cnt[8] = {0}, b1[8] = {0}, b2[8] = {0};

	for (int i = 0; i < 30000; i++) {
		size_t k = step(n, &g, i, (int)(u01(&g) * 12), 0, s, 16);
		bool seen[8] = {false};

		(void)k;
		/* the strongest signal of each kind carries the kind's calibrated p-value */
		for (size_t j = 0; j < k; j++) {
			int kind = s[j].kind;

			if (seen[kind])
				continue;
			seen[kind] = true;
			if (i < 5000)
				continue;
			cnt[kind]++;
			b1[kind] += s[j].p_value < 0.01;
			b2[kind] += s[j].p_value < 0.001;
		}
	}
	for (int kind = 0; kind < 8; kind++) {
		if (cnt[kind] == 0)
			continue;
		ck_assert_msg((double)b1[kind] / cnt[kind] < 0.02, "kind %d: P(p<0.01)=%g", kind,
			      (double)b1[kind] / cnt[kind]);
		ck_assert_msg((double)b2[kind] / cnt[kind] < 0.003, "kind %d: P(p<0.001)=%g", kind,
			      (double)b2[kind] / cnt[kind]);
	}
	ck_assert_int_gt(cnt[CBAD_KIND_VALUE], 20000);
	ck_assert_int_gt(cnt[CBAD_KIND_ENTITY], 20000);
	ck_assert_int_gt(cnt[CBAD_KIND_RATE], 20000);
	cbad_numeric_free(n);
}
END_TEST

START_TEST(test_determinism_and_state)
{
	cbad_numeric *a = make(), *b = make(), *c = make();
	gen g1 = {77}, g2 = {77};
	cbad_chan_signal s1[8], s2[8], s3[8];
	cbad_writer w = {0};
	cbad_reader r;

	/* the same events give identical signals */
	for (int i = 0; i < 1500; i++) {
		size_t k1 = step(a, &g1, i, i % 12, 20, s1, 8);
		size_t k2 = step(b, &g2, i, i % 12, 20, s2, 8);

		ck_assert_uint_eq(k1, k2);
		ck_assert(memcmp(s1, s2, k1 * sizeof(s1[0])) == 0);
	}
	/* a restored copy continues identically */
	cbad_numeric_save(a, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_numeric_load(c, &r), 0);
	ck_assert_uint_eq(r.off, w.len);
	ck_assert_uint_eq(cbad_numeric_memory(a) > 0, 1);
	for (int i = 1500; i < 2500; i++) {
		gen g3 = g1;
		size_t k1 = step(a, &g1, i, i % 12, i == 2000 ? 90 : 20 + i % 3, s1, 8);
		size_t k3 = step(c, &g3, i, i % 12, i == 2000 ? 90 : 20 + i % 3, s3, 8);

		ck_assert_uint_eq(k1, k3);
		ck_assert(memcmp(s1, s3, k1 * sizeof(s1[0])) == 0);
	}
	/* truncated or corrupt state is refused */
	cbad_numeric_free(c);
	c = make();
	cbad_reader_init(&r, w.buf, w.len / 2);
	ck_assert_int_eq(cbad_numeric_load(c, &r), -EINVAL);
	cbad_numeric_free(c);
	c = make();
	w.buf[0] ^= 0xff;
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_numeric_load(c, &r), -EINVAL);
	cbad_writer_free(&w);
	cbad_numeric_free(a);
	cbad_numeric_free(b);
	cbad_numeric_free(c);
	cbad_numeric_free(NULL);
}
END_TEST

/* Plain measurements, with or without a categorical field of three values. */
static void plain_step(cbad_numeric *n, gen *g, int i, bool with_level)
{
	static const char *const lv[] = {"info", "warn", "error"};
	cbad_chan_signal out[8];
	char buf[256];
	int len;
	cbad_event_view v;

	if (with_level)
		len = snprintf(buf, sizeof(buf), "{\"ts\":\"t%d\",\"level\":\"%s\",\"cpu\":%.1f,\"mem\":%.1f}",
			       i, lv[(int)(u01(g) * 3)], 20 + gauss(g), 50 + 3 * gauss(g));
	else
		len = snprintf(buf, sizeof(buf), "{\"ts\":\"t%d\",\"cpu\":%.1f,\"mem\":%.1f}", i,
			       20 + gauss(g), 50 + 3 * gauss(g));
	v = (cbad_event_view){.raw = buf, .len = (size_t)len,
			      .ts_ms = 1700000000000LL + i * 500, .template_id = 9};
	cbad_numeric_observe(n, &v, true, out, 8);
}

/* The categorical and id tables exist only with their fields, and a state without them
 * saves and loads to the same bytes and the same memory. */
START_TEST(test_rate_tables_on_demand)
{
	cbad_numeric *a = make(), *b = make();
	cbad_rate *lab = NULL;
	gen g1 = {5}, g2 = {5};

	ck_assert_int_eq(cbad_rate_new(&lab), 0);
	for (int i = 0; i < 1500; i++) {
		plain_step(a, &g1, i, false);
		plain_step(b, &g2, i, true);
	}
	/* the same value fields; b's categorical field brings its table, a has neither table */
	ck_assert_uint_ge(cbad_numeric_memory(b), cbad_numeric_memory(a) + cbad_rate_memory(lab));
	for (int k = 0; k < 2; k++) {
		cbad_numeric *x = k ? b : a, *c = make();
		cbad_writer w1 = {0}, w2 = {0};
		cbad_reader r;

		cbad_numeric_save(x, &w1);
		ck_assert(!w1.failed);
		cbad_reader_init(&r, w1.buf, w1.len);
		ck_assert_int_eq(cbad_numeric_load(c, &r), 0);
		ck_assert_uint_eq(r.off, w1.len);
		ck_assert_uint_eq(cbad_numeric_memory(c), cbad_numeric_memory(x));
		cbad_numeric_save(c, &w2);
		ck_assert_uint_eq(w2.len, w1.len);
		ck_assert(memcmp(w1.buf, w2.buf, w1.len) == 0);
		cbad_writer_free(&w1);
		cbad_writer_free(&w2);
		cbad_numeric_free(c);
	}
	cbad_rate_free(lab);
	cbad_numeric_free(a);
	cbad_numeric_free(b);
}
END_TEST

/* A route-like context: three endpoints with ids in their paths, each at its own latency. */
static size_t route_step(cbad_numeric *n, gen *g, int i, int route, double ms,
			 cbad_chan_signal *out, size_t max)
{
	static const char *const fmt[] = {"/api/orders/%u", "/api/items/SKU-%u",
					  "/api/users/%u/prefs?x=%u"};
	char path[64], buf[256];
	unsigned id = (unsigned)(u01(g) * 1e6);
	int len;
	cbad_event_view v;

	snprintf(path, sizeof(path), fmt[route], id, id % 7);
	len = snprintf(buf, sizeof(buf), "{\"ts\":\"t%d\",\"path\":\"%s\",\"ms\":%.1f}", i,
		       path, ms);
	v = (cbad_event_view){.raw = buf, .len = (size_t)len,
			      .ts_ms = 1700000000000LL + i * 500, .template_id = 7};
	return cbad_numeric_observe(n, &v, true, out, max);
}

static double route_ms(gen *g, int route)
{
	static const double level[] = {40, 400, 100};

	return level[route] * exp(0.15 * gauss(g));
}

START_TEST(test_context_values)
{
	cbad_numeric *a = make(), *c = make();
	gen g = {0xfeed};
	cbad_chan_signal s[8], s3[8];
	const cbad_chan_signal *x;
	cbad_writer w = {0};
	cbad_reader r;
	size_t k;
	int i = 0, hits = 0;

	for (; i < 3000; i++)
		route_step(a, &g, i, i % 3, route_ms(&g, i % 3), s, 8);
	/* the state round trip keeps the context models */
	cbad_numeric_save(a, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_numeric_load(c, &r), 0);
	ck_assert_uint_eq(r.off, w.len);
	for (int j = 0; j < 200; j++, i++) {
		gen g3 = g;
		size_t k1 = route_step(a, &g, i, i % 3, route_ms(&g, i % 3), s, 8);
		size_t k3 = route_step(c, &g3, i, i % 3, route_ms(&g3, i % 3), s3, 8);

		ck_assert_uint_eq(k1, k3);
		ck_assert(memcmp(s, s3, k1 * sizeof(s[0])) == 0);
	}
	/* orders (usually 40 ms) at 400 ms: ordinary for the stream (items take 400), not for
	 * the orders route; the context is the path with its ids masked, and its models belong
	 * to the value kind */
	k = route_step(a, &g, i++, 0, 400.0, s, 8);
	x = named(s, k, "value:path:ms");
	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(x->kind, CBAD_KIND_VALUE);
	ck_assert_str_eq(x->entity_field, "path");
	ck_assert_double_lt(x->p_value, 1e-3);
	ck_assert_str_eq(x->entity_value, "/api/orders/#");
	ck_assert_ptr_eq(x, &s[0]);
	/* and normal traffic rarely sets it off */
	for (int j = 0; j < 2000; j++, i++) {
		k = route_step(a, &g, i, i % 3, route_ms(&g, i % 3), s, 8);
		x = named(s, k, "value:path:");
		hits += x && x->p_value < 1e-3;
		x = named(s, k, "shift:path:");
		hits += x && x->p_value < 1e-3;
	}
	ck_assert_int_le(hits, 6);
	cbad_writer_free(&w);
	cbad_numeric_free(a);
	cbad_numeric_free(c);
}
END_TEST

/* A payments-like event: a merchant country (8), its currency (2 countries each), a channel. */
static size_t pair_step(cbad_numeric *n, gen *g, int i, int country, int currency,
			cbad_chan_signal *out, size_t max)
{
	static const char *const chan[] = {"pos", "ecom", "contactless"};
	char buf[256];
	int len = snprintf(buf, sizeof(buf),
			   "{\"ts\":\"t%d\",\"country\":\"C%d\",\"currency\":\"K%d\","
			   "\"channel\":\"%s\",\"amount\":%.2f}",
			   i, country, currency, chan[(int)(u01(g) * 3)], 20 * exp(gauss(g)));

	return observe_nth(n, buf, len, i, 9, out, max);
}

START_TEST(test_pair_values)
{
	cbad_numeric *a = make(), *c = make();
	gen g = {0xabc};
	cbad_chan_signal s[8], s3[8];
	const cbad_chan_signal *x;
	cbad_writer w = {0};
	cbad_reader r;
	size_t k;
	int i = 0, hits = 0;

	for (; i < 4000; i++) {
		int ct = (int)(u01(&g) * 8);

		pair_step(a, &g, i, ct, ct / 2, s, 8);
	}
	/* the state round trip keeps the pair fields, their rates and the sketch */
	cbad_numeric_save(a, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_numeric_load(c, &r), 0);
	ck_assert_uint_eq(r.off, w.len);
	for (int j = 0; j < 200; j++, i++) {
		gen g3 = g;
		int ct = (int)(u01(&g) * 8), ct3 = (int)(u01(&g3) * 8);
		size_t k1 = pair_step(a, &g, i, ct, ct / 2, s, 8);
		size_t k3 = pair_step(c, &g3, i, ct3, ct3 / 2, s3, 8);

		ck_assert_uint_eq(k1, k3);
		ck_assert(memcmp(s, s3, k1 * sizeof(s[0])) == 0);
	}
	/* a currency never seen with that country; every value is common on its own */
	k = pair_step(a, &g, i++, 0, 3, s, 8);
	x = named(s, k, "pair:");
	ck_assert_ptr_nonnull(x);
	ck_assert_str_eq(x->name, "pair:country:currency");
	ck_assert_int_eq(x->kind, CBAD_KIND_VALUE);
	ck_assert_double_lt(x->p_value, 1e-3);
	ck_assert_ptr_nonnull(strstr(x->detail, "country=C0 currency=K3"));
	/* a flagged pair is not learned: the next one is still new */
	k = pair_step(a, &g, i++, 0, 3, s, 8);
	x = named(s, k, "pair:");
	ck_assert_ptr_nonnull(x);
	ck_assert_double_lt(x->p_value, 1e-3);
	/* known pairs never set it off */
	for (int j = 0; j < 2000; j++, i++) {
		int ct = (int)(u01(&g) * 8);

		k = pair_step(a, &g, i, ct, ct / 2, s, 8);
		hits += named(s, k, "pair:") != NULL;
	}
	ck_assert_int_eq(hits, 0);
	cbad_writer_free(&w);
	cbad_numeric_free(a);
	cbad_numeric_free(c);
}
END_TEST

START_TEST(test_plain_lines_and_flatline)
{
	cbad_numeric *n = make();
	cbad_chan_signal s[8];
	const cbad_chan_signal *f = NULL;
	gen g = {99};
	size_t k;

	/* plain log lines: no fields, no value signals, no crash */
	for (int i = 0; i < 300; i++) {
		const char *line = "GET /index.html 200 12ms";
		cbad_event_view v = {.raw = line, .len = strlen(line), .ts_ms = i, .template_id = 7};

		k = cbad_numeric_observe(n, &v, true, s, 8);
		for (size_t j = 0; j < k; j++)
			ck_assert_int_ne(s[j].kind, CBAD_KIND_VALUE);
	}
	cbad_numeric_free(n);

	/* one value stream that gets stuck */
	n = make();
	for (int i = 0; i < 2000; i++) {
		char buf[64];
		double x = i < 1900 ? 100 + 5 * gauss(&g) : 104.2;
		int len = snprintf(buf, sizeof(buf), "{\"value\":%.3f}", x);
		cbad_event_view v = {.raw = buf, .len = (size_t)len, .ts_ms = i};

		k = cbad_numeric_observe(n, &v, true, s, 8);
		if (i == 1915)
			f = named(s, k, "flatline:value");
		if (i == 1915)
			break;
	}
	ck_assert_ptr_nonnull(f);
	ck_assert_double_lt(f->p_value, 1e-3);
	ck_assert_str_eq(f->field, "value");
	cbad_numeric_free(n);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cbad_numeric");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_heuristic_and_entity_spike);
	tcase_add_test(tc, test_calibration_not_below_test);
	tcase_add_test(tc, test_value_and_rate);
	tcase_add_test(tc, test_level_values);
	tcase_add_test(tc, test_id_burst);
	tcase_add_test(tc, test_id_burst_long);
	tcase_add_test(tc, test_who_and_state);
	tcase_add_test(tc, test_calibration);
	tcase_add_test(tc, test_determinism_and_state);
	tcase_add_test(tc, test_plain_lines_and_flatline);
	tcase_add_test(tc, test_context_values);
	tcase_add_test(tc, test_pair_values);
	tcase_add_test(tc, test_entity_level_step);
	tcase_add_test(tc, test_entity_codes_not_values);
	tcase_add_test(tc, test_rate_tables_on_demand);
	tcase_add_test(tc, test_cusum_slow_ramp);
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
