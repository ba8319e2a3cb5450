//! `tuma bench payouts`: payouts end to end, as production runs them:
//! created through the HTTP API, admitted by policy with the ledger hold,
//! submitted by the runner through the Daraja adapter to the in-process
//! simulator, completed by its callbacks, the ledger posted. And `tuma
//! bench api`: payout creation at a fixed rate. Both in a scratch
//! database, dropped afterwards.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::Semaphore;

use super::bench::percentile_ms;
use super::bench_cost::CostMeter;
use crate::api::Scope;
use crate::clock::Clock;
use crate::config::Config;
use crate::runner::QueueConfig;
use crate::simulator::mpesa::{SimConfig, SimHandle};

/// Parties the payouts are spread over (each payout locks its party's row).
const PARTIES: usize = 200;

/// A scratch engine for the end-to-end benchmarks: its own database, the
/// Daraja simulator, the runner and the HTTP API, with funded parties and
/// an API key. Asked not to run jobs, the runner still runs (its LISTEN
/// connection, which lets enqueues leave out their NOTIFY, is part of how
/// a node serves the API) but every queue is paused, so nothing is claimed.
pub(super) struct Scratch {
    pub pool: sqlx::PgPool,
    pub base: String,
    pub key: String,
    pub sim: SimHandle,
    runner: crate::runner::RunningRunner,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    options: PgConnectOptions,
    name: String,
}

impl Scratch {
    pub async fn start(mut config: Config, suffix: &str, run_jobs: bool) -> anyhow::Result<Scratch> {
        let options = PgConnectOptions::from_str(&config.database.url)?;
        let name = format!("{}_bench_{suffix}", options.get_database().unwrap_or("tuma"));
        crate::store::drop_database(&options, &name).await?;
        config.database.url = options.clone().database(&name).to_url_lossy().to_string();
        config.database.create_if_missing = true;
        config.database.max_connections = config.database.max_connections.max(64);
        // Policy out of the way (its checks still run): full KYC, no velocity.
        config.policy.default_kyc_tier = 2;
        config.policy.velocity.clear();
        config.runner.queues.insert(
            "mpesa".into(),
            QueueConfig {
                concurrency: 256,
                rate_per_s: None,
                burst: None,
            },
        );
        let foreground = crate::app::foreground(&config);
        let pool = crate::store::open_with(&config.database, &foreground).await?;

        let sim = SimHandle::spawn(SimConfig {
            float_kes: u64::MAX / 4,
            ..SimConfig::default()
        })
        .await
        .context("starting the Daraja simulator")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let mpesa = config
            .mpesa
            .as_mut()
            .context("the built-in configuration has [mpesa]")?;
        mpesa.base_url = sim.base_url.clone();
        mpesa.callback_base_url = base.clone();
        mpesa.float_check = false;

        let app = crate::app::assemble_with(config.clone(), pool.clone(), foreground, Clock::Database)?;
        if !run_jobs {
            let jobs = app.runner.client();
            for queue in config.runner.queues.keys() {
                jobs.pause_queue(queue).await?;
            }
        }
        let runner = app.runner.start().await.map_err(|e| anyhow::anyhow!(e))?;
        let service = crate::api::router(app.state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = tokio::spawn(async move { axum::serve(listener, service).await });

        let admin = crate::api::create_key(&pool, "bench-admin", "bench", &[Scope::Admin]).await?;
        let key = crate::api::create_key(&pool, "bench", "bench", &[Scope::IntentsWrite, Scope::IntentsRead]).await?;
        let http = reqwest::Client::new();
        for party in 0..PARTIES {
            let response = http
                .post(format!("{base}/v1/parties/payer-{party}/credits"))
                .bearer_auth(&admin)
                .json(&serde_json::json!({ "amount": "100000000000", "currency": "KES", "reference": format!("budget-{party}") }))
                .send()
                .await?;
            anyhow::ensure!(response.status().is_success(), "funding failed: {}", response.status());
        }
        Ok(Scratch {
            pool,
            base,
            key,
            sim,
            runner,
            server,
            options,
            name,
        })
    }

    /// The `i`th payout's request body: 1,000 KES from one of the funded
    /// parties to a recipient the simulator pays.
    pub fn payout(i: usize) -> serde_json::Value {
        serde_json::json!({
            "amount": "1000", "currency": "KES",
            // Last three digits 100–899: recipients the simulator pays.
            "recipient": { "msisdn": format!("0722{:03}{:03}", i / 800 % 1000, 100 + i % 800) },
            "party_id": format!("payer-{}", i % PARTIES), "reference": format!("bench-{i}"),
        })
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.runner.shutdown().await;
        self.server.abort();
        self.pool.close().await;
        crate::store::drop_database(&self.options, &self.name).await?;
        Ok(())
    }
}

/// POSTs the `i`th payout; why not, when it was not created.
async fn create_payout(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    idempotency_key: &str,
    i: usize,
) -> Result<(), String> {
    let response = http
        .post(format!("{base}/v1/payouts"))
        .bearer_auth(key)
        .header("Idempotency-Key", idempotency_key)
        .json(&Scratch::payout(i))
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

pub async fn bench_payouts(config: Config, count: usize, clients: usize) -> anyhow::Result<()> {
    let scratch = Scratch::start(config, "payouts", true).await?;
    let (pool, base, key) = (scratch.pool.clone(), scratch.base.clone(), scratch.key.clone());
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;

    println!(
        "bench payouts: {count} payouts of 1,000 KES from {PARTIES} parties, {clients} HTTP clients, \
         M-Pesa queue concurrency 256, simulator in-process"
    );
    let cost = CostMeter::start(&pool).await;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(clients));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            create_payout(&http, &base, &key, &format!("bench-{i}"), i)
                .await
                .map(|()| sent.elapsed())
        }));
    }
    let mut created = Vec::with_capacity(count);
    let mut refused = 0;
    for task in tasks {
        match task.await? {
            Ok(latency) => created.push(latency.as_micros() as u64),
            Err(_) => refused += 1,
        }
    }
    let create_time = started.elapsed();
    anyhow::ensure!(refused == 0, "{refused} payouts were not created");
    println!(
        "created: {count} in {:.2} s ({:.0} creates/s); create latency p50 {} p99 {}",
        create_time.as_secs_f64(),
        count as f64 / create_time.as_secs_f64(),
        percentile_ms(&mut created, 50.0),
        percentile_ms(&mut created, 99.0)
    );
    let (completed, p50, p99) =
        wait_for_completed(&pool, count, Duration::from_secs(600), Duration::from_millis(100)).await?;
    let total = started.elapsed();
    let spent = cost.spent(&pool).await;
    anyhow::ensure!(
        completed as usize == count,
        "only {completed} of {count} payouts completed within 10 minutes"
    );
    let problems = crate::ledger::check_invariants(&pool).await?;
    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for payment in scratch.sim.payments() {
        *per_request.entry(payment.request_id).or_default() += 1;
    }
    println!(
        "payouts/s (first create to last completed): {:.0}",
        count as f64 / total.as_secs_f64()
    );
    println!(
        "time to completed: p50 {:.1} ms p99 {:.1} ms",
        p50.unwrap_or_default() * 1000.0,
        p99.unwrap_or_default() * 1000.0
    );
    println!("{}", spent.lines(count, "payout"));
    println!(
        "peak RSS: {}; ledger invariants: {}; payments per request id: at most {}",
        peak_rss(),
        if problems.is_empty() { "hold" } else { "BROKEN" },
        per_request.values().max().copied().unwrap_or(0)
    );
    scratch.finish().await?;
    anyhow::ensure!(problems.is_empty(), "ledger invariants broken: {problems:?}");
    Ok(())
}

/// `tuma bench api`: payouts created at a fixed rate for a while, open
/// loop (each request is sent at its scheduled time whether or not earlier
/// ones have answered, and its latency counts from that time, so a stall
/// shows in the numbers instead of slowing the load down).
pub async fn bench_api(
    config: Config,
    rate: u32,
    duration: Duration,
    run_jobs: bool,
    trace: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(rate >= 1, "--rate must be at least 1 request per second");
    let scratch = Scratch::start(config, "api", run_jobs).await?;
    let count = (rate as f64 * duration.as_secs_f64()).round() as usize;
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    // Warm up at the same rate, uncounted: a node that has just started
    // opens its database connections and prepares its statements on the
    // first burst, which is start-up, not serving.
    let warm_count = (rate as usize * WARM_UP_S).min(count.max(1));
    let (warm, _) = open_loop(&http, &scratch, rate, warm_count, count, "warm").await;
    for result in warm {
        result?.map_err(|why| anyhow::anyhow!("warm-up refused: {why}"))?;
    }
    println!(
        "bench api: POST /v1/payouts at {rate}/s for {} s ({count} requests, open loop, after {warm_count} to warm up), queues {}",
        duration.as_secs(),
        if run_jobs { "on" } else { "paused" }
    );
    let cost = CostMeter::start(&scratch.pool).await;
    let (results, sent_in) = open_loop(&http, &scratch, rate, count, 0, "bench").await;
    let spent = cost.spent(&scratch.pool).await;
    let mut latencies = Vec::with_capacity(count);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    // Every request's send time and latency, only when asked for.
    let mut csv = trace.map(|_| String::from("sent_ms,latency_ms\n"));
    for result in results {
        match result? {
            Ok((sent, latency)) => {
                latencies.push(latency.as_micros() as u64);
                if let Some(csv) = &mut csv {
                    csv.push_str(&format!(
                        "{:.3},{:.3}\n",
                        sent.as_secs_f64() * 1e3,
                        latency.as_secs_f64() * 1e3
                    ));
                }
            }
            Err(why) => *errors.entry(why).or_default() += 1,
        }
    }
    if let (Some(path), Some(csv)) = (trace, csv) {
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "sent {count} in {:.2} s ({:.0}/s achieved); {} created, {} refused {errors:?}",
        sent_in.as_secs_f64(),
        count as f64 / sent_in.as_secs_f64(),
        latencies.len(),
        count - latencies.len()
    );
    println!(
        "create latency: p50 {} p99 {} p999 {} max {}",
        percentile_ms(&mut latencies, 50.0),
        percentile_ms(&mut latencies, 99.0),
        percentile_ms(&mut latencies, 99.9),
        percentile_ms(&mut latencies, 100.0)
    );
    println!("{}", spent.lines(count, "create"));
    if run_jobs {
        // Whether the runner kept up: every payout of the run (warm-up
        // included) to completed, and how long that took each.
        let total = warm_count + count;
        let last_sent = Instant::now();
        let (completed, p50, p99) =
            wait_for_completed(&scratch.pool, total, Duration::from_secs(60), Duration::from_millis(50)).await?;
        println!(
            "completed: {completed} of {total} payouts, the last {:.1} s after the last create; \
             time to completed p50 {:.1} ms p99 {:.1} ms",
            last_sent.elapsed().as_secs_f64(),
            p50.unwrap_or_default() * 1000.0,
            p99.unwrap_or_default() * 1000.0
        );
    }
    scratch.finish().await
}

/// Waits, looking every `every`, until `count` payouts are completed or
/// `limit` has passed; returns how many are, and their time to completed
/// at p50 and p99 in seconds.
async fn wait_for_completed(
    pool: &sqlx::PgPool,
    count: usize,
    limit: Duration,
    every: Duration,
) -> anyhow::Result<(i64, Option<f64>, Option<f64>)> {
    let deadline = Instant::now() + limit;
    loop {
        let stats = crate::store::reports::completion_stats(pool, "payout").await?;
        if stats.0 as usize >= count || Instant::now() > deadline {
            return Ok(stats);
        }
        tokio::time::sleep(every).await;
    }
}

/// Seconds of uncounted load at the benchmark's rate before it measures.
const WARM_UP_S: usize = 3;

/// Creation results of one open-loop run.
type Sent = Vec<Result<Result<(Duration, Duration), String>, tokio::task::JoinError>>;

/// Sends `count` payouts (numbered from `first`, keyed `{label}-{i}`) at
/// `rate` per second, each at its scheduled time whatever the earlier ones
/// are doing. Returns, per request, its send time from the start and its
/// latency counted from that scheduled time; and how long sending took.
async fn open_loop(
    http: &reqwest::Client,
    scratch: &Scratch,
    rate: u32,
    count: usize,
    first: usize,
    label: &str,
) -> (Sent, Duration) {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let (http, base, key) = (http.clone(), scratch.base.clone(), scratch.key.clone());
        let i = first + n;
        let idempotency_key = format!("{label}-{i}");
        tasks.push(tokio::spawn(async move {
            create_payout(&http, &base, &key, &idempotency_key, i)
                .await
                .map(|()| (due - started, due.elapsed()))
        }));
    }
    let sent_in = started.elapsed();
    let mut results = Vec::with_capacity(count);
    for task in tasks {
        results.push(task.await);
    }
    (results, sent_in)
}

/// The process's peak resident set (Linux), for the README.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
