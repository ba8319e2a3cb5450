//! Tuma's configuration: one typed struct, loaded once at start-up from the
//! built-in `config/default.toml`, an optional file, then `TUMA__SECTION__KEY`
//! environment variables and `DATABASE_URL`, and validated before anything
//! starts. Every error names the offending key.

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::domain::Currency;
use crate::runner::RunnerConfig;

/// The built-in defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub runner: RunnerConfig,
    pub api: ApiConfig,
    pub console: crate::console::ConsoleConfig,
    pub workflows: WorkflowsConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub routing: crate::policy::routing::RoutingConfig,
    pub fees: crate::policy::fees::FeeSchedule,
    pub fx: crate::policy::fx::FxConfig,
    pub policy: crate::policy::PolicyConfig,
    pub loans: crate::loans::LoansConfig,
    pub cron: crate::jobs::CronConfig,
    pub reconciliation: crate::reconcile::ReconciliationConfig,
    pub reports: crate::reports::ReportsConfig,
    pub webhooks: WebhooksConfig,
    /// Daraja credentials and URLs; absent means M-Pesa intents wait.
    #[serde(default)]
    pub mpesa: Option<crate::providers::mpesa::MpesaConfig>,
    /// Airtel Money Open API; absent means Airtel intents wait.
    #[serde(default)]
    pub airtel: Option<crate::providers::airtel::AirtelConfig>,
    /// MTN MoMo Open API; absent means MTN intents wait.
    #[serde(default)]
    pub mtn: Option<crate::providers::mtn::MtnConfig>,
    /// Vodacom M-Pesa Tanzania (Open API); absent means its intents wait.
    #[serde(default)]
    pub vodacom_tz: Option<crate::providers::vodacom_tz::VodacomConfig>,
    /// Tigo Pesa Tanzania; absent means its intents wait.
    #[serde(default)]
    pub tigo_tz: Option<crate::providers::tigo_tz::TigoConfig>,
}

/// `[webhooks]`: where deliveries may go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Deliver to loopback and private addresses too (see
    /// `notify::address`); off, they are refused.
    pub allow_private_addresses: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub body_limit_bytes: usize,
    pub idempotency_ttl_s: u64,
    pub default_page_size: u32,
    pub max_page_size: u32,
    pub metadata_limit_bytes: usize,
    /// Most payout creates admitted together in one transaction; 1 admits
    /// each alone.
    pub group_creates: usize,
    /// Groups of payout creates admitted at the same time.
    pub group_lanes: usize,
    /// Longest a transaction of this node's other work waits, before it
    /// starts, for the payout create groups in flight (see
    /// `store::foreground`); 0: nothing waits.
    pub creates_first_ms: u64,
    /// Longest an API key is remembered between requests (revocations are
    /// heard at once; see `api::key_cache`); 0 reads the key every time.
    pub key_cache_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsConfig {
    /// A directory of workflow files; empty means the built-in ones.
    pub dir: String,
}

/// What one provider can carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Whether the provider takes whole units only (no cents).
    pub whole_units: bool,
    pub currencies: BTreeMap<Currency, AmountLimits>,
    /// When a burst of provider failures pauses this provider's queue.
    #[serde(default)]
    pub circuit: crate::providers::circuit::CircuitConfig,
}

/// Per-transaction limits, in major units of the currency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountLimits {
    pub payout_min: Decimal,
    pub payout_max: Decimal,
    pub collection_min: Decimal,
    pub collection_max: Decimal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
    pub idle_in_transaction_timeout_ms: u64,
    pub create_if_missing: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Proxies in front of Tuma whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that could not be loaded, with the key and source.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Most connections one node may ask for; Postgres' default is 100 in all.
const MAX_DATABASE_CONNECTIONS: u32 = 500;
/// Past a second, the runner would stall behind a steady stream of creates.
const MAX_CREATES_FIRST_MS: u64 = 1000;

impl Config {
    /// Loads the layered configuration: built-in defaults, then `file`, then
    /// `TUMA__SECTION__KEY` variables and `DATABASE_URL` from the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let figment = figment
            .merge(Env::prefixed("TUMA__").split("__"))
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database.url".into()));
        Config::from_figment(figment)
    }

    /// Extracts and validates a configuration from any set of layers.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| ConfigError(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(mpesa) = &self.mpesa {
            if let Some(bad) = mpesa
                .callback_allowlist
                .iter()
                .find(|ip| ip.trim().parse::<std::net::IpAddr>().is_err())
            {
                return Err(ConfigError(format!(
                    "mpesa.callback_allowlist: {bad:?} is not an IP address"
                )));
            }
            // A held payout looks again every 5 s; a report must still be
            // fresh by then, or the payout waits forever for a fresher one.
            if mpesa.float_max_age_s < 15 {
                return Err(ConfigError(
                    "mpesa.float_max_age_s must be at least 15 (held payouts re-check every 5 s)".into(),
                ));
            }
        }
        if !self.database.url.starts_with("postgres://") && !self.database.url.starts_with("postgresql://") {
            return Err(ConfigError("database.url must be a postgres:// URL".into()));
        }
        if self.database.max_connections < 4 || self.database.max_connections > MAX_DATABASE_CONNECTIONS {
            return Err(ConfigError(format!(
                "database.max_connections must be between 4 and {MAX_DATABASE_CONNECTIONS} \
                 (the runner alone holds up to 4)"
            )));
        }
        if self.database.connect_timeout_ms == 0 {
            return Err(ConfigError("database.connect_timeout_ms must be greater than 0".into()));
        }
        if self.api.body_limit_bytes < 1024 || self.api.max_page_size == 0 || self.api.default_page_size == 0 {
            return Err(ConfigError(
                "api.body_limit_bytes must be at least 1024, and page sizes positive".into(),
            ));
        }
        if self.console.session_ttl_s == 0 || self.console.session_ttl_s > crate::console::MAX_SESSION_TTL_S {
            return Err(ConfigError(format!(
                "console.session_ttl_s must be between 1 and {} (seven days)",
                crate::console::MAX_SESSION_TTL_S
            )));
        }
        if self.console.idle_timeout_s == 0 || self.console.idle_timeout_s > self.console.session_ttl_s {
            return Err(ConfigError(format!(
                "console.idle_timeout_s must be between 1 and console.session_ttl_s ({})",
                self.console.session_ttl_s
            )));
        }
        if self.api.group_lanes == 0 {
            return Err(ConfigError("api.group_lanes must be at least 1".into()));
        }
        if self.api.creates_first_ms > MAX_CREATES_FIRST_MS {
            return Err(ConfigError(format!(
                "api.creates_first_ms must be at most {MAX_CREATES_FIRST_MS} (0 turns the wait off)"
            )));
        }
        if self.api.default_page_size > self.api.max_page_size {
            return Err(ConfigError(
                "api.default_page_size must not exceed api.max_page_size".into(),
            ));
        }
        for (name, provider) in &self.providers {
            for (currency, limits) in &provider.currencies {
                let key = format!("providers.{name}.currencies.{currency}");
                let positive = limits.payout_min > Decimal::ZERO && limits.collection_min > Decimal::ZERO;
                let ordered = limits.payout_min <= limits.payout_max && limits.collection_min <= limits.collection_max;
                if !positive || !ordered {
                    return Err(ConfigError(format!(
                        "{key}: minimums must be positive and at most the maximums"
                    )));
                }
            }
        }
        for (currency, provider) in &self.routing.default_provider {
            let serves = self
                .providers
                .get(provider)
                .is_some_and(|p| p.currencies.contains_key(currency));
            if !serves {
                return Err(ConfigError(format!(
                    "routing.default_provider.{currency}: provider {provider:?} is not configured for {currency}"
                )));
            }
        }
        for (provider, currencies) in &self.fees.tariffs {
            for (currency, bands) in currencies {
                // The first band covering an amount is its fee: out of
                // order, a larger amount would find a smaller band's fee.
                // An empty list would refuse every amount as above the
                // tariff: leave the currency out to charge nothing.
                let ascending = bands.windows(2).all(|pair| pair[0].up_to < pair[1].up_to);
                let non_negative = bands.iter().all(|band| band.fee >= Decimal::ZERO);
                if bands.is_empty() || !ascending || !non_negative {
                    return Err(ConfigError(format!(
                        "fees.tariffs.{provider}.{currency}: give at least one band, rising strictly by up_to, \
                         with fees of zero or more (leave the currency out to charge nothing)"
                    )));
                }
            }
        }
        crate::policy::routing::check(&self.routing, &self.providers).map_err(ConfigError)?;
        self.runner.validate().map_err(ConfigError)?;
        let idle = self.database.idle_in_transaction_timeout_ms;
        if idle != 0 && (idle < 100 || idle >= self.runner.lease_ms) {
            return Err(ConfigError(format!(
                "database.idle_in_transaction_timeout_ms must be 0 (not set by Tuma), or at least 100 and shorter than \
                 runner.lease_ms ({}): a frozen node's locks must be gone before its jobs are rescued",
                self.runner.lease_ms
            )));
        }
        Ok(())
    }
}

/// Figment's errors already carry the key path and where the value came
/// from; put them into one line an operator can act on.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::from("(top level)")
            } else {
                e.path.join(".")
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_else(|| "configuration".into());
            format!("{key}: {} (from {source})", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(overrides)))
    }

    #[test]
    fn the_built_in_defaults_are_valid() {
        let config = with("").unwrap();
        assert_eq!(config.runner.queues["default"].concurrency, 64);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let error = with("[runner]\nconcurency = 3").unwrap_err().to_string();
        assert!(error.contains("concurency"), "{error}");
    }

    #[test]
    fn a_negative_concurrency_is_refused_by_key() {
        let error = with("[runner.queues.default]\nconcurrency = -1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("runner.queues.default.concurrency"), "{error}");
        let error = with("[runner.queues.default]\nconcurrency = 0")
            .unwrap_err()
            .to_string();
        assert!(error.contains("runner.queues.default.concurrency"), "{error}");
    }

    #[test]
    fn a_heartbeat_slower_than_half_the_lease_is_refused() {
        let error = with("[runner]\nlease_ms = 1000\nheartbeat_interval_ms = 800")
            .unwrap_err()
            .to_string();
        assert!(error.contains("runner.heartbeat_interval_ms"), "{error}");
    }

    #[test]
    fn an_idle_transaction_timeout_not_shorter_than_the_lease_is_refused() {
        let error = with("[runner]\nlease_ms = 30000\n[database]\nidle_in_transaction_timeout_ms = 30000")
            .unwrap_err()
            .to_string();
        assert!(error.contains("database.idle_in_transaction_timeout_ms"), "{error}");
        assert!(with("[runner]\nlease_ms = 30000\n[database]\nidle_in_transaction_timeout_ms = 29000").is_ok());
        assert!(
            with("[database]\nidle_in_transaction_timeout_ms = 0").is_ok(),
            "0 sets nothing"
        );
    }

    #[test]
    fn an_allow_list_entry_that_is_not_an_address_is_refused() {
        let error = with("[mpesa]\ncallback_allowlist = [\"196.201.214.200\", \"safaricom.co.ke\"]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("mpesa.callback_allowlist"), "{error}");
        assert!(with("[mpesa]\ncallback_allowlist = [\" 196.201.214.200 \"]").is_ok());
    }

    #[test]
    fn a_console_idle_timeout_longer_than_the_session_is_refused() {
        let error = with("[console]\nsession_ttl_s = 600\nidle_timeout_s = 900")
            .unwrap_err()
            .to_string();
        assert!(error.contains("console.idle_timeout_s"), "{error}");
        assert!(with("[console]\nsession_ttl_s = 600\nidle_timeout_s = 600").is_ok());
    }

    #[test]
    fn tariff_bands_out_of_order_are_refused() {
        let error =
            with("[fees.tariffs.mpesa]\nKES = [{ up_to = \"1000\", fee = \"15\" }, { up_to = \"100\", fee = \"0\" }]")
                .unwrap_err()
                .to_string();
        assert!(error.contains("fees.tariffs.mpesa.KES"), "{error}");
        let error = with("[fees.tariffs.mpesa]\nKES = [{ up_to = \"100\", fee = \"-1\" }]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("fees.tariffs.mpesa.KES"), "{error}");
        let error = with("[fees.tariffs.mpesa]\nKES = []").unwrap_err().to_string();
        assert!(error.contains("fees.tariffs.mpesa.KES"), "{error}");
        assert!(with(
            "[fees.tariffs.mpesa]\nKES = [{ up_to = \"100\", fee = \"0\" }, { up_to = \"1000\", fee = \"15\" }]"
        )
        .is_ok());
    }

    #[test]
    fn no_lane_for_payout_creates_is_refused() {
        let error = with("[api]\ngroup_lanes = 0").unwrap_err().to_string();
        assert!(error.contains("api.group_lanes"), "{error}");
        assert_eq!(with("[api]\ngroup_lanes = 3").unwrap().api.group_lanes, 3);
        let error = with("[api]\ncreates_first_ms = 1001").unwrap_err().to_string();
        assert!(error.contains("api.creates_first_ms"), "{error}");
        assert_eq!(with("[api]\ncreates_first_ms = 0").unwrap().api.creates_first_ms, 0);
    }
}
