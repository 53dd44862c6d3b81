-- Issue 11: the plate type a case's owner was found under (GA 24.7 code), so that its later messages
-- (ticket, warning notice, appeal decision) go to the same registration's owner. NULL: found by number alone
-- (cases from before plate types were kept, or an owner never found).
ALTER TABLE cases ADD COLUMN plate_type text;
