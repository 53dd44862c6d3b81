-- SMS delivery: what the gateway and the SMS centre reported for each message, with times.

ALTER TABLE sms_messages
    ADD COLUMN smsc_accepted_at timestamptz;

CREATE TABLE sms_delivery_reports (
    id          bigserial PRIMARY KEY,
    sms_id      uuid NOT NULL REFERENCES sms_messages (id),
    status      text NOT NULL,  -- delivered | failed | queued | smsc_accepted | smsc_rejected
    detail      text NOT NULL DEFAULT '',
    reported_at timestamptz,    -- when the SMS centre says it happened
    received_at timestamptz NOT NULL
);
CREATE INDEX sms_delivery_reports_sms ON sms_delivery_reports (sms_id, id);
CREATE INDEX sms_messages_phone_day ON sms_messages (phone, accepted_at);

-- A ticket needs the warning delivered to the phone, where the gateway reports delivery.
ALTER TABLE cases ADD COLUMN warning_delivered_at timestamptz;
