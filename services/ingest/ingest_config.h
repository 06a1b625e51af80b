/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_config: driftlock-ingest's settings (environment variables; the table is in main.c,
 * documented in docs/configuration.md by infra/gen-config-docs.sh). */
#ifndef DL_INGEST_CONFIG_H
#define DL_INGEST_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/dl_service.h"

struct ingest_config {
	dl_service_config svc;
	char *kafka_brokers;
	char *pg_dsn;
	char *redis_url;
	char *http_addr;
	bool reuseport;     /* share the public port with other replicas (SO_REUSEPORT) */
	char *cors_origins; /* comma-separated exact origins; empty = CORS off */
	int64_t http_port;
	int64_t max_body;
	int64_t max_header;
	int64_t max_connections;
	int64_t request_timeout_ms;
	char *api_key_secret;         /* HMAC key of api_keys.key_hash (ingest_auth) */
	int64_t auth_cache_ttl_ms;    /* a valid key's cache life (<= 30 s) */
	int64_t auth_negative_ttl_ms; /* an unknown or revoked key's */
	int64_t auth_cache_keys;      /* valid keys cached */
	int64_t rl_lease_ms;          /* rate limit tokens taken per Redis call, in ms of rate */
	int64_t rl_timeout_ms;        /* Redis deadline before the rate limiter fails open */
	int64_t max_event_bytes;
	int64_t max_events;
	int64_t max_depth;
	int64_t producer_queue_max;
	int64_t produce_timeout_ms;
	int64_t linger_ms;
	int64_t db_threads;
	int64_t db_queue;
	int64_t db_statement_timeout_ms;
	/* GET /v1/stream/anomalies (ingest_sse) */
	int64_t sse_max_streams;         /* open streams per process; more get 503 */
	int64_t sse_max_streams_per_org; /* open streams per org; more get 429 */
	int64_t sse_heartbeat_ms;        /* a comment line after this much silence */
	int64_t sse_buffer_bytes;        /* bytes waiting for one client before it is dropped */
	int64_t sse_replay_max;          /* frames replayed per connection (then it reconnects) */
	int64_t sse_recent;              /* recent anomalies kept in memory for the replay seam */
};

#endif /* DL_INGEST_CONFIG_H */
