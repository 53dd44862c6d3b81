-- One integrator cannot hold the city's decisions (issue 15, must 7).
-- A camera-events topic read further behind than PW_INTEGRATOR_STALE_SECONDS is marked here while it
-- is (pipeline/cases/watermarks.py: mark_stale); decisions go on without it, except for cases within
-- reach of one of its cameras.
CREATE TABLE stale_topics (
    topic          text PRIMARY KEY,
    integrator     text,                          -- NULL for the bare camera-events topic
    since          timestamptz NOT NULL,
    behind_seconds double precision NOT NULL      -- the furthest behind of its partitions
);

-- The dead letters' raw bytes kept per source topic (one per integrator) per UTC day, against
-- PW_DEAD_LETTER_RAW_BYTES_PER_DAY; beyond it a dead letter keeps its reason and a hash, not the bytes.
CREATE TABLE dead_letter_raw_bytes (
    source_topic text NOT NULL,
    day          date NOT NULL,
    kept         bigint NOT NULL DEFAULT 0,
    dropped      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (source_topic, day)
);
