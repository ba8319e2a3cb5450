-- The runner's per-job settings and lease identity.

-- Per-job overrides of the runner's defaults, so that each workflow action
-- keeps the retry policy and timeout its workflow file declares.
-- lease_seq counts claims and never goes back (attempts can be refunded), so
-- (id, lease_seq) names one lease: a node's late write for an old lease can
-- never land on a newer one, even when the same node claimed the job again.
ALTER TABLE tuma_jobs
    ADD COLUMN retry_base_ms bigint,
    ADD COLUMN retry_max_ms  bigint,
    ADD COLUMN timeout_ms    bigint,
    ADD COLUMN lease_seq     integer NOT NULL DEFAULT 0;
