/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_sse: GET /v1/stream/anomalies, the caller's org's new anomalies as Server-Sent Events,
 * live from driftlock.anomalies.v1 and, after a reconnect, replayed from PostgreSQL. */
#ifndef DL_INGEST_SSE_H
#define DL_INGEST_SSE_H

#include <stddef.h>

#include "services/ingest/ingest.h"

/*
 * Creates the module and registers its route on ctx->http. Needs ctx->base, ctx->http,
 * ctx->metrics, ctx->db and ctx->cfg (kafka_brokers and the sse_* settings of
 * ingest_config.h). Starts this process's own Kafka consumer of driftlock.anomalies.v1: a
 * consumer group of its own (a new random group id per process, auto.offset.reset=latest, no
 * commits), so every replica sees every anomaly from the moment it started; it is served from
 * the loop through the consumer's wake-up fd and never blocks it.
 * Returns 0 and *ret (the caller frees it with ingest_sse_free), or -EINVAL / -ENOMEM / the
 * consumer's error with text in errbuf; *ret untouched then. Loop thread.
 */
int ingest_sse_new(ingest_ctx *ctx, char *errbuf, size_t errlen, ingest_sse **ret);

/* Ends every open stream now (the clients reconnect elsewhere with their Last-Event-ID) and
 * answers later requests to the route 503 shutting_down. Idempotent. Loop thread. */
void ingest_sse_drain(ingest_sse *s);

/* Streams open now (a gauge; also a metric). */
size_t ingest_sse_clients(const ingest_sse *s);

/* Ends every stream, closes the consumer (leaving its group; this blocks up to the group's
 * answer) and frees the module. A replay still running in ctx->db finishes into nothing, so
 * ctx->db may be freed before or after. Accepts NULL. Loop thread. */
void ingest_sse_free(ingest_sse *s);

#endif /* DL_INGEST_SSE_H */
