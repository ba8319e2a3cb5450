//! The loans sweep: a scheduled job that sends the due-date reminder (an
//! STK push for the installment, once per installment), marks loans
//! overdue a configured time after a missed due date, and defaulted after
//! the grace period. Each step re-checks under the loan's lock, so sweeps
//! on several nodes, or one sweep run twice, do each thing once.

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::service::{stored_msisdn, LoanError, Loans};
use super::{reference, schedule};
use crate::domain::{Money, PartyId};
use crate::runner::{JobArgs, JobContext, JobError, Worker};
use crate::store::intents;
use crate::store::loans as store;
use crate::workflow::engine::{Cause, IntentTerms, NewIntent};

/// Loans one statement of the sweep looks at.
const BATCH: i64 = 200;
/// The actor recorded on what the sweep does.
const ACTOR: &str = "loans.sweep";

/// Job arguments: one sweep.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoanSweep {}

impl JobArgs for LoanSweep {
    const KIND: &'static str = "loans.sweep";
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub reminders: usize,
    pub overdue: usize,
    pub defaulted: usize,
}

pub struct LoanSweepWorker {
    pub loans: Loans,
}

impl Worker for LoanSweepWorker {
    type Args = LoanSweep;

    async fn work(&self, ctx: JobContext, _args: LoanSweep) -> Result<(), JobError> {
        let report = sweep(&self.loans, &ctx).await.map_err(JobError::retryable)?;
        if report != SweepReport::default() {
            tracing::info!(
                reminders = report.reminders,
                overdue = report.overdue,
                defaulted = report.defaulted,
                "loans swept"
            );
        }
        Ok(())
    }
}

async fn sweep(loans: &Loans, ctx: &JobContext) -> Result<SweepReport, LoanError> {
    let pool = ctx.pool();
    let now = ctx.clock().local_now();
    let mut report = SweepReport::default();
    loop {
        let due = store::due_unreminded(pool, now, BATCH).await?;
        let mut sent = 0;
        for installment in &due {
            if remind(loans, ctx, installment.loan_id, installment.seq).await? {
                sent += 1;
            }
        }
        report.reminders += sent;
        if (due.len() as i64) < BATCH || sent == 0 {
            break;
        }
    }
    let overdue_cutoff = now - loans.overdue_after();
    for (state, event, with_grace) in [("active", "fell_overdue", false), ("overdue", "defaulted", true)] {
        loop {
            let ids = store::in_arrears(pool, state, overdue_cutoff, with_grace, BATCH).await?;
            let mut moved = 0;
            for id in &ids {
                if mark(loans, ctx, *id, state, event, with_grace).await? {
                    moved += 1;
                }
            }
            match event {
                "fell_overdue" => report.overdue += moved,
                _ => report.defaulted += moved,
            }
            if (ids.len() as i64) < BATCH || moved == 0 {
                break;
            }
        }
    }
    Ok(report)
}

/// Sends installment `seq`'s reminder: a collection for what is unpaid of
/// it, linked to the loan. `false` when it is no longer needed or was sent.
async fn remind(loans: &Loans, ctx: &JobContext, loan_id: Uuid, seq: i32) -> Result<bool, LoanError> {
    let mut tx = ctx.pool().begin().await?;
    let Some(loan) = store::lock(&mut tx, loan_id).await? else {
        return Ok(false);
    };
    let Some(intent) = intents::get(&mut tx, loan_id).await? else {
        return Ok(false);
    };
    if !matches!(intent.state.as_str(), "active" | "overdue") {
        return Ok(false);
    }
    let installments = store::installments(&mut tx, loan_id).await?;
    let Some(installment) = installments.iter().find(|i| i.seq == seq) else {
        return Ok(false);
    };
    let unpaid = installment.unpaid();
    if unpaid <= rust_decimal::Decimal::ZERO {
        return Ok(false);
    }
    // A repayment from the borrower's balance may have left cents unpaid;
    // a provider that carries whole units is asked for the next whole
    // amount (what it takes beyond the installment is an excess, handled as
    // any other), or its prompt could never be sent.
    let unpaid = if loans.whole_units(&intent.provider) {
        unpaid.ceil()
    } else {
        unpaid
    };
    let currency = crate::domain::Currency::from_stored(&loan.currency);
    let collection = NewIntent {
        kind: "collection".into(),
        owner: loan.owner.clone(),
        created_by: ACTOR.into(),
        party_id: PartyId::parse(&loan.borrower_id).map_err(LoanError::Conflict)?,
        amount: Money::new(unpaid, currency).map_err(|e| LoanError::Conflict(e.to_string()))?,
        msisdn: stored_msisdn(&intent.msisdn)?,
        provider: intent.provider.clone(),
        reference: reference(loan.number),
        metadata: json!({ "loan_id": loan_id, "installment": seq, "purpose": "loan_repayment_reminder" }),
        terms: IntentTerms {
            parent_id: Some(loan_id),
            ..IntentTerms::default()
        },
    };
    let created = loans.engine().create(&mut tx, collection).await?;
    if !store::set_reminder(&mut tx, loan_id, seq, created.id).await? {
        return Ok(false);
    }
    tx.commit().await?;
    tracing::info!(%loan_id, installment = seq, collection_id = %created.id, "repayment reminder sent");
    Ok(true)
}

/// Moves a loan still in `state` and still in arrears with `event`.
async fn mark(
    loans: &Loans,
    ctx: &JobContext,
    loan_id: Uuid,
    state: &str,
    event: &str,
    with_grace: bool,
) -> Result<bool, LoanError> {
    let now = ctx.clock().local_now();
    let mut tx = ctx.pool().begin().await?;
    let Some(loan) = store::lock(&mut tx, loan_id).await? else {
        return Ok(false);
    };
    let Some(intent) = intents::get(&mut tx, loan_id).await? else {
        return Ok(false);
    };
    if intent.state != state {
        return Ok(false);
    }
    let installments = store::installments(&mut tx, loan_id).await?;
    let mut after = loans.overdue_after();
    if with_grace {
        after += chrono::Duration::days(i64::from(loan.grace_days));
    }
    if !schedule::in_arrears(&installments, now, after) {
        return Ok(false);
    }
    loans.step(&mut tx, loan_id, event, Cause::Timer, ACTOR).await?;
    tx.commit().await?;
    tracing::info!(%loan_id, event, "loan fell behind");
    Ok(true)
}
