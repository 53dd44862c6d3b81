-- An owner's SMS language is a preference only when the registry states one: NULL means the city's
-- language (PW_SMS_LANGUAGE). Rows already held keep the language they have.
ALTER TABLE contact_registry ALTER COLUMN language DROP NOT NULL, ALTER COLUMN language DROP DEFAULT;
