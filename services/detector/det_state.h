/* SPDX-License-Identifier: Apache-2.0 */
/* det_state: snapshots of a stream's CBAD detector in Redis, so a restart or a rebalance resumes
 * where the stream stopped instead of calibrating again. */
#ifndef DL_DETECTOR_STATE_H
#define DL_DETECTOR_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/dl_metrics.h"
#include "common/dl_redis.h"
#include "proto/proto_topics.h"
#include "services/detector/cbad/cbad.h"

/*
 * What is stored (docs/operations.md, "Detector state in Redis", has the operator's view):
 * - One Redis string per stream, key "dl:det:{<org_id>}:<stream>", written with one SET (so a
 *   reader sees the old snapshot or the new one, never a mix) with an expiry (DET_STATE_TTL_MS
 *   by default): a stream silent for that long calibrates again, and Redis does not keep the
 *   state of streams that are gone.
 * - The value is a 36-byte header, the stream's identity "org_id:stream", then the engine's
 *   own state (cbad_detector_save: versioned, zstd-compressed). Header, big-endian:
 *     0  4  magic "DLDS"
 *     4  4  CRC-32 (zlib) of every byte from offset 8 to the end
 *     8  2  format version (DET_STATE_FORMAT_VERSION)
 *    10  2  identity length n (<= PROTO_STREAM_KEY_MAX)
 *    12  4  partition of driftlock.events.v1 the state was built from
 *    16  8  next offset: the first offset of that partition NOT folded into the state
 *    24  8  saved at, epoch ms
 *    32  4  engine state length m
 *    36  n  identity, then m bytes of engine state
 *   A snapshot is used only when all of it checks out: magic, CRC, a version this build reads,
 *   the identity of the stream asked for (a value copied under another key is refused), the
 *   lengths, and the engine's own checks.
 *
 * How the detector uses it (the delivery rule of docs/architecture.md):
 *   produce the anomalies of events up to offset o-1 -> Kafka acknowledged them -> save the
 *   snapshots of the streams those events touched with next_offset o -> commit o.
 *   After a restore, events of the snapshot's partition with an offset < next_offset are
 *   already in the state (a crash between the save and the commit replays them): skip them
 *   so the detector does not learn them twice; their anomalies were already acknowledged.
 *   When the partition differs (the topic's partition count changed), the offset says nothing
 *   about the new partition: use the state and process every event.
 *
 * Threading: every call is synchronous on the caller's thread (the loop), one round trip per
 * call (save_many: one per DET_STATE_PIPELINE_BYTES of snapshots), bounded by the dl_redis
 * command timeout. A 300 KiB detector takes about a millisecond on loopback (docs/operations.md).
 *
 * Errors (negative errno, a sentence in errbuf that names the stream; never the Redis URL):
 *   -EINVAL     bad arguments (org id, stream name, partition, offset)
 *   -EMSGSIZE   save: the snapshot is larger than the limit; nothing was written
 *   -ENOENT     load: there is no snapshot for the stream
 *   -EBADMSG    load: a value is there but unusable (corrupt, truncated, another stream's,
 *               an unknown format or engine version, over the size limit, not a string):
 *               start the stream afresh; the next save replaces it
 *   -ETIMEDOUT, -ENOTCONN, -EREMOTEIO, -EPROTO: Redis did not do it (dl_redis.h); the state
 *               in Redis is unchanged or unknown, retry later and do not commit
 *   -ENOMEM
 */

#define DET_STATE_FORMAT_VERSION 1
#define DET_STATE_HEADER_BYTES 36
#define DET_STATE_KEY_PREFIX "dl:det:"
/* Longest key: "dl:det:{" org "}:" stream. */
#define DET_STATE_KEY_MAX (sizeof(DET_STATE_KEY_PREFIX) + 1 + PROTO_ORG_ID_LEN + 2 + PROTO_STREAM_MAX)
/* Default largest value (header + engine state) written or read. */
#define DET_STATE_MAX_BYTES (16u << 20)
/* Hard upper bound of the limit (the engine never makes more than 64 MiB raw). */
#define DET_STATE_MAX_BYTES_LIMIT (64u << 20)
/* Default expiry of a snapshot: 30 days. */
#define DET_STATE_TTL_MS (30LL * 24 * 3600 * 1000)
/* save_many sends its SETs in pipelined rounds of about this many bytes. */
#define DET_STATE_PIPELINE_BYTES (8u << 20)

typedef struct det_state det_state;

/* One stream to save in det_state_save_many (all borrowed for the call). */
typedef struct det_state_item {
	const char *org_id, *stream;
	const cbad_detector *d;
	int32_t partition;
	int64_t next_offset;
} det_state_item;

/* Makes a det_state on redis (borrowed: it must outlive s; s uses it from the caller's thread
 * only) and registers its metrics in m (may be NULL: none):
 *   driftlock_detector_snapshot_bytes             histogram, bytes of each snapshot written
 *   driftlock_detector_snapshot_seconds{op}       histogram, save / save_many / load / delete
 *   driftlock_detector_snapshot_saves_total       counter, streams written
 *   driftlock_detector_snapshot_loads_total{result} counter: restored / missing / refused
 *   driftlock_detector_snapshot_failures_total{op,reason} counter, reason: redis / timeout /
 *                                                   too_large / corrupt / engine / nomem
 * Returns 0 and *ret (det_state_free), or -EINVAL / -ENOMEM with text in errbuf; *ret
 * untouched on failure. */
int det_state_new(dl_redis *redis, dl_metrics_registry *m, det_state **ret, char *errbuf,
		  size_t errlen);

/* Changes the size limit of a snapshot (header included; 1 KiB .. DET_STATE_MAX_BYTES_LIMIT)
 * and the expiry (ttl_ms >= 60000, or 0: no expiry). Returns 0 or -EINVAL. */
int det_state_set_limits(det_state *s, size_t max_bytes, int64_t ttl_ms);

/* Writes the snapshot of d (not modified) for (org_id, stream), covering the events of
 * partition up to next_offset - 1. On success the previous snapshot is replaced; on failure
 * it is left as it was (or, after -ETIMEDOUT, possibly replaced). */
int det_state_save(det_state *s, const char *org_id, const char *stream, const cbad_detector *d,
		   int32_t partition, int64_t next_offset, char *errbuf, size_t errlen);

/* Saves n streams at once (at revoke): the snapshots are serialised, then sent as pipelined
 * SETs, one round trip per DET_STATE_PIPELINE_BYTES. Every item that can be written is written
 * even when others fail. Returns 0 only if all n were written; otherwise the first failure's
 * code with errbuf naming that stream and how many failed. A connection that breaks mid-way is
 * re-made and the unanswered SETs are sent again once (SET is idempotent). n == 0 returns 0. */
int det_state_save_many(det_state *s, const det_state_item *items, size_t n, char *errbuf,
			size_t errlen);

/* Restores the detector of (org_id, stream): on 0, *ret is a new detector the caller owns
 * (cbad_detector_free), *ret_partition and *ret_next_offset say what it covers (either may be
 * NULL). -ENOENT when there is none, -EBADMSG when it is unusable (see above); outputs
 * untouched on failure. */
int det_state_load(det_state *s, const char *org_id, const char *stream, cbad_detector **ret,
		   int32_t *ret_partition, int64_t *ret_next_offset, char *errbuf, size_t errlen);

/* Deletes the snapshot of (org_id, stream) (0 also when there was none). */
int det_state_delete(det_state *s, const char *org_id, const char *stream, char *errbuf,
		     size_t errlen);

/* Frees s (not the dl_redis). Accepts NULL. */
void det_state_free(det_state *s);

/* Pure helpers, exposed for tests and tools. */

/* Writes the key of (org_id, stream) into buf (DET_STATE_KEY_MAX bytes always fit). Returns
 * its length, or -EINVAL (invalid org id or stream; text in errbuf). */
int det_state_key(const char *org_id, const char *stream, char *buf, size_t buflen,
		  char *errbuf, size_t errlen);

/* The fields of a snapshot's header. */
typedef struct det_state_header {
	uint16_t version;
	int32_t partition;
	int64_t next_offset;
	int64_t saved_at_ms;
	char identity[PROTO_STREAM_KEY_MAX + 1]; /* "org_id:stream" */
} det_state_header;

/* Builds a snapshot value: header h (version ignored: DET_STATE_FORMAT_VERSION is written)
 * followed by engine state (len bytes). Returns 0 and a malloc'd value in *ret / *ret_len, or
 * -EINVAL (bad header fields) / -EMSGSIZE (longer than max_bytes) / -ENOMEM. */
int det_state_encode(const det_state_header *h, const void *engine, size_t len, size_t max_bytes,
		     void **ret, size_t *ret_len, char *errbuf, size_t errlen);

/* Checks a snapshot value of len bytes: magic, CRC, version, lengths, and (when identity is not
 * NULL) that it belongs to that "org_id:stream". Returns 0 with the header in *ret_h and the
 * engine state's place in *ret_engine / *ret_engine_len (pointing into buf), or -EBADMSG with
 * the reason in errbuf; outputs untouched on failure. */
int det_state_decode(const void *buf, size_t len, const char *identity, det_state_header *ret_h,
		     const void **ret_engine, size_t *ret_engine_len, char *errbuf, size_t errlen);

#endif /* DL_DETECTOR_STATE_H */
