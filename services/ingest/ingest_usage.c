/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_usage: live usage per org from Redis (dl:usage:{org} while dl:usage:ready exists), read at most once a second. */
#include "services/ingest/ingest_usage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "services/ingest/ingest_ratelimit.h"

/* The keys of services/metering/mtr_usage.h (metering writes them). */
#define USAGE_KEY_PREFIX "dl:usage:"
#define USAGE_READY_KEY "dl:usage:ready"

typedef struct waiter {
	dl_http_req *req;
	ingest_usage_cb cb;
	void *arg;
	struct waiter *next;
} waiter;

/* One read of an org: GET of the marker and HMGET of the hash, pipelined on one connection. */
typedef struct fetch {
	ingest_usage *u; /* NULL once u was freed: the fetch only frees itself */
	size_t slot;
	int expect, got;
	bool ready, have, failed;
	ingest_usage_live live;
} fetch;

typedef struct slot {
	char org_id[37];
	int64_t fetched_ms; /* monotonic; 0: never read */
	bool live_ok;
	ingest_usage_live live;
	fetch *inflight;
	waiter *head, *tail;
	size_t nwaiters;
} slot;

struct ingest_usage {
	ingest_ratelimit *rl;
	slot *slots;
	dl_metric *m_answers; /* {source}: live, database */
	dl_metric *m_reads;   /* {result}: ok, error */
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t slot_of(const char *org_id)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *org_id; org_id++)
		h = (h ^ (unsigned char)*org_id) * 1099511628211ULL;
	return (size_t)(h % INGEST_USAGE_SLOTS);
}

/* Answers one request from the slot as it is: live only while its period contains now. */
static void answer(ingest_usage *u, const slot *s, dl_http_req *req, ingest_usage_cb cb,
		   void *arg)
{
	int64_t now = wall_ms();
	const char *lv[1];
	bool live = s && s->live_ok && s->live.period_start_ms <= now &&
		    now < s->live.period_end_ms;

	lv[0] = live ? "live" : "database";
	if (u)
		dl_metric_inc(u->m_answers, lv, 1);
	cb(req, live ? &s->live : NULL, arg);
}

static bool parse_i64(const redisReply *r, int64_t *out)
{
	char *end;
	long long v;

	if (!r || r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
		return false;
	errno = 0;
	v = strtoll(r->str, &end, 10);
	if (errno || *end || v < 0)
		return false;
	*out = v;
	return true;
}

static void fetch_done(fetch *f)
{
	ingest_usage *u = f->u;
	const char *lv[1];
	waiter *w, *next;
	slot *s;

	if (!u) {
		free(f);
		return;
	}
	s = &u->slots[f->slot];
	lv[0] = f->failed ? "error" : "ok";
	dl_metric_inc(u->m_reads, lv, 1);
	s->inflight = NULL;
	s->fetched_ms = mono_ms();
	s->live_ok = !f->failed && f->ready && f->have;
	s->live = f->live;
	/* Detached first: a callback may ask for this org again. */
	w = s->head;
	s->head = s->tail = NULL;
	s->nwaiters = 0;
	for (; w; w = next) {
		next = w->next;
		answer(u, s, w->req, w->cb, w->arg);
		free(w);
	}
	free(f);
}

static void on_ready(const struct redisReply *reply, void *arg)
{
	fetch *f = arg;

	if (!reply || reply->type == REDIS_REPLY_ERROR)
		f->failed = true;
	else
		f->ready = reply->type == REDIS_REPLY_STRING;
	if (++f->got == f->expect)
		fetch_done(f);
}

static void on_hash(const struct redisReply *reply, void *arg)
{
	fetch *f = arg;

	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		f->failed = true;
	} else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 4) {
		f->have = parse_i64(reply->element[0], &f->live.period_start_ms) &&
			  parse_i64(reply->element[1], &f->live.period_end_ms) &&
			  parse_i64(reply->element[2], &f->live.anomalies) &&
			  parse_i64(reply->element[3], &f->live.included) &&
			  f->live.period_start_ms < f->live.period_end_ms;
	}
	if (++f->got == f->expect)
		fetch_done(f);
}

/* Starts a read of s's org; returns 0 or -errno (nothing in flight then). */
static int fetch_start(ingest_usage *u, size_t idx)
{
	slot *s = &u->slots[idx];
	char key[sizeof(USAGE_KEY_PREFIX) + sizeof(s->org_id)];
	const char *get[2] = { "GET", USAGE_READY_KEY };
	const char *hmget[6] = { "HMGET", key, "period_start_ms", "period_end_ms", "anomalies",
				 "included" };
	fetch *f = calloc(1, sizeof(*f));
	int r;

	if (!f)
		return -ENOMEM;
	f->u = u;
	f->slot = idx;
	f->expect = 2;
	snprintf(key, sizeof(key), USAGE_KEY_PREFIX "%s", s->org_id);
	r = ingest_ratelimit_redis_command(u->rl, 2, get, on_ready, f);
	if (r < 0) {
		free(f);
		return r;
	}
	s->inflight = f;
	if (ingest_ratelimit_redis_command(u->rl, 6, hmget, on_hash, f) < 0) {
		/* The marker's reply still comes and completes the fetch, as a failure. */
		f->failed = true;
		f->expect = 1;
	}
	return 0;
}

void ingest_usage_get(ingest_usage *u, const char *org_id, dl_http_req *req, ingest_usage_cb cb,
		      void *arg)
{
	size_t idx;
	waiter *w;
	slot *s;

	if (!u) {
		answer(NULL, NULL, req, cb, arg);
		return;
	}
	idx = slot_of(org_id);
	s = &u->slots[idx];
	if (strcmp(s->org_id, org_id) != 0) {
		if (s->inflight) {
			/* Another org's read holds the slot: rare, and the database answers. */
			answer(u, NULL, req, cb, arg);
			return;
		}
		memset(s, 0, sizeof(*s));
		snprintf(s->org_id, sizeof(s->org_id), "%s", org_id);
	}
	if (!s->inflight && s->fetched_ms && mono_ms() - s->fetched_ms < INGEST_USAGE_TTL_MS) {
		answer(u, s, req, cb, arg);
		return;
	}
	if (s->nwaiters >= INGEST_USAGE_MAX_WAITERS) {
		answer(u, NULL, req, cb, arg);
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		answer(u, NULL, req, cb, arg);
		return;
	}
	if (!s->inflight && fetch_start(u, idx) < 0) {
		/* Redis is down: nothing to wait for. Not cached, so its return is seen at once. */
		free(w);
		answer(u, NULL, req, cb, arg);
		return;
	}
	w->req = req;
	w->cb = cb;
	w->arg = arg;
	if (s->tail)
		s->tail->next = w;
	else
		s->head = w;
	s->tail = w;
	s->nwaiters++;
}

int ingest_usage_new(ingest_ratelimit *rl, dl_metrics_registry *metrics, ingest_usage **ret,
		     char *errbuf, size_t errlen)
{
	ingest_usage *u = calloc(1, sizeof(*u));

	if (!u)
		goto out_nomem;
	u->rl = rl;
	u->slots = calloc(INGEST_USAGE_SLOTS, sizeof(*u->slots));
	u->m_answers = dl_metrics_counter(metrics, "driftlock_ingest_usage_answers_total",
					  "Quota and usage answers, by the source of the period's "
					  "count (live: Redis, database: PostgreSQL).",
					  1, "source");
	u->m_reads = dl_metrics_counter(metrics, "driftlock_ingest_usage_redis_reads_total",
					"Live usage reads from Redis, by result (ok, error).", 1,
					"result");
	if (!u->slots || !u->m_answers || !u->m_reads)
		goto out_free;
	*ret = u;
	return 0;

out_free:
	free(u->slots);
	free(u);
out_nomem:
	snprintf(errbuf, errlen, "live usage: out of memory");
	return -ENOMEM;
}

void ingest_usage_free(ingest_usage *u)
{
	waiter *w, *next;
	size_t i;

	if (!u)
		return;
	for (i = 0; i < INGEST_USAGE_SLOTS; i++) {
		slot *s = &u->slots[i];

		if (s->inflight)
			s->inflight->u = NULL;
		for (w = s->head; w; w = next) {
			next = w->next;
			w->cb(w->req, NULL, w->arg);
			free(w);
		}
	}
	free(u->slots);
	free(u);
}
