//! Failing, slow and panicking jobs: retried on the backoff schedule, then
//! dead with their history, and re-runnable.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tuma::clock::{Clock, ManualClock};
use tuma::runner::{
    JobArgs, JobContext, JobError, JobOptions, NewJob, Registry, RetryOutcome, RetryPolicy, Runner, Worker,
};

use crate::common::{count, runner_config, TestDb};

#[derive(Serialize, Deserialize)]
struct Flaky {}

impl JobArgs for Flaky {
    const KIND: &'static str = "test.flaky";
    fn options() -> JobOptions {
        JobOptions {
            max_attempts: 3,
            ..JobOptions::default()
        }
    }
}

struct FlakyWorker {
    healthy: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
}

impl Worker for FlakyWorker {
    type Args = Flaky;

    async fn work(&self, _ctx: JobContext, _args: Flaky) -> Result<(), JobError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(JobError::retryable(format!("provider answered 503 (run {run})")))
        }
    }
}

async fn job_times(db: &TestDb) -> (String, i32, DateTime<Utc>) {
    sqlx::query_as("SELECT state::text, attempt, run_at FROM tuma_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failing_job_is_retried_on_the_backoff_schedule_then_dies_with_its_errors_and_can_be_rerun() {
    let db = TestDb::new().await;
    let clock = ManualClock::starting_now();
    let config = runner_config("[runner.retry]\nbase_ms = 60000\nmax_ms = 600000");
    let policy = RetryPolicy {
        base_ms: 60_000,
        max_ms: 600_000,
    };
    let (healthy, runs) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let mut registry = Registry::new();
    registry.register(FlakyWorker {
        healthy: healthy.clone(),
        runs: runs.clone(),
    });
    let runner = Runner::new(db.pool.clone(), config, registry, Clock::Manual(clock.clone())).unwrap();
    let client = runner.client();
    let mut tx = db.pool.begin().await.unwrap();
    let id = client.enqueue(&mut tx, &NewJob::new(&Flaky {})).await.unwrap().id();
    tx.commit().await.unwrap();

    for attempt in 1..=2 {
        let failed_at = clock.now();
        assert_eq!(runner.work_once("default").await.unwrap(), 1);
        let (state, recorded_attempt, run_at) = job_times(&db).await;
        assert_eq!((state.as_str(), recorded_attempt), ("available", attempt));
        let wait = run_at - failed_at;
        assert!(
            wait >= TimeDelta::zero() && wait <= TimeDelta::milliseconds(policy.window_ms(attempt as u32) as i64),
            "attempt {attempt}: waited {wait}"
        );
        // Not a moment early: one microsecond before run_at nothing runs.
        if wait > TimeDelta::zero() {
            clock.set(run_at - TimeDelta::microseconds(1));
            assert_eq!(
                runner.work_once("default").await.unwrap(),
                0,
                "retried before its backoff ran out"
            );
        }
        clock.set(run_at);
    }
    assert_eq!(runner.work_once("default").await.unwrap(), 1);
    let job = client.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, "dead");
    assert_eq!(job.attempt, 3);
    let errors = job.errors.as_array().unwrap();
    assert_eq!(errors.len(), 3);
    for (i, error) in errors.iter().enumerate() {
        assert_eq!(error["attempt"], i as i64 + 1);
        assert_eq!(error["error"], format!("provider answered 503 (run {})", i + 1));
    }
    // Dead jobs stay dead: nothing claims them.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(runner.work_once("default").await.unwrap(), 0);

    healthy.store(true, Ordering::SeqCst);
    assert_eq!(client.retry_dead(id).await.unwrap(), RetryOutcome::Requeued);
    assert_eq!(
        client.retry_dead(id).await.unwrap(),
        RetryOutcome::NotDead,
        "only a dead job can be re-run"
    );
    assert_eq!(runner.work_once("default").await.unwrap(), 1);
    let job = client.get(id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempt), ("completed", 1));
    assert_eq!(
        job.errors.as_array().unwrap().len(),
        3,
        "the history survives the re-run"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[derive(Serialize, Deserialize)]
struct Slow {}

impl JobArgs for Slow {
    const KIND: &'static str = "test.slow";
    fn options() -> JobOptions {
        JobOptions {
            timeout: Some(Duration::from_millis(100)),
            max_attempts: 1,
            ..JobOptions::default()
        }
    }
}

/// Sleeps far longer than its timeout, holding a guard that counts when the
/// handler's future is dropped.
struct SlowWorker {
    dropped: Arc<AtomicUsize>,
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Worker for SlowWorker {
    type Args = Slow;

    async fn work(&self, _ctx: JobContext, _args: Slow) -> Result<(), JobError> {
        let _guard = DropCounter(self.dropped.clone());
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_job_over_its_timeout_is_stopped_recorded_as_timed_out_and_frees_its_slot() {
    let db = TestDb::new().await;
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry.register(SlowWorker {
        dropped: dropped.clone(),
    });
    let config = runner_config("[runner.queues.default]\nconcurrency = 1");
    let runner = Runner::new(db.pool.clone(), config, registry, Clock::Database).unwrap();
    let client = runner.client();
    let mut tx = db.pool.begin().await.unwrap();
    client
        .enqueue_many(&mut tx, &[NewJob::new(&Slow {}), NewJob::new(&Slow {})])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // With one slot, the second job can only run if the first one's slot
    // was freed by its timeout.
    assert_eq!(runner.work_once("default").await.unwrap(), 1);
    assert_eq!(runner.work_once("default").await.unwrap(), 1);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM tuma_jobs WHERE state = 'dead' AND errors->0->>'kind' = 'timeout'"
        )
        .await,
        2
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "a timed-out handler was not stopped");
}

#[derive(Serialize, Deserialize)]
struct Napping {}

impl JobArgs for Napping {
    const KIND: &'static str = "test.napping";
    fn options() -> JobOptions {
        JobOptions {
            timeout: Some(Duration::from_millis(100)),
            max_attempts: 1,
            ..JobOptions::default()
        }
    }
}

/// Takes 300 ms: longer than its kind allows.
struct NappingWorker;

impl Worker for NappingWorker {
    type Args = Napping;

    async fn work(&self, _ctx: JobContext, _args: Napping) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_jobs_own_timeout_overrides_its_kinds_either_way() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register(NappingWorker);
    registry.register(SlowWorker {
        dropped: Arc::new(AtomicUsize::new(0)),
    });
    let runner = Runner::new(db.pool.clone(), runner_config(""), registry, Clock::Database).unwrap();
    let client = runner.client();
    let mut tx = db.pool.begin().await.unwrap();
    client
        .enqueue_many(
            &mut tx,
            &[
                // The kind's 100 ms.
                NewJob::new(&Napping {}),
                // Its own 5 s: time enough.
                NewJob::new(&Napping {}).timeout(Duration::from_secs(5)),
                // Its own 200 ms instead of its kind's 100 ms.
                NewJob::new(&Slow {}).timeout(Duration::from_millis(200)),
            ],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while runner.work_once("default").await.unwrap() > 0 {}
    })
    .await
    .expect("the jobs' own timeouts were not applied");
    let outcomes: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT state::text, errors->0->>'error' FROM tuma_jobs ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let outcomes: Vec<(&str, Option<&str>)> = outcomes.iter().map(|(s, e)| (s.as_str(), e.as_deref())).collect();
    assert_eq!(
        outcomes,
        [
            ("dead", Some("timed out after 100 ms")),
            ("completed", None),
            ("dead", Some("timed out after 200 ms")),
        ]
    );
}

#[derive(Serialize, Deserialize)]
struct Panicky {}

impl JobArgs for Panicky {
    const KIND: &'static str = "test.panicky";
}

struct PanickyWorker;

impl Worker for PanickyWorker {
    type Args = Panicky;

    async fn work(&self, _ctx: JobContext, _args: Panicky) -> Result<(), JobError> {
        panic!("index out of bounds in a worker");
    }
}

#[tokio::test]
async fn a_panicking_worker_is_a_failed_attempt_not_a_lost_job() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register(PanickyWorker);
    let runner = Runner::new(db.pool.clone(), runner_config(""), registry, Clock::Database).unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    runner
        .client()
        .enqueue(&mut tx, &NewJob::new(&Panicky {}).max_attempts(2))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(runner.work_once("default").await.unwrap(), 1);
    let (state, errors): (String, serde_json::Value) = sqlx::query_as("SELECT state::text, errors FROM tuma_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "available");
    assert_eq!(errors[0]["kind"], "panic");
    assert!(errors[0]["error"].as_str().unwrap().contains("index out of bounds"));
}

#[tokio::test]
async fn a_job_of_unknown_kind_or_with_undecodable_arguments_is_not_silently_dropped() {
    let db = TestDb::new().await;
    sqlx::query("INSERT INTO tuma_jobs (kind, queue, args, max_attempts) VALUES ('test.flaky', 'default', '[1,2]', 5), ('test.nobody', 'default', '{}', 5)")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register(FlakyWorker {
        healthy: Arc::new(AtomicBool::new(true)),
        runs: Arc::new(AtomicUsize::new(0)),
    });
    let runner = Runner::new(db.pool.clone(), runner_config(""), registry, Clock::Database).unwrap();
    assert_eq!(runner.work_once("default").await.unwrap(), 2);
    let rows: Vec<(String, String, i32, serde_json::Value)> =
        sqlx::query_as("SELECT kind, state::text, attempt, errors FROM tuma_jobs ORDER BY kind")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    // Bad arguments cannot get better: dead at once, with the reason.
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("test.flaky", "dead"));
    assert!(rows[0].3[0]["error"].as_str().unwrap().contains("do not decode"));
    // An unknown kind may be known to a newer node (a rolling deploy): it
    // waits for one without using up its attempts.
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2),
        ("test.nobody", "available", 0)
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM tuma_jobs WHERE kind = 'test.nobody' AND run_at > now() + interval '30 seconds'"
        )
        .await,
        1
    );
}

#[derive(Serialize, Deserialize)]
struct Garbled {}

impl JobArgs for Garbled {
    const KIND: &'static str = "test.garbled";
}

/// Fails with what a provider might put in its error text: a NUL, which
/// PostgreSQL refuses in `jsonb`, and far too much of it.
struct GarbledWorker;

impl Worker for GarbledWorker {
    type Args = Garbled;

    async fn work(&self, _ctx: JobContext, _args: Garbled) -> Result<(), JobError> {
        Err(JobError::retryable(format!(
            "provider said \"bad\0code\" {}",
            "x".repeat(10_000)
        )))
    }
}

#[tokio::test]
async fn an_error_text_the_database_cannot_hold_is_recorded_cleaned_and_stalls_nothing_behind_it() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register(GarbledWorker);
    registry.register(FlakyWorker {
        healthy: Arc::new(AtomicBool::new(true)),
        runs: Arc::new(AtomicUsize::new(0)),
    });
    let runner = Runner::new(db.pool.clone(), runner_config(""), registry, Clock::Database).unwrap();
    let client = runner.client();
    let mut tx = db.pool.begin().await.unwrap();
    let garbled = client.enqueue(&mut tx, &NewJob::new(&Garbled {})).await.unwrap().id();
    let healthy = client.enqueue(&mut tx, &NewJob::new(&Flaky {})).await.unwrap().id();
    tx.commit().await.unwrap();

    // The outcomes are written before `work_once` returns; a write the
    // database refuses over and over would never return.
    let ran = tokio::time::timeout(Duration::from_secs(30), runner.work_once("default"))
        .await
        .expect("recording the outcomes stalled")
        .unwrap();
    assert_eq!(ran, 2);
    let job = client.get(healthy).await.unwrap().unwrap();
    assert_eq!(job.state, "completed");
    let job = client.get(garbled).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempt), ("available", 1));
    let text = job.errors[0]["error"].as_str().unwrap();
    assert!(text.starts_with("provider said \"bad\u{FFFD}code\" xxx"), "{text}");
    assert!(text.chars().count() <= 2001, "kept {} characters", text.chars().count());
}
