-- Issue 11 (data platform): the registries as the police and telecom data really are.
-- Additive and cheap on a big registry: new columns have constant defaults (no table rewrite). The
-- steps that read the whole registries are the CHECKs' scans and building the new keys' indexes
-- (seconds for millions of rows); the migration holds its tables' locks until it commits, so
-- lookups wait those seconds: apply it when the workers are quiet.

-- A plate is a number and a type (号牌种类, GA 24.7 two-digit code: pipeline/data/codes.py), optionally
-- with the vehicle's make and colour (GA 24.8 letter). A plate absent from a --snapshot import is
-- retired (kept for the record, no longer used for decisions); present again, it comes back.
ALTER TABLE plate_registry
    ADD COLUMN plate_type     text NOT NULL DEFAULT '02' CHECK (plate_type ~ '^[0-9]{2}$'),
    ADD COLUMN vehicle_make   text,
    ADD COLUMN vehicle_colour text CHECK (vehicle_colour ~ '^[A-Z]$'),
    ADD COLUMN retired_at     timestamptz;
CREATE UNIQUE INDEX plate_registry_plate_type ON plate_registry (plate, plate_type);
ALTER TABLE plate_registry DROP CONSTRAINT plate_registry_pkey;
ALTER TABLE plate_registry ADD CONSTRAINT plate_registry_pkey PRIMARY KEY USING INDEX plate_registry_plate_type;

-- An owner's phones with their validity: at a moment, the owner's contact is the row valid then
-- with the latest valid_from. A fleet or company is reached through one designated contact
-- (contact_name, the person at that phone). The SMS go out in the contact's language.
ALTER TABLE contact_registry
    ADD COLUMN valid_from   timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN valid_to     timestamptz,
    ADD COLUMN owner_kind   text NOT NULL DEFAULT 'person' CHECK (owner_kind IN ('person', 'fleet', 'company')),
    ADD COLUMN contact_name text,
    ADD COLUMN language     text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
    ADD CONSTRAINT contact_registry_period CHECK (valid_to IS NULL OR valid_to > valid_from),
    ADD CONSTRAINT contact_registry_designated CHECK (owner_kind = 'person' OR contact_name IS NOT NULL);
ALTER TABLE contact_registry DROP CONSTRAINT contact_registry_pkey;
ALTER TABLE contact_registry ADD PRIMARY KEY (owner_id, valid_from);

-- Phones whose holder asked for no SMS (by phone, whoever the registry says owns it). A case whose
-- owner is reached only at such a phone goes to review, never to a ticket without a warning.
CREATE TABLE sms_opt_out (
    phone        text PRIMARY KEY CHECK (phone ~ '^\+?[0-9]{6,15}$'),
    opted_out_at timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL
);
