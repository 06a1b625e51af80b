/* SPDX-License-Identifier: Apache-2.0 */
/* dl_pg: one PostgreSQL connection with named prepared statements, reconnect and org-scoped transactions. */
#ifndef DL_COMMON_PG_H
#define DL_COMMON_PG_H

#include <stddef.h>

#include <libpq-fe.h>

/*
 * Threading and blocking: a dl_pg is used by one thread at a time. Every call is
 * synchronous libpq and blocks the caller for the round trip (bounded by the statement
 * timeout); services run short queries from their loop or move long work to a worker
 * thread with its own dl_pg.
 *
 * Reconnect: before each statement an idle connection is checked for a server goodbye
 * (FATAL + end of file, as after pg_terminate_backend or a restart); a connection found
 * lost that way, or by an earlier failure, is replaced once per call (PQreset) outside a
 * transaction, and statements are re-prepared lazily. A statement that failed
 * because the connection broke is sent again on the new connection only when the server
 * said it did not run it (SQLSTATE class 57P: terminated by an administrator, crash or
 * shutdown); otherwise its outcome is unknown and the call fails with -ECONNRESET.
 * Inside a transaction nothing is retried: the call fails, the caller rolls back
 * (dl_pg_rollback succeeds on a lost connection) and starts over. After a failed
 * reconnect, further attempts wait for a backoff (100 ms doubling up to 5 s) and calls
 * fail fast with -ENOTCONN meanwhile; nothing ever sleeps.
 *
 * Error text never contains the DSN or the password.
 */

typedef struct dl_pg dl_pg;

typedef struct dl_pg_options {
    int connect_timeout_s;        /* 0 = 5 s */
    int statement_timeout_ms;     /* 0 = server default; applied on every (re)connect */
    const char *application_name; /* NULL = "driftlock" */
} dl_pg_options;

/*
 * Connects to dsn (a libpq URI or key=value string). opts may be NULL for defaults.
 * Returns 0 and the caller owns *ret (dl_pg_free), or -EINVAL (unparsable dsn/options),
 * -ENOTCONN (server unreachable or authentication failed), -ENOMEM, with text in errbuf;
 * *ret untouched then.
 */
int dl_pg_connect(const char *dsn, const dl_pg_options *opts, char *errbuf, size_t errlen,
                  dl_pg **ret);

/*
 * Registers statement name with sql (placeholders $1..$nparams, all passed as text) and
 * prepares it now, so a syntax error is reported here. Registering the same name with the
 * same sql again is a no-op; with different sql it fails with -EEXIST. Registered
 * statements survive reconnects. Returns 0 or a negative code (see dl_pg_exec) with text.
 */
int dl_pg_prepare(dl_pg *pg, const char *name, const char *sql, int nparams,
                  char *errbuf, size_t errlen);

/*
 * Executes prepared statement name with nparams text values (a NULL value is SQL NULL;
 * nparams must equal the registered count). On success returns 0 and *ret (may be NULL to
 * discard) is the PGresult the caller must PQclear. On failure *ret is untouched, the
 * SQLSTATE is kept for dl_pg_last_sqlstate, the server's message goes into errbuf, and the
 * return value is:
 *   -EEXIST     unique_violation (23505)
 *   -ETIMEDOUT  statement timeout or cancel (57014)
 *   -EAGAIN     serialization failure or deadlock (40001, 40P01): retry the transaction
 *   -EACCES     insufficient privilege or row-level security refusal (42501)
 *   -ECONNRESET connection lost, outcome unknown or transaction lost
 *   -ENOTCONN   no connection and reconnect failed (or is backing off)
 *   -ENOENT     name was never registered
 *   -EINVAL     wrong parameter count
 *   -EIO        any other SQL error
 */
int dl_pg_exec(dl_pg *pg, const char *name, int nparams, const char *const *values,
               PGresult **ret, char *errbuf, size_t errlen);

/* Starts a transaction (BEGIN). Fails with -EALREADY inside one. Codes as dl_pg_exec. */
int dl_pg_begin(dl_pg *pg, char *errbuf, size_t errlen);

/*
 * BEGIN, then SELECT set_config('driftlock.org_id', org_id, true) so row-level security
 * scopes the transaction to that org. org_id must be a UUID in text form, else -EINVAL
 * before anything is sent. On any failure the transaction is rolled back.
 */
int dl_pg_begin_org(dl_pg *pg, const char *org_id, char *errbuf, size_t errlen);

/*
 * COMMIT. Returns 0 when committed; -ECANCELED when the server rolled back instead (an
 * earlier statement failed); -ECONNRESET when the connection was lost (outcome unknown).
 * The transaction is over in every case.
 */
int dl_pg_commit(dl_pg *pg, char *errbuf, size_t errlen);

/* ROLLBACK. Returns 0 also when the connection was lost (the server rolled back). */
int dl_pg_rollback(dl_pg *pg, char *errbuf, size_t errlen);

/* Round trip (SELECT 1), reconnecting if needed; for /readyz. Codes as dl_pg_exec. */
int dl_pg_ping(dl_pg *pg, char *errbuf, size_t errlen);

/*
 * SQLSTATE of the last failed call ("23505", "08006", ...), or "" after a success.
 * Connection failures without a server SQLSTATE report "08006" (or "08001" when a
 * connection could not be established). Owned by pg; valid until the next call.
 */
const char *dl_pg_last_sqlstate(const dl_pg *pg);

/* The libpq connection (owned by pg; the same object across reconnects, which use PQreset). */
PGconn *dl_pg_conn(dl_pg *pg);

/* Closes the connection and frees pg. Accepts NULL. */
void dl_pg_free(dl_pg *pg);

#endif /* DL_COMMON_PG_H */
