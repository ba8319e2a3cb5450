-- Payout gating on the provider's float.

-- Why a pending intent is being held (e.g. the M-Pesa float is too low);
-- cleared when it is released. Shown to API clients.
ALTER TABLE intents ADD COLUMN hold_reason text;

-- The last balance each provider account reported. Payouts are released
-- only against a recent report, less what was released since.
CREATE TABLE provider_floats (
    provider    text           NOT NULL,
    account     text           NOT NULL,
    currency    text           NOT NULL,
    available   numeric(20, 2) NOT NULL,
    reported_at timestamptz    NOT NULL,
    PRIMARY KEY (provider, account)
);
