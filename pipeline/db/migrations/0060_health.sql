-- The console's health strip: messages the gateway accepted that still wait for a delivery report.
CREATE INDEX sms_awaiting_report ON sms_messages (accepted_at) WHERE status = 'accepted';
