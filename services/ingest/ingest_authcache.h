/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_authcache: the bounded, expiring cache of API key look-ups, keyed by the key's hash
 * (pure: the caller passes the time; loop thread only). */
#ifndef DL_INGEST_AUTHCACHE_H
#define DL_INGEST_AUTHCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dl_apikey.h"
#include "services/ingest/ingest.h"

typedef struct ingest_authcache ingest_authcache;

typedef enum {
	INGEST_AUTHCACHE_MISS,    /* absent or expired: look it up */
	INGEST_AUTHCACHE_VALID,   /* a known active key */
	INGEST_AUTHCACHE_INVALID, /* a recent look-up found no active key */
} ingest_authcache_result;

/* Makes a cache holding at most max_valid valid and max_invalid invalid entries (each >= 1),
 * each kind evicting its least recently used entry when full, so a flood of bad keys never
 * pushes good ones out. Returns 0 and *ret, or -EINVAL / -ENOMEM. */
int ingest_authcache_new(size_t max_valid, size_t max_invalid, ingest_authcache **ret);

/* Looks hash up at now_ms. VALID copies the principal into *ret_who (may be NULL); INVALID;
 * MISS when absent or expired (an expired entry is dropped). For VALID, *ret_refresh (may be
 * NULL) is set true when the entry has passed its refresh time: the caller should look the key
 * up again in the background while still using this answer; the refresh time is then pushed
 * back by retry_ms so only one refresh is started at a time. */
ingest_authcache_result ingest_authcache_get(ingest_authcache *c,
					     const uint8_t hash[DL_APIKEY_HASH_LEN],
					     int64_t now_ms, int64_t retry_ms, ingest_principal *ret_who,
					     bool *ret_refresh);

/* Stores a look-up result at now_ms, replacing any entry for hash: who (copied) for a valid key,
 * NULL for an invalid one. The entry expires at now_ms + ttl_ms; a valid one is due for a
 * refresh at now_ms + refresh_ms (<= ttl_ms). Returns 0 or -ENOMEM (nothing cached). */
int ingest_authcache_put(ingest_authcache *c, const uint8_t hash[DL_APIKEY_HASH_LEN],
			 const ingest_principal *who, int64_t now_ms, int64_t ttl_ms,
			 int64_t refresh_ms);

/* Drops the entry for hash, if any. */
void ingest_authcache_forget(ingest_authcache *c, const uint8_t hash[DL_APIKEY_HASH_LEN]);

/* Entries held of one kind (valid true) or the other (expired ones not yet dropped included). */
size_t ingest_authcache_count(const ingest_authcache *c, bool valid);

/* Frees c. Accepts NULL. */
void ingest_authcache_free(ingest_authcache *c);

#endif /* DL_INGEST_AUTHCACHE_H */
