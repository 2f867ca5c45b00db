-- Operations: a pause by an operator survives a restart, alerts are raised and resolved once
-- each, and dead letters remember the outcome of their replay and where they came from.
CREATE TABLE connector_control (
    name        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    updated_us  BIGINT NOT NULL
);
CREATE TABLE alerts (
    id           TEXT PRIMARY KEY,             -- random, one per raise
    kind         TEXT NOT NULL,                -- connector_failed | connector_degraded | ...
    subject      TEXT NOT NULL,                -- the connector, channel or queue concerned
    severity     TEXT NOT NULL,                -- warning | critical
    message      TEXT NOT NULL,
    raised_us    BIGINT NOT NULL,
    resolved_us  BIGINT
);
CREATE INDEX alerts_raised ON alerts (raised_us);
-- One open alert per condition, however many gateway instances evaluate the rules.
CREATE UNIQUE INDEX alerts_open ON alerts (kind, subject) WHERE resolved_us IS NULL;
-- The newest arrivals of one channel, from which its usual gap is learned.
CREATE INDEX outbox_channel_created ON outbox (channel, created_us);
ALTER TABLE dead_letters ADD COLUMN source TEXT NOT NULL DEFAULT 'connector';
ALTER TABLE dead_letters ADD COLUMN replay_result TEXT;
ALTER TABLE dead_letters ADD COLUMN replay_count INTEGER NOT NULL DEFAULT 0;
