-- Retention by data class (issue 11, must 6; pipeline/retention/job.py): the big time-ordered tables are
-- partitioned so that retention drops whole partitions instead of deleting rows.

-- Sightings are deduplicated here, per (integrator, event id): a partitioned table's unique keys must
-- hold its partition key, and the sightings' is not part of the event's identity. This table holds no
-- plate and no place (not personal data) and outlives the sightings it guards by Kafka's retention.
CREATE TABLE sighting_ids (
    integrator  text NOT NULL,
    event_id    text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (integrator, event_id)
);
INSERT INTO sighting_ids (integrator, event_id, received_at) SELECT integrator, event_id, received_at FROM sightings;
CREATE INDEX sighting_ids_received ON sighting_ids (received_at);

-- Sightings: those a case holds (sightings_of_cases, kept and purged with their case) and those no case
-- holds (sightings_unlinked, by far the most: every car the cameras see), partitioned by day of arrival
-- (UTC) and dropped a day at a time. Linking a sighting to a case moves its row to sightings_of_cases.
-- A default partition catches what arrives beyond the days created ahead (nothing is ever refused).
CREATE TABLE sightings_partitioned (LIKE sightings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY LIST ((case_id IS NULL));
CREATE TABLE sightings_of_cases PARTITION OF sightings_partitioned FOR VALUES IN (false);
CREATE TABLE sightings_unlinked PARTITION OF sightings_partitioned FOR VALUES IN (true)
    PARTITION BY RANGE (received_at);
CREATE TABLE sightings_unlinked_default PARTITION OF sightings_unlinked DEFAULT;
DO $$
DECLARE
    today timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    EXECUTE format('CREATE TABLE sightings_unlinked_before PARTITION OF sightings_unlinked FOR VALUES FROM (MINVALUE) TO (%L)', today);
    FOR d IN 0..3 LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF sightings_unlinked FOR VALUES FROM (%L) TO (%L)',
                       'sightings_unlinked_' || to_char((today + d * interval '1 day') AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       today + d * interval '1 day', today + (d + 1) * interval '1 day');
    END LOOP;
END $$;
INSERT INTO sightings_partitioned SELECT * FROM sightings;
DROP TABLE sightings;
ALTER TABLE sightings_partitioned RENAME TO sightings;
ALTER TABLE sightings ADD CONSTRAINT sightings_case_id_fkey FOREIGN KEY (case_id) REFERENCES cases (id);
CREATE INDEX sightings_event ON sightings (event_id, integrator);
CREATE INDEX sightings_plate ON sightings (plate, taken_at);
CREATE INDEX sightings_case ON sightings (case_id);
CREATE INDEX sightings_received ON sightings (received_at);
CREATE INDEX sightings_camera ON sightings (camera_id, taken_at);

-- The audit log, partitioned by month (UTC) of its entries; still append-only for everyone but the
-- retention job, which masks phone numbers and drops old months by naming the partitions themselves.
ALTER SEQUENCE audit_log_id_seq OWNED BY NONE;
CREATE TABLE audit_log_partitioned (
    id      bigint NOT NULL DEFAULT nextval('audit_log_id_seq'),
    at      timestamptz NOT NULL,
    case_id uuid,
    actor   text NOT NULL,
    action  text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE audit_log_default PARTITION OF audit_log_partitioned DEFAULT;
DO $$
DECLARE
    month timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    EXECUTE format('CREATE TABLE audit_log_before PARTITION OF audit_log_partitioned FOR VALUES FROM (MINVALUE) TO (%L)', month);
    FOR m IN 0..2 LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_log_partitioned FOR VALUES FROM (%L) TO (%L)',
                       'audit_log_' || to_char((month + m * interval '1 month') AT TIME ZONE 'UTC', 'YYYYMM'),
                       month + m * interval '1 month', month + (m + 1) * interval '1 month');
    END LOOP;
END $$;
INSERT INTO audit_log_partitioned (id, at, case_id, actor, action, detail)
    SELECT id, at, case_id, actor, action, detail FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_partitioned RENAME TO audit_log;
ALTER TABLE audit_log RENAME CONSTRAINT audit_log_partitioned_pkey TO audit_log_pkey;
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_case ON audit_log (case_id, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE RULE audit_log_no_update AS ON UPDATE TO audit_log DO INSTEAD NOTHING;
CREATE RULE audit_log_no_delete AS ON DELETE TO audit_log DO INSTEAD NOTHING;

-- What the retention job has done: a case whose sightings, SMS phone numbers and texts (and its
-- appeal's free text) are gone; a dead letter whose raw bytes are gone; how far the audit log is masked.
ALTER TABLE cases ADD COLUMN personal_data_removed_at timestamptz;
CREATE INDEX cases_retention ON cases (closed_at) WHERE closed_at IS NOT NULL AND personal_data_removed_at IS NULL;
ALTER TABLE dead_letters ADD COLUMN raw_removed_at timestamptz;
CREATE INDEX dead_letters_raw_held ON dead_letters (received_at) WHERE raw_removed_at IS NULL;
CREATE INDEX sms_delivery_reports_received ON sms_delivery_reports (received_at);
CREATE TABLE retention_marks (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO retention_marks (name, value) VALUES ('audit_log_masked_through_id', 0);
