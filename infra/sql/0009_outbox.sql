-- SPDX-License-Identifier: Apache-2.0
-- Outbox: Kafka messages written in the same transaction as the change they announce, sent after the commit.

-- The writer commits the row with its change, produces the message, then sets sent_at.
-- A relay re-sends what a crash left unsent (dl_outbox_pending), so delivery is at least once
-- and consumers dedupe by the message id. payload is the exact JSON text to produce.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    topic       text NOT NULL CHECK (topic ~ '^driftlock\.[a-z]+\.v[0-9]+$'),
    key         text CHECK (length(key) <= 512),
    payload     text NOT NULL CHECK (octet_length(payload) <= 1048576),
    headers     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(headers) = 'array'),
    created_by  name NOT NULL DEFAULT session_user,
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  text CHECK (length(last_error) <= 2048),
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent_idx ON outbox (created_by, id) WHERE sent_at IS NULL;
SELECT dl_schema_tenant_table('outbox');

-- The relay's view across orgs: the oldest unsent rows written by the calling login role
-- (each service relays only its own messages). Marking a row sent is an ordinary UPDATE
-- in a transaction scoped to the row's org.
CREATE FUNCTION dl_outbox_pending(p_limit integer)
    RETURNS TABLE (id bigint, org_id uuid, topic text, key text, payload text, headers jsonb,
                   attempts integer, created_at timestamptz)
    LANGUAGE sql STABLE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT o.id, o.org_id, o.topic, o.key, o.payload, o.headers, o.attempts, o.created_at
          FROM public.outbox AS o
         WHERE o.sent_at IS NULL AND o.created_by = session_user
         ORDER BY o.id
         LIMIT least(greatest(p_limit, 0), 1000)
    $$;
GRANT SELECT ON outbox TO driftlock_lookup;
ALTER FUNCTION dl_outbox_pending(integer) OWNER TO driftlock_lookup;
REVOKE ALL ON FUNCTION dl_outbox_pending(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_outbox_pending(integer) TO driftlock_metering, driftlock_billing;

GRANT SELECT, INSERT (org_id, topic, key, payload, headers) ON outbox
    TO driftlock_metering, driftlock_billing;
GRANT UPDATE (sent_at, attempts, last_error) ON outbox TO driftlock_metering, driftlock_billing;
GRANT SELECT ON outbox TO driftlock_dashboard;
