-- Failed console logins per operator name AND client address (known name or not), shared by all
-- workers. An attempt is counted before its password is checked, in the statement that checks the
-- count (pipeline/console/auth.py log_in), so concurrent guesses cannot slip past the limit, and
-- failures from one address never lock the name out from another. A success clears its row.
-- The old table (per name only) held nothing worth keeping: failures age out within minutes.
DROP TABLE login_failures;
CREATE TABLE login_failures (
    name      text NOT NULL,
    address   text NOT NULL,
    failed_at timestamptz[] NOT NULL,
    last_at   timestamptz NOT NULL,
    PRIMARY KEY (name, address)
);
CREATE INDEX login_failures_last ON login_failures (last_at);

-- What the live console and /metrics count every refresh, each from an index of its own
-- (pipeline/console/queries.py counts): no count reads a whole table.
CREATE INDEX sms_warnings_accepted ON sms_messages (accepted_at) WHERE kind = 'warning' AND accepted_at IS NOT NULL;
CREATE INDEX sms_created ON sms_messages (created_at);
CREATE INDEX cases_moved_closed ON cases (closed_at) WHERE state = 'moved';
CREATE INDEX cases_review ON cases (detected_at) WHERE state = 'review';
CREATE INDEX tickets_voided ON tickets (issued_at) WHERE voided_at IS NOT NULL;

-- Plate search by any part of a plate (浙A12 finds 浙A12345): a trigram index. pg_trgm ships with
-- Debian's PostgreSQL and is a trusted extension (the database's owner may create it, no superuser).
-- Where it cannot be created, search still works, reading the cases in time order instead.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE NOTICE 'pg_trgm cannot be created here (%): plate search by part of a plate reads the cases in time order', SQLERRM;
END $$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX cases_plate_trgm ON cases USING gin (plate gin_trgm_ops);
    END IF;
END $$;
