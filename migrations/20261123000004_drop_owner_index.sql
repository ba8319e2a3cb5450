-- The runner no longer looks jobs up by owner alone: the heartbeat and every
-- outcome write name their jobs by id (primary key). The index only cost an
-- entry per claim and was a trap for generic plans once full of dead entries.
DROP INDEX IF EXISTS tuma_jobs_owner_idx;
