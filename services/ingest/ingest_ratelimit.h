/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_ratelimit: events per second per API key and per org, from the org's plan, shared by
 * every ingest replica through Redis. */
#ifndef DL_INGEST_RATELIMIT_H
#define DL_INGEST_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "common/dl_metrics.h"
#include "services/ingest/ingest.h"

/*
 * How it works (docs/api.md, "Rate limits", has the user's view):
 * - Two token buckets in Redis per request: the API key's and the org's, each refilling at the
 *   plan's ingest_events_per_second up to ingest_burst (one key may use the org's whole budget).
 *   One Lua script takes tokens from both atomically, with Redis's clock.
 * - Leases: a replica does not ask Redis per request. It takes a lease of tokens (the events of
 *   the request plus lease_ms worth of the rate) and spends it locally for up to one second;
 *   the call is asynchronous (hiredis on the loop), requests of that key wait for it in order.
 *   So Redis sees about 1000 / lease_ms calls per second per busy key and replica, whatever
 *   the request rate. Precision: while Redis answers, the events admitted by all replicas
 *   together never exceed the shared bucket (tokens are taken before they are spent); a client
 *   may be refused early by at most the tokens other replicas hold unspent (R * lease), and
 *   unspent lease tokens lapse after a second.
 * - Refusals are decided locally when the bucket levels Redis last reported, refilled at the
 *   plan's rate since, cannot cover the request: that estimate is an upper bound (other
 *   replicas only take tokens), so a local refusal is never wrong, and a client over its limit
 *   costs Redis nothing.
 * - A batch larger than the burst is admitted when the bucket is full, and the bucket goes
 *   into debt by the difference: the long-run rate holds.
 * - Redis unreachable, or no answer within timeout_ms: fail open with a local bucket per key
 *   (the plan's rate, per replica), metric driftlock_ingest_ratelimit_degraded = 1, one log
 *   line per change, and a reconnect with backoff.
 */

typedef struct ingest_ratelimit_options {
	const char *redis_url; /* redis://[:password@]host:port[/db]; copied */
	int64_t lease_ms;      /* tokens taken per Redis call = rate * lease_ms / 1000 (0 = 100) */
	int64_t timeout_ms;    /* Redis reply deadline before failing open (0 = 250) */
	size_t max_keys;       /* API keys tracked locally; the idle are evicted (0 = 10000) */
} ingest_ratelimit_options;

/* Makes the limiter on base and starts connecting to Redis (a failed connection is not an
 * error: it fails open and retries). Returns 0 and *ret, or -EINVAL (bad URL or option) /
 * -ENOMEM with text in errbuf; *ret untouched on failure. Loop thread. */
int ingest_ratelimit_new(struct event_base *base, dl_metrics_registry *metrics,
			 const ingest_ratelimit_options *opts, char *errbuf, size_t errlen,
			 ingest_ratelimit **ret);

/* Closes the Redis connection and frees rl; requests still waiting for Redis are answered
 * 503 at once. Accepts NULL. Loop thread, outside any callback of rl. */
void ingest_ratelimit_free(ingest_ratelimit *rl);

typedef void (*ingest_rl_cb)(dl_http_req *req, void *arg);
/* Releases arg when the request was answered without cb (refused, or the limiter stopping). */
typedef void (*ingest_rl_release_fn)(void *arg);

/* Takes cost events from who's key and org budgets. Sets X-RateLimit-Limit and
 * X-RateLimit-Remaining on req. Allowed: calls cb (at once or later on the loop). Refused:
 * replies 429 rate_limited with Retry-After and a JSON body naming the limit (or 503 when out
 * of memory or stopping), never calls cb, and calls release(arg) after the reply (release may
 * be NULL). Exactly one of cb and release is called. ctx->rl NULL (no limiter configured)
 * allows everything. */
void ingest_ratelimit_take(ingest_ctx *ctx, dl_http_req *req, const ingest_principal *who,
			   int64_t cost, ingest_rl_cb cb, ingest_rl_release_fn release, void *arg);

/* The reply to a command sent with ingest_ratelimit_redis_command: the server's reply (may be
 * of type REDIS_REPLY_ERROR; owned by hiredis, valid during the call), or NULL when there was
 * none (connection lost, no answer within the limiter's timeout_ms, or the limiter freed). */
struct redisReply;
typedef void (*ingest_rl_redis_fn)(const struct redisReply *reply, void *arg);

/* Sends one command (argc C-string arguments, copied) on the limiter's Redis connection, for
 * the other readers of Redis in ingest (ingest_usage): one connection per process. fn is called
 * exactly once, later on the loop, unless this fails. Returns 0, or -ENOTCONN (Redis is down or
 * was failing in the last second: nothing sent, fn never called) / -ENOMEM / -EINVAL (rl NULL).
 * Loop thread. */
int ingest_ratelimit_redis_command(ingest_ratelimit *rl, int argc, const char **argv,
				   ingest_rl_redis_fn fn, void *arg);

#endif /* DL_INGEST_RATELIMIT_H */
