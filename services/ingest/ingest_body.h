/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_body: the POST /v1/events body parser. Pure (no I/O): decodes the content encoding,
 * splits a JSON object, a JSON array of objects or NDJSON into events, validates each against
 * the limits, and keeps, for each accepted event, the exact bytes the client sent. */
#ifndef DL_INGEST_BODY_H
#define DL_INGEST_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dl_metrics.h"
#include "proto/proto_event.h"

/* Defaults of the limits (the configuration table in main.c may change them). */
#define INGEST_BODY_DEFAULT_MAX_EVENT_BYTES (64 * 1024)
#define INGEST_BODY_DEFAULT_MAX_BODY_BYTES (8 * 1024 * 1024)
#define INGEST_BODY_DEFAULT_MAX_EVENTS 10000
#define INGEST_BODY_DEFAULT_MAX_DEPTH (PROTO_EVENT_MAX_DEPTH - 1)

/* Caps over whatever is configured, so that every accepted event fits the envelope it travels
 * in (proto_event: 1 MiB in all, 32 levels with the envelope itself as level 1). A configured
 * limit above a cap acts as the cap. */
#define INGEST_BODY_MAX_DEPTH_CAP (PROTO_EVENT_MAX_DEPTH - 1)
#define INGEST_BODY_EVENT_BYTES_CAP (PROTO_EVENT_MAX_BYTES - 4096)

/* Accepted event times: from 2000-01-01T00:00:00Z (earlier numbers are nearly always epoch
 * seconds sent as milliseconds) to one day after the receive time (clock skew, time zones
 * written as UTC). */
#define INGEST_BODY_TS_MIN_MS INT64_C(946684800000)
#define INGEST_BODY_TS_MAX_AHEAD_MS INT64_C(86400000)

typedef struct ingest_body_limits {
	size_t max_event_bytes; /* one event's JSON text (default 64 KiB) */
	size_t max_body_bytes;  /* the body after decompression (default 8 MiB) */
	size_t max_events;      /* events per request, rejected ones included (default 10,000) */
	int max_depth;          /* JSON nesting of one event, the event object = 1 (default 31) */
} ingest_body_limits;

/* One accepted event. payload points into the batch's decoded body: the exact bytes of the
 * event object as sent (no surrounding whitespace). */
typedef struct ingest_body_event {
	size_t index; /* position in the request, from 0 (array index or NDJSON line) */
	const char *payload;
	size_t payload_len;
	char stream[129];    /* from "stream", else the request's default */
	int64_t ts_ms;       /* from "ts" (RFC 3339 or epoch ms), else the receive time */
	char client_id[129]; /* from "id" when present, else "" */
} ingest_body_event;

/* One rejected event: its index (NDJSON: the line number from 0, blank lines counted) and why
 * ("code": one of ingest_body_reject_codes, "message": a sentence naming the field and rule,
 * as proto decoders word them: "event.ts: day 30 does not exist in 2026-02"). */
typedef struct ingest_body_reject {
	size_t index;
	char code[32];
	char message[256];
} ingest_body_reject;

/* Every code a reject carries, NULL-terminated: invalid_json (grammar, UTF-8, control
 * characters), not_an_object, event_too_large, too_deep, missing_stream, invalid_stream,
 * invalid_ts, ts_out_of_range, invalid_id. */
extern const char *const ingest_body_reject_codes[];

typedef struct ingest_body_batch {
	char *decoded; /* owned: the decompressed body (or a copy), NUL-terminated; payloads
			* point into it */
	size_t decoded_len;
	const char *encoding; /* static text: "identity", "gzip" or "zstd" */
	const char *format;   /* static text: "object", "array" or "ndjson" */
	ingest_body_event *events;
	size_t nevents;
	ingest_body_reject *rejects;
	size_t nrejects;
} ingest_body_batch;

/* Parses body (len bytes) sent with content_type and content_encoding (NULL = identity).
 * default_stream is the ?stream= value or NULL; now_ms is the receive time.
 *
 * Content-Type must be application/json (one object or an array of objects) or
 * application/x-ndjson (one object per line, blank lines and CRLF allowed), with no charset
 * parameter or charset=utf-8. Content-Encoding may be identity, gzip (x-gzip; several members
 * allowed) or zstd (several frames allowed); decompression streams into a buffer that never
 * grows past max_body_bytes + 1, whatever the data declares.
 *
 * Returns 0 and fills *out (free with ingest_body_batch_free) when the body as a whole could be
 * read: some events may still be rejected, possibly all of them (the caller answers 400 then).
 * An event (array element, NDJSON line, or the single object) that breaks a rule is a reject
 * with its index; the others are still accepted.
 *
 * Returns a negative errno and sets *ret_status, code and errbuf (written only on failure) for
 * a body that cannot be read at all, *out zeroed:
 *   415 unsupported_media_type (-ENOTSUP): content type, charset or encoding;
 *   413 payload_too_large (-EMSGSIZE): over max_body_bytes after decompression, or a zstd frame
 *       whose window is larger than that;
 *   413 too_many_events (-E2BIG): more than max_events events (rejected ones count);
 *   400 invalid_parameter (-EINVAL): default_stream not 1-128 characters of A-Za-z0-9._:-;
 *   400 invalid_body (-EBADMSG): corrupt or truncated compressed data;
 *   400 invalid_json (-EINVAL): empty, not an object or array, an array whose structure
 *       cannot be followed, or data after the object or array (a message then says to send
 *       several events as an array or NDJSON);
 *   500 internal (-ENOMEM): out of memory.
 * Pure and thread-safe: no I/O, no logging, no global state. */
int ingest_body_parse(const char *content_type, const char *content_encoding, const char *body,
		      size_t len, const char *default_stream, int64_t now_ms,
		      const ingest_body_limits *limits, ingest_body_batch *out, int *ret_status,
		      char *code, size_t codelen, char *errbuf, size_t errlen);

/* Frees what b owns and zeroes it. Accepts NULL and a zeroed batch. */
void ingest_body_batch_free(ingest_body_batch *b);

/* The parser's own metric (rejects and refusals are counted by reason in ingest_events):
 *   driftlock_ingest_body_bytes_total{encoding, stage}  bytes of readable bodies as sent
 *                                                        (stage "wire") and decoded ("decoded")
 */
typedef struct ingest_body_metrics {
	dl_metric *bytes;
} ingest_body_metrics;

/* Registers the family in reg (registered again by name, it is shared, see dl_metrics).
 * Returns 0, or -EINVAL (out of memory, or a family of that name but another shape) with *m
 * untouched. Loop thread, at setup. */
int ingest_body_metrics_init(ingest_body_metrics *m, dl_metrics_registry *reg);

/* Counts a parsed batch that arrived as wire_len bytes. m NULL is a no-op. Thread-safe. */
void ingest_body_metrics_batch(const ingest_body_metrics *m, const ingest_body_batch *b,
			       size_t wire_len);

#endif /* DL_INGEST_BODY_H */
