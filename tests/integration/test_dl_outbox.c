/* SPDX-License-Identifier: Apache-2.0 */
/* Integration test for dl_outbox: the relay against the real PostgreSQL and Kafka of infra/stack.sh. */
#include "common/dl_outbox.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/dl_id.h"
#include "common/dl_kafka.h"
#include "common/dl_metrics.h"
#include "tests/support/dl_itest.h"

#define TOPIC "driftlock.notifications.v1"

/* Inserts one outbox row for org as the role of dsn_var (its created_by), inside a
 * transaction scoped to the org like a service's store; writes the row id. */
static void insert_row(const char *dsn_var, const char *org, const char *payload,
		       const char *headers, char id[32])
{
	PGconn *c = PQconnectdb(dl_itest_env(dsn_var));
	const char *p[4] = { org, TOPIC, payload, headers };
	PGresult *r;

	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	PQclear(PQexec(c, "BEGIN"));
	r = PQexecParams(c, "SELECT set_config('driftlock.org_id', $1, true)", 1, NULL, p, NULL,
			 NULL, 0);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
	PQclear(r);
	r = PQexecParams(c, "INSERT INTO outbox (org_id, topic, key, payload, headers) "
			    "VALUES ($1::uuid, $2, $1, $3, $4::jsonb) RETURNING id::text",
			 4, NULL, p, NULL, NULL, 0);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
	snprintf(id, 32, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	r = PQexec(c, "COMMIT");
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

/* One column of outbox row id, read as admin. */
static void row_col(const char *id, const char *col, char *out, size_t outlen)
{
	char sql[160];
	const char *p[2] = { id, NULL };

	snprintf(sql, sizeof(sql), "SELECT coalesce(%s::text, '') FROM outbox WHERE id = $1::bigint",
		 col);
	ck_assert_int_eq(dl_itest_sql(sql, p, out, outlen), 1);
}

typedef struct seen {
	int count;
	char header[64];
	char key[64];
} seen;

/* Reads TOPIC from the start in a fresh group and counts the messages whose value is payload,
 * keeping the key and the x-test header of the last one. Reads for wait_ms after the first. */
static seen read_back(const char *payload, int wait_ms)
{
	const char *const topics[] = { TOPIC, NULL };
	dl_kafka_consumer *c = NULL;
	char group[64], err[512] = "";
	seen s = { 0 };
	time_t until = time(NULL) + 30;

	snprintf(group, sizeof(group), "test-outbox-%ld-%d", (long)time(NULL), rand());
	ck_assert_msg(dl_kafka_consumer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"), group, topics,
					    NULL, NULL, err, sizeof(err), &c) == 0, "%s", err);
	while (time(NULL) < until) {
		rd_kafka_message_t *m = NULL;
		rd_kafka_headers_t *h = NULL;
		const void *v;
		size_t vlen;

		if (dl_kafka_consumer_poll(c, 200, &m, err, sizeof(err)) < 0 || !m)
			continue;
		if (m->len == strlen(payload) && memcmp(m->payload, payload, m->len) == 0) {
			if (s.count++ == 0)
				until = time(NULL) + (wait_ms + 999) / 1000;
			snprintf(s.key, sizeof(s.key), "%.*s", (int)m->key_len, (const char *)m->key);
			if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			    rd_kafka_header_get_last(h, "x-test", &v, &vlen) ==
				    RD_KAFKA_RESP_ERR_NO_ERROR)
				snprintf(s.header, sizeof(s.header), "%.*s", (int)vlen,
					 (const char *)v);
		}
		rd_kafka_message_destroy(m);
	}
	dl_kafka_consumer_free(c);
	return s;
}

static dl_kafka_producer *producer(void)
{
	const char *const conf[] = { "message.timeout.ms", "4000", "linger.ms", "5", NULL };
	dl_kafka_producer *p = NULL;
	char err[512] = "";

	ck_assert_msg(dl_kafka_producer_new(dl_itest_env("DRIFTLOCK_KAFKA_BROKERS"), "test-outbox",
					    conf, err, sizeof(err), &p) == 0, "%s", err);
	return p;
}

/* Relays until nothing of this role is pending; returns the rows sent. */
static size_t relay_all(dl_outbox *o)
{
	size_t sent = 0, n = 1;
	char err[512] = "";

	while (n > 0) {
		ck_assert_msg(dl_outbox_relay(o, 100, &n, err, sizeof(err)) == 0, "%s", err);
		sent += n;
	}
	return sent;
}

START_TEST(test_relayed_once_with_key_and_headers)
{
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_kafka_producer *p = producer();
	dl_outbox *o = NULL;
	char org[37], key[128], id1[32], id2[32], idb[32], payload[128], payload_b[128], v[256],
		err[512] = "";
	const char *hdr = "[{\"key\":\"x-test\",\"value\":\"hello\"}]";
	seen s;
	double d;

	dl_itest_org_with_key("outbox-once", NULL, org, key, sizeof(key));
	snprintf(payload, sizeof(payload), "{\"id\":\"outbox-%s-1\"}", org);
	snprintf(payload_b, sizeof(payload_b), "{\"id\":\"outbox-%s-billing\"}", org);
	insert_row("DRIFTLOCK_PG_DSN_METERING", org, payload, hdr, id1);
	insert_row("DRIFTLOCK_PG_DSN_METERING", org, "{\"id\":\"second\"}", "[]", id2);
	insert_row("DRIFTLOCK_PG_DSN_BILLING", org, payload_b, "[]", idb);
	row_col(id1, "created_by", v, sizeof(v));
	ck_assert_str_eq(v, "driftlock_metering");

	ck_assert_msg(dl_outbox_new(dl_itest_env("DRIFTLOCK_PG_DSN_METERING"), p, m,
				    "test_outbox", &o, err, sizeof(err)) == 0, "%s", err);
	ck_assert_uint_ge(relay_all(o), 2);
	row_col(id1, "sent_at", v, sizeof(v));
	ck_assert_msg(v[0] != '\0', "row %s not marked sent", id1);
	row_col(id2, "sent_at", v, sizeof(v));
	ck_assert_msg(v[0] != '\0', "row %s not marked sent", id2);
	/* The billing role's row is not this relay's: untouched. */
	row_col(idb, "sent_at", v, sizeof(v));
	ck_assert_str_eq(v, "");
	row_col(idb, "attempts", v, sizeof(v));
	ck_assert_str_eq(v, "0");
	ck_assert_int_eq(dl_metric_get(dl_metrics_gauge(m, "test_outbox_outbox_pending", NULL, 0),
				       NULL, &d), 0);
	ck_assert(d == 0);

	/* Nothing pending: the next pass sends nothing again. */
	ck_assert_uint_eq(relay_all(o), 0);
	s = read_back(payload, 3000);
	ck_assert_int_eq(s.count, 1);
	ck_assert_str_eq(s.key, org);
	ck_assert_str_eq(s.header, "hello");
	ck_assert_int_eq(read_back(payload_b, 1000).count, 0);

	dl_outbox_free(o);
	dl_kafka_producer_free(p);
	dl_metrics_registry_free(m);
}
END_TEST

static void stack(const char *what)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "%s/infra/stack.sh %s --run-dir %s >/dev/null",
		 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), what, dl_itest_env("DRIFTLOCK_RUN_DIR"));
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_broker_down_stays_pending_then_sent)
{
	dl_metrics_registry *m = dl_metrics_registry_new();
	dl_kafka_producer *p = producer();
	dl_outbox *o = NULL;
	char org[37], key[128], id[32], payload[128], v[2200], err[512] = "";
	size_t sent = 0;
	double d;
	int i;

	dl_itest_org_with_key("outbox-down", NULL, org, key, sizeof(key));
	ck_assert_msg(dl_outbox_new(dl_itest_env("DRIFTLOCK_PG_DSN_METERING"), p, m,
				    "test_outbox", &o, err, sizeof(err)) == 0, "%s", err);
	relay_all(o); /* whatever an earlier run left */
	snprintf(payload, sizeof(payload), "{\"id\":\"outbox-%s-down\"}", org);
	insert_row("DRIFTLOCK_PG_DSN_METERING", org, payload, "[]", id);

	stack("stop --only kafka");
	ck_assert_msg(dl_outbox_relay(o, 100, &sent, err, sizeof(err)) == 0, "%s", err);
	ck_assert_uint_eq(sent, 0);
	row_col(id, "sent_at", v, sizeof(v));
	ck_assert_str_eq(v, "");
	row_col(id, "attempts", v, sizeof(v));
	ck_assert_str_eq(v, "1");
	row_col(id, "last_error", v, sizeof(v));
	ck_assert_msg(strstr(v, "delivery failed") != NULL, "last_error: %s", v);
	ck_assert_int_eq(dl_metric_get(dl_metrics_counter(m, "test_outbox_outbox_failed_total",
							   NULL, 0), NULL, &d), 0);
	ck_assert(d >= 1);

	stack("start");
	for (i = 0; i < 60 && sent == 0; i++) {
		ck_assert_msg(dl_outbox_relay(o, 100, &sent, err, sizeof(err)) == 0, "%s", err);
		if (sent == 0)
			sleep(1);
	}
	ck_assert_uint_ge(sent, 1);
	row_col(id, "sent_at", v, sizeof(v));
	ck_assert_msg(v[0] != '\0', "row not sent after the broker came back");
	ck_assert_int_eq(read_back(payload, 3000).count, 1);

	dl_outbox_free(o);
	dl_kafka_producer_free(p);
	dl_metrics_registry_free(m);
}
END_TEST

static Suite *dl_outbox_suite(void)
{
	Suite *s = suite_create("dl_outbox");
	TCase *tc = tcase_create("relay");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, test_relayed_once_with_key_and_headers);
	tcase_add_test(tc, test_broker_down_stays_pending_then_sent);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(dl_outbox_suite());
	int failed;

	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
