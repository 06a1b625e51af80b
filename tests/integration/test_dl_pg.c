/* SPDX-License-Identifier: Apache-2.0 */
/* Integration tests for dl_pg against the real PostgreSQL named by DRIFTLOCK_PG_DSN_ADMIN. */
#include "common/dl_pg.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *admin_dsn(void)
{
    const char *dsn = getenv("DRIFTLOCK_PG_DSN_ADMIN");

    ck_assert_msg(dsn != NULL && dsn[0] != '\0',
                  "DRIFTLOCK_PG_DSN_ADMIN is not set (source the stack.env of infra/stack.sh)");
    return dsn;
}

static dl_pg *connect_admin(int statement_timeout_ms, const char *app)
{
    dl_pg_options opts = { 5, statement_timeout_ms, app };
    dl_pg *pg = NULL;
    char err[512] = "";

    ck_assert_msg(dl_pg_connect(admin_dsn(), &opts, err, sizeof(err), &pg) == 0, "%s", err);
    ck_assert_ptr_nonnull(pg);
    return pg;
}

/* Runs a registered statement and returns row 0, column 0 as a new string ("(null)" for NULL). */
static char *scalar(dl_pg *pg, const char *name, int n, const char *const *values)
{
    PGresult *res = NULL;
    char err[512] = "";
    char *out;

    ck_assert_msg(dl_pg_exec(pg, name, n, values, &res, err, sizeof(err)) == 0, "%s: %s", name,
                  err);
    ck_assert_int_eq(PQntuples(res), 1);
    out = strdup(PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return out;
}

START_TEST(test_prepare_exec_params)
{
    const char *const add[] = { "40", "2", NULL };
    const char *const hostile[] = { "x'); DROP TABLE pg_class; --" };
    dl_pg *pg = connect_admin(0, "io-test");
    PGresult *res = (PGresult *)&res;
    char err[512] = "";
    char *v;

    ck_assert_int_eq(dl_pg_prepare(pg, "add", "SELECT $1::int + $2::int, $3::text IS NULL", 3,
                                   err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_exec(pg, "add", 3, add, &res, err, sizeof(err)), 0);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "42");
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "t");
    PQclear(res);

    /* Values travel as parameters, never as SQL text. */
    ck_assert_int_eq(dl_pg_prepare(pg, "echo", "SELECT $1::text", 1, err, sizeof(err)), 0);
    v = scalar(pg, "echo", 1, hostile);
    ck_assert_str_eq(v, hostile[0]);
    free(v);

    res = (PGresult *)&res;
    ck_assert_int_eq(dl_pg_exec(pg, "add", 2, add, &res, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(dl_pg_exec(pg, "nope", 0, NULL, &res, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_eq(res, (PGresult *)&res);
    ck_assert_int_eq(dl_pg_prepare(pg, "echo", "SELECT $1::text", 1, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_prepare(pg, "echo", "SELECT $1::int", 1, err, sizeof(err)),
                     -EEXIST);

    err[0] = '\0';
    ck_assert_int_lt(dl_pg_prepare(pg, "bad", "SELEC 1", 0, err, sizeof(err)), 0);
    ck_assert_str_eq(dl_pg_last_sqlstate(pg), "42601");
    ck_assert_msg(strstr(err, "syntax error") != NULL, "%s", err);
    /* A failed prepare registers nothing. */
    ck_assert_int_eq(dl_pg_exec(pg, "bad", 0, NULL, NULL, err, sizeof(err)), -ENOENT);

    ck_assert_int_eq(dl_pg_ping(pg, err, sizeof(err)), 0);
    ck_assert_str_eq(dl_pg_last_sqlstate(pg), "");
    dl_pg_free(pg);
    dl_pg_free(NULL);
}
END_TEST

START_TEST(test_reconnect_after_terminate_keeps_statements)
{
    dl_pg *victim = connect_admin(1500, "io-victim");
    dl_pg *killer = connect_admin(0, "io-killer");
    const char *args[1];
    char err[512] = "";
    char *pid1, *pid2, *v;

    ck_assert_int_eq(dl_pg_prepare(victim, "pid", "SELECT pg_backend_pid()", 0, err,
                                   sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_prepare(victim, "settings",
                                   "SELECT current_setting('statement_timeout') || ' ' || "
                                   "current_setting('application_name')", 0, err,
                                   sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_prepare(killer, "kill", "SELECT pg_terminate_backend($1::int)", 1,
                                   err, sizeof(err)), 0);

    pid1 = scalar(victim, "pid", 0, NULL);
    args[0] = pid1;
    v = scalar(killer, "kill", 1, args);
    ck_assert_str_eq(v, "t");
    free(v);
    usleep(200 * 1000);

    /* Same call, new backend, statement re-prepared, session settings re-applied. */
    pid2 = scalar(victim, "pid", 0, NULL);
    ck_assert_str_ne(pid1, pid2);
    v = scalar(victim, "settings", 0, NULL);
    ck_assert_str_eq(v, "1500ms io-victim");
    free(v);

    /* Inside a transaction a lost connection is reported, not papered over. */
    ck_assert_int_eq(dl_pg_begin(victim, err, sizeof(err)), 0);
    args[0] = pid2;
    v = scalar(killer, "kill", 1, args);
    ck_assert_str_eq(v, "t");
    free(v);
    usleep(200 * 1000);
    ck_assert_int_eq(dl_pg_exec(victim, "pid", 0, NULL, NULL, err, sizeof(err)), -ECONNRESET);
    ck_assert_int_eq(dl_pg_commit(victim, err, sizeof(err)), -ECONNRESET);
    ck_assert_int_eq(dl_pg_ping(victim, err, sizeof(err)), 0);
    v = scalar(victim, "pid", 0, NULL);
    ck_assert_str_ne(v, pid2);
    free(v);

    free(pid1);
    free(pid2);
    dl_pg_free(killer);
    dl_pg_free(victim);
}
END_TEST

START_TEST(test_begin_org_scopes_transaction)
{
    const char *org = "0191f2a4-7c3e-7b61-9a2f-3c4d5e6f7a8b";
    dl_pg *pg = connect_admin(0, "io-org");
    char err[512] = "";
    char *v;

    ck_assert_int_eq(dl_pg_prepare(pg, "org",
                                   "SELECT coalesce(current_setting('driftlock.org_id', true), "
                                   "'')", 0, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_begin_org(pg, "not-a-uuid", err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(dl_pg_begin_org(pg, "0191f2a4-7c3e-7b61-9a2f-3c4d5e6f7a8b'--", err,
                                     sizeof(err)), -EINVAL);

    ck_assert_int_eq(dl_pg_begin_org(pg, org, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_begin(pg, err, sizeof(err)), -EALREADY);
    v = scalar(pg, "org", 0, NULL);
    ck_assert_str_eq(v, org);
    free(v);
    ck_assert_int_eq(dl_pg_commit(pg, err, sizeof(err)), 0);

    /* The setting is transaction-local: nothing leaks into the next use of the session. */
    v = scalar(pg, "org", 0, NULL);
    ck_assert_str_eq(v, "");
    free(v);
    ck_assert_int_eq(dl_pg_begin_org(pg, org, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_rollback(pg, err, sizeof(err)), 0);
    v = scalar(pg, "org", 0, NULL);
    ck_assert_str_eq(v, "");
    free(v);
    dl_pg_free(pg);
}
END_TEST

START_TEST(test_unique_violation_and_failed_commit)
{
    const char *const a[] = { "a" };
    const char *const b[] = { "b" };
    dl_pg *pg = connect_admin(0, "io-unique");
    char err[512] = "";
    char *v;

    ck_assert_int_eq(dl_pg_prepare(pg, "mk", "CREATE TEMP TABLE io_t (id text PRIMARY KEY)", 0,
                                   err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_exec(pg, "mk", 0, NULL, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_prepare(pg, "ins", "INSERT INTO io_t (id) VALUES ($1)", 1, err,
                                   sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_prepare(pg, "count", "SELECT count(*) FROM io_t", 0, err,
                                   sizeof(err)), 0);

    ck_assert_int_eq(dl_pg_exec(pg, "ins", 1, a, NULL, err, sizeof(err)), 0);
    err[0] = '\0';
    ck_assert_int_eq(dl_pg_exec(pg, "ins", 1, a, NULL, err, sizeof(err)), -EEXIST);
    ck_assert_str_eq(dl_pg_last_sqlstate(pg), "23505");
    ck_assert_msg(strstr(err, "duplicate key") != NULL, "%s", err);

    /* A failed statement dooms its transaction: COMMIT must not claim success. */
    ck_assert_int_eq(dl_pg_begin(pg, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_exec(pg, "ins", 1, b, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_exec(pg, "ins", 1, a, NULL, err, sizeof(err)), -EEXIST);
    ck_assert_int_eq(dl_pg_commit(pg, err, sizeof(err)), -ECANCELED);
    v = scalar(pg, "count", 0, NULL);
    ck_assert_str_eq(v, "1");
    free(v);
    ck_assert_str_eq(dl_pg_last_sqlstate(pg), "");
    dl_pg_free(pg);
}
END_TEST

START_TEST(test_statement_timeout)
{
    dl_pg *pg = connect_admin(200, "io-timeout");
    char err[512] = "";

    ck_assert_int_eq(dl_pg_prepare(pg, "sleep", "SELECT pg_sleep(3)", 0, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_pg_exec(pg, "sleep", 0, NULL, NULL, err, sizeof(err)), -ETIMEDOUT);
    ck_assert_str_eq(dl_pg_last_sqlstate(pg), "57014");
    ck_assert_int_eq(dl_pg_ping(pg, err, sizeof(err)), 0);
    dl_pg_free(pg);
}
END_TEST

START_TEST(test_errors_never_show_password)
{
    const char *dsn = admin_dsn();
    const char *secret = "wrongSecret0123456789";
    const char *at = strrchr(dsn, '@');
    const char *colon;
    char bad[1024], err[512] = "";
    dl_pg *pg = (dl_pg *)&pg;
    char *real_pw;

    /* postgresql://user:password@host:port/db: swap the password for a wrong one. */
    ck_assert_ptr_nonnull(at);
    colon = memchr(dsn + strlen("postgresql://"), ':', (size_t)(at - dsn) - strlen("postgresql://"));
    ck_assert_ptr_nonnull(colon);
    real_pw = strndup(colon + 1, (size_t)(at - colon - 1));
    snprintf(bad, sizeof(bad), "%.*s:%s%s", (int)(colon - dsn), dsn, secret, at);

    ck_assert_int_eq(dl_pg_connect(bad, NULL, err, sizeof(err), &pg), -ENOTCONN);
    ck_assert_ptr_eq(pg, (dl_pg *)&pg);
    ck_assert_msg(strstr(err, "password authentication failed") != NULL, "%s", err);
    ck_assert_msg(strstr(err, secret) == NULL, "password leaked: %s", err);
    ck_assert_msg(strstr(err, "postgresql://") == NULL, "DSN leaked: %s", err);
    ck_assert_msg(strstr(err, real_pw) == NULL, "password leaked: %s", err);

    err[0] = '\0';
    snprintf(bad, sizeof(bad), "postgresql://postgres:%s@127.0.0.1:99999/x?bogus=1", secret);
    ck_assert_int_eq(dl_pg_connect(bad, NULL, err, sizeof(err), &pg), -EINVAL);
    ck_assert_str_ne(err, "");
    ck_assert_msg(strstr(err, secret) == NULL, "password leaked: %s", err);
    free(real_pw);
}
END_TEST

static Suite *dl_pg_suite(void)
{
    Suite *s = suite_create("dl_pg");
    TCase *tc = tcase_create("postgres");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_prepare_exec_params);
    tcase_add_test(tc, test_reconnect_after_terminate_keeps_statements);
    tcase_add_test(tc, test_begin_org_scopes_transaction);
    tcase_add_test(tc, test_unique_violation_and_failed_commit);
    tcase_add_test(tc, test_statement_timeout);
    tcase_add_test(tc, test_errors_never_show_password);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(dl_pg_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
