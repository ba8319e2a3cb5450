//! SQL for quotes, policy flags, approvals and the sums limits are
//! checked against.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
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

/// A party whose payouts [`payout_usage`] counts: its owner, its id, and
/// the start of each window (`None` for a window not counted).
pub type PartyWindows<'a> = (&'a str, &'a str, &'a [Option<DateTime<Utc>>]);

/// For each party `(owner, party, since)` and each window start in its
/// `since`, the count and USD sum of the party's payouts created since
/// then that still count: held, waiting, processing, completed or
/// unresolved. `answer[i][w]` is party `i`'s usage since `since[w]`; a
/// `None` window is not counted and reads `(0, 0)`. Every party must list
/// the same number of windows.
///
/// One round trip for all the parties, and one pass over each party's
/// payouts since its oldest window, however many windows there are. When
/// no party has a window to count, nothing is read.
pub async fn payout_usage(
    conn: &mut PgConnection,
    parties: &[PartyWindows<'_>],
) -> Result<Vec<Vec<(i64, Decimal)>>, sqlx::Error> {
    let windows = parties.first().map_or(0, |p| p.2.len());
    assert!(
        parties.iter().all(|p| p.2.len() == windows),
        "every party lists the same windows"
    );
    let mut usage = vec![vec![(0, Decimal::ZERO); windows]; parties.len()];
    let oldest: Vec<Option<DateTime<Utc>>> = parties.iter().map(|p| p.2.iter().flatten().min().copied()).collect();
    if oldest.iter().all(Option::is_none) {
        return Ok(usage);
    }
    // Per party, one lateral aggregate over its own index range from its
    // oldest window on, with a filtered count and sum per window; the
    // window starts come flattened, party by party.
    let columns: Vec<String> = (1..=windows)
        .map(|w| {
            let since = format!("$4[(p.n - 1) * {windows} + {w}]");
            format!(
                "count(*) FILTER (WHERE i.created_at >= {since}), \
                 coalesce(sum(i.usd_equivalent) FILTER (WHERE i.created_at >= {since}), 0)"
            )
        })
        .collect();
    let sql = format!(
        "SELECT u.* FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS p(owner, id, oldest, n)
         CROSS JOIN LATERAL (
             SELECT {}
             FROM intents i
             WHERE i.kind = 'payout' AND i.owner = p.owner AND i.party_id = p.id AND i.created_at >= p.oldest
               AND i.state NOT IN ('failed', 'cancelled', 'rejected', 'expired')
         ) AS u
         ORDER BY p.n",
        columns.join(", ")
    );
    let since: Vec<Option<DateTime<Utc>>> = parties.iter().flat_map(|p| p.2.iter().copied()).collect();
    let rows = sqlx::query(&sql)
        .bind(parties.iter().map(|p| p.0).collect::<Vec<&str>>())
        .bind(parties.iter().map(|p| p.1).collect::<Vec<&str>>())
        .bind(&oldest)
        .bind(&since)
        .fetch_all(conn)
        .await?;
    if rows.len() != parties.len() {
        return Err(sqlx::Error::Protocol(format!(
            "usage of {} parties read for {} asked",
            rows.len(),
            parties.len()
        )));
    }
    for ((row, party), used) in rows.iter().zip(parties).zip(&mut usage) {
        for (w, used) in used.iter_mut().enumerate() {
            if party.2[w].is_some() {
                *used = (row.try_get(2 * w)?, row.try_get(2 * w + 1)?);
            }
        }
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
