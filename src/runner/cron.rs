//! Scheduled jobs. Each node runs the same cron entries on a
//! tokio-cron-scheduler; when an entry fires, the node enqueues its job and
//! records `(entry, tick)` in `tuma_cron_ticks` in one transaction. The tick
//! is the schedule's own instant, not the node's "now", so every node
//! computes the same key and only the first insert commits a job.
//!
//! A tick nobody fired at its instant (every node restarting then, or the
//! database unreachable) is not lost: at start and every minute each node
//! fires each entry's latest tick if no node has ([`catch_up`]), while it
//! is younger than half of how long fired ticks are remembered, so that a
//! tick found unrecorded was never fired. Only ticks owed are caught up:
//! those since a node first ran the entry on its schedule
//! (`tuma_cron_entries`), so a first start, a new entry or a changed
//! schedule does not fire a run from before it.

use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::client::JobClient;
use super::job::NewJob;
use super::store;
use crate::domain::JobId;

type MakeJob = Arc<dyn Fn(DateTime<Utc>) -> NewJob + Send + Sync>;

/// One scheduled entry: a name (stable, it is part of the tick key), a
/// six-field cron expression with seconds (`sec min hour dom month dow`,
/// UTC), and the job to enqueue for a tick.
#[derive(Clone)]
pub struct CronEntry {
    name: String,
    expression: String,
    schedule: Cron,
    make: MakeJob,
}

impl CronEntry {
    pub fn new(
        name: impl Into<String>,
        expression: impl Into<String>,
        make: impl Fn(DateTime<Utc>) -> NewJob + Send + Sync + 'static,
    ) -> Result<CronEntry, String> {
        let name = name.into();
        let expression = expression.into();
        // The same parser settings tokio-cron-scheduler uses, so both agree
        // on which instants are ticks.
        let schedule = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&expression)
            .map_err(|e| format!("cron entry {name:?}: invalid schedule {expression:?}: {e}"))?;
        Ok(CronEntry {
            name,
            expression,
            schedule,
            make: Arc::new(make),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tick a firing at `now` belongs to: the latest scheduled instant at
    /// or before `now`.
    pub fn tick_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Schedules have one-second resolution; croner keeps the sub-second
        // part of its input, so without this two nodes firing a few
        // milliseconds apart would compute two different "ticks".
        let now = now.duration_trunc(TimeDelta::seconds(1)).ok()?;
        self.schedule.find_previous_occurrence(&now, true).ok()
    }
}

/// Enqueues `entry`'s job for `tick` unless some node already did. Returns
/// the job id when this call fired the tick.
pub async fn fire(client: &JobClient, entry: &CronEntry, tick: DateTime<Utc>) -> Result<Option<JobId>, sqlx::Error> {
    let job = (entry.make)(tick);
    let mut tx = client.pool().begin().await?;
    let enqueued = client.enqueue(&mut tx, &job).await?;
    if store::record_tick(&mut tx, &entry.name, tick, enqueued.id()).await? {
        tx.commit().await?;
        Ok(Some(enqueued.id()))
    } else {
        tx.rollback().await?;
        Ok(None)
    }
}

/// A tick this young is left to the scheduler firing it at its instant.
const CATCH_UP_GRACE: TimeDelta = TimeDelta::seconds(30);

/// Fires each entry's latest tick at or before `now` that no node has
/// fired, if it is at most `window` old (and older than a grace the
/// scheduler has to fire it on time) and was owed: no earlier than when a
/// node first ran the entry on its schedule (recorded here, as of `now`,
/// for an entry new or changed). Returns how many it fired.
pub async fn catch_up(
    client: &JobClient,
    entries: &[CronEntry],
    now: DateTime<Utc>,
    window: std::time::Duration,
) -> Result<usize, sqlx::Error> {
    let window = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
    let known: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.expression.as_str()))
        .collect();
    let since = store::cron_entries_since(client.pool(), &known, now).await?;
    let mut fired = 0;
    for entry in entries {
        let Some(tick) = entry.tick_at_or_before(now) else {
            continue;
        };
        // An entry another node is recording this moment is new: nothing
        // before now is owed.
        let owed_from = since.get(&entry.name).copied().unwrap_or(now);
        let age = now - tick;
        if tick < owed_from
            || age < CATCH_UP_GRACE
            || age > window
            || store::tick_recorded(client.pool(), &entry.name, tick).await?
        {
            continue;
        }
        if let Some(job_id) = fire(client, entry, tick).await? {
            tracing::warn!(entry = entry.name, %tick, %job_id, "cron tick missed at its instant; fired now");
            fired += 1;
        }
    }
    Ok(fired)
}

/// Starts a scheduler firing `entries` until the returned scheduler is shut
/// down, after firing the ticks missed while no node ran ([`catch_up`],
/// within `window`); it catches up again every minute.
pub(crate) async fn start_scheduler(
    client: JobClient,
    entries: &[CronEntry],
    window: std::time::Duration,
) -> Result<JobScheduler, String> {
    if let Err(error) = catch_up(&client, entries, Utc::now(), window).await {
        tracing::error!(%error, "could not catch up on missed cron ticks; trying again in a minute");
    }
    let scheduler = JobScheduler::new().await.map_err(|e| format!("cron scheduler: {e}"))?;
    let catching_up = {
        let (client, entries) = (client.clone(), entries.to_vec());
        Job::new_async("45 * * * * *", move |_, _| {
            let (client, entries) = (client.clone(), entries.clone());
            Box::pin(async move {
                if let Err(error) = catch_up(&client, &entries, Utc::now(), window).await {
                    tracing::error!(%error, "could not catch up on missed cron ticks");
                }
            })
        })
        .map_err(|e| format!("cron catch-up: {e}"))?
    };
    scheduler
        .add(catching_up)
        .await
        .map_err(|e| format!("cron scheduler: {e}"))?;
    for entry in entries {
        let name = entry.name.clone();
        let expression = entry.expression.clone();
        let entry = entry.clone();
        let client = client.clone();
        let job = Job::new_async(expression.as_str(), move |_, _| {
            let entry = entry.clone();
            let client = client.clone();
            Box::pin(async move {
                let Some(tick) = entry.tick_at_or_before(Utc::now()) else {
                    return;
                };
                match fire(&client, &entry, tick).await {
                    Ok(Some(job_id)) => tracing::debug!(entry = entry.name, %tick, %job_id, "cron tick fired"),
                    Ok(None) => tracing::debug!(entry = entry.name, %tick, "cron tick already fired by another node"),
                    Err(error) => tracing::error!(entry = entry.name, %tick, %error, "cron tick could not be recorded"),
                }
            })
        })
        .map_err(|e| format!("cron entry {name:?}: {e}"))?;
        scheduler.add(job).await.map_err(|e| format!("cron scheduler: {e}"))?;
    }
    scheduler.start().await.map_err(|e| format!("cron scheduler: {e}"))?;
    Ok(scheduler)
}
