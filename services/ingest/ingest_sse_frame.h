/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_sse_frame: the wire format of GET /v1/stream/anomalies: resumable cursors, Server-Sent
 * Events frames and the per-client buffer policy (no I/O, no state). */
#ifndef DL_INGEST_SSE_FRAME_H
#define DL_INGEST_SSE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto_topics.h"

/* "<detected_at ms>.<anomaly id>": at most 19 digits, the dot and an id. */
#define INGEST_SSE_CURSOR_MAX (19 + 1 + PROTO_ID_MAX)

/* A comment line: SSE clients ignore it; it keeps proxies and the connection alive. */
#define INGEST_SSE_HEARTBEAT ": heartbeat\n\n"

/* The order anomalies are replayed in: detected_at (epoch ms), then id (bytewise, as
 * PostgreSQL's COLLATE "C"). A cursor is one key: the greatest key a client was sent. */
typedef struct ingest_sse_key {
	int64_t ms;
	char id[PROTO_ID_MAX + 1];
} ingest_sse_key;

/* <0, 0, >0 as a sorts before, with, after b. */
int ingest_sse_key_cmp(const ingest_sse_key *a, const ingest_sse_key *b);

/* Writes k as a cursor into out (outlen >= INGEST_SSE_CURSOR_MAX + 1). Returns 0, or -EINVAL
 * when k->ms is negative or k->id is not 1-128 characters of [A-Za-z0-9._:-]. */
int ingest_sse_cursor_format(const ingest_sse_key *k, char *out, size_t outlen);

/* Parses a cursor (a client's Last-Event-ID). Returns 0 and *ret, or -EINVAL (*ret untouched)
 * for anything but 1-19 digits (a value below 2^63), a dot and a valid id. */
int ingest_sse_cursor_parse(const char *s, ingest_sse_key *ret);

/* Builds one frame: "id: <id>\n" (when id is not NULL), "event: <event>\n" (when not NULL),
 * one "data: " line per line of data (split at CR, LF or CRLF, so a newline in data cannot end
 * the frame or forge a field), then the blank line. id and event must not contain CR or LF.
 * Returns 0 with a malloc'd, NUL-terminated *ret (the caller frees) of *ret_len bytes, or
 * -EINVAL / -ENOMEM with the outputs untouched. */
int ingest_sse_frame_format(const char *id, const char *event, const char *data, size_t len,
			    char **ret, size_t *ret_len);

/* The buffer policy: a client may have at most max bytes waiting for it (bytes queued in its
 * connection plus frames held back while its replay runs). True when adding add more bytes to
 * queued + held would exceed max: the client is too slow and is disconnected. */
bool ingest_sse_over_budget(size_t queued, size_t held, size_t add, size_t max);

#endif /* DL_INGEST_SSE_FRAME_H */
