-- Every kind of SMS the pipeline sends: 0061 (an officer's void tells the owner) and 0071 (an appeal's
-- receipt) each redefined the check with its own new kind; this one holds both.
ALTER TABLE sms_messages DROP CONSTRAINT IF EXISTS sms_messages_kind_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_kind_check
    CHECK (kind IN ('warning', 'ticket', 'appeal_decision', 'caution', 'ticket_withdrawn', 'appeal_received'));
