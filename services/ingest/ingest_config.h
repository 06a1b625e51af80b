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
};

#endif /* DL_INGEST_CONFIG_H */
