//! Enqueueing jobs and the operations admins run on them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{PgPool, Postgres, Transaction};

use super::job::{EnqueueOutcome, NewJob};
use super::store::{self, CancelOutcome, JobFilter, JobRow, RetryOutcome};
use crate::clock::Clock;
use crate::domain::JobId;

/// Most jobs one listing returns.
pub const MAX_LIST_LIMIT: i64 = 1_000;

/// When this process last heard a NOTIFY for each queue, as its runner's
/// LISTEN connection records them.
///
/// A NOTIFY is a serialization point in Postgres: a committing transaction
/// that sent one holds a cluster-wide lock through its WAL flush, so
/// notifying transactions commit one at a time. Under load nearly every
/// transaction enqueues a job, and a notification per enqueue would cap the
/// whole engine at one commit per flush. So an enqueue leaves its NOTIFY out
/// while one for its queue was heard less than `debounce` ago: that
/// notification was committed and delivered, so a node claimed its job and
/// keeps polling the queue for its busy window (`runner.busy_window_ms`,
/// at least four debounces), which picks this job up too. A job is never
/// lost by this; at worst, if its transaction stays open longer than that
/// window, it waits for the poll interval.
#[derive(Clone, Debug, Default)]
pub struct Heard {
    debounce: Duration,
    at: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Heard {
    /// Remembers notifications for `debounce`; zero never skips a NOTIFY.
    pub fn new(debounce: Duration) -> Heard {
        Heard {
            debounce,
            at: Arc::default(),
        }
    }

    /// A notification for `queue` arrived now.
    pub(crate) fn record(&self, queue: &str) {
        let mut at = self.at.lock().expect("heard mutex poisoned");
        match at.get_mut(queue) {
            Some(when) => *when = Instant::now(),
            None => {
                at.insert(queue.to_owned(), Instant::now());
            }
        }
    }

    /// Whether an enqueue to `queue` may leave its NOTIFY out.
    pub(crate) fn fresh(&self, queue: &str) -> bool {
        !self.debounce.is_zero()
            && self
                .at
                .lock()
                .expect("heard mutex poisoned")
                .get(queue)
                .is_some_and(|when| when.elapsed() < self.debounce)
    }
}

/// The way into the runner for code that is not a worker: product code
/// enqueues through it, admin tools inspect and steer jobs with it.
#[derive(Clone, Debug)]
pub struct JobClient {
    pool: PgPool,
    clock: Clock,
    heard: Heard,
}

impl JobClient {
    /// A client that notifies on every enqueue.
    pub fn new(pool: PgPool, clock: Clock) -> JobClient {
        JobClient {
            pool,
            clock,
            heard: Heard::default(),
        }
    }

    /// Leaves out the NOTIFY of an enqueue while `heard` says a node is busy
    /// on its queue (see [`Heard`]); share the runner's.
    pub fn with_heard(mut self, heard: Heard) -> JobClient {
        self.heard = heard;
        self
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
        let notify = !self.heard.fresh(&job.queue);
        store::insert_job(tx, job, notify, self.clock.sql_now()).await
    }

    /// Enqueues many jobs with one statement in the caller's transaction.
    /// Jobs whose unique key is already held by a live job are skipped;
    /// returns how many were inserted.
    pub async fn enqueue_many(&self, tx: &mut Transaction<'_, Postgres>, jobs: &[NewJob]) -> Result<u64, sqlx::Error> {
        if jobs.is_empty() {
            return Ok(0);
        }
        store::insert_many(tx, jobs, self.notify_for(jobs), self.clock.sql_now()).await
    }

    /// Whether enqueueing `jobs` should notify (see [`Heard`]), for a
    /// statement that inserts them itself (`store::jobs_cte`). Only jobs
    /// runnable at once count: the statement notifies no queue for a job
    /// that waits (a timer), so that queue is never heard, and counting it
    /// would make every enqueue beside a timer notify.
    pub(crate) fn notify_for<'j>(&self, jobs: impl IntoIterator<Item = &'j NewJob>) -> bool {
        let now = self.clock.local_now();
        jobs.into_iter()
            .any(|job| job.runnable_by(now) && !self.heard.fresh(&job.queue))
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

    /// Stops every node from claiming jobs of `queue` for `pause`, reckoned
    /// on the database's clock (which the claims read); claims resume on
    /// their own then. A manual pause is left alone, and a longer timed one
    /// is kept.
    pub async fn pause_queue_for(&self, queue: &str, pause: std::time::Duration) -> Result<(), sqlx::Error> {
        store::pause_for(&self.pool, queue, pause, self.clock.sql_now()).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_is_fresh_for_the_debounce_and_only_for_its_queue() {
        let heard = Heard::new(Duration::from_secs(60));
        assert!(!heard.fresh("mpesa"), "nothing heard yet");
        heard.record("mpesa");
        assert!(heard.fresh("mpesa"));
        assert!(!heard.fresh("default"));

        let short = Heard::new(Duration::from_millis(1));
        short.record("mpesa");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.fresh("mpesa"), "past the debounce the next enqueue notifies");
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Probe {}

    impl crate::runner::JobArgs for Probe {
        const KIND: &'static str = "probe";
    }

    #[tokio::test]
    async fn a_job_that_waits_does_not_make_its_neighbours_notify() {
        let clock = crate::clock::ManualClock::starting_now();
        let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("a lazy pool");
        let heard = Heard::new(Duration::from_secs(60));
        let client = JobClient::new(pool, Clock::Manual(clock.clone())).with_heard(heard.clone());
        heard.record("mpesa");
        let submit = NewJob::new(&Probe {}).queue("mpesa");
        // Nothing is ever heard on `default` from such jobs: the statement
        // notifies only queues with a job runnable at once.
        let timer = NewJob::new(&Probe {}).run_after(Duration::from_secs(30));
        let later = NewJob::new(&Probe {}).run_at(clock.now() + chrono::TimeDelta::seconds(30));
        assert!(
            !client.notify_for([&submit, &timer, &later]),
            "only the heard queue is runnable"
        );

        let due = NewJob::new(&Probe {}).run_at(clock.now());
        assert!(
            client.notify_for([&submit, &due]),
            "a job due now on a queue not heard notifies"
        );
        assert!(client.notify_for([&timer, &NewJob::new(&Probe {})]));
    }

    #[test]
    fn a_zero_debounce_never_skips_a_notify() {
        let heard = Heard::new(Duration::ZERO);
        heard.record("mpesa");
        assert!(!heard.fresh("mpesa"));
        assert!(!Heard::default().fresh("mpesa"));
    }
}
