-- The gateway's durable outbox: one row per accepted channel message, kept after delivery so
-- that exact dedup (the primary key) holds for every redelivery, however late.
CREATE TABLE outbox (
    id               TEXT PRIMARY KEY,          -- complaint id = hash(channel, account, native id)
    tracking_code    TEXT NOT NULL UNIQUE,
    channel          TEXT NOT NULL,
    account          TEXT NOT NULL,
    native_id        TEXT NOT NULL,
    payload          TEXT NOT NULL,             -- the Complaint v1 JSON, as published
    raw_payload      BYTEA NOT NULL,            -- the bytes as received, for audit
    raw_content_type TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',   -- pending | delivered
    created_us       BIGINT NOT NULL,           -- epoch microseconds
    next_attempt_us  BIGINT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    published_us     BIGINT,
    delivered_us     BIGINT,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_us) WHERE state = 'pending';

-- The central complaint store: what the sink upserts from complaints.v1, idempotent by id.
CREATE TABLE complaints (
    id             TEXT PRIMARY KEY,
    tracking_code  TEXT NOT NULL UNIQUE,
    channel        TEXT NOT NULL,
    account        TEXT NOT NULL,
    native_id      TEXT NOT NULL,
    received_at    TEXT NOT NULL,                -- ISO 8601, UTC
    stored_us      BIGINT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'received',
    classification TEXT NOT NULL,
    agency         TEXT,
    region_code    TEXT,
    confidential   BOOLEAN NOT NULL DEFAULT FALSE,
    anonymous      BOOLEAN NOT NULL DEFAULT FALSE,
    payload        JSONB NOT NULL
);
CREATE INDEX complaints_received ON complaints (received_at);
