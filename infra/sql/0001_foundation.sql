-- SPDX-License-Identifier: Apache-2.0
-- Foundation: the service roles, the org-scope helper and the function that puts a tenant table under row-level security.

-- The schema is owned by the migration user; nobody else may create objects in it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Roles are cluster-wide, so they are created only when missing, and NOLOGIN:
-- infra/migrate.sh (local stack) or the operator (production) grants LOGIN.
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['driftlock_ingest', 'driftlock_detector', 'driftlock_metering',
                             'driftlock_billing', 'driftlock_notifier', 'driftlock_dashboard']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS', r);
        END IF;
    END LOOP;
    -- Owner of the SECURITY DEFINER look-ups that must work before an org is known.
    -- It bypasses RLS but holds nothing beyond SELECT on the columns those functions read.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'driftlock_lookup') THEN
        CREATE ROLE driftlock_lookup NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS;
    END IF;
END
$roles$;

-- The org of the current transaction: set with
--   SELECT set_config('driftlock.org_id', '<uuid>', true);
-- NULL when unset (or reset to '' after the transaction that set it ended), so that
-- every tenant policy compares with NULL and no row qualifies. A malformed value is an error.
CREATE FUNCTION dl_current_org() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(pg_catalog.current_setting('driftlock.org_id', true), '')::uuid $$;

-- Number of keys of a JSON object (for CHECK constraints bounding objects).
CREATE FUNCTION dl_jsonb_object_size(j jsonb) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT count(*)::integer FROM pg_catalog.jsonb_object_keys(j) $$;

-- Trigger: keep updated_at current on every UPDATE.
CREATE FUNCTION dl_touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;

-- Puts one tenant table under row-level security, the same way for every table:
-- ENABLE and FORCE RLS; policy tenant_isolation lets the five service roles see and write
-- only rows whose org column equals dl_current_org() (optionally also rows with no org);
-- policy ops_read lets driftlock_dashboard read every org. Migration-time only.
CREATE FUNCTION dl_schema_tenant_table(p_table regclass, p_org_column name DEFAULT 'org_id',
                                       p_allow_null_org boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    cond text;
BEGIN
    cond := format('%I = dl_current_org()', p_org_column);
    IF p_allow_null_org THEN
        cond := format('(%s OR %I IS NULL)', cond, p_org_column);
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s '
                   'TO driftlock_ingest, driftlock_detector, driftlock_metering, '
                   'driftlock_billing, driftlock_notifier '
                   'USING (%s) WITH CHECK (%s)', p_table, cond, cond);
    EXECUTE format('CREATE POLICY ops_read ON %s FOR SELECT TO driftlock_dashboard USING (true)',
                   p_table);
END
$$;
REVOKE ALL ON FUNCTION dl_schema_tenant_table(regclass, name, boolean) FROM PUBLIC;
