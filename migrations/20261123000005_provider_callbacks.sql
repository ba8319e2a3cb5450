-- What provider integrations need on an intent, and the callback inbox.

-- callback_token: an unguessable per-intent secret carried in the callback
-- URLs given to the provider, so a callback names its intent and a forged
-- one names nothing. receipt: the provider's transaction id once it paid.
ALTER TABLE intents
    ADD COLUMN callback_token text,
    ADD COLUMN receipt        text;

CREATE UNIQUE INDEX intents_callback_token_idx ON intents (callback_token) WHERE callback_token IS NOT NULL;
-- Status queries and callbacks find intents by the provider-side request id.
CREATE INDEX intents_provider_ref_idx ON intents (provider, provider_ref) WHERE provider_ref IS NOT NULL;

-- Every callback as received, stored before it is acknowledged and
-- processed by a job: nothing a provider sends is dropped, malformed or
-- forged ones included (with why they were not processed).
CREATE TABLE callback_inbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider      text        NOT NULL,
    kind          text        NOT NULL,          -- stk, b2c-result, b2c-timeout, status-result, status-timeout
    token         text        NOT NULL,
    body          bytea       NOT NULL,          -- exactly the bytes received
    parse_error   text,
    remote_addr   text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    intent_id     uuid,
    -- The provider's ids for this result, e.g. stk:<CheckoutRequestID>:<ResultCode>:
    -- a second callback with the same key is a duplicate and changes nothing.
    dedupe_key    text,
    -- applied, duplicate, rejected, ignored, unknown_token, reference_mismatch, unmatched, malformed, refused_source
    outcome       text,
    detail        text,
    processed_at  timestamptz
);

CREATE INDEX callback_inbox_dedupe_idx ON callback_inbox (provider, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX callback_inbox_intent_idx ON callback_inbox (intent_id) WHERE intent_id IS NOT NULL;
