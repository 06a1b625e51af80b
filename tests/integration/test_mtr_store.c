/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for mtr_store: anomalies stored and counted once per billing period,
 * threshold notifications once, usage records, rejected orgs, retention and a PostgreSQL
 * restart, against the real PostgreSQL of the stack with the metering role. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/dl_id.h"
#include "common/dl_metrics.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_notification.h"
#include "proto/proto_usage.h"
#include "services/metering/mtr_store.h"
#include "tests/support/dl_itest.h"

#define DAY_MS (86400LL * 1000)

typedef struct fixture {
	dl_metrics_registry *m;
	mtr_store *s;
	char err[512];
} fixture;

static void fx_up(fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->m = dl_metrics_registry_new();
	ck_assert_ptr_nonnull(f->m);
	ck_assert_msg(mtr_store_new(dl_itest_env("DRIFTLOCK_PG_DSN_METERING"), f->m, &f->s, f->err,
				    sizeof(f->err)) == 0,
		      "mtr_store_new: %s", f->err);
}

static void fx_down(fixture *f)
{
	mtr_store_free(f->s);
	dl_metrics_registry_free(f->m);
}

/* Plans with a small allowance: tiny (10 included, no overage), tinyover (10, overage). */
static void small_plans(void)
{
	dl_itest_sql("INSERT INTO plans (code, display_name, price_cents_month, included_anomalies,"
		     " overage_allowed, overage_microusd, retention_days, ingest_events_per_second,"
		     " ingest_burst) VALUES ('tiny', 'Tiny', 0, 10, false, 0, 7, 50, 500),"
		     " ('tinyover', 'Tiny overage', 100, 10, true, 1000, 30, 50, 500)"
		     " ON CONFLICT (code) DO NOTHING",
		     NULL, NULL, 0);
}

static void new_org(const char *plan, const char *over_quota, char org[37])
{
	dl_itest_sql("INSERT INTO organizations (name, plan, over_quota) VALUES"
		     " ('mtr_store test', $1, $2) RETURNING id",
		     (const char *const[]){ plan, over_quota, NULL }, org, 37);
	ck_assert(dl_id_is_uuid(org));
}

/* n anomalies of org with ids "<prefix>-<i>" detected at at_ms + i. */
static struct proto_anomaly *make(const char *org, const char *prefix, size_t n, int64_t at_ms)
{
	struct proto_anomaly *a = calloc(n ? n : 1, sizeof(*a));
	size_t i;

	ck_assert_ptr_nonnull(a);
	for (i = 0; i < n; i++) {
		struct proto_anomaly *x = &a[i];

		snprintf(x->id, sizeof(x->id), "%s-%zu", prefix, i);
		snprintf(x->org_id, sizeof(x->org_id), "%s", org);
		snprintf(x->stream, sizeof(x->stream), "checkout.logs");
		snprintf(x->event_id, sizeof(x->event_id), "ev-%s-%zu", prefix, i);
		x->event_ts_ms = at_ms + (int64_t)i - 5;
		x->detected_at_ms = at_ms + (int64_t)i;
		x->kind = PROTO_ANOMALY_KIND_WINDOW;
		x->score = 42.5;
		x->p_value = 0.0004;
		x->severity = PROTO_ANOMALY_SEVERITY_HIGH;
		x->nsignals = 2;
		snprintf(x->signals[0].name, sizeof(x->signals[0].name), "ncd");
		x->signals[0].value = 0.61;
		snprintf(x->signals[1].name, sizeof(x->signals[1].name), "bits_excess");
		x->signals[1].value = 42.5;
		x->has_window = true;
		x->window.start_ts_ms = at_ms - 300000;
		x->window.end_ts_ms = at_ms;
		x->window.events = 1200;
		x->has_entity = true;
		snprintf(x->entity.field, sizeof(x->entity.field), "user.id");
		snprintf(x->entity.value, sizeof(x->entity.value), "u_\"42\"\\");
		snprintf(x->explanation.summary, sizeof(x->explanation.summary),
			 "'card declined' rose from 0.4%% to 9%%\n");
		snprintf(x->explanation.signal, sizeof(x->explanation.signal), "ncd");
		x->explanation.value = 0.61;
		x->explanation.baseline_low = 0.08;
		x->explanation.baseline_median = 0.12;
		x->explanation.baseline_high = 0.19;
		x->explanation.nevidence = 1;
		snprintf(x->explanation.evidence[0].name, sizeof(x->explanation.evidence[0].name),
			 "new_token");
		x->explanation.evidence[0].has_bits = true;
		x->explanation.evidence[0].bits = 18.25;
		x->explanation.evidence[0].has_detail = true;
		snprintf(x->explanation.evidence[0].detail,
			 sizeof(x->explanation.evidence[0].detail), "token \"card declined\"");
		snprintf(x->excerpt, sizeof(x->excerpt), "{\"level\":\"error\"}");
		snprintf(x->detector.version, sizeof(x->detector.version), "cbad-0.1.0");
		x->detector.sensitivity = 0.5;
	}
	return a;
}

static int store(fixture *f, const struct proto_anomaly *a, size_t n, mtr_store_result *res)
{
	int r = mtr_store_batch(f->s, a, n, res, f->err, sizeof(f->err));

	ck_assert_msg(r == 0, "mtr_store_batch: %d %s", r, f->err);
	return r;
}

static long long sql_num(const char *sql, const char *org)
{
	char out[64] = "";

	dl_itest_sql(sql, (const char *const[]){ org, NULL }, out, sizeof(out));
	return atoll(out);
}

static int64_t ms_of(const char *rfc3339)
{
	int64_t ms = 0;
	char err[128];

	ck_assert_int_eq(dl_time_parse_rfc3339(rfc3339, strlen(rfc3339), &ms, err, sizeof(err)),
			 0);
	return ms;
}

/* The org's outbox payloads on topic, oldest first, as admin. Returns the count. */
static int outbox(const char *org, const char *topic, char ***ret)
{
	PGconn *c = PQconnectdb(dl_itest_env("DRIFTLOCK_PG_DSN_ADMIN"));
	const char *v[] = { org, topic };
	PGresult *r;
	char **out;
	int i, n;

	ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
	r = PQexecParams(c,
			 "SELECT payload FROM outbox WHERE org_id = $1::uuid AND topic = $2"
			 " AND key = $1::text AND sent_at IS NULL ORDER BY id",
			 2, NULL, v, NULL, NULL, 0);
	ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	n = PQntuples(r);
	out = calloc((size_t)n + 1, sizeof(*out));
	for (i = 0; i < n; i++)
		out[i] = strdup(PQgetvalue(r, i, 0));
	PQclear(r);
	PQfinish(c);
	*ret = out;
	return n;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

typedef struct note {
	char id[PROTO_ID_MAX + 1];
	int threshold;
	long long counted, included, percent;
	char action[32], over_quota[32], plan[32], period_start[40];
} note;

/* Decodes a notification payload with the consumer's decoder and pulls its data fields. */
static void decode_note(const char *org, const char *payload, note *out)
{
	struct proto_notification n;
	char err[256], *p;

	memset(out, 0, sizeof(*out));
	ck_assert_msg(proto_notification_decode(payload, strlen(payload), &n, err, sizeof(err)) ==
			      0,
		      "decode: %s in %s", err, payload);
	ck_assert_str_eq(n.org_id, org);
	ck_assert_str_eq(n.kind, "usage_threshold");
	snprintf(out->id, sizeof(out->id), "%s", n.id);
	ck_assert_ptr_nonnull(p = strstr(n.data, "\"threshold\":"));
	out->threshold = atoi(p + 12);
	ck_assert_ptr_nonnull(p = strstr(n.data, "\"counted\":"));
	out->counted = atoll(p + 10);
	ck_assert_ptr_nonnull(p = strstr(n.data, "\"included\":"));
	out->included = atoll(p + 11);
	ck_assert_ptr_nonnull(p = strstr(n.data, "\"percent\":"));
	out->percent = atoll(p + 10);
	ck_assert_int_eq(sscanf(strstr(n.data, "\"action\":"), "\"action\":\"%31[a-z_]\"",
				out->action),
			 1);
	ck_assert_int_eq(sscanf(strstr(n.data, "\"over_quota\":"), "\"over_quota\":\"%31[a-z_]\"",
				out->over_quota),
			 1);
	ck_assert_int_eq(sscanf(strstr(n.data, "\"plan\":"), "\"plan\":\"%31[a-z_]\"", out->plan),
			 1);
	ck_assert_int_eq(sscanf(strstr(n.data, "\"period_start\":"),
				"\"period_start\":\"%39[0-9TZ:.-]\"", out->period_start),
			 1);
	ck_assert_ptr_nonnull(strstr(n.data, "\"period_end\":\""));
	proto_notification_free(&n);
}

static const mtr_org_usage *usage_of(const mtr_store_result *res, const char *org)
{
	for (size_t i = 0; i < res->norgs; i++)
		if (strcmp(res->orgs[i].org_id, org) == 0)
			return &res->orgs[i];
	ck_abort_msg("org %s not in the result", org);
	return NULL;
}

/* Stored once, counted once; every field lands in its column. */
START_TEST(test_redelivery_counted_once)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char org[37], out[512];
	int64_t now = dl_time_now_ms();
	const mtr_org_usage *u;

	fx_up(&f);
	new_org("developer", "soft_cap", org);
	a = make(org, "r", 5, now);
	store(&f, a, 5, &res);
	ck_assert_uint_eq(res.stored, 5);
	ck_assert_uint_eq(res.duplicates, 0);
	ck_assert_uint_eq(res.nrejected, 0);
	ck_assert_uint_eq(res.norgs, 1);
	u = usage_of(&res, org);
	ck_assert_int_eq(u->anomalies, 5);
	ck_assert_int_eq(u->included, 1000);
	ck_assert_str_eq(u->over_quota, "soft_cap");
	ck_assert(!u->blocked);
	ck_assert_int_le(u->period_start_ms, now);
	ck_assert_int_gt(u->period_end_ms, now);

	/* The same batch again (redelivery), and a batch repeating one id twice. */
	store(&f, a, 5, &res);
	ck_assert_uint_eq(res.stored, 0);
	ck_assert_uint_eq(res.duplicates, 5);
	ck_assert_int_eq(usage_of(&res, org)->anomalies, 5);
	a[1] = a[0];
	snprintf(a[0].id, sizeof(a[0].id), "r-new");
	snprintf(a[1].id, sizeof(a[1].id), "r-new");
	store(&f, a, 2, &res);
	ck_assert_uint_eq(res.stored, 1);
	ck_assert_uint_eq(res.duplicates, 1);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid", org), 6);
	ck_assert_int_eq(sql_num("SELECT sum(anomalies) FROM usage_counters WHERE org_id = $1::uuid",
				 org),
			 6);
	/* The stream's count for the read API and the dashboards: stored anomalies, once each;
	 * its last anomaly is the latest detected_at stored. */
	ck_assert_int_eq(sql_num("SELECT anomalies_count FROM streams WHERE org_id = $1::uuid"
				 " AND name = 'checkout.logs'",
				 org),
			 6);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM streams AS s WHERE s.org_id = $1::uuid"
				 " AND s.last_anomaly_at = (SELECT max(detected_at) FROM anomalies"
				 " WHERE org_id = s.org_id)",
				 org),
			 1);

	dl_itest_sql("SELECT concat_ws('|', kind, severity, score, p_value, signals->>'ncd',"
		     " window_events, (extract(epoch FROM window_end) * 1000)::bigint - "
		     " (extract(epoch FROM detected_at) * 1000)::bigint, entity_field, entity_value,"
		     " explanation_summary, explanation_signal, baseline_median,"
		     " evidence->0->>'detail', evidence->0->>'bits', excerpt, detector_version,"
		     " detector_sensitivity, status) FROM anomalies WHERE org_id = $1::uuid AND"
		     " id = 'r-3'",
		     (const char *const[]){ org, NULL }, out, sizeof(out));
	ck_assert_str_eq(out, "window|high|42.5|0.0004|0.61|1200|-3|user.id|u_\"42\"\\|"
			      "'card declined' rose from 0.4% to 9%\n|ncd|0.12|"
			      "token \"card declined\"|18.25|{\"level\":\"error\"}|cbad-0.1.0|0.5|new");
	free(a);
	fx_down(&f);
}
END_TEST

/* 70/90/100/120 each once: one crossed alone, three crossed by one batch, replays after. */
START_TEST(test_thresholds_once)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char org[37], **p = NULL;
	int64_t now = dl_time_now_ms();
	note n;
	int i, count;
	static const int want_t[] = { 70, 90, 100, 120 };
	static const long long want_counted[] = { 7, 12, 12, 12 };

	fx_up(&f);
	small_plans();
	new_org("tiny", "soft_cap", org);
	a = make(org, "t", 12, now);
	store(&f, a, 6, &res); /* 60 % */
	ck_assert_uint_eq(res.notifications, 0);
	store(&f, a + 6, 1, &res); /* 70 % exactly */
	ck_assert_uint_eq(res.notifications, 1);
	store(&f, a, 7, &res); /* replay after the alert */
	ck_assert_uint_eq(res.notifications, 0);
	store(&f, a + 7, 5, &res); /* 120 %: 90, 100 and 120 at once */
	ck_assert_uint_eq(res.stored, 5);
	ck_assert_uint_eq(res.notifications, 3);
	ck_assert(!usage_of(&res, org)->blocked);
	store(&f, a, 12, &res); /* all again */
	ck_assert_uint_eq(res.notifications, 0);
	ck_assert_uint_eq(res.usage_records, 0);

	count = outbox(org, "driftlock.notifications.v1", &p);
	ck_assert_int_eq(count, 4);
	for (i = 0; i < count; i++) {
		char id[PROTO_ID_MAX + 1];

		decode_note(org, p[i], &n);
		ck_assert_int_eq(n.threshold, want_t[i]);
		ck_assert_int_eq(n.counted, want_counted[i]);
		ck_assert_int_eq(n.included, 10);
		ck_assert_int_eq(n.percent, want_counted[i] * 10);
		ck_assert_str_eq(n.plan, "tiny");
		ck_assert_str_eq(n.over_quota, "soft_cap");
		ck_assert_str_eq(n.action, want_t[i] == 120 ? "warn" : "notice");
		snprintf(id, sizeof(id), "usage-%s-%" PRId64 "-%d", org,
			 usage_of(&res, org)->period_start_ms, want_t[i]);
		ck_assert_str_eq(n.id, id);
		ck_assert_int_eq(ms_of(n.period_start), usage_of(&res, org)->period_start_ms);
	}
	strv_free(p);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM usage_alerts WHERE org_id = $1::uuid", org),
			 4);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM outbox WHERE org_id = $1::uuid AND"
				 " topic = 'driftlock.usage.v1'",
				 org),
			 0);
	free(a);
	fx_down(&f);
}
END_TEST

/* block: 402 flag at 120 %, action "blocked"; allow_overage without an overage plan acts as
 * soft_cap; allow_overage on an overage plan writes running-total usage records. */
START_TEST(test_over_quota_policies)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char org_b[37], org_s[37], org_o[37], **p = NULL, id[PROTO_ID_MAX + 1], err[256];
	int64_t now = dl_time_now_ms(), ps;
	struct proto_usage u;
	note n;

	fx_up(&f);
	small_plans();
	new_org("tiny", "block", org_b);
	new_org("tiny", "allow_overage", org_s);
	new_org("tinyover", "allow_overage", org_o);

	a = make(org_b, "b", 12, now);
	store(&f, a, 11, &res);
	ck_assert(!usage_of(&res, org_b)->blocked);
	ck_assert_str_eq(usage_of(&res, org_b)->over_quota, "block");
	store(&f, a + 11, 1, &res);
	ck_assert(usage_of(&res, org_b)->blocked);
	ck_assert_uint_eq(res.usage_records, 0);
	ck_assert_int_eq(outbox(org_b, "driftlock.notifications.v1", &p), 4);
	decode_note(org_b, p[3], &n);
	ck_assert_int_eq(n.threshold, 120);
	ck_assert_str_eq(n.action, "blocked");
	strv_free(p);
	free(a);

	a = make(org_s, "s", 15, now);
	store(&f, a, 15, &res);
	ck_assert_uint_eq(res.usage_records, 0);
	ck_assert_str_eq(usage_of(&res, org_s)->over_quota, "soft_cap");
	ck_assert_int_eq(outbox(org_s, "driftlock.notifications.v1", &p), 4);
	decode_note(org_s, p[3], &n);
	ck_assert_str_eq(n.action, "warn");
	strv_free(p);
	ck_assert_int_eq(outbox(org_s, "driftlock.usage.v1", &p), 0);
	strv_free(p);
	free(a);

	a = make(org_o, "o", 20, now);
	store(&f, a, 8, &res);
	ck_assert_uint_eq(res.usage_records, 0);
	store(&f, a + 8, 4, &res); /* 12 */
	ck_assert_uint_eq(res.usage_records, 1);
	ck_assert(!usage_of(&res, org_o)->blocked);
	store(&f, a, 12, &res); /* replay: nothing new */
	ck_assert_uint_eq(res.usage_records, 0);
	store(&f, a + 12, 3, &res); /* 15 */
	ck_assert_uint_eq(res.usage_records, 1);
	ps = usage_of(&res, org_o)->period_start_ms;
	ck_assert_int_eq(outbox(org_o, "driftlock.usage.v1", &p), 2);
	for (int i = 0; i < 2; i++) {
		int64_t q = i ? 15 : 12;

		ck_assert_msg(proto_usage_decode(p[i], strlen(p[i]), &u, err, sizeof(err)) == 0,
			      "%s", err);
		snprintf(id, sizeof(id), "usage-%s-%" PRId64 "-%" PRId64, org_o, ps, q);
		ck_assert_str_eq(u.id, id);
		ck_assert_int_eq(u.quantity, q);
		ck_assert_int_eq(u.overage, q - 10);
		ck_assert_str_eq(u.plan, "tinyover");
		ck_assert_int_eq(u.period_start_ms, ps);
		ck_assert_int_eq(u.period_end_ms, usage_of(&res, org_o)->period_end_ms);
	}
	strv_free(p);
	ck_assert_int_eq(outbox(org_o, "driftlock.notifications.v1", &p), 4);
	decode_note(org_o, p[3], &n);
	ck_assert_str_eq(n.action, "overage");
	ck_assert_str_eq(n.over_quota, "allow_overage");
	strv_free(p);
	free(a);
	fx_down(&f);
}
END_TEST

/* An active subscription of org for [start, end). */
static void sub_for(const char *org, const char *start, const char *end)
{
	char sub[64];

	snprintf(sub, sizeof(sub), "sub_%.8s%.4s%.4s", org, org + 9, org + 14);
	dl_itest_sql("INSERT INTO subscriptions (stripe_subscription_id, org_id, plan_code, status,"
		     " current_period_start, current_period_end) VALUES ($1, $2::uuid, 'developer',"
		     " 'active', $3::timestamptz, $4::timestamptz)",
		     (const char *const[]){ sub, org, start, end, NULL }, NULL, 0);
}

/* One batch across a month boundary, and across a subscription's period start. */
START_TEST(test_period_rollover)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char org[37], org2[37];
	int64_t oct31 = ms_of("2026-10-31T23:59:59.000Z");

	fx_up(&f);
	new_org("developer", "soft_cap", org);
	a = make(org, "m", 6, oct31);
	a[3].detected_at_ms = a[4].detected_at_ms = a[5].detected_at_ms =
		ms_of("2026-11-01T00:00:00.000Z");
	store(&f, a, 6, &res);
	ck_assert_uint_eq(res.stored, 6);
	ck_assert_int_eq(sql_num("SELECT anomalies FROM usage_counters WHERE org_id = $1::uuid AND"
				 " period_start = '2026-10-01T00:00:00Z'",
				 org),
			 3);
	ck_assert_int_eq(sql_num("SELECT anomalies FROM usage_counters WHERE org_id = $1::uuid AND"
				 " period_start = '2026-11-01T00:00:00Z'",
				 org),
			 3);
	free(a);

	/* A subscription from Nov 10 to Dec 10: Nov 5 counts in the calendar month, Nov 15 in
	 * the subscription's period. */
	new_org("developer", "soft_cap", org2);
	sub_for(org2, "2026-11-10T00:00:00Z", "2026-12-10T00:00:00Z");
	a = make(org2, "p", 5, ms_of("2026-11-05T12:00:00.000Z"));
	a[2].detected_at_ms = a[3].detected_at_ms = a[4].detected_at_ms =
		ms_of("2026-11-15T12:00:00.000Z");
	store(&f, a, 5, &res);
	ck_assert_int_eq(sql_num("SELECT anomalies FROM usage_counters WHERE org_id = $1::uuid AND"
				 " period_start = '2026-11-01T00:00:00Z'",
				 org2),
			 2);
	ck_assert_int_eq(sql_num("SELECT anomalies FROM usage_counters WHERE org_id = $1::uuid AND"
				 " period_start = '2026-11-10T00:00:00Z' AND"
				 " period_end = '2026-12-10T00:00:00Z'",
				 org2),
			 3);
	free(a);

	/* The first and last anomaly in the same month, one in between in a short subscription
	 * period [Nov 10, Nov 20); and a subscription period [Oct 20, Nov 20) spanning a month
	 * start, where both count in the subscription's period. */
	new_org("developer", "soft_cap", org);
	sub_for(org, "2026-11-10T00:00:00Z", "2026-11-20T00:00:00Z");
	a = make(org, "q", 3, ms_of("2026-11-05T12:00:00.000Z"));
	a[1].detected_at_ms = ms_of("2026-11-15T12:00:00.000Z");
	a[2].detected_at_ms = ms_of("2026-11-25T12:00:00.000Z");
	store(&f, a, 3, &res);
	ck_assert_int_eq(sql_num("SELECT anomalies FROM usage_counters WHERE org_id = $1::uuid AND"
				 " period_start = '2026-11-01T00:00:00Z'",
				 org),
			 2);
	ck_assert_int_eq(sql_num("SELECT anomalies FROM usage_counters WHERE org_id = $1::uuid AND"
				 " period_start = '2026-11-10T00:00:00Z'",
				 org),
			 1);
	free(a);
	new_org("developer", "soft_cap", org2);
	sub_for(org2, "2026-10-20T00:00:00Z", "2026-11-20T00:00:00Z");
	a = make(org2, "w", 2, ms_of("2026-10-25T12:00:00.000Z"));
	a[1].detected_at_ms = ms_of("2026-11-05T12:00:00.000Z");
	store(&f, a, 2, &res);
	ck_assert_int_eq(sql_num("SELECT sum(anomalies) FROM usage_counters WHERE org_id = $1::uuid"
				 " AND period_start = '2026-10-20T00:00:00Z'",
				 org2),
			 2);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM usage_counters WHERE org_id = $1::uuid",
				 org2),
			 1);
	free(a);
	fx_down(&f);
}
END_TEST

/* An org that does not exist is rejected; the rest of the batch is stored. */
START_TEST(test_unknown_org_rejected)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char org[37], ghost[37];

	fx_up(&f);
	new_org("developer", "soft_cap", org);
	ck_assert_int_eq(dl_id_new(ghost), 0);
	a = make(org, "u", 5, dl_time_now_ms());
	snprintf(a[1].org_id, sizeof(a[1].org_id), "%s", ghost);
	snprintf(a[3].org_id, sizeof(a[3].org_id), "%s", ghost);
	store(&f, a, 5, &res);
	ck_assert_uint_eq(res.stored, 3);
	ck_assert_uint_eq(res.nrejected, 2);
	ck_assert_uint_eq(res.rejected[0].index, 1);
	ck_assert_uint_eq(res.rejected[1].index, 3);
	ck_assert_str_eq(res.rejected[0].reason, "unknown_org");
	ck_assert_uint_eq(res.norgs, 1);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid", org), 3);
	free(a);
	fx_down(&f);
}
END_TEST

/* Retention: only rows older than the plan's retention go, at most batch_rows per call. */
START_TEST(test_retention)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char dev[37], pro[37];
	int64_t now = dl_time_now_ms();
	size_t deleted, total = 0;
	int calls = 0;

	fx_up(&f);
	new_org("developer", "soft_cap", dev); /* 7 days */
	new_org("pro", "soft_cap", pro);       /* 90 days */
	a = make(dev, "old", 5, now - 8 * DAY_MS);
	store(&f, a, 5, &res);
	free(a);
	a = make(dev, "new", 2, now - 6 * DAY_MS);
	store(&f, a, 2, &res);
	free(a);
	a = make(pro, "pro", 3, now - 30 * DAY_MS);
	store(&f, a, 3, &res);
	free(a);

	/* Other tests' orgs may have expired rows too: run until done, at most 2 rows a call. */
	do {
		ck_assert_msg(mtr_store_retention(f.s, now, 2, &deleted, f.err, sizeof(f.err)) == 0,
			      "%s", f.err);
		ck_assert_uint_le(deleted, 2);
		total += deleted;
		calls++;
	} while (deleted > 0 && calls < 1000);
	ck_assert_uint_eq(deleted, 0);
	ck_assert_uint_ge(total, 5);
	ck_assert_int_ge(calls, 4); /* 5 rows in batches of 2 take 3 calls, then the empty one */
	ck_assert_int_eq(sql_num("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid", dev), 2);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid AND"
				 " id LIKE 'new-%'",
				 dev),
			 2);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid", pro), 3);
	/* The count of the period stays: billing counts what was detected, not what is kept. */
	ck_assert_int_eq(sql_num("SELECT sum(anomalies) FROM usage_counters WHERE org_id = $1::uuid",
				 dev),
			 7);
	fx_down(&f);
}
END_TEST

/* usage_all: every org's current period, including orgs with nothing counted yet. */
START_TEST(test_usage_all)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char org[37], idle[37];
	const mtr_org_usage *u;

	fx_up(&f);
	small_plans();
	new_org("tiny", "block", org);
	new_org("pro", "allow_overage", idle);
	a = make(org, "all", 12, dl_time_now_ms());
	store(&f, a, 12, &res);
	free(a);
	ck_assert_int_eq(mtr_store_usage_all(f.s, &res, f.err, sizeof(f.err)), 0);
	ck_assert_uint_ge(res.norgs, 2);
	u = usage_of(&res, org);
	ck_assert_int_eq(u->anomalies, 12);
	ck_assert_int_eq(u->included, 10);
	ck_assert(u->blocked);
	u = usage_of(&res, idle);
	ck_assert_int_eq(u->anomalies, 0);
	ck_assert_int_eq(u->included, 50000);
	ck_assert_str_eq(u->over_quota, "allow_overage");
	ck_assert(!u->blocked);
	fx_down(&f);
}
END_TEST

/* Batches of 1,000 (one org per batch, as a partition mostly carries few orgs): rows/s. */
START_TEST(test_throughput)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char org[37], prefix[32];
	int64_t t0, ns;
	int b;

	fx_up(&f);
	new_org("enterprise", "allow_overage", org);
	a = make(org, "x", 1000, dl_time_now_ms());
	t0 = dl_time_mono_ns();
	for (b = 0; b < 10; b++) {
		snprintf(prefix, sizeof(prefix), "tp%d", b);
		for (int i = 0; i < 1000; i++)
			snprintf(a[i].id, sizeof(a[i].id), "%s-%d", prefix, i);
		store(&f, a, 1000, &res);
		ck_assert_uint_eq(res.stored, 1000);
	}
	ns = dl_time_mono_ns() - t0;
	fprintf(stderr, "mtr_store throughput: 10 batches of 1000 in %.3f s = %.0f anomalies/s\n",
		(double)ns / 1e9, 10000.0 / ((double)ns / 1e9));
	ck_assert_int_eq(usage_of(&res, org)->anomalies, 10000);
	free(a);
	fx_down(&f);
}
END_TEST

/* The cross-org look-ups answer the metering role only. */
START_TEST(test_lookups_refused_to_other_roles)
{
	static const char *const sql[] = {
		"SELECT count(*) FROM dl_metering_usage_all('00000000-0000-0000-0000-000000000000', 10)",
		"SELECT count(*) FROM dl_metering_retention_due(now(),"
		" '00000000-0000-0000-0000-000000000000', 10)",
		"SELECT count(*) FROM dl_metering_store('00000000-0000-0000-0000-000000000000')",
	};
	PGconn *c = PQconnectdb(dl_itest_env("DRIFTLOCK_PG_DSN_INGEST"));

	ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
		PGresult *r = PQexec(c, sql[i]);

		ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR, "%s: allowed", sql[i]);
		ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
		PQclear(r);
	}
	PQfinish(c);
}
END_TEST

/* Batches of 1,000 spread over 100 orgs (10 each): one round trip per org. */
START_TEST(test_throughput_many_orgs)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char orgs[100][37];
	int64_t t0, ns;
	int b, i;

	fx_up(&f);
	for (i = 0; i < 100; i++)
		new_org("pro", "soft_cap", orgs[i]);
	a = make(orgs[0], "y", 1000, dl_time_now_ms());
	t0 = dl_time_mono_ns();
	for (b = 0; b < 5; b++) {
		for (i = 0; i < 1000; i++) {
			snprintf(a[i].id, sizeof(a[i].id), "mo%d-%d", b, i);
			snprintf(a[i].org_id, sizeof(a[i].org_id), "%s", orgs[i % 100]);
		}
		store(&f, a, 1000, &res);
		ck_assert_uint_eq(res.stored, 1000);
		ck_assert_uint_eq(res.norgs, 100);
	}
	ns = dl_time_mono_ns() - t0;
	fprintf(stderr, "mtr_store throughput, 100 orgs a batch: 5 batches of 1000 in %.3f s = %.0f "
		"anomalies/s\n", (double)ns / 1e9, 5000.0 / ((double)ns / 1e9));
	for (i = 0; i < 100; i++)
		ck_assert_int_eq(usage_of(&res, orgs[i])->anomalies, 50);
	free(a);
	fx_down(&f);
}
END_TEST

/* A DSN libpq cannot parse fails at creation; an unreachable server only fails the calls. */
START_TEST(test_bad_and_unreachable_dsn)
{
	mtr_store *s = NULL;
	mtr_store_result res;
	struct proto_anomaly *a;
	char err[256];

	ck_assert_int_eq(mtr_store_new("host='unterminated", NULL, &s, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(mtr_store_new("postgresql://driftlock_metering@127.0.0.1:1/none", NULL, &s,
				       err, sizeof(err)),
			 0);
	a = make("00000000-0000-4000-8000-000000000001", "x", 1, dl_time_now_ms());
	ck_assert_int_eq(mtr_store_batch(s, a, 1, &res, err, sizeof(err)), -ECONNREFUSED);
	ck_assert_int_eq(mtr_store_usage_all(s, &res, err, sizeof(err)), -ECONNREFUSED);
	free(a);
	mtr_store_free(s);
}
END_TEST

static void stack_cmd(const char *what)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "%s/infra/stack.sh %s --run-dir %s >/dev/null",
		 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), what, dl_itest_env("DRIFTLOCK_RUN_DIR"));
	ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

/* PostgreSQL stopped: the batch fails as unavailable and leaves nothing; once it is back the
 * same batch succeeds on the same store, counted once. Last: it restarts the server. */
START_TEST(test_database_restart)
{
	fixture f;
	mtr_store_result res;
	struct proto_anomaly *a;
	char org[37];
	int r = 0, i;

	fx_up(&f);
	new_org("developer", "soft_cap", org);
	a = make(org, "d", 10, dl_time_now_ms());
	store(&f, a, 5, &res);
	stack_cmd("stop --only postgres");
	r = mtr_store_batch(f.s, a, 10, &res, f.err, sizeof(f.err));
	ck_assert_msg(r == -ECONNREFUSED, "while down: %d %s", r, f.err);
	stack_cmd("start --only postgres");
	for (i = 0; i < 60; i++) {
		r = mtr_store_batch(f.s, a, 10, &res, f.err, sizeof(f.err));
		if (r == 0)
			break;
		ck_assert_msg(r == -ECONNREFUSED, "after restart: %d %s", r, f.err);
		sleep(1);
	}
	ck_assert_msg(r == 0, "no success after the restart: %d %s", r, f.err);
	ck_assert_uint_eq(res.stored, 5);
	ck_assert_uint_eq(res.duplicates, 5);
	ck_assert_int_eq(usage_of(&res, org)->anomalies, 10);
	ck_assert_int_eq(sql_num("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid", org), 10);
	free(a);
	fx_down(&f);
}
END_TEST

static Suite *mtr_store_suite(void)
{
	Suite *s = suite_create("mtr_store");
	TCase *tc = tcase_create("postgres");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_redelivery_counted_once);
	tcase_add_test(tc, test_thresholds_once);
	tcase_add_test(tc, test_over_quota_policies);
	tcase_add_test(tc, test_period_rollover);
	tcase_add_test(tc, test_unknown_org_rejected);
	tcase_add_test(tc, test_retention);
	tcase_add_test(tc, test_usage_all);
	tcase_add_test(tc, test_lookups_refused_to_other_roles);
	tcase_add_test(tc, test_bad_and_unreachable_dsn);
	tcase_add_test(tc, test_throughput);
	tcase_add_test(tc, test_throughput_many_orgs);
	tcase_add_test(tc, test_database_restart);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(mtr_store_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
