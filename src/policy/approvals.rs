//! Maker-checker decisions on payouts waiting for approval.
//!
//! Each approver decides once per payout. A rejection ends it (`rejected`,
//! hold released); approvals move it on (`pending`, then to the provider)
//! once as many different approvers as it requires have said yes. Whoever
//! created a payout can never decide on it; the workflow's guard says the
//! same again at the transition.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::store::policy as store;
use crate::workflow::engine::{Applied, Cause, Engine, EngineError, Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Enough approvals: the payout goes on.
    Approved,
    /// Recorded; more approvals are needed.
    Waiting {
        approvals: usize,
        required: usize,
    },
    Rejected,
}

#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no payout {0}")]
    NotFound(Uuid),
    #[error("the payout is {0}, not awaiting approval")]
    NotAwaiting(String),
    #[error("{0} created this payout and cannot decide on it")]
    OwnIntent(String),
    #[error("{0} already decided on this payout")]
    AlreadyDecided(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Records `approver`'s decision on payout `id` (of `owner`, or of anyone
/// when `owner` is `None`) and moves it when the decision is enough.
pub async fn decide(
    engine: &Engine,
    tx: &mut Transaction<'_, Postgres>,
    owner: Option<&str>,
    id: Uuid,
    approver: &str,
    decision: Decision,
    reason: Option<&str>,
) -> Result<Decided, DecisionError> {
    let row = store::lock_for_decision(tx, id).await?;
    let Some((intent_owner, state, created_by, required)) = row else {
        return Err(DecisionError::NotFound(id));
    };
    if owner.is_some_and(|o| o != intent_owner) {
        return Err(DecisionError::NotFound(id));
    }
    if state != "awaiting_approval" {
        return Err(DecisionError::NotAwaiting(state));
    }
    if created_by == approver {
        return Err(DecisionError::OwnIntent(approver.to_owned()));
    }
    let now = engine.jobs().clock().sql_now();
    if !store::insert_approval(tx, id, approver, decision.as_str(), reason, now).await? {
        return Err(DecisionError::AlreadyDecided(approver.to_owned()));
    }
    let required = usize::try_from(required.max(1)).unwrap_or(1);
    let approvals = store::approvals(tx, id)
        .await?
        .iter()
        .filter(|a| a.decision == "approve")
        .count();
    let (event, outcome) = match decision {
        Decision::Reject => ("reject", Decided::Rejected),
        Decision::Approve if approvals >= required => ("approve", Decided::Approved),
        Decision::Approve => return Ok(Decided::Waiting { approvals, required }),
    };
    match engine.apply(tx, id, &Event::new(event, Cause::Admin, approver)).await? {
        Applied::Moved { .. } => Ok(outcome),
        Applied::Rejected { reason, .. } => Err(DecisionError::NotAwaiting(reason)),
        Applied::Lost { expected } => Err(DecisionError::NotAwaiting(format!("no longer {expected}"))),
    }
}
