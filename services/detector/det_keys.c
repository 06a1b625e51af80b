/* SPDX-License-Identifier: Apache-2.0 */
/* det_keys: direct producers' messages read as raw events, and their API keys checked through a cache. */
#include "services/detector/det_keys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "common/dl_log.h"
#include "common/dl_pg.h"
#include "proto/proto_json.h"

/*
 * A check (loop thread): well-formed? -> HMAC-SHA-256 with the key secret (dl_apikey, as ingest
 * and driftlock-admin compute it) -> cache by hash: a known key answers its org, an unknown one
 * is refused, both until their TTL -> a miss joins the look-up already running for that hash or
 * starts one: dl_api_key_lookup(hash) on the pool (SECURITY DEFINER: the only way to find a key
 * before its org is known). The plain key is never kept, only its hash.
 * The cache holds two FIFO lists, known and unknown keys, each with its own bound, so a producer
 * sending made-up keys can never push out the keys in use.
 */

#define TTL_MAX_MS 60000
#define NEG_MAX_PERCENT 25

typedef struct kentry {
	struct kentry *hnext;       /* hash chain */
	struct kentry *prev, *next; /* its FIFO list, oldest first */
	uint8_t hash[DL_APIKEY_HASH_LEN];
	bool known;
	char org[37];
	int64_t expires_ms;
} kentry;

typedef struct kfifo {
	kentry *head, *tail;
	size_t n, max;
} kfifo;

typedef struct waiter {
	struct waiter *next;
	void (*cb)(int rc, const char *org_id, void *arg);
	void *arg;
} waiter;

typedef struct lookup {
	det_keys *k; /* NULL once the checker was freed */
	struct lookup *prev, *next;
	uint8_t hash[DL_APIKEY_HASH_LEN];
	char bytea[67];
	struct timespec started;
	waiter *head, *tail;
	/* filled by the worker */
	bool found;
	char org[37];
	char err[256];
} lookup;

struct det_keys {
	struct event_base *base;
	dl_pgpool *pool;
	dl_apikey_hasher *hasher;
	int64_t ttl_ms, negative_ttl_ms;
	size_t max_lookups;
	kentry **buckets;
	size_t nbuckets;
	kfifo known, unknown;
	lookup *lookups;
	size_t nlookups;
	dl_metric *m_checks;  /* {result} */
	dl_metric *m_lookups; /* {result} */
	dl_metric *m_lookup_s;
	dl_metric *m_entries; /* {kind} */
};

static const char SQL_LOOKUP[] = "SELECT org_id::text FROM dl_api_key_lookup($1::bytea)";

/* ---------------------------------------------------------------- the message */

/* The value of the only header named name: 1 with *val and *vlen; 0 when absent; -EINVAL when it
 * is repeated or has no value. */
static int one_header(const rd_kafka_headers_t *hdrs, const char *name, const char **val,
		      size_t *vlen)
{
	const void *v = NULL, *v2 = NULL;
	size_t n = 0, n2 = 0;

	if (!hdrs || rd_kafka_header_get(hdrs, 0, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	if (rd_kafka_header_get(hdrs, 1, name, &v2, &n2) == RD_KAFKA_RESP_ERR_NO_ERROR)
		return -EINVAL;
	if (!v)
		return -EINVAL;
	*val = v;
	*vlen = n;
	return 1;
}

static bool stream_ok(const char *s, size_t n)
{
	size_t i;

	if (n < 1 || n > DET_KEYS_STREAM_MAX)
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

static int refuse(const char **ret_reason, const char *reason, int rc, char *errbuf,
		  size_t errlen, const char *msg)
{
	*ret_reason = reason;
	snprintf(errbuf, errlen, "%s", msg);
	return rc;
}

int det_keys_direct_parse(const rd_kafka_headers_t *hdrs, const void *payload, size_t len,
			  det_keys_direct *ret, const char **ret_reason, char *errbuf,
			  size_t errlen)
{
	det_keys_direct d;
	const char *v = NULL;
	size_t n = 0;
	cJSON *root = NULL;
	char perr[256];
	int r;

	memset(&d, 0, sizeof(d));
	*ret_reason = NULL;
	r = one_header(hdrs, DET_KEYS_HEADER_KEY, &v, &n);
	if (r == 0) {
		snprintf(errbuf, errlen, "no %s header", DET_KEYS_HEADER_KEY);
		return -ENOENT;
	}
	if (r < 0)
		return refuse(ret_reason, "invalid_api_key", -EINVAL, errbuf, errlen,
			      "the " DET_KEYS_HEADER_KEY " header is repeated or empty");
	if (n != DL_APIKEY_LEN)
		return refuse(ret_reason, "invalid_api_key", -EINVAL, errbuf, errlen,
			      "the " DET_KEYS_HEADER_KEY " header is not an API key");
	memcpy(d.key, v, n);
	d.key[n] = '\0';
	if (!dl_apikey_well_formed(d.key)) {
		memset(d.key, 0, sizeof(d.key));
		return refuse(ret_reason, "invalid_api_key", -EINVAL, errbuf, errlen,
			      "the " DET_KEYS_HEADER_KEY " header is not an API key");
	}

	if (!payload)
		len = 0;
	r = proto_json_parse(payload, len, "event", DET_KEYS_RAW_MAX_BYTES,
			     DET_KEYS_RAW_MAX_DEPTH, false, &root, perr, sizeof(perr));
	if (r < 0) {
		memset(d.key, 0, sizeof(d.key));
		return refuse(ret_reason, r == -EMSGSIZE ? "too_large" : "malformed_json",
			      r == -EMSGSIZE ? -EMSGSIZE : -EINVAL, errbuf, errlen, perr);
	}

	r = one_header(hdrs, DET_KEYS_HEADER_STREAM, &v, &n);
	if (r > 0) {
		d.stream_from_header = true;
	} else if (r == 0) {
		const cJSON *s = cJSON_IsObject(root)
					 ? cJSON_GetObjectItemCaseSensitive(root, "stream")
					 : NULL;

		if (cJSON_IsString(s)) {
			v = s->valuestring;
			n = strlen(v);
		} else {
			r = -ENOENT;
		}
	}
	if (r == -ENOENT) {
		cJSON_Delete(root);
		memset(d.key, 0, sizeof(d.key));
		return refuse(ret_reason, "missing_stream", -EINVAL, errbuf, errlen,
			      "no " DET_KEYS_HEADER_STREAM " header and no \"stream\" string "
			      "member in the event");
	}
	if (r < 0 || !stream_ok(v, n)) {
		cJSON_Delete(root);
		memset(d.key, 0, sizeof(d.key));
		return refuse(ret_reason, "invalid_stream", -EINVAL, errbuf, errlen,
			      "the stream must be 1-128 characters of A-Za-z0-9._:- (one "
			      DET_KEYS_HEADER_STREAM " header or a \"stream\" member)");
	}
	memcpy(d.stream, v, n);
	d.stream[n] = '\0';
	cJSON_Delete(root);
	*ret = d;
	return 0;
}

/* ---------------------------------------------------------------- cache */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t bucket_of(const det_keys *k, const uint8_t hash[DL_APIKEY_HASH_LEN])
{
	uint64_t h;

	/* The hash is an HMAC: its bytes are already uniform. */
	memcpy(&h, hash, sizeof(h));
	return (size_t)(h & (k->nbuckets - 1));
}

static void count(dl_metric *m, const char *label)
{
	const char *lv[1] = { label };

	dl_metric_inc(m, lv, 1);
}

static void update_entries(det_keys *k)
{
	const char *known[1] = { "known" }, *unknown[1] = { "unknown" };

	dl_metric_set(k->m_entries, known, (double)k->known.n);
	dl_metric_set(k->m_entries, unknown, (double)k->unknown.n);
}

static void fifo_unlink(kfifo *f, kentry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		f->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		f->tail = e->prev;
	e->prev = e->next = NULL;
	f->n--;
}

static void fifo_push(kfifo *f, kentry *e)
{
	e->prev = f->tail;
	e->next = NULL;
	if (f->tail)
		f->tail->next = e;
	else
		f->head = e;
	f->tail = e;
	f->n++;
}

static void entry_remove(det_keys *k, kentry *e)
{
	kentry **pp = &k->buckets[bucket_of(k, e->hash)];

	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	fifo_unlink(e->known ? &k->known : &k->unknown, e);
	free(e);
}

static kentry *entry_find(det_keys *k, const uint8_t hash[DL_APIKEY_HASH_LEN])
{
	kentry *e;

	for (e = k->buckets[bucket_of(k, hash)]; e; e = e->hnext)
		if (dl_apikey_hash_equal(e->hash, hash))
			return e;
	return NULL;
}

static void entry_put(det_keys *k, const uint8_t hash[DL_APIKEY_HASH_LEN], const char *org)
{
	kentry *e = entry_find(k, hash);
	kfifo *f = org ? &k->known : &k->unknown;

	if (e)
		entry_remove(k, e);
	if (f->max == 0)
		return;
	while (f->n >= f->max)
		entry_remove(k, f->head); /* the oldest answer goes first */
	e = calloc(1, sizeof(*e));
	if (!e)
		return;
	memcpy(e->hash, hash, DL_APIKEY_HASH_LEN);
	e->known = org != NULL;
	if (org)
		snprintf(e->org, sizeof(e->org), "%s", org);
	e->expires_ms = now_ms() + (org ? k->ttl_ms : k->negative_ttl_ms);
	e->hnext = k->buckets[bucket_of(k, hash)];
	k->buckets[bucket_of(k, hash)] = e;
	fifo_push(f, e);
}

/* ---------------------------------------------------------------- look-up */

static int lookup_work(dl_pg *pg, void *arg)
{
	lookup *l = arg;
	const char *params[1] = { l->bytea };
	PGresult *res;
	int r;

	r = dl_pg_prepare(pg, "det_keys_lookup", SQL_LOOKUP, 1, l->err, sizeof(l->err));
	if (r < 0)
		return r;
	r = dl_pg_exec(pg, "det_keys_lookup", 1, params, &res, l->err, sizeof(l->err));
	/* Not allowed to run the look-up is a deployment fault, not an unknown key: the message
	 * waits (transient) instead of being dead-lettered as unauthenticated. */
	if (r == -EACCES)
		return -EIO;
	if (r < 0)
		return r;
	if (PQntuples(res) == 1 && PQgetlength(res, 0, 0) == 36) {
		snprintf(l->org, sizeof(l->org), "%s", PQgetvalue(res, 0, 0));
		l->found = true;
	}
	PQclear(res);
	return 0;
}

static void lookup_unlink(det_keys *k, lookup *l)
{
	if (l->prev)
		l->prev->next = l->next;
	else
		k->lookups = l->next;
	if (l->next)
		l->next->prev = l->prev;
	l->prev = l->next = NULL;
	k->nlookups--;
}

static void lookup_free(lookup *l)
{
	waiter *w, *next;

	for (w = l->head; w; w = next) {
		next = w->next;
		free(w);
	}
	free(l);
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void lookup_done(int rc, void *arg)
{
	lookup *l = arg;
	det_keys *k = l->k;
	waiter *w, *next;
	int answer;

	if (!k)
		goto out_free;
	lookup_unlink(k, l);
	dl_metric_observe(k->m_lookup_s, NULL, seconds_since(&l->started));
	if (rc == 0) {
		count(k->m_lookups, l->found ? "found" : "not_found");
		entry_put(k, l->hash, l->found ? l->org : NULL);
		update_entries(k);
		answer = l->found ? 0 : -EACCES;
	} else {
		count(k->m_lookups, "error");
		if (rc != -ECANCELED)
			dl_log_warn("direct producer api key look-up failed", "error",
				    l->err[0] ? l->err : strerror(-rc));
		answer = rc;
	}
	/* Detached first: a callback may check again (and start a new look-up). */
	w = l->head;
	l->head = l->tail = NULL;
	for (; w; w = next) {
		next = w->next;
		w->cb(answer, answer == 0 ? l->org : NULL, w->arg);
		free(w);
	}
out_free:
	lookup_free(l);
}

void det_keys_check(det_keys *k, const char *key, size_t len,
		    void (*cb)(int rc, const char *org_id, void *arg), void *arg)
{
	char buf[DL_APIKEY_LEN + 1];
	uint8_t hash[DL_APIKEY_HASH_LEN];
	kentry *e;
	lookup *l;
	waiter *w;
	int r;

	if (!key || len != DL_APIKEY_LEN) {
		count(k->m_checks, "malformed");
		cb(-EINVAL, NULL, arg);
		return;
	}
	memcpy(buf, key, len);
	buf[len] = '\0';
	if (!dl_apikey_well_formed(buf)) {
		memset(buf, 0, sizeof(buf));
		count(k->m_checks, "malformed");
		cb(-EINVAL, NULL, arg);
		return;
	}
	r = dl_apikey_hash(k->hasher, buf, len, hash);
	memset(buf, 0, sizeof(buf));
	if (r < 0) {
		count(k->m_checks, "error");
		cb(r, NULL, arg);
		return;
	}
	e = entry_find(k, hash);
	if (e && e->expires_ms > now_ms()) {
		count(k->m_checks, e->known ? "hit" : "negative_hit");
		cb(e->known ? 0 : -EACCES, e->known ? e->org : NULL, arg);
		return;
	}
	if (e) {
		entry_remove(k, e);
		update_entries(k);
	}
	for (l = k->lookups; l; l = l->next)
		if (dl_apikey_hash_equal(l->hash, hash))
			break;
	w = calloc(1, sizeof(*w));
	if (!w) {
		count(k->m_checks, "error");
		cb(-ENOMEM, NULL, arg);
		return;
	}
	w->cb = cb;
	w->arg = arg;
	if (l) {
		count(k->m_checks, "coalesced");
		l->tail->next = w;
		l->tail = w;
		return;
	}
	if (k->nlookups >= k->max_lookups || !(l = calloc(1, sizeof(*l)))) {
		free(w);
		count(k->m_checks, "busy");
		cb(-EAGAIN, NULL, arg);
		return;
	}
	l->k = k;
	memcpy(l->hash, hash, sizeof(hash));
	dl_apikey_hash_bytea(hash, l->bytea);
	clock_gettime(CLOCK_MONOTONIC, &l->started);
	l->head = l->tail = w;
	r = dl_pgpool_submit(k->pool, lookup_work, lookup_done, l);
	if (r < 0) {
		lookup_free(l);
		count(k->m_checks, "busy");
		cb(r, NULL, arg);
		return;
	}
	count(k->m_checks, "miss");
	l->next = k->lookups;
	if (k->lookups)
		k->lookups->prev = l;
	k->lookups = l;
	k->nlookups++;
}

/* ---------------------------------------------------------------- life cycle */

int det_keys_new(struct event_base *base, dl_pgpool *pool, dl_metrics_registry *m,
		 const det_keys_options *opts, det_keys **ret, char *errbuf, size_t errlen)
{
	static const double buckets[] = { .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5,
					  1, 2.5, 5 };
	size_t max_keys = opts->max_keys ? opts->max_keys : 10000;
	det_keys *k;
	int r;

	if (opts->ttl_ms < 0 || opts->ttl_ms > TTL_MAX_MS || opts->negative_ttl_ms < 0 ||
	    opts->negative_ttl_ms > TTL_MAX_MS || !pool) {
		snprintf(errbuf, errlen, "the API key cache TTLs must be 0-%d ms", TTL_MAX_MS);
		return -EINVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	k->base = base;
	k->pool = pool;
	k->ttl_ms = opts->ttl_ms ? opts->ttl_ms : 10000;
	k->negative_ttl_ms = opts->negative_ttl_ms ? opts->negative_ttl_ms
						   : (k->ttl_ms < 5000 ? k->ttl_ms : 5000);
	k->max_lookups = opts->max_lookups ? opts->max_lookups : 256;
	k->unknown.max = max_keys * NEG_MAX_PERCENT / 100 > 16 ? max_keys * NEG_MAX_PERCENT / 100
							       : 16;
	k->known.max = max_keys;
	for (k->nbuckets = 64; k->nbuckets < max_keys + k->unknown.max; k->nbuckets *= 2)
		;
	k->buckets = calloc(k->nbuckets, sizeof(*k->buckets));
	if (!k->buckets) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free;
	}
	r = dl_apikey_hasher_new(opts->secret, opts->secret_len, errbuf, errlen, &k->hasher);
	if (r < 0)
		goto out_free;
	k->m_checks = dl_metrics_counter(m, "driftlock_detector_keys_checks_total",
					 "Direct producers' API key checks, by result (hit, "
					 "negative_hit, miss, coalesced, malformed, busy, error).",
					 1, "result");
	k->m_lookups = dl_metrics_counter(m, "driftlock_detector_keys_lookups_total",
					  "API key look-ups in PostgreSQL, by result (found, "
					  "not_found, error).",
					  1, "result");
	k->m_lookup_s = dl_metrics_histogram(m, "driftlock_detector_keys_lookup_seconds",
					     "Time from starting an API key look-up to its answer.",
					     buckets, sizeof(buckets) / sizeof(buckets[0]), 0);
	k->m_entries = dl_metrics_gauge(m, "driftlock_detector_keys_cache_entries",
					"API keys held in the cache, by kind (known, unknown).", 1,
					"kind");
	if (!k->m_checks || !k->m_lookups || !k->m_lookup_s || !k->m_entries) {
		snprintf(errbuf, errlen, "cannot register the API key metrics");
		r = -ENOMEM;
		goto out_free;
	}
	*ret = k;
	return 0;

out_free:
	dl_apikey_hasher_free(k->hasher);
	free(k->buckets);
	free(k);
	return r;
}

void det_keys_free(det_keys *k)
{
	lookup *l;
	size_t i;

	if (!k)
		return;
	/* Running look-ups finish on the pool and free themselves. */
	for (l = k->lookups; l; l = l->next)
		l->k = NULL;
	for (i = 0; i < k->nbuckets; i++) {
		kentry *e = k->buckets[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			free(e);
		}
	}
	free(k->buckets);
	dl_apikey_hasher_free(k->hasher);
	free(k);
}
