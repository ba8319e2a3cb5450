//! Reversals: an admin sends a completed payment back through the
//! provider. The reversal is an intent (`workflows/reversal.toml`) whose
//! ledger transfer undoes the original's entries: held when it is created
//! (so the money it takes back from a balance cannot be spent meanwhile,
//! and a balance that no longer holds it refuses the reversal), posted when
//! the provider confirms, released if it refuses.
//!
//! What can be reversed, by receipt:
//! - a completed STK collection: the payee's credit is undone (and, for a
//!   loan reminder, the repayment it made);
//! - a C2B payment applied to a loan or a borrower: its routing transfer is
//!   undone; the loan's balance reopens when the reversal completes;
//! - a completed payout: the recipient's money comes back to the float and
//!   is credited to the paying party (fees are not refunded: the provider
//!   keeps its tariff).
//!
//! A C2B payment in suspense has no payer number on record (Daraja sends it
//! masked), so it is refused here; reconciliation lists it for a person.

use serde_json::json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{Currency, Money, Msisdn, PartyId};
use crate::ledger::{self, AccountKey, LedgerError, Leg, Mode, NewTransfer};
use crate::policy::Refusal;
use crate::store::intents::{self, IntentRow};
use crate::store::{c2b, loans as loan_store};
use crate::workflow::engine::{parent_still_to_hear, Engine, EngineError, IntentTerms, NewIntent};

/// A reversal asked for.
#[derive(Debug, Clone)]
pub struct NewReversal {
    pub owner: String,
    pub created_by: String,
    pub receipt: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReversalError {
    #[error("no completed payment with receipt {0} that this owner may reverse")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Refused(Refusal),
    #[error(transparent)]
    Engine(EngineError),
    #[error("ledger: {0}")]
    Ledger(LedgerError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<LedgerError> for ReversalError {
    fn from(error: LedgerError) -> ReversalError {
        match error {
            LedgerError::InsufficientFunds(s) => ReversalError::Refused(Refusal::InsufficientFunds(s)),
            LedgerError::Database(e) => ReversalError::Database(e),
            other => ReversalError::Ledger(other),
        }
    }
}

impl From<EngineError> for ReversalError {
    fn from(error: EngineError) -> ReversalError {
        match error {
            EngineError::Database(e) => ReversalError::Database(e),
            EngineError::Ledger(e) => e.into(),
            other => ReversalError::Engine(other),
        }
    }
}

/// What is being reversed, found by receipt.
struct Original {
    kind: &'static str,
    id: String,
    party_id: String,
    amount: Money,
    msisdn: Msisdn,
    provider: String,
    receiver_party: String,
    /// The loan whose repayment this undoes, if any.
    loan_id: Option<Uuid>,
    /// The repayment's source (`c2b:<receipt>`, `collection:<id>`).
    repayment_source: Option<String>,
    legs: Vec<Leg>,
}

/// Creates the reversal of the payment with `receipt`, holding what it
/// takes back. Refusals write nothing.
pub async fn create(
    engine: &Engine,
    config: &Config,
    tx: &mut Transaction<'_, Postgres>,
    new: NewReversal,
) -> Result<IntentRow, ReversalError> {
    let original = find(config, tx, &new).await?;
    let exists: bool = intents::live_reversal_exists(tx, &new.receipt).await?;
    if exists {
        return Err(ReversalError::Conflict(format!(
            "receipt {} is already reversed or being reversed",
            new.receipt
        )));
    }
    let sql_now = engine.jobs().clock().sql_now();
    let intent = engine
        .create(
            tx,
            NewIntent {
                kind: "reversal".into(),
                owner: new.owner.clone(),
                created_by: new.created_by.clone(),
                party_id: PartyId::parse(&original.party_id).map_err(ReversalError::Conflict)?,
                amount: original.amount,
                msisdn: original.msisdn.clone(),
                provider: original.provider.clone(),
                reference: new.receipt.clone(),
                metadata: json!({
                    "reason": new.reason,
                    "original": { "kind": original.kind, "id": original.id, "receipt": new.receipt },
                    "receiver_party": original.receiver_party,
                    "repayment_source": original.repayment_source,
                }),
                terms: IntentTerms {
                    parent_id: original.loan_id,
                    ..IntentTerms::default()
                },
            },
        )
        .await?;
    ledger::record(
        tx,
        &NewTransfer {
            key: ledger::intent_key(intent.id),
            owner: new.owner.clone(),
            kind: "reversal".into(),
            intent_id: Some(intent.id),
            description: format!("reversal of {} {}", original.kind, new.receipt),
            legs: original.legs,
        },
        Mode::Hold,
        sql_now,
    )
    .await?;
    tracing::info!(reversal_id = %intent.id, original = original.kind, "reversal requested");
    Ok(intent)
}

async fn find(
    config: &Config,
    tx: &mut Transaction<'_, Postgres>,
    new: &NewReversal,
) -> Result<Original, ReversalError> {
    let mpesa = config
        .mpesa
        .as_ref()
        .ok_or_else(|| ReversalError::Conflict("M-Pesa is not configured on this engine".into()))?;
    let memo = "reversed";
    if let Some(intent) = intents::lock_completed_by_receipt(tx, &new.owner, &new.receipt).await? {
        if intent.provider != "mpesa" {
            return Err(ReversalError::Conflict(format!(
                "reversals through {} are not supported yet",
                intent.provider
            )));
        }
        if intent.kind == "payout" && intent.parent_id.is_some() {
            return Err(ReversalError::Conflict(
                "a loan's disbursement cannot be reversed; the loan is repaid instead".into(),
            ));
        }
        if intent.kind == "payout" {
            let fx = intent
                .fees
                .as_ref()
                .and_then(|f| f["source_currency"].as_str())
                .is_some_and(|source| source != intent.currency);
            if intent.campaign_id.is_some() || fx {
                return Err(ReversalError::Conflict(
                    "reversing a payout paid from a campaign bucket or across currencies is not supported: \
                     credit the party or campaign after the provider reverses it"
                        .into(),
                ));
            }
        }
        let currency = Currency::from_stored(&intent.currency);
        let mut repayment_source = None;
        let (legs, receiver_party) = if intent.kind == "payout" {
            let legs = vec![
                Leg::debit(AccountKey::float(&intent.provider, currency), intent.amount, memo),
                Leg::credit(
                    AccountKey::party(&intent.owner, &intent.party_id, currency),
                    intent.amount,
                    memo,
                ),
            ];
            (legs, mpesa.b2c_shortcode.clone())
        } else {
            // A loan's paid reminder repays the loan in a job of its own,
            // after the collection settles. Reversed before that job has
            // run, the collection would be undone without its repayment,
            // and the job would then repay from money the reversal holds.
            // Checked before the repayment is looked for: once the job is
            // done, its repayment is committed.
            if parent_still_to_hear(tx, &intent).await? {
                return Err(ReversalError::Conflict(format!(
                    "collection {} is still being applied to its loan; try again in a minute",
                    intent.id
                )));
            }
            let mut legs = undo(tx, &ledger::intent_key(intent.id), memo).await?;
            let source = format!("collection:{}", intent.id);
            if let Some(repayment) = loan_store::lock_repayment(tx, &source).await? {
                legs.extend(undo(tx, &repayment.transfer_key, memo).await?);
                repayment_source = Some(source);
            }
            (legs, mpesa.stk_shortcode.clone())
        };
        return Ok(Original {
            kind: if intent.kind == "payout" {
                "payout"
            } else {
                "collection"
            },
            id: intent.id.to_string(),
            party_id: intent.party_id.clone(),
            amount: money(intent.amount, currency)?,
            msisdn: stored_msisdn(&intent.msisdn)?,
            provider: intent.provider.clone(),
            receiver_party,
            loan_id: repayment_source.as_ref().and(intent.parent_id),
            repayment_source,
            legs,
        });
    }
    let Some(payment) = c2b::lock(tx, &new.receipt).await? else {
        return Err(ReversalError::NotFound(new.receipt.clone()));
    };
    if payment.owner.as_deref() != Some(new.owner.as_str()) {
        if payment.applied_to.as_deref() == Some("suspense") {
            return Err(ReversalError::Conflict(format!(
                "C2B payment {} is in suspense: no payer number is on record to reverse it to; \
                 it is listed by reconciliation for a person to settle",
                new.receipt
            )));
        }
        return Err(ReversalError::NotFound(new.receipt.clone()));
    }
    let (Some(loan_id), Some(key)) = (payment.loan_id, payment.transfer_key.clone()) else {
        return Err(ReversalError::NotFound(new.receipt.clone()));
    };
    let loan = loan_store::get_any(tx, loan_id)
        .await?
        .ok_or_else(|| ReversalError::NotFound(new.receipt.clone()))?;
    let loan_intent = intents::get(tx, loan_id)
        .await?
        .ok_or_else(|| ReversalError::NotFound(new.receipt.clone()))?;
    let currency = Currency::from_stored(&loan.currency);
    let legs = undo(tx, &key, memo).await?;
    let source = format!("c2b:{}", new.receipt);
    let repaid = loan_store::lock_repayment(tx, &source).await?.is_some();
    Ok(Original {
        kind: "c2b",
        id: new.receipt.clone(),
        party_id: loan.borrower_id.clone(),
        amount: money(payment.amount, currency)?,
        msisdn: stored_msisdn(&loan_intent.msisdn)?,
        provider: "mpesa".into(),
        receiver_party: payment.shortcode.clone(),
        loan_id: repaid.then_some(loan_id),
        repayment_source: repaid.then_some(source),
        legs,
    })
}

async fn undo(tx: &mut Transaction<'_, Postgres>, key: &str, memo: &str) -> Result<Vec<Leg>, ReversalError> {
    ledger::undoing_legs(tx, key, memo)
        .await?
        .ok_or_else(|| ReversalError::Conflict(format!("the payment's ledger transfer {key} is not posted")))
}

fn money(amount: rust_decimal::Decimal, currency: Currency) -> Result<Money, ReversalError> {
    Money::new(amount, currency).map_err(|e| ReversalError::Conflict(e.to_string()))
}

fn stored_msisdn(digits: &str) -> Result<Msisdn, ReversalError> {
    Msisdn::try_from(digits.to_owned()).map_err(|e| ReversalError::Conflict(e.to_string()))
}
