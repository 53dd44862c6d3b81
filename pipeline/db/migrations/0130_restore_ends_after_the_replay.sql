-- After a point-in-time restore (pipeline/restore.py), continued: a reconciliation ends only once the
-- replay has made again what Kafka had of the cases decided in the lost stretch, not merely after a time.
-- The outputs read back name their case and type, so that `restore.settle` can wait for those cases.
-- restores.outbox_mark (0110) is now taken when nothing is left to wait for, not when the replay caught up.
ALTER TABLE published_before_restore
    ADD COLUMN case_id uuid,   -- the case the output is about (its case_id), if it names one
    ADD COLUMN type    text;   -- its message type (CaseClosed, TicketIssued, RecheckRequested, ...)
CREATE INDEX published_before_restore_decided ON published_before_restore (restore_id, case_id)
    WHERE type IN ('CaseClosed', 'TicketIssued', 'RecheckRequested');
