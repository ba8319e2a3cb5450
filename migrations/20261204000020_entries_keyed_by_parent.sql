-- Ledger entries and provider-call notes are only ever read through their
-- parent (a transfer's legs; an intent's calls), and each was indexed twice
-- for it: by its own id (the primary key) and by its parent. Every payout
-- writes about three entries and two call notes, so each paid for an index
-- entry no query used. The primary key now leads with the parent, and serves
-- both. The ids are still drawn from their sequences, so they stay unique and
-- in insertion order; the console lists an intent's calls by them.

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey;
ALTER TABLE ledger_entries ADD PRIMARY KEY (transfer_id, id);
DROP INDEX ledger_entries_transfer;

ALTER TABLE provider_calls DROP CONSTRAINT provider_calls_pkey;
ALTER TABLE provider_calls ADD PRIMARY KEY (intent_id, id);
DROP INDEX provider_calls_by_intent;
