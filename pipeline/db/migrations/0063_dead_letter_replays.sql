-- A supervisor replays a dead letter from the console once its cause is fixed: when, and by whom.
ALTER TABLE dead_letters ADD COLUMN replayed_at timestamptz, ADD COLUMN replayed_by text;
