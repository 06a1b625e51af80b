/* SPDX-License-Identifier: Apache-2.0 */
/* dl_service: what every DriftLock binary shares: argv and config, logging, the admin port
 * (/healthz, /readyz, /metrics), readiness checks, and draining on SIGTERM/SIGINT. */
#ifndef DL_COMMON_SERVICE_H
#define DL_COMMON_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "common/dl_config.h"
#include "common/dl_metrics.h"

typedef struct dl_service dl_service;

/* The part of every service's configuration that dl_service reads. A service embeds it in its
 * own config struct and lists DL_SERVICE_CONFIG_PARAMS in its table. */
typedef struct dl_service_config {
	char *log_level;
	char *admin_addr;
	int64_t admin_port;
	int64_t drain_timeout_ms;
	int64_t check_interval_ms;
} dl_service_config;

#define DL_SERVICE_CONFIG_PARAMS(type, member, admin_port_default)                          \
	{ "DRIFTLOCK_LOG_LEVEL", DL_CONFIG_ENUM, offsetof(type, member.log_level), "info", 0, 0, \
	  "debug|info|warn|error", "Lowest level of the JSON log records written to stderr." },  \
	{ "DRIFTLOCK_ADMIN_ADDR", DL_CONFIG_STRING, offsetof(type, member.admin_addr),           \
	  "127.0.0.1", 0, 0, NULL,                                                               \
	  "Address of the admin HTTP server (/healthz, /readyz, /metrics)." },                   \
	{ "DRIFTLOCK_ADMIN_PORT", DL_CONFIG_INT, offsetof(type, member.admin_port),              \
	  admin_port_default, 0, 65535, NULL, "Port of the admin HTTP server (0 = any free port)." }, \
	{ "DRIFTLOCK_DRAIN_TIMEOUT", DL_CONFIG_DURATION_MS,                                      \
	  offsetof(type, member.drain_timeout_ms), "20s", 0, 600000, NULL,                       \
	  "After SIGTERM, how long in-flight work may take before the process exits anyway." },  \
	{ "DRIFTLOCK_CHECK_INTERVAL", DL_CONFIG_DURATION_MS,                                     \
	  offsetof(type, member.check_interval_ms), "2s", 100, 60000, NULL,                      \
	  "How often readiness checks (and reconnects) run." }

/* What main() does with argv before anything else: --help prints the config table and the
 * summary, --help-markdown prints it as Markdown (docs/configuration.md), --version prints the
 * version. Otherwise it loads the configuration from the environment.
 * Returns 0 to go on, 1 when the process should exit 0 (help printed), -1 when it should exit 2
 * (usage or configuration error, already printed on stderr naming the variable). */
int dl_service_args(int argc, char **argv, const char *prog, const char *summary,
		    const dl_config_param *params, size_t nparams, void *cfg);

/* A readiness check: 0 when the dependency is usable, else negative with a reason in errbuf.
 * Called from the event loop every check interval; may block for at most its own timeouts. */
typedef int (*dl_service_check_fn)(void *opaque, char *errbuf, size_t errlen);

/* Called once, from the loop, when SIGTERM or SIGINT arrives. The service stops taking new work
 * and calls dl_service_drained() when what it holds is finished (or the drain timeout passes). */
typedef void (*dl_service_drain_fn)(dl_service *svc, void *opaque);

/* Creates the service: logging set up under `name`, one event_base, the admin HTTP server
 * listening, signal handlers installed, a metrics registry with build info, uptime, readiness
 * and process metrics. On error returns negative with text in errbuf and nothing is left. */
int dl_service_new(const char *name, const char *version, const dl_service_config *cfg,
		   dl_service **ret, char *errbuf, size_t errlen);

struct event_base *dl_service_base(dl_service *svc);
dl_metrics_registry *dl_service_metrics(dl_service *svc);
const char *dl_service_name(const dl_service *svc);
int dl_service_admin_port(const dl_service *svc);

/* Adds a named readiness check; /readyz is 200 only when every check passed on its last run. The
 * name appears in /readyz and in the driftlock_dependency_up metric. Returns 0 or -ENOMEM. */
int dl_service_add_check(dl_service *svc, const char *name, dl_service_check_fn fn, void *opaque);

/* Runs every check now (also done on the timer); returns true when all pass. */
bool dl_service_check_now(dl_service *svc);

/* Sets the drain callback (at most one). Without one, SIGTERM ends the loop at once. */
void dl_service_on_drain(dl_service *svc, dl_service_drain_fn fn, void *opaque);

/* Tells the service that draining finished: the loop exits after this turn. */
void dl_service_drained(dl_service *svc);

/* True once SIGTERM/SIGINT was received. */
bool dl_service_draining(const dl_service *svc);

/* Runs the event loop until drained. Returns 0 on a clean drain, -ETIMEDOUT when the drain
 * timeout forced the exit, other negative values on loop failure. */
int dl_service_run(dl_service *svc);

void dl_service_free(dl_service *svc);

#endif /* DL_COMMON_SERVICE_H */
