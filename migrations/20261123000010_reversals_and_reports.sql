-- Reversals, reconciliation and the scheduled reports.

-- A payment is reversed at most once: one reversal per original receipt
-- unless an earlier one failed (nothing moved, it may be asked again).
CREATE UNIQUE INDEX intents_one_reversal_idx ON intents (reference)
    WHERE kind = 'reversal' AND state <> 'failed';

-- Receipts are looked up by reversals and by reconciliation.
CREATE INDEX intents_receipt_idx ON intents (receipt) WHERE receipt IS NOT NULL;
