//! Peer loans with automatic repayment.
//!
//! A loan is an intent of kind `loan` (`workflows/loan.toml`) with a row in
//! `loans` for what only a loan has. Its money moves through the ledger:
//!
//! - **Disbursement**: approval admits a child payout from the lender's
//!   balance to the borrower's phone (fees on top, paid by the lender, as
//!   for any payout). When it completes, the loan records its receivable
//!   (what the borrower owes) against its `lent` account (what the loan will
//!   pay back to the lender), and the schedule starts.
//! - **Repayment**: a C2B payment with reference `LOAN-<n>` repays
//!   `min(payment, installment due)` in one transfer: float in, receivable
//!   and `lent` down, the lender's balance up, and the rest of the payment
//!   to the borrower's balance (or, with `excess = "next_installment"`, to
//!   the next installments). A paid STK reminder does the same from the
//!   borrower's balance, where the collection put the money. Each payment is
//!   applied once: repayments are keyed by what paid them.
//! - **Suspense**: a C2B payment whose reference names no loan is kept in
//!   the suspense account and listed by reconciliation, never dropped.
//!
//! Every change of a loan's balance happens under its row lock, in the same
//! transaction as its ledger transfer and its state transition.

pub mod schedule;
mod service;
mod sweep;

use serde::Deserialize;

use crate::runner::{JobContext, JobError, Worker};
use crate::workflow::engine::ChildSettled;

pub use schedule::Excess;
pub use service::{Actor, C2bPayment, Decision, LoanError, Loans, NewLoan, Routed};
pub use sweep::{LoanSweep, LoanSweepWorker, SweepReport};

/// Runs [`Loans::child_settled`] for the engine's child-settled jobs (a
/// loan is the only parent kind).
pub struct ChildSettledWorker {
    pub loans: Loans,
}

impl Worker for ChildSettledWorker {
    type Args = ChildSettled;

    async fn work(&self, ctx: JobContext, args: ChildSettled) -> Result<(), JobError> {
        let mut tx = ctx.pool().begin().await?;
        match self.loans.child_settled(&mut tx, &args).await {
            Ok(()) => {}
            Err(LoanError::Database(e)) => return Err(e.into()),
            Err(error) => return Err(JobError::retryable(error)),
        }
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// `[loans]`: defaults for new loans and the C2B reference rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoansConfig {
    pub excess: Excess,
    pub interval_days: u32,
    pub overdue_after_s: u64,
    pub grace_days: u32,
    pub refuse_unknown_references: bool,
}

/// The loan number in an account reference such as `LOAN-1001`, read the
/// way people type it: any case, spaces in and around the word, `-`, `_`,
/// `#` or nothing between the word and the number. The number itself is
/// one run of digits: `LOAN-1001 2` is not loan 10012 (nor 1001), since a
/// payment credited to the wrong loan is worse than one held in suspense
/// for a person.
pub fn parse_reference(text: &str) -> Option<i64> {
    let text = text.trim();
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let (word, digits) = text.split_at(start);
    let word: String = word.chars().filter(|c| !c.is_whitespace()).collect();
    let word = word.to_ascii_uppercase();
    let rest = word.strip_prefix("LOAN")?;
    if !(rest.is_empty() || ["-", "_", "#"].contains(&rest)) {
        return None;
    }
    if digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The account reference borrowers pay loan `number` with.
pub fn reference(number: i64) -> String {
    format!("LOAN-{number}")
}

/// Loan states in which payments still repay.
pub const REPAYING_STATES: [&str; 3] = ["active", "overdue", "defaulted"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_the_way_people_type_them() {
        for typed in [
            "LOAN-1001",
            "loan-1001",
            " Loan 1001 ",
            "LOAN1001",
            "loan_1001",
            "L O A N - 1001",
            "loan #1001",
        ] {
            assert_eq!(parse_reference(typed), Some(1001), "{typed:?}");
        }
        for typed in [
            "",
            "LOAN-",
            "LOAN-12a",
            "LOANS-1",
            "1001",
            "LOAN--1001",
            "LOAN-1234567890123456",
            // Digits apart are not one number: which loan was meant is a
            // person's call.
            "LOAN-1001 2",
            "loan 1001 500",
            "LOAN-1 0 0 1",
            "LOAN-1001.",
            "LOAN -+1001",
        ] {
            assert_eq!(parse_reference(typed), None, "{typed:?}");
        }
        assert_eq!(reference(1001), "LOAN-1001");
    }
}
