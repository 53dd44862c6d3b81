-- How far each partition of the camera events has been read and recorded (pipeline/cases/watermarks.py):
-- a case is decided only once the partition carrying its plate is read past its wake_at.
CREATE TABLE partition_watermarks (
    topic       text NOT NULL,
    partition   int NOT NULL,
    next_offset bigint NOT NULL DEFAULT 0,               -- every message before it is recorded
    read_to     timestamptz NOT NULL DEFAULT '-infinity', -- every message Kafka took before it is recorded
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
-- The partition that carried the case's violation (and so every later event of its plate).
-- NULL for cases opened before this migration or by an operator without one: not held.
ALTER TABLE cases ADD COLUMN source_partition int;
