//! Assembling the engine: workflows, actions, the runner's workers, the
//! HTTP state. `tuma serve`, the tests and the demo all build it here, so
//! they run the same code paths.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;

use crate::api::AppState;
use crate::clock::Clock;
use crate::config::Config;
use crate::providers::adapter::Adapter;
use crate::runner::{JobClient, Registry, Runner};
use crate::store::Foreground;
use crate::workflow::engine::Engine;
use crate::workflow::workers::{built_in_actions, ProviderClients};
use crate::workflow::{KnownNames, Workflows};

/// A ready-to-start engine.
pub struct App {
    pub engine: Engine,
    pub runner: Runner,
    pub state: AppState,
}

/// Loads the workflows named by the configuration (built-in or a directory),
/// refusing to go on if any is invalid; each problem says file and line.
pub fn load_workflows(config: &Config, known: &KnownNames) -> anyhow::Result<Workflows> {
    let loaded = if config.workflows.dir.is_empty() {
        Workflows::built_in(known)
    } else {
        Workflows::load_dir(Path::new(&config.workflows.dir), known)
    };
    loaded.map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        anyhow::anyhow!("invalid workflow definitions:\n{}", lines.join("\n"))
    })
}

/// What a node's main pool waits for ([`crate::store::foreground`]), as
/// `api.creates_first_ms` sets it: made before the pool, given to
/// [`crate::store::open_with`] and [`assemble_with`].
pub fn foreground(config: &Config) -> Foreground {
    Foreground::new(std::time::Duration::from_millis(config.api.creates_first_ms))
}

/// [`assemble_with`] for a pool whose connections never wait for creates.
pub fn assemble(config: Config, pool: PgPool, clock: Clock) -> anyhow::Result<App> {
    assemble_with(config, pool, Foreground::off(), clock)
}

/// The engine, its runner and the API's state on `pool`; payout create
/// groups count as in flight on `foreground` while they are admitted.
pub fn assemble_with(config: Config, pool: PgPool, foreground: Foreground, clock: Clock) -> anyhow::Result<App> {
    let mpesa = match &config.mpesa {
        Some(mpesa) => Some(Arc::new(
            crate::providers::mpesa::MpesaClient::new(mpesa.clone())
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?,
        )),
        None => None,
    };
    let providers = ProviderClients {
        mpesa: mpesa.clone(),
        adapters: adapters(&config)?,
        circuits: crate::providers::circuit::Circuits::new(
            config
                .providers
                .iter()
                .map(|(name, settings)| (name.clone(), settings.circuit.clone()))
                .collect(),
        ),
    };
    let actions = built_in_actions(&providers);
    let workflows = load_workflows(&config, &actions.known_names())?;
    // What the runner's LISTEN connection hears, shared with the engine's
    // enqueues so they can leave out redundant NOTIFYs.
    let heard = crate::runner::Heard::new(std::time::Duration::from_millis(config.runner.notify_debounce_ms));
    let jobs = JobClient::new(pool.clone(), clock.clone()).with_heard(heard.clone());
    let provider_queues = config
        .providers
        .keys()
        .filter(|name| config.runner.queues.contains_key(*name))
        .cloned();
    let policy =
        crate::policy::Policy::from_config(&config).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let engine = Engine::new(workflows, jobs, provider_queues, policy.default_tier());
    let config = Arc::new(config);
    let loans = crate::loans::Loans::new(engine.clone(), policy.clone(), Arc::clone(&config));
    let mut registry = Registry::new();
    registry.register(crate::loans::ChildSettledWorker { loans: loans.clone() });
    registry.register(crate::loans::LoanSweepWorker { loans: loans.clone() });
    registry.register(crate::reports::SnapshotBalancesWorker);
    registry.register(crate::reports::TaxReportWorker {
        config: config.reports.clone(),
    });
    registry.register(crate::reports::PurgeCallbacksWorker {
        config: config.reports.clone(),
    });
    registry.register(crate::reconcile::ReconcileWorker {
        workflows: engine.workflows().clone(),
        config: config.reconciliation.clone(),
    });
    registry.register(crate::policy::auto_payout::AutoPayoutWorker {
        engine: engine.clone(),
        policy: policy.clone(),
        config: Arc::clone(&config),
    });
    crate::jobs::register(&mut registry);
    actions.register_workers(
        &engine,
        &crate::store::grouped::Grouped::new(pool.clone()),
        &mut registry,
    );
    registry.register(crate::notify::WebhookWorker::new(
        config.webhooks.allow_private_addresses,
    ));
    // Each kind of callback has a job over the callbacks stored together,
    // and a job for one callback (what a group leaves for later).
    let (alone, groups) =
        crate::providers::callbacks::ProviderCallbackWorker::new(crate::providers::callbacks::ProviderCallbacks {
            engine: engine.clone(),
            adapters: providers.adapters.clone(),
        });
    registry.register(alone);
    registry.register(groups);
    let (alone, groups) =
        crate::providers::mpesa::callbacks::CallbackWorker::new(crate::providers::mpesa::callbacks::Callbacks {
            engine: engine.clone(),
            balance_token: config.mpesa.as_ref().map(crate::providers::mpesa::balance_token),
            c2b_token: config.mpesa.as_ref().map(crate::providers::mpesa::c2b_token),
            loans: loans.clone(),
        });
    registry.register(alone);
    registry.register(groups);
    let cron = crate::jobs::cron_entries(&config.cron, mpesa.is_some())
        .map_err(|e| anyhow::anyhow!("invalid configuration: cron: {e}"))?;
    if let Some(client) = &mpesa {
        registry.register(crate::providers::mpesa::float::QueryBalanceWorker {
            client: Arc::clone(client),
        });
        registry.register(crate::providers::mpesa::c2b::UnconfirmedWorker {
            client: Arc::clone(client),
        });
    }
    let runner = Runner::new(pool.clone(), config.runner.clone(), registry, clock)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
        .context("building the job runner")?
        .with_cron(cron)
        .with_heard(heard);
    let keys = crate::api::KeyCache::new(std::time::Duration::from_secs(config.api.key_cache_s));
    let runner = runner.with_subscription(keys.subscription());
    let payout_creates = crate::api::PayoutCreates::new(
        crate::store::lane_pool(&pool, config.api.group_lanes),
        engine.clone(),
        policy.clone(),
        config.api.idempotency_ttl_s as i64,
        config.api.group_creates,
        config.api.group_lanes,
        foreground,
    );
    let callbacks = crate::api::CallbackInbox::new(pool.clone(), engine.jobs().clone());
    let state = AppState {
        pool,
        engine: engine.clone(),
        policy,
        loans,
        config,
        adapters: providers.adapters.clone(),
        metrics: crate::telemetry::metrics_handle(),
        payout_creates,
        callbacks,
        keys,
    };
    Ok(App { engine, runner, state })
}

/// The configured providers other than M-Pesa, behind the adapter
/// interface.
fn adapters(config: &Config) -> anyhow::Result<std::collections::BTreeMap<String, Arc<dyn Adapter>>> {
    use crate::providers::{airtel, mtn, tigo_tz, vodacom_tz};
    let invalid = |provider: &str, e: String| anyhow::anyhow!("invalid configuration: [{provider}]: {e}");
    let mut adapters: Vec<Arc<dyn Adapter>> = Vec::new();
    if let Some(settings) = &config.airtel {
        adapters.push(Arc::new(
            airtel::AirtelClient::new(settings.clone()).map_err(|e| invalid("airtel", e))?,
        ));
    }
    if let Some(settings) = &config.mtn {
        adapters.push(Arc::new(
            mtn::MtnClient::new(settings.clone()).map_err(|e| invalid("mtn", e))?,
        ));
    }
    if let Some(settings) = &config.vodacom_tz {
        adapters.push(Arc::new(
            vodacom_tz::VodacomClient::new(settings.clone()).map_err(|e| invalid("vodacom_tz", e))?,
        ));
    }
    if let Some(settings) = &config.tigo_tz {
        adapters.push(Arc::new(
            tigo_tz::TigoClient::new(settings.clone()).map_err(|e| invalid("tigo_tz", e))?,
        ));
    }
    Ok(adapters
        .into_iter()
        .map(|adapter| (adapter.name().to_owned(), adapter))
        .collect())
}
