-- The review queue: an officer claims a case waiting for review, so that others see who has it.
CREATE TABLE review_claims (
    case_id    uuid PRIMARY KEY REFERENCES cases (id),
    operator   text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_in_review ON cases (closed_at) WHERE state = 'review';
