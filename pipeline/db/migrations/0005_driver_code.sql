-- A short code in the warning SMS that a driver can look up on the (optional) driver page.
ALTER TABLE cases ADD COLUMN driver_code text;
CREATE INDEX cases_driver_code ON cases (driver_code) WHERE driver_code IS NOT NULL;
