-- SPDX-License-Identifier: Apache-2.0
-- Billing: Stripe customers, subscriptions, invoices, dunning, the billing audit trail and webhook idempotency.

CREATE TABLE billing_customers (
    org_id              uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    stripe_customer_id  text NOT NULL UNIQUE CHECK (stripe_customer_id ~ '^cus_[A-Za-z0-9]{1,200}$'),
    livemode            boolean NOT NULL DEFAULT false,
    email               text CHECK (length(email) <= 254),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER billing_customers_touch BEFORE UPDATE ON billing_customers
    FOR EACH ROW EXECUTE FUNCTION dl_touch_updated_at();
SELECT dl_schema_tenant_table('billing_customers');

CREATE TABLE subscriptions (
    stripe_subscription_id  text PRIMARY KEY
                                CHECK (stripe_subscription_id ~ '^sub_[A-Za-z0-9]{1,200}$'),
    org_id                  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    plan_code               text NOT NULL REFERENCES plans (code),
    status                  text NOT NULL
                                CHECK (status IN ('incomplete', 'incomplete_expired', 'trialing',
                                                  'active', 'past_due', 'canceled', 'unpaid',
                                                  'paused')),
    current_period_start    timestamptz NOT NULL,
    current_period_end      timestamptz NOT NULL,
    cancel_at_period_end    boolean NOT NULL DEFAULT false,
    canceled_at             timestamptz,
    promotion_code          text CHECK (length(promotion_code) <= 64),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (current_period_end > current_period_start)
);
CREATE INDEX subscriptions_org_idx ON subscriptions (org_id, current_period_start DESC);
CREATE TRIGGER subscriptions_touch BEFORE UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION dl_touch_updated_at();
SELECT dl_schema_tenant_table('subscriptions');

-- A mirror of Stripe's invoices as last seen in a webhook; Stripe stays the source of truth.
CREATE TABLE invoices_mirror (
    stripe_invoice_id       text PRIMARY KEY CHECK (stripe_invoice_id ~ '^in_[A-Za-z0-9]{1,200}$'),
    org_id                  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    stripe_subscription_id  text,
    status                  text NOT NULL
                                CHECK (status IN ('draft', 'open', 'paid', 'uncollectible', 'void')),
    currency                text NOT NULL DEFAULT 'usd' CHECK (currency ~ '^[a-z]{3}$'),
    amount_due_cents        bigint NOT NULL DEFAULT 0 CHECK (amount_due_cents >= 0),
    amount_paid_cents       bigint NOT NULL DEFAULT 0 CHECK (amount_paid_cents >= 0),
    attempt_count           integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    period_start            timestamptz,
    period_end              timestamptz,
    hosted_invoice_url      text CHECK (length(hosted_invoice_url) <= 2048),
    next_payment_attempt    timestamptz,
    stripe_created_at       timestamptz NOT NULL,
    paid_at                 timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_mirror_org_idx ON invoices_mirror (org_id, stripe_created_at DESC);
CREATE TRIGGER invoices_mirror_touch BEFORE UPDATE ON invoices_mirror
    FOR EACH ROW EXECUTE FUNCTION dl_touch_updated_at();
SELECT dl_schema_tenant_table('invoices_mirror');

-- Dunning: a failed payment opens grace (organizations.billing_status = 'grace') until
-- grace_ends_at, then 'suspended'; a paid invoice ends it ('recovered', status 'ok').
CREATE TABLE dunning_states (
    org_id             uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    stage              text NOT NULL CHECK (stage IN ('grace', 'suspended', 'recovered')),
    failed_invoice_id  text,
    failures           integer NOT NULL DEFAULT 1 CHECK (failures >= 0),
    grace_started_at   timestamptz NOT NULL,
    grace_ends_at      timestamptz NOT NULL,
    suspended_at       timestamptz,
    recovered_at       timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (grace_ends_at > grace_started_at)
);
CREATE INDEX dunning_states_due_idx ON dunning_states (grace_ends_at) WHERE stage = 'grace';
CREATE TRIGGER dunning_states_touch BEFORE UPDATE ON dunning_states
    FOR EACH ROW EXECUTE FUNCTION dl_touch_updated_at();
SELECT dl_schema_tenant_table('dunning_states');

-- Append-only audit trail of everything billing did to an org, and why.
CREATE TABLE billing_actions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    action           text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]{0,63}$'),
    actor            text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    stripe_event_id  text,
    detail           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_actions_org_idx ON billing_actions (org_id, created_at);
SELECT dl_schema_tenant_table('billing_actions');

-- Webhook idempotency: a Stripe event id is applied once. Events that concern no org
-- (org_id NULL) are visible to billing whatever org is set; the others only in their org.
CREATE TABLE stripe_events (
    id                 text PRIMARY KEY CHECK (id ~ '^evt_[A-Za-z0-9]{1,200}$'),
    org_id             uuid REFERENCES organizations (id) ON DELETE CASCADE,
    type               text NOT NULL CHECK (length(type) BETWEEN 1 AND 128),
    livemode           boolean NOT NULL DEFAULT false,
    stripe_created_at  timestamptz,
    received_at        timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz,
    outcome            text CHECK (outcome IN ('processed', 'ignored', 'failed')),
    error              text CHECK (length(error) <= 2048),
    payload            jsonb NOT NULL
);
CREATE INDEX stripe_events_org_idx ON stripe_events (org_id, received_at);
SELECT dl_schema_tenant_table('stripe_events', 'org_id', true);

-- Look-ups billing needs before it knows the org of a webhook.
CREATE FUNCTION dl_billing_org_by_customer(p_stripe_customer_id text) RETURNS uuid
    LANGUAGE sql STABLE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT c.org_id FROM public.billing_customers AS c
         WHERE c.stripe_customer_id = p_stripe_customer_id
    $$;

CREATE FUNCTION dl_billing_org_by_subscription(p_stripe_subscription_id text) RETURNS uuid
    LANGUAGE sql STABLE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT s.org_id FROM public.subscriptions AS s
         WHERE s.stripe_subscription_id = p_stripe_subscription_id
    $$;

-- Orgs whose grace period has ended by p_now (the dunning job then suspends each,
-- in a transaction scoped to that org).
CREATE FUNCTION dl_dunning_due(p_now timestamptz) RETURNS SETOF uuid
    LANGUAGE sql STABLE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT d.org_id FROM public.dunning_states AS d
         WHERE d.stage = 'grace' AND d.grace_ends_at <= p_now
         ORDER BY d.grace_ends_at
    $$;

GRANT SELECT (org_id, stripe_customer_id) ON billing_customers TO driftlock_lookup;
GRANT SELECT (org_id, stripe_subscription_id) ON subscriptions TO driftlock_lookup;
GRANT SELECT (org_id, stage, grace_ends_at) ON dunning_states TO driftlock_lookup;
ALTER FUNCTION dl_billing_org_by_customer(text) OWNER TO driftlock_lookup;
ALTER FUNCTION dl_billing_org_by_subscription(text) OWNER TO driftlock_lookup;
ALTER FUNCTION dl_dunning_due(timestamptz) OWNER TO driftlock_lookup;
REVOKE ALL ON FUNCTION dl_billing_org_by_customer(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_billing_org_by_subscription(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_dunning_due(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_billing_org_by_customer(text),
                          dl_billing_org_by_subscription(text),
                          dl_dunning_due(timestamptz) TO driftlock_billing;

GRANT SELECT, INSERT, UPDATE ON billing_customers, subscriptions, invoices_mirror,
                                 dunning_states, stripe_events TO driftlock_billing;
GRANT SELECT, INSERT ON billing_actions TO driftlock_billing;
GRANT SELECT ON billing_customers, subscriptions, invoices_mirror, dunning_states,
                billing_actions, stripe_events TO driftlock_dashboard;
-- The current billing period of an org comes from its subscription (see dl_usage_period).
GRANT SELECT ON subscriptions TO driftlock_ingest, driftlock_metering;
