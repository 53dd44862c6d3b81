-- Delivery reports are kept at once and applied by a loop, so that a report never waits for a
-- message row that the SMS loop holds (and never ties up a connection while it waits).
ALTER TABLE sms_delivery_reports ADD COLUMN applied_at timestamptz;
CREATE INDEX sms_delivery_reports_unapplied ON sms_delivery_reports (id) WHERE applied_at IS NULL;
