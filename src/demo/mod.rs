//! `tuma demo`: the whole engine against the built-in provider simulator,
//! on a database of its own, running the product's scenarios through the
//! HTTP API with the simulator's chaos on; then a report of what happened
//! and whether every invariant held (the exit code says so).

pub(crate) mod api;
pub(crate) mod postgres;
mod scenarios;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::FutureExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::api::Scope;
use crate::clock::Clock;
use crate::config::Config;
use crate::simulator::mpesa::{SimConfig, SimHandle};
use crate::simulator::{Chaos, SimOptions, SimulatedProvider};
use crate::store::reports as store;
use rust_decimal::Decimal;
use scenarios::{Ctx, Keys, Notes};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed of the simulator's randomness (chaos, receipts).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The simulator's misbehaviour: none, moderate or heavy.
    #[arg(long, default_value = "moderate")]
    chaos: String,
    /// Multiply every scenario's size.
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// Print the report as JSON (and no progress bars).
    #[arg(long)]
    json: bool,
}

/// The B2C float the simulated account opens with: too little for the
/// wage run, so the float gate holds payouts until the top-up.
const OPENING_FLOAT_KES: u64 = 150_000;
const TOP_UP_KES: u64 = 10_000_000;
/// How long the demo waits for every intent to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(480);
/// Balance queries sent at the end, each given four seconds for its
/// report, before reconciling against the latest report there is: with
/// moderate chaos losing 5 % of callbacks, one ask in twenty found no
/// fresh report and the floats were compared with an old one.
const BALANCE_ASKS: usize = 5;
/// How long the simulated payers take to let a prompt lapse (the
/// providers then report it expired; the engine's own five-minute expiry
/// is for payers who never hear back at all).
const PROMPT_TIMEOUT: Duration = Duration::from_secs(8);

/// The scenarios, in report order: name, title.
const SCENARIOS: [(&str, &str); 5] = [
    (
        "creators",
        "Creator earnings to M-Pesa and Airtel (FX, fees, approval, limits)",
    ),
    ("vpn", "VPN bundles via Vodacom, Tigo and Airtel (Tanzania)"),
    ("donations", "Campaign donations by STK push and an NGO payout"),
    ("loans", "A 5,000 KES loan repaid by C2B payments"),
    ("salaries", "Worker wages by B2C, with a float check"),
];

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub title: String,
    /// `kind` → `state` → count.
    pub intents: BTreeMap<String, BTreeMap<String, i64>>,
    pub notes: Vec<String>,
    pub expectations: Vec<(String, bool)>,
    /// From its first intent's creation to its last one's end.
    pub seconds: Option<f64>,
    /// Why it did not run, when it did not.
    pub skipped: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub chaos: String,
    pub scale: usize,
    pub database: String,
    pub scenarios: Vec<ScenarioReport>,
    pub callbacks_lost: u64,
    pub callbacks_duplicated_by_provider: u64,
    pub duplicates_ignored: i64,
    pub outcomes_learned_by_polling: i64,
    pub ambiguous_submissions: u64,
    /// `(fee account, currency)` → amount.
    pub fees_collected: BTreeMap<String, String>,
    /// Currency → whether posted entries sum to zero.
    pub ledger_balanced: BTreeMap<String, bool>,
    pub ledger_problems: Vec<String>,
    pub double_payouts: usize,
    pub unsettled_intents: i64,
    pub reconciliation_floats_match: bool,
    /// Provider floats where the simulator and the ledger disagree.
    pub float_mismatches: Vec<String>,
    pub seconds: f64,
    pub ok: bool,
}

/// Runs the demo; `Ok(false)` when an invariant failed.
pub async fn run(mut config: Config, args: DemoArgs) -> anyhow::Result<bool> {
    let chaos = Chaos::preset(&args.chaos)
        .ok_or_else(|| anyhow::anyhow!("--chaos must be none, moderate or heavy, not {:?}", args.chaos))?;
    anyhow::ensure!(args.scale >= 1 && args.scale <= 100, "--scale must be 1 to 100");
    let started = Instant::now();
    let database = postgres::DemoDatabase::provision(&config.database.url, "demo").await?;
    let outcome = run_on(&mut config, &args, chaos, &database, started).await;
    database.remove().await;
    let report = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(report.ok)
}

async fn run_on(
    config: &mut Config,
    args: &DemoArgs,
    chaos: Chaos,
    database: &postgres::DemoDatabase,
    started: Instant,
) -> anyhow::Result<Report> {
    config.database.url = database.url.clone();
    config.database.create_if_missing = true;
    let foreground = crate::app::foreground(&config);
    let pool = crate::store::open_with(&config.database, &foreground).await?;

    let sim = SimHandle::spawn(SimConfig {
        float_kes: OPENING_FLOAT_KES,
        chaos: chaos.clone(),
        seed: args.seed,
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
    mpesa.float_check = true;
    mpesa.float_max_age_s = 15;
    let mpesa = mpesa.clone();
    let mut sims: Vec<Arc<dyn SimulatedProvider>> = vec![Arc::new(sim.clone())];
    for provider in crate::simulator::PROVIDERS.iter().filter(|p| **p != "mpesa") {
        let other = crate::simulator::spawn(
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
        other.configure(config, &base);
        sims.push(other);
    }

    let app = crate::app::assemble_with(config.clone(), pool.clone(), foreground, Clock::Database)?;
    let jobs = app.engine.jobs().clone();
    let runner = app.runner.start().await.map_err(|e| anyhow::anyhow!(e))?;
    let service = crate::api::router(app.state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, service).await });

    let key = |name: &'static str, scopes: &'static [Scope]| {
        let pool = pool.clone();
        async move { crate::api::create_key(&pool, name, "demo", scopes).await }
    };
    let keys = Keys {
        admin: key("demo-admin", &[Scope::Admin]).await?,
        product: key(
            "demo-product",
            &[Scope::IntentsWrite, Scope::IntentsRead, Scope::PartiesWrite],
        )
        .await?,
        approver: key("approver-amina", &[Scope::ApprovalsWrite, Scope::IntentsRead]).await?,
        second_approver: key("approver-baraka", &[Scope::ApprovalsWrite, Scope::IntentsRead]).await?,
    };
    let api = api::Api::new(base.clone());
    api.ok(
        "/v1/floats/mpesa/adjustments",
        &keys.admin,
        &json!({ "amount": OPENING_FLOAT_KES.to_string(), "currency": "KES", "reference": "opening-float" }),
    )
    .await?;
    // The other providers' floats, as their simulators open them, so that
    // the ledger's view can be compared with theirs at the end.
    let mut opened = Vec::new();
    for sim in sims.iter().filter(|s| s.name() != "mpesa") {
        let currencies = config
            .providers
            .get(sim.name())
            .map(|p| p.currencies.keys().cloned().collect::<Vec<_>>());
        for currency in currencies.unwrap_or_default() {
            let currency = currency.to_string();
            api.ok(
                &format!("/v1/floats/{}/adjustments", sim.name()),
                &keys.admin,
                &json!({ "amount": sim.float(&currency).to_string(), "currency": currency, "reference": format!("opening-float-{currency}") }),
            )
            .await?;
            opened.push((sim.name().to_owned(), currency));
        }
    }
    let client = crate::providers::mpesa::MpesaClient::new(mpesa.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let token = crate::providers::mpesa::c2b_token(&mpesa);
    client
        .register_c2b_urls(
            &crate::providers::mpesa::callback_url(&mpesa, "c2b-confirmation", &token),
            &crate::providers::mpesa::callback_url(&mpesa, "c2b-validation", &token),
        )
        .await
        .map_err(|e| anyhow::anyhow!("registering C2B URLs: {e}"))?;

    let ctx = Arc::new(Ctx {
        api,
        keys,
        sim: sim.clone(),
        scale: args.scale,
    });
    let bars = Bars::new(args.json);
    let watcher = bars.watch(pool.clone());

    let donations_wait = {
        let pool = pool.clone();
        move || {
            let pool = pool.clone();
            async move { settle(&pool, Some("donations"), SETTLE_LIMIT).await }.boxed()
        }
    };
    let top_up = {
        let (pool, sim, ctx) = (pool.clone(), sim.clone(), Arc::clone(&ctx));
        async move {
            // Give the gate a moment to hold what the float cannot cover.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let held = store::held_for_float(&pool).await?;
            sim.set_float_kes(sim.float_kes() + TOP_UP_KES);
            ctx.api
                .ok(
                    "/v1/floats/mpesa/adjustments",
                    &ctx.keys.admin,
                    &json!({ "amount": TOP_UP_KES.to_string(), "currency": "KES", "reference": "top-up-1" }),
                )
                .await?;
            Ok(held)
        }
    };
    let (creators, vpn, donations, loans, salaries) = tokio::join!(
        scenarios::creators(&ctx),
        scenarios::vpn(&ctx),
        scenarios::donations(&ctx, donations_wait),
        scenarios::loan(&ctx),
        scenarios::salaries(&ctx, top_up),
    );
    let mut notes: BTreeMap<&str, Notes> = BTreeMap::new();
    for (name, outcome) in [
        ("creators", creators),
        ("vpn", vpn),
        ("donations", donations),
        ("loans", loans),
        ("salaries", salaries),
    ] {
        let scenario_notes = outcome.unwrap_or_else(|error| Notes {
            lines: vec![format!("stopped: {error:#}")],
            expectations: vec![("the scenario ran to its end".into(), false)],
        });
        notes.insert(name, scenario_notes);
    }
    let settled = settle(&pool, None, SETTLE_LIMIT).await;
    watcher.abort();
    bars.finish();

    // A fresh balance report, then reconciliation against it. Daraja
    // answers a balance query by callback, which chaos may lose as it loses
    // any other: an operator whose report never came asks again.
    let before = store::last_float_report(&pool, "mpesa").await?;
    'asking: for _ in 0..BALANCE_ASKS {
        let mut tx = pool.begin().await?;
        jobs.enqueue(
            &mut tx,
            &crate::runner::NewJob::new(&crate::providers::mpesa::float::QueryBalance {}),
        )
        .await?;
        tx.commit().await?;
        for _ in 0..40 {
            if store::last_float_report(&pool, "mpesa").await? > before {
                break 'asking;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let now = chrono::Utc::now();
    let reconciliation = crate::reconcile::build(
        &pool,
        app.engine.workflows(),
        &config.reconciliation,
        now.date_naive(),
        now,
    )
    .await?;

    let report = gather(
        &pool,
        &sims,
        &opened,
        args,
        database,
        notes,
        settled.is_ok(),
        reconciliation,
        started,
    )
    .await?;
    runner.shutdown().await;
    server.abort();
    pool.close().await;
    Ok(report)
}

/// Waits until every intent of `scenario` (or of all) is final or
/// `unresolved`.
async fn settle(pool: &sqlx::PgPool, scenario: Option<&str>, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let progress = store::scenario_progress(pool).await?;
        let open: i64 = progress
            .iter()
            .filter(|(name, _, _)| scenario.is_none_or(|s| s == name))
            .map(|(_, settled, total)| total - settled)
            .sum();
        if open == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{open} intents still open after {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn gather(
    pool: &sqlx::PgPool,
    sims: &[Arc<dyn SimulatedProvider>],
    opened: &[(String, String)],
    args: &DemoArgs,
    database: &postgres::DemoDatabase,
    mut notes: BTreeMap<&str, Notes>,
    settled: bool,
    reconciliation: crate::reconcile::Report,
    started: Instant,
) -> anyhow::Result<Report> {
    let mut by_scenario: BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>> = BTreeMap::new();
    for (scenario, kind, state, count) in store::intents_by_scenario(pool).await? {
        *by_scenario
            .entry(scenario)
            .or_default()
            .entry(kind)
            .or_default()
            .entry(state)
            .or_default() += count;
    }
    let spans: BTreeMap<String, f64> = store::scenario_spans(pool).await?.into_iter().collect();
    let scenarios = SCENARIOS
        .iter()
        .map(|(name, title)| {
            let scenario_notes = notes.remove(name).unwrap_or_default();
            ScenarioReport {
                name: (*name).into(),
                title: (*title).into(),
                intents: by_scenario.remove(*name).unwrap_or_default(),
                notes: scenario_notes.lines,
                expectations: scenario_notes.expectations,
                seconds: spans.get(*name).copied(),
                skipped: None,
            }
        })
        .collect::<Vec<_>>();
    let mut per_request: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for sim in sims {
        for movement in sim.movements().into_iter().filter(|m| m.direction == "payout") {
            *per_request.entry((sim.name(), movement.request_id)).or_default() += 1;
        }
    }
    let double_payouts = per_request.values().filter(|n| **n > 1).count();
    let ledger_problems = crate::ledger::check_invariants(pool).await?;
    let ledger_balanced: BTreeMap<String, bool> = store::ledger_sums(pool)
        .await?
        .into_iter()
        .map(|(currency, sum)| (currency, sum.is_zero()))
        .collect();
    let fees_collected = store::fees_collected(pool)
        .await?
        .into_iter()
        .map(|(which, currency, amount)| (format!("{which} {currency}"), amount.normalize().to_string()))
        .collect();
    let unsettled_intents = store::scenario_progress(pool)
        .await?
        .iter()
        .map(|(_, settled, total)| total - settled)
        .sum();
    // Daraja's float is checked by reconciliation against its balance
    // report; the other simulators' floats are compared with the ledger
    // directly.
    let mut floats_match = reconciliation
        .floats
        .iter()
        .filter(|f| f.provider_balance.is_some())
        .all(|f| f.matches);
    let ledger_floats = store::ledger_floats(pool).await?;
    let mut float_mismatches = Vec::new();
    for sim in sims.iter().filter(|s| s.name() != "mpesa") {
        for (_, currency) in opened.iter().filter(|(p, _)| p == sim.name()) {
            let ledger = ledger_floats
                .iter()
                .find(|f| f.provider == sim.name() && f.currency == *currency)
                .map_or(Decimal::ZERO, |f| f.posted);
            let provider = Decimal::from(sim.float(currency));
            if ledger != provider {
                floats_match = false;
                float_mismatches.push(format!(
                    "{} {currency}: simulator {provider}, ledger {ledger}",
                    sim.name()
                ));
            }
        }
    }
    let expectations_hold = scenarios
        .iter()
        .flat_map(|s| s.expectations.iter())
        .all(|(_, held)| *held);
    let ok = settled
        && unsettled_intents == 0
        && double_payouts == 0
        && ledger_problems.is_empty()
        && ledger_balanced.values().all(|b| *b)
        && floats_match
        && expectations_hold;
    Ok(Report {
        seed: args.seed,
        chaos: args.chaos.clone(),
        scale: args.scale,
        database: database.describe(),
        scenarios,
        callbacks_lost: sims.iter().map(|s| s.callbacks_lost()).sum(),
        callbacks_duplicated_by_provider: sims.iter().map(|s| s.callbacks_duplicated()).sum(),
        duplicates_ignored: store::duplicate_callbacks(pool).await?,
        outcomes_learned_by_polling: store::applied_events(pool, "poll").await?,
        ambiguous_submissions: sims.iter().map(|s| s.timeouts_after_money()).sum(),
        fees_collected,
        ledger_balanced,
        ledger_problems,
        double_payouts,
        unsettled_intents,
        reconciliation_floats_match: floats_match,
        float_mismatches,
        seconds: started.elapsed().as_secs_f64(),
        ok,
    })
}

/// One progress bar per scenario, fed from the database.
struct Bars {
    multi: MultiProgress,
    bars: BTreeMap<&'static str, ProgressBar>,
}

impl Bars {
    fn new(hidden: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} settled {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        let bars = SCENARIOS
            .iter()
            .filter(|(name, _)| *name != "vpn")
            .map(|(name, _)| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(*name);
                (*name, bar)
            })
            .collect();
        Bars { multi, bars }
    }

    fn watch(&self, pool: sqlx::PgPool) -> tokio::task::JoinHandle<()> {
        let bars = self.bars.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(progress) = store::scenario_progress(&pool).await {
                    for (name, settled, total) in progress {
                        if let Some(bar) = bars.get(name.as_str()) {
                            bar.set_length(total as u64);
                            bar.set_position(settled as u64);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    }

    fn finish(&self) {
        for bar in self.bars.values() {
            bar.finish();
        }
        let _ = self.multi.clear();
    }
}

fn print_report(report: &Report) {
    println!(
        "Tuma demo — seed {}, chaos {}, scale {}",
        report.seed, report.chaos, report.scale
    );
    println!("  on {}", report.database);
    for scenario in &report.scenarios {
        println!();
        match scenario.seconds {
            Some(seconds) => println!("■ {} ({seconds:.1} s)", scenario.title),
            None => println!("■ {}", scenario.title),
        }
        if let Some(why) = &scenario.skipped {
            println!("    not run: {why}");
            continue;
        }
        for (kind, states) in &scenario.intents {
            let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            println!("    {kind:<11} {}", states.join(", "));
        }
        for line in &scenario.notes {
            println!("    · {line}");
        }
        for (what, held) in &scenario.expectations {
            println!("    {} {what}", if *held { "✓" } else { "✗" });
        }
    }
    println!();
    println!("Provider chaos and what Tuma made of it");
    println!("    callbacks lost by the provider       {}", report.callbacks_lost);
    println!(
        "    outcomes learned by status polling   {}",
        report.outcomes_learned_by_polling
    );
    println!(
        "    callbacks sent twice by the provider {} (duplicates ignored: {})",
        report.callbacks_duplicated_by_provider, report.duplicates_ignored
    );
    println!(
        "    submissions that timed out after moving money {}",
        report.ambiguous_submissions
    );
    println!();
    println!("Money");
    for (account, amount) in &report.fees_collected {
        println!("    fees collected ({account})  {amount}");
    }
    for (currency, balanced) in &report.ledger_balanced {
        println!(
            "    ledger balanced in {currency}: {}",
            if *balanced { "yes" } else { "NO" }
        );
    }
    for problem in &report.ledger_problems {
        println!("    ledger problem: {problem}");
    }
    println!(
        "    provider floats match the ledger: {}",
        if report.reconciliation_floats_match {
            "yes"
        } else {
            "NO"
        }
    );
    for mismatch in &report.float_mismatches {
        println!("    float mismatch: {mismatch}");
    }
    println!("    double payouts: {}", report.double_payouts);
    println!("    intents not settled: {}", report.unsettled_intents);
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
