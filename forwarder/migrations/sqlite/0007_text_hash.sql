-- Hash of the complaint text as compared (normalised), to recognise the same reporter sending
-- the same text again on another message id (a duplicate event, not a new complaint).
ALTER TABLE outbox ADD COLUMN text_hash TEXT;
CREATE INDEX outbox_sender_text ON outbox (channel, account, sender_key, text_hash, created_us);
