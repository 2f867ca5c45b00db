-- Signed webhook bodies kept before they are parsed: a webhook is answered once its body is
-- committed here; the connector's worker leases the oldest, handles them and deletes them.
CREATE TABLE webhook_inbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    connector       TEXT NOT NULL,
    body            BLOB NOT NULL,
    received_us     INTEGER NOT NULL,
    lease_until_us  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_inbox_due ON webhook_inbox (connector, lease_until_us, seq);
