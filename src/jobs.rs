//! Job kinds that belong to no single component, and the list of everything
//! a `tuma serve` node runs.

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

/// The scheduled entries every node runs (each tick fires once in all).
pub fn cron_entries() -> Vec<CronEntry> {
    vec![CronEntry::new("purge-idempotency-keys", "0 */10 * * * *", |_| {
        NewJob::new(&PurgeIdempotencyKeys {})
    })
    .expect("a valid built-in schedule")]
}

/// Workers of this module.
pub fn register(registry: &mut Registry) {
    registry.register(NoopWorker);
    registry.register(PurgeIdempotencyKeysWorker);
}
