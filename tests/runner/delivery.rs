//! Jobs run exactly once, only when their enqueue committed, and wake idle
//! nodes promptly.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;
use tuma::clock::Clock;
use tuma::runner::{EnqueueOutcome, JobArgs, JobContext, JobError, NewJob, Registry, Runner, Worker};

use crate::common::{count, eventually, runner_config, TestDb};

/// Records each run in `job_runs`; half the kinds commit the record together
/// with the job's completion, half leave completion to the batched path.
#[derive(Serialize, Deserialize)]
struct Counted {
    in_tx: bool,
}

impl JobArgs for Counted {
    const KIND: &'static str = "test.counted";
}

struct CountedWorker;

impl Worker for CountedWorker {
    type Args = Counted;

    async fn work(&self, ctx: JobContext, args: Counted) -> Result<(), JobError> {
        let mut tx = ctx.pool().begin().await?;
        sqlx::query("INSERT INTO job_runs (job_id) VALUES ($1)")
            .bind(ctx.id.get())
            .execute(&mut *tx)
            .await?;
        if args.in_tx {
            ctx.complete_in(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn create_run_counter(db: &TestDb) {
    sqlx::query("CREATE TABLE job_runs (job_id bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .execute(&db.pool)
        .await
        .unwrap();
}

fn counted_registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(CountedWorker);
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_runners_on_one_database_execute_ten_thousand_jobs_each_exactly_once() {
    const JOBS: usize = 10_000;
    let db = TestDb::new().await;
    create_run_counter(&db).await;
    let client = tuma::runner::JobClient::new(db.pool.clone(), Clock::Database);
    let jobs: Vec<NewJob> = (0..JOBS).map(|i| NewJob::new(&Counted { in_tx: i % 2 == 0 })).collect();
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(client.enqueue_many(&mut tx, &jobs).await.unwrap(), JOBS as u64);
    tx.commit().await.unwrap();

    let mut nodes = Vec::new();
    for node in 0..4 {
        let config = runner_config(&format!("[runner]\nnode_id = \"node-{node}\"\nclaim_batch = 100"));
        let runner = Runner::new(db.node_pool(8).await, config, counted_registry(), Clock::Database).unwrap();
        nodes.push(runner.start().await.unwrap());
    }
    eventually(Duration::from_secs(120), "all jobs completed", || async {
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE state = 'completed'").await == JOBS as i64
    })
    .await;
    for node in nodes {
        assert_eq!(node.shutdown().await.released, 0);
    }

    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM job_runs").await,
        JOBS as i64,
        "some job ran twice"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(DISTINCT job_id) FROM job_runs").await,
        JOBS as i64
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE state <> 'completed'").await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE attempt <> 1").await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE errors <> '[]'").await,
        0,
        "no job failed"
    );
}

#[tokio::test]
async fn a_job_enqueued_in_a_rolled_back_transaction_never_runs() {
    let db = TestDb::new().await;
    create_run_counter(&db).await;
    let runner = Runner::new(db.pool.clone(), runner_config(""), counted_registry(), Clock::Database).unwrap();
    let client = runner.client();
    let mut tx = db.pool.begin().await.unwrap();
    client
        .enqueue(&mut tx, &NewJob::new(&Counted { in_tx: false }))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(runner.work_once("default").await.unwrap(), 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM tuma_jobs").await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job_runs").await, 0);
}

#[tokio::test]
async fn enqueueing_a_unique_key_twice_while_the_first_is_live_gives_one_job() {
    let db = TestDb::new().await;
    create_run_counter(&db).await;
    let runner = Runner::new(db.pool.clone(), runner_config(""), counted_registry(), Clock::Database).unwrap();
    let client = runner.client();
    let job = NewJob::new(&Counted { in_tx: true }).unique_key("payout:42:submit");

    let mut tx = db.pool.begin().await.unwrap();
    let first = client.enqueue(&mut tx, &job).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let second = client.enqueue(&mut tx, &job).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(first, EnqueueOutcome::Inserted(_)));
    assert_eq!(second, EnqueueOutcome::Existing(first.id()));

    // Two enqueues racing for the same new key: still one job.
    let racing = NewJob::new(&Counted { in_tx: true }).unique_key("payout:43:submit");
    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (pool, client, job, barrier) = (db.pool.clone(), client.clone(), racing.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            barrier.wait().await;
            let outcome = client.enqueue(&mut tx, &job).await.unwrap();
            tx.commit().await.unwrap();
            outcome
        }));
    }
    let outcomes: Vec<EnqueueOutcome> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes[0].id(), outcomes[1].id());
    assert_eq!(count(&db.pool, "SELECT count(*) FROM tuma_jobs").await, 2);

    // Once the job has finished, the key is free for new work.
    assert_eq!(runner.work_once("default").await.unwrap(), 2);
    let mut tx = db.pool.begin().await.unwrap();
    let third = client.enqueue(&mut tx, &job).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(third, EnqueueOutcome::Inserted(id) if id != first.id()));
}

#[tokio::test]
async fn a_newly_enqueued_job_wakes_an_idle_runner_without_waiting_for_the_poll() {
    let db = TestDb::new().await;
    create_run_counter(&db).await;
    // A poll interval of a minute: only the NOTIFY can start the job in time.
    let config = runner_config("[runner]\npoll_interval_ms = 60000");
    let runner = Runner::new(db.pool.clone(), config, counted_registry(), Clock::Database).unwrap();
    let client = runner.client();
    let running = runner.start().await.unwrap();
    // The producer has done its first (empty) claim and is waiting once the
    // LISTEN connection is up; give both a moment to get there.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut tx = db.pool.begin().await.unwrap();
    client
        .enqueue(&mut tx, &NewJob::new(&Counted { in_tx: true }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually(Duration::from_secs(10), "the job ran", || async {
        count(&db.pool, "SELECT count(*) FROM job_runs").await == 1
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn while_a_queue_is_busy_an_enqueue_leaves_out_its_notify_and_the_job_still_runs_at_once() {
    let db = TestDb::new().await;
    create_run_counter(&db).await;
    // A poll interval of a minute: the first job can only start by its
    // NOTIFY, the second only by the busy queue's polling. A long debounce
    // and busy window keep the test's timing out of the way.
    let config = runner_config(
        "[runner]\npoll_interval_ms = 60000\nbusy_poll_ms = 10\nbusy_window_ms = 20000\nnotify_debounce_ms = 5000",
    );
    let runner = Runner::new(db.pool.clone(), config, counted_registry(), Clock::Database).unwrap();
    let client = runner.client();
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("tuma_jobs").await.unwrap();
    let running = runner.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pool = db.pool.clone();
    let enqueue = |client: tuma::runner::JobClient| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            client
                .enqueue(&mut tx, &NewJob::new(&Counted { in_tx: true }))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    enqueue(client.clone()).await;
    let first = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the first enqueue notifies")
        .unwrap();
    assert_eq!(first.payload(), "default");
    eventually(Duration::from_secs(10), "the first job ran", || async {
        count(&db.pool, "SELECT count(*) FROM job_runs").await == 1
    })
    .await;

    enqueue(client.clone()).await;
    eventually(Duration::from_secs(10), "the second job ran", || async {
        count(&db.pool, "SELECT count(*) FROM job_runs").await == 2
    })
    .await;
    let second = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(second.is_err(), "the second enqueue sent a NOTIFY: {second:?}");

    // A client that hears nothing notifies every time.
    enqueue(tuma::runner::JobClient::new(db.pool.clone(), Clock::Database)).await;
    tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a client without the runner's ear notifies")
        .unwrap();
    running.shutdown().await;
}

/// On its first run, keeps its context and snoozes; on its second,
/// completes both contexts (the stale one and its own) in one statement.
#[derive(Serialize, Deserialize)]
struct Twice;

impl JobArgs for Twice {
    const KIND: &'static str = "test.twice";
}

#[derive(Clone, Default)]
struct TwiceWorker {
    first: Arc<std::sync::Mutex<Option<JobContext>>>,
    held: Arc<std::sync::Mutex<Option<Vec<bool>>>>,
}

impl Worker for TwiceWorker {
    type Args = Twice;

    async fn work(&self, ctx: JobContext, _: Twice) -> Result<(), JobError> {
        let stale = self.first.lock().unwrap().take();
        let Some(stale) = stale else {
            *self.first.lock().unwrap() = Some(ctx);
            return Err(JobError::Snooze(Duration::ZERO));
        };
        let mut tx = ctx.pool().begin().await?;
        let held = JobContext::complete_all_in(&mut tx, &[&stale, &ctx]).await?;
        tx.commit().await?;
        *self.held.lock().unwrap() = Some(held);
        Ok(())
    }
}

#[tokio::test]
async fn completing_jobs_together_tells_a_stale_attempt_from_the_current_one() {
    let db = TestDb::new().await;
    let worker = TwiceWorker::default();
    let mut registry = Registry::new();
    registry.register(worker.clone());
    let runner = Runner::new(db.pool.clone(), runner_config(""), registry, Clock::Database).unwrap();
    let client = tuma::runner::JobClient::new(db.pool.clone(), Clock::Database);
    let mut tx = db.pool.begin().await.unwrap();
    client.enqueue(&mut tx, &NewJob::new(&Twice)).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(runner.work_once("default").await.unwrap(), 1);
    assert_eq!(runner.work_once("default").await.unwrap(), 1);
    // The same job twice, under its first lease and its second: only the
    // attempt that holds the job now completed it.
    assert_eq!(*worker.held.lock().unwrap(), Some(vec![false, true]));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM tuma_jobs WHERE state = 'completed' AND lease_seq = 2"
        )
        .await,
        1
    );
}
