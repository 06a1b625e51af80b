/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for dl_config: loading, defaults, error messages, help, Markdown and JSON dumps. */
#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/dl_config.h"

struct test_cfg {
	char *name;
	char *token;
	int64_t port;
	double ratio;
	bool flag;
	int64_t timeout_ms;
	int64_t buffer;
	char *mode;
};

static const dl_config_param params[] = {
	{ "T_NAME", DL_CONFIG_STRING, offsetof(struct test_cfg, name), "ingest", 1, 16, NULL,
	  "Service name." },
	{ "T_TOKEN", DL_CONFIG_SECRET, offsetof(struct test_cfg, token), NULL, 8, 64, NULL,
	  "API token." },
	{ "T_PORT", DL_CONFIG_INT, offsetof(struct test_cfg, port), "8080", 1, 65535, NULL,
	  "Listen port." },
	{ "T_RATIO", DL_CONFIG_DOUBLE, offsetof(struct test_cfg, ratio), "0.5", 0, 1, NULL,
	  "Sampling ratio." },
	{ "T_FLAG", DL_CONFIG_BOOL, offsetof(struct test_cfg, flag), "false", 0, 0, NULL,
	  "Feature flag." },
	{ "T_TIMEOUT", DL_CONFIG_DURATION_MS, offsetof(struct test_cfg, timeout_ms), "5s", 100,
	  3600000, NULL, "Request timeout." },
	{ "T_BUFFER", DL_CONFIG_BYTES, offsetof(struct test_cfg, buffer), "64KiB", 0, 0, NULL,
	  "Buffer size | per connection." },
	{ "T_MODE", DL_CONFIG_ENUM, offsetof(struct test_cfg, mode), "fast", 0, 0, "fast|safe|off",
	  "Write mode." },
};
#define NPARAMS (sizeof(params) / sizeof(params[0]))

static void clear_env(void)
{
	for (size_t i = 0; i < NPARAMS; i++)
		unsetenv(params[i].env);
	setenv("T_TOKEN", "0123456789abcdef", 1);
}

/* Loads with one variable set to value and expects -EINVAL with exactly message. */
static void expect_error(const char *env, const char *value, const char *message)
{
	struct test_cfg cfg, before;
	char err[512] = "";

	clear_env();
	if (value)
		setenv(env, value, 1);
	else
		unsetenv(env);
	memset(&cfg, 0x5a, sizeof(cfg));
	before = cfg;
	ck_assert_msg(dl_config_load(params, NPARAMS, &cfg, err, sizeof(err)) == -EINVAL,
		      "%s=%s was accepted", env, value ? value : "(unset)");
	ck_assert_str_eq(err, message);
	ck_assert_int_eq(memcmp(&cfg, &before, sizeof(cfg)), 0);
}

START_TEST(test_defaults)
{
	struct test_cfg cfg = { 0 };
	char err[256] = "";

	clear_env();
	setenv("T_PORT", "", 1); /* empty counts as unset */
	ck_assert_int_eq(dl_config_load(params, NPARAMS, &cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.name, "ingest");
	ck_assert_str_eq(cfg.token, "0123456789abcdef");
	ck_assert_int_eq(cfg.port, 8080);
	ck_assert_double_eq(cfg.ratio, 0.5);
	ck_assert(!cfg.flag);
	ck_assert_int_eq(cfg.timeout_ms, 5000);
	ck_assert_int_eq(cfg.buffer, 65536);
	ck_assert_str_eq(cfg.mode, "fast");
	dl_config_free(params, NPARAMS, &cfg);
	ck_assert_ptr_null(cfg.name);
	ck_assert_ptr_null(cfg.token);
	ck_assert_ptr_null(cfg.mode);
	dl_config_free(params, NPARAMS, &cfg);
	dl_config_free(params, NPARAMS, NULL);
}
END_TEST

START_TEST(test_values_from_env)
{
	struct test_cfg cfg = { 0 };
	char err[256] = "";

	clear_env();
	setenv("T_NAME", "detector", 1);
	setenv("T_PORT", "65535", 1);
	setenv("T_RATIO", "0.25", 1);
	setenv("T_FLAG", "YES", 1);
	setenv("T_TIMEOUT", "2m", 1);
	setenv("T_BUFFER", "8MiB", 1);
	setenv("T_MODE", "SAFE", 1);
	ck_assert_int_eq(dl_config_load(params, NPARAMS, &cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.name, "detector");
	ck_assert_int_eq(cfg.port, 65535);
	ck_assert_double_eq(cfg.ratio, 0.25);
	ck_assert(cfg.flag);
	ck_assert_int_eq(cfg.timeout_ms, 120000);
	ck_assert_int_eq(cfg.buffer, 8 * 1024 * 1024);
	/* stored as spelled in the table */
	ck_assert_str_eq(cfg.mode, "safe");
	dl_config_free(params, NPARAMS, &cfg);
}
END_TEST

START_TEST(test_error_messages)
{
	expect_error("T_TOKEN", NULL,
		     "T_TOKEN is required but not set: expected a string with length in 8..64 bytes");
	expect_error("T_PORT", "abc", "T_PORT=\"abc\" is invalid: expected an integer in 1..65535");
	expect_error("T_PORT", "70000", "T_PORT=\"70000\" is invalid: expected an integer in 1..65535");
	expect_error("T_PORT", "0", "T_PORT=\"0\" is invalid: expected an integer in 1..65535");
	expect_error("T_PORT", "80 ", "T_PORT=\"80 \" is invalid: expected an integer in 1..65535");
	expect_error("T_PORT", "99999999999999999999",
		     "T_PORT=\"99999999999999999999\" is invalid: expected an integer in 1..65535");
	expect_error("T_RATIO", "nan", "T_RATIO=\"nan\" is invalid: expected a finite number in 0..1");
	expect_error("T_RATIO", "1.5", "T_RATIO=\"1.5\" is invalid: expected a finite number in 0..1");
	expect_error("T_FLAG", "maybe",
		     "T_FLAG=\"maybe\" is invalid: expected true or false (or 1/0, yes/no, on/off)");
	expect_error("T_TIMEOUT", "5x",
		     "T_TIMEOUT=\"5x\" is invalid: expected a duration like 250ms, 5s, 2m, 1h "
		     "(plain number = ms) in 100ms..1h");
	expect_error("T_TIMEOUT", "2h",
		     "T_TIMEOUT=\"2h\" is invalid: expected a duration like 250ms, 5s, 2m, 1h "
		     "(plain number = ms) in 100ms..1h");
	expect_error("T_BUFFER", "64KB",
		     "T_BUFFER=\"64KB\" is invalid: expected a size like 512B, 64KiB, 8MiB, 1GiB "
		     "(plain number = bytes)");
	expect_error("T_MODE", "fastest",
		     "T_MODE=\"fastest\" is invalid: expected one of fast|safe|off");
	expect_error("T_NAME", "a-name-that-is-too-long",
		     "T_NAME=\"a-name-that-is-too-long\" is invalid: expected a string with length "
		     "in 1..16 bytes");
	expect_error("T_NAME", "bad\nvalue-too-long",
		     "T_NAME=\"bad?value-too-long\" is invalid: expected a string with length in 1..16 bytes");
}
END_TEST

START_TEST(test_secret_value_never_in_error)
{
	expect_error("T_TOKEN", "hunter2",
		     "T_TOKEN (secret, value not shown) is invalid: expected a string with length "
		     "in 8..64 bytes");
}
END_TEST

START_TEST(test_invalid_default_is_reported)
{
	static const dl_config_param bad[] = {
		{ "T_PORT", DL_CONFIG_INT, 0, "eighty", 0, 0, NULL, "Port." },
	};
	int64_t port = 7;
	char err[256] = "";

	unsetenv("T_PORT");
	ck_assert_int_eq(dl_config_load(bad, 1, &port, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "T_PORT default=\"eighty\" is invalid: expected an integer");
	ck_assert_int_eq(port, 7);
}
END_TEST

START_TEST(test_parse_duration)
{
	int64_t v = -1;

	ck_assert_int_eq(dl_config_parse_duration_ms("250ms", &v), 0);
	ck_assert_int_eq(v, 250);
	ck_assert_int_eq(dl_config_parse_duration_ms("5s", &v), 0);
	ck_assert_int_eq(v, 5000);
	ck_assert_int_eq(dl_config_parse_duration_ms("2m", &v), 0);
	ck_assert_int_eq(v, 120000);
	ck_assert_int_eq(dl_config_parse_duration_ms("1h", &v), 0);
	ck_assert_int_eq(v, 3600000);
	ck_assert_int_eq(dl_config_parse_duration_ms("1d", &v), 0);
	ck_assert_int_eq(v, 86400000);
	ck_assert_int_eq(dl_config_parse_duration_ms("1500", &v), 0);
	ck_assert_int_eq(v, 1500);
	ck_assert_int_eq(dl_config_parse_duration_ms("0", &v), 0);
	ck_assert_int_eq(v, 0);
	v = 42;
	ck_assert_int_eq(dl_config_parse_duration_ms("-1s", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_duration_ms("1.5s", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_duration_ms(" 5s", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_duration_ms("5 s", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_duration_ms("s", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_duration_ms("", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_duration_ms("200000000000000d", &v), -ERANGE);
	ck_assert_int_eq(dl_config_parse_duration_ms("99999999999999999999", &v), -ERANGE);
	ck_assert_int_eq(v, 42);
}
END_TEST

START_TEST(test_parse_bytes)
{
	int64_t v = -1;

	ck_assert_int_eq(dl_config_parse_bytes("512B", &v), 0);
	ck_assert_int_eq(v, 512);
	ck_assert_int_eq(dl_config_parse_bytes("64KiB", &v), 0);
	ck_assert_int_eq(v, 65536);
	ck_assert_int_eq(dl_config_parse_bytes("1kib", &v), 0);
	ck_assert_int_eq(v, 1024);
	ck_assert_int_eq(dl_config_parse_bytes("8MiB", &v), 0);
	ck_assert_int_eq(v, 8388608);
	ck_assert_int_eq(dl_config_parse_bytes("2GiB", &v), 0);
	ck_assert_int_eq(v, 2147483648LL);
	ck_assert_int_eq(dl_config_parse_bytes("1TiB", &v), 0);
	ck_assert_int_eq(v, 1099511627776LL);
	ck_assert_int_eq(dl_config_parse_bytes("100", &v), 0);
	ck_assert_int_eq(v, 100);
	v = 42;
	ck_assert_int_eq(dl_config_parse_bytes("64KB", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_bytes("64K", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_bytes("-1", &v), -EINVAL);
	ck_assert_int_eq(dl_config_parse_bytes("10000000TiB", &v), -ERANGE);
	ck_assert_int_eq(v, 42);
}
END_TEST

START_TEST(test_bool_spellings)
{
	static const dl_config_param p[] = {
		{ "T_FLAG", DL_CONFIG_BOOL, 0, NULL, 0, 0, NULL, "Flag." },
	};
	const char *yes[] = { "true", "TRUE", "1", "yes", "on" };
	const char *no[] = { "false", "False", "0", "no", "OFF" };
	bool b;

	for (size_t i = 0; i < 5; i++) {
		b = false;
		setenv("T_FLAG", yes[i], 1);
		ck_assert_int_eq(dl_config_load(p, 1, &b, NULL, 0), 0);
		ck_assert_msg(b, "%s", yes[i]);
		setenv("T_FLAG", no[i], 1);
		ck_assert_int_eq(dl_config_load(p, 1, &b, NULL, 0), 0);
		ck_assert_msg(!b, "%s", no[i]);
	}
}
END_TEST

START_TEST(test_to_json)
{
	struct test_cfg cfg = { 0 };
	cJSON *j = NULL;
	char *text;

	clear_env();
	setenv("T_FLAG", "on", 1);
	ck_assert_int_eq(dl_config_load(params, NPARAMS, &cfg, NULL, 0), 0);
	ck_assert_int_eq(dl_config_to_json(params, NPARAMS, &cfg, &j), 0);
	text = cJSON_PrintUnformatted(j);
	ck_assert_str_eq(text, "{\"T_NAME\":\"ingest\",\"T_TOKEN\":\"***\",\"T_PORT\":8080,"
			       "\"T_RATIO\":0.5,\"T_FLAG\":true,\"T_TIMEOUT\":5000,"
			       "\"T_BUFFER\":65536,\"T_MODE\":\"fast\"}");
	ck_assert_ptr_null(strstr(text, "0123456789abcdef"));
	free(text);
	cJSON_Delete(j);
	dl_config_free(params, NPARAMS, &cfg);
}
END_TEST

static char *capture(void (*print)(FILE *, const char *, const char *, const dl_config_param *,
				   size_t))
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	ck_assert_ptr_nonnull(f);
	print(f, "ingest", "DriftLock's HTTP front door.", params, NPARAMS);
	fclose(f);
	return buf;
}

START_TEST(test_print_help)
{
	char *out = capture(dl_config_print_help);

	ck_assert_str_eq(out,
		"Usage: ingest\n"
		"DriftLock's HTTP front door.\n"
		"\n"
		"Configuration, read from the environment:\n"
		"\n"
		"  VARIABLE   TYPE      DEFAULT     ALLOWED        DESCRIPTION\n"
		"  T_NAME     string    ingest      1..16 bytes    Service name.\n"
		"  T_TOKEN    secret    (required)  8..64 bytes    API token.\n"
		"  T_PORT     int       8080        1..65535       Listen port.\n"
		"  T_RATIO    double    0.5         0..1           Sampling ratio.\n"
		"  T_FLAG     bool      false       true|false     Feature flag.\n"
		"  T_TIMEOUT  duration  5s          100ms..1h      Request timeout.\n"
		"  T_BUFFER   bytes     64KiB       -              Buffer size | per connection.\n"
		"  T_MODE     enum      fast        fast|safe|off  Write mode.\n");
	free(out);
}
END_TEST

START_TEST(test_print_markdown)
{
	char *out = capture(dl_config_print_markdown);

	ck_assert_str_eq(out,
		"## ingest\n"
		"\n"
		"DriftLock's HTTP front door.\n"
		"\n"
		"| Variable | Type | Default | Allowed | Description |\n"
		"|---|---|---|---|---|\n"
		"| `T_NAME` | string | `ingest` | 1..16 bytes | Service name. |\n"
		"| `T_TOKEN` | secret | *required* | 8..64 bytes | API token. |\n"
		"| `T_PORT` | int | `8080` | 1..65535 | Listen port. |\n"
		"| `T_RATIO` | double | `0.5` | 0..1 | Sampling ratio. |\n"
		"| `T_FLAG` | bool | `false` | true\\|false | Feature flag. |\n"
		"| `T_TIMEOUT` | duration | `5s` | 100ms..1h | Request timeout. |\n"
		"| `T_BUFFER` | bytes | `64KiB` | - | Buffer size \\| per connection. |\n"
		"| `T_MODE` | enum | `fast` | fast\\|safe\\|off | Write mode. |\n");
	free(out);
}
END_TEST

static Suite *dl_config_suite(void)
{
	Suite *s = suite_create("dl_config");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_values_from_env);
	tcase_add_test(tc, test_error_messages);
	tcase_add_test(tc, test_secret_value_never_in_error);
	tcase_add_test(tc, test_invalid_default_is_reported);
	tcase_add_test(tc, test_parse_duration);
	tcase_add_test(tc, test_parse_bytes);
	tcase_add_test(tc, test_bool_spellings);
	tcase_add_test(tc, test_to_json);
	tcase_add_test(tc, test_print_help);
	tcase_add_test(tc, test_print_markdown);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dl_config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
