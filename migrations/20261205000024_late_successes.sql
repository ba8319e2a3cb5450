-- A provider's success refused because its intent had already ended without
-- the money moving (a payout failed, cancelled, rejected or expired; a
-- collection failed, cancelled or expired; a reversal failed): the provider
-- and the ledger disagree until a person settles it (recovers the money, or
-- corrects the books) and says so here with the evidence. One row per intent,
-- written with the refused event; reconciliation lists every row not yet
-- settled, whatever day it came.
CREATE TABLE late_successes (
    intent_id   uuid        PRIMARY KEY REFERENCES intents (id),
    -- The first refused success (`intent_events.id`).
    event_id    bigint      NOT NULL,
    reported_at timestamptz NOT NULL,
    settled_at  timestamptz,
    settled_by  text,
    evidence    text,
    CHECK ((settled_at IS NULL) = (settled_by IS NULL)
       AND (settled_at IS NULL) = (evidence IS NULL))
);

CREATE INDEX late_successes_open ON late_successes (reported_at) WHERE settled_at IS NULL;

-- Those refused before this table existed, for the states that end unpaid in
-- the workflows as shipped.
INSERT INTO late_successes (intent_id, event_id, reported_at)
SELECT DISTINCT ON (e.intent_id) e.intent_id, e.id, e.at
FROM intent_events e
JOIN intents i ON i.id = e.intent_id
WHERE e.event = 'provider_succeeded' AND e.outcome = 'rejected'
  AND (i.kind, i.state) IN (('payout', 'failed'), ('payout', 'cancelled'), ('payout', 'rejected'),
                            ('payout', 'expired'), ('collection', 'failed'), ('collection', 'cancelled'),
                            ('collection', 'expired'), ('reversal', 'failed'))
ORDER BY e.intent_id, e.id;

-- The day-scoped reads it served are gone.
DROP INDEX intent_events_refused_successes;
