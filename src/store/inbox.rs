//! SQL for the provider callback inbox.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runner::store::{bind_jobs, jobs_cte_from};
use crate::runner::NewJob;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    pub id: i64,
    pub provider: String,
    pub kind: String,
    pub token: String,
    pub body: Vec<u8>,
    pub parse_error: Option<String>,
    pub outcome: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// A callback as received, and the job that is to process it.
pub struct NewCallback {
    pub provider: &'static str,
    pub kind: String,
    pub token: String,
    pub body: Vec<u8>,
    pub parse_error: Option<String>,
    pub remote_addr: Option<String>,
    /// Set when the callback is not to be processed at all: then `process`
    /// is not enqueued.
    pub outcome: Option<&'static str>,
    /// A job over a group of callbacks: its `inbox_ids` argument is set to
    /// the stored rows' ids of every callback of the group that names the
    /// same job kind and queue (one job for them all).
    pub process: NewJob,
}

/// Stores `callbacks` and enqueues their processing (of those not settled
/// already) with one statement: one round trip and one commit for all.
/// Callbacks whose `process` jobs are of one kind and queue share one job,
/// its `inbox_ids` their rows' ids in the callbacks' order (the first such
/// callback's job gives the options). Returns the stored rows' ids, in the
/// callbacks' order.
pub async fn insert_and_enqueue(
    pool: &PgPool,
    callbacks: &[NewCallback],
    notify: bool,
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<i64>, sqlx::Error> {
    // One job per kind and queue, and for each callback the place (from 1)
    // of the job that processes it.
    let mut jobs: Vec<NewJob> = Vec::new();
    let mut job_of: Vec<Option<i64>> = Vec::with_capacity(callbacks.len());
    for callback in callbacks {
        if callback.outcome.is_some() {
            job_of.push(None);
            continue;
        }
        let process = &callback.process;
        let place = match jobs
            .iter()
            .position(|j| j.kind == process.kind && j.queue == process.queue)
        {
            Some(i) => i,
            None => {
                jobs.push(process.clone());
                jobs.len() - 1
            }
        };
        job_of.push(Some(place as i64 + 1));
    }
    // The ids are drawn first, in the callbacks' order, so that each job
    // can name its own rows.
    let sql = format!(
        "WITH wanted AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[],
                                  $9::int8[])
                 WITH ORDINALITY
                 AS w(cb_provider, cb_kind, cb_token, cb_body, cb_parse_error, cb_remote_addr, cb_outcome, cb_job, n)
         ), ids AS (
             SELECT n, nextval(pg_get_serial_sequence('callback_inbox', 'id')) AS id FROM wanted ORDER BY n
         ), stored AS (
             INSERT INTO callback_inbox (id, provider, kind, token, body, parse_error, remote_addr, outcome,
                                         processed_at)
             OVERRIDING SYSTEM VALUE
             SELECT ids.id, w.cb_provider, w.cb_kind, w.cb_token, w.cb_body, w.cb_parse_error, w.cb_remote_addr,
                    w.cb_outcome, CASE WHEN w.cb_outcome IS NULL THEN NULL ELSE now() END
             FROM wanted w JOIN ids ON ids.n = w.n
             ORDER BY w.n
             RETURNING id
         ), {}
         SELECT ids.id, (SELECT count(*) FROM stored), (SELECT count(*) FROM jobs_notified)
         FROM ids ORDER BY ids.n",
        jobs_cte_from(
            10,
            "$8",
            "true",
            "input.args || jsonb_build_object('inbox_ids',
                 (SELECT jsonb_agg(ids.id ORDER BY ids.n) FROM wanted JOIN ids ON ids.n = wanted.n
                  WHERE wanted.cb_job = input.n))",
            ""
        )
    );
    let query = sqlx::query_as(&sql)
        .bind(callbacks.iter().map(|c| c.provider).collect::<Vec<&str>>())
        .bind(callbacks.iter().map(|c| c.kind.as_str()).collect::<Vec<&str>>())
        .bind(callbacks.iter().map(|c| c.token.as_str()).collect::<Vec<&str>>())
        .bind(callbacks.iter().map(|c| c.body.as_slice()).collect::<Vec<&[u8]>>())
        .bind(
            callbacks
                .iter()
                .map(|c| c.parse_error.as_deref())
                .collect::<Vec<Option<&str>>>(),
        )
        .bind(
            callbacks
                .iter()
                .map(|c| c.remote_addr.as_deref())
                .collect::<Vec<Option<&str>>>(),
        )
        .bind(callbacks.iter().map(|c| c.outcome).collect::<Vec<Option<&str>>>())
        .bind(now)
        .bind(job_of);
    let rows: Vec<(i64, i64, i64)> = bind_jobs(query, &jobs, notify).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(id, _, _)| id).collect())
}

/// The row `id`, locked: two jobs that process one callback (a group's
/// and a stale copy's) take turns, and the second sees the first's outcome.
pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<InboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, kind, token, body, parse_error, outcome, received_at FROM callback_inbox
         WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// How long ago callback `id` was received, in seconds, by the clock that
/// stamped it (the database's, or the controlled clock `now` in tests), so
/// that a node's own clock running fast or slow does not change it.
pub async fn age_s(
    conn: &mut PgConnection,
    id: i64,
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM coalesce($2, now()) - received_at)::float8 FROM callback_inbox WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// The rows `ids` (those that exist), in no particular order.
pub async fn get_many(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<InboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, kind, token, body, parse_error, outcome, received_at
         FROM callback_inbox WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Of the `(provider, dedupe key)` pairs, those an earlier callback (any
/// but `ids`) was applied under: [`already_applied`] for a batch.
pub async fn applied_keys(
    conn: &mut PgConnection,
    keys: &[(&str, &str)],
    ids: &[i64],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let providers: Vec<&str> = keys.iter().map(|(p, _)| *p).collect();
    let dedupe_keys: Vec<&str> = keys.iter().map(|(_, k)| *k).collect();
    sqlx::query_as(
        "SELECT DISTINCT c.provider, c.dedupe_key
         FROM callback_inbox c JOIN unnest($1::text[], $2::text[]) AS k(provider, dedupe_key)
           ON c.provider = k.provider AND c.dedupe_key = k.dedupe_key
         WHERE c.id <> ALL($3) AND c.outcome IN ('applied', 'rejected', 'contradicts_final')",
    )
    .bind(providers)
    .bind(dedupe_keys)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Whether an earlier callback with the same provider ids was applied (or
/// refused, or listed as contradicting its intent's end: the same word
/// again is a duplicate, not a second item for a person).
pub async fn already_applied(
    conn: &mut PgConnection,
    provider: &str,
    dedupe_key: &str,
    id: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM callback_inbox
                        WHERE provider = $1 AND dedupe_key = $2 AND id <> $3
                          AND outcome IN ('applied', 'rejected', 'contradicts_final'))",
    )
    .bind(provider)
    .bind(dedupe_key)
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Records what processing made of a callback.
pub async fn finish(
    conn: &mut PgConnection,
    id: i64,
    intent_id: Option<Uuid>,
    dedupe_key: Option<&str>,
    outcome: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE callback_inbox SET intent_id = $2, dedupe_key = $3, outcome = $4, detail = $5, processed_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(intent_id)
    .bind(dedupe_key.map(|k| super::storable(k).into_owned()))
    .bind(outcome)
    .bind(detail.map(|d| super::storable(d).into_owned()))
    .execute(conn)
    .await?;
    Ok(())
}

/// What processing made of one callback, for [`finish_many`].
pub struct Finished<'a> {
    pub id: i64,
    pub intent_id: Option<Uuid>,
    pub dedupe_key: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

/// [`finish`] for many callbacks in one statement.
pub async fn finish_many(conn: &mut PgConnection, rows: &[Finished<'_>]) -> Result<(), sqlx::Error> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let intents: Vec<Option<Uuid>> = rows.iter().map(|r| r.intent_id).collect();
    let keys: Vec<Option<String>> = rows
        .iter()
        .map(|r| r.dedupe_key.map(|k| super::storable(k).into_owned()))
        .collect();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
    let details: Vec<Option<String>> = rows
        .iter()
        .map(|r| r.detail.map(|d| super::storable(d).into_owned()))
        .collect();
    sqlx::query(
        "UPDATE callback_inbox c
         SET intent_id = f.intent_id, dedupe_key = f.dedupe_key, outcome = f.outcome, detail = f.detail,
             processed_at = now()
         FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[])
              AS f(id, intent_id, dedupe_key, outcome, detail)
         WHERE c.id = f.id",
    )
    .bind(ids)
    .bind(intents)
    .bind(keys)
    .bind(outcomes)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts callbacks by outcome (tests and reports).
pub async fn outcomes(pool: &PgPool) -> Result<Vec<(Option<String>, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT outcome, count(*) FROM callback_inbox GROUP BY outcome ORDER BY outcome")
        .fetch_all(pool)
        .await
}
