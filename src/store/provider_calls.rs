//! The record of every provider call made for an intent (migration
//! `provider_calls`): outcome, the provider's code and latency.

use sqlx::PgPool;
use uuid::Uuid;

use crate::providers::adapter::{CallError, Reply};
use crate::providers::Outcome;

/// One call as the console shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderCall {
    pub provider: String,
    pub call: String,
    pub request_id: Option<String>,
    pub outcome: String,
    pub code: Option<String>,
    pub latency_ms: i32,
    pub called_at: chrono::DateTime<chrono::Utc>,
}

/// `(outcome, code)` of an adapter's answer, in the words the table keeps.
pub fn summarize(answer: &Result<Reply, CallError>) -> (&'static str, Option<String>) {
    match answer {
        Ok(reply) => match &reply.outcome {
            Outcome::Succeeded => ("succeeded", None),
            Outcome::Failed { code, .. } => ("failed", Some(code.clone())),
            Outcome::Pending => ("pending", None),
            Outcome::Unknown { code, .. } => ("unknown", Some(code.clone())),
        },
        Err(CallError::Rejected { code, .. }) => ("rejected", Some(code.clone())),
        Err(CallError::Busy(_)) => ("busy", None),
        Err(CallError::Ambiguous(_)) => ("ambiguous", None),
        Err(CallError::Duplicate) => ("duplicate", None),
        Err(CallError::Config(_)) => ("config", None),
    }
}

/// Records provider calls, many in one statement (see
/// [`super::grouped::Grouped::note`]).
pub async fn record_many(pool: &PgPool, notes: &[super::grouped::CallNote]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = notes.iter().map(|n| n.intent_id).collect();
    let jobs: Vec<i64> = notes.iter().map(|n| n.job_id).collect();
    let runs: Vec<i32> = notes.iter().map(|n| n.run).collect();
    let providers: Vec<&str> = notes.iter().map(|n| n.provider).collect();
    let calls: Vec<&str> = notes.iter().map(|n| n.call).collect();
    // Ids and codes are the provider's words: one with a NUL would fail
    // the whole batch.
    let storable = |text: &Option<String>| text.as_deref().map(|t| super::storable(t).into_owned());
    let request_ids: Vec<Option<String>> = notes.iter().map(|n| storable(&n.request_id)).collect();
    let outcomes: Vec<&str> = notes.iter().map(|n| n.outcome).collect();
    let codes: Vec<Option<String>> = notes.iter().map(|n| storable(&n.code)).collect();
    let latencies: Vec<i32> = notes
        .iter()
        .map(|n| i32::try_from(n.latency.as_millis()).unwrap_or(i32::MAX))
        .collect();
    sqlx::query(
        "INSERT INTO provider_calls (intent_id, provider, call, request_id, outcome, code, latency_ms, job_id, run)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
                              $8::int8[], $9::int4[])",
    )
    .bind(ids)
    .bind(providers)
    .bind(calls)
    .bind(request_ids)
    .bind(outcomes)
    .bind(codes)
    .bind(latencies)
    .bind(jobs)
    .bind(runs)
    .execute(pool)
    .await?;
    Ok(())
}

/// An intent's calls, oldest first (at most `limit`). A `sending` note is
/// left out once its call's answer is noted; one never answered (its run
/// ended mid-call) stays, as what an operator needs to know.
pub async fn for_intent(pool: &PgPool, intent_id: Uuid, limit: i64) -> Result<Vec<ProviderCall>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, call, request_id, outcome, code, latency_ms, called_at
         FROM provider_calls c
         WHERE intent_id = $1
           AND NOT (outcome = 'sending' AND EXISTS (
                 SELECT 1 FROM provider_calls a
                 WHERE a.intent_id = c.intent_id AND a.job_id = c.job_id AND a.run = c.run
                   AND a.call = c.call AND a.outcome <> 'sending'))
         ORDER BY id LIMIT $2",
    )
    .bind(intent_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The request id the provider gave in answer to the latest request sent
/// for an intent, if that answer was noted.
pub async fn sent_request(pool: &PgPool, intent_id: Uuid, provider: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT request_id FROM provider_calls
         WHERE intent_id = $1 AND provider = $2 AND call = 'send' AND request_id IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    )
    .bind(intent_id)
    .bind(provider)
    .fetch_optional(pool)
    .await
}

/// Outcomes of a send that say the provider did not process it: refused
/// before processing.
const NOT_SENT: [&str; 3] = ["busy", "rejected", "config"];

/// Whether a request for the intent may have reached `provider` before
/// this run (`run` of job `job_id`): an earlier send was answered at all
/// (accepted, ambiguous, a duplicate, an outcome), or an earlier run noted
/// that it was `sending` and never learned that its request was refused
/// before processing (it ended mid-call). A run that ended before sending
/// (a database error, an open circuit, a shutdown) noted nothing and
/// counts for nothing. A refusal of this run's send is the provider's word
/// on the intent only when this says `false`.
pub async fn may_have_sent_before(
    pool: &PgPool,
    intent_id: Uuid,
    provider: &str,
    job_id: i64,
    run: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(bool_or(reached OR (started AND NOT refused)), false)
         FROM (SELECT bool_or(outcome = 'sending') AS started,
                      bool_or(outcome = ANY($5)) AS refused,
                      bool_or(outcome <> ALL($5) AND outcome <> 'sending') AS reached
               FROM provider_calls
               WHERE intent_id = $1 AND provider = $2 AND call = 'send'
                 AND (job_id, run) IS DISTINCT FROM ($3::int8, $4::int4)
               GROUP BY job_id, run) AS runs",
    )
    .bind(intent_id)
    .bind(provider)
    .bind(job_id)
    .bind(run)
    .bind(&NOT_SENT[..])
    .fetch_one(pool)
    .await
}
