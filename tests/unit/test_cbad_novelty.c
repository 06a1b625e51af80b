/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_novelty: the cost in bits of an event given a dictionary digested from the baseline. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "services/detector/cbad/cbad_novelty.h"

static char base[16384];
static size_t base_len;

static void make_base(void)
{
	base_len = 0;
	for (int i = 0; i < 80; i++)
		base_len += (size_t)snprintf(base + base_len, sizeof(base) - base_len,
					     "{\"method\":\"GET\",\"path\":\"/api/v1/items/%d\",\"status\":200}\n",
					     i % 7);
}

START_TEST(test_known_is_cheap_novel_is_costly)
{
	cbad_novelty *n;
	const char *known = "{\"method\":\"GET\",\"path\":\"/api/v1/items/3\",\"status\":200}";
	const char *novel = "{\"method\":\"POST\",\"path\":\"/admin/../../etc/passwd\",\"status\":403}";
	double k_alone, k_dict, n_dict;

	make_base();
	ck_assert_int_eq(cbad_novelty_new(1, sizeof(base), &n), 0);
	k_alone = cbad_novelty_bits(n, known, strlen(known)); /* no dictionary yet */
	ck_assert_double_eq(k_alone, cbad_novelty_bits_alone(n, known, strlen(known)));
	ck_assert_int_eq(cbad_novelty_rebuild(n, base, base_len), 0);
	k_dict = cbad_novelty_bits(n, known, strlen(known));
	n_dict = cbad_novelty_bits(n, novel, strlen(novel));
	/* A line of the baseline is about one match: a dozen bytes at most. */
	ck_assert_double_lt(k_dict, 96);
	ck_assert_double_lt(k_dict * 4, k_alone);
	ck_assert_double_gt(n_dict, 3 * k_dict);
	/* Bits are whole bytes, net of the frame overhead: the empty input costs nothing. */
	ck_assert_double_eq(cbad_novelty_bits(n, "", 0), 0);
	ck_assert_double_eq(k_dict, 8 * (double)(long)(k_dict / 8));
	cbad_novelty_free(n);
}
END_TEST

START_TEST(test_deterministic_and_clear)
{
	cbad_novelty *a, *b;
	const char *ev = "{\"method\":\"GET\",\"path\":\"/api/v1/items/5\",\"status\":500}";

	make_base();
	ck_assert_int_eq(cbad_novelty_new(1, sizeof(base), &a), 0);
	ck_assert_int_eq(cbad_novelty_new(1, sizeof(base), &b), 0);
	ck_assert_int_eq(cbad_novelty_rebuild(a, base, base_len), 0);
	ck_assert_int_eq(cbad_novelty_rebuild(b, base, base_len), 0);
	for (int i = 0; i < 50; i++)
		ck_assert_double_eq(cbad_novelty_bits(a, ev, strlen(ev)),
				    cbad_novelty_bits(b, ev, strlen(ev)));
	/* Mixing standalone and dictionary calls does not change either. */
	ck_assert_double_eq(cbad_novelty_bits_alone(a, ev, strlen(ev)),
			    cbad_novelty_bits_alone(b, ev, strlen(ev)));
	ck_assert_double_eq(cbad_novelty_bits(a, ev, strlen(ev)), cbad_novelty_bits(b, ev, strlen(ev)));
	ck_assert_int_eq(cbad_novelty_rebuild(a, NULL, 0), 0);
	ck_assert_double_eq(cbad_novelty_bits(a, ev, strlen(ev)),
			    cbad_novelty_bits_alone(a, ev, strlen(ev)));
	ck_assert_uint_lt(cbad_novelty_memory(b), 200 * 1024);
	cbad_novelty_free(a);
	cbad_novelty_free(b);
	cbad_novelty_free(NULL);
}
END_TEST

START_TEST(test_memo_follows_the_dictionary)
{
	cbad_novelty *a, *fresh;
	const char *ev = "{\"method\":\"PUT\",\"path\":\"/api/v1/items/9\",\"status\":201}";
	double before, again, after;

	make_base();
	ck_assert_int_eq(cbad_novelty_new(1, sizeof(base), &a), 0);
	ck_assert_int_eq(cbad_novelty_new(1, sizeof(base), &fresh), 0);
	static const char other[] = "lorem ipsum dolor sit amet, consectetur adipiscing elit\n";

	ck_assert_int_eq(cbad_novelty_rebuild(a, other, sizeof(other) - 1), 0);
	before = cbad_novelty_bits(a, ev, strlen(ev));
	again = cbad_novelty_bits(a, ev, strlen(ev)); /* served from the memo */
	ck_assert_double_eq(before, again);
	/* A new dictionary forgets the memo: the cost is the one a fresh coder computes. */
	ck_assert_int_eq(cbad_novelty_rebuild(a, base, base_len), 0);
	ck_assert_int_eq(cbad_novelty_rebuild(fresh, base, base_len), 0);
	after = cbad_novelty_bits(a, ev, strlen(ev));
	ck_assert_double_eq(after, cbad_novelty_bits(fresh, ev, strlen(ev)));
	ck_assert_double_lt(after, before);
	/* Inputs that differ in one byte are not confused. */
	ck_assert_double_ne(cbad_novelty_bits(a, ev, strlen(ev)),
			    cbad_novelty_bits(a, "{\"zz\":\"qqqqqqqqqqqqqqqqqqqqqqqqqq\"}", 33));
	cbad_novelty_free(a);
	cbad_novelty_free(fresh);
}
END_TEST

/* A long input is coded by a context made for it: its cost is the one any coder computes, and
 * the coder does not keep the larger workspace zstd sized for it. */
START_TEST(test_long_input_leaves_no_workspace)
{
	cbad_novelty *a, *fresh;
	const char *ev = "{\"method\":\"GET\",\"path\":\"/api/v1/items/2\",\"status\":404}";
	static char longer[8192];
	size_t held;
	double bits;

	make_base();
	for (size_t i = 0; i < sizeof(longer); i++)
		longer[i] = base[(i * 7) % base_len] ^ (char)(i / 512);
	ck_assert_int_eq(cbad_novelty_new(3, sizeof(base), &a), 0);
	ck_assert_int_eq(cbad_novelty_new(3, sizeof(base), &fresh), 0);
	ck_assert_int_eq(cbad_novelty_rebuild(a, base, base_len), 0);
	ck_assert_int_eq(cbad_novelty_rebuild(fresh, base, base_len), 0);
	bits = cbad_novelty_bits(fresh, longer, sizeof(longer));
	cbad_novelty_bits(a, ev, strlen(ev));
	cbad_novelty_bits_alone(a, longer, 600);
	cbad_novelty_bits(a, longer, 100);
	held = cbad_novelty_memory(a);
	ck_assert_double_eq(cbad_novelty_bits(a, longer, sizeof(longer)), bits);
	ck_assert_double_eq(cbad_novelty_bits_alone(a, longer, sizeof(longer)),
			    cbad_novelty_bits_alone(fresh, longer, sizeof(longer)));
	/* Nothing grows: zstd's own workspace for 8 KiB would be about 60 KiB more, its output
	 * bound 8 KiB. */
	ck_assert_uint_eq(cbad_novelty_memory(a), held);
	ck_assert_double_eq(cbad_novelty_bits(a, ev, strlen(ev)), cbad_novelty_bits(fresh, ev, strlen(ev)));
	cbad_novelty_free(a);
	cbad_novelty_free(fresh);
}
END_TEST

int main(void)
{
	Suite *su = suite_create("cbad_novelty");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_known_is_cheap_novel_is_costly);
	tcase_add_test(tc, test_memo_follows_the_dictionary);
	tcase_add_test(tc, test_deterministic_and_clear);
	tcase_add_test(tc, test_long_input_leaves_no_workspace);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
