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
