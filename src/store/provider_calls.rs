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

#[allow(clippy::too_many_arguments)]
pub async fn record(
    pool: &PgPool,
    intent_id: Uuid,
    provider: &str,
    call: &str,
    request_id: Option<&str>,
    outcome: &str,
    code: Option<&str>,
    latency: std::time::Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO provider_calls (intent_id, provider, call, request_id, outcome, code, latency_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(intent_id)
    .bind(provider)
    .bind(call)
    .bind(request_id)
    .bind(outcome)
    .bind(code)
    .bind(i32::try_from(latency.as_millis()).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a call, best effort: losing the note must never stop the
/// money's own steps, which the caller takes next.
pub async fn note(
    pool: &PgPool,
    intent_id: Uuid,
    provider: &'static str,
    call: &'static str,
    request_id: Option<&str>,
    (outcome, code): (&str, Option<String>),
    latency: std::time::Duration,
) {
    metrics::histogram!("tuma_provider_call_seconds", "provider" => provider, "call" => call)
        .record(latency.as_secs_f64());
    let noted = record(
        pool,
        intent_id,
        provider,
        call,
        request_id,
        outcome,
        code.as_deref(),
        latency,
    )
    .await;
    if let Err(error) = noted {
        tracing::warn!(%intent_id, provider, %error, "could not note a provider call");
    }
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
