//! Cron entries fire each tick once, however many nodes run them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;
use tuma::clock::Clock;
use tuma::runner::{catch_up_cron, fire_cron_tick, CronEntry, JobArgs, JobClient, NewJob, Registry, Runner};

use crate::common::{count, eventually, runner_config, TestDb};

#[derive(Serialize, Deserialize)]
struct Report {
    tick: DateTime<Utc>,
}

impl JobArgs for Report {
    const KIND: &'static str = "test.report";
}

fn every_second() -> CronEntry {
    CronEntry::new("test-report", "* * * * * *", |tick| NewJob::new(&Report { tick })).unwrap()
}

#[tokio::test]
async fn two_nodes_firing_the_same_tick_at_the_same_moment_enqueue_one_job() {
    let db = TestDb::new().await;
    let entry = CronEntry::new("daily-reminders", "0 0 6 * * *", |tick| NewJob::new(&Report { tick })).unwrap();
    let tick = Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap();
    assert_eq!(
        entry.tick_at_or_before(tick + chrono::TimeDelta::milliseconds(700)),
        Some(tick)
    );

    let barrier = Arc::new(Barrier::new(2));
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let client = JobClient::new(db.node_pool(2).await, Clock::Database);
        let (entry, barrier) = (entry.clone(), barrier.clone());
        nodes.push(tokio::spawn(async move {
            barrier.wait().await;
            fire_cron_tick(&client, &entry, tick).await.unwrap()
        }));
    }
    let fired: Vec<_> = futures::future::join_all(nodes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(fired.iter().filter(|f| f.is_some()).count(), 1, "{fired:?}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM tuma_jobs").await, 1);

    // Firing the same tick again later, after its job is long done, still
    // enqueues nothing.
    sqlx::query("UPDATE tuma_jobs SET state = 'completed', finished_at = now()")
        .execute(&db.pool)
        .await
        .unwrap();
    let client = JobClient::new(db.pool.clone(), Clock::Database);
    assert_eq!(fire_cron_tick(&client, &entry, tick).await.unwrap(), None);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM tuma_jobs").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_running_schedulers_on_one_database_fire_each_tick_once() {
    let db = TestDb::new().await;
    // No queue works "test.report" here; the jobs stay available to count.
    let config = runner_config("[runner.queues.other]\nconcurrency = 1");
    let mut config = config;
    config.queues.remove("default");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let runner = Runner::new(db.node_pool(4).await, config.clone(), Registry::new(), Clock::Database)
            .unwrap()
            .with_cron(vec![every_second()]);
        nodes.push(runner.start().await.unwrap());
    }
    eventually(Duration::from_secs(15), "three ticks fired", || async {
        count(&db.pool, "SELECT count(*) FROM tuma_cron_ticks").await >= 3
    })
    .await;
    for node in nodes {
        node.shutdown().await;
    }
    let ticks = count(&db.pool, "SELECT count(*) FROM tuma_cron_ticks").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM tuma_jobs").await,
        ticks,
        "a tick fired twice"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT date_trunc('second', tick_at)) FROM tuma_cron_ticks"
        )
        .await,
        ticks,
        "one second's tick was recorded under two keys"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM tuma_cron_ticks WHERE tick_at <> date_trunc('second', tick_at)"
        )
        .await,
        0,
        "a tick key is not the schedule's own instant"
    );
}

#[tokio::test]
async fn a_tick_missed_at_its_instant_is_fired_late_once_while_it_is_young_enough() {
    let db = TestDb::new().await;
    let entry = CronEntry::new("nightly", "0 30 0 * * *", |tick| NewJob::new(&Report { tick })).unwrap();
    let entries = [entry.clone()];
    let client = JobClient::new(db.pool.clone(), Clock::Database);
    let tick = Utc.with_ymd_and_hms(2026, 12, 5, 0, 30, 0).unwrap();
    let window = Duration::from_secs(12 * 3_600);
    let at = |by: chrono::TimeDelta| tick + by;

    // A node ran the entry before its tick (its first pass fires nothing).
    assert_eq!(
        catch_up_cron(&client, &entries, at(-chrono::TimeDelta::hours(2)), window)
            .await
            .unwrap(),
        0
    );
    // Seconds after its instant it is the scheduler's to fire.
    assert_eq!(
        catch_up_cron(&client, &entries, at(chrono::TimeDelta::seconds(10)), window)
            .await
            .unwrap(),
        0
    );
    // Every node was down at 00:30; the first back, at 00:40, fires it.
    assert_eq!(
        catch_up_cron(&client, &entries, at(chrono::TimeDelta::minutes(10)), window)
            .await
            .unwrap(),
        1
    );
    let fired_for: DateTime<Utc> = sqlx::query_scalar("SELECT (args->>'tick')::timestamptz FROM tuma_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(fired_for, tick, "the job is the missed tick's");
    // The next pass, another node, or the scheduler find it fired.
    assert_eq!(
        catch_up_cron(&client, &entries, at(chrono::TimeDelta::minutes(11)), window)
            .await
            .unwrap(),
        0
    );
    assert_eq!(fire_cron_tick(&client, &entry, tick).await.unwrap(), None);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM tuma_jobs").await, 1);

    // A tick older than the window is left: its record may be forgotten
    // by then, and firing it could fire it twice.
    assert_eq!(
        catch_up_cron(
            &client,
            &entries,
            at(chrono::TimeDelta::days(1) + chrono::TimeDelta::hours(13)),
            window
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM tuma_jobs").await, 1);
}

#[tokio::test]
async fn a_first_start_a_new_entry_or_a_changed_schedule_fires_no_tick_from_before_it() {
    let db = TestDb::new().await;
    let client = JobClient::new(db.pool.clone(), Clock::Database);
    let nightly = CronEntry::new("nightly", "0 30 0 * * *", |tick| NewJob::new(&Report { tick })).unwrap();
    let window = Duration::from_secs(12 * 3_600);
    let tick = Utc.with_ymd_and_hms(2026, 12, 5, 0, 30, 0).unwrap();
    let at = |by: chrono::TimeDelta| tick + by;

    // First started at 10:00: the 00:30 run was never owed.
    let start = at(chrono::TimeDelta::hours(9) + chrono::TimeDelta::minutes(30));
    assert_eq!(
        catch_up_cron(&client, std::slice::from_ref(&nightly), start, window)
            .await
            .unwrap(),
        0
    );
    // An entry added later is owed from when it was added, not before.
    let hourly = CronEntry::new("hourly", "0 0 * * * *", |tick| NewJob::new(&Report { tick })).unwrap();
    let both = [nightly.clone(), hourly];
    let added = start + chrono::TimeDelta::minutes(20);
    assert_eq!(catch_up_cron(&client, &both, added, window).await.unwrap(), 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM tuma_jobs").await, 0);
    // Its next tick, 11:00, missed by every node: owed and fired at 11:05.
    assert_eq!(
        catch_up_cron(&client, &both, start + chrono::TimeDelta::minutes(65), window)
            .await
            .unwrap(),
        1
    );
    // The nightly moved to 01:00 at 11:10: its 01:00 tick of today came
    // before the change and is not owed; tomorrow's is.
    let moved = [CronEntry::new("nightly", "0 0 1 * * *", |tick| NewJob::new(&Report { tick })).unwrap()];
    let changed = start + chrono::TimeDelta::minutes(70);
    assert_eq!(catch_up_cron(&client, &moved, changed, window).await.unwrap(), 0);
    let tomorrow = Utc.with_ymd_and_hms(2026, 12, 6, 1, 10, 0).unwrap();
    assert_eq!(catch_up_cron(&client, &moved, tomorrow, window).await.unwrap(), 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM tuma_jobs").await, 2);
}
