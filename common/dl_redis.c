/* SPDX-License-Identifier: Apache-2.0 */
/* dl_redis: one synchronous Redis connection from a redis:// URL, with AUTH, SELECT and reconnect. */
#include "common/dl_redis.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

struct dl_redis {
    redisContext *ctx; /* NULL after a failure, until the next call reconnects */
    char *host;
    int port;
    char *user;
    char *password;
    int db;
    struct timeval connect_timeout;
    struct timeval command_timeout;
};

static void dl_redis_errf(const dl_redis *r, char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes error text, masking the password should a server or library ever echo it. */
static void dl_redis_errf(const dl_redis *r, char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    char *p;

    if (errbuf == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    if (r != NULL && r->password != NULL && r->password[0] != '\0') {
        size_t plen = strlen(r->password);

        while ((p = strstr(errbuf, r->password)) != NULL)
            memset(p, '*', plen);
    }
}

static struct timeval dl_redis_tv(int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    return tv;
}

static int dl_redis_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Copies [s, s+n) percent-decoded into a new string; NULL on bad escape or no memory. */
static char *dl_redis_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t i, o = 0;

    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n || dl_redis_hex(s[i + 1]) < 0 || dl_redis_hex(s[i + 2]) < 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(dl_redis_hex(s[i + 1]) * 16 + dl_redis_hex(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* Splits the URL into r's fields. Error text never quotes the URL. */
static int dl_redis_parse_url(dl_redis *r, const char *url, char *errbuf, size_t errlen)
{
    const char *rest, *at, *hostpart, *slash, *colon, *host_end;
    char *end;
    long v;

    if (strncasecmp(url, "rediss://", 9) == 0) {
        dl_redis_errf(NULL, errbuf, errlen, "redis: rediss:// (TLS) is not supported");
        return -EINVAL;
    }
    if (strncasecmp(url, "redis://", 8) != 0) {
        dl_redis_errf(NULL, errbuf, errlen, "redis: URL must start with redis://");
        return -EINVAL;
    }
    rest = url + 8;
    if (strchr(rest, '?') != NULL || strchr(rest, '#') != NULL) {
        dl_redis_errf(NULL, errbuf, errlen, "redis: URL query parameters are not supported");
        return -EINVAL;
    }
    at = strrchr(rest, '@');
    hostpart = rest;
    if (at != NULL) {
        const char *ucolon = memchr(rest, ':', (size_t)(at - rest));

        if (ucolon != NULL) {
            if (ucolon > rest) {
                r->user = dl_redis_decode(rest, (size_t)(ucolon - rest));
                if (r->user == NULL)
                    goto bad_userinfo;
            }
            r->password = dl_redis_decode(ucolon + 1, (size_t)(at - ucolon - 1));
        } else {
            r->password = dl_redis_decode(rest, (size_t)(at - rest));
        }
        if (r->password == NULL)
            goto bad_userinfo;
        hostpart = at + 1;
    }
    slash = strchr(hostpart, '/');
    host_end = slash != NULL ? slash : hostpart + strlen(hostpart);
    r->port = 6379;
    if (hostpart[0] == '[') {
        const char *close = memchr(hostpart, ']', (size_t)(host_end - hostpart));

        if (close == NULL) {
            dl_redis_errf(NULL, errbuf, errlen, "redis: URL has an unclosed [ in the host");
            return -EINVAL;
        }
        r->host = strndup(hostpart + 1, (size_t)(close - hostpart - 1));
        colon = close + 1 < host_end && close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = memchr(hostpart, ':', (size_t)(host_end - hostpart));
        r->host = strndup(hostpart, (size_t)((colon != NULL ? colon : host_end) - hostpart));
    }
    if (r->host == NULL || r->host[0] == '\0') {
        dl_redis_errf(NULL, errbuf, errlen, "redis: URL has no host");
        return -EINVAL;
    }
    if (colon != NULL) {
        errno = 0;
        v = strtol(colon + 1, &end, 10);
        if (errno != 0 || end != host_end || v < 1 || v > 65535) {
            dl_redis_errf(NULL, errbuf, errlen, "redis: URL port is not 1..65535");
            return -EINVAL;
        }
        r->port = (int)v;
    }
    r->db = 0;
    if (slash != NULL && slash[1] != '\0') {
        errno = 0;
        v = strtol(slash + 1, &end, 10);
        if (errno != 0 || *end != '\0' || v < 0 || v > INT_MAX) {
            dl_redis_errf(NULL, errbuf, errlen, "redis: URL database is not a number");
            return -EINVAL;
        }
        r->db = (int)v;
    }
    return 0;

bad_userinfo:
    dl_redis_errf(NULL, errbuf, errlen, "redis: URL credentials are badly percent-encoded");
    return -EINVAL;
}

/* Sends a setup command on a fresh context; the reply text never includes the arguments. */
static int dl_redis_setup_cmd(dl_redis *r, redisContext *ctx, int argc, const char **argv,
                              char *errbuf, size_t errlen)
{
    redisReply *reply = redisCommandArgv(ctx, argc, argv, NULL);
    int rc = 0;

    if (reply == NULL) {
        dl_redis_errf(r, errbuf, errlen, "redis: %s failed: %s", argv[0], ctx->errstr);
        return -ENOTCONN;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        bool auth = strncmp(reply->str, "WRONGPASS", 9) == 0 ||
                    strncmp(reply->str, "NOAUTH", 6) == 0 ||
                    strncmp(reply->str, "ERR invalid password", 20) == 0 ||
                    strcmp(argv[0], "AUTH") == 0;

        dl_redis_errf(r, errbuf, errlen, "redis: %s refused: %s", argv[0], reply->str);
        rc = auth ? -EACCES : -EREMOTEIO;
    }
    freeReplyObject(reply);
    return rc;
}

/* Opens a fresh authenticated connection and, on success, replaces r->ctx with it. */
static int dl_redis_reconnect(dl_redis *r, char *errbuf, size_t errlen)
{
    redisContext *ctx;
    char dbtext[16];
    int rc;

    ctx = redisConnectWithTimeout(r->host, r->port, r->connect_timeout);
    if (ctx == NULL) {
        dl_redis_errf(r, errbuf, errlen, "redis: out of memory");
        return -ENOMEM;
    }
    if (ctx->err != 0) {
        dl_redis_errf(r, errbuf, errlen, "redis: cannot connect to %s:%d: %s", r->host,
                      r->port, ctx->errstr);
        rc = -ENOTCONN;
        goto out_free_ctx;
    }
    if (redisSetTimeout(ctx, r->command_timeout) != REDIS_OK) {
        dl_redis_errf(r, errbuf, errlen, "redis: cannot set the command timeout: %s",
                      ctx->errstr);
        rc = -ENOTCONN;
        goto out_free_ctx;
    }
    redisEnableKeepAlive(ctx);
    if (r->password != NULL) {
        const char *argv[3] = { "AUTH", NULL, NULL };
        int argc = 1;

        if (r->user != NULL)
            argv[argc++] = r->user;
        argv[argc++] = r->password;
        rc = dl_redis_setup_cmd(r, ctx, argc, argv, errbuf, errlen);
        if (rc < 0)
            goto out_free_ctx;
    }
    if (r->db != 0) {
        const char *argv[2] = { "SELECT", dbtext };

        snprintf(dbtext, sizeof(dbtext), "%d", r->db);
        rc = dl_redis_setup_cmd(r, ctx, 2, argv, errbuf, errlen);
        if (rc < 0)
            goto out_free_ctx;
    }
    {
        /* Without a password AUTH never ran: find out now whether the server wants one. */
        const char *argv[1] = { "PING" };

        rc = dl_redis_setup_cmd(r, ctx, 1, argv, errbuf, errlen);
        if (rc < 0)
            goto out_free_ctx;
    }
    if (r->ctx != NULL)
        redisFree(r->ctx);
    r->ctx = ctx;
    return 0;

out_free_ctx:
    redisFree(ctx);
    return rc;
}

static void dl_redis_clear(dl_redis *r)
{
    if (r->ctx != NULL)
        redisFree(r->ctx);
    free(r->host);
    free(r->user);
    if (r->password != NULL) {
        memset(r->password, 0, strlen(r->password));
        free(r->password);
    }
}

int dl_redis_connect_url(const char *url, int connect_timeout_ms, int command_timeout_ms,
                         char *errbuf, size_t errlen, dl_redis **ret)
{
    dl_redis *r;
    int rc;

    if (url == NULL || connect_timeout_ms <= 0 || command_timeout_ms <= 0) {
        dl_redis_errf(NULL, errbuf, errlen, "redis: a URL and positive timeouts are required");
        return -EINVAL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        dl_redis_errf(NULL, errbuf, errlen, "redis: out of memory");
        return -ENOMEM;
    }
    r->connect_timeout = dl_redis_tv(connect_timeout_ms);
    r->command_timeout = dl_redis_tv(command_timeout_ms);
    rc = dl_redis_parse_url(r, url, errbuf, errlen);
    if (rc < 0)
        goto out_free;
    rc = dl_redis_reconnect(r, errbuf, errlen);
    if (rc < 0)
        goto out_free;
    *ret = r;
    return 0;

out_free:
    dl_redis_clear(r);
    free(r);
    return rc;
}

int dl_redis_command_argv(dl_redis *r, int argc, const char **argv, const size_t *argvlen,
                          redisReply **ret, char *errbuf, size_t errlen)
{
    bool reconnected = false;
    redisReply *reply;
    int rc, err, saved_errno;

    if (argc < 1 || argv == NULL) {
        dl_redis_errf(r, errbuf, errlen, "redis: empty command");
        return -EINVAL;
    }
    for (;;) {
        if (r->ctx == NULL) {
            if (reconnected)
                return -ENOTCONN;
            reconnected = true;
            rc = dl_redis_reconnect(r, errbuf, errlen);
            if (rc < 0)
                return rc == -EACCES ? rc : -ENOTCONN;
        }
        errno = 0;
        reply = redisCommandArgv(r->ctx, argc, argv, argvlen);
        saved_errno = errno;
        if (reply != NULL)
            break;

        /* The context is unusable after any error: drop it, reconnect on demand. */
        err = r->ctx->err;
        dl_redis_errf(r, errbuf, errlen, "redis: %s: %s", argv[0], r->ctx->errstr);
        redisFree(r->ctx);
        r->ctx = NULL;
        if (err == REDIS_ERR_IO &&
            (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT)) {
            dl_redis_errf(r, errbuf, errlen, "redis: %s: no reply within the command timeout",
                          argv[0]);
            return -ETIMEDOUT;
        }
        if (err == REDIS_ERR_OOM)
            return -ENOMEM;
        if (err == REDIS_ERR_PROTOCOL)
            return -EPROTO;
        if (reconnected)
            return -ENOTCONN;
        /* Connection reset or closed: one fresh connection, one more send. */
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        dl_redis_errf(r, errbuf, errlen, "%s", reply->str);
        freeReplyObject(reply);
        return -EREMOTEIO;
    }
    *ret = reply;
    return 0;
}

int dl_redis_ping(dl_redis *r, char *errbuf, size_t errlen)
{
    const char *argv[1] = { "PING" };
    redisReply *reply = NULL;
    int rc;

    rc = dl_redis_command_argv(r, 1, argv, NULL, &reply, errbuf, errlen);
    if (rc < 0)
        return rc;
    if (reply->type != REDIS_REPLY_STATUS || strcmp(reply->str, "PONG") != 0) {
        dl_redis_errf(r, errbuf, errlen, "redis: PING got an unexpected reply");
        rc = -EPROTO;
    }
    freeReplyObject(reply);
    return rc;
}

int dl_redis_url_parse(const char *url, dl_redis_url *ret, char *errbuf, size_t errlen)
{
    dl_redis r = { 0 };
    int rc;

    if (url == NULL) {
        dl_redis_errf(NULL, errbuf, errlen, "redis: a URL is required");
        return -EINVAL;
    }
    rc = dl_redis_parse_url(&r, url, errbuf, errlen);
    if (rc == 0 && r.host == NULL)
        rc = -ENOMEM;
    if (rc < 0) {
        dl_redis_clear(&r);
        return rc;
    }
    ret->host = r.host;
    ret->port = r.port;
    ret->user = r.user;
    ret->password = r.password;
    ret->db = r.db;
    return 0;
}

void dl_redis_url_clear(dl_redis_url *u)
{
    if (u == NULL)
        return;
    free(u->host);
    free(u->user);
    if (u->password != NULL) {
        memset(u->password, 0, strlen(u->password));
        free(u->password);
    }
    memset(u, 0, sizeof(*u));
}

redisContext *dl_redis_context(dl_redis *r)
{
    return r->ctx;
}

void dl_redis_free(dl_redis *r)
{
    if (r == NULL)
        return;
    dl_redis_clear(r);
    free(r);
}
