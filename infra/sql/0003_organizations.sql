-- SPDX-License-Identifier: Apache-2.0
-- Organizations (the tenants) and their API keys, with the pre-authentication key look-up.

CREATE TABLE organizations (
    id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    contact_email              text CHECK (contact_email ~ '^[^@[:space:]]+@[^@[:space:]]+$'
                                           AND length(contact_email) <= 254),
    plan                       text NOT NULL DEFAULT 'developer' REFERENCES plans (code),
    sensitivity                double precision NOT NULL DEFAULT 0.5
                                   CHECK (sensitivity >= 0 AND sensitivity <= 1),
    over_quota                 text NOT NULL DEFAULT 'soft_cap'
                                   CHECK (over_quota IN ('soft_cap', 'block', 'allow_overage')),
    billing_status             text NOT NULL DEFAULT 'ok'
                                   CHECK (billing_status IN ('ok', 'grace', 'suspended')),
    billing_status_changed_at  timestamptz NOT NULL DEFAULT now(),
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER organizations_touch BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION dl_touch_updated_at();
SELECT dl_schema_tenant_table('organizations', 'id');

-- key_hash is a keyed hash (HMAC-SHA-256 with the server's key secret) of the whole key;
-- the plain key is never stored. prefix is the first characters of the key, for display.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    prefix        text NOT NULL CHECK (prefix ~ '^[A-Za-z0-9_]{4,32}$'),
    key_hash      bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    name          text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_org_idx ON api_keys (org_id, created_at);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
SELECT dl_schema_tenant_table('api_keys');

-- Authentication happens before the org is known: find an active (not revoked) key by its
-- hash across all orgs, returning only the key id and its org. Revoked or unknown: no row.
CREATE FUNCTION dl_api_key_lookup(p_key_hash bytea)
    RETURNS TABLE (api_key_id uuid, org_id uuid)
    LANGUAGE sql STABLE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT k.id, k.org_id
          FROM public.api_keys AS k
         WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
    $$;

GRANT SELECT (id, org_id, key_hash, revoked_at) ON api_keys TO driftlock_lookup;
ALTER FUNCTION dl_api_key_lookup(bytea) OWNER TO driftlock_lookup;
REVOKE ALL ON FUNCTION dl_api_key_lookup(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_api_key_lookup(bytea) TO driftlock_ingest;

GRANT SELECT ON organizations TO driftlock_ingest, driftlock_detector, driftlock_metering,
                                 driftlock_billing, driftlock_notifier, driftlock_dashboard;
GRANT UPDATE (sensitivity, over_quota) ON organizations TO driftlock_ingest;
GRANT UPDATE (plan, billing_status, billing_status_changed_at) ON organizations TO driftlock_billing;

-- Nobody but the look-up function reads key_hash.
GRANT SELECT (id, org_id, prefix, name, created_at, last_used_at, revoked_at) ON api_keys
    TO driftlock_ingest, driftlock_dashboard;
GRANT UPDATE (last_used_at) ON api_keys TO driftlock_ingest;
