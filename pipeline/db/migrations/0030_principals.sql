-- Everyone who logs in to Kafka besides the pipeline, in one namespace (pipeline/ingest/principals.py):
-- integrators (their API key and revocation stay in `integrators`), the city's data platforms that
-- feed reference data, and the city's own systems that read the outputs (consumers). A name is one
-- principal's, whatever its kind; the reserved names (super users, the app id) are refused in code.
CREATE TABLE principals (
    name                     text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    kind                     text NOT NULL CHECK (kind IN ('integrator', 'data_platform', 'consumer')),
    topics                   text[] NOT NULL DEFAULT '{}',   -- unprefixed registry names it may write (data
                                                             -- platform) or read (consumer)
    produce_bytes_per_second bigint CHECK (produce_bytes_per_second > 0),  -- its Kafka quota (NULL: none)
    created_at               timestamptz NOT NULL DEFAULT now(),
    revoked_at               timestamptz
);
INSERT INTO principals (name, kind, created_at, revoked_at)
    SELECT name, 'integrator', created_at, revoked_at FROM integrators;
ALTER TABLE integrators ADD CONSTRAINT integrators_principal FOREIGN KEY (name) REFERENCES principals (name);
