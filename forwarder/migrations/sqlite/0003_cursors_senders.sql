-- Source positions of pull connectors (Telegram offset, X since_id, IMAP UIDVALIDITY+UID),
-- advanced only after the messages before them are durable.
CREATE TABLE cursors (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_us  INTEGER NOT NULL
);

-- Who sent each message on its channel, to recognise an open conversation (follow-ups).
ALTER TABLE outbox ADD COLUMN sender_key TEXT;
CREATE INDEX outbox_sender ON outbox (channel, account, sender_key, created_us);
