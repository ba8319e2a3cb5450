//! The runner's background services. Each has a `*_once` step that does one
//! bounded pass and returns; `spawn_all` runs each step on its interval until
//! told to stop. Errors are logged here, where they are handled, and the
//! service tries again on its next tick.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::execute::Interrupt;
use super::store;
use super::store::{Lease, LeaseStatus};
use super::{Inner, ListenSignal};

/// Most expired jobs one rescue statement moves; a pass repeats up to
/// `RESCUE_ROUNDS` times, so a mass crash is cleaned up in a few ticks
/// without one huge transaction.
const RESCUE_BATCH: i64 = 1_000;
const RESCUE_ROUNDS: usize = 10;

/// Cron tick records are kept at least this long (seconds); any node still
/// firing a tick does so within seconds of it, or, catching up on a tick
/// missed at its instant, within half of how long they are kept.
const MIN_TICK_RETENTION_S: u64 = 3_600;

/// How long fired cron ticks are remembered.
pub(crate) fn tick_retention(retention: &super::RetentionConfig) -> std::time::Duration {
    std::time::Duration::from_secs(retention.completed_s.max(MIN_TICK_RETENTION_S))
}

pub(crate) async fn heartbeat_once(inner: &Inner) -> Result<(), sqlx::Error> {
    // Snapshot first: every lease in it was claimed (and committed) before
    // the statement below starts, so its absence from the result means the
    // lease is really gone, not that the claim was too recent to see.
    let snapshot = inner.in_flight_snapshot();
    if snapshot.is_empty() {
        return Ok(());
    }
    let leases: Vec<Lease> = snapshot.iter().map(|f| f.lease).collect();
    let sent_at = Instant::now();
    // Bounded by the heartbeat interval: a hung statement must not stop the
    // fencing below from running.
    let interval = Duration::from_millis(inner.config.heartbeat_interval_ms);
    let renewal = store::heartbeat(
        &inner.control,
        &leases,
        &inner.node,
        inner.config.lease_ms as i64,
        inner.clock.sql_now(),
    );
    let result = match tokio::time::timeout(interval, renewal).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    };
    let statuses: HashMap<Lease, LeaseStatus> = match &result {
        Ok(statuses) => statuses.iter().map(|(lease, status)| (*lease, *status)).collect(),
        Err(_) => HashMap::new(),
    };
    for flight in snapshot {
        match statuses.get(&flight.lease) {
            Some(LeaseStatus::Renewed { cancel_requested }) => {
                flight.confirm_until(sent_at + inner.lease_length());
                if *cancel_requested {
                    tracing::info!(job_id = flight.lease.id, "cancellation requested; stopping the attempt");
                    flight.interrupt(Interrupt::CancelRequested);
                }
            }
            Some(LeaseStatus::Lost) => {
                // Either its outcome was written meanwhile (then it has left
                // the in-flight map) or the lease is gone.
                if inner.holds(flight.lease) {
                    tracing::warn!(job_id = flight.lease.id, "lease lost; stopping the attempt");
                    flight.interrupt(Interrupt::LeaseLost);
                }
            }
            // Its work committed with its completion; the attempt is ending.
            Some(LeaseStatus::Finished) => continue,
            Some(LeaseStatus::Busy) | None => {}
        }
        // Self-fencing: a lease this node could not renew in time may already
        // belong to someone else, so the attempt stops here too.
        if flight.confirmed_until() <= Instant::now() {
            tracing::warn!(
                job_id = flight.lease.id,
                "lease not confirmed in time; stopping the attempt"
            );
            flight.interrupt(Interrupt::LeaseLost);
        }
    }
    result.map(|_| ())
}

pub(crate) async fn rescue_once(inner: &Inner) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    for _ in 0..RESCUE_ROUNDS {
        let rescued = store::rescue_expired(&inner.control, RESCUE_BATCH, inner.clock.sql_now()).await?;
        for job in &rescued {
            tracing::warn!(
                job_id = job.id.get(),
                kind = job.kind,
                to = job.state,
                "rescued a job whose lease expired"
            );
            let kind = inner.registry.get(&job.kind).map_or("unregistered", |w| w.kind);
            metrics::counter!("tuma_jobs_rescued_total", "kind" => kind).increment(1);
        }
        total += rescued.len();
        if (rescued.len() as i64) < RESCUE_BATCH {
            break;
        }
    }
    if total > 0 {
        inner.wake_all();
    }
    Ok(total)
}

pub(crate) async fn retention_once(inner: &Inner) -> Result<u64, sqlx::Error> {
    let retention = &inner.config.retention;
    let now = inner.clock.sql_now();
    let passes: [(&[&str], u64); 2] = [
        (&["completed", "cancelled"], retention.completed_s),
        (&["dead"], retention.dead_s),
    ];
    let mut total = 0;
    for (states, age_s) in passes {
        for _ in 0..retention.max_batches_per_run {
            let deleted =
                store::delete_finished(&inner.control, states, age_s as i64, retention.batch as i64, now).await?;
            total += deleted;
            if deleted < u64::from(retention.batch) {
                break;
            }
        }
    }
    let tick_age_s = tick_retention(retention).as_secs() as i64;
    store::delete_old_ticks(&inner.control, tick_age_s, retention.batch as i64, now).await?;
    if total > 0 {
        tracing::debug!(deleted = total, "retention deleted finished jobs");
    }
    Ok(total)
}

pub(crate) async fn stats_once(inner: &Inner) -> Result<(), sqlx::Error> {
    let now = inner.clock.sql_now();
    let depths = store::queue_depths(&inner.control, now).await?;
    let paused = store::paused_queues(&inner.control, now).await?;
    let mut seen: HashMap<&str, (i64, f64)> = depths.iter().map(|(q, n, lag)| (q.as_str(), (*n, *lag))).collect();
    for name in inner.queues.keys() {
        let (depth, lag_s) = seen.remove(name.as_str()).unwrap_or((0, 0.0));
        metrics::gauge!("tuma_job_queue_depth", "queue" => name.clone()).set(depth as f64);
        metrics::gauge!("tuma_job_queue_lag_seconds", "queue" => name.clone()).set(lag_s);
        // Read from the database, so every node says the same and a timed
        // pause shows as over once its time has passed.
        let is_paused = paused.iter().any(|p| p == name);
        metrics::gauge!("tuma_job_queue_paused", "queue" => name.clone()).set(if is_paused { 1.0 } else { 0.0 });
    }
    Ok(())
}

/// How often the LISTEN connection checks that it still hears: it sends
/// itself a notification and must hear it back within the same time. A
/// connection that went silent without closing (a half-open TCP session, a
/// proxy that accepts LISTEN and never delivers) is thus dropped and made
/// afresh within two intervals.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Holds one LISTEN connection and wakes producers on each notification.
/// Whenever the connection is (re)established every queue is woken, since
/// notifications sent while it was down are gone; the producers' poll
/// interval covers the gap until then. Subscriptions to other channels are
/// told when the connection hears (its first probe came back), what it
/// hears, and when it is lost or stops hearing.
async fn listen(inner: Arc<Inner>, stop: CancellationToken) {
    let retry = Duration::from_millis(inner.config.poll_interval_ms);
    let tell = |signal: ListenSignal<'_>| {
        for subscription in &inner.subscriptions {
            (subscription.on)(signal);
        }
    };
    while !stop.is_cancelled() {
        let connected = async {
            let mut listener = PgListener::connect_with(&inner.pool).await?;
            // A lost connection must be reported at once, not after sqlx
            // has waited for a new one behind our back: until it is
            // reported, subscriptions would trust a connection that hears
            // nothing.
            listener.eager_reconnect(false);
            let channels = inner.subscriptions.iter().map(|s| s.channel);
            listener
                .listen_all(
                    [store::NOTIFY_CHANNEL, store::PROBE_CHANNEL]
                        .into_iter()
                        .chain(channels),
                )
                .await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match connected.await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "LISTEN connection failed; polling until it is back");
                tokio::select! { () = tokio::time::sleep(retry) => continue, () = stop.cancelled() => break }
            }
        };
        let connected_at = Instant::now();
        inner.wake_all();
        let mut probe = Probe::new(&inner.node, PROBE_INTERVAL);
        let mut ticks = tokio::time::interval(PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hearing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => match probe.step(Instant::now()) {
                    ProbeStep::Send(payload) => {
                        if let Err(error) = store::notify(&inner.pool, store::PROBE_CHANNEL, &payload).await {
                            // Not heard back in time, it drops the connection.
                            tracing::warn!(%error, "could not send the LISTEN connection's probe");
                        }
                    }
                    ProbeStep::Wait => {}
                    ProbeStep::Lost => {
                        tracing::warn!("LISTEN connection hears nothing; reconnecting");
                        break;
                    }
                },
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) if notification.channel() == store::NOTIFY_CHANNEL => {
                        inner.heard.record(notification.payload());
                        inner.wake(notification.payload());
                    }
                    Ok(Some(notification)) if notification.channel() == store::PROBE_CHANNEL => {
                        if probe.heard(notification.payload()) && !hearing {
                            hearing = true;
                            tell(ListenSignal::Listening);
                        }
                    }
                    Ok(Some(notification)) => {
                        let signal = ListenSignal::Notified(notification.payload());
                        for subscription in inner.subscriptions.iter().filter(|s| s.channel == notification.channel()) {
                            (subscription.on)(signal);
                        }
                    }
                    // The connection dropped. A new one is made, so that
                    // subscriptions hear when it listens again.
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN connection lost");
                        break;
                    }
                },
            }
        }
        tell(ListenSignal::Deaf);
        inner.wake_all();
        // A connection that keeps dying at once is not remade in a tight loop.
        if connected_at.elapsed() < retry && !stop.is_cancelled() {
            tokio::select! { () = tokio::time::sleep(retry) => {}, () = stop.cancelled() => break }
        }
    }
    tell(ListenSignal::Deaf);
}

/// What the LISTEN connection's probe does next.
#[derive(Debug, PartialEq, Eq)]
enum ProbeStep {
    /// Send this payload on the probe channel.
    Send(String),
    /// The probe sent is not back yet, but still may be.
    Wait,
    /// The probe sent did not come back in time: the connection hears
    /// nothing.
    Lost,
}

/// Whether a LISTEN connection still hears: one probe at a time, sent on
/// the probe channel with this node's name and a sequence number, must
/// come back within `timeout`. Every node listens on that channel and
/// ignores the others' probes.
#[derive(Debug)]
struct Probe {
    node: String,
    timeout: Duration,
    sent: u64,
    outstanding: Option<(u64, Instant)>,
}

impl Probe {
    fn new(node: &str, timeout: Duration) -> Probe {
        Probe {
            node: node.to_owned(),
            timeout,
            sent: 0,
            outstanding: None,
        }
    }

    fn step(&mut self, now: Instant) -> ProbeStep {
        match self.outstanding {
            Some((_, at)) if now.saturating_duration_since(at) >= self.timeout => ProbeStep::Lost,
            Some(_) => ProbeStep::Wait,
            None => {
                self.sent += 1;
                self.outstanding = Some((self.sent, now));
                ProbeStep::Send(format!("{} {}", self.node, self.sent))
            }
        }
    }

    /// Whether `payload` is the probe this connection waits for; if it is,
    /// the next step sends another.
    fn heard(&mut self, payload: &str) -> bool {
        let Some((seq, _)) = self.outstanding else { return false };
        let ours = payload
            .rsplit_once(' ')
            .is_some_and(|(node, n)| node == self.node && n.parse() == Ok(seq));
        if ours {
            self.outstanding = None;
        }
        ours
    }
}

/// Runs `step` every `interval` until `stop`; logs its errors.
fn every<F, Fut, T>(name: &'static str, interval: Duration, stop: CancellationToken, step: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, sqlx::Error>> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Err(error) = step().await {
                tracing::error!(service = name, %error, "runner service step failed");
            }
        }
    })
}

pub(crate) fn spawn_all(inner: &Arc<Inner>, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    let config = &inner.config;
    let ms = Duration::from_millis;
    let (a, b, c, d) = (
        Arc::clone(inner),
        Arc::clone(inner),
        Arc::clone(inner),
        Arc::clone(inner),
    );
    vec![
        every("heartbeat", ms(config.heartbeat_interval_ms), stop.clone(), move || {
            let inner = Arc::clone(&a);
            async move { heartbeat_once(&inner).await }
        }),
        every("rescuer", ms(config.rescue_interval_ms), stop.clone(), move || {
            let inner = Arc::clone(&b);
            async move { rescue_once(&inner).await }
        }),
        every("retention", ms(config.retention.interval_ms), stop.clone(), move || {
            let inner = Arc::clone(&c);
            async move { retention_once(&inner).await }
        }),
        every("stats", ms(config.stats_interval_ms), stop.clone(), move || {
            let inner = Arc::clone(&d);
            async move { stats_once(&inner).await }
        }),
        tokio::spawn(listen(Arc::clone(inner), stop.clone())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_that_does_not_come_back_in_time_means_the_connection_is_deaf() {
        let start = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut probe = Probe::new("node-a", timeout);

        let ProbeStep::Send(first) = probe.step(start) else {
            panic!("the first step sends a probe")
        };
        assert_eq!(probe.step(start + Duration::from_secs(4)), ProbeStep::Wait);
        assert!(!probe.heard("node-b 1"), "another node's probe is not ours");
        assert!(!probe.heard("node-a 7"), "nor is one we are not waiting for");
        assert!(probe.heard(&first));
        assert!(!probe.heard(&first), "a probe is heard once");

        let ProbeStep::Send(second) = probe.step(start + Duration::from_secs(5)) else {
            panic!("once heard, the next step sends another probe")
        };
        assert_ne!(first, second);
        assert!(!probe.heard(&first), "a stale probe does not answer for the new one");
        assert_eq!(probe.step(start + Duration::from_secs(9)), ProbeStep::Wait);
        assert_eq!(probe.step(start + Duration::from_secs(10)), ProbeStep::Lost);
    }
}
