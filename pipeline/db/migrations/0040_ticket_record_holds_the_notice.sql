-- The ticket record holds what the notice shows, and a sealed link cannot be changed in place
-- (issue 15, must 5).
--
-- A ticket keeps the warning's acceptance and delivery times and the decision's reason as they were
-- when it was issued (its TicketIssued link records them, with each capture's image hash in the
-- evidence): pipeline/cases/store.py issue_ticket, pipeline/tickets/chain.py.
ALTER TABLE tickets ADD COLUMN warning_accepted_at timestamptz,
                    ADD COLUMN warning_delivered_at timestamptz,
                    ADD COLUMN reason text;

-- The role that runs the pipeline may append links, never change, delete or truncate them: UPDATE,
-- DELETE and TRUNCATE are revoked on the chain and its head, from everyone and from the role that
-- runs this migration (the pipeline's, in this deployment; scripts/services.sh). Sealing (the
-- deferred trigger of migration 0020) needs to fill in a new link's place, so UPDATE is given back
-- on those columns only, and a trigger refuses any change to a link once it is sealed. The owner of
-- the tables could grant itself the rest again: against that, the heads published on `tickets`
-- (`parkwarden tickets verify --against-kafka`).
REVOKE UPDATE, DELETE, TRUNCATE ON ticket_chain, ticket_chain_head FROM PUBLIC, CURRENT_USER;
GRANT UPDATE (seq, prev, hash, appended_at) ON ticket_chain TO CURRENT_USER;
GRANT UPDATE (seq, hash) ON ticket_chain_head TO CURRENT_USER;

CREATE FUNCTION ticket_chain_link_sealed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq IS NOT NULL OR NEW.body IS DISTINCT FROM OLD.body OR NEW.kind IS DISTINCT FROM OLD.kind
       OR NEW.ticket_number IS DISTINCT FROM OLD.ticket_number OR NEW.appeal_id IS DISTINCT FROM OLD.appeal_id THEN
        RAISE EXCEPTION 'the ticket record is append-only: link % is sealed', coalesce(OLD.seq::text, '(unsealed)');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ticket_chain_link_sealed BEFORE UPDATE ON ticket_chain
    FOR EACH ROW EXECUTE FUNCTION ticket_chain_link_sealed();
