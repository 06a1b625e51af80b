-- SPDX-License-Identifier: Apache-2.0
-- 0016: cheaper checks and one index fewer on anomalies, the table metering writes at tens of
-- thousands of rows a second.
--
-- PostgreSQL's regex engine expands a bounded repetition like {1,128} into that many states, so
-- '^[A-Za-z0-9._:-]{1,128}$' cost about as much per row as the rest of the insert together
-- (20,000 rows: 2.2-2.6 s with the three checks as written in 0005, 0.9-1.05 s with the same
-- rule written as a length bound and an unbounded class). The rule is unchanged.
ALTER TABLE anomalies
    DROP CONSTRAINT anomalies_id_check,
    DROP CONSTRAINT anomalies_stream_check,
    DROP CONSTRAINT anomalies_event_id_check,
    ADD CONSTRAINT anomalies_id_check
        CHECK (length(id) BETWEEN 1 AND 128 AND id ~ '^[A-Za-z0-9._:-]+$'),
    ADD CONSTRAINT anomalies_stream_check
        CHECK (length(stream) BETWEEN 1 AND 128 AND stream ~ '^[A-Za-z0-9._:-]+$'),
    ADD CONSTRAINT anomalies_event_id_check
        CHECK (length(event_id) BETWEEN 1 AND 128 AND event_id ~ '^[A-Za-z0-9._:-]+$');

-- (org_id, detected_at DESC) is a prefix of 0011's (org_id, detected_at DESC, id DESC), which
-- serves every query the narrower one did.
DROP INDEX anomalies_org_time_idx;
