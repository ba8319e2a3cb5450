//! SQL for reconciliation and the scheduled reports.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// The ledger's view of one provider float: posted and pending, on the
/// float's normal (debit) side.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerFloat {
    pub provider: String,
    pub currency: String,
    pub posted: Decimal,
    pub pending: Decimal,
}

pub async fn ledger_floats(pool: &PgPool) -> Result<Vec<LedgerFloat>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.ref AS provider, a.currency,
                coalesce(-sum(e.amount) FILTER (WHERE t.state = 'posted'), 0) AS posted,
                coalesce(-sum(e.amount) FILTER (WHERE t.state = 'pending'), 0) AS pending
         FROM ledger_entries e
         JOIN ledger_accounts a ON a.id = e.account_id
         JOIN ledger_transfers t ON t.id = e.transfer_id
         WHERE a.kind = 'float'
         GROUP BY a.ref, a.currency
         ORDER BY a.ref, a.currency",
    )
    .fetch_all(pool)
    .await
}

/// One account of a provider's latest balance report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportedFloat {
    pub provider: String,
    pub account: String,
    pub currency: String,
    pub available: Decimal,
    pub reported_at: DateTime<Utc>,
}

pub async fn reported_floats(pool: &PgPool) -> Result<Vec<ReportedFloat>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, account, currency, available, reported_at FROM provider_floats ORDER BY provider, account",
    )
    .fetch_all(pool)
    .await
}

/// An intent in a reconciliation list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntentLine {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub amount: Decimal,
    pub currency: String,
    pub provider: String,
    pub reference: String,
    pub updated_at: DateTime<Utc>,
}

const LINE: &str = "id, kind, state, amount, currency, provider, reference, updated_at";

pub async fn unresolved(pool: &PgPool, limit: i64) -> Result<Vec<IntentLine>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LINE} FROM intents WHERE state = 'unresolved' AND final_at IS NULL ORDER BY updated_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Non-final intents that have sat in a state longer than its bound:
/// `bounds` is `(kind, state, seconds)`.
pub async fn stuck(
    pool: &PgPool,
    bounds: &[(String, String, i64)],
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<IntentLine>, sqlx::Error> {
    let kinds: Vec<&str> = bounds.iter().map(|b| b.0.as_str()).collect();
    let states: Vec<&str> = bounds.iter().map(|b| b.1.as_str()).collect();
    let seconds: Vec<i64> = bounds.iter().map(|b| b.2).collect();
    sqlx::query_as(
        "SELECT i.id, i.kind, i.state, i.amount, i.currency, i.provider, i.reference, i.updated_at
         FROM intents i
         JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS b (kind, state, seconds)
           ON b.kind = i.kind AND b.state = i.state
         WHERE i.final_at IS NULL AND i.updated_at < $4 - make_interval(secs => b.seconds)
         ORDER BY i.updated_at
         LIMIT $5",
    )
    .bind(&kinds)
    .bind(&states)
    .bind(&seconds)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A callback that named no intent of ours (or not the one it claimed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnmatchedCallback {
    pub id: i64,
    pub provider: String,
    pub kind: String,
    pub outcome: String,
    /// The provider's ids for it (never the raw body).
    pub dedupe_key: Option<String>,
    pub received_at: DateTime<Utc>,
}

pub async fn unmatched_callbacks(pool: &PgPool, limit: i64) -> Result<Vec<UnmatchedCallback>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, kind, outcome, dedupe_key, received_at FROM callback_inbox
         WHERE outcome IN ('unknown_token', 'unmatched', 'reference_mismatch')
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn store_reconciliation(
    pool: &PgPool,
    day: NaiveDate,
    generated_at: DateTime<Utc>,
    ok: bool,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reconciliation_reports (day, generated_at, ok, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (day) DO UPDATE SET generated_at = excluded.generated_at, ok = excluded.ok, body = excluded.body",
    )
    .bind(day)
    .bind(generated_at)
    .bind(ok)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn reconciliation(pool: &PgPool, day: NaiveDate) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT body FROM reconciliation_reports WHERE day = $1")
        .bind(day)
        .fetch_optional(pool)
        .await
}
