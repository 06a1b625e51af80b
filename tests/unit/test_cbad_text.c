/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_text: the text channel's choice of prose fields, its p-values, and its state. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_text.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 32);
}

static const char *const english[] = {
	"the", "capital", "of", "is", "a", "good", "book", "for", "you", "can", "use", "this",
	"function", "to", "sort", "list", "in", "python", "answer", "about", "pounds", "miles",
	"short", "story", "read", "classic", "novel", "and", "with", "it", "that", "way", "best",
	"simple", "array", "numbers", "reverse", "string", "split", "great", "idea", "here",
};
static const char *const spanish[] = {
	"la", "capital", "que", "buscas", "es", "correcta", "función", "más", "detalles",
	"avísame", "puedes", "usar", "indicada", "para", "hacerlo", "aquí", "tienes", "respuesta",
};

static size_t sentence(char *out, size_t cap, const char *const *words, size_t nw)
{
	size_t n = 0, k = 6 + next() % 9;

	for (size_t i = 0; i < k; i++)
		n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? " " : "", words[next() % nw]);
	n += (size_t)snprintf(out + n, cap - n, ".");
	return n;
}

/* One event: an id, a category, a path, a log line made from one template, and prose. */
static size_t event(char *out, size_t cap, bool foreign)
{
	char text[512];

	if (foreign)
		sentence(text, sizeof(text), spanish, sizeof(spanish) / sizeof(spanish[0]));
	else
		sentence(text, sizeof(text), english, sizeof(english) / sizeof(english[0]));
	return (size_t)snprintf(out, cap,
				"{\"id\":\"%08x%08x\",\"cat\":\"c%u\",\"path\":\"/api/v1/items/%u\","
				"\"msg\":\"INFO [main] Service - order %u created in %u ms\","
				"\"answer\":\"%s\",\"n\":%u}",
				next(), next(), next() % 3, next() % 1000, next(), next() % 500, text,
				next() % 100);
}

static double observe(cbad_text *t, bool foreign, cbad_chan_signal *sig, size_t *nsig)
{
	char ev[1024];
	size_t len = event(ev, sizeof(ev), foreign);

	*nsig = cbad_text_observe(t, ev, len, 1e-3, sig, 1);
	return *nsig ? sig->p_value : 1.0;
}

START_TEST(test_prose_field_and_pvalues)
{
	cbad_text *t;
	cbad_chan_signal sig;
	size_t nsig, low = 0, normal = 4000;

	rng = 0x1234567ull;
	ck_assert_int_eq(cbad_text_new(&t), 0);
	/* Nothing is judged while the fields are chosen. */
	for (int i = 0; i < CBAD_TEXT_HEURISTIC; i++) {
		observe(t, false, &sig, &nsig);
		ck_assert_uint_eq(nsig, 0);
	}
	for (int i = 0; i < 1500; i++)
		observe(t, false, &sig, &nsig);
	/* Only the prose field is modelled: ids, categories, paths and a log template are not. */
	ck_assert_uint_eq(nsig, 1);
	ck_assert_str_eq(sig.name, "text:answer");
	ck_assert_str_eq(sig.field, "answer");
	ck_assert_int_eq(sig.kind, CBAD_KIND_EVENT);
	/* On exchangeable text the p-values are calibrated (within the ranks' resolution). */
	for (size_t i = 0; i < normal; i++)
		low += observe(t, false, &sig, &nsig) < 0.01;
	ck_assert_uint_le(low, normal / 50);
	/* Text in another language reads as strange. */
	ck_assert_double_lt(observe(t, true, &sig, &nsig), 1e-4);
	ck_assert_double_gt(sig.stat, sig.base_median);
	ck_assert_ptr_nonnull(strstr(sig.detail, "bits per byte"));
	/* A burst of it stays strange: flagged texts are neither learned nor raise the bar. */
	for (int i = 0; i < 40; i++)
		ck_assert_double_lt(observe(t, true, &sig, &nsig), 1e-3);
	/* A text of ordinary words that repeats itself (a stuck generation) is strange too. */
	{
		char ev[1024];
		size_t n = (size_t)snprintf(ev, sizeof(ev), "{\"id\":\"x\",\"answer\":\"");

		for (int i = 0; i < 40; i++)
			n += (size_t)snprintf(ev + n, sizeof(ev) - n, "the ");
		n += (size_t)snprintf(ev + n, sizeof(ev) - n, "\"}");
		ck_assert_uint_eq(cbad_text_observe(t, ev, n, 1e-3, &sig, 1), 1);
		ck_assert_double_lt(sig.p_value, 1e-4);
		ck_assert_ptr_nonnull(strstr(sig.detail, "repeats itself"));
	}
	cbad_text_free(t);
}
END_TEST

/* A rare text that recurs is learned after the quarantine, while it stays strange for the
 * length of a burst. */
START_TEST(test_recurring_text_learned)
{
	cbad_text *t;
	cbad_chan_signal sig;
	size_t nsig;
	char ev[512];
	const char *odd = "Gerne helfe ich dir dabei. Die Antwort lautet wie folgt. Viel Erfolg!";
	double first = 1.0, last = 1.0, first_stat = 0, last_stat = 0;
	size_t held = 0;

	rng = 0x77ull;
	ck_assert_int_eq(cbad_text_new(&t), 0);
	for (int i = 0; i < CBAD_TEXT_HEURISTIC + 1500; i++)
		observe(t, false, &sig, &nsig);
	for (int i = 0; i < 1200; i++) {
		if (i == 0)
			held = cbad_text_memory(t);
		if (i % 100 == 0) {
			int n = snprintf(ev, sizeof(ev), "{\"id\":\"%08x\",\"answer\":\"%s\"}", next(), odd);

			nsig = cbad_text_observe(t, ev, (size_t)n, 1e-3, &sig, 1);
			ck_assert_uint_eq(nsig, 1);
			if (i == 0) {
				first = sig.p_value;
				first_stat = sig.stat;
			}
			/* The quarantined text holds its own bytes (at most 256) while it waits. */
			if (i == 0) {
				ck_assert_uint_gt(cbad_text_memory(t), held);
				ck_assert_uint_le(cbad_text_memory(t), held + 256);
			}
			last = sig.p_value;
			last_stat = sig.stat;
		} else {
			observe(t, false, &sig, &nsig);
		}
	}
	/* Flagged at first and during the quarantine; then learned: its cost per byte falls by
	 * more than half (this test's English is a 42-word vocabulary, so foreign letters still
	 * stand out somewhat). */
	ck_assert_double_lt(first, 1e-3);
	ck_assert_double_lt(last_stat, first_stat / 2);
	ck_assert_double_gt(last, first * 1e6);
	cbad_text_free(t);
}
END_TEST

START_TEST(test_no_prose_no_signal)
{
	cbad_text *t;
	cbad_chan_signal sig;
	char ev[256];

	ck_assert_int_eq(cbad_text_new(&t), 0);
	for (int i = 0; i < 2000; i++) {
		int n = snprintf(ev, sizeof(ev), "{\"host\":\"h%u\",\"cpu\":%u}", next() % 20,
				 next() % 100);

		ck_assert_uint_eq(cbad_text_observe(t, ev, (size_t)n, 1e-3, &sig, 1), 0);
	}
	/* Plain lines and invalid JSON are ignored. */
	ck_assert_uint_eq(cbad_text_observe(t, "GET / 200", 9, 1e-3, &sig, 1), 0);
	ck_assert_uint_eq(cbad_text_observe(t, "{\"a\":", 5, 1e-3, &sig, 1), 0);
	cbad_text_free(t);
}
END_TEST

START_TEST(test_state_roundtrip)
{
	cbad_text *a, *b;
	cbad_writer w = {0};
	cbad_reader r;
	cbad_chan_signal sa, sb;
	size_t na, nb;

	rng = 0xabcdefull;
	ck_assert_int_eq(cbad_text_new(&a), 0);
	ck_assert_int_eq(cbad_text_new(&b), 0);
	for (int i = 0; i < 1777; i++)
		observe(a, i % 97 == 0, &sa, &na);
	cbad_text_save(a, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_text_load(b, &r), 0);
	ck_assert_uint_eq(r.off, r.len);
	ck_assert_uint_eq(cbad_text_memory(a), cbad_text_memory(b));
	for (int i = 0; i < 1500; i++) {
		uint64_t keep = rng;
		double pa = observe(a, i % 50 == 0, &sa, &na), pb;

		rng = keep;
		pb = observe(b, i % 50 == 0, &sb, &nb);
		ck_assert_uint_eq(na, nb);
		ck_assert(pa == pb);
		if (na)
			ck_assert(sa.stat == sb.stat);
	}
	/* A truncated state is refused. */
	cbad_reader_init(&r, w.buf, w.len / 2);
	ck_assert_int_eq(cbad_text_load(b, &r), -EINVAL);
	cbad_writer_free(&w);
	cbad_text_free(a);
	cbad_text_free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cbad_text");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_prose_field_and_pvalues);
	tcase_add_test(tc, test_recurring_text_learned);
	tcase_add_test(tc, test_no_prose_no_signal);
	tcase_add_test(tc, test_state_roundtrip);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
