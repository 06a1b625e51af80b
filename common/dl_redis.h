/* SPDX-License-Identifier: Apache-2.0 */
/* dl_redis: one synchronous Redis connection from a redis:// URL, with AUTH, SELECT and reconnect. */
#ifndef DL_COMMON_REDIS_H
#define DL_COMMON_REDIS_H

#include <stddef.h>

#include <hiredis/hiredis.h>

/*
 * Threading and blocking: a dl_redis is used by one thread at a time; every call blocks
 * for one round trip, bounded by the command timeout. Services call it from their loop for
 * short commands.
 *
 * Reconnect: a command that fails because the connection broke (reset, closed by the
 * server) is sent again once on a fresh connection (AUTH and SELECT redone), so commands
 * are delivered at least once: make them idempotent (SET, HSET, scripts keyed by an id)
 * or accept a rare double count. A command that timed out is not sent again (the server
 * may still run it); it fails with -ETIMEDOUT and the next call reconnects.
 *
 * Error text never contains the password or the URL.
 */

typedef struct dl_redis dl_redis;

/*
 * Connects to url, "redis://[[user]:password@]host[:port][/db]" (port 6379 and db 0 by
 * default; the password may be percent-encoded; rediss:// is not supported), then AUTHs
 * and SELECTs db. Timeouts in milliseconds must be > 0.
 * Returns 0 and the caller owns *ret (dl_redis_free), or -EINVAL (bad URL), -ENOTCONN
 * (unreachable), -EACCES (authentication refused), -ETIMEDOUT, -ENOMEM with text in
 * errbuf; *ret untouched then.
 */
int dl_redis_connect_url(const char *url, int connect_timeout_ms, int command_timeout_ms,
                         char *errbuf, size_t errlen, dl_redis **ret);

/*
 * Sends one command as argc binary-safe arguments (argvlen may be NULL for C strings) and
 * waits for its reply. On success returns 0 and *ret is the reply, owned by the caller
 * (freeReplyObject); it is never of type REDIS_REPLY_ERROR. On failure *ret is untouched and:
 *   -EREMOTEIO  the server answered with an error; errbuf holds its text verbatim
 *               (e.g. "NOSCRIPT No matching script..."), so callers can match its prefix
 *   -ETIMEDOUT  no reply within the command timeout
 *   -ENOTCONN   the connection is down and one reconnect attempt failed
 *   -EPROTO     protocol error; -ENOMEM out of memory; -EINVAL bad arguments
 */
int dl_redis_command_argv(dl_redis *r, int argc, const char **argv, const size_t *argvlen,
                          redisReply **ret, char *errbuf, size_t errlen);

/* PING round trip (with the same reconnect rule), for /readyz. Codes as above. */
int dl_redis_ping(dl_redis *r, char *errbuf, size_t errlen);

/* The hiredis context (owned by r; NULL while disconnected, replaced by a reconnect). */
redisContext *dl_redis_context(dl_redis *r);

/* The parts of a redis:// URL, for clients dl_redis does not make (hiredis async contexts). */
typedef struct dl_redis_url {
    char *host;
    int port;
    char *user;     /* NULL when the URL has none */
    char *password; /* NULL when the URL has none */
    int db;
} dl_redis_url;

/*
 * Splits url with the same rules as dl_redis_connect_url (nothing is connected). Returns 0 and
 * fills *ret (release with dl_redis_url_clear), or -EINVAL / -ENOMEM with text in errbuf that
 * never quotes the URL; *ret untouched on failure.
 */
int dl_redis_url_parse(const char *url, dl_redis_url *ret, char *errbuf, size_t errlen);

/* Frees the strings of u (wiping the password) and zeroes it. Accepts NULL. */
void dl_redis_url_clear(dl_redis_url *u);

/* Closes the connection and frees r. Accepts NULL. */
void dl_redis_free(dl_redis *r);

#endif /* DL_COMMON_REDIS_H */
