-- Outbox delivery by SMTP: tries, the last error (a kind and an SMTP code,
-- never the message) and when the next try may start. A node claims a
-- message by moving next_attempt_at forward (a lease), so several nodes on
-- one database do not send it twice.
ALTER TABLE outbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;

CREATE INDEX outbox_pending ON outbox(channel, next_attempt_at) WHERE sent_at IS NULL;
