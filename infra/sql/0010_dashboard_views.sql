-- SPDX-License-Identifier: Apache-2.0
-- Dashboard views: anomalies per day, and current-period usage against the plan.

-- security_invoker: the views apply the reader's row-level security, so a service sees
-- its own org and driftlock_dashboard (policy ops_read) sees every org.
CREATE VIEW anomalies_daily WITH (security_invoker = true) AS
    SELECT a.org_id,
           (a.detected_at AT TIME ZONE 'UTC')::date AS day,
           a.stream,
           a.severity,
           count(*)      AS anomalies,
           max(a.score)  AS max_score,
           min(a.p_value) AS min_p_value
      FROM anomalies AS a
     GROUP BY a.org_id, (a.detected_at AT TIME ZONE 'UTC')::date, a.stream, a.severity;

-- percent is NULL when the plan includes nothing; overage_cost_microusd is what the plan's
-- overage price makes of the overage (0 on plans without overage: the soft cap).
CREATE VIEW usage_current_period WITH (security_invoker = true) AS
    SELECT o.id                                    AS org_id,
           o.name                                  AS org_name,
           o.plan,
           o.over_quota,
           o.billing_status,
           p.period_start,
           p.period_end,
           COALESCE(u.anomalies, 0)                AS counted,
           pl.included_anomalies                   AS included,
           round(100.0 * COALESCE(u.anomalies, 0) / NULLIF(pl.included_anomalies, 0), 2)
                                                   AS percent,
           greatest(COALESCE(u.anomalies, 0) - pl.included_anomalies, 0) AS overage,
           pl.overage_allowed,
           CASE WHEN pl.overage_allowed
                THEN greatest(COALESCE(u.anomalies, 0) - pl.included_anomalies, 0)
                     * pl.overage_microusd
                ELSE 0 END                         AS overage_cost_microusd
      FROM organizations AS o
      JOIN plans AS pl ON pl.code = o.plan
      CROSS JOIN LATERAL dl_usage_period(o.id, now()) AS p
      LEFT JOIN usage_counters AS u ON u.org_id = o.id AND u.period_start = p.period_start;

GRANT SELECT ON anomalies_daily, usage_current_period
    TO driftlock_dashboard, driftlock_ingest, driftlock_metering;
GRANT SELECT ON usage_current_period TO driftlock_billing;
