/* SPDX-License-Identifier: Apache-2.0 */
/* mtr_usage: live usage hashes in Redis, written with the store's absolute totals, and the ready marker. */
#include "services/metering/mtr_usage.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

/* Script calls per pipeline round trip. */
#define PUBLISH_CHUNK 256

/*
 * KEYS[1] the org's hash; ARGV: period_start_ms, period_end_ms, anomalies, included,
 * over_quota, blocked, updated_ms, ttl_ms. Counts only grow within a period and periods only
 * move forward, so a write that would move the hash back is a late one and is dropped (0).
 */
static const char LUA_PUBLISH[] =
	"local cur = redis.call('HMGET', KEYS[1], 'period_start_ms', 'anomalies')\n"
	"local ps, n = tonumber(cur[1]), tonumber(cur[2])\n"
	"if ps and (ps > tonumber(ARGV[1]) or (ps == tonumber(ARGV[1]) and n and "
	"n > tonumber(ARGV[3]))) then return 0 end\n"
	"redis.call('HSET', KEYS[1], 'period_start_ms', ARGV[1], 'period_end_ms', ARGV[2], "
	"'anomalies', ARGV[3], 'included', ARGV[4], 'over_quota', ARGV[5], 'blocked', ARGV[6], "
	"'updated_ms', ARGV[7])\n"
	"redis.call('PEXPIRE', KEYS[1], ARGV[8])\n"
	"return 1\n";

struct mtr_usage {
	dl_redis *redis;
	dl_metric *m_published;
	dl_metric *m_errors;
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The connection for a pipeline: dl_redis's, reconnected by a PING when it is down. */
static redisContext *usage_context(mtr_usage *u, int *ret_rc, char *errbuf, size_t errlen)
{
	redisContext *ctx = dl_redis_context(u->redis);
	int rc;

	if (ctx && ctx->err == 0)
		return ctx;
	rc = dl_redis_ping(u->redis, errbuf, errlen);
	ctx = dl_redis_context(u->redis);
	if (rc < 0 || !ctx || ctx->err != 0) {
		*ret_rc = rc < 0 ? rc : -ENOTCONN;
		return NULL;
	}
	return ctx;
}

/* Sends orgs[0..n) as one pipeline and reads every reply. */
static int publish_chunk(mtr_usage *u, const mtr_org_usage *orgs, size_t n, int64_t now,
			 char *errbuf, size_t errlen)
{
	char key[sizeof(MTR_USAGE_KEY_PREFIX) + PROTO_ORG_ID_LEN + 1], num[7][24];
	const char *argv[12];
	size_t i, published = 0;
	redisContext *ctx;
	int rc = 0;

	ctx = usage_context(u, &rc, errbuf, errlen);
	if (!ctx)
		return rc;
	for (i = 0; i < n; i++) {
		const mtr_org_usage *o = &orgs[i];

		snprintf(key, sizeof(key), MTR_USAGE_KEY_PREFIX "%s", o->org_id);
		snprintf(num[0], sizeof(num[0]), "%" PRId64, o->period_start_ms);
		snprintf(num[1], sizeof(num[1]), "%" PRId64, o->period_end_ms);
		snprintf(num[2], sizeof(num[2]), "%" PRId64, o->anomalies);
		snprintf(num[3], sizeof(num[3]), "%" PRId64, o->included);
		snprintf(num[4], sizeof(num[4]), "%d", o->blocked ? 1 : 0);
		snprintf(num[5], sizeof(num[5]), "%" PRId64, now);
		snprintf(num[6], sizeof(num[6]), "%lld", (long long)MTR_USAGE_TTL_MS);
		argv[0] = "EVAL";
		argv[1] = LUA_PUBLISH;
		argv[2] = "1";
		argv[3] = key;
		argv[4] = num[0];
		argv[5] = num[1];
		argv[6] = num[2];
		argv[7] = num[3];
		argv[8] = o->over_quota;
		argv[9] = num[4];
		argv[10] = num[5];
		argv[11] = num[6];
		if (redisAppendCommandArgv(ctx, 12, argv, NULL) != REDIS_OK) {
			snprintf(errbuf, errlen, "usage: out of memory");
			return -ENOMEM;
		}
	}
	for (i = 0; i < n; i++) {
		void *r = NULL;
		redisReply *reply;

		if (redisGetReply(ctx, &r) != REDIS_OK || !r) {
			/* The context is now in error: dl_redis replaces it on its next call. */
			snprintf(errbuf, errlen, "usage: Redis connection failed: %s", ctx->errstr);
			return -EIO;
		}
		reply = r;
		if (reply->type == REDIS_REPLY_ERROR) {
			if (rc == 0) {
				snprintf(errbuf, errlen, "usage: Redis refused a write: %s",
					 reply->str);
				rc = -EREMOTEIO;
			}
		} else {
			published++;
		}
		freeReplyObject(reply);
	}
	dl_metric_inc(u->m_published, NULL, (double)published);
	return rc;
}

int mtr_usage_publish(mtr_usage *u, const mtr_org_usage *orgs, size_t n, char *errbuf,
		      size_t errlen)
{
	int64_t now = wall_ms();
	size_t off, k;
	int rc;

	for (off = 0; off < n; off += k) {
		k = n - off < PUBLISH_CHUNK ? n - off : PUBLISH_CHUNK;
		rc = publish_chunk(u, orgs + off, k, now, errbuf, errlen);
		if (rc < 0) {
			dl_metric_inc(u->m_errors, NULL, 1);
			return rc;
		}
	}
	return 0;
}

int mtr_usage_ready(mtr_usage *u, bool *ret_ready, char *errbuf, size_t errlen)
{
	const char *argv[2] = { "EXISTS", MTR_USAGE_READY_KEY };
	redisReply *reply = NULL;
	int rc;

	rc = dl_redis_command_argv(u->redis, 2, argv, NULL, &reply, errbuf, errlen);
	if (rc < 0) {
		dl_metric_inc(u->m_errors, NULL, 1);
		return rc;
	}
	if (reply->type != REDIS_REPLY_INTEGER) {
		freeReplyObject(reply);
		snprintf(errbuf, errlen, "usage: EXISTS got an unexpected reply");
		return -EPROTO;
	}
	*ret_ready = reply->integer > 0;
	freeReplyObject(reply);
	return 0;
}

int mtr_usage_mark_ready(mtr_usage *u, int64_t now_ms, char *errbuf, size_t errlen)
{
	const char *argv[3] = { "SET", MTR_USAGE_READY_KEY, NULL };
	redisReply *reply = NULL;
	char v[24];
	int rc;

	snprintf(v, sizeof(v), "%" PRId64, now_ms);
	argv[2] = v;
	rc = dl_redis_command_argv(u->redis, 3, argv, NULL, &reply, errbuf, errlen);
	if (rc < 0) {
		dl_metric_inc(u->m_errors, NULL, 1);
		return rc;
	}
	freeReplyObject(reply);
	return 0;
}

int mtr_usage_new(dl_redis *r, dl_metrics_registry *m, mtr_usage **ret, char *errbuf,
		  size_t errlen)
{
	mtr_usage *u = calloc(1, sizeof(*u));

	if (!u) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	u->redis = r;
	u->m_published = dl_metrics_counter(m, "driftlock_metering_usage_published_total",
					    "Org usage hashes written to Redis (dl:usage:{org}).",
					    0);
	u->m_errors = dl_metrics_counter(m, "driftlock_metering_usage_errors_total",
					 "Failed live-usage calls to Redis (publish, ready check, "
					 "ready mark).", 0);
	if (!u->m_published || !u->m_errors) {
		free(u);
		snprintf(errbuf, errlen, "cannot register the live usage metrics");
		return -ENOMEM;
	}
	*ret = u;
	return 0;
}

void mtr_usage_free(mtr_usage *u)
{
	free(u);
}
