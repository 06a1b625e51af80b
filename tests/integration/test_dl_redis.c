/* SPDX-License-Identifier: Apache-2.0 */
/* Integration tests for dl_redis against the real Redis named by DRIFTLOCK_REDIS_URL. */
#include "common/dl_redis.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *redis_url(void)
{
    const char *url = getenv("DRIFTLOCK_REDIS_URL");

    ck_assert_msg(url != NULL && url[0] != '\0',
                  "DRIFTLOCK_REDIS_URL is not set (source the stack.env of infra/stack.sh)");
    return url;
}

/* The stack URL with its database number replaced by db. */
static void url_with_db(char *out, size_t outlen, int db)
{
    const char *url = redis_url();
    const char *slash = strrchr(url, '/');

    ck_assert_ptr_nonnull(slash);
    ck_assert(slash > url + strlen("redis://"));
    snprintf(out, outlen, "%.*s/%d", (int)(slash - url), url, db);
}

static dl_redis *connect_url(const char *url, int command_timeout_ms)
{
    dl_redis *r = NULL;
    char err[256] = "";

    ck_assert_msg(dl_redis_connect_url(url, 2000, command_timeout_ms, err, sizeof(err), &r)
                  == 0, "%s", err);
    ck_assert_ptr_nonnull(r);
    return r;
}

static redisReply *cmd(dl_redis *r, int argc, const char **argv, const size_t *lens)
{
    redisReply *reply = NULL;
    char err[256] = "";

    ck_assert_msg(dl_redis_command_argv(r, argc, argv, lens, &reply, err, sizeof(err)) == 0,
                  "%s: %s", argv[0], err);
    return reply;
}

START_TEST(test_set_get_and_error_reply)
{
    char key[64];
    const char value[] = { 'a', '\0', 'b', '\n', 'c' };
    const char *set[3] = { "SET", key, value };
    size_t setlen[3];
    const char *get[2] = { "GET", key };
    const char *incr[2] = { "INCR", key };
    const char *del[2] = { "DEL", key };
    dl_redis *r = connect_url(redis_url(), 2000);
    redisReply *reply = (redisReply *)&reply;
    char err[256] = "";

    snprintf(key, sizeof(key), "io:test:%d", (int)getpid());
    setlen[0] = 3;
    setlen[1] = strlen(key);
    setlen[2] = sizeof(value);
    reply = cmd(r, 3, set, setlen);
    ck_assert_int_eq(reply->type, REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    reply = cmd(r, 2, get, NULL);
    ck_assert_int_eq(reply->type, REDIS_REPLY_STRING);
    ck_assert_int_eq(reply->len, sizeof(value));
    ck_assert(memcmp(reply->str, value, sizeof(value)) == 0);
    freeReplyObject(reply);

    /* A server error is a failure with the server's own words, not a reply to inspect. */
    reply = (redisReply *)&reply;
    ck_assert_int_eq(dl_redis_command_argv(r, 2, incr, NULL, &reply, err, sizeof(err)),
                     -EREMOTEIO);
    ck_assert_ptr_eq(reply, (redisReply *)&reply);
    ck_assert_msg(strncmp(err, "ERR", 3) == 0, "%s", err);

    freeReplyObject(cmd(r, 2, del, NULL));
    ck_assert_int_eq(dl_redis_ping(r, err, sizeof(err)), 0);
    dl_redis_free(r);
    dl_redis_free(NULL);
}
END_TEST

START_TEST(test_auth_failure_hides_password)
{
    const char *url = redis_url();
    const char *secret = "wrongSecret0123456789";
    const char *at = strrchr(url, '@');
    dl_redis *r = (dl_redis *)&r;
    char bad[512], err[256] = "";
    char *real_pw;

    ck_assert_ptr_nonnull(at);
    real_pw = strndup(url + strlen("redis://:"), (size_t)(at - url) - strlen("redis://:"));
    ck_assert_int_gt(strlen(real_pw), 0);

    snprintf(bad, sizeof(bad), "redis://:%s%s", secret, at);
    ck_assert_int_eq(dl_redis_connect_url(bad, 2000, 2000, err, sizeof(err), &r), -EACCES);
    ck_assert_ptr_eq(r, (dl_redis *)&r);
    ck_assert_msg(strstr(err, "AUTH") != NULL, "%s", err);
    ck_assert_msg(strstr(err, secret) == NULL, "password leaked: %s", err);
    ck_assert_msg(strstr(err, "redis://") == NULL, "URL leaked: %s", err);

    /* No password at all: refused at connect, not at the first command. */
    err[0] = '\0';
    snprintf(bad, sizeof(bad), "redis://%s", at + 1);
    ck_assert_int_eq(dl_redis_connect_url(bad, 2000, 2000, err, sizeof(err), &r), -EACCES);
    ck_assert_msg(strstr(err, "NOAUTH") != NULL, "%s", err);
    ck_assert_msg(strstr(err, real_pw) == NULL, "password leaked: %s", err);

    err[0] = '\0';
    snprintf(bad, sizeof(bad), "rediss://:%s%s", secret, at);
    ck_assert_int_eq(dl_redis_connect_url(bad, 2000, 2000, err, sizeof(err), &r), -EINVAL);
    ck_assert_msg(strstr(err, secret) == NULL, "password leaked: %s", err);
    snprintf(bad, sizeof(bad), "redis://:%s@127.0.0.1:notaport/0", secret);
    ck_assert_int_eq(dl_redis_connect_url(bad, 2000, 2000, err, sizeof(err), &r), -EINVAL);
    ck_assert_msg(strstr(err, secret) == NULL, "password leaked: %s", err);
    ck_assert_ptr_eq(r, (dl_redis *)&r);
    free(real_pw);
}
END_TEST

static long long client_id(dl_redis *r)
{
    const char *argv[2] = { "CLIENT", "ID" };
    redisReply *reply = cmd(r, 2, argv, NULL);
    long long id;

    ck_assert_int_eq(reply->type, REDIS_REPLY_INTEGER);
    id = reply->integer;
    freeReplyObject(reply);
    return id;
}

START_TEST(test_reconnect_after_client_kill)
{
    char url[512], key[64], idtext[32];
    const char *set[3] = { "SET", key, "v5" };
    const char *get[2] = { "GET", key };
    const char *info[2] = { "CLIENT", "INFO" };
    const char *kill[4] = { "CLIENT", "KILL", "ID", idtext };
    dl_redis *victim, *killer;
    redisReply *reply;
    long long id1, id2;

    url_with_db(url, sizeof(url), 5);
    victim = connect_url(url, 2000);
    killer = connect_url(redis_url(), 2000);
    snprintf(key, sizeof(key), "io:kill:%d", (int)getpid());
    freeReplyObject(cmd(victim, 3, set, NULL));

    id1 = client_id(victim);
    snprintf(idtext, sizeof(idtext), "%lld", id1);
    reply = cmd(killer, 4, kill, NULL);
    ck_assert_int_eq(reply->integer, 1);
    freeReplyObject(reply);

    /* The next command succeeds on a new connection that is authenticated and in db 5. */
    reply = cmd(victim, 2, get, NULL);
    ck_assert_int_eq(reply->type, REDIS_REPLY_STRING);
    ck_assert_str_eq(reply->str, "v5");
    freeReplyObject(reply);
    id2 = client_id(victim);
    ck_assert_int_ne(id1, id2);
    reply = cmd(victim, 2, info, NULL);
    ck_assert_msg(strstr(reply->str, " db=5 ") != NULL, "%s", reply->str);
    freeReplyObject(reply);

    dl_redis_free(killer);
    dl_redis_free(victim);
}
END_TEST

START_TEST(test_timeout_is_not_resent)
{
    char key[64];
    const char *blpop[3] = { "BLPOP", key, "2" };
    dl_redis *r = connect_url(redis_url(), 300);
    redisReply *reply = (redisReply *)&reply;
    char err[256] = "";

    snprintf(key, sizeof(key), "io:empty:%d", (int)getpid());
    ck_assert_int_eq(dl_redis_command_argv(r, 3, blpop, NULL, &reply, err, sizeof(err)),
                     -ETIMEDOUT);
    ck_assert_ptr_eq(reply, (redisReply *)&reply);
    ck_assert_str_ne(err, "");
    /* The stale reply stream is dropped: the next call reconnects and works. */
    ck_assert_msg(dl_redis_ping(r, err, sizeof(err)) == 0, "%s", err);
    dl_redis_free(r);
}
END_TEST

static Suite *dl_redis_suite(void)
{
    Suite *s = suite_create("dl_redis");
    TCase *tc = tcase_create("redis");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_set_get_and_error_reply);
    tcase_add_test(tc, test_auth_failure_hides_password);
    tcase_add_test(tc, test_reconnect_after_client_kill);
    tcase_add_test(tc, test_timeout_is_not_resent);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(dl_redis_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
