//! The double-entry ledger.
//!
//! Money is kept in accounts (a party's balance, a campaign's bucket, a
//! provider float, fee revenue, the FX position, loan receivables,
//! suspense) and moved by transfers whose legs sum to zero per currency.
//! A transfer is either recorded *pending* (a hold: the money is reserved
//! on the accounts it leaves, not yet moved) and later *posted* or *voided*,
//! or posted at once. Every transfer has an idempotency key: recording the
//! same transfer twice is a no-op, recording it again with other legs is an
//! error naming the difference.
//!
//! Accounts that must never go below zero (party balances, campaign
//! buckets, receivables) keep running totals on their row, checked by the
//! very `UPDATE` that holds or spends, so concurrent payouts serialize on
//! the row and cannot overdraw it; a CHECK constraint is the backstop.
//! System accounts (floats, fees, FX, suspense, funding) are touched by
//! every intent; they keep no running total, so they are never a lock that
//! all payouts queue on, and their balances are summed from the entries.
//!
//! Everything here runs inside the caller's transaction, next to the state
//! transition it belongs to. An `Err` leaves the transaction half-written:
//! the caller must roll it back (dropping it does).

mod store;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Currency;

#[doc(hidden)]
pub use store::WRITE_TRANSFERS;
pub use store::{available_of, balances_of, check_invariants, entries, find_account, AccountBalance, EntryRow};

/// The legs that undo the posted transfer `key` (each of its legs with the
/// sign turned); `None` when no such transfer is posted.
pub async fn undoing_legs(conn: &mut PgConnection, key: &str, memo: &str) -> Result<Option<Vec<Leg>>, LedgerError> {
    let legs = legs_if(conn, key, "posted").await?;
    Ok(legs.map(|legs| {
        legs.into_iter()
            .map(|(account, amount, _)| Leg {
                account,
                amount: -amount,
                memo: memo.to_owned(),
            })
            .collect()
    }))
}

/// The legs of the voided transfer `key` as they were held, to be posted
/// again by a transfer of their own (money a provider moved after its
/// intent had given it up); `None` when no such transfer is voided.
pub async fn voided_legs(conn: &mut PgConnection, key: &str) -> Result<Option<Vec<Leg>>, LedgerError> {
    let legs = legs_if(conn, key, "voided").await?;
    Ok(legs.map(|legs| {
        legs.into_iter()
            .map(|(account, amount, memo)| Leg { account, amount, memo })
            .collect()
    }))
}

/// Transfer `key`'s legs, if it exists and is in `state`.
async fn legs_if(
    conn: &mut PgConnection,
    key: &str,
    state: &str,
) -> Result<Option<Vec<(AccountKey, Decimal, String)>>, LedgerError> {
    Ok(store::transfer_legs(conn, key)
        .await?
        .and_then(|(found, legs)| (found == state).then_some(legs)))
}

/// The owner of accounts that belong to the platform, not to one tenant.
pub const SYSTEM: &str = "";

/// What an account is for; decides its normal side and whether it may go
/// below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// What Tuma owes a party (earnings wallet, employer funds).
    Party,
    /// A campaign's bucket in one currency.
    Campaign,
    /// Money lent and not yet repaid: what a borrower owes (one per loan).
    Receivable,
    /// The lender's side of a loan: what Tuma will pay the lender's balance
    /// as the loan is repaid (one per loan, equal to its receivable).
    Lent,
    /// Money held at a provider (its ref is the provider).
    Float,
    /// Fee revenue (ref: platform, conversion, rounding).
    Fees,
    /// The FX desk's position per currency.
    Fx,
    /// Money that matched nothing, waiting for a person.
    Suspense,
    /// Where an owner's credits come from: its own books.
    Funding,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Party => "party",
            AccountKind::Campaign => "campaign",
            AccountKind::Receivable => "receivable",
            AccountKind::Lent => "lent",
            AccountKind::Float => "float",
            AccountKind::Fees => "fees",
            AccountKind::Fx => "fx",
            AccountKind::Suspense => "suspense",
            AccountKind::Funding => "funding",
        }
    }

    pub fn parse(text: &str) -> Option<AccountKind> {
        [
            AccountKind::Party,
            AccountKind::Campaign,
            AccountKind::Receivable,
            AccountKind::Lent,
            AccountKind::Float,
            AccountKind::Fees,
            AccountKind::Fx,
            AccountKind::Suspense,
            AccountKind::Funding,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }

    /// Debit-normal accounts are what Tuma holds (assets); credit-normal
    /// ones what it owes or earned.
    pub fn normal_side(self) -> Side {
        match self {
            AccountKind::Receivable | AccountKind::Float | AccountKind::Funding => Side::Debit,
            _ => Side::Credit,
        }
    }

    /// Accounts that can never go below zero, and so keep running totals.
    pub fn non_negative(self) -> bool {
        matches!(
            self,
            AccountKind::Party | AccountKind::Campaign | AccountKind::Receivable | AccountKind::Lent
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Debit => "debit",
            Side::Credit => "credit",
        }
    }
}

/// Names an account: whose, what kind, which one, in what currency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountKey {
    pub owner: String,
    pub kind: AccountKind,
    pub reference: String,
    pub currency: Currency,
}

impl AccountKey {
    pub fn party(owner: &str, party: &str, currency: Currency) -> AccountKey {
        AccountKey::new(owner, AccountKind::Party, party, currency)
    }

    pub fn campaign(owner: &str, campaign: &str, currency: Currency) -> AccountKey {
        AccountKey::new(owner, AccountKind::Campaign, campaign, currency)
    }

    /// What the borrower of loan `loan` (its reference) still owes.
    pub fn receivable(owner: &str, loan: &str, currency: Currency) -> AccountKey {
        AccountKey::new(owner, AccountKind::Receivable, loan, currency)
    }

    /// What loan `loan` will still pay its lender.
    pub fn lent(owner: &str, loan: &str, currency: Currency) -> AccountKey {
        AccountKey::new(owner, AccountKind::Lent, loan, currency)
    }

    pub fn funding(owner: &str, currency: Currency) -> AccountKey {
        AccountKey::new(owner, AccountKind::Funding, "deposits", currency)
    }

    pub fn float(provider: &str, currency: Currency) -> AccountKey {
        AccountKey::new(SYSTEM, AccountKind::Float, provider, currency)
    }

    pub fn fees(which: &str, currency: Currency) -> AccountKey {
        AccountKey::new(SYSTEM, AccountKind::Fees, which, currency)
    }

    pub fn fx(currency: Currency) -> AccountKey {
        AccountKey::new(SYSTEM, AccountKind::Fx, "position", currency)
    }

    pub fn suspense(currency: Currency) -> AccountKey {
        AccountKey::new(SYSTEM, AccountKind::Suspense, "unmatched", currency)
    }

    pub fn new(owner: &str, kind: AccountKind, reference: &str, currency: Currency) -> AccountKey {
        AccountKey {
            owner: owner.to_owned(),
            kind,
            reference: reference.to_owned(),
            currency,
        }
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.owner.is_empty() {
            write!(f, "{}:{}:{}", self.kind.as_str(), self.reference, self.currency)
        } else {
            write!(
                f,
                "{}:{}:{}:{}",
                self.owner,
                self.kind.as_str(),
                self.reference,
                self.currency
            )
        }
    }
}

/// One leg: `amount` credits the account when positive, debits it when
/// negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub account: AccountKey,
    pub amount: Decimal,
    pub memo: String,
}

impl Leg {
    pub fn debit(account: AccountKey, amount: Decimal, memo: &str) -> Leg {
        Leg {
            account,
            amount: -amount,
            memo: memo.to_owned(),
        }
    }

    pub fn credit(account: AccountKey, amount: Decimal, memo: &str) -> Leg {
        Leg {
            account,
            amount,
            memo: memo.to_owned(),
        }
    }

    /// The change to the account's balance on its normal side.
    fn normal_delta(&self) -> Decimal {
        match self.account.kind.normal_side() {
            Side::Credit => self.amount,
            Side::Debit => -self.amount,
        }
    }
}

/// A transfer to record.
#[derive(Debug, Clone)]
pub struct NewTransfer {
    /// Idempotency key; an intent's own transfer is [`intent_key`].
    pub key: String,
    pub owner: String,
    /// What it is for: payout, collection, credit, repayment, reversal…
    pub kind: String,
    pub intent_id: Option<Uuid>,
    pub description: String,
    pub legs: Vec<Leg>,
}

/// The key of an intent's own transfer.
pub fn intent_key(intent_id: Uuid) -> String {
    format!("intent:{intent_id}")
}

/// A transfer key made of `parts` joined by `:`, each part with its `%` and
/// `:` escaped (`%25`, `%3A`), so that no two lists of parts make the same
/// key: party `a:b` with reference `c` and party `a` with reference `b:c`
/// are two credits, not one. A part with neither character is kept as it
/// is, so keys whose parts hold neither read as they always did.
pub fn joined_key(parts: &[&str]) -> String {
    let mut key = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(':');
        }
        for c in part.chars() {
            match c {
                '%' => key.push_str("%25"),
                ':' => key.push_str("%3A"),
                c => key.push(c),
            }
        }
    }
    key
}

/// How a new transfer is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reserve the money on the accounts it leaves; settle later.
    Hold,
    /// Move it now.
    Post,
}

/// How a pending transfer is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Post,
    Void,
}

impl Settle {
    fn state(self) -> &'static str {
        match self {
            Settle::Post => "posted",
            Settle::Void => "voided",
        }
    }
}

/// What recording did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Written now.
    New { transfer_id: Uuid },
    /// The same transfer was already recorded; nothing written.
    Already { transfer_id: Uuid, state: String },
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("transfer {key} does not balance: its {currency} legs sum to {sum}")]
    Unbalanced {
        key: String,
        currency: Currency,
        sum: Decimal,
    },
    #[error("transfer {key} has a zero leg on {account}")]
    ZeroLeg { key: String, account: String },
    #[error(transparent)]
    InsufficientFunds(Shortfall),
    #[error("transfer {key} was already recorded differently: {difference}")]
    Mismatch { key: String, difference: String },
    #[error("transfer {key} is {state} and cannot be {wanted}")]
    AlreadySettled {
        key: String,
        state: String,
        wanted: &'static str,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A non-negative account that cannot cover what a transfer takes from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("insufficient funds in {account}: {available} {currency} available, {needed} {currency} needed")]
pub struct Shortfall {
    pub account: String,
    pub currency: Currency,
    pub available: Decimal,
    pub needed: Decimal,
}

/// Checks that `legs` balance per currency and have no zero leg.
pub fn check_balanced(key: &str, legs: &[Leg]) -> Result<(), LedgerError> {
    let mut sums: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for leg in legs {
        if leg.amount.is_zero() {
            return Err(LedgerError::ZeroLeg {
                key: key.to_owned(),
                account: leg.account.to_string(),
            });
        }
        *sums.entry(leg.account.currency).or_default() += leg.amount;
    }
    match sums.into_iter().find(|(_, sum)| !sum.is_zero()) {
        Some((currency, sum)) => Err(LedgerError::Unbalanced {
            key: key.to_owned(),
            currency,
            sum,
        }),
        None => Ok(()),
    }
}

/// Records `transfer` (pending or posted, per `mode`) in the caller's
/// transaction. Idempotent on its key. On an error (insufficient funds
/// among them) part of it may be written: the caller rolls back.
pub async fn record(
    conn: &mut PgConnection,
    transfer: &NewTransfer,
    mode: Mode,
    now: Option<DateTime<Utc>>,
) -> Result<Recorded, LedgerError> {
    let plan = Plan::of(std::slice::from_ref(transfer), mode)?;
    match plan.write(conn, now).await? {
        store::Written::KeyTaken => already_recorded(conn, transfer).await,
        store::Written::Inserted { refused } => match refused.first() {
            None => Ok(Recorded::New {
                transfer_id: plan.ids[0],
            }),
            Some(&i) => Err(plan.shortfall(conn, i).await),
        },
    }
}

/// Holds many new transfers (each [`record`]ed with [`Mode::Hold`]) in the
/// caller's transaction with one statement, all or nothing: an error (a
/// key already used, an account that cannot cover its share, which the
/// caller should have ruled out under the accounts' locks) means the
/// caller must roll back.
pub async fn hold_many(
    conn: &mut PgConnection,
    transfers: &[NewTransfer],
    now: Option<DateTime<Utc>>,
) -> Result<(), LedgerError> {
    if transfers.is_empty() {
        return Ok(());
    }
    let plan = Plan::of(transfers, Mode::Hold)?;
    match plan.write(conn, now).await? {
        store::Written::Inserted { refused } => match refused.first() {
            None => Ok(()),
            Some(&i) => Err(plan.shortfall(conn, i).await),
        },
        store::Written::KeyTaken => Err(LedgerError::Mismatch {
            key: transfers.iter().map(|t| t.key.as_str()).collect::<Vec<_>>().join(", "),
            difference: "one of these keys was already recorded".into(),
        }),
    }
}

/// What writing some transfers together takes: their accounts (sorted,
/// without repeats), every leg with its transfer's new id and its
/// account's index, and what they change on the non-negative accounts.
struct Plan<'t> {
    transfers: &'t [NewTransfer],
    /// A new id per transfer, in order.
    ids: Vec<Uuid>,
    state: &'static str,
    accounts: Vec<&'t AccountKey>,
    legs: Vec<(Uuid, usize, &'t Leg)>,
    /// The net change, in the account's normal direction, of every
    /// non-negative account that changes (by index).
    deltas: BTreeMap<usize, Decimal>,
    totals: Vec<store::Totals>,
}

impl<'t> Plan<'t> {
    fn of(transfers: &'t [NewTransfer], mode: Mode) -> Result<Plan<'t>, LedgerError> {
        for transfer in transfers {
            check_balanced(&transfer.key, &transfer.legs)?;
        }
        let mut accounts: Vec<&AccountKey> = transfers
            .iter()
            .flat_map(|t| t.legs.iter().map(|l| &l.account))
            .collect();
        accounts.sort();
        accounts.dedup();
        let at = |key: &AccountKey| accounts.binary_search(&key).expect("every leg's account is listed");
        let ids: Vec<Uuid> = transfers.iter().map(|_| Uuid::now_v7()).collect();
        let mut legs = Vec::new();
        let mut deltas: BTreeMap<usize, Decimal> = BTreeMap::new();
        for (transfer, &id) in transfers.iter().zip(&ids) {
            for leg in &transfer.legs {
                let account = at(&leg.account);
                legs.push((id, account, leg));
                if leg.account.kind.non_negative() {
                    *deltas.entry(account).or_default() += leg.normal_delta();
                }
            }
        }
        deltas.retain(|_, delta| !delta.is_zero());
        // A hold reserves what leaves an account (pending out) and promises
        // what arrives (pending in); a posting moves both at once.
        let totals = deltas
            .iter()
            .map(|(&account, &delta)| match mode {
                Mode::Post => store::Totals {
                    account,
                    posted: delta,
                    pending_out: Decimal::ZERO,
                    pending_in: Decimal::ZERO,
                },
                Mode::Hold => store::Totals {
                    account,
                    posted: Decimal::ZERO,
                    pending_out: (-delta).max(Decimal::ZERO),
                    pending_in: delta.max(Decimal::ZERO),
                },
            })
            .collect();
        let state = match mode {
            Mode::Hold => "pending",
            Mode::Post => "posted",
        };
        Ok(Plan {
            transfers,
            ids,
            state,
            accounts,
            legs,
            deltas,
            totals,
        })
    }

    /// Writes the transfers with one statement. Accounts are made once and
    /// used ever after: it writes as if they exist, and creates them only
    /// when the statement says some do not.
    async fn write(&self, conn: &mut PgConnection, now: Option<DateTime<Utc>>) -> Result<store::Written, LedgerError> {
        let rows = store::Rows {
            ids: &self.ids,
            transfers: self.transfers,
            state: self.state,
            accounts: &self.accounts,
            legs: &self.legs,
            totals: &self.totals,
        };
        if let Some(written) = store::write_transfers(conn, &rows, now).await? {
            return Ok(written);
        }
        store::create_accounts(conn, &self.accounts).await?;
        store::write_transfers(conn, &rows, now)
            .await?
            .ok_or(LedgerError::Database(sqlx::Error::RowNotFound))
    }

    /// The error for the account at index `i`, which could not cover what
    /// the transfers take from it.
    async fn shortfall(&self, conn: &mut PgConnection, i: usize) -> LedgerError {
        let key = self.accounts[i];
        match store::available_of(conn, key).await {
            Ok(available) => LedgerError::InsufficientFunds(Shortfall {
                account: key.to_string(),
                currency: key.currency,
                available,
                needed: -self.deltas[&i],
            }),
            Err(error) => LedgerError::Database(error),
        }
    }
}

/// The same key again: a no-op if the legs are the same, else an error that
/// says what differs.
async fn already_recorded(conn: &mut PgConnection, transfer: &NewTransfer) -> Result<Recorded, LedgerError> {
    let (transfer_id, state, recorded) = store::legs_of(conn, &transfer.key).await?;
    let mut sums: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for (account, amount) in &recorded {
        sums.entry(account.clone()).or_default().0 += *amount;
    }
    for leg in &transfer.legs {
        sums.entry(leg.account.to_string()).or_default().1 += leg.amount;
    }
    let differences: Vec<String> = sums
        .iter()
        .filter(|(_, (was, now))| was != now)
        .map(|(account, (was, now))| format!("{account} was {was:+}, now {now:+}"))
        .collect();
    if differences.is_empty() {
        Ok(Recorded::Already { transfer_id, state })
    } else {
        Err(LedgerError::Mismatch {
            key: transfer.key.clone(),
            difference: differences.join("; "),
        })
    }
}

/// Posts or voids the pending transfer `key`. `Ok(false)` when there is no
/// such transfer; settling it again the same way is a no-op (`Ok(true)`).
pub async fn settle(
    conn: &mut PgConnection,
    key: &str,
    how: Settle,
    now: Option<DateTime<Utc>>,
) -> Result<bool, LedgerError> {
    let Some(state) = store::settle_transfer(conn, key, how.state(), now).await? else {
        return Ok(false);
    };
    if state == how.state() || state == "pending" {
        return Ok(true);
    }
    Err(LedgerError::AlreadySettled {
        key: key.to_owned(),
        state,
        wanted: how.state(),
    })
}

/// [`settle`] for many transfers with one statement: `Ok(true)` per
/// transfer settled now or before to the same end, `Ok(false)` per key
/// with no transfer; an error if any was already settled the other way
/// (the caller rolls back).
pub async fn settle_many(
    conn: &mut PgConnection,
    wanted: &[(String, Settle)],
    now: Option<DateTime<Utc>>,
) -> Result<Vec<bool>, LedgerError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // One statement settles each row once but would count a key given
    // twice twice: callers settle each transfer at most once per call.
    let keys: std::collections::HashSet<&str> = wanted.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys.len(), wanted.len(), "a transfer settled twice in one call");
    let pairs: Vec<(&str, &str)> = wanted.iter().map(|(key, how)| (key.as_str(), how.state())).collect();
    let states = store::settle_transfers(conn, &pairs, now).await?;
    wanted
        .iter()
        .zip(states)
        .map(|((key, how), state)| match state {
            None => Ok(false),
            Some(state) if state == how.state() || state == "pending" => Ok(true),
            Some(state) => Err(LedgerError::AlreadySettled {
                key: key.clone(),
                state,
                wanted: how.state(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(kind: AccountKind, amount: &str, currency: Currency) -> Leg {
        Leg {
            account: AccountKey::new("o", kind, "r", currency),
            amount: amount.parse().unwrap(),
            memo: String::new(),
        }
    }

    #[test]
    fn joined_keys_keep_their_parts_apart() {
        assert_eq!(
            joined_key(&["credit", "o", "zawadi", "sale-7"]),
            "credit:o:zawadi:sale-7"
        );
        let a = joined_key(&["credit", "o", "a:b", "c"]);
        let b = joined_key(&["credit", "o", "a", "b:c"]);
        assert_ne!(a, b);
        assert_eq!(a, "credit:o:a%3Ab:c");
        // An escape written by hand is not an escaped colon.
        assert_ne!(joined_key(&["credit", "o", "a%3Ab", "c"]), a);
    }

    #[test]
    fn legs_must_balance_per_currency() {
        let balanced = [
            leg(AccountKind::Party, "-50", Currency::USD),
            leg(AccountKind::Fx, "50", Currency::USD),
            leg(AccountKind::Fx, "-6500", Currency::KES),
            leg(AccountKind::Float, "6500", Currency::KES),
        ];
        assert!(check_balanced("t", &balanced).is_ok());
        let crossed = [
            leg(AccountKind::Party, "-50", Currency::USD),
            leg(AccountKind::Float, "50", Currency::KES),
        ];
        let error = check_balanced("t", &crossed).unwrap_err().to_string();
        assert!(error.contains("KES legs sum to 50"), "{error}");
        assert!(check_balanced("t", &[leg(AccountKind::Party, "0", Currency::KES)]).is_err());
    }

    #[test]
    fn normal_sides_follow_what_the_account_is() {
        let payout_leg = Leg::credit(AccountKey::float("mpesa", Currency::KES), Decimal::from(100), "");
        assert_eq!(
            payout_leg.normal_delta(),
            Decimal::from(-100),
            "a payout lowers the float"
        );
        let earning = Leg::credit(AccountKey::party("o", "p", Currency::KES), Decimal::from(100), "");
        assert_eq!(
            earning.normal_delta(),
            Decimal::from(100),
            "a credit raises a party balance"
        );
    }
}
