//! Job kinds that belong to no single component, and the list of everything
//! a `tuma serve` node runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::runner::{CronEntry, JobArgs, JobContext, JobError, NewJob, Registry, Worker};

/// A job that does nothing: the runner benchmark's unit of work, and a way
/// for an operator to check that a queue is being worked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {}

impl JobArgs for Noop {
    const KIND: &'static str = "tuma.noop";
}

pub struct NoopWorker;

impl Worker for NoopWorker {
    type Args = Noop;

    async fn work(&self, _ctx: JobContext, _args: Noop) -> Result<(), JobError> {
        Ok(())
    }
}

/// Deletes expired idempotency records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PurgeIdempotencyKeys {}

impl JobArgs for PurgeIdempotencyKeys {
    const KIND: &'static str = "api.purge_idempotency_keys";
}

/// Records one purge deletes per statement, and statements per run: keeps
/// each transaction short; a backlog drains over a few runs.
const PURGE_BATCH: i64 = 1_000;
const PURGE_BATCHES_PER_RUN: usize = 100;

pub struct PurgeIdempotencyKeysWorker;

impl Worker for PurgeIdempotencyKeysWorker {
    type Args = PurgeIdempotencyKeys;

    async fn work(&self, ctx: JobContext, _args: PurgeIdempotencyKeys) -> Result<(), JobError> {
        for _ in 0..PURGE_BATCHES_PER_RUN {
            let deleted =
                crate::store::idempotency::purge_expired(ctx.pool(), PURGE_BATCH, ctx.clock().sql_now()).await?;
            if deleted < PURGE_BATCH as u64 {
                break;
            }
        }
        Ok(())
    }
}

/// `[cron]`: when each piece of scheduled work runs. Six-field cron
/// expressions with seconds (`sec min hour day month weekday`, UTC); an
/// empty string turns an entry off. Every node runs the same entries and
/// each tick fires once across all of them.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    pub purge_idempotency_keys: String,
    pub mpesa_float_report: String,
    pub mpesa_c2b_unconfirmed: String,
    pub loans_sweep: String,
    pub reconciliation: String,
    pub balance_snapshots: String,
    pub tax_report: String,
    pub callback_retention: String,
}

/// The scheduled entries a node runs, from `[cron]`; `mpesa` says whether
/// M-Pesa is configured (its float report needs it).
pub fn cron_entries(config: &CronConfig, mpesa: bool) -> Result<Vec<CronEntry>, String> {
    let mut entries = Vec::new();
    let mut add = |name: &str, schedule: &str, make: fn(DateTime<Utc>) -> NewJob| -> Result<(), String> {
        if !schedule.trim().is_empty() {
            entries.push(CronEntry::new(name, schedule.trim(), make)?);
        }
        Ok(())
    };
    add("purge-idempotency-keys", &config.purge_idempotency_keys, |_| {
        NewJob::new(&PurgeIdempotencyKeys {})
    })?;
    if mpesa {
        // Keeps the float report fresh; releases ask for one when needed too.
        add("mpesa-float-report", &config.mpesa_float_report, |_| {
            NewJob::new(&crate::providers::mpesa::float::QueryBalance {}).unique_key("mpesa.query_balance")
        })?;
        // C2B payments validated but never confirmed (a lost callback).
        add("mpesa-c2b-unconfirmed", &config.mpesa_c2b_unconfirmed, |_| {
            NewJob::new(&crate::providers::mpesa::c2b::QueryUnconfirmed {}).unique_key("mpesa.c2b_unconfirmed")
        })?;
    }
    add("loans-sweep", &config.loans_sweep, |_| {
        NewJob::new(&crate::loans::LoanSweep {}).unique_key("loans.sweep")
    })?;
    // The report of the day that just ended when it runs shortly after
    // midnight; of the tick's own day otherwise.
    add("reconciliation", &config.reconciliation, |tick| {
        NewJob::new(&crate::reconcile::Reconcile {
            date: (tick - chrono::Duration::hours(12)).date_naive(),
        })
    })?;
    add("balance-snapshots", &config.balance_snapshots, |tick| {
        NewJob::new(&crate::reports::SnapshotBalances { at: tick })
    })?;
    add("tax-report", &config.tax_report, |tick| {
        NewJob::new(&crate::reports::TaxReport {
            month: crate::reports::previous_month(tick),
        })
    })?;
    add("callback-retention", &config.callback_retention, |_| {
        NewJob::new(&crate::reports::PurgeCallbacks {}).unique_key("retention.callbacks")
    })?;
    Ok(entries)
}

/// Workers of this module.
pub fn register(registry: &mut Registry) {
    registry.register(NoopWorker);
    registry.register(PurgeIdempotencyKeysWorker);
}
