/* SPDX-License-Identifier: Apache-2.0 */
/* dl_deps: a service's connections to PostgreSQL, Redis and Kafka, kept up by its readiness checks. */
#ifndef DL_COMMON_DEPS_H
#define DL_COMMON_DEPS_H

#include <stddef.h>

#include "common/dl_kafka.h"
#include "common/dl_pg.h"
#include "common/dl_redis.h"
#include "common/dl_service.h"

typedef struct dl_deps dl_deps;

/* Configuration rows for the dependencies; a service lists the ones it uses in its table. */
#define DL_DEPS_PARAM_KAFKA(type, field)                                                        \
	{ "DRIFTLOCK_KAFKA_BROKERS", DL_CONFIG_STRING, offsetof(type, field), "127.0.0.1:9092", 0, \
	  0, NULL, "Kafka bootstrap servers, comma-separated host:port." }
#define DL_DEPS_PARAM_PG(type, field)                                                           \
	{ "DRIFTLOCK_PG_DSN", DL_CONFIG_SECRET, offsetof(type, field), NULL, 0, 0, NULL,           \
	  "PostgreSQL connection string (URI or key=value) for this service's role. Required." }
#define DL_DEPS_PARAM_REDIS(type, field)                                                        \
	{ "DRIFTLOCK_REDIS_URL", DL_CONFIG_SECRET, offsetof(type, field),                          \
	  "redis://127.0.0.1:6379/0", 0, 0, NULL,                                                  \
	  "Redis URL, redis://[:password@]host:port[/db]." }

/* Creates the dependency set of svc (which must outlive it). Returns 0 or -ENOMEM. */
int dl_deps_new(dl_service *svc, dl_deps **ret);

/* Each use_* registers a readiness check named "postgres", "redis" or "kafka" and tries to
 * connect at once. A failed connection is not an error here: the service starts not ready and
 * the check reconnects every check interval. Returns 0, -EINVAL for an unusable address
 * (errbuf says why), or -ENOMEM. The strings are copied. Call from the loop thread. */
int dl_deps_use_pg(dl_deps *d, const char *dsn, char *errbuf, size_t errlen);
int dl_deps_use_redis(dl_deps *d, const char *url, char *errbuf, size_t errlen);
/* A producer (idempotent, acks=all) whose delivery reports are served from the loop.
 * extra_conf is NULL or librdkafka key, value pairs, NULL-terminated (dl_kafka_producer_new). */
int dl_deps_use_kafka(dl_deps *d, const char *brokers, const char *const *extra_conf,
		      char *errbuf, size_t errlen);

/* The live connections, or NULL while down (or not used). Owned by d. */
dl_pg *dl_deps_pg(dl_deps *d);
dl_redis *dl_deps_redis(dl_deps *d);
dl_kafka_producer *dl_deps_kafka(dl_deps *d);

/* Flushes the producer (bounded by timeout_ms) and closes everything. Accepts NULL. */
void dl_deps_free(dl_deps *d, int flush_timeout_ms);

#endif /* DL_COMMON_DEPS_H */
