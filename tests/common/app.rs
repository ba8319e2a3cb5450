//! `TestApp`: the whole engine on a fresh database, served on a free port,
//! with a manual clock and the runner driven step by step.
#![allow(dead_code)]

use std::time::Duration;

use tuma::api::Scope;
use tuma::app::App;
use tuma::clock::{Clock, ManualClock};
use tuma::runner::Runner;
use tuma::simulator::mpesa::{SimConfig, SimHandle};
use tuma::simulator::{SimOptions, SimulatedProvider};
use tuma::workflow::engine::{Applied, Engine, Event};

use super::{config_with, TestDb};

pub struct TestApp {
    pub db: TestDb,
    pub base: String,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub engine: Engine,
    pub runner: Runner,
    /// intents:write + intents:read, owner "shop".
    pub key: String,
    /// intents:read only, owner "shop".
    pub read_key: String,
    /// intents:write only, owner "shop".
    pub write_key: String,
    /// intents:write + intents:read, owner "other-shop".
    pub other_key: String,
    /// admin (every scope), owner "shop".
    pub admin_key: String,
    /// approvals:write, owner "shop" (two approvers, for maker-checker).
    pub approver_key: String,
    pub second_approver_key: String,
    /// The Daraja simulator, when M-Pesa is configured.
    pub sim: Option<SimHandle>,
    /// The simulator of the provider under test ([`spawn_provider_app`]).
    pub provider_sim: Option<std::sync::Arc<dyn SimulatedProvider>>,
    /// The configuration the engine runs with.
    pub config: std::sync::Arc<tuma::config::Config>,
    /// The API keys the server remembers.
    pub keys: tuma::api::KeyCache,
}

/// Starts the API with the runner *not* started: tests move intents along
/// with [`TestApp::work`], so nothing happens behind their back. No
/// provider adapter is configured: intents wait where a provider is needed.
pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

pub async fn spawn_app_with(config_overrides: &str) -> TestApp {
    let mut config = config_with(config_overrides);
    without_providers(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(config, listener, None).await
}

/// As [`spawn_app`], but M-Pesa is configured (nowhere reachable) with its
/// float check on, so an M-Pesa payout stays `pending` until its release
/// runs: for tests of what may happen to a payout before it is handed on.
/// (Where nothing can hold a payout back at release, it is created already
/// `processing`.)
pub async fn spawn_app_holding_payouts() -> TestApp {
    let mut config = config_with("");
    let mpesa = config.mpesa.take();
    without_providers(&mut config);
    config.mpesa = mpesa.map(|mut mpesa| {
        mpesa.base_url = "http://127.0.0.1:9".into();
        mpesa.float_check = true;
        mpesa
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(config, listener, None).await
}

/// Starts the API with M-Pesa pointed at an in-process Daraja simulator,
/// without the float gate (its own tests turn it on).
pub async fn spawn_mpesa_app(sim_config: SimConfig) -> TestApp {
    spawn_mpesa_app_with(sim_config, |_| {}).await
}

/// As [`spawn_mpesa_app`], with the M-Pesa settings adjusted by `adjust`.
pub async fn spawn_mpesa_app_with(
    sim_config: SimConfig,
    adjust: impl FnOnce(&mut tuma::providers::mpesa::MpesaConfig),
) -> TestApp {
    let sim = SimHandle::spawn(sim_config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = config_with("");
    let mpesa = config.mpesa.as_mut().expect("the built-in config has [mpesa]");
    mpesa.base_url = sim.base_url.clone();
    mpesa.callback_base_url = base;
    mpesa.float_check = false;
    adjust(mpesa);
    start(config, listener, Some(sim)).await
}

/// Starts the API with `provider` (any of `tuma::simulator::PROVIDERS`)
/// pointed at its in-process simulator, and no other provider configured.
/// Parties are funded in every currency the provider carries.
pub async fn spawn_provider_app(provider: &str, options: SimOptions) -> TestApp {
    let sim = tuma::simulator::spawn(provider, options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = config_with("");
    without_providers(&mut config);
    sim.configure(&mut config, &base);
    if let Some(mpesa) = config.mpesa.as_mut() {
        mpesa.float_check = false;
    }
    let currencies: Vec<String> = config.providers[provider]
        .currencies
        .keys()
        .map(|c| c.to_string())
        .collect();
    let mut app = start(config, listener, None).await;
    app.provider_sim = Some(sim);
    for party in FUNDED_PARTIES {
        for currency in currencies.iter().filter(|c| c.as_str() != "KES") {
            app.fund(&app.admin_key, party, "100000000", currency).await;
        }
    }
    app
}

/// No provider adapter configured: intents wait where a provider is needed.
fn without_providers(config: &mut tuma::config::Config) {
    config.mpesa = None;
    config.airtel = None;
    config.mtn = None;
    config.vodacom_tz = None;
    config.tigo_tz = None;
}

async fn start(config: tuma::config::Config, listener: tokio::net::TcpListener, sim: Option<SimHandle>) -> TestApp {
    let db = TestDb::new().await;
    let clock = ManualClock::starting_now();
    let App { engine, runner, state } =
        tuma::app::assemble(config, db.pool.clone(), Clock::Manual(clock.clone())).expect("the app assembles");
    let key = |name: &'static str, owner: &'static str, scopes: &'static [Scope]| {
        let pool = db.pool.clone();
        async move { tuma::api::create_key(&pool, name, owner, scopes).await.unwrap() }
    };
    let key_rw = key("shop-backend", "shop", &[Scope::IntentsWrite, Scope::IntentsRead]).await;
    let read_key = key("shop-dashboard", "shop", &[Scope::IntentsRead]).await;
    let write_key = key("shop-writer", "shop", &[Scope::IntentsWrite]).await;
    let other_key = key(
        "other-backend",
        "other-shop",
        &[Scope::IntentsWrite, Scope::IntentsRead],
    )
    .await;
    let admin_key = key("shop-admin", "shop", &[Scope::Admin]).await;
    let approver_key = key("approver-amina", "shop", &[Scope::ApprovalsWrite, Scope::IntentsRead]).await;
    let second_approver_key = key("approver-baraka", "shop", &[Scope::ApprovalsWrite, Scope::IntentsRead]).await;
    let other_admin = key("other-admin", "other-shop", &[Scope::Admin]).await;
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = state.config.clone();
    let keys = state.keys.clone();
    let service = tuma::api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    let app = TestApp {
        db,
        base,
        http: reqwest::Client::new(),
        clock,
        engine,
        runner,
        key: key_rw,
        read_key,
        write_key,
        other_key,
        admin_key,
        approver_key,
        second_approver_key,
        sim,
        provider_sim: None,
        config,
        keys,
    };
    // The parties the intent tests pay out from: fully verified and funded,
    // so that those tests are about intents, not limits. Policy tests use
    // parties of their own.
    for party in FUNDED_PARTIES {
        app.set_party(&app.admin_key, party, 2).await;
        app.fund(&app.admin_key, party, "10000000", "KES").await;
    }
    app.set_party(&other_admin, "creator-42", 2).await;
    app.fund(&other_admin, "creator-42", "10000000", "KES").await;
    app
}

/// Parties of owner "shop" every test app starts with: KYC tier 2 and
/// 10,000,000 KES each.
pub const FUNDED_PARTIES: [&str; 4] = ["creator-42", "creator-even", "creator-odd", "worker-7"];

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST a JSON body with an API key and an Idempotency-Key.
    pub async fn create(
        &self,
        path: &str,
        key: &str,
        idempotency_key: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(key)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(key).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, key: &str) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(key).send().await.unwrap()
    }

    /// Runs everything runnable on `queue` now, until nothing is left.
    pub async fn work(&self, queue: &str) -> usize {
        let mut total = 0;
        for _ in 0..100 {
            let ran = self.runner.work_once(queue).await.unwrap();
            if ran == 0 {
                return total;
            }
            total += ran;
        }
        panic!("queue {queue} never drained");
    }

    /// Runs everything runnable on the intent queues (`default`, and every
    /// provider's queue) until nothing is left.
    pub async fn run_jobs(&self) -> usize {
        let mut total = 0;
        for _ in 0..100 {
            let mut ran = self.work("default").await;
            for provider in tuma::simulator::PROVIDERS {
                ran += self.work(provider).await;
            }
            if ran == 0 {
                return total;
            }
            total += ran;
        }
        panic!("the intent queues never drained");
    }

    /// Sets a party's KYC tier (role creator, country KE).
    pub async fn set_party(&self, key: &str, party: &str, tier: i16) {
        let profile = serde_json::json!({ "role": "creator", "kyc_tier": tier, "country": "KE" });
        self.put_party(key, party, &profile).await;
    }

    /// Writes a party's profile and payout settings (`PUT /v1/parties/{id}`).
    pub async fn put_party(&self, key: &str, party: &str, profile: &serde_json::Value) {
        let response = self
            .http
            .put(self.url(&format!("/v1/parties/{party}")))
            .bearer_auth(key)
            .json(profile)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// Applies `event` to intent `id` through the engine, in a transaction
    /// of its own, as a provider's word or a timer would.
    pub async fn apply(&self, id: uuid::Uuid, event: &Event<'_>) -> Applied {
        let mut tx = self.db.pool.begin().await.unwrap();
        let applied = self.engine.apply(&mut tx, id, event).await.unwrap();
        tx.commit().await.unwrap();
        applied
    }

    /// Credits a party's balance.
    pub async fn fund(&self, key: &str, party: &str, amount: &str, currency: &str) -> serde_json::Value {
        let response = self
            .http
            .post(self.url(&format!("/v1/parties/{party}/credits")))
            .bearer_auth(key)
            .json(&serde_json::json!({
                "amount": amount, "currency": currency, "reference": uuid::Uuid::new_v4().to_string()
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// A party's available balance in `currency` (zero with no account).
    pub async fn available(&self, party: &str, currency: &str) -> rust_decimal::Decimal {
        let body: serde_json::Value = self
            .get(&format!("/v1/parties/{party}/balances"), &self.key)
            .await
            .json()
            .await
            .unwrap();
        body["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["currency"] == currency)
            .map_or(rust_decimal::Decimal::ZERO, |a| {
                a["available"].as_str().unwrap().parse().unwrap()
            })
    }

    /// The ledger's invariants: every transfer balances per currency, every
    /// running total matches its entries, nothing non-negative is below
    /// zero. Scenario tests end with it.
    pub async fn assert_ledger_balanced(&self) {
        let problems = tuma::ledger::check_invariants(&self.db.pool).await.unwrap();
        assert!(
            problems.is_empty(),
            "ledger invariants broken:\n{}",
            problems.join("\n")
        );
    }

    /// The reconciliation report as of the test clock's now (dated today),
    /// as the nightly job and `tuma reconcile` build it.
    /// The outcomes of the callbacks today's reconciliation report lists for
    /// a person, in inbox order.
    pub async fn listed_callbacks(&self) -> Vec<String> {
        self.reconciliation_report()
            .await
            .unmatched_callbacks
            .into_iter()
            .map(|line| line.outcome)
            .collect()
    }

    pub async fn reconciliation_report(&self) -> tuma::reconcile::Report {
        tuma::reconcile::build(
            &self.db.pool,
            self.engine.workflows(),
            &self.config.reconciliation,
            chrono::Utc::now().date_naive(),
            self.clock.now(),
        )
        .await
        .unwrap()
    }

    /// Registers the engine's C2B URLs with the simulator, as
    /// `tuma mpesa register-c2b` does.
    pub async fn register_c2b(&self) {
        let mpesa = self.config.mpesa.clone().unwrap();
        let client = tuma::providers::mpesa::MpesaClient::new(mpesa.clone()).unwrap();
        let token = tuma::providers::mpesa::c2b_token(&mpesa);
        client
            .register_c2b_urls(
                &tuma::providers::mpesa::callback_url(&mpesa, "c2b-confirmation", &token),
                &tuma::providers::mpesa::callback_url(&mpesa, "c2b-validation", &token),
            )
            .await
            .unwrap();
    }

    /// Posts `body` to the engine's C2B confirmation URL, as Daraja does.
    pub async fn post_c2b_confirmation(&self, body: Vec<u8>) -> reqwest::Response {
        let mpesa = self.config.mpesa.clone().unwrap();
        self.http
            .post(tuma::providers::mpesa::callback_url(
                &mpesa,
                "c2b-confirmation",
                &tuma::providers::mpesa::c2b_token(&mpesa),
            ))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Enqueues `job` now, outside any intent.
    pub async fn enqueue(&self, job: &tuma::runner::NewJob) {
        let mut tx = self.db.pool.begin().await.unwrap();
        self.engine.jobs().enqueue(&mut tx, job).await.unwrap();
        tx.commit().await.unwrap();
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn count(&self, sql: &str) -> i64 {
        super::count(&self.db.pool, sql).await
    }
}

pub fn payout_body(amount: &str, msisdn: &str) -> serde_json::Value {
    serde_json::json!({
        "amount": amount,
        "currency": "KES",
        "recipient": { "msisdn": msisdn },
        "party_id": "creator-42",
        "reference": "earnings-2026-11",
        "metadata": { "campaign": "november" }
    })
}

pub fn collection_body(amount: &str, msisdn: &str) -> serde_json::Value {
    serde_json::json!({
        "amount": amount,
        "currency": "TZS",
        "payer": { "msisdn": msisdn, "provider": "vodacom_tz" },
        "party_id": "vpn-customer-7",
        "reference": "bundle-30d"
    })
}
