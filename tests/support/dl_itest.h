/* SPDX-License-Identifier: Apache-2.0 */
/* dl_itest: helpers for the integration suites: the stack's addresses, service processes,
 * HTTP calls and SQL against the real servers started by infra/test.sh. Every helper fails the
 * running Check test (ck_assert) when something it needs is missing: nothing is skipped. */
#ifndef DL_TESTS_SUPPORT_ITEST_H
#define DL_TESTS_SUPPORT_ITEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The value of an environment variable infra/test.sh exports (fails the test if unset). */
const char *dl_itest_env(const char *name);

/* A free TCP port on 127.0.0.1 (bound, read, closed). */
int dl_itest_free_port(void);

typedef struct dl_itest_proc {
	pid_t pid;
	int admin_port;
	int public_port; /* ingest's public API (DRIFTLOCK_INGEST_PORT) */
	char log_path[256];
} dl_itest_proc;

/* Starts build/services/<svc>/driftlock-<svc> with the stack's addresses (its own PostgreSQL
 * role), free admin and public ports, DRIFTLOCK_API_KEY_SECRET when set, and extra (NULL or a
 * NULL-terminated list of "NAME=value" overriding the rest). stderr+stdout go to log_path. */
void dl_itest_start(const char *svc, const char *const *extra, dl_itest_proc *ret);

/* Waits until GET /readyz on the admin port answers 200; false after timeout_ms. */
bool dl_itest_wait_ready(const dl_itest_proc *p, int timeout_ms);

/* SIGTERM, then waits up to timeout_ms for the exit; returns the wait status, or -2 when it had
 * to be killed. */
int dl_itest_stop(dl_itest_proc *p, int timeout_ms);

/* dl_itest_stop, failing the test unless the service drained and exited 0 (what names it in the
 * message: "detector", "worker b"). */
void dl_itest_stop_clean(dl_itest_proc *p, int timeout_ms, const char *what);

/* Sends one request to http://127.0.0.1:port/path. headers: NULL or NULL-terminated
 * "Name: value" lines. body may be NULL. Returns the status (0: no answer within 15 s); the
 * response body (NUL-terminated, truncated to cap - 1) in resp when not NULL, and the response
 * header block in hdrs (hcap) when not NULL. */
long dl_itest_http(int port, const char *method, const char *path, const char *const *headers,
		   const void *body, size_t len, char *resp, size_t cap, char *hdrs, size_t hcap);

/* The value of header name (case-insensitive) in a header block from dl_itest_http, copied
 * into out; false when absent. */
bool dl_itest_header(const char *hdrs, const char *name, char *out, size_t outlen);

/* Runs sql on the stack's admin connection (DRIFTLOCK_PG_DSN_ADMIN) with text params
 * (NULL-terminated list, may be NULL) and copies the first column of the first row into out
 * (may be NULL). Fails the test on an SQL error. Returns the number of rows. */
int dl_itest_sql(const char *sql, const char *const *params, char *out, size_t outlen);

/* Creates an org on plan (NULL: developer) and an API key for it with driftlock-admin (as an
 * operator would); writes the org id and the key (shown once by the command). */
void dl_itest_org_with_key(const char *name, const char *plan, char org_id[37], char *key,
			   size_t keylen);

/* Runs the shell command cmd and copies its stdout into out (NUL-terminated); returns the exit
 * status (WEXITSTATUS) or -1. */
int dl_itest_run(const char *cmd, char *out, size_t outlen);

/* One Kafka message read back by dl_itest_topic_read (owned copies, NUL-terminated). */
typedef struct dl_itest_msg {
	char *key;
	size_t keylen;
	char *value;
	size_t len;
	int32_t partition;
	int64_t offset;
} dl_itest_msg;

/* Reads topic from the beginning with a consumer in a new group and keeps the messages whose
 * key starts with key_prefix, until want of them were seen or timeout_ms passed. Returns the
 * number kept; *ret (free with dl_itest_msgs_free) holds them in partition order. */
size_t dl_itest_topic_read(const char *topic, const char *key_prefix, size_t want,
			   int timeout_ms, dl_itest_msg **ret);
void dl_itest_msgs_free(dl_itest_msg *m, size_t n);

#endif /* DL_TESTS_SUPPORT_ITEST_H */
