-- SPDX-License-Identifier: Apache-2.0
-- Ops dashboard views: anomalies per hour, noisy streams, event-to-anomaly latency, outbox backlog, notifications and stream status.

-- Every view is security_invoker: it applies the reader's row-level security, so
-- driftlock_dashboard (policy ops_read) sees every org and a tenant role only its own.
-- docs/dashboards.md has the questions these answer and the SQL that reads them.

-- Cross-org time-range reads (last hour, last 24 h, a Grafana time range) have no org_id to
-- lead with, so anomalies_org_time_idx cannot serve them: one index on detected_at does,
-- and one on the UTC hour for anomalies_hourly's bucket (a predicate on the view's hour is
-- pushed below the GROUP BY as a predicate on this expression).
CREATE INDEX anomalies_detected_at_idx ON anomalies (detected_at);
CREATE INDEX anomalies_hour_idx
    ON anomalies ((date_trunc('hour', detected_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'));

-- Anomalies per UTC hour by org, stream and severity (anomalies_daily, 0010, is the same per day).
CREATE VIEW anomalies_hourly WITH (security_invoker = true) AS
    SELECT a.org_id,
           date_trunc('hour', a.detected_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           a.stream,
           a.severity,
           count(*)       AS anomalies,
           max(a.score)   AS max_score,
           min(a.p_value) AS min_p_value
      FROM anomalies AS a
     GROUP BY a.org_id, date_trunc('hour', a.detected_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
              a.stream, a.severity;

-- The streams with the most anomalies over the last 24 hours and the last 7 days, each with its
-- share of its org's anomalies in the same span and its rank in the org (1 = noisiest).
CREATE VIEW noisy_streams WITH (security_invoker = true) AS
    SELECT s.span,
           s.org_id,
           s.stream,
           s.anomalies,
           s.critical,
           s.high,
           round(100.0 * s.anomalies / sum(s.anomalies) OVER (PARTITION BY s.span, s.org_id), 2)
               AS share_pct,
           rank() OVER (PARTITION BY s.span, s.org_id ORDER BY s.anomalies DESC) AS rank_in_org,
           s.last_anomaly_at
      FROM (SELECT w.span,
                   a.org_id,
                   a.stream,
                   count(*)                                      AS anomalies,
                   count(*) FILTER (WHERE a.severity = 'critical') AS critical,
                   count(*) FILTER (WHERE a.severity = 'high')   AS high,
                   max(a.detected_at)                            AS last_anomaly_at
              FROM (VALUES ('24h', interval '24 hours'), ('7d', interval '7 days'))
                       AS w (span, width)
              JOIN anomalies AS a ON a.detected_at >= now() - w.width
             GROUP BY w.span, a.org_id, a.stream) AS s;

-- Time from the event (its event_ts) to the anomaly: detected (detected_at, the detector's
-- clock) and stored (stored_at, PostgreSQL's clock at metering's insert), per UTC hour of
-- detection and org, in milliseconds. An event replayed or sent late has an old event_ts and
-- so a long latency: that is the latency a user sees, not only the pipeline's.
CREATE VIEW anomaly_latency_hourly WITH (security_invoker = true) AS
    SELECT l.org_id,
           l.hour,
           l.anomalies,
           round(l.det[1]::numeric, 1)    AS detected_p50_ms,
           round(l.det[2]::numeric, 1)    AS detected_p95_ms,
           round(l.det[3]::numeric, 1)    AS detected_p99_ms,
           round(l.stored[1]::numeric, 1) AS stored_p50_ms,
           round(l.stored[2]::numeric, 1) AS stored_p95_ms,
           round(l.stored[3]::numeric, 1) AS stored_p99_ms,
           round(l.stored_max::numeric, 1) AS stored_max_ms
      FROM (SELECT a.org_id,
                   date_trunc('hour', a.detected_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
                   count(*) AS anomalies,
                   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                       ORDER BY 1000 * extract(epoch FROM a.detected_at - a.event_ts)) AS det,
                   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                       ORDER BY 1000 * extract(epoch FROM a.stored_at - a.event_ts)) AS stored,
                   1000 * extract(epoch FROM max(a.stored_at - a.event_ts)) AS stored_max
              FROM anomalies AS a
             GROUP BY a.org_id,
                      date_trunc('hour', a.detected_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
           AS l;

-- Messages written but not yet produced, per writer and topic: a growing count or age means
-- the relay is down or Kafka refuses (last_error says why).
CREATE VIEW outbox_backlog WITH (security_invoker = true) AS
    SELECT o.created_by,
           o.topic,
           count(*) FILTER (WHERE o.sent_at IS NULL)                       AS pending,
           round(extract(epoch FROM now() - min(o.created_at) FILTER (WHERE o.sent_at IS NULL))::numeric, 1)
                                                                           AS oldest_pending_s,
           max(o.attempts) FILTER (WHERE o.sent_at IS NULL)                AS max_attempts,
           count(*) FILTER (WHERE o.sent_at >= now() - interval '1 hour')  AS sent_last_hour,
           round(extract(epoch FROM avg(o.sent_at - o.created_at)
                 FILTER (WHERE o.sent_at >= now() - interval '1 hour'))::numeric, 3)
                                                                           AS avg_relay_s,
           (array_agg(o.last_error ORDER BY o.id DESC)
                FILTER (WHERE o.sent_at IS NULL AND o.last_error IS NOT NULL))[1]
                                                                           AS last_error
      FROM outbox AS o
     GROUP BY o.created_by, o.topic;

-- Notifications by kind and delivery status, with the oldest one still waiting.
CREATE VIEW notifications_by_status WITH (security_invoker = true) AS
    SELECT n.kind,
           n.status,
           count(*)                                                    AS notifications,
           count(*) FILTER (WHERE n.created_at >= now() - interval '24 hours') AS last_24h,
           min(n.created_at) FILTER (WHERE n.status IN ('pending', 'sending'))  AS oldest_waiting,
           max(n.attempts)                                             AS max_attempts
      FROM notifications AS n
     GROUP BY n.kind, n.status;

-- Streams per org by status (calibrating, active, paused), with traffic and anomalies.
CREATE VIEW stream_status WITH (security_invoker = true) AS
    SELECT s.org_id,
           s.status,
           count(*)                       AS streams,
           round(avg(s.calibration_progress)::numeric, 3) AS avg_calibration_progress,
           sum(s.events_seen)             AS events_seen,
           sum(s.anomalies_count)         AS anomalies,
           max(s.last_event_at)           AS last_event_at,
           max(s.last_anomaly_at)         AS last_anomaly_at
      FROM streams AS s
     GROUP BY s.org_id, s.status;

GRANT SELECT ON anomalies_hourly, noisy_streams, anomaly_latency_hourly, outbox_backlog,
                notifications_by_status, stream_status
    TO driftlock_dashboard;
