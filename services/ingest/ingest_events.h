/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_events: POST /v1/events, events into driftlock.events.v1, answered after Kafka's acks. */
#ifndef DL_INGEST_EVENTS_H
#define DL_INGEST_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "services/ingest/ingest.h"

typedef struct ingest_events ingest_events;

/* Registers POST /v1/events on ctx->http and its metrics. Returns 0 and *ret, or negative with
 * text in errbuf. Loop thread. */
int ingest_events_new(ingest_ctx *ctx, char *errbuf, size_t errlen, ingest_events **ret);

/* Requests waiting for Kafka's acknowledgements (the drain waits for 0). */
size_t ingest_events_inflight(const ingest_events *ev);

/* Frees it; requests still waiting keep their state until their deliveries are reported (the
 * producer is flushed or purged after this by dl_deps). Accepts NULL. */
void ingest_events_free(ingest_events *ev);

/* Writes the driftlock.event.v1 envelope of one event into buf (cap bytes): payload is copied
 * byte for byte. id, org_id and stream must already be valid (A-Za-z0-9._:- / a uuid), so no
 * escaping is needed. Returns the length written, or 0 when it does not fit. Thread-safe. */
size_t ingest_events_envelope(char *buf, size_t cap, const char *id, const char *org_id,
			      const char *stream, int64_t ts_ms, int64_t received_ms,
			      const char *payload, size_t payload_len);

#endif /* DL_INGEST_EVENTS_H */
