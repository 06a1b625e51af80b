/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-metering: stores and counts anomalies for billing (service shell: config, admin port, connections). */
#include <stddef.h>
#include <stdint.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_main.h"
#include "common/dl_service.h"

typedef struct metering_config {
	dl_service_config svc;
	char *kafka_brokers;
	char *pg_dsn;
	char *redis_url;
} metering_config;

static const dl_config_param metering_params[] = {
	DL_SERVICE_CONFIG_PARAMS(metering_config, svc, "9103"),
	DL_DEPS_PARAM_KAFKA(metering_config, kafka_brokers),
	DL_DEPS_PARAM_PG(metering_config, pg_dsn),
	DL_DEPS_PARAM_REDIS(metering_config, redis_url),
};

static const dl_main_spec metering_spec = {
	.name = "metering",
	.prog = "driftlock-metering",
	.summary = "Stores and counts every anomaly of driftlock.anomalies.v1 in PostgreSQL, keeps live usage in Redis and emits usage-threshold notifications and usage records.",
	.params = metering_params,
	.nparams = sizeof(metering_params) / sizeof(metering_params[0]),
	.config_size = sizeof(metering_config),
	.svc_offset = offsetof(metering_config, svc),
	.kafka_offset = offsetof(metering_config, kafka_brokers),
	.pg_offset = offsetof(metering_config, pg_dsn),
	.redis_offset = offsetof(metering_config, redis_url),
};

int main(int argc, char **argv)
{
	return dl_main_run(&metering_spec, argc, argv);
}
