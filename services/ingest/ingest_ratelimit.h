/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_ratelimit: events per second per API key and per org, from the org's plan, shared by
 * every ingest replica through Redis. */
#ifndef DL_INGEST_RATELIMIT_H
#define DL_INGEST_RATELIMIT_H

#include "services/ingest/ingest.h"

typedef void (*ingest_rl_cb)(dl_http_req *req, void *arg);

/* Takes cost events from who's key and org budgets. Sets X-RateLimit-Limit and
 * X-RateLimit-Remaining on req. Allowed: calls cb (at once or later on the loop). Refused:
 * replies 429 rate_limited with Retry-After and a JSON body naming the limit, never calls cb. */
void ingest_ratelimit_take(ingest_ctx *ctx, dl_http_req *req, const ingest_principal *who,
			   int64_t cost, ingest_rl_cb cb, void *arg);

#endif /* DL_INGEST_RATELIMIT_H */
