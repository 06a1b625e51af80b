/* SPDX-License-Identifier: Apache-2.0 */
/* test_cbad_settings: defaults, validation and the JSON form of a stream's detector settings. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "services/detector/cbad/cbad.h"

START_TEST(test_defaults_valid)
{
	cbad_settings s;
	char err[128] = "";

	cbad_settings_default(&s);
	ck_assert_int_eq(cbad_settings_validate(&s, err, sizeof(err)), 0);
	ck_assert_double_eq(s.sensitivity, 0.5);
	ck_assert_uint_eq(s.mask, CBAD_MASK_ALL);
	ck_assert_uint_ge(s.baseline_events, s.hop_events);
}
END_TEST

START_TEST(test_invalid_named)
{
	cbad_settings s;
	char err[128] = "";

	cbad_settings_default(&s);
	s.sensitivity = 1.5;
	ck_assert_int_eq(cbad_settings_validate(&s, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "sensitivity"));
	cbad_settings_default(&s);
	s.hop_events = s.baseline_events + 1;
	ck_assert_int_eq(cbad_settings_validate(&s, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "hop_events"));
	cbad_settings_default(&s);
	s.zstd_level = 0;
	ck_assert_int_eq(cbad_settings_validate(&s, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "zstd_level"));
	cbad_settings_default(&s);
	s.nentity_fields = 1;
	s.entity_fields[0][0] = '\0';
	ck_assert_int_eq(cbad_settings_validate(&s, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "entity_fields"));
}
END_TEST

START_TEST(test_json_apply)
{
	cbad_settings s;
	char err[128] = "";
	const char *j = "{\"sensitivity\":0.8,\"window_events\":300,\"mask\":[\"uuids\",\"ips\"],"
			"\"entity_fields\":[\"host\",\"user.id\"],\"value_fields\":[\"cpu\"]}";

	cbad_settings_default(&s);
	ck_assert_int_eq(cbad_settings_apply_json(&s, j, strlen(j), err, sizeof(err)), 0);
	ck_assert_double_eq(s.sensitivity, 0.8);
	ck_assert_uint_eq(s.window_events, 300);
	ck_assert_uint_eq(s.mask, CBAD_MASK_UUIDS | CBAD_MASK_IPS);
	ck_assert_uint_eq(s.nentity_fields, 2);
	ck_assert_str_eq(s.entity_fields[1], "user.id");
	ck_assert_uint_eq(s.nvalue_fields, 1);
	ck_assert_str_eq(s.value_fields[0], "cpu");
}
END_TEST

START_TEST(test_json_errors_leave_untouched)
{
	cbad_settings s, before;
	char err[128] = "";
	const char *bad[] = {
		"{\"sensitivity\":0.9,\"colour\":1}", "{\"sensitivity\":2}", "{\"window_events\":-3}",
		"{\"mask\":[\"nope\"]}", "[1,2]", "{\"entity_fields\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
		"{\"baseline_events\":1.5}",
	};

	cbad_settings_default(&s);
	before = s;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_int_eq(cbad_settings_apply_json(&s, bad[i], strlen(bad[i]), err, sizeof(err)),
				 -EINVAL);
		ck_assert_int_gt((int)strlen(err), 0);
		ck_assert_int_eq(memcmp(&s, &before, sizeof(s)), 0);
	}
	ck_assert_int_eq(cbad_settings_apply_json(&s, bad[0], strlen(bad[0]), err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "colour"));
}
END_TEST

int main(void)
{
	Suite *su = suite_create("cbad_settings");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_defaults_valid);
	tcase_add_test(tc, test_invalid_named);
	tcase_add_test(tc, test_json_apply);
	tcase_add_test(tc, test_json_errors_leave_untouched);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
