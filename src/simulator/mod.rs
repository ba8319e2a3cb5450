//! The provider simulator: providers' real HTTP APIs (paths, fields, codes,
//! callback bodies), served in-process for tests and the demo, or by
//! `tuma simulate`. It keeps subscriber wallets and business floats, sends
//! callbacks, misbehaves on purpose under a seeded chaos setting, and records
//! every movement of money by request id so tests can prove that nothing
//! was paid twice.

pub mod airtel;
pub mod mpesa;
pub mod mtn;
pub mod tigo_tz;
pub mod vodacom_tz;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

/// How badly the simulated providers behave. Probabilities are per mille
/// (0–1000) so that settings are exact and seeds reproduce runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Chaos {
    /// Callbacks never sent.
    pub callback_loss_permille: u32,
    /// Callbacks sent twice.
    pub callback_duplicate_permille: u32,
    /// Callbacks held back this long (uniformly up to the value), which also
    /// reorders them.
    pub callback_max_delay_ms: u64,
    /// Requests answered with a 5xx before anything happens.
    pub server_error_permille: u32,
    /// Requests that move the money, then answer 504 as if they timed out.
    pub timeout_after_money_permille: u32,
    /// Callbacks sent before the request's own answer.
    pub callback_before_response: bool,
}

impl Chaos {
    /// `none`, `moderate` or `heavy`.
    pub fn preset(name: &str) -> Option<Chaos> {
        match name {
            "none" => Some(Chaos::default()),
            "moderate" => Some(Chaos {
                callback_loss_permille: 50,
                callback_duplicate_permille: 50,
                callback_max_delay_ms: 200,
                server_error_permille: 20,
                timeout_after_money_permille: 20,
                callback_before_response: false,
            }),
            "heavy" => Some(Chaos {
                callback_loss_permille: 200,
                callback_duplicate_permille: 200,
                callback_max_delay_ms: 1_000,
                server_error_permille: 100,
                timeout_after_money_permille: 100,
                callback_before_response: true,
            }),
            _ => None,
        }
    }
}

/// How a simulated subscriber behaves, by the last three digits of their
/// number. Every simulator follows the same convention, so one conformance
/// suite drives them all:
///
/// | ends in | payout (to them) | collection (from them) |
/// |---|---|---|
/// | `001` | paid | declines the prompt |
/// | `002` | paid | enters a wrong PIN |
/// | `003` | paid | never answers (the prompt expires) |
/// | `004` | paid | has too little money |
/// | `005` | paid | waits for the test ([`SimulatedProvider::answer`]) |
/// | `009` | not a registered wallet (refused) | not a registered wallet |
/// | other | paid | pays |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscriber {
    Pays,
    Declines,
    WrongPin,
    NeverAnswers,
    Broke,
    WaitsForTest,
    Unregistered,
}

impl Subscriber {
    pub fn of(msisdn: &str) -> Subscriber {
        let suffix = msisdn.get(msisdn.len().saturating_sub(3)..).unwrap_or("");
        match suffix {
            "001" => Subscriber::Declines,
            "002" => Subscriber::WrongPin,
            "003" => Subscriber::NeverAnswers,
            "004" => Subscriber::Broke,
            "005" => Subscriber::WaitsForTest,
            "009" => Subscriber::Unregistered,
            _ => Subscriber::Pays,
        }
    }
}

/// One movement of money a simulator made, in any provider's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// The request it belongs to (the caller's id for that provider).
    pub request_id: String,
    pub msisdn: String,
    pub currency: String,
    /// Whole units.
    pub amount: u64,
    pub receipt: String,
    /// `payout` (float → subscriber) or `collection` (subscriber → business).
    pub direction: &'static str,
}

/// What every simulator offers the tests, the demo and the chaos soak,
/// whatever its wire contract.
pub trait SimulatedProvider: Send + Sync + 'static {
    /// The provider's name (`mpesa`, `airtel`, `mtn`, `vodacom_tz`, `tigo_tz`).
    fn name(&self) -> &'static str;
    fn base_url(&self) -> String;
    fn set_chaos(&self, chaos: Chaos);
    /// Every movement of money so far.
    fn movements(&self) -> Vec<Movement>;
    /// Movements of money for one request id (more than one is a double
    /// payment).
    fn movements_for(&self, request_id: &str) -> Vec<Movement> {
        self.movements()
            .into_iter()
            .filter(|m| m.request_id == request_id)
            .collect()
    }
    /// The business float in `currency`, whole units: every account the
    /// ledger's float for this provider tracks.
    fn float(&self, currency: &str) -> u64;
    /// Sets the float payouts are made from.
    fn set_float(&self, currency: &str, amount: u64);
    /// Adds to the float payouts are made from, as a bank transfer in would.
    fn top_up(&self, currency: &str, amount: u64) {
        self.set_float(currency, self.float(currency) + amount);
    }
    /// Settles a waiting prompt (`…005` numbers) of request `request_id`
    /// (the provider's reference of it, as Tuma stored it): paid or declined.
    /// Sends the callback where the provider has one.
    fn answer(&self, request_id: &str, pay: bool) -> BoxFuture<'_, ()>;
    fn callbacks_lost(&self) -> u64;
    fn callbacks_duplicated(&self) -> u64;
    /// Requests that moved the money and then answered as if timed out.
    fn timeouts_after_money(&self) -> u64;
    /// Invalidates every access token or session, as their expiry would.
    fn expire_tokens(&self);
    /// From now on reports `amount` (whole units) for request `request_id`,
    /// whatever moved, in its status answers and callbacks, as a provider
    /// with a bug would; false where this simulator cannot (only MTN's
    /// status answers carry an amount Tuma reads).
    fn misreport_amount(&self, _request_id: &str, _amount: u64) -> bool {
        false
    }
    /// Points Tuma's configuration for this provider at the simulator (base
    /// URL and the simulator's credentials and keys), and the simulator's
    /// portal-configured callback URL (where the provider has one) at
    /// `callback_base_url`, this engine's public base URL.
    fn configure(&self, config: &mut crate::config::Config, callback_base_url: &str);
}

/// What the simulators other than Daraja's start with.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub chaos: Chaos,
    pub seed: u64,
    /// The business float per currency served, whole units.
    pub float: u64,
    /// Each subscriber's opening balance, whole units.
    pub wallet: u64,
    /// How long a prompt waits for the payer before it expires.
    pub prompt_timeout: Duration,
    /// How long every request's answer is held back (a slow network).
    pub response_delay: Duration,
    /// How long a (simulated) payer takes to approve a synchronous prompt
    /// (Vodacom's single-stage C2B answers only then).
    pub approval_delay: Duration,
    /// Lifetime of an access token or session.
    pub token_ttl: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            chaos: Chaos::default(),
            seed: 1,
            float: 1_000_000_000,
            wallet: 100_000_000,
            prompt_timeout: Duration::from_secs(60),
            response_delay: Duration::ZERO,
            approval_delay: Duration::from_millis(50),
            token_ttl: Duration::from_secs(3600),
        }
    }
}

/// `permille` chances in 1000.
pub fn roll(rng: &mut rand::rngs::StdRng, permille: u32) -> bool {
    use rand::Rng;
    permille > 0 && rng.random_range(0..1000) < permille
}

/// Sends callbacks the way a misbehaving provider does: some lost, some
/// twice, some late (which reorders them), some before the request's own
/// answer. Shared by the simulators; it counts what it did.
#[derive(Clone)]
pub struct CallbackSender {
    http: reqwest::Client,
    inner: std::sync::Arc<std::sync::Mutex<SenderState>>,
}

struct SenderState {
    rng: rand::rngs::StdRng,
    chaos: Chaos,
    lost: u64,
    duplicated: u64,
}

impl CallbackSender {
    pub fn new(chaos: Chaos, seed: u64) -> CallbackSender {
        use rand::SeedableRng;
        CallbackSender {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            inner: std::sync::Arc::new(std::sync::Mutex::new(SenderState {
                rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_ca11),
                chaos,
                lost: 0,
                duplicated: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SenderState> {
        self.inner.lock().expect("callback sender poisoned")
    }

    pub fn set_chaos(&self, chaos: Chaos) {
        self.lock().chaos = chaos;
    }

    pub fn chaos(&self) -> Chaos {
        self.lock().chaos.clone()
    }

    /// Rolls the request-side dice of the current chaos: `(server error
    /// before anything happens, timeout after the money moved)`.
    pub fn roll_request(&self) -> (bool, bool) {
        let mut state = self.lock();
        let chaos = state.chaos.clone();
        let error = roll(&mut state.rng, chaos.server_error_permille);
        let timeout = !error && roll(&mut state.rng, chaos.timeout_after_money_permille);
        (error, timeout)
    }

    pub fn lost(&self) -> u64 {
        self.lock().lost
    }

    pub fn duplicated(&self) -> u64 {
        self.lock().duplicated
    }

    /// Sends `body` to `url` with `method` under the chaos settings. With
    /// `callback_before_response` it returns once the callback was
    /// delivered (so the caller's own answer comes after it); otherwise it
    /// sends in the background.
    pub async fn send(&self, method: reqwest::Method, url: String, body: serde_json::Value) {
        use rand::Rng;
        let (lost, duplicate, delay, before) = {
            let mut state = self.lock();
            let chaos = state.chaos.clone();
            let lost = roll(&mut state.rng, chaos.callback_loss_permille);
            let duplicate = roll(&mut state.rng, chaos.callback_duplicate_permille);
            let delay = if chaos.callback_max_delay_ms > 0 {
                state.rng.random_range(0..=chaos.callback_max_delay_ms)
            } else {
                0
            };
            if lost {
                state.lost += 1;
            }
            if duplicate {
                state.duplicated += 1;
            }
            (lost, duplicate, delay, chaos.callback_before_response)
        };
        if lost || url.is_empty() {
            return;
        }
        let http = self.http.clone();
        let deliver = async move {
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            for _ in 0..if duplicate { 2 } else { 1 } {
                let _ = http.request(method.clone(), &url).json(&body).send().await;
            }
        };
        if before {
            deliver.await;
        } else {
            tokio::spawn(deliver);
        }
    }
}

/// The providers there is a simulator for, by name.
pub const PROVIDERS: [&str; 5] = ["mpesa", "airtel", "mtn", "vodacom_tz", "tigo_tz"];

/// Starts the simulator of `provider` on a free local port.
pub async fn spawn(provider: &str, options: SimOptions) -> std::io::Result<std::sync::Arc<dyn SimulatedProvider>> {
    spawn_at(provider, std::net::SocketAddr::from(([127, 0, 0, 1], 0)), options).await
}

/// Starts the simulator of `provider` on `address`.
pub async fn spawn_at(
    provider: &str,
    address: std::net::SocketAddr,
    options: SimOptions,
) -> std::io::Result<std::sync::Arc<dyn SimulatedProvider>> {
    use std::sync::Arc;
    Ok(match provider {
        "mpesa" => {
            let listener = tokio::net::TcpListener::bind(address).await?;
            let handle = mpesa::SimHandle::new(
                mpesa::SimConfig::from_options(&options),
                format!("http://{}", listener.local_addr()?),
            );
            let app = mpesa::router(handle.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Arc::new(handle)
        }
        "airtel" => Arc::new(airtel::AirtelSim::spawn_at(address, options).await?),
        "mtn" => Arc::new(mtn::MtnSim::spawn_at(address, options).await?),
        "vodacom_tz" => Arc::new(vodacom_tz::VodacomSim::spawn_at(address, options).await?),
        "tigo_tz" => Arc::new(tigo_tz::TigoSim::spawn_at(address, options).await?),
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no simulator for {other:?}"),
            ))
        }
    })
}
