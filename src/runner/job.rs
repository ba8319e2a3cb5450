//! What a job is to the code that defines, enqueues and runs one.
//!
//! A job kind is a serializable argument type implementing [`JobArgs`] and a
//! [`Worker`] that runs it. Workers return `Ok(())` or a [`JobError`] that says
//! what should happen next: retry on the backoff schedule, give up (dead),
//! run again later without counting a failure (snooze), or cancel.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use super::backoff::RetryPolicy;
use super::store;
use crate::domain::JobId;

/// Default attempts before a job goes dead: with the default backoff that is
/// about a day of retrying, long enough to outlast a provider outage.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 25;
/// Default priority; lower runs first.
pub const DEFAULT_PRIORITY: i16 = 100;
/// The queue jobs go to unless their kind says otherwise.
pub const DEFAULT_QUEUE: &str = "default";
/// Longest unique key accepted, in bytes; keys are identifiers, not payloads.
pub const MAX_UNIQUE_KEY_BYTES: usize = 512;

/// Arguments of one job kind. The kind name is stored with every job, so it
/// must never change once jobs of it exist.
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;

    /// Defaults for jobs of this kind; each enqueue may override them.
    fn options() -> JobOptions {
        JobOptions::default()
    }
}

/// Per-kind defaults.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub queue: String,
    pub priority: i16,
    pub max_attempts: i32,
    /// How long one attempt may run before it is stopped and counted as a
    /// failure; `None` takes `runner.default_timeout_ms` from the config.
    pub timeout: Option<Duration>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            queue: DEFAULT_QUEUE.to_owned(),
            priority: DEFAULT_PRIORITY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: None,
        }
    }
}

/// A job about to be enqueued.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) kind: &'static str,
    pub(crate) args: serde_json::Value,
    pub(crate) queue: String,
    pub(crate) priority: i16,
    pub(crate) max_attempts: i32,
    pub(crate) run_at: Option<DateTime<Utc>>,
    pub(crate) delay_ms: i64,
    pub(crate) unique_key: Option<String>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) timeout_ms: Option<i64>,
}

impl NewJob {
    pub fn new<A: JobArgs>(args: &A) -> NewJob {
        let options = A::options();
        NewJob {
            kind: A::KIND,
            // Serializing a plain data struct to a JSON value cannot fail
            // unless the type's Serialize impl is broken: a programmer error.
            args: serde_json::to_value(args).expect("job arguments serialize to JSON"),
            queue: options.queue,
            priority: options.priority,
            max_attempts: options.max_attempts,
            run_at: None,
            delay_ms: 0,
            unique_key: None,
            retry: None,
            timeout_ms: None,
        }
    }

    /// Whether the job may run as soon as it is inserted at `now` (no
    /// delay, no start in the future): only such a job notifies its queue.
    pub(crate) fn runnable_by(&self, now: DateTime<Utc>) -> bool {
        match self.run_at {
            Some(at) => at <= now,
            None => self.delay_ms <= 0,
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        assert!(max_attempts > 0, "max_attempts must be positive");
        self.max_attempts = max_attempts;
        self
    }

    /// Run no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Run no earlier than `delay` from now, by the runner's clock (the
    /// database's in production). Ignored when `run_at` is set.
    pub fn run_after(mut self, delay: Duration) -> Self {
        self.delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// This job's own retry schedule instead of `[runner.retry]`.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// This job's own attempt timeout instead of its kind's.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// At most one live (available or running) job per key. See
    /// [`EnqueueOutcome::Existing`] for what happens on a conflict.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        assert!(
            key.len() <= MAX_UNIQUE_KEY_BYTES,
            "unique key longer than {MAX_UNIQUE_KEY_BYTES} bytes"
        );
        self.unique_key = Some(key);
        self
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// What an enqueue did.
///
/// Unique-key policy: when a live job (available or running) already holds
/// the key, nothing is inserted or changed and the existing job's id is
/// returned. The caller's work still commits; it simply shares the job that
/// is already going to do it. Once that job is completed, dead or cancelled
/// the key is free again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    Inserted(JobId),
    Existing(JobId),
}

impl EnqueueOutcome {
    pub fn id(self) -> JobId {
        match self {
            EnqueueOutcome::Inserted(id) | EnqueueOutcome::Existing(id) => id,
        }
    }
}

/// How a job attempt ended badly, and so what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Try again on the backoff schedule; dead once attempts run out.
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (bad arguments, a definitive refusal): dead now.
    #[error("fatal: {0}")]
    Fatal(String),
    /// Not a failure: run again after this long, without using up an attempt
    /// (a rate limit said "later", a status is not known yet).
    #[error("snoozed for {0:?}")]
    Snooze(Duration),
    /// Stop: the job is recorded as cancelled.
    #[error("cancelled: {0}")]
    Cancel(String),
}

impl JobError {
    pub fn retryable(error: impl std::fmt::Display) -> JobError {
        JobError::Retryable(error.to_string())
    }

    pub fn fatal(error: impl std::fmt::Display) -> JobError {
        JobError::Fatal(error.to_string())
    }
}

impl From<sqlx::Error> for JobError {
    /// Database trouble is transient from a job's point of view.
    fn from(error: sqlx::Error) -> Self {
        JobError::Retryable(format!("database: {error}"))
    }
}

/// Runs the jobs of one kind.
pub trait Worker: Send + Sync + 'static {
    type Args: JobArgs;

    fn work(&self, ctx: JobContext, args: Self::Args) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// What a worker knows about the attempt it is running.
#[derive(Clone)]
pub struct JobContext {
    pub id: JobId,
    pub kind: Arc<str>,
    /// This attempt's number, 1-based.
    pub attempt: i32,
    pub max_attempts: i32,
    /// When the job was due to run (its `run_at`); now minus this is how long
    /// it waited for a worker.
    pub scheduled_at: DateTime<Utc>,
    pub(crate) pool: PgPool,
    pub(crate) node: Arc<str>,
    pub(crate) lease_seq: i32,
    pub(crate) clock: crate::clock::Clock,
}

impl JobContext {
    /// Which run of this job this is: 1 on its first claim, one more on
    /// every claim after it (a retry, a snooze, a rescue), never given
    /// back, unlike [`JobContext::attempt`], which a snooze or a shutdown
    /// refunds.
    pub fn run(&self) -> i32 {
        self.lease_seq
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn clock(&self) -> &crate::clock::Clock {
        &self.clock
    }

    /// Marks this job completed inside the worker's own transaction, so the
    /// work's writes and the job's completion commit together or not at all:
    /// a crash after the commit can never run the work again.
    ///
    /// Fails if this node no longer holds the job's lease (it was rescued and
    /// may be running elsewhere); the worker must then roll back.
    pub async fn complete_in(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), JobError> {
        let lease = store::Lease {
            id: self.id.get(),
            seq: self.lease_seq,
        };
        let held = store::complete_one(tx, lease, &self.node, self.clock.sql_now()).await?;
        if !held {
            return Err(JobError::Retryable(format!(
                "job {} is no longer leased to this node; its work must not commit",
                self.id
            )));
        }
        Ok(())
    }

    /// [`JobContext::complete_in`] for several jobs of this node at once (a
    /// batch handled together, see [`super::Batcher`]), in one statement:
    /// says, job by job, whether it was completed. One that was not no
    /// longer belongs to this node, and the caller must leave its work out
    /// of the transaction (or roll back).
    pub async fn complete_all_in(
        tx: &mut Transaction<'_, Postgres>,
        jobs: &[&JobContext],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let Some(first) = jobs.first() else {
            return Ok(Vec::new());
        };
        let leases: Vec<store::Lease> = jobs
            .iter()
            .map(|job| store::Lease {
                id: job.id.get(),
                seq: job.lease_seq,
            })
            .collect();
        // Jobs handled together ran on this node, under its clock.
        let held = store::complete_held(tx, &leases, &first.node, first.clock.sql_now()).await?;
        // By lease, not by job: a stale copy of a job (an attempt that
        // timed out, still waiting in a batch beside the job's next
        // attempt) was not completed by this statement.
        Ok(jobs
            .iter()
            .map(|job| held.contains(&(job.id.get(), job.lease_seq)))
            .collect())
    }
}
