-- The durable job runner's tables. Every intent is advanced by jobs, so these
-- rows are the engine's memory of what is left to do: a job exists if and only
-- if the transaction that created it committed (jobs are enqueued inside the
-- caller's transaction).

-- Job states, and which component moves a job out of each:
--   available  waiting for run_at; a producer claims it       -> running
--   running    leased to one node; that node's completer      -> completed | available (retry) | dead | cancelled
--              or the rescuer when the lease ran out           -> available | dead
--   completed  done; retention deletes it after its age
--   dead       failed for good (fatal error or attempts exhausted); an admin re-runs it -> available
--   cancelled  stopped on request; retention deletes it
CREATE TYPE tuma_job_state AS ENUM ('available', 'running', 'completed', 'dead', 'cancelled');

CREATE TABLE tuma_jobs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text           NOT NULL,
    queue               text           NOT NULL,
    args                jsonb          NOT NULL,
    -- Lower runs first; ties go to the earliest run_at, then the oldest id.
    priority            smallint       NOT NULL DEFAULT 100,
    state               tuma_job_state NOT NULL DEFAULT 'available',
    -- Attempts started so far; incremented when a producer claims the job or
    -- the rescuer finds its lease expired (a crashed attempt still counts).
    attempt             integer        NOT NULL DEFAULT 0,
    max_attempts        integer        NOT NULL,
    run_at              timestamptz    NOT NULL DEFAULT now(),
    created_at          timestamptz    NOT NULL DEFAULT now(),
    attempted_at        timestamptz,
    finished_at         timestamptz,
    -- The lease: which node runs the job and until when; renewed by heartbeat.
    locked_by           text,
    locked_until        timestamptz,
    -- Set by a cancel request for a running job; the owning node sees it on
    -- its next heartbeat and drops the handler.
    cancel_requested_at timestamptz,
    unique_key          text,
    -- One object per failed attempt: {attempt, at, error, kind}.
    errors              jsonb          NOT NULL DEFAULT '[]'::jsonb,
    CONSTRAINT tuma_jobs_attempts_positive CHECK (max_attempts > 0),
    CONSTRAINT tuma_jobs_lease_consistent CHECK ((state = 'running') = (locked_by IS NOT NULL AND locked_until IS NOT NULL))
);

-- The claim query's index: only claimable rows, in claim order.
CREATE INDEX tuma_jobs_claim_idx ON tuma_jobs (queue, priority, run_at, id) WHERE state = 'available';

-- The rescuer's index: running jobs by lease expiry, and the heartbeat's
-- "all leases of this node" lookup.
CREATE INDEX tuma_jobs_lease_idx ON tuma_jobs (locked_until) WHERE state = 'running';
CREATE INDEX tuma_jobs_owner_idx ON tuma_jobs (locked_by) WHERE state = 'running';

-- Unique jobs: one live (available or running) job per key. Finished, dead and
-- cancelled jobs release their key, so the same work can be enqueued again.
CREATE UNIQUE INDEX tuma_jobs_unique_live_idx ON tuma_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'running');

-- Retention deletes finished jobs oldest first, in bounded batches.
CREATE INDEX tuma_jobs_finished_idx ON tuma_jobs (finished_at) WHERE state IN ('completed', 'cancelled', 'dead');

-- Queue controls shared by every node: a paused queue is skipped by the claim
-- query itself, so pausing takes effect on all nodes at their next claim.
CREATE TABLE tuma_job_queues (
    name       text PRIMARY KEY,
    paused_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Cron ticks already fired: (entry, tick) is the primary key, so when several
-- nodes fire the same tick only the first insert enqueues a job. Kept apart
-- from the live-unique index above because a tick must stay fired after its
-- job finishes.
CREATE TABLE tuma_cron_ticks (
    entry    text        NOT NULL,
    tick_at  timestamptz NOT NULL,
    job_id   bigint      NOT NULL,
    fired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entry, tick_at)
);
