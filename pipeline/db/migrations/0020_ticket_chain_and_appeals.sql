-- The ticket record (issue 10, must 5): every ticket, void and appeal decision is a link in one
-- hash chain. A link is inserted without its place; a deferred trigger gives it its place at
-- commit (seq, the previous link, its SHA-256), under the chain head's row lock, so that appends
-- from several workers serialize for the length of a commit only and never wait inside a
-- transaction that holds other locks (no deadlock). The same trigger writes the link into the
-- message that publishes it (the outbox row, a compact JSON object: ',"chain":{...}' before its
-- closing brace). pipeline/tickets/chain.py computes the same hash to verify the chain.
CREATE TABLE ticket_chain_head (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq        bigint NOT NULL,
    hash       text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()  -- tickets issued before have no link
);
INSERT INTO ticket_chain_head (seq, hash) VALUES (0, repeat('0', 64));

CREATE TABLE ticket_chain (
    id            bigserial PRIMARY KEY,
    seq           bigint UNIQUE,
    kind          text NOT NULL CHECK (kind IN ('TicketIssued', 'TicketVoided', 'AppealDecided')),
    ticket_number text NOT NULL,
    appeal_id     uuid,
    body          text NOT NULL,
    prev          text,
    hash          text,
    outbox_id     bigint,
    appended_at   timestamptz
);
CREATE INDEX ticket_chain_ticket ON ticket_chain (ticket_number, seq);
CREATE RULE ticket_chain_no_delete AS ON DELETE TO ticket_chain DO INSTEAD NOTHING;

CREATE FUNCTION ticket_chain_seal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head ticket_chain_head%ROWTYPE;
    link text;
BEGIN
    SELECT * INTO head FROM ticket_chain_head FOR UPDATE;
    link := encode(sha256(convert_to(
        '{"prev":"' || head.hash || '","record":' || NEW.body || ',"seq":' || (head.seq + 1) || '}', 'UTF8')), 'hex');
    UPDATE ticket_chain SET seq = head.seq + 1, prev = head.hash, hash = link, appended_at = clock_timestamp()
     WHERE id = NEW.id;
    UPDATE ticket_chain_head SET seq = head.seq + 1, hash = link;
    IF NEW.outbox_id IS NOT NULL THEN
        UPDATE outbox SET value = substring(value FROM 1 FOR length(value) - 1)
               || convert_to(',"chain":{"hash":"' || link || '","prev":"' || head.hash || '","seq":'
                             || (head.seq + 1) || '}}', 'UTF8')
         WHERE id = NEW.outbox_id;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ticket_chain_sealed AFTER INSERT ON ticket_chain
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ticket_chain_seal();

-- Who voided a ticket (part of the void's link).
ALTER TABLE tickets ADD COLUMN voided_by text;

-- Appeals (must 7): one per ticket, from the driver page or recorded by an officer.
CREATE TABLE appeals (
    id              uuid PRIMARY KEY,
    ticket_number   text NOT NULL UNIQUE REFERENCES tickets (number),
    case_id         uuid NOT NULL REFERENCES cases (id),
    plate           text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('driver_page', 'phone')),
    ground          text NOT NULL,
    statement       text NOT NULL DEFAULT '',
    attachments     jsonb NOT NULL DEFAULT '[]',
    received_at     timestamptz NOT NULL,
    recorded_by     text NOT NULL,
    due_at          timestamptz NOT NULL,
    decided_at      timestamptz,
    outcome         text CHECK (outcome IN ('upheld', 'voided')),
    decision_reason text,
    decided_by      text,
    CHECK ((decided_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX appeals_open ON appeals (due_at) WHERE decided_at IS NULL;

-- The driver is told the appeal's outcome by SMS (one per case: one appeal per ticket).
ALTER TABLE sms_messages DROP CONSTRAINT IF EXISTS sms_messages_kind_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_kind_check
    CHECK (kind IN ('warning', 'ticket', 'appeal_decision'));
