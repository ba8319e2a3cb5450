//! SQL for quotes, policy flags, approvals and the sums limits are
//! checked against.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QuoteRow {
    pub id: Uuid,
    pub owner: String,
    pub party_id: String,
    pub provider: String,
    pub source_amount: Decimal,
    pub source_currency: String,
    pub target_currency: String,
    pub rate: Decimal,
    pub rate_source: String,
    pub rate_as_of: DateTime<Utc>,
    pub breakdown: Value,
    pub received: Decimal,
    pub expires_at: DateTime<Utc>,
    pub used_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const QUOTE_COLUMNS: &str = "id, owner, party_id, provider, source_amount, source_currency, target_currency, rate, \
     rate_source, rate_as_of, breakdown, received, expires_at, used_by, created_at";

pub async fn insert_quote(
    conn: &mut PgConnection,
    quote: &QuoteRow,
    now: Option<DateTime<Utc>>,
) -> Result<QuoteRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO quotes (id, owner, party_id, provider, source_amount, source_currency, target_currency, rate,
                             rate_source, rate_as_of, breakdown, received, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, coalesce($14, now()))
         RETURNING {QUOTE_COLUMNS}"
    ))
    .bind(quote.id)
    .bind(&quote.owner)
    .bind(&quote.party_id)
    .bind(&quote.provider)
    .bind(quote.source_amount)
    .bind(&quote.source_currency)
    .bind(&quote.target_currency)
    .bind(quote.rate)
    .bind(&quote.rate_source)
    .bind(quote.rate_as_of)
    .bind(&quote.breakdown)
    .bind(quote.received)
    .bind(quote.expires_at)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// The owner's quote `id`, locked until the transaction ends.
pub async fn lock_quote(conn: &mut PgConnection, owner: &str, id: Uuid) -> Result<Option<QuoteRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {QUOTE_COLUMNS} FROM quotes WHERE id = $1 AND owner = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(conn)
    .await
}

pub async fn get_quote(pool: &PgPool, owner: &str, id: Uuid) -> Result<Option<QuoteRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {QUOTE_COLUMNS} FROM quotes WHERE id = $1 AND owner = $2"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await
}

pub async fn use_quote(conn: &mut PgConnection, id: Uuid, intent_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE quotes SET used_by = $2 WHERE id = $1 AND used_by IS NULL")
        .bind(id)
        .bind(intent_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// For each time in `since`, the count and USD sum of the party's payouts
/// created since then that still count: held, waiting, processing,
/// completed or unresolved. One statement for every window.
pub async fn payout_usage(
    conn: &mut PgConnection,
    owner: &str,
    party_id: &str,
    since: &[DateTime<Utc>],
) -> Result<Vec<(i64, Decimal)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(i.id), coalesce(sum(i.usd_equivalent), 0)
         FROM unnest($3::timestamptz[]) WITH ORDINALITY AS w(since, n)
         LEFT JOIN intents i
           ON i.kind = 'payout' AND i.owner = $1 AND i.party_id = $2 AND i.created_at >= w.since
          AND i.state NOT IN ('failed', 'cancelled', 'rejected', 'expired')
         GROUP BY w.n
         ORDER BY w.n",
    )
    .bind(owner)
    .bind(party_id)
    .bind(since)
    .fetch_all(conn)
    .await
}

/// [`payout_usage`] for many parties at once (`parties[i]`: owner, party),
/// with one round trip: `answer[i][w]` is party `i`'s count and USD sum
/// since `since[w]`.
pub async fn payout_usage_many(
    conn: &mut PgConnection,
    parties: &[(&str, &str)],
    since: &[DateTime<Utc>],
) -> Result<Vec<Vec<(i64, Decimal)>>, sqlx::Error> {
    let owners: Vec<&str> = parties.iter().map(|p| p.0).collect();
    let ids: Vec<&str> = parties.iter().map(|p| p.1).collect();
    let rows: Vec<(i64, i64, i64, Decimal)> = sqlx::query_as(
        // Per party and window, as a lateral subquery: the party's own
        // index range, whatever plan the prepared statement settles on.
        "SELECT p.n, w.n, u.count, u.sum
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS p(owner, id, n)
         CROSS JOIN unnest($3::timestamptz[]) WITH ORDINALITY AS w(since, n)
         CROSS JOIN LATERAL (
             SELECT count(*) AS count, coalesce(sum(i.usd_equivalent), 0) AS sum
             FROM intents i
             WHERE i.kind = 'payout' AND i.owner = p.owner AND i.party_id = p.id AND i.created_at >= w.since
               AND i.state NOT IN ('failed', 'cancelled', 'rejected', 'expired')
         ) AS u
         ORDER BY p.n, w.n",
    )
    .bind(&owners)
    .bind(&ids)
    .bind(since)
    .fetch_all(conn)
    .await?;
    let mut usage = vec![Vec::with_capacity(since.len()); parties.len()];
    for (party, _, count, sum) in rows {
        usage[party as usize - 1].push((count, sum));
    }
    Ok(usage)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FlagRow {
    pub rule: String,
    pub action: String,
    pub detail: String,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_flag(
    conn: &mut PgConnection,
    intent_id: Uuid,
    rule: &str,
    action: &str,
    detail: &str,
    now: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO intent_flags (intent_id, rule, action, detail, created_at) VALUES ($1, $2, $3, $4, coalesce($5, now()))",
    )
    .bind(intent_id)
    .bind(rule)
    .bind(action)
    .bind(detail)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn flags(pool: &PgPool, intent_id: Uuid) -> Result<Vec<FlagRow>, sqlx::Error> {
    sqlx::query_as("SELECT rule, action, detail, created_at FROM intent_flags WHERE intent_id = $1 ORDER BY id")
        .bind(intent_id)
        .fetch_all(pool)
        .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApprovalRow {
    pub approver: String,
    pub decision: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Records `approver`'s decision; `false` if they already decided.
pub async fn insert_approval(
    conn: &mut PgConnection,
    intent_id: Uuid,
    approver: &str,
    decision: &str,
    reason: Option<&str>,
    now: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO approvals (intent_id, approver, decision, reason, created_at)
         VALUES ($1, $2, $3, $4, coalesce($5, now()))
         ON CONFLICT DO NOTHING",
    )
    .bind(intent_id)
    .bind(approver)
    .bind(decision)
    .bind(reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn approvals(conn: &mut PgConnection, intent_id: Uuid) -> Result<Vec<ApprovalRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT approver, decision, reason, created_at FROM approvals WHERE intent_id = $1 ORDER BY created_at",
    )
    .bind(intent_id)
    .fetch_all(conn)
    .await
}

/// Intents waiting for approval (all owners when `owner` is `None`),
/// oldest first, after `after` (an intent id, the cursor).
pub async fn pending_approvals(
    pool: &PgPool,
    owner: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<crate::store::intents::IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {} FROM intents
         WHERE state = 'awaiting_approval' AND ($1::text IS NULL OR owner = $1)
           AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
         ORDER BY created_at, id
         LIMIT $4",
        crate::store::intents::COLUMNS
    ))
    .bind(owner)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn insert_batch(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &str,
    reference: &str,
    created_by: &str,
    now: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payout_batches (id, owner, reference, created_by, created_at) VALUES ($1, $2, $3, $4, coalesce($5, now()))",
    )
    .bind(id)
    .bind(owner)
    .bind(reference)
    .bind(created_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn batch_owner(pool: &PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT owner FROM payout_batches WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The batch's payouts waiting for approval.
pub async fn batch_awaiting(pool: &PgPool, id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM intents WHERE batch_id = $1 AND state = 'awaiting_approval' ORDER BY id")
        .bind(id)
        .fetch_all(pool)
        .await
}

pub async fn set_approvals_required(
    conn: &mut PgConnection,
    intent_id: Uuid,
    required: i16,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE intents SET approvals_required = $2 WHERE id = $1")
        .bind(intent_id)
        .bind(required)
        .execute(conn)
        .await?;
    Ok(())
}

/// A payout's owner, state, creator and approvals required, locked.
pub async fn lock_for_decision(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(String, String, String, i16)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT owner, state, created_by, approvals_required FROM intents WHERE id = $1 AND kind = 'payout' FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}
