//! Payouts admitted together: [`Policy::admit_payout`]'s rules for many
//! payouts in one transaction, with one statement for what all of them
//! need read (their parties and balances locked, their limit usage) instead
//! of one each. The API hands it the payout creates that arrive while
//! others are being admitted (group commit).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sqlx::{Postgres, Transaction};

use super::{AdmitError, PayoutExtras, Policy};
use crate::ledger::{self, NewTransfer};
use crate::store::intents::IntentRow;
use crate::store::{parties, policy as store};
use crate::workflow::engine::{Engine, NewIntent};

/// What became of one payout admitted together with others.
#[derive(Debug)]
pub enum Together {
    /// Admitted: created, its money held, as [`Policy::admit_payout`] would.
    Admitted(Box<IntentRow>),
    /// Not admitted here, and nothing of it written: its party or balance
    /// does not exist yet, or a rule or its balance refuses it. The caller
    /// admits it alone with [`Policy::admit_payout`], which creates what is
    /// missing or says why it is refused.
    Alone,
}

impl Policy {
    /// Admits `payouts` (fees on top of the amount: no quote, no campaign,
    /// no price given) in `tx` as if one after another in the order given:
    /// each sees the limit usage and the money held of those before it,
    /// under the same locks [`Policy::admit_payout`] takes. The parties and
    /// their balances are locked in (owner, party, currency) order, the
    /// order a batch of callbacks settles in. An error means nothing can be
    /// trusted: the caller rolls back.
    ///
    /// `routed_by_prefix[i]` says that payout `i`'s provider was chosen by
    /// its number's prefix without its party's payout settings being read;
    /// it is admitted only if the locked party names no provider or the
    /// same one, and otherwise left to be routed again, alone.
    pub async fn admit_together(
        &self,
        engine: &Engine,
        tx: &mut Transaction<'_, Postgres>,
        payouts: Vec<NewIntent>,
        routed_by_prefix: &[bool],
    ) -> Result<Vec<Together>, AdmitError> {
        assert_eq!(payouts.len(), routed_by_prefix.len(), "a routing flag per payout");
        let now = engine.jobs().clock().local_now();
        let priced: Vec<_> = payouts
            .iter()
            .map(|new| {
                self.inner
                    .fees
                    .on_top(new.amount.amount(), new.amount.currency(), &new.provider)
                    .ok()
            })
            .collect();

        // Each balance paid from, locked with its party, once.
        let mut balances: Vec<(&str, &str, &str)> = payouts
            .iter()
            .zip(&priced)
            .filter_map(|(new, breakdown)| {
                let currency = breakdown.as_ref()?.source_currency.code();
                Some((new.owner.as_str(), new.party_id.as_str(), currency))
            })
            .collect();
        balances.sort_unstable();
        balances.dedup();
        let mut available: BTreeMap<(&str, &str, &str), Decimal> = BTreeMap::new();
        let mut locked: BTreeMap<(&str, &str), parties::PartyRow> = BTreeMap::new();
        for (i, found) in parties::lock_for_payouts(tx, &balances).await? {
            let (owner, party, currency) = balances[i];
            available.insert((owner, party, currency), found.available);
            locked.insert((owner, party), found.party);
        }

        // Their parties' live payouts in the windows they are judged over,
        // read after the locks.
        let windows: Vec<_> = locked.values().map(|party| self.windows(party, now)).collect();
        let asked: Vec<_> = locked
            .keys()
            .zip(&windows)
            .map(|(&(owner, party), windows)| (owner, party, windows.as_slice()))
            .collect();
        let read = store::payout_usage(tx, &asked).await?;
        let mut usage: BTreeMap<(&str, &str), Vec<(i64, Decimal)>> = locked.keys().copied().zip(read).collect();

        let mut verdicts = Vec::with_capacity(payouts.len());
        for ((new, breakdown), &by_prefix) in payouts.iter().zip(priced).zip(routed_by_prefix) {
            let party_key = (new.owner.as_str(), new.party_id.as_str());
            let (Some(breakdown), Some(party)) = (breakdown, locked.get(&party_key)) else {
                verdicts.push(None);
                continue;
            };
            let rerouted = by_prefix && party.payout_provider.as_ref().is_some_and(|p| *p != new.provider);
            if rerouted {
                verdicts.push(None);
                continue;
            }
            let balance = (party_key.0, party_key.1, breakdown.source_currency.code());
            let Some(left) = available.get_mut(&balance) else {
                verdicts.push(None);
                continue;
            };
            if self.check_countries(party, new).is_err() || *left < breakdown.sent {
                verdicts.push(None);
                continue;
            }
            let Ok(usd) = self.usd_of(&breakdown, now).await else {
                verdicts.push(None);
                continue;
            };
            let used = usage.get_mut(&party_key).expect("every locked party's usage is read");
            let sent = breakdown.sent;
            let Ok(assessment) = self.judge(party, breakdown, usd, used) else {
                verdicts.push(None);
                continue;
            };
            // The next payout of this party sees this one held and counted.
            *left -= sent;
            for (count, sum) in used.iter_mut() {
                *count += 1;
                *sum += usd;
            }
            verdicts.push(Some(assessment));
        }

        // Every admitted payout written with one statement, then every
        // hold with one more.
        let extras = PayoutExtras::default();
        let mut admitted = Vec::new();
        let mut news = Vec::new();
        let mut sources = Vec::new();
        for (new, verdict) in payouts.into_iter().zip(&verdicts) {
            if let Some(assessment) = verdict {
                let (new, source) = super::with_terms(new, &extras, assessment);
                let first = self.first_move(&new, assessment);
                news.push((new, first));
                sources.push(source);
                admitted.push(assessment);
            }
        }
        let mut rows = engine.create_many(tx, news).await?.into_iter();
        let mut holds: Vec<NewTransfer> = Vec::with_capacity(admitted.len());
        let mut written = Vec::with_capacity(admitted.len());
        for (assessment, source) in admitted.iter().zip(&sources) {
            let row = rows.next().expect("a row per admitted payout");
            holds.push(super::payout_hold(&row, source, &assessment.breakdown));
            written.push(row);
        }
        ledger::hold_many(tx, &holds, engine.jobs().clock().sql_now()).await?;
        let mut written = written.into_iter().zip(admitted);
        let mut outcomes = Vec::with_capacity(verdicts.len());
        for verdict in &verdicts {
            outcomes.push(match verdict {
                Some(_) => {
                    let (row, assessment) = written.next().expect("a row per admitted payout");
                    self.flag(engine, tx, &row, assessment).await?;
                    Together::Admitted(Box::new(row))
                }
                None => Together::Alone,
            });
        }
        Ok(outcomes)
    }
}
