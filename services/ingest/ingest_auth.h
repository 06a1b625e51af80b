/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_auth: API keys. A key is "dlk_" plus base62 of 32 random bytes (256 bits), stored only
 * as HMAC-SHA-256(key secret, key); looked up through a short-lived cache so a revoked key stops
 * working within the cache TTL (at most 30 s). */
#ifndef DL_INGEST_AUTH_H
#define DL_INGEST_AUTH_H

#include "services/ingest/ingest.h"

#define INGEST_AUTH_BILLING_GATE 1u /* also refuse suspended orgs and blocked quotas with 402 */

/* Called once authentication succeeded; who is valid during the call only. */
typedef void (*ingest_auth_cb)(dl_http_req *req, const ingest_principal *who, void *arg);

/* Authenticates req from "Authorization: Bearer <key>" or "X-Api-Key: <key>". On success calls
 * cb (at once on a cache hit, else later on the loop). On failure replies itself and never
 * calls cb: 401 missing_api_key / invalid_api_key (unknown or revoked), 402 payment_required
 * (flags has INGEST_AUTH_BILLING_GATE and the org is suspended or over a blocking quota; the
 * body says which), 503 unavailable (database down and no cached answer; Retry-After). */
void ingest_auth_request(ingest_ctx *ctx, dl_http_req *req, unsigned flags, ingest_auth_cb cb,
			 void *arg);

#endif /* DL_INGEST_AUTH_H */
