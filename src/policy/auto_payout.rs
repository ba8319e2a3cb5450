//! Auto-payout: when a credit lifts a party's balance above its threshold,
//! pay the balance out to the party's phone.
//!
//! The crossing is detected in the credit's own transaction and enqueues one
//! job keyed by the credit's transfer, so a crossing pays out once however
//! often the credit is replayed. The job re-reads the balance under the
//! party's lock and goes through the same admission as any payout (limits,
//! approvals, hold).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};

use super::fees::FeeError;
use super::{AdmitError, PayoutExtras, Policy};
use crate::config::Config;
use crate::domain::{Currency, Money, Msisdn, PartyId};
use crate::ledger::{self, AccountKey, AccountKind, LedgerError};
use crate::runner::{JobArgs, JobClient, JobContext, JobError, NewJob, Worker};
use crate::store::parties;
use crate::workflow::engine::{Engine, IntentTerms, NewIntent};

/// Job arguments: a credit crossed a party's auto-payout threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoPayoutJob {
    pub owner: String,
    pub party_id: String,
    pub currency: Currency,
    /// The transfer whose credit crossed the threshold.
    pub trigger: String,
}

impl JobArgs for AutoPayoutJob {
    const KIND: &'static str = "party.auto_payout";
}

/// What follows a new transfer that credits `payee` with `amount` among
/// its legs ([`super::credit`]'s, or a loan repayment's for its lender and
/// borrower): when the payee is a party and the credit positive, the party
/// is made (with `default_tier`) if new, and an auto-payout is enqueued if
/// the credit took its balance over its threshold. `trigger` names the
/// crossing (the auto-payout job's unique key), so two payees of one
/// transfer need two triggers.
pub async fn after_party_credit(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &JobClient,
    payee: &AccountKey,
    amount: Decimal,
    trigger: &str,
    default_tier: i16,
) -> Result<(), LedgerError> {
    if payee.kind != AccountKind::Party || amount <= Decimal::ZERO {
        return Ok(());
    }
    let settings = parties::auto_payout_settings_creating(tx, &payee.owner, &payee.reference, default_tier).await?;
    let Some((true, Some(threshold), Some(currency))) = settings else {
        return Ok(());
    };
    if currency != payee.currency.code() {
        return Ok(());
    }
    let available = ledger::available_of(tx, payee).await?;
    let before = available - amount;
    if before <= threshold && available > threshold {
        let job = NewJob::new(&AutoPayoutJob {
            owner: payee.owner.clone(),
            party_id: payee.reference.clone(),
            currency: payee.currency,
            trigger: trigger.to_owned(),
        })
        .unique_key(format!("auto-payout:{trigger}"));
        jobs.enqueue(tx, &job).await?;
        tracing::info!(party = payee.reference, "auto-payout threshold crossed");
    }
    Ok(())
}

/// Runs [`AutoPayoutJob`]s.
pub struct AutoPayoutWorker {
    pub engine: Engine,
    pub policy: Policy,
    pub config: std::sync::Arc<Config>,
}

impl Worker for AutoPayoutWorker {
    type Args = AutoPayoutJob;

    async fn work(&self, ctx: JobContext, args: AutoPayoutJob) -> Result<(), JobError> {
        let mut tx = ctx.pool().begin().await?;
        let party = parties::lock_or_create(&mut tx, &args.owner, &args.party_id, self.policy.default_tier()).await?;
        let skip = |why: &str| tracing::info!(party = args.party_id, why, "auto-payout skipped");
        let threshold = party.auto_payout_threshold.unwrap_or(Decimal::MAX);
        let wallet = AccountKey::party(&args.owner, &args.party_id, args.currency);
        let available = ledger::available_of(&mut tx, &wallet).await?;
        let Some(msisdn) = party.payout_msisdn.as_deref() else {
            skip("the party has no payout phone");
            return complete(ctx, tx).await;
        };
        if !party.auto_payout_enabled || available <= threshold {
            skip("disabled, or the balance is no longer above the threshold");
            return complete(ctx, tx).await;
        }
        let Some(country) = crate::api::home_country(args.currency) else {
            skip("no mobile money country for this currency");
            return complete(ctx, tx).await;
        };
        let msisdn = Msisdn::parse(msisdn, country).map_err(JobError::fatal)?;
        let routed = crate::policy::routing::route(
            &self.config.routing,
            &self.config.providers,
            &msisdn,
            args.currency,
            None,
            party.payout_provider.as_deref(),
        );
        let provider = match routed {
            Ok((provider, _)) => provider,
            Err(error) => {
                skip(&error.to_string());
                return complete(ctx, tx).await;
            }
        };
        let whole = self.config.providers.get(&provider).is_none_or(|p| p.whole_units);
        // What the provider carries in one payout, as a create is held to:
        // above its most (or above every tariff band, which ends there), the
        // most is paid out and another auto-payout follows for the rest;
        // below its least, nothing.
        let limits = self
            .config
            .providers
            .get(&provider)
            .and_then(|p| p.currencies.get(&args.currency));
        let fees = self.policy.fees();
        let whole_balance = fees.from_sent(available, args.currency, args.currency, Decimal::ONE, &provider, whole);
        let too_much = match (&whole_balance, limits) {
            (Ok(breakdown), Some(limits)) => breakdown.received > limits.payout_max,
            (Err(FeeError::AboveTariff { .. }), Some(_)) => true,
            _ => false,
        };
        let breakdown = match (whole_balance, limits) {
            (_, Some(limits)) if too_much => match fees.on_top(limits.payout_max, args.currency, &provider) {
                Ok(most) if most.sent <= available => most,
                Ok(_) => {
                    skip("the balance cannot pay the provider's largest payout and its fees");
                    return complete(ctx, tx).await;
                }
                Err(e) => {
                    skip(&e.to_string());
                    return complete(ctx, tx).await;
                }
            },
            (Ok(breakdown), Some(limits)) if breakdown.received < limits.payout_min => {
                skip("after fees the balance is below the provider's smallest payout");
                return complete(ctx, tx).await;
            }
            (Ok(breakdown), _) => breakdown,
            (Err(e), _) => {
                skip(&e.to_string());
                return complete(ctx, tx).await;
            }
        };
        let rest = available - breakdown.sent;
        let new = NewIntent {
            kind: "payout".into(),
            owner: args.owner.clone(),
            created_by: "auto-payout".into(),
            party_id: PartyId::parse(&args.party_id).map_err(JobError::fatal)?,
            amount: Money::new(breakdown.received, args.currency).map_err(JobError::fatal)?,
            msisdn,
            provider,
            reference: "auto-payout".into(),
            metadata: serde_json::json!({ "auto_payout": { "trigger": args.trigger } }),
            terms: IntentTerms::default(),
        };
        let extras = PayoutExtras {
            priced: Some(breakdown),
            ..PayoutExtras::default()
        };
        match self.policy.admit_payout(&self.engine, &mut tx, new, extras).await {
            Ok(row) => {
                tracing::info!(intent_id = %row.id, party = args.party_id, "auto-payout created");
                if too_much && rest > threshold {
                    // No later credit crosses the threshold while the rest
                    // stays above it: the next part goes now.
                    let next = NewJob::new(&AutoPayoutJob {
                        trigger: format!("rest:{}", row.id),
                        ..args.clone()
                    })
                    .unique_key(format!("auto-payout:rest:{}", row.id));
                    self.engine.jobs().enqueue(&mut tx, &next).await?;
                }
                complete(ctx, tx).await
            }
            Err(AdmitError::Refused(refusal)) => {
                drop(tx);
                let mut tx = ctx.pool().begin().await?;
                skip(&refusal.to_string());
                ctx.complete_in(&mut tx).await?;
                tx.commit().await?;
                Ok(())
            }
            Err(e) => Err(JobError::retryable(e)),
        }
    }
}

async fn complete(ctx: JobContext, mut tx: Transaction<'_, Postgres>) -> Result<(), JobError> {
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}
