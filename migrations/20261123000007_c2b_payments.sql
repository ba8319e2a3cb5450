-- Money customers send to our PayBill/till on their own (C2B), as M-Pesa
-- confirms it. One row per M-Pesa receipt (TransID), so a duplicated
-- confirmation records nothing twice. Loans and campaigns allocate these
-- by their account reference; what matches nothing is kept for the
-- reconciliation report, never dropped.
CREATE TABLE c2b_payments (
    trans_id       text           PRIMARY KEY,
    shortcode      text           NOT NULL,
    amount         numeric(20, 2) NOT NULL,
    bill_ref       text           NOT NULL,
    -- Daraja v2 sends the payer's number masked; it is kept as sent.
    msisdn_masked  text           NOT NULL,
    trans_time     text           NOT NULL,
    inbox_id       bigint         NOT NULL REFERENCES callback_inbox (id),
    received_at    timestamptz    NOT NULL DEFAULT now()
);

CREATE INDEX c2b_payments_bill_ref_idx ON c2b_payments (upper(replace(bill_ref, ' ', '')));
