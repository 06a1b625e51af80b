/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_archive: which forms the long memory keeps, its bounds, and its state. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_archive.h"

static const uint8_t form[] = "{\"ua\":\"Crawler/2.1\",\"path\":\"/a/#\"}";

START_TEST(test_keeps_recurring_normal_forms_only)
{
	cbad_archive *a;
	uint8_t out[CBAD_ARCHIVE_BYTES];

	ck_assert_int_eq(cbad_archive_new(64, &a), 0);
	/* Never flagged: the baseline has kept it, nothing to remember. */
	for (int i = 0; i < 10; i++)
		cbad_archive_note(a, 1, true);
	ck_assert(!cbad_archive_offer(a, 1, form, sizeof(form) - 1));
	/* Only ever flagged (an attack that repeats): never kept. */
	for (int i = 0; i < 10; i++)
		cbad_archive_note(a, 2, false);
	ck_assert(!cbad_archive_offer(a, 2, form, sizeof(form) - 1));
	/* Normal fewer than CBAD_ARCHIVE_NORMALS times, then flagged on return: not yet. */
	for (int i = 0; i < CBAD_ARCHIVE_NORMALS - 1; i++)
		cbad_archive_note(a, 3, true);
	cbad_archive_note(a, 3, false);
	ck_assert(!cbad_archive_offer(a, 3, form, sizeof(form) - 1));
	/* Normal often enough, and forgotten once: kept, once per form, ended by a newline. */
	cbad_archive_note(a, 3, true);
	ck_assert(cbad_archive_offer(a, 3, form, sizeof(form) - 1));
	ck_assert(!cbad_archive_offer(a, 3, form, sizeof(form) - 1));
	ck_assert_uint_eq(cbad_archive_len(a), sizeof(form));
	cbad_archive_copy(a, out);
	ck_assert_mem_eq(out, form, sizeof(form) - 1);
	ck_assert_uint_eq(out[sizeof(form) - 1], '\n');
	/* Out-of-range slots are ignored. */
	cbad_archive_note(a, 64, true);
	ck_assert(!cbad_archive_offer(a, 64, form, sizeof(form) - 1));
	cbad_archive_free(a);
	cbad_archive_free(NULL);
}
END_TEST

START_TEST(test_bounded_oldest_dropped)
{
	cbad_archive *a;
	uint8_t ev[CBAD_ARCHIVE_MAX_EVENT + 100], out[CBAD_ARCHIVE_BYTES];
	uint32_t slots = 4096;

	ck_assert_int_eq(cbad_archive_new(slots, &a), 0);
	for (uint32_t s = 0; s < slots; s++) {
		for (int i = 0; i < CBAD_ARCHIVE_NORMALS; i++)
			cbad_archive_note(a, s, true);
		cbad_archive_note(a, s, false);
		memset(ev, 'a' + (int)(s % 26), sizeof(ev));
		ck_assert(cbad_archive_offer(a, s, ev, 40 + s % 600));
		ck_assert_uint_le(cbad_archive_len(a), CBAD_ARCHIVE_BYTES);
	}
	/* The newest exemplar is last, cut at CBAD_ARCHIVE_MAX_EVENT. */
	cbad_archive_copy(a, out);
	ck_assert_uint_eq(out[cbad_archive_len(a) - 1], '\n');
	ck_assert_uint_eq(out[cbad_archive_len(a) - 2], 'a' + (int)((slots - 1) % 26));
	/* A dropped form can be kept again. */
	ck_assert(cbad_archive_offer(a, 0, ev, 10));
	cbad_archive_free(a);
}
END_TEST

START_TEST(test_state_roundtrip)
{
	cbad_archive *a, *b;
	cbad_writer w = {0};
	cbad_reader r;
	uint8_t oa[CBAD_ARCHIVE_BYTES], ob[CBAD_ARCHIVE_BYTES];

	ck_assert_int_eq(cbad_archive_new(256, &a), 0);
	ck_assert_int_eq(cbad_archive_new(256, &b), 0);
	for (uint32_t s = 0; s < 256; s++) {
		for (uint32_t i = 0; i < s % 5; i++)
			cbad_archive_note(a, s, true);
		if (s % 3)
			cbad_archive_note(a, s, false);
		cbad_archive_offer(a, s, form, 20 + s % 15);
	}
	cbad_archive_save(a, &w);
	ck_assert(!w.failed);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_archive_load(b, &r), 0);
	ck_assert_uint_eq(r.off, r.len);
	ck_assert_uint_eq(cbad_archive_len(a), cbad_archive_len(b));
	cbad_archive_copy(a, oa);
	cbad_archive_copy(b, ob);
	ck_assert_mem_eq(oa, ob, cbad_archive_len(a));
	/* The same decisions afterwards. */
	for (uint32_t s = 0; s < 256; s++) {
		cbad_archive_note(a, s, s % 2);
		cbad_archive_note(b, s, s % 2);
		ck_assert_int_eq(cbad_archive_offer(a, s, form, 30), cbad_archive_offer(b, s, form, 30));
	}
	cbad_reader_init(&r, w.buf, w.len - 3);
	ck_assert_int_eq(cbad_archive_load(b, &r), -EINVAL);
	cbad_writer_free(&w);
	cbad_archive_free(a);
	cbad_archive_free(b);
}
END_TEST

/* The exemplars' bytes are allocated with the first exemplar; an empty archive saves and loads
 * without them. Slot counts beyond 16 bits are refused. */
START_TEST(test_bytes_on_first_exemplar)
{
	cbad_archive *a, *b, *c;
	cbad_writer w = {0};
	cbad_reader r;
	size_t empty;

	ck_assert_int_eq(cbad_archive_new(65537, &c), -EINVAL);
	ck_assert_int_eq(cbad_archive_new(0, &c), -EINVAL);
	ck_assert_int_eq(cbad_archive_new(16, &a), 0);
	ck_assert_int_eq(cbad_archive_new(16, &b), 0);
	empty = cbad_archive_memory(a);
	ck_assert_uint_lt(empty, CBAD_ARCHIVE_BYTES);
	cbad_archive_save(a, &w);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_archive_load(b, &r), 0);
	ck_assert_uint_eq(cbad_archive_memory(b), empty);
	cbad_writer_free(&w);
	for (int i = 0; i < CBAD_ARCHIVE_NORMALS; i++)
		cbad_archive_note(a, 5, true);
	cbad_archive_note(a, 5, false);
	ck_assert(cbad_archive_offer(a, 5, form, sizeof(form) - 1));
	ck_assert_uint_eq(cbad_archive_memory(a), empty + CBAD_ARCHIVE_BYTES);
	w = (cbad_writer){0};
	cbad_archive_save(a, &w);
	cbad_reader_init(&r, w.buf, w.len);
	ck_assert_int_eq(cbad_archive_load(b, &r), 0);
	ck_assert_uint_eq(cbad_archive_len(b), sizeof(form));
	ck_assert_uint_eq(cbad_archive_memory(b), empty + CBAD_ARCHIVE_BYTES);
	cbad_writer_free(&w);
	cbad_archive_free(a);
	cbad_archive_free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cbad_archive");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_keeps_recurring_normal_forms_only);
	tcase_add_test(tc, test_bounded_oldest_dropped);
	tcase_add_test(tc, test_state_roundtrip);
	tcase_add_test(tc, test_bytes_on_first_exemplar);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
