//! What operators do to jobs and queues: cancel, pause, rate-limit, retain.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tuma::clock::{Clock, ManualClock};
use tuma::runner::{CancelOutcome, JobArgs, JobContext, JobError, NewJob, Registry, Runner, Worker};

use crate::common::{count, eventually, runner_config, TestDb};

#[derive(Serialize, Deserialize)]
struct Task {
    wait: bool,
}

impl JobArgs for Task {
    const KIND: &'static str = "test.task";
}

/// Records when each job started; waits forever when asked to.
struct TaskWorker {
    starts: Arc<Mutex<Vec<Instant>>>,
    started: Arc<Notify>,
}

impl Worker for TaskWorker {
    type Args = Task;

    async fn work(&self, _ctx: JobContext, args: Task) -> Result<(), JobError> {
        self.starts.lock().unwrap().push(Instant::now());
        self.started.notify_one();
        if args.wait {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn registry() -> (Registry, Arc<Mutex<Vec<Instant>>>, Arc<Notify>) {
    let (starts, started) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Notify::new()));
    let mut registry = Registry::new();
    registry.register(TaskWorker {
        starts: starts.clone(),
        started: started.clone(),
    });
    (registry, starts, started)
}

async fn enqueue(runner: &Runner, jobs: Vec<NewJob>) -> Vec<tuma::domain::JobId> {
    let client = runner.client();
    let mut tx = client.pool().begin().await.unwrap();
    let mut ids = Vec::new();
    for job in &jobs {
        ids.push(client.enqueue(&mut tx, job).await.unwrap().id());
    }
    tx.commit().await.unwrap();
    ids
}

#[tokio::test]
async fn cancelling_stops_a_waiting_job_at_once_and_a_running_one_at_the_next_heartbeat() {
    let db = TestDb::new().await;
    let (registry, _starts, started) = registry();
    let runner = Runner::new(db.pool.clone(), runner_config(""), registry, Clock::Database).unwrap();
    let client = runner.client();
    let later = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let ids = enqueue(
        &runner,
        vec![
            NewJob::new(&Task { wait: false }).run_at(later),
            NewJob::new(&Task { wait: true }),
        ],
    )
    .await;

    assert_eq!(client.cancel(ids[0]).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(client.cancel(ids[0]).await.unwrap(), CancelOutcome::AlreadyFinished);

    let handle = runner.clone();
    let running = runner.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("job started");
    assert_eq!(client.cancel(ids[1]).await.unwrap(), CancelOutcome::Requested);
    handle.heartbeat_once().await.unwrap();
    eventually(Duration::from_secs(10), "the running job was cancelled", || async {
        client.get(ids[1]).await.unwrap().unwrap().state == "cancelled"
    })
    .await;
    assert_eq!(running.shutdown().await.released, 0);
}

#[tokio::test]
async fn a_paused_queue_is_not_worked_until_it_is_resumed() {
    let db = TestDb::new().await;
    let (registry, starts, _) = registry();
    let runner = Runner::new(db.pool.clone(), runner_config(""), registry, Clock::Database).unwrap();
    enqueue(&runner, vec![NewJob::new(&Task { wait: false })]).await;
    runner.client().pause_queue("default").await.unwrap();
    assert_eq!(runner.work_once("default").await.unwrap(), 0);
    runner.client().resume_queue("default").await.unwrap();
    assert_eq!(runner.work_once("default").await.unwrap(), 1);
    assert_eq!(starts.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_queue_starts_no_more_jobs_than_its_token_bucket_allows() {
    const JOBS: usize = 30;
    const RATE_PER_S: u32 = 20;
    let db = TestDb::new().await;
    let (registry, starts, _) = registry();
    let config = runner_config(&format!(
        "[runner.queues.default]\nconcurrency = 16\nrate_per_s = {RATE_PER_S}\nburst = 1"
    ));
    let runner = Runner::new(db.pool.clone(), config, registry, Clock::Database).unwrap();
    enqueue(&runner, (0..JOBS).map(|_| NewJob::new(&Task { wait: false })).collect()).await;
    let running = runner.start().await.unwrap();
    eventually(Duration::from_secs(30), "all jobs started", || async {
        starts.lock().unwrap().len() == JOBS
    })
    .await;
    running.shutdown().await;
    // A lower bound only: a busy machine can make the run slower, never
    // faster. With a burst of one, 30 starts at 20/s take at least 29/20 s.
    let starts = starts.lock().unwrap();
    let span = *starts.iter().max().unwrap() - *starts.iter().min().unwrap();
    let minimum = Duration::from_millis(((JOBS as u64 - 1) * 1_000 / RATE_PER_S as u64) * 9 / 10);
    assert!(
        span >= minimum,
        "{JOBS} jobs started within {span:?}; the limit allows no less than {minimum:?}"
    );
}

#[tokio::test]
async fn retention_deletes_finished_jobs_after_their_age_and_keeps_dead_ones_longer() {
    let db = TestDb::new().await;
    let clock = ManualClock::starting_now();
    let (registry, _, _) = registry();
    let config = runner_config("[runner.retention]\ncompleted_s = 3600\ndead_s = 86400\nbatch = 2");
    let runner = Runner::new(db.pool.clone(), config, registry, Clock::Manual(clock.clone())).unwrap();
    enqueue(&runner, (0..5).map(|_| NewJob::new(&Task { wait: false })).collect()).await;
    assert_eq!(runner.work_once("default").await.unwrap(), 5);
    sqlx::query("INSERT INTO tuma_jobs (kind, queue, args, max_attempts, state, finished_at) VALUES ('test.task', 'default', '{}', 1, 'dead', $1)")
        .bind(clock.now())
        .execute(&db.pool)
        .await
        .unwrap();

    clock.advance(Duration::from_secs(3_599));
    assert_eq!(runner.retention_once().await.unwrap(), 0, "deleted before its age");
    clock.advance(Duration::from_secs(2));
    // Five completed jobs in batches of two: all gone in one pass.
    assert_eq!(runner.retention_once().await.unwrap(), 5);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE state = 'dead'").await,
        1
    );
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(runner.retention_once().await.unwrap(), 1);
}

#[tokio::test]
async fn the_runner_reports_its_work_as_prometheus_metrics() {
    let db = TestDb::new().await;
    let metrics = tuma::telemetry::metrics_handle();
    let (registry, _, _) = registry();
    let runner = Runner::new(db.pool.clone(), runner_config(""), registry, Clock::Database).unwrap();
    enqueue(&runner, vec![NewJob::new(&Task { wait: false })]).await;
    runner.work_once("default").await.unwrap();
    let rendered = metrics.render();
    for name in [
        "tuma_jobs_claimed_total",
        "tuma_jobs_completed_total",
        "tuma_job_start_latency_seconds",
    ] {
        assert!(
            rendered.contains(&format!("{name}{{kind=\"test.task\"}}"))
                || rendered.contains(&format!("{name}_bucket{{kind=\"test.task\"")),
            "{name} missing from:\n{rendered}"
        );
    }
}

/// Payout creates first: a transaction of the node's main pool does not
/// start while a create group is in flight (up to the longest wait, here
/// far longer than the test), whether it takes an idle connection or one
/// opened for it, and starts as soon as the group ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_pool_waits_while_a_create_group_is_in_flight() {
    let db = TestDb::new().await;
    let mut config = crate::common::config_with("").database;
    config.url = db.url();
    config.create_if_missing = false;
    let foreground = tuma::store::Foreground::new(Duration::from_secs(60));
    let pool = tuma::store::connect_with(&config, &foreground).await.unwrap();
    // Nothing in flight: no wait.
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(one, 1);
    // A connection goes back to the pool a moment after its statement.
    let back_in_the_pool = || async {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.num_idle() == 0 {
            assert!(std::time::Instant::now() < deadline, "the connection never came back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    back_in_the_pool().await;

    let waits_for_the_group = |sql: &'static str, n: i32| {
        let pool = pool.clone();
        let foreground = foreground.clone();
        async move {
            let group = foreground.enter();
            let waiting = tokio::spawn(async move { sqlx::query_scalar::<_, i32>(sql).fetch_one(&pool).await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!waiting.is_finished(), "{sql} ran while a create group was in flight");
            drop(group);
            let got = tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("the statement runs once the group ends")
                .unwrap()
                .unwrap();
            assert_eq!(got, n);
        }
    };
    // The idle connection.
    waits_for_the_group("SELECT 2", 2).await;
    // With the only idle connection held, one opened for the statement.
    back_in_the_pool().await;
    let held = pool.acquire().await.unwrap();
    assert_eq!((pool.size(), pool.num_idle()), (1, 0));
    waits_for_the_group("SELECT 3", 3).await;
    drop(held);
}
