//! Policy: what may move, at what cost, and who must agree first.
//!
//! [`Policy::admit_payout`] runs inside the payout's create transaction: it
//! locks the party's row (so every check below sees the party's other
//! payouts settled one at a time), prices the payout ([`fees`], [`fx`]),
//! checks KYC tier limits, velocity rules, AML thresholds and blocked
//! countries, creates the intent, holds the money on the ledger, and routes
//! it to approval when a threshold says so. A refusal leaves nothing
//! behind: the caller rolls the transaction back.

pub mod approvals;
pub mod auto_payout;
pub mod fees;
pub mod fx;
pub mod routing;
mod settle;
mod together;

use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

pub use auto_payout::after_party_credit;
pub use settle::{book_late_success, credit, settle_intent, settle_payouts, BookError};
pub use together::Together;

use crate::config::Config;
use crate::domain::Currency;
use crate::ledger::{self, AccountKey, LedgerError, Leg, Mode, NewTransfer, Shortfall};
use crate::store::intents::IntentRow;
use crate::store::{parties, policy as store};
use crate::workflow::engine::{Cause, Engine, EngineError, Event, NewIntent};
use fees::{Breakdown, FeeError, FeeSchedule};
use fx::{Rates, StaticRates};

/// `[policy]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The tier a party has until it is told otherwise.
    pub default_kyc_tier: u8,
    /// Limits per KYC tier, tier 0 first; a missing cap is no cap.
    pub kyc_tiers: Vec<TierLimits>,
    /// AML: payouts above this (USD equivalent) are flagged for review.
    pub review_above_usd: Decimal,
    /// Payouts above this need one approval…
    pub approval_above_usd: Decimal,
    /// …and above this, two from different approvers.
    pub two_approvals_above_usd: Decimal,
    /// ISO 3166 alpha-2 codes no payout may go to or come from.
    #[serde(default)]
    pub blocked_countries: Vec<String>,
    #[serde(default)]
    pub velocity: Vec<VelocityRule>,
}

/// Rolling-window caps, USD equivalent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    pub daily_usd: Option<Decimal>,
    pub weekly_usd: Option<Decimal>,
    pub monthly_usd: Option<Decimal>,
}

/// Count and sum of a party's payouts in a window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityRule {
    pub name: String,
    pub window_s: u64,
    /// Most payouts in the window, this one included.
    pub max_count: Option<i64>,
    pub max_sum_usd: Option<Decimal>,
    pub action: RuleAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Record it; the payout goes on.
    Flag,
    /// Record it and send the payout to an approver.
    Review,
    /// Refuse the payout.
    Block,
}

impl RuleAction {
    fn as_str(self) -> &'static str {
        match self {
            RuleAction::Flag => "flag",
            RuleAction::Review => "review",
            RuleAction::Block => "block",
        }
    }
}

/// Why a payout was not admitted. Nothing was held.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("the {limit} limit of {limit_usd} USD would be exceeded: {used_usd} USD used, {left_usd} USD left, {asked_usd} USD asked")]
    LimitExceeded {
        limit: String,
        limit_usd: Decimal,
        used_usd: Decimal,
        left_usd: Decimal,
        asked_usd: Decimal,
    },
    #[error("velocity rule {rule} blocks this payout: {detail}")]
    VelocityBlocked { rule: String, detail: String },
    #[error("payouts involving country {0} are blocked")]
    BlockedCountry(String),
    #[error(transparent)]
    InsufficientFunds(Shortfall),
    #[error("{0}")]
    Fees(#[from] FeeError),
    #[error("no FX rate from {from} to {to}")]
    NoRate { from: Currency, to: Currency },
    #[error("{0}")]
    Quote(QuoteProblem),
}

/// What is wrong with the `quote_id` a payout carries (a conflict: the
/// quote exists but cannot be used for this payout).
#[derive(Debug, Clone, thiserror::Error)]
pub enum QuoteProblem {
    #[error("no quote {0}")]
    NotFound(Uuid),
    #[error("quote {id} expired at {at}")]
    Expired { id: Uuid, at: DateTime<Utc> },
    #[error("quote {id} was already used by payout {by}")]
    Used { id: Uuid, by: Uuid },
    #[error("quote {id} does not match this payout: {detail}")]
    Mismatch { id: Uuid, detail: String },
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Ledger(LedgerError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<LedgerError> for AdmitError {
    fn from(error: LedgerError) -> AdmitError {
        match error {
            LedgerError::InsufficientFunds(shortfall) => AdmitError::Refused(Refusal::InsufficientFunds(shortfall)),
            LedgerError::Database(e) => AdmitError::Database(e),
            other => AdmitError::Ledger(other),
        }
    }
}

/// What a payout asks for beyond the common intent fields.
#[derive(Debug, Clone, Default)]
pub struct PayoutExtras {
    pub quote_id: Option<Uuid>,
    /// Pay from this campaign's bucket instead of the party's balance.
    pub campaign_id: Option<String>,
    pub batch_id: Option<Uuid>,
    /// A price already worked out (an auto-payout's, fees taken from the
    /// balance); without it and without a quote, fees go on top.
    pub priced: Option<Breakdown>,
}

/// A payout's price and policy verdict, before anything is written.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub breakdown: Breakdown,
    pub usd_equivalent: Decimal,
    pub flags: Vec<Flag>,
    pub approvals_required: i16,
}

#[derive(Debug, Clone)]
pub struct Flag {
    pub rule: String,
    pub action: RuleAction,
    pub detail: String,
}

/// What a quote is asked for.
#[derive(Debug, Clone, Copy)]
pub struct QuoteRequest<'a> {
    pub owner: &'a str,
    pub party_id: &'a str,
    /// What leaves the party's balance, in `source`.
    pub sent: Decimal,
    pub source: Currency,
    pub target: Currency,
    pub provider: &'a str,
}

/// The policy engine: configuration, fee schedule and rate source.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<PolicyInner>,
}

struct PolicyInner {
    config: PolicyConfig,
    fees: FeeSchedule,
    rates: Rates,
    quote_ttl: ChronoDuration,
    whole_units: std::collections::BTreeMap<String, bool>,
    /// `mpesa.float_check`: M-Pesa payouts wait at release for the float.
    mpesa_float_check: bool,
}

impl Policy {
    pub fn from_config(config: &Config) -> Result<Policy, String> {
        let rates = StaticRates::from_config(&config.fx)?;
        Policy::with_rates(config, Arc::new(rates))
    }

    /// A policy with another rate source (a live feed).
    pub fn with_rates(config: &Config, rates: Rates) -> Result<Policy, String> {
        let policy = &config.policy;
        if policy.kyc_tiers.len() != 3 {
            return Err("policy.kyc_tiers must list tiers 0, 1 and 2".into());
        }
        if usize::from(policy.default_kyc_tier) >= policy.kyc_tiers.len() {
            return Err("policy.default_kyc_tier must be 0, 1 or 2".into());
        }
        if policy.two_approvals_above_usd < policy.approval_above_usd {
            return Err("policy.two_approvals_above_usd must not be below approval_above_usd".into());
        }
        Ok(Policy {
            inner: Arc::new(PolicyInner {
                config: policy.clone(),
                fees: config.fees.clone(),
                rates,
                quote_ttl: ChronoDuration::seconds(config.fx.quote_ttl_s as i64),
                whole_units: config
                    .providers
                    .iter()
                    .map(|(name, p)| (name.clone(), p.whole_units))
                    .collect(),
                mpesa_float_check: config.mpesa.as_ref().is_some_and(|m| m.float_check),
            }),
        })
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.inner.config
    }

    pub fn fees(&self) -> &FeeSchedule {
        &self.inner.fees
    }

    pub fn default_tier(&self) -> i16 {
        i16::from(self.inner.config.default_kyc_tier)
    }

    fn whole_units(&self, provider: &str) -> bool {
        self.inner.whole_units.get(provider).copied().unwrap_or(true)
    }

    /// `amount` of `currency` in USD at the rate of `now`, to the cent.
    pub async fn usd(&self, amount: Decimal, currency: Currency, now: DateTime<Utc>) -> Result<Decimal, Refusal> {
        let rate = self
            .inner
            .rates
            .rate(currency, Currency::USD, now)
            .await
            .ok_or(Refusal::NoRate {
                from: currency,
                to: Currency::USD,
            })?;
        Ok((amount * rate.rate).round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven))
    }

    /// Prices `sent` of `source` paid out as `target` through `provider`
    /// and records it as a quote for `party_id`, valid for the configured
    /// time.
    pub async fn quote(
        &self,
        conn: &mut PgConnection,
        request: &QuoteRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<store::QuoteRow, AdmitError> {
        let QuoteRequest {
            owner,
            party_id,
            sent,
            source,
            target,
            provider,
        } = *request;
        let rate = self
            .inner
            .rates
            .rate(source, target, now)
            .await
            .ok_or(Refusal::NoRate {
                from: source,
                to: target,
            })?;
        let breakdown = self
            .inner
            .fees
            .from_sent(sent, source, target, rate.rate, provider, self.whole_units(provider))
            .map_err(Refusal::from)?;
        let row = store::QuoteRow {
            id: Uuid::now_v7(),
            owner: owner.to_owned(),
            party_id: party_id.to_owned(),
            provider: provider.to_owned(),
            source_amount: breakdown.sent,
            source_currency: source.code().to_owned(),
            target_currency: target.code().to_owned(),
            rate: rate.rate,
            rate_source: rate.source,
            rate_as_of: rate.as_of,
            breakdown: serde_json::to_value(&breakdown).expect("a breakdown serializes"),
            received: breakdown.received,
            expires_at: now + self.inner.quote_ttl,
            used_by: None,
            created_at: now,
        };
        Ok(store::insert_quote(conn, &row, Some(now)).await?)
    }

    /// Admits a payout: prices it, checks limits and rules under the
    /// party's lock, creates it, holds its money and routes it to approval
    /// when needed. Returns the intent as it stands after all that.
    pub async fn admit_payout(
        &self,
        engine: &Engine,
        tx: &mut Transaction<'_, Postgres>,
        new: NewIntent,
        extras: PayoutExtras,
    ) -> Result<IntentRow, AdmitError> {
        let now = engine.jobs().clock().local_now();
        let party = parties::lock_or_create(tx, &new.owner, new.party_id.as_str(), self.default_tier()).await?;
        self.check_countries(&party, &new)?;

        let (breakdown, quote) = match extras.quote_id {
            Some(id) => {
                let quote = self.usable_quote(tx, &new, id, now).await?;
                let breakdown: Breakdown = serde_json::from_value(quote.breakdown.clone())
                    .map_err(|e| AdmitError::Database(sqlx::Error::Decode(e.into())))?;
                (breakdown, Some(quote))
            }
            None if extras.priced.is_some() => (extras.priced.clone().expect("checked"), None),
            None => {
                let breakdown = self
                    .inner
                    .fees
                    .on_top(new.amount.amount(), new.amount.currency(), &new.provider)
                    .map_err(Refusal::from)?;
                (breakdown, None)
            }
        };
        let usd = self.usd_of(&breakdown, now).await?;
        let windows = self.windows(&party, now);
        let usage = store::payout_usage(tx, &[(&new.owner, new.party_id.as_str(), &windows)]).await?;
        let assessment = self.judge(&party, breakdown, usd, &usage[0])?;

        self.write_admitted(engine, tx, new, &extras, assessment, quote.map(|q| q.id))
            .await
    }

    /// Writes an assessed payout: the intent with its terms, the ledger
    /// hold, the quote's use, its flags, and its wait for approval when the
    /// assessment asks for one.
    async fn write_admitted(
        &self,
        engine: &Engine,
        tx: &mut Transaction<'_, Postgres>,
        new: NewIntent,
        extras: &PayoutExtras,
        assessment: Assessment,
        quote: Option<Uuid>,
    ) -> Result<IntentRow, AdmitError> {
        let sql_now = engine.jobs().clock().sql_now();
        let (new, source) = with_terms(new, extras, &assessment);
        let first = self.first_move(&new, &assessment);
        let row = engine
            .create_many(tx, vec![(new, first)])
            .await?
            .pop()
            .expect("one row per intent created");
        ledger::record(
            tx,
            &payout_hold(&row, &source, &assessment.breakdown),
            Mode::Hold,
            sql_now,
        )
        .await?;
        if let Some(quote) = quote {
            store::use_quote(tx, quote, row.id).await?;
        }
        self.flag(engine, tx, &row, &assessment).await?;
        Ok(row)
    }

    /// Where an admitted payout goes as it is created ([`Engine::create_many`]
    /// writes it there at once): to wait for its approvals when the
    /// assessment asks for them; straight on to its provider when nothing
    /// can hold it back at release (no float check for its provider, no
    /// batch that may yet need approving as a whole); otherwise nowhere
    /// yet: it stays `pending` and its `release` action decides.
    fn first_move(&self, new: &NewIntent, assessment: &Assessment) -> Option<Event<'static>> {
        if assessment.approvals_required > 0 {
            Some(Event::new("require_approval", Cause::Policy, "policy"))
        } else if new.terms.batch_id.is_none() && !self.held_at_release(&new.provider) {
            Some(Event::new("release", Cause::Policy, "policy"))
        } else {
            None
        }
    }

    /// Whether `release` may hold a payout through `provider`: M-Pesa's
    /// float check (`mpesa.float_check`), which waits for the B2C float to
    /// cover it.
    fn held_at_release(&self, provider: &str) -> bool {
        provider == "mpesa" && self.inner.mpesa_float_check
    }

    /// Records an admitted payout's flags.
    async fn flag(
        &self,
        engine: &Engine,
        tx: &mut Transaction<'_, Postgres>,
        row: &IntentRow,
        assessment: &Assessment,
    ) -> Result<(), AdmitError> {
        let sql_now = engine.jobs().clock().sql_now();
        for flag in &assessment.flags {
            store::insert_flag(tx, row.id, &flag.rule, flag.action.as_str(), &flag.detail, sql_now).await?;
            tracing::info!(intent_id = %row.id, rule = flag.rule, action = flag.action.as_str(), "payout flagged");
        }
        Ok(())
    }

    /// Approvals the approval thresholds ask for at `usd`: 0, 1 or 2.
    fn approvals_for(&self, usd: Decimal) -> i16 {
        let config = &self.inner.config;
        if usd > config.two_approvals_above_usd {
            2
        } else if usd > config.approval_above_usd {
            1
        } else {
            0
        }
    }

    /// After a batch's payouts were admitted one by one: when their total is
    /// above an approval threshold, every payout in the batch waits for
    /// that many approvals (the batch is approved as one). Returns the
    /// total in USD.
    pub async fn gate_batch(
        &self,
        engine: &Engine,
        tx: &mut Transaction<'_, Postgres>,
        rows: &mut [IntentRow],
    ) -> Result<Decimal, EngineError> {
        let total: Decimal = rows.iter().filter_map(|r| r.usd_equivalent).sum();
        let required = self.approvals_for(total);
        if required == 0 {
            return Ok(total);
        }
        for row in rows {
            if row.approvals_required < required {
                store::set_approvals_required(tx, row.id, required).await?;
                row.approvals_required = required;
            }
            if row.state == "pending" {
                let event = Event::new("require_approval", Cause::Policy, "policy");
                engine.apply(tx, row.id, &event).await?;
                row.state = "awaiting_approval".into();
            }
        }
        Ok(total)
    }

    async fn usable_quote(
        &self,
        conn: &mut PgConnection,
        new: &NewIntent,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<store::QuoteRow, AdmitError> {
        let problem = |p: QuoteProblem| AdmitError::Refused(Refusal::Quote(p));
        let quote = store::lock_quote(conn, &new.owner, id)
            .await?
            .ok_or_else(|| problem(QuoteProblem::NotFound(id)))?;
        if let Some(by) = quote.used_by {
            return Err(problem(QuoteProblem::Used { id, by }));
        }
        if quote.expires_at <= now {
            return Err(problem(QuoteProblem::Expired {
                id,
                at: quote.expires_at,
            }));
        }
        let mismatch = if quote.party_id != new.party_id.as_str() {
            Some(format!("it was made for party {}", quote.party_id))
        } else if quote.target_currency != new.amount.currency().code() {
            Some(format!("it pays out {}", quote.target_currency))
        } else if quote.received != new.amount.amount() {
            Some(format!("it pays out {} {}", quote.received, quote.target_currency))
        } else if quote.provider != new.provider {
            Some(format!("it was priced for {}", quote.provider))
        } else {
            None
        };
        match mismatch {
            Some(detail) => Err(problem(QuoteProblem::Mismatch { id, detail })),
            None => Ok(quote),
        }
    }

    /// Refuses a payout from or to a blocked country.
    fn check_countries(&self, party: &parties::PartyRow, new: &NewIntent) -> Result<(), Refusal> {
        let blocked = &self.inner.config.blocked_countries;
        let recipient_country = new.msisdn.country().code();
        for country in party.country.iter().map(String::as_str).chain([recipient_country]) {
            if blocked.iter().any(|b| b.eq_ignore_ascii_case(country)) {
                return Err(Refusal::BlockedCountry(country.to_uppercase()));
            }
        }
        Ok(())
    }

    /// What a priced payout sends, in USD.
    async fn usd_of(&self, breakdown: &Breakdown, now: DateTime<Utc>) -> Result<Decimal, Refusal> {
        if breakdown.source_currency == Currency::USD {
            Ok(breakdown.sent)
        } else {
            self.usd(breakdown.sent, breakdown.source_currency, now).await
        }
    }

    /// The windows a payout of `party` is judged over, as their start
    /// times: its KYC tier's daily, weekly and monthly windows first, then
    /// one per velocity rule. A tier window without a cap is `None`: nothing
    /// reads it, so its usage is not counted.
    fn windows(&self, party: &parties::PartyRow, now: DateTime<Utc>) -> Vec<Option<DateTime<Utc>>> {
        let (_, limits) = self.tier_of(party);
        let caps = [limits.daily_usd, limits.weekly_usd, limits.monthly_usd];
        TIER_WINDOWS
            .iter()
            .zip(caps)
            .map(|((_, days), cap)| cap.map(|_| now - ChronoDuration::days(*days)))
            .chain(
                self.inner
                    .config
                    .velocity
                    .iter()
                    .map(|rule| Some(now - ChronoDuration::seconds(rule.window_s as i64))),
            )
            .collect()
    }

    /// The party's KYC tier, as an index into the configured tiers (a tier
    /// above the last is the last), and that tier's limits.
    fn tier_of(&self, party: &parties::PartyRow) -> (usize, &TierLimits) {
        let tiers = &self.inner.config.kyc_tiers;
        let tier = usize::try_from(party.kyc_tier).unwrap_or(0).min(tiers.len() - 1);
        (tier, &tiers[tier])
    }

    /// Limits, velocity and AML for a payout sending `usd`, given the
    /// party's live payouts in each of [`Policy::windows`] (count, USD sum),
    /// read under the party's lock.
    fn judge(
        &self,
        party: &parties::PartyRow,
        breakdown: Breakdown,
        usd: Decimal,
        usage: &[(i64, Decimal)],
    ) -> Result<Assessment, Refusal> {
        let config = &self.inner.config;
        let (tier, limits) = self.tier_of(party);
        let caps = [limits.daily_usd, limits.weekly_usd, limits.monthly_usd];
        let (tier_usage, velocity_usage) = usage.split_at(TIER_WINDOWS.len());
        for (((name, _), cap), (_, used)) in TIER_WINDOWS.iter().zip(caps).zip(tier_usage.iter().copied()) {
            let Some(cap) = cap else { continue };
            if used + usd > cap {
                return Err(Refusal::LimitExceeded {
                    limit: format!("KYC tier {tier} {name}"),
                    limit_usd: cap,
                    used_usd: used,
                    left_usd: (cap - used).max(Decimal::ZERO),
                    asked_usd: usd,
                });
            }
        }
        let mut flags = Vec::new();
        for (rule, (count, sum)) in config.velocity.iter().zip(velocity_usage.iter().copied()) {
            let over_count = rule.max_count.filter(|max| count + 1 > *max);
            let over_sum = rule.max_sum_usd.filter(|max| sum + usd > *max);
            let detail = match (over_count, over_sum) {
                (Some(max), _) => format!("{} payouts in {} s (at most {max})", count + 1, rule.window_s),
                (None, Some(max)) => format!("{} USD in {} s (at most {max})", sum + usd, rule.window_s),
                (None, None) => continue,
            };
            if rule.action == RuleAction::Block {
                return Err(Refusal::VelocityBlocked {
                    rule: rule.name.clone(),
                    detail,
                });
            }
            flags.push(Flag {
                rule: rule.name.clone(),
                action: rule.action,
                detail,
            });
        }
        if usd > config.review_above_usd {
            flags.push(Flag {
                rule: "aml_large_payout".into(),
                action: RuleAction::Review,
                detail: format!("{usd} USD is above {} USD", config.review_above_usd),
            });
        }
        let review = flags.iter().any(|f| f.action == RuleAction::Review);
        let approvals_required = self.approvals_for(usd).max(i16::from(review));
        Ok(Assessment {
            breakdown,
            usd_equivalent: usd,
            flags,
            approvals_required,
        })
    }
}

/// The KYC tier's limit windows: name and length in days.
const TIER_WINDOWS: [(&str, i64); 3] = [("daily", 1), ("weekly", 7), ("monthly", 30)];

/// `new` with the terms its assessment set, and the account it is paid
/// from.
fn with_terms(mut new: NewIntent, extras: &PayoutExtras, assessment: &Assessment) -> (NewIntent, AccountKey) {
    new.terms.fees = Some(serde_json::to_value(&assessment.breakdown).expect("a breakdown serializes"));
    new.terms.quote_id = extras.quote_id;
    new.terms.usd_equivalent = Some(assessment.usd_equivalent);
    new.terms.approvals_required = assessment.approvals_required;
    new.terms.campaign_id = extras.campaign_id.clone();
    new.terms.batch_id = extras.batch_id;
    new.terms.request_id = Some(crate::providers::new_request_id(&new.provider));
    let source = payout_source(&new, extras, assessment.breakdown.source_currency);
    (new, source)
}

/// The ledger hold of payout `row`, paid from `source`.
fn payout_hold(row: &IntentRow, source: &AccountKey, breakdown: &Breakdown) -> NewTransfer {
    NewTransfer {
        key: ledger::intent_key(row.id),
        owner: row.owner.clone(),
        kind: "payout".into(),
        intent_id: Some(row.id),
        description: format!("payout {} to {}", row.id, row.provider),
        legs: payout_legs(source, &row.provider, breakdown),
    }
}

/// The account a payout is paid from: its campaign's bucket, else its
/// party's balance, in `currency`.
fn payout_source(new: &NewIntent, extras: &PayoutExtras, currency: Currency) -> AccountKey {
    match &extras.campaign_id {
        Some(campaign) => AccountKey::campaign(&new.owner, campaign, currency),
        None => AccountKey::party(&new.owner, new.party_id.as_str(), currency),
    }
}

/// The legs of a payout: the source pays what is sent; fees go to revenue;
/// what is converted crosses the FX position; the recipient's money and the
/// provider's tariff leave the provider float.
fn payout_legs(source: &AccountKey, provider: &str, b: &Breakdown) -> Vec<Leg> {
    let (from, to) = (b.source_currency, b.target_currency);
    let mut legs = vec![
        Leg::debit(source.clone(), b.sent, "sent"),
        Leg::credit(AccountKey::fees("platform", from), b.platform_fee, "platform fee"),
        Leg::credit(AccountKey::fees("fx_spread", from), b.fx_spread, "FX spread"),
        Leg::credit(AccountKey::fees("conversion", from), b.conversion_fee, "conversion fee"),
    ];
    if from != to {
        legs.push(Leg::credit(AccountKey::fx(from), b.converted_source, "converted"));
        legs.push(Leg::debit(AccountKey::fx(to), b.converted, "converted"));
    }
    legs.push(Leg::credit(
        AccountKey::float(provider, to),
        b.received + b.provider_fee,
        "paid out, with the provider's tariff",
    ));
    legs.push(Leg::credit(AccountKey::fees("rounding", to), b.rounding, "rounding"));
    legs.retain(|leg| !leg.amount.is_zero());
    legs
}
