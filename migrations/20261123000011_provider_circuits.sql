-- A provider failing fast (a burst of 5xx or timeouts) pauses its queue for a
-- while instead of burning every job's retries against it: paused_until is
-- when such a timed pause ends on its own. A manual pause (paused_at set,
-- paused_until NULL) lasts until an admin resumes the queue.
ALTER TABLE tuma_job_queues ADD COLUMN paused_until timestamptz;
