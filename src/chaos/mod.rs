//! `tuma chaos`: the soak that checks the promise (no intent lost, no money
//! moved twice) under the failures providers and machines really produce.
//!
//! It runs every provider simulator in this process, with callbacks lost,
//! duplicated and reordered, submissions that time out after moving the
//! money, and 5xx bursts; two real `tuma serve` processes share one fresh
//! database; it submits payouts and collections through their HTTP API
//! (retrying, under the same idempotency key, whatever a crash cut off),
//! and along the way starves the M-Pesa float for a while, kills one engine
//! with SIGKILL and restarts it, and cuts every database connection. Then
//! it checks the books against the simulators' own records.

mod engines;
mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{Mutex, Semaphore};

use crate::api::Scope;
use crate::config::Config;
use crate::demo::api::Api;
use crate::demo::postgres::DemoDatabase;
use crate::simulator::{Chaos, SimOptions, SimulatedProvider};
use engines::Engine;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Intents to run: payouts, and about one collection for every three.
    #[arg(long, default_value_t = 2_000)]
    payouts: usize,
    /// Seed of the intent mix and of every simulator's chaos.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// HTTP clients submitting at once.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long every intent may take to settle once all are submitted, s.
    #[arg(long, default_value_t = 900)]
    settle_limit_s: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The soak's provider misbehaviour (per mille): a real provider's bad
/// day, all at once.
fn soak_chaos() -> Chaos {
    Chaos {
        callback_loss_permille: 100,
        callback_duplicate_permille: 50,
        callback_max_delay_ms: 1_000,
        server_error_permille: 10,
        timeout_after_money_permille: 20,
        callback_before_response: false,
    }
}

/// The M-Pesa B2C float at the start: too little, so payouts wait for the
/// top-up part-way through.
const OPENING_FLOAT_KES: u64 = 20_000;
const TOP_UP_KES: u64 = 1_000_000_000;
/// How long simulated payers take to let a prompt lapse.
const PROMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may keep failing (engine down, connections cut)
/// before the soak gives up on it.
const SUBMIT_PATIENCE: Duration = Duration::from_secs(120);

/// What goes wrong, and when: at a share of the intents submitted.
#[derive(Debug, Clone, Copy)]
enum Fault {
    ServerErrors(&'static str),
    KillAndRestart,
    TopUpFloat,
    DropConnections,
}

const FAULTS: [(f64, Fault); 5] = [
    (0.15, Fault::ServerErrors("mtn")),
    (0.30, Fault::KillAndRestart),
    (0.45, Fault::TopUpFloat),
    (0.55, Fault::DropConnections),
    (0.70, Fault::ServerErrors("airtel")),
];

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub intents_planned: usize,
    pub intents_created: usize,
    /// `provider` → `kind` → `state` → count.
    pub intents: BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>>,
    /// Intents left to a person, with the event that put them there and
    /// how the soak, as that person, settled them from the provider's
    /// statement.
    pub unresolved: Vec<String>,
    pub submissions_retried: usize,
    pub callbacks_lost: u64,
    pub callbacks_duplicated_by_provider: u64,
    pub duplicates_ignored: i64,
    pub outcomes_learned_by_polling: i64,
    pub ambiguous_submissions: u64,
    pub server_error_bursts: usize,
    pub engines_killed: usize,
    pub database_connections_cut: i64,
    pub payouts_held_for_float: i64,
    pub double_payments: usize,
    pub ledger_balanced: BTreeMap<String, bool>,
    pub float_mismatches: Vec<String>,
    /// Every broken promise, in words; empty when the soak passed.
    pub violations: Vec<String>,
    pub seconds: f64,
    pub ok: bool,
}

/// Runs the soak; `Ok(false)` when an invariant failed.
pub async fn run(config: Config, args: ChaosArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.payouts >= 1, "--payouts must be at least 1");
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    let started = Instant::now();
    let database = DemoDatabase::provision(&config.database.url, "chaos").await?;
    let dir = std::env::temp_dir().join(format!("tuma-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let outcome = soak(&config, &args, &database, &dir, started).await;
    database.remove().await;
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            eprintln!("engine logs kept in {}", dir.display());
            return Err(error);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if report.ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("engine logs kept in {}", dir.display());
    }
    Ok(report.ok)
}

async fn soak(
    config: &Config,
    args: &ChaosArgs,
    database: &DemoDatabase,
    dir: &std::path::Path,
    started: Instant,
) -> anyhow::Result<Report> {
    let mut own = config.database.clone();
    own.url = database.url.clone();
    own.create_if_missing = true;
    own.max_connections = 8;
    let pool = crate::store::open(&own).await?;

    let chaos = soak_chaos();
    let mut sims: Vec<Arc<dyn SimulatedProvider>> = Vec::new();
    for provider in crate::simulator::PROVIDERS {
        let sim = crate::simulator::spawn(
            provider,
            SimOptions {
                chaos: chaos.clone(),
                seed: args.seed,
                prompt_timeout: PROMPT_TIMEOUT,
                ..SimOptions::default()
            },
        )
        .await
        .with_context(|| format!("starting the {provider} simulator"))?;
        sims.push(sim);
    }
    let sim = |name: &str| {
        sims.iter()
            .find(|s| s.name() == name)
            .cloned()
            .expect("a simulator per provider")
    };
    sim("mpesa").set_float("KES", OPENING_FLOAT_KES);

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    // Every provider calls back to engine A (a load balancer's one public
    // address would do the same); both engines submit and poll.
    let [a_port, b_port] = engines::free_ports()?;
    let overlay = engine_overlay(config, &sims, &format!("http://127.0.0.1:{a_port}"))?;
    let mut a = Engine::new("a", a_port, dir, &database.url, overlay.clone())?;
    let mut b = Engine::new("b", b_port, dir, &database.url, overlay)?;
    a.start(&http).await?;
    b.start(&http).await?;
    let engines = Arc::new(Mutex::new([a, b]));
    let urls: Vec<String> = {
        let engines = engines.lock().await;
        engines.iter().map(|e| e.url.clone()).collect()
    };

    let admin = crate::api::create_key(&pool, "chaos-admin", "chaos", &[Scope::Admin]).await?;
    let product = crate::api::create_key(
        &pool,
        "chaos-product",
        "chaos",
        &[Scope::IntentsWrite, Scope::IntentsRead, Scope::PartiesWrite],
    )
    .await?;
    let client = Client {
        http: http.clone(),
        urls: urls.clone(),
    };
    // Set-up and the faults' own requests go to engine A, never killed.
    let api = Api::new(urls[0].clone());
    setup(&api, &admin, &sims, config).await?;

    let planned = plan::plan(args.payouts, args.seed);
    let submitted = Arc::new(AtomicUsize::new(0));
    let faults = tokio::spawn(inject_faults(
        Arc::clone(&engines),
        sims.clone(),
        chaos.clone(),
        pool.clone(),
        database.url.clone(),
        api,
        admin.clone(),
        Arc::clone(&submitted),
        args.payouts,
    ));

    let gate = Arc::new(Semaphore::new(args.clients));
    let mut tasks = Vec::with_capacity(planned.len());
    for (i, intent) in planned.into_iter().enumerate() {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let (client, key, submitted) = (client.clone(), product.clone(), Arc::clone(&submitted));
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let outcome = client.submit(i, &intent, &key).await;
            submitted.fetch_add(1, Ordering::Relaxed);
            outcome
        }));
    }
    let mut report = Report {
        seed: args.seed,
        intents_planned: args.payouts,
        ..Report::default()
    };
    let mut created = BTreeSet::new();
    for task in tasks {
        match task.await? {
            Ok((id, retries)) => {
                created.insert(id);
                report.submissions_retried += retries;
            }
            Err(why) => report.violations.push(why),
        }
    }
    let injected = faults.await??;
    report.server_error_bursts = injected.bursts;
    report.engines_killed = injected.kills;
    report.database_connections_cut = injected.connections_cut;
    report.payouts_held_for_float = injected.held_for_float;
    report.intents_created = created.len();

    let settled = settle(&pool, &engines, Duration::from_secs(args.settle_limit_s), args.json).await;
    if let Err(why) = settled {
        report.violations.push(why);
    }
    let operator = Api::new(urls[0].clone());
    settle_from_statements(&pool, &operator, &admin, &sims, &mut report).await?;
    {
        let mut engines = engines.lock().await;
        for engine in engines.iter_mut() {
            if let Some(crash) = engine.crashed() {
                report.violations.push(crash);
            }
            engine.stop().await;
        }
    }
    check(&pool, &sims, &created, &mut report).await?;
    report.callbacks_lost = sims.iter().map(|s| s.callbacks_lost()).sum();
    report.callbacks_duplicated_by_provider = sims.iter().map(|s| s.callbacks_duplicated()).sum();
    report.ambiguous_submissions = sims.iter().map(|s| s.timeouts_after_money()).sum();
    report.seconds = started.elapsed().as_secs_f64();
    report.ok = report.violations.is_empty();
    pool.close().await;
    Ok(report)
}

/// The engines' configuration over the built-in one: the soak's database,
/// the simulators' addresses, short leases (so a killed engine's jobs are
/// rescued within seconds), and policy limits out of the way.
fn engine_overlay(
    config: &Config,
    sims: &[Arc<dyn SimulatedProvider>],
    callback_base_url: &str,
) -> anyhow::Result<toml::Table> {
    let mut scratch = config.clone();
    let mut overlay: toml::Table = toml::from_str(
        r#"
        [database]
        max_connections = 16
        create_if_missing = false
        idle_in_transaction_timeout_ms = 2500
        [runner]
        node_id = ""
        lease_ms = 5000
        heartbeat_interval_ms = 1000
        rescue_interval_ms = 1000
        [policy]
        default_kyc_tier = 2
        velocity = []
        [mpesa]
        float_check = true
        float_max_age_s = 15
        [log]
        filter = "warn,sqlx=error"
        "#,
    )?;
    for sim in sims {
        // Points the simulator's portal-configured callback URL at engine A.
        sim.configure(&mut scratch, callback_base_url);
        let section = overlay
            .entry(sim.name())
            .or_insert_with(|| toml::Table::new().into())
            .as_table_mut()
            .context("a provider section is a table")?;
        section.insert("base_url".into(), sim.base_url().into());
        section.insert("callback_base_url".into(), callback_base_url.into());
    }
    Ok(overlay)
}

/// The engine's HTTP API, through whichever engine answers.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
}

impl Client {
    /// POSTs until an engine accepts it, the same Idempotency-Key every
    /// time; the intent's id and how many retries it took.
    async fn submit(&self, i: usize, intent: &plan::Planned, key: &str) -> Result<(String, usize), String> {
        let deadline = Instant::now() + SUBMIT_PATIENCE;
        let mut retries = 0;
        loop {
            let url = &self.urls[(i + retries) % self.urls.len()];
            let answer = self
                .http
                .post(format!("{url}/v1/{}", intent.path))
                .bearer_auth(key)
                .header("Idempotency-Key", &intent.idempotency_key)
                .json(&intent.body)
                .send()
                .await;
            let why = match answer {
                Ok(response) if response.status().is_success() => {
                    let body: Value = response.json().await.map_err(|e| e.to_string())?;
                    let id = body["id"].as_str().ok_or("an intent without an id")?;
                    return Ok((id.to_owned(), retries));
                }
                // Refused for good: the plan only asks what the engine
                // should accept, so this breaks the soak.
                Ok(response) if response.status().is_client_error() && response.status().as_u16() != 409 => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    return Err(format!(
                        "{} {i} via {} refused: {status} {body}",
                        intent.path, intent.provider
                    ));
                }
                // 409: the same key still in flight elsewhere; 5xx: the
                // engine is in trouble. Both are asked again.
                Ok(response) => format!("HTTP {}", response.status()),
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "{} {i} via {} never accepted: {why}",
                    intent.path, intent.provider
                ));
            }
            retries += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Funds the paying parties and records each provider's opening float.
async fn setup(api: &Api, admin: &str, sims: &[Arc<dyn SimulatedProvider>], config: &Config) -> anyhow::Result<()> {
    for currency in plan::CURRENCIES {
        for i in 0..plan::PARTIES {
            let party = plan::party(currency, i);
            api.ok(
                &format!("/v1/parties/{party}/credits"),
                admin,
                &json!({ "amount": "1000000000", "currency": currency, "reference": format!("budget-{party}") }),
            )
            .await?;
        }
    }
    for sim in sims {
        let currencies = config
            .providers
            .get(sim.name())
            .map(|p| p.currencies.keys().map(|c| c.to_string()).collect::<Vec<_>>())
            .unwrap_or_default();
        for currency in currencies {
            api.ok(
                &format!("/v1/floats/{}/adjustments", sim.name()),
                admin,
                &json!({ "amount": sim.float(&currency).to_string(), "currency": currency,
                             "reference": format!("opening-float-{currency}") }),
            )
            .await?;
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Injected {
    bursts: usize,
    kills: usize,
    connections_cut: i64,
    held_for_float: i64,
}

/// Fires each fault once its share of the intents has been submitted.
#[allow(clippy::too_many_arguments)]
async fn inject_faults(
    engines: Arc<Mutex<[Engine; 2]>>,
    sims: Vec<Arc<dyn SimulatedProvider>>,
    chaos: Chaos,
    pool: sqlx::PgPool,
    database_url: String,
    api: Api,
    admin: String,
    submitted: Arc<AtomicUsize>,
    total: usize,
) -> anyhow::Result<Injected> {
    let mut injected = Injected::default();
    let http = reqwest::Client::new();
    for (share, fault) in FAULTS {
        while (submitted.load(Ordering::Relaxed) as f64) < share * total as f64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match fault {
            Fault::ServerErrors(provider) => {
                let sim = sims.iter().find(|s| s.name() == provider).context("simulator")?;
                sim.set_chaos(Chaos {
                    server_error_permille: 1000,
                    ..chaos.clone()
                });
                tokio::time::sleep(Duration::from_secs(3)).await;
                sim.set_chaos(chaos.clone());
                injected.bursts += 1;
            }
            Fault::KillAndRestart => {
                let mut engines = engines.lock().await;
                let engine = &mut engines[1];
                engine.kill().await?;
                injected.kills += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
                engine.start(&http).await?;
            }
            Fault::TopUpFloat => {
                injected.held_for_float = crate::store::reports::held_for_float(&pool).await?;
                let mpesa = sims.iter().find(|s| s.name() == "mpesa").context("simulator")?;
                mpesa.top_up("KES", TOP_UP_KES);
                api.ok(
                    "/v1/floats/mpesa/adjustments",
                    &admin,
                    &json!({ "amount": TOP_UP_KES.to_string(), "currency": "KES", "reference": "top-up-1" }),
                )
                .await?;
            }
            Fault::DropConnections => {
                injected.connections_cut = drop_connections(&database_url).await?;
            }
        }
    }
    Ok(injected)
}

/// Terminates every server connection to the soak's database but the one
/// asking, as a failover or a network cut would.
async fn drop_connections(database_url: &str) -> anyhow::Result<i64> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(database_url).await?;
    let cut = crate::store::reports::terminate_other_connections(&mut connection).await?;
    connection.close().await?;
    Ok(cut)
}

/// Waits until every intent is final or `unresolved`.
async fn settle(pool: &sqlx::PgPool, engines: &Mutex<[Engine; 2]>, limit: Duration, quiet: bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last_said = Instant::now();
    loop {
        let progress = crate::store::reports::scenario_progress(pool)
            .await
            .map_err(|e| e.to_string())?;
        let (settled, total) = progress
            .iter()
            .filter(|(name, _, _)| name == "chaos")
            .fold((0, 0), |(s, t), (_, settled, total)| (s + settled, t + total));
        if settled == total {
            return Ok(());
        }
        {
            let mut engines = engines.lock().await;
            if let Some(crash) = engines.iter_mut().find_map(Engine::crashed) {
                return Err(crash);
            }
        }
        if !quiet && last_said.elapsed() > Duration::from_secs(5) {
            let open = crate::store::reports::scenario_open(pool, "chaos", 4)
                .await
                .unwrap_or_default();
            let open: Vec<String> = open
                .into_iter()
                .map(|(provider, kind, state, n)| format!("{n} {provider} {kind} {state}"))
                .collect();
            eprintln!("chaos: {settled}/{total} intents settled (open: {})", open.join(", "));
            last_said = Instant::now();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} intents still open {} s after the last submission",
                total - settled,
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What an operator does with the intents left `unresolved`: looks each up
/// on the provider's statement (the simulator's record of the money it
/// moved) and resolves it through the API with that evidence, so that the
/// check that follows holds the books to the whole truth. An intent with a
/// request id is found by it; a prompt whose id was never learned, by the
/// payer's number and the amount. Each line says what was left and why,
/// and how it was settled.
async fn settle_from_statements(
    pool: &sqlx::PgPool,
    api: &Api,
    admin: &str,
    sims: &[Arc<dyn SimulatedProvider>],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    for intent in crate::store::reports::scenario_unresolved(pool, "chaos").await? {
        let Some(sim) = sims.iter().find(|s| s.name() == intent.provider) else {
            continue;
        };
        let direction = if intent.kind == "payout" {
            "payout"
        } else {
            "collection"
        };
        let amount = intent.amount.to_u64();
        let line = sim.movements().into_iter().find(|m| {
            m.direction == direction
                && m.currency == intent.currency
                && !claimed.contains(&m.receipt)
                && match &intent.provider_ref {
                    Some(reference) => &m.request_id == reference,
                    None => m.msisdn == intent.msisdn && Some(m.amount) == amount,
                }
        });
        let body = match &line {
            Some(line) => {
                claimed.insert(line.receipt.clone());
                json!({ "outcome": "succeeded", "receipt": line.receipt,
                        "evidence": format!("{} statement: receipt {}", intent.provider, line.receipt) })
            }
            None => json!({ "outcome": "failed",
                            "evidence": format!("no line for this request on the {} statement", intent.provider) }),
        };
        let settled = match api
            .ok(&format!("/v1/{}s/{}/resolve", intent.kind, intent.id), admin, &body)
            .await
        {
            Ok(_) => format!(
                "settled from the statement as {}",
                body["outcome"].as_str().unwrap_or_default()
            ),
            // Left unresolved: the checks that follow judge the books.
            Err(error) => format!("could not be settled: {error:#}"),
        };
        if intent.reason.is_none() {
            report.violations.push(format!(
                "{} {} is unresolved without a recorded reason",
                intent.kind, intent.id
            ));
        }
        report.unresolved.push(format!(
            "{} {} ({}): {}; {settled}",
            intent.kind,
            intent.id,
            intent.provider,
            intent.reason.as_deref().unwrap_or("no recorded reason"),
        ));
    }
    Ok(())
}

/// The promise, checked: every accepted intent exists once and is settled,
/// no request moved money twice, the books balance, and every provider
/// float in the simulators equals the ledger's.
async fn check(
    pool: &sqlx::PgPool,
    sims: &[Arc<dyn SimulatedProvider>],
    created: &BTreeSet<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let rows = crate::store::reports::scenario_intents(pool, "chaos").await?;
    let stored: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let lost = created.iter().filter(|id| !stored.contains(id.as_str())).count();
    if lost > 0 {
        report.violations.push(format!("{lost} accepted intents are missing"));
    }
    if rows.len() != created.len() {
        report.violations.push(format!(
            "{} intents stored for {} accepted requests: a retry created a second intent",
            rows.len(),
            created.len()
        ));
    }
    for (_, provider, kind, state) in &rows {
        *report
            .intents
            .entry(provider.clone())
            .or_default()
            .entry(kind.clone())
            .or_default()
            .entry(state.clone())
            .or_default() += 1;
    }

    let mut per_request: BTreeMap<(&str, &str, String), usize> = BTreeMap::new();
    for sim in sims {
        for movement in sim.movements() {
            *per_request
                .entry((sim.name(), movement.direction, movement.request_id))
                .or_default() += 1;
        }
    }
    report.double_payments = per_request.values().filter(|n| **n > 1).count();
    for ((provider, direction, request), count) in per_request.iter().filter(|(_, n)| **n > 1) {
        report.violations.push(format!(
            "{provider} moved money {count} times for {direction} request {request}"
        ));
    }

    for problem in crate::ledger::check_invariants(pool).await? {
        report.violations.push(format!("ledger: {problem}"));
    }
    for (currency, sum) in crate::store::reports::ledger_sums(pool).await? {
        if !sum.is_zero() {
            report
                .violations
                .push(format!("ledger does not balance in {currency}: {sum}"));
        }
        report.ledger_balanced.insert(currency, sum.is_zero());
    }
    let ledger_floats = crate::store::reports::ledger_floats(pool).await?;
    for float in &ledger_floats {
        let Some(sim) = sims.iter().find(|s| s.name() == float.provider) else {
            continue;
        };
        let provider = Decimal::from(sim.float(&float.currency));
        if provider != float.posted {
            let line = format!(
                "{} {}: simulator {provider}, ledger {}",
                float.provider, float.currency, float.posted
            );
            report.violations.push(format!("float mismatch: {line}"));
            report.float_mismatches.push(line);
        }
    }
    report.duplicates_ignored = crate::store::reports::duplicate_callbacks(pool).await?;
    report.outcomes_learned_by_polling = crate::store::reports::applied_events(pool, "poll").await?;
    Ok(())
}

fn print_report(report: &Report) {
    println!(
        "Tuma chaos soak — seed {}, {} intents",
        report.seed, report.intents_planned
    );
    println!();
    println!("Intents by provider, kind and final state");
    for (provider, kinds) in &report.intents {
        for (kind, states) in kinds {
            let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            println!("    {provider:<11} {kind:<11} {}", states.join(", "));
        }
    }
    for line in &report.unresolved {
        println!("    left unresolved: {line}");
    }
    println!();
    println!("What went wrong on purpose");
    println!("    callbacks lost by providers            {}", report.callbacks_lost);
    println!(
        "    callbacks sent twice by providers      {} (duplicates ignored: {})",
        report.callbacks_duplicated_by_provider, report.duplicates_ignored
    );
    println!(
        "    submissions timed out after moving money {}",
        report.ambiguous_submissions
    );
    println!(
        "    5xx bursts                             {}",
        report.server_error_bursts
    );
    println!("    engines killed with SIGKILL            {}", report.engines_killed);
    println!(
        "    database connections cut               {}",
        report.database_connections_cut
    );
    println!(
        "    payouts held for the M-Pesa float      {}",
        report.payouts_held_for_float
    );
    println!(
        "    submissions retried                    {}",
        report.submissions_retried
    );
    println!(
        "    outcomes learned by status polling     {}",
        report.outcomes_learned_by_polling
    );
    println!();
    println!("The promise");
    println!(
        "    intents accepted {} of {}, all stored once: {}",
        report.intents_created,
        report.intents_planned,
        if report
            .violations
            .iter()
            .any(|v| v.contains("missing") || v.contains("second intent"))
        {
            "NO"
        } else {
            "yes"
        }
    );
    println!("    double payments: {}", report.double_payments);
    for (currency, balanced) in &report.ledger_balanced {
        println!(
            "    ledger balanced in {currency}: {}",
            if *balanced { "yes" } else { "NO" }
        );
    }
    println!(
        "    provider floats equal the ledger's: {}",
        if report.float_mismatches.is_empty() {
            "yes"
        } else {
            "NO"
        }
    );
    for violation in report.violations.iter().take(20) {
        println!("    ✗ {violation}");
    }
    if report.violations.len() > 20 {
        println!("    … and {} more", report.violations.len() - 20);
    }
    println!();
    println!(
        "{} in {:.1} s",
        if report.ok {
            "Every invariant held"
        } else {
            "An invariant FAILED"
        },
        report.seconds
    );
}
