-- Issue 19: photos a driver attaches to an appeal (pipeline/appeals/photos.py: re-encoded, no metadata),
-- kept in PostgreSQL beside the appeal and deleted with its statement by retention (decided_cases).
CREATE TABLE appeal_photos (
    id           uuid PRIMARY KEY,
    appeal_id    uuid NOT NULL REFERENCES appeals (id) ON DELETE CASCADE,
    position     smallint NOT NULL,
    content_type text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png')),
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    data         bytea NOT NULL,
    UNIQUE (appeal_id, position)
);

-- The driver is told the appeal was received, with its reference (one per case: one appeal per ticket).
ALTER TABLE sms_messages DROP CONSTRAINT IF EXISTS sms_messages_kind_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_kind_check
    CHECK (kind IN ('warning', 'ticket', 'appeal_decision', 'caution', 'appeal_received'));
