-- SPDX-License-Identifier: Apache-2.0
-- Detector: API keys of direct Kafka producers, and the cross-org poll for changed stream settings.

-- Raw events published straight onto driftlock.events.v1 carry an API key in a header; the
-- detector checks it with the same pre-authentication look-up ingest uses.
GRANT EXECUTE ON FUNCTION dl_api_key_lookup(bytea) TO driftlock_detector;

-- When a stream's detector configuration last changed: its settings, its own sensitivity, or
-- a pause/resume. Unlike updated_at it does not move when the detector records traffic
-- (status calibrating -> active, events_seen, last_event_at) or metering counts anomalies, so
-- the detector's poll only sees what a user changed.
ALTER TABLE streams ADD COLUMN config_updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX streams_config_updated_idx ON streams (config_updated_at);
CREATE INDEX organizations_updated_idx ON organizations (updated_at);

CREATE FUNCTION dl_stream_config_touch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.config_updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;

CREATE TRIGGER streams_config_touch BEFORE UPDATE OF sensitivity, settings, status ON streams
    FOR EACH ROW WHEN (OLD.sensitivity IS DISTINCT FROM NEW.sensitivity
                       OR OLD.settings IS DISTINCT FROM NEW.settings
                       OR (OLD.status = 'paused') IS DISTINCT FROM (NEW.status = 'paused'))
    EXECUTE FUNCTION dl_stream_config_touch();

-- The detector holds streams of every org its partitions carry, so it cannot read their
-- settings changes one org at a time under row-level security without a query per org per
-- poll. This look-up returns, across orgs, the effective configuration of the streams whose
-- configuration (or whose org: its sensitivity) changed after a position, in a stable order
-- (changed_at, org_id, name) so a caller pages with the last row as the next position.
-- It returns configuration only (no traffic, no anomalies) and at most 10000 rows a call.
CREATE FUNCTION dl_detector_stream_changes(p_after_at timestamptz, p_after_org uuid,
                                           p_after_name text, p_limit integer)
    RETURNS TABLE (org_id uuid, name text, sensitivity double precision, settings jsonb,
                   paused boolean, changed_at timestamptz)
    LANGUAGE sql STABLE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT c.org_id, c.name, c.sensitivity, c.settings, c.paused, c.changed_at
          FROM (SELECT s.org_id, s.name,
                       COALESCE(s.sensitivity, o.sensitivity) AS sensitivity,
                       s.settings, s.status = 'paused' AS paused,
                       GREATEST(s.config_updated_at, o.updated_at) AS changed_at
                  FROM public.streams AS s
                  JOIN public.organizations AS o ON o.id = s.org_id
                 WHERE s.config_updated_at >= p_after_at
                UNION
                SELECT s.org_id, s.name,
                       COALESCE(s.sensitivity, o.sensitivity) AS sensitivity,
                       s.settings, s.status = 'paused' AS paused,
                       GREATEST(s.config_updated_at, o.updated_at) AS changed_at
                  FROM public.organizations AS o
                  JOIN public.streams AS s ON s.org_id = o.id
                 WHERE o.updated_at >= p_after_at) AS c
         WHERE (c.changed_at, c.org_id, c.name) > (p_after_at, p_after_org, p_after_name)
         ORDER BY c.changed_at, c.org_id, c.name
         LIMIT LEAST(GREATEST(p_limit, 1), 10000)
    $$;

GRANT SELECT (org_id, name, sensitivity, settings, status, config_updated_at) ON streams
    TO driftlock_lookup;
GRANT SELECT (id, sensitivity, updated_at) ON organizations TO driftlock_lookup;
ALTER FUNCTION dl_detector_stream_changes(timestamptz, uuid, text, integer)
    OWNER TO driftlock_lookup;
REVOKE ALL ON FUNCTION dl_detector_stream_changes(timestamptz, uuid, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dl_detector_stream_changes(timestamptz, uuid, text, integer)
    TO driftlock_detector;
