-- Issue 19 must 1: the evidence images, fetched once off the hot path (pipeline/evidence/fetch.py) and kept
-- in PostgreSQL, which every worker and the console already read (no shared disk, purged in the same
-- transaction as the case's other evidence by retention).
-- Each image is stored once, keyed by the SHA-256 of its bytes.
CREATE TABLE evidence_images (
    sha256       text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    width        integer NOT NULL,
    height       integer NOT NULL,
    data         bytea NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per sighting a case uses as evidence (its violation, its fresh capture): the fetch to do or done.
--   pending   to fetch at next_attempt_at (a failure that may pass is tried again, later each time)
--   stored    the image is in evidence_images (image_sha256)
--   mismatch  the bytes' SHA-256 is not the one the camera event carried: recorded, not kept, shown
--   failed    not obtained (reason): refused (not https, host not allowed, too big, not an image) or given up
CREATE TABLE evidence_fetches (
    integrator      text NOT NULL,
    event_id        text NOT NULL,
    case_id         uuid NOT NULL REFERENCES cases (id),
    url             text NOT NULL,
    expected_sha256 text,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'stored', 'mismatch', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    reason          text,
    image_sha256    text,
    got_sha256      text,
    fetched_at      timestamptz,
    PRIMARY KEY (integrator, event_id)
);
CREATE INDEX evidence_fetches_due ON evidence_fetches (next_attempt_at) WHERE state = 'pending';
CREATE INDEX evidence_fetches_case ON evidence_fetches (case_id);
CREATE INDEX evidence_fetches_image ON evidence_fetches (image_sha256);
