/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_config: driftlock-ingest's settings (environment variables; the table is in main.c,
 * documented in docs/configuration.md by infra/gen-config-docs.sh). */
#ifndef DL_INGEST_CONFIG_H
#define DL_INGEST_CONFIG_H

#include <stdint.h>

#include "common/dl_service.h"

struct ingest_config {
	dl_service_config svc;
	char *kafka_brokers;
	char *pg_dsn;
	char *redis_url;
	char *http_addr;
	int64_t http_port;
	int64_t max_body;
	int64_t max_header;
	int64_t max_connections;
	int64_t request_timeout_ms;
	/* GET /v1/stream/anomalies (ingest_sse) */
	int64_t sse_max_streams;         /* open streams per process; more get 503 */
	int64_t sse_max_streams_per_org; /* open streams per org; more get 429 */
	int64_t sse_heartbeat_ms;        /* a comment line after this much silence */
	int64_t sse_buffer_bytes;        /* bytes waiting for one client before it is dropped */
	int64_t sse_replay_max;          /* frames replayed per connection (then it reconnects) */
	int64_t sse_recent;              /* recent anomalies kept in memory for the replay seam */
};

#endif /* DL_INGEST_CONFIG_H */
