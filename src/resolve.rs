//! Settling by hand what the providers left open. An `unresolved`
//! intent: a person looked at the provider's statement (or asked its
//! support) and says whether the money moved, with the evidence. A late
//! success (a provider's success refused because its intent had already
//! ended without the money moving): a person recovered the money or
//! corrected the books, and says how. The API (`POST
//! /v1/payouts/{id}/resolve` and its siblings, `POST
//! /v1/late-successes/{id}/settle`) and the admin console both go through
//! here, so the rules (evidence required, a receipt names one payment only)
//! are written once.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ledger::LedgerError;
use crate::policy::BookError;
use crate::store::intents;
use crate::store::late_successes::{self, LateSuccess};
use crate::workflow::engine::{Applied, Cause, Engine, EngineError, Event};

/// Longest evidence kept, in characters.
pub const MAX_EVIDENCE_CHARS: usize = 500;
/// Longest receipt accepted, in bytes (providers' are 10 to 30).
pub const MAX_RECEIPT_BYTES: usize = 64;

/// What the person says, as received.
#[derive(Debug, Clone, Copy)]
pub struct Resolution<'a> {
    /// `succeeded` (the money moved) or `failed` (it did not).
    pub outcome: &'a str,
    pub evidence: &'a str,
    /// The provider's receipt, when the money moved.
    pub receipt: Option<&'a str>,
}

/// One bad field: (field, code, detail).
pub type FieldProblem = (&'static str, &'static str, &'static str);

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the resolution has invalid fields")]
    Invalid(Vec<FieldProblem>),
    #[error("no such intent")]
    NotFound,
    #[error("{0}")]
    InvalidState(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Evidence as kept (trimmed), if it is 1 to [`MAX_EVIDENCE_CHARS`]
/// characters.
fn evidence_of(text: &str) -> Option<&str> {
    let evidence = text.trim();
    (!evidence.is_empty() && evidence.chars().count() <= MAX_EVIDENCE_CHARS).then_some(evidence)
}

/// Checks a resolution's fields; returns the event to apply, the trimmed
/// evidence and receipt.
pub fn check<'a>(resolution: &Resolution<'a>) -> Result<(&'static str, &'a str, Option<&'a str>), Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let event = match resolution.outcome {
        "succeeded" => "resolved_succeeded",
        "failed" => "resolved_failed",
        _ => {
            problems.push(("outcome", "invalid_outcome", "succeeded or failed"));
            ""
        }
    };
    let evidence = evidence_of(resolution.evidence).unwrap_or_else(|| {
        problems.push(("evidence", "invalid_evidence", "1 to 500 characters"));
        ""
    });
    let receipt = resolution.receipt.map(str::trim).filter(|r| !r.is_empty());
    if receipt.is_some_and(|r| r.len() > MAX_RECEIPT_BYTES || !r.bytes().all(|b| b.is_ascii_alphanumeric())) {
        problems.push(("receipt", "invalid_receipt", "1 to 64 letters and digits"));
    }
    if problems.is_empty() {
        Ok((event, evidence, receipt))
    } else {
        Err(problems)
    }
}

/// Resolves intent `id` (of `kind` and `owner` when given; any otherwise)
/// as `actor`, in one transaction: the receipt, when the money moved, and
/// the transition with the evidence as its note.
pub async fn resolve(
    engine: &Engine,
    pool: &PgPool,
    owner: Option<&str>,
    kind: Option<&str>,
    id: Uuid,
    actor: &str,
    resolution: &Resolution<'_>,
) -> Result<(), ResolveError> {
    let (event, evidence, receipt) = check(resolution).map_err(ResolveError::Invalid)?;
    let mut tx = pool.begin().await?;
    let row = intents::get(&mut tx, id).await?.ok_or(ResolveError::NotFound)?;
    if owner.is_some_and(|o| o != row.owner) || kind.is_some_and(|k| k != row.kind) {
        return Err(ResolveError::NotFound);
    }
    let kind = row.kind.as_str();
    if let Some(receipt) = receipt {
        // A receipt names one payment: another intent's or a C2B payment's
        // cannot be borrowed (a later reversal would act on it).
        if intents::receipt_in_use(&mut tx, receipt, id).await? {
            return Err(ResolveError::InvalidState(format!(
                "receipt {receipt} already belongs to another payment"
            )));
        }
    }
    if let (Some(receipt), "resolved_succeeded") = (receipt, event) {
        intents::set_receipt(&mut tx, id, receipt).await?;
    }
    let note = format!("evidence: {evidence}");
    let mut applied = Event::new(event, Cause::Admin, actor);
    applied.note = Some(&note);
    applied.provider_ref = receipt;
    match engine.apply(&mut tx, id, &applied).await? {
        Applied::Moved { .. } => {}
        Applied::Rejected { state: current, .. } | Applied::Lost { expected: current } => {
            return Err(ResolveError::InvalidState(format!(
                "the {kind} is {current}; only an unresolved {kind} can be resolved"
            )))
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Why a person's record with evidence (settling a late success, reviewing
/// a listed callback) was not kept.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("evidence: 1 to 500 characters")]
    Invalid,
    #[error("no such record")]
    NotFound,
    /// Recorded already, or nothing to record (a callback the report does
    /// not list): what the person is told.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The ledger refused a booking for a reason no person can act on.
    #[error(transparent)]
    Ledger(LedgerError),
}

/// How a person settles a late success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The money came back (a reversal, the recipient returning it), or
    /// was put right outside Tuma: the ledger is left as it is.
    Recovered,
    /// The money stays where the provider moved it: Tuma posts it, as
    /// completing the intent would have ([`book_late_success`]).
    ///
    /// [`book_late_success`]: crate::policy::book_late_success
    Booked,
}

impl Settlement {
    /// `recovered` (also when nothing is said) or `booked`.
    pub fn parse(text: Option<&str>) -> Option<Settlement> {
        match text.map(str::trim) {
            None | Some("" | "recovered") => Some(Settlement::Recovered),
            Some("booked") => Some(Settlement::Booked),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Settlement::Recovered => "recovered",
            Settlement::Booked => "booked",
        }
    }
}

/// Settles the late success of intent `id` (of `owner` when given) as
/// `actor`, with `evidence` of what was done; `now` as the engine's clock
/// gives it. Booked, the intent's money is posted in the same transaction
/// (a party new to the ledger gets `default_tier`), and a balance that
/// cannot cover it now refuses the whole settlement. The intent stays in
/// its final state.
#[allow(clippy::too_many_arguments)]
pub async fn settle_late_success(
    engine: &Engine,
    default_tier: i16,
    owner: Option<&str>,
    id: Uuid,
    actor: &str,
    evidence: &str,
    settlement: Settlement,
    now: Option<DateTime<Utc>>,
) -> Result<LateSuccess, RecordError> {
    let evidence = evidence_of(evidence).ok_or(RecordError::Invalid)?;
    let mut tx = engine.jobs().pool().begin().await?;
    let mut late = late_successes::get_for_update(&mut tx, owner, id)
        .await?
        .ok_or(RecordError::NotFound)?;
    if let (Some(at), Some(by)) = (late.settled_at, &late.settled_by) {
        return Err(RecordError::Refused(format!("settled already, by {by} at {at}")));
    }
    let transfer_id = match settlement {
        Settlement::Recovered => None,
        Settlement::Booked => {
            let intent = intents::get(&mut tx, id).await?.ok_or(RecordError::NotFound)?;
            match crate::policy::book_late_success(&mut tx, engine.jobs(), &intent, now, default_tier).await {
                Ok(transfer_id) => Some(transfer_id),
                Err(BookError::Unbookable(why)) => return Err(RecordError::Refused(why)),
                Err(BookError::Ledger(LedgerError::InsufficientFunds(shortfall))) => {
                    return Err(RecordError::Refused(format!(
                        "{shortfall}: the balance cannot pay for it now; recover the money, \
                         or credit the balance and settle again"
                    )))
                }
                Err(BookError::Ledger(LedgerError::Database(e))) => return Err(e.into()),
                Err(BookError::Ledger(other)) => return Err(RecordError::Ledger(other)),
            }
        }
    };
    let outcome = settlement.as_str();
    late.settled_at = Some(late_successes::settle(&mut tx, id, actor, evidence, outcome, transfer_id, now).await?);
    tx.commit().await?;
    tracing::info!(intent_id = %id, settled_by = actor, outcome, "late success settled");
    late.settled_by = Some(actor.to_owned());
    late.evidence = Some(evidence.to_owned());
    late.outcome = Some(outcome.to_owned());
    late.transfer_id = transfer_id;
    Ok(late)
}

/// Records that `actor` reviewed callback `id`, one the reconciliation
/// report lists, with `evidence` of what they found and did; from then on
/// the report leaves it out. `now` as the engine's clock gives it.
pub async fn review_callback(
    pool: &PgPool,
    id: i64,
    actor: &str,
    evidence: &str,
    now: Option<DateTime<Utc>>,
) -> Result<crate::store::reports::CallbackReview, RecordError> {
    use crate::store::reports;
    let evidence = evidence_of(evidence).ok_or(RecordError::Invalid)?;
    let mut tx = pool.begin().await?;
    let max_asks = crate::providers::mpesa::c2b::MAX_ASKS;
    let mut callback = reports::callback_for_review(&mut tx, id, max_asks)
        .await?
        .ok_or(RecordError::NotFound)?;
    if let (Some(at), Some(by)) = (callback.reviewed_at, &callback.reviewed_by) {
        return Err(RecordError::Refused(format!("reviewed already, by {by} at {at}")));
    }
    if !callback.listed {
        return Err(RecordError::Refused(format!(
            "callback {id} ({}) is not one the reconciliation report lists",
            callback.outcome.as_deref().unwrap_or("not processed yet")
        )));
    }
    callback.reviewed_at = Some(reports::review_callback(&mut tx, id, actor, evidence, now).await?);
    tx.commit().await?;
    tracing::info!(inbox_id = id, reviewed_by = actor, "callback reviewed");
    callback.reviewed_by = Some(actor.to_owned());
    callback.review_note = Some(evidence.to_owned());
    Ok(callback)
}
