//! The workers this node can run, by kind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::job::{JobArgs, JobContext, JobError, Worker};

type ErasedRun = Arc<dyn Fn(JobContext, Value) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;

/// A registered worker with its arguments' type erased.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) kind: &'static str,
    pub(crate) run: ErasedRun,
    pub(crate) timeout: Option<Duration>,
    /// The queue jobs of this kind go to by default.
    pub(crate) queue: String,
}

/// Kind name → worker. Built before the runner starts; read-only after.
#[derive(Clone, Default)]
pub struct Registry {
    workers: HashMap<&'static str, Registered>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `worker` for its argument type's kind. Registering a kind
    /// twice is a programmer error.
    pub fn register<W: Worker>(&mut self, worker: W) -> &mut Self {
        let kind = <W::Args as JobArgs>::KIND;
        let worker = Arc::new(worker);
        let run: ErasedRun = Arc::new(move |ctx, args| {
            let worker = Arc::clone(&worker);
            Box::pin(async move {
                let args: W::Args = serde_json::from_value(args)
                    .map_err(|e| JobError::fatal(format!("arguments of {kind} do not decode: {e}")))?;
                worker.work(ctx, args).await
            })
        });
        let options = <W::Args as JobArgs>::options();
        let registered = Registered {
            kind,
            run,
            timeout: options.timeout,
            queue: options.queue,
        };
        let previous = self.workers.insert(kind, registered);
        assert!(previous.is_none(), "job kind {kind:?} registered twice");
        self
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&Registered> {
        self.workers.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.workers.keys().copied()
    }

    /// Each registered kind with the queue its jobs go to by default.
    pub fn default_queues(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.workers.values().map(|w| (w.kind, w.queue.as_str()))
    }
}
