//! Job kinds that belong to no other component.

use serde::{Deserialize, Serialize};

use crate::runner::{JobArgs, JobContext, JobError, Registry, Worker};

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

/// The workers every `tuma serve` node runs.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(NoopWorker);
    registry
}
