-- SPDX-License-Identifier: Apache-2.0
-- Anomalies as stored by metering (one row per driftlock.anomaly.v1 message) and their status history.

-- Every field of the anomaly message is a column (or jsonb for the open-ended parts).
-- The primary key (org_id, id) makes a redelivered anomaly a conflict, never a second row.
CREATE TABLE anomalies (
    org_id                uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                    text NOT NULL CHECK (id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    stream                text NOT NULL CHECK (stream ~ '^[A-Za-z0-9._:-]{1,128}$'),
    event_id              text NOT NULL CHECK (event_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    event_ts              timestamptz NOT NULL,
    detected_at           timestamptz NOT NULL,
    kind                  text NOT NULL
                              CHECK (kind IN ('event', 'window', 'value', 'entity', 'rate')),
    score                 double precision NOT NULL
                              CHECK (score >= 0 AND score < 'Infinity'::double precision),
    p_value               double precision NOT NULL CHECK (p_value >= 0 AND p_value <= 1),
    severity              text NOT NULL
                              CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    signals               jsonb NOT NULL DEFAULT '{}'
                              CHECK (jsonb_typeof(signals) = 'object'
                                     AND dl_jsonb_object_size(signals) <= 32),
    window_start          timestamptz,
    window_end            timestamptz,
    window_events         integer CHECK (window_events >= 0),
    entity_field          text CHECK (length(entity_field) BETWEEN 1 AND 128),
    entity_value          text CHECK (length(entity_value) <= 1024),
    explanation_summary   text NOT NULL CHECK (length(explanation_summary) <= 1024),
    explanation_signal    text NOT NULL CHECK (length(explanation_signal) BETWEEN 1 AND 128),
    explanation_value     double precision,
    baseline_low          double precision,
    baseline_median       double precision,
    baseline_high         double precision,
    evidence              jsonb NOT NULL DEFAULT '[]'
                              CHECK (jsonb_typeof(evidence) = 'array'
                                     AND jsonb_array_length(evidence) <= 16),
    excerpt               text NOT NULL DEFAULT '' CHECK (length(excerpt) <= 1024),
    detector_version      text NOT NULL CHECK (length(detector_version) BETWEEN 1 AND 64),
    detector_sensitivity  double precision NOT NULL
                              CHECK (detector_sensitivity >= 0 AND detector_sensitivity <= 1),
    status                text NOT NULL DEFAULT 'new'
                              CHECK (status IN ('new', 'acknowledged', 'investigating',
                                                'resolved', 'dismissed')),
    status_changed_at     timestamptz,
    stored_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    CHECK ((window_start IS NULL) = (window_end IS NULL)
           AND (window_start IS NULL) = (window_events IS NULL)),
    CHECK (window_end >= window_start),
    CHECK ((entity_field IS NULL) = (entity_value IS NULL))
);
CREATE INDEX anomalies_org_time_idx ON anomalies (org_id, detected_at DESC);
CREATE INDEX anomalies_org_stream_time_idx ON anomalies (org_id, stream, detected_at DESC);
SELECT dl_schema_tenant_table('anomalies');

-- One row per status change, written by a trigger so no change goes unrecorded.
-- actor comes from the transaction setting driftlock.actor (e.g. 'api_key:<id>'), if set.
CREATE TABLE anomaly_status_history (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       uuid NOT NULL,
    anomaly_id   text NOT NULL,
    from_status  text NOT NULL,
    to_status    text NOT NULL CHECK (to_status IN ('new', 'acknowledged', 'investigating',
                                                    'resolved', 'dismissed')),
    actor        text CHECK (length(actor) <= 200),
    role         name NOT NULL DEFAULT current_user,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, anomaly_id) REFERENCES anomalies (org_id, id) ON DELETE CASCADE
);
CREATE INDEX anomaly_status_history_anomaly_idx
    ON anomaly_status_history (org_id, anomaly_id, changed_at);
SELECT dl_schema_tenant_table('anomaly_status_history');

CREATE FUNCTION dl_anomaly_status_stamp() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.status_changed_at := pg_catalog.now();
    RETURN NEW;
END
$$;

CREATE FUNCTION dl_anomaly_status_record() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO public.anomaly_status_history (org_id, anomaly_id, from_status, to_status, actor)
    VALUES (NEW.org_id, NEW.id, OLD.status, NEW.status,
            NULLIF(pg_catalog.current_setting('driftlock.actor', true), ''));
    RETURN NULL;
END
$$;

CREATE TRIGGER anomalies_status_stamp BEFORE UPDATE OF status ON anomalies
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION dl_anomaly_status_stamp();
CREATE TRIGGER anomalies_status_record AFTER UPDATE OF status ON anomalies
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION dl_anomaly_status_record();

-- ingest: read API and status changes (the trigger writes the history as ingest).
GRANT SELECT ON anomalies TO driftlock_ingest, driftlock_metering, driftlock_dashboard;
GRANT UPDATE (status) ON anomalies TO driftlock_ingest;
GRANT SELECT, INSERT ON anomaly_status_history TO driftlock_ingest;
GRANT SELECT ON anomaly_status_history TO driftlock_dashboard;
-- metering: stores anomalies; DELETE is for the per-plan retention purge.
GRANT INSERT, DELETE ON anomalies TO driftlock_metering;
