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
