-- Reversals, reconciliation and the scheduled reports.

-- A payment is reversed at most once: one reversal per original receipt
-- unless an earlier one failed (nothing moved, it may be asked again).
CREATE UNIQUE INDEX intents_one_reversal_idx ON intents (reference)
    WHERE kind = 'reversal' AND state <> 'failed';

-- Receipts are looked up by reversals and by reconciliation.
CREATE INDEX intents_receipt_idx ON intents (receipt) WHERE receipt IS NOT NULL;

-- One reconciliation report per day (the daily job's, or `tuma reconcile`'s
-- latest run for that day), kept as the JSON the API serves.
CREATE TABLE reconciliation_reports (
    day           date        PRIMARY KEY,
    generated_at  timestamptz NOT NULL,
    ok            boolean     NOT NULL,
    body          jsonb       NOT NULL
);

-- Non-final intents by age, for the reconciliation's "stuck" list.
CREATE INDEX intents_open_updated_idx ON intents (updated_at) WHERE final_at IS NULL;
