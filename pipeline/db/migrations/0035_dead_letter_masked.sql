-- A reference feed's dead letter keeps a masked copy of the message (no phones, owner ids or names),
-- and the SHA-256 of the original bytes, by which the data platform finds the message in its records.
ALTER TABLE dead_letters ADD COLUMN raw_sha256 bytea;
