//! The durable Postgres job runner: everything Tuma does after accepting an
//! intent is a job in `tuma_jobs`.
//!
//! Guarantees, and the mechanism behind each:
//! - a job exists iff the transaction that enqueued it committed
//!   ([`JobClient::enqueue`] takes the caller's transaction);
//! - a job runs on one node at a time: claims take row locks with
//!   `FOR UPDATE SKIP LOCKED` and set a lease (`locked_by`, `locked_until`);
//!   the lease is renewed by heartbeat while the worker runs, so a long job is
//!   never run twice for being long;
//! - a job whose node died is run again: the rescuer re-queues jobs whose
//!   lease ran out, counting the lost attempt;
//! - every state write is a compare-and-set on state and lease owner, so a
//!   late node, rescuer or completion never overwrites a newer outcome;
//! - at least once, or exactly once for work that commits with
//!   [`JobContext::complete_in`]: the job's completion and its writes share
//!   one transaction.
//!
//! Each node runs, per configured queue, a *producer* that claims batches of
//! jobs into free concurrency slots (and through the queue's token bucket);
//! workers run as tasks; their outcomes go to one *completer* that writes them
//! back in batches. Background services (heartbeat, rescuer, retention, queue
//! statistics, the LISTEN connection and cron) each have a `*_once` step that
//! tests call directly; their loops only sleep and repeat.

mod backoff;
mod batch;
mod client;
mod config;
mod cron;
mod execute;
mod job;
mod registry;
mod services;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use backoff::RetryPolicy;
pub use batch::{BatchPanicked, Batcher};
pub use client::{Heard, JobClient};
pub use config::{QueueConfig, RetentionConfig, RunnerConfig};
pub use cron::{catch_up as catch_up_cron, fire as fire_cron_tick, CronEntry};
pub use job::{
    EnqueueOutcome, JobArgs, JobContext, JobError, JobOptions, NewJob, Worker, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
};
pub use registry::Registry;
pub use store::{CancelOutcome, JobFilter, JobRow, RetryOutcome};

use crate::clock::Clock;
use execute::{execute, Done, InFlight, Interrupt, Outcome};
use store::Lease;

/// Outcomes waiting for the completer, per node. When it is full, workers
/// wait before freeing their slot: back-pressure instead of unbounded memory.
const OUTCOME_CHANNEL_CAPACITY: usize = 20_000;

/// Longest pause between tries of an outcome write that keeps failing. The
/// completer never gives up on an outcome: the jobs stay in flight (their
/// leases renewed while the database answers heartbeats) until it is written.
const OUTCOME_WRITE_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A job runner for one node. Build it with the pool, config and workers,
/// then [`Runner::start`] it, or drive it step by step in tests.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Workers' pool, handed to jobs through their context.
    pub(crate) pool: PgPool,
    /// The runner's own connections (claims, outcome writes, heartbeat,
    /// rescuer), so that busy workers can never starve the heartbeat.
    pub(crate) control: PgPool,
    pub(crate) config: RunnerConfig,
    pub(crate) registry: Registry,
    pub(crate) node: Arc<str>,
    pub(crate) clock: Clock,
    pub(crate) in_flight: Mutex<HashMap<i64, InFlight>>,
    queues: BTreeMap<String, Arc<QueueRuntime>>,
    cron: Vec<CronEntry>,
    /// Notifications this process's LISTEN connection heard, by queue.
    pub(crate) heard: Heard,
    /// Other channels the LISTEN connection serves.
    pub(crate) subscriptions: Vec<Subscription>,
}

/// A channel besides the job queues' that the runner's LISTEN connection
/// listens on, and what to tell of it.
#[derive(Clone)]
pub struct Subscription {
    pub channel: &'static str,
    pub on: Arc<dyn Fn(ListenSignal<'_>) + Send + Sync>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// What a [`Subscription`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenSignal<'a> {
    /// The connection listens on the channel (again), and has heard a
    /// probe it sent itself come back. Whatever was sent while it did not
    /// listen is gone.
    Listening,
    /// A notification on the channel, with its payload.
    Notified(&'a str),
    /// The connection is lost, stopped hearing its own probes, or the
    /// runner stopped: nothing is heard until the next `Listening`.
    Deaf,
}

/// A queue's local state on this node.
struct QueueRuntime {
    name: String,
    slots: Arc<Semaphore>,
    wake: Notify,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Most jobs one claim may take: the token bucket's burst when limited.
    max_claim: usize,
}

impl Runner {
    /// A runner for the queues in `config`. The config is validated here too,
    /// so a runner built in code is held to the same rules as `tuma serve`.
    pub fn new(pool: PgPool, config: RunnerConfig, registry: Registry, clock: Clock) -> Result<Runner, String> {
        config.validate()?;
        for (kind, queue) in registry.default_queues() {
            if !config.queues.contains_key(queue) {
                return Err(format!(
                    "job kind {kind} runs on queue {queue:?}, which runner.queues does not configure on this node"
                ));
            }
        }
        let node: Arc<str> = if config.node_id.is_empty() {
            default_node_id().into()
        } else {
            config.node_id.as_str().into()
        };
        // One connection per producer, plus the completer, the heartbeat and
        // one for the rescuer, retention and statistics, which take turns
        // (each runs on its own timer, so one may wait for another).
        // Custom plans always: the batch statements take arrays of ids whose
        // size a generic plan cannot see, and a generic plan that scans a
        // partial index full of dead entries instead of the primary key turns
        // a 10 ms completion into hundreds of milliseconds.
        let control_options = (*pool.connect_options())
            .clone()
            .options([("plan_cache_mode", "force_custom_plan")]);
        let control = sqlx::postgres::PgPoolOptions::new()
            .max_connections(config.queues.len() as u32 + 3)
            .acquire_timeout(Duration::from_millis(config.heartbeat_interval_ms))
            .connect_lazy_with(control_options);
        let queues = config
            .queues
            .iter()
            .map(|(name, queue)| {
                (
                    name.clone(),
                    Arc::new(QueueRuntime::new(name, queue, config.claim_batch)),
                )
            })
            .collect();
        let heard = Heard::new(Duration::from_millis(config.notify_debounce_ms));
        Ok(Runner {
            inner: Arc::new(Inner {
                pool,
                control,
                heard,
                config,
                registry,
                node,
                clock,
                in_flight: Mutex::new(HashMap::new()),
                queues,
                cron: Vec::new(),
                subscriptions: Vec::new(),
            }),
        })
    }

    /// Adds cron entries, fired by every started node and deduplicated by tick.
    pub fn with_cron(self, entries: Vec<CronEntry>) -> Runner {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("with_cron before the runner is shared"));
        inner.cron = entries;
        Runner { inner: Arc::new(inner) }
    }

    /// Records the notifications this runner hears in `heard`, the one the
    /// process's other job clients share (see [`Heard`]).
    pub fn with_heard(self, heard: Heard) -> Runner {
        let mut inner =
            Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("with_heard before the runner is shared"));
        inner.heard = heard;
        Runner { inner: Arc::new(inner) }
    }

    /// Also listens on `subscription.channel` and tells it what is heard
    /// there, on the connection the job queues' notifications use.
    pub fn with_subscription(self, subscription: Subscription) -> Runner {
        let mut inner =
            Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("with_subscription before the runner is shared"));
        inner.subscriptions.push(subscription);
        Runner { inner: Arc::new(inner) }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node
    }

    /// A job client that shares what this runner hears.
    pub fn client(&self) -> JobClient {
        JobClient::new(self.inner.pool.clone(), self.inner.clock.clone()).with_heard(self.inner.heard.clone())
    }

    /// Claims what `queue` has runnable now (up to its concurrency), runs it,
    /// writes the outcomes, and returns how many jobs ran. For tests and
    /// one-shot tools; a started runner does this continuously.
    pub async fn work_once(&self, queue: &str) -> Result<usize, sqlx::Error> {
        let runtime = self.inner.queue(queue);
        let limit = runtime.slots.available_permits().min(runtime.max_claim).max(1);
        let sent_at = std::time::Instant::now();
        let claimed = self.inner.claim(queue, limit).await?;
        let count = claimed.len();
        let mut running = tokio::task::JoinSet::new();
        for job in claimed {
            let flight = self.inner.track(&job, sent_at);
            let inner = Arc::clone(&self.inner);
            running.spawn(async move { execute(&inner, job, flight).await });
        }
        let mut done = Vec::with_capacity(count);
        while let Some(result) = running.join_next().await {
            done.push(result.expect("execute never panics"));
        }
        self.inner.write_outcomes(&mut done).await;
        Ok(count)
    }

    /// One heartbeat: renews this node's leases and stops attempts that were
    /// cancelled or whose lease was lost.
    pub async fn heartbeat_once(&self) -> Result<(), sqlx::Error> {
        services::heartbeat_once(&self.inner).await
    }

    /// One rescue pass; returns how many expired jobs it re-queued or buried.
    pub async fn rescue_once(&self) -> Result<usize, sqlx::Error> {
        services::rescue_once(&self.inner).await
    }

    /// One retention pass; returns how many finished jobs it deleted.
    pub async fn retention_once(&self) -> Result<u64, sqlx::Error> {
        services::retention_once(&self.inner).await
    }

    /// Starts producers, the completer and the background services.
    pub async fn start(self) -> Result<RunningRunner, String> {
        let inner = self.inner;
        let stop_claiming = CancellationToken::new();
        let stop_services = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (done_tx, done_rx) = mpsc::channel(OUTCOME_CHANNEL_CAPACITY);
        let completer = tokio::spawn(complete(Arc::clone(&inner), done_rx));
        let producers: Vec<JoinHandle<()>> = inner
            .queues
            .values()
            .map(|queue| {
                tokio::spawn(produce(
                    Arc::clone(&inner),
                    Arc::clone(queue),
                    stop_claiming.clone(),
                    tracker.clone(),
                    done_tx.clone(),
                ))
            })
            .collect();
        drop(done_tx);
        let services = services::spawn_all(&inner, &stop_services);
        let scheduler = if inner.cron.is_empty() {
            None
        } else {
            let client = JobClient::new(inner.pool.clone(), inner.clock.clone()).with_heard(inner.heard.clone());
            let window = services::tick_retention(&inner.config.retention) / 2;
            Some(cron::start_scheduler(client, &inner.cron, window).await?)
        };
        tracing::info!(node = %inner.node, queues = inner.queues.len(), "job runner started");
        Ok(RunningRunner {
            inner,
            stop_claiming,
            stop_services,
            tracker,
            producers,
            completer,
            services,
            scheduler,
        })
    }
}

/// A started runner. Dropping it without [`RunningRunner::shutdown`] stops
/// claiming and heart-beating and leaves its jobs to the rescuer.
pub struct RunningRunner {
    inner: Arc<Inner>,
    stop_claiming: CancellationToken,
    stop_services: CancellationToken,
    tracker: TaskTracker,
    producers: Vec<JoinHandle<()>>,
    completer: JoinHandle<()>,
    services: Vec<JoinHandle<()>>,
    scheduler: Option<tokio_cron_scheduler::JobScheduler>,
}

/// What a shutdown had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Attempts still running when the grace period ended, released back to
    /// `available` without counting the attempt.
    pub released: usize,
}

impl RunningRunner {
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }

    /// A job client that shares what this runner hears.
    pub fn client(&self) -> JobClient {
        JobClient::new(self.inner.pool.clone(), self.inner.clock.clone()).with_heard(self.inner.heard.clone())
    }

    /// Wakes `queue`'s producer as a notification would.
    pub fn wake(&self, queue: &str) {
        self.inner.wake(queue);
    }

    /// Jobs currently held by this node (running or with an outcome not yet
    /// written).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.lock().expect("in-flight mutex poisoned").len()
    }

    /// Stops claiming, lets running attempts finish for up to
    /// `runner.shutdown_timeout_ms`, releases the rest, writes every outcome,
    /// then stops the background services. Loses no job: if even the
    /// outcomes cannot be written (the database is gone), the leases run out
    /// and the rescuer of another node re-runs those jobs.
    pub async fn shutdown(mut self) -> ShutdownReport {
        if let Some(mut scheduler) = self.scheduler.take() {
            if let Err(error) = scheduler.shutdown().await {
                tracing::warn!(%error, "cron scheduler did not stop cleanly");
            }
        }
        let grace = Duration::from_millis(self.inner.config.shutdown_timeout_ms);
        let deadline = tokio::time::Instant::now() + grace;
        self.stop_claiming.cancel();
        for mut producer in self.producers.drain(..) {
            // A producer stuck in a claim on an unreachable database.
            if tokio::time::timeout_at(deadline, &mut producer).await.is_err() {
                producer.abort();
            }
        }
        self.tracker.close();
        let mut released = 0;
        if tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_err() {
            released = self.tracker.len();
            for flight in self.inner.in_flight_snapshot() {
                flight.interrupt(Interrupt::Shutdown);
            }
            self.tracker.wait().await;
        }
        // Every sender is gone now, so the completer drains and returns once
        // the outcomes are written.
        if tokio::time::timeout(grace, &mut self.completer).await.is_err() {
            tracing::error!(
                "job outcomes could not be written in time; their leases will expire and the jobs run again"
            );
            self.completer.abort();
        }
        self.stop_services.cancel();
        for service in self.services.drain(..) {
            let _ = service.await;
        }
        tracing::info!(node = %self.inner.node, released, "job runner stopped");
        ShutdownReport { released }
    }
}

impl Drop for RunningRunner {
    /// Without a shutdown, the node stops claiming and heart-beating at once;
    /// the jobs it held are left to the rescuer, as after a crash.
    fn drop(&mut self) {
        self.stop_claiming.cancel();
        self.stop_services.cancel();
    }
}

impl QueueRuntime {
    fn new(name: &str, config: &QueueConfig, claim_batch: u32) -> QueueRuntime {
        let mut max_claim = claim_batch as usize;
        let limiter = config.rate_per_s.map(|rate| {
            let rate = NonZeroU32::new(rate).expect("validated: rate_per_s > 0");
            let burst = config.burst.and_then(NonZeroU32::new).unwrap_or(rate);
            max_claim = max_claim.min(burst.get() as usize);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        QueueRuntime {
            name: name.to_owned(),
            slots: Arc::new(Semaphore::new(config.concurrency as usize)),
            wake: Notify::new(),
            limiter,
            max_claim,
        }
    }
}

impl Inner {
    fn queue(&self, name: &str) -> Arc<QueueRuntime> {
        Arc::clone(
            self.queues
                .get(name)
                .unwrap_or_else(|| panic!("queue {name:?} is not configured on this node")),
        )
    }

    pub(crate) fn wake(&self, queue: &str) {
        if let Some(runtime) = self.queues.get(queue) {
            runtime.wake.notify_one();
        }
    }

    pub(crate) fn wake_all(&self) {
        for runtime in self.queues.values() {
            runtime.wake.notify_one();
        }
    }

    pub(crate) fn lease_length(&self) -> Duration {
        Duration::from_millis(self.config.lease_ms)
    }

    async fn claim(&self, queue: &str, limit: usize) -> Result<Vec<store::ClaimedJob>, sqlx::Error> {
        store::claim(
            &self.control,
            queue,
            limit as i64,
            &self.node,
            self.config.lease_ms as i64,
            self.clock.sql_now(),
        )
        .await
    }

    /// Registers a claimed job as held by this node: renewed by heartbeat
    /// until its outcome is written. A stale entry for an older lease of the
    /// same job (this node claimed it again after losing it) is stopped.
    /// The lease counts from `sent_at`, when the claim was sent: the
    /// database's runs from a moment after that, so this node's own view
    /// of it never outlasts the database's.
    fn track(&self, job: &store::ClaimedJob, sent_at: std::time::Instant) -> InFlight {
        let lease = Lease {
            id: job.id.get(),
            seq: job.lease_seq,
        };
        let flight = InFlight::new(lease, sent_at + self.lease_length());
        let previous = self
            .in_flight
            .lock()
            .expect("in-flight mutex poisoned")
            .insert(lease.id, flight.clone());
        if let Some(previous) = previous {
            previous.interrupt(Interrupt::LeaseLost);
        }
        flight
    }

    /// Every attempt this node holds, as of now.
    pub(crate) fn in_flight_snapshot(&self) -> Vec<InFlight> {
        self.in_flight
            .lock()
            .expect("in-flight mutex poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Whether this node still tracks `lease` (not written, not re-claimed).
    pub(crate) fn holds(&self, lease: Lease) -> bool {
        self.in_flight
            .lock()
            .expect("in-flight mutex poisoned")
            .get(&lease.id)
            .is_some_and(|f| f.lease == lease)
    }

    /// Forgets a lease, unless the job has been claimed again since.
    fn untrack(&self, lease: Lease) {
        let mut in_flight = self.in_flight.lock().expect("in-flight mutex poisoned");
        if in_flight.get(&lease.id).is_some_and(|f| f.lease == lease) {
            in_flight.remove(&lease.id);
        }
    }

    /// Writes a batch of outcomes: completions with one statement, every other
    /// end with another. Retries until the database takes them; meanwhile the
    /// jobs stay in flight, so their leases are renewed (or, if the database
    /// is gone, fenced off locally and later rescued).
    async fn write_outcomes(&self, batch: &mut Vec<Done>) {
        let mut completed: Vec<Lease> = Vec::new();
        let mut finishes = Vec::new();
        for done in batch.iter() {
            match &done.outcome {
                Outcome::Completed => completed.push(done.lease),
                Outcome::Finish(finish) => finishes.push(finish.clone()),
                Outcome::Abandon => {
                    tracing::warn!(
                        job_id = done.lease.id,
                        kind = done.kind,
                        "lease lost; outcome discarded"
                    )
                }
            }
        }
        completed.sort_by_key(|lease| lease.id);
        let retry = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(OUTCOME_WRITE_MAX_BACKOFF)
            .without_max_times();
        let now = self.clock.sql_now();
        let notify = |error: &sqlx::Error, wait: Duration| {
            tracing::error!(%error, retry_in_ms = wait.as_millis() as u64, "could not record job outcomes; retrying");
        };
        if !completed.is_empty() {
            let write = || store::complete_many(&self.control, &completed, &self.node, now);
            let _ = write.retry(retry).notify(notify).await;
        }
        if !finishes.is_empty() {
            let write = || store::finish_many(&self.control, &finishes, &self.node, now);
            let written = write.retry(retry).notify(notify).when(|e| !refused_data(e)).await;
            if let Err(error) = written {
                // The database refused what an error history says (a text
                // it cannot hold). Trying it again would stall every
                // outcome behind it, so the outcomes go without their texts.
                tracing::error!(%error, "job error texts could not be stored; recording the outcomes without them");
                for finish in &mut finishes {
                    if let Some(Value::Object(entry)) = &mut finish.error {
                        entry.insert(
                            "error".to_owned(),
                            Value::from("(the error's text could not be stored)"),
                        );
                    }
                }
                let write = || store::finish_many(&self.control, &finishes, &self.node, now);
                let _ = write.retry(retry).notify(notify).await;
            }
        }
        record_outcome_metrics(batch);
        for done in batch.drain(..) {
            self.untrack(done.lease);
        }
    }
}

/// A database error that says the data itself was refused (SQLSTATE class
/// 22, "data exception"): the same write fails the same way every time.
fn refused_data(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22")))
}

fn record_outcome_metrics(batch: &[Done]) {
    for done in batch {
        let name = match &done.outcome {
            Outcome::Completed => "tuma_jobs_completed_total",
            Outcome::Finish(finish) => match finish.state {
                "available" if finish.refund_attempt => "tuma_jobs_snoozed_total",
                "available" => "tuma_jobs_retried_total",
                "dead" => "tuma_jobs_dead_total",
                _ => "tuma_jobs_cancelled_total",
            },
            Outcome::Abandon => "tuma_jobs_abandoned_total",
        };
        metrics::counter!(name, "kind" => done.kind).increment(1);
        if let Outcome::Finish(finish) = &done.outcome {
            if finish.state == "dead" {
                let error = finish
                    .error
                    .as_ref()
                    .and_then(|e| e["error"].as_str())
                    .unwrap_or_default();
                tracing::warn!(job_id = done.lease.id, kind = done.kind, %error, "job is dead");
            }
        }
    }
}

/// Claims jobs of one queue into free slots until told to stop.
async fn produce(
    inner: Arc<Inner>,
    queue: Arc<QueueRuntime>,
    stop: CancellationToken,
    tracker: TaskTracker,
    done_tx: mpsc::Sender<Done>,
) {
    let poll = Duration::from_millis(inner.config.poll_interval_ms);
    let busy_poll = Duration::from_millis(inner.config.busy_poll_ms);
    let busy_window = Duration::from_millis(inner.config.busy_window_ms);
    // When a claim last found jobs: the queue counts as busy for a window.
    let mut last_found: Option<std::time::Instant> = None;
    loop {
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            permit = Arc::clone(&queue.slots).acquire_owned() => permit.expect("slots are never closed"),
        };
        let mut permits = vec![first];
        while permits.len() < queue.max_claim {
            match Arc::clone(&queue.slots).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let wanted = permits.len();
        let sent_at = std::time::Instant::now();
        let claimed = match inner.claim(&queue.name, wanted).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(queue = queue.name, %error, "claim failed; retrying after the poll interval");
                metrics::counter!("tuma_job_claim_errors_total", "queue" => queue.name.clone()).increment(1);
                drop(permits);
                tokio::select! { biased; () = stop.cancelled() => return, () = tokio::time::sleep(poll) => continue }
            }
        };
        let drained = claimed.len() < wanted;
        if !claimed.is_empty() {
            last_found = Some(std::time::Instant::now());
        }
        // Track first: jobs waiting for the token bucket are this node's and
        // must have their leases renewed while they wait.
        let flights: Vec<InFlight> = claimed.iter().map(|job| inner.track(job, sent_at)).collect();
        let mut interrupted = false;
        if let (Some(limiter), Some(n)) = (&queue.limiter, NonZeroU32::new(claimed.len() as u32)) {
            tokio::select! {
                biased;
                () = stop.cancelled() => interrupted = true,
                ready = limiter.until_n_ready(n) => ready.expect("claims never exceed the burst"),
            }
        }
        for ((job, flight), permit) in claimed.into_iter().zip(flights).zip(permits.drain(..)) {
            if interrupted {
                flight.interrupt(Interrupt::Shutdown);
            }
            let inner = Arc::clone(&inner);
            let done_tx = done_tx.clone();
            tracker.spawn(async move {
                let lease = flight.lease;
                // `execute` catches worker panics; this catches the rest (a
                // worker panicking while being dropped), so that no entry is
                // left renewing a lease for an attempt that is gone.
                let done = AssertUnwindSafe(execute(&inner, job, flight)).catch_unwind().await;
                match done {
                    Ok(done) => {
                        // Free the slot only once the outcome is queued.
                        if done_tx.send(done).await.is_err() {
                            tracing::error!(job_id = lease.id, "completer gone; leaving the job to the rescuer");
                            inner.untrack(lease);
                        }
                    }
                    Err(_) => {
                        tracing::error!(job_id = lease.id, "job task panicked; leaving the job to the rescuer");
                        inner.untrack(lease);
                    }
                }
                drop(permit);
            });
        }
        if interrupted {
            return;
        }
        if drained {
            let busy = last_found.is_some_and(|at| at.elapsed() < busy_window);
            if busy {
                // Enqueues skip their NOTIFY while the queue is busy (see
                // `Heard`): poll, and take what arrived meanwhile together.
                // The few notifications still sent wake it sooner.
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = queue.wake.notified() => {}
                    () = tokio::time::sleep(busy_poll) => {}
                }
            } else {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = queue.wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                }
            }
        }
    }
}

/// Writes outcomes in batches until every producer and worker is gone.
async fn complete(inner: Arc<Inner>, mut done_rx: mpsc::Receiver<Done>) {
    let max = inner.config.completion_batch as usize;
    let mut batch = Vec::with_capacity(max);
    while let Some(first) = done_rx.recv().await {
        batch.push(first);
        while batch.len() < max {
            match done_rx.try_recv() {
                Ok(done) => batch.push(done),
                Err(_) => break,
            }
        }
        inner.write_outcomes(&mut batch).await;
    }
}

/// `host-pid-random`: readable in `locked_by`, unique across restarts.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{}-{suffix}", std::process::id())
}
