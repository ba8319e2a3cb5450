//! Running one claimed job, and deciding (purely) what its attempt means.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::Rng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::backoff::RetryPolicy;
use super::job::{JobContext, JobError};
use super::store::{ClaimedJob, Finish, Lease};
use super::Inner;

/// Why the runner stopped an attempt from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// The node is shutting down and the grace period ran out: give the job
    /// back without counting the attempt.
    Shutdown,
    /// Someone asked to cancel this job.
    CancelRequested,
    /// The heartbeat found the lease held by nobody or another node: the job
    /// may already be running elsewhere, so this node records nothing.
    LeaseLost,
}

/// A running attempt as the rest of the node sees it.
#[derive(Clone)]
pub(crate) struct InFlight {
    pub(crate) lease: Lease,
    token: CancellationToken,
    reason: Arc<Mutex<Option<Interrupt>>>,
    /// Until when this node knows the lease is its own, by its local clock:
    /// the last successful claim or renewal plus the lease length. Past it,
    /// another node may already be running the job, so the attempt is
    /// stopped (self-fencing) even if the database cannot be reached.
    confirmed_until: Arc<Mutex<Instant>>,
}

impl InFlight {
    pub(crate) fn new(lease: Lease, confirmed_until: Instant) -> InFlight {
        InFlight {
            lease,
            token: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
            confirmed_until: Arc::new(Mutex::new(confirmed_until)),
        }
    }

    pub(crate) fn confirm_until(&self, until: Instant) {
        *self.confirmed_until.lock().expect("lease mutex poisoned") = until;
    }

    pub(crate) fn confirmed_until(&self) -> Instant {
        *self.confirmed_until.lock().expect("lease mutex poisoned")
    }

    /// Stops the attempt; the first reason given wins.
    pub(crate) fn interrupt(&self, reason: Interrupt) {
        let mut slot = self.reason.lock().expect("interrupt mutex poisoned");
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.token.cancel();
    }

    fn reason(&self) -> Interrupt {
        self.reason
            .lock()
            .expect("interrupt mutex poisoned")
            .expect("a cancelled attempt always has a reason")
    }
}

/// How an attempt ended, before deciding what that means.
#[derive(Debug)]
pub(crate) enum AttemptEnd {
    Returned(Result<(), JobError>),
    TimedOut(Duration),
    Panicked(String),
    Interrupted(Interrupt),
}

/// What to write for an attempt.
#[derive(Debug)]
pub(crate) enum Outcome {
    Completed,
    Finish(Finish),
    /// Write nothing: this node no longer owns the job.
    Abandon,
}

/// An outcome on its way to the completer.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) lease: Lease,
    pub(crate) kind: &'static str,
    pub(crate) outcome: Outcome,
}

/// Kind label for jobs no worker is registered for.
const UNREGISTERED: &str = "unregistered";

/// How long a job of a kind this node does not know waits before it is
/// offered again: long enough not to spin, short enough for a rolling deploy
/// (a newer node knows the kind) to pick it up soon.
const UNREGISTERED_SNOOZE: Duration = Duration::from_secs(60);

/// Runs one claimed job to an outcome. Never panics: a panicking worker is a
/// failed attempt like any other.
pub(crate) async fn execute(inner: &Inner, mut job: ClaimedJob, in_flight: InFlight) -> Done {
    let id = job.id.get();
    let lease = in_flight.lease;
    let Some(worker) = inner.registry.get(&job.kind) else {
        // Not the job's fault: snooze without using up an attempt.
        tracing::warn!(
            job_id = id,
            kind = job.kind,
            "no worker for this kind on this node; snoozing"
        );
        let end = AttemptEnd::Returned(Err(JobError::Snooze(UNREGISTERED_SNOOZE)));
        let outcome = decide(&job, end, &inner.config.retry, &mut rand::rng());
        return Done {
            lease,
            kind: UNREGISTERED,
            outcome,
        };
    };
    let kind = worker.kind;
    metrics::counter!("tuma_jobs_claimed_total", "kind" => kind).increment(1);
    if let Ok(waited) = (chrono::Utc::now() - job.run_at).to_std() {
        metrics::histogram!("tuma_job_start_latency_seconds", "kind" => kind).record(waited.as_secs_f64());
    }
    let ctx = JobContext {
        id: job.id,
        kind: Arc::from(kind),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        scheduled_at: job.run_at,
        pool: inner.pool.clone(),
        node: inner.node.clone(),
        lease_seq: job.lease_seq,
        clock: inner.clock.clone(),
    };
    // The job's own timeout (a workflow action's `timeout_ms`), else its
    // kind's, else the runner's.
    let timeout = job
        .timeout_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .or(worker.timeout)
        .unwrap_or(Duration::from_millis(inner.config.default_timeout_ms));
    let args = std::mem::take(&mut job.args);
    let run = AssertUnwindSafe((worker.run)(ctx, args)).catch_unwind();
    let end = tokio::select! {
        biased;
        () = in_flight.token.cancelled() => AttemptEnd::Interrupted(in_flight.reason()),
        () = unconfirmed(&in_flight) => {
            in_flight.interrupt(Interrupt::LeaseLost);
            AttemptEnd::Interrupted(in_flight.reason())
        }
        result = tokio::time::timeout(timeout, run) => match result {
            Ok(Ok(returned)) => AttemptEnd::Returned(returned),
            Ok(Err(panic)) => AttemptEnd::Panicked(panic_message(&panic)),
            Err(_) => AttemptEnd::TimedOut(timeout),
        },
    };
    // The worker's future is dropped by now, whatever happened: a timed-out
    // or cancelled handler cannot keep running in the background.
    if matches!(end, AttemptEnd::TimedOut(_)) {
        metrics::counter!("tuma_jobs_timed_out_total", "kind" => kind).increment(1);
        tracing::warn!(
            job_id = id,
            kind,
            timeout_ms = timeout.as_millis() as u64,
            "job attempt timed out"
        );
    }
    let policy = job_policy(&job, &inner.config.retry);
    let outcome = decide(&job, end, &policy, &mut rand::rng());
    Done { lease, kind, outcome }
}

/// Resolves when the attempt's lease has run out unrenewed: from then on
/// the job may be rescued and run elsewhere, so the attempt stops at that
/// moment, not at the next heartbeat, which may be late when the database
/// is slow to answer.
async fn unconfirmed(flight: &InFlight) {
    loop {
        let until = tokio::time::Instant::from_std(flight.confirmed_until());
        if until <= tokio::time::Instant::now() {
            return;
        }
        tokio::time::sleep_until(until).await;
    }
}

/// The job's own retry schedule when it has one, else the runner's.
fn job_policy(job: &ClaimedJob, default: &RetryPolicy) -> RetryPolicy {
    match (job.retry_base_ms, job.retry_max_ms) {
        (Some(base_ms), Some(max_ms)) if base_ms > 0 && max_ms >= base_ms => RetryPolicy {
            base_ms: base_ms as u64,
            max_ms: max_ms as u64,
        },
        _ => *default,
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Decides what an attempt means for the job: a pure function of the job,
/// how the attempt ended, the retry policy and a source of jitter.
pub(crate) fn decide(job: &ClaimedJob, end: AttemptEnd, policy: &RetryPolicy, rng: &mut impl Rng) -> Outcome {
    let error_entry = |kind: &str, error: &str| {
        Some(json!({
            "attempt": job.attempt,
            "at": chrono::Utc::now(),
            "kind": kind,
            "error": storable_error(error),
        }))
    };
    let mut failed = |kind: &str, error: String| {
        let exhausted = job.attempt >= job.max_attempts;
        let attempt = u32::try_from(job.attempt.max(1)).unwrap_or(1);
        Outcome::Finish(Finish {
            lease: Lease {
                id: job.id.get(),
                seq: job.lease_seq,
            },
            state: if exhausted { "dead" } else { "available" },
            refund_attempt: false,
            delay_ms: if exhausted {
                0
            } else {
                policy.delay(attempt, rng).as_millis() as i64
            },
            error: error_entry(kind, &error),
        })
    };
    match end {
        AttemptEnd::Returned(Ok(())) => Outcome::Completed,
        AttemptEnd::Returned(Err(JobError::Retryable(error))) => failed("error", error),
        AttemptEnd::Returned(Err(JobError::Fatal(error))) => Outcome::Finish(Finish {
            lease: Lease {
                id: job.id.get(),
                seq: job.lease_seq,
            },
            state: "dead",
            refund_attempt: false,
            delay_ms: 0,
            error: error_entry("fatal", &error),
        }),
        AttemptEnd::Returned(Err(JobError::Snooze(delay))) => Outcome::Finish(Finish {
            lease: Lease {
                id: job.id.get(),
                seq: job.lease_seq,
            },
            state: "available",
            refund_attempt: true,
            delay_ms: delay.as_millis() as i64,
            error: None,
        }),
        AttemptEnd::Returned(Err(JobError::Cancel(reason))) => Outcome::Finish(Finish {
            lease: Lease {
                id: job.id.get(),
                seq: job.lease_seq,
            },
            state: "cancelled",
            refund_attempt: false,
            delay_ms: 0,
            error: error_entry("cancelled", &reason),
        }),
        AttemptEnd::TimedOut(timeout) => failed("timeout", format!("timed out after {} ms", timeout.as_millis())),
        AttemptEnd::Panicked(message) => failed("panic", format!("worker panicked: {message}")),
        AttemptEnd::Interrupted(Interrupt::Shutdown) => Outcome::Finish(Finish {
            lease: Lease {
                id: job.id.get(),
                seq: job.lease_seq,
            },
            state: "available",
            refund_attempt: true,
            delay_ms: 0,
            error: None,
        }),
        AttemptEnd::Interrupted(Interrupt::CancelRequested) => Outcome::Finish(Finish {
            lease: Lease {
                id: job.id.get(),
                seq: job.lease_seq,
            },
            state: "cancelled",
            refund_attempt: false,
            delay_ms: 0,
            error: error_entry("cancelled", "cancelled on request while running"),
        }),
        AttemptEnd::Interrupted(Interrupt::LeaseLost) => Outcome::Abandon,
    }
}

/// Longest error text kept in a job's history, in characters.
const MAX_ERROR_CHARS: usize = 2000;

/// An error's text as a job's history can keep it. Errors quote what
/// providers and databases said, and PostgreSQL refuses a NUL character in
/// `jsonb` (`\u0000`): one such text would fail every write of the batch
/// it came in. NULs become U+FFFD (`store::storable`, as for every text
/// written) and a long text is cut.
pub(crate) fn storable_error(error: &str) -> String {
    let mut text: String = crate::store::storable(error).chars().take(MAX_ERROR_CHARS).collect();
    if error.chars().nth(MAX_ERROR_CHARS).is_some() {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobId;
    use rand::SeedableRng;

    fn job(attempt: i32, max_attempts: i32) -> ClaimedJob {
        ClaimedJob {
            id: JobId::from(7),
            kind: "k".into(),
            queue: "default".into(),
            args: json!({}),
            attempt,
            max_attempts,
            run_at: chrono::Utc::now(),
            created_at: chrono::Utc::now(),
            retry_base_ms: None,
            retry_max_ms: None,
            timeout_ms: None,
            lease_seq: 1,
        }
    }

    fn finish(outcome: Outcome) -> Finish {
        match outcome {
            Outcome::Finish(finish) => finish,
            other => panic!("expected a finish, got {other:?}"),
        }
    }

    #[test]
    fn a_retryable_error_waits_inside_the_backoff_window_until_attempts_run_out() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for attempt in 1..5 {
            let end = AttemptEnd::Returned(Err(JobError::retryable("provider 503")));
            let f = finish(decide(&job(attempt, 5), end, &policy, &mut rng));
            assert_eq!(f.state, "available");
            assert!(f.delay_ms as u64 <= policy.window_ms(attempt as u32));
            assert_eq!(f.error.unwrap()["error"], "provider 503");
        }
        let end = AttemptEnd::Returned(Err(JobError::retryable("provider 503")));
        assert_eq!(finish(decide(&job(5, 5), end, &policy, &mut rng)).state, "dead");
    }

    #[test]
    fn fatal_errors_timeouts_snoozes_and_interrupts_each_have_their_own_outcome() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let fatal = finish(decide(
            &job(1, 5),
            AttemptEnd::Returned(Err(JobError::fatal("bad args"))),
            &policy,
            &mut rng,
        ));
        assert_eq!((fatal.state, fatal.refund_attempt), ("dead", false));
        let timeout = finish(decide(
            &job(1, 5),
            AttemptEnd::TimedOut(Duration::from_secs(3)),
            &policy,
            &mut rng,
        ));
        assert_eq!(timeout.state, "available");
        assert_eq!(timeout.error.unwrap()["kind"], "timeout");
        let snooze = finish(decide(
            &job(1, 5),
            AttemptEnd::Returned(Err(JobError::Snooze(Duration::from_secs(30)))),
            &policy,
            &mut rng,
        ));
        assert_eq!(
            (snooze.state, snooze.refund_attempt, snooze.delay_ms),
            ("available", true, 30_000)
        );
        let shutdown = finish(decide(
            &job(5, 5),
            AttemptEnd::Interrupted(Interrupt::Shutdown),
            &policy,
            &mut rng,
        ));
        assert_eq!((shutdown.state, shutdown.refund_attempt), ("available", true));
        let cancelled = finish(decide(
            &job(1, 5),
            AttemptEnd::Interrupted(Interrupt::CancelRequested),
            &policy,
            &mut rng,
        ));
        assert_eq!(cancelled.state, "cancelled");
        assert!(matches!(
            decide(
                &job(1, 5),
                AttemptEnd::Interrupted(Interrupt::LeaseLost),
                &policy,
                &mut rng
            ),
            Outcome::Abandon
        ));
        assert!(matches!(
            decide(&job(1, 5), AttemptEnd::Returned(Ok(())), &policy, &mut rng),
            Outcome::Completed
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_is_fenced_the_moment_its_lease_runs_out_unrenewed() {
        let start = Instant::now();
        let flight = InFlight::new(Lease { id: 7, seq: 1 }, start + Duration::from_secs(30));
        let fenced = tokio::spawn({
            let flight = flight.clone();
            async move { unconfirmed(&flight).await }
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!fenced.is_finished(), "the lease is still good");
        // A heartbeat renews it for another 30 s from its own start.
        flight.confirm_until(start + Duration::from_secs(50));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!fenced.is_finished(), "renewed: the old deadline does not stop it");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            fenced.is_finished(),
            "stopped at the renewed deadline, without waiting for a heartbeat"
        );
    }
}
