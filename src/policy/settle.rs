//! What entering a state with a ledger effect does, and crediting a party.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::auto_payout;
use crate::domain::Currency;
use crate::ledger::{self, AccountKey, LedgerError, Leg, Mode, NewTransfer, Recorded, Settle};
use crate::runner::JobClient;
use crate::store::intents::IntentRow;
use crate::workflow::LedgerEffect;

/// Applies `effect` to `intent`'s transfer, in the transition's
/// transaction. A payout's hold is posted or voided; a collection that
/// completes credits its payee (the party's balance, or the campaign's
/// bucket) from the provider float, and a party not seen before is created
/// with `default_tier`, as [`credit`] does.
pub async fn settle_intent(
    conn: &mut Transaction<'_, Postgres>,
    jobs: &JobClient,
    intent: &IntentRow,
    effect: LedgerEffect,
    now: Option<DateTime<Utc>>,
    default_tier: i16,
) -> Result<(), LedgerError> {
    let key = ledger::intent_key(intent.id);
    let how = match effect {
        LedgerEffect::Post => Settle::Post,
        LedgerEffect::Void => Settle::Void,
    };
    if ledger::settle(conn, &key, how, now).await? {
        return Ok(());
    }
    match (intent.kind.as_str(), effect) {
        ("collection", LedgerEffect::Post) => {
            let (transfer, payee) = collection_credit(intent, key);
            if intent.parent_id.is_some() {
                // A loan's reminder: the money is on its way to the loan (the
                // parent's job repays from this balance); no auto-payout may
                // take it first.
                ledger::record(conn, &transfer, Mode::Post, now).await?;
            } else {
                credit(conn, jobs, &transfer, &payee, intent.amount, now, default_tier).await?;
            }
        }
        ("payout", _) => {
            tracing::warn!(intent_id = %intent.id, "payout has no ledger hold to settle");
        }
        _ => {}
    }
    Ok(())
}

/// A completed collection's transfer, under `key`: its amount from the
/// provider float to its payee (the party's balance, or the campaign's
/// bucket), which is returned with it.
fn collection_credit(intent: &IntentRow, key: String) -> (NewTransfer, AccountKey) {
    let currency = Currency::from_stored(&intent.currency);
    let payee = match &intent.campaign_id {
        Some(campaign) => AccountKey::campaign(&intent.owner, campaign, currency),
        None => AccountKey::party(&intent.owner, &intent.party_id, currency),
    };
    let transfer = NewTransfer {
        key,
        owner: intent.owner.clone(),
        kind: "collection".into(),
        intent_id: Some(intent.id),
        description: format!("collection {} via {}", intent.id, intent.provider),
        legs: vec![
            Leg::debit(
                AccountKey::float(&intent.provider, currency),
                intent.amount,
                "collected",
            ),
            Leg::credit(payee.clone(), intent.amount, "collected"),
        ],
    };
    (transfer, payee)
}

/// Why a late success could not be booked.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// Nothing Tuma can post by itself: what to tell the person.
    #[error("{0}")]
    Unbookable(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Books a late success of `intent` (a provider's success after the intent
/// ended saying the money did not move): posts, by a transfer of its own
/// (`late-success:{id}`), what completing it would have posted. A payout's
/// or a reversal's hold, voided when it ended, is posted again leg for leg
/// (amount, fees and conversion as they were held), so its party pays for
/// it now; a collection credits its payee from the float, as completing it
/// does. The intent stays in its final state. Refused for a loan's intents
/// (the loan's own books would not follow) and for an intent with nothing
/// of its own to post; an account that cannot cover its share now is a
/// [`LedgerError::InsufficientFunds`], and the caller rolls back.
pub async fn book_late_success(
    conn: &mut Transaction<'_, Postgres>,
    jobs: &JobClient,
    intent: &IntentRow,
    now: Option<DateTime<Utc>>,
    default_tier: i16,
) -> Result<Uuid, BookError> {
    if let Some(loan) = intent.parent_id {
        return Err(BookError::Unbookable(format!(
            "this {} belongs to loan {loan}, whose books do not follow a posting by hand: \
             recover the money, then settle it as recovered",
            intent.kind
        )));
    }
    let key = ledger::joined_key(&["late-success", &intent.id.to_string()]);
    let recorded = if let Some(legs) = ledger::voided_legs(conn, &ledger::intent_key(intent.id)).await? {
        let transfer = NewTransfer {
            key,
            owner: intent.owner.clone(),
            kind: "late_success".into(),
            intent_id: Some(intent.id),
            description: format!(
                "late success of {} {} via {}, booked",
                intent.kind, intent.id, intent.provider
            ),
            legs,
        };
        ledger::record(conn, &transfer, Mode::Post, now).await?
    } else if intent.kind == "collection" {
        let (mut transfer, payee) = collection_credit(intent, key);
        transfer.kind = "late_success".into();
        transfer.description = format!(
            "late success of collection {} via {}, booked",
            intent.id, intent.provider
        );
        credit(conn, jobs, &transfer, &payee, intent.amount, now, default_tier).await?
    } else {
        return Err(BookError::Unbookable(format!(
            "this {} has no released hold to post again: settle it as recovered, with what shows where the money is",
            intent.kind
        )));
    };
    Ok(match recorded {
        Recorded::New { transfer_id } | Recorded::Already { transfer_id, .. } => transfer_id,
    })
}

/// [`settle_intent`] for many payouts at once: their holds posted or
/// voided by one statement, which takes the balances in the order payout
/// create groups lock them.
pub async fn settle_payouts(
    conn: &mut Transaction<'_, Postgres>,
    payouts: &[(&IntentRow, LedgerEffect)],
    now: Option<DateTime<Utc>>,
) -> Result<(), LedgerError> {
    let wanted: Vec<(String, Settle)> = payouts
        .iter()
        .map(|(intent, effect)| {
            let how = match effect {
                LedgerEffect::Post => Settle::Post,
                LedgerEffect::Void => Settle::Void,
            };
            (ledger::intent_key(intent.id), how)
        })
        .collect();
    for ((intent, _), found) in payouts.iter().zip(ledger::settle_many(conn, &wanted, now).await?) {
        if !found {
            tracing::warn!(intent_id = %intent.id, "payout has no ledger hold to settle");
        }
    }
    Ok(())
}

/// Records `transfer` (posted) crediting `payee` with `amount`. When the
/// payee is a party, a party not seen before is created with
/// `default_tier` (a party with a balance can be read, and its first
/// payout finds it as every later one does), and a balance that now
/// crosses its auto-payout threshold enqueues the auto-payout that crossing
/// asks for.
pub async fn credit(
    conn: &mut Transaction<'_, Postgres>,
    jobs: &JobClient,
    transfer: &NewTransfer,
    payee: &AccountKey,
    amount: Decimal,
    now: Option<DateTime<Utc>>,
    default_tier: i16,
) -> Result<Recorded, LedgerError> {
    let recorded = ledger::record(conn, transfer, Mode::Post, now).await?;
    if matches!(recorded, Recorded::New { .. }) {
        auto_payout::after_party_credit(conn, jobs, payee, amount, &transfer.key, default_tier).await?;
    }
    Ok(recorded)
}
