//! A loan's schedule and how a payment is shared out over it. Pure: no IO,
//! no clock of its own; the caller passes `now`.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What a payment beyond the installment due does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Excess {
    /// Credited to the borrower's balance.
    CreditBalance,
    /// Repays the next installments ahead of time.
    NextInstallment,
}

impl Excess {
    pub fn as_str(self) -> &'static str {
        match self {
            Excess::CreditBalance => "credit_balance",
            Excess::NextInstallment => "next_installment",
        }
    }

    pub fn parse(text: &str) -> Option<Excess> {
        match text {
            "credit_balance" => Some(Excess::CreditBalance),
            "next_installment" => Some(Excess::NextInstallment),
            _ => None,
        }
    }
}

/// One installment as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Installment {
    pub seq: i32,
    pub due_at: DateTime<Utc>,
    pub amount: Decimal,
    pub paid: Decimal,
}

impl Installment {
    pub fn unpaid(&self) -> Decimal {
        self.amount - self.paid
    }
}

/// The installments of `principal` in parts of `installment` (the last one
/// takes the remainder), due every `interval_days` from `from`.
pub fn plan(principal: Decimal, installment: Decimal, interval_days: u32, from: DateTime<Utc>) -> Vec<Installment> {
    assert!(installment > Decimal::ZERO, "installments are positive");
    let mut left = principal;
    let mut seq = 0;
    let mut out = Vec::new();
    while left > Decimal::ZERO {
        seq += 1;
        let amount = left.min(installment);
        out.push(Installment {
            seq,
            due_at: from + Duration::days(i64::from(interval_days) * i64::from(seq)),
            amount,
            paid: Decimal::ZERO,
        });
        left -= amount;
    }
    out
}

/// What the borrower is asked to pay now: every unpaid installment whose
/// due date has come, or, when none has, the next installment.
pub fn due_now(installments: &[Installment], now: DateTime<Utc>) -> Decimal {
    let fallen_due: Decimal = installments
        .iter()
        .filter(|i| i.due_at <= now)
        .map(Installment::unpaid)
        .sum();
    if fallen_due > Decimal::ZERO {
        return fallen_due;
    }
    installments
        .iter()
        .find(|i| i.unpaid() > Decimal::ZERO)
        .map_or(Decimal::ZERO, Installment::unpaid)
}

/// How one payment is shared out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// What reduces the loan.
    pub applied: Decimal,
    /// What is left of the payment.
    pub excess: Decimal,
    /// `(seq, new paid)` of each installment it touched.
    pub paid: Vec<(i32, Decimal)>,
}

/// Shares `payment` out over `installments`, oldest first: the installment
/// due (`min(payment, due now)`), or with [`Excess::NextInstallment`]
/// everything up to the whole balance.
pub fn allocate(installments: &[Installment], payment: Decimal, now: DateTime<Utc>, rule: Excess) -> Allocation {
    let outstanding: Decimal = installments.iter().map(Installment::unpaid).sum();
    let target = match rule {
        Excess::CreditBalance => payment.min(due_now(installments, now)),
        Excess::NextInstallment => payment.min(outstanding),
    };
    let mut left = target;
    let mut paid = Vec::new();
    for installment in installments {
        if left.is_zero() {
            break;
        }
        let take = left.min(installment.unpaid());
        if take > Decimal::ZERO {
            paid.push((installment.seq, installment.paid + take));
            left -= take;
        }
    }
    Allocation {
        applied: target,
        excess: payment - target,
        paid,
    }
}

/// Takes `amount` back off the installments, newest paid first (a reversed
/// repayment). Returns `(seq, new paid)` of each installment touched.
pub fn unallocate(installments: &[Installment], amount: Decimal) -> Vec<(i32, Decimal)> {
    let mut left = amount;
    let mut out = Vec::new();
    for installment in installments.iter().rev() {
        if left.is_zero() {
            break;
        }
        let take = left.min(installment.paid);
        if take > Decimal::ZERO {
            out.push((installment.seq, installment.paid - take));
            left -= take;
        }
    }
    out
}

/// `installments` with the new `(seq, paid)` amounts applied.
pub fn with_paid(installments: &[Installment], paid: &[(i32, Decimal)]) -> Vec<Installment> {
    let mut after = installments.to_vec();
    for (seq, amount) in paid {
        if let Some(installment) = after.iter_mut().find(|i| i.seq == *seq) {
            installment.paid = *amount;
        }
    }
    after
}

/// The due date of the oldest unpaid installment, if any.
pub fn oldest_unpaid_due(installments: &[Installment]) -> Option<DateTime<Utc>> {
    installments
        .iter()
        .filter(|i| i.unpaid() > Decimal::ZERO)
        .map(|i| i.due_at)
        .min()
}

/// Whether an installment is unpaid `overdue_after` past its due date.
pub fn in_arrears(installments: &[Installment], now: DateTime<Utc>, overdue_after: Duration) -> bool {
    oldest_unpaid_due(installments).is_some_and(|due| due + overdue_after <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn start() -> DateTime<Utc> {
        "2026-12-01T09:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_plan_covers_the_principal_with_the_remainder_last() {
        let plan = plan(d("5000"), d("1500"), 7, start());
        let amounts: Vec<Decimal> = plan.iter().map(|i| i.amount).collect();
        assert_eq!(amounts, vec![d("1500"), d("1500"), d("1500"), d("500")]);
        assert_eq!(plan[0].due_at, start() + Duration::days(7));
        assert_eq!(plan[3].due_at, start() + Duration::days(28));
    }

    #[test]
    fn the_worked_example_repays_500_of_1000_and_leaves_the_rest() {
        let plan = plan(d("5000"), d("500"), 30, start());
        let allocation = allocate(&plan, d("1000"), start(), Excess::CreditBalance);
        assert_eq!(allocation.applied, d("500"));
        assert_eq!(allocation.excess, d("500"));
        assert_eq!(allocation.paid, vec![(1, d("500"))]);
    }

    #[test]
    fn next_installment_repays_ahead_but_never_beyond_the_balance() {
        let mut plan = plan(d("5000"), d("500"), 30, start());
        let allocation = allocate(&plan, d("1000"), start(), Excess::NextInstallment);
        assert_eq!(allocation.applied, d("1000"));
        assert_eq!(allocation.paid, vec![(1, d("500")), (2, d("500"))]);
        for installment in plan.iter_mut().take(9) {
            installment.paid = installment.amount;
        }
        let last = allocate(&plan, d("800"), start(), Excess::NextInstallment);
        assert_eq!((last.applied, last.excess), (d("500"), d("300")));
    }

    #[test]
    fn arrears_are_due_together_and_paid_oldest_first() {
        let plan = plan(d("3000"), d("1000"), 7, start());
        let later = start() + Duration::days(15);
        assert_eq!(due_now(&plan, later), d("2000"), "two installments fell due");
        let partial = allocate(&plan, d("1500"), later, Excess::CreditBalance);
        assert_eq!(partial.paid, vec![(1, d("1000")), (2, d("500"))]);
        assert!(in_arrears(&plan, later, Duration::days(1)));
        assert!(!in_arrears(&plan, start() + Duration::days(7), Duration::days(1)));
    }

    #[test]
    fn a_reversal_takes_back_from_the_newest_paid_installment() {
        let mut plan = plan(d("1500"), d("500"), 7, start());
        plan[0].paid = d("500");
        plan[1].paid = d("200");
        assert_eq!(unallocate(&plan, d("300")), vec![(2, d("0")), (1, d("400"))]);
    }
}
