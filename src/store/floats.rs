//! SQL for provider float balances and the payouts held against them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

pub async fn record(
    conn: &mut PgConnection,
    provider: &str,
    account: &str,
    currency: &str,
    available: Decimal,
    now: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO provider_floats (provider, account, currency, available, reported_at)
         VALUES ($1, $2, $3, $4, coalesce($5, now()))
         ON CONFLICT (provider, account) DO UPDATE
         SET currency = excluded.currency, available = excluded.available, reported_at = excluded.reported_at",
    )
    .bind(provider)
    .bind(account)
    .bind(currency)
    .bind(available)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The last report of an account: `(available, reported_at)`.
pub async fn latest(
    conn: &mut PgConnection,
    provider: &str,
    account: &str,
) -> Result<Option<(Decimal, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT available, reported_at FROM provider_floats WHERE provider = $1 AND account = $2")
        .bind(provider)
        .bind(account)
        .fetch_optional(conn)
        .await
}

/// What payouts of `provider` may already have taken from the float that
/// its report at `reported_at` does not show, tariffs included: everything
/// released since `reported_at - skew` (unless it failed), and what was
/// released before but is still open. A release's time is its
/// transaction's start, which can precede a report it then waited behind;
/// `skew` covers that. Counting both ways errs on the side of holding.
pub async fn committed_since(
    conn: &mut PgConnection,
    provider: &str,
    currency: &str,
    reported_at: DateTime<Utc>,
    skew: chrono::Duration,
) -> Result<Decimal, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(i.amount + coalesce((i.fees->>'provider_fee')::numeric, 0)), 0)::numeric(20, 2)
         FROM intents i
         JOIN intent_events e ON e.intent_id = i.id AND e.event = 'release' AND e.outcome = 'applied'
         WHERE i.kind = 'payout' AND i.provider = $1 AND i.currency = $2
           AND ((e.at > $3 - $4 AND i.state <> 'failed') OR i.state IN ('processing', 'unresolved'))",
    )
    .bind(provider)
    .bind(currency)
    .bind(reported_at)
    .bind(skew)
    .fetch_one(conn)
    .await
}

/// Serialises float checks of one provider until the transaction ends, so
/// two payouts cannot both pass a check only one of them fits.
pub async fn lock(conn: &mut PgConnection, provider: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tuma.float.' || $1))")
        .bind(provider)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_hold_reason(conn: &mut PgConnection, id: Uuid, reason: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE intents SET hold_reason = $2 WHERE id = $1")
        .bind(id)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(())
}
