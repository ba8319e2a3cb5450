//! The interface every provider adapter implements, so that one set of
//! workflow actions (submit, prompt, query status) and one callback path
//! serve every provider.
//!
//! The money rules the actions build on these calls:
//! - the request id ([`Request::request_id`]) is ours, chosen and committed
//!   before the first call, and is the idempotency key toward the provider
//!   (Airtel `transaction.id`, MTN `X-Reference-Id`, Vodacom
//!   `input_ThirdPartyConversationID`, Tigo `ReferenceID`); a re-send after
//!   an ambiguous answer always reuses it;
//! - only the provider's word ([`Outcome::Succeeded`] / [`Outcome::Failed`])
//!   moves an intent to a final state; an ambiguous answer never fails one;
//! - a duplicate refusal means "you already sent this": the status query
//!   finds out what became of the first.

use futures::future::BoxFuture;
use rust_decimal::Decimal;

use super::Outcome;

/// Which way the money goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Business → subscriber (B2C, disbursement, transfer).
    Payout,
    /// Subscriber → business, approved by the payer on their phone (USSD or
    /// STK push, request to pay).
    Collection,
}

impl Direction {
    /// From an intent's kind (`payout`, `collection`).
    pub fn of_kind(kind: &str) -> Option<Direction> {
        match kind {
            "payout" => Some(Direction::Payout),
            "collection" => Some(Direction::Collection),
            _ => None,
        }
    }
}

/// One payout or collection request, as the actions hand it to an adapter.
#[derive(Debug, Clone)]
pub struct Request {
    pub direction: Direction,
    /// Our id for this request, committed before the call; the provider's
    /// idempotency key.
    pub request_id: String,
    /// E.164 digits without `+` (e.g. `256772123456`); adapters convert to
    /// the provider's own format at the edge.
    pub msisdn: String,
    /// ISO 3166 alpha-2 of the number (`KE`, `UG`, `TZ`, `RW`).
    pub country: String,
    /// ISO 4217 (`UGX`, `TZS`, …).
    pub currency: String,
    /// Major units; whole units where the provider carries only those
    /// (checked when the intent was created).
    pub amount: Decimal,
    /// The requester's reference, shown to the customer where the provider
    /// has such a field.
    pub reference: String,
    /// The intent's callback token: providers that take a callback URL per
    /// request get `{callback_base_url}/callbacks/{provider}/{kind}/{token}`;
    /// providers whose callback URL is set once in their portal ignore it.
    pub callback_token: String,
}

/// A provider's answer to a request or a status query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub outcome: Outcome,
    /// The provider's transaction id (receipt), once the money moved.
    pub receipt: Option<String>,
    /// The amount the answer says moved, when it says (MTN's status).
    pub amount: Option<Decimal>,
    /// The currency it names, when it names one (MTN's status).
    pub currency: Option<String>,
}

impl Reply {
    /// An answer that names no amount.
    pub fn new(outcome: Outcome, receipt: Option<String>) -> Reply {
        Reply {
            outcome,
            receipt,
            amount: None,
            currency: None,
        }
    }

    pub fn pending() -> Reply {
        Reply::new(Outcome::Pending, None)
    }
}

/// Makes one call to `provider`, recording its latency and outcome
/// ([`observe`]).
pub(crate) async fn observed(
    provider: &'static str,
    operation: &'static str,
    call: impl std::future::Future<Output = Result<Reply, CallError>>,
) -> Result<Reply, CallError> {
    let started = std::time::Instant::now();
    let result = call.await;
    observe(provider, operation, started, &result);
    result
}

/// Records one call to `provider` that began at `started`: its latency
/// (`tuma_provider_request_seconds`) and its outcome
/// (`tuma_provider_responses_total`: the provider's code when it gave one).
fn observe(
    provider: &'static str,
    operation: &'static str,
    started: std::time::Instant,
    result: &Result<Reply, CallError>,
) {
    let outcome = match result {
        Ok(reply) => match &reply.outcome {
            Outcome::Succeeded => "succeeded".to_owned(),
            Outcome::Failed { code, .. } => code.clone(),
            Outcome::Pending => "pending".to_owned(),
            Outcome::Unknown { code, .. } => format!("unknown {code}"),
        },
        Err(CallError::Rejected { code, .. }) => code.clone(),
        Err(CallError::Busy(_)) => "busy".to_owned(),
        Err(CallError::Ambiguous(_)) => "ambiguous".to_owned(),
        Err(CallError::Duplicate) => "duplicate".to_owned(),
        Err(CallError::Config(_)) => "config".to_owned(),
    };
    metrics::histogram!("tuma_provider_request_seconds", "provider" => provider, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("tuma_provider_responses_total", "provider" => provider, "operation" => operation, "outcome" => outcome)
        .increment(1);
}

/// Why a call did not give an answer. Each variant says what is known about
/// the money.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The provider refused the request before anything moved: final for
    /// the intent unless an earlier run may have reached the provider
    /// (`actions::refusal_is_final`), when it is only this re-send's.
    #[error("refused by the provider: {code}: {message}")]
    Rejected { code: String, message: String },
    /// Not processed (rate limited, overloaded, gateway refused before
    /// processing): safe to send again under the same id, later.
    #[error("provider busy: {0}")]
    Busy(String),
    /// The request may or may not have been processed (timeout, 5xx after
    /// sending): never re-sent under a new id; the status query decides.
    #[error("ambiguous provider answer: {0}")]
    Ambiguous(String),
    /// The provider already has a request with this id.
    #[error("the provider already has this request id")]
    Duplicate,
    /// Our own setup is wrong (credentials, keys, URLs): no retry helps.
    #[error("provider configuration problem: {0}")]
    Config(String),
}

impl CallError {
    /// Whether this error counts toward tripping the provider's circuit:
    /// the provider failing fast (5xx bursts, overload), not refusals of
    /// one request.
    pub fn is_provider_trouble(&self) -> bool {
        matches!(self, CallError::Busy(_) | CallError::Ambiguous(_))
    }
}

/// What one stored callback says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackReport {
    /// Our request id it answers, when the body names it.
    pub request_id: Option<String>,
    pub outcome: Outcome,
    /// The provider's transaction id, when the money moved.
    pub receipt: Option<String>,
    /// Provider ids that make two deliveries the same callback.
    pub dedupe_key: String,
    /// The amount the body says moved, when it says (MTN, Tigo).
    pub amount: Option<Decimal>,
    /// The currency it names, when it names one (MTN).
    pub currency: Option<String>,
}

impl CallbackReport {
    /// The report with every id as the database can hold and compare it: a
    /// NUL, which PostgreSQL's text refuses, becomes U+FFFD (as when the
    /// inbox stored the dedupe key), so that such an id is applied once
    /// instead of failing its job until it dies.
    pub fn storable(self) -> CallbackReport {
        let clean = crate::store::storable_owned;
        CallbackReport {
            request_id: self.request_id.map(clean),
            receipt: self.receipt.map(clean),
            dedupe_key: clean(self.dedupe_key),
            currency: self.currency.map(clean),
            ..self
        }
    }
}

/// A provider's adapter: its client, wire types and code mapping behind
/// the calls the workflow actions make.
pub trait Adapter: Send + Sync + 'static {
    /// The provider's name in configuration and on intents (`airtel`, …).
    fn name(&self) -> &'static str;

    /// Sends a payout or collection request. `Ok` carries what the provider
    /// said synchronously: usually [`Outcome::Pending`] (accepted, the
    /// result comes by callback or status query); some providers answer
    /// with the final outcome in the call itself.
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Reply, CallError>>;

    /// Asks what became of the request `request_id` (ours) of `direction`,
    /// in the market of `country`/`currency`. "Not found" shortly after an
    /// ambiguous send is [`Outcome::Pending`], not a failure.
    fn status(
        &self,
        direction: Direction,
        request_id: String,
        country: String,
        currency: String,
    ) -> BoxFuture<'_, Result<Reply, CallError>>;

    /// The callback kinds this provider sends (the `{kind}` segment of
    /// `/callbacks/{provider}/{kind}/{token}`).
    fn callback_kinds(&self) -> &'static [&'static str];

    /// Reads a callback body of `kind`; `Err` is a body that cannot be read
    /// (stored as malformed, never applied), or one whose signature does
    /// not verify.
    fn parse_callback(&self, kind: &str, body: &[u8]) -> Result<CallbackReport, String>;

    /// The token in the callback URL configured once in the provider's
    /// portal (providers with no per-request callback URL): callbacks with
    /// this token are matched to intents by their request id.
    fn app_callback_token(&self) -> Option<String>;

    /// The HTTP status and JSON body a stored callback is answered with
    /// (`accepted`: stored for processing, else refused or unreadable).
    fn callback_ack(&self, _kind: &str, accepted: bool) -> (u16, serde_json::Value) {
        if accepted {
            (200, serde_json::json!({ "status": "accepted" }))
        } else {
            (400, serde_json::json!({ "status": "refused" }))
        }
    }
}

/// A stable, unguessable token derived from a provider credential: the last
/// path segment of an app-wide callback URL.
pub fn derive_token(provider: &str, secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("tuma.callback.{provider}.{secret}"));
    hex::encode(&digest[..16])
}
