//! SQL for outbound webhook endpoints and their delivery log.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: Uuid,
    pub owner: String,
    pub url: String,
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

pub async fn insert_endpoint(pool: &PgPool, owner: &str, url: &str, secret: &str) -> Result<EndpointRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO webhook_endpoints (id, owner, url, secret) VALUES ($1, $2, $3, $4)
         RETURNING id, owner, url, secret, created_at, disabled_at",
    )
    .bind(Uuid::now_v7())
    .bind(owner)
    .bind(url)
    .bind(secret)
    .fetch_one(pool)
    .await
}

pub async fn get_endpoint(pool: &PgPool, id: Uuid) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, owner, url, secret, created_at, disabled_at FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// `owner`'s endpoints, live ones first, newest first within each.
pub async fn list_endpoints(pool: &PgPool, owner: &str) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, owner, url, secret, created_at, disabled_at FROM webhook_endpoints
         WHERE owner = $1 ORDER BY disabled_at IS NOT NULL, id DESC",
    )
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// How many endpoints `owner` has that are not disabled.
pub async fn live_endpoints(pool: &PgPool, owner: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE owner = $1 AND disabled_at IS NULL")
        .bind(owner)
        .fetch_one(pool)
        .await
}

/// Disables `owner`'s endpoint `id` (once: a second call keeps the first
/// time); `None` when `owner` has no such endpoint.
pub async fn disable_endpoint(
    pool: &PgPool,
    owner: &str,
    id: Uuid,
    now: Option<DateTime<Utc>>,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE webhook_endpoints SET disabled_at = coalesce(disabled_at, $3, now())
         WHERE id = $1 AND owner = $2
         RETURNING id, owner, url, secret, created_at, disabled_at",
    )
    .bind(id)
    .bind(owner)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// The intent an event belongs to.
pub async fn event_intent(pool: &PgPool, event_id: i64) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT intent_id FROM intent_events WHERE id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await
}

/// One delivery attempt, as it went.
pub struct DeliveryAttempt<'a> {
    pub endpoint_id: Uuid,
    pub event_id: i64,
    pub attempt: i32,
    pub status_code: Option<i16>,
    pub error: Option<&'a str>,
    pub latency_ms: i32,
}

pub async fn record_delivery(pool: &PgPool, attempt: &DeliveryAttempt<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, attempt, status_code, error, latency_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(attempt.endpoint_id)
    .bind(attempt.event_id)
    .bind(attempt.attempt)
    .bind(attempt.status_code)
    .bind(attempt.error)
    .bind(attempt.latency_ms)
    .execute(pool)
    .await?;
    Ok(())
}
