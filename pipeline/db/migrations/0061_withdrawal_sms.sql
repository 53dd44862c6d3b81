-- A ticket an officer voids: one SMS tells the owner the notice is withdrawn (once per case, like every SMS).
ALTER TABLE sms_messages DROP CONSTRAINT IF EXISTS sms_messages_kind_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_kind_check
    CHECK (kind IN ('warning', 'ticket', 'appeal_decision', 'caution', 'ticket_withdrawn'));
