/* SPDX-License-Identifier: Apache-2.0 */
/* det_state: CBAD detector snapshots in Redis, one checked, versioned value per stream (see the header). */
#include "services/detector/det_state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <zlib.h>

#include "common/dl_time.h"

#define STATE_MAGIC "DLDS"
#define STATE_MIN_LIMIT 1024
#define STATE_MIN_TTL_MS 60000

struct det_state {
	dl_redis *redis; /* borrowed */
	size_t max_bytes;
	int64_t ttl_ms;
	dl_metric *m_bytes;
	dl_metric *m_seconds;
	dl_metric *m_saves;
	dl_metric *m_loads;
	dl_metric *m_failures;
};

static int state_fail(char *errbuf, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int state_fail(char *errbuf, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (errbuf != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(errbuf, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static void put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* CRC-32 of len bytes, fed to zlib in pieces its uInt length can hold. */
static uint32_t state_crc(const uint8_t *p, size_t len)
{
	uLong crc = crc32(0L, Z_NULL, 0);

	while (len > 0) {
		uInt part = len > (1u << 30) ? (1u << 30) : (uInt)len;

		crc = crc32(crc, p, part);
		p += part;
		len -= part;
	}
	return (uint32_t)crc;
}

int det_state_key(const char *org_id, const char *stream, char *buf, size_t buflen,
		  char *errbuf, size_t errlen)
{
	char why[128] = "";
	int n;

	if (org_id == NULL ||
	    proto_topics_check_org_id(org_id, strlen(org_id), why, sizeof(why)) < 0)
		return state_fail(errbuf, errlen, -EINVAL, "state: org id %s", why[0] ? why : "missing");
	if (stream == NULL ||
	    proto_topics_check_stream(stream, strlen(stream), why, sizeof(why)) < 0)
		return state_fail(errbuf, errlen, -EINVAL, "state: stream %s", why[0] ? why : "missing");
	n = snprintf(buf, buflen, DET_STATE_KEY_PREFIX "{%s}:%s", org_id, stream);
	if (n < 0 || (size_t)n >= buflen)
		return state_fail(errbuf, errlen, -EINVAL, "state: key buffer too small");
	return n;
}

int det_state_encode(const det_state_header *h, const void *engine, size_t len, size_t max_bytes,
		     void **ret, size_t *ret_len, char *errbuf, size_t errlen)
{
	size_t idlen, total;
	uint8_t *out;

	if (h == NULL || (engine == NULL && len > 0))
		return state_fail(errbuf, errlen, -EINVAL, "state: nothing to encode");
	idlen = strnlen(h->identity, sizeof(h->identity));
	if (idlen == 0 || idlen > PROTO_STREAM_KEY_MAX)
		return state_fail(errbuf, errlen, -EINVAL, "state: identity must be 1-%d bytes",
				  PROTO_STREAM_KEY_MAX);
	if (h->partition < 0 || h->next_offset < 0)
		return state_fail(errbuf, errlen, -EINVAL,
				  "state: partition and offset must not be negative");
	if (len == 0 || len > UINT32_MAX)
		return state_fail(errbuf, errlen, -EINVAL, "state: engine state of %zu bytes", len);
	total = DET_STATE_HEADER_BYTES + idlen + len;
	if (total > max_bytes)
		return state_fail(errbuf, errlen, -EMSGSIZE,
				  "state: snapshot of %zu bytes is over the limit of %zu", total,
				  max_bytes);
	out = malloc(total);
	if (out == NULL)
		return state_fail(errbuf, errlen, -ENOMEM, "state: out of memory");
	memcpy(out, STATE_MAGIC, 4);
	put_u16(out + 8, DET_STATE_FORMAT_VERSION);
	put_u16(out + 10, (uint16_t)idlen);
	put_u32(out + 12, (uint32_t)h->partition);
	put_u64(out + 16, (uint64_t)h->next_offset);
	put_u64(out + 24, (uint64_t)h->saved_at_ms);
	put_u32(out + 32, (uint32_t)len);
	memcpy(out + DET_STATE_HEADER_BYTES, h->identity, idlen);
	memcpy(out + DET_STATE_HEADER_BYTES + idlen, engine, len);
	put_u32(out + 4, state_crc(out + 8, total - 8));
	*ret = out;
	*ret_len = total;
	return 0;
}

int det_state_decode(const void *buf, size_t len, const char *identity, det_state_header *ret_h,
		     const void **ret_engine, size_t *ret_engine_len, char *errbuf, size_t errlen)
{
	const uint8_t *p = buf;
	det_state_header h;
	uint16_t version, idlen;
	uint32_t elen;
	int64_t partition, offset;

	if (p == NULL || len < DET_STATE_HEADER_BYTES || memcmp(p, STATE_MAGIC, 4) != 0)
		return state_fail(errbuf, errlen, -EBADMSG, "state: not a detector snapshot");
	version = get_u16(p + 8);
	/* The version is read before the CRC so that a snapshot of another format (whose CRC may
	 * cover other bytes) is named for what it is. */
	if (version != DET_STATE_FORMAT_VERSION)
		return state_fail(errbuf, errlen, -EBADMSG,
				  "state: snapshot format version %u, this build reads %u",
				  (unsigned)version, (unsigned)DET_STATE_FORMAT_VERSION);
	if (get_u32(p + 4) != state_crc(p + 8, len - 8))
		return state_fail(errbuf, errlen, -EBADMSG,
				  "state: snapshot corrupt or truncated (CRC mismatch)");
	idlen = get_u16(p + 10);
	elen = get_u32(p + 32);
	if (idlen == 0 || idlen > PROTO_STREAM_KEY_MAX || elen == 0 ||
	    (uint64_t)DET_STATE_HEADER_BYTES + idlen + elen != len)
		return state_fail(errbuf, errlen, -EBADMSG, "state: snapshot lengths do not add up");
	partition = (int32_t)get_u32(p + 12);
	offset = (int64_t)get_u64(p + 16);
	if (partition < 0 || offset < 0)
		return state_fail(errbuf, errlen, -EBADMSG,
				  "state: snapshot has a negative partition or offset");
	memset(&h, 0, sizeof(h));
	memcpy(h.identity, p + DET_STATE_HEADER_BYTES, idlen);
	if (memchr(h.identity, '\0', idlen) != NULL)
		return state_fail(errbuf, errlen, -EBADMSG, "state: snapshot identity is not text");
	if (identity != NULL && strcmp(identity, h.identity) != 0)
		return state_fail(errbuf, errlen, -EBADMSG,
				  "state: snapshot belongs to another stream (%s)", h.identity);
	h.version = version;
	h.partition = (int32_t)partition;
	h.next_offset = offset;
	h.saved_at_ms = (int64_t)get_u64(p + 24);
	*ret_h = h;
	*ret_engine = p + DET_STATE_HEADER_BYTES + idlen;
	*ret_engine_len = elen;
	return 0;
}

int det_state_new(dl_redis *redis, dl_metrics_registry *m, det_state **ret, char *errbuf,
		  size_t errlen)
{
	static const double byte_buckets[] = { 1024, 4096, 16384, 65536, 262144, 1048576,
					       4194304, 16777216, 67108864 };
	static const double second_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
						 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 };
	det_state *s;

	if (redis == NULL || ret == NULL)
		return state_fail(errbuf, errlen, -EINVAL, "state: a Redis connection is required");
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return state_fail(errbuf, errlen, -ENOMEM, "state: out of memory");
	s->redis = redis;
	s->max_bytes = DET_STATE_MAX_BYTES;
	s->ttl_ms = DET_STATE_TTL_MS;
	if (m != NULL) {
		s->m_bytes = dl_metrics_histogram(m, "driftlock_detector_snapshot_bytes",
			"Size of each stream snapshot written to Redis, header included.",
			byte_buckets, sizeof(byte_buckets) / sizeof(byte_buckets[0]), 0);
		s->m_seconds = dl_metrics_histogram(m, "driftlock_detector_snapshot_seconds",
			"Time of one snapshot call, serialisation and Redis round trips included.",
			second_buckets, sizeof(second_buckets) / sizeof(second_buckets[0]), 1, "op");
		s->m_saves = dl_metrics_counter(m, "driftlock_detector_snapshot_saves_total",
			"Stream snapshots written to Redis.", 0);
		s->m_loads = dl_metrics_counter(m, "driftlock_detector_snapshot_loads_total",
			"Snapshot restores by result: restored, missing (none stored), refused "
			"(unusable: corrupt, another stream's, unknown version, too large).", 1,
			"result");
		s->m_failures = dl_metrics_counter(m, "driftlock_detector_snapshot_failures_total",
			"Snapshot operations that failed, by operation and reason.", 2, "op",
			"reason");
		if (s->m_bytes == NULL || s->m_seconds == NULL || s->m_saves == NULL ||
		    s->m_loads == NULL || s->m_failures == NULL) {
			free(s);
			return state_fail(errbuf, errlen, -ENOMEM,
					  "state: cannot register the snapshot metrics");
		}
	}
	*ret = s;
	return 0;
}

int det_state_set_limits(det_state *s, size_t max_bytes, int64_t ttl_ms)
{
	if (s == NULL || max_bytes < STATE_MIN_LIMIT || max_bytes > DET_STATE_MAX_BYTES_LIMIT ||
	    (ttl_ms != 0 && ttl_ms < STATE_MIN_TTL_MS))
		return -EINVAL;
	s->max_bytes = max_bytes;
	s->ttl_ms = ttl_ms;
	return 0;
}

void det_state_free(det_state *s)
{
	free(s);
}

static const char *state_reason(int rc)
{
	switch (rc) {
	case -ETIMEDOUT:
		return "timeout";
	case -EMSGSIZE:
		return "too_large";
	case -EBADMSG:
		return "corrupt";
	case -ENOMEM:
		return "nomem";
	case -EINVAL:
		return "invalid";
	default:
		return "redis";
	}
}

static void state_count_failure(det_state *s, const char *op, const char *reason)
{
	const char *labels[2] = { op, reason };

	dl_metric_inc(s->m_failures, labels, 1);
}

static void state_observe_seconds(det_state *s, const char *op, int64_t start_ns)
{
	const char *labels[1] = { op };

	dl_metric_observe(s->m_seconds, labels, (double)(dl_time_mono_ns() - start_ns) / 1e9);
}

/* A ready-to-send SET: key and value, both owned. */
typedef struct state_set {
	char key[DET_STATE_KEY_MAX];
	size_t keylen;
	void *val;
	size_t vallen;
	int rc; /* 1: not answered yet; 0 written; < 0 failed */
} state_set;

/* Serialises d as the snapshot of (org_id, stream) into *set (set->val owned by the caller on
 * success). *ret_reason is the failure's metric label; an engine failure keeps its code. */
static int state_prepare(det_state *s, const char *org_id, const char *stream,
			 const cbad_detector *d, int32_t partition, int64_t next_offset,
			 state_set *set, const char **ret_reason, char *errbuf, size_t errlen)
{
	det_state_header h;
	void *engine = NULL;
	size_t elen = 0, idlen;
	char why[256] = "";
	int rc;

	*ret_reason = "invalid";
	rc = det_state_key(org_id, stream, set->key, sizeof(set->key), why, sizeof(why));
	if (rc < 0)
		/* The names are the caller's, maybe a client's: quoted, and cut short. */
		return state_fail(errbuf, errlen, rc, "state: \"%.40s:%.130s\": %s",
				  org_id ? org_id : "", stream ? stream : "", why);
	set->keylen = (size_t)rc;
	if (d == NULL || partition < 0 || next_offset < 0)
		return state_fail(errbuf, errlen, -EINVAL,
				  "state: %s:%s: a detector, a partition and an offset >= 0 are "
				  "required", org_id, stream);
	memset(&h, 0, sizeof(h));
	if (proto_topics_stream_key(org_id, stream, h.identity, sizeof(h.identity), &idlen, NULL,
				    0) < 0)
		return state_fail(errbuf, errlen, -EINVAL, "state: %s:%s: bad identity", org_id,
				  stream);
	h.partition = partition;
	h.next_offset = next_offset;
	h.saved_at_ms = dl_time_now_ms();
	rc = cbad_detector_save(d, &engine, &elen, why, sizeof(why));
	if (rc < 0) {
		*ret_reason = rc == -ENOMEM ? "nomem" : "engine";
		return state_fail(errbuf, errlen, rc, "state: %s:%s: engine save failed: %s",
				  org_id, stream, why);
	}
	rc = det_state_encode(&h, engine, elen, s->max_bytes, &set->val, &set->vallen, why,
			      sizeof(why));
	free(engine);
	if (rc < 0) {
		*ret_reason = state_reason(rc);
		return state_fail(errbuf, errlen, rc, "state: %s:%s: %s", org_id, stream, why);
	}
	return 0;
}

/* The SET command of set: SET key value [PX ttl]. */
static int state_set_argv(const det_state *s, const state_set *set, const char **argv,
			  size_t *lens, char *ttl, size_t ttllen)
{
	int argc = 3;

	argv[0] = "SET";
	lens[0] = 3;
	argv[1] = set->key;
	lens[1] = set->keylen;
	argv[2] = set->val;
	lens[2] = set->vallen;
	if (s->ttl_ms > 0) {
		snprintf(ttl, ttllen, "%" PRId64, s->ttl_ms);
		argv[3] = "PX";
		lens[3] = 2;
		argv[4] = ttl;
		lens[4] = strlen(ttl);
		argc = 5;
	}
	return argc;
}

int det_state_save(det_state *s, const char *org_id, const char *stream, const cbad_detector *d,
		   int32_t partition, int64_t next_offset, char *errbuf, size_t errlen)
{
	int64_t start = dl_time_mono_ns();
	state_set set = { .rc = 1 };
	const char *argv[5], *reason = "invalid";
	size_t lens[5];
	char ttl[32], why[256] = "";
	redisReply *reply = NULL;
	int rc, argc;

	if (s == NULL)
		return state_fail(errbuf, errlen, -EINVAL, "state: no det_state");
	rc = state_prepare(s, org_id, stream, d, partition, next_offset, &set, &reason, errbuf,
			   errlen);
	if (rc < 0) {
		state_count_failure(s, "save", reason);
		return rc;
	}
	argc = state_set_argv(s, &set, argv, lens, ttl, sizeof(ttl));
	rc = dl_redis_command_argv(s->redis, argc, argv, lens, &reply, why, sizeof(why));
	if (rc < 0) {
		state_count_failure(s, "save", state_reason(rc));
		state_fail(errbuf, errlen, rc, "state: %s:%s: %s", org_id, stream, why);
		goto out_free_val;
	}
	freeReplyObject(reply);
	dl_metric_observe(s->m_bytes, NULL, (double)set.vallen);
	dl_metric_inc(s->m_saves, NULL, 1);
	state_observe_seconds(s, "save", start);
out_free_val:
	free(set.val);
	return rc;
}

/* The hiredis context of s's connection, connected (dl_redis_ping re-makes a broken one).
 * NULL with errbuf set when Redis cannot be reached. */
static redisContext *state_context(det_state *s, int *ret_rc, char *errbuf, size_t errlen)
{
	redisContext *ctx = dl_redis_context(s->redis);
	int rc;

	if (ctx != NULL && ctx->err == 0)
		return ctx;
	rc = dl_redis_ping(s->redis, errbuf, errlen);
	ctx = dl_redis_context(s->redis);
	if (rc < 0 || ctx == NULL || ctx->err != 0) {
		*ret_rc = rc < 0 ? rc : -ENOTCONN;
		return NULL;
	}
	return ctx;
}

/*
 * Sends the unanswered SETs of sets[0..n) pipelined and reads their replies in order. On a
 * broken connection it is re-made once and what was not answered is sent again (the SETs are
 * idempotent); after a timeout nothing is resent (Redis may still apply them). Each set's rc
 * ends 0 or negative.
 */
static void state_pipeline(det_state *s, state_set *sets, size_t n, char *errbuf, size_t errlen)
{
	const char *argv[5];
	size_t lens[5];
	char ttl[32];
	bool retried = false;
	int rc = 0;

	for (;;) {
		redisContext *ctx;
		int err, saved_errno;
		size_t i;

		ctx = state_context(s, &rc, errbuf, errlen);
		if (ctx == NULL)
			goto out_fail_rest;
		for (i = 0; i < n; i++) {
			int argc;

			if (sets[i].rc != 1)
				continue;
			argc = state_set_argv(s, &sets[i], argv, lens, ttl, sizeof(ttl));
			if (redisAppendCommandArgv(ctx, argc, argv, lens) != REDIS_OK) {
				rc = -ENOMEM;
				state_fail(errbuf, errlen, rc, "state: out of memory");
				goto out_fail_rest;
			}
		}
		for (i = 0; i < n; i++) {
			void *r = NULL;
			redisReply *reply;

			if (sets[i].rc != 1)
				continue;
			errno = 0;
			if (redisGetReply(ctx, &r) != REDIS_OK || r == NULL)
				break;
			reply = r;
			if (reply->type == REDIS_REPLY_ERROR) {
				sets[i].rc = -EREMOTEIO;
				state_fail(errbuf, errlen, -EREMOTEIO, "%s", reply->str);
			} else {
				sets[i].rc = 0;
			}
			freeReplyObject(reply);
		}
		if (i == n)
			return;
		/* The context is unusable now; dl_redis re-makes it at its next command. */
		saved_errno = errno;
		err = ctx->err;
		state_fail(errbuf, errlen, -ENOTCONN, "redis: SET: %s", ctx->errstr);
		if (err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
					    saved_errno == ETIMEDOUT)) {
			rc = -ETIMEDOUT;
			state_fail(errbuf, errlen, rc, "redis: SET: no reply within the command "
				   "timeout");
			goto out_fail_rest;
		}
		rc = err == REDIS_ERR_OOM ? -ENOMEM : err == REDIS_ERR_PROTOCOL ? -EPROTO : -ENOTCONN;
		if (retried || rc != -ENOTCONN)
			goto out_fail_rest;
		retried = true;
	}
out_fail_rest:
	for (size_t i = 0; i < n; i++)
		if (sets[i].rc == 1)
			sets[i].rc = rc;
}

int det_state_save_many(det_state *s, const det_state_item *items, size_t n, char *errbuf,
			size_t errlen)
{
	int64_t start = dl_time_mono_ns();
	state_set *sets;
	size_t done = 0, nfailed = 0;
	int first_rc = 0;
	char first_err[512] = "", why[512];

	if (s == NULL || (items == NULL && n > 0))
		return state_fail(errbuf, errlen, -EINVAL, "state: nothing to save");
	if (n == 0)
		return 0;
	sets = calloc(n, sizeof(*sets));
	if (sets == NULL)
		return state_fail(errbuf, errlen, -ENOMEM, "state: out of memory");
	while (done < n) {
		size_t begin = done, bytes = 0;

		/* One round: serialise until about DET_STATE_PIPELINE_BYTES are ready. */
		while (done < n && (bytes < DET_STATE_PIPELINE_BYTES || done == begin)) {
			const det_state_item *it = &items[done];
			state_set *set = &sets[done];
			const char *reason = "invalid";
			int rc;

			why[0] = '\0';
			rc = state_prepare(s, it->org_id, it->stream, it->d, it->partition,
					   it->next_offset, set, &reason, why, sizeof(why));
			if (rc < 0) {
				set->rc = rc;
				state_count_failure(s, "save_many", reason);
				if (first_rc == 0) {
					first_rc = rc;
					snprintf(first_err, sizeof(first_err), "%s", why);
				}
			} else {
				set->rc = 1;
				bytes += set->vallen;
			}
			done++;
		}
		why[0] = '\0';
		state_pipeline(s, sets + begin, done - begin, why, sizeof(why));
		for (size_t i = begin; i < done; i++) {
			free(sets[i].val);
			sets[i].val = NULL;
			if (sets[i].rc == 0) {
				dl_metric_observe(s->m_bytes, NULL, (double)sets[i].vallen);
				dl_metric_inc(s->m_saves, NULL, 1);
				continue;
			}
			nfailed++;
			if (sets[i].vallen == 0)
				continue; /* not prepared: counted and named above */
			state_count_failure(s, "save_many", state_reason(sets[i].rc));
			if (first_rc == 0) {
				first_rc = sets[i].rc;
				snprintf(first_err, sizeof(first_err), "state: %s:%s: %s",
					 items[i].org_id, items[i].stream, why[0] ? why : "failed");
			}
		}
	}
	free(sets);
	state_observe_seconds(s, "save_many", start);
	if (first_rc < 0)
		return state_fail(errbuf, errlen, first_rc, "%s (%zu of %zu not written)",
				  first_err, nfailed, n);
	return 0;
}

int det_state_load(det_state *s, const char *org_id, const char *stream, cbad_detector **ret,
		   int32_t *ret_partition, int64_t *ret_next_offset, char *errbuf, size_t errlen)
{
	int64_t start = dl_time_mono_ns();
	char key[DET_STATE_KEY_MAX], identity[PROTO_STREAM_KEY_MAX + 1], end[32], why[256] = "";
	const char *argv[4] = { "GETRANGE", key, "0", end };
	const char *result = "refused";
	redisReply *reply = NULL;
	det_state_header h;
	const void *engine;
	size_t elen;
	cbad_detector *d = NULL;
	int rc;

	if (s == NULL || ret == NULL)
		return state_fail(errbuf, errlen, -EINVAL, "state: nothing to load into");
	rc = det_state_key(org_id, stream, key, sizeof(key), errbuf, errlen);
	if (rc < 0)
		return rc;
	snprintf(identity, sizeof(identity), "%s:%s", org_id, stream);
	/* GETRANGE reads at most max_bytes + 1 bytes: a value over the limit is seen as such
	 * without transferring it. A missing key reads as "". */
	snprintf(end, sizeof(end), "%zu", s->max_bytes);
	rc = dl_redis_command_argv(s->redis, 4, argv, NULL, &reply, why, sizeof(why));
	if (rc == -EREMOTEIO && strncmp(why, "WRONGTYPE", 9) == 0) {
		rc = state_fail(errbuf, errlen, -EBADMSG, "state: %s: the key holds no snapshot "
				"(not a string)", identity);
		goto out_count;
	}
	if (rc < 0) {
		state_count_failure(s, "load", state_reason(rc));
		return state_fail(errbuf, errlen, rc, "state: %s: %s", identity, why);
	}
	if (reply->type != REDIS_REPLY_STRING) {
		rc = state_fail(errbuf, errlen, -EPROTO, "state: %s: unexpected GETRANGE reply",
				identity);
		state_count_failure(s, "load", "redis");
		goto out_free_reply;
	}
	if (reply->len == 0) {
		result = "missing";
		rc = state_fail(errbuf, errlen, -ENOENT, "state: %s: no snapshot", identity);
		goto out_count;
	}
	if (reply->len > s->max_bytes) {
		rc = state_fail(errbuf, errlen, -EBADMSG,
				"state: %s: snapshot over the limit of %zu bytes", identity,
				s->max_bytes);
		goto out_count;
	}
	rc = det_state_decode(reply->str, reply->len, identity, &h, &engine, &elen, why,
			      sizeof(why));
	if (rc < 0) {
		state_fail(errbuf, errlen, rc, "state: %s: %s", identity, why);
		goto out_count;
	}
	rc = cbad_detector_load(engine, elen, &d, why, sizeof(why));
	if (rc == -ENOMEM) {
		state_count_failure(s, "load", "nomem");
		state_fail(errbuf, errlen, rc, "state: %s: out of memory", identity);
		goto out_free_reply;
	}
	if (rc < 0) {
		rc = state_fail(errbuf, errlen, -EBADMSG, "state: %s: the engine refused it: %s",
				identity, why);
		goto out_count;
	}
	*ret = d;
	if (ret_partition != NULL)
		*ret_partition = h.partition;
	if (ret_next_offset != NULL)
		*ret_next_offset = h.next_offset;
	result = "restored";
	state_observe_seconds(s, "load", start);
out_count:
	dl_metric_inc(s->m_loads, &result, 1);
	if (rc == -EBADMSG)
		state_count_failure(s, "load", "corrupt");
out_free_reply:
	freeReplyObject(reply);
	return rc;
}

int det_state_delete(det_state *s, const char *org_id, const char *stream, char *errbuf,
		     size_t errlen)
{
	int64_t start = dl_time_mono_ns();
	char key[DET_STATE_KEY_MAX], why[256] = "";
	const char *argv[2] = { "DEL", key };
	redisReply *reply = NULL;
	int rc;

	if (s == NULL)
		return state_fail(errbuf, errlen, -EINVAL, "state: no det_state");
	rc = det_state_key(org_id, stream, key, sizeof(key), errbuf, errlen);
	if (rc < 0)
		return rc;
	rc = dl_redis_command_argv(s->redis, 2, argv, NULL, &reply, why, sizeof(why));
	if (rc < 0) {
		state_count_failure(s, "delete", state_reason(rc));
		return state_fail(errbuf, errlen, rc, "state: %s:%s: %s", org_id, stream, why);
	}
	freeReplyObject(reply);
	state_observe_seconds(s, "delete", start);
	return 0;
}
