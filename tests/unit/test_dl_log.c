/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for dl_log: record format, escaping, redaction, levels and concurrent writers. */
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/dl_log.h"

static int log_fd = -1;

/* Sends the log of the test process to a fresh temporary file. */
static void capture_start(dl_log_level lvl)
{
	char path[] = "/tmp/test_dl_log_XXXXXX";

	log_fd = mkstemp(path);
	ck_assert_int_ge(log_fd, 0);
	unlink(path);
	ck_assert_int_ne(fcntl(log_fd, F_SETFL, O_APPEND), -1);
	dl_log_setup("ingest", lvl, log_fd);
}

/* Everything written so far (malloc'd). */
static char *capture_read(void)
{
	off_t size = lseek(log_fd, 0, SEEK_END);
	char *buf = malloc((size_t)size + 1);
	ssize_t n;

	ck_assert_ptr_nonnull(buf);
	n = pread(log_fd, buf, (size_t)size, 0);
	ck_assert_int_eq(n, size);
	buf[size] = '\0';
	return buf;
}

/* Checks that line starts with {"ts":"YYYY-MM-DDTHH:MM:SS.mmmZ", and returns what follows. */
static const char *after_ts(const char *line)
{
	const char *pat = "dddd-dd-ddTdd:dd:dd.dddZ";

	ck_assert_msg(strncmp(line, "{\"ts\":\"", 7) == 0, "no ts in %s", line);
	line += 7;
	for (size_t i = 0; pat[i]; i++) {
		if (pat[i] == 'd')
			ck_assert_msg(isdigit((unsigned char)line[i]), "bad ts in %s", line);
		else
			ck_assert_msg(line[i] == pat[i], "bad ts in %s", line);
	}
	line += strlen(pat);
	ck_assert_msg(strncmp(line, "\",", 2) == 0, "bad ts end in %s", line);
	return line + 2;
}

START_TEST(test_record_format)
{
	char *out;
	const char *rest;
	cJSON *j;
	struct tm tm = { 0 };
	time_t now = time(NULL), ts;

	capture_start(DL_LOG_INFO);
	dl_log_info("ready", "port", "8080", "org", "5b7f");
	out = capture_read();
	rest = after_ts(out);
	ck_assert_str_eq(rest,
			 "\"level\":\"info\",\"service\":\"ingest\",\"msg\":\"ready\",\"port\":\"8080\","
			 "\"org\":\"5b7f\"}\n");
	j = cJSON_Parse(out);
	ck_assert_ptr_nonnull(j);
	ck_assert(strptime(cJSON_GetObjectItem(j, "ts")->valuestring, "%Y-%m-%dT%H:%M:%S", &tm));
	ts = timegm(&tm);
	ck_assert_int_le(labs((long)(ts - now)), 5);
	cJSON_Delete(j);
	free(out);
}
END_TEST

START_TEST(test_no_fields_and_levels)
{
	char *out;
	const char *rest;

	capture_start(DL_LOG_INFO);
	dl_log_debug("hidden", "k", "v");
	dl_log_warn("careful");
	out = capture_read();
	rest = after_ts(out);
	ck_assert_str_eq(rest, "\"level\":\"warn\",\"service\":\"ingest\",\"msg\":\"careful\"}\n");
	free(out);

	ck_assert(!dl_log_enabled(DL_LOG_DEBUG));
	ck_assert(dl_log_enabled(DL_LOG_ERROR));
	dl_log_set_level(DL_LOG_DEBUG);
	ck_assert(dl_log_enabled(DL_LOG_DEBUG));
	dl_log_debug("shown");
	dl_log_set_level(DL_LOG_ERROR);
	dl_log_warn("hidden too");
	dl_log_error("bad");
	out = capture_read();
	ck_assert_ptr_null(strstr(out, "hidden"));
	ck_assert_ptr_nonnull(
		strstr(out, "\"level\":\"debug\",\"service\":\"ingest\",\"msg\":\"shown\"}"));
	ck_assert_ptr_nonnull(strstr(out, "\"level\":\"error\",\"service\":\"ingest\",\"msg\":\"bad\"}"));
	free(out);
}
END_TEST

START_TEST(test_escaping)
{
	char *out;
	const char *rest;
	cJSON *j;

	capture_start(DL_LOG_INFO);
	dl_log_info("q\"b\\n\nt\tc\x01" "d\x7f",
		    "utf8", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
		    "bad", "a\xff" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x82",
		    "k\"ey", "v");
	out = capture_read();
	rest = after_ts(out);
	ck_assert_str_eq(rest,
			 "\"level\":\"info\",\"service\":\"ingest\","
			 "\"msg\":\"q\\\"b\\\\n\\nt\\tc\\u0001d\\u007f\","
			 "\"utf8\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\","
			 "\"bad\":\"a\\ufffdb\\ufffd\\ufffdc\\ufffd\\ufffd\\ufffdd\\ufffd\\ufffd\","
			 "\"k\\\"ey\":\"v\"}\n");
	j = cJSON_Parse(out);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(cJSON_GetObjectItem(j, "msg")->valuestring, "q\"b\\n\nt\tc\x01" "d\x7f");
	ck_assert_str_eq(cJSON_GetObjectItem(j, "utf8")->valuestring,
			 "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	cJSON_Delete(j);
	free(out);
}
END_TEST

START_TEST(test_secrets_redacted)
{
	char *out;
	cJSON *j;
	const char *secret_keys[] = { "password", "db_password", "Authorization", "api_key",
				      "x-api-token", "client_secret", "pg_dsn", "Cookie" };

	capture_start(DL_LOG_INFO);
	dl_log_info("connect", "password", "hunter2", "db_password", "hunter2", "Authorization",
		    "Bearer hunter2", "api_key", "hunter2", "x-api-token", "hunter2",
		    "client_secret", "hunter2", "pg_dsn", "postgresql://u:hunter2@h/db", "Cookie",
		    "s=hunter2", "user", "alice");
	out = capture_read();
	ck_assert_ptr_null(strstr(out, "hunter2"));
	j = cJSON_Parse(out);
	ck_assert_ptr_nonnull(j);
	for (size_t i = 0; i < sizeof(secret_keys) / sizeof(secret_keys[0]); i++)
		ck_assert_str_eq(cJSON_GetObjectItem(j, secret_keys[i])->valuestring, "***");
	ck_assert_str_eq(cJSON_GetObjectItem(j, "user")->valuestring, "alice");
	cJSON_Delete(j);
	free(out);
}
END_TEST

START_TEST(test_reserved_keys_and_null_value)
{
	char *out;
	const char *rest;

	capture_start(DL_LOG_INFO);
	dl_log_info("m", "msg", "x", "level", "y", "stream", (const char *)NULL, "after", "z");
	out = capture_read();
	rest = after_ts(out);
	/* NULL value ends the list: "after" is not read. */
	ck_assert_str_eq(rest, "\"level\":\"info\",\"service\":\"ingest\",\"msg\":\"m\","
			       "\"_msg\":\"x\",\"_level\":\"y\",\"stream\":null}\n");
	free(out);
}
END_TEST

START_TEST(test_long_values_cut)
{
	char *big = malloc(DL_LOG_VALUE_MAX + 100);
	char *out;
	cJSON *j;
	const char *v;

	ck_assert_ptr_nonnull(big);
	/* 'a' then 3-byte euro signs so that the limit falls inside a character. */
	memset(big, 'a', DL_LOG_VALUE_MAX + 99);
	big[DL_LOG_VALUE_MAX + 99] = '\0';
	for (size_t i = DL_LOG_VALUE_MAX - 4; i + 3 <= DL_LOG_VALUE_MAX + 6; i += 3)
		memcpy(big + i, "\xe2\x82\xac", 3);

	capture_start(DL_LOG_INFO);
	dl_log_info("long", "v", big);
	out = capture_read();
	j = cJSON_Parse(out);
	ck_assert_ptr_nonnull(j);
	v = cJSON_GetObjectItem(j, "v")->valuestring;
	/* cut at 8188 + 3 (the last whole euro sign before 8192), then "..." */
	ck_assert_uint_eq(strlen(v), DL_LOG_VALUE_MAX - 1 + 3);
	ck_assert_int_eq(strncmp(v, big, DL_LOG_VALUE_MAX - 1), 0);
	ck_assert_str_eq(v + DL_LOG_VALUE_MAX - 1, "...");
	ck_assert_ptr_null(strstr(out, "\\ufffd"));
	cJSON_Delete(j);
	free(out);
	free(big);
}
END_TEST

START_TEST(test_writef)
{
	char *out;
	const char *rest;
	char big[2000];
	cJSON *j;

	capture_start(DL_LOG_INFO);
	dl_log_writef(DL_LOG_ERROR, "lost %d of %s", 3, "\"events\"");
	out = capture_read();
	rest = after_ts(out);
	ck_assert_str_eq(rest, "\"level\":\"error\",\"service\":\"ingest\","
			       "\"msg\":\"lost 3 of \\\"events\\\"\"}\n");
	free(out);

	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(ftruncate(log_fd, 0), 0);
	dl_log_writef(DL_LOG_INFO, "<%s>", big);
	out = capture_read();
	j = cJSON_Parse(out);
	ck_assert_ptr_nonnull(j);
	ck_assert_uint_eq(strlen(cJSON_GetObjectItem(j, "msg")->valuestring), sizeof(big) + 1);
	cJSON_Delete(j);
	free(out);
}
END_TEST

START_TEST(test_level_parse)
{
	dl_log_level l = DL_LOG_ERROR;

	ck_assert_int_eq(dl_log_level_parse("debug", &l), 0);
	ck_assert_int_eq(l, DL_LOG_DEBUG);
	ck_assert_int_eq(dl_log_level_parse("INFO", &l), 0);
	ck_assert_int_eq(l, DL_LOG_INFO);
	ck_assert_int_eq(dl_log_level_parse("warning", &l), 0);
	ck_assert_int_eq(l, DL_LOG_WARN);
	ck_assert_int_eq(dl_log_level_parse("Warn", &l), 0);
	ck_assert_int_eq(l, DL_LOG_WARN);
	ck_assert_int_eq(dl_log_level_parse("error", &l), 0);
	ck_assert_int_eq(l, DL_LOG_ERROR);
	ck_assert_int_eq(dl_log_level_parse("verbose", &l), -EINVAL);
	ck_assert_int_eq(dl_log_level_parse("", &l), -EINVAL);
	ck_assert_int_eq(dl_log_level_parse(NULL, &l), -EINVAL);
	ck_assert_int_eq(l, DL_LOG_ERROR);
	ck_assert_str_eq(dl_log_level_name(DL_LOG_WARN), "warn");
}
END_TEST

enum { WRITERS = 8, RECORDS = 500, FILL = 6000 };

static void *writer(void *arg)
{
	char fill[FILL + 1];
	char id[16];

	memset(fill, 'a' + (int)(size_t)arg, FILL);
	fill[FILL] = '\0';
	for (int i = 0; i < RECORDS; i++) {
		snprintf(id, sizeof(id), "%zu-%d", (size_t)arg, i);
		dl_log_info("tick", "id", id, "fill", fill);
	}
	return NULL;
}

START_TEST(test_concurrent_writers_do_not_interleave)
{
	pthread_t th[WRITERS];
	char *out, *line, *save = NULL;
	int count = 0;
	char seen[WRITERS][RECORDS] = { { 0 } };

	capture_start(DL_LOG_INFO);
	for (size_t t = 0; t < WRITERS; t++)
		ck_assert_int_eq(pthread_create(&th[t], NULL, writer, (void *)t), 0);
	for (size_t t = 0; t < WRITERS; t++)
		ck_assert_int_eq(pthread_join(th[t], NULL), 0);
	out = capture_read();
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cJSON *j = cJSON_Parse(line);
		unsigned t;
		int i;
		const char *fill;

		ck_assert_msg(j != NULL, "record %d is not JSON", count);
		ck_assert_int_eq(sscanf(cJSON_GetObjectItem(j, "id")->valuestring, "%u-%d", &t, &i), 2);
		ck_assert_uint_lt(t, WRITERS);
		ck_assert_int_lt(i, RECORDS);
		fill = cJSON_GetObjectItem(j, "fill")->valuestring;
		ck_assert_uint_eq(strlen(fill), FILL);
		ck_assert_uint_eq(strspn(fill, (char[]){ (char)('a' + t), 0 }), FILL);
		seen[t][i]++;
		cJSON_Delete(j);
		count++;
	}
	ck_assert_int_eq(count, WRITERS * RECORDS);
	for (size_t t = 0; t < WRITERS; t++)
		for (size_t i = 0; i < RECORDS; i++)
			ck_assert_int_eq(seen[t][i], 1);
	free(out);
}
END_TEST

static Suite *dl_log_suite(void)
{
	Suite *s = suite_create("dl_log");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_record_format);
	tcase_add_test(tc, test_no_fields_and_levels);
	tcase_add_test(tc, test_escaping);
	tcase_add_test(tc, test_secrets_redacted);
	tcase_add_test(tc, test_reserved_keys_and_null_value);
	tcase_add_test(tc, test_long_values_cut);
	tcase_add_test(tc, test_writef);
	tcase_add_test(tc, test_level_parse);
	tcase_add_test(tc, test_concurrent_writers_do_not_interleave);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dl_log_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
