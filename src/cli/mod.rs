//! The `tuma` command line: one binary, one subcommand per job.
//!
//! Every subcommand loads and validates the configuration first, so a bad
//! setting stops the process before anything starts, with the key named.

mod approvals;
mod bench;
mod bench_cost;
mod bench_payouts;
mod jobs;
mod keys;
mod mpesa;
mod reconcile;
mod review;
mod serve;
mod simulate;
mod users;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "tuma",
    version,
    about = "A durable payout and collection engine for mobile money"
)]
struct Cli {
    /// A TOML file overriding the built-in configuration (any subset of keys).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Run the engine: the job runner and the HTTP server, until SIGINT/SIGTERM.
    Serve,
    /// Maker-checker: list payouts waiting for approval, approve or reject.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Settle what reconciliation leaves to a person, with evidence:
    /// resolve an unresolved intent, settle a late success, record the
    /// review of a listed callback (`tuma reconcile` lists them).
    #[command(subcommand)]
    Review(review::ReviewCommand),
    /// Measure the engine on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Inspect and steer jobs: list, re-run dead jobs, cancel, pause queues.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// One-off M-Pesa (Daraja) operations, e.g. registering C2B URLs.
    #[command(subcommand)]
    Mpesa(mpesa::MpesaCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Manage admin console users (`users create --role admin` makes the
    /// first admin).
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Show workflows as Mermaid diagrams, or check workflow files.
    #[command(subcommand)]
    Workflows(workflows::WorkflowsCommand),
    /// Reconcile: the ledger's floats against the providers' balance
    /// reports, and every intent, payment and callback waiting on a person.
    /// Keeps the report as the day's; exits 1 when anything is off.
    Reconcile(reconcile::ReconcileArgs),
    /// Serve the provider simulators (Daraja, Airtel, MTN, Vodacom Tanzania,
    /// Tigo) with chaos settings.
    ///
    /// Daraja's API (M-Pesa Kenya) on its real paths, at the root of
    /// --listen, so Daraja client libraries work against it with only the
    /// base URL changed; Airtel, MTN, Vodacom Tanzania and Tigo on the next
    /// four ports. Daraja's subscribers behave by the last digits of their
    /// number: …001 cancels the prompt (1032), …002 enters a wrong PIN
    /// (2001), …003 never answers (1037 after --prompt-timeout-s), …004 has
    /// too little money (1), …005 leaves the prompt open until a test
    /// answers it, …009 is not an M-Pesa customer (B2C 2040). Everyone else
    /// pays. Its credentials are the defaults of [mpesa] in
    /// config/default.toml.
    Simulate(simulate::SimulateArgs),
    /// Run the scenarios against the built-in provider simulator, on a
    /// database of its own, and report; exits 1 if an invariant failed.
    ///
    /// Uses DATABASE_URL's server (a fresh database, dropped afterwards);
    /// with no server there and PostgreSQL's tools installed, a throwaway
    /// cluster in a temporary directory.
    Demo(crate::demo::DemoArgs),
    /// The chaos soak: payouts and collections over every provider with
    /// lost, duplicated and reordered callbacks, timeouts after moving
    /// money, 5xx bursts, a starved float, two engine processes (one killed
    /// with SIGKILL and restarted) and cut database connections; then the
    /// books checked against the simulators. Exits 1 on any violation.
    ///
    /// Uses DATABASE_URL's server (a fresh database, dropped afterwards).
    Chaos(crate::chaos::ChaosArgs),
}

/// Parses arguments, runs the subcommand on a multi-threaded runtime, and
/// turns any error into one line on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tuma: {error}");
            return ExitCode::from(2);
        }
    };
    let mut log = config.log.clone();
    if matches!(cli.command, Command::Demo(_) | Command::Bench(_) | Command::Chaos(_))
        && std::env::var_os("RUST_LOG").is_none()
    {
        // The demo and the benchmarks speak through their own output (and
        // per-intent log lines would be part of what a benchmark measures).
        log.filter = "warn,sqlx=error".into();
    }
    crate::telemetry::init_logs(&log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async move {
        let done = |outcome: anyhow::Result<()>| outcome.map(|()| ExitCode::SUCCESS);
        match cli.command {
            Command::Migrate => done(migrate(&config).await),
            Command::Serve => done(serve::run(config).await),
            Command::Approvals(command) => done(approvals::run(config, command).await),
            Command::Review(command) => done(review::run(config, command).await),
            Command::Bench(command) => done(bench::run(config, command).await),
            Command::Jobs(command) => done(jobs::run(config, command).await),
            Command::Keys(command) => done(keys::run(config, command).await),
            Command::Users(command) => done(users::run(config, command).await),
            Command::Mpesa(command) => done(mpesa::run(config, command).await),
            Command::Workflows(command) => done(workflows::run(&config, command)),
            Command::Simulate(args) => done(simulate::run(args).await),
            Command::Reconcile(args) => {
                reconcile::run(config, args)
                    .await
                    .map(|clean| if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Command::Demo(args) => {
                crate::demo::run(config, args)
                    .await
                    .map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Command::Chaos(args) => {
                crate::chaos::run(config, args)
                    .await
                    .map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tuma: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    crate::store::open(&config.database).await?.close().await;
    println!("migrations applied to {}", crate::store::redact(&config.database.url));
    Ok(())
}
