/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite for driftlock-metering, the built binary against the real servers:
 * anomalies produced to driftlock.anomalies.v1 end up in PostgreSQL once and counted once,
 * threshold notifications leave once per id (also across a SIGKILL between commit and relay),
 * a PostgreSQL outage holds the commit and loses nothing, poison is dead-lettered, counting
 * follows detected_at into its billing period, and the retention job deletes expired rows. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/dl_redis.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_dlq.h"
#include "proto/proto_topics.h"
#include "proto/proto_usage.h"
#include "tests/support/dl_itest.h"
#include "tests/support/mtr_scenario.h"

#define STREAM "payments"
#define DAY_MS INT64_C(86400000)

/* ---- helpers ---- */

static long long sql_ll(const char *sql, const char *const *params)
{
	char out[64] = "";

	ck_assert_int_eq(dl_itest_sql(sql, params, out, sizeof(out)), 1);
	return atoll(out);
}

/* A plan of 10 included anomalies (retention 7 days), with or without overage. */
static void test_plans(void)
{
	dl_itest_sql("INSERT INTO plans (code, display_name, price_cents_month, included_anomalies, "
		     "overage_allowed, overage_microusd, retention_days, ingest_events_per_second, "
		     "ingest_burst, max_streams, sort_order) VALUES "
		     "('mtr_test10', 'Metering test', 0, 10, false, 0, 7, 50, 500, NULL, 90), "
		     "('mtr_test10o', 'Metering test overage', 0, 10, true, 1000, 7, 50, 500, NULL, 91) "
		     "ON CONFLICT (code) DO NOTHING",
		     NULL, NULL, 0);
}

static void org_on(const char *plan, const char *over_quota, char org[37])
{
	char name[64];

	test_plans();
	snprintf(name, sizeof(name), "mtr-%lld-%d", (long long)dl_time_mono_ns(), (int)getpid());
	ck_assert_int_eq(dl_itest_sql("INSERT INTO organizations (name, plan, over_quota) "
				      "VALUES ($1, $2, $3) RETURNING id",
				      (const char *const[]){ name, plan, over_quota, NULL }, org, 37),
			 1);
}

static void make(struct proto_anomaly *a, size_t n, const char *org, const char *tag,
		 size_t from, int64_t detected_at_ms)
{
	for (size_t i = 0; i < n; i++)
		mtr_scenario_anomaly(&a[i], org, STREAM, tag, from + i, detected_at_ms);
}

static long long stored(const char *org)
{
	return sql_ll("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid",
		      (const char *const[]){ org, NULL });
}

static long long counted(const char *org)
{
	return sql_ll("SELECT COALESCE(sum(anomalies), 0) FROM usage_counters WHERE org_id = $1::uuid",
		      (const char *const[]){ org, NULL });
}

static bool wait_ll(long long (*fn)(const char *), const char *org, long long want,
		    int timeout_ms)
{
	for (int t = 0; t < timeout_ms / 100; t++) {
		if (fn(org) == want)
			return true;
		usleep(100000);
	}
	return fn(org) == want;
}

static long long alerts(const char *org)
{
	return sql_ll("SELECT count(*) FROM usage_alerts WHERE org_id = $1::uuid",
		      (const char *const[]){ org, NULL });
}

/* Starts metering in the org's own consumer group (a group of its own reads the topic from
 * the start; a member killed by a test leaves the group after the 6 s session timeout) with
 * extra settings (NULL-terminated, may be NULL). */
static void start(dl_itest_proc *p, const char *org, const char *const *extra)
{
	static char group[128];
	const char *env[8];
	size_t n = 0;

	/* The caller's settings first: the first of duplicate names wins. */
	for (size_t i = 0; extra && extra[i] && n < 5; i++)
		env[n++] = extra[i];
	snprintf(group, sizeof(group), "DRIFTLOCK_METERING_GROUP=itest-mtr-%s", org);
	env[n++] = group;
	env[n++] = "DRIFTLOCK_METERING_SESSION_TIMEOUT=6s";
	env[n] = NULL;
	dl_itest_start("metering", env, p);
	ck_assert_msg(dl_itest_wait_ready(p, 30000), "metering not ready, see %s", p->log_path);
}

static void hard_kill(dl_itest_proc *p)
{
	int status;

	kill(p->pid, SIGKILL);
	waitpid(p->pid, &status, 0);
}

/* The org's usage notifications on the topic: how many messages, and how many distinct ids
 * with the thresholds they name (thresholds[] gets each distinct one once). */
static size_t notifications_of(const char *org, const char *plan, size_t want, int timeout_ms,
			       size_t *ret_distinct, long *thresholds, char *action120,
			       size_t action_len)
{
	dl_itest_msg *m = NULL;
	size_t n = dl_itest_topic_read(DL_TOPIC_NOTIFICATIONS, org, want, timeout_ms, &m);
	char ids[16][160];
	size_t distinct = 0;

	for (size_t i = 0; i < n; i++) {
		cJSON *j = cJSON_ParseWithLength(m[i].value, m[i].len), *id, *kind, *data, *t;
		bool seen = false;

		ck_assert_ptr_nonnull(j);
		id = cJSON_GetObjectItemCaseSensitive(j, "id");
		kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
		data = cJSON_GetObjectItemCaseSensitive(j, "data");
		ck_assert(cJSON_IsString(id) && cJSON_IsString(kind));
		ck_assert_str_eq(kind->valuestring, "usage_threshold");
		t = cJSON_GetObjectItemCaseSensitive(data, "threshold");
		ck_assert(cJSON_IsNumber(t));
		ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(data, "plan")->valuestring, plan);
		if (action120 && t->valuedouble == 120)
			snprintf(action120, action_len, "%s",
				 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(data, "action")));
		for (size_t k = 0; k < distinct; k++)
			if (strcmp(ids[k], id->valuestring) == 0)
				seen = true;
		if (!seen && distinct < 16) {
			snprintf(ids[distinct], sizeof(ids[0]), "%s", id->valuestring);
			if (thresholds)
				thresholds[distinct] = (long)t->valuedouble;
			distinct++;
		}
		cJSON_Delete(j);
	}
	dl_itest_msgs_free(m, n);
	*ret_distinct = distinct;
	return n;
}

static size_t notifications(const char *org, size_t want, int timeout_ms, size_t *ret_distinct,
			    long *thresholds)
{
	return notifications_of(org, "mtr_test10", want, timeout_ms, ret_distinct, thresholds, NULL,
				0);
}

/* A field of the org's live usage hash in Redis ("" when missing). */
static void usage_field(const char *org, const char *field, char *out, size_t len)
{
	char key[80], err[256] = "";
	const char *argv[3] = { "HGET", key, field };
	redisReply *rep = NULL;
	dl_redis *r = NULL;

	snprintf(key, sizeof(key), "dl:usage:%s", org);
	ck_assert_msg(dl_redis_connect_url(dl_itest_env("DRIFTLOCK_REDIS_URL"), 2000, 2000, err,
					   sizeof(err), &r) == 0, "%s", err);
	ck_assert_msg(dl_redis_command_argv(r, 3, argv, NULL, &rep, err, sizeof(err)) == 0, "%s",
		      err);
	snprintf(out, len, "%s", rep->type == REDIS_REPLY_STRING ? rep->str : "");
	freeReplyObject(rep);
	dl_redis_free(r);
}

static void redis_del(const char *key)
{
	char err[256] = "";
	const char *argv[2] = { "DEL", key };
	redisReply *rep = NULL;
	dl_redis *r = NULL;

	ck_assert(dl_redis_connect_url(dl_itest_env("DRIFTLOCK_REDIS_URL"), 2000, 2000, err,
				       sizeof(err), &r) == 0);
	ck_assert_msg(dl_redis_command_argv(r, 2, argv, NULL, &rep, err, sizeof(err)) == 0, "%s",
		      err);
	freeReplyObject(rep);
	dl_redis_free(r);
}

static bool wait_usage_field(const char *org, const char *field, const char *want,
			     int timeout_ms)
{
	char v[64] = "";

	for (int t = 0; t < timeout_ms / 100; t++) {
		usage_field(org, field, v, sizeof(v));
		if (strcmp(v, want) == 0)
			return true;
		usleep(100000);
	}
	return false;
}

static long long pending_outbox(const char *org)
{
	return sql_ll("SELECT count(*) FROM outbox WHERE org_id = $1::uuid AND sent_at IS NULL",
		      (const char *const[]){ org, NULL });
}

static void stack(const char *verb_only)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "%s/infra/stack.sh %s --run-dir %s >/dev/null",
		 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), verb_only, dl_itest_env("DRIFTLOCK_RUN_DIR"));
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- tests ---- */

START_TEST(test_stored_with_fields_and_counted_once_across_redelivery)
{
	struct proto_anomaly a[3];
	char org[37], group[96], env_group[128], out[1024];
	int32_t parts[3];
	int64_t offs[3];
	dl_itest_proc p;

	org_on("mtr_test10", "soft_cap", org);
	make(a, 3, org, org, 0, dl_time_now_ms());
	mtr_scenario_produce(a, 3, parts, offs);
	start(&p, org, NULL);
	ck_assert_msg(wait_ll(stored, org, 3, 60000), "stored %lld of 3", stored(org));
	ck_assert(wait_ll(counted, org, 3, 5000));
	/* The row carries what the message said. */
	ck_assert_int_eq(dl_itest_sql("SELECT stream || '|' || severity || '|' || kind || '|' || "
				      "explanation_summary || '|' || explanation_signal || '|' || "
				      "explanation_value || '|' || baseline_low || '|' || "
				      "baseline_median || '|' || baseline_high || '|' || event_id "
				      "FROM anomalies WHERE org_id = $1::uuid AND id = $2",
				      (const char *const[]){ org, a[1].id, NULL }, out, sizeof(out)),
			 1);
	{
		char want[8192];

		snprintf(want, sizeof(want), "%s|high|value|%s|value.latency_ms|901|40|50|60|%s",
			 STREAM, a[1].explanation.summary, a[1].event_id);
		ck_assert_str_eq(out, want);
	}
	/* Delivered again on the topic, and read again from the start by a new group. */
	mtr_scenario_produce(a, 3, NULL, NULL);
	ck_assert_int_eq(dl_itest_stop(&p, 30000) >= 0, 1);
	snprintf(group, sizeof(group), "itest-mtr-re-%s", org);
	snprintf(env_group, sizeof(env_group), "DRIFTLOCK_METERING_GROUP=%s", group);
	start(&p, org, (const char *const[]){ env_group, NULL }); 
	for (int t = 0; t < 300 && mtr_scenario_committed(group, parts[0]) <= offs[2]; t++)
		usleep(200000);
	ck_assert_int_gt(mtr_scenario_committed(group, parts[0]), offs[2]);
	ck_assert_int_eq(stored(org), 3);
	ck_assert_int_eq(counted(org), 3);
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

START_TEST(test_each_threshold_notified_once)
{
	struct proto_anomaly a[12];
	size_t steps[] = { 7, 2, 1, 2 }, from = 0, n, distinct = 0;
	long th[16] = { 0 }, sum = 0;
	char org[37], group[128];
	dl_itest_proc p;

	org_on("mtr_test10", "soft_cap", org);
	make(a, 12, org, org, 0, dl_time_now_ms());
	start(&p, org, NULL);
	for (size_t s = 0; s < 4; s++) {
		mtr_scenario_produce(a + from, steps[s], NULL, NULL);
		from += steps[s];
		ck_assert(wait_ll(counted, org, (long long)from, 60000));
		ck_assert(wait_ll(alerts, org, (long long)s + 1, 10000));
	}
	ck_assert(wait_ll(pending_outbox, org, 0, 20000));
	n = notifications(org, 4, 30000, &distinct, th);
	ck_assert_uint_eq(distinct, 4);
	ck_assert_uint_eq(n, 4);
	for (size_t i = 0; i < 4; i++)
		sum += th[i] == 70 ? 1 : th[i] == 90 ? 10 : th[i] == 100 ? 100 : th[i] == 120 ? 1000 : 0;
	ck_assert_int_eq(sum, 1111); /* each of 70, 90, 100, 120 once */
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);

	/* A replay from the start by a new group: nothing counted, nothing notified again. */
	mtr_scenario_produce(a, 12, NULL, NULL);
	snprintf(group, sizeof(group), "DRIFTLOCK_METERING_GROUP=itest-mtr-th-%s", org);
	start(&p, org, (const char *const[]){ group, NULL });
	sleep(8);
	ck_assert_int_eq(counted(org), 12);
	ck_assert_int_eq(alerts(org), 4);
	n = notifications(org, 5, 8000, &distinct, NULL);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

START_TEST(test_killed_between_commit_and_relay_sends_once)
{
	struct proto_anomaly a[9];
	char org[37];
	size_t distinct = 0, n;
	dl_itest_proc p;

	org_on("mtr_test10", "soft_cap", org);
	make(a, 9, org, org, 0, dl_time_now_ms());

	/* Relay off: the 70 % alert is committed with its outbox row, and the process dies
	 * before anything relayed it. */
	start(&p, org, (const char *const[]){ "DRIFTLOCK_METERING_RELAY=false", NULL });
	mtr_scenario_produce(a, 7, NULL, NULL);
	ck_assert(wait_ll(alerts, org, 1, 60000));
	hard_kill(&p);
	ck_assert_int_eq(pending_outbox(org), 1);
	ck_assert_uint_eq(notifications(org, 1, 3000, &distinct, NULL), 0);
	/* The next process relays it, once. */
	start(&p, org, NULL);
	ck_assert(wait_ll(pending_outbox, org, 0, 60000));
	ck_assert_uint_eq(notifications(org, 2, 8000, &distinct, NULL), 1);

	/* Relay on, killed the moment the 90 % alert is committed: whether or not the relay ran,
	 * after the restart the notification is on the topic under one id and marked sent. */
	mtr_scenario_produce(a + 7, 2, NULL, NULL);
	for (int t = 0; t < 6000 && alerts(org) < 2; t++)
		usleep(10000);
	hard_kill(&p);
	ck_assert_int_eq(alerts(org), 2);
	start(&p, org, NULL);
	ck_assert(wait_ll(pending_outbox, org, 0, 60000));
	n = notifications(org, 4, 8000, &distinct, NULL);
	ck_assert_uint_eq(distinct, 2);
	ck_assert_uint_ge(n, 2);
	ck_assert_uint_le(n, 3); /* a relay cut before marking may resend its one message */
	ck_assert_int_eq(counted(org), 9);
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

START_TEST(test_postgres_outage_holds_commit_then_catches_up)
{
	struct proto_anomaly a[5];
	char org[37], group[96], env_group[128], body[4096];
	int32_t parts[5];
	int64_t offs[5], before;
	long st = 200;
	dl_itest_proc p;

	org_on("mtr_test10", "soft_cap", org);
	make(a, 5, org, org, 0, dl_time_now_ms());
	snprintf(group, sizeof(group), "itest-mtr-pg-%s", org);
	snprintf(env_group, sizeof(env_group), "DRIFTLOCK_METERING_GROUP=%s", group);
	start(&p, org, (const char *const[]){ env_group, "DRIFTLOCK_METERING_RETRY_MAX_MS=500", NULL });
	stack("stop --only postgres");
	mtr_scenario_produce(a, 5, parts, offs);
	for (int t = 0; t < 100 && st == 200; t++) {
		st = dl_itest_http(p.admin_port, "GET", "/readyz", NULL, NULL, 0, body, sizeof(body),
				   NULL, 0);
		usleep(200000);
	}
	ck_assert_int_eq(st, 503);
	sleep(2);
	before = mtr_scenario_committed(group, parts[0]);
	ck_assert_int_le(before, offs[0]); /* none of the org's anomalies is committed */
	stack("start");
	ck_assert_msg(wait_ll(stored, org, 5, 60000), "stored %lld of 5", stored(org));
	ck_assert(wait_ll(counted, org, 5, 5000));
	ck_assert(dl_itest_wait_ready(&p, 30000));
	for (int t = 0; t < 150 && mtr_scenario_committed(group, parts[0]) <= offs[4]; t++)
		usleep(200000);
	ck_assert_int_gt(mtr_scenario_committed(group, parts[0]), offs[4]);
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

START_TEST(test_poison_dead_lettered_partition_moves_on)
{
	struct proto_anomaly a[2];
	char org[37], key[128], err[256] = "";
	int32_t part;
	int64_t off;
	dl_itest_msg *m = NULL;
	struct proto_dlq d;
	dl_itest_proc p;
	size_t n;

	org_on("mtr_test10", "soft_cap", org);
	make(a, 2, org, org, 0, dl_time_now_ms());
	snprintf(key, sizeof(key), "%s:%s", org, STREAM);
	mtr_scenario_produce(a, 1, NULL, NULL);
	off = mtr_scenario_produce_raw(key, "{\"schema\":\"driftlock.anomaly.v1\"}", 33, &part);
	mtr_scenario_produce(a + 1, 1, NULL, NULL);
	start(&p, org, NULL);
	ck_assert(wait_ll(stored, org, 2, 60000));
	n = dl_itest_topic_read(DL_TOPIC_DLQ, key, 1, 30000, &m);
	ck_assert_uint_eq(n, 1);
	memset(&d, 0, sizeof(d));
	ck_assert_msg(proto_dlq_decode(m[0].value, m[0].len, &d, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(d.source_offset, off);
	ck_assert_int_eq(d.source_partition, part);
	ck_assert_str_eq(d.service, "metering");
	ck_assert_str_eq(d.reason_code, "invalid_anomaly");
	proto_dlq_free(&d);
	dl_itest_msgs_free(m, n);
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

START_TEST(test_detected_at_picks_the_billing_period)
{
	struct proto_anomaly a[5];
	int64_t now = dl_time_now_ms(), later = now + 62 * DAY_MS;
	char org[37], out[64];
	dl_itest_proc p;

	org_on("mtr_test10", "soft_cap", org);
	make(a, 3, org, org, 0, now);
	make(a + 3, 2, org, org, 3, later);
	start(&p, org, NULL);
	mtr_scenario_produce(a, 5, NULL, NULL);
	ck_assert(wait_ll(counted, org, 5, 60000));
	/* Two periods (the UTC months of now and of two months later), 3 and 2. */
	ck_assert_int_eq(dl_itest_sql("SELECT string_agg(anomalies::text, ',' ORDER BY period_start) "
				      "FROM usage_counters WHERE org_id = $1::uuid",
				      (const char *const[]){ org, NULL }, out, sizeof(out)),
			 1);
	ck_assert_str_eq(out, "3,2");
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

START_TEST(test_retention_deletes_expired_rows)
{
	struct proto_anomaly a[2];
	int64_t now = dl_time_now_ms();
	char org[37];
	dl_itest_proc p;

	org_on("mtr_test10", "soft_cap", org); /* retention 7 days */
	make(a, 1, org, org, 0, now - 30 * DAY_MS);
	make(a + 1, 1, org, org, 1, now);
	/* Stored first with retention off, then a process with a 1 s interval removes the old. */
	start(&p, org, (const char *const[]){ "DRIFTLOCK_METERING_RETENTION_INTERVAL_S=0", NULL });
	mtr_scenario_produce(a, 2, NULL, NULL);
	ck_assert(wait_ll(stored, org, 2, 60000));
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
	start(&p, org, (const char *const[]){ "DRIFTLOCK_METERING_RETENTION_INTERVAL_S=1", NULL });
	ck_assert(wait_ll(stored, org, 1, 30000));
	ck_assert_int_eq(sql_ll("SELECT count(*) FROM anomalies WHERE org_id = $1::uuid AND id = $2",
				(const char *const[]){ org, a[1].id, NULL }),
			 1);
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

START_TEST(test_over_quota_policies)
{
	static const char *const plans[] = { "mtr_test10", "mtr_test10", "mtr_test10o", "mtr_test10" };
	static const char *const policies[] = { "soft_cap", "block", "allow_overage",
						"allow_overage" };
	static const char *const actions[] = { "warn", "blocked", "overage", "warn" };
	struct proto_anomaly a[12];
	char orgs[4][37], action[32], v[64];
	size_t distinct;
	dl_itest_proc p;

	for (size_t k = 0; k < 4; k++)
		org_on(plans[k], policies[k], orgs[k]);
	start(&p, orgs[0], NULL);
	for (size_t k = 0; k < 4; k++) {
		make(a, 12, orgs[k], orgs[k], 0, dl_time_now_ms());
		mtr_scenario_produce(a, 10, NULL, NULL);
		ck_assert(wait_ll(counted, orgs[k], 10, 60000));
		mtr_scenario_produce(a + 10, 2, NULL, NULL);
	}
	for (size_t k = 0; k < 4; k++) {
		dl_itest_msg *m = NULL;
		size_t n;

		/* Every policy keeps detecting and counting past 120 %. */
		ck_assert(wait_ll(counted, orgs[k], 12, 60000));
		ck_assert(wait_ll(pending_outbox, orgs[k], 0, 30000));
		action[0] = '\0';
		notifications_of(orgs[k], plans[k], 4, 30000, &distinct, NULL, action,
				 sizeof(action));
		ck_assert_uint_eq(distinct, 4);
		ck_assert_msg(strcmp(action, actions[k]) == 0, "%s on %s: action %s, want %s",
			      policies[k], plans[k], action, actions[k]);
		/* Usage records only where overage is billed: allow_overage on an overage plan. */
		n = dl_itest_topic_read(DL_TOPIC_USAGE, orgs[k], 1, k == 2 ? 30000 : 3000,
					&m);
		if (k != 2) {
			ck_assert_uint_eq(n, 0);
		} else {
			struct proto_usage u;
			char err[256] = "";
			int64_t best = 0, best_over = -1;

			ck_assert_uint_ge(n, 1);
			/* Read on until the running total of the last batch arrived. */
			dl_itest_msgs_free(m, n);
			n = dl_itest_topic_read(DL_TOPIC_USAGE, orgs[k], 2, 5000, &m);
			for (size_t i = 0; i < n; i++) {
				ck_assert_msg(proto_usage_decode(m[i].value, m[i].len, &u, err,
								 sizeof(err)) == 0, "%s", err);
				ck_assert_int_gt(u.quantity, 10);
				ck_assert_int_eq(u.overage, u.quantity - 10);
				if (u.quantity > best) {
					best = u.quantity;
					best_over = u.overage;
				}
			}
			ck_assert_int_eq(best, 12);
			ck_assert_int_eq(best_over, 2);
		}
		dl_itest_msgs_free(m, n);
	}
	/* Live usage: only the block org is blocked. */
	ck_assert(wait_usage_field(orgs[1], "anomalies", "12", 10000));
	usage_field(orgs[1], "blocked", v, sizeof(v));
	ck_assert_str_eq(v, "1");
	ck_assert(wait_usage_field(orgs[0], "anomalies", "12", 10000));
	usage_field(orgs[0], "blocked", v, sizeof(v));
	ck_assert_str_eq(v, "0");
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

START_TEST(test_live_usage_rebuilt_when_redis_emptied)
{
	struct proto_anomaly a[3];
	char org[37], key[80], v[64];
	dl_itest_proc p;

	org_on("mtr_test10", "soft_cap", org);
	make(a, 3, org, org, 0, dl_time_now_ms());
	start(&p, org, NULL);
	mtr_scenario_produce(a, 3, NULL, NULL);
	ck_assert(wait_usage_field(org, "anomalies", "3", 60000));
	/* Redis loses everything metering wrote: it rebuilds from PostgreSQL. */
	snprintf(key, sizeof(key), "dl:usage:%s", org);
	redis_del(key);
	redis_del("dl:usage:ready");
	usage_field(org, "anomalies", v, sizeof(v));
	ck_assert_str_eq(v, "");
	ck_assert(wait_usage_field(org, "anomalies", "3", 20000));
	usage_field(org, "included", v, sizeof(v));
	ck_assert_str_eq(v, "10");
	ck_assert_int_eq(dl_itest_stop(&p, 30000), 0);
}
END_TEST

static Suite *metering_suite(void)
{
	Suite *s = suite_create("metering");
	TCase *tc = tcase_create("service");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_stored_with_fields_and_counted_once_across_redelivery);
	tcase_add_test(tc, test_each_threshold_notified_once);
	tcase_add_test(tc, test_killed_between_commit_and_relay_sends_once);
	tcase_add_test(tc, test_postgres_outage_holds_commit_then_catches_up);
	tcase_add_test(tc, test_poison_dead_lettered_partition_moves_on);
	tcase_add_test(tc, test_detected_at_picks_the_billing_period);
	tcase_add_test(tc, test_retention_deletes_expired_rows);
	tcase_add_test(tc, test_over_quota_policies);
	tcase_add_test(tc, test_live_usage_rebuilt_when_redis_emptied);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(metering_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
