//! The B2C float gate: a payout is released only when a recent balance
//! report, less what was released since, covers it. Otherwise it stays
//! `pending` with a reason, and a fresh report is asked for.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};

use super::{balance_token, MpesaClient, MpesaConfig};
use crate::runner::{JobArgs, JobClient, JobContext, JobError, NewJob, Worker};
use crate::store::floats;

/// Job arguments: ask Daraja for the account balances.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryBalance {}

impl JobArgs for QueryBalance {
    const KIND: &'static str = "mpesa.query_balance";
}

pub struct QueryBalanceWorker {
    pub client: Arc<MpesaClient>,
}

impl Worker for QueryBalanceWorker {
    type Args = QueryBalance;

    async fn work(&self, _ctx: JobContext, _args: QueryBalance) -> Result<(), JobError> {
        let config = self.client.config();
        let token = balance_token(config);
        self.client
            .account_balance(
                &super::callback_url(config, "balance-result", &token),
                &super::callback_url(config, "balance-timeout", &token),
            )
            .await
            .map_err(JobError::retryable)
    }
}

/// Asks for a fresh report, once: while one request is queued or running,
/// more asks join it.
pub async fn request_report(jobs: &JobClient, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    jobs.enqueue(tx, &NewJob::new(&QueryBalance {}).unique_key("mpesa.query_balance"))
        .await?;
    Ok(())
}

/// How far before a float report a release may be stamped and still not
/// be reflected in it (a release's time is its transaction's start).
const REPORT_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Release,
    /// Hold, for this reason (shown to API clients).
    Hold(String),
}

/// Decides whether a payout taking `amount` KES from the float (its
/// tariff included) may be released now. Call it in
/// the release transaction: it holds the provider's float lock until that
/// transaction ends, so concurrent releases cannot overdraw the float.
pub async fn check(
    tx: &mut Transaction<'_, Postgres>,
    config: &MpesaConfig,
    amount: Decimal,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Gate, sqlx::Error> {
    Ok(budget(tx, config, now).await?.take(amount))
}

/// What the float can still carry, read once under the float's lock for a
/// run of releases in one transaction: each release [`Budget::take`]s its
/// share, as if each had been checked after the one before it.
#[derive(Debug, Clone)]
pub enum Budget {
    Free(Decimal),
    /// Nothing may be released: why.
    Closed(String),
}

impl Budget {
    /// Whether `amount` fits what is left; if so, it is taken.
    pub fn take(&mut self, amount: Decimal) -> Gate {
        match self {
            Budget::Closed(reason) => Gate::Hold(reason.clone()),
            Budget::Free(free) if *free >= amount => {
                *free -= amount;
                Gate::Release
            }
            Budget::Free(free) => Gate::Hold(format!(
                "M-Pesa float too low: {free:.2} KES free, {amount:.2} KES needed (its tariff included)"
            )),
        }
    }
}

/// Locks the float's checks until the transaction ends and reads what it
/// can still carry.
pub async fn budget(
    tx: &mut Transaction<'_, Postgres>,
    config: &MpesaConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Budget, sqlx::Error> {
    floats::lock(tx, "mpesa").await?;
    let Some((available, reported_at)) = floats::latest(tx, "mpesa", &config.float_account).await? else {
        return Ok(Budget::Closed("waiting for the first M-Pesa float report".into()));
    };
    if (now - reported_at).num_seconds() > config.float_max_age_s as i64 {
        return Ok(Budget::Closed(
            "the M-Pesa float report is out of date; a new one is on its way".into(),
        ));
    }
    let committed = floats::committed_since(tx, "mpesa", "KES", reported_at, REPORT_SKEW).await?;
    Ok(Budget::Free(available - committed))
}
