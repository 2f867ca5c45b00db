-- The complaint a follow-up belongs to, so an open conversation always resolves to its root.
ALTER TABLE outbox ADD COLUMN thread_of TEXT;
