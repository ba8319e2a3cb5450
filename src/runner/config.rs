//! The runner's settings, `[runner]` in the configuration. Every limit has
//! its unit in its name and a reason next to its default in
//! `config/default.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::backoff::RetryPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// This node's name in leases; empty means host name, process id and a
    /// random suffix (unique even for two processes on one host).
    #[serde(default)]
    pub node_id: String,
    pub lease_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub rescue_interval_ms: u64,
    pub poll_interval_ms: u64,
    /// While a queue is busy (a claim found jobs within the last
    /// `busy_window_ms`), a producer whose claim came back short claims
    /// again after this long instead of waiting for a notification: the
    /// jobs that arrive meanwhile are claimed together.
    pub busy_poll_ms: u64,
    pub busy_window_ms: u64,
    /// An enqueue leaves out its NOTIFY when this process heard one for the
    /// same queue less than this long ago: some node is busy on that queue
    /// and will claim the job by polling. 0 notifies on every enqueue.
    pub notify_debounce_ms: u64,
    pub claim_batch: u32,
    pub completion_batch: u32,
    pub shutdown_timeout_ms: u64,
    pub default_timeout_ms: u64,
    pub stats_interval_ms: u64,
    pub retry: RetryPolicy,
    pub retention: RetentionConfig,
    pub queues: BTreeMap<String, QueueConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub completed_s: u64,
    pub dead_s: u64,
    pub interval_ms: u64,
    pub batch: u32,
    pub max_batches_per_run: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of this queue running at once on one node.
    pub concurrency: u32,
    /// Job starts per second on one node (a provider's published TPS divided
    /// among nodes); absent means unlimited.
    #[serde(default)]
    pub rate_per_s: Option<u32>,
    /// Starts allowed in one burst above the rate; defaults to the rate.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Upper bounds on settings, so a typo cannot ask for a million connections'
/// worth of work. Each is far above any sensible value.
const MAX_CONCURRENCY: u32 = 10_000;
const MAX_CLAIM_BATCH: u32 = 5_000;
const MAX_COMPLETION_BATCH: u32 = 10_000;

impl RunnerConfig {
    /// Checks the relations between settings that types cannot express.
    /// Each error names the key, as `runner.<key>`.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("lease_ms", self.lease_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("rescue_interval_ms", self.rescue_interval_ms),
            ("poll_interval_ms", self.poll_interval_ms),
            ("busy_poll_ms", self.busy_poll_ms),
            ("busy_window_ms", self.busy_window_ms),
            ("claim_batch", u64::from(self.claim_batch)),
            ("completion_batch", u64::from(self.completion_batch)),
            ("default_timeout_ms", self.default_timeout_ms),
            ("stats_interval_ms", self.stats_interval_ms),
            ("retry.base_ms", self.retry.base_ms),
            ("retention.interval_ms", self.retention.interval_ms),
            ("retention.batch", u64::from(self.retention.batch)),
            (
                "retention.max_batches_per_run",
                u64::from(self.retention.max_batches_per_run),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("runner.{key} must be greater than 0"));
            }
        }
        if self.heartbeat_interval_ms * 2 > self.lease_ms {
            return Err(format!(
                "runner.heartbeat_interval_ms ({}) must be at most half of runner.lease_ms ({}), \
                 or a healthy node could lose a lease between two heartbeats",
                self.heartbeat_interval_ms, self.lease_ms
            ));
        }
        if self.busy_poll_ms > self.poll_interval_ms {
            return Err(format!(
                "runner.busy_poll_ms ({}) must be at most runner.poll_interval_ms ({})",
                self.busy_poll_ms, self.poll_interval_ms
            ));
        }
        if self.notify_debounce_ms * 4 > self.busy_window_ms {
            return Err(format!(
                "runner.notify_debounce_ms ({}) must be at most a quarter of runner.busy_window_ms ({}): \
                 an enqueue that leaves out its NOTIFY counts on a node still polling its queue",
                self.notify_debounce_ms, self.busy_window_ms
            ));
        }
        if self.retry.max_ms < self.retry.base_ms {
            return Err("runner.retry.max_ms must be at least runner.retry.base_ms".into());
        }
        if self.claim_batch > MAX_CLAIM_BATCH {
            return Err(format!("runner.claim_batch must be at most {MAX_CLAIM_BATCH}"));
        }
        if self.completion_batch > MAX_COMPLETION_BATCH {
            return Err(format!(
                "runner.completion_batch must be at most {MAX_COMPLETION_BATCH}"
            ));
        }
        if self.queues.is_empty() {
            return Err("runner.queues must name at least one queue".into());
        }
        for (name, queue) in &self.queues {
            queue.validate().map_err(|e| format!("runner.queues.{name}.{e}"))?;
        }
        Ok(())
    }
}

impl QueueConfig {
    fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(format!("concurrency must be between 1 and {MAX_CONCURRENCY}"));
        }
        if self.rate_per_s == Some(0) {
            return Err("rate_per_s must be greater than 0 (omit it for no limit)".into());
        }
        if self.burst == Some(0) {
            return Err("burst must be greater than 0".into());
        }
        if self.burst.is_some() && self.rate_per_s.is_none() {
            return Err("burst needs rate_per_s".into());
        }
        Ok(())
    }
}
