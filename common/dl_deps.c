/* SPDX-License-Identifier: Apache-2.0 */
/* dl_deps: a service's connections to PostgreSQL, Redis and Kafka, kept up by its readiness checks. */
#include "common/dl_deps.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#define DL_DEPS_PG_CONNECT_TIMEOUT_S 2
#define DL_DEPS_PG_STATEMENT_TIMEOUT_MS 10000
#define DL_DEPS_REDIS_CONNECT_TIMEOUT_MS 1000
#define DL_DEPS_REDIS_COMMAND_TIMEOUT_MS 1000
#define DL_DEPS_KAFKA_CHECK_TIMEOUT_MS 1500

struct dl_deps {
	dl_service *svc;
	char *pg_dsn;
	char *redis_url;
	dl_pg *pg;
	dl_redis *redis;
	dl_kafka_producer *kafka;
	struct event *kafka_wakeup;
};

int dl_deps_new(dl_service *svc, dl_deps **ret)
{
	dl_deps *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->svc = svc;
	*ret = d;
	return 0;
}

/* The check reconnects while the connection is missing; libpq and dl_pg recover a lost
 * connection by themselves once it exists. */
static int deps_check_pg(void *opaque, char *errbuf, size_t errlen)
{
	dl_deps *d = opaque;
	dl_pg_options opts = { 0 };
	char app[64];

	if (!d->pg) {
		snprintf(app, sizeof(app), "driftlock-%s", dl_service_name(d->svc));
		opts.connect_timeout_s = DL_DEPS_PG_CONNECT_TIMEOUT_S;
		opts.statement_timeout_ms = DL_DEPS_PG_STATEMENT_TIMEOUT_MS;
		opts.application_name = app;
		if (dl_pg_connect(d->pg_dsn, &opts, errbuf, errlen, &d->pg) < 0)
			return -ENOTCONN;
	}
	return dl_pg_ping(d->pg, errbuf, errlen);
}

static int deps_check_redis(void *opaque, char *errbuf, size_t errlen)
{
	dl_deps *d = opaque;

	if (!d->redis && dl_redis_connect_url(d->redis_url, DL_DEPS_REDIS_CONNECT_TIMEOUT_MS,
					      DL_DEPS_REDIS_COMMAND_TIMEOUT_MS, errbuf, errlen,
					      &d->redis) < 0)
		return -ENOTCONN;
	return dl_redis_ping(d->redis, errbuf, errlen);
}

static int deps_check_kafka(void *opaque, char *errbuf, size_t errlen)
{
	dl_deps *d = opaque;

	return dl_kafka_producer_check(d->kafka, DL_DEPS_KAFKA_CHECK_TIMEOUT_MS, errbuf, errlen);
}

static void deps_kafka_wakeup_cb(evutil_socket_t fd, short what, void *opaque)
{
	dl_deps *d = opaque;

	(void)fd;
	(void)what;
	dl_kafka_producer_poll(d->kafka, 0);
}

int dl_deps_use_pg(dl_deps *d, const char *dsn, char *errbuf, size_t errlen)
{
	if (!dsn || !*dsn) {
		snprintf(errbuf, errlen, "DRIFTLOCK_PG_DSN is empty");
		return -EINVAL;
	}
	d->pg_dsn = strdup(dsn);
	if (!d->pg_dsn)
		return -ENOMEM;
	return dl_service_add_check(d->svc, "postgres", deps_check_pg, d);
}

int dl_deps_use_redis(dl_deps *d, const char *url, char *errbuf, size_t errlen)
{
	if (!url || strncmp(url, "redis://", 8) != 0) {
		snprintf(errbuf, errlen, "DRIFTLOCK_REDIS_URL must start with redis://");
		return -EINVAL;
	}
	d->redis_url = strdup(url);
	if (!d->redis_url)
		return -ENOMEM;
	return dl_service_add_check(d->svc, "redis", deps_check_redis, d);
}

int dl_deps_use_kafka(dl_deps *d, const char *brokers, const char *const *extra_conf,
		      char *errbuf, size_t errlen)
{
	char client_id[64];
	int r;

	snprintf(client_id, sizeof(client_id), "driftlock-%s", dl_service_name(d->svc));
	/* librdkafka connects in the background, so creating the producer succeeds while the
	 * broker is down; the check reports it until it answers. */
	r = dl_kafka_producer_new(brokers, client_id, extra_conf, errbuf, errlen, &d->kafka);
	if (r < 0)
		return r;
	d->kafka_wakeup = event_new(dl_service_base(d->svc), dl_kafka_producer_wakeup_fd(d->kafka),
				    EV_READ | EV_PERSIST, deps_kafka_wakeup_cb, d);
	if (!d->kafka_wakeup || event_add(d->kafka_wakeup, NULL) < 0) {
		snprintf(errbuf, errlen, "could not watch the Kafka wake-up fd");
		return -ENOMEM;
	}
	return dl_service_add_check(d->svc, "kafka", deps_check_kafka, d);
}

dl_pg *dl_deps_pg(dl_deps *d)
{
	return d->pg;
}

dl_redis *dl_deps_redis(dl_deps *d)
{
	return d->redis;
}

dl_kafka_producer *dl_deps_kafka(dl_deps *d)
{
	return d->kafka;
}

void dl_deps_free(dl_deps *d, int flush_timeout_ms)
{
	if (!d)
		return;
	if (d->kafka_wakeup)
		event_free(d->kafka_wakeup);
	if (d->kafka)
		dl_kafka_producer_flush(d->kafka, flush_timeout_ms);
	dl_kafka_producer_free(d->kafka);
	dl_redis_free(d->redis);
	dl_pg_free(d->pg);
	free(d->pg_dsn);
	free(d->redis_url);
	free(d);
}
