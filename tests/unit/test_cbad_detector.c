/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_detector: warm-up, detection with explanation, determinism, state, sensitivity, memory. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad.h"
#include "services/detector/cbad/cbad_detector_private.h"

static uint64_t rng;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 32);
}

/* One ordinary event i of an access log: a few actions, users, ids and durations. */
static size_t normal_event(char *buf, size_t cap, int i)
{
	static const char *const actions[] = {"view", "view", "view", "edit", "login", "logout"};
	static const char *const paths[] = {"/home", "/cart", "/items/%u", "/search?q=shoes"};
	char path[64];

	snprintf(path, sizeof(path), paths[next() % 4], next() % 100000);
	return (size_t)snprintf(buf, cap,
				"{\"ts\":\"2024-03-12T13:%02d:%02d.%03dZ\",\"user\":\"u%05u\",\"action\":\"%s\","
				"\"path\":\"%s\",\"status\":%d,\"ms\":%u,\"req\":\"%08x%08x\"}",
				(i / 60) % 60, i % 60, i % 1000, next() % 300, actions[next() % 6], path,
				next() % 50 ? 200 : 404, 20 + next() % 30, next(), next());
}

static const char novel[] =
	"{\"ts\":\"2024-03-12T14:00:00.000Z\",\"user\":\"u00042\",\"action\":\"export\","
	"\"path\":\"/admin/../../etc/shadow\",\"status\":500,\"ms\":31,"
	"\"error\":\"kernel: segfault in libfrobnicate at 0x0 password=hunter2\"}";

static cbad_detector *new_default(double sensitivity)
{
	cbad_settings s;
	cbad_detector *d = NULL;
	char err[256];

	cbad_settings_default(&s);
	s.sensitivity = sensitivity;
	ck_assert_int_eq(cbad_detector_new(&s, &d, err, sizeof(err)), 0);
	return d;
}

/* Feeds n events from seed: ordinary ones, and the novel one at every 997th after the
 * warm-up; results into out when non-NULL. */
static void run(cbad_detector *d, uint64_t seed, int from, int n, cbad_result *out)
{
	char buf[512];
	cbad_result r;

	rng = seed;
	for (int i = from; i < from + n; i++) {
		size_t len;

		if (i % 997 == 996 && i > 1000) {
			len = strlen(novel);
			memcpy(buf, novel, len);
		} else {
			len = normal_event(buf, sizeof(buf), i);
		}
		ck_assert_int_eq(cbad_detector_process(d, buf, len, 1710248400000 + i * 100LL, &r), 0);
		if (out)
			out[i - from] = r;
	}
}

/* Events with a prose field: English answers, and every 211th (after the warm-up) one in
 * another language, or one word repeated. */
static void run_prose(cbad_detector *d, uint64_t seed, int from, int n, cbad_result *out)
{
	static const char *const en[] = {"the", "answer", "is", "a", "good", "book", "for", "you",
					 "can", "use", "this", "function", "to", "sort", "list",
					 "in", "python", "about", "miles", "short", "classic"};
	static const char *const es[] = {"la", "respuesta", "que", "buscas", "es", "correcta",
					 "puedes", "usar", "función", "más", "detalles", "aquí"};
	char buf[1024], text[512];
	cbad_result r;

	rng = seed;
	for (int i = from; i < from + n; i++) {
		size_t len, t = 0, words = 6 + next() % 10;
		bool odd = i % 211 == 210 && i > 1200;

		for (size_t w = 0; w < words; w++)
			t += (size_t)snprintf(text + t, sizeof(text) - t, "%s%s", w ? " " : "",
					      odd && i % 2 ? "the" : odd ? es[next() % 12] : en[next() % 21]);
		len = (size_t)snprintf(buf, sizeof(buf),
				       "{\"user\":\"u%04u\",\"answer\":\"%s.\",\"ms\":%u}",
				       next() % 300, text, 200 + next() % 100);
		ck_assert_int_eq(cbad_detector_process(d, buf, len, 1710248400000 + i * 100LL, &r), 0);
		if (out)
			out[i - from] = r;
	}
}

/* The text channel: foreign or repeated answers flagged and explained, the state continues
 * bit for bit, and a higher sensitivity flags a superset. */
START_TEST(test_text_channel)
{
	cbad_detector *a = new_default(0.5), *b = NULL, *lo = new_default(0.25);
	cbad_result *ra = calloc(1500, sizeof(*ra)), *rb = calloc(1500, sizeof(*rb));
	cbad_result *rl = calloc(1500, sizeof(*rl));
	void *buf = NULL;
	size_t len = 0;
	char err[256];
	uint64_t mid;
	int text_flags = 0;

	run_prose(a, 11, 0, 2050, NULL);
	run_prose(lo, 11, 0, 2050, NULL);
	mid = rng;
	ck_assert_int_eq(cbad_detector_save(a, &buf, &len, err, sizeof(err)), 0);
	ck_assert_int_eq(cbad_detector_load(buf, len, &b, err, sizeof(err)), 0);
	run_prose(a, mid, 2050, 1500, ra);
	run_prose(b, mid, 2050, 1500, rb);
	run_prose(lo, mid, 2050, 1500, rl);
	ck_assert_int_eq(memcmp(ra, rb, 1500 * sizeof(*ra)), 0);
	for (int i = 0; i < 1500; i++) {
		ck_assert(!rl[i].anomaly || ra[i].anomaly);
		if ((2050 + i) % 211 == 210)
			ck_assert_msg(ra[i].anomaly, "line %d: p %g", 2050 + i, ra[i].p_value);
		if (ra[i].anomaly && !strcmp(ra[i].signal, "text:answer")) {
			text_flags++;
			ck_assert_ptr_nonnull(strstr(ra[i].summary, "field answer"));
			ck_assert_str_eq(ra[i].evidence[0].name, "answer");
		}
	}
	ck_assert_int_gt(text_flags, 0);
	free(buf);
	free(ra);
	free(rb);
	free(rl);
	cbad_detector_free(a);
	cbad_detector_free(b);
	cbad_detector_free(lo);
}
END_TEST

START_TEST(test_warm_up)
{
	cbad_detector *d = new_default(1.0);
	const cbad_settings *s = cbad_detector_settings(d);
	cbad_result *r = calloc(s->baseline_events + 10, sizeof(*r));
	cbad_status st;
	double last = -1;

	/* the warm-up lasts 3/4 of baseline_events (docs/algorithm.md, section 6) */
	uint32_t warm = s->baseline_events - s->baseline_events / 4;

	run(d, 1, 0, (int)s->baseline_events + 10, r);
	for (uint32_t i = 0; i < warm; i++) {
		ck_assert(r[i].calibrating);
		ck_assert(!r[i].anomaly);
		ck_assert_double_gt(r[i].progress, last);
		ck_assert_double_lt(r[i].progress, 1.0);
		last = r[i].progress;
	}
	for (uint32_t i = warm; i <= s->baseline_events; i++) {
		ck_assert(!r[i].calibrating);
		ck_assert_double_eq(r[i].progress, 1.0);
	}
	cbad_detector_status(d, &st);
	ck_assert(!st.calibrating);
	ck_assert_uint_eq(st.events_seen, s->baseline_events + 10);
	free(r);
	cbad_detector_free(d);
}
END_TEST

START_TEST(test_novel_event_explained)
{
	cbad_detector *d = new_default(0.5);
	cbad_result *r = calloc(3000, sizeof(*r));
	const cbad_result *a = &r[996 * 2 + 1]; /* the novel event at 1993 */
	int fp = 0, scored = 0;

	run(d, 2, 0, 3000, r);
	ck_assert(a->anomaly);
	ck_assert_int_ge(a->severity, CBAD_SEVERITY_LOW);
	ck_assert_double_lt(a->p_value, cbad_sensitivity_alpha(0.5));
	/* The score of the default alpha (1e-3) is 0.5; a strong anomaly is well above it. */
	ck_assert_double_gt(a->score, 0.5);
	ck_assert_double_lt(a->score, 1.0);
	ck_assert_int_gt((int)strlen(a->summary), 20);
	ck_assert_int_gt((int)strlen(a->signal), 0);
	ck_assert_uint_ge(a->nevidence, 1);
	ck_assert_ptr_null(strstr(a->excerpt, "hunter2"));
	ck_assert_ptr_nonnull(strstr(a->excerpt, "etc/shadow"));
	if (a->kind == CBAD_KIND_EVENT) {
		ck_assert_str_eq(a->signal, "novelty");
		ck_assert_double_gt(a->value, a->base_high);
		ck_assert_ptr_nonnull(strstr(a->summary, "bits"));
	}
	/* Ordinary events are rarely found novel or drifting (the numeric channels have their
	 * own suites). */
	for (int i = 1000; i < 3000; i++)
		if (i % 997 != 996) {
			scored++;
			fp += r[i].anomaly && (r[i].kind == CBAD_KIND_EVENT || r[i].kind == CBAD_KIND_WINDOW);
		}
	ck_assert_msg(fp <= scored / 100, "%d false positives in %d", fp, scored);
	free(r);
	cbad_detector_free(d);
}
END_TEST

/* The score is a monotone function of the combined p-value that does not saturate, and it
 * agrees with the decision: every anomaly scores above every non-anomaly; warm-up scores 0. */
START_TEST(test_score_consistent)
{
	cbad_detector *d = new_default(0.5);
	cbad_result *r = calloc(3000, sizeof(*r));
	double min_anom = 2, max_norm = -1;
	int anomalies = 0;

	run(d, 3, 0, 3000, r);
	for (int i = 0; i < 3000; i++) {
		ck_assert(r[i].score >= 0.0 && r[i].score < 1.0);
		if (r[i].calibrating) {
			ck_assert_double_eq(r[i].score, 0.0);
			continue;
		}
		if (r[i].anomaly) {
			anomalies++;
			min_anom = fmin(min_anom, r[i].score);
		} else {
			max_norm = fmax(max_norm, r[i].score);
		}
		for (int j = 1000; j < i; j++) {
			if (r[j].calibrating)
				continue;
			/* Non-strict: p-values a few ulps apart may round to one score. */
			if (r[j].p_value < r[i].p_value)
				ck_assert_double_ge(r[j].score, r[i].score);
			else if (r[j].p_value > r[i].p_value)
				ck_assert_double_le(r[j].score, r[i].score);
			else
				ck_assert_double_eq(r[j].score, r[i].score);
		}
	}
	ck_assert_int_gt(anomalies, 0);
	ck_assert_double_gt(min_anom, max_norm);
	free(r);
	cbad_detector_free(d);
}
END_TEST

START_TEST(test_deterministic)
{
	cbad_detector *a = new_default(0.5), *b = new_default(0.5);
	cbad_result *ra = calloc(2500, sizeof(*ra)), *rb = calloc(2500, sizeof(*rb));

	run(a, 3, 0, 2500, ra);
	run(b, 3, 0, 2500, rb);
	ck_assert_int_eq(memcmp(ra, rb, 2500 * sizeof(*ra)), 0);
	free(ra);
	free(rb);
	cbad_detector_free(a);
	cbad_detector_free(b);
}
END_TEST

START_TEST(test_state_round_trip)
{
	cbad_detector *a = new_default(0.5), *b = NULL;
	cbad_result *ra = calloc(1500, sizeof(*ra)), *rb = calloc(1500, sizeof(*rb));
	void *buf = NULL;
	size_t len = 0;
	char err[256];
	cbad_status sa, sb;
	uint64_t mid;

	run(a, 4, 0, 2050, NULL); /* mid-hop, mid-window */
	mid = rng;
	ck_assert_int_eq(cbad_detector_save(a, &buf, &len, err, sizeof(err)), 0);
	ck_assert_uint_gt(len, 13);
	ck_assert_int_eq(cbad_detector_load(buf, len, &b, err, sizeof(err)), 0);
	cbad_detector_status(a, &sa);
	cbad_detector_status(b, &sb);
	ck_assert_uint_eq(sa.events_seen, sb.events_seen);
	ck_assert_uint_eq(sa.anomalies, sb.anomalies);
	run(a, mid, 2050, 1500, ra);
	run(b, mid, 2050, 1500, rb);
	ck_assert_int_eq(memcmp(ra, rb, 1500 * sizeof(*ra)), 0);
	/* Corrupt, truncated and unknown-version buffers are refused with a reason. */
	{
		unsigned char *c = malloc(len);
		cbad_detector *x = NULL;

		memcpy(c, buf, len);
		ck_assert_int_eq(cbad_detector_load(c, len / 2, &x, err, sizeof(err)), -EINVAL);
		ck_assert_ptr_null(x);
		c[4] = 99;
		ck_assert_int_eq(cbad_detector_load(c, len, &x, err, sizeof(err)), -EINVAL);
		ck_assert_ptr_nonnull(strstr(err, "version"));
		memcpy(c, buf, len);
		c[0] = 'X';
		ck_assert_int_eq(cbad_detector_load(c, len, &x, err, sizeof(err)), -EINVAL);
		memcpy(c, buf, len);
		for (size_t i = 13; i < len; i += 7)
			c[i] ^= 0x5a;
		ck_assert_int_eq(cbad_detector_load(c, len, &x, err, sizeof(err)), -EINVAL);
		ck_assert_ptr_null(x);
		free(c);
	}
	free(buf);
	free(ra);
	free(rb);
	cbad_detector_free(a);
	cbad_detector_free(b);
}
END_TEST

/* A small baseline that every hop overflows, with events whose templates are all new and
 * whose lengths vary: a state saved at any point (mid-hop included) restores a detector that
 * goes on exactly as the original does. */
static void run_varied(cbad_detector *d, int from, int n, cbad_result *out)
{
	char buf[1024];

	for (int i = from; i < from + n; i++) {
		uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull;
		int len = snprintf(buf, sizeof(buf), "{\"i\":%d,\"msg\":\"", i);
		int words = 1 + (int)(x >> 58);

		for (int w = 0; w < words && len < 900; w++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			for (int k = 0; k < 2 + (int)(x >> 61); k++)
				buf[len++] = (char)('a' + (x >> (8 + 5 * k)) % 26);
			buf[len++] = ' ';
		}
		len += snprintf(buf + len, sizeof(buf) - (size_t)len, "\"}");
		ck_assert_int_eq(cbad_detector_process(d, buf, (size_t)len, 1710248400000 + i * 1000LL,
						       out ? &out[i - from] : &(cbad_result){0}),
				 0);
	}
}

START_TEST(test_state_round_trip_small_baseline)
{
	static const int cut[] = {40, 333, 417, 555};
	cbad_settings s;
	cbad_detector *ref = NULL;
	cbad_result *rr = calloc(700, sizeof(*rr)), *rb = calloc(700, sizeof(*rb));
	char err[256];

	cbad_settings_default(&s);
	s.baseline_bytes = 4096;
	s.baseline_events = 64;
	s.hop_events = 50;
	s.window_events = 32;
	ck_assert_int_eq(cbad_detector_new(&s, &ref, err, sizeof(err)), 0);
	run_varied(ref, 0, 700, rr);
	for (size_t c = 0; c < sizeof(cut) / sizeof(cut[0]); c++) {
		cbad_detector *a = NULL, *b = NULL;
		void *buf = NULL;
		size_t len = 0;
		cbad_status st;

		ck_assert_int_eq(cbad_detector_new(&s, &a, err, sizeof(err)), 0);
		run_varied(a, 0, cut[c], NULL);
		ck_assert_int_eq(cbad_detector_save(a, &buf, &len, err, sizeof(err)), 0);
		ck_assert_int_eq(cbad_detector_load(buf, len, &b, err, sizeof(err)), 0);
		run_varied(b, cut[c], 700 - cut[c], rb);
		ck_assert_int_eq(memcmp(rr + cut[c], rb, (size_t)(700 - cut[c]) * sizeof(*rb)), 0);
		/* The baseline's bytes are held once, plus what a hop appends (at most bcap). */
		cbad_detector_status(b, &st);
		ck_assert_uint_gt(st.memory_bytes, 2 * 4096);
		free(buf);
		cbad_detector_free(a);
		cbad_detector_free(b);
	}
	/* The novelty channel was live: costs differ between events. */
	ck_assert(rr[650].novelty_bits != rr[651].novelty_bits || rr[651].novelty_bits != rr[652].novelty_bits);
	free(rr);
	free(rb);
	cbad_detector_free(ref);
}
END_TEST

/* The dictionary build deferred to cbad_detector_idle(): results are byte for byte the same
 * whether idle() is called after every event, at some events or never, and a state saved
 * while a build is pending (right at a hop's end) restores a detector that goes on exactly as
 * the original does. */
START_TEST(test_idle_same_results)
{
	static const int cut[] = {100, 350, 351};
	cbad_settings s;
	cbad_detector *ref = NULL, *every = NULL, *some = NULL;
	cbad_result *rr = calloc(700, sizeof(*rr)), *re = calloc(700, sizeof(*re)),
		    *rs = calloc(700, sizeof(*rs));
	char err[256];
	int built = 0, pending = 0;

	cbad_settings_default(&s);
	s.baseline_bytes = 4096;
	s.baseline_events = 64;
	s.hop_events = 50;
	s.window_events = 32;
	ck_assert_int_eq(cbad_detector_new(&s, &ref, err, sizeof(err)), 0);
	ck_assert_int_eq(cbad_detector_new(&s, &every, err, sizeof(err)), 0);
	ck_assert_int_eq(cbad_detector_new(&s, &some, err, sizeof(err)), 0);
	run_varied(ref, 0, 700, rr);
	for (int i = 0; i < 700; i++) {
		run_varied(every, i, 1, re + i);
		pending += cbad_detector_idle_pending(every);
		/* idle() does the work once, and says so */
		built += cbad_detector_idle(every);
		ck_assert(!cbad_detector_idle_pending(every));
		ck_assert_int_eq(cbad_detector_idle(every), 0);
		run_varied(some, i, 1, rs + i);
		if (i % 7 == 3)
			cbad_detector_idle(some);
	}
	ck_assert_int_eq(memcmp(rr, re, 700 * sizeof(*rr)), 0);
	ck_assert_int_eq(memcmp(rr, rs, 700 * sizeof(*rr)), 0);
	/* every hop of this stream changes the baseline: 14 hops, 14 builds off the event path */
	ck_assert_int_eq(pending, 700 / 50);
	ck_assert_int_eq(built, 700 / 50);
	for (size_t c = 0; c < sizeof(cut) / sizeof(cut[0]); c++) {
		cbad_detector *a = NULL, *b = NULL;
		void *buf = NULL;
		size_t len = 0;

		ck_assert_int_eq(cbad_detector_new(&s, &a, err, sizeof(err)), 0);
		run_varied(a, 0, cut[c], NULL);
		ck_assert(cbad_detector_idle_pending(a) == (cut[c] % 50 == 0));
		ck_assert_int_eq(cbad_detector_save(a, &buf, &len, err, sizeof(err)), 0);
		ck_assert_int_eq(cbad_detector_load(buf, len, &b, err, sizeof(err)), 0);
		ck_assert(!cbad_detector_idle_pending(b)); /* load builds the dictionary */
		run_varied(b, cut[c], 700 - cut[c], rs);
		ck_assert_int_eq(memcmp(rr + cut[c], rs, (size_t)(700 - cut[c]) * sizeof(*rs)), 0);
		/* the original, built by idle() after the save, goes on the same way too */
		cbad_detector_idle(a);
		run_varied(a, cut[c], 700 - cut[c], rs);
		ck_assert_int_eq(memcmp(rr + cut[c], rs, (size_t)(700 - cut[c]) * sizeof(*rs)), 0);
		free(buf);
		cbad_detector_free(a);
		cbad_detector_free(b);
	}
	free(rr);
	free(re);
	free(rs);
	cbad_detector_free(ref);
	cbad_detector_free(every);
	cbad_detector_free(some);
}
END_TEST

START_TEST(test_sensitivity_monotone)
{
	static const double sens[] = {0.0, 0.25, 0.5, 0.75, 1.0};
	cbad_result *r[5];
	int counts[5] = {0};

	for (int k = 0; k < 5; k++) {
		cbad_detector *d = new_default(sens[k]);

		r[k] = calloc(3000, sizeof(cbad_result));
		run(d, 5, 0, 3000, r[k]);
		cbad_detector_free(d);
		for (int i = 0; i < 3000; i++)
			counts[k] += r[k][i].anomaly;
		if (k > 0) {
			ck_assert_double_gt(cbad_sensitivity_alpha(sens[k]),
					    cbad_sensitivity_alpha(sens[k - 1]));
			ck_assert_int_ge(counts[k], counts[k - 1]);
			for (int i = 0; i < 3000; i++)
				ck_assert(!r[k - 1][i].anomaly || r[k][i].anomaly);
		}
	}
	ck_assert_int_gt(counts[4], counts[0]);
	ck_assert_double_eq_tol(cbad_sensitivity_alpha(0.5), 1e-3, 1e-15);
	for (int k = 0; k < 5; k++)
		free(r[k]);
}
END_TEST

START_TEST(test_set_sensitivity_and_memory)
{
	cbad_detector *d = new_default(0.5);
	cbad_status st;

	ck_assert_int_eq(cbad_detector_set_sensitivity(d, 1.5), -EINVAL);
	ck_assert_int_eq(cbad_detector_set_sensitivity(d, 0.9), 0);
	ck_assert_double_eq(cbad_detector_settings(d)->sensitivity, 0.9);
	ck_assert_int_eq(cbad_detector_process(d, NULL, 3, 0, &(cbad_result){0}), -EINVAL);
	cbad_detector_free(d);
	/* The structure channels (novelty, drift) stay within 256 KiB at the defaults. */
	{
		cbad_settings s;
		char err[256];

		cbad_settings_default(&s);
		ck_assert_int_eq(cbad_detector_new_channels(&s, CBAD_CHANNEL_DRIFT, &d, err, sizeof(err)), 0);
		run(d, 6, 0, 3000, NULL);
		cbad_detector_status(d, &st);
		ck_assert_uint_gt(st.memory_bytes, 64 * 1024);
		ck_assert_uint_le(st.memory_bytes, 256 * 1024);
		cbad_detector_free(d);
	}
	cbad_detector_free(NULL);
}
END_TEST

/* One form over and over: the baseline keeps TEMPLATE_COPIES of it, a few hundred bytes. */
static void run_one_form(cbad_detector *d, int from, int n, cbad_result *out)
{
	char buf[128];

	for (int i = from; i < from + n; i++) {
		int len = snprintf(buf, sizeof(buf), "{\"level\":\"info\",\"msg\":\"tick\",\"n\":%d}", i);

		ck_assert_int_eq(cbad_detector_process(d, buf, (size_t)len, 1710248400000 + i * 100LL,
						       out ? &out[i - from] : &(cbad_result){0}),
				 0);
	}
}

/* The dictionary's buffer follows what the dictionary needs: a stream of few forms does not
 * hold the 56 KiB of a full baseline and archive, a varied one grows it (with what a hop
 * appends and zstd's tables), and a state saved after that restores the same results. */
START_TEST(test_dictionary_buffer_follows_need)
{
	cbad_settings s;
	cbad_detector *d = NULL, *b = NULL;
	cbad_status st;
	size_t few, many;
	cbad_result *ra = calloc(500, sizeof(*ra)), *rb = calloc(500, sizeof(*rb));
	void *buf = NULL;
	size_t len = 0;
	char err[256];

	cbad_settings_default(&s);
	ck_assert_int_eq(cbad_detector_new_channels(&s, CBAD_CHANNEL_DRIFT, &d, err, sizeof(err)), 0);
	run_one_form(d, 0, 3000, NULL);
	cbad_detector_status(d, &st);
	few = st.memory_bytes;
	run_varied(d, 3000, 3000, NULL);
	cbad_detector_status(d, &st);
	many = st.memory_bytes;
	ck_assert_uint_ge(many, few + 64 * 1024);
	run_one_form(d, 6000, 300, NULL);
	ck_assert_int_eq(cbad_detector_save(d, &buf, &len, err, sizeof(err)), 0);
	ck_assert_int_eq(cbad_detector_load(buf, len, &b, err, sizeof(err)), 0);
	run(d, 7, 9000, 500, ra);
	run(b, 7, 9000, 500, rb);
	ck_assert_int_eq(memcmp(ra, rb, 500 * sizeof(*ra)), 0);
	free(buf);
	free(ra);
	free(rb);
	cbad_detector_free(b);
	cbad_detector_free(d);
}
END_TEST

/* A drift of the mix (a rare template becomes the majority for a while): the window is the
 * anomaly, so its other events are flagged too; once the mix is back and the window has
 * moved on (its newest step is back to the usual mix), nothing is flagged as a window. */
START_TEST(test_drift_window_flagged)
{
	cbad_detector *d = new_default(0.5);
	char buf[256];
	cbad_result r;
	int window_other = 0, window_after = 0, window_before = 0;

	rng = 77;
	for (int i = 0; i < 6000; i++) {
		bool drifting = i >= 3000 && i < 3400;
		bool rare = next() % 100 < (drifting ? 70u : 5u);
		size_t len;

		if (rare)
			len = (size_t)snprintf(buf, sizeof(buf),
					       "{\"level\":\"WARN\",\"msg\":\"cache miss for key %u\"}",
					       next() % 50);
		else
			len = (size_t)snprintf(buf, sizeof(buf),
					       "{\"level\":\"INFO\",\"msg\":\"request served in %u ms\"}",
					       next() % 50);
		ck_assert_int_eq(cbad_detector_process(d, buf, len, 1710248400000 + i * 100LL, &r), 0);
		if (!r.anomaly || r.kind != CBAD_KIND_WINDOW)
			continue;
		ck_assert_uint_gt(r.window_events, 0);
		window_before += i < 3000;
		window_other += drifting && !rare;
		window_after += i >= 3400 + 100;
	}
	ck_assert_int_eq(window_before, 0);
	ck_assert_int_gt(window_other, 10);
	ck_assert_int_eq(window_after, 0);
	cbad_detector_free(d);
}
END_TEST

START_TEST(test_bad_settings_refused)
{
	cbad_settings s;
	cbad_detector *d = NULL;
	char err[256] = "";

	cbad_settings_default(&s);
	s.window_events = 1;
	ck_assert_int_eq(cbad_detector_new(&s, &d, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(d);
	ck_assert_ptr_nonnull(strstr(err, "window_events"));
	ck_assert_str_eq(cbad_kind_name(CBAD_KIND_WINDOW), "window");
	ck_assert_str_eq(cbad_severity_name(CBAD_SEVERITY_CRITICAL), "critical");
}
END_TEST

int main(void)
{
	Suite *su = suite_create("cbad_detector");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_warm_up);
	tcase_add_test(tc, test_novel_event_explained);
	tcase_add_test(tc, test_score_consistent);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_state_round_trip);
	tcase_add_test(tc, test_state_round_trip_small_baseline);
	tcase_add_test(tc, test_idle_same_results);
	tcase_add_test(tc, test_sensitivity_monotone);
	tcase_add_test(tc, test_set_sensitivity_and_memory);
	tcase_add_test(tc, test_dictionary_buffer_follows_need);
	tcase_add_test(tc, test_drift_window_flagged);
	tcase_add_test(tc, test_bad_settings_refused);
	tcase_add_test(tc, test_text_channel);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
