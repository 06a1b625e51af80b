/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_explain: the costliest parts of an event and the plain sentence of an anomaly. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "services/detector/cbad/cbad.h"
#include "services/detector/cbad/cbad_explain.h"

static cbad_novelty *with_baseline(void)
{
	static char base[8192];
	size_t len = 0;
	cbad_novelty *n;

	for (int i = 0; i < 60; i++)
		len += (size_t)snprintf(base + len, sizeof(base) - len,
					"{\"user\":\"alice\",\"action\":\"view\",\"status\":\"ok\",\"ms\":%d}\n",
					10 + i % 5);
	ck_assert_int_eq(cbad_novelty_new(1, sizeof(base), &n), 0);
	ck_assert_int_eq(cbad_novelty_rebuild(n, base, len), 0);
	return n;
}

START_TEST(test_costliest_field_first)
{
	cbad_novelty *n = with_baseline();
	cbad_evidence ev[3];
	const char *e = "{\"user\":\"alice\",\"action\":\"view\",\"status\":\"stack overflow in "
			"module frobnicator password=hunter2\",\"ms\":12}";
	size_t k = cbad_explain_top_parts(n, e, strlen(e), CBAD_MASK_ALL, ev, 3);

	ck_assert_uint_ge(k, 1);
	ck_assert_str_eq(ev[0].name, "status");
	ck_assert_ptr_nonnull(strstr(ev[0].value, "frobnicator"));
	/* Evidence is redacted. */
	ck_assert_ptr_null(strstr(ev[0].value, "hunter2"));
	ck_assert_ptr_nonnull(strstr(ev[0].value, "[REDACTED]"));
	for (size_t i = 1; i < k; i++)
		ck_assert_double_le(ev[i].bits, ev[0].bits);
	cbad_novelty_free(n);
}
END_TEST

START_TEST(test_plain_line_tokens)
{
	cbad_novelty *n = with_baseline();
	cbad_evidence ev[2];
	const char *e = "alice view ok ZZZQQQXXXJJJ";
	size_t k = cbad_explain_top_parts(n, e, strlen(e), CBAD_MASK_ALL, ev, 2);

	ck_assert_uint_ge(k, 1);
	ck_assert_str_eq(ev[0].name, "token");
	ck_assert_str_eq(ev[0].value, "ZZZQQQXXXJJJ");
	cbad_novelty_free(n);
}
END_TEST

START_TEST(test_sentence)
{
	cbad_result r;

	memset(&r, 0, sizeof(r));
	r.kind = CBAD_KIND_EVENT;
	snprintf(r.signal, sizeof(r.signal), "novelty");
	r.value = 412;
	r.base_low = 96;
	r.base_median = 150;
	r.base_high = 220;
	r.p_value = 0.0002;
	r.nevidence = 1;
	snprintf(r.evidence[0].name, sizeof(r.evidence[0].name), "error");
	snprintf(r.evidence[0].value, sizeof(r.evidence[0].value), "\"disk full\"");
	r.evidence[0].bits = 200;
	cbad_explain_sentence(&r);
	ck_assert_ptr_nonnull(strstr(r.summary, "412 bits"));
	ck_assert_ptr_nonnull(strstr(r.summary, "96-220"));
	ck_assert_ptr_nonnull(strstr(r.summary, "p=0.0002"));
	ck_assert_ptr_nonnull(strstr(r.summary, "error="));

	memset(&r, 0, sizeof(r));
	r.kind = CBAD_KIND_VALUE;
	snprintf(r.signal, sizeof(r.signal), "value:cpu");
	snprintf(r.entity_field, sizeof(r.entity_field), "host");
	snprintf(r.entity_value, sizeof(r.entity_value), "web-3");
	r.value = 97.5;
	r.base_low = 20;
	r.base_high = 35;
	r.p_value = 1e-5;
	cbad_explain_sentence(&r);
	ck_assert_ptr_nonnull(strstr(r.summary, "value:cpu is 97.5 for host web-3"));
	ck_assert_ptr_nonnull(strstr(r.summary, "20-35"));

	memset(&r, 0, sizeof(r));
	r.kind = CBAD_KIND_WINDOW;
	r.window_events = 200;
	r.value = 0.8;
	r.p_value = 1e-4;
	cbad_explain_sentence(&r);
	ck_assert_ptr_nonnull(strstr(r.summary, "last 200 events"));
}
END_TEST

int main(void)
{
	Suite *su = suite_create("cbad_explain");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_costliest_field_first);
	tcase_add_test(tc, test_plain_line_tokens);
	tcase_add_test(tc, test_sentence);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
