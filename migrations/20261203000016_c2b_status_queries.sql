-- C2B payments Daraja asked us to validate (and we accepted) whose
-- confirmation never came: the confirmation callback was lost. Each is asked
-- about by Transaction Status with its receipt; a `Completed` answer records
-- the payment from the validated notice, as its confirmation would have.
CREATE TABLE c2b_status_queries (
    trans_id    text        PRIMARY KEY,
    -- The accepted validation the payment is known from (its retention
    -- ends the query's record too).
    inbox_id    bigint      NOT NULL REFERENCES callback_inbox (id) ON DELETE CASCADE,
    asked_at    timestamptz NOT NULL,
    attempts    integer     NOT NULL DEFAULT 1,
    -- Daraja's TransactionStatus (`Completed`, …) once it answered.
    status      text,
    answered_at timestamptz
);

-- The sweep's way to the accepted validations of the last day.
CREATE INDEX callback_inbox_c2b_accepted_idx ON callback_inbox (received_at)
    WHERE kind = 'c2b-validation' AND outcome = 'accepted';
