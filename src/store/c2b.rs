//! SQL for C2B payments.

use rust_decimal::Decimal;
use sqlx::PgConnection;

/// A confirmed C2B payment.
pub struct NewPayment<'a> {
    pub trans_id: &'a str,
    pub shortcode: &'a str,
    pub amount: Decimal,
    pub bill_ref: &'a str,
    pub msisdn_masked: &'a str,
    pub trans_time: &'a str,
    pub inbox_id: i64,
}

/// Records a payment; `false` when its receipt was already recorded.
pub async fn record(conn: &mut PgConnection, payment: &NewPayment<'_>) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO c2b_payments (trans_id, shortcode, amount, bill_ref, msisdn_masked, trans_time, inbox_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (trans_id) DO NOTHING",
    )
    .bind(payment.trans_id)
    .bind(payment.shortcode)
    .bind(payment.amount)
    .bind(payment.bill_ref)
    .bind(payment.msisdn_masked)
    .bind(payment.trans_time)
    .bind(payment.inbox_id)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A recorded C2B payment and where it went.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct C2bRow {
    pub trans_id: String,
    pub shortcode: String,
    pub amount: Decimal,
    pub bill_ref: String,
    pub applied_to: Option<String>,
    pub loan_id: Option<uuid::Uuid>,
    pub owner: Option<String>,
    pub transfer_key: Option<String>,
    pub reversed_by: Option<uuid::Uuid>,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

const COLUMNS: &str =
    "trans_id, shortcode, amount, bill_ref, applied_to, loan_id, owner, transfer_key, reversed_by, received_at";

/// The payment with receipt `trans_id`, locked.
pub async fn lock(conn: &mut PgConnection, trans_id: &str) -> Result<Option<C2bRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM c2b_payments WHERE trans_id = $1 FOR UPDATE"
    ))
    .bind(trans_id)
    .fetch_optional(conn)
    .await
}

pub async fn set_reversed(conn: &mut PgConnection, trans_id: &str, reversal: uuid::Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE c2b_payments SET reversed_by = $2 WHERE trans_id = $1")
        .bind(trans_id)
        .bind(reversal)
        .execute(conn)
        .await?;
    Ok(())
}

/// Payments waiting in suspense (no reference matched), oldest first.
pub async fn in_suspense(pool: &sqlx::PgPool, limit: i64) -> Result<Vec<C2bRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM c2b_payments WHERE applied_to = 'suspense' AND reversed_by IS NULL
         ORDER BY received_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A payment Daraja validated (and we accepted) with no confirmation
/// recorded: its receipt and the validation's inbox row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unconfirmed {
    pub trans_id: String,
    pub inbox_id: i64,
}

/// Up to `limit` accepted validations received between `since` and
/// `until` whose receipt has no recorded payment and which are not being
/// asked about: never asked, or asked before `ask_again_before` without an
/// answer and fewer than `max_attempts` times. Oldest first.
pub async fn unconfirmed(
    conn: &mut PgConnection,
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
    ask_again_before: chrono::DateTime<chrono::Utc>,
    max_attempts: i32,
    limit: i64,
) -> Result<Vec<Unconfirmed>, sqlx::Error> {
    sqlx::query_as(
        "SELECT v.trans_id, v.id AS inbox_id
         FROM (SELECT c.id, c.received_at, convert_from(c.body, 'UTF8')::jsonb ->> 'TransID' AS trans_id
               FROM callback_inbox c
               WHERE c.kind = 'c2b-validation' AND c.outcome = 'accepted' AND c.provider = 'mpesa'
                 AND c.received_at >= $1 AND c.received_at < $2) AS v
         LEFT JOIN c2b_status_queries q ON q.trans_id = v.trans_id
         WHERE v.trans_id IS NOT NULL AND v.trans_id <> ''
           AND NOT EXISTS (SELECT 1 FROM c2b_payments p WHERE p.trans_id = v.trans_id)
           AND (q.trans_id IS NULL
                OR (q.answered_at IS NULL AND q.asked_at < $3 AND q.attempts < $4))
         ORDER BY v.received_at
         LIMIT $5",
    )
    .bind(since)
    .bind(until)
    .bind(ask_again_before)
    .bind(max_attempts)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Notes that `trans_id` is being asked about (once more).
pub async fn mark_asked(
    conn: &mut PgConnection,
    trans_id: &str,
    inbox_id: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO c2b_status_queries (trans_id, inbox_id, asked_at) VALUES ($1, $2, $3)
         ON CONFLICT (trans_id) DO UPDATE
         SET asked_at = excluded.asked_at, attempts = c2b_status_queries.attempts + 1",
    )
    .bind(trans_id)
    .bind(inbox_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Undoes the last [`mark_asked`] of `trans_id` for a question the
/// provider did not take: it is not counted, and is due at the next run
/// (its time moved back by `wait`, the usual wait for an answer).
pub async fn not_taken(conn: &mut PgConnection, trans_id: &str, wait: chrono::TimeDelta) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE c2b_status_queries SET asked_at = asked_at - $2, attempts = attempts - 1
         WHERE trans_id = $1 AND answered_at IS NULL",
    )
    .bind(trans_id)
    .bind(wait)
    .execute(conn)
    .await?;
    Ok(())
}

/// The validated notice of a payment asked about by receipt `trans_id`
/// (the body of its accepted validation), locked against a second answer.
pub async fn asked_notice(conn: &mut PgConnection, trans_id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.body FROM c2b_status_queries q JOIN callback_inbox c ON c.id = q.inbox_id
         WHERE q.trans_id = $1 FOR UPDATE OF q",
    )
    .bind(trans_id)
    .fetch_optional(conn)
    .await
}

/// Records Daraja's answer about `trans_id`.
pub async fn mark_answered(
    conn: &mut PgConnection,
    trans_id: &str,
    status: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE c2b_status_queries SET status = $2, answered_at = $3 WHERE trans_id = $1")
        .bind(trans_id)
        .bind(status)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}
