//! Crashes, long jobs and shutdowns: no job is lost and none runs twice
//! merely because a node died or a job was slow.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tuma::clock::{Clock, ManualClock};
use tuma::runner::{JobArgs, JobClient, JobContext, JobError, NewJob, Registry, Runner, Worker};

use crate::common::{count, eventually, runner_config, TestDb};

#[derive(Serialize, Deserialize)]
struct Step {}

impl JobArgs for Step {
    const KIND: &'static str = "test.step";
}

/// Signals when it starts, then waits for `release` (or forever).
struct Gated {
    started: Arc<Notify>,
    release: Arc<Notify>,
    runs: Arc<AtomicUsize>,
}

impl Worker for Gated {
    type Args = Step;

    async fn work(&self, _ctx: JobContext, _args: Step) -> Result<(), JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        self.release.notified().await;
        Ok(())
    }
}

struct Quick {
    runs: Arc<AtomicUsize>,
}

impl Worker for Quick {
    type Args = Step;

    async fn work(&self, _ctx: JobContext, _args: Step) -> Result<(), JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn gated() -> (Registry, Arc<Notify>, Arc<Notify>, Arc<AtomicUsize>) {
    let (started, release, runs) = (
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut registry = Registry::new();
    registry.register(Gated {
        started: started.clone(),
        release: release.clone(),
        runs: runs.clone(),
    });
    (registry, started, release, runs)
}

fn quick() -> (Registry, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry.register(Quick { runs: runs.clone() });
    (registry, runs)
}

async fn enqueue(client: &JobClient, n: usize) {
    let mut tx = client.pool().begin().await.unwrap();
    client
        .enqueue_many(&mut tx, &vec![NewJob::new(&Step {}); n])
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_job_is_rescued_and_completed_by_another_node_after_its_lease() {
    let db = TestDb::new().await;
    let lease_ms = 1_000;
    let config = runner_config(&format!(
        "[runner]\nlease_ms = {lease_ms}\nheartbeat_interval_ms = 250\nrescue_interval_ms = 100"
    ));

    // Node A runs in a runtime of its own, with its own connections, so that
    // dropping that runtime kills it mid-job the way a crash would: no
    // release, no final heartbeat, its connections simply gone.
    let (a_registry, a_started, _a_release, a_runs) = gated();
    enqueue(&JobClient::new(db.pool.clone(), Clock::Database), 1).await;
    let a_config = runner_config(&format!(
        "[runner]\nnode_id = \"node-a\"\nlease_ms = {lease_ms}\nheartbeat_interval_ms = 250"
    ));
    let a_options = db.options.clone();
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    a_runtime.spawn(async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(a_options)
            .await
            .unwrap();
        let running = Runner::new(pool, a_config, a_registry, Clock::Database)
            .unwrap()
            .start()
            .await
            .unwrap();
        std::future::pending::<()>().await;
        drop(running);
    });
    tokio::time::timeout(Duration::from_secs(10), a_started.notified())
        .await
        .expect("node A started the job");
    // A has been heart-beating; its lease is live. Now it dies.
    let leased_until: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT locked_until FROM tuma_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    a_runtime.shutdown_background();

    let (b_registry, b_runs) = quick();
    let b_runner = Runner::new(db.node_pool(4).await, config, b_registry, Clock::Database).unwrap();
    let b_running = b_runner.start().await.unwrap();
    eventually(Duration::from_secs(30), "node B completed the rescued job", || async {
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE state = 'completed'").await == 1
    })
    .await;
    b_running.shutdown().await;

    assert_eq!(a_runs.load(Ordering::SeqCst), 1);
    assert_eq!(b_runs.load(Ordering::SeqCst), 1);
    let (attempt, attempted_at, errors): (i32, chrono::DateTime<chrono::Utc>, serde_json::Value) =
        sqlx::query_as("SELECT attempt, attempted_at, errors FROM tuma_jobs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempt, 2, "the crashed attempt counts");
    assert!(
        attempted_at >= leased_until,
        "rescued before the lease A held had run out"
    );
    assert_eq!(errors[0]["kind"], "lease_expired");
    assert!(errors[0]["error"].as_str().unwrap().contains("node-a"));
}

#[tokio::test]
async fn a_job_longer_than_its_lease_keeps_it_by_heartbeat_and_is_not_rescued() {
    let db = TestDb::new().await;
    let clock = ManualClock::starting_now();
    // Background services slow enough that this test drives them by hand.
    let config =
        runner_config("[runner]\nlease_ms = 10000\nheartbeat_interval_ms = 5000\nrescue_interval_ms = 3600000");
    let (registry, started, release, runs) = gated();
    let runner = Runner::new(db.pool.clone(), config.clone(), registry, Clock::Manual(clock.clone())).unwrap();
    let rescuer = Runner::new(
        db.node_pool(2).await,
        config,
        Registry::new(),
        Clock::Manual(clock.clone()),
    )
    .unwrap();
    enqueue(&runner.client(), 1).await;
    let handle = runner.clone();
    let running = runner.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("job started");

    // Six lease lengths pass; the heartbeat renews the lease each time.
    for _ in 0..6 {
        clock.advance(Duration::from_millis(8_000));
        handle.heartbeat_once().await.unwrap();
        clock.advance(Duration::from_millis(2_000));
        assert_eq!(rescuer.rescue_once().await.unwrap(), 0, "a live job was rescued");
    }
    release.notify_one();
    eventually(Duration::from_secs(10), "the long job completed", || async {
        count(
            &db.pool,
            "SELECT count(*) FROM tuma_jobs WHERE state = 'completed' AND attempt = 1",
        )
        .await
            == 1
    })
    .await;
    running.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Without heartbeats the same lease does run out, and the rescuer acts.
    enqueue(&rescuer.client(), 1).await;
    let claimed = tuma::runner::store::claim(&db.pool, "default", 1, "silent-node", 10_000, Some(clock.now()))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    clock.advance(Duration::from_millis(10_001));
    assert_eq!(rescuer.rescue_once().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_jobs_in_flight_loses_none() {
    let db = TestDb::new().await;
    let config = runner_config("[runner]\nshutdown_timeout_ms = 200\n[runner.queues.default]\nconcurrency = 4");
    let (registry, _started, release, runs) = gated();
    let runner = Runner::new(db.pool.clone(), config.clone(), registry, Clock::Database).unwrap();
    enqueue(&runner.client(), 20).await;
    let running = runner.start().await.unwrap();
    eventually(Duration::from_secs(10), "four jobs running", || async {
        runs.load(Ordering::SeqCst) == 4
    })
    .await;
    // Let one finish (with the queue paused, so nothing takes its slot); the
    // other three are still running when shutdown's grace period ends.
    running.client().pause_queue("default").await.unwrap();
    release.notify_one();
    eventually(Duration::from_secs(10), "one job completed", || async {
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE state = 'completed'").await == 1
    })
    .await;
    let report = running.shutdown().await;
    assert_eq!(report.released, 3);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE state = 'running'").await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE state = 'completed'").await,
        1
    );
    // Released jobs were given back their attempt: being interrupted by a
    // shutdown is not the job's failure.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM tuma_jobs WHERE state = 'available' AND attempt = 0"
        )
        .await,
        19
    );

    let (registry, quick_runs) = quick();
    let runner = Runner::new(db.pool.clone(), config, registry, Clock::Database).unwrap();
    runner.client().resume_queue("default").await.unwrap();
    let running = runner.start().await.unwrap();
    eventually(Duration::from_secs(20), "every job completed", || async {
        count(&db.pool, "SELECT count(*) FROM tuma_jobs WHERE state = 'completed'").await == 20
    })
    .await;
    running.shutdown().await;
    assert_eq!(quick_runs.load(Ordering::SeqCst), 19);
}

#[tokio::test]
async fn a_late_outcome_for_an_old_lease_never_lands_on_a_newer_lease_of_the_same_node() {
    use tuma::runner::store::{self, Lease};
    let db = TestDb::new().await;
    let clock = ManualClock::starting_now();
    let client = JobClient::new(db.pool.clone(), Clock::Manual(clock.clone()));
    enqueue(&client, 1).await;
    let now = Some(clock.now());
    let first = store::claim(&db.pool, "default", 1, "node-x", 1_000, now)
        .await
        .unwrap()
        .remove(0);
    // node-x stalls past its lease; the rescuer re-queues the job, and
    // node-x itself claims it again.
    clock.advance(Duration::from_millis(1_001));
    assert_eq!(
        store::rescue_expired(&db.pool, 10, Some(clock.now()))
            .await
            .unwrap()
            .len(),
        1
    );
    let second = store::claim(&db.pool, "default", 1, "node-x", 1_000, Some(clock.now()))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(first.id, second.id);
    assert_ne!(first.lease_seq, second.lease_seq);

    let old = Lease {
        id: first.id.get(),
        seq: first.lease_seq,
    };
    let new = Lease {
        id: second.id.get(),
        seq: second.lease_seq,
    };
    assert_eq!(
        store::complete_many(&db.pool, &[old], "node-x", Some(clock.now()))
            .await
            .unwrap(),
        0,
        "the stale attempt completed the new one"
    );
    let statuses = store::heartbeat(&db.pool, &[old, new], "node-x", 1_000, Some(clock.now()))
        .await
        .unwrap();
    assert_eq!(statuses[0].1, store::LeaseStatus::Lost);
    assert!(matches!(
        statuses[1].1,
        store::LeaseStatus::Renewed {
            cancel_requested: false
        }
    ));
    // Both outcomes written by one batch, the stale one first, as the
    // completer can find them: the new lease's completion still lands.
    assert_eq!(
        store::complete_many(&db.pool, &[old, new], "node-x", Some(clock.now()))
            .await
            .unwrap(),
        1
    );
    // Completed under its own lease: finished, not lost (a worker that
    // completes its job in its own transaction is not warned about).
    let statuses = store::heartbeat(&db.pool, &[old, new], "node-x", 1_000, Some(clock.now()))
        .await
        .unwrap();
    assert_eq!(statuses[0].1, store::LeaseStatus::Lost, "{statuses:?}");
    assert_eq!(statuses[1].1, store::LeaseStatus::Finished, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_inside_a_transaction_loses_its_locks_to_the_idle_timeout() {
    let db = TestDb::new().await;
    let mut config = crate::common::config_with("[database]\nidle_in_transaction_timeout_ms = 300").database;
    config.url = db.url();
    config.create_if_missing = false;
    let pool = tuma::store::connect(&config).await.unwrap();
    let setting: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(setting, "300ms");

    // A node that froze (stopped, or cut off with its socket left open)
    // inside a transaction holding a job's row.
    enqueue(&JobClient::new(db.pool.clone(), Clock::Database), 1).await;
    let mut frozen = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM tuma_jobs FOR UPDATE")
        .execute(&mut *frozen)
        .await
        .unwrap();
    // PostgreSQL ends the silent session, and its lock goes with it: the
    // rescuer (which skips locked rows) can reach the job again.
    eventually(
        Duration::from_secs(20),
        "the frozen session's lock to be released",
        || async {
            let mut tx = db.pool.begin().await.unwrap();
            sqlx::query("SELECT id FROM tuma_jobs FOR UPDATE NOWAIT")
                .execute(&mut *tx)
                .await
                .is_ok()
        },
    )
    .await;
    assert!(
        sqlx::query("SELECT 1").execute(&mut *frozen).await.is_err(),
        "the frozen session was ended"
    );
}
