-- SPDX-License-Identifier: Apache-2.0
-- Read API (ingest): a note with each status change, streams configured before their first event, and the index the anomaly pages walk.

-- The note a user left with the anomaly's current status, and the note of each change.
ALTER TABLE anomalies
    ADD COLUMN status_note text CHECK (length(status_note) <= 1024);
ALTER TABLE anomaly_status_history
    ADD COLUMN note text CHECK (length(note) <= 1024);

-- A change of the note alone is a change too: both triggers now also fire on status_note, and
-- the history keeps the note that came with each change.
DROP TRIGGER anomalies_status_stamp ON anomalies;
DROP TRIGGER anomalies_status_record ON anomalies;

CREATE OR REPLACE FUNCTION dl_anomaly_status_record() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO public.anomaly_status_history (org_id, anomaly_id, from_status, to_status, actor,
                                               note)
    VALUES (NEW.org_id, NEW.id, OLD.status, NEW.status,
            NULLIF(pg_catalog.current_setting('driftlock.actor', true), ''), NEW.status_note);
    RETURN NULL;
END
$$;

CREATE TRIGGER anomalies_status_stamp BEFORE UPDATE OF status, status_note ON anomalies
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.status_note IS DISTINCT FROM NEW.status_note)
    EXECUTE FUNCTION dl_anomaly_status_stamp();
CREATE TRIGGER anomalies_status_record AFTER UPDATE OF status, status_note ON anomalies
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.status_note IS DISTINCT FROM NEW.status_note)
    EXECUTE FUNCTION dl_anomaly_status_record();

GRANT UPDATE (status_note) ON anomalies TO driftlock_ingest;

-- PUT /v1/streams/{stream} may configure a stream before it sent its first event (for example
-- its entity fields); the detector then finds the row and only updates its own columns.
GRANT INSERT (org_id, name, sensitivity, settings) ON streams TO driftlock_ingest;

-- Pages of GET /v1/anomalies are ordered by (detected_at, id) descending and resume after the
-- last row of the previous page, so the whole order key is indexed.
CREATE INDEX anomalies_org_time_id_idx ON anomalies (org_id, detected_at DESC, id DESC);
