-- Provenance (pipeline/cameras/): which integrator owns which camera, where it stands and which zone
-- it watches. A sighting's place, zone and position come from here, never from the event.
CREATE TABLE cameras (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:-]{1,64}$'),
    integrator      text NOT NULL REFERENCES integrators (name),
    lat             double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon             double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    place           text NOT NULL CHECK (length(place) BETWEEN 1 AND 64),
    zone            text NOT NULL CHECK (zone ~ '^[a-z0-9_-]{1,32}$'),
    direction       text CHECK (direction IN ('N', 'NE', 'E', 'SE', 'S', 'SW', 'W', 'NW')),
    commissioned_on date NOT NULL,
    added_at        timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz                       -- removed cameras keep their row, for the record
);
CREATE INDEX cameras_integrator ON cameras (integrator) WHERE removed_at IS NULL;

-- A car park's counts are taken over HTTP only from its owning integrator (NULL: from any publisher).
ALTER TABLE car_parks ADD COLUMN integrator text REFERENCES integrators (name);

-- Every sighting says which integrator it came from; event ids are unique per integrator, so one
-- integrator cannot pre-empt another's. Sightings recorded before this migration have ''.
-- reported_lat/lon: the position the event carried (kept for the record; lat/lon are the camera's).
ALTER TABLE sightings ADD COLUMN integrator text NOT NULL DEFAULT '';
ALTER TABLE sightings ALTER COLUMN integrator DROP DEFAULT;
ALTER TABLE sightings ADD COLUMN reported_lat double precision;
ALTER TABLE sightings ADD COLUMN reported_lon double precision;
ALTER TABLE sightings DROP CONSTRAINT sightings_pkey;
ALTER TABLE sightings ADD PRIMARY KEY (integrator, event_id);

-- Camera events arrive on one topic per integrator (camera-events.<integrator>): a case remembers
-- the topic as well as the partition that carried its violation (pipeline/cases/watermarks.py).
ALTER TABLE cases ADD COLUMN source_topic text;
