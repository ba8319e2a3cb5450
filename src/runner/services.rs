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
/// firing a tick does so within seconds of it.
const MIN_TICK_RETENTION_S: u64 = 3_600;

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
    let tick_age_s = retention.completed_s.max(MIN_TICK_RETENTION_S) as i64;
    store::delete_old_ticks(&inner.control, tick_age_s, retention.batch as i64, now).await?;
    if total > 0 {
        tracing::debug!(deleted = total, "retention deleted finished jobs");
    }
    Ok(total)
}

pub(crate) async fn stats_once(inner: &Inner) -> Result<(), sqlx::Error> {
    let depths = store::queue_depths(&inner.control, inner.clock.sql_now()).await?;
    let mut seen: HashMap<&str, (i64, f64)> = depths.iter().map(|(q, n, lag)| (q.as_str(), (*n, *lag))).collect();
    for name in inner.queues.keys() {
        let (depth, lag_s) = seen.remove(name.as_str()).unwrap_or((0, 0.0));
        metrics::gauge!("tuma_job_queue_depth", "queue" => name.clone()).set(depth as f64);
        metrics::gauge!("tuma_job_queue_lag_seconds", "queue" => name.clone()).set(lag_s);
    }
    Ok(())
}

/// Holds one LISTEN connection and wakes producers on each notification.
/// Whenever the connection is (re)established every queue is woken, since
/// notifications sent while it was down are gone; the producers' poll
/// interval covers the gap until then. Subscriptions to other channels are
/// told when the connection listens, what it hears, and when it is lost.
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
            let channels = inner.subscriptions.iter().map(|s| s.channel);
            listener
                .listen_all(std::iter::once(store::NOTIFY_CHANNEL).chain(channels))
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
        tell(ListenSignal::Listening);
        inner.wake_all();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) if notification.channel() == store::NOTIFY_CHANNEL => {
                        inner.heard.record(notification.payload());
                        inner.wake(notification.payload());
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
    }
    tell(ListenSignal::Deaf);
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
