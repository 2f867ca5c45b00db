-- The complaint lifecycle (issue #8). The central row carries its current status (with the
-- time of the event that set it) and the due date of every SLA clock; due dates are ISO 8601
-- UTC text like received_at, so they compare as text.
ALTER TABLE complaints ADD COLUMN status_at TEXT;
ALTER TABLE complaints ADD COLUMN verify_due TEXT;
ALTER TABLE complaints ADD COLUMN follow_up_due TEXT;
ALTER TABLE complaints ADD COLUMN close_due TEXT;
ALTER TABLE complaints ADD COLUMN settle_due TEXT;
ALTER TABLE complaints ADD COLUMN erased_us BIGINT;        -- personal data erased (UU PDP)
-- The overdue queries (ops dashboard, /metrics, alerts) look up running clocks by status.
CREATE INDEX complaints_verify_due ON complaints (status, verify_due);
CREATE INDEX complaints_follow_up_due ON complaints (status, follow_up_due);
CREATE INDEX complaints_close_due ON complaints (status, close_due);
CREATE INDEX complaints_settle_due ON complaints (status, settle_due);

-- Every status event received (complaints.status.v1 or the agency API), once per event_id,
-- also the ones that did not change the current status (applied = false: stale or after a
-- final status), for the audit trail.
CREATE TABLE status_history (
    event_id     TEXT PRIMARY KEY,
    complaint_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,             -- 1, 2, ... per complaint, in arrival order
    status       TEXT NOT NULL,
    at           TEXT NOT NULL,                -- when it happened (ISO 8601 UTC)
    actor        TEXT NOT NULL,
    agency       TEXT,
    note         TEXT,
    answer       TEXT,
    applied      BOOLEAN NOT NULL,
    recorded_us  BIGINT NOT NULL,
    UNIQUE (complaint_id, seq)
);

-- Overdue SLA stages alerted on complaints.alerts.v1, one row per complaint and stage, written
-- once the broker acknowledged the alert: each is published once.
CREATE TABLE sla_alerts (
    complaint_id  TEXT NOT NULL,
    stage         TEXT NOT NULL,
    due_at        TEXT NOT NULL,
    created_us    BIGINT NOT NULL,
    published_us  BIGINT,
    PRIMARY KEY (complaint_id, stage)
);
