-- The console's lists are paged by keyset (pipeline/console/listing.py): a page starts after the
-- previous page's last (sort value, id). These indexes serve the default orders, so that any page
-- of the tickets list, case search and the audit log reads only its own rows (an index on the sort
-- column alone cannot take the row comparison and would read every row before the page).
-- On a big table each is built while the table is locked for writes: apply when the workers are quiet.
CREATE INDEX tickets_issued_number ON tickets (issued_at, number);
CREATE INDEX cases_detected_id ON cases (detected_at, id);
CREATE INDEX audit_log_at_id ON audit_log (at, id);
-- They serve what the indexes on the sort column alone served (a range on the time).
DROP INDEX tickets_issued;
DROP INDEX cases_detected;
