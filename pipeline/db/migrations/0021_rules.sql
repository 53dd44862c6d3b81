-- Issue 10 (rules): the window from delivery, evidence timing by event time, one case per stay,
-- warning notices (first offences, new cameras) and tickets confirmed by an officer.

-- What the case machine keeps between events (pipeline/cases/machine.py): the earliest capture at the
-- place from the deadline on (the second piece of evidence), the earliest time after the deadline the
-- car was seen leaving or elsewhere, and the zone's rules decided when the case opened.
ALTER TABLE cases
    ADD COLUMN fresh_capture jsonb,
    ADD COLUMN left_at timestamptz,
    ADD COLUMN caution text NOT NULL DEFAULT '',
    ADD COLUMN confirm boolean NOT NULL DEFAULT false;
CREATE INDEX cases_to_confirm ON cases (closed_at) WHERE state = 'to_confirm';
CREATE INDEX cases_cautioned ON cases (plate, detected_at) WHERE state IN ('cautioned', 'to_confirm');
CREATE INDEX cases_cautioned_closed ON cases (closed_at) WHERE state = 'cautioned';

-- A zone's own rules; NULL: the city's default (PW_FIRST_OFFENCE_MONTHS, PW_NEW_CAMERA_DAYS, PW_CONFIRM_TICKETS).
ALTER TABLE zones
    ADD COLUMN first_offence_months integer CHECK (first_offence_months >= 0),
    ADD COLUMN new_camera_days integer CHECK (new_camera_days >= 0),
    ADD COLUMN confirm_tickets boolean;

-- A warning notice is told to the owner by its own SMS.
ALTER TABLE sms_messages DROP CONSTRAINT IF EXISTS sms_messages_kind_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_kind_check
    CHECK (kind IN ('warning', 'ticket', 'appeal_decision', 'caution'));

-- A plate's tickets, for first offences.
CREATE INDEX tickets_plate ON tickets (plate, issued_at);
