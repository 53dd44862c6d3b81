-- Driver-page codes that cannot be guessed (issue 9): 10 characters, unique among all cases, and
-- not shown once their case has been closed for PW_DRIVER_CODE_GRACE_HOURS (checked on lookup).
-- The old 5-character codes were guessable and may repeat: they are withdrawn (their lookups
-- answer "not found"; the page is optional and off by default).
UPDATE cases SET driver_code = NULL WHERE driver_code IS NOT NULL;
DROP INDEX IF EXISTS cases_driver_code;
CREATE UNIQUE INDEX cases_driver_code ON cases (driver_code) WHERE driver_code IS NOT NULL;
