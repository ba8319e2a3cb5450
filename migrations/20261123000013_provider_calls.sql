-- Every call Tuma made to a provider on an intent's behalf (a submission, a
-- prompt, a status query): what an operator reads on the console's intent
-- page to see what the provider said, and how fast. The provider's body is
-- never stored here; only its code.
CREATE TABLE provider_calls (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    intent_id   uuid        NOT NULL REFERENCES intents (id),
    provider    text        NOT NULL,
    call        text        NOT NULL,   -- send, status
    request_id  text,                   -- our (or the provider's) id of the request
    outcome     text        NOT NULL,   -- succeeded, failed, pending, unknown, rejected, busy, ambiguous, duplicate, config
    code        text,                   -- the provider's result code, when it gave one
    latency_ms  integer     NOT NULL,
    called_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX provider_calls_by_intent ON provider_calls (intent_id, id);
