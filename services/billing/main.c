/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-billing: Stripe webhooks, subscriptions, dunning and usage reporting (service shell: config, admin port, connections). */
#include <stddef.h>
#include <stdint.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_main.h"
#include "common/dl_service.h"

typedef struct billing_config {
	dl_service_config svc;
	char *kafka_brokers;
	char *pg_dsn;
} billing_config;

static const dl_config_param billing_params[] = {
	DL_SERVICE_CONFIG_PARAMS(billing_config, svc, "9104"),
	DL_DEPS_PARAM_KAFKA(billing_config, kafka_brokers),
	DL_DEPS_PARAM_PG(billing_config, pg_dsn),
};

static const dl_main_spec billing_spec = {
	.name = "billing",
	.prog = "driftlock-billing",
	.summary = "Applies Stripe webhooks, keeps subscriptions and dunning states, and reports overage usage to Stripe.",
	.params = billing_params,
	.nparams = sizeof(billing_params) / sizeof(billing_params[0]),
	.config_size = sizeof(billing_config),
	.svc_offset = offsetof(billing_config, svc),
	.kafka_offset = offsetof(billing_config, kafka_brokers),
	.pg_offset = offsetof(billing_config, pg_dsn),
	.redis_offset = DL_MAIN_UNUSED,
};

int main(int argc, char **argv)
{
	return dl_main_run(&billing_spec, argc, argv);
}
