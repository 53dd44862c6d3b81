-- A zone may be exempt only at some hours (local time, e.g. 22 to 7: overnight parking allowed).
ALTER TABLE zones
    ADD COLUMN exempt_from_hour  integer CHECK (exempt_from_hour BETWEEN 0 AND 23),
    ADD COLUMN exempt_until_hour integer CHECK (exempt_until_hour BETWEEN 0 AND 24),
    ADD CONSTRAINT zones_exempt_hours_pair CHECK ((exempt_from_hour IS NULL) = (exempt_until_hour IS NULL));
