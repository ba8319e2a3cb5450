//! The scheduled reports and housekeeping: balance snapshots (the balance
//! history), the monthly tax report, and callback-inbox retention. Each is
//! a job its `[cron]` entry enqueues once per tick across all nodes, and
//! each is safe to run twice for the same tick.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::Currency;
use crate::runner::{JobArgs, JobContext, JobError, Worker};
use crate::store::reports as store;

/// `[reports]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// Per currency, the month's payouts to one party above which the party
    /// is in the tax report.
    pub tax_thresholds: BTreeMap<Currency, Decimal>,
    /// Processed provider callbacks are kept this many days (C2B
    /// confirmations behind a recorded payment are kept for good).
    pub callback_retention_days: u32,
}

/// Job arguments: snapshot every account's balance as of the tick.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotBalances {
    pub at: DateTime<Utc>,
}

impl JobArgs for SnapshotBalances {
    const KIND: &'static str = "reports.snapshot_balances";
}

pub struct SnapshotBalancesWorker;

impl Worker for SnapshotBalancesWorker {
    type Args = SnapshotBalances;

    async fn work(&self, ctx: JobContext, args: SnapshotBalances) -> Result<(), JobError> {
        let written = store::snapshot_balances(ctx.pool(), args.at).await?;
        tracing::info!(at = %args.at, accounts = written, "balances snapshotted");
        Ok(())
    }
}

/// Job arguments: the tax report of `month` (`YYYY-MM`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaxReport {
    pub month: String,
}

impl JobArgs for TaxReport {
    const KIND: &'static str = "reports.tax";
}

/// The month before the one `at` falls in, as `YYYY-MM`.
pub fn previous_month(at: DateTime<Utc>) -> String {
    let first = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).expect("a valid date");
    let last_month = first.pred_opt().expect("not the first day of the calendar");
    format!("{:04}-{:02}", last_month.year(), last_month.month())
}

/// `[from, to)` of a `YYYY-MM` month, in UTC.
pub fn month_bounds(month: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()?;
    let next = first.checked_add_months(chrono::Months::new(1))?;
    Some((
        Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0)?),
        Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0)?),
    ))
}

pub struct TaxReportWorker {
    pub config: ReportsConfig,
}

impl Worker for TaxReportWorker {
    type Args = TaxReport;

    async fn work(&self, ctx: JobContext, args: TaxReport) -> Result<(), JobError> {
        let (from, to) =
            month_bounds(&args.month).ok_or_else(|| JobError::fatal(format!("not a month: {}", args.month)))?;
        let thresholds: Vec<(String, Decimal)> = self
            .config
            .tax_thresholds
            .iter()
            .map(|(currency, threshold)| (currency.code().to_owned(), *threshold))
            .collect();
        let lines = store::write_tax_report(ctx.pool(), &args.month, from, to, &thresholds).await?;
        tracing::info!(month = args.month, parties = lines, "tax report written");
        Ok(())
    }
}

/// Job arguments: delete old processed callbacks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PurgeCallbacks {}

impl JobArgs for PurgeCallbacks {
    const KIND: &'static str = "retention.callbacks";
}

const PURGE_BATCH: i64 = 1_000;
const PURGE_BATCHES_PER_RUN: usize = 100;

pub struct PurgeCallbacksWorker {
    pub config: ReportsConfig,
}

impl Worker for PurgeCallbacksWorker {
    type Args = PurgeCallbacks;

    async fn work(&self, ctx: JobContext, _args: PurgeCallbacks) -> Result<(), JobError> {
        let before = ctx.clock().local_now() - chrono::Duration::days(i64::from(self.config.callback_retention_days));
        for _ in 0..PURGE_BATCHES_PER_RUN {
            if store::purge_inbox(ctx.pool(), before, PURGE_BATCH).await? < PURGE_BATCH as u64 {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months_in_utc() {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).unwrap();
        assert_eq!(previous_month(at), "2025-12");
        let (from, to) = month_bounds("2026-02").unwrap();
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap());
        assert_eq!(to, Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        assert!(month_bounds("2026-13").is_none());
    }
}
