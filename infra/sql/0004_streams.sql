-- SPDX-License-Identifier: Apache-2.0
-- Streams: one row per (org, stream) with its detector settings, calibration state and counters.

CREATE TABLE streams (
    org_id                uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                  text NOT NULL CHECK (name ~ '^[A-Za-z0-9._:-]{1,128}$'),
    -- NULL = use the org's sensitivity.
    sensitivity           double precision CHECK (sensitivity >= 0 AND sensitivity <= 1),
    settings              jsonb NOT NULL DEFAULT '{}'
                              CHECK (jsonb_typeof(settings) = 'object'
                                     AND octet_length(settings::text) <= 16384),
    status                text NOT NULL DEFAULT 'calibrating'
                              CHECK (status IN ('calibrating', 'active', 'paused')),
    calibration_progress  double precision NOT NULL DEFAULT 0
                              CHECK (calibration_progress >= 0 AND calibration_progress <= 1),
    events_seen           bigint NOT NULL DEFAULT 0 CHECK (events_seen >= 0),
    anomalies_count       bigint NOT NULL DEFAULT 0 CHECK (anomalies_count >= 0),
    last_event_at         timestamptz,
    last_anomaly_at       timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, name)
);
CREATE TRIGGER streams_touch BEFORE UPDATE ON streams
    FOR EACH ROW EXECUTE FUNCTION dl_touch_updated_at();
SELECT dl_schema_tenant_table('streams');

-- ingest: read API and the user's settings (sensitivity, detector settings, pause/resume).
GRANT SELECT ON streams TO driftlock_ingest, driftlock_detector, driftlock_metering,
                           driftlock_dashboard;
GRANT UPDATE (sensitivity, settings, status) ON streams TO driftlock_ingest;
-- detector: registers streams and records calibration and traffic.
GRANT INSERT (org_id, name, status, calibration_progress, events_seen, last_event_at) ON streams
    TO driftlock_detector;
GRANT UPDATE (status, calibration_progress, events_seen, last_event_at) ON streams
    TO driftlock_detector;
-- metering: counts stored anomalies (and may register a stream it sees first).
GRANT INSERT (org_id, name, anomalies_count, last_anomaly_at) ON streams TO driftlock_metering;
GRANT UPDATE (anomalies_count, last_anomaly_at) ON streams TO driftlock_metering;
