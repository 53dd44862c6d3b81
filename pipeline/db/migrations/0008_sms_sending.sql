-- A message is marked 'sending' (committed) before the gateway is asked, and the answer is
-- recorded in a second transaction. A row left 'sending' by a worker that died in between is "in
-- doubt": the SMS loop settles it later from the gateway's delivery reports (accepted) or, with
-- no report, sends it again under the same id.
ALTER TABLE sms_messages ADD COLUMN sending_since timestamptz;
CREATE INDEX sms_sending ON sms_messages (sending_since) WHERE status = 'sending';
