//! Tuma's configuration: one typed struct, loaded once at start-up from the
//! built-in `config/default.toml`, an optional file, then `TUMA__SECTION__KEY`
//! environment variables and `DATABASE_URL`, and validated before anything
//! starts. Every error names the offending key.

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
    pub create_if_missing: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
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
        self.runner.validate().map_err(ConfigError)
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
}
