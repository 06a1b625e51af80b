/* SPDX-License-Identifier: Apache-2.0 */
/* dl_main: the main() every DriftLock binary runs: argv, config, service shell, dependencies, loop. */
#include "common/dl_main.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/dl_log.h"

#define DL_MAIN_FLUSH_TIMEOUT_MS 5000

static const char *main_str(void *cfg, size_t offset)
{
	return *(char **)((char *)cfg + offset);
}

static int main_connect(const dl_main_spec *spec, dl_deps *deps, void *cfg, char *errbuf,
			size_t errlen)
{
	if (spec->pg_offset != DL_MAIN_UNUSED &&
	    dl_deps_use_pg(deps, main_str(cfg, spec->pg_offset), errbuf, errlen) < 0)
		return -1;
	if (spec->redis_offset != DL_MAIN_UNUSED &&
	    dl_deps_use_redis(deps, main_str(cfg, spec->redis_offset), errbuf, errlen) < 0)
		return -1;
	if (spec->kafka_offset != DL_MAIN_UNUSED &&
	    dl_deps_use_kafka(deps, main_str(cfg, spec->kafka_offset),
			      spec->kafka_conf ? spec->kafka_conf(cfg) : NULL, errbuf, errlen) < 0)
		return -1;
	return 0;
}

int dl_main_run(const dl_main_spec *spec, int argc, char **argv)
{
	char errbuf[512] = "";
	dl_service *svc = NULL;
	dl_deps *deps = NULL;
	void *state = NULL;
	void *cfg;
	int rc = 1, r;

	cfg = calloc(1, spec->config_size);
	if (!cfg) {
		fprintf(stderr, "%s: out of memory\n", spec->prog);
		return 1;
	}
	r = dl_service_args(argc, argv, spec->prog, spec->summary, spec->params, spec->nparams,
			    cfg);
	if (r != 0) {
		rc = r > 0 ? 0 : 2;
		goto out_free_config;
	}

	if (dl_service_new(spec->name, DRIFTLOCK_VERSION,
			   (const dl_service_config *)((char *)cfg + spec->svc_offset), &svc, errbuf,
			   sizeof(errbuf)) < 0) {
		fprintf(stderr, "%s: cannot start: %s\n", spec->prog, errbuf);
		goto out_free_config;
	}
	if (dl_deps_new(svc, &deps) < 0) {
		dl_log_error("cannot start", "error", "out of memory");
		goto out_free_service;
	}
	if (main_connect(spec, deps, cfg, errbuf, sizeof(errbuf)) < 0) {
		dl_log_error("cannot start", "error", errbuf);
		goto out_free_deps;
	}
	if (spec->setup && spec->setup(svc, deps, cfg, &state, errbuf, sizeof(errbuf)) < 0) {
		dl_log_error("cannot start", "error", errbuf);
		goto out_free_deps;
	}

	rc = dl_service_run(svc) == 0 ? 0 : 1;

	if (spec->teardown)
		spec->teardown(state);
out_free_deps:
	dl_deps_free(deps, DL_MAIN_FLUSH_TIMEOUT_MS);
out_free_service:
	dl_service_free(svc);
out_free_config:
	dl_config_free(spec->params, spec->nparams, cfg);
	free(cfg);
	return rc;
}
