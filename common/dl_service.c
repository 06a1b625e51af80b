/* SPDX-License-Identifier: Apache-2.0 */
/* dl_service: argv, config, admin endpoints, readiness and draining shared by every binary. */
#include "common/dl_service.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "common/dl_http.h"
#include "common/dl_kafka.h"
#include "common/dl_log.h"
#include "common/dl_time.h"

#define DL_SERVICE_MAX_CHECKS 16
#define DL_SERVICE_REASON_LEN 256

typedef struct dl_service_check {
	char *name;
	dl_service_check_fn fn;
	void *opaque;
	bool ok;
	char reason[DL_SERVICE_REASON_LEN];
} dl_service_check;

struct dl_service {
	char *name;
	char *version;
	dl_service_config cfg;
	struct event_base *base;
	dl_http_server *admin;
	int admin_port;
	dl_metrics_registry *metrics;

	dl_metric *m_build_info;
	dl_metric *m_start_time;
	dl_metric *m_ready;
	dl_metric *m_dep_up;
	dl_metric *m_http_requests;
	dl_metric *m_http_duration;
	dl_metric *m_rss;
	dl_metric *m_cpu;
	dl_metric *m_fds;

	dl_service_check checks[DL_SERVICE_MAX_CHECKS];
	size_t nchecks;
	bool ready;

	struct event *sigterm;
	struct event *sigint;
	struct event *check_timer;
	struct event *drain_timer;

	dl_service_drain_fn drain_fn;
	void *drain_opaque;
	bool draining;
	bool drained;
	bool timed_out;
	int64_t started_ms;
	double cpu_reported;
};

int dl_service_args(int argc, char **argv, const char *prog, const char *summary,
		    const dl_config_param *params, size_t nparams, void *cfg)
{
	char errbuf[512];
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			dl_config_print_help(stdout, prog, summary, params, nparams);
			return 1;
		}
		if (!strcmp(argv[i], "--help-markdown")) {
			dl_config_print_markdown(stdout, prog, summary, params, nparams);
			return 1;
		}
		if (!strcmp(argv[i], "--version")) {
			printf("%s %s\n", prog, DRIFTLOCK_VERSION);
			return 1;
		}
		fprintf(stderr, "%s: unknown argument '%s' (configuration comes from the "
			"environment; see %s --help)\n", prog, argv[i], prog);
		return -1;
	}
	if (dl_config_load(params, nparams, cfg, errbuf, sizeof(errbuf)) < 0) {
		fprintf(stderr, "%s: configuration error: %s (see %s --help)\n", prog, errbuf,
			prog);
		return -1;
	}
	return 0;
}

/* Process metrics are read from /proc when /metrics is scraped. */
static void service_update_process_metrics(dl_service *svc)
{
	FILE *f;
	long pages = 0, rss = 0;
	struct timespec ts;
	int fds = 0;
	DIR *dir;
	struct dirent *de;

	f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) == 2)
			dl_metric_set(svc->m_rss, NULL, (double)rss * (double)sysconf(_SC_PAGESIZE));
		fclose(f);
	}
	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0) {
		double cpu = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;

		/* A counter only moves forward: add what was used since the last scrape. */
		if (cpu > svc->cpu_reported) {
			dl_metric_inc(svc->m_cpu, NULL, cpu - svc->cpu_reported);
			svc->cpu_reported = cpu;
		}
	}
	dir = opendir("/proc/self/fd");
	if (dir) {
		while ((de = readdir(dir)))
			if (de->d_name[0] != '.')
				fds++;
		closedir(dir);
		/* Do not count the descriptor opendir itself holds. */
		dl_metric_set(svc->m_fds, NULL, fds - 1);
	}
}

static void service_handle_healthz(dl_http_req *req, void *opaque)
{
	dl_service *svc = opaque;
	char body[256];
	int n;

	n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"service\":\"%s\",\"version\":\"%s\"}",
		     svc->name, svc->version);
	dl_http_reply_json_text(req, 200, body, (size_t)n);
}

static void service_handle_readyz(dl_http_req *req, void *opaque)
{
	dl_service *svc = opaque;
	cJSON *body, *checks;
	size_t i;
	bool ready = svc->ready && !svc->draining;

	body = cJSON_CreateObject();
	if (!body) {
		dl_http_reply_error(req, 500, "internal_error", "out of memory");
		return;
	}
	cJSON_AddStringToObject(body, "status",
				svc->draining ? "draining" : (ready ? "ready" : "not_ready"));
	checks = cJSON_AddObjectToObject(body, "checks");
	for (i = 0; checks && i < svc->nchecks; i++)
		cJSON_AddStringToObject(checks, svc->checks[i].name,
					svc->checks[i].ok ? "ok" : svc->checks[i].reason);
	dl_http_reply_json(req, ready ? 200 : 503, body);
	cJSON_Delete(body);
}

static void service_handle_metrics(dl_http_req *req, void *opaque)
{
	dl_service *svc = opaque;
	char *text = NULL;
	size_t len = 0;

	service_update_process_metrics(svc);
	if (dl_metrics_render(svc->metrics, &text, &len) < 0) {
		dl_http_reply_error(req, 500, "internal_error", "could not render metrics");
		return;
	}
	dl_http_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
}

static void service_observe(const char *route, const char *method, int status, double seconds,
			    const char *request_id, void *opaque)
{
	dl_service *svc = opaque;
	char code[8];
	const char *labels[3];

	(void)request_id;
	snprintf(code, sizeof(code), "%d", status);
	labels[0] = route ? route : "unmatched";
	labels[1] = method;
	labels[2] = code;
	dl_metric_inc(svc->m_http_requests, labels, 1);
	dl_metric_observe(svc->m_http_duration, labels, seconds);
}

bool dl_service_check_now(dl_service *svc)
{
	bool all = true;
	size_t i;

	for (i = 0; i < svc->nchecks; i++) {
		dl_service_check *c = &svc->checks[i];
		char reason[DL_SERVICE_REASON_LEN] = "";
		bool ok = c->fn(c->opaque, reason, sizeof(reason)) == 0;
		const char *label[1] = { c->name };

		if (ok != c->ok || (!ok && strcmp(reason, c->reason)))
			dl_log_write(ok ? DL_LOG_INFO : DL_LOG_WARN,
				     ok ? "dependency up" : "dependency down", "dependency", c->name,
				     "reason", ok ? "" : reason, (const char *)NULL);
		c->ok = ok;
		snprintf(c->reason, sizeof(c->reason), "%s", ok ? "ok" : reason);
		dl_metric_set(svc->m_dep_up, label, ok ? 1 : 0);
		all = all && ok;
	}
	if (all != svc->ready)
		dl_log_write(DL_LOG_INFO, all ? "ready" : "not ready", (const char *)NULL);
	svc->ready = all;
	dl_metric_set(svc->m_ready, NULL, all && !svc->draining ? 1 : 0);
	return all;
}

static void service_check_cb(evutil_socket_t fd, short what, void *opaque)
{
	(void)fd;
	(void)what;
	dl_service_check_now(opaque);
}

static void service_drain_timeout_cb(evutil_socket_t fd, short what, void *opaque)
{
	dl_service *svc = opaque;

	(void)fd;
	(void)what;
	dl_log_write(DL_LOG_WARN, "drain timeout reached, exiting with work in flight",
		     (const char *)NULL);
	svc->timed_out = true;
	event_base_loopexit(svc->base, NULL);
}

static void service_signal_cb(evutil_socket_t sig, short what, void *opaque)
{
	dl_service *svc = opaque;
	struct timeval tv;

	(void)what;
	if (svc->draining) {
		dl_log_write(DL_LOG_WARN, "second signal, exiting now", (const char *)NULL);
		svc->timed_out = true;
		event_base_loopexit(svc->base, NULL);
		return;
	}
	svc->draining = true;
	dl_metric_set(svc->m_ready, NULL, 0);
	dl_log_write(DL_LOG_INFO, "draining", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT",
		     (const char *)NULL);
	tv.tv_sec = svc->cfg.drain_timeout_ms / 1000;
	tv.tv_usec = (svc->cfg.drain_timeout_ms % 1000) * 1000;
	evtimer_add(svc->drain_timer, &tv);
	if (svc->drain_fn)
		svc->drain_fn(svc, svc->drain_opaque);
	else
		dl_service_drained(svc);
}

static int service_register_metrics(dl_service *svc)
{
	static const double http_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
					       0.05,   0.1,   0.25,   0.5,   1,    2.5 };
	const char *build_labels[2] = { svc->name, svc->version };
	dl_metrics_registry *r = svc->metrics;

	svc->m_build_info = dl_metrics_gauge(r, "driftlock_build_info",
					     "Always 1; labels name the service and its version.", 2,
					     "service", "version");
	svc->m_start_time = dl_metrics_gauge(r, "process_start_time_seconds",
					     "Start time of the process since the Unix epoch.", 0);
	svc->m_ready = dl_metrics_gauge(r, "driftlock_ready",
					"1 when every readiness check passes and the service is not draining.",
					0);
	svc->m_dep_up = dl_metrics_gauge(r, "driftlock_dependency_up",
					 "1 when the named dependency passed its last check.", 1,
					 "dependency");
	svc->m_http_requests = dl_metrics_counter(r, "driftlock_admin_http_requests_total",
						  "Admin HTTP requests by route, method and status.", 3,
						  "route", "method", "status");
	svc->m_http_duration = dl_metrics_histogram(
		r, "driftlock_admin_http_request_duration_seconds",
		"Admin HTTP request latency by route, method and status.", http_buckets,
		sizeof(http_buckets) / sizeof(http_buckets[0]), 3, "route", "method", "status");
	svc->m_rss = dl_metrics_gauge(r, "process_resident_memory_bytes",
				      "Resident memory size in bytes.", 0);
	svc->m_cpu = dl_metrics_counter(r, "process_cpu_seconds_total",
					"CPU time used by the process, in seconds.", 0);
	svc->m_fds = dl_metrics_gauge(r, "process_open_fds", "Open file descriptors.", 0);
	if (!svc->m_build_info || !svc->m_start_time || !svc->m_ready || !svc->m_dep_up ||
	    !svc->m_http_requests || !svc->m_http_duration || !svc->m_rss || !svc->m_cpu ||
	    !svc->m_fds)
		return -ENOMEM;
	dl_metric_set(svc->m_build_info, build_labels, 1);
	dl_metric_set(svc->m_start_time, NULL, (double)svc->started_ms / 1000.0);
	return 0;
}

/* librdkafka's log lines become JSON records of the service (called from its threads; dl_log
 * is thread-safe). Syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug. */
static void service_kafka_log(int level, const char *facility, const char *client,
			      const char *message)
{
	dl_log_level lvl = level <= 3 ? DL_LOG_ERROR :
			   level == 4 ? DL_LOG_WARN :
			   level <= 6 ? DL_LOG_INFO : DL_LOG_DEBUG;

	dl_log_write(lvl, message, "component", "kafka", "facility", facility, "client", client,
		     (const char *)NULL);
}

int dl_service_new(const char *name, const char *version, const dl_service_config *cfg,
		   dl_service **ret, char *errbuf, size_t errlen)
{
	dl_service *svc;
	dl_log_level level = DL_LOG_INFO;
	dl_http_limits limits = { 0 };
	int r;

	if (cfg->log_level && dl_log_level_parse(cfg->log_level, &level) < 0) {
		snprintf(errbuf, errlen, "DRIFTLOCK_LOG_LEVEL: unknown level '%s'", cfg->log_level);
		return -EINVAL;
	}
	dl_log_setup(name, level, STDERR_FILENO);
	dl_kafka_set_log_fn(service_kafka_log);

	svc = calloc(1, sizeof(*svc));
	if (!svc) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	svc->cfg = *cfg;
	svc->name = strdup(name);
	svc->version = strdup(version);
	svc->started_ms = dl_time_now_ms();
	if (!svc->name || !svc->version) {
		snprintf(errbuf, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free;
	}

	svc->base = event_base_new();
	if (!svc->base) {
		snprintf(errbuf, errlen, "event_base_new failed");
		r = -ENOMEM;
		goto out_free;
	}

	svc->metrics = dl_metrics_registry_new();
	if (!svc->metrics || service_register_metrics(svc) < 0) {
		snprintf(errbuf, errlen, "could not create the metrics registry");
		r = -ENOMEM;
		goto out_free;
	}

	svc->sigterm = evsignal_new(svc->base, SIGTERM, service_signal_cb, svc);
	svc->sigint = evsignal_new(svc->base, SIGINT, service_signal_cb, svc);
	svc->check_timer = event_new(svc->base, -1, EV_PERSIST, service_check_cb, svc);
	svc->drain_timer = evtimer_new(svc->base, service_drain_timeout_cb, svc);
	if (!svc->sigterm || !svc->sigint || !svc->check_timer || !svc->drain_timer ||
	    evsignal_add(svc->sigterm, NULL) < 0 || evsignal_add(svc->sigint, NULL) < 0) {
		snprintf(errbuf, errlen, "could not install signal handlers");
		r = -EIO;
		goto out_free;
	}
	/* A peer closing a socket must not kill the process. */
	signal(SIGPIPE, SIG_IGN);

	limits.max_body_bytes = 64 * 1024;
	limits.max_header_bytes = 16 * 1024;
	limits.max_connections = 64;
	limits.request_timeout_s = 10;
	r = dl_http_server_new(svc->base, &limits, errbuf, errlen, &svc->admin);
	if (r < 0)
		goto out_free;
	dl_http_server_set_observer(svc->admin, service_observe, svc);
	if (dl_http_route(svc->admin, "GET", "/healthz", service_handle_healthz, svc, "healthz") <
		    0 ||
	    dl_http_route(svc->admin, "GET", "/readyz", service_handle_readyz, svc, "readyz") < 0 ||
	    dl_http_route(svc->admin, "GET", "/metrics", service_handle_metrics, svc, "metrics") <
		    0) {
		snprintf(errbuf, errlen, "could not register admin routes");
		r = -ENOMEM;
		goto out_free;
	}
	r = dl_http_server_listen(svc->admin, cfg->admin_addr, (int)cfg->admin_port,
				  &svc->admin_port);
	if (r < 0) {
		char why[256];

		snprintf(why, sizeof(why), "%s", errbuf);
		snprintf(errbuf, errlen, "admin server on %s:%lld: %s", cfg->admin_addr,
			 (long long)cfg->admin_port, why);
		goto out_free;
	}

	*ret = svc;
	return 0;

out_free:
	dl_service_free(svc);
	return r;
}

struct event_base *dl_service_base(dl_service *svc)
{
	return svc->base;
}

dl_metrics_registry *dl_service_metrics(dl_service *svc)
{
	return svc->metrics;
}

const char *dl_service_name(const dl_service *svc)
{
	return svc->name;
}

int dl_service_admin_port(const dl_service *svc)
{
	return svc->admin_port;
}

int dl_service_add_check(dl_service *svc, const char *name, dl_service_check_fn fn, void *opaque)
{
	dl_service_check *c;

	if (svc->nchecks == DL_SERVICE_MAX_CHECKS)
		return -ENOSPC;
	c = &svc->checks[svc->nchecks];
	c->name = strdup(name);
	if (!c->name)
		return -ENOMEM;
	c->fn = fn;
	c->opaque = opaque;
	c->ok = false;
	snprintf(c->reason, sizeof(c->reason), "not checked yet");
	svc->nchecks++;
	return 0;
}

void dl_service_on_drain(dl_service *svc, dl_service_drain_fn fn, void *opaque)
{
	svc->drain_fn = fn;
	svc->drain_opaque = opaque;
}

void dl_service_drained(dl_service *svc)
{
	svc->drained = true;
	event_base_loopexit(svc->base, NULL);
}

bool dl_service_draining(const dl_service *svc)
{
	return svc->draining;
}

int dl_service_run(dl_service *svc)
{
	struct timeval tv;
	char port[16];

	tv.tv_sec = svc->cfg.check_interval_ms / 1000;
	tv.tv_usec = (svc->cfg.check_interval_ms % 1000) * 1000;
	event_add(svc->check_timer, &tv);
	dl_service_check_now(svc);
	snprintf(port, sizeof(port), "%d", svc->admin_port);
	dl_log_write(DL_LOG_INFO, "started", "version", svc->version, "admin_addr",
		     svc->cfg.admin_addr, "admin_port", port, (const char *)NULL);

	if (event_base_dispatch(svc->base) < 0)
		return -EIO;
	dl_log_write(DL_LOG_INFO, svc->timed_out ? "stopped after drain timeout" : "stopped",
		     (const char *)NULL);
	return svc->timed_out ? -ETIMEDOUT : 0;
}

void dl_service_free(dl_service *svc)
{
	size_t i;

	if (!svc)
		return;
	dl_http_server_free(svc->admin);
	if (svc->sigterm)
		event_free(svc->sigterm);
	if (svc->sigint)
		event_free(svc->sigint);
	if (svc->check_timer)
		event_free(svc->check_timer);
	if (svc->drain_timer)
		event_free(svc->drain_timer);
	for (i = 0; i < svc->nchecks; i++)
		free(svc->checks[i].name);
	dl_metrics_registry_free(svc->metrics);
	if (svc->base)
		event_base_free(svc->base);
	free(svc->name);
	free(svc->version);
	free(svc);
}
