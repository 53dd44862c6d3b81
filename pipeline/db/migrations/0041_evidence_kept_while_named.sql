-- Evidence lives as long as anything needs it (issue 15, must 3): the retention purge keeps a
-- sighting that a ticket's evidence, or a case's violation, still names (pipeline/retention/job.py).
-- These indexes answer "who names this sighting" for each sighting the purge would delete.
CREATE INDEX tickets_evidence_named ON tickets USING gin (evidence jsonb_path_ops);
CREATE INDEX cases_violation_event ON cases ((violation ->> 'event_id'));
