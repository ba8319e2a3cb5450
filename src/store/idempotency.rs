//! SQL for idempotency records.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// A stored first response.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub request_hash: Vec<u8>,
    pub response_status: i16,
    pub response_body: Value,
}

/// Claims `(owner, key)` for this request. `None` means the key is new and
/// now held by this transaction; otherwise the committed record of the
/// request that used it first (a concurrent first user is waited for).
pub async fn claim(
    conn: &mut PgConnection,
    owner: &str,
    key: &str,
    request_hash: &[u8],
    ttl_s: i64,
    now: Option<DateTime<Utc>>,
) -> Result<Option<Record>, sqlx::Error> {
    // An expired record is as good as none: it is replaced in place. A live
    // one is left alone (and locked; a concurrent first user is waited for).
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (owner, key, request_hash, response_status, response_body, created_at, expires_at)
         VALUES ($1, $2, $3, 0, 'null'::jsonb, coalesce($5, now()), coalesce($5, now()) + $4 * interval '1 second')
         ON CONFLICT (owner, key) DO UPDATE
         SET request_hash = EXCLUDED.request_hash, response_status = 0, response_body = 'null'::jsonb,
             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
         WHERE idempotency_keys.expires_at <= coalesce($5, now())",
    )
    .bind(owner)
    .bind(key)
    .bind(request_hash)
    .bind(ttl_s)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE owner = $1 AND key = $2",
    )
    .bind(owner)
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .map(Some)
}

/// Stores the response of the request that holds the key.
pub async fn store_response(
    conn: &mut PgConnection,
    owner: &str,
    key: &str,
    status: i16,
    body: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE owner = $1 AND key = $2")
        .bind(owner)
        .bind(key)
        .bind(status)
        .bind(body)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes up to `limit` expired records; returns how many.
pub async fn purge_expired(pool: &sqlx::PgPool, limit: i64, now: Option<DateTime<Utc>>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE (owner, key) IN (
             SELECT owner, key FROM idempotency_keys WHERE expires_at <= coalesce($2, now())
             ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(limit)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
