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
        let base = format!("{}/callbacks/mpesa", config.callback_base_url.trim_end_matches('/'));
        let token = balance_token(config);
        self.client
            .account_balance(
                &format!("{base}/balance-result/{token}"),
                &format!("{base}/balance-timeout/{token}"),
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
    floats::lock(tx, "mpesa").await?;
    let Some((available, reported_at)) = floats::latest(tx, "mpesa", &config.float_account).await? else {
        return Ok(Gate::Hold("waiting for the first M-Pesa float report".into()));
    };
    if (now - reported_at).num_seconds() > config.float_max_age_s as i64 {
        return Ok(Gate::Hold(
            "the M-Pesa float report is out of date; a new one is on its way".into(),
        ));
    }
    let committed = floats::committed_since(tx, "mpesa", "KES", reported_at, REPORT_SKEW).await?;
    let free = available - committed;
    if free >= amount {
        Ok(Gate::Release)
    } else {
        Ok(Gate::Hold(format!(
            "M-Pesa float too low: {free:.2} KES free, {amount:.2} KES needed (its tariff included)"
        )))
    }
}
