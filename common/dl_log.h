/* SPDX-License-Identifier: Apache-2.0 */
/* dl_log: structured logging, one JSON object per line, written with one write(2) per record. */
#ifndef DL_COMMON_LOG_H
#define DL_COMMON_LOG_H

#include <stdarg.h>
#include <stdbool.h>

typedef enum {
	DL_LOG_DEBUG,
	DL_LOG_INFO,
	DL_LOG_WARN,
	DL_LOG_ERROR,
} dl_log_level;

/* Longest message or field value written, in bytes; longer ones are cut at a UTF-8 boundary and
 * end in "...". */
#define DL_LOG_VALUE_MAX 8192

/* Sets the service name written in every record (NULL = "driftlock", at most 63 bytes kept), the
 * lowest level written and the file descriptor (negative = stderr). Before any call the log goes
 * to stderr at info level under "driftlock". The descriptor stays owned by the caller.
 * Call from main before other threads log; the level can later be changed with
 * dl_log_set_level() from any thread. */
void dl_log_setup(const char *service, dl_log_level min_level, int fd);

/* Changes the lowest level written. Thread-safe. */
void dl_log_set_level(dl_log_level min_level);

/* True when records of level lvl are written (to skip building expensive fields). Thread-safe. */
bool dl_log_enabled(dl_log_level lvl);

/* Parses "debug", "info", "warn" (or "warning") and "error", in any case, into *ret.
 * Returns 0, or -EINVAL when s is NULL or anything else (*ret untouched). Thread-safe. */
int dl_log_level_parse(const char *s, dl_log_level *ret);

/* The lowercase name of a level, as written in "level"; "unknown" for values out of range. */
const char *dl_log_level_name(dl_log_level lvl);

/* Writes one record: {"ts":"<RFC 3339 UTC ms>","level":"..","service":"..","msg":"..",<fields>}
 * and a newline. The variadic arguments are const char * key, value pairs ended by NULL (the
 * dl_log_* macros add it); format numbers into strings first. A NULL value is written as null
 * and also ends the list, so a key without a value is harmless. Strings are escaped for JSON;
 * invalid UTF-8 becomes U+FFFD.
 * Keys that name secrets (containing password, passwd, secret, token, api_key, apikey,
 * authorization, cookie, credential or dsn, in any case) have their value written as "***".
 * Keys equal to ts, level, service or msg are written with a leading underscore.
 * Never fails visibly: a record that cannot be built in memory is replaced by a short one saying
 * so, and write errors are ignored. Thread-safe; records from concurrent threads never
 * interleave. Not async-signal-safe. */
void dl_log_write(dl_log_level lvl, const char *msg, ...) __attribute__((sentinel));

/* dl_log_write() with the fields in a va_list (for wrappers). */
void dl_log_writev(dl_log_level lvl, const char *msg, va_list fields);

/* Writes one record whose message is printf-formatted, with no fields. Thread-safe. */
void dl_log_writef(dl_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* dl_log_info("listening", "port", "8080") and dl_log_info("ready") both work. */
#define dl_log_debug(...) dl_log_write(DL_LOG_DEBUG, __VA_ARGS__, (const char *)NULL)
#define dl_log_info(...) dl_log_write(DL_LOG_INFO, __VA_ARGS__, (const char *)NULL)
#define dl_log_warn(...) dl_log_write(DL_LOG_WARN, __VA_ARGS__, (const char *)NULL)
#define dl_log_error(...) dl_log_write(DL_LOG_ERROR, __VA_ARGS__, (const char *)NULL)

#endif /* DL_COMMON_LOG_H */
