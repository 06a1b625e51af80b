/* SPDX-License-Identifier: Apache-2.0 */
/* dl_main: the main() every DriftLock binary runs: argv, config, service shell, dependencies, loop. */
#ifndef DL_COMMON_MAIN_H
#define DL_COMMON_MAIN_H

#include <stddef.h>
#include <stdint.h>

#include "common/dl_config.h"
#include "common/dl_deps.h"
#include "common/dl_service.h"

#define DL_MAIN_UNUSED SIZE_MAX

/* What a binary is: its name, its config table and where in its config struct dl_main finds
 * the shared parts. Offsets of dependencies the binary does not use are DL_MAIN_UNUSED. */
typedef struct dl_main_spec {
	const char *name;    /* "ingest": the service name in logs and metrics */
	const char *prog;    /* "driftlock-ingest" */
	const char *summary; /* one paragraph for --help */
	const dl_config_param *params;
	size_t nparams;
	size_t config_size;
	size_t svc_offset;   /* dl_service_config */
	size_t kafka_offset; /* char *brokers */
	size_t pg_offset;    /* char *dsn */
	size_t redis_offset; /* char *url */
	/* librdkafka settings for the producer built from the config (NULL-terminated key, value
	 * pairs valid until exit), or NULL for the defaults. May be NULL. */
	const char *const *(*kafka_conf)(const void *cfg);
	/* Plugs the business modules in once the shell and dependencies exist; may be NULL.
	 * Returns 0, or negative with text in errbuf to stop the start (exit 1). */
	int (*setup)(dl_service *svc, dl_deps *deps, void *cfg, void **ret_state, char *errbuf,
		     size_t errlen);
	/* Frees what setup made, after the loop ended; may be NULL. */
	void (*teardown)(void *state);
} dl_main_spec;

/* Runs the binary and returns its exit code: 0 after a clean drain, 1 on a start failure or a
 * forced exit, 2 on a usage or configuration error. */
int dl_main_run(const dl_main_spec *spec, int argc, char **argv);

#endif /* DL_COMMON_MAIN_H */
