/* SPDX-License-Identifier: Apache-2.0 */
/* proto_topics: the Kafka topic names, message keys and the identifier rules they rely on. */
#ifndef DL_PROTO_TOPICS_H
#define DL_PROTO_TOPICS_H

#include <stddef.h>

/* Topic names. A breaking change to a message gets a new topic (.v2), never an edit here. */
#define DL_TOPIC_EVENTS        "driftlock.events.v1"        /* key "org_id:stream" */
#define DL_TOPIC_ANOMALIES     "driftlock.anomalies.v1"     /* key "org_id:stream" */
#define DL_TOPIC_USAGE         "driftlock.usage.v1"         /* key org_id */
#define DL_TOPIC_NOTIFICATIONS "driftlock.notifications.v1" /* key org_id */
#define DL_TOPIC_DLQ           "driftlock.dlq.v1"           /* key = the source message's key */

/* An org id is the canonical (lowercase) text form of a UUID: 8-4-4-4-12 hex digits. */
#define PROTO_ORG_ID_LEN 36
/* Streams and ids (event, anomaly, request, idempotency keys): 1-128 chars of A-Za-z0-9._:- */
#define PROTO_STREAM_MAX 128
#define PROTO_ID_MAX 128
/* "org_id:stream", the key of the events and anomalies topics, without its NUL. */
#define PROTO_STREAM_KEY_MAX (PROTO_ORG_ID_LEN + 1 + PROTO_STREAM_MAX)

/* The three validators below check `len` bytes of s (NULL means empty). They return 0, or
 * -EINVAL with the rule in errbuf (may be NULL), without the field's name, e.g. "must be 1-128
 * characters of A-Za-z0-9._:-"; callers prefix it with the field they checked. Thread-safe. */

/* An org id: a lowercase UUID in text form ("0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f"). */
int proto_topics_check_org_id(const char *s, size_t len, char *errbuf, size_t errlen);

/* A stream name: 1-128 characters of A-Za-z0-9._:- */
int proto_topics_check_stream(const char *s, size_t len, char *errbuf, size_t errlen);

/* An event, anomaly, request or idempotency id: 1-128 characters of A-Za-z0-9._:- */
int proto_topics_check_id(const char *s, size_t len, char *errbuf, size_t errlen);

/* Writes the key "org_id:stream" (NUL-terminated) into buf and its length (without NUL) into
 * *ret_len (may be NULL). Both parts are validated first.
 * Failure: -EINVAL (invalid org id or stream, reason naming which in errbuf) or -ENOSPC (buflen
 * <= the key's length); buf and *ret_len untouched. PROTO_STREAM_KEY_MAX + 1 bytes always fit.
 * Thread-safe, no allocation. */
int proto_topics_stream_key(const char *org_id, const char *stream, char *buf, size_t buflen,
			    size_t *ret_len, char *errbuf, size_t errlen);

/* Splits a key of `len` bytes made by proto_topics_stream_key back into its org id and stream
 * (each NUL-terminated; the stream may itself contain ':').
 * Failure: -EINVAL with the reason in errbuf; ret_org and ret_stream untouched. Thread-safe. */
int proto_topics_split_stream_key(const char *key, size_t len, char ret_org[PROTO_ORG_ID_LEN + 1],
				  char ret_stream[PROTO_STREAM_MAX + 1], char *errbuf, size_t errlen);

#endif /* DL_PROTO_TOPICS_H */
