/* SPDX-License-Identifier: Apache-2.0 */
/* det_keys: events Kafka producers publish directly: the API key and stream their headers carry,
 * and the key checked against the stored hashes (through a short-lived cache) to find its org. */
#ifndef DL_DETECTOR_KEYS_H
#define DL_DETECTOR_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#include "common/dl_apikey.h"
#include "common/dl_metrics.h"
#include "common/dl_pgpool.h"

/* The message headers a direct producer sets. */
#define DET_KEYS_HEADER_KEY "driftlock-api-key"
#define DET_KEYS_HEADER_STREAM "driftlock-stream"
/* A raw event must fit in an envelope (proto_event) with room for the envelope's own members. */
#define DET_KEYS_RAW_MAX_BYTES (1024 * 1024 - 4096)
#define DET_KEYS_RAW_MAX_DEPTH 31
#define DET_KEYS_STREAM_MAX 128

typedef struct det_keys det_keys;

/* What a direct producer's message says about itself. */
typedef struct det_keys_direct {
	char key[DL_APIKEY_LEN + 1];
	char stream[DET_KEYS_STREAM_MAX + 1];
	bool stream_from_header; /* else from the payload's top-level "stream" member */
} det_keys_direct;

/*
 * Reads a message that is not an ingest envelope as a direct producer's raw event: exactly one
 * driftlock-api-key header with a well-formed key, the stream from one driftlock-stream header
 * or else the payload's top-level "stream" string, and a payload that is one JSON value (at most
 * DET_KEYS_RAW_MAX_BYTES, nested at most DET_KEYS_RAW_MAX_DEPTH, valid UTF-8). hdrs may be NULL.
 * Returns 0 and *ret; -ENOENT when there is no driftlock-api-key header (not a direct
 * producer's message: the caller's own reason applies); otherwise -EINVAL (or -EMSGSIZE) with
 * *ret_reason a dead-letter reason code ("invalid_api_key", "missing_stream", "invalid_stream",
 * "malformed_json", "too_large") and a sentence in errbuf that never contains the key. *ret is
 * untouched on failure. Pure; thread-safe.
 */
int det_keys_direct_parse(const rd_kafka_headers_t *hdrs, const void *payload, size_t len,
			  det_keys_direct *ret, const char **ret_reason, char *errbuf,
			  size_t errlen);

typedef struct det_keys_options {
	const void *secret; /* DRIFTLOCK_API_KEY_SECRET, as ingest hashes keys (copied) */
	size_t secret_len;  /* at least DL_APIKEY_SECRET_MIN */
	int64_t ttl_ms;     /* a known key is trusted this long (0 = 10 s, at most 60 s) */
	int64_t negative_ttl_ms; /* an unknown key is refused this long (0 = min(ttl, 5 s)) */
	size_t max_keys;    /* cached keys (0 = 10000); unknown keys use at most a quarter */
	size_t max_lookups; /* distinct keys being looked up at once (0 = 256) */
} det_keys_options;

/* Makes the checker on base (the loop), borrowing pool (the driftlock_detector role, which may
 * execute dl_api_key_lookup: 0012_detector.sql) and registering its metrics in m. Returns 0 and
 * *ret, or -EINVAL (short secret, bad TTL) / -ENOMEM with text in errbuf. Loop thread. */
int det_keys_new(struct event_base *base, dl_pgpool *pool, dl_metrics_registry *m,
		 const det_keys_options *opts, det_keys **ret, char *errbuf, size_t errlen);

/*
 * The org of a key. rc 0 with org_id (lowercase UUID, valid for the call); or, with org_id NULL:
 *   -EINVAL     not a well-formed key (permanent: dead letter "invalid_api_key")
 *   -EACCES     no such key, or revoked (permanent: dead letter "invalid_api_key")
 *   -ENOTCONN, -ECONNRESET, -ETIMEDOUT, -EAGAIN (too many look-ups or the pool queue full),
 *   -ECANCELED (shutting down), -EIO, -ENOMEM: transient, the caller retries the message later
 * A cached answer (and a malformed key) calls cb before det_keys_check returns; otherwise cb
 * runs once, later, on the loop, and concurrent checks of one key share one look-up. key (len
 * bytes, no NUL needed) need not outlive the call and is never logged. Loop thread.
 */
void det_keys_check(det_keys *k, const char *key, size_t len,
		    void (*cb)(int rc, const char *org_id, void *arg), void *arg);

/* Frees the checker; checks still waiting are not called back. Must not be called from one of
 * its callbacks. Loop thread; accepts NULL. */
void det_keys_free(det_keys *k);

#endif /* DL_DETECTOR_KEYS_H */
