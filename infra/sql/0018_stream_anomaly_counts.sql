-- SPDX-License-Identifier: Apache-2.0
-- 0018: streams.anomalies_count and last_anomaly_at follow the anomalies stored (0004 gave
-- metering the grants; nothing wrote them yet).
--
-- A statement-level trigger over the rows an INSERT actually added (a redelivered anomaly that
-- ON CONFLICT DO NOTHING skipped is not in the transition table), so a stream's count is the
-- number of its anomalies stored, once each, whoever inserts them. One statement per insert,
-- not per row. It runs as the inserting role under its RLS scope; a stream metering sees
-- before the detector registered it is registered here.
CREATE FUNCTION dl_anomalies_count_streams() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO public.streams AS s (org_id, name, anomalies_count, last_anomaly_at)
    SELECT n.org_id, n.stream, count(*), max(n.detected_at)
      FROM new_rows AS n
     GROUP BY n.org_id, n.stream
    ON CONFLICT (org_id, name) DO UPDATE
       SET anomalies_count = s.anomalies_count + EXCLUDED.anomalies_count,
           last_anomaly_at = GREATEST(s.last_anomaly_at, EXCLUDED.last_anomaly_at);
    RETURN NULL;
END
$$;

CREATE TRIGGER anomalies_count_streams AFTER INSERT ON anomalies
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dl_anomalies_count_streams();

-- Retention removes old anomalies but a stream's count stays the number it ever stored.
