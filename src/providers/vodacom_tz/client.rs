//! The Open API HTTP client for Tanzania: the session cache, B2C, single-
//! stage C2B and the status query, behind the [`Adapter`] calls. Every error
//! says whether money may have moved.
//!
//! Authentication: the API key, RSA-encrypted (PKCS#1 v1.5) with Vodacom's
//! public key and base64-encoded, is the bearer of `getSession`; the session
//! id it returns, encrypted the same way, is the bearer of every other call.
//! One session is cached and shared; exactly one caller opens a new one
//! while the others wait for it, and an `INS-2` (or bare 401) answer drops
//! it and sends the request once more under a new one: a refused session
//! stops the request at the gateway, so nothing moved.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Encrypt, RsaPublicKey};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;

use super::codes::{self, Verdict};
use super::wire::{
    self, B2cRequest, C2bRequest, PaymentResponse, QueryResponse, ResponseHead, SessionResponse, StatusQuery,
};
use super::VodacomConfig;
use crate::providers::adapter::{Adapter, CallError, CallbackReport, Direction, Reply, Request};
use crate::providers::Outcome;

const PROVIDER: &str = "vodacom_tz";

/// Query codes that mean "no such reference": read as not found (so still
/// pending), since a request may still be arriving after an ambiguous send
/// (unverified: the portal documents only `N/A` for an unknown one).
const NOT_FOUND_CODES: [&str; 3] = ["INS-14", "INS-18", "INS-19"];

/// Reads Vodacom's public key: base64 DER SubjectPublicKeyInfo, as the
/// portal shows it, or a PEM `PUBLIC KEY` block.
pub fn parse_public_key(text: &str) -> Result<RsaPublicKey, String> {
    if text.contains("BEGIN PUBLIC KEY") {
        return RsaPublicKey::from_public_key_pem(text).map_err(|e| e.to_string());
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("not base64: {e}"))?;
    RsaPublicKey::from_public_key_der(&der).map_err(|e| format!("not an RSA public key: {e}"))
}

/// A bearer: `base64(RSA_PKCS1v15(secret))` under Vodacom's public key.
pub fn encrypt_bearer(key: &RsaPublicKey, secret: &str) -> Result<String, String> {
    let encrypted = key
        .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, secret.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(encrypted))
}

/// The open session: the bearer made from its id, and when to replace it.
struct Session {
    bearer: String,
    refresh_at: Instant,
}

/// What goes out with a call.
enum Payload<'a> {
    Json(serde_json::Value),
    Query(&'a StatusQuery),
}

/// An answer that came back, before its code is read.
struct Answered {
    status: StatusCode,
    /// The response code and description, when the body has a code.
    head: Option<ResponseHead>,
    body: String,
}

pub struct VodacomClient {
    http: reqwest::Client,
    config: VodacomConfig,
    public_key: RsaPublicKey,
    session: Mutex<Option<Session>>,
}

impl VodacomClient {
    pub fn new(config: VodacomConfig) -> Result<VodacomClient, String> {
        let key_text = if config.public_key.trim().is_empty() {
            super::SIMULATOR_PUBLIC_KEY
        } else {
            config.public_key.as_str()
        };
        let public_key = parse_public_key(key_text).map_err(|e| format!("vodacom_tz.public_key: {e}"))?;
        if config.request_timeout_ms == 0 || config.c2b_timeout_ms == 0 {
            return Err("vodacom_tz.request_timeout_ms and c2b_timeout_ms must be above 0".into());
        }
        if !config.path_prefix.starts_with('/') {
            return Err("vodacom_tz.path_prefix must start with '/' (e.g. /sandbox/ipg/v2/vodacomTZN)".into());
        }
        // Timeouts are set per call: C2B blocks far longer than the others.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.request_timeout_ms))
            .build()
            .map_err(|e| format!("vodacom_tz HTTP client: {e}"))?;
        Ok(VodacomClient {
            http,
            config,
            public_key,
            session: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &VodacomConfig {
        &self.config
    }

    /// `{base_url}{path_prefix}/{operation}` (operations end in `/`).
    fn url(&self, operation: &str) -> String {
        format!(
            "{}/{}/{operation}",
            self.config.base_url.trim_end_matches('/'),
            self.config.path_prefix.trim_matches('/')
        )
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// The bearer of the open session, or of a new one opened by exactly one
    /// caller while the others wait (the lock is held through activation).
    async fn session(&self) -> Result<String, CallError> {
        let mut cached = self.session.lock().await;
        if let Some(session) = cached.as_ref() {
            if Instant::now() < session.refresh_at {
                return Ok(session.bearer.clone());
            }
        }
        let session_id = self.open_session().await?;
        let bearer = encrypt_bearer(&self.public_key, &session_id)
            .map_err(|e| CallError::Config(format!("encrypting the session id: {e}")))?;
        if self.config.session_activation_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.session_activation_ms)).await;
        }
        metrics::counter!("tuma_provider_token_refreshes_total", "provider" => PROVIDER).increment(1);
        *cached = Some(Session {
            bearer: bearer.clone(),
            refresh_at: Instant::now() + Duration::from_secs(self.config.session_max_age_s.max(1)),
        });
        Ok(bearer)
    }

    /// `GET getSession/` with the encrypted API key; returns the session id.
    async fn open_session(&self) -> Result<String, CallError> {
        let bearer = encrypt_bearer(&self.public_key, self.config.api_key.expose_secret())
            .map_err(|e| CallError::Config(format!("encrypting the API key: {e}")))?;
        let response = self
            .http
            .get(self.url("getSession/"))
            .bearer_auth(bearer)
            .header("Origin", &self.config.origin)
            .timeout(self.request_timeout())
            .send()
            .await
            // Opening a session moves no money: any failure is "try later".
            .map_err(|e| CallError::Busy(format!("session request: {}", without_url(&e))))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Busy(format!("session answer: {}", without_url(&e))))?;
        let answer: SessionResponse = serde_json::from_str(&text).unwrap_or_default();
        if answer.response_code.trim() == "INS-0" && !answer.session_id.is_empty() {
            return Ok(answer.session_id);
        }
        let refused = "the API key was refused (check vodacom_tz.api_key and public_key)";
        Err(match codes::response(&answer.response_code, &answer.response_desc) {
            Verdict::SessionRefused => CallError::Config(refused.into()),
            Verdict::Error(CallError::Busy(message) | CallError::Ambiguous(message)) => CallError::Busy(message),
            Verdict::Error(error) => error,
            Verdict::Outcome(_) if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN => {
                CallError::Config(refused.into())
            }
            Verdict::Outcome(_) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                CallError::Busy(format!("session: HTTP {status}"))
            }
            Verdict::Outcome(_) => {
                CallError::Config(format!("session: HTTP {status}, code {:?}", answer.response_code))
            }
        })
    }

    /// Drops the session `bearer` belongs to, unless another caller has
    /// already replaced it.
    async fn forget_session(&self, bearer: &str) {
        let mut cached = self.session.lock().await;
        if cached.as_ref().is_some_and(|s| s.bearer == bearer) {
            *cached = None;
        }
    }

    /// Sends one call under the session; a refused session is replaced and
    /// the call sent once more. Records latency and outcome metrics.
    async fn call(
        &self,
        method: Method,
        operation: &'static str,
        payload: Payload<'_>,
        timeout: Duration,
    ) -> Result<Answered, CallError> {
        let started = Instant::now();
        let result = self.call_once(method, operation, &payload, timeout).await;
        let outcome = match &result {
            Ok(answered) => answered.head.as_ref().map_or_else(
                || format!("http_{}", answered.status.as_u16()),
                |h| h.response_code.clone(),
            ),
            Err(CallError::Busy(_)) => "busy".to_owned(),
            Err(CallError::Ambiguous(_)) => "ambiguous".to_owned(),
            Err(CallError::Duplicate) => "duplicate".to_owned(),
            Err(CallError::Rejected { code, .. }) => code.clone(),
            Err(CallError::Config(_)) => "config".to_owned(),
        };
        metrics::histogram!("tuma_provider_request_seconds", "provider" => PROVIDER, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("tuma_provider_responses_total", "provider" => PROVIDER, "operation" => operation, "outcome" => outcome)
            .increment(1);
        result
    }

    async fn call_once(
        &self,
        method: Method,
        operation: &'static str,
        payload: &Payload<'_>,
        timeout: Duration,
    ) -> Result<Answered, CallError> {
        for attempt in 0..2 {
            let bearer = self.session().await?;
            let mut builder = self
                .http
                .request(method.clone(), self.url(operation))
                .bearer_auth(&bearer)
                .header("Origin", &self.config.origin)
                .timeout(timeout);
            builder = match payload {
                Payload::Json(body) => builder.json(body),
                Payload::Query(query) => builder.query(query),
            };
            let response = match builder.send().await {
                Ok(response) => response,
                // Never connected: nothing was sent.
                Err(e) if e.is_connect() => return Err(CallError::Busy(without_url(&e))),
                Err(e) if e.is_timeout() => {
                    return Err(CallError::Ambiguous(format!(
                        "no answer within {} ms",
                        timeout.as_millis()
                    )))
                }
                Err(e) => return Err(CallError::Ambiguous(without_url(&e))),
            };
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| CallError::Ambiguous(format!("answer cut off: {}", without_url(&e))))?;
            let head = serde_json::from_str::<ResponseHead>(&body)
                .ok()
                .filter(|h| !h.response_code.trim().is_empty());
            let session_refused = match &head {
                Some(head) => matches!(codes::response(&head.response_code, ""), Verdict::SessionRefused),
                None => status == StatusCode::UNAUTHORIZED,
            };
            if !session_refused {
                return Ok(Answered { status, head, body });
            }
            if attempt == 0 {
                tracing::info!(provider = PROVIDER, operation, "session refused; opening a new one");
                self.forget_session(&bearer).await;
            }
        }
        Err(CallError::Config(
            "a new session was refused too (INS-2); check vodacom_tz.api_key, public_key and session_activation_ms"
                .into(),
        ))
    }

    /// Sends a B2C payout or a single-stage C2B collection and returns its
    /// final answer: both are synchronous on this API.
    pub async fn pay(&self, request: &Request) -> Result<Reply, CallError> {
        if request.currency != wire::CURRENCY {
            return Err(CallError::Config(format!(
                "Vodacom Tanzania carries {} only, not {}",
                wire::CURRENCY,
                request.currency
            )));
        }
        let Some(amount) = wire::amount_text(request.amount) else {
            return Err(CallError::Rejected {
                code: "amount".into(),
                message: "not a whole, positive number of shillings".into(),
            });
        };
        if request.msisdn.is_empty() || !request.msisdn.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CallError::Rejected {
                code: "msisdn".into(),
                message: "not E.164 digits".into(),
            });
        }
        let reference = wire::transaction_reference(&request.reference, &request.request_id);
        let (operation, body, timeout) = match request.direction {
            Direction::Payout => {
                let body = B2cRequest {
                    amount,
                    country: wire::COUNTRY.into(),
                    currency: wire::CURRENCY.into(),
                    customer_msisdn: request.msisdn.clone(),
                    service_provider_code: self.config.service_provider_code.clone(),
                    third_party_conversation_id: request.request_id.clone(),
                    transaction_reference: reference,
                    payment_items_desc: wire::items_description(&request.reference, "Payout"),
                };
                ("b2cPayment/", serde_json::to_value(body), self.request_timeout())
            }
            Direction::Collection => {
                let body = C2bRequest {
                    amount,
                    country: wire::COUNTRY.into(),
                    currency: wire::CURRENCY.into(),
                    customer_msisdn: request.msisdn.clone(),
                    service_provider_code: self.config.service_provider_code.clone(),
                    third_party_conversation_id: request.request_id.clone(),
                    transaction_reference: reference,
                    purchased_items_desc: wire::items_description(&request.reference, "Payment"),
                };
                (
                    "c2bPayment/singleStage/",
                    serde_json::to_value(body),
                    Duration::from_millis(self.config.c2b_timeout_ms),
                )
            }
        };
        let body = body.map_err(|e| CallError::Config(format!("request body: {e}")))?;
        let result = self
            .call(Method::POST, operation, Payload::Json(body), timeout)
            .await
            .and_then(payment_reply);
        tracing::info!(
            provider = PROVIDER,
            request_id = %request.request_id,
            msisdn = %masked(&request.msisdn),
            operation,
            result = ?result.as_ref().map(|reply| reply.outcome.label()),
            "Vodacom payment answered"
        );
        result
    }

    /// Asks what became of our request `request_id`.
    pub async fn query(&self, request_id: &str) -> Result<Reply, CallError> {
        let query = StatusQuery {
            query_reference: request_id.to_owned(),
            service_provider_code: self.config.service_provider_code.clone(),
            // The query is a transaction of its own, with its own id.
            third_party_conversation_id: uuid::Uuid::new_v4().simple().to_string(),
            country: wire::COUNTRY.into(),
        };
        let answered = self
            .call(
                Method::GET,
                "queryTransactionStatus/",
                Payload::Query(&query),
                self.request_timeout(),
            )
            .await
            .map_err(query_error)?;
        let Some(head) = &answered.head else {
            return Err(query_error(without_code(answered.status)));
        };
        match codes::response(&head.response_code, &head.response_desc) {
            Verdict::Outcome(Outcome::Succeeded) => {
                let answer: QueryResponse = serde_json::from_str(&answered.body).unwrap_or_default();
                let outcome = codes::transaction_status(&answer.transaction_status);
                let receipt = (outcome == Outcome::Succeeded).then(|| answer.receipt()).flatten();
                Ok(Reply::new(outcome, receipt))
            }
            Verdict::Error(CallError::Rejected { code, .. }) if NOT_FOUND_CODES.contains(&code.as_str()) => {
                Ok(Reply::pending())
            }
            // A failure code answers the query, not the transaction: it says
            // nothing about the money.
            Verdict::Outcome(Outcome::Failed { code, reason }) => Ok(Reply::new(
                Outcome::Unknown {
                    code,
                    detail: format!("the status query failed: {reason}"),
                },
                None,
            )),
            Verdict::Outcome(outcome) => Ok(Reply::new(outcome, None)),
            Verdict::Error(error) => Err(query_error(error)),
            Verdict::SessionRefused => Err(CallError::Config("session refused".into())),
        }
    }
}

/// Reads a payment's answer: the outcome its code gives, with the receipt
/// when paid.
fn payment_reply(answered: Answered) -> Result<Reply, CallError> {
    let Some(head) = &answered.head else {
        return Err(without_code(answered.status));
    };
    match codes::response(&head.response_code, &head.response_desc) {
        Verdict::Outcome(Outcome::Succeeded) => {
            let answer: PaymentResponse = serde_json::from_str(&answered.body).unwrap_or_default();
            let receipt = Some(answer.transaction_id.trim().to_owned()).filter(|id| !id.is_empty());
            Ok(Reply::new(Outcome::Succeeded, receipt))
        }
        Verdict::Outcome(outcome) => Ok(Reply::new(outcome, None)),
        Verdict::Error(error) => Err(error),
        // `call` already replaced the session once.
        Verdict::SessionRefused => Err(CallError::Config("session refused".into())),
    }
}

/// An answer without an `INS-` code (a gateway page, an empty body): the
/// HTTP status is all there is.
fn without_code(status: StatusCode) -> CallError {
    match status {
        StatusCode::TOO_MANY_REQUESTS => CallError::Busy("HTTP 429".into()),
        // Sent, and no readable answer: the money may have moved.
        s if s.is_success() || s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
            CallError::Ambiguous(format!("HTTP {s} without a response code"))
        }
        s @ (StatusCode::UNAUTHORIZED
        | StatusCode::FORBIDDEN
        | StatusCode::NOT_FOUND
        | StatusCode::METHOD_NOT_ALLOWED) => {
            CallError::Config(format!("HTTP {s} (check vodacom_tz.base_url and path_prefix)"))
        }
        s => CallError::Rejected {
            code: format!("HTTP {}", s.as_u16()),
            message: "refused without a response code".into(),
        },
    }
}

/// A query moves no money: whatever kept it from answering, asking again
/// later is safe.
fn query_error(error: CallError) -> CallError {
    match error {
        CallError::Ambiguous(message) => CallError::Busy(format!("status query: {message}")),
        CallError::Duplicate => CallError::Busy("status query id collided".into()),
        other => other,
    }
}

/// The last three digits only: the form a number may take in logs.
fn masked(msisdn: &str) -> String {
    let hidden = msisdn.chars().count().saturating_sub(3);
    msisdn
        .chars()
        .enumerate()
        .map(|(i, c)| if i < hidden { '*' } else { c })
        .collect()
}

/// reqwest errors print the URL; the message is all an operator needs.
fn without_url(error: &reqwest::Error) -> String {
    let error = error.to_string();
    match error.split_once(" for url (") {
        Some((message, _)) => message.to_owned(),
        None => error,
    }
}

impl Adapter for VodacomClient {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn send(&self, request: Request) -> BoxFuture<'_, Result<Reply, CallError>> {
        Box::pin(async move { self.pay(&request).await })
    }

    fn status(
        &self,
        _direction: Direction,
        request_id: String,
        _country: String,
        _currency: String,
    ) -> BoxFuture<'_, Result<Reply, CallError>> {
        // One query serves both directions and the market is this client's.
        Box::pin(async move { self.query(&request_id).await })
    }

    fn callback_kinds(&self) -> &'static [&'static str] {
        // Tanzania answers every payment in the call itself.
        &[]
    }

    fn parse_callback(&self, kind: &str, _body: &[u8]) -> Result<CallbackReport, String> {
        Err(format!(
            "Vodacom Tanzania sends no callbacks (got one of kind {kind:?})"
        ))
    }

    fn app_callback_token(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulators_public_key_parses_in_both_forms() {
        assert!(parse_public_key(super::super::SIMULATOR_PUBLIC_KEY).is_ok());
        let wrapped: String = super::super::SIMULATOR_PUBLIC_KEY
            .as_bytes()
            .chunks(64)
            .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
            .collect();
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{wrapped}-----END PUBLIC KEY-----\n");
        assert!(parse_public_key(&pem).is_ok());
        assert!(parse_public_key("bm90IGEga2V5").is_err());
    }

    #[test]
    fn answers_without_a_code_are_judged_by_their_http_status() {
        assert!(matches!(
            without_code(StatusCode::TOO_MANY_REQUESTS),
            CallError::Busy(_)
        ));
        assert!(matches!(without_code(StatusCode::BAD_GATEWAY), CallError::Ambiguous(_)));
        assert!(matches!(
            without_code(StatusCode::GATEWAY_TIMEOUT),
            CallError::Ambiguous(_)
        ));
        assert!(matches!(without_code(StatusCode::OK), CallError::Ambiguous(_)));
        assert!(matches!(without_code(StatusCode::NOT_FOUND), CallError::Config(_)));
        assert!(matches!(
            without_code(StatusCode::BAD_REQUEST),
            CallError::Rejected { .. }
        ));
    }

    #[test]
    fn a_query_that_cannot_answer_is_busy_not_ambiguous() {
        assert!(matches!(
            query_error(CallError::Ambiguous("x".into())),
            CallError::Busy(_)
        ));
        assert!(matches!(query_error(CallError::Duplicate), CallError::Busy(_)));
    }

    #[test]
    fn numbers_are_masked_to_their_last_three_digits() {
        assert_eq!(masked("255754123456"), "*********456");
        assert_eq!(masked("12"), "12");
    }
}
