-- Edited messages revise a complaint's text (Complaint.revisions): the outbox and the central
-- store remember which revision they hold, so an older receipt or record never wins.
ALTER TABLE outbox ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE complaints ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
