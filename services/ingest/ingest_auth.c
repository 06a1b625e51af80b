/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_auth: API key authentication through a short-lived cache in front of the database look-up. */
#include "services/ingest/ingest_auth.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "common/dl_apikey.h"
#include "common/dl_http.h"
#include "common/dl_log.h"
#include "common/dl_pg.h"
#include "common/dl_pgpool.h"
#include "services/ingest/ingest_authcache.h"
#include "services/ingest/ingest_usage.h"

/* A valid entry is refreshed in the background once this share of its TTL has passed, so a
 * key in steady use never waits for the database; a failed refresh is retried after
 * REFRESH_RETRY_MS. The entry still expires at its TTL whatever happens. */
#define REFRESH_PERCENT 75
#define REFRESH_RETRY_MS 1000

/*
 * How a request is authenticated (loop thread):
 *   header -> well-formed key? -> HMAC -> cache: VALID (maybe start a background refresh)
 *   | INVALID (401) | MISS -> join the look-up already running for this hash, or start one.
 * A look-up (worker thread) calls dl_api_key_lookup(hash) (SECURITY DEFINER: the only way the
 * ingest role reads api_keys before it knows the org), then, inside dl_pg_begin_org for that
 * org, reads the plan limits, billing state and the current period's anomaly count, and
 * stamps api_keys.last_used_at if the stamp is older than a minute. Its completion (loop)
 * caches the answer and serves the requests that waited for it.
 */

typedef struct waiter {
	dl_http_req *req;
	unsigned flags;
	ingest_auth_cb cb;
	void *arg;
	struct waiter *next;
} waiter;

typedef struct auth_job {
	ingest_auth *auth; /* NULL once the module was freed: the job only frees itself */
	uint8_t hash[DL_APIKEY_HASH_LEN];
	char bytea[67];
	struct timespec started;
	/* Filled by the worker. */
	bool found;
	ingest_principal who;
	char err[256];
	/* Loop side. */
	waiter *head, *tail;
	size_t nwaiters;
	struct auth_job *prev, *next; /* the pending list */
} auth_job;

struct ingest_auth {
	dl_pgpool *db;
	dl_apikey_hasher *hasher;
	ingest_authcache *cache;
	ingest_usage *usage; /* NULL: the quota gate uses the database's count */
	int64_t ttl_ms, negative_ttl_ms;
	auth_job *pending;
	size_t npending;
	dl_metric *m_requests;  /* {result} */
	dl_metric *m_cache;     /* {result} */
	dl_metric *m_lookups;   /* {result} */
	dl_metric *m_lookup_s;
	dl_metric *m_entries;   /* {kind} */
};

static const char SQL_LOOKUP[] =
	"SELECT api_key_id::text, org_id::text FROM dl_api_key_lookup($1::bytea)";
static const char SQL_ORG[] =
	"SELECT o.plan, o.billing_status, o.over_quota, p.ingest_events_per_second, "
	"p.ingest_burst, p.included_anomalies, "
	"COALESCE((SELECT u.anomalies FROM usage_counters AS u, dl_usage_period(o.id, now()) AS d "
	"WHERE u.org_id = o.id AND u.period_start = d.period_start), 0) "
	"FROM organizations AS o JOIN plans AS p ON p.code = o.plan WHERE o.id = $1::uuid";
static const char SQL_TOUCH[] =
	"UPDATE api_keys SET last_used_at = now() WHERE id = $1::uuid "
	"AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')";

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void count(dl_metric *m, const char *label)
{
	const char *lv[1] = { label };

	dl_metric_inc(m, lv, 1);
}

static void update_entries_gauge(ingest_auth *a)
{
	const char *valid[1] = { "valid" }, *invalid[1] = { "invalid" };

	dl_metric_set(a->m_entries, valid, (double)ingest_authcache_count(a->cache, true));
	dl_metric_set(a->m_entries, invalid, (double)ingest_authcache_count(a->cache, false));
}

/* ---------------------------------------------------------------- replies */

static void reply_unauthorized(ingest_auth *a, dl_http_req *req, const char *code,
			       const char *msg)
{
	count(a->m_requests, code);
	dl_http_req_set_header(req, "WWW-Authenticate", "Bearer realm=\"driftlock\"");
	dl_http_reply_error(req, 401, code, "%s", msg);
}

static void reply_unavailable(ingest_auth *a, dl_http_req *req)
{
	if (a)
		count(a->m_requests, "unavailable");
	dl_http_req_set_header(req, "Retry-After", "1");
	dl_http_reply_error(req, 503, "unavailable",
			    "API keys cannot be checked right now; retry shortly");
}

/* Answers 402 and returns true when the billing gate refuses who. */
static bool billing_refused(ingest_auth *a, dl_http_req *req, const ingest_principal *who)
{
	cJSON *d;

	if (strcmp(who->billing_status, "suspended") == 0) {
		d = cJSON_CreateObject();
		cJSON_AddStringToObject(d, "reason", "billing_suspended");
		count(a->m_requests, "payment_required");
		dl_http_reply_error_details(req, 402, "payment_required", d,
					    "the organization is suspended for an unpaid invoice; "
					    "pay it to resume");
		cJSON_Delete(d);
		return true;
	}
	if (strcmp(who->over_quota, "block") == 0 &&
	    who->period_anomalies * 100 >= who->included * 120) {
		d = cJSON_CreateObject();
		cJSON_AddStringToObject(d, "reason", "quota_blocked");
		cJSON_AddNumberToObject(d, "anomalies", (double)who->period_anomalies);
		cJSON_AddNumberToObject(d, "included", (double)who->included);
		count(a->m_requests, "payment_required");
		dl_http_reply_error_details(req, 402, "payment_required", d,
					    "the organization found %" PRId64
					    " anomalies this period, at least 120%% of the %" PRId64
					    " its plan includes, and its over-quota policy is block",
					    who->period_anomalies, who->included);
		cJSON_Delete(d);
		return true;
	}
	return false;
}

static void finish(ingest_auth *a, dl_http_req *req, unsigned flags, const ingest_principal *who,
		   ingest_auth_cb cb, void *arg)
{
	if ((flags & INGEST_AUTH_BILLING_GATE) && billing_refused(a, req, who))
		return;
	count(a->m_requests, "ok");
	cb(req, who, arg);
}

/* A request of a block org waiting for its live count. */
typedef struct gate_wait {
	ingest_auth *a;
	unsigned flags;
	ingest_principal who;
	ingest_auth_cb cb;
	void *arg;
} gate_wait;

static void gate_live(dl_http_req *req, const ingest_usage_live *live, void *arg)
{
	gate_wait *g = arg;

	/* Only the count: included comes from the plan as the database has it now, so an
	 * upgrade opens the gate without waiting for metering to write the hash again. */
	if (live)
		g->who.period_anomalies = live->anomalies;
	finish(g->a, req, g->flags, &g->who, g->cb, g->arg);
	free(g);
}

/* Only a block org's quota can refuse a request, so only those wait for the live count. */
static void serve(ingest_auth *a, dl_http_req *req, unsigned flags, const ingest_principal *who,
		  ingest_auth_cb cb, void *arg)
{
	gate_wait *g;

	if ((flags & INGEST_AUTH_BILLING_GATE) && a->usage &&
	    strcmp(who->billing_status, "suspended") != 0 &&
	    strcmp(who->over_quota, "block") == 0) {
		g = malloc(sizeof(*g));
		if (g) {
			g->a = a;
			g->flags = flags;
			g->who = *who;
			g->cb = cb;
			g->arg = arg;
			ingest_usage_get(a->usage, who->org_id, req, gate_live, g);
			return;
		}
		/* Out of memory: the database's count still gates. */
	}
	finish(a, req, flags, who, cb, arg);
}

/* ---------------------------------------------------------------- the look-up (worker thread) */

static int copy_text(const PGresult *res, int col, char *out, size_t outlen)
{
	const char *v = PQgetvalue(res, 0, col);

	if (PQgetisnull(res, 0, col) || strlen(v) >= outlen)
		return -EPROTO;
	memcpy(out, v, strlen(v) + 1);
	return 0;
}

static int64_t int_of(const PGresult *res, int col)
{
	return strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

static int auth_work(dl_pg *pg, void *arg)
{
	auth_job *job = arg;
	const char *params[1];
	PGresult *res = NULL;
	char *err = job->err;
	size_t errlen = sizeof(job->err);
	int r;

	r = dl_pg_prepare(pg, "ingest_auth_lookup", SQL_LOOKUP, 1, err, errlen);
	if (r == 0)
		r = dl_pg_prepare(pg, "ingest_auth_org", SQL_ORG, 1, err, errlen);
	if (r == 0)
		r = dl_pg_prepare(pg, "ingest_auth_touch", SQL_TOUCH, 1, err, errlen);
	if (r < 0)
		return r;
	params[0] = job->bytea;
	r = dl_pg_exec(pg, "ingest_auth_lookup", 1, params, &res, err, errlen);
	if (r < 0)
		return r;
	if (PQntuples(res) != 1) {
		PQclear(res);
		job->found = false;
		return 0;
	}
	r = copy_text(res, 0, job->who.key_id, sizeof(job->who.key_id));
	if (r == 0)
		r = copy_text(res, 1, job->who.org_id, sizeof(job->who.org_id));
	PQclear(res);
	if (r < 0) {
		snprintf(err, errlen, "dl_api_key_lookup returned an unexpected row");
		return r;
	}

	r = dl_pg_begin_org(pg, job->who.org_id, err, errlen);
	if (r < 0)
		return r;
	params[0] = job->who.org_id;
	r = dl_pg_exec(pg, "ingest_auth_org", 1, params, &res, err, errlen);
	if (r < 0)
		goto out_rollback;
	if (PQntuples(res) != 1) {
		/* The org went away between the two statements: the key is gone with it. */
		PQclear(res);
		job->found = false;
		dl_pg_rollback(pg, NULL, 0);
		return 0;
	}
	r = copy_text(res, 0, job->who.plan, sizeof(job->who.plan));
	if (r == 0)
		r = copy_text(res, 1, job->who.billing_status, sizeof(job->who.billing_status));
	if (r == 0)
		r = copy_text(res, 2, job->who.over_quota, sizeof(job->who.over_quota));
	job->who.rate_per_s = int_of(res, 3);
	job->who.rate_burst = int_of(res, 4);
	job->who.included = int_of(res, 5);
	job->who.period_anomalies = int_of(res, 6);
	PQclear(res);
	if (r < 0) {
		snprintf(err, errlen, "the organization row has an unexpected shape");
		goto out_rollback;
	}
	params[0] = job->who.key_id;
	r = dl_pg_exec(pg, "ingest_auth_touch", 1, params, NULL, err, errlen);
	if (r < 0)
		goto out_rollback;
	r = dl_pg_commit(pg, err, errlen);
	if (r < 0)
		return r;
	job->found = true;
	return 0;

out_rollback:
	dl_pg_rollback(pg, NULL, 0);
	return r;
}

/* ---------------------------------------------------------------- completion (loop thread) */

static void pending_unlink(ingest_auth *a, auth_job *job)
{
	if (job->prev)
		job->prev->next = job->next;
	else
		a->pending = job->next;
	if (job->next)
		job->next->prev = job->prev;
	job->prev = job->next = NULL;
	a->npending--;
}

static void job_free(auth_job *job)
{
	waiter *w, *next;

	for (w = job->head; w; w = next) {
		next = w->next;
		free(w);
	}
	free(job);
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void auth_done(int rc, void *arg)
{
	auth_job *job = arg;
	ingest_auth *a = job->auth;
	int64_t now = now_ms();
	ingest_principal who;
	waiter *w, *next;

	if (!a) {
		job_free(job);
		return;
	}
	pending_unlink(a, job);
	dl_metric_observe(a->m_lookup_s, NULL, seconds_since(&job->started));
	if (rc == 0) {
		count(a->m_lookups, job->found ? "found" : "not_found");
		ingest_authcache_put(a->cache, job->hash, job->found ? &job->who : NULL, now,
				     job->found ? a->ttl_ms : a->negative_ttl_ms,
				     a->ttl_ms * REFRESH_PERCENT / 100);
		update_entries_gauge(a);
	} else {
		count(a->m_lookups, "error");
		dl_log_warn("api key look-up failed", "error", job->err[0] ? job->err : strerror(-rc),
			    "request_id", job->head ? dl_http_req_id(job->head->req) : NULL);
	}
	/* Serve the waiters from the cache as it is now: a failed refresh still leaves an
	 * unexpired answer usable. The list is detached first: callbacks may re-enter. */
	w = job->head;
	job->head = job->tail = NULL;
	for (; w; w = next) {
		ingest_authcache_result cr;

		next = w->next;
		cr = ingest_authcache_get(a->cache, job->hash, now, REFRESH_RETRY_MS, &who, NULL);
		if (cr == INGEST_AUTHCACHE_VALID)
			serve(a, w->req, w->flags, &who, w->cb, w->arg);
		else if (cr == INGEST_AUTHCACHE_INVALID)
			reply_unauthorized(a, w->req, "invalid_api_key",
					   "the API key is unknown or revoked");
		else
			reply_unavailable(a, w->req);
		free(w);
	}
	job_free(job);
}

/* Starts a look-up of hash (waiter w may be NULL for a background refresh). Returns 0 or a
 * negative errno (w not queued, nothing started). */
static int start_lookup(ingest_auth *a, const uint8_t *hash, waiter *w)
{
	auth_job *job;
	int r;

	if (a->npending >= INGEST_AUTH_MAX_PENDING)
		return -EAGAIN;
	job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	job->auth = a;
	memcpy(job->hash, hash, DL_APIKEY_HASH_LEN);
	dl_apikey_hash_bytea(hash, job->bytea);
	clock_gettime(CLOCK_MONOTONIC, &job->started);
	r = dl_pgpool_submit(a->db, auth_work, auth_done, job);
	if (r < 0) {
		free(job);
		return r;
	}
	if (w) {
		job->head = job->tail = w;
		job->nwaiters = 1;
	}
	job->next = a->pending;
	if (a->pending)
		a->pending->prev = job;
	a->pending = job;
	a->npending++;
	return 0;
}

static auth_job *find_pending(ingest_auth *a, const uint8_t *hash)
{
	auth_job *job;

	for (job = a->pending; job; job = job->next)
		if (dl_apikey_hash_equal(job->hash, hash))
			return job;
	return NULL;
}

void ingest_auth_request(ingest_ctx *ctx, dl_http_req *req, unsigned flags, ingest_auth_cb cb,
			 void *arg)
{
	ingest_auth *a = ctx->auth;
	uint8_t hash[DL_APIKEY_HASH_LEN];
	char key[DL_APIKEY_LEN + 1];
	ingest_principal who;
	bool refresh = false;
	auth_job *job;
	waiter *w;
	int r;

	if (!a) {
		reply_unavailable(NULL, req);
		return;
	}
	r = dl_apikey_from_headers(dl_http_req_header(req, "Authorization"),
				       dl_http_req_header(req, "X-Api-Key"), key, sizeof(key));
	if (r == -ENOENT) {
		reply_unauthorized(a, req, "missing_api_key",
				   "send an API key as \"Authorization: Bearer <key>\" or "
				   "\"X-Api-Key: <key>\"");
		return;
	}
	if (r < 0) {
		reply_unauthorized(a, req, "invalid_api_key",
				   "the API key is malformed: a key is dlk_ followed by 43 letters "
				   "and digits");
		return;
	}
	r = dl_apikey_hash(a->hasher, key, strlen(key), hash);
	memset(key, 0, sizeof(key));
	if (r < 0) {
		reply_unavailable(a, req);
		return;
	}

	switch (ingest_authcache_get(a->cache, hash, now_ms(), REFRESH_RETRY_MS, &who, &refresh)) {
	case INGEST_AUTHCACHE_VALID:
		count(a->m_cache, "hit");
		if (refresh && !find_pending(a, hash))
			start_lookup(a, hash, NULL); /* best effort: the entry still expires */
		serve(a, req, flags, &who, cb, arg);
		return;
	case INGEST_AUTHCACHE_INVALID:
		count(a->m_cache, "negative_hit");
		reply_unauthorized(a, req, "invalid_api_key", "the API key is unknown or revoked");
		return;
	case INGEST_AUTHCACHE_MISS:
		break;
	}

	w = calloc(1, sizeof(*w));
	if (!w) {
		reply_unavailable(a, req);
		return;
	}
	w->req = req;
	w->flags = flags;
	w->cb = cb;
	w->arg = arg;
	job = find_pending(a, hash);
	if (job) {
		if (job->nwaiters >= INGEST_AUTH_MAX_WAITERS) {
			free(w);
			reply_unavailable(a, req);
			return;
		}
		count(a->m_cache, "coalesced");
		if (job->tail)
			job->tail->next = w;
		else
			job->head = w;
		job->tail = w;
		job->nwaiters++;
		return;
	}
	count(a->m_cache, "miss");
	if (start_lookup(a, hash, w) < 0) {
		free(w);
		reply_unavailable(a, req);
	}
}

/* ---------------------------------------------------------------- life cycle */

int ingest_auth_new(dl_pgpool *db, dl_metrics_registry *metrics, const ingest_auth_options *opts,
		    char *errbuf, size_t errlen, ingest_auth **ret)
{
	static const double buckets[] = { .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5,
					  1, 2.5, 5 };
	size_t max_keys = opts->max_keys ? opts->max_keys : 10000, max_bad;
	ingest_auth *a;
	int r;

	if (opts->ttl_ms < 0 || opts->ttl_ms > INGEST_AUTH_TTL_MAX_MS || opts->negative_ttl_ms < 0) {
		snprintf(errbuf, errlen, "the API key cache TTL must be 1 ms to 30 s");
		return -EINVAL;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	a->db = db;
	a->ttl_ms = opts->ttl_ms ? opts->ttl_ms : 10000;
	a->negative_ttl_ms = opts->negative_ttl_ms ? opts->negative_ttl_ms
						   : (a->ttl_ms < 5000 ? a->ttl_ms : 5000);
	if (a->negative_ttl_ms > a->ttl_ms)
		a->negative_ttl_ms = a->ttl_ms;
	r = dl_apikey_hasher_new(opts->secret, opts->secret_len, errbuf, errlen, &a->hasher);
	if (r < 0)
		goto out_free;
	max_bad = max_keys / 4 > 16 ? max_keys / 4 : 16;
	r = ingest_authcache_new(max_keys, max_bad, &a->cache);
	if (r < 0) {
		snprintf(errbuf, errlen, "cannot make the API key cache");
		goto out_free;
	}
	a->m_requests = dl_metrics_counter(metrics, "driftlock_ingest_auth_requests_total",
					   "Requests authenticated, by result (ok, missing_api_key, "
					   "invalid_api_key, payment_required, unavailable).",
					   1, "result");
	a->m_cache = dl_metrics_counter(metrics, "driftlock_ingest_auth_cache_total",
					"API key cache look-ups, by result (hit, negative_hit, miss, "
					"coalesced).",
					1, "result");
	a->m_lookups = dl_metrics_counter(metrics, "driftlock_ingest_auth_lookups_total",
					  "API key look-ups in PostgreSQL, by result (found, "
					  "not_found, error).",
					  1, "result");
	a->m_lookup_s = dl_metrics_histogram(metrics, "driftlock_ingest_auth_lookup_seconds",
					     "Time from starting an API key look-up to its answer.",
					     buckets, sizeof(buckets) / sizeof(buckets[0]), 0);
	a->m_entries = dl_metrics_gauge(metrics, "driftlock_ingest_auth_cache_entries",
					"API keys held in the cache, by kind (valid, invalid).", 1,
					"kind");
	if (!a->m_requests || !a->m_cache || !a->m_lookups || !a->m_lookup_s || !a->m_entries) {
		snprintf(errbuf, errlen, "cannot register the API key metrics");
		r = -ENOMEM;
		goto out_free;
	}
	*ret = a;
	return 0;

out_free:
	ingest_authcache_free(a->cache);
	dl_apikey_hasher_free(a->hasher);
	free(a);
	return r;
}

void ingest_auth_set_usage(ingest_auth *a, ingest_usage *u)
{
	if (a)
		a->usage = u;
}

void ingest_auth_free(ingest_auth *a)
{
	auth_job *job, *next;
	waiter *w, *wnext;

	if (!a)
		return;
	for (job = a->pending; job; job = next) {
		next = job->next;
		job->auth = NULL;
		for (w = job->head; w; w = wnext) {
			wnext = w->next;
			reply_unavailable(NULL, w->req);
			free(w);
		}
		job->head = job->tail = NULL;
		job->prev = job->next = NULL;
	}
	ingest_authcache_free(a->cache);
	dl_apikey_hasher_free(a->hasher);
	free(a);
}
