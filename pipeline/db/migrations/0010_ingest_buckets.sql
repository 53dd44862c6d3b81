-- Each integrator's request budget for HTTP ingest, shared by all workers: a token bucket
-- (PW_INGEST_RATE_PER_SECOND, PW_INGEST_RATE_BURST) stored as its level at a moment and refilled
-- when next read. One row per integrator; each request updates it in one statement.
CREATE TABLE ingest_buckets (
    integrator text PRIMARY KEY,
    tokens     double precision NOT NULL,
    at         timestamptz NOT NULL,
    allowed    boolean NOT NULL
);
