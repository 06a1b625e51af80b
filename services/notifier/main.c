/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-notifier: sends notification emails through Resend (service shell: config, admin port, connections). */
#include <stddef.h>
#include <stdint.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_main.h"
#include "common/dl_service.h"

typedef struct notifier_config {
	dl_service_config svc;
	char *kafka_brokers;
	char *pg_dsn;
} notifier_config;

static const dl_config_param notifier_params[] = {
	DL_SERVICE_CONFIG_PARAMS(notifier_config, svc, "9105"),
	DL_DEPS_PARAM_KAFKA(notifier_config, kafka_brokers),
	DL_DEPS_PARAM_PG(notifier_config, pg_dsn),
};

static const dl_main_spec notifier_spec = {
	.name = "notifier",
	.prog = "driftlock-notifier",
	.summary = "Sends the emails of driftlock.notifications.v1 through Resend, with retries, idempotency keys and a record of every attempt.",
	.params = notifier_params,
	.nparams = sizeof(notifier_params) / sizeof(notifier_params[0]),
	.config_size = sizeof(notifier_config),
	.svc_offset = offsetof(notifier_config, svc),
	.kafka_offset = offsetof(notifier_config, kafka_brokers),
	.pg_offset = offsetof(notifier_config, pg_dsn),
	.redis_offset = DL_MAIN_UNUSED,
};

int main(int argc, char **argv)
{
	return dl_main_run(&notifier_spec, argc, argv);
}
