-- SPDX-License-Identifier: Apache-2.0
-- Outbox relay: marking rows sent or failed across orgs, only the calling role's own rows.

-- The relay (common/dl_outbox) reads pending rows across orgs with dl_outbox_pending and, after
-- the broker acknowledged them, marks them sent in one statement. outbox is under row-level
-- security scoped to one org per transaction, so these run as driftlock_lookup (BYPASSRLS) and
-- touch only rows created by the calling login role: a service never marks another's messages.
GRANT UPDATE (sent_at, attempts, last_error) ON outbox TO driftlock_lookup;

-- Marks the unsent rows among p_ids sent now; returns how many it marked.
CREATE FUNCTION dl_outbox_mark_sent(p_ids bigint[])
    RETURNS bigint
    LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        WITH m AS (
            UPDATE public.outbox AS o SET sent_at = now()
             WHERE o.id = ANY (p_ids) AND o.sent_at IS NULL AND o.created_by = session_user
            RETURNING 1
        )
        SELECT count(*) FROM m
    $$;

-- Records one failed delivery per row: attempts + 1 and last_error (cut to the column's
-- 2048 characters). p_ids and p_errors pair up by position. Returns how many it updated.
CREATE FUNCTION dl_outbox_mark_failed(p_ids bigint[], p_errors text[])
    RETURNS bigint
    LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        WITH f AS (
            SELECT u.id, u.err FROM unnest(p_ids, p_errors) AS u (id, err)
        ), m AS (
            UPDATE public.outbox AS o
               SET attempts = o.attempts + 1, last_error = left(coalesce(f.err, ''), 2048)
              FROM f
             WHERE o.id = f.id AND o.sent_at IS NULL AND o.created_by = session_user
            RETURNING 1
        )
        SELECT count(*) FROM m
    $$;

ALTER FUNCTION dl_outbox_mark_sent(bigint[]) OWNER TO driftlock_lookup;
ALTER FUNCTION dl_outbox_mark_failed(bigint[], text[]) OWNER TO driftlock_lookup;
REVOKE ALL ON FUNCTION dl_outbox_mark_sent(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION dl_outbox_mark_failed(bigint[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_outbox_mark_sent(bigint[]) TO driftlock_metering, driftlock_billing;
GRANT EXECUTE ON FUNCTION dl_outbox_mark_failed(bigint[], text[])
    TO driftlock_metering, driftlock_billing;
