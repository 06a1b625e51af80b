/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_read: the read API (anomalies, streams, usage) served from PostgreSQL, each query in a
 * transaction scoped to the caller's org by row-level security. */
#ifndef DL_INGEST_READ_H
#define DL_INGEST_READ_H

#include <stddef.h>

#include "services/ingest/ingest.h"

/* Registers on ctx->http, each authenticated with ingest_auth_request (no billing gate) and
 * answered from a job on ctx->db:
 *   GET   /v1/anomalies             list, filters and cursor pages, newest first
 *   GET   /v1/anomalies/{id}        one anomaly with its explanation, evidence and history
 *   PATCH /v1/anomalies/{id}        status and note (recorded in anomaly_status_history)
 *   GET   /v1/streams               list, cursor pages by name
 *   GET   /v1/streams/{stream}      one stream: status, calibration, counters, settings
 *   PUT   /v1/streams/{stream}      sensitivity and detector settings (creates the row)
 *   GET   /v1/usage                 the current billing period against the plan
 * and the metrics driftlock_ingest_read_db_seconds{route} and
 * driftlock_ingest_read_failures_total{route,reason} on ctx->metrics.
 * ctx must outlive the server (the routes keep it). Call once, on the loop thread, after
 * ctx->http, ctx->db, ctx->auth and ctx->metrics exist. Returns 0, or a negative errno from
 * dl_http_route / -ENOMEM with text in errbuf. */
int ingest_read_register(ingest_ctx *ctx, char *errbuf, size_t errlen);

#endif /* DL_INGEST_READ_H */
