/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_auth: API keys. A key is "dlk_" plus base62 of 32 random bytes (256 bits), stored only
 * as HMAC-SHA-256(key secret, key); looked up through a short-lived cache so a revoked key stops
 * working within the cache TTL (at most 30 s). */
#ifndef DL_INGEST_AUTH_H
#define DL_INGEST_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "common/dl_metrics.h"
#include "services/ingest/ingest.h"

#define INGEST_AUTH_BILLING_GATE 1u /* also refuse suspended orgs and blocked quotas with 402 */

/* Bounds of the cache TTL (ms): a revoked key must stop working within 30 s. */
#define INGEST_AUTH_TTL_MAX_MS 30000
/* Look-ups in flight at once; more misses are answered 503 (the database pool is busy). */
#define INGEST_AUTH_MAX_PENDING 256
/* Requests waiting on one look-up; more are answered 503. */
#define INGEST_AUTH_MAX_WAITERS 1024

typedef struct ingest_auth_options {
	const char *secret;      /* the key secret (DRIFTLOCK_API_KEY_SECRET), >= 32 bytes; copied */
	size_t secret_len;
	int64_t ttl_ms;          /* a valid key's cache life, 1..30000 (0 = 10000) */
	int64_t negative_ttl_ms; /* an unknown or revoked key's, 1..ttl_ms (0 = min(5000, ttl)) */
	size_t max_keys;         /* valid keys cached (0 = 10000); invalid ones: a quarter, >= 16 */
} ingest_auth_options;

/* Makes the module: look-ups run on db's workers (the ingest role; dl_api_key_lookup, then the
 * org's plan, billing state and period usage inside dl_pg_begin_org), metrics register in
 * metrics. db and metrics must outlive it. Returns 0 and *ret, or -EINVAL (bad option, short
 * secret) / -ENOMEM / -EIO with text in errbuf; *ret untouched on failure. Loop thread. */
int ingest_auth_new(dl_pgpool *db, dl_metrics_registry *metrics, const ingest_auth_options *opts,
		    char *errbuf, size_t errlen, ingest_auth **ret);

/* The quota gate of INGEST_AUTH_BILLING_GATE reads the period's count of an org whose policy is
 * block from u (the live count metering keeps in Redis, at most a second old) instead of the
 * cached database value, when u has one. u may be NULL (database only); it must be freed before
 * a (ingest_usage_free serves what waits on it). Loop thread. */
void ingest_auth_set_usage(ingest_auth *a, ingest_usage *u);

/* Frees the module. Requests still waiting for a look-up are answered 503 at once; look-ups
 * still running finish harmlessly later (free the db pool before or after). Accepts NULL. */
void ingest_auth_free(ingest_auth *a);

/* Called once authentication succeeded; who is valid during the call only. */
typedef void (*ingest_auth_cb)(dl_http_req *req, const ingest_principal *who, void *arg);

/* Authenticates req from "Authorization: Bearer <key>" or "X-Api-Key: <key>". On success calls
 * cb (at once on a cache hit, else later on the loop). On failure replies itself and never
 * calls cb: 401 missing_api_key / invalid_api_key (unknown or revoked), 402 payment_required
 * (flags has INGEST_AUTH_BILLING_GATE and the org is suspended or over a blocking quota; the
 * body says which; the quota is checked against the live count, see ingest_auth_set_usage), 503 unavailable (database down and no cached answer; Retry-After). */
void ingest_auth_request(ingest_ctx *ctx, dl_http_req *req, unsigned flags, ingest_auth_cb cb,
			 void *arg);

#endif /* DL_INGEST_AUTH_H */
