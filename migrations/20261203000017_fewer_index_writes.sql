-- Fewer index entries written per payout. Every row version a payout writes
-- costs an entry in each index whose predicate it matches; these two indexes
-- were written on every job claim and every open intent version, and read by
-- no query that needs them.

-- No query finds jobs by their lease holder alone: every lease check names the
-- job's id (the primary key), and the rescuer goes by `tuma_jobs_lease_idx`.
DROP INDEX IF EXISTS tuma_jobs_owner_idx;

-- The reconciliation's "stuck" list (once a day) reads the open intents
-- through `intents_state_idx`, whose predicate is the same; open intents are
-- the ones in flight, a small set.
DROP INDEX IF EXISTS intents_open_updated_idx;

-- A ledger transfer is settled (its state and settled_at set, neither
-- indexed) a second or so after its hold was written. Room left on its page
-- lets that update stay on the page without new index entries (a HOT
-- update); full pages made about two in five of them new versions in all
-- three indexes (one in four with this room). Applies to pages written from
-- now on.
ALTER TABLE ledger_transfers SET (fillfactor = 80);

-- An idempotency record is claimed empty and given its stored response in
-- the same transaction (no index covers the response). Its response is most
-- of its size, so the room the update needs is about the row's own: at half
-- full, more than half of these updates stayed on their page, against one in
-- seven before.
ALTER TABLE idempotency_keys SET (fillfactor = 50);
