-- SPDX-License-Identifier: Apache-2.0
-- Usage: anomalies counted per org and billing period, and the usage alerts already fired.

-- The billing period of an org at a given instant: the current period of its live Stripe
-- subscription if it has one, else the calendar month (UTC). Runs with the caller's rights,
-- so a service sees only its own org's subscription.
CREATE FUNCTION dl_usage_period(p_org uuid, p_at timestamptz)
    RETURNS TABLE (period_start timestamptz, period_end timestamptz)
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT c.s, c.e FROM (
            SELECT 0 AS pri, s.current_period_start AS s, s.current_period_end AS e
              FROM public.subscriptions AS s
             WHERE s.org_id = p_org
               AND s.status IN ('trialing', 'active', 'past_due', 'unpaid')
               AND s.current_period_start <= p_at AND p_at < s.current_period_end
            UNION ALL
            SELECT 1, date_trunc('month', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                   (date_trunc('month', p_at AT TIME ZONE 'UTC') + interval '1 month')
                       AT TIME ZONE 'UTC'
        ) AS c
        ORDER BY c.pri, c.s DESC
        LIMIT 1
    $$;

-- Moved in the same transaction as the anomaly row it counts (metering).
CREATE TABLE usage_counters (
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    anomalies     bigint NOT NULL DEFAULT 0 CHECK (anomalies >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, period_start),
    CHECK (period_end > period_start)
);
CREATE TRIGGER usage_counters_touch BEFORE UPDATE ON usage_counters
    FOR EACH ROW EXECUTE FUNCTION dl_touch_updated_at();
SELECT dl_schema_tenant_table('usage_counters');

-- Each threshold (percent of the plan's included anomalies) fires at most once per period:
-- metering inserts with ON CONFLICT DO NOTHING and notifies only when a row was inserted.
CREATE TABLE usage_alerts (
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    period_start  timestamptz NOT NULL,
    threshold     integer NOT NULL CHECK (threshold IN (70, 90, 100, 120)),
    counted       bigint NOT NULL CHECK (counted >= 0),
    included      bigint NOT NULL CHECK (included >= 0),
    fired_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, period_start, threshold)
);
SELECT dl_schema_tenant_table('usage_alerts');

GRANT SELECT, INSERT ON usage_counters, usage_alerts TO driftlock_metering;
GRANT UPDATE (anomalies, period_end) ON usage_counters TO driftlock_metering;
GRANT SELECT ON usage_counters, usage_alerts TO driftlock_ingest, driftlock_dashboard;
GRANT SELECT ON usage_counters TO driftlock_billing;
