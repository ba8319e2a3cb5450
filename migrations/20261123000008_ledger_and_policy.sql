-- Money and policy: parties, the double-entry ledger, FX quotes, policy
-- flags and approvals.

-- A party is whoever's money and limits an intent touches: a creator, an
-- NGO, a worker, a borrower, a lender. Ids are the product's own, scoped by
-- the owner (the API key's tenant).
CREATE TABLE parties (
    owner                   text        NOT NULL,
    id                      text        NOT NULL,
    role                    text        NOT NULL DEFAULT 'creator',
    kyc_tier                smallint    NOT NULL DEFAULT 0 CHECK (kyc_tier BETWEEN 0 AND 2),
    country                 text,
    payout_msisdn           text,
    payout_provider         text,
    auto_payout_enabled     boolean     NOT NULL DEFAULT false,
    auto_payout_threshold   numeric,
    auto_payout_currency    text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, id)
);

-- Accounts. `posted` is the balance on the account's normal side (credit
-- for what Tuma owes: party balances, campaign buckets, fee revenue; debit
-- for what it holds: provider floats, loan receivables). `pending_out` is
-- held against it by pending transfers, `pending_in` is on its way in.
-- A non-negative account can never have more held or spent than it has:
-- the UPDATE that holds checks it, and this constraint is the backstop.
CREATE TABLE ledger_accounts (
    id              uuid        PRIMARY KEY,
    owner           text        NOT NULL,
    kind            text        NOT NULL,
    ref             text        NOT NULL,
    currency        text        NOT NULL,
    normal_side     text        NOT NULL CHECK (normal_side IN ('debit', 'credit')),
    non_negative    boolean     NOT NULL,
    posted          numeric     NOT NULL DEFAULT 0,
    pending_out     numeric     NOT NULL DEFAULT 0 CHECK (pending_out >= 0),
    pending_in      numeric     NOT NULL DEFAULT 0 CHECK (pending_in >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner, kind, ref, currency),
    CONSTRAINT ledger_accounts_non_negative CHECK (NOT non_negative OR posted - pending_out >= 0)
);

-- A transfer moves money between accounts in one or more legs that sum to
-- zero per currency. Pending transfers hold; posting or voiding settles
-- them. `key` is the idempotency key (an intent's transfer is
-- `intent:<id>`).
CREATE TABLE ledger_transfers (
    id              uuid        PRIMARY KEY,
    key             text        NOT NULL UNIQUE,
    owner           text        NOT NULL,
    kind            text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'posted', 'voided')),
    intent_id       uuid,
    description     text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    settled_at      timestamptz
);

CREATE INDEX ledger_transfers_intent ON ledger_transfers (intent_id) WHERE intent_id IS NOT NULL;

-- One leg of a transfer. `amount` is signed, credit positive: a leg that
-- debits an account is negative.
CREATE TABLE ledger_entries (
    id              bigserial   PRIMARY KEY,
    transfer_id     uuid        NOT NULL REFERENCES ledger_transfers (id),
    account_id      uuid        NOT NULL REFERENCES ledger_accounts (id),
    amount          numeric     NOT NULL CHECK (amount <> 0),
    currency        text        NOT NULL,
    memo            text        NOT NULL
);

CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_transfer ON ledger_entries (transfer_id);

-- FX quotes: a rate and fee breakdown locked for a while; one payout may
-- use each.
CREATE TABLE quotes (
    id              uuid        PRIMARY KEY,
    owner           text        NOT NULL,
    party_id        text        NOT NULL,
    provider        text        NOT NULL,
    source_amount   numeric     NOT NULL,
    source_currency text        NOT NULL,
    target_currency text        NOT NULL,
    rate            numeric     NOT NULL,
    rate_source     text        NOT NULL,
    rate_as_of      timestamptz NOT NULL,
    breakdown       jsonb       NOT NULL,
    received        numeric     NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_by         uuid,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Payouts from many at once, validated and created atomically.
CREATE TABLE payout_batches (
    id              uuid        PRIMARY KEY,
    owner           text        NOT NULL,
    reference       text        NOT NULL,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE intents
    ADD COLUMN fees                 jsonb,
    ADD COLUMN quote_id             uuid REFERENCES quotes (id),
    ADD COLUMN usd_equivalent       numeric,
    ADD COLUMN approvals_required   smallint NOT NULL DEFAULT 0,
    ADD COLUMN campaign_id          text,
    ADD COLUMN batch_id             uuid REFERENCES payout_batches (id);

-- Limits sum a party's payouts over a window.
CREATE INDEX intents_party_window ON intents (owner, party_id, created_at) WHERE kind = 'payout';
CREATE INDEX intents_batch ON intents (batch_id) WHERE batch_id IS NOT NULL;

-- What policy noticed about an intent, rule by rule.
CREATE TABLE intent_flags (
    id              bigserial   PRIMARY KEY,
    intent_id       uuid        NOT NULL REFERENCES intents (id),
    rule            text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('flag', 'review')),
    detail          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX intent_flags_intent ON intent_flags (intent_id);

-- Maker-checker decisions; one per approver per intent.
CREATE TABLE approvals (
    intent_id       uuid        NOT NULL REFERENCES intents (id),
    approver        text        NOT NULL,
    decision        text        NOT NULL CHECK (decision IN ('approve', 'reject')),
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (intent_id, approver)
);

CREATE INDEX intents_awaiting_approval ON intents (owner, created_at) WHERE state = 'awaiting_approval';
