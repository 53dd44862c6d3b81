-- parkwarden: the system of record.

-- Reference data: the two registries, the city's car parks and zones.
CREATE TABLE plate_registry (
    plate        text PRIMARY KEY,
    owner_id     text NOT NULL,
    vehicle_type text NOT NULL DEFAULT 'car'
);
CREATE INDEX plate_registry_owner ON plate_registry (owner_id);

CREATE TABLE contact_registry (
    owner_id text PRIMARY KEY,
    phone    text NOT NULL CHECK (phone ~ '^\+?[0-9]{6,15}$')
);

CREATE TABLE zones (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    window_seconds double precision CHECK (window_seconds > 0),
    exempt_reason  text
);

CREATE TABLE whitelisted_plates (
    plate    text PRIMARY KEY,
    reason   text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE car_parks (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    short_name text NOT NULL,
    lat        double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon        double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    capacity   integer NOT NULL CHECK (capacity >= 0)
);

CREATE TABLE car_park_status (
    car_park_id text PRIMARY KEY REFERENCES car_parks (id),
    free_spaces integer NOT NULL CHECK (free_spaces >= 0),
    reported_at timestamptz NOT NULL
);

-- Cases and what happened to them.
CREATE TABLE cases (
    id             uuid PRIMARY KEY,
    plate          text NOT NULL,
    state          text NOT NULL,
    zone           text NOT NULL,
    place          text NOT NULL,
    camera_id      text NOT NULL,
    lat            double precision NOT NULL,
    lon            double precision NOT NULL,
    violation      jsonb NOT NULL,
    latest_capture jsonb,
    window_seconds double precision NOT NULL,
    detected_at    timestamptz NOT NULL,
    opened_at      timestamptz NOT NULL,
    warned_at      timestamptz,
    deadline_at    timestamptz,
    wake_at        timestamptz,
    closed_at      timestamptz,
    reason         text NOT NULL DEFAULT '',
    updated_at     timestamptz NOT NULL
);
CREATE UNIQUE INDEX cases_one_open_per_plate ON cases (plate)
    WHERE state IN ('detected', 'warned', 'rechecking');
CREATE INDEX cases_due ON cases (wake_at) WHERE state IN ('warned', 'rechecking');
CREATE INDEX cases_plate ON cases (plate, opened_at DESC);

CREATE TABLE sightings (
    event_id    text PRIMARY KEY,
    kind        text NOT NULL,
    plate       text NOT NULL,
    camera_id   text NOT NULL,
    taken_at    timestamptz NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    place       text,
    zone        text,
    evidence    jsonb,
    case_id     uuid REFERENCES cases (id),
    received_at timestamptz NOT NULL
);
CREATE INDEX sightings_plate ON sightings (plate, taken_at);
CREATE INDEX sightings_case ON sightings (case_id);

CREATE TABLE sms_messages (
    id              uuid PRIMARY KEY,
    case_id         uuid NOT NULL REFERENCES cases (id),
    kind            text NOT NULL CHECK (kind IN ('warning', 'ticket')),
    phone           text NOT NULL,
    params          jsonb NOT NULL,
    text            text,
    status          text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    delivered_at    timestamptz,
    failed_at       timestamptz,
    gateway_ref     text,
    last_error      text,
    UNIQUE (case_id, kind)
);
CREATE INDEX sms_due ON sms_messages (next_attempt_at) WHERE status = 'pending';

CREATE SEQUENCE ticket_serial;
CREATE TABLE tickets (
    number      text PRIMARY KEY,
    case_id     uuid NOT NULL UNIQUE REFERENCES cases (id),
    plate       text NOT NULL,
    issued_at   timestamptz NOT NULL,
    deadline_at timestamptz NOT NULL,
    place       text NOT NULL,
    zone        text NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    evidence    jsonb NOT NULL,
    voided_at   timestamptz,
    void_reason text
);

CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL,
    case_id uuid,
    actor   text NOT NULL,
    action  text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_case ON audit_log (case_id, id);
CREATE RULE audit_log_no_update AS ON UPDATE TO audit_log DO INSTEAD NOTHING;
CREATE RULE audit_log_no_delete AS ON DELETE TO audit_log DO INSTEAD NOTHING;

-- Kafka outputs leave from here, so that Kafka says what PostgreSQL holds.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        bytea,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    source_topic text NOT NULL,
    partition    integer NOT NULL,
    "offset"     bigint NOT NULL,
    key          bytea,
    reason       text NOT NULL,
    errors       jsonb NOT NULL DEFAULT '[]',
    raw          bytea NOT NULL,
    received_at  timestamptz NOT NULL,
    UNIQUE (source_topic, partition, "offset")
);
