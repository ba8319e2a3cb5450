//! Enqueueing jobs and the operations admins run on them.

use sqlx::{PgPool, Postgres, Transaction};

use super::job::{EnqueueOutcome, NewJob};
use super::store::{self, CancelOutcome, JobFilter, JobRow, RetryOutcome};
use crate::clock::Clock;
use crate::domain::JobId;

/// Most jobs one listing returns.
pub const MAX_LIST_LIMIT: i64 = 1_000;

/// The way into the runner for code that is not a worker: product code
/// enqueues through it, admin tools inspect and steer jobs with it.
#[derive(Clone, Debug)]
pub struct JobClient {
    pool: PgPool,
    clock: Clock,
}

impl JobClient {
    pub fn new(pool: PgPool, clock: Clock) -> JobClient {
        JobClient { pool, clock }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Enqueues `job` in the caller's transaction: the job exists if and only
    /// if that transaction commits, and workers hear of it on commit.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        job: &NewJob,
    ) -> Result<EnqueueOutcome, sqlx::Error> {
        store::insert_job(tx, job, self.clock.sql_now()).await
    }

    /// Enqueues many jobs with one statement in the caller's transaction.
    /// Jobs whose unique key is already held by a live job are skipped;
    /// returns how many were inserted.
    pub async fn enqueue_many(&self, tx: &mut Transaction<'_, Postgres>, jobs: &[NewJob]) -> Result<u64, sqlx::Error> {
        if jobs.is_empty() {
            return Ok(0);
        }
        store::insert_many(tx, jobs, self.clock.sql_now()).await
    }

    pub async fn get(&self, id: JobId) -> Result<Option<JobRow>, sqlx::Error> {
        store::get_job(&self.pool, id).await
    }

    /// Jobs in `state` (`available`, `running`, `completed`, `dead`,
    /// `cancelled`), newest first.
    pub async fn list(&self, state: &str, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
        store::list_jobs(&self.pool, state, limit.clamp(1, MAX_LIST_LIMIT)).await
    }

    /// Re-runs a dead job with a fresh set of attempts (its error history is
    /// kept).
    pub async fn retry_dead(&self, id: JobId) -> Result<RetryOutcome, sqlx::Error> {
        store::retry_dead(&self.pool, id, self.clock.sql_now()).await
    }

    /// Cancels a waiting job at once, or asks the node running it to stop it.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, sqlx::Error> {
        store::cancel(&self.pool, id, self.clock.sql_now()).await
    }

    /// Stops every node from claiming jobs of `queue`; running jobs finish.
    pub async fn pause_queue(&self, queue: &str) -> Result<(), sqlx::Error> {
        store::set_paused(&self.pool, queue, true, self.clock.sql_now()).await
    }

    /// Stops every node from claiming jobs of `queue` until `until`; claims
    /// resume on their own then. A manual pause is left alone.
    pub async fn pause_queue_until(
        &self,
        queue: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), sqlx::Error> {
        store::pause_until(&self.pool, queue, until, self.clock.sql_now()).await
    }

    pub async fn resume_queue(&self, queue: &str) -> Result<(), sqlx::Error> {
        store::set_paused(&self.pool, queue, false, self.clock.sql_now()).await
    }

    /// Jobs matching `filter`, newest first (the admin console's listing).
    pub async fn list_filtered(&self, filter: &JobFilter, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
        store::list_filtered(&self.pool, filter, limit.clamp(1, MAX_LIST_LIMIT)).await
    }

    /// How many jobs match `filter`.
    pub async fn count_filtered(&self, filter: &JobFilter) -> Result<i64, sqlx::Error> {
        store::count_filtered(&self.pool, filter).await
    }

    /// Ids of the jobs matching `filter`, oldest first, at most `limit`.
    pub async fn ids_filtered(&self, filter: &JobFilter, limit: i64) -> Result<Vec<JobId>, sqlx::Error> {
        store::ids_filtered(&self.pool, filter, limit).await
    }

    /// Deletes a dead job that will not be re-run.
    pub async fn discard_dead(&self, id: JobId) -> Result<bool, sqlx::Error> {
        store::discard_dead(&self.pool, id).await
    }
}
