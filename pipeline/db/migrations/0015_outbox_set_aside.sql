-- Outbox rows Kafka refused for good (too large, an invalid or unknown topic, not allowed to write),
-- moved here whole with the reason, so that one row never holds up the rows after it. A row keeps
-- its outbox id (its place in the order); `parkwarden outbox retry` puts it back in the outbox.
CREATE TABLE outbox_set_aside (
    id           bigint PRIMARY KEY,
    topic        text NOT NULL,
    key          bytea,
    value        bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    set_aside_at timestamptz NOT NULL,
    reason       text NOT NULL
);
