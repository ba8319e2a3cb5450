//! SQL for loans, their installments and repayments, and what the C2B
//! routing records of each payment.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::loans::schedule::Installment;

/// A loan row (its state lives on its intent).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoanRow {
    pub intent_id: Uuid,
    pub number: i64,
    pub owner: String,
    pub borrower_id: String,
    pub lender_id: String,
    pub principal: Decimal,
    pub currency: String,
    pub installment_amount: Decimal,
    pub interval_days: i32,
    pub grace_days: i32,
    pub excess: String,
    pub outstanding: Decimal,
    pub disbursement_id: Option<Uuid>,
    pub activated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "intent_id, number, owner, borrower_id, lender_id, principal, currency, installment_amount, \
     interval_days, grace_days, excess, outstanding, disbursement_id, activated_at, created_at";

/// The next loan number, taken before the loan's intent is created (its
/// reference carries it).
pub async fn next_number(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('loans', 'number'))")
        .fetch_one(conn)
        .await
}

pub async fn insert(conn: &mut PgConnection, row: &LoanRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO loans (intent_id, number, owner, borrower_id, lender_id, principal, currency,
                            installment_amount, interval_days, grace_days, excess, outstanding, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(row.intent_id)
    .bind(row.number)
    .bind(&row.owner)
    .bind(&row.borrower_id)
    .bind(&row.lender_id)
    .bind(row.principal)
    .bind(&row.currency)
    .bind(row.installment_amount)
    .bind(row.interval_days)
    .bind(row.grace_days)
    .bind(&row.excess)
    .bind(row.outstanding)
    .bind(row.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks loan `id` for a change of its balance or schedule.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<LoanRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM loans WHERE intent_id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Locks the loan numbered `number`.
pub async fn lock_by_number(conn: &mut PgConnection, number: i64) -> Result<Option<LoanRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM loans WHERE number = $1 FOR UPDATE"))
        .bind(number)
        .fetch_optional(conn)
        .await
}

/// The state of the loan numbered `number`, if it exists (C2B validation).
pub async fn state_by_number(pool: &PgPool, number: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT i.state FROM loans l JOIN intents i ON i.id = l.intent_id WHERE l.number = $1")
        .bind(number)
        .fetch_optional(pool)
        .await
}

pub async fn get(pool: &PgPool, owner: &str, id: Uuid) -> Result<Option<LoanRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM loans WHERE intent_id = $1 AND owner = $2"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await
}

pub async fn get_any(conn: &mut PgConnection, id: Uuid) -> Result<Option<LoanRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM loans WHERE intent_id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn set_disbursement(conn: &mut PgConnection, id: Uuid, payout: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE loans SET disbursement_id = $2 WHERE intent_id = $1")
        .bind(id)
        .bind(payout)
        .execute(conn)
        .await?;
    Ok(())
}

/// Starts the schedule: the loan is active from `at` with `installments`.
pub async fn activate(
    conn: &mut PgConnection,
    id: Uuid,
    at: DateTime<Utc>,
    installments: &[Installment],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE loans SET activated_at = $2 WHERE intent_id = $1")
        .bind(id)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    let seqs: Vec<i32> = installments.iter().map(|i| i.seq).collect();
    let dues: Vec<DateTime<Utc>> = installments.iter().map(|i| i.due_at).collect();
    let amounts: Vec<Decimal> = installments.iter().map(|i| i.amount).collect();
    sqlx::query(
        "INSERT INTO loan_installments (loan_id, seq, due_at, amount)
         SELECT $1, * FROM unnest($2::int[], $3::timestamptz[], $4::numeric[])",
    )
    .bind(id)
    .bind(&seqs)
    .bind(&dues)
    .bind(&amounts)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn installments(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Installment>, sqlx::Error> {
    sqlx::query_as("SELECT seq, due_at, amount, paid FROM loan_installments WHERE loan_id = $1 ORDER BY seq")
        .bind(id)
        .fetch_all(conn)
        .await
}

/// Sets what is paid of each `(seq, paid)` and the loan's outstanding
/// balance.
pub async fn set_paid(
    conn: &mut PgConnection,
    id: Uuid,
    paid: &[(i32, Decimal)],
    outstanding: Decimal,
) -> Result<(), sqlx::Error> {
    let seqs: Vec<i32> = paid.iter().map(|p| p.0).collect();
    let amounts: Vec<Decimal> = paid.iter().map(|p| p.1).collect();
    sqlx::query(
        "UPDATE loan_installments i SET paid = p.paid
         FROM unnest($2::int[], $3::numeric[]) AS p (seq, paid)
         WHERE i.loan_id = $1 AND i.seq = p.seq",
    )
    .bind(id)
    .bind(&seqs)
    .bind(&amounts)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE loans SET outstanding = $2 WHERE intent_id = $1")
        .bind(id)
        .bind(outstanding)
        .execute(conn)
        .await?;
    Ok(())
}

/// A repayment to record.
pub struct NewRepayment<'a> {
    pub loan_id: Uuid,
    pub source: &'a str,
    pub receipt: Option<&'a str>,
    pub paid_in: Decimal,
    pub applied: Decimal,
    pub excess: Decimal,
    pub outstanding_after: Decimal,
    pub transfer_key: &'a str,
    pub at: DateTime<Utc>,
}

/// Whether a payment from `source` was already applied to some loan.
pub async fn repayment_exists(conn: &mut PgConnection, source: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM loan_repayments WHERE source = $1)")
        .bind(source)
        .fetch_one(conn)
        .await
}

pub async fn insert_repayment(conn: &mut PgConnection, r: &NewRepayment<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO loan_repayments (loan_id, source, receipt, paid_in, applied, excess, outstanding_after,
                                      transfer_key, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(r.loan_id)
    .bind(r.source)
    .bind(r.receipt)
    .bind(r.paid_in)
    .bind(r.applied)
    .bind(r.excess)
    .bind(r.outstanding_after)
    .bind(r.transfer_key)
    .bind(r.at)
    .execute(conn)
    .await?;
    Ok(())
}

/// One recorded repayment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RepaymentRow {
    pub id: i64,
    pub loan_id: Uuid,
    pub source: String,
    pub receipt: Option<String>,
    pub paid_in: Decimal,
    pub applied: Decimal,
    pub excess: Decimal,
    pub outstanding_after: Decimal,
    pub transfer_key: String,
    pub reversed_by: Option<Uuid>,
    pub at: DateTime<Utc>,
}

const REPAYMENT_COLUMNS: &str =
    "id, loan_id, source, receipt, paid_in, applied, excess, outstanding_after, transfer_key, reversed_by, at";

pub async fn repayments(pool: &PgPool, loan_id: Uuid) -> Result<Vec<RepaymentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {REPAYMENT_COLUMNS} FROM loan_repayments WHERE loan_id = $1 ORDER BY id"
    ))
    .bind(loan_id)
    .fetch_all(pool)
    .await
}

/// The repayment made by `source`, locked (a reversal of it).
pub async fn lock_repayment(conn: &mut PgConnection, source: &str) -> Result<Option<RepaymentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {REPAYMENT_COLUMNS} FROM loan_repayments WHERE source = $1 FOR UPDATE"
    ))
    .bind(source)
    .fetch_optional(conn)
    .await
}

pub async fn mark_repayment_reversed(conn: &mut PgConnection, id: i64, reversal: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE loan_repayments SET reversed_by = $2 WHERE id = $1")
        .bind(id)
        .bind(reversal)
        .execute(conn)
        .await?;
    Ok(())
}

/// An installment that fell due unpaid with no reminder sent yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueInstallment {
    pub loan_id: Uuid,
    pub seq: i32,
}

/// Installments of active or overdue loans due by `now`, unpaid and not
/// reminded, oldest first.
pub async fn due_unreminded(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> Result<Vec<DueInstallment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT li.loan_id, li.seq
         FROM loan_installments li JOIN intents i ON i.id = li.loan_id
         WHERE li.paid < li.amount AND li.due_at <= $1 AND li.reminder_id IS NULL
           AND i.state IN ('active', 'overdue')
         ORDER BY li.due_at, li.loan_id, li.seq
         LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records the reminder sent for an installment; `false` if one already
/// was (another sweep got there first).
pub async fn set_reminder(conn: &mut PgConnection, loan_id: Uuid, seq: i32, intent: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE loan_installments SET reminder_id = $3 WHERE loan_id = $1 AND seq = $2 AND reminder_id IS NULL",
    )
    .bind(loan_id)
    .bind(seq)
    .bind(intent)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Loans in `state` whose oldest unpaid installment fell due at or before
/// `cutoff` minus the loan's grace days (`with_grace`) or at or before
/// `cutoff` itself.
pub async fn in_arrears(
    pool: &PgPool,
    state: &str,
    cutoff: DateTime<Utc>,
    with_grace: bool,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT l.intent_id
         FROM loans l JOIN intents i ON i.id = l.intent_id
         WHERE i.state = $1
           AND EXISTS (SELECT 1 FROM loan_installments li
                       WHERE li.loan_id = l.intent_id AND li.paid < li.amount
                         AND li.due_at <= $2 - CASE WHEN $3 THEN make_interval(days => l.grace_days)
                                                    ELSE interval '0' END)
         ORDER BY l.intent_id
         LIMIT $4",
    )
    .bind(state)
    .bind(cutoff)
    .bind(with_grace)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Where a C2B payment's money went.
pub async fn route_c2b(
    conn: &mut PgConnection,
    trans_id: &str,
    applied_to: &str,
    loan_id: Option<Uuid>,
    owner: Option<&str>,
    transfer_key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE c2b_payments SET applied_to = $2, loan_id = $3, owner = $4, transfer_key = $5 WHERE trans_id = $1",
    )
    .bind(trans_id)
    .bind(applied_to)
    .bind(loan_id)
    .bind(owner)
    .bind(transfer_key)
    .execute(conn)
    .await?;
    Ok(())
}

/// The reminder sent for each installment that has one: `(seq, intent)`.
pub async fn reminders(conn: &mut PgConnection, loan_id: Uuid) -> Result<Vec<(i32, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, reminder_id FROM loan_installments WHERE loan_id = $1 AND reminder_id IS NOT NULL ORDER BY seq",
    )
    .bind(loan_id)
    .fetch_all(conn)
    .await
}
