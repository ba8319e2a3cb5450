//! `tuma simulate`: the provider simulators as servers of their own, for
//! running the engine (or a provider's own client library) against them:
//! Daraja on `--listen` (9090), then Airtel, MTN, Vodacom Tanzania and Tigo
//! on the next four ports, which is where the built-in configuration
//! looks for them.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::simulator::mpesa::{router, SimConfig, SimHandle};
use crate::simulator::{Chaos, SimOptions, PROVIDERS};

/// Options of `tuma simulate`; its help text is on the subcommand.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address of the Daraja simulator; the others take the next ports.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: std::net::SocketAddr,
    /// The engine's public base URL, where simulators whose callback URL is
    /// set once (in the provider's portal) send their callbacks.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    engine_url: String,
    /// Seed of every random choice (chaos, receipts): the same seed replays
    /// the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Chaos preset: none, moderate or heavy. The flags below override it.
    #[arg(long, default_value = "none")]
    chaos: String,
    /// Callbacks never sent, per mille (0-1000).
    #[arg(long)]
    callback_loss: Option<u32>,
    /// Callbacks sent twice, per mille.
    #[arg(long)]
    callback_duplicate: Option<u32>,
    /// Callbacks held back up to this long (which also reorders them), ms.
    #[arg(long)]
    callback_max_delay_ms: Option<u64>,
    /// Requests answered 503 before anything happens, per mille.
    #[arg(long)]
    server_errors: Option<u32>,
    /// B2C requests that move the money and then answer 504, per mille.
    #[arg(long)]
    timeouts_after_money: Option<u32>,
    /// Deliver each callback before answering its request.
    #[arg(long)]
    callback_before_response: bool,
    /// B2C float (utility account), whole KES.
    #[arg(long, default_value_t = 10_000_000)]
    float_kes: u64,
    /// Access token lifetime, seconds.
    #[arg(long, default_value_t = 3599)]
    token_ttl_s: u64,
    /// How long an unanswered prompt waits before 1037, seconds.
    #[arg(long, default_value_t = 60)]
    prompt_timeout_s: u64,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let mut chaos = Chaos::preset(&args.chaos)
        .with_context(|| format!("--chaos must be none, moderate or heavy, not {:?}", args.chaos))?;
    let permille = |name: &str, value: Option<u32>, into: &mut u32| -> anyhow::Result<()> {
        if let Some(value) = value {
            anyhow::ensure!(value <= 1000, "--{name} is per mille: 0 to 1000");
            *into = value;
        }
        Ok(())
    };
    permille("callback-loss", args.callback_loss, &mut chaos.callback_loss_permille)?;
    permille(
        "callback-duplicate",
        args.callback_duplicate,
        &mut chaos.callback_duplicate_permille,
    )?;
    permille("server-errors", args.server_errors, &mut chaos.server_error_permille)?;
    permille(
        "timeouts-after-money",
        args.timeouts_after_money,
        &mut chaos.timeout_after_money_permille,
    )?;
    if let Some(delay) = args.callback_max_delay_ms {
        chaos.callback_max_delay_ms = delay;
    }
    chaos.callback_before_response |= args.callback_before_response;
    let config = SimConfig {
        float_kes: args.float_kes,
        token_ttl: Duration::from_secs(args.token_ttl_s),
        prompt_timeout: Duration::from_secs(args.prompt_timeout_s),
        chaos,
        seed: args.seed,
        ..SimConfig::default()
    };
    let options = SimOptions {
        chaos: config.chaos.clone(),
        seed: args.seed,
        token_ttl: config.token_ttl,
        prompt_timeout: config.prompt_timeout,
        ..SimOptions::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let handle = SimHandle::new(config, format!("http://{}", args.listen));
    println!(
        "Daraja simulator on http://{} (seed {}, chaos {})",
        args.listen, args.seed, args.chaos
    );
    // The engine's configuration as the simulators would set it: only to
    // point their portal-configured callback URLs at the engine.
    let mut scratch = crate::config::Config::load(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (offset, provider) in (1u16..).zip(PROVIDERS.iter().filter(|p| **p != "mpesa")) {
        let mut address = args.listen;
        address.set_port(args.listen.port() + offset);
        let sim = crate::simulator::spawn_at(provider, address, options.clone())
            .await
            .with_context(|| format!("cannot start the {provider} simulator on {address}"))?;
        sim.configure(&mut scratch, &args.engine_url);
        println!("{provider} simulator on {}", sim.base_url());
    }
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("simulator server failed")
}
