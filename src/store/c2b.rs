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
