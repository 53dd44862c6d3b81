-- Integrators: camera vendors and car-park systems that publish events over HTTP, and operators
-- who read the dead letters. A key is shown once, when it is made; only its SHA-256 is kept.
CREATE TABLE integrators (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    kind       text NOT NULL CHECK (kind IN ('publisher', 'operator')),
    key_prefix text NOT NULL,
    key_sha256 bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
