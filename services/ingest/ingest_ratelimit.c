/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_ratelimit: token buckets per API key and per org in Redis, spent through local leases (see the header). */
#include "services/ingest/ingest_ratelimit.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "common/dl_http.h"
#include "common/dl_id.h"
#include "common/dl_log.h"
#include "common/dl_redis.h"

#define LEASE_LIFE_MS 1000     /* unspent lease tokens lapse after this */
#define MAX_WAITERS 1024       /* requests of one key waiting for Redis; more get 429 */
#define TICK_MS 50             /* deadline check of the call in flight */
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 5000

/* KEYS[1] the key's bucket, KEYS[2] the org's; ARGV key rate, key burst, org rate, org burst,
 * need, want. Grants want (or what both buckets hold, at least need) when both hold need
 * (or are full, for a request larger than the burst, which then goes into debt). Returns
 * {granted, key tokens left, org tokens left}. */
static const char LUA_TAKE[] =
	"local function level(k, rate, burst, now)\n"
	"  local v = redis.call('HMGET', k, 't', 'ts')\n"
	"  local tok, ts = tonumber(v[1]), tonumber(v[2])\n"
	"  if not tok or not ts then return burst end\n"
	"  local el = now - ts\n"
	"  if el < 0 then el = 0 end\n"
	"  return math.min(burst, tok + el * rate / 1000)\n"
	"end\n"
	"local tm = redis.call('TIME')\n"
	"local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
	"local kr, kb = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
	"local orr, ob = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
	"local need, want = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
	"local kt = level(KEYS[1], kr, kb, now)\n"
	"local ot = level(KEYS[2], orr, ob, now)\n"
	"local grant = 0\n"
	"if kt >= math.min(need, kb) and ot >= math.min(need, ob) then\n"
	"  grant = math.max(need, math.min(want, math.floor(math.min(kt, ot))))\n"
	"  kt = kt - grant\n"
	"  ot = ot - grant\n"
	"  redis.call('HSET', KEYS[1], 't', tostring(kt), 'ts', tostring(now))\n"
	"  redis.call('PEXPIRE', KEYS[1], math.ceil((kb - kt) * 1000 / kr) + 1000)\n"
	"  redis.call('HSET', KEYS[2], 't', tostring(ot), 'ts', tostring(now))\n"
	"  redis.call('PEXPIRE', KEYS[2], math.ceil((ob - ot) * 1000 / orr) + 1000)\n"
	"end\n"
	"return {grant, math.floor(kt), math.floor(ot)}\n";

typedef struct rl_waiter {
	dl_http_req *req;
	int64_t cost;
	ingest_rl_cb cb;
	ingest_rl_release_fn release;
	void *arg;
	struct rl_waiter *next;
} rl_waiter;

typedef struct rl_key rl_key;

/* One script call in flight; calls are answered in the order sent (one connection). */
typedef struct rl_call {
	ingest_ratelimit *rl; /* NULL once rl is gone */
	rl_key *k;            /* NULL once the key entry is gone */
	int64_t need, want;
	int64_t sent_ms;
	bool retried;         /* sent again with EVAL after NOSCRIPT */
	ingest_rl_redis_fn fn; /* a command of another module (ingest_ratelimit_redis_command) */
	void *fn_arg;
	struct rl_call *next;
} rl_call;

struct rl_key {
	char key_id[37];
	char org_id[37];
	int64_t key_rate, key_burst, org_rate, org_burst;
	int64_t lease, lease_until_ms;
	/* Bucket levels Redis reported at est_ms: upper bounds of the truth since. */
	bool est_known;
	int64_t est_key, est_org, est_ms;
	/* The fail-open bucket, used while Redis is unreachable. */
	bool fb_known;
	double fb_tokens;
	int64_t fb_ms;
	rl_call *call; /* in flight, or NULL */
	rl_waiter *head, *tail;
	size_t nwaiters;
	rl_key *chain;
	rl_key *lru_prev, *lru_next;
};

struct ingest_ratelimit {
	struct event_base *base;
	dl_redis_url url;
	int64_t lease_ms, timeout_ms;
	size_t max_keys;
	char sha[41];
	redisAsyncContext *ac; /* NULL while down */
	bool up;               /* connected (and AUTH/SELECT queued before anything else) */
	bool degraded;         /* the last state reported (log and gauge) */
	int64_t failed_until_ms; /* after a failed call, fail open until then */
	int64_t backoff_ms;
	struct event *reconnect_timer;
	struct event *tick;
	int64_t last_tick_ms;
	rl_call *calls_head, *calls_tail;
	rl_key **buckets;
	size_t mask, nkeys;
	rl_key *lru_head, *lru_tail;
	dl_metric *m_decisions;   /* {result, path} */
	dl_metric *m_redis_calls; /* {result} */
	dl_metric *m_degraded;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void decision(ingest_ratelimit *rl, const char *result, const char *path)
{
	const char *lv[2] = { result, path };

	dl_metric_inc(rl->m_decisions, lv, 1);
}

static void redis_result(ingest_ratelimit *rl, const char *result)
{
	const char *lv[1] = { result };

	dl_metric_inc(rl->m_redis_calls, lv, 1);
}

static void set_degraded(ingest_ratelimit *rl, bool degraded, const char *why)
{
	if (rl->degraded == degraded)
		return;
	rl->degraded = degraded;
	dl_metric_set(rl->m_degraded, NULL, degraded ? 1 : 0);
	if (degraded)
		dl_log_warn("rate limits fail open: Redis is unavailable, each replica limits each "
			    "key to its plan's rate on its own",
			    "reason", why);
	else
		dl_log_info("rate limits shared through Redis again");
}

/* ---------------------------------------------------------------- key table */

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a: the key ids are server-made uuids */

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ULL;
	return h;
}

static rl_key **key_slot(ingest_ratelimit *rl, const char *key_id)
{
	rl_key **pp = &rl->buckets[str_hash(key_id) & rl->mask];

	while (*pp && strcmp((*pp)->key_id, key_id) != 0)
		pp = &(*pp)->chain;
	return pp;
}

static void lru_unlink(ingest_ratelimit *rl, rl_key *k)
{
	if (k->lru_prev)
		k->lru_prev->lru_next = k->lru_next;
	else
		rl->lru_head = k->lru_next;
	if (k->lru_next)
		k->lru_next->lru_prev = k->lru_prev;
	else
		rl->lru_tail = k->lru_prev;
	k->lru_prev = k->lru_next = NULL;
}

static void lru_front(ingest_ratelimit *rl, rl_key *k)
{
	k->lru_next = rl->lru_head;
	if (rl->lru_head)
		rl->lru_head->lru_prev = k;
	rl->lru_head = k;
	if (!rl->lru_tail)
		rl->lru_tail = k;
}

static void key_free(ingest_ratelimit *rl, rl_key *k)
{
	rl_key **pp = key_slot(rl, k->key_id);

	if (*pp == k)
		*pp = k->chain;
	lru_unlink(rl, k);
	if (k->call)
		k->call->k = NULL;
	rl->nkeys--;
	free(k);
}

/* Evicts the least recently used idle entries while the table is full. Busy entries (a call
 * in flight or requests waiting) stay: their number is bounded by the requests in flight. */
static void evict(ingest_ratelimit *rl)
{
	rl_key *k = rl->lru_tail, *prev;

	while (rl->nkeys >= rl->max_keys && k) {
		prev = k->lru_prev;
		if (!k->call && !k->head)
			key_free(rl, k);
		k = prev;
	}
}

static rl_key *key_get(ingest_ratelimit *rl, const ingest_principal *who)
{
	rl_key **pp = key_slot(rl, who->key_id), *k = *pp;

	if (k) {
		lru_unlink(rl, k);
	} else {
		evict(rl);
		k = calloc(1, sizeof(*k));
		if (!k)
			return NULL;
		memcpy(k->key_id, who->key_id, sizeof(k->key_id));
		k->key_id[sizeof(k->key_id) - 1] = '\0';
		pp = key_slot(rl, k->key_id);
		*pp = k;
		rl->nkeys++;
	}
	lru_front(rl, k);
	/* The plan may change: the latest principal wins. One key may use the org's budget. */
	memcpy(k->org_id, who->org_id, sizeof(k->org_id));
	k->org_id[sizeof(k->org_id) - 1] = '\0';
	k->org_rate = who->rate_per_s > 0 ? who->rate_per_s : 1;
	k->org_burst = who->rate_burst >= k->org_rate ? who->rate_burst : k->org_rate;
	k->key_rate = k->org_rate;
	k->key_burst = k->org_burst;
	return k;
}

/* ---------------------------------------------------------------- local decisions */

static double est_level(int64_t est, int64_t rate, int64_t burst, int64_t dt_ms)
{
	double v = (double)est + (double)rate * (double)dt_ms / 1000.0;

	return v < (double)burst ? v : (double)burst;
}

/* Milliseconds until the estimate of one bucket could cover need, 0 when it may already. */
static int64_t est_wait_ms(int64_t est, int64_t rate, int64_t burst, int64_t dt_ms, int64_t need)
{
	double lvl = est_level(est, rate, burst, dt_ms);
	double want = (double)(need < burst ? need : burst);

	if (lvl >= want)
		return 0;
	return (int64_t)ceil((want - lvl) * 1000.0 / (double)rate);
}

static int64_t remaining(const rl_key *k, int64_t now)
{
	int64_t lease = now < k->lease_until_ms ? k->lease : 0;
	double lk, lo;

	if (!k->est_known)
		return lease;
	lk = est_level(k->est_key, k->key_rate, k->key_burst, now - k->est_ms);
	lo = est_level(k->est_org, k->org_rate, k->org_burst, now - k->est_ms);
	lk = lk < lo ? lk : lo;
	return lease + (lk > 0 ? (int64_t)lk : 0);
}

static void set_headers(const rl_key *k, dl_http_req *req, int64_t rem)
{
	char v[32];

	snprintf(v, sizeof(v), "%" PRId64, k->key_rate < k->org_rate ? k->key_rate : k->org_rate);
	dl_http_req_set_header(req, "X-RateLimit-Limit", v);
	snprintf(v, sizeof(v), "%" PRId64, rem > 0 ? rem : 0);
	dl_http_req_set_header(req, "X-RateLimit-Remaining", v);
}

static void refuse(ingest_ratelimit *rl, rl_key *k, dl_http_req *req, int64_t cost,
		   int64_t wait_ms, bool org_binding, const char *path, int64_t rem)
{
	int64_t secs = (wait_ms + 999) / 1000;
	int64_t rate = org_binding ? k->org_rate : k->key_rate;
	int64_t burst = org_binding ? k->org_burst : k->key_burst;
	cJSON *d = cJSON_CreateObject();
	char v[32];

	if (secs < 1)
		secs = 1;
	decision(rl, "refused", path);
	set_headers(k, req, rem);
	snprintf(v, sizeof(v), "%" PRId64, secs);
	dl_http_req_set_header(req, "Retry-After", v);
	cJSON_AddStringToObject(d, "limit", org_binding ? "org" : "api_key");
	cJSON_AddNumberToObject(d, "events_per_second", (double)rate);
	cJSON_AddNumberToObject(d, "burst", (double)burst);
	cJSON_AddNumberToObject(d, "events", (double)cost);
	cJSON_AddNumberToObject(d, "retry_after_s", (double)secs);
	dl_http_reply_error_details(req, 429, "rate_limited", d,
				    "the %s's plan allows %" PRId64 " events/s (bursts up to %" PRId64
				    "); these %" PRId64 " events may be sent again in %" PRId64 " s",
				    org_binding ? "organization" : "API key", rate, burst, cost, secs);
	cJSON_Delete(d);
}

/* The fail-open path: a local bucket per key at the plan's rate. */
static void take_fallback(ingest_ratelimit *rl, rl_key *k, dl_http_req *req, int64_t cost,
			  ingest_rl_cb cb, ingest_rl_release_fn release, void *arg, int64_t now)
{
	double need;

	if (!k->fb_known) {
		k->fb_known = true;
		k->fb_tokens = (double)k->key_burst;
		k->fb_ms = now;
	}
	k->fb_tokens += (double)k->key_rate * (double)(now - k->fb_ms) / 1000.0;
	if (k->fb_tokens > (double)k->key_burst)
		k->fb_tokens = (double)k->key_burst;
	k->fb_ms = now;
	need = (double)(cost < k->key_burst ? cost : k->key_burst);
	if (k->fb_tokens < need) {
		refuse(rl, k, req, cost,
		       (int64_t)ceil((need - k->fb_tokens) * 1000.0 / (double)k->key_rate), false,
		       "fallback", (int64_t)k->fb_tokens);
		if (release)
			release(arg);
		return;
	}
	k->fb_tokens -= (double)cost;
	decision(rl, "allowed", "fallback");
	set_headers(k, req, (int64_t)k->fb_tokens);
	cb(req, arg);
}

/* ---------------------------------------------------------------- Redis calls */

/* While connecting, calls are queued by hiredis and sent once connected (or fail open). */
static bool redis_usable(ingest_ratelimit *rl, int64_t now)
{
	return rl->ac && now >= rl->failed_until_ms;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

static int send_call(ingest_ratelimit *rl, rl_call *c, bool eval)
{
	char kkey[128], okey[96], a[6][24];
	const char *argv[11];
	int argc = 0, i;
	rl_key *k = c->k;

	snprintf(kkey, sizeof(kkey), "dl:rl:{%s}:k:%s", k->org_id, k->key_id);
	snprintf(okey, sizeof(okey), "dl:rl:{%s}:o", k->org_id);
	snprintf(a[0], sizeof(a[0]), "%" PRId64, k->key_rate);
	snprintf(a[1], sizeof(a[1]), "%" PRId64, k->key_burst);
	snprintf(a[2], sizeof(a[2]), "%" PRId64, k->org_rate);
	snprintf(a[3], sizeof(a[3]), "%" PRId64, k->org_burst);
	snprintf(a[4], sizeof(a[4]), "%" PRId64, c->need);
	snprintf(a[5], sizeof(a[5]), "%" PRId64, c->want);
	argv[argc++] = eval ? "EVAL" : "EVALSHA";
	argv[argc++] = eval ? LUA_TAKE : rl->sha;
	argv[argc++] = "2";
	argv[argc++] = kkey;
	argv[argc++] = okey;
	for (i = 0; i < 6; i++)
		argv[argc++] = a[i];
	if (redisAsyncCommandArgv(rl->ac, on_reply, c, argc, argv, NULL) != REDIS_OK)
		return -ENOTCONN;
	return 0;
}

static void calls_push(ingest_ratelimit *rl, rl_call *c)
{
	c->next = NULL;
	if (rl->calls_tail)
		rl->calls_tail->next = c;
	else
		rl->calls_head = c;
	rl->calls_tail = c;
}

static void calls_remove(ingest_ratelimit *rl, rl_call *c)
{
	rl_call **pp = &rl->calls_head, *prev = NULL;

	while (*pp && *pp != c) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = c->next;
	if (rl->calls_tail == c)
		rl->calls_tail = prev;
	c->next = NULL;
}

static void drain_waiters(ingest_ratelimit *rl, rl_key *k, bool refused_head);

/* Starts a call for k's first waiter (k->call must be NULL). Falls back on failure. */
static void start_call(ingest_ratelimit *rl, rl_key *k, int64_t now)
{
	int64_t have = now < k->lease_until_ms ? k->lease : 0;
	int64_t need = k->head->cost - have;
	int64_t extra = k->key_rate * rl->lease_ms / 1000;
	int64_t cap = k->key_burst < k->org_burst ? k->key_burst : k->org_burst;
	rl_call *c;

	if (extra < 1)
		extra = 1;
	c = calloc(1, sizeof(*c));
	if (!c)
		goto out_fallback;
	c->rl = rl;
	c->k = k;
	c->need = need;
	c->want = need + extra < cap ? need + extra : (need > cap ? need : cap);
	c->sent_ms = now;
	if (send_call(rl, c, false) < 0) {
		free(c);
		goto out_fallback;
	}
	k->call = c;
	calls_push(rl, c);
	return;

out_fallback:
	rl->failed_until_ms = now + 1000;
	set_degraded(rl, true, "cannot send to Redis");
	drain_waiters(rl, k, false);
}

/* Serves k's waiters in order from its lease; refuses those the estimate cannot cover;
 * starts a call for the first that needs Redis. refused_head: Redis just refused the first. */
static void drain_waiters(ingest_ratelimit *rl, rl_key *k, bool refused_head)
{
	int64_t now = now_ms();
	rl_waiter *w;

	while ((w = k->head) && !k->call) {
		int64_t have = now < k->lease_until_ms ? k->lease : 0;

		if (have >= w->cost) {
			k->lease = have - w->cost;
			decision(rl, "allowed", "lease");
		} else if (!redis_usable(rl, now)) {
			k->head = w->next;
			if (!k->head)
				k->tail = NULL;
			k->nwaiters--;
			take_fallback(rl, k, w->req, w->cost, w->cb, w->release, w->arg, now);
			free(w);
			continue;
		} else {
			int64_t need = w->cost - have;
			int64_t wk = 0, wo = 0;

			if (k->est_known) {
				wk = est_wait_ms(k->est_key, k->key_rate, k->key_burst,
						 now - k->est_ms, need);
				wo = est_wait_ms(k->est_org, k->org_rate, k->org_burst,
						 now - k->est_ms, need);
			}
			if (refused_head || wk > 0 || wo > 0) {
				k->head = w->next;
				if (!k->head)
					k->tail = NULL;
				k->nwaiters--;
				if (wk == 0 && wo == 0)
					wo = 1000; /* refused although the estimate allowed: others took it */
				refuse(rl, k, w->req, w->cost, wk > wo ? wk : wo, wo >= wk,
				       refused_head ? "redis" : "estimate", remaining(k, now));
				if (w->release)
					w->release(w->arg);
				free(w);
				refused_head = false;
				continue;
			}
			start_call(rl, k, now);
			return;
		}
		k->head = w->next;
		if (!k->head)
			k->tail = NULL;
		k->nwaiters--;
		set_headers(k, w->req, remaining(k, now));
		w->cb(w->req, w->arg);
		free(w);
	}
}

static void fail_calls_open(ingest_ratelimit *rl, const char *why)
{
	rl->failed_until_ms = now_ms() + 1000;
	set_degraded(rl, true, why);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;
	rl_call *c = privdata;
	ingest_ratelimit *rl = c->rl;
	rl_key *k = c->k;
	int64_t now;
	bool refused = false;

	(void)ac;
	if (c->fn) {
		/* Another module's command: its reply is its own business, not the limiter's. */
		if (rl)
			calls_remove(rl, c);
		c->fn(reply, c->fn_arg);
		free(c);
		return;
	}
	if (!rl) {
		free(c);
		return;
	}
	calls_remove(rl, c);
	if (k)
		k->call = NULL;
	now = now_ms();
	if (reply && reply->type == REDIS_REPLY_ERROR && !c->retried && k &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0 && rl->ac) {
		/* The script cache was flushed: send the text once, which loads it again. */
		c->retried = true;
		if (send_call(rl, c, true) == 0) {
			k->call = c;
			calls_push(rl, c);
			return;
		}
	}
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER ||
	    reply->element[1]->type != REDIS_REPLY_INTEGER ||
	    reply->element[2]->type != REDIS_REPLY_INTEGER) {
		redis_result(rl, reply ? "error" : "disconnected");
		if (reply && reply->type == REDIS_REPLY_ERROR)
			dl_log_warn("rate limit script failed", "error", reply->str);
		fail_calls_open(rl, reply ? "the rate limit script failed" : "no reply");
	} else {
		int64_t granted = reply->element[0]->integer;

		redis_result(rl, "ok");
		rl->failed_until_ms = 0;
		set_degraded(rl, false, NULL);
		if (k) {
			k->est_known = true;
			k->est_key = reply->element[1]->integer;
			k->est_org = reply->element[2]->integer;
			k->est_ms = now;
			if (granted > 0) {
				k->lease = (now < k->lease_until_ms ? k->lease : 0) + granted;
				k->lease_until_ms = now + LEASE_LIFE_MS;
			} else {
				refused = true;
			}
		}
	}
	free(c);
	if (k)
		drain_waiters(rl, k, refused);
}

int ingest_ratelimit_redis_command(ingest_ratelimit *rl, int argc, const char **argv,
				   ingest_rl_redis_fn fn, void *arg)
{
	int64_t now = now_ms();
	rl_call *c;

	if (!rl || !fn)
		return -EINVAL;
	if (!redis_usable(rl, now))
		return -ENOTCONN;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->rl = rl;
	c->fn = fn;
	c->fn_arg = arg;
	c->sent_ms = now;
	if (redisAsyncCommandArgv(rl->ac, on_reply, c, argc, argv, NULL) != REDIS_OK) {
		free(c);
		return -ENOTCONN;
	}
	calls_push(rl, c);
	return 0;
}

/* ---------------------------------------------------------------- connection */

static void schedule_reconnect(ingest_ratelimit *rl)
{
	struct timeval tv;

	tv.tv_sec = rl->backoff_ms / 1000;
	tv.tv_usec = (rl->backoff_ms % 1000) * 1000;
	evtimer_add(rl->reconnect_timer, &tv);
	rl->backoff_ms = rl->backoff_ms * 2 < RECONNECT_MAX_MS ? rl->backoff_ms * 2
							       : RECONNECT_MAX_MS;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	ingest_ratelimit *rl = ac->data;

	if (!rl || rl->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees ac after this callback. */
		rl->ac = NULL;
		rl->up = false;
		set_degraded(rl, true, "cannot connect to Redis");
		schedule_reconnect(rl);
		return;
	}
	rl->up = true;
	rl->backoff_ms = RECONNECT_MIN_MS;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	ingest_ratelimit *rl = ac->data;

	(void)status;
	if (!rl || rl->ac != ac)
		return;
	rl->ac = NULL;
	rl->up = false;
	set_degraded(rl, true, "the Redis connection closed");
	schedule_reconnect(rl);
}

static void on_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;
	ingest_ratelimit *rl = ac->data;

	(void)privdata;
	if (rl && reply && reply->type == REDIS_REPLY_ERROR) {
		/* Never the password: the server's text names the command, not its arguments. */
		dl_log_warn("Redis refused the rate limiter's setup", "error", reply->str);
		fail_calls_open(rl, "Redis refused AUTH or SELECT");
	}
}

static void connect_redis(ingest_ratelimit *rl)
{
	redisAsyncContext *ac = redisAsyncConnect(rl->url.host, rl->url.port);
	char db[16];

	if (!ac || ac->err) {
		if (ac)
			redisAsyncFree(ac);
		set_degraded(rl, true, "cannot connect to Redis");
		schedule_reconnect(rl);
		return;
	}
	ac->data = rl;
	if (redisLibeventAttach(ac, rl->base) != REDIS_OK) {
		redisAsyncFree(ac);
		schedule_reconnect(rl);
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	rl->ac = ac;
	rl->up = false;
	/* Queued before any script call, so they run first once connected. */
	if (rl->url.password) {
		const char *argv[3] = { "AUTH", rl->url.user, rl->url.password };

		if (rl->url.user)
			redisAsyncCommandArgv(ac, on_setup_reply, NULL, 3, argv, NULL);
		else
			redisAsyncCommandArgv(ac, on_setup_reply, NULL, 2,
					      (const char *[]){ "AUTH", rl->url.password }, NULL);
	}
	if (rl->url.db) {
		snprintf(db, sizeof(db), "%d", rl->url.db);
		redisAsyncCommandArgv(ac, on_setup_reply, NULL, 2,
				      (const char *[]){ "SELECT", db }, NULL);
	}
	/* hiredis completes the connect on its first write: make one now. */
	redisAsyncCommandArgv(ac, on_setup_reply, NULL, 1, (const char *[]){ "PING" }, NULL);
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	ingest_ratelimit *rl = arg;

	(void)fd;
	(void)what;
	if (!rl->ac)
		connect_redis(rl);
}

/* A call past its deadline: give up on the connection (its pending calls are answered with
 * no reply, which fails them open) and reconnect. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	ingest_ratelimit *rl = arg;
	redisAsyncContext *ac = rl->ac;
	int64_t now = now_ms(), last = rl->last_tick_ms;
	rl_call *c;

	(void)fd;
	(void)what;
	rl->last_tick_ms = now;
	if (last && now - last > 4 * TICK_MS) {
		/* The loop itself was stalled (a slow callback elsewhere): a reply may be waiting
		 * unread in the socket. Do not blame Redis; give the calls a fresh deadline. */
		for (c = rl->calls_head; c; c = c->next)
			c->sent_ms = now;
		return;
	}
	if (!ac || !rl->calls_head || now - rl->calls_head->sent_ms < rl->timeout_ms)
		return;
	redis_result(rl, "timeout");
	dl_log_warn("Redis did not answer the rate limiter in time: reconnecting");
	rl->ac = NULL;
	rl->up = false;
	fail_calls_open(rl, "Redis timed out");
	redisAsyncFree(ac); /* calls on_reply(NULL) for each call in flight */
	schedule_reconnect(rl);
}

/* ---------------------------------------------------------------- public */

void ingest_ratelimit_take(ingest_ctx *ctx, dl_http_req *req, const ingest_principal *who,
			   int64_t cost, ingest_rl_cb cb, ingest_rl_release_fn release, void *arg)
{
	ingest_ratelimit *rl = ctx->rl;
	int64_t now;
	rl_waiter *w;
	rl_key *k;

	if (!rl) {
		cb(req, arg);
		return;
	}
	if (cost < 1)
		cost = 1;
	k = key_get(rl, who);
	if (!k) {
		dl_http_req_set_header(req, "Retry-After", "1");
		dl_http_reply_error(req, 503, "unavailable", "out of memory; retry shortly");
		if (release)
			release(arg);
		return;
	}
	now = now_ms();
	if (!k->head) {
		int64_t have = now < k->lease_until_ms ? k->lease : 0;

		/* The hot path: spend the lease, no Redis. */
		if (have >= cost) {
			k->lease = have - cost;
			decision(rl, "allowed", "lease");
			set_headers(k, req, remaining(k, now));
			cb(req, arg);
			return;
		}
		if (!redis_usable(rl, now)) {
			take_fallback(rl, k, req, cost, cb, release, arg, now);
			return;
		}
	}
	if (k->nwaiters >= MAX_WAITERS) {
		refuse(rl, k, req, cost, 1000, true, "queue", remaining(k, now));
		if (release)
			release(arg);
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		dl_http_req_set_header(req, "Retry-After", "1");
		dl_http_reply_error(req, 503, "unavailable", "out of memory; retry shortly");
		if (release)
			release(arg);
		return;
	}
	w->req = req;
	w->cost = cost;
	w->cb = cb;
	w->release = release;
	w->arg = arg;
	if (k->tail)
		k->tail->next = w;
	else
		k->head = w;
	k->tail = w;
	k->nwaiters++;
	if (!k->call)
		drain_waiters(rl, k, false);
}

int ingest_ratelimit_new(struct event_base *base, dl_metrics_registry *metrics,
			 const ingest_ratelimit_options *opts, char *errbuf, size_t errlen,
			 ingest_ratelimit **ret)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	struct timeval tick = { 0, TICK_MS * 1000 };
	ingest_ratelimit *rl;
	size_t n = 16;
	int r;

	if (opts->lease_ms < 0 || opts->lease_ms > 10000 || opts->timeout_ms < 0) {
		snprintf(errbuf, errlen, "rate limit lease must be 0-10 s and the timeout positive");
		return -EINVAL;
	}
	rl = calloc(1, sizeof(*rl));
	if (!rl) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	rl->base = base;
	rl->lease_ms = opts->lease_ms ? opts->lease_ms : 100;
	rl->timeout_ms = opts->timeout_ms ? opts->timeout_ms : 250;
	rl->max_keys = opts->max_keys ? opts->max_keys : 10000;
	rl->backoff_ms = RECONNECT_MIN_MS;
	r = dl_redis_url_parse(opts->redis_url, &rl->url, errbuf, errlen);
	if (r < 0)
		goto out_free;
	r = -ENOMEM;
	if (!EVP_Digest(LUA_TAKE, strlen(LUA_TAKE), md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) {
		snprintf(errbuf, errlen, "libcrypto cannot compute SHA-1");
		r = -EIO;
		goto out_free;
	}
	dl_id_hex(md, 20, rl->sha, sizeof(rl->sha));
	while (n < rl->max_keys * 2)
		n <<= 1;
	rl->buckets = calloc(n, sizeof(*rl->buckets));
	rl->mask = n - 1;
	rl->reconnect_timer = evtimer_new(base, reconnect_cb, rl);
	rl->tick = event_new(base, -1, EV_PERSIST, tick_cb, rl);
	rl->m_decisions = dl_metrics_counter(metrics, "driftlock_ingest_ratelimit_decisions_total",
					     "Rate limit decisions, by result (allowed, refused) and "
					     "path (lease, redis, estimate, fallback, queue).",
					     2, "result", "path");
	rl->m_redis_calls = dl_metrics_counter(metrics, "driftlock_ingest_ratelimit_redis_calls_total",
					       "Rate limit script calls to Redis, by result (ok, "
					       "error, timeout, disconnected).",
					       1, "result");
	rl->m_degraded = dl_metrics_gauge(metrics, "driftlock_ingest_ratelimit_degraded",
					  "1 while Redis is unreachable and each replica limits on "
					  "its own (fail open), else 0.",
					  0);
	if (!rl->buckets || !rl->reconnect_timer || !rl->tick || !rl->m_decisions ||
	    !rl->m_redis_calls || !rl->m_degraded) {
		snprintf(errbuf, errlen, "out of memory");
		goto out_free;
	}
	dl_metric_set(rl->m_degraded, NULL, 0);
	event_add(rl->tick, &tick);
	connect_redis(rl);
	*ret = rl;
	return 0;

out_free:
	if (rl->tick)
		event_free(rl->tick);
	if (rl->reconnect_timer)
		event_free(rl->reconnect_timer);
	free(rl->buckets);
	dl_redis_url_clear(&rl->url);
	free(rl);
	return r;
}

void ingest_ratelimit_free(ingest_ratelimit *rl)
{
	rl_call *c;
	rl_key *k, *next;

	if (!rl)
		return;
	for (c = rl->calls_head; c; c = c->next)
		c->rl = NULL;
	if (rl->ac) {
		redisAsyncContext *ac = rl->ac;

		rl->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac); /* on_reply frees each orphaned call */
	}
	for (k = rl->lru_head; k; k = next) {
		rl_waiter *w, *wn;

		next = k->lru_next;
		for (w = k->head; w; w = wn) {
			wn = w->next;
			dl_http_req_set_header(w->req, "Retry-After", "1");
			dl_http_reply_error(w->req, 503, "unavailable", "the server is stopping");
			if (w->release)
				w->release(w->arg);
			free(w);
		}
		free(k);
	}
	event_free(rl->tick);
	event_free(rl->reconnect_timer);
	free(rl->buckets);
	dl_redis_url_clear(&rl->url);
	free(rl);
}
