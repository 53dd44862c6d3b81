-- Operators of the console: who may look (viewer) and who may act (supervisor).
-- Passwords are stored as argon2id hashes (argon2-cffi), never in clear.
CREATE TABLE operators (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{1,31}$'),
    role          text NOT NULL CHECK (role IN ('viewer', 'supervisor')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Console sessions, in the database so that any worker can serve any operator. The cookie holds
-- a random token; only its SHA-256 is stored. Each session has its own CSRF token for forms.
CREATE TABLE operator_sessions (
    token_sha256 bytea PRIMARY KEY,
    operator     text NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL,
    seen_at      timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

-- What the console's live view and search read.
CREATE INDEX sightings_received ON sightings (received_at);
CREATE INDEX sightings_camera ON sightings (camera_id, taken_at);
CREATE INDEX cases_updated ON cases (updated_at);
CREATE INDEX cases_detected ON cases (detected_at);
CREATE INDEX cases_warned ON cases (warned_at) WHERE warned_at IS NOT NULL;
CREATE INDEX cases_closed ON cases (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX sms_accepted ON sms_messages (accepted_at) WHERE accepted_at IS NOT NULL;
CREATE INDEX tickets_issued ON tickets (issued_at);
CREATE INDEX dead_letters_received ON dead_letters (received_at);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
