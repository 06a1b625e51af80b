/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_body: the POST /v1/events body parser. Pure (no I/O): decodes the content encoding,
 * splits a JSON object, a JSON array of objects or NDJSON into events, validates each against
 * the limits, and keeps, for each accepted event, the exact bytes the client sent. */
#ifndef DL_INGEST_BODY_H
#define DL_INGEST_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ingest_body_limits {
	size_t max_event_bytes;   /* one event's JSON text (default 64 KiB) */
	size_t max_body_bytes;    /* the body after decompression (default 8 MiB) */
	size_t max_events;        /* events per request (default 10,000) */
	int max_depth;            /* JSON nesting of one event, the event object = 1 (default 32) */
} ingest_body_limits;

/* One accepted event. payload points into the batch's decoded body: the exact bytes of the
 * event object as sent (no surrounding whitespace). */
typedef struct ingest_body_event {
	size_t index;        /* position in the request, from 0 (array index or NDJSON line) */
	const char *payload;
	size_t payload_len;
	char stream[129];    /* from "stream", else the request's default */
	int64_t ts_ms;       /* from "ts" (RFC 3339 or epoch ms), else the receive time */
	char client_id[129]; /* from "id" when present, else "" */
} ingest_body_event;

/* One rejected event: its index and why ("code": snake_case, "message": a sentence naming
 * the field and rule, as proto decoders word them). */
typedef struct ingest_body_reject {
	size_t index;
	char code[32];
	char message[256];
} ingest_body_reject;

typedef struct ingest_body_batch {
	char *decoded; /* owned: the decompressed body (or a copy), payloads point into it */
	size_t decoded_len;
	ingest_body_event *events;
	size_t nevents;
	ingest_body_reject *rejects;
	size_t nrejects;
} ingest_body_batch;

/* Parses body (len bytes) sent with content_type and content_encoding (NULL = identity).
 * default_stream is the ?stream= value or NULL; now_ms is the receive time.
 * Returns 0 and fills *out (free with ingest_body_batch_free) when the body as a whole could
 * be read: some events may still be rejected, possibly all of them (the caller answers 400
 * then). Returns a negative errno and an HTTP status + error code + message for a body that
 * cannot be read at all: 415 unsupported_media_type (content type or encoding), 413
 * payload_too_large (decompressed size over the cap, or more than max_events events),
 * 400 invalid_body (bad compressed data, not JSON / not an object or array of objects).
 * *out is zeroed on failure. */
int ingest_body_parse(const char *content_type, const char *content_encoding, const char *body,
		      size_t len, const char *default_stream, int64_t now_ms,
		      const ingest_body_limits *limits, ingest_body_batch *out, int *ret_status,
		      char *code, size_t codelen, char *errbuf, size_t errlen);

void ingest_body_batch_free(ingest_body_batch *b);

#endif /* DL_INGEST_BODY_H */
