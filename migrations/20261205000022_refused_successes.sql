-- A provider's success refused because its intent had already ended
-- without the money moving (failed, cancelled, rejected, expired): the
-- provider and the ledger now disagree, and reconciliation lists every
-- such event of its day. Such events are rare, so the index is small and
-- costs the hot path nothing.
CREATE INDEX intent_events_refused_successes ON intent_events (at)
    WHERE event = 'provider_succeeded' AND outcome = 'rejected';
