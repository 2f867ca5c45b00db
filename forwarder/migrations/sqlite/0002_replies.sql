-- What a connector needs to answer the citizen later (chat id, Message-ID, ...), as JSON.
ALTER TABLE outbox ADD COLUMN reply_hints TEXT NOT NULL DEFAULT '{}';

-- The durable reply queue: one row per message owed to a citizen (kind 'ack' = the tracking
-- code after the complaint is stored). Retried with backoff until sent or given up.
CREATE TABLE replies (
    complaint_id     TEXT NOT NULL,
    kind             TEXT NOT NULL,
    channel          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued',   -- queued | sent | failed
    body             TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_us  INTEGER NOT NULL,
    last_error       TEXT,
    provider_id      TEXT,
    created_us       INTEGER NOT NULL,
    sent_us          INTEGER,
    PRIMARY KEY (complaint_id, kind)
);
CREATE INDEX replies_due ON replies (next_attempt_us) WHERE state = 'queued';
