-- The reference feed: the compacted reference.* topics (plates, contacts, car parks, cameras) materialized
-- into PostgreSQL by the workers (pipeline/reference/feed.py).

-- The last message applied per partition, written in the transaction that applied it: a batch delivered
-- again (after a rebalance or a crash) is not applied twice, so a row never goes back to an older value.
CREATE TABLE reference_positions (
    topic     text NOT NULL,
    partition integer NOT NULL,
    "offset"  bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Plates whose owner lookup a change may have changed: every worker forgets them in its owner cache
-- (the worker that applied the change at once, the others within PW_REFERENCE_REFRESH_SECONDS).
-- Rows older than an hour are deleted by the feed.
CREATE TABLE reference_changes (
    id     bigserial PRIMARY KEY,
    plates text[] NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX reference_changes_at ON reference_changes (at);
