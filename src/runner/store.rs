//! All of the runner's SQL. Every statement that reads time binds the
//! [`Clock`](crate::clock::Clock)'s `sql_now()` as `coalesce($n, now())`.
//!
//! Each state change is a compare-and-set: completion and failure records
//! require `state = 'running' AND locked_by = <this node>`, and the rescuer
//! requires the lease to have run out under the same owner it read. So a
//! late writer can never overwrite a job someone else has already moved on.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::job::{EnqueueOutcome, NewJob};
use crate::domain::JobId;

/// The channel enqueues notify on; the payload is the queue name.
pub const NOTIFY_CHANNEL: &str = "tuma_jobs";
/// The channel each node's LISTEN connection sends itself probes on, to
/// learn that it still hears (`services::listen`).
pub const PROBE_CHANNEL: &str = "tuma_listen_probe";

/// Sends `payload` on `channel`, outside any transaction.
pub(crate) async fn notify(pool: &PgPool, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Bounded retries of the insert-or-find-existing loop for unique jobs: the
/// existing job can finish between our conflict and our lookup, freeing the
/// key; three rounds make that race vanishingly rare without looping forever.
const UNIQUE_INSERT_ROUNDS: usize = 3;

/// A job leased to this node by a claim.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: JobId,
    pub kind: String,
    pub queue: String,
    pub args: Value,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub retry_base_ms: Option<i64>,
    pub retry_max_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    /// Names this lease; every write for it checks it.
    pub lease_seq: i32,
}

/// One lease: a job id and the claim that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: i64,
    pub seq: i32,
}

fn split(leases: &[Lease]) -> (Vec<i64>, Vec<i32>) {
    leases.iter().map(|l| (l.id, l.seq)).unzip()
}

/// A job row as admins and tests see it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct JobRow {
    pub id: JobId,
    pub kind: String,
    pub queue: String,
    pub args: Value,
    pub priority: i16,
    pub state: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub unique_key: Option<String>,
    pub errors: Value,
}

const JOB_COLUMNS: &str = "id, kind, queue, args, priority, state::text AS state, attempt, max_attempts, \
     run_at, created_at, attempted_at, finished_at, locked_by, locked_until, unique_key, errors";

/// Inserts one job in the caller's transaction and, with `notify`, notifies
/// listeners when it is runnable now (delivered by Postgres only if the
/// transaction commits).
pub async fn insert_job(
    tx: &mut PgConnection,
    job: &NewJob,
    notify: bool,
    now: Option<DateTime<Utc>>,
) -> Result<EnqueueOutcome, sqlx::Error> {
    for _ in 0..UNIQUE_INSERT_ROUNDS {
        let inserted: Option<(JobId, i64)> = sqlx::query_as(
            "WITH inserted AS (
                 INSERT INTO tuma_jobs (kind, queue, args, priority, max_attempts, run_at, unique_key,
                                        retry_base_ms, retry_max_ms, timeout_ms)
                 VALUES ($1, $2, $3, $4, $5, coalesce($6, coalesce($7, now()) + $9 * interval '1 millisecond'), $8,
                         $10, $11, $12)
                 ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
                 DO NOTHING
                 RETURNING id, queue, run_at
             ),
             notified AS (
                 SELECT pg_notify('tuma_jobs', queue) FROM inserted WHERE $13 AND run_at <= coalesce($7, now())
             )
             SELECT id, (SELECT count(*) FROM notified) FROM inserted",
        )
        .bind(job.kind)
        .bind(&job.queue)
        .bind(&job.args)
        .bind(job.priority)
        .bind(job.max_attempts)
        .bind(job.run_at)
        .bind(now)
        .bind(&job.unique_key)
        .bind(job.delay_ms)
        .bind(job.retry.map(|r| r.base_ms as i64))
        .bind(job.retry.map(|r| r.max_ms as i64))
        .bind(job.timeout_ms)
        .bind(notify)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((id, _)) = inserted {
            return Ok(EnqueueOutcome::Inserted(id));
        }
        let Some(key) = job.unique_key.as_deref() else {
            break;
        };
        if let Some(id) = live_by_unique_key(&mut *tx, key).await? {
            return Ok(EnqueueOutcome::Existing(id));
        }
    }
    Err(sqlx::Error::Protocol(format!(
        "unique job {:?} kept changing state during {UNIQUE_INSERT_ROUNDS} enqueue rounds",
        job.unique_key
    )))
}

/// The live (queued or running) job holding the unique `key`, if any.
pub async fn live_by_unique_key(conn: &mut PgConnection, key: &str) -> Result<Option<JobId>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tuma_jobs WHERE unique_key = $1 AND state IN ('available', 'running')")
        .bind(key)
        .fetch_optional(conn)
        .await
}

/// Two CTEs for a statement that enqueues jobs along with its own writes:
/// `jobs_inserted` inserts the jobs [`bind_jobs`] binds as `$p` to
/// `$p+11` when `guard` holds (skipping those whose unique key a live job
/// holds), and `jobs_notified` notifies each queue that got a job runnable
/// now, when the notify flag is bound true. `now` is the SQL of the
/// statement's clock parameter. The statement must read `jobs_notified`
/// (a CTE nobody reads is not run).
pub(crate) fn jobs_cte(p: usize, now: &str, guard: &str) -> String {
    jobs_cte_from(p, now, guard, "args", "")
}

/// [`jobs_cte`] whose jobs' arguments are the SQL `job_args` (over the
/// bound `input.args` and whatever `also_from`, joined to the bound jobs,
/// provides): for jobs that name a row the same statement inserts. Each
/// bound job's place in the list, from 1, is `input.n`.
pub(crate) fn jobs_cte_from(p: usize, now: &str, guard: &str, job_args: &str, also_from: &str) -> String {
    let [kinds, queues, args, priorities, max_attempts, run_ats, unique_keys, delays, bases, maxes, timeouts, notify] =
        std::array::from_fn(|i| format!("${}", p + i));
    format!(
        "jobs_inserted AS (
             INSERT INTO tuma_jobs (kind, queue, args, priority, max_attempts, run_at, unique_key,
                                    retry_base_ms, retry_max_ms, timeout_ms)
             SELECT kind, queue, {job_args}, priority, max_attempts,
                    coalesce(run_at, coalesce({now}, now()) + delay_ms * interval '1 millisecond'), unique_key,
                    retry_base_ms, retry_max_ms, timeout_ms
             FROM unnest({kinds}::text[], {queues}::text[], {args}::jsonb[], {priorities}::int2[],
                         {max_attempts}::int4[], {run_ats}::timestamptz[], {unique_keys}::text[],
                         {delays}::int8[], {bases}::int8[], {maxes}::int8[], {timeouts}::int8[])
                  WITH ORDINALITY
                  AS input(kind, queue, args, priority, max_attempts, run_at, unique_key,
                           delay_ms, retry_base_ms, retry_max_ms, timeout_ms, n){also_from}
             WHERE {guard}
             ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
             DO NOTHING
             RETURNING queue, run_at
         ), jobs_notified AS (
             SELECT pg_notify('tuma_jobs', queue)
             FROM (SELECT DISTINCT queue FROM jobs_inserted WHERE {notify} AND run_at <= coalesce({now}, now())) AS runnable
         )"
    )
}

pub(crate) type JobsQuery<'q, O> = sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>;

/// Binds `jobs` and `notify` as the twelve parameters of [`jobs_cte`].
pub(crate) fn bind_jobs<'q, O>(query: JobsQuery<'q, O>, jobs: &'q [NewJob], notify: bool) -> JobsQuery<'q, O> {
    query
        .bind(jobs.iter().map(|j| j.kind).collect::<Vec<&str>>())
        .bind(jobs.iter().map(|j| j.queue.as_str()).collect::<Vec<&str>>())
        .bind(jobs.iter().map(|j| &j.args).collect::<Vec<&Value>>())
        .bind(jobs.iter().map(|j| j.priority).collect::<Vec<i16>>())
        .bind(jobs.iter().map(|j| j.max_attempts).collect::<Vec<i32>>())
        .bind(jobs.iter().map(|j| j.run_at).collect::<Vec<Option<DateTime<Utc>>>>())
        .bind(
            jobs.iter()
                .map(|j| j.unique_key.as_deref())
                .collect::<Vec<Option<&str>>>(),
        )
        .bind(jobs.iter().map(|j| j.delay_ms).collect::<Vec<i64>>())
        .bind(
            jobs.iter()
                .map(|j| j.retry.map(|r| r.base_ms as i64))
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(
            jobs.iter()
                .map(|j| j.retry.map(|r| r.max_ms as i64))
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(jobs.iter().map(|j| j.timeout_ms).collect::<Vec<Option<i64>>>())
        .bind(notify)
}

/// Inserts many jobs with one statement. Jobs whose unique key is held by a
/// live job are skipped. With `notify`, each queue that got a job runnable
/// now is notified once. Returns how many were inserted.
pub async fn insert_many(
    tx: &mut PgConnection,
    jobs: &[NewJob],
    notify: bool,
    now: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "WITH {} SELECT (SELECT count(*) FROM jobs_inserted), (SELECT count(*) FROM jobs_notified)",
        jobs_cte(2, "$1", "true")
    );
    let (inserted, _notified): (i64, i64) = bind_jobs(sqlx::query_as(&sql).bind(now), jobs, notify)
        .fetch_one(&mut *tx)
        .await?;
    Ok(inserted as u64)
}

/// Leases up to `limit` runnable jobs of `queue` to `node`, in priority then
/// run_at order, skipping rows other nodes are claiming at the same moment.
/// A paused queue yields nothing (a timed pause only until it ends).
pub async fn claim(
    pool: &PgPool,
    queue: &str,
    limit: i64,
    node: &str,
    lease_ms: i64,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    sqlx::query_as(
        "WITH picked AS (
             SELECT id FROM tuma_jobs
             WHERE state = 'available' AND queue = $1 AND run_at <= coalesce($5, now())
               AND NOT EXISTS (SELECT 1 FROM tuma_job_queues q WHERE q.name = $1 AND q.paused_at IS NOT NULL
                                 AND (q.paused_until IS NULL OR q.paused_until > coalesce($5, now())))
             ORDER BY priority, run_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE tuma_jobs j
         SET state = 'running', attempt = j.attempt + 1, lease_seq = j.lease_seq + 1, attempted_at = coalesce($5, now()),
             locked_by = $3, locked_until = coalesce($5, now()) + $4 * interval '1 millisecond'
         FROM picked
         WHERE j.id = picked.id
         RETURNING j.id, j.kind, j.queue, j.args, j.attempt, j.max_attempts, j.run_at, j.created_at,
                   j.retry_base_ms, j.retry_max_ms, j.timeout_ms, j.lease_seq",
    )
    .bind(queue)
    .bind(limit)
    .bind(node)
    .bind(lease_ms)
    .bind(now)
    .fetch_all(pool)
    .await
}

/// Marks jobs completed, for the leases this node still holds. Returns how
/// many it marked. (`j.id = ANY($1)` beside the join lets the planner find
/// the rows by primary key instead of scanning the table to join them.)
///
/// Deadlock-free without ordering the row locks: the only other statements
/// that lock several job rows (heartbeat, rescuer, claims, retention) skip
/// locked rows instead of waiting, and one node writes its outcomes from one
/// completer, one statement at a time.
pub async fn complete_many(
    pool: &PgPool,
    leases: &[Lease],
    node: &str,
    now: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    // Each job once, with its newest lease: a batch can hold an outcome of
    // a run that lost its lease beside one of the run that claimed the job
    // again, and `array_position` reads only a job's first entry. Leases
    // only grow, so an older one can never match the row anyway.
    let mut newest: BTreeMap<i64, i32> = BTreeMap::new();
    for lease in leases {
        let seq = newest.entry(lease.id).or_insert(lease.seq);
        *seq = (*seq).max(lease.seq);
    }
    let (ids, seqs): (Vec<i64>, Vec<i32>) = newest.into_iter().unzip();
    let done = sqlx::query(
        "UPDATE tuma_jobs j
         SET state = 'completed', finished_at = coalesce($4, now()), locked_by = NULL, locked_until = NULL
         WHERE j.id = ANY($1) AND j.state = 'running' AND j.locked_by = $3
           AND j.lease_seq = ($2::int4[])[array_position($1::int8[], j.id)]",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(node)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Marks one job completed inside a worker's transaction. `false` when this
/// node no longer holds the lease.
pub async fn complete_one(
    tx: &mut Transaction<'_, Postgres>,
    lease: Lease,
    node: &str,
    now: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE tuma_jobs
         SET state = 'completed', finished_at = coalesce($4, now()), locked_by = NULL, locked_until = NULL
         WHERE id = $1 AND lease_seq = $2 AND state = 'running' AND locked_by = $3",
    )
    .bind(lease.id)
    .bind(lease.seq)
    .bind(node)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// [`complete_one`] for many jobs of this node in one statement: returns
/// the id and lease sequence of those whose lease it still held (and so
/// completed).
pub async fn complete_held(
    tx: &mut Transaction<'_, Postgres>,
    leases: &[Lease],
    node: &str,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<(i64, i32)>, sqlx::Error> {
    let ids: Vec<i64> = leases.iter().map(|l| l.id).collect();
    let seqs: Vec<i32> = leases.iter().map(|l| l.seq).collect();
    sqlx::query_as(COMPLETE_HELD)
        .bind(ids)
        .bind(seqs)
        .bind(node)
        .bind(now)
        .fetch_all(&mut **tx)
        .await
}

/// The statement of [`complete_held`] (public for the tests of its plan).
///
/// It runs in workers' transactions, on plans the connection keeps. The
/// rows are found by primary key (`j.id = ANY($1)`); the state test is
/// written so that it does not match the partial indexes of running jobs
/// (`IS TRUE`), which a generic plan made while the table was small
/// preferred: read whole on every call, one of them held an entry for
/// every job that ever ran until the next VACUUM.
#[doc(hidden)]
pub const COMPLETE_HELD: &str = "UPDATE tuma_jobs j
     SET state = 'completed', finished_at = coalesce($4, now()), locked_by = NULL, locked_until = NULL
     FROM unnest($1::bigint[], $2::int[]) AS l(id, seq)
     WHERE j.id = ANY($1) AND j.id = l.id AND j.lease_seq = l.seq
       AND (j.state = 'running') IS TRUE AND j.locked_by = $3
     RETURNING j.id, j.lease_seq";

/// One job's end other than plain completion, for [`finish_many`].
#[derive(Debug, Clone)]
pub struct Finish {
    pub lease: Lease,
    /// `available` (retry or snooze), `dead` or `cancelled`.
    pub state: &'static str,
    /// Give back the attempt the claim counted (snooze, release on shutdown).
    pub refund_attempt: bool,
    /// For `available`: wait this long from now.
    pub delay_ms: i64,
    /// Appended to the job's error history when present.
    pub error: Option<Value>,
}

/// Records retries, dead jobs, cancellations and releases in one statement
/// (deadlock-free for the reason given at [`complete_many`]),
/// for jobs this node still holds. A job whose cancellation was requested
/// meanwhile becomes `cancelled` instead of being retried.
pub async fn finish_many(
    pool: &PgPool,
    finishes: &[Finish],
    node: &str,
    now: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let mut finishes: Vec<&Finish> = finishes.iter().collect();
    finishes.sort_by_key(|f| f.lease.id);
    let ids: Vec<i64> = finishes.iter().map(|f| f.lease.id).collect();
    let seqs: Vec<i32> = finishes.iter().map(|f| f.lease.seq).collect();
    let states: Vec<&str> = finishes.iter().map(|f| f.state).collect();
    let refunds: Vec<i32> = finishes.iter().map(|f| i32::from(f.refund_attempt)).collect();
    let delays: Vec<i64> = finishes.iter().map(|f| f.delay_ms).collect();
    let errors: Vec<Option<&Value>> = finishes.iter().map(|f| f.error.as_ref()).collect();
    let done = sqlx::query(
        "UPDATE tuma_jobs j
         SET state = CASE WHEN u.state = 'available' AND j.cancel_requested_at IS NOT NULL
                          THEN 'cancelled'::tuma_job_state ELSE u.state::tuma_job_state END,
             attempt = j.attempt - u.refund,
             run_at = CASE WHEN u.state = 'available'
                           THEN coalesce($7, now()) + u.delay_ms * interval '1 millisecond' ELSE j.run_at END,
             finished_at = CASE WHEN u.state = 'available' AND j.cancel_requested_at IS NULL
                                THEN NULL ELSE coalesce($7, now()) END,
             locked_by = NULL, locked_until = NULL,
             errors = CASE WHEN u.error IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(u.error) END
         FROM unnest($1::int8[], $2::text[], $3::int4[], $4::int8[], $5::jsonb[], $8::int4[])
              AS u(id, state, refund, delay_ms, error, seq)
         WHERE j.id = ANY($1) AND j.id = u.id AND j.lease_seq = u.seq AND j.state = 'running' AND j.locked_by = $6",
    )
    .bind(&ids)
    .bind(&states)
    .bind(&refunds)
    .bind(&delays)
    .bind(&errors)
    .bind(node)
    .bind(now)
    .bind(&seqs)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// What a heartbeat learned about one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Renewed; `true` when a cancellation was requested.
    Renewed { cancel_requested: bool },
    /// Still this node's, but its row is locked (a worker's transaction is
    /// completing it); not renewed this time, not lost either.
    Busy,
    /// Completed under this lease by the worker's own transaction
    /// (`complete_in`), whose outcome has not reached the in-flight map yet.
    Finished,
    /// No longer held under this lease.
    Lost,
}

/// Extends the given leases that `node` still holds. Skips rows another
/// transaction has locked instead of waiting behind it, so one slow worker
/// transaction cannot stall a node's heartbeat.
pub async fn heartbeat(
    pool: &PgPool,
    leases: &[Lease],
    node: &str,
    lease_ms: i64,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<(Lease, LeaseStatus)>, sqlx::Error> {
    let (ids, seqs) = split(leases);
    let renewed: Vec<(i64, i32, bool)> = sqlx::query_as(
        "WITH mine AS (
             SELECT j.id FROM tuma_jobs j
             JOIN unnest($1::int8[], $2::int4[]) AS u(id, seq) ON j.id = u.id AND j.lease_seq = u.seq
             WHERE j.id = ANY($1) AND j.state = 'running' AND j.locked_by = $3
             ORDER BY j.id
             FOR UPDATE OF j SKIP LOCKED
         )
         UPDATE tuma_jobs j
         SET locked_until = coalesce($5, now()) + $4 * interval '1 millisecond'
         FROM mine WHERE j.id = mine.id
         RETURNING j.id, j.lease_seq, j.cancel_requested_at IS NOT NULL",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(node)
    .bind(lease_ms)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let renewed: std::collections::HashMap<Lease, bool> = renewed
        .into_iter()
        .map(|(id, seq, cancel)| (Lease { id, seq }, cancel))
        .collect();
    let missing: Vec<Lease> = leases.iter().copied().filter(|l| !renewed.contains_key(l)).collect();
    // Those not renewed: still running here (a worker's transaction holds
    // the row) or completed under this very lease by such a transaction.
    let elsewhere: std::collections::HashMap<Lease, bool> = if missing.is_empty() {
        Default::default()
    } else {
        let (ids, seqs) = split(&missing);
        sqlx::query_as::<_, (i64, i32, bool)>(
            "SELECT j.id, j.lease_seq, j.state = 'completed' FROM tuma_jobs j
             JOIN unnest($1::int8[], $2::int4[]) AS u(id, seq) ON j.id = u.id AND j.lease_seq = u.seq
             WHERE j.id = ANY($1) AND (j.state = 'running' AND j.locked_by = $3 OR j.state = 'completed')",
        )
        .bind(&ids)
        .bind(&seqs)
        .bind(node)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, seq, completed)| (Lease { id, seq }, completed))
        .collect()
    };
    Ok(leases
        .iter()
        .map(|lease| {
            let status = match (renewed.get(lease), elsewhere.get(lease)) {
                (Some(&cancel_requested), _) => LeaseStatus::Renewed { cancel_requested },
                (None, Some(false)) => LeaseStatus::Busy,
                (None, Some(true)) => LeaseStatus::Finished,
                (None, None) => LeaseStatus::Lost,
            };
            (*lease, status)
        })
        .collect())
}

/// A job the rescuer moved, and where to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Rescued {
    pub id: JobId,
    pub kind: String,
    pub state: String,
}

/// Re-queues up to `limit` running jobs whose lease ran out (their node
/// crashed, was killed, or lost the database). The attempt the lost run used
/// stays counted: a job out of attempts goes dead, a cancelled one cancelled.
pub async fn rescue_expired(
    pool: &PgPool,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<Rescued>, sqlx::Error> {
    sqlx::query_as(
        "WITH expired AS (
             SELECT id, locked_by FROM tuma_jobs
             WHERE state = 'running' AND locked_until < coalesce($2, now())
             ORDER BY locked_until
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE tuma_jobs j
         SET state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'::tuma_job_state
                          WHEN j.attempt >= j.max_attempts THEN 'dead'::tuma_job_state
                          ELSE 'available'::tuma_job_state END,
             finished_at = CASE WHEN j.cancel_requested_at IS NULL AND j.attempt < j.max_attempts
                                THEN NULL ELSE coalesce($2, now()) END,
             run_at = coalesce($2, now()),
             locked_by = NULL, locked_until = NULL,
             errors = j.errors || jsonb_build_array(jsonb_build_object(
                 'attempt', j.attempt, 'at', coalesce($2, now()), 'kind', 'lease_expired',
                 'error', 'lease held by ' || j.locked_by || ' expired without completion')),
             cancel_requested_at = j.cancel_requested_at
         FROM expired
         WHERE j.id = expired.id AND j.state = 'running' AND j.locked_by = expired.locked_by
           AND j.locked_until < coalesce($2, now())
         RETURNING j.id, j.kind, j.state::text AS state",
    )
    .bind(limit)
    .bind(now)
    .fetch_all(pool)
    .await
}

/// Deletes up to `limit` jobs in `states` that finished before `older_than_s`
/// seconds ago. Returns how many it deleted.
pub async fn delete_finished(
    pool: &PgPool,
    states: &[&str],
    older_than_s: i64,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        // The rows are locked by the subquery and checked again by the
        // DELETE, so a job re-run by an admin meanwhile is never deleted.
        "DELETE FROM tuma_jobs WHERE id IN (
             SELECT id FROM tuma_jobs
             WHERE state = ANY($1::text[]::tuma_job_state[])
               AND finished_at < coalesce($4, now()) - $2 * interval '1 second'
             ORDER BY finished_at
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         ) AND state = ANY($1::text[]::tuma_job_state[])",
    )
    .bind(states)
    .bind(older_than_s)
    .bind(limit)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes cron tick records older than `older_than_s` seconds; a tick that
/// old can no longer be fired twice because no node would compute it again.
pub async fn delete_old_ticks(
    pool: &PgPool,
    older_than_s: i64,
    limit: i64,
    now: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM tuma_cron_ticks WHERE (entry, tick_at) IN (
             SELECT entry, tick_at FROM tuma_cron_ticks
             WHERE tick_at < coalesce($3, now()) - $1 * interval '1 second'
             LIMIT $2
         )",
    )
    .bind(older_than_s)
    .bind(limit)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Runnable jobs per queue and how long the oldest has waited, in seconds.
pub async fn queue_depths(pool: &PgPool, now: Option<DateTime<Utc>>) -> Result<Vec<(String, i64, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT queue, count(*),
                coalesce(extract(epoch FROM coalesce($1, now()) - min(run_at))::float8, 0)
         FROM tuma_jobs
         WHERE state = 'available' AND run_at <= coalesce($1, now())
         GROUP BY queue",
    )
    .bind(now)
    .fetch_all(pool)
    .await
}

/// Records that cron `entry` fired for `tick`; `false` if another node
/// already did (the caller then rolls back the job it enqueued).
pub async fn record_tick(
    tx: &mut PgConnection,
    entry: &str,
    tick: DateTime<Utc>,
    job_id: JobId,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO tuma_cron_ticks (entry, tick_at, job_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(entry)
    .bind(tick)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Since when each of `entries` (name, schedule) has run on its schedule:
/// entries no node has run before, or whose schedule changed, are recorded
/// as of `now`. Ticks before an entry's instant here were never owed.
pub async fn cron_entries_since(
    pool: &PgPool,
    entries: &[(&str, &str)],
    now: DateTime<Utc>,
) -> Result<HashMap<String, DateTime<Utc>>, sqlx::Error> {
    let (names, schedules): (Vec<&str>, Vec<&str>) = entries.iter().copied().unzip();
    let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "WITH given AS (
             SELECT * FROM unnest($1::text[], $2::text[]) AS g(entry, schedule)
         ), recorded AS (
             INSERT INTO tuma_cron_entries (entry, schedule, since)
             SELECT entry, schedule, $3 FROM given
             ON CONFLICT (entry) DO UPDATE
                SET schedule = EXCLUDED.schedule,
                    since = CASE WHEN tuma_cron_entries.schedule IS NULL
                                 THEN tuma_cron_entries.since ELSE EXCLUDED.since END
                WHERE tuma_cron_entries.schedule IS DISTINCT FROM EXCLUDED.schedule
             RETURNING entry, since
         )
         SELECT entry, since FROM recorded
         UNION ALL
         SELECT c.entry, c.since FROM tuma_cron_entries c JOIN given g USING (entry)
         WHERE c.entry NOT IN (SELECT entry FROM recorded)",
    )
    .bind(&names)
    .bind(&schedules)
    .bind(now)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Whether cron `entry`'s `tick` has been fired (and not yet forgotten).
pub async fn tick_recorded(pool: &PgPool, entry: &str, tick: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tuma_cron_ticks WHERE entry = $1 AND tick_at = $2)")
        .bind(entry)
        .bind(tick)
        .fetch_one(pool)
        .await
}

/// How many jobs are in `state`.
pub async fn count_in_state(pool: &PgPool, state: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM tuma_jobs WHERE state = $1::tuma_job_state")
        .bind(state)
        .fetch_one(pool)
        .await
}

pub async fn get_job(pool: &PgPool, id: JobId) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM tuma_jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Jobs in `state`, newest first, at most `limit`.
pub async fn list_jobs(pool: &PgPool, state: &str, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM tuma_jobs WHERE state::text = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What re-running a dead job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// It is available again, with a fresh set of attempts.
    Requeued,
    /// It is not dead (or does not exist); nothing changed.
    NotDead,
    /// Another live job holds its unique key; re-running it would do the
    /// same work twice, so it stays dead.
    KeyTaken,
}

/// Re-runs a dead job now, with a fresh set of attempts; its error history is
/// kept.
pub async fn retry_dead(pool: &PgPool, id: JobId, now: Option<DateTime<Utc>>) -> Result<RetryOutcome, sqlx::Error> {
    let requeued = sqlx::query_scalar::<_, String>(
        "UPDATE tuma_jobs
         SET state = 'available', attempt = 0, run_at = coalesce($2, now()), finished_at = NULL,
             cancel_requested_at = NULL
         WHERE id = $1 AND state = 'dead'
         RETURNING queue",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(pool)
    .await;
    match requeued {
        Ok(Some(queue)) => {
            sqlx::query("SELECT pg_notify('tuma_jobs', $1)")
                .bind(queue)
                .execute(pool)
                .await?;
            Ok(RetryOutcome::Requeued)
        }
        Ok(None) => Ok(RetryOutcome::NotDead),
        // 23505: the live-unique index refused it.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(RetryOutcome::KeyTaken),
        Err(e) => Err(e),
    }
}

/// What a cancel request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting; it is now cancelled.
    Cancelled,
    /// It is running; its node will stop it at its next heartbeat.
    Requested,
    /// It had already finished (completed, dead or cancelled), or no such job.
    AlreadyFinished,
}

pub async fn cancel(pool: &PgPool, id: JobId, now: Option<DateTime<Utc>>) -> Result<CancelOutcome, sqlx::Error> {
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE tuma_jobs
         SET state = CASE WHEN state = 'available' THEN 'cancelled'::tuma_job_state ELSE state END,
             finished_at = CASE WHEN state = 'available' THEN coalesce($2, now()) ELSE finished_at END,
             cancel_requested_at = coalesce($2, now())
         WHERE id = $1 AND state IN ('available', 'running')
         RETURNING state::text",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(match state.as_deref() {
        Some("cancelled") => CancelOutcome::Cancelled,
        Some(_) => CancelOutcome::Requested,
        None => CancelOutcome::AlreadyFinished,
    })
}

/// Pauses or resumes a queue on every node.
pub async fn set_paused(
    pool: &PgPool,
    queue: &str,
    paused: bool,
    now: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tuma_job_queues (name, paused_at, paused_until, updated_at)
         VALUES ($1, CASE WHEN $2 THEN coalesce($3, now()) END, NULL, coalesce($3, now()))
         ON CONFLICT (name) DO UPDATE
         SET paused_at = excluded.paused_at, paused_until = NULL, updated_at = excluded.updated_at",
    )
    .bind(queue)
    .bind(paused)
    .bind(now)
    .execute(pool)
    .await?;
    if !paused {
        sqlx::query("SELECT pg_notify('tuma_jobs', $1)")
            .bind(queue)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Pauses a queue on every node for `pause` from now on the database's
/// clock, when claims resume on their own. A manual pause (no end) is left
/// as it is; an earlier timed pause is extended, never shortened.
pub async fn pause_for(
    pool: &PgPool,
    queue: &str,
    pause: std::time::Duration,
    now: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    // The end is reckoned on the clock the claims compare it with.
    sqlx::query(
        "INSERT INTO tuma_job_queues (name, paused_at, paused_until, updated_at)
         VALUES ($1, coalesce($3, now()), coalesce($3, now()) + $2 * interval '1 millisecond', coalesce($3, now()))
         ON CONFLICT (name) DO UPDATE
         SET paused_at = CASE WHEN tuma_job_queues.paused_at IS NOT NULL AND tuma_job_queues.paused_until IS NULL
                              THEN tuma_job_queues.paused_at ELSE excluded.paused_at END,
             paused_until = CASE WHEN tuma_job_queues.paused_at IS NOT NULL AND tuma_job_queues.paused_until IS NULL
                                 THEN NULL
                                 ELSE greatest(tuma_job_queues.paused_until, excluded.paused_until) END,
             updated_at = excluded.updated_at",
    )
    .bind(queue)
    .bind(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX))
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Which jobs an admin is looking at (the console's jobs page); every part
/// optional, all combined.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    /// Any of these states; empty means every state.
    pub states: Vec<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Jobs whose arguments name this intent.
    pub intent_id: Option<uuid::Uuid>,
    /// The cursor: only jobs with a smaller id.
    pub before: Option<i64>,
}

/// Jobs matching `filter`, newest first, at most `limit`.
pub async fn list_filtered(pool: &PgPool, filter: &JobFilter, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM tuma_jobs
         WHERE (cardinality($1::text[]) = 0 OR state::text = ANY($1))
           AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR queue = $3)
           AND ($4::text IS NULL OR args->>'intent_id' = $4) AND ($5::bigint IS NULL OR id < $5)
         ORDER BY id DESC LIMIT $6"
    ))
    .bind(&filter.states)
    .bind(&filter.kind)
    .bind(&filter.queue)
    .bind(filter.intent_id.map(|id| id.to_string()))
    .bind(filter.before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many jobs match `filter` (its cursor ignored).
pub async fn count_filtered(pool: &PgPool, filter: &JobFilter) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM tuma_jobs
         WHERE (cardinality($1::text[]) = 0 OR state::text = ANY($1))
           AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR queue = $3)
           AND ($4::text IS NULL OR args->>'intent_id' = $4)",
    )
    .bind(&filter.states)
    .bind(&filter.kind)
    .bind(&filter.queue)
    .bind(filter.intent_id.map(|id| id.to_string()))
    .fetch_one(pool)
    .await
}

/// Ids of jobs matching `filter` (its cursor ignored), oldest first, at most
/// `limit`: what a filter-wide action acts on, one job at a time.
pub async fn ids_filtered(pool: &PgPool, filter: &JobFilter, limit: i64) -> Result<Vec<JobId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM tuma_jobs
         WHERE (cardinality($1::text[]) = 0 OR state::text = ANY($1))
           AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR queue = $3)
           AND ($4::text IS NULL OR args->>'intent_id' = $4)
         ORDER BY id LIMIT $5",
    )
    .bind(&filter.states)
    .bind(&filter.kind)
    .bind(&filter.queue)
    .bind(filter.intent_id.map(|id| id.to_string()))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Deletes a dead job now, as retention would after `retention.dead_s`:
/// for a job an admin has looked at and will not re-run. `false` when it
/// is not dead (or does not exist).
pub async fn discard_dead(pool: &PgPool, id: JobId) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM tuma_jobs WHERE id = $1 AND state = 'dead'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// The queues paused now, by an admin or (until its time) by a provider's
/// circuit breaker: the claim query's own test.
pub async fn paused_queues(pool: &PgPool, now: Option<DateTime<Utc>>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM tuma_job_queues
         WHERE paused_at IS NOT NULL AND (paused_until IS NULL OR paused_until > coalesce($1, now()))",
    )
    .bind(now)
    .fetch_all(pool)
    .await
}

/// A queue's pause controls: (name, paused_at, paused_until).
pub async fn queue_controls(
    pool: &PgPool,
) -> Result<Vec<(String, Option<DateTime<Utc>>, Option<DateTime<Utc>>)>, sqlx::Error> {
    sqlx::query_as("SELECT name, paused_at, paused_until FROM tuma_job_queues ORDER BY name")
        .fetch_all(pool)
        .await
}

/// Jobs per queue and state (for the console's queue table).
pub async fn counts_by_queue(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT queue, state::text, count(*) FROM tuma_jobs GROUP BY queue, state ORDER BY queue, state")
        .fetch_all(pool)
        .await
}

/// Whether a job with one of `keys` as its unique key is waiting or running.
pub async fn unique_keys_pending(conn: &mut PgConnection, keys: &[String]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tuma_jobs
                         WHERE unique_key = ANY($1) AND state IN ('available', 'running'))",
    )
    .bind(keys)
    .fetch_one(conn)
    .await
}
