-- Failed console logins per operator name (known or not), shared by all workers: after
-- PW_CONSOLE_LOGIN_MAX_FAILURES failures within PW_CONSOLE_LOGIN_LOCK_MINUTES the name is refused
-- until the oldest of them ages out. A successful login clears the name's failures.
CREATE TABLE login_failures (
    name text NOT NULL,
    at   timestamptz NOT NULL
);
CREATE INDEX login_failures_name_at ON login_failures (name, at);
