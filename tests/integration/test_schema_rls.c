/* SPDX-License-Identifier: Apache-2.0 */
/* Integration suite schema_rls: tenant isolation, role grants, look-up functions and the migration runner, against a real PostgreSQL. */
#include <check.h>
#include <dirent.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEXTOID 25

/* Every tenant table the schema must have (each with RLS enabled and forced). */
static const char *const tenant_tables[] = {
    "organizations", "api_keys", "streams", "anomalies", "anomaly_status_history",
    "usage_counters", "usage_alerts", "billing_customers", "subscriptions",
    "invoices_mirror", "dunning_states", "billing_actions", "stripe_events",
    "notifications", "outbox",
};

static const char *const service_roles_sql =
    "ARRAY['driftlock_ingest','driftlock_detector','driftlock_metering',"
    "'driftlock_billing','driftlock_notifier']";

/* The two orgs of the current test: A is on pro with a subscription, B on developer. */
static char org_a[64];
static char org_b[64];

static const char *env_required(const char *name)
{
    const char *v = getenv(name);

    ck_assert_msg(v != NULL && v[0] != '\0',
                  "%s is not set: run with the local stack's environment (infra/test.sh or "
                  "source $RUN_DIR/stack.env)", name);
    return v;
}

/* Server notices (e.g. "does not exist, skipping") are expected here, not news. */
static void notice_ignore(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *db_connect(const char *env_name)
{
    PGconn *c = PQconnectdb(env_required(env_name));

    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect with %s: %s", env_name,
                  PQerrorMessage(c));
    PQsetNoticeProcessor(c, notice_ignore, NULL);
    return c;
}

/* Runs sql with text parameters; returns the result whatever its status. */
static PGresult *db_run(PGconn *c, const char *sql, int n, const char *const *params)
{
    Oid types[8];

    ck_assert_int_le(n, 8);
    for (int i = 0; i < n; i++)
        types[i] = TEXTOID;
    return PQexecParams(c, sql, n, types, params, NULL, NULL, 0);
}

/* Runs sql, which must succeed; returns the result for the caller to PQclear. */
static PGresult *db_ok(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = db_run(c, sql, n, params);
    ExecStatusType st = PQresultStatus(r);

    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s\n-> %s", sql,
                  PQresultErrorMessage(r));
    return r;
}

static void db_do(PGconn *c, const char *sql, int n, const char *const *params)
{
    PQclear(db_ok(c, sql, n, params));
}

/* Rows affected by a statement that must succeed. */
static long db_affected(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = db_ok(c, sql, n, params);
    long v = atol(PQcmdTuples(r));

    PQclear(r);
    return v;
}

/* First cell of a query that must succeed and return a row; "" for NULL. Caller frees. */
static char *db_value(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = db_ok(c, sql, n, params);
    char *v;

    ck_assert_msg(PQntuples(r) >= 1, "no row from: %s", sql);
    v = strdup(PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static long db_long(PGconn *c, const char *sql, int n, const char *const *params)
{
    char *v = db_value(c, sql, n, params);
    long l = atol(v);

    free(v);
    return l;
}

/* sql must fail with SQLSTATE state. The caller's transaction is then aborted. */
static void db_fails(PGconn *c, const char *state, const char *sql, int n,
                     const char *const *params)
{
    PGresult *r = db_run(c, sql, n, params);
    const char *got;

    ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR, "expected SQLSTATE %s from: %s",
                  state, sql);
    got = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    ck_assert_msg(got != NULL && strcmp(got, state) == 0, "expected SQLSTATE %s, got %s (%s) from: %s",
                  state, got ? got : "none", PQresultErrorMessage(r), sql);
    PQclear(r);
}

/* BEGIN a transaction scoped to org (NULL: no org), as role (NULL: the login role). */
static void db_begin(PGconn *c, const char *role, const char *org)
{
    char sql[128];

    db_do(c, "BEGIN", 0, NULL);
    if (role != NULL) {
        snprintf(sql, sizeof(sql), "SET LOCAL ROLE %s", role);
        db_do(c, sql, 0, NULL);
    }
    if (org != NULL)
        db_do(c, "SELECT set_config('driftlock.org_id', $1, true)", 1,
              (const char *const[]){ org });
}

static void db_rollback(PGconn *c)
{
    db_do(c, "ROLLBACK", 0, NULL);
}

#define P(...) ((const char *const[]){ __VA_ARGS__ })
#define NP(...) (int)(sizeof(P(__VA_ARGS__)) / sizeof(char *)), P(__VA_ARGS__)

/* Seeds one org with a row in every tenant table. $1 = org id, $2 = hex tag. */
static const char *const seed_sql[] = {
    "INSERT INTO organizations (id, name, plan, contact_email) VALUES ($1::uuid, 'Org ' || $2, "
    "CASE WHEN $3 = 'a' THEN 'pro' ELSE 'developer' END, 'owner-' || $2 || '@example.com')",
    "INSERT INTO api_keys (org_id, prefix, key_hash, name) VALUES "
    "($1::uuid, 'dlk_' || left($2, 8), sha256(convert_to('key-active-' || $1, 'UTF8')), 'active'),"
    "($1::uuid, 'dlk_' || left($2, 8), sha256(convert_to('key-revoked-' || $1, 'UTF8')), 'old')",
    "UPDATE api_keys SET revoked_at = now() WHERE org_id = $1::uuid AND name = 'old'",
    "INSERT INTO streams (org_id, name, status, events_seen) VALUES ($1::uuid, 'checkout.api', "
    "'active', 1000)",
    "INSERT INTO anomalies (org_id, id, stream, event_id, event_ts, detected_at, kind, score, "
    "p_value, severity, signals, explanation_summary, explanation_signal, explanation_value, "
    "baseline_low, baseline_median, baseline_high, evidence, excerpt, detector_version, "
    "detector_sensitivity) VALUES "
    "($1::uuid, 'anom-1', 'checkout.api', 'evt-1', now() - interval '2 min', now() - interval '1 min',"
    " 'event', 7.5, 0.001, 'high', '{\"cost_bits\": 812}', 'Unseen error text', 'cost_bits', 812,"
    " 100, 150, 200, '[{\"name\": \"token\", \"detail\": \"new\"}]', 'ERROR ...', 'cbad-1', 0.5),"
    "($1::uuid, 'anom-2', 'checkout.api', 'evt-2', now() - interval '2 min', now() - interval '1 min',"
    " 'value', 3.1, 0.02, 'medium', '{}', 'Spike in latency', 'latency_ms', 900,"
    " 10, 20, 40, '[]', '', 'cbad-1', 0.5)",
    "UPDATE anomalies SET status = 'acknowledged' WHERE org_id = $1::uuid AND id = 'anom-2'",
    "INSERT INTO subscriptions (stripe_subscription_id, org_id, plan_code, status, "
    "current_period_start, current_period_end) SELECT 'sub_' || $2, $1::uuid, 'pro', 'active', "
    "date_trunc('second', now()) - interval '10 days', date_trunc('second', now()) + interval '20 days' "
    "WHERE $3 = 'a'",
    "INSERT INTO usage_counters (org_id, period_start, period_end, anomalies) "
    "SELECT $1::uuid, p.period_start, p.period_end, CASE WHEN $3 = 'a' THEN 60000 ELSE 10 END "
    "FROM dl_usage_period($1::uuid, now()) AS p",
    "INSERT INTO usage_alerts (org_id, period_start, threshold, counted, included) "
    "SELECT $1::uuid, p.period_start, 70, 35000, 50000 FROM dl_usage_period($1::uuid, now()) AS p",
    "INSERT INTO billing_customers (org_id, stripe_customer_id) VALUES ($1::uuid, 'cus_' || $2)",
    "INSERT INTO invoices_mirror (stripe_invoice_id, org_id, status, amount_due_cents, "
    "stripe_created_at) VALUES ('in_' || $2, $1::uuid, 'open', 4900, now())",
    "INSERT INTO dunning_states (org_id, stage, failures, grace_started_at, grace_ends_at) VALUES "
    "($1::uuid, 'grace', 1, now() - interval '8 days', "
    "CASE WHEN $3 = 'a' THEN now() - interval '1 day' ELSE now() + interval '6 days' END)",
    "INSERT INTO billing_actions (org_id, action, actor, detail) VALUES ($1::uuid, "
    "'status_changed', 'system:test', '{\"to\": \"grace\"}')",
    "INSERT INTO stripe_events (id, org_id, type, payload) VALUES ('evt_' || $2, $1::uuid, "
    "'invoice.payment_failed', '{}')",
    "INSERT INTO notifications (id, org_id, kind, data, created_at) VALUES ('notif-' || $2, "
    "$1::uuid, 'usage_threshold', '{\"threshold\": 70}', now())",
    "INSERT INTO outbox (org_id, topic, key, payload, created_by) VALUES ($1::uuid, "
    "'driftlock.notifications.v1', $1, '{}', 'driftlock_billing')",
};

static void tag_of(const char *org, char *tag)
{
    for (; *org != '\0'; org++)
        if (*org != '-')
            *tag++ = *org;
    *tag = '\0';
}

static void seed_org(PGconn *admin, const char *org, const char *which)
{
    char tag[64];

    tag_of(org, tag);
    for (size_t i = 0; i < sizeof(seed_sql) / sizeof(seed_sql[0]); i++)
        db_do(admin, seed_sql[i], NP(org, tag, which));
}

static void setup(void)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    PGresult *r;

    r = db_ok(admin, "SELECT gen_random_uuid()::text, gen_random_uuid()::text", 0, NULL);
    snprintf(org_a, sizeof(org_a), "%s", PQgetvalue(r, 0, 0));
    snprintf(org_b, sizeof(org_b), "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    db_do(admin, "BEGIN", 0, NULL);
    seed_org(admin, org_a, "a");
    seed_org(admin, org_b, "b");
    db_do(admin, "COMMIT", 0, NULL);
    PQfinish(admin);
}

static void teardown(void)
{
    PGconn *admin = PQconnectdb(getenv("DRIFTLOCK_PG_DSN_ADMIN") ? getenv("DRIFTLOCK_PG_DSN_ADMIN") : "");

    if (PQstatus(admin) == CONNECTION_OK && org_a[0] != '\0')
        PQclear(db_run(admin, "DELETE FROM organizations WHERE id IN ($1::uuid, $2::uuid)",
                       NP(org_a, org_b)));
    PQfinish(admin);
}

/* (table, org column, role) for every tenant table and every service role that can read it. */
static PGresult *readable_pairs(PGconn *admin)
{
    char sql[1024];

    snprintf(sql, sizeof(sql),
             "WITH t AS (SELECT c.oid, c.relname, CASE WHEN c.relname = 'organizations' "
             "THEN 'id' ELSE 'org_id' END AS col FROM pg_class c JOIN pg_namespace n "
             "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r','p') "
             "AND (c.relname = 'organizations' OR EXISTS (SELECT 1 FROM pg_attribute a WHERE "
             "a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped))) "
             "SELECT quote_ident(t.relname), quote_ident(t.col), r.role FROM t, "
             "unnest(%s) AS r(role) WHERE has_column_privilege(r.role, t.oid, t.col, 'SELECT') "
             "ORDER BY 1, 3", service_roles_sql);
    return db_ok(admin, sql, 0, NULL);
}

START_TEST(test_every_tenant_table_forces_rls)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    PGresult *r;
    size_t found = 0;

    r = db_ok(admin,
              "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
              "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
              "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
              "WHERE n.nspname = 'public' AND c.relkind IN ('r','p') AND "
              "(c.relname = 'organizations' OR EXISTS (SELECT 1 FROM pg_attribute a WHERE "
              "a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped))",
              0, NULL);
    for (int i = 0; i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);

        ck_assert_msg(strcmp(PQgetvalue(r, i, 1), "t") == 0, "%s: RLS not enabled", name);
        ck_assert_msg(strcmp(PQgetvalue(r, i, 2), "t") == 0, "%s: RLS not forced", name);
        ck_assert_msg(atoi(PQgetvalue(r, i, 3)) >= 2, "%s: missing policies", name);
        for (size_t j = 0; j < sizeof(tenant_tables) / sizeof(tenant_tables[0]); j++)
            if (strcmp(tenant_tables[j], name) == 0)
                found++;
    }
    ck_assert_uint_eq(found, sizeof(tenant_tables) / sizeof(tenant_tables[0]));
    PQclear(r);

    /* Service roles must be subject to RLS: not owners, not superusers, no BYPASSRLS. */
    ck_assert_int_eq(db_long(admin,
                             "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON "
                             "n.oid = c.relnamespace WHERE n.nspname = 'public' AND "
                             "pg_get_userbyid(c.relowner) LIKE 'driftlock\\_%'", 0, NULL), 0);
    ck_assert_int_eq(db_long(admin,
                             "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'driftlock\\_%' "
                             "AND rolname <> 'driftlock_lookup' AND (rolsuper OR rolbypassrls "
                             "OR rolcreaterole OR rolcreatedb)", 0, NULL), 0);
    ck_assert_int_eq(db_long(admin,
                             "SELECT count(*) FROM pg_roles WHERE rolname IN ('driftlock_ingest',"
                             "'driftlock_detector','driftlock_metering','driftlock_billing',"
                             "'driftlock_notifier','driftlock_dashboard')", 0, NULL), 6);
    PQfinish(admin);
}
END_TEST

START_TEST(test_scoped_role_sees_only_its_org_in_every_table)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    PGresult *pairs = readable_pairs(admin);
    size_t tables_checked = 0;
    const char *last = "";

    ck_assert_int_gt(PQntuples(pairs), 0);
    for (int i = 0; i < PQntuples(pairs); i++) {
        const char *t = PQgetvalue(pairs, i, 0), *col = PQgetvalue(pairs, i, 1);
        const char *role = PQgetvalue(pairs, i, 2);
        char sql[512];
        PGresult *r;

        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FILTER (WHERE %s = $1::uuid), "
                 "count(*) FILTER (WHERE %s IS NOT NULL AND %s <> $1::uuid) FROM %s",
                 col, col, col, t);
        db_begin(admin, role, org_a);
        r = db_ok(admin, sql, NP(org_a));
        ck_assert_msg(atol(PQgetvalue(r, 0, 0)) >= 1, "%s as %s: own rows not visible", t, role);
        ck_assert_msg(atol(PQgetvalue(r, 0, 1)) == 0, "%s as %s: sees %s other-org rows", t, role,
                      PQgetvalue(r, 0, 1));
        PQclear(r);
        db_rollback(admin);
        if (strcmp(last, t) != 0)
            tables_checked++;
        last = t;
    }
    ck_assert_uint_eq(tables_checked, sizeof(tenant_tables) / sizeof(tenant_tables[0]));
    PQclear(pairs);
    PQfinish(admin);
}
END_TEST

START_TEST(test_login_roles_scoped_to_org)
{
    static const char *const ingest_tables[] = { "anomalies", "streams", "api_keys",
                                                 "usage_counters", "usage_alerts" };
    static const char *const metering_tables[] = { "anomalies", "streams", "usage_counters",
                                                   "outbox" };
    PGconn *ingest = db_connect("DRIFTLOCK_PG_DSN_INGEST");
    PGconn *metering = db_connect("DRIFTLOCK_PG_DSN_METERING");
    char sql[256];

    ck_assert_str_eq(PQuser(ingest), "driftlock_ingest");
    ck_assert_str_eq(PQuser(metering), "driftlock_metering");
    for (size_t i = 0; i < sizeof(ingest_tables) / sizeof(ingest_tables[0]); i++) {
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FILTER (WHERE org_id <> $1::uuid) * 1000 + "
                 "count(*) FILTER (WHERE org_id = $1::uuid) FROM %s", ingest_tables[i]);
        db_begin(ingest, NULL, org_a);
        ck_assert_int_ge(db_long(ingest, sql, NP(org_a)), 1);
        ck_assert_int_lt(db_long(ingest, sql, NP(org_a)), 1000);
        db_rollback(ingest);
    }
    for (size_t i = 0; i < sizeof(metering_tables) / sizeof(metering_tables[0]); i++) {
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FILTER (WHERE org_id <> $1::uuid) * 1000 + "
                 "count(*) FILTER (WHERE org_id = $1::uuid) FROM %s", metering_tables[i]);
        db_begin(metering, NULL, org_b);
        ck_assert_int_ge(db_long(metering, sql, NP(org_b)), 1);
        ck_assert_int_lt(db_long(metering, sql, NP(org_b)), 1000);
        db_rollback(metering);
    }
    /* Exactly the org's own two anomalies, by id. */
    db_begin(ingest, NULL, org_a);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM anomalies", 0, NULL), 2);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM organizations", 0, NULL), 1);
    db_rollback(ingest);
    PQfinish(ingest);
    PQfinish(metering);
}
END_TEST

START_TEST(test_no_org_set_sees_nothing)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    PGconn *ingest = db_connect("DRIFTLOCK_PG_DSN_INGEST");
    PGresult *pairs = readable_pairs(admin);

    for (int i = 0; i < PQntuples(pairs); i++) {
        const char *t = PQgetvalue(pairs, i, 0), *col = PQgetvalue(pairs, i, 1);
        const char *role = PQgetvalue(pairs, i, 2);
        char sql[256];

        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s IS NOT NULL", t, col);
        db_begin(admin, role, NULL);
        ck_assert_msg(db_long(admin, sql, 0, NULL) == 0, "%s as %s: rows visible with no org",
                      t, role);
        db_rollback(admin);
    }
    PQclear(pairs);

    /* Outside any transaction, and after a scoped transaction has ended. */
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM anomalies", 0, NULL), 0);
    db_begin(ingest, NULL, org_a);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM anomalies", 0, NULL), 2);
    db_do(ingest, "COMMIT", 0, NULL);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM anomalies", 0, NULL), 0);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM organizations", 0, NULL), 0);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM api_keys", 0, NULL), 0);
    PQfinish(ingest);
    PQfinish(admin);
}
END_TEST

START_TEST(test_cannot_update_or_delete_other_org)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    PGconn *ingest = db_connect("DRIFTLOCK_PG_DSN_INGEST");
    PGconn *metering = db_connect("DRIFTLOCK_PG_DSN_METERING");
    PGresult *r;
    char sql[1024];
    int updates = 0, deletes = 0;

    /* Every (table, role) pair with an UPDATE or DELETE grant, found from the catalog. */
    snprintf(sql, sizeof(sql),
             "WITH t AS (SELECT c.oid, c.relname, CASE WHEN c.relname = 'organizations' "
             "THEN 'id' ELSE 'org_id' END AS col FROM pg_class c JOIN pg_namespace n "
             "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
             "AND (c.relname = 'organizations' OR EXISTS (SELECT 1 FROM pg_attribute a WHERE "
             "a.attrelid = c.oid AND a.attname = 'org_id'))) "
             "SELECT quote_ident(t.relname), quote_ident(t.col), r.role, "
             "(SELECT quote_ident(a.attname) FROM pg_attribute a WHERE a.attrelid = t.oid AND "
             "a.attnum > 0 AND NOT a.attisdropped AND "
             "has_column_privilege(r.role, t.oid, a.attname, 'UPDATE') ORDER BY a.attnum LIMIT 1), "
             "has_table_privilege(r.role, t.oid, 'DELETE') FROM t, unnest(%s) AS r(role)",
             service_roles_sql);
    r = db_ok(admin, sql, 0, NULL);
    for (int i = 0; i < PQntuples(r); i++) {
        const char *t = PQgetvalue(r, i, 0), *col = PQgetvalue(r, i, 1);
        const char *role = PQgetvalue(r, i, 2), *upd = PQgetvalue(r, i, 3);

        if (!PQgetisnull(r, i, 3)) {
            snprintf(sql, sizeof(sql), "UPDATE %s SET %s = %s WHERE %s = $1::uuid", t, upd, upd,
                     col);
            db_begin(admin, role, org_a);
            ck_assert_msg(db_affected(admin, sql, NP(org_b)) == 0, "%s as %s updated org B", t,
                          role);
            ck_assert_msg(db_affected(admin, sql, NP(org_a)) >= 1, "%s as %s: own row", t, role);
            db_rollback(admin);
            updates++;
        }
        if (strcmp(PQgetvalue(r, i, 4), "t") == 0) {
            long before, after;

            snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s = $1::uuid", t, col);
            before = db_long(admin, sql, NP(org_b));
            ck_assert_int_ge(before, 1);
            db_begin(admin, role, org_a);
            snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE %s = $1::uuid", t, col);
            ck_assert_msg(db_affected(admin, sql, NP(org_b)) == 0, "%s as %s deleted org B", t,
                          role);
            /* Even an unqualified DELETE removes only the scoped org's rows. */
            snprintf(sql, sizeof(sql), "DELETE FROM %s", t);
            ck_assert_int_ge(db_affected(admin, sql, 0, NULL), 1);
            db_do(admin, "RESET ROLE", 0, NULL);
            snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s = $1::uuid", t, col);
            after = db_long(admin, sql, NP(org_b));
            ck_assert_int_eq(after, before);
            ck_assert_int_eq(db_long(admin, sql, NP(org_a)), 0);
            db_rollback(admin);
            deletes++;
        }
    }
    PQclear(r);
    ck_assert_int_ge(updates, 8);
    ck_assert_int_ge(deletes, 1);

    /* The same through the services' own logins. */
    db_begin(ingest, NULL, org_a);
    ck_assert_int_eq(db_affected(ingest, "UPDATE anomalies SET status = 'dismissed' "
                                         "WHERE org_id = $1::uuid", NP(org_b)), 0);
    ck_assert_int_eq(db_affected(ingest, "UPDATE api_keys SET last_used_at = now() "
                                         "WHERE org_id = $1::uuid", NP(org_b)), 0);
    ck_assert_int_eq(db_affected(ingest, "UPDATE organizations SET sensitivity = 0.9 "
                                         "WHERE id = $1::uuid", NP(org_b)), 0);
    db_do(ingest, "COMMIT", 0, NULL);
    db_begin(metering, NULL, org_a);
    ck_assert_int_eq(db_affected(metering, "DELETE FROM anomalies WHERE org_id = $1::uuid",
                                 NP(org_b)), 0);
    ck_assert_int_eq(db_affected(metering, "UPDATE usage_counters SET anomalies = 0 "
                                           "WHERE org_id = $1::uuid", NP(org_b)), 0);
    db_do(metering, "COMMIT", 0, NULL);
    ck_assert_int_eq(db_long(admin, "SELECT count(*) FROM anomalies WHERE org_id = $1::uuid "
                                    "AND status = 'new'", NP(org_b)), 1);
    ck_assert_int_eq(db_long(admin, "SELECT sum(anomalies) FROM usage_counters "
                                    "WHERE org_id = $1::uuid", NP(org_b)), 10);
    ck_assert_int_eq(db_long(admin, "SELECT (sensitivity * 100)::int FROM organizations "
                                    "WHERE id = $1::uuid", NP(org_b)), 50);
    PQfinish(metering);
    PQfinish(ingest);
    PQfinish(admin);
}
END_TEST

static const char *const insert_anomaly_sql =
    "INSERT INTO anomalies (org_id, id, stream, event_id, event_ts, detected_at, kind, score, "
    "p_value, severity, explanation_summary, explanation_signal, detector_version, "
    "detector_sensitivity) VALUES ($1::uuid, $2, 'checkout.api', 'evt-9', now(), now(), "
    "'event', 1.0, 0.01, 'low', 'x', 'cost_bits', 'cbad-1', 0.5)";

START_TEST(test_cannot_insert_for_other_org)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    PGconn *ingest = db_connect("DRIFTLOCK_PG_DSN_INGEST");
    PGconn *metering = db_connect("DRIFTLOCK_PG_DSN_METERING");

    db_begin(metering, NULL, org_a);
    db_fails(metering, "42501", insert_anomaly_sql, NP(org_b, "anom-x"));
    db_rollback(metering);
    db_begin(metering, NULL, org_a);
    ck_assert_int_eq(db_affected(metering, insert_anomaly_sql, NP(org_a, "anom-x")), 1);
    db_fails(metering, "42501", "INSERT INTO usage_counters (org_id, period_start, period_end) "
                                "VALUES ($1::uuid, now(), now() + interval '1 month')",
             NP(org_b));
    db_rollback(metering);
    db_begin(metering, NULL, NULL);
    db_fails(metering, "42501", insert_anomaly_sql, NP(org_a, "anom-y"));
    db_rollback(metering);

    db_begin(ingest, NULL, org_a);
    db_fails(ingest, "42501", "INSERT INTO anomaly_status_history (org_id, anomaly_id, "
                              "from_status, to_status) VALUES ($1::uuid, 'anom-1', 'new', "
                              "'resolved')", NP(org_b));
    db_rollback(ingest);

    db_begin(admin, "driftlock_billing", org_a);
    db_fails(admin, "42501", "INSERT INTO billing_actions (org_id, action, actor) VALUES "
                             "($1::uuid, 'plan_changed', 'test')", NP(org_b));
    db_rollback(admin);
    db_begin(admin, "driftlock_notifier", org_a);
    db_fails(admin, "42501", "INSERT INTO notifications (id, org_id, kind, created_at) VALUES "
                             "('n-x-' || $1, $1::uuid, 'suspended', now())", NP(org_b));
    db_rollback(admin);
    db_begin(admin, "driftlock_detector", org_a);
    db_fails(admin, "42501", "INSERT INTO streams (org_id, name) VALUES ($1::uuid, 'new.one')",
             NP(org_b));
    db_rollback(admin);
    ck_assert_int_eq(db_long(admin, "SELECT count(*) FROM anomalies WHERE org_id IN "
                                    "($1::uuid, $2::uuid)", NP(org_a, org_b)), 4);
    PQfinish(metering);
    PQfinish(ingest);
    PQfinish(admin);
}
END_TEST

START_TEST(test_dashboard_reads_all_orgs_and_writes_nothing)
{
    PGconn *dash = db_connect("DRIFTLOCK_PG_DSN_DASHBOARD");
    PGconn *ingest = db_connect("DRIFTLOCK_PG_DSN_INGEST");
    PGresult *r;

    ck_assert_int_eq(db_long(dash, "SELECT sum(anomalies) FROM anomalies_daily "
                                   "WHERE org_id = $1::uuid", NP(org_a)), 2);
    ck_assert_int_eq(db_long(dash, "SELECT sum(anomalies) FROM anomalies_daily "
                                   "WHERE org_id = $1::uuid", NP(org_b)), 2);
    ck_assert_int_eq(db_long(dash, "SELECT sum(anomalies) FROM anomalies_daily WHERE org_id = "
                                   "$1::uuid AND severity = 'high' AND stream = 'checkout.api'",
                             NP(org_a)), 1);

    r = db_ok(dash, "SELECT u.plan, u.counted, u.included, u.percent, u.overage, "
                    "u.overage_cost_microusd, u.period_start = s.current_period_start "
                    "FROM usage_current_period u LEFT JOIN subscriptions s ON s.org_id = u.org_id "
                    "WHERE u.org_id IN ($1::uuid, $2::uuid) ORDER BY u.org_id = $1::uuid DESC",
              NP(org_a, org_b));
    ck_assert_int_eq(PQntuples(r), 2);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "pro");
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "60000");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "50000");
    ck_assert_str_eq(PQgetvalue(r, 0, 3), "120.00");
    ck_assert_str_eq(PQgetvalue(r, 0, 4), "10000");
    ck_assert_str_eq(PQgetvalue(r, 0, 5), "10000000"); /* 10,000 x $0.001 = $10 */
    ck_assert_str_eq(PQgetvalue(r, 0, 6), "t");        /* period from the subscription */
    ck_assert_str_eq(PQgetvalue(r, 1, 0), "developer");
    ck_assert_str_eq(PQgetvalue(r, 1, 1), "10");
    ck_assert_str_eq(PQgetvalue(r, 1, 3), "1.00");
    ck_assert_str_eq(PQgetvalue(r, 1, 4), "0");
    PQclear(r);
    ck_assert_int_eq(db_long(dash, "SELECT count(*) FROM anomalies WHERE org_id IN "
                                   "($1::uuid, $2::uuid)", NP(org_a, org_b)), 4);

    /* A service reading the same view sees its own org only. */
    db_begin(ingest, NULL, org_a);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM usage_current_period", 0, NULL), 1);
    ck_assert_int_eq(db_long(ingest, "SELECT counted FROM usage_current_period", 0, NULL), 60000);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM anomalies_daily WHERE org_id <> "
                                     "$1::uuid", NP(org_a)), 0);
    db_rollback(ingest);

    db_fails(dash, "42501", insert_anomaly_sql, NP(org_a, "anom-d"));
    db_fails(dash, "42501", "UPDATE anomalies SET status = 'resolved' WHERE org_id = $1::uuid",
             NP(org_a));
    db_fails(dash, "42501", "DELETE FROM anomalies WHERE org_id = $1::uuid", NP(org_a));
    db_fails(dash, "42501", "UPDATE organizations SET plan = 'enterprise' WHERE id = $1::uuid",
             NP(org_b));
    db_fails(dash, "42501", "DELETE FROM usage_counters WHERE org_id = $1::uuid", NP(org_b));
    db_fails(dash, "42501", "SELECT key_hash FROM api_keys WHERE org_id = $1::uuid", NP(org_a));
    db_fails(dash, "42501", "SELECT * FROM dl_api_key_lookup('\\x00')", 0, NULL);
    ck_assert_int_eq(db_long(dash, "SELECT count(*) FROM information_schema.table_privileges "
                                   "WHERE grantee = 'driftlock_dashboard' AND privilege_type "
                                   "<> 'SELECT'", 0, NULL), 0);
    PQfinish(ingest);
    PQfinish(dash);
}
END_TEST

START_TEST(test_api_key_lookup_without_org)
{
    PGconn *ingest = db_connect("DRIFTLOCK_PG_DSN_INGEST");
    PGconn *metering = db_connect("DRIFTLOCK_PG_DSN_METERING");
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    char *key_id = db_value(admin, "SELECT id FROM api_keys WHERE org_id = $1::uuid AND "
                                   "revoked_at IS NULL", NP(org_a));
    char active[128], revoked[128];
    PGresult *r;

    snprintf(active, sizeof(active), "key-active-%s", org_a);
    snprintf(revoked, sizeof(revoked), "key-revoked-%s", org_a);
    r = db_ok(ingest, "SELECT api_key_id, org_id FROM dl_api_key_lookup("
                      "sha256(convert_to($1, 'UTF8')))", NP(active));
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_int_eq(PQnfields(r), 2);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), key_id);
    ck_assert_str_eq(PQgetvalue(r, 0, 1), org_a);
    PQclear(r);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM dl_api_key_lookup("
                                     "sha256(convert_to($1, 'UTF8')))", NP(revoked)), 0);
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM dl_api_key_lookup("
                                     "sha256(convert_to($1, 'UTF8')))", NP("no-such-key")), 0);
    /* The function is the only way in: the table itself shows nothing without an org. */
    ck_assert_int_eq(db_long(ingest, "SELECT count(*) FROM api_keys", 0, NULL), 0);
    db_fails(metering, "42501", "SELECT * FROM dl_api_key_lookup(sha256(convert_to($1, 'UTF8')))",
             NP(active));
    free(key_id);
    PQfinish(admin);
    PQfinish(metering);
    PQfinish(ingest);
}
END_TEST

START_TEST(test_billing_lookups_without_org)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    PGconn *ingest = db_connect("DRIFTLOCK_PG_DSN_INGEST");
    char tag_a[64], cus[80], sub[80], *v;

    tag_of(org_a, tag_a);
    snprintf(cus, sizeof(cus), "cus_%s", tag_a);
    snprintf(sub, sizeof(sub), "sub_%s", tag_a);
    db_begin(admin, "driftlock_billing", NULL);
    v = db_value(admin, "SELECT dl_billing_org_by_customer($1)", NP(cus));
    ck_assert_str_eq(v, org_a);
    free(v);
    v = db_value(admin, "SELECT dl_billing_org_by_subscription($1)", NP(sub));
    ck_assert_str_eq(v, org_a);
    free(v);
    v = db_value(admin, "SELECT dl_billing_org_by_customer('cus_unknown')", 0, NULL);
    ck_assert_str_eq(v, "");
    free(v);
    ck_assert_int_eq(db_long(admin, "SELECT count(*) FROM dl_dunning_due(now()) AS d(o) "
                                    "WHERE o = $1::uuid", NP(org_a)), 1);
    ck_assert_int_eq(db_long(admin, "SELECT count(*) FROM dl_dunning_due(now()) AS d(o) "
                                    "WHERE o = $1::uuid", NP(org_b)), 0);
    ck_assert_int_eq(db_long(admin, "SELECT count(*) FROM billing_customers", 0, NULL), 0);
    db_rollback(admin);
    db_fails(ingest, "42501", "SELECT dl_billing_org_by_customer($1)", NP(cus));
    PQfinish(ingest);
    PQfinish(admin);
}
END_TEST

START_TEST(test_redelivered_anomaly_conflicts)
{
    PGconn *metering = db_connect("DRIFTLOCK_PG_DSN_METERING");

    db_begin(metering, NULL, org_a);
    ck_assert_int_eq(db_affected(metering, "INSERT INTO anomalies (org_id, id, stream, event_id, "
                                           "event_ts, detected_at, kind, score, p_value, severity, "
                                           "explanation_summary, explanation_signal, "
                                           "detector_version, detector_sensitivity) VALUES "
                                           "($1::uuid, 'anom-1', 'checkout.api', 'evt-1', now(), "
                                           "now(), 'event', 7.5, 0.001, 'high', 'x', 'cost_bits', "
                                           "'cbad-1', 0.5) ON CONFLICT (org_id, id) DO NOTHING",
                                 NP(org_a)), 0);
    db_fails(metering, "23505", insert_anomaly_sql, NP(org_a, "anom-1"));
    db_rollback(metering);
    db_begin(metering, NULL, org_a);
    ck_assert_int_eq(db_affected(metering, insert_anomaly_sql, NP(org_a, "anom-new")), 1);
    db_rollback(metering);
    /* Org B's copy of a redelivered anomaly conflicts within B, independently of A. */
    db_begin(metering, NULL, org_b);
    db_fails(metering, "23505", insert_anomaly_sql, NP(org_b, "anom-2"));
    db_rollback(metering);
    PQfinish(metering);
}
END_TEST

START_TEST(test_status_change_recorded)
{
    PGconn *ingest = db_connect("DRIFTLOCK_PG_DSN_INGEST");
    PGresult *r;

    db_begin(ingest, NULL, org_a);
    db_do(ingest, "SELECT set_config('driftlock.actor', 'api_key:test', true)", 0, NULL);
    ck_assert_int_eq(db_affected(ingest, "UPDATE anomalies SET status = 'investigating' "
                                         "WHERE id = 'anom-1'", 0, NULL), 1);
    db_do(ingest, "COMMIT", 0, NULL);

    db_begin(ingest, NULL, org_a);
    r = db_ok(ingest, "SELECT h.from_status, h.to_status, h.actor, h.role, "
                      "a.status_changed_at IS NOT NULL FROM anomaly_status_history h "
                      "JOIN anomalies a ON a.org_id = h.org_id AND a.id = h.anomaly_id "
                      "WHERE h.anomaly_id = 'anom-1'", 0, NULL);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "new");
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "investigating");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "api_key:test");
    ck_assert_str_eq(PQgetvalue(r, 0, 3), "driftlock_ingest");
    ck_assert_str_eq(PQgetvalue(r, 0, 4), "t");
    PQclear(r);
    db_fails(ingest, "23514", "UPDATE anomalies SET status = 'closed' WHERE id = 'anom-1'", 0,
             NULL);
    db_rollback(ingest);
    /* Ingest may change the status, nothing else about an anomaly. */
    db_begin(ingest, NULL, org_a);
    db_fails(ingest, "42501", "UPDATE anomalies SET severity = 'low' WHERE id = 'anom-1'", 0,
             NULL);
    db_rollback(ingest);
    PQfinish(ingest);
}
END_TEST

START_TEST(test_plans_and_constraints)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    PGresult *r;
    char *v;

    r = db_ok(admin, "SELECT code, price_cents_month, included_anomalies, overage_allowed, "
                     "overage_microusd FROM plans WHERE code IN ('developer','pro','enterprise') "
                     "ORDER BY sort_order", 0, NULL);
    ck_assert_int_eq(PQntuples(r), 3);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "developer");
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "0");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "1000");
    ck_assert_str_eq(PQgetvalue(r, 0, 3), "f");
    ck_assert_str_eq(PQgetvalue(r, 1, 1), "4900");
    ck_assert_str_eq(PQgetvalue(r, 1, 2), "50000");
    ck_assert_str_eq(PQgetvalue(r, 1, 4), "1000");
    ck_assert_str_eq(PQgetvalue(r, 2, 1), "24900");
    ck_assert_str_eq(PQgetvalue(r, 2, 2), "500000");
    ck_assert_str_eq(PQgetvalue(r, 2, 4), "500");
    PQclear(r);

    v = db_value(admin, "SELECT sensitivity || ' ' || over_quota || ' ' || billing_status "
                        "FROM organizations WHERE id = $1::uuid", NP(org_b));
    ck_assert_str_eq(v, "0.5 soft_cap ok");
    free(v);
    db_fails(admin, "23514", "UPDATE organizations SET sensitivity = 1.5 WHERE id = $1::uuid",
             NP(org_a));
    db_fails(admin, "23514", "UPDATE organizations SET over_quota = 'ignore' WHERE id = $1::uuid",
             NP(org_a));
    db_fails(admin, "23514", "UPDATE organizations SET billing_status = 'late' "
                             "WHERE id = $1::uuid", NP(org_a));
    db_fails(admin, "23514", "UPDATE streams SET status = 'gone' WHERE org_id = $1::uuid",
             NP(org_a));
    db_fails(admin, "23514", "INSERT INTO usage_alerts (org_id, period_start, threshold, counted, "
                             "included) VALUES ($1::uuid, now(), 80, 1, 1)", NP(org_a));
    db_fails(admin, "23505", "INSERT INTO usage_alerts (org_id, period_start, threshold, counted, "
                             "included) SELECT $1::uuid, p.period_start, 70, 1, 1 "
                             "FROM dl_usage_period($1::uuid, now()) p", NP(org_a));
    db_fails(admin, "23514", "UPDATE anomalies SET p_value = 1.5 WHERE org_id = $1::uuid",
             NP(org_a));
    db_fails(admin, "23514", "UPDATE anomalies SET score = 'NaN' WHERE org_id = $1::uuid",
             NP(org_a));
    db_fails(admin, "23514", "UPDATE anomalies SET signals = (SELECT jsonb_object_agg('s' || i, i) "
                             "FROM generate_series(1, 33) i) WHERE org_id = $1::uuid", NP(org_a));
    db_fails(admin, "23514", "UPDATE anomalies SET stream = 'has space' WHERE org_id = $1::uuid",
             NP(org_a));
    db_fails(admin, "23514", "UPDATE api_keys SET key_hash = '\\x0102' WHERE org_id = $1::uuid",
             NP(org_a));
    db_fails(admin, "23505", "INSERT INTO notifications (id, org_id, kind, created_at) "
                             "SELECT id, $2::uuid, kind, created_at FROM notifications "
                             "WHERE org_id = $1::uuid", NP(org_a, org_b));
    PQfinish(admin);
}
END_TEST

START_TEST(test_outbox_relay_sees_own_unsent_rows)
{
    PGconn *metering = db_connect("DRIFTLOCK_PG_DSN_METERING");
    char *id, sql[256];

    db_begin(metering, NULL, org_a);
    id = db_value(metering, "INSERT INTO outbox (org_id, topic, key, payload) VALUES ($1::uuid, "
                            "'driftlock.usage.v1', $1, '{\"schema\":\"driftlock.usage.v1\"}') "
                            "RETURNING id", NP(org_a));
    db_do(metering, "COMMIT", 0, NULL);

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM dl_outbox_pending(1000) WHERE id = %s", id);
    ck_assert_int_eq(db_long(metering, sql, 0, NULL), 1);
    /* Rows written by billing are billing's to relay. */
    ck_assert_int_eq(db_long(metering, "SELECT count(*) FROM dl_outbox_pending(1000) WHERE "
                                       "org_id IN ($1::uuid, $2::uuid)", NP(org_a, org_b)), 1);

    db_begin(metering, NULL, org_a);
    snprintf(sql, sizeof(sql), "UPDATE outbox SET sent_at = now() WHERE id = %s", id);
    ck_assert_int_eq(db_affected(metering, sql, 0, NULL), 1);
    db_do(metering, "COMMIT", 0, NULL);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM dl_outbox_pending(1000) WHERE id = %s", id);
    ck_assert_int_eq(db_long(metering, sql, 0, NULL), 0);
    free(id);
    PQfinish(metering);
}
END_TEST

/* Runs a shell command, capturing stdout+stderr into out; returns its exit status. */
static int run_cmd(const char *cmd, char *out, size_t outlen)
{
    FILE *p = popen(cmd, "r");
    size_t n = 0, got;
    int st;

    ck_assert_msg(p != NULL, "cannot run %s", cmd);
    while (n + 1 < outlen && (got = fread(out + n, 1, outlen - 1 - n, p)) > 0)
        n += got;
    out[n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int count_lines(const char *text, const char *prefix, const char *suffix)
{
    int n = 0;
    size_t pl = strlen(prefix), sl = strlen(suffix);

    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);

        if (len >= pl + sl && strncmp(line, prefix, pl) == 0 &&
            strncmp(line + len - sl, suffix, sl) == 0)
            n++;
        line += len + (end ? 1 : 0);
    }
    return n;
}

static int migration_files(void)
{
    char dir[4096];
    DIR *d;
    struct dirent *e;
    int n = 0;

    snprintf(dir, sizeof(dir), "%s/infra/sql", env_required("DRIFTLOCK_SOURCE_ROOT"));
    d = opendir(dir);
    ck_assert_msg(d != NULL, "no %s", dir);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);

        if (len > 4 && strcmp(e->d_name + len - 4, ".sql") == 0)
            n++;
    }
    closedir(d);
    return n;
}

START_TEST(test_migrate_second_run_applies_nothing)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    char cmd[4200], out[16384], *before, *after;
    int rc;

    snprintf(cmd, sizeof(cmd), "'%s/infra/migrate.sh' 2>&1",
             env_required("DRIFTLOCK_SOURCE_ROOT"));
    rc = run_cmd(cmd, out, sizeof(out));
    ck_assert_msg(rc == 0, "first run failed (%d): %s", rc, out);
    before = db_value(admin, "SELECT count(*) || ' ' || max(applied_at) FROM schema_migrations",
                      0, NULL);
    ck_assert_int_eq(db_long(admin, "SELECT count(*) FROM schema_migrations", 0, NULL),
                     migration_files());

    rc = run_cmd(cmd, out, sizeof(out));
    ck_assert_msg(rc == 0, "second run failed (%d): %s", rc, out);
    ck_assert_msg(strstr(out, "migrate: nothing to apply") != NULL, "second run said: %s", out);
    ck_assert_int_eq(count_lines(out, "migrate: applied ", ".sql"), 0);
    after = db_value(admin, "SELECT count(*) || ' ' || max(applied_at) FROM schema_migrations",
                     0, NULL);
    ck_assert_str_eq(after, before);
    /* The role passwords it sets are not echoed. */
    ck_assert_ptr_null(strstr(out, env_required("DRIFTLOCK_PG_PASSWORD_INGEST")));
    free(before);
    free(after);
    PQfinish(admin);
}
END_TEST

START_TEST(test_migrate_refuses_changed_migration)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    const char *root = env_required("DRIFTLOCK_SOURCE_ROOT");
    char tmpl[] = "/tmp/dl-schema-test.XXXXXX", cmd[8400], out[16384], *before, *after;
    int rc;

    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(cmd, sizeof(cmd), "cp '%s'/infra/sql/*.sql '%s'/ && "
             "f=$(ls '%s'/*.sql | sort | sed -n 2p) && echo '-- edited' >> \"$f\"",
             root, tmpl, tmpl);
    ck_assert_int_eq(run_cmd(cmd, out, sizeof(out)), 0);
    before = db_value(admin, "SELECT count(*) || ' ' || max(applied_at) FROM schema_migrations",
                      0, NULL);
    snprintf(cmd, sizeof(cmd), "'%s/infra/migrate.sh' --sql-dir '%s' 2>&1", root, tmpl);
    rc = run_cmd(cmd, out, sizeof(out));
    ck_assert_msg(rc == 2, "expected refusal (2), got %d: %s", rc, out);
    ck_assert_msg(strstr(out, "changed after it was applied") != NULL, "said: %s", out);
    after = db_value(admin, "SELECT count(*) || ' ' || max(applied_at) FROM schema_migrations",
                     0, NULL);
    ck_assert_str_eq(after, before);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl);
    run_cmd(cmd, out, sizeof(out));
    free(before);
    free(after);
    PQfinish(admin);
}
END_TEST

/* The admin DSN with its database replaced by db. */
static void dsn_with_db(const char *dsn, const char *db, char *out, size_t outlen)
{
    const char *scheme = strstr(dsn, "://"), *path, *query;

    ck_assert_msg(scheme != NULL, "DRIFTLOCK_PG_DSN_ADMIN must be a postgresql:// URI");
    path = strchr(scheme + 3, '/');
    ck_assert_ptr_nonnull(path);
    query = strchr(path, '?');
    snprintf(out, outlen, "%.*s/%s%s", (int)(path - dsn), dsn, db, query ? query : "");
}

START_TEST(test_migrate_concurrent_runners_apply_each_once)
{
    PGconn *admin = db_connect("DRIFTLOCK_PG_DSN_ADMIN");
    const char *root = env_required("DRIFTLOCK_SOURCE_ROOT");
    const char *admin_dsn = env_required("DRIFTLOCK_PG_DSN_ADMIN");
    char db[64], sql[128], dsn[2048], cmd[8400], out[32768];
    int files = migration_files();
    PGconn *fresh;

    snprintf(db, sizeof(db), "driftlock_migrate_test_%d", (int)getpid());
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
    db_do(admin, sql, 0, NULL);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    db_do(admin, sql, 0, NULL);
    dsn_with_db(admin_dsn, db, dsn, sizeof(dsn));

    /* The DSN travels in the environment, as in production, not on a command line. */
    ck_assert_int_eq(setenv("DRIFTLOCK_PG_DSN_ADMIN", dsn, 1), 0);
    snprintf(cmd, sizeof(cmd),
             "m='%s/infra/migrate.sh'; t=$(mktemp -d); "
             "( \"$m\" --no-role-passwords; echo \"rc=$?\" ) >\"$t/a\" 2>&1 & "
             "( \"$m\" --no-role-passwords; echo \"rc=$?\" ) >\"$t/b\" 2>&1 & "
             "wait; cat \"$t/a\" \"$t/b\"; rm -rf \"$t\"", root);
    run_cmd(cmd, out, sizeof(out));
    ck_assert_int_eq(setenv("DRIFTLOCK_PG_DSN_ADMIN", admin_dsn, 1), 0);

    ck_assert_msg(count_lines(out, "rc=0", "") == 2, "a runner failed: %s", out);
    ck_assert_msg(count_lines(out, "migrate: applied ", ".sql") == files,
                  "each file must be applied exactly once: %s", out);
    fresh = PQconnectdb(dsn);
    ck_assert_int_eq(PQstatus(fresh), CONNECTION_OK);
    ck_assert_int_eq(db_long(fresh, "SELECT count(DISTINCT version) FROM schema_migrations", 0,
                             NULL), files);
    ck_assert_int_eq(db_long(fresh, "SELECT count(*) FROM schema_migrations", 0, NULL), files);
    ck_assert_int_eq(db_long(fresh, "SELECT count(*) FROM plans", 0, NULL), 3);
    PQfinish(fresh);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", db);
    db_do(admin, sql, 0, NULL);
    PQfinish(admin);
}
END_TEST

static Suite *schema_rls_suite(void)
{
    Suite *s = suite_create("schema_rls");
    TCase *rls = tcase_create("rls");
    TCase *migrate = tcase_create("migrate");

    tcase_add_checked_fixture(rls, setup, teardown);
    tcase_set_timeout(rls, 60);
    tcase_add_test(rls, test_every_tenant_table_forces_rls);
    tcase_add_test(rls, test_scoped_role_sees_only_its_org_in_every_table);
    tcase_add_test(rls, test_login_roles_scoped_to_org);
    tcase_add_test(rls, test_no_org_set_sees_nothing);
    tcase_add_test(rls, test_cannot_update_or_delete_other_org);
    tcase_add_test(rls, test_cannot_insert_for_other_org);
    tcase_add_test(rls, test_dashboard_reads_all_orgs_and_writes_nothing);
    tcase_add_test(rls, test_api_key_lookup_without_org);
    tcase_add_test(rls, test_billing_lookups_without_org);
    tcase_add_test(rls, test_redelivered_anomaly_conflicts);
    tcase_add_test(rls, test_status_change_recorded);
    tcase_add_test(rls, test_plans_and_constraints);
    tcase_add_test(rls, test_outbox_relay_sees_own_unsent_rows);
    suite_add_tcase(s, rls);

    tcase_set_timeout(migrate, 120);
    tcase_add_test(migrate, test_migrate_second_run_applies_nothing);
    tcase_add_test(migrate, test_migrate_refuses_changed_migration);
    tcase_add_test(migrate, test_migrate_concurrent_runners_apply_each_once);
    suite_add_tcase(s, migrate);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(schema_rls_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
