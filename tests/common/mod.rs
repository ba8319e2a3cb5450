//! Test harness: a fresh, migrated Postgres database per test, and runner
//! configurations with short, test-friendly timings.
#![allow(dead_code)]

use std::str::FromStr;
use std::time::{Duration, Instant};

use figment::providers::{Format, Toml};
use figment::Figment;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tuma::config::{Config, DEFAULT_TOML};
use tuma::runner::RunnerConfig;

pub mod app;
pub mod console;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/tuma";

/// The server tests run against: `DATABASE_URL` or the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub options: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let server = PgConnectOptions::from_str(&server_url()).expect("DATABASE_URL parses");
        let name = format!("tuma_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&server.clone().database("postgres"))
            .await
            .expect("Postgres is reachable at DATABASE_URL (or 127.0.0.1:5432)");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let options = server.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options.clone())
            .await
            .expect("connect to test database");
        tuma::store::migrate(&pool).await.expect("migrations apply");
        TestDb { pool, name, options }
    }

    /// Another pool on the same database: what a second node would have.
    pub async fn node_pool(&self, max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(self.options.clone())
            .await
            .expect("connect node pool")
    }

    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = self.options.clone();
        // Drop runs outside any async context guarantee; use a thread with its
        // own runtime so the database is removed even when the test failed.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect_with(&server.database("postgres")).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The built-in configuration with `overrides` (TOML) merged on top.
pub fn config_with(overrides: &str) -> Config {
    // Test receivers listen on loopback; a test about the rule sets it back.
    let base = "[webhooks]\nallow_private_addresses = true";
    let figment = Figment::from(Toml::string(DEFAULT_TOML))
        .merge(Toml::string(base))
        .merge(Toml::string(overrides));
    Config::from_figment(figment).expect("test configuration is valid")
}

/// Runner settings for tests: a 2 s lease and quick services, so crash and
/// rescue tests finish in seconds.
pub fn runner_config(overrides: &str) -> RunnerConfig {
    let base = "
        [runner]
        lease_ms = 2000
        heartbeat_interval_ms = 500
        rescue_interval_ms = 200
        poll_interval_ms = 100
        shutdown_timeout_ms = 2000
        default_timeout_ms = 30000
        stats_interval_ms = 1000
        [runner.queues.default]
        concurrency = 16
        [database]
        idle_in_transaction_timeout_ms = 500
    ";
    let figment = Figment::from(Toml::string(DEFAULT_TOML))
        .merge(Toml::string(base))
        .merge(Toml::string(overrides));
    Config::from_figment(figment)
        .expect("test runner configuration is valid")
        .runner
}

/// Polls `check` every 20 ms until it returns true or `limit` passes. For
/// waiting on background work to *happen*; never used to assert how fast.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect("count query")
}
