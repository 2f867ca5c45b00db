-- Inbound messages that cannot become complaints (unparseable payload, schema violation), kept
-- with their raw bytes and the reason so an operator can fix and replay them. Nothing is lost.
CREATE TABLE dead_letters (
    id            TEXT PRIMARY KEY,
    channel       TEXT NOT NULL,
    account       TEXT NOT NULL,
    reason        TEXT NOT NULL,
    payload       BYTEA NOT NULL,
    content_type  TEXT NOT NULL,
    created_us    BIGINT NOT NULL,
    replayed_us   BIGINT
);
CREATE INDEX dead_letters_created ON dead_letters (created_us);
