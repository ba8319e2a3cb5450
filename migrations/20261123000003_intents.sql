-- Intents, their event history, and what the HTTP API needs around them:
-- API keys, idempotency records, and outbound webhook endpoints with their
-- delivery log.

-- One row per money-movement intent. `state` is moved only by the transition
-- engine, with a compare-and-set on its current value; `state_version` counts
-- transitions, so a timer armed in an earlier visit to a state can tell that
-- it is stale.
CREATE TABLE intents (
    id             uuid        PRIMARY KEY,
    kind           text        NOT NULL,          -- the workflow: payout, collection, ...
    state          text        NOT NULL,
    state_version  integer     NOT NULL DEFAULT 0,
    owner          text        NOT NULL,          -- the API key owner who created it
    created_by     text        NOT NULL,          -- the API key name (an actor)
    party_id       text        NOT NULL,
    amount         numeric(20, 4) NOT NULL CHECK (amount > 0),
    currency       text        NOT NULL,
    msisdn         text        NOT NULL,          -- E.164 digits; only ever shown masked in logs
    provider       text        NOT NULL,
    reference      text        NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    provider_ref   text,                          -- our request id toward the provider, once assigned
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    final_at       timestamptz
);

-- Listing: an owner's intents of one kind, newest first (ids are UUIDv7, so
-- id order is creation order), optionally by state or party.
CREATE INDEX intents_owner_kind_idx ON intents (owner, kind, id DESC);
CREATE INDEX intents_owner_party_idx ON intents (owner, party_id, id DESC);
CREATE INDEX intents_state_idx ON intents (kind, state) WHERE final_at IS NULL;

-- Every event applied to an intent, in order, including rejected ones (an
-- illegal event is recorded, never silently dropped) and the creation itself
-- (from_state NULL).
CREATE TABLE intent_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    intent_id     uuid        NOT NULL REFERENCES intents (id),
    event         text        NOT NULL,
    from_state    text,
    to_state      text,                           -- NULL when rejected
    outcome       text        NOT NULL CHECK (outcome IN ('applied', 'rejected')),
    reason        text,                           -- why it was rejected
    cause         text        NOT NULL CHECK (cause IN ('api', 'callback', 'poll', 'timer', 'admin', 'policy')),
    actor         text        NOT NULL,
    provider_ref  text,
    payload_digest text,                          -- SHA-256 of what caused it (a callback body), never the body
    at            timestamptz NOT NULL
);

CREATE INDEX intent_events_intent_idx ON intent_events (intent_id, id);

-- API keys: only a SHA-256 of the key is stored (keys carry 256 random bits,
-- so a slow password hash adds nothing). `prefix` finds the row; the hash is
-- compared in constant time.
CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    owner       text        NOT NULL,
    prefix      text        NOT NULL UNIQUE,
    key_hash    bytea       NOT NULL,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Idempotency records: the first request with a key stores its body hash and,
-- in the same transaction as the intent it created, its response. A replay
-- returns that response; the same key with another body is a conflict.
CREATE TABLE idempotency_keys (
    owner           text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response_status smallint    NOT NULL,
    response_body   jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (owner, key)
);

-- The purge deletes expired records oldest first.
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

-- Where product services want to hear about state changes. The secret signs
-- every delivery (HMAC-SHA256), so it must be kept, not hashed.
CREATE TABLE webhook_endpoints (
    id          uuid        PRIMARY KEY,
    owner       text        NOT NULL,
    url         text        NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

CREATE INDEX webhook_endpoints_owner_idx ON webhook_endpoints (owner) WHERE disabled_at IS NULL;

-- One row per delivery attempt, whatever its result, for the intent timeline
-- and for operators chasing a receiver that is down.
CREATE TABLE webhook_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  uuid        NOT NULL REFERENCES webhook_endpoints (id),
    event_id     bigint      NOT NULL REFERENCES intent_events (id),
    attempt      integer     NOT NULL,
    status_code  smallint,
    error        text,
    latency_ms   integer     NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
