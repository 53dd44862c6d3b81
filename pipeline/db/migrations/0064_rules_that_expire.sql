-- Rules that expire: a whitelist entry and a zone's exemption apply from an optional start to an
-- optional end (on PostgreSQL's clock), and say who added them. Workers re-read them every
-- PW_REFERENCE_REFRESH_SECONDS, so a rule past its end stops applying without anyone acting.
ALTER TABLE whitelisted_plates ADD COLUMN valid_from timestamptz, ADD COLUMN valid_until timestamptz,
    ADD COLUMN added_by text;
ALTER TABLE zones ADD COLUMN exempt_starts_at timestamptz, ADD COLUMN exempt_ends_at timestamptz,
    ADD COLUMN exempt_by text;
