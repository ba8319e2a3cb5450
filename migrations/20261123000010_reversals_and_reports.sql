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

-- Every account's balance at each snapshot tick: the balance history
-- parties and operators ask for. Written once per (tick, account).
CREATE TABLE balance_snapshots (
    taken_at     timestamptz NOT NULL,
    account_id   uuid        NOT NULL REFERENCES ledger_accounts (id),
    posted       numeric     NOT NULL,
    pending_out  numeric     NOT NULL,
    pending_in   numeric     NOT NULL,
    PRIMARY KEY (account_id, taken_at)
);

-- The monthly tax report: completed payouts per recipient party and
-- currency whose month's total is above the configured threshold.
CREATE TABLE tax_report_lines (
    month       text        NOT NULL,          -- YYYY-MM
    owner       text        NOT NULL,
    party_id    text        NOT NULL,
    currency    text        NOT NULL,
    payouts     bigint      NOT NULL,
    total       numeric     NOT NULL,
    PRIMARY KEY (month, owner, party_id, currency)
);
