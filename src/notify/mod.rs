//! Outbound webhooks: every state change of an intent is delivered to the
//! owner's registered endpoints as a signed event, by a job per endpoint and
//! event, retried with backoff; every attempt is recorded.
//!
//! ## Verifying a delivery
//!
//! Each request carries `Tuma-Signature: t=<unix seconds>,v1=<hex>`, where
//! `<hex>` is HMAC-SHA256, keyed with the endpoint's secret, of
//! `"<t>.<raw request body>"`. A receiver recomputes it over the exact bytes
//! it received, compares in constant time, and rejects timestamps more than
//! a few minutes old (replays). [`sign`] is the reference implementation.

pub mod address;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::runner::{JobArgs, JobContext, JobError, JobOptions, NewJob, RetryPolicy, Worker};
use crate::store::{intents, webhooks};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Tuma-Signature";

/// Attempts per delivery: with the policy below (each wait drawn at random
/// under a cap that doubles from 5 s to an hour), at most about 20 hours of
/// retrying, about 10 on average, before a delivery is given up (and stays
/// visible as dead).
const DELIVERY_MAX_ATTEMPTS: i32 = 30;
const DELIVERY_RETRY: RetryPolicy = RetryPolicy {
    base_ms: 5_000,
    max_ms: 3_600_000,
};
/// How long one receiver may take to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error text kept per attempt.
const MAX_ERROR_CHARS: usize = 300;

/// HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`, hex-encoded.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Job arguments: deliver one event to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverWebhook {
    pub endpoint_id: Uuid,
    pub event_id: i64,
}

impl JobArgs for DeliverWebhook {
    const KIND: &'static str = "webhook.deliver";

    fn options() -> JobOptions {
        JobOptions {
            queue: "webhooks".to_owned(),
            max_attempts: DELIVERY_MAX_ATTEMPTS,
            timeout: Some(DELIVERY_TIMEOUT + Duration::from_secs(5)),
            ..JobOptions::default()
        }
    }
}

/// One delivery job per endpoint for event `event_id`. The engine enqueues
/// them in the transaction of the state change itself (a delivery exists iff
/// the change committed), the endpoints read by the statement that recorded
/// the event ([`intents::insert_event`]).
pub fn deliveries(event_id: i64, endpoints: &[Uuid]) -> Vec<NewJob> {
    endpoints
        .iter()
        .map(|&endpoint_id| NewJob::new(&DeliverWebhook { endpoint_id, event_id }).retry_policy(DELIVERY_RETRY))
        .collect()
}

/// The body of a delivery.
#[derive(Debug, Serialize)]
struct Delivery {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: chrono::DateTime<chrono::Utc>,
    data: DeliveryData,
}

#[derive(Debug, Serialize)]
struct DeliveryData {
    intent: crate::api::views::IntentView,
    event: crate::api::views::EventView,
    /// For a loan's events: the loan as it stands now (its outstanding
    /// balance tells the borrower what is left).
    #[serde(skip_serializing_if = "Option::is_none")]
    loan: Option<crate::api::loans::LoanView>,
}

pub struct WebhookWorker {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookWorker {
    /// `allow_private`: `webhooks.allow_private_addresses` (see [`address`]).
    pub fn new(allow_private: bool) -> WebhookWorker {
        let builder = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .user_agent(concat!("tuma-webhooks/", env!("CARGO_PKG_VERSION")))
            // A redirect could send the signed body (or, as a GET, the
            // request) anywhere: a 3xx is a failed attempt like any other.
            .redirect(reqwest::redirect::Policy::none());
        let builder = if allow_private {
            builder
        } else {
            builder.dns_resolver(Arc::new(address::PublicOnly))
        };
        let http = builder.build().expect("the HTTP client builds");
        WebhookWorker { http, allow_private }
    }
}

impl Worker for WebhookWorker {
    type Args = DeliverWebhook;

    async fn work(&self, ctx: JobContext, args: DeliverWebhook) -> Result<(), JobError> {
        let pool = ctx.pool();
        let Some(endpoint) = webhooks::get_endpoint(pool, args.endpoint_id).await? else {
            return Err(JobError::fatal("endpoint no longer exists"));
        };
        if endpoint.disabled_at.is_some() {
            return Ok(());
        }
        if !self.allow_private {
            // Registered before the rule, or under another setting.
            let refused = url::Url::parse(&endpoint.url)
                .map_err(JobError::fatal)
                .map(|url| address::refused_host(&url))?;
            if let Some(why) = refused {
                return Err(JobError::fatal(format!("endpoint refused: {why}")));
            }
        }
        let Some(intent_id) = webhooks::event_intent(pool, args.event_id).await? else {
            return Err(JobError::fatal("event no longer exists"));
        };
        let mut conn = pool.acquire().await?;
        let intent = intents::get(&mut conn, intent_id).await?;
        let loan = match &intent {
            Some(intent) if intent.kind == "loan" => crate::store::loans::get_any(&mut conn, intent_id)
                .await?
                .map(|loan| crate::api::loans::LoanView::new(&loan, intent)),
            _ => None,
        };
        drop(conn);
        let events = intents::events(pool, intent_id).await?;
        let (Some(intent), Some(event)) = (intent, events.into_iter().find(|e| e.id == args.event_id)) else {
            return Err(JobError::fatal("intent or event no longer exists"));
        };
        let body = serde_json::to_vec(&Delivery {
            id: format!("evt_{}", event.id),
            event_type: format!("{}.{}", intent.kind, delivery_type(&event)),
            created_at: event.at,
            data: DeliveryData {
                intent: crate::api::views::IntentView::from_row(&intent),
                event: crate::api::views::EventView::from(&event),
                loan,
            },
        })
        .map_err(JobError::fatal)?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = format!("t={timestamp},v1={}", sign(&endpoint.secret, timestamp, &body));
        let started = Instant::now();
        let sent = self
            .http
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let latency_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        let (status_code, error) = match sent {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16() as i16), None),
            Ok(response) => (
                Some(response.status().as_u16() as i16),
                Some(format!("receiver answered {}", response.status())),
            ),
            // Without the URL: the client chose it, and a token in its query
            // would otherwise be logged and shown in the console.
            Err(error) => (None, Some(error_text(error))),
        };
        webhooks::record_delivery(
            pool,
            &webhooks::DeliveryAttempt {
                endpoint_id: endpoint.id,
                event_id: args.event_id,
                attempt: ctx.attempt,
                status_code,
                error: error.as_deref(),
                latency_ms,
            },
        )
        .await?;
        match error {
            None => Ok(()),
            Some(error) => {
                tracing::info!(endpoint_id = %endpoint.id, event_id = args.event_id, attempt = ctx.attempt, error, "webhook delivery failed; will retry");
                Err(JobError::Retryable(error))
            }
        }
    }
}

/// What a delivery of `event` is, after its intent's kind: `created`,
/// `state_changed`, or `late_success` (the provider's success, refused
/// because the intent had already ended saying the money did not move:
/// the only refused event an owner is told of).
fn delivery_type(event: &intents::EventRow) -> &'static str {
    if event.from_state.is_none() {
        "created"
    } else if event.outcome == "rejected" && event.event == crate::workflow::engine::PROVIDER_SUCCEEDED {
        "late_success"
    } else {
        "state_changed"
    }
}

/// A delivery error as it is logged and recorded: without the URL, and with
/// its causes (a resolver's refusal says why).
fn error_text(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text.chars().take(MAX_ERROR_CHARS).collect()
}
