//! What happens to a loan: created, decided, disbursed, repaid.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::schedule::{self, Allocation, Excess};
use super::{parse_reference, reference, LoansConfig, REPAYING_STATES};
use crate::config::Config;
use crate::domain::{Currency, Money, Msisdn, PartyId};
use crate::ledger::{self, AccountKey, LedgerError, Leg, Mode, NewTransfer};
use crate::policy::{AdmitError, PayoutExtras, Policy, Refusal};
use crate::store::intents::{self, IntentRow};
use crate::store::loans::{self as store, LoanRow, NewRepayment};
use crate::workflow::engine::{Applied, Cause, ChildSettled, Engine, EngineError, Event, IntentTerms, NewIntent};

type Tx<'t> = Transaction<'t, Postgres>;

/// A loan request, already validated.
#[derive(Debug, Clone)]
pub struct NewLoan {
    pub owner: String,
    pub created_by: String,
    pub borrower: PartyId,
    /// The borrower's phone: the disbursement goes there, reminders too.
    pub msisdn: Msisdn,
    pub lender: PartyId,
    pub principal: Money,
    pub installment: Decimal,
    pub interval_days: u32,
    pub grace_days: u32,
    pub excess: Excess,
    pub provider: String,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

/// Who decides on a loan: an admin key, or a product service acting for a
/// party (which must be the lender).
#[derive(Debug, Clone)]
pub struct Actor {
    /// The API key's name.
    pub name: String,
    pub admin: bool,
    /// The party the caller acts for.
    pub party: Option<String>,
}

impl Actor {
    fn label(&self) -> String {
        match &self.party {
            Some(party) => format!("{} for {party}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoanError {
    #[error("no such loan")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Refused(Refusal),
    #[error("ledger: {0}")]
    Ledger(LedgerError),
    #[error(transparent)]
    Engine(EngineError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<LedgerError> for LoanError {
    fn from(error: LedgerError) -> LoanError {
        match error {
            LedgerError::InsufficientFunds(shortfall) => LoanError::Refused(Refusal::InsufficientFunds(shortfall)),
            LedgerError::Database(e) => LoanError::Database(e),
            other => LoanError::Ledger(other),
        }
    }
}

impl From<EngineError> for LoanError {
    fn from(error: EngineError) -> LoanError {
        match error {
            EngineError::Ledger(e) => e.into(),
            EngineError::Database(e) => LoanError::Database(e),
            other => LoanError::Engine(other),
        }
    }
}

impl From<AdmitError> for LoanError {
    fn from(error: AdmitError) -> LoanError {
        match error {
            AdmitError::Refused(refusal) => LoanError::Refused(refusal),
            AdmitError::Engine(e) => e.into(),
            AdmitError::Ledger(e) => e.into(),
            AdmitError::Database(e) => LoanError::Database(e),
        }
    }
}

/// A C2B payment to route: to a loan, a borrower's balance, or suspense.
#[derive(Debug, Clone)]
pub struct C2bPayment<'a> {
    pub provider: &'a str,
    pub trans_id: &'a str,
    pub amount: Decimal,
    pub currency: Currency,
    pub bill_ref: &'a str,
}

/// Where a C2B payment went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// It repaid the loan (any excess to the borrower).
    Loan(Uuid),
    /// The loan is not repaying (closed, or not yet disbursed): all of it
    /// went to the borrower's balance.
    Borrower(Uuid),
    /// Its reference names no loan: kept in suspense.
    Suspense,
}

impl Routed {
    pub fn applied_to(&self) -> &'static str {
        match self {
            Routed::Loan(_) => "loan",
            Routed::Borrower(_) => "party",
            Routed::Suspense => "suspense",
        }
    }
}

/// Where a repayment's money comes from.
enum Funds<'a> {
    /// Straight from a provider's float (a C2B payment).
    Float { provider: &'a str },
    /// From the borrower's balance (a paid reminder, credited there by its
    /// collection).
    Balance,
}

struct Payment<'a> {
    /// What paid: `c2b:<receipt>`, `collection:<intent id>`.
    source: String,
    receipt: Option<&'a str>,
    amount: Decimal,
    funds: Funds<'a>,
    cause: Cause,
    actor: &'a str,
}

/// The loans service: shared by the API, the C2B routing and the jobs.
#[derive(Clone)]
pub struct Loans {
    engine: Engine,
    policy: Policy,
    config: Arc<Config>,
}

impl Loans {
    pub fn new(engine: Engine, policy: Policy, config: Arc<Config>) -> Loans {
        Loans { engine, policy, config }
    }

    pub fn config(&self) -> &LoansConfig {
        &self.config.loans
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether `provider` carries whole units only (every mobile money
    /// provider Tuma speaks to does).
    pub(super) fn whole_units(&self, provider: &str) -> bool {
        self.config.providers.get(provider).is_none_or(|p| p.whole_units)
    }

    fn now(&self) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let clock = self.engine.jobs().clock();
        (clock.local_now(), clock.sql_now())
    }

    /// Creates a loan in `requested`.
    pub async fn create(&self, tx: &mut Tx<'_>, new: NewLoan) -> Result<(IntentRow, LoanRow), LoanError> {
        let number = store::next_number(tx).await?;
        let intent = self
            .engine
            .create(
                tx,
                NewIntent {
                    kind: "loan".into(),
                    owner: new.owner.clone(),
                    created_by: new.created_by.clone(),
                    party_id: new.borrower.clone(),
                    amount: new.principal,
                    msisdn: new.msisdn.clone(),
                    provider: new.provider.clone(),
                    reference: reference(number),
                    metadata: new.metadata.clone(),
                    terms: IntentTerms::default(),
                },
            )
            .await?;
        let row = LoanRow {
            intent_id: intent.id,
            number,
            owner: new.owner,
            borrower_id: new.borrower.as_str().to_owned(),
            lender_id: new.lender.as_str().to_owned(),
            principal: new.principal.amount(),
            currency: new.principal.currency().code().to_owned(),
            installment_amount: new.installment,
            interval_days: new.interval_days as i32,
            grace_days: new.grace_days as i32,
            excess: new.excess.as_str().to_owned(),
            outstanding: new.principal.amount(),
            disbursement_id: None,
            activated_at: None,
            created_at: intent.created_at,
        };
        store::insert(tx, &row).await?;
        tracing::info!(loan_id = %intent.id, number, "loan requested");
        Ok((intent, row))
    }

    /// Approves (admitting the disbursement payout from the lender's
    /// balance) or rejects a requested loan. Refusals write nothing.
    pub async fn decide(
        &self,
        tx: &mut Tx<'_>,
        owner: &str,
        id: Uuid,
        decision: Decision,
        actor: &Actor,
    ) -> Result<IntentRow, LoanError> {
        let loan = store::lock(tx, id)
            .await?
            .filter(|l| l.owner == owner)
            .ok_or(LoanError::NotFound)?;
        if !actor.admin {
            match actor.party.as_deref() {
                Some(party) if party == loan.borrower_id => {
                    return Err(LoanError::NotAllowed(
                        "the borrower cannot approve or reject their own loan".into(),
                    ))
                }
                Some(party) if party == loan.lender_id => {}
                _ => {
                    return Err(LoanError::NotAllowed(format!(
                        "only the loan's lender ({}) or an admin may decide on it; say whom you act for with `acting_party`",
                        loan.lender_id
                    )))
                }
            }
        }
        let intent = intents::get(tx, id).await?.ok_or(LoanError::NotFound)?;
        if intent.state != "requested" {
            return Err(LoanError::Conflict(format!(
                "the loan is {}; only a requested loan can be approved or rejected",
                intent.state
            )));
        }
        let label = actor.label();
        match decision {
            Decision::Reject => self.step(tx, id, "reject", Cause::Api, &label).await?,
            Decision::Approve => {
                self.step(tx, id, "approve", Cause::Api, &label).await?;
                let currency = Currency::from_stored(&loan.currency);
                let payout = NewIntent {
                    kind: "payout".into(),
                    owner: loan.owner.clone(),
                    created_by: intent.created_by.clone(),
                    party_id: PartyId::parse(&loan.lender_id).map_err(LoanError::Conflict)?,
                    amount: Money::new(loan.principal, currency).map_err(|e| LoanError::Conflict(e.to_string()))?,
                    msisdn: stored_msisdn(&intent.msisdn)?,
                    provider: intent.provider.clone(),
                    reference: intent.reference.clone(),
                    metadata: json!({ "loan_id": id, "purpose": "loan_disbursement" }),
                    terms: IntentTerms {
                        parent_id: Some(id),
                        ..IntentTerms::default()
                    },
                };
                let payout = self
                    .policy
                    .admit_payout(&self.engine, tx, payout, PayoutExtras::default())
                    .await?;
                store::set_disbursement(tx, id, payout.id).await?;
                self.step(tx, id, "disburse", Cause::Api, &label).await?;
            }
        }
        intents::get(tx, id).await?.ok_or(LoanError::NotFound)
    }

    /// A child of a loan ended: the disbursement (activate the loan, or
    /// mark it failed) or a paid reminder (repay from the borrower's
    /// balance). Runs in the caller's transaction; doing it twice does
    /// nothing more.
    pub async fn child_settled(&self, tx: &mut Tx<'_>, settled: &ChildSettled) -> Result<(), LoanError> {
        let Some(loan) = store::lock(tx, settled.parent_id).await? else {
            return Ok(());
        };
        let Some(child) = intents::get(tx, settled.child_id).await? else {
            return Ok(());
        };
        let Some(intent) = intents::get(tx, loan.intent_id).await? else {
            return Ok(());
        };
        let (now, sql_now) = self.now();
        if loan.disbursement_id == Some(child.id) {
            if intent.state != "disbursing" {
                return Ok(());
            }
            if settled.state != "completed" {
                return self
                    .step(tx, loan.intent_id, "disbursement_failed", Cause::Policy, "engine")
                    .await;
            }
            let currency = Currency::from_stored(&loan.currency);
            let loan_ref = reference(loan.number);
            ledger::record(
                tx,
                &NewTransfer {
                    key: format!("loan:{}:disbursed", loan.intent_id),
                    owner: loan.owner.clone(),
                    kind: "loan_disbursement".into(),
                    intent_id: Some(loan.intent_id),
                    description: format!("{loan_ref} disbursed by payout {}", child.id),
                    legs: vec![
                        Leg::debit(
                            AccountKey::receivable(&loan.owner, &loan_ref, currency),
                            loan.principal,
                            "owed by the borrower",
                        ),
                        Leg::credit(
                            AccountKey::lent(&loan.owner, &loan_ref, currency),
                            loan.principal,
                            "owed to the lender as it is repaid",
                        ),
                    ],
                },
                Mode::Post,
                sql_now,
            )
            .await?;
            let plan = schedule::plan(loan.principal, loan.installment_amount, loan.interval_days as u32, now);
            store::activate(tx, loan.intent_id, now, &plan).await?;
            return self
                .step(tx, loan.intent_id, "disbursed", Cause::Policy, "engine")
                .await;
        }
        if child.kind == "reversal" && settled.state == "completed" {
            if let Some(source) = child.metadata["repayment_source"].as_str() {
                self.reverse_repayment(tx, &loan, &intent.state, source, child.id)
                    .await?;
            }
            return Ok(());
        }
        if child.kind == "collection" && settled.state == "completed" {
            let payment = Payment {
                source: format!("collection:{}", child.id),
                receipt: child.receipt.as_deref(),
                amount: child.amount,
                funds: Funds::Balance,
                cause: Cause::Callback,
                actor: "engine",
            };
            self.apply_payment(tx, &loan, &intent.state, &payment, now, sql_now)
                .await?;
        }
        Ok(())
    }

    /// Routes a C2B payment (recorded once per receipt by the caller, in
    /// this transaction): a `LOAN-<n>` reference repays that loan, anything
    /// else goes to suspense.
    pub async fn route_c2b(&self, tx: &mut Tx<'_>, payment: &C2bPayment<'_>) -> Result<Routed, LoanError> {
        let (now, sql_now) = self.now();
        if let Some(number) = parse_reference(payment.bill_ref) {
            if let Some(loan) = store::lock_by_number(tx, number).await? {
                if loan.currency == payment.currency.code() {
                    let intent = intents::get(tx, loan.intent_id).await?.ok_or(LoanError::NotFound)?;
                    let repaying = REPAYING_STATES.contains(&intent.state.as_str());
                    let source = format!("c2b:{}", payment.trans_id);
                    let paid = Payment {
                        source: source.clone(),
                        receipt: Some(payment.trans_id),
                        amount: payment.amount,
                        funds: Funds::Float {
                            provider: payment.provider,
                        },
                        cause: Cause::Callback,
                        actor: payment.provider,
                    };
                    let key = self
                        .apply_payment(tx, &loan, &intent.state, &paid, now, sql_now)
                        .await?
                        .unwrap_or_else(|| repayment_key(&source));
                    let routed = if repaying {
                        Routed::Loan(loan.intent_id)
                    } else {
                        Routed::Borrower(loan.intent_id)
                    };
                    store::route_c2b(
                        tx,
                        payment.trans_id,
                        routed.applied_to(),
                        Some(loan.intent_id),
                        Some(&loan.owner),
                        &key,
                    )
                    .await?;
                    return Ok(routed);
                }
            }
        }
        self.to_suspense(tx, payment).await
    }

    /// Keeps a C2B payment in suspense: the float received it, nobody's
    /// balance has it yet; reconciliation lists it for a person.
    pub async fn to_suspense(&self, tx: &mut Tx<'_>, payment: &C2bPayment<'_>) -> Result<Routed, LoanError> {
        let (_, sql_now) = self.now();
        let key = format!("c2b:{}", payment.trans_id);
        ledger::record(
            tx,
            &NewTransfer {
                key: key.clone(),
                owner: ledger::SYSTEM.into(),
                kind: "suspense".into(),
                intent_id: None,
                description: format!("C2B {} matched nothing", payment.trans_id),
                legs: vec![
                    Leg::debit(
                        AccountKey::float(payment.provider, payment.currency),
                        payment.amount,
                        "received",
                    ),
                    Leg::credit(
                        AccountKey::suspense(payment.currency),
                        payment.amount,
                        "unmatched reference",
                    ),
                ],
            },
            Mode::Post,
            sql_now,
        )
        .await?;
        store::route_c2b(tx, payment.trans_id, "suspense", None, None, &key).await?;
        tracing::warn!(
            trans_id = payment.trans_id,
            "C2B payment matched no loan; kept in suspense"
        );
        Ok(Routed::Suspense)
    }

    /// Applies one payment to `loan` (locked by the caller): records the
    /// repayment, its transfer, the installments, and the transition.
    /// Returns the transfer's key, or `None` when this payment was already
    /// applied or left nothing to apply.
    async fn apply_payment(
        &self,
        tx: &mut Tx<'_>,
        loan: &LoanRow,
        state: &str,
        payment: &Payment<'_>,
        now: DateTime<Utc>,
        sql_now: Option<DateTime<Utc>>,
    ) -> Result<Option<String>, LoanError> {
        if store::repayment_exists(tx, &payment.source).await? {
            return Ok(None);
        }
        let currency = Currency::from_stored(&loan.currency);
        let loan_ref = reference(loan.number);
        let borrower = AccountKey::party(&loan.owner, &loan.borrower_id, currency);
        let lender = AccountKey::party(&loan.owner, &loan.lender_id, currency);
        let installments = store::installments(tx, loan.intent_id).await?;
        let repaying = REPAYING_STATES.contains(&state);
        let rule = Excess::parse(&loan.excess).unwrap_or(self.config().excess);
        let usable = match payment.funds {
            Funds::Float { .. } => payment.amount,
            // The collection credited the borrower; they may have spent
            // some of it since.
            Funds::Balance => payment.amount.min(ledger::available_of(tx, &borrower).await?),
        };
        let allocation = if repaying {
            schedule::allocate(&installments, usable, now, rule)
        } else {
            Allocation {
                applied: Decimal::ZERO,
                excess: usable,
                paid: Vec::new(),
            }
        };
        let mut legs = Vec::new();
        if let Funds::Float { provider } = payment.funds {
            legs.push(Leg::debit(
                AccountKey::float(provider, currency),
                payment.amount,
                "received",
            ));
            if allocation.excess > Decimal::ZERO {
                legs.push(Leg::credit(borrower.clone(), allocation.excess, "beyond what was due"));
            }
        } else if allocation.applied > Decimal::ZERO {
            legs.push(Leg::debit(borrower.clone(), allocation.applied, "repayment"));
        }
        if allocation.applied > Decimal::ZERO {
            legs.extend([
                Leg::credit(
                    AccountKey::receivable(&loan.owner, &loan_ref, currency),
                    allocation.applied,
                    "repaid",
                ),
                Leg::debit(
                    AccountKey::lent(&loan.owner, &loan_ref, currency),
                    allocation.applied,
                    "repaid",
                ),
                Leg::credit(lender.clone(), allocation.applied, "repayment"),
            ]);
        }
        if legs.is_empty() {
            return Ok(None);
        }
        let key = repayment_key(&payment.source);
        let recorded = ledger::record(
            tx,
            &NewTransfer {
                key: key.clone(),
                owner: loan.owner.clone(),
                kind: "loan_repayment".into(),
                intent_id: Some(loan.intent_id),
                description: format!("{loan_ref} repayment from {}", payment.source),
                legs,
            },
            Mode::Post,
            sql_now,
        )
        .await?;
        if matches!(recorded, ledger::Recorded::New { .. }) {
            // Credited parties are treated as any credit treats them: the
            // lender's repayment, and the borrower's excess paid in from
            // the float, may each cross an auto-payout threshold.
            let (jobs, tier) = (self.engine.jobs(), self.policy.default_tier());
            crate::policy::after_party_credit(tx, jobs, &lender, allocation.applied, &key, tier).await?;
            if matches!(payment.funds, Funds::Float { .. }) {
                let trigger = format!("{key}:excess");
                crate::policy::after_party_credit(tx, jobs, &borrower, allocation.excess, &trigger, tier).await?;
            }
        }
        let outstanding = loan.outstanding - allocation.applied;
        store::insert_repayment(
            tx,
            &NewRepayment {
                loan_id: loan.intent_id,
                source: &payment.source,
                receipt: payment.receipt,
                paid_in: payment.amount,
                applied: allocation.applied,
                excess: allocation.excess,
                outstanding_after: outstanding,
                transfer_key: &key,
                at: now,
            },
        )
        .await?;
        store::set_paid(tx, loan.intent_id, &allocation.paid, outstanding).await?;
        tracing::info!(
            loan_id = %loan.intent_id,
            applied = %allocation.applied,
            excess = %allocation.excess,
            %outstanding,
            "loan repayment applied"
        );
        if allocation.applied > Decimal::ZERO {
            let event = if outstanding.is_zero() {
                Some("repaid")
            } else if state == "overdue" {
                let after = schedule::with_paid(&installments, &allocation.paid);
                Some(if schedule::in_arrears(&after, now, self.overdue_after()) {
                    "repayment_received"
                } else {
                    "caught_up"
                })
            } else if state == "active" {
                Some("repayment_received")
            } else {
                None
            };
            if let Some(event) = event {
                self.step(tx, loan.intent_id, event, payment.cause, payment.actor)
                    .await?;
            }
        }
        Ok(Some(key))
    }

    /// A reversal of the repayment made by `source` completed (its ledger
    /// transfer already posted): the loan's balance and installments take
    /// the repaid amount back, and a repaid loan reopens.
    async fn reverse_repayment(
        &self,
        tx: &mut Tx<'_>,
        loan: &LoanRow,
        state: &str,
        source: &str,
        reversal: Uuid,
    ) -> Result<(), LoanError> {
        let Some(repayment) = store::lock_repayment(tx, source).await? else {
            return Ok(());
        };
        if repayment.reversed_by.is_some() {
            return Ok(());
        }
        store::mark_repayment_reversed(tx, repayment.id, reversal).await?;
        if let Some(receipt) = source.strip_prefix("c2b:") {
            crate::store::c2b::set_reversed(tx, receipt, reversal).await?;
        }
        if repayment.applied.is_zero() {
            return Ok(());
        }
        let installments = store::installments(tx, loan.intent_id).await?;
        let paid = schedule::unallocate(&installments, repayment.applied);
        let outstanding = loan.outstanding + repayment.applied;
        store::set_paid(tx, loan.intent_id, &paid, outstanding).await?;
        tracing::info!(loan_id = %loan.intent_id, %outstanding, %reversal, "loan repayment reversed");
        let event = match state {
            "repaid" => Some("reopened"),
            "active" | "overdue" => Some("repayment_reversed"),
            _ => None,
        };
        let Some(event) = event else {
            return Ok(());
        };
        self.step(tx, loan.intent_id, event, Cause::Callback, "engine").await?;
        // Reopened or reduced, a loan whose unpaid installments are already
        // past due is overdue at once, not at the next sweep.
        let after = schedule::with_paid(&installments, &paid);
        let now = self.now().0;
        if state != "overdue" && schedule::in_arrears(&after, now, self.overdue_after()) {
            self.step(tx, loan.intent_id, "fell_overdue", Cause::Callback, "engine")
                .await?;
        }
        Ok(())
    }

    pub(super) fn overdue_after(&self) -> Duration {
        Duration::seconds(self.config().overdue_after_s.min(i64::MAX as u64) as i64)
    }

    /// Applies `event` to loan `id`; a refusal is a conflict.
    pub(super) async fn step(
        &self,
        tx: &mut Tx<'_>,
        id: Uuid,
        event: &str,
        cause: Cause,
        actor: &str,
    ) -> Result<(), LoanError> {
        match self.engine.apply(tx, id, &Event::new(event, cause, actor)).await? {
            Applied::Moved { .. } => Ok(()),
            Applied::Rejected { reason, .. } => Err(LoanError::Conflict(reason)),
            Applied::Lost { expected } => Err(LoanError::Conflict(format!(
                "the loan left {expected} while {event} was applied"
            ))),
        }
    }
}

/// The key of the transfer a repayment from `source` records.
fn repayment_key(source: &str) -> String {
    format!("repayment:{source}")
}

/// A number as stored on an intent (international digits).
pub(super) fn stored_msisdn(digits: &str) -> Result<Msisdn, LoanError> {
    Msisdn::try_from(digits.to_owned()).map_err(|e| LoanError::Conflict(e.to_string()))
}
