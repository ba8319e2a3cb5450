//! `tuma bench …`: measurements on this machine, printed for the README.
//! Benchmarks run in a scratch database (`<name>_bench`) that is dropped
//! afterwards, so they never touch real jobs.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Subcommand;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::Config;
use crate::runner::{JobArgs, JobContext, JobError, JobOptions, NewJob, QueueConfig, Registry, Runner, Worker};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// No-op jobs through the runner: jobs/s and enqueue-to-start latency.
    Jobs {
        /// Jobs to enqueue and run.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Jobs running at once (the bench queue's concurrency).
        #[arg(long, default_value_t = 1_000)]
        concurrency: u32,
        /// Jobs inserted per statement while enqueueing.
        #[arg(long, default_value_t = 5_000)]
        insert_batch: usize,
        /// Single jobs enqueued one at a time afterwards to measure the
        /// idle wake-up latency (LISTEN/NOTIFY); 0 skips it.
        #[arg(long, default_value_t = 200)]
        probes: u32,
    },
    /// Payouts end to end: HTTP API, policy and ledger, runner, Daraja
    /// adapter, in-process simulator, callbacks, completed.
    Payouts {
        /// Payouts to make: enough for about ten seconds at the target
        /// rate, so that the start and the tail weigh little.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// HTTP clients creating payouts at once. Creates are admitted in
        /// groups, so the rate a node reaches grows with the requests in
        /// flight: 2,000 payouts a second at about 100 ms a create is 200
        /// at once.
        #[arg(long, default_value_t = 256)]
        clients: usize,
    },
    /// Payout creation through the HTTP API at a fixed rate (open loop):
    /// p50/p99/p999 latency.
    Api {
        /// Requests per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Seconds to keep the rate.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Run no jobs: every queue paused, so the API is measured alone and no
        /// payout is submitted.
        #[arg(long)]
        no_runner: bool,
        /// Write each request's send time (ms from the start) and latency
        /// (ms) to this CSV file, to see when the slow ones happened.
        #[arg(long, value_name = "FILE")]
        latencies: Option<std::path::PathBuf>,
    },
}

const BENCH_QUEUE: &str = "bench";

/// The benchmark's unit of work: a job that does nothing, on its own queue.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Noop {}

impl JobArgs for Noop {
    const KIND: &'static str = "tuma.bench.noop";

    fn options() -> JobOptions {
        JobOptions {
            queue: BENCH_QUEUE.to_owned(),
            ..JobOptions::default()
        }
    }
}

/// Counts finished no-op jobs and records how long each waited to start.
struct CountingNoop {
    done: Arc<AtomicU64>,
    target: u64,
    finished: Arc<Notify>,
    waits_us: Arc<Mutex<Vec<u64>>>,
}

impl Worker for CountingNoop {
    type Args = Noop;

    async fn work(&self, ctx: JobContext, _args: Noop) -> Result<(), JobError> {
        let waited = (chrono::Utc::now() - ctx.scheduled_at)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        self.waits_us.lock().expect("waits mutex").push(waited as u64);
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.finished.notify_one();
        }
        Ok(())
    }
}

pub async fn run(config: Config, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Jobs {
            count,
            concurrency,
            insert_batch,
            probes,
        } => bench_jobs(config, count, concurrency, insert_batch.max(1), probes).await,
        BenchCommand::Payouts { count, clients } => {
            super::bench_payouts::bench_payouts(config, count, clients.max(1)).await
        }
        BenchCommand::Api {
            rate,
            duration,
            no_runner,
            latencies,
        } => {
            let duration = Duration::from_secs(duration.max(1));
            super::bench_payouts::bench_api(config, rate, duration, !no_runner, latencies.as_deref()).await
        }
    }
}

async fn bench_jobs(
    mut config: Config,
    count: u64,
    concurrency: u32,
    insert_batch: usize,
    probes: u32,
) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(&config.database.url)?;
    let name = format!("{}_bench", options.get_database().unwrap_or("tuma"));
    crate::store::drop_database(&options, &name).await?;
    let url = options.clone().database(&name).to_url_lossy().to_string();
    config.database.url = url;
    config.database.create_if_missing = true;
    let pool = crate::store::open(&config.database).await?;

    config.runner.queues = BTreeMap::from([(
        BENCH_QUEUE.to_owned(),
        QueueConfig {
            concurrency,
            rate_per_s: None,
            burst: None,
        },
    )]);
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(Notify::new());
    let waits_us = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let mut registry = Registry::new();
    registry.register(CountingNoop {
        done: Arc::clone(&done),
        target: count,
        finished: Arc::clone(&finished),
        waits_us: Arc::clone(&waits_us),
    });
    let runner =
        Runner::new(pool.clone(), config.runner.clone(), registry, Clock::Database).map_err(|e| anyhow::anyhow!(e))?;
    let client = runner.client();

    println!(
        "bench jobs: {count} no-op jobs, concurrency {concurrency}, claim batch {}, completion batch {}",
        config.runner.claim_batch, config.runner.completion_batch
    );
    let started = Instant::now();
    let job = NewJob::new(&Noop {}).queue(BENCH_QUEUE);
    let mut remaining = count;
    while remaining > 0 {
        let n = remaining.min(insert_batch as u64) as usize;
        let batch = vec![job.clone(); n];
        let mut tx = pool.begin().await?;
        client.enqueue_many(&mut tx, &batch).await?;
        tx.commit().await?;
        remaining -= n as u64;
    }
    let enqueue_time = started.elapsed();
    println!(
        "enqueued: {count} in {:.2} s ({:.0} inserts/s)",
        enqueue_time.as_secs_f64(),
        count as f64 / enqueue_time.as_secs_f64()
    );

    let cost = super::bench_cost::CostMeter::start(&pool).await;
    let started = Instant::now();
    let running = runner.start().await.map_err(|e| anyhow::anyhow!(e))?;
    if count > 0 {
        finished.notified().await;
    }
    // Shutdown waits for every outcome to be written: the clock stops when
    // the last job is recorded completed, not when it returned.
    let report = running.shutdown().await;
    let run_time = started.elapsed();
    let spent = cost.spent(&pool).await;
    anyhow::ensure!(
        report.released == 0,
        "{} jobs were released at shutdown",
        report.released
    );
    let completed = crate::runner::store::count_in_state(&pool, "completed").await?;
    anyhow::ensure!(
        completed as u64 == count,
        "only {completed} of {count} jobs are recorded completed"
    );

    let mut backlog_waits = std::mem::take(&mut *waits_us.lock().expect("waits mutex"));
    println!("jobs/s: {:.0}", count as f64 / run_time.as_secs_f64());
    println!("{}", spent.lines(count as usize, "job"));
    println!(
        "enqueue-to-start with a {count}-job backlog: p50 {} p99 {}",
        percentile_ms(&mut backlog_waits, 50.0),
        percentile_ms(&mut backlog_waits, 99.0)
    );

    if probes > 0 {
        let mut probe_waits = probe_wake_up(&config, &pool, &done, probes).await?;
        println!(
            "enqueue-to-start when idle (NOTIFY wake-up, {probes} single jobs): p50 {} p99 {}",
            percentile_ms(&mut probe_waits, 50.0),
            percentile_ms(&mut probe_waits, 99.0)
        );
    }
    pool.close().await;
    crate::store::drop_database(&options, &name).await?;
    Ok(())
}

/// Enqueues `probes` jobs one per transaction, each after the previous ran,
/// into an idle runner, and returns how long each waited to start.
async fn probe_wake_up(
    config: &Config,
    pool: &sqlx::PgPool,
    done: &AtomicU64,
    probes: u32,
) -> anyhow::Result<Vec<u64>> {
    let _ = done;
    let finished = Arc::new(Notify::new());
    let waits_us = Arc::new(Mutex::new(Vec::with_capacity(probes as usize)));
    let mut registry = Registry::new();
    registry.register(CountingNoop {
        done: Arc::new(AtomicU64::new(0)),
        target: u64::MAX,
        finished: Arc::clone(&finished),
        waits_us: Arc::clone(&waits_us),
    });
    // Every probe sends its NOTIFY: back to back, the default debounce
    // would leave them to the busy queue's polling, which is not what this
    // measures.
    let mut runner_config = config.runner.clone();
    runner_config.notify_debounce_ms = 0;
    let runner = Runner::new(pool.clone(), runner_config, registry, Clock::Database).map_err(|e| anyhow::anyhow!(e))?;
    let client = runner.client();
    let running = runner.start().await.map_err(|e| anyhow::anyhow!(e))?;
    // Let the LISTEN connection come up before the first probe.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..probes as usize {
        let mut tx = pool.begin().await?;
        client
            .enqueue(&mut tx, &NewJob::new(&Noop {}).queue(BENCH_QUEUE))
            .await?;
        tx.commit().await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while waits_us.lock().expect("waits mutex").len() <= i {
            anyhow::ensure!(Instant::now() < deadline, "probe job {i} did not start within 5 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    running.shutdown().await;
    let waits = std::mem::take(&mut *waits_us.lock().expect("waits mutex"));
    Ok(waits)
}

/// The `p`th percentile of microsecond samples, in milliseconds.
pub(super) fn percentile_ms(values: &mut [u64], p: f64) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    format!("{:.2} ms", values[rank] as f64 / 1000.0)
}
