-- A message being sent belongs to the worker that claimed it (sending_by) while its lease runs
-- (lease_until, on PostgreSQL's clock); the worker renews it while its gateway call is
-- outstanding. Only a message whose lease ran out is settled by the others (an answer its sender
-- records later still counts if the message was not sent again).
-- retry_until: a message the gateway has not taken by then is given up (retries are counted in
-- time, not in attempts; attempts now counts the requests made to the gateway).
ALTER TABLE sms_messages
    ADD COLUMN sending_by  text,
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN retry_until timestamptz;
UPDATE sms_messages SET lease_until = sending_since + interval '60 seconds' WHERE status = 'sending';
DROP INDEX IF EXISTS sms_sending;
CREATE INDEX sms_sending_lease ON sms_messages (lease_until) WHERE status = 'sending';
