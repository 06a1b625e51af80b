-- SPDX-License-Identifier: Apache-2.0
-- Plans: what each plan includes and costs (seeded), and their Stripe price ids per environment.

-- Money is integer: monthly prices in US cents, overage in micro-dollars per anomaly
-- (1,000 micro-dollars = $0.001). Events are free; only anomalies count.
CREATE TABLE plans (
    code                      text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{0,31}$'),
    display_name              text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 64),
    price_cents_month         integer NOT NULL CHECK (price_cents_month >= 0),
    currency                  text NOT NULL DEFAULT 'usd' CHECK (currency ~ '^[a-z]{3}$'),
    included_anomalies        bigint NOT NULL CHECK (included_anomalies >= 0),
    overage_allowed           boolean NOT NULL,
    overage_microusd          integer NOT NULL DEFAULT 0 CHECK (overage_microusd >= 0),
    retention_days            integer NOT NULL CHECK (retention_days BETWEEN 1 AND 3650),
    ingest_events_per_second  integer NOT NULL CHECK (ingest_events_per_second > 0),
    ingest_burst              integer NOT NULL,
    max_streams               integer CHECK (max_streams > 0),  -- NULL = unlimited
    sort_order                integer NOT NULL DEFAULT 0,
    CHECK (overage_allowed OR overage_microusd = 0),
    CHECK (ingest_burst >= ingest_events_per_second)
);

INSERT INTO plans (code, display_name, price_cents_month, included_anomalies, overage_allowed,
                   overage_microusd, retention_days, ingest_events_per_second, ingest_burst,
                   max_streams, sort_order)
VALUES ('developer',  'Developer',      0,   1000, false,    0,   7,    50,    500,   10, 1),
       ('pro',        'Pro',         4900,  50000, true,  1000,  90,  1000,  10000,  500, 2),
       ('enterprise', 'Enterprise', 24900, 500000, true,   500, 365, 10000, 100000, NULL, 3)
ON CONFLICT (code) DO NOTHING;

-- Stripe price ids differ between test and live mode, so they are data, not code.
-- 'base' is the monthly price, 'overage' the metered per-anomaly price.
CREATE TABLE plan_price_map (
    environment      text NOT NULL CHECK (environment IN ('test', 'live')),
    plan_code        text NOT NULL REFERENCES plans (code),
    component        text NOT NULL CHECK (component IN ('base', 'overage')),
    stripe_price_id  text NOT NULL UNIQUE CHECK (stripe_price_id ~ '^price_[A-Za-z0-9]{1,200}$'),
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, plan_code, component)
);

-- Global reference data: no org, no RLS; nobody but the migration user writes it.
GRANT SELECT ON plans TO driftlock_ingest, driftlock_detector, driftlock_metering,
                         driftlock_billing, driftlock_notifier, driftlock_dashboard;
GRANT SELECT ON plan_price_map TO driftlock_billing, driftlock_dashboard;
