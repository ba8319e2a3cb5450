//! SQL for API keys.

use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: Uuid,
    pub name: String,
    pub owner: String,
    pub key_hash: Vec<u8>,
    pub scopes: Vec<String>,
}

pub async fn insert(
    pool: &PgPool,
    name: &str,
    owner: &str,
    prefix: &str,
    key_hash: &[u8],
    scopes: &[String],
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO api_keys (id, name, owner, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(owner)
    .bind(prefix)
    .bind(key_hash)
    .bind(scopes)
    .fetch_one(pool)
    .await
}

/// The live key with this prefix.
pub async fn by_prefix(pool: &PgPool, prefix: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, owner, key_hash, scopes FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL")
        .bind(prefix)
        .fetch_optional(pool)
        .await
}

/// An API key as the console lists it: never its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyListing {
    pub name: String,
    pub owner: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every key, live ones first, newest first within each, at most `limit`.
pub async fn list(pool: &PgPool, limit: i64) -> Result<Vec<KeyListing>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, owner, prefix, scopes, created_at, revoked_at FROM api_keys
         ORDER BY revoked_at IS NOT NULL, created_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Revokes the live key with this prefix; returns its name, or `None` when
/// there is no such live key. A revoked key authenticates nothing.
pub async fn revoke(
    pool: &PgPool,
    prefix: &str,
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = coalesce($2, now())
         WHERE prefix = $1 AND revoked_at IS NULL RETURNING name",
    )
    .bind(prefix)
    .bind(now)
    .fetch_optional(pool)
    .await
}
