/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_authcache: a chained hash table of API key look-ups with one LRU list per kind (valid, invalid). */
#include "services/ingest/ingest_authcache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
	uint8_t hash[DL_APIKEY_HASH_LEN];
	bool valid;
	int64_t expires_ms;
	int64_t refresh_ms;
	ingest_principal who;
	struct entry *chain;            /* next in the bucket */
	struct entry *lru_prev, *lru_next; /* in its kind's list, most recent first */
} entry;

typedef struct lru {
	entry *head, *tail;
	size_t count, max;
} lru;

struct ingest_authcache {
	entry **buckets;
	size_t mask;
	lru kinds[2]; /* [0] invalid, [1] valid */
};

/* The hash is HMAC output under a secret the client does not know, so its first bytes are
 * uniformly spread and cannot be steered into one bucket. */
static size_t bucket_of(const ingest_authcache *c, const uint8_t *hash)
{
	uint64_t v;

	memcpy(&v, hash, sizeof(v));
	return (size_t)v & c->mask;
}

static void lru_unlink(lru *l, entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		l->head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		l->tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
	l->count--;
}

static void lru_push_front(lru *l, entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = l->head;
	if (l->head)
		l->head->lru_prev = e;
	l->head = e;
	if (!l->tail)
		l->tail = e;
	l->count++;
}

static entry **find_slot(ingest_authcache *c, const uint8_t *hash)
{
	entry **pp = &c->buckets[bucket_of(c, hash)];

	while (*pp && !dl_apikey_hash_equal((*pp)->hash, hash))
		pp = &(*pp)->chain;
	return pp;
}

static void remove_entry(ingest_authcache *c, entry *e)
{
	entry **pp = find_slot(c, e->hash);

	if (*pp == e)
		*pp = e->chain;
	lru_unlink(&c->kinds[e->valid], e);
	free(e);
}

int ingest_authcache_new(size_t max_valid, size_t max_invalid, ingest_authcache **ret)
{
	ingest_authcache *c;
	size_t n = 16;

	if (max_valid < 1 || max_invalid < 1 || max_valid > (SIZE_MAX / 8) ||
	    max_invalid > (SIZE_MAX / 8))
		return -EINVAL;
	while (n < max_valid + max_invalid)
		n <<= 1;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->buckets = calloc(n, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return -ENOMEM;
	}
	c->mask = n - 1;
	c->kinds[0].max = max_invalid;
	c->kinds[1].max = max_valid;
	*ret = c;
	return 0;
}

ingest_authcache_result ingest_authcache_get(ingest_authcache *c,
					     const uint8_t hash[DL_APIKEY_HASH_LEN],
					     int64_t now_ms, int64_t retry_ms, ingest_principal *ret_who,
					     bool *ret_refresh)
{
	entry *e = *find_slot(c, hash);

	if (ret_refresh)
		*ret_refresh = false;
	if (!e)
		return INGEST_AUTHCACHE_MISS;
	if (now_ms >= e->expires_ms) {
		remove_entry(c, e);
		return INGEST_AUTHCACHE_MISS;
	}
	lru_unlink(&c->kinds[e->valid], e);
	lru_push_front(&c->kinds[e->valid], e);
	if (!e->valid)
		return INGEST_AUTHCACHE_INVALID;
	if (ret_who)
		*ret_who = e->who;
	if (now_ms >= e->refresh_ms) {
		e->refresh_ms = now_ms + retry_ms;
		if (ret_refresh)
			*ret_refresh = true;
	}
	return INGEST_AUTHCACHE_VALID;
}

int ingest_authcache_put(ingest_authcache *c, const uint8_t hash[DL_APIKEY_HASH_LEN],
			 const ingest_principal *who, int64_t now_ms, int64_t ttl_ms,
			 int64_t refresh_ms)
{
	entry **pp = find_slot(c, hash);
	bool valid = who != NULL;
	lru *l = &c->kinds[valid];
	entry *e = *pp;

	if (e) {
		*pp = e->chain;
		lru_unlink(&c->kinds[e->valid], e);
	} else {
		e = malloc(sizeof(*e));
		if (!e)
			return -ENOMEM;
	}
	if (l->count >= l->max)
		remove_entry(c, l->tail);
	memset(e, 0, sizeof(*e));
	memcpy(e->hash, hash, DL_APIKEY_HASH_LEN);
	e->valid = valid;
	e->expires_ms = now_ms + ttl_ms;
	e->refresh_ms = now_ms + (refresh_ms < ttl_ms ? refresh_ms : ttl_ms);
	if (who)
		e->who = *who;
	/* The slot may have moved if the evicted entry shared the bucket: find it again. */
	pp = find_slot(c, hash);
	e->chain = *pp;
	*pp = e;
	lru_push_front(l, e);
	return 0;
}

void ingest_authcache_forget(ingest_authcache *c, const uint8_t hash[DL_APIKEY_HASH_LEN])
{
	entry *e = *find_slot(c, hash);

	if (e)
		remove_entry(c, e);
}

size_t ingest_authcache_count(const ingest_authcache *c, bool valid)
{
	return c->kinds[valid].count;
}

void ingest_authcache_free(ingest_authcache *c)
{
	size_t k;

	if (!c)
		return;
	for (k = 0; k < 2; k++) {
		entry *e = c->kinds[k].head, *next;

		for (; e; e = next) {
			next = e->lru_next;
			free(e);
		}
	}
	free(c->buckets);
	free(c);
}
