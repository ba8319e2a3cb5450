//! The database: connecting (and creating the database when asked), the
//! schema migrations, and the SQL of intents, API keys, idempotency records
//! and webhooks. The runner keeps its own SQL in `runner::store`.

pub mod c2b;
pub mod console;
pub mod floats;
pub mod foreground;
pub mod grouped;
pub mod idempotency;
pub mod inbox;
pub mod intents;
pub mod keys;
pub mod late_successes;
pub mod loans;
pub mod parties;
pub mod policy;
pub mod provider_calls;
pub mod reports;
pub mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::DatabaseConfig;
pub use foreground::Foreground;

/// The schema, embedded at compile time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Why the database could not be used. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url is not a valid Postgres URL: {0}")]
    BadUrl(String),
    // The sqlx error is part of the message rather than a `source`, because
    // its own message already includes its cause; chaining would repeat it.
    #[error("cannot reach the database at {url}: {cause}")]
    Unreachable { url: String, cause: sqlx::Error },
    #[error("cannot create database {name:?} at {url}: {cause}")]
    CreateFailed {
        name: String,
        url: String,
        cause: sqlx::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Database names Tuma will create: a conservative identifier, so the name
/// can be quoted into `CREATE DATABASE` without any chance of injection.
fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparseable URL)".to_owned(),
    }
}

/// The process id of the server backend serving one of `pool`'s
/// connections, and the server's address as that connection reached it
/// (`None` over a Unix socket).
pub async fn server_backend(pool: &PgPool) -> Result<(i32, Option<String>), sqlx::Error> {
    sqlx::query_as("SELECT pg_backend_pid(), host(inet_server_addr())")
        .fetch_one(pool)
        .await
}

/// The WAL the server has written since its statistics were last reset:
/// records and bytes (`pg_stat_wal`, PostgreSQL 14 and later).
pub async fn wal_written(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT wal_records, wal_bytes::int8 FROM pg_stat_wal")
        .fetch_one(pool)
        .await
}

/// `text` as a PostgreSQL text or `jsonb` value can hold it: a NUL, which it refuses
/// (and which a provider's free text could carry), becomes U+FFFD.
pub(crate) fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// [`storable`] for a string that is given away.
pub(crate) fn storable_owned(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// How long a pooled connection may sit idle before it is pinged on the way
/// out of the pool.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connects a pool to the configured database, creating the database first
/// when `create_if_missing` is set and it does not exist.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    connect_with(config, &Foreground::off()).await
}

/// [`connect`], for a node that admits payout creates in groups: a
/// connection leaving the pool waits while `foreground` has groups in
/// flight (see [`foreground`]).
pub async fn connect_with(config: &DatabaseConfig, foreground: &Foreground) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(&config.url).map_err(|e| DbError::BadUrl(e.to_string()))?;
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    if config.create_if_missing {
        create_database_if_missing(&options, &config.url, timeout).await?;
    }
    // Every pool made from this one (the runner's, the create lanes')
    // inherits the setting with the options. 0: set elsewhere (the role).
    let options = if config.idle_in_transaction_timeout_ms > 0 {
        options.options([(
            "idle_in_transaction_session_timeout",
            config.idle_in_transaction_timeout_ms.to_string(),
        )])
    } else {
        options
    };
    pool_options(config.max_connections, timeout, foreground.clone())
        .connect_with(options)
        .await
        .map_err(|cause| DbError::Unreachable {
            url: redact(&config.url),
            cause,
        })
}

/// A small pool of its own for a group-commit batcher: one connection per
/// lane, to the same database as `pool`, connected when first used. The
/// main pool hands out its idle connections in turn, so each statement of
/// a busy node lands on a different connection each time, and PostgreSQL
/// plans it afresh on each (a connection keeps a statement's plan only
/// after several calls); a batcher's statements on connections of their
/// own are planned a few times and then reused.
pub fn lane_pool(pool: &PgPool, lanes: usize) -> PgPool {
    let timeout = pool.options().get_acquire_timeout();
    pool_options(lanes.max(1) as u32, timeout, Foreground::off()).connect_lazy_with((*pool.connect_options()).clone())
}

fn pool_options(max_connections: u32, acquire_timeout: Duration, foreground: Foreground) -> PgPoolOptions {
    let opened = foreground.clone();
    PgPoolOptions::new()
        .max_connections(max_connections)
        // A connection opened for an acquire (none was idle) is handed out
        // without `before_acquire`: it waits for the create groups here.
        .after_connect(move |_conn, _meta| {
            let foreground = opened.clone();
            Box::pin(async move {
                foreground.wait().await;
                Ok(())
            })
        })
        .acquire_timeout(acquire_timeout)
        // sqlx pings every connection it hands out: a round trip before each
        // transaction. A connection back from use within the last moment is
        // known to work; only one idle longer is checked first. (One that
        // died meanwhile fails its statement, and the caller's retry or the
        // job's next attempt takes a fresh one.)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let foreground = foreground.clone();
            Box::pin(async move {
                foreground.wait().await;
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Connects to the server's `postgres` database and creates the target one
/// if it is missing. Safe against a concurrent creator.
pub async fn create_database_if_missing(
    options: &PgConnectOptions,
    url: &str,
    timeout: Duration,
) -> Result<(), DbError> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    if !is_plain_identifier(&name) {
        return Err(DbError::BadUrl(format!(
            "database name {name:?} must be letters, digits and '_' for Tuma to create it"
        )));
    }
    let unreachable = |cause| DbError::Unreachable {
        url: redact(url),
        cause,
    };
    let admin = options.clone().database("postgres");
    let mut conn = tokio::time::timeout(timeout, PgConnection::connect_with(&admin))
        .await
        .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
        .map_err(unreachable)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .map_err(unreachable)?;
    if !exists {
        // The name was checked to be a plain identifier above.
        let created = sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await;
        match created {
            Ok(_) => tracing::info!(database = name, "created database"),
            // 42P04: created concurrently by someone else; that is fine.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(cause) => {
                return Err(DbError::CreateFailed {
                    name,
                    url: redact(url),
                    cause,
                })
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Drops a database (used by the benchmark for its scratch database).
pub async fn drop_database(options: &PgConnectOptions, name: &str) -> Result<(), sqlx::Error> {
    assert!(is_plain_identifier(name), "refusing to drop {name:?}");
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(())
}

/// Connects to the configured database and brings its schema up to date:
/// what every command that touches the database does first.
pub async fn open(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    open_with(config, &Foreground::off()).await
}

/// [`open`] with [`connect_with`]: for the commands that run an engine.
pub async fn open_with(config: &DatabaseConfig, foreground: &Foreground) -> Result<PgPool, DbError> {
    let pool = connect_with(config, foreground).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies pending migrations. Concurrent callers serialize on sqlx's
/// advisory lock, so several nodes starting at once is safe. A connection
/// lost on the way (the database restarting, a proxy or an operator
/// cutting it) is retried a few times, over about ten seconds: each
/// migration is applied in a transaction of its own, so one cut off was
/// rolled back and is applied again.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    use backon::{ExponentialBuilder, Retryable};
    let retry = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(4))
        .with_max_times(5);
    (|| MIGRATOR.run(pool))
        .retry(retry)
        .when(connection_lost)
        .notify(|error, wait| {
            tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "migrations cut off; retrying");
        })
        .await?;
    Ok(())
}

/// Whether migrating failed because its connection was lost, not because
/// of the migrations themselves.
fn connection_lost(error: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    let (MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _)) = error else {
        return false;
    };
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // Class 08: connection exception; 57P: the server shutting down or
        // terminating the session.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// The cheapest round trip: whether the database answers at all.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool).await.map(drop)
}

#[cfg(test)]
mod tests {
    use sqlx::migrate::MigrateError;

    use super::connection_lost;

    #[test]
    fn only_a_lost_connection_makes_migrating_try_again() {
        let cut = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(connection_lost(&MigrateError::Execute(cut())));
        assert!(connection_lost(&MigrateError::ExecuteMigration(cut(), 20261204000019)));
        assert!(connection_lost(&MigrateError::Execute(sqlx::Error::PoolTimedOut)));
        // A migration the database refuses, or one changed after it was
        // applied, fails at once.
        assert!(!connection_lost(&MigrateError::Execute(sqlx::Error::RowNotFound)));
        assert!(!connection_lost(&MigrateError::VersionMismatch(20261204000019)));
    }
}
