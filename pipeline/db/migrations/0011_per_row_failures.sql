-- A delivery report that cannot be applied (a fault of its own) is set aside with the problem,
-- so that it never blocks the reports behind it.
ALTER TABLE sms_delivery_reports ADD COLUMN problem text;
