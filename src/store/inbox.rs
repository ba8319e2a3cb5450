//! SQL for the provider callback inbox.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    pub id: i64,
    pub provider: String,
    pub kind: String,
    pub token: String,
    pub body: Vec<u8>,
    pub parse_error: Option<String>,
    pub outcome: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// A callback as received.
pub struct NewCallback<'a> {
    pub provider: &'a str,
    pub kind: &'a str,
    pub token: &'a str,
    pub body: &'a [u8],
    pub parse_error: Option<&'a str>,
    pub remote_addr: Option<&'a str>,
    /// Set when the callback is not to be processed at all.
    pub outcome: Option<&'a str>,
}

pub async fn insert(conn: &mut PgConnection, callback: &NewCallback<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO callback_inbox (provider, kind, token, body, parse_error, remote_addr, outcome,
                                     processed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7::text IS NULL THEN NULL ELSE now() END)
         RETURNING id",
    )
    .bind(callback.provider)
    .bind(callback.kind)
    .bind(callback.token)
    .bind(callback.body)
    .bind(callback.parse_error)
    .bind(callback.remote_addr)
    .bind(callback.outcome)
    .fetch_one(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<InboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, kind, token, body, parse_error, outcome, received_at FROM callback_inbox WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Whether an earlier callback with the same provider ids was applied.
pub async fn already_applied(
    conn: &mut PgConnection,
    provider: &str,
    dedupe_key: &str,
    id: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM callback_inbox
                        WHERE provider = $1 AND dedupe_key = $2 AND id <> $3 AND outcome IN ('applied', 'rejected'))",
    )
    .bind(provider)
    .bind(dedupe_key)
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Records what processing made of a callback.
pub async fn finish(
    conn: &mut PgConnection,
    id: i64,
    intent_id: Option<Uuid>,
    dedupe_key: Option<&str>,
    outcome: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE callback_inbox SET intent_id = $2, dedupe_key = $3, outcome = $4, detail = $5, processed_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(intent_id)
    .bind(dedupe_key)
    .bind(outcome)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts callbacks by outcome (tests and reports).
pub async fn outcomes(pool: &PgPool) -> Result<Vec<(Option<String>, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT outcome, count(*) FROM callback_inbox GROUP BY outcome ORDER BY outcome")
        .fetch_all(pool)
        .await
}
