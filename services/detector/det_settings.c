/* SPDX-License-Identifier: Apache-2.0 */
/* det_settings: stream settings from PostgreSQL, polled for changes, and stream status written in batches. */
#include "services/detector/det_settings.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "common/dl_log.h"
#include "common/dl_pg.h"

/*
 * Three kinds of database work, each a job on the pool (worker thread), each finished on the
 * loop:
 *   get     SELECT the stream's effective settings in its org's scope; no row: INSERT it
 *           (ON CONFLICT DO NOTHING, so two workers racing register it once) and SELECT again.
 *   poll    every poll_ms, dl_detector_stream_changes (0012_detector.sql; SECURITY DEFINER
 *           because the watched streams belong to many orgs) pages through the streams whose
 *           configuration changed after a cursor. The cursor is the last row's changed_at,
 *           and each poll starts CURSOR_OVERLAP before it: a transaction that committed late
 *           carries an earlier now(). Rows read twice are harmless: a change is delivered only
 *           when the row's configuration hash differs from the one last delivered.
 *   flush   every flush_ms, the buffered status of all streams in one transaction: per org,
 *           set driftlock.org_id, then one UPDATE ... FROM unnest(arrays) per 1000 streams.
 * At most one poll and one flush run at a time; a tick that finds one running does nothing.
 */

#define POLL_PAGE_ROWS 1000
#define POLL_MAX_PAGES 50           /* a poll that hits this resumes where it stopped */
#define CURSOR_OVERLAP_MS 15000     /* well beyond the statement timeout of a settings write */
#define FIRST_POLL_LOOKBACK "60 s"  /* before the first change is seen */
#define FLUSH_CHUNK 1000
#define MAX_STATUS_ROWS 1000000     /* buffered status rows; beyond, updates are dropped */
#define MAX_WATCHED 4000000
#define ERR_LEN 256

typedef struct sentry {
	struct sentry *next;
	uint64_t hash;
	char org[37];
	char name[DET_SETTINGS_STREAM_MAX + 1];
	/* watched table: the configuration last delivered */
	uint64_t cfg;
	/* status table */
	bool calibrating;
	double progress;
	uint64_t events_seen;
	int64_t last_event_ms;
} sentry;

typedef struct stable {
	sentry **b;
	size_t nb, n;
} stable;

typedef struct get_job {
	det_settings *ds; /* NULL once the module was freed */
	struct get_job *prev, *next;
	det_settings_cb cb;
	void *arg;
	char org[37];
	char name[DET_SETTINGS_STREAM_MAX + 1];
	double sensitivity;
	bool paused;
	char *json;
	bool registered;
	char err[ERR_LEN];
} get_job;

typedef struct poll_row {
	char org[37];
	char name[DET_SETTINGS_STREAM_MAX + 1];
	double sensitivity;
	bool paused;
	char *json;
} poll_row;

typedef struct poll_job {
	det_settings *ds;
	bool have_cursor;
	char at[64], org[37], name[DET_SETTINGS_STREAM_MAX + 1];
	bool overlap;
	/* results */
	poll_row *rows;
	size_t nrows, cap;
	bool complete;
	struct timespec started;
	char err[ERR_LEN];
} poll_job;

typedef struct flush_job {
	det_settings *ds;
	sentry **rows; /* owned; sorted by org */
	size_t n;
	struct timespec started;
	char err[ERR_LEN];
} flush_job;

struct det_settings {
	struct event_base *base;
	dl_pgpool *pool;
	struct event *poll_ev, *flush_ev;
	int64_t poll_ms, flush_ms;
	det_settings_cb change_cb;
	void *change_arg;
	stable watched;
	stable status;
	get_job *gets; /* running */
	size_t ngets;
	poll_job *poll;   /* running */
	flush_job *flush; /* running */
	/* poll cursor */
	bool have_cursor, resume;
	char cur_at[64], cur_org[37], cur_name[DET_SETTINGS_STREAM_MAX + 1];
	dl_metric *m_gets;     /* {result} */
	dl_metric *m_polls;    /* {result} */
	dl_metric *m_changes;
	dl_metric *m_invalid;
	dl_metric *m_flushes;  /* {result} */
	dl_metric *m_rows;
	dl_metric *m_dropped;
	dl_metric *m_watched;
	dl_metric *m_query_s;  /* {kind} */
};

static const char SQL_GET[] =
	"SELECT COALESCE(s.sensitivity, o.sensitivity), s.settings::text, s.status = 'paused'"
	" FROM streams AS s JOIN organizations AS o ON o.id = s.org_id"
	" WHERE s.org_id = $1::uuid AND s.name = $2";
static const char SQL_REGISTER[] =
	"INSERT INTO streams (org_id, name) VALUES ($1::uuid, $2)"
	" ON CONFLICT (org_id, name) DO NOTHING";
static const char SQL_POLL[] =
	"SELECT org_id::text, name, sensitivity, settings::text, paused, changed_at::text"
	" FROM dl_detector_stream_changes("
	"   COALESCE($1::timestamptz - $2::interval, now() - interval '" FIRST_POLL_LOOKBACK "'),"
	"   $3::uuid, $4, $5::integer)";
static const char SQL_SCOPE[] = "SELECT set_config('driftlock.org_id', $1, true)";
static const char SQL_STATUS[] =
	"UPDATE streams AS s SET"
	" status = CASE WHEN s.status = 'paused' THEN s.status ELSE v.status END,"
	" calibration_progress = LEAST(GREATEST(v.progress, 0), 1),"
	" events_seen = GREATEST(s.events_seen, v.events_seen),"
	" last_event_at = CASE WHEN v.ms < 0 THEN s.last_event_at"
	"   ELSE GREATEST(s.last_event_at, to_timestamp(v.ms / 1000.0)) END"
	" FROM unnest($2::text[], $3::text[], $4::float8[], $5::bigint[], $6::bigint[])"
	"   AS v(name, status, progress, events_seen, ms)"
	" WHERE s.org_id = $1::uuid AND s.name = v.name";

/* ---------------------------------------------------------------- helpers */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;

	while (n--) {
		h ^= *c++;
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t key_hash(const char *org, const char *name)
{
	uint64_t h = fnv1a(14695981039346656037ULL, org, strlen(org));

	h = fnv1a(h, ":", 1);
	return fnv1a(h, name, strlen(name));
}

/* What a change is compared on: the stored JSON (PostgreSQL's canonical jsonb text), the
 * effective sensitivity and the paused state. Never 0, so 0 means "nothing delivered yet". */
static uint64_t config_hash(const char *json, double sensitivity, bool paused)
{
	char num[40];
	uint64_t h = fnv1a(14695981039346656037ULL, json ? json : "", json ? strlen(json) : 0);

	snprintf(num, sizeof(num), "|%.17g|%d", sensitivity, paused ? 1 : 0);
	h = fnv1a(h, num, strlen(num));
	return h ? h : 1;
}

static void lower_copy(char *dst, const char *src, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n && src[i]; i++)
		dst[i] = (char)tolower((unsigned char)src[i]);
	dst[i] = '\0';
}

bool det_settings_stream_valid(const char *stream)
{
	size_t i;

	if (!stream || !stream[0])
		return false;
	for (i = 0; stream[i]; i++) {
		unsigned char c = (unsigned char)stream[i];

		if (i >= DET_SETTINGS_STREAM_MAX)
			return false;
		if (!isalnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
			return false;
	}
	return true;
}

bool det_settings_org_valid(const char *org_id)
{
	size_t i;

	if (!org_id)
		return false;
	for (i = 0; i < 36; i++) {
		char c = org_id[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!isxdigit((unsigned char)c)) {
			return false;
		}
	}
	return org_id[36] == '\0';
}

int det_settings_resolve(const char *json, size_t len, double sensitivity, cbad_settings *ret,
			 char *errbuf, size_t errlen)
{
	cbad_settings s;
	int r;

	cbad_settings_default(&s);
	if (!(sensitivity >= 0.0 && sensitivity <= 1.0)) {
		snprintf(errbuf, errlen, "sensitivity %g is outside 0..1", sensitivity);
		*ret = s;
		return -EINVAL;
	}
	if (json && len > 0) {
		r = cbad_settings_apply_json(&s, json, len, errbuf, errlen);
		if (r < 0) {
			cbad_settings_default(&s);
			s.sensitivity = sensitivity;
			*ret = s;
			return r;
		}
	}
	s.sensitivity = sensitivity;
	*ret = s;
	return 0;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void count(dl_metric *m, const char *label)
{
	const char *lv[1] = { label };

	dl_metric_inc(m, lv, 1);
}

static void observe(dl_metric *m, const char *kind, const struct timespec *t0)
{
	const char *lv[1] = { kind };

	dl_metric_observe(m, lv, seconds_since(t0));
}

/* ---------------------------------------------------------------- the two tables */

static sentry **table_slot(stable *t, const char *org, const char *name, uint64_t h)
{
	sentry **pp;

	if (!t->nb)
		return NULL;
	for (pp = &t->b[h & (t->nb - 1)]; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && !strcmp((*pp)->org, org) && !strcmp((*pp)->name, name))
			return pp;
	return pp;
}

static sentry *table_find(stable *t, const char *org, const char *name)
{
	sentry **pp = table_slot(t, org, name, key_hash(org, name));

	return pp ? *pp : NULL;
}

static int table_grow(stable *t)
{
	size_t nb = t->nb ? t->nb * 2 : 64, i;
	sentry **b = calloc(nb, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (i = 0; i < t->nb; i++) {
		sentry *e = t->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
	return 0;
}

/* The entry of (org, name), added when missing; NULL when out of memory. */
static sentry *table_upsert(stable *t, const char *org, const char *name)
{
	uint64_t h = key_hash(org, name);
	sentry **pp, *e;

	if (t->n >= t->nb && table_grow(t) < 0 && !t->nb)
		return NULL;
	pp = table_slot(t, org, name, h);
	if (*pp)
		return *pp;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->hash = h;
	snprintf(e->org, sizeof(e->org), "%s", org);
	snprintf(e->name, sizeof(e->name), "%s", name);
	*pp = e;
	t->n++;
	return e;
}

static void table_remove(stable *t, const char *org, const char *name)
{
	sentry **pp = table_slot(t, org, name, key_hash(org, name)), *e;

	if (!pp || !*pp)
		return;
	e = *pp;
	*pp = e->next;
	free(e);
	t->n--;
}

/* Moves every entry out into a malloc'd array (*ret, n entries); the table is left empty. */
static int table_detach(stable *t, sentry ***ret, size_t *ret_n)
{
	sentry **v;
	size_t i, k = 0;

	v = malloc((t->n ? t->n : 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < t->nb; i++) {
		sentry *e = t->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = NULL;
			v[k++] = e;
		}
		t->b[i] = NULL;
	}
	t->n = 0;
	*ret = v;
	*ret_n = k;
	return 0;
}

static void table_clear(stable *t)
{
	size_t i;

	for (i = 0; i < t->nb; i++) {
		sentry *e = t->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(t->b);
	t->b = NULL;
	t->nb = t->n = 0;
}

/* ---------------------------------------------------------------- get */

static int map_error(dl_pg *pg, int r)
{
	const char *state = dl_pg_last_sqlstate(pg);

	if (r == -EIO && state && !strcmp(state, "23503"))
		return -ENOENT; /* foreign key: the org does not exist */
	if (r == -EIO && state && !strcmp(state, "23514"))
		return -EINVAL; /* check constraint: the name */
	if (r == -EACCES)
		return -EIO; /* a missing grant is a deployment fault: transient, not the stream's */
	return r;
}

/* 1 and the row's fields in job when the stream has a row, 0 when not, or negative. */
static int get_select(dl_pg *pg, get_job *job)
{
	const char *params[2] = { job->org, job->name };
	PGresult *res;
	int r;

	r = dl_pg_exec(pg, "det_settings_get", 2, params, &res, job->err, sizeof(job->err));
	if (r < 0)
		return r;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return 0;
	}
	job->sensitivity = strtod(PQgetvalue(res, 0, 0), NULL);
	job->paused = PQgetvalue(res, 0, 2)[0] == 't';
	free(job->json);
	job->json = strdup(PQgetvalue(res, 0, 1));
	PQclear(res);
	return job->json ? 1 : -ENOMEM;
}

static int get_work(dl_pg *pg, void *arg)
{
	get_job *job = arg;
	const char *params[2] = { job->org, job->name };
	int r;

	r = dl_pg_prepare(pg, "det_settings_get", SQL_GET, 2, job->err, sizeof(job->err));
	if (r == 0)
		r = dl_pg_prepare(pg, "det_settings_register", SQL_REGISTER, 2, job->err,
				  sizeof(job->err));
	if (r < 0)
		return r;
	r = dl_pg_begin_org(pg, job->org, job->err, sizeof(job->err));
	if (r < 0)
		return r;
	r = get_select(pg, job);
	if (r == -EACCES)
		r = -EIO;
	if (r == 0) {
		r = dl_pg_exec(pg, "det_settings_register", 2, params, NULL, job->err,
			       sizeof(job->err));
		if (r < 0) {
			r = map_error(pg, r);
			goto out_rollback;
		}
		job->registered = true;
		r = get_select(pg, job);
		if (r == 0) {
			/* Invisible right after the insert: the org is not ours to see. */
			snprintf(job->err, sizeof(job->err), "the stream's org is not visible");
			r = -ENOENT;
		}
	}
	if (r < 0)
		goto out_rollback;
	r = dl_pg_commit(pg, job->err, sizeof(job->err));
	return r < 0 ? r : 0;

out_rollback:
	dl_pg_rollback(pg, NULL, 0);
	return r;
}

static void deliver(det_settings *ds, det_settings_cb cb, void *arg, const char *org,
		    const char *name, const char *json, double sensitivity, bool paused)
{
	cbad_settings s;
	char err[ERR_LEN];

	if (det_settings_resolve(json, json ? strlen(json) : 0, sensitivity, &s, err,
				 sizeof(err)) < 0) {
		dl_metric_inc(ds->m_invalid, NULL, 1);
		dl_log_warn("stream settings refused by the engine; using the defaults", "org",
			    org, "stream", name, "error", err);
	}
	cb(0, org, name, &s, s.sensitivity, paused, arg);
}

static void get_unlink(det_settings *ds, get_job *job)
{
	if (job->prev)
		job->prev->next = job->next;
	else
		ds->gets = job->next;
	if (job->next)
		job->next->prev = job->prev;
	job->prev = job->next = NULL;
	ds->ngets--;
}

static void get_done(int rc, void *arg)
{
	get_job *job = arg;
	det_settings *ds = job->ds;
	sentry *e;

	if (!ds)
		goto out_free;
	get_unlink(ds, job);
	if (rc < 0) {
		count(ds->m_gets, "error");
		/* A refused identity is the caller's to report (with the message it came in);
		 * a database failure is logged here, once. */
		if (rc != -ECANCELED && rc != -ENOENT && rc != -EINVAL)
			dl_log_warn("stream settings look-up failed", "org", job->org, "stream",
				    job->name, "error", job->err[0] ? job->err : strerror(-rc));
		job->cb(rc, job->org, job->name, NULL, 0, false, job->arg);
		goto out_free;
	}
	count(ds->m_gets, job->registered ? "registered" : "found");
	if (ds->watched.n < MAX_WATCHED) {
		e = table_upsert(&ds->watched, job->org, job->name);
		if (e)
			e->cfg = config_hash(job->json, job->sensitivity, job->paused);
		dl_metric_set(ds->m_watched, NULL, (double)ds->watched.n);
	}
	deliver(ds, job->cb, job->arg, job->org, job->name, job->json, job->sensitivity,
		job->paused);
out_free:
	free(job->json);
	free(job);
}

void det_settings_get(det_settings *ds, const char *org_id, const char *stream,
		      det_settings_cb cb, void *arg)
{
	get_job *job;
	int r;

	if (!det_settings_org_valid(org_id) || !det_settings_stream_valid(stream)) {
		count(ds->m_gets, "invalid");
		cb(-EINVAL, org_id, stream, NULL, 0, false, arg);
		return;
	}
	job = calloc(1, sizeof(*job));
	if (!job) {
		count(ds->m_gets, "error");
		cb(-ENOMEM, org_id, stream, NULL, 0, false, arg);
		return;
	}
	job->ds = ds;
	job->cb = cb;
	job->arg = arg;
	lower_copy(job->org, org_id, sizeof(job->org));
	snprintf(job->name, sizeof(job->name), "%s", stream);
	r = dl_pgpool_submit(ds->pool, get_work, get_done, job);
	if (r < 0) {
		count(ds->m_gets, "error");
		cb(r, job->org, job->name, NULL, 0, false, arg);
		free(job);
		return;
	}
	job->next = ds->gets;
	if (ds->gets)
		ds->gets->prev = job;
	ds->gets = job;
	ds->ngets++;
}

void det_settings_forget(det_settings *ds, const char *org_id, const char *stream)
{
	char org[37];

	if (!org_id || !stream)
		return;
	lower_copy(org, org_id, sizeof(org));
	table_remove(&ds->watched, org, stream);
	dl_metric_set(ds->m_watched, NULL, (double)ds->watched.n);
}

/* ---------------------------------------------------------------- poll */

static void poll_job_free(poll_job *job)
{
	size_t i;

	for (i = 0; i < job->nrows; i++)
		free(job->rows[i].json);
	free(job->rows);
	free(job);
}

static int poll_keep(poll_job *job, PGresult *res, int i)
{
	poll_row *row;

	if (job->nrows == job->cap) {
		size_t cap = job->cap ? job->cap * 2 : 256;
		poll_row *rows = realloc(job->rows, cap * sizeof(*rows));

		if (!rows)
			return -ENOMEM;
		job->rows = rows;
		job->cap = cap;
	}
	row = &job->rows[job->nrows];
	memset(row, 0, sizeof(*row));
	snprintf(row->org, sizeof(row->org), "%s", PQgetvalue(res, i, 0));
	snprintf(row->name, sizeof(row->name), "%s", PQgetvalue(res, i, 1));
	row->sensitivity = strtod(PQgetvalue(res, i, 2), NULL);
	row->json = strdup(PQgetvalue(res, i, 3));
	row->paused = PQgetvalue(res, i, 4)[0] == 't';
	if (!row->json)
		return -ENOMEM;
	job->nrows++;
	return 0;
}

static int poll_work(dl_pg *pg, void *arg)
{
	poll_job *job = arg;
	char overlap[32], limit[16];
	int page, r;

	r = dl_pg_prepare(pg, "det_settings_poll", SQL_POLL, 5, job->err, sizeof(job->err));
	if (r < 0)
		return r;
	snprintf(limit, sizeof(limit), "%d", POLL_PAGE_ROWS);
	if (!job->have_cursor) {
		snprintf(job->org, sizeof(job->org), "00000000-0000-0000-0000-000000000000");
		job->name[0] = '\0';
	}
	for (page = 0; page < POLL_MAX_PAGES; page++) {
		const char *params[5];
		PGresult *res;
		int i, n;

		snprintf(overlap, sizeof(overlap), "%d milliseconds",
			 page == 0 && job->overlap ? CURSOR_OVERLAP_MS : 0);
		params[0] = job->have_cursor ? job->at : NULL;
		params[1] = overlap;
		params[2] = job->org;
		params[3] = job->name;
		params[4] = limit;
		r = dl_pg_exec(pg, "det_settings_poll", 5, params, &res, job->err,
			       sizeof(job->err));
		if (r < 0)
			return r;
		n = PQntuples(res);
		for (i = 0; i < n && r == 0; i++)
			r = poll_keep(job, res, i);
		if (r == 0 && n > 0) {
			/* The next page (and the next poll) continue after the last row. */
			snprintf(job->at, sizeof(job->at), "%s", PQgetvalue(res, n - 1, 5));
			snprintf(job->org, sizeof(job->org), "%s", PQgetvalue(res, n - 1, 0));
			snprintf(job->name, sizeof(job->name), "%s", PQgetvalue(res, n - 1, 1));
			job->have_cursor = true;
		}
		PQclear(res);
		if (r < 0)
			return r;
		if (n < POLL_PAGE_ROWS) {
			job->complete = true;
			break;
		}
	}
	return 0;
}

static void poll_done(int rc, void *arg)
{
	poll_job *job = arg;
	det_settings *ds = job->ds;
	size_t i;

	if (!ds)
		goto out_free;
	ds->poll = NULL;
	observe(ds->m_query_s, "poll", &job->started);
	if (rc < 0) {
		count(ds->m_polls, "error");
		if (rc != -ECANCELED)
			dl_log_warn("stream settings poll failed", "error",
				    job->err[0] ? job->err : strerror(-rc));
		goto out_free;
	}
	count(ds->m_polls, "ok");
	if (job->have_cursor) {
		ds->have_cursor = true;
		snprintf(ds->cur_at, sizeof(ds->cur_at), "%s", job->at);
		snprintf(ds->cur_org, sizeof(ds->cur_org), "%s", job->org);
		snprintf(ds->cur_name, sizeof(ds->cur_name), "%s", job->name);
	}
	ds->resume = !job->complete;
	for (i = 0; i < job->nrows && ds->change_cb; i++) {
		poll_row *row = &job->rows[i];
		sentry *e = table_find(&ds->watched, row->org, row->name);
		uint64_t cfg;

		if (!e)
			continue;
		cfg = config_hash(row->json, row->sensitivity, row->paused);
		if (cfg == e->cfg)
			continue;
		e->cfg = cfg;
		dl_metric_inc(ds->m_changes, NULL, 1);
		dl_log_info("stream settings changed", "org", row->org, "stream", row->name);
		/* e may be freed by the callback (forget): not used after it. */
		deliver(ds, ds->change_cb, ds->change_arg, row->org, row->name, row->json,
			row->sensitivity, row->paused);
	}
out_free:
	poll_job_free(job);
}

static void poll_tick(evutil_socket_t fd, short what, void *arg)
{
	det_settings *ds = arg;
	poll_job *job;

	(void)fd;
	(void)what;
	/* Polls also while no stream is watched, so the cursor stays recent and the first
	 * stream watched after a quiet spell does not page through old changes. */
	if (ds->poll || !ds->change_cb)
		return;
	job = calloc(1, sizeof(*job));
	if (!job)
		return;
	job->ds = ds;
	clock_gettime(CLOCK_MONOTONIC, &job->started);
	job->have_cursor = ds->have_cursor;
	job->overlap = !ds->resume;
	snprintf(job->at, sizeof(job->at), "%s", ds->cur_at);
	if (ds->resume) {
		snprintf(job->org, sizeof(job->org), "%s", ds->cur_org);
		snprintf(job->name, sizeof(job->name), "%s", ds->cur_name);
	} else {
		snprintf(job->org, sizeof(job->org), "00000000-0000-0000-0000-000000000000");
	}
	if (dl_pgpool_submit(ds->pool, poll_work, poll_done, job) < 0) {
		count(ds->m_polls, "error");
		free(job);
		return;
	}
	ds->poll = job;
}

void det_settings_on_change(det_settings *ds, det_settings_cb cb, void *arg)
{
	ds->change_cb = cb;
	ds->change_arg = arg;
}

/* ---------------------------------------------------------------- status */

void det_settings_status(det_settings *ds, const char *org_id, const char *stream,
			 const cbad_status *st, int64_t last_event_ms)
{
	char org[37];
	sentry *e;

	if (!det_settings_org_valid(org_id) || !det_settings_stream_valid(stream) || !st)
		return;
	lower_copy(org, org_id, sizeof(org));
	e = table_find(&ds->status, org, stream);
	if (!e) {
		if (ds->status.n >= MAX_STATUS_ROWS ||
		    !(e = table_upsert(&ds->status, org, stream))) {
			dl_metric_inc(ds->m_dropped, NULL, 1);
			return;
		}
		e->last_event_ms = -1;
	}
	e->calibrating = st->calibrating;
	e->progress = st->calibrating ? st->progress : 1.0;
	e->events_seen = st->events_seen;
	if (last_event_ms >= 0)
		e->last_event_ms = last_event_ms;
}

static int cmp_org(const void *a, const void *b)
{
	const sentry *x = *(sentry *const *)a, *y = *(sentry *const *)b;

	return strcmp(x->org, y->org);
}

/* Appends s to the buffer *buf (size *cap, used *len), growing it; -ENOMEM on failure. */
static int buf_add(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t n = strlen(s);

	if (*len + n + 1 > *cap) {
		size_t c = (*cap ? *cap : 256);
		char *p;

		while (c < *len + n + 1)
			c *= 2;
		p = realloc(*buf, c);
		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = c;
	}
	memcpy(*buf + *len, s, n + 1);
	*len += n;
	return 0;
}

/* One UPDATE for rows[0..n) (all of one org) in the open transaction. */
static int flush_chunk(dl_pg *pg, flush_job *job, sentry **rows, size_t n)
{
	char *a[5] = { NULL };
	size_t len[5] = { 0 }, cap[5] = { 0 }, i;
	const char *params[6];
	int k, r = 0;

	for (k = 0; k < 5 && r == 0; k++)
		r = buf_add(&a[k], &len[k], &cap[k], "{");
	for (i = 0; i < n && r == 0; i++) {
		char v[5][160];
		const char *sep = i ? "," : "";

		/* Stream names are [A-Za-z0-9._:-] (checked on entry): quoting needs no escapes. */
		snprintf(v[0], sizeof(v[0]), "%s\"%s\"", sep, rows[i]->name);
		snprintf(v[1], sizeof(v[1]), "%s%s", sep,
			 rows[i]->calibrating ? "calibrating" : "active");
		snprintf(v[2], sizeof(v[2]), "%s%.17g", sep, rows[i]->progress);
		snprintf(v[3], sizeof(v[3]), "%s%" PRIu64, sep,
			 rows[i]->events_seen > INT64_MAX ? (uint64_t)INT64_MAX
							  : rows[i]->events_seen);
		snprintf(v[4], sizeof(v[4]), "%s%" PRId64, sep, rows[i]->last_event_ms);
		for (k = 0; k < 5 && r == 0; k++)
			r = buf_add(&a[k], &len[k], &cap[k], v[k]);
	}
	for (k = 0; k < 5 && r == 0; k++)
		r = buf_add(&a[k], &len[k], &cap[k], "}");
	if (r == 0) {
		params[0] = rows[0]->org;
		for (k = 0; k < 5; k++)
			params[k + 1] = a[k];
		r = dl_pg_exec(pg, "det_settings_status", 6, params, NULL, job->err,
			       sizeof(job->err));
	}
	for (k = 0; k < 5; k++)
		free(a[k]);
	return r;
}

static int flush_work(dl_pg *pg, void *arg)
{
	flush_job *job = arg;
	size_t i, j;
	int r;

	r = dl_pg_prepare(pg, "det_settings_scope", SQL_SCOPE, 1, job->err, sizeof(job->err));
	if (r == 0)
		r = dl_pg_prepare(pg, "det_settings_status", SQL_STATUS, 6, job->err,
				  sizeof(job->err));
	if (r < 0)
		return r;
	r = dl_pg_begin(pg, job->err, sizeof(job->err));
	if (r < 0)
		return r;
	for (i = 0; i < job->n; i = j) {
		const char *params[1] = { job->rows[i]->org };

		/* Row-level security: the rows of one org at a time, in the same transaction. */
		r = dl_pg_exec(pg, "det_settings_scope", 1, params, NULL, job->err,
			       sizeof(job->err));
		if (r < 0)
			goto out_rollback;
		for (j = i; j < job->n && !strcmp(job->rows[j]->org, job->rows[i]->org) &&
			    j - i < FLUSH_CHUNK;
		     j++)
			;
		r = flush_chunk(pg, job, job->rows + i, j - i);
		if (r < 0)
			goto out_rollback;
	}
	return dl_pg_commit(pg, job->err, sizeof(job->err));

out_rollback:
	dl_pg_rollback(pg, NULL, 0);
	return r;
}

static void flush_job_free(flush_job *job)
{
	size_t i;

	for (i = 0; i < job->n; i++)
		free(job->rows[i]);
	free(job->rows);
	free(job);
}

static void flush_done(int rc, void *arg)
{
	flush_job *job = arg;
	det_settings *ds = job->ds;
	size_t i;

	if (!ds)
		goto out_free;
	ds->flush = NULL;
	observe(ds->m_query_s, "status", &job->started);
	if (rc == 0) {
		count(ds->m_flushes, "ok");
		dl_metric_inc(ds->m_rows, NULL, (double)job->n);
		goto out_free;
	}
	count(ds->m_flushes, "error");
	if (rc != -ECANCELED)
		dl_log_warn("stream status write failed; retrying with the next flush", "error",
			    job->err[0] ? job->err : strerror(-rc));
	/* Put back what no newer status replaced meanwhile. */
	for (i = 0; i < job->n; i++) {
		sentry *old = job->rows[i], *e;

		if (table_find(&ds->status, old->org, old->name) ||
		    ds->status.n >= MAX_STATUS_ROWS)
			continue;
		e = table_upsert(&ds->status, old->org, old->name);
		if (e) {
			e->calibrating = old->calibrating;
			e->progress = old->progress;
			e->events_seen = old->events_seen;
			e->last_event_ms = old->last_event_ms;
		}
	}
out_free:
	flush_job_free(job);
}

static void flush_tick(evutil_socket_t fd, short what, void *arg)
{
	det_settings *ds = arg;
	flush_job *job;

	(void)fd;
	(void)what;
	if (ds->flush || ds->status.n == 0)
		return;
	job = calloc(1, sizeof(*job));
	if (!job)
		return;
	job->ds = ds;
	clock_gettime(CLOCK_MONOTONIC, &job->started);
	if (table_detach(&ds->status, &job->rows, &job->n) < 0) {
		free(job);
		return;
	}
	qsort(job->rows, job->n, sizeof(job->rows[0]), cmp_org);
	if (dl_pgpool_submit(ds->pool, flush_work, flush_done, job) < 0) {
		/* Runs flush_done's put-back with the rows, as for a failed write. */
		flush_done(-EAGAIN, job);
		return;
	}
	ds->flush = job;
}

void det_settings_flush(det_settings *ds)
{
	flush_tick(-1, 0, ds);
}

size_t det_settings_pending(const det_settings *ds)
{
	if (!ds)
		return 0;
	return ds->status.n + ds->ngets + (ds->poll ? 1 : 0) + (ds->flush ? 1 : 0);
}

/* ---------------------------------------------------------------- life cycle */

int det_settings_new(struct event_base *base, dl_pgpool *pool, dl_metrics_registry *m,
		     int64_t poll_ms, int64_t flush_ms, det_settings **ret, char *errbuf,
		     size_t errlen)
{
	static const double buckets[] = { .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
					  5 };
	det_settings *ds;
	struct timeval tv;

	if (poll_ms < DET_SETTINGS_POLL_MIN_MS || poll_ms > DET_SETTINGS_POLL_MAX_MS ||
	    flush_ms < DET_SETTINGS_FLUSH_MIN_MS || flush_ms > DET_SETTINGS_FLUSH_MAX_MS ||
	    !base || !pool) {
		snprintf(errbuf, errlen,
			 "settings poll must be %d-%d ms and status flush %d-%d ms",
			 DET_SETTINGS_POLL_MIN_MS, DET_SETTINGS_POLL_MAX_MS,
			 DET_SETTINGS_FLUSH_MIN_MS, DET_SETTINGS_FLUSH_MAX_MS);
		return -EINVAL;
	}
	ds = calloc(1, sizeof(*ds));
	if (!ds)
		goto out_nomem;
	ds->base = base;
	ds->pool = pool;
	ds->poll_ms = poll_ms;
	ds->flush_ms = flush_ms;
	ds->m_gets = dl_metrics_counter(m, "driftlock_detector_settings_lookups_total",
					"Stream settings look-ups, by result (found, registered, "
					"invalid, error).",
					1, "result");
	ds->m_polls = dl_metrics_counter(m, "driftlock_detector_settings_polls_total",
					 "Polls for changed stream settings, by result (ok, error).",
					 1, "result");
	ds->m_changes = dl_metrics_counter(m, "driftlock_detector_settings_changes_total",
					   "Settings changes delivered to held streams.", 0);
	ds->m_invalid = dl_metrics_counter(m, "driftlock_detector_settings_invalid_total",
					   "Stored settings the engine refused (defaults used).", 0);
	ds->m_flushes = dl_metrics_counter(m, "driftlock_detector_status_flushes_total",
					   "Stream status batches written, by result (ok, error).",
					   1, "result");
	ds->m_rows = dl_metrics_counter(m, "driftlock_detector_status_rows_total",
					"Stream status rows written.", 0);
	ds->m_dropped = dl_metrics_counter(m, "driftlock_detector_status_dropped_total",
					   "Status updates dropped because the buffer was full.", 0);
	ds->m_watched = dl_metrics_gauge(m, "driftlock_detector_settings_streams",
					 "Streams watched for settings changes.", 0);
	ds->m_query_s = dl_metrics_histogram(m, "driftlock_detector_settings_query_seconds",
					     "Settings poll and status write times, by kind.",
					     buckets, sizeof(buckets) / sizeof(buckets[0]), 1,
					     "kind");
	if (!ds->m_gets || !ds->m_polls || !ds->m_changes || !ds->m_invalid || !ds->m_flushes ||
	    !ds->m_rows || !ds->m_dropped || !ds->m_watched || !ds->m_query_s)
		goto out_free;
	ds->poll_ev = event_new(base, -1, EV_PERSIST, poll_tick, ds);
	ds->flush_ev = event_new(base, -1, EV_PERSIST, flush_tick, ds);
	if (!ds->poll_ev || !ds->flush_ev)
		goto out_free;
	tv.tv_sec = poll_ms / 1000;
	tv.tv_usec = (poll_ms % 1000) * 1000;
	if (event_add(ds->poll_ev, &tv) < 0)
		goto out_free;
	tv.tv_sec = flush_ms / 1000;
	tv.tv_usec = (flush_ms % 1000) * 1000;
	if (event_add(ds->flush_ev, &tv) < 0)
		goto out_free;
	*ret = ds;
	return 0;

out_free:
	if (ds->poll_ev)
		event_free(ds->poll_ev);
	if (ds->flush_ev)
		event_free(ds->flush_ev);
	free(ds);
out_nomem:
	snprintf(errbuf, errlen, "out of memory");
	return -ENOMEM;
}

void det_settings_free(det_settings *ds)
{
	get_job *g;

	if (!ds)
		return;
	/* Running jobs finish on the pool and free themselves. */
	for (g = ds->gets; g; g = g->next)
		g->ds = NULL;
	if (ds->poll)
		ds->poll->ds = NULL;
	if (ds->flush)
		ds->flush->ds = NULL;
	event_free(ds->poll_ev);
	event_free(ds->flush_ev);
	table_clear(&ds->watched);
	table_clear(&ds->status);
	free(ds);
}
