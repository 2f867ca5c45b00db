-- What the channel reported about each reply we sent (WhatsApp statuses[], Messenger delivery,
-- provider callbacks): sent -> delivered -> read, or failed. Only ever moves forward.
ALTER TABLE replies ADD COLUMN delivery_state TEXT;
ALTER TABLE replies ADD COLUMN delivery_us INTEGER;
ALTER TABLE replies ADD COLUMN delivery_error TEXT;
CREATE INDEX replies_provider ON replies (channel, provider_id);
