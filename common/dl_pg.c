/* SPDX-License-Identifier: Apache-2.0 */
/* dl_pg: one PostgreSQL connection with named prepared statements, reconnect and org-scoped transactions. */
#include "common/dl_pg.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DL_PG_BACKOFF_MIN_MS 100
#define DL_PG_BACKOFF_MAX_MS 5000
#define DL_PG_SET_ORG_STMT "dl_pg_set_org"

struct dl_pg_stmt {
    char *name;
    char *sql;
    int nparams;
    unsigned gen; /* connection generation it was prepared on; 0 = never */
};

struct dl_pg {
    PGconn *conn;
    char *password; /* only to scrub it from error text */
    struct dl_pg_stmt *stmts;
    size_t nstmts;
    size_t cap;
    unsigned gen;
    bool in_tx;
    bool tx_lost;
    int backoff_ms;
    int64_t next_attempt_ms;
    char sqlstate[6];
};

static int64_t dl_pg_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dl_pg_notice_silent(void *arg, const char *message)
{
    /* common/ does not log; notices are not errors. */
    (void)arg;
    (void)message;
}

/* Writes one line of error text, with any occurrence of the password masked. */
static void dl_pg_errf(const dl_pg *pg, char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void dl_pg_errf(const dl_pg *pg, char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    char *p;
    size_t n;

    if (errbuf == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    for (p = errbuf; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    n = strlen(errbuf);
    while (n > 0 && errbuf[n - 1] == ' ')
        errbuf[--n] = '\0';
    if (pg != NULL && pg->password != NULL && pg->password[0] != '\0') {
        size_t plen = strlen(pg->password);

        while ((p = strstr(errbuf, pg->password)) != NULL)
            memset(p, '*', plen);
    }
}

static void dl_pg_set_sqlstate(dl_pg *pg, const char *state)
{
    snprintf(pg->sqlstate, sizeof(pg->sqlstate), "%s", state != NULL ? state : "");
}

static bool dl_pg_is_uuid(const char *s)
{
    size_t i;

    if (s == NULL || strlen(s) != 36)
        return false;
    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

static struct dl_pg_stmt *dl_pg_find(dl_pg *pg, const char *name)
{
    size_t i;

    for (i = 0; i < pg->nstmts; i++)
        if (strcmp(pg->stmts[i].name, name) == 0)
            return &pg->stmts[i];
    return NULL;
}

static int dl_pg_register(dl_pg *pg, const char *name, const char *sql, int nparams,
                          struct dl_pg_stmt **ret)
{
    struct dl_pg_stmt *s;

    if (pg->nstmts == pg->cap) {
        size_t cap = pg->cap ? pg->cap * 2 : 16;
        struct dl_pg_stmt *grown = realloc(pg->stmts, cap * sizeof(*grown));

        if (grown == NULL)
            return -ENOMEM;
        pg->stmts = grown;
        pg->cap = cap;
    }
    s = &pg->stmts[pg->nstmts];
    s->name = strdup(name);
    s->sql = strdup(sql);
    if (s->name == NULL || s->sql == NULL) {
        free(s->name);
        free(s->sql);
        return -ENOMEM;
    }
    s->nparams = nparams;
    s->gen = 0;
    pg->nstmts++;
    *ret = s;
    return 0;
}

/*
 * An idle connection has nothing to say unless the server is going away (a FATAL message
 * then end of file, e.g. after pg_terminate_backend or a restart). Reading that now, before
 * a statement is sent, lets a dead session be replaced without any doubt about whether the
 * statement ran.
 */
static void dl_pg_probe(dl_pg *pg)
{
    int i;

    for (i = 0; i < 3 && PQstatus(pg->conn) == CONNECTION_OK; i++) {
        struct pollfd pfd = { .fd = PQsocket(pg->conn), .events = POLLIN };

        if (pfd.fd < 0 || poll(&pfd, 1, 0) <= 0)
            return;
        if (!PQconsumeInput(pg->conn))
            return;
        /* Parses what arrived; an asynchronous FATAL goes to the (silent) notice processor. */
        (void)PQisBusy(pg->conn);
    }
}

/* Makes sure there is a live connection, reconnecting at most once and never in a transaction. */
static int dl_pg_ensure(dl_pg *pg, char *errbuf, size_t errlen)
{
    int64_t now;

    dl_pg_probe(pg);
    if (PQstatus(pg->conn) == CONNECTION_OK && !pg->tx_lost)
        return 0;
    if (pg->in_tx) {
        pg->tx_lost = true;
        dl_pg_set_sqlstate(pg, "08006");
        dl_pg_errf(pg, errbuf, errlen, "pg: connection lost during the transaction");
        return -ECONNRESET;
    }
    now = dl_pg_now_ms();
    if (now < pg->next_attempt_ms) {
        dl_pg_set_sqlstate(pg, "08001");
        dl_pg_errf(pg, errbuf, errlen,
                   "pg: not connected; next reconnect attempt in %lld ms",
                   (long long)(pg->next_attempt_ms - now));
        return -ENOTCONN;
    }
    PQreset(pg->conn);
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        pg->backoff_ms = pg->backoff_ms ? pg->backoff_ms * 2 : DL_PG_BACKOFF_MIN_MS;
        if (pg->backoff_ms > DL_PG_BACKOFF_MAX_MS)
            pg->backoff_ms = DL_PG_BACKOFF_MAX_MS;
        pg->next_attempt_ms = dl_pg_now_ms() + pg->backoff_ms;
        dl_pg_set_sqlstate(pg, "08001");
        dl_pg_errf(pg, errbuf, errlen, "pg: reconnect failed: %s", PQerrorMessage(pg->conn));
        return -ENOTCONN;
    }
    pg->gen++;
    pg->backoff_ms = 0;
    pg->next_attempt_ms = 0;
    return 0;
}

static int dl_pg_errno_for(const char *state)
{
    if (strcmp(state, "23505") == 0)
        return -EEXIST;
    if (strcmp(state, "57014") == 0)
        return -ETIMEDOUT;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return -EAGAIN;
    if (strcmp(state, "42501") == 0)
        return -EACCES;
    if (strncmp(state, "08", 2) == 0)
        return -ECONNRESET;
    return -EIO;
}

/*
 * Runs either a registered statement (stmt) or a fixed parameterless command (sql),
 * preparing the statement first if this connection has not seen it. On success *ret is
 * the result; on failure the result is consumed and a negative code returned.
 */
static int dl_pg_run(dl_pg *pg, struct dl_pg_stmt *stmt, const char *sql,
                     const char *const *values, PGresult **ret, char *errbuf, size_t errlen)
{
    const char *what = stmt != NULL ? stmt->name : sql;
    bool retried = false;
    PGresult *res;
    int r;

    for (;;) {
        const char *state;
        ExecStatusType st;

        r = dl_pg_ensure(pg, errbuf, errlen);
        if (r < 0)
            return r;
        res = NULL;
        if (stmt != NULL && stmt->gen != pg->gen) {
            res = PQprepare(pg->conn, stmt->name, stmt->sql, stmt->nparams, NULL);
            if (PQresultStatus(res) == PGRES_COMMAND_OK) {
                stmt->gen = pg->gen;
                PQclear(res);
                res = NULL;
            }
        }
        if (res == NULL) {
            if (stmt != NULL)
                res = PQexecPrepared(pg->conn, stmt->name, stmt->nparams, values, NULL, NULL,
                                     0);
            else
                res = PQexec(pg->conn, sql);
        }
        st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            dl_pg_set_sqlstate(pg, "");
            *ret = res;
            return 0;
        }

        state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (PQstatus(pg->conn) != CONNECTION_OK) {
            bool not_run = state != NULL && strncmp(state, "57P", 3) == 0;

            dl_pg_set_sqlstate(pg, state != NULL ? state : "08006");
            dl_pg_errf(pg, errbuf, errlen, "pg: %s: connection lost: %s", what,
                       res != NULL && PQresultErrorMessage(res)[0] != '\0'
                           ? PQresultErrorMessage(res) : PQerrorMessage(pg->conn));
            PQclear(res);
            if (pg->in_tx) {
                pg->tx_lost = true;
                return -ECONNRESET;
            }
            if (not_run && !retried) {
                /* The server said it did not run it: safe to send again once. */
                retried = true;
                continue;
            }
            return -ECONNRESET;
        }
        dl_pg_set_sqlstate(pg, state != NULL ? state : "XX000");
        {
            const char *primary = res != NULL
                ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

            dl_pg_errf(pg, errbuf, errlen, "pg: %s: %s", what,
                       primary != NULL ? primary : PQerrorMessage(pg->conn));
        }
        PQclear(res);
        return dl_pg_errno_for(pg->sqlstate);
    }
}

int dl_pg_connect(const char *dsn, const dl_pg_options *opts, char *errbuf, size_t errlen,
                  dl_pg **ret)
{
    const char *keys[6], *vals[6];
    char timeout_s[16], options[64];
    PQconninfoOption *parsed, *o;
    struct dl_pg_stmt *unused;
    char *perr = NULL;
    dl_pg *pg;
    int r, n = 0;

    if (dsn == NULL) {
        dl_pg_errf(NULL, errbuf, errlen, "pg: no connection string");
        return -EINVAL;
    }
    parsed = PQconninfoParse(dsn, &perr);
    if (parsed == NULL) {
        /* The parser's message may quote parts of the DSN: do not pass it on. */
        PQfreemem(perr);
        dl_pg_errf(NULL, errbuf, errlen, "pg: cannot parse the connection string");
        return -EINVAL;
    }
    pg = calloc(1, sizeof(*pg));
    if (pg == NULL) {
        r = -ENOMEM;
        dl_pg_errf(NULL, errbuf, errlen, "pg: out of memory");
        goto out_free_parsed;
    }
    for (o = parsed; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "password") == 0 && o->val != NULL && o->val[0] != '\0') {
            pg->password = strdup(o->val);
            if (pg->password == NULL) {
                r = -ENOMEM;
                dl_pg_errf(NULL, errbuf, errlen, "pg: out of memory");
                goto out_free_pg;
            }
        }
    }

    snprintf(timeout_s, sizeof(timeout_s), "%d",
             opts != NULL && opts->connect_timeout_s > 0 ? opts->connect_timeout_s : 5);
    keys[n] = "dbname", vals[n++] = dsn;
    keys[n] = "connect_timeout", vals[n++] = timeout_s;
    keys[n] = "application_name";
    vals[n++] = opts != NULL && opts->application_name != NULL ? opts->application_name
                                                               : "driftlock";
    if (opts != NULL && opts->statement_timeout_ms > 0) {
        snprintf(options, sizeof(options), "-c statement_timeout=%d",
                 opts->statement_timeout_ms);
        keys[n] = "options", vals[n++] = options;
    }
    keys[n] = NULL, vals[n] = NULL;

    pg->conn = PQconnectdbParams(keys, vals, 1);
    if (pg->conn == NULL) {
        r = -ENOMEM;
        dl_pg_errf(pg, errbuf, errlen, "pg: out of memory");
        goto out_free_pg;
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        r = -ENOTCONN;
        dl_pg_errf(pg, errbuf, errlen, "pg: cannot connect: %s", PQerrorMessage(pg->conn));
        goto out_finish;
    }
    PQsetNoticeProcessor(pg->conn, dl_pg_notice_silent, NULL);
    pg->gen = 1;
    r = dl_pg_register(pg, DL_PG_SET_ORG_STMT,
                       "SELECT set_config('driftlock.org_id', $1, true)", 1, &unused);
    if (r < 0) {
        dl_pg_errf(pg, errbuf, errlen, "pg: out of memory");
        goto out_finish;
    }
    PQconninfoFree(parsed);
    *ret = pg;
    return 0;

out_finish:
    PQfinish(pg->conn);
out_free_pg:
    free(pg->password);
    free(pg);
out_free_parsed:
    PQconninfoFree(parsed);
    return r;
}

int dl_pg_prepare(dl_pg *pg, const char *name, const char *sql, int nparams,
                  char *errbuf, size_t errlen)
{
    struct dl_pg_stmt *s;
    PGresult *res;
    int r;

    if (name == NULL || name[0] == '\0' || sql == NULL || nparams < 0 || nparams > 65535) {
        dl_pg_errf(pg, errbuf, errlen, "pg: prepare needs a name, sql and 0..65535 params");
        return -EINVAL;
    }
    s = dl_pg_find(pg, name);
    if (s != NULL) {
        if (strcmp(s->sql, sql) == 0 && s->nparams == nparams)
            return 0;
        dl_pg_errf(pg, errbuf, errlen, "pg: statement %s is already registered differently",
                   name);
        return -EEXIST;
    }
    r = dl_pg_ensure(pg, errbuf, errlen);
    if (r < 0)
        return r;
    res = PQprepare(pg->conn, name, sql, nparams, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *primary = res != NULL
            ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

        dl_pg_set_sqlstate(pg, state != NULL ? state
                               : PQstatus(pg->conn) != CONNECTION_OK ? "08006" : "XX000");
        dl_pg_errf(pg, errbuf, errlen, "pg: prepare %s: %s", name,
                   primary != NULL ? primary : PQerrorMessage(pg->conn));
        PQclear(res);
        return dl_pg_errno_for(pg->sqlstate);
    }
    PQclear(res);
    r = dl_pg_register(pg, name, sql, nparams, &s);
    if (r < 0) {
        dl_pg_errf(pg, errbuf, errlen, "pg: out of memory");
        return r;
    }
    s->gen = pg->gen;
    dl_pg_set_sqlstate(pg, "");
    return 0;
}

int dl_pg_exec(dl_pg *pg, const char *name, int nparams, const char *const *values,
               PGresult **ret, char *errbuf, size_t errlen)
{
    struct dl_pg_stmt *s = name != NULL ? dl_pg_find(pg, name) : NULL;
    PGresult *res = NULL;
    int r;

    if (s == NULL) {
        dl_pg_errf(pg, errbuf, errlen, "pg: statement %s is not registered",
                   name != NULL ? name : "(null)");
        return -ENOENT;
    }
    if (nparams != s->nparams || (nparams > 0 && values == NULL)) {
        dl_pg_errf(pg, errbuf, errlen, "pg: statement %s takes %d parameters, got %d", name,
                   s->nparams, nparams);
        return -EINVAL;
    }
    r = dl_pg_run(pg, s, NULL, values, &res, errbuf, errlen);
    if (r < 0)
        return r;
    if (ret != NULL)
        *ret = res;
    else
        PQclear(res);
    return 0;
}

int dl_pg_begin(dl_pg *pg, char *errbuf, size_t errlen)
{
    PGresult *res;
    int r;

    if (pg->in_tx) {
        dl_pg_errf(pg, errbuf, errlen, "pg: a transaction is already open");
        return -EALREADY;
    }
    r = dl_pg_run(pg, NULL, "BEGIN", NULL, &res, errbuf, errlen);
    if (r < 0)
        return r;
    PQclear(res);
    pg->in_tx = true;
    pg->tx_lost = false;
    return 0;
}

int dl_pg_begin_org(dl_pg *pg, const char *org_id, char *errbuf, size_t errlen)
{
    const char *values[1] = { org_id };
    char state[sizeof(pg->sqlstate)];
    int r;

    if (!dl_pg_is_uuid(org_id)) {
        dl_pg_errf(pg, errbuf, errlen, "pg: org id is not a UUID");
        return -EINVAL;
    }
    r = dl_pg_begin(pg, errbuf, errlen);
    if (r < 0)
        return r;
    r = dl_pg_exec(pg, DL_PG_SET_ORG_STMT, 1, values, NULL, errbuf, errlen);
    if (r < 0) {
        memcpy(state, pg->sqlstate, sizeof(state));
        dl_pg_rollback(pg, NULL, 0);
        memcpy(pg->sqlstate, state, sizeof(state));
        return r;
    }
    return 0;
}

int dl_pg_commit(dl_pg *pg, char *errbuf, size_t errlen)
{
    PGresult *res;
    int r;

    if (!pg->in_tx) {
        dl_pg_errf(pg, errbuf, errlen, "pg: commit without a transaction");
        return -EINVAL;
    }
    if (pg->tx_lost || PQstatus(pg->conn) != CONNECTION_OK) {
        pg->in_tx = false;
        pg->tx_lost = false;
        dl_pg_set_sqlstate(pg, "08006");
        dl_pg_errf(pg, errbuf, errlen, "pg: connection lost; the transaction was not committed");
        return -ECONNRESET;
    }
    r = dl_pg_run(pg, NULL, "COMMIT", NULL, &res, errbuf, errlen);
    pg->in_tx = false;
    pg->tx_lost = false;
    if (r == -ECONNRESET) {
        dl_pg_errf(pg, errbuf, errlen, "pg: connection lost during COMMIT; outcome unknown");
        return r;
    }
    if (r < 0)
        return r;
    /* A failed transaction answers COMMIT with a successful "ROLLBACK". */
    if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
        PQclear(res);
        dl_pg_set_sqlstate(pg, "25P02");
        dl_pg_errf(pg, errbuf, errlen,
                   "pg: the transaction had failed and was rolled back, not committed");
        return -ECANCELED;
    }
    PQclear(res);
    return 0;
}

int dl_pg_rollback(dl_pg *pg, char *errbuf, size_t errlen)
{
    PGresult *res;
    int r;

    if (!pg->in_tx) {
        dl_pg_errf(pg, errbuf, errlen, "pg: rollback without a transaction");
        return -EINVAL;
    }
    if (pg->tx_lost || PQstatus(pg->conn) != CONNECTION_OK) {
        /* The server ends the transaction of a lost session by itself. */
        pg->in_tx = false;
        pg->tx_lost = false;
        dl_pg_set_sqlstate(pg, "");
        return 0;
    }
    r = dl_pg_run(pg, NULL, "ROLLBACK", NULL, &res, errbuf, errlen);
    pg->in_tx = false;
    pg->tx_lost = false;
    if (r == -ECONNRESET) {
        dl_pg_set_sqlstate(pg, "");
        return 0;
    }
    if (r < 0)
        return r;
    PQclear(res);
    return 0;
}

int dl_pg_ping(dl_pg *pg, char *errbuf, size_t errlen)
{
    PGresult *res;
    int r;

    r = dl_pg_run(pg, NULL, "SELECT 1", NULL, &res, errbuf, errlen);
    if (r < 0)
        return r;
    PQclear(res);
    return 0;
}

const char *dl_pg_last_sqlstate(const dl_pg *pg)
{
    return pg->sqlstate;
}

PGconn *dl_pg_conn(dl_pg *pg)
{
    return pg->conn;
}

void dl_pg_free(dl_pg *pg)
{
    size_t i;

    if (pg == NULL)
        return;
    PQfinish(pg->conn);
    for (i = 0; i < pg->nstmts; i++) {
        free(pg->stmts[i].name);
        free(pg->stmts[i].sql);
    }
    free(pg->stmts);
    if (pg->password != NULL) {
        memset(pg->password, 0, strlen(pg->password));
        free(pg->password);
    }
    free(pg);
}
