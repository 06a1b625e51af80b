/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-detector: the Kafka consumer group that runs CBAD per stream (service shell: config, admin port, connections). */
#include <stddef.h>
#include <stdint.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_main.h"
#include "common/dl_service.h"

typedef struct detector_config {
	dl_service_config svc;
	char *kafka_brokers;
	char *pg_dsn;
	char *redis_url;
} detector_config;

static const dl_config_param detector_params[] = {
	DL_SERVICE_CONFIG_PARAMS(detector_config, svc, "9102"),
	DL_DEPS_PARAM_KAFKA(detector_config, kafka_brokers),
	DL_DEPS_PARAM_PG(detector_config, pg_dsn),
	DL_DEPS_PARAM_REDIS(detector_config, redis_url),
};

static const dl_main_spec detector_spec = {
	.name = "detector",
	.prog = "driftlock-detector",
	.summary = "Runs compression-based anomaly detection on every stream of driftlock.events.v1 and produces anomalies to driftlock.anomalies.v1.",
	.params = detector_params,
	.nparams = sizeof(detector_params) / sizeof(detector_params[0]),
	.config_size = sizeof(detector_config),
	.svc_offset = offsetof(detector_config, svc),
	.kafka_offset = offsetof(detector_config, kafka_brokers),
	.pg_offset = offsetof(detector_config, pg_dsn),
	.redis_offset = offsetof(detector_config, redis_url),
};

int main(int argc, char **argv)
{
	return dl_main_run(&detector_spec, argc, argv);
}
