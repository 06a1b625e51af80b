/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for the read API (anomalies, streams, usage) of driftlock-ingest: filters, pages, limits, PATCH and PUT, usage, and two orgs that never see each other's rows. */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/support/dl_itest.h"

#define RESP_CAP (2 * 1024 * 1024)
#define A_ANOMALIES 120
#define B_ANOMALIES 31

/* Two orgs seeded through the admin connection, and a running driftlock-ingest. */
typedef struct world {
	char org_a[37], key_a[256];
	char org_b[37], key_b[256];
	dl_itest_proc proc;
	char *resp;
} world;

/* Org A (pro): 120 anomalies a-001..a-120 on web.api (even) and web.cal (odd), severity
 * cycling low..critical, every tenth resolved, score i/2, detected in groups of three sharing
 * one instant (ties broken by id) except the last twenty, apart by microseconds only; streams
 * web.api, web.cal and s.00..s.11. Org B (developer): b-001..b-030 plus an a-001 of its own, all
 * on web.api, and ten streams (its plan's limit) among them web.api, a name A has too. */
static const char seed_anomalies[] =
	"INSERT INTO anomalies (org_id, id, stream, event_id, event_ts, detected_at, kind, score,"
	" p_value, severity, signals, window_start, window_end, window_events,"
	" explanation_summary, explanation_signal, explanation_value, baseline_low,"
	" baseline_median, baseline_high, evidence, excerpt, detector_version,"
	" detector_sensitivity, status)"
	" SELECT $1::uuid, $2 || lpad(i::text, 3, '0'),"
	"  CASE WHEN $3 = 'org-b' THEN 'web.api' WHEN i % 2 = 0 THEN 'web.api' ELSE 'web.cal' END,"
	"  'ev-' || i, '2026-03-01T00:00:00Z'::timestamptz,"
	"  '2026-03-01T00:00:00Z'::timestamptz + (i / 3) * interval '1 minute'"
	"   + CASE WHEN i > 100 THEN (i % 3) * interval '1 microsecond' ELSE interval '0' END,"
	"  'window', i * 0.5, 0.001, (ARRAY['low','medium','high','critical'])[1 + i % 4],"
	"  '{\"ncd\":0.61,\"bits\":3.5}', '2026-03-01T00:00:00Z', '2026-03-01T00:01:00Z', 400,"
	"  'window compresses badly against the baseline', 'ncd', 0.61, 0.1, 0.2, 0.3,"
	"  '[{\"token\":\"timeout\",\"bits\":7.25}]', $3, 'cbad-1', 0.5,"
	"  CASE WHEN i % 10 = 0 THEN 'resolved' ELSE 'new' END"
	" FROM generate_series(1, $4::integer) AS i";

/* Storing the anomalies above registered their streams with their counts (0018's trigger);
 * the streams below are set to exactly these values, as the detector and metering would have
 * left them. */
#define ON_STREAM_SET                                                                             \
	" ON CONFLICT (org_id, name) DO UPDATE SET sensitivity = EXCLUDED.sensitivity,"          \
	" status = EXCLUDED.status, calibration_progress = EXCLUDED.calibration_progress,"       \
	" events_seen = EXCLUDED.events_seen, anomalies_count = EXCLUDED.anomalies_count,"       \
	" last_event_at = EXCLUDED.last_event_at, last_anomaly_at = EXCLUDED.last_anomaly_at"

static void seed_world(world *w)
{
	char n[16];

	dl_itest_org_with_key("read-a", "pro", w->org_a, w->key_a, sizeof(w->key_a));
	dl_itest_org_with_key("read-b", "developer", w->org_b, w->key_b, sizeof(w->key_b));
	snprintf(n, sizeof(n), "%d", A_ANOMALIES);
	dl_itest_sql(seed_anomalies, (const char *const[]){ w->org_a, "a-", "org-a", n, NULL },
		     NULL, 0);
	snprintf(n, sizeof(n), "%d", B_ANOMALIES - 1);
	dl_itest_sql(seed_anomalies, (const char *const[]){ w->org_b, "b-", "org-b", n, NULL },
		     NULL, 0);
	dl_itest_sql(seed_anomalies, (const char *const[]){ w->org_b, "a-", "org-b", "1", NULL },
		     NULL, 0);
	dl_itest_sql("INSERT INTO streams (org_id, name, sensitivity, status, calibration_progress,"
		     " events_seen, anomalies_count, last_event_at, last_anomaly_at)"
		     " VALUES ($1::uuid, 'web.api', 0.8, 'active', 1, 5000, 60,"
		     "         '2026-03-01T01:00:00Z', '2026-03-01T00:40:00Z'),"
		     "        ($1::uuid, 'web.cal', NULL, 'calibrating', 0.25, 40, 60, NULL, NULL)"
		     ON_STREAM_SET,
		     (const char *const[]){ w->org_a, NULL }, NULL, 0);
	dl_itest_sql("INSERT INTO streams (org_id, name)"
		     " SELECT $1::uuid, 's.' || lpad(i::text, 2, '0') FROM generate_series(0, 11) i",
		     (const char *const[]){ w->org_a, NULL }, NULL, 0);
	dl_itest_sql("INSERT INTO streams (org_id, name, sensitivity, status, events_seen)"
		     " VALUES ($1::uuid, 'web.api', 0.2, 'active', 7), ($1::uuid, 'b.only', 0.2,"
		     "         'active', 7)" ON_STREAM_SET,
		     (const char *const[]){ w->org_b, NULL }, NULL, 0);
	dl_itest_sql("INSERT INTO streams (org_id, name)"
		     " SELECT $1::uuid, 'b.s' || i FROM generate_series(2, 9) i",
		     (const char *const[]){ w->org_b, NULL }, NULL, 0);
}

static void world_up(world *w)
{
	memset(w, 0, sizeof(*w));
	w->resp = malloc(RESP_CAP);
	ck_assert_ptr_nonnull(w->resp);
	seed_world(w);
	dl_itest_start("ingest", NULL, &w->proc);
	ck_assert_msg(dl_itest_wait_ready(&w->proc, 90000), "ingest not ready (log %s)",
		      w->proc.log_path);
}

static void world_down(world *w)
{
	dl_itest_stop(&w->proc, 10000);
	free(w->resp);
}

/* One call with key (NULL: no credentials); the body, if any, as application/json. The
 * answer is in w->resp. */
static long call(world *w, const char *key, const char *method, const char *path,
		 const char *body)
{
	char auth[300];
	const char *h[3] = { NULL, NULL, NULL };
	int n = 0;

	if (key) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
		h[n++] = auth;
	}
	if (body)
		h[n++] = "Content-Type: application/json";
	return dl_itest_http(w->proc.public_port, method, path, h, body, body ? strlen(body) : 0,
			     w->resp, RESP_CAP, NULL, 0);
}

/* The answer parsed (fails the test if it is not JSON); free with cJSON_Delete. */
static cJSON *parsed(const world *w)
{
	cJSON *j = cJSON_Parse(w->resp);

	ck_assert_msg(j != NULL, "answer is not JSON: %.300s", w->resp);
	return j;
}

static const char *str_of(const cJSON *o, const char *name)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(m) ? m->valuestring : NULL;
}

static double num_of(const cJSON *o, const char *name)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);

	ck_assert_msg(cJSON_IsNumber(m), "member %s is not a number", name);
	return m->valuedouble;
}

static bool is_null(const cJSON *o, const char *name)
{
	return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, name));
}

/* Asserts that the last answer was status with error code code (and, when param is not NULL,
 * details naming that parameter). */
static void expect_error(world *w, long got, long status, const char *code, const char *param,
			 const char *what)
{
	cJSON *j, *e, *d;

	ck_assert_msg(got == status, "%s: %ld (want %ld): %.300s", what, got, status, w->resp);
	j = parsed(w);
	e = cJSON_GetObjectItemCaseSensitive(j, "error");
	ck_assert_msg(str_of(e, "code") && !strcmp(str_of(e, "code"), code),
		      "%s: code (want %s): %.300s", what, code, w->resp);
	ck_assert_msg(str_of(e, "message") && str_of(e, "message")[0], "%s: no message", what);
	if (param) {
		d = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(e, "details"), 0);
		ck_assert_msg(str_of(d, "parameter") && !strcmp(str_of(d, "parameter"), param),
			      "%s: details do not name %s: %.300s", what, param, w->resp);
	}
	cJSON_Delete(j);
}

/* Walks every page of base (a path with its query, without limit and cursor) with limit per
 * page, checking each page's size; returns the rows (a cJSON array, the caller deletes it). */
static cJSON *walk(world *w, const char *key, const char *base, int limit, int *ret_pages)
{
	cJSON *all = cJSON_CreateArray();
	char path[2048], cursor[600] = "";
	int pages = 0;

	ck_assert_ptr_nonnull(all);
	for (;;) {
		cJSON *j, *data, *row, *next;
		long st;

		snprintf(path, sizeof(path), "%s%slimit=%d%s%s", base, strchr(base, '?') ? "&" : "?",
			 limit, cursor[0] ? "&cursor=" : "", cursor);
		st = call(w, key, "GET", path, NULL);
		ck_assert_msg(st == 200, "GET %s: %ld %.300s", path, st, w->resp);
		j = parsed(w);
		data = cJSON_GetObjectItemCaseSensitive(j, "data");
		next = cJSON_GetObjectItemCaseSensitive(j, "next_cursor");
		ck_assert_msg(cJSON_IsArray(data), "no data array in %s", path);
		ck_assert_msg(cJSON_IsString(next) || cJSON_IsNull(next), "no next_cursor in %s", path);
		ck_assert_msg(cJSON_GetArraySize(data) <= limit, "page of %s over its limit", path);
		/* Only the last page may be short, and a next_cursor always leads somewhere. */
		if (cJSON_IsString(next))
			ck_assert_int_eq(cJSON_GetArraySize(data), limit);
		cJSON_ArrayForEach(row, data)
			cJSON_AddItemToArray(all, cJSON_Duplicate(row, 1));
		pages++;
		ck_assert_msg(pages < 1000, "more than 1000 pages from %s", base);
		if (!cJSON_IsString(next)) {
			cJSON_Delete(j);
			break;
		}
		ck_assert_uint_lt(strlen(next->valuestring), sizeof(cursor));
		snprintf(cursor, sizeof(cursor), "%s", next->valuestring);
		cJSON_Delete(j);
	}
	if (ret_pages)
		*ret_pages = pages;
	return all;
}

/* The rows' member name joined with commas, in order. */
static void joined(const cJSON *rows, const char *name, char *out, size_t outlen)
{
	const cJSON *row;
	size_t used = 0;

	out[0] = '\0';
	cJSON_ArrayForEach(row, rows) {
		const char *v = str_of(row, name);

		ck_assert_ptr_nonnull(v);
		used += (size_t)snprintf(out + used, outlen - used, "%s%s", used ? "," : "", v);
		ck_assert_uint_lt(used, outlen);
	}
}

/* What the list must hold: A's anomalies matching where (SQL over a), newest first. */
static void expect_ids(world *w, const char *where, char *out, size_t outlen)
{
	char sql[1024];

	snprintf(sql, sizeof(sql),
		 "SELECT COALESCE(string_agg(id, ',' ORDER BY detected_at DESC, id DESC), '')"
		 " FROM anomalies AS a WHERE org_id = $1::uuid AND (%s)", where);
	dl_itest_sql(sql, (const char *const[]){ w->org_a, NULL }, out, outlen);
}

/* The query's rows, walked in pages, are exactly A's rows matching where, in order. */
static void expect_filter(world *w, const char *query, int limit, const char *where,
			  int want_n)
{
	char want[8192], got[8192], base[512];
	cJSON *rows;

	snprintf(base, sizeof(base), "/v1/anomalies%s", query);
	rows = walk(w, w->key_a, base, limit, NULL);
	joined(rows, "id", got, sizeof(got));
	expect_ids(w, where, want, sizeof(want));
	ck_assert_msg(!strcmp(got, want), "%s:\n got %s\nwant %s", query, got, want);
	if (want_n >= 0)
		ck_assert_msg(cJSON_GetArraySize(rows) == want_n, "%s: %d rows, want %d", query,
			      cJSON_GetArraySize(rows), want_n);
	cJSON_Delete(rows);
}

/* Filters, alone and together, return exactly the matching anomalies; bad values are 400
 * naming the parameter. */
START_TEST(test_read_anomaly_filters)
{
	world w;
	long st;
	static const struct {
		const char *query, *param;
	} bad[] = {
		{ "?severity=high,urgent", "severity" },
		{ "?severity=", "severity" },
		{ "?status=open", "status" },
		{ "?stream=bad%20name", "stream" },
		{ "?from=yesterday", "from" },
		{ "?to=2026-13-01T00:00:00Z", "to" },
		{ "?from=2026-03-01T00:20:00Z&to=2026-03-01T00:10:00Z", "to" },
		{ "?min_score=-1", "min_score" },
		{ "?min_score=lots", "min_score" },
		{ "?limit=0", "limit" },
		{ "?limit=501", "limit" },
		{ "?limit=10x", "limit" },
		{ "?cursor=%21%21not-a-cursor", "cursor" },
	};

	world_up(&w);
	expect_filter(&w, "?stream=web.api", 500, "stream = 'web.api'", A_ANOMALIES / 2);
	expect_filter(&w, "?severity=high,critical", 500, "severity IN ('high','critical')",
		      A_ANOMALIES / 2);
	expect_filter(&w, "?severity=low", 500, "severity = 'low'", A_ANOMALIES / 4);
	expect_filter(&w, "?status=resolved", 500, "status = 'resolved'", A_ANOMALIES / 10);
	expect_filter(&w, "?status=acknowledged", 500, "status = 'acknowledged'", 0);
	/* from is inclusive, to exclusive: ten minutes of three anomalies each. */
	expect_filter(&w, "?from=2026-03-01T00:10:00Z&to=2026-03-01T00:20:00Z", 500,
		      "detected_at >= '2026-03-01T00:10:00Z' AND detected_at < '2026-03-01T00:20:00Z'",
		      30);
	expect_filter(&w, "?from=2026-03-01T01:10:00%2B01:00", 500,
		      "detected_at >= '2026-03-01T00:10:00Z'", -1);
	expect_filter(&w, "?min_score=50", 500, "score >= 50", 21);
	expect_filter(&w, "?min_score=0.5", 500, "score >= 0.5", A_ANOMALIES);
	expect_filter(&w,
		      "?stream=web.cal&severity=medium,critical&status=new&min_score=10"
		      "&to=2026-03-01T00:35:00Z",
		      4,
		      "stream = 'web.cal' AND severity IN ('medium','critical') AND status = 'new'"
		      " AND score >= 10 AND detected_at < '2026-03-01T00:35:00Z'",
		      -1);
	expect_filter(&w, "?stream=nothing.here", 50, "false", 0);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char path[256];

		snprintf(path, sizeof(path), "/v1/anomalies%s", bad[i].query);
		st = call(&w, w.key_a, "GET", path, NULL);
		expect_error(&w, st, 400, "invalid_parameter", bad[i].param, path);
	}
	world_down(&w);
}
END_TEST

/* Every page walk returns each anomaly once, newest first, whatever the page size, also when
 * ties in detected_at fall on a page boundary and while new anomalies arrive. */
START_TEST(test_read_anomaly_pages)
{
	static const int sizes[] = { 1, 2, 3, 7, 50, 119, 120, 500 };
	char want[8192], got[8192], path[1024], first_cursor[600];
	cJSON *rows, *j, *next;
	world w;
	int pages;
	long st;

	world_up(&w);
	expect_ids(&w, "true", want, sizeof(want));
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		rows = walk(&w, w.key_a, "/v1/anomalies", sizes[i], &pages);
		joined(rows, "id", got, sizeof(got));
		ck_assert_msg(!strcmp(got, want), "limit %d:\n got %s\nwant %s", sizes[i], got,
			      want);
		ck_assert_int_eq(pages, (A_ANOMALIES + sizes[i] - 1) / sizes[i]);
		cJSON_Delete(rows);
	}
	/* No limit: 50 a page. */
	st = call(&w, w.key_a, "GET", "/v1/anomalies", NULL);
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "data")), 50);
	next = cJSON_GetObjectItem(j, "next_cursor");
	ck_assert(cJSON_IsString(next));
	snprintf(first_cursor, sizeof(first_cursor), "%s", next->valuestring);
	cJSON_Delete(j);

	/* A newer anomaly arriving mid-walk is not seen by that walk and shifts nothing. */
	dl_itest_sql("INSERT INTO anomalies (org_id, id, stream, event_id, event_ts, detected_at,"
		     " kind, score, p_value, severity, explanation_summary, explanation_signal,"
		     " detector_version, detector_sensitivity)"
		     " VALUES ($1::uuid, 'a-late', 'web.api', 'ev-late', now(), now(), 'event', 1,"
		     "         0.01, 'low', 'late', 'ncd', 'cbad-1', 0.5)",
		     (const char *const[]){ w.org_a, NULL }, NULL, 0);
	snprintf(path, sizeof(path), "/v1/anomalies?limit=50&cursor=%s", first_cursor);
	st = call(&w, w.key_a, "GET", path, NULL);
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	rows = cJSON_GetObjectItem(j, "data");
	joined(rows, "id", got, sizeof(got));
	/* want holds the 120 ids of 5 characters, comma-separated: page 2 is ids 51..100. */
	ck_assert_msg(!strncmp(got, want + 50 * 6, 50 * 6 - 1), "page 2 after an insert: %s", got);
	cJSON_Delete(j);

	/* A cursor of the stream list is not an anomaly cursor. */
	st = call(&w, w.key_a, "GET", "/v1/streams?limit=1", NULL);
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	next = cJSON_GetObjectItem(j, "next_cursor");
	ck_assert(cJSON_IsString(next));
	snprintf(path, sizeof(path), "/v1/anomalies?cursor=%s", next->valuestring);
	cJSON_Delete(j);
	st = call(&w, w.key_a, "GET", path, NULL);
	expect_error(&w, st, 400, "invalid_parameter", "cursor", "stream cursor on anomalies");
	world_down(&w);
}
END_TEST

/* One anomaly carries its explanation and evidence; PATCH changes status and note, each change
 * is in the history with the key that made it; bad bodies change nothing. */
START_TEST(test_read_anomaly_patch_history)
{
	static const struct {
		const char *body, *code;
	} bad[] = {
		{ "{\"status\":\"closed\"}", "invalid_body" },
		{ "{\"note\":\"no status\"}", "invalid_body" },
		{ "{\"status\":\"resolved\",\"owner\":\"me\"}", "invalid_body" },
		{ "{\"status\":\"resolved\",\"note\":7}", "invalid_body" },
		{ "{\"status\":1}", "invalid_body" },
		{ "[\"resolved\"]", "invalid_body" },
		{ "{\"status\":", "invalid_json" },
		{ "{\"status\":\"resolved\",\"note\":[[[[[[[[\"deep\"]]]]]]]]}", "too_deep" },
	};
	char note[1100], body[1300], out[256];
	cJSON *j, *h, *e, *x;
	world w;
	long st;

	world_up(&w);
	st = call(&w, w.key_a, "GET", "/v1/anomalies/a-007", NULL);
	ck_assert_msg(st == 200, "%ld %.300s", st, w.resp);
	j = parsed(&w);
	ck_assert_str_eq(str_of(j, "id"), "a-007");
	ck_assert_str_eq(str_of(j, "org_id"), w.org_a);
	ck_assert_str_eq(str_of(j, "stream"), "web.cal");
	ck_assert_str_eq(str_of(j, "severity"), "critical");
	ck_assert_str_eq(str_of(j, "status"), "new");
	ck_assert_str_eq(str_of(j, "detected_at"), "2026-03-01T00:02:00.000Z");
	ck_assert(is_null(j, "status_note") && is_null(j, "status_changed_at"));
	ck_assert_double_eq_tol(num_of(j, "score"), 3.5, 1e-9);
	e = cJSON_GetObjectItem(j, "explanation");
	ck_assert_str_eq(str_of(e, "signal"), "ncd");
	ck_assert_double_eq_tol(num_of(cJSON_GetObjectItem(e, "baseline"), "median"), 0.2, 1e-9);
	x = cJSON_GetArrayItem(cJSON_GetObjectItem(e, "evidence"), 0);
	ck_assert_str_eq(str_of(x, "token"), "timeout");
	ck_assert_int_eq((int)num_of(cJSON_GetObjectItem(j, "window"), "events"), 400);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "status_history")), 0);
	cJSON_Delete(j);

	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-007",
		  "{\"status\":\"acknowledged\",\"note\":\"paging the checkout team\"}");
	ck_assert_msg(st == 200, "%ld %.300s", st, w.resp);
	j = parsed(&w);
	ck_assert_str_eq(str_of(j, "status"), "acknowledged");
	ck_assert_str_eq(str_of(j, "status_note"), "paging the checkout team");
	ck_assert_ptr_nonnull(str_of(j, "status_changed_at"));
	cJSON_Delete(j);
	/* The note alone changes too; leaving note out keeps it; null clears it. */
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-007",
		  "{\"status\":\"acknowledged\",\"note\":\"rollback started\"}");
	ck_assert_int_eq(st, 200);
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-007", "{\"status\":\"resolved\"}");
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	ck_assert_str_eq(str_of(j, "status"), "resolved");
	ck_assert_str_eq(str_of(j, "status_note"), "rollback started");
	cJSON_Delete(j);
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-007",
		  "{\"status\":\"resolved\",\"note\":null}");
	ck_assert_int_eq(st, 200);

	st = call(&w, w.key_a, "GET", "/v1/anomalies/a-007", NULL);
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	ck_assert(is_null(j, "status_note"));
	h = cJSON_GetObjectItem(j, "status_history");
	ck_assert_int_eq(cJSON_GetArraySize(h), 4);
	/* Newest first. */
	x = cJSON_GetArrayItem(h, 0);
	ck_assert_str_eq(str_of(x, "from"), "resolved");
	ck_assert_str_eq(str_of(x, "to"), "resolved");
	ck_assert(is_null(x, "note"));
	x = cJSON_GetArrayItem(h, 1);
	ck_assert_str_eq(str_of(x, "from"), "acknowledged");
	ck_assert_str_eq(str_of(x, "to"), "resolved");
	ck_assert_str_eq(str_of(x, "note"), "rollback started");
	x = cJSON_GetArrayItem(h, 2);
	ck_assert_str_eq(str_of(x, "from"), "acknowledged");
	ck_assert_str_eq(str_of(x, "to"), "acknowledged");
	ck_assert_str_eq(str_of(x, "note"), "rollback started");
	x = cJSON_GetArrayItem(h, 3);
	ck_assert_str_eq(str_of(x, "from"), "new");
	ck_assert_str_eq(str_of(x, "to"), "acknowledged");
	ck_assert_str_eq(str_of(x, "note"), "paging the checkout team");
	/* The actor is the key that made the change. */
	dl_itest_sql("SELECT 'api_key:' || id FROM api_keys WHERE org_id = $1::uuid",
		     (const char *const[]){ w.org_a, NULL }, out, sizeof(out));
	ck_assert_str_eq(str_of(x, "actor"), out);
	ck_assert_ptr_nonnull(str_of(x, "changed_at"));
	cJSON_Delete(j);
	/* Every change is a row, all made as the ingest role. */
	ck_assert_int_eq(dl_itest_sql("SELECT 1 FROM anomaly_status_history WHERE org_id = $1::uuid"
				      " AND anomaly_id = 'a-007' AND role = 'driftlock_ingest'",
				      (const char *const[]){ w.org_a, NULL }, NULL, 0),
			 4);

	/* Status filter sees the change. */
	expect_filter(&w, "?status=resolved", 500, "status = 'resolved'", A_ANOMALIES / 10 + 1);

	/* Bad bodies: 400 naming what is wrong, nothing changed. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-008", bad[i].body);
		expect_error(&w, st, 400, bad[i].code, NULL, bad[i].body);
	}
	memset(note, 'n', 1025);
	note[1025] = '\0';
	snprintf(body, sizeof(body), "{\"status\":\"dismissed\",\"note\":\"%s\"}", note);
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-008", body);
	expect_error(&w, st, 400, "invalid_body", NULL, "note of 1025 characters");
	note[1024] = '\0';
	snprintf(body, sizeof(body), "{\"status\":\"dismissed\",\"note\":\"%s\"}", note);
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-009", body);
	ck_assert_msg(st == 200, "note of 1024 characters: %ld %.200s", st, w.resp);
	/* Not JSON by its type. */
	st = dl_itest_http(w.proc.public_port, "PATCH", "/v1/anomalies/a-008",
			   (const char *const[]){ "Content-Type: text/plain", NULL }, "x", 1, w.resp,
			   RESP_CAP, NULL, 0);
	ck_assert_int_eq(st, 401); /* no key: authentication comes first */
	snprintf(body, sizeof(body), "Authorization: Bearer %s", w.key_a);
	st = dl_itest_http(w.proc.public_port, "PATCH", "/v1/anomalies/a-008",
			   (const char *const[]){ body, "Content-Type: text/plain", NULL },
			   "{\"status\":\"resolved\"}", 21, w.resp, RESP_CAP, NULL, 0);
	expect_error(&w, st, 415, "unsupported_media_type", NULL, "text/plain");
	dl_itest_sql("SELECT status || ':' || count(h.id) FROM anomalies AS a"
		     " LEFT JOIN anomaly_status_history AS h"
		     "   ON h.org_id = a.org_id AND h.anomaly_id = a.id"
		     " WHERE a.org_id = $1::uuid AND a.id = 'a-008' GROUP BY a.status",
		     (const char *const[]){ w.org_a, NULL }, out, sizeof(out));
	ck_assert_str_eq(out, "new:0");
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-999", "{\"status\":\"resolved\"}");
	expect_error(&w, st, 404, "not_found", NULL, "unknown id");
	world_down(&w);
}
END_TEST

static cJSON *get_stream(world *w, const char *key, const char *name)
{
	char path[256];
	long st;

	snprintf(path, sizeof(path), "/v1/streams/%s", name);
	st = call(w, key, "GET", path, NULL);
	ck_assert_msg(st == 200, "GET %s: %ld %.300s", path, st, w->resp);
	return parsed(w);
}

/* Streams: fields, pages, PUT validated by the engine's rules, creation within the plan. */
START_TEST(test_read_streams)
{
	static const struct {
		const char *body, *code, *mention;
	} bad[] = {
		{ "{\"sensitivity\":1.5}", "invalid_body", "sensitivity" },
		{ "{\"sensitivity\":-0.1}", "invalid_body", "sensitivity" },
		{ "{\"sensitivity\":\"high\"}", "invalid_body", "sensitivity" },
		{ "{}", "invalid_body", NULL },
		{ "{\"sensitivity\":0.5,\"paused\":true}", "invalid_body", "paused" },
		{ "{\"settings\":{\"bogus\":1}}", "invalid_body", "bogus" },
		{ "{\"settings\":{\"window_events\":5}}", "invalid_body", "settings.window_events" },
		{ "{\"settings\":{\"window_events\":\"400\"}}", "invalid_body", "window_events" },
		{ "{\"settings\":{\"zstd_level\":20}}", "invalid_body", "zstd_level" },
		{ "{\"settings\":{\"mask\":[\"phone_numbers\"]}}", "invalid_body", "mask" },
		{ "{\"settings\":{\"entity_fields\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}", "invalid_body",
		  "entity_fields" },
		{ "{\"settings\":[]}", "invalid_body", "settings" },
		{ "{\"sensitivity\":", "invalid_json", NULL },
	};
	char want[2048], got[2048], out[256];
	cJSON *j, *rows, *set;
	world w;
	long st;

	world_up(&w);
	j = get_stream(&w, w.key_a, "web.api");
	ck_assert_str_eq(str_of(j, "stream"), "web.api");
	ck_assert_str_eq(str_of(j, "status"), "active");
	ck_assert_double_eq_tol(num_of(j, "calibration_progress"), 1, 1e-9);
	ck_assert_int_eq((int)num_of(j, "events_seen"), 5000);
	ck_assert_int_eq((int)num_of(j, "anomalies"), 60);
	ck_assert_str_eq(str_of(j, "last_event_at"), "2026-03-01T01:00:00.000Z");
	ck_assert_str_eq(str_of(j, "last_anomaly_at"), "2026-03-01T00:40:00.000Z");
	ck_assert_double_eq_tol(num_of(j, "sensitivity"), 0.8, 1e-9);
	ck_assert_double_eq_tol(num_of(j, "effective_sensitivity"), 0.8, 1e-9);
	ck_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "settings")));
	cJSON_Delete(j);
	j = get_stream(&w, w.key_a, "web.cal");
	ck_assert_str_eq(str_of(j, "status"), "calibrating");
	ck_assert_double_eq_tol(num_of(j, "calibration_progress"), 0.25, 1e-9);
	ck_assert(is_null(j, "last_event_at") && is_null(j, "sensitivity"));
	ck_assert_double_eq_tol(num_of(j, "effective_sensitivity"), 0.5, 1e-9);
	cJSON_Delete(j);
	st = call(&w, w.key_a, "GET", "/v1/streams/no.such.stream", NULL);
	expect_error(&w, st, 404, "not_found", NULL, "unknown stream");
	st = call(&w, w.key_a, "GET", "/v1/streams/bad%20name", NULL);
	expect_error(&w, st, 400, "invalid_parameter", "stream", "bad stream name");

	/* Pages by name, each stream once. */
	dl_itest_sql("SELECT string_agg(name, ',' ORDER BY name) FROM streams WHERE org_id = $1::uuid",
		     (const char *const[]){ w.org_a, NULL }, want, sizeof(want));
	for (int limit = 1; limit <= 15; limit += 2) {
		rows = walk(&w, w.key_a, "/v1/streams", limit, NULL);
		joined(rows, "stream", got, sizeof(got));
		ck_assert_msg(!strcmp(got, want), "limit %d: %s, want %s", limit, got, want);
		ck_assert_int_eq(cJSON_GetArraySize(rows), 14);
		cJSON_Delete(rows);
	}
	st = call(&w, w.key_a, "GET", "/v1/streams?limit=501", NULL);
	expect_error(&w, st, 400, "invalid_parameter", "limit", "streams limit=501");
	st = call(&w, w.key_a, "GET", "/v1/streams?cursor=zzz", NULL);
	expect_error(&w, st, 400, "invalid_parameter", "cursor", "streams bad cursor");

	/* PUT: sensitivity alone keeps the settings; settings alone keep the sensitivity. */
	st = call(&w, w.key_a, "PUT", "/v1/streams/web.cal", "{\"sensitivity\":0.3}");
	ck_assert_msg(st == 200, "%ld %.300s", st, w.resp);
	j = parsed(&w);
	ck_assert_double_eq_tol(num_of(j, "sensitivity"), 0.3, 1e-9);
	ck_assert_double_eq_tol(num_of(j, "effective_sensitivity"), 0.3, 1e-9);
	ck_assert_str_eq(str_of(j, "status"), "calibrating");
	cJSON_Delete(j);
	st = call(&w, w.key_a, "PUT", "/v1/streams/web.cal",
		  "{\"settings\":{\"window_events\":400,\"entity_fields\":[\"user.id\"],"
		  "\"mask\":[\"uuids\",\"ips\"]}}");
	ck_assert_msg(st == 200, "%ld %.300s", st, w.resp);
	j = parsed(&w);
	ck_assert_double_eq_tol(num_of(j, "sensitivity"), 0.3, 1e-9);
	set = cJSON_GetObjectItem(j, "settings");
	ck_assert_int_eq((int)num_of(set, "window_events"), 400);
	ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(set, "entity_fields"), 0)
				 ->valuestring,
			 "user.id");
	cJSON_Delete(j);
	dl_itest_sql("SELECT (settings->>'window_events') || ':' || sensitivity FROM streams"
		     " WHERE org_id = $1::uuid AND name = 'web.cal'",
		     (const char *const[]){ w.org_a, NULL }, out, sizeof(out));
	ck_assert_str_eq(out, "400:0.3");

	/* Refused bodies change nothing. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cJSON *e;

		st = call(&w, w.key_a, "PUT", "/v1/streams/web.cal", bad[i].body);
		expect_error(&w, st, 400, bad[i].code, NULL, bad[i].body);
		j = parsed(&w);
		e = cJSON_GetObjectItem(j, "error");
		if (bad[i].mention)
			ck_assert_msg(strstr(str_of(e, "message"), bad[i].mention),
				      "%s: message does not name %s: %s", bad[i].body,
				      bad[i].mention, str_of(e, "message"));
		cJSON_Delete(j);
	}
	dl_itest_sql("SELECT (settings->>'window_events') || ':' || sensitivity FROM streams"
		     " WHERE org_id = $1::uuid AND name = 'web.cal'",
		     (const char *const[]){ w.org_a, NULL }, out, sizeof(out));
	ck_assert_str_eq(out, "400:0.3");
	/* null returns to the org's sensitivity; {} to the default settings. */
	st = call(&w, w.key_a, "PUT", "/v1/streams/web.cal",
		  "{\"sensitivity\":null,\"settings\":{}}");
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	ck_assert(is_null(j, "sensitivity"));
	ck_assert_double_eq_tol(num_of(j, "effective_sensitivity"), 0.5, 1e-9);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "settings")), 0);
	cJSON_Delete(j);

	/* A stream not seen yet is created, calibrating, with what was PUT. */
	st = call(&w, w.key_a, "PUT", "/v1/streams/fresh.one",
		  "{\"sensitivity\":0.9,\"settings\":{\"entity_fields\":[\"tenant\"]}}");
	ck_assert_msg(st == 200, "%ld %.300s", st, w.resp);
	j = get_stream(&w, w.key_a, "fresh.one");
	ck_assert_str_eq(str_of(j, "status"), "calibrating");
	ck_assert_int_eq((int)num_of(j, "events_seen"), 0);
	ck_assert_double_eq_tol(num_of(j, "sensitivity"), 0.9, 1e-9);
	cJSON_Delete(j);
	/* B is at its plan's ten streams: an eleventh is refused, an existing one still set. */
	st = call(&w, w.key_b, "PUT", "/v1/streams/b.eleventh", "{\"sensitivity\":0.4}");
	expect_error(&w, st, 409, "stream_limit_reached", NULL, "eleventh stream");
	ck_assert_int_eq(dl_itest_sql("SELECT 1 FROM streams WHERE org_id = $1::uuid",
				      (const char *const[]){ w.org_b, NULL }, NULL, 0),
			 10);
	st = call(&w, w.key_b, "PUT", "/v1/streams/b.s5", "{\"sensitivity\":0.4}");
	ck_assert_msg(st == 200, "%ld %.300s", st, w.resp);
	world_down(&w);
}
END_TEST

/* Usage: the current period's counter against the plan, overage priced only where billed. */
START_TEST(test_read_usage)
{
	static const char period_sql[] =
		"SELECT to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
		" || ' ' || to_char(period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
		" FROM dl_usage_period($1::uuid, now())";
	static const char counter_sql[] =
		"INSERT INTO usage_counters (org_id, period_start, period_end, anomalies)"
		" SELECT $1::uuid, period_start, period_end, $2::bigint"
		" FROM dl_usage_period($1::uuid, now())";
	char period[128], got[128];
	cJSON *j, *t;
	world w;
	long st;

	world_up(&w);
	dl_itest_sql(counter_sql, (const char *const[]){ w.org_a, "60000", NULL }, NULL, 0);
	/* Last period's counter does not count. */
	dl_itest_sql("INSERT INTO usage_counters (org_id, period_start, period_end, anomalies)"
		     " SELECT $1::uuid, period_start - interval '1 month', period_start, 999"
		     " FROM dl_usage_period($1::uuid, now())",
		     (const char *const[]){ w.org_a, NULL }, NULL, 0);
	dl_itest_sql("INSERT INTO usage_alerts (org_id, period_start, threshold, counted, included)"
		     " SELECT $1::uuid, period_start, t, 60000, 50000"
		     " FROM dl_usage_period($1::uuid, now()), unnest(ARRAY[100, 70, 90, 120]) AS t",
		     (const char *const[]){ w.org_a, NULL }, NULL, 0);
	dl_itest_sql(counter_sql, (const char *const[]){ w.org_b, "1500", NULL }, NULL, 0);

	st = call(&w, w.key_a, "GET", "/v1/usage", NULL);
	ck_assert_msg(st == 200, "%ld %.300s", st, w.resp);
	j = parsed(&w);
	ck_assert_str_eq(str_of(j, "plan"), "pro");
	ck_assert_str_eq(str_of(j, "plan_name"), "Pro");
	dl_itest_sql(period_sql, (const char *const[]){ w.org_a, NULL }, period, sizeof(period));
	snprintf(got, sizeof(got), "%s %s", str_of(j, "period_start"), str_of(j, "period_end"));
	ck_assert_str_eq(got, period);
	ck_assert_int_eq((long long)num_of(j, "anomalies"), 60000);
	ck_assert_int_eq((long long)num_of(j, "included"), 50000);
	ck_assert_double_eq_tol(num_of(j, "percent_used"), 120, 1e-9);
	ck_assert_int_eq((long long)num_of(j, "overage"), 10000);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "overage_allowed")));
	ck_assert_int_eq((long long)num_of(j, "overage_price_microusd"), 1000);
	ck_assert_int_eq((long long)num_of(j, "estimated_overage_microusd"), 10000000);
	ck_assert_str_eq(str_of(j, "billing_status"), "ok");
	t = cJSON_GetObjectItem(j, "thresholds_reached");
	ck_assert_int_eq(cJSON_GetArraySize(t), 4);
	ck_assert_int_eq(cJSON_GetArrayItem(t, 0)->valueint, 70);
	ck_assert_int_eq(cJSON_GetArrayItem(t, 3)->valueint, 120);
	cJSON_Delete(j);

	/* Developer: a soft cap, nothing billed. */
	st = call(&w, w.key_b, "GET", "/v1/usage", NULL);
	ck_assert_msg(st == 200, "%ld %.300s", st, w.resp);
	j = parsed(&w);
	ck_assert_str_eq(str_of(j, "plan"), "developer");
	ck_assert_int_eq((long long)num_of(j, "anomalies"), 1500);
	ck_assert_int_eq((long long)num_of(j, "included"), 1000);
	ck_assert_double_eq_tol(num_of(j, "percent_used"), 150, 1e-9);
	ck_assert_int_eq((long long)num_of(j, "overage"), 500);
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "overage_allowed")));
	ck_assert(is_null(j, "estimated_overage_microusd"));
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "thresholds_reached")), 0);
	cJSON_Delete(j);

	/* No counter yet this period: zero. */
	dl_itest_sql("DELETE FROM usage_counters WHERE org_id = $1::uuid",
		     (const char *const[]){ w.org_b, NULL }, NULL, 0);
	st = call(&w, w.key_b, "GET", "/v1/usage", NULL);
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	ck_assert_int_eq((long long)num_of(j, "anomalies"), 0);
	ck_assert_double_eq_tol(num_of(j, "percent_used"), 0, 1e-9);
	ck_assert_int_eq((long long)num_of(j, "overage"), 0);
	cJSON_Delete(j);
	world_down(&w);
}
END_TEST

/* Org A's key never sees org B's anomalies or streams through any route, and each route
 * wants a key. */
START_TEST(test_read_org_isolation)
{
	static const char *const routes[][2] = {
		{ "GET", "/v1/anomalies" },	   { "GET", "/v1/anomalies/a-001" },
		{ "PATCH", "/v1/anomalies/a-001" }, { "GET", "/v1/streams" },
		{ "GET", "/v1/streams/web.api" },   { "PUT", "/v1/streams/web.api" },
		{ "GET", "/v1/usage" },
	};
	static const char *const b_paths[] = {
		"/v1/anomalies/b-001", "/v1/anomalies/b-030", "/v1/streams/b.only",
		"/v1/streams/b.s2",
	};
	char out[256], path[256];
	cJSON *rows, *row, *j;
	world w;
	long st;
	int n;

	world_up(&w);
	/* No key, a made-up key: 401 everywhere, before anything else. */
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const char *body = routes[i][0][0] == 'G' ? NULL : "{\"status\":\"resolved\"}";

		st = call(&w, NULL, routes[i][0], routes[i][1], body);
		expect_error(&w, st, 401, "missing_api_key", NULL, routes[i][1]);
		st = call(&w, "dl_test_notakeyatall0000000000000000000000", routes[i][0],
			  routes[i][1], body);
		expect_error(&w, st, 401, "invalid_api_key", NULL, routes[i][1]);
	}

	/* Lists: only A's rows, whatever the filters. */
	rows = walk(&w, w.key_a, "/v1/anomalies", 500, NULL);
	ck_assert_int_eq(cJSON_GetArraySize(rows), A_ANOMALIES);
	cJSON_ArrayForEach(row, rows) {
		ck_assert_str_eq(str_of(row, "org_id"), w.org_a);
		ck_assert_str_eq(str_of(row, "excerpt"), "org-a");
		ck_assert(strncmp(str_of(row, "id"), "b-", 2) != 0);
	}
	cJSON_Delete(rows);
	rows = walk(&w, w.key_a, "/v1/anomalies?stream=web.api&severity=low,medium,high,critical",
		    13, NULL);
	cJSON_ArrayForEach(row, rows)
		ck_assert_str_eq(str_of(row, "org_id"), w.org_a);
	ck_assert_int_eq(cJSON_GetArraySize(rows), A_ANOMALIES / 2);
	cJSON_Delete(rows);
	rows = walk(&w, w.key_a, "/v1/streams", 4, NULL);
	ck_assert_int_eq(cJSON_GetArraySize(rows), 14);
	cJSON_ArrayForEach(row, rows) {
		ck_assert(strcmp(str_of(row, "stream"), "b.only") != 0);
		ck_assert(strncmp(str_of(row, "stream"), "b.s", 3) != 0);
	}
	cJSON_Delete(rows);
	/* B sees its own, and only those. */
	rows = walk(&w, w.key_b, "/v1/anomalies", 10, NULL);
	ck_assert_int_eq(cJSON_GetArraySize(rows), B_ANOMALIES);
	cJSON_ArrayForEach(row, rows)
		ck_assert_str_eq(str_of(row, "org_id"), w.org_b);
	cJSON_Delete(rows);

	/* B's ids and streams are unknown to A: the same 404 as ids that exist nowhere. */
	for (size_t i = 0; i < sizeof(b_paths) / sizeof(b_paths[0]); i++) {
		st = call(&w, w.key_a, "GET", b_paths[i], NULL);
		expect_error(&w, st, 404, "not_found", NULL, b_paths[i]);
	}
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/b-001",
		  "{\"status\":\"dismissed\",\"note\":\"not mine\"}");
	expect_error(&w, st, 404, "not_found", NULL, "PATCH of B's anomaly");
	dl_itest_sql("SELECT a.status || ':' || COALESCE(a.status_note, '-') || ':' ||"
		     " (SELECT count(*) FROM anomaly_status_history AS h"
		     "   WHERE h.org_id = a.org_id AND h.anomaly_id = a.id)"
		     " FROM anomalies AS a WHERE a.org_id = $1::uuid AND a.id = 'b-001'",
		     (const char *const[]){ w.org_b, NULL }, out, sizeof(out));
	ck_assert_str_eq(out, "new:-:0");

	/* Both orgs have an a-001 and a web.api: A reads and changes its own only. */
	st = call(&w, w.key_a, "GET", "/v1/anomalies/a-001", NULL);
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	ck_assert_str_eq(str_of(j, "org_id"), w.org_a);
	ck_assert_str_eq(str_of(j, "excerpt"), "org-a");
	cJSON_Delete(j);
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-001", "{\"status\":\"investigating\"}");
	ck_assert_int_eq(st, 200);
	dl_itest_sql("SELECT status FROM anomalies WHERE org_id = $1::uuid AND id = 'a-001'",
		     (const char *const[]){ w.org_b, NULL }, out, sizeof(out));
	ck_assert_str_eq(out, "new");
	st = call(&w, w.key_b, "GET", "/v1/anomalies/a-001", NULL);
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	ck_assert_str_eq(str_of(j, "excerpt"), "org-b");
	ck_assert_str_eq(str_of(j, "status"), "new");
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "status_history")), 0);
	cJSON_Delete(j);
	j = get_stream(&w, w.key_a, "web.api");
	ck_assert_int_eq((int)num_of(j, "events_seen"), 5000);
	cJSON_Delete(j);
	st = call(&w, w.key_a, "PUT", "/v1/streams/web.api", "{\"sensitivity\":0.11}");
	ck_assert_int_eq(st, 200);
	dl_itest_sql("SELECT sensitivity FROM streams WHERE org_id = $1::uuid AND name = 'web.api'",
		     (const char *const[]){ w.org_b, NULL }, out, sizeof(out));
	ck_assert_str_eq(out, "0.2");
	/* A PUT of a name only B has makes A's own stream; B's is untouched. */
	st = call(&w, w.key_a, "PUT", "/v1/streams/b.only", "{\"sensitivity\":0.66}");
	ck_assert_int_eq(st, 200);
	dl_itest_sql("SELECT sensitivity || ':' || events_seen FROM streams"
		     " WHERE org_id = $1::uuid AND name = 'b.only'",
		     (const char *const[]){ w.org_b, NULL }, out, sizeof(out));
	ck_assert_str_eq(out, "0.2:7");
	j = get_stream(&w, w.key_a, "b.only");
	ck_assert_int_eq((int)num_of(j, "events_seen"), 0);
	cJSON_Delete(j);
	/* Filters naming B's stream find nothing. */
	st = call(&w, w.key_a, "GET", "/v1/anomalies?stream=b.only", NULL);
	ck_assert_int_eq(st, 200);
	j = parsed(&w);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "data")), 0);
	cJSON_Delete(j);
	/* A's id list never contained B's: B's 30 b- ids are all there for B only. */
	n = dl_itest_sql("SELECT 1 FROM anomalies WHERE org_id = $1::uuid AND id LIKE 'b-%'",
			 (const char *const[]){ w.org_b, NULL }, NULL, 0);
	ck_assert_int_eq(n, B_ANOMALIES - 1);
	snprintf(path, sizeof(path), "/v1/anomalies?limit=500&min_score=0");
	st = call(&w, w.key_a, "GET", path, NULL);
	ck_assert_int_eq(st, 200);
	ck_assert_ptr_null(strstr(w.resp, w.org_b));
	ck_assert_ptr_null(strstr(w.resp, "org-b"));
	world_down(&w);
}
END_TEST

/* PostgreSQL down: 503 unavailable with Retry-After (the key is still cached), and the same
 * process answers again once it is back. Last: it stops and restarts the stack's server. */
START_TEST(test_read_database_down)
{
	static const char *const paths[] = { "/v1/anomalies", "/v1/anomalies/a-001",
					     "/v1/streams", "/v1/usage" };
	char cmd[1024], hdrs[8192], retry[32];
	world w;
	long st;
	int i;

	world_up(&w);
	/* The key is checked (and cached) while the database is up. */
	st = call(&w, w.key_a, "GET", "/v1/usage", NULL);
	ck_assert_int_eq(st, 200);
	snprintf(cmd, sizeof(cmd), "%s/infra/stack.sh stop --only postgres --run-dir %s >/dev/null",
		 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), dl_itest_env("DRIFTLOCK_RUN_DIR"));
	ck_assert_int_eq(system(cmd), 0);
	for (size_t k = 0; k < sizeof(paths) / sizeof(paths[0]); k++) {
		char auth[300];

		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", w.key_a);
		st = dl_itest_http(w.proc.public_port, "GET", paths[k],
				   (const char *const[]){ auth, NULL }, NULL, 0, w.resp, RESP_CAP,
				   hdrs, sizeof(hdrs));
		expect_error(&w, st, 503, "unavailable", NULL, paths[k]);
		ck_assert_msg(dl_itest_header(hdrs, "Retry-After", retry, sizeof(retry)),
			      "%s: 503 without Retry-After", paths[k]);
		ck_assert_int_ge(atoi(retry), 1);
	}
	st = call(&w, w.key_a, "PATCH", "/v1/anomalies/a-001", "{\"status\":\"resolved\"}");
	expect_error(&w, st, 503, "unavailable", NULL, "PATCH while the database is down");

	snprintf(cmd, sizeof(cmd), "%s/infra/stack.sh start --run-dir %s >/dev/null",
		 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), dl_itest_env("DRIFTLOCK_RUN_DIR"));
	ck_assert_int_eq(system(cmd), 0);
	st = 0;
	for (i = 0; i < 60 && st != 200; i++) {
		st = call(&w, w.key_a, "GET", "/v1/anomalies?limit=1", NULL);
		if (st != 200)
			sleep(1);
	}
	ck_assert_msg(st == 200, "no 200 after the database came back: %ld %.300s", st, w.resp);
	dl_itest_sql("SELECT status FROM anomalies WHERE org_id = $1::uuid AND id = 'a-001'",
		     (const char *const[]){ w.org_a, NULL }, cmd, sizeof(cmd));
	ck_assert_str_eq(cmd, "new");
	world_down(&w);
}
END_TEST

static Suite *ingest_read_suite(void)
{
	Suite *s = suite_create("ingest_read");
	TCase *tc = tcase_create("read");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_read_anomaly_filters);
	tcase_add_test(tc, test_read_anomaly_pages);
	tcase_add_test(tc, test_read_anomaly_patch_history);
	tcase_add_test(tc, test_read_streams);
	tcase_add_test(tc, test_read_usage);
	tcase_add_test(tc, test_read_org_isolation);
	tcase_add_test(tc, test_read_database_down);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ingest_read_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
