-- After a point-in-time restore (pipeline/restore.py), continued: the tickets Kafka already had
-- from the lost stretch (the replay issues them again with their number, record and link), and
-- when the reconciliation ends (the workers stop looking it up; its rows are deleted).
CREATE TABLE tickets_issued_before_restore (
    case_id    uuid PRIMARY KEY,
    number     text NOT NULL UNIQUE,
    message    jsonb NOT NULL,   -- the TicketIssued published on tickets, with its chain link
    restore_id bigint NOT NULL
);

ALTER TABLE restores
    ADD COLUMN replay_to      jsonb,         -- camera-events "topic:partition" -> end offset at after-restore
    ADD COLUMN settle_seconds float8 NOT NULL DEFAULT 600,
    ADD COLUMN caught_up_at   timestamptz,   -- the watermarks reached replay_to
    ADD COLUMN outbox_mark    bigint,        -- the outbox's last id then: rows up to it are relayed before the end
    ADD COLUMN done_at        timestamptz;   -- the reconciliation ended: its rows were deleted
CREATE INDEX restores_open ON restores (id) WHERE done_at IS NULL;
