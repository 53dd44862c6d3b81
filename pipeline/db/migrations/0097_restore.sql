-- After a point-in-time restore (`parkwarden after-restore`, pipeline/restore.py): what the outside
-- world already had from the lost stretch, read back from Kafka's output topics, so that the workers
-- replaying that stretch publish nothing again and send no SMS again.
CREATE TABLE published_before_restore (
    identity     text PRIMARY KEY,   -- restore.identity(topic, value): topic, message type, case/SMS/recheck id
    topic        text NOT NULL,
    partition    int NOT NULL,
    "offset"     bigint NOT NULL,
    published_at timestamptz,        -- the message's Kafka timestamp
    restore_id   bigint NOT NULL
);

CREATE TABLE sms_sent_before_restore (
    sms_id       uuid PRIMARY KEY,
    case_id      uuid NOT NULL,
    kind         text NOT NULL,
    accepted_at  timestamptz NOT NULL,   -- as WarningSent said
    delivered_at timestamptz,            -- as WarningDelivered said, if it was published
    restore_id   bigint NOT NULL
);

CREATE TABLE restores (
    id             bigserial PRIMARY KEY,
    restored_to    timestamptz NOT NULL,   -- the recovery target time T
    margin_seconds float8 NOT NULL,
    checked_at     timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    summary        jsonb NOT NULL
);
