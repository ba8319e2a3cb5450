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
    let providers: Vec<&str> = notes.iter().map(|n| n.provider).collect();
    let calls: Vec<&str> = notes.iter().map(|n| n.call).collect();
    let request_ids: Vec<Option<&str>> = notes.iter().map(|n| n.request_id.as_deref()).collect();
    let outcomes: Vec<&str> = notes.iter().map(|n| n.outcome).collect();
    let codes: Vec<Option<&str>> = notes.iter().map(|n| n.code.as_deref()).collect();
    let latencies: Vec<i32> = notes
        .iter()
        .map(|n| i32::try_from(n.latency.as_millis()).unwrap_or(i32::MAX))
        .collect();
    sqlx::query(
        "INSERT INTO provider_calls (intent_id, provider, call, request_id, outcome, code, latency_ms)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[])",
    )
    .bind(ids)
    .bind(providers)
    .bind(calls)
    .bind(request_ids)
    .bind(outcomes)
    .bind(codes)
    .bind(latencies)
    .execute(pool)
    .await?;
    Ok(())
}

/// An intent's calls, oldest first (at most `limit`).
pub async fn for_intent(pool: &PgPool, intent_id: Uuid, limit: i64) -> Result<Vec<ProviderCall>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, call, request_id, outcome, code, latency_ms, called_at
         FROM provider_calls WHERE intent_id = $1 ORDER BY id LIMIT $2",
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
