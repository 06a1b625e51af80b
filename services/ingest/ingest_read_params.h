/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_read_params: the read API's query parameters, request bodies and opaque page cursors,
 * validated without I/O (so the unit suite covers every rule). */
#ifndef DL_INGEST_READ_PARAMS_H
#define DL_INGEST_READ_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define INGEST_READ_LIMIT_DEFAULT 50
#define INGEST_READ_LIMIT_MAX 500
#define INGEST_READ_CURSOR_MAX 512  /* characters of a cursor a client may send back */
#define INGEST_READ_NOTE_MAX 1024   /* characters of a status note */
#define INGEST_READ_SETTINGS_MAX 16384 /* bytes of a stream's settings as stored (the SQL CHECK) */
#define INGEST_READ_PUT_BODY_MAX 32768 /* bytes of a PUT /v1/streams/{stream} body */
#define INGEST_READ_BODY_DEPTH 4       /* JSON nesting of PATCH and PUT bodies */

/* Severities as a bit set, in the order of the SQL CHECK. */
enum {
	INGEST_SEV_LOW = 1u << 0,
	INGEST_SEV_MEDIUM = 1u << 1,
	INGEST_SEV_HIGH = 1u << 2,
	INGEST_SEV_CRITICAL = 1u << 3,
};

/* Where parameters come from: returns the decoded value of query parameter name, or NULL when
 * it is absent (dl_http_req_query in the service, a table in the unit suite). */
typedef const char *(*ingest_read_get_fn)(void *src, const char *name);

/* A page position: the last row of the previous page. Anomalies are ordered by
 * (detected_at, id) descending, so key is detected_at in microseconds since the epoch and id
 * the anomaly id; streams by name ascending, so key is 0 and id the name. */
typedef struct ingest_read_cursor {
	int64_t key;
	char id[129];
} ingest_read_cursor;

/* GET /v1/anomalies. Absent filters have their has_* false (severity_mask 0 = all). */
typedef struct ingest_anomaly_query {
	bool has_stream;
	char stream[129];
	unsigned severity_mask;
	bool has_status;
	char status[16];
	bool has_from; /* detected_at >= from */
	int64_t from_ms;
	bool has_to; /* detected_at < to */
	int64_t to_ms;
	bool has_min_score;
	double min_score;
	bool has_cursor;
	ingest_read_cursor cursor;
	int limit;
} ingest_anomaly_query;

/* GET /v1/streams. */
typedef struct ingest_stream_query {
	bool has_cursor;
	ingest_read_cursor cursor;
	int limit;
} ingest_stream_query;

/* PATCH /v1/anomalies/{id}. has_note false = keep the note; note_null = clear it. */
typedef struct ingest_anomaly_patch {
	char status[16];
	bool has_note;
	bool note_null;
	char note[4 * INGEST_READ_NOTE_MAX + 1];
} ingest_anomaly_patch;

/* PUT /v1/streams/{stream}. A member left out keeps its stored value; sensitivity null
 * returns the stream to the org's sensitivity; settings replaces the stored object whole. */
typedef struct ingest_stream_put {
	bool has_sensitivity;
	bool sensitivity_null;
	double sensitivity;
	char *settings_json; /* owned (free with ingest_stream_put_clear), NULL = unchanged */
} ingest_stream_put;

/* The names and SQL values of statuses and severities (NULL-terminated). */
extern const char *const ingest_read_statuses[];
extern const char *const ingest_read_severities[];

/* Parses and validates the query of GET /v1/anomalies: stream, severity (comma-separated
 * list), status, from, to (RFC 3339), min_score (a finite number >= 0), cursor, limit
 * (1..INGEST_READ_LIMIT_MAX, default INGEST_READ_LIMIT_DEFAULT). Returns 0 and fills *q, or
 * -EINVAL with "<parameter>: <rule>" in errbuf and the parameter's name in param (for the
 * error details); *q is then unspecified. Thread-safe. */
int ingest_read_parse_anomaly_query(ingest_read_get_fn get, void *src, ingest_anomaly_query *q,
				    char *param, size_t paramlen, char *errbuf, size_t errlen);

/* The same for GET /v1/streams: cursor and limit. */
int ingest_read_parse_stream_query(ingest_read_get_fn get, void *src, ingest_stream_query *q,
				   char *param, size_t paramlen, char *errbuf, size_t errlen);

/* Encodes a cursor of kind tag ('a' anomalies, 's' streams) as unpadded base64url text into
 * buf. Returns 0, or -ENOSPC (buflen too small) / -EINVAL (id not 1-128 id characters). */
int ingest_read_cursor_encode(char tag, const ingest_read_cursor *c, char *buf, size_t buflen);

/* Decodes text made by ingest_read_cursor_encode with the same tag. Returns 0 and *ret, or
 * -EINVAL for anything else (too long, not base64url, another kind, malformed key or id);
 * *ret untouched then. */
int ingest_read_cursor_decode(char tag, const char *text, ingest_read_cursor *ret);

/* Validates a PATCH body: an object with "status" (one of ingest_read_statuses; required) and
 * optional "note" (string of at most INGEST_READ_NOTE_MAX characters, or null); other members
 * are refused. Returns 0 and *ret, or -EINVAL with "<member>: <rule>" in errbuf. */
int ingest_read_parse_anomaly_patch(const cJSON *body, ingest_anomaly_patch *ret, char *errbuf,
				    size_t errlen);

/* Validates a PUT body: an object with optional "sensitivity" (0..1 or null) and "settings"
 * (an object the CBAD engine accepts: cbad_settings_apply_json on the defaults, unknown keys
 * refused; "sensitivity" belongs outside it; at most INGEST_READ_SETTINGS_MAX bytes as JSON);
 * at least one of them; other members refused. Returns 0 and *ret (release with
 * ingest_stream_put_clear), -EINVAL with "<member>: <rule>" in errbuf, or -ENOMEM. */
int ingest_read_parse_stream_put(const cJSON *body, ingest_stream_put *ret, char *errbuf,
				 size_t errlen);

/* Frees what ingest_read_parse_stream_put allocated and zeroes p. Accepts NULL. */
void ingest_stream_put_clear(ingest_stream_put *p);

#endif /* DL_INGEST_READ_PARAMS_H */
