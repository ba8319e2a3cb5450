-- A payout writes three intent events, three ledger entries and two
-- provider-call notes, and each of their foreign keys cost a check on
-- every row: a lookup of the parent and a key-share lock on it, which
-- dirties the parent's page and writes WAL of its own. Together about a
-- tenth of PostgreSQL's CPU a payout (`bench payouts`, four interleaved
-- pairs: 1,846-2,165 against 1,820-2,002 payouts/s, 4-7 fewer WAL records
-- a payout).
--
-- What the keys guaranteed holds by construction, and is checked:
-- - an event is written by the statement that inserts or moves its intent
--   (joined to the rows that statement wrote), or for an intent the
--   transaction has just read;
-- - entries are written by the statement that writes their transfer
--   (joined to the transfers it inserted) and finds their accounts (it
--   writes nothing when one is missing);
-- - a provider-call note is written by the action running on its intent;
-- - intents, transfers and accounts are never deleted.
-- `ledger::check_invariants` (run by the tests, the demo, the benches and
-- the chaos soak) reports any entry, event or note whose parent is
-- missing. The keys on colder tables stay.

ALTER TABLE intent_events DROP CONSTRAINT intent_events_intent_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_transfer_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_fkey;
ALTER TABLE provider_calls DROP CONSTRAINT provider_calls_intent_id_fkey;
