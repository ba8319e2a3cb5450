//! SQL for late successes: a provider's success refused because its intent
//! had already ended without the money moving. One row per intent, written
//! with the refused event; open until a person settles it with evidence.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A late success with its intent, as reconciliation and the API show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LateSuccess {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub amount: Decimal,
    pub currency: String,
    pub provider: String,
    pub reference: String,
    /// The provider's reference the success carried, if any.
    pub provider_ref: Option<String>,
    /// `callback`, `poll` or `admin`.
    pub cause: String,
    pub at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    pub settled_by: Option<String>,
    pub evidence: Option<String>,
    /// `recovered` or `booked`, once settled.
    pub outcome: Option<String>,
    /// The transfer that booked it.
    pub transfer_id: Option<Uuid>,
}

const COLUMNS: &str = "i.id, i.kind, i.state, i.amount, i.currency, i.provider, i.reference,
                       e.provider_ref, e.cause, l.reported_at AS at, l.settled_at, l.settled_by, l.evidence,
                       l.outcome, l.transfer_id";
/// Each late success with its intent and the refused event.
const FROM: &str = "FROM late_successes l
                    JOIN intents i ON i.id = l.intent_id
                    JOIN intent_events e ON e.id = l.event_id";

/// Records the refused success `event_id` of `intent_id` unless one is
/// recorded for it already (a provider repeating itself is the same money);
/// whether it was the first.
pub async fn record(
    conn: &mut PgConnection,
    intent_id: Uuid,
    event_id: i64,
    now: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query(
        "INSERT INTO late_successes (intent_id, event_id, reported_at)
         VALUES ($1, $2, coalesce($3, now()))
         ON CONFLICT (intent_id) DO NOTHING",
    )
    .bind(intent_id)
    .bind(event_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// The late successes not yet settled that were reported before `until`,
/// oldest first.
pub async fn open(pool: &PgPool, until: DateTime<Utc>, limit: i64) -> Result<Vec<LateSuccess>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS}
         {FROM}
         WHERE l.settled_at IS NULL AND l.reported_at < $1
         ORDER BY l.reported_at, l.intent_id
         LIMIT $2"
    ))
    .bind(until)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The late success of `intent_id`, open or settled, if it has one.
pub async fn for_intent(pool: &PgPool, intent_id: Uuid) -> Result<Option<LateSuccess>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} {FROM} WHERE l.intent_id = $1"))
        .bind(intent_id)
        .fetch_optional(pool)
        .await
}

/// How many late successes are not settled yet.
pub async fn count_open(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM late_successes WHERE settled_at IS NULL")
        .fetch_one(pool)
        .await
}

/// Late successes (`owner`'s, or everyone's), open or settled: open ones
/// oldest first, settled ones most recently settled first.
pub async fn list(
    pool: &PgPool,
    owner: Option<&str>,
    settled: bool,
    limit: i64,
) -> Result<Vec<LateSuccess>, sqlx::Error> {
    let (filter, order) = if settled {
        ("l.settled_at IS NOT NULL", "l.settled_at DESC, l.intent_id")
    } else {
        ("l.settled_at IS NULL", "l.reported_at, l.intent_id")
    };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS}
         {FROM}
         WHERE {filter} AND ($1::text IS NULL OR i.owner = $1)
         ORDER BY {order}
         LIMIT $2"
    ))
    .bind(owner)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The late success of `intent_id` (of `owner` when given), locked for
/// settling.
pub async fn get_for_update(
    conn: &mut PgConnection,
    owner: Option<&str>,
    intent_id: Uuid,
) -> Result<Option<LateSuccess>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS}
         {FROM}
         WHERE l.intent_id = $1 AND ($2::text IS NULL OR i.owner = $2)
         FOR UPDATE OF l"
    ))
    .bind(intent_id)
    .bind(owner)
    .fetch_optional(conn)
    .await
}

/// Marks the late success of `intent_id` settled by `by`, with `evidence`,
/// as `outcome` (`recovered`, or `booked` by `transfer_id`); the caller
/// holds its lock and has checked it is open.
pub async fn settle(
    conn: &mut PgConnection,
    intent_id: Uuid,
    by: &str,
    evidence: &str,
    outcome: &str,
    transfer_id: Option<Uuid>,
    now: Option<DateTime<Utc>>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE late_successes
         SET settled_at = coalesce($4, now()), settled_by = $2, evidence = $3, outcome = $5, transfer_id = $6
         WHERE intent_id = $1
         RETURNING settled_at",
    )
    .bind(intent_id)
    .bind(by)
    .bind(evidence)
    .bind(now)
    .bind(outcome)
    .bind(transfer_id)
    .fetch_one(conn)
    .await
}
