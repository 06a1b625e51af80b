-- SPDX-License-Identifier: Apache-2.0
-- Notifications: every message the notifier was asked to send, keyed by its dedupe key, with its delivery state.

-- id is the notification's dedupe key (the message id, also the provider's idempotency
-- key), unique across all orgs: a redelivered notification conflicts instead of resending.
CREATE TABLE notifications (
    id                   text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    org_id               uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind                 text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
    data                 jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    recipient            text CHECK (length(recipient) <= 254),
    status               text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead')),
    attempts             integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error           text CHECK (length(last_error) <= 2048),
    provider_message_id  text CHECK (length(provider_message_id) <= 200),
    created_at           timestamptz NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    next_attempt_at      timestamptz,
    sent_at              timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_org_time_idx ON notifications (org_id, created_at DESC);
CREATE INDEX notifications_org_status_idx ON notifications (org_id, status);
CREATE TRIGGER notifications_touch BEFORE UPDATE ON notifications
    FOR EACH ROW EXECUTE FUNCTION dl_touch_updated_at();
SELECT dl_schema_tenant_table('notifications');

GRANT SELECT, INSERT ON notifications TO driftlock_notifier;
GRANT UPDATE (recipient, status, attempts, last_error, provider_message_id, next_attempt_at,
              sent_at) ON notifications TO driftlock_notifier;
GRANT SELECT ON notifications TO driftlock_dashboard;
