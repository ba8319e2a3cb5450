-- How a late success was settled. `recovered`: the money came back (or was
-- put right outside Tuma), and the ledger is left as it was. `booked`: the
-- money stays where the provider moved it, and Tuma posted it with the
-- transfer named here, as completing the intent would have.
ALTER TABLE late_successes
    ADD COLUMN outcome     text CHECK (outcome IN ('recovered', 'booked')),
    ADD COLUMN transfer_id uuid REFERENCES ledger_transfers (id);

-- Settled before outcomes were kept: nothing was posted for them.
UPDATE late_successes SET outcome = 'recovered' WHERE settled_at IS NOT NULL;

ALTER TABLE late_successes
    ADD CHECK ((settled_at IS NULL) = (outcome IS NULL)),
    ADD CHECK ((outcome = 'booked') = (transfer_id IS NOT NULL));
