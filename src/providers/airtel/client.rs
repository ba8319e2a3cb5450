//! The Airtel HTTP client: OAuth token cache, disbursements, USSD push
//! collections and their enquiries. Every error says whether money may have
//! moved ([`CallError`]).
//!
//! - The token is fetched by one caller at a time and refreshed
//!   `token_refresh_margin_s` before it expires; a 401 (or a 403
//!   `invalid_token`) drops it, fetches a new one and retries once: the
//!   gateway stopped the request, so nothing moved.
//! - A request that never connected is `Busy`; one that was sent and then
//!   timed out, broke off or got a 408/5xx is `Ambiguous`; 429 is `Busy`.
//! - Answers with a code are read by [`codes::reading`]; a query moves no
//!   money, so its unclear answers are `Busy` (ask again), never ambiguous.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use rsa::pkcs8::DecodePublicKey;
use rsa::RsaPublicKey;
use rust_decimal::prelude::ToPrimitive;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::Mutex;

use super::codes::{self, Call};
use super::wire::{
    national_number, Amount, DisbursementRequest, DisbursementTransaction, Envelope, Payee, PushRequest,
    PushSubscriber, PushTransaction, TokenRequest, TokenResponse,
};
use super::{AirtelConfig, PinPadding};
use crate::providers::adapter::{derive_token, observed, CallError, Direction, Reply, Request};

/// The token's lifetime when Airtel's answer does not say (UAT's value).
const DEFAULT_TOKEN_LIFETIME_S: u64 = 180;
/// Longest `reference` Airtel takes (alphanumeric, 4–64 characters).
const REFERENCE_MAX_CHARS: usize = 64;
/// Shortest `reference` Airtel takes.
const REFERENCE_MIN_CHARS: usize = 4;

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

/// A configured Airtel app: one per engine, shared by every job.
pub struct AirtelClient {
    http: reqwest::Client,
    config: AirtelConfig,
    token: Mutex<Option<CachedToken>>,
    /// The disbursement PIN, encrypted once with Airtel's public key.
    encrypted_pin: SecretString,
    callback_token: String,
}

/// Airtel's public key from base64 DER (SubjectPublicKeyInfo), tolerating
/// a PEM wrapper and line breaks as copied from the portal.
fn public_key(base64_der: &str) -> Result<RsaPublicKey, String> {
    let text: String = base64_der
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .flat_map(|line| line.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("airtel.public_key is not base64: {e}"))?;
    RsaPublicKey::from_public_key_der(&der).map_err(|e| format!("airtel.public_key is not an RSA public key: {e}"))
}

/// The `pin` field: `pin` RSA-encrypted with `key` under `padding`, base64.
pub fn encrypt_pin(key: &RsaPublicKey, pin: &str, padding: PinPadding) -> Result<String, String> {
    let mut rng = rsa::rand_core::OsRng;
    let encrypted = match padding {
        PinPadding::Pkcs1v15 => key.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, pin.as_bytes()),
        PinPadding::Oaep => key.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), pin.as_bytes()),
    }
    .map_err(|e| format!("cannot encrypt the disbursement PIN: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(encrypted))
}

/// The `reference` Airtel accepts: alphanumeric, 4–64 characters; `fallback`
/// (our request id) when the requester's reference has too few.
fn airtel_reference(reference: &str, fallback: &str) -> String {
    let clean = |text: &str| -> String {
        text.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(REFERENCE_MAX_CHARS)
            .collect()
    };
    let reference = clean(reference);
    if reference.chars().count() >= REFERENCE_MIN_CHARS {
        return reference;
    }
    format!("{:0>4}", clean(fallback))
}

/// Whole units only: Airtel takes integers for the currencies Tuma sends.
fn whole_amount(request: &Request) -> Result<Amount, CallError> {
    let amount = request.amount;
    let whole = (amount.fract().is_zero() && amount.is_sign_positive() && !amount.is_zero())
        .then(|| amount.to_u64())
        .flatten();
    whole.map(Amount).ok_or_else(|| CallError::Rejected {
        code: "amount".into(),
        message: format!("Airtel takes whole positive {} amounts, not {amount}", request.currency),
    })
}

fn national(request: &Request) -> Result<String, CallError> {
    national_number(&request.msisdn, &request.country).map_err(|message| CallError::Rejected {
        code: "msisdn".into(),
        message,
    })
}

/// The last three digits, for logs.
fn masked(msisdn: &str) -> String {
    format!("***{}", &msisdn[msisdn.len().saturating_sub(3)..])
}

/// reqwest errors print the URL, which holds our request id only; the
/// message is all an operator needs.
fn without_url(error: &reqwest::Error) -> String {
    let error = error.to_string();
    match error.split_once(" for url (") {
        Some((message, _)) => message.to_owned(),
        None => error,
    }
}

/// `text` as one URL path segment: unreserved characters kept, the rest
/// percent-encoded.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// An answer that may mean the request was processed: ambiguous for a send,
/// "ask again" for a query.
fn unclear(call: Call, what: String) -> CallError {
    match call {
        Call::Send => CallError::Ambiguous(what),
        Call::Status => CallError::Busy(what),
    }
}

impl AirtelClient {
    pub fn new(config: AirtelConfig) -> Result<AirtelClient, String> {
        let pin = config.disbursement_pin.expose_secret();
        if pin.is_empty() || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err("airtel.disbursement_pin must be digits (the 4-digit wallet PIN)".into());
        }
        let key = if config.public_key.trim().is_empty() {
            public_key(super::SIMULATOR_PUBLIC_KEY)?
        } else {
            public_key(&config.public_key)?
        };
        let encrypted_pin = SecretString::from(encrypt_pin(&key, pin, config.pin_padding)?);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build()
            .map_err(|e| e.to_string())?;
        let callback_token = derive_token("airtel", config.client_secret.expose_secret());
        Ok(AirtelClient {
            http,
            config,
            token: Mutex::new(None),
            encrypted_pin,
            callback_token,
        })
    }

    pub fn config(&self) -> &AirtelConfig {
        &self.config
    }

    /// The app-wide token in the callback URL.
    pub fn callback_token(&self) -> &str {
        &self.callback_token
    }

    /// The callback URL to register in Airtel's portal for this app.
    pub fn portal_callback_url(&self) -> String {
        format!(
            "{}/callbacks/airtel/{}/{}",
            self.config.callback_base_url.trim_end_matches('/'),
            super::callbacks::KIND,
            self.callback_token
        )
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// A valid token: the cached one, or a new one fetched by exactly one
    /// caller while the others wait for it.
    async fn token(&self) -> Result<String, CallError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.refresh_at {
                return Ok(token.value.clone());
            }
        }
        let body = TokenRequest {
            client_id: self.config.client_id.clone(),
            client_secret: self.config.client_secret.expose_secret().to_owned(),
            grant_type: "client_credentials".into(),
        };
        let response = self
            .http
            .post(self.url("/auth/oauth2/token"))
            .header("Accept", "*/*")
            .json(&body)
            .send()
            .await
            .map_err(|e| CallError::Busy(format!("Airtel token request: {}", without_url(&e))))?;
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(CallError::Busy(format!("Airtel token request: HTTP {status}")));
        }
        if !status.is_success() {
            let refusal: Envelope = response.json().await.unwrap_or_default();
            return Err(CallError::Config(format!(
                "Airtel refused the client credentials (check airtel.client_id and client_secret): HTTP {status} {}",
                refusal.error.text()
            )));
        }
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Busy(format!("Airtel token answer: {}", without_url(&e))))?;
        let token: TokenResponse = match serde_json::from_str(&text) {
            Ok(token) => token,
            // Some gateways answer bad credentials with a 200 and an OAuth error.
            Err(_) => match serde_json::from_str::<Envelope>(&text).ok().and_then(|e| e.error.0) {
                Some(error) => {
                    return Err(CallError::Config(format!(
                        "Airtel refused the client credentials (check airtel.client_id and client_secret): {error}"
                    )))
                }
                None => return Err(CallError::Busy("unreadable Airtel token answer".into())),
            },
        };
        let lifetime_s = token
            .expires_in
            .as_deref()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(DEFAULT_TOKEN_LIFETIME_S, |s| s.max(0.0) as u64);
        // Never sooner than half the lifetime: a margin as long as a short
        // (UAT) lifetime would otherwise fetch a token for every call.
        let refresh_in_s = lifetime_s
            .saturating_sub(self.config.token_refresh_margin_s)
            .max(lifetime_s / 2)
            .max(1);
        metrics::counter!("tuma_provider_token_refreshes_total", "provider" => "airtel").increment(1);
        *cached = Some(CachedToken {
            value: token.access_token.clone(),
            refresh_at: Instant::now() + Duration::from_secs(refresh_in_s),
        });
        Ok(token.access_token)
    }

    async fn forget_token(&self, rejected: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == rejected) {
            *cached = None;
        }
    }

    /// One call in the market of `country`/`currency`, recording its latency
    /// and outcome (`tuma_provider_request_seconds`,
    /// `tuma_provider_responses_total`).
    async fn call<B: Serialize>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        market: (&str, &str),
        body: Option<&B>,
        call: Call,
    ) -> Result<Reply, CallError> {
        observed("airtel", operation, self.call_once(method, path, market, body, call)).await
    }

    async fn call_once<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        (country, currency): (&str, &str),
        body: Option<&B>,
        call: Call,
    ) -> Result<Reply, CallError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut builder = self
                .http
                .request(method.clone(), self.url(path))
                .bearer_auth(&token)
                .header("Accept", "*/*")
                .header("X-Country", country)
                .header("X-Currency", currency);
            if let Some(body) = body {
                builder = builder.json(body);
            }
            let response = match builder.send().await {
                Ok(response) => response,
                // Never connected: nothing was sent.
                Err(e) if e.is_connect() => return Err(CallError::Busy(without_url(&e))),
                Err(e) => return Err(unclear(call, without_url(&e))),
            };
            let status = response.status();
            let text = response.text().await.map_err(|e| unclear(call, without_url(&e)))?;
            let envelope = serde_json::from_str::<Envelope>(&text).ok();
            let token_refused = status == StatusCode::UNAUTHORIZED
                || (status == StatusCode::FORBIDDEN
                    && envelope.as_ref().and_then(|e| e.error.as_deref()) == Some("invalid_token"));
            if token_refused && attempt == 0 {
                self.forget_token(&token).await;
                continue;
            }
            return answer(status, envelope, call);
        }
        Err(CallError::Config(
            "Airtel refused a freshly issued access token twice".into(),
        ))
    }

    /// Pays `request.amount` to `request.msisdn` from the disbursement
    /// wallet, under our request id.
    pub async fn disburse(&self, request: &Request) -> Result<Reply, CallError> {
        let msisdn = national(request)?;
        tracing::debug!(request_id = %request.request_id, msisdn = %masked(&msisdn), "Airtel disbursement");
        let body = DisbursementRequest {
            payee: Payee { msisdn },
            reference: airtel_reference(&request.reference, &request.request_id),
            pin: self.encrypted_pin.expose_secret().to_owned(),
            transaction: DisbursementTransaction {
                amount: whole_amount(request)?,
                id: request.request_id.clone(),
            },
        };
        let market = (request.country.as_str(), request.currency.as_str());
        self.call(
            "disbursement",
            Method::POST,
            "/standard/v1/disbursements/",
            market,
            Some(&body),
            Call::Send,
        )
        .await
    }

    /// Sends a USSD payment prompt to `request.msisdn`, under our request id.
    pub async fn push(&self, request: &Request) -> Result<Reply, CallError> {
        let msisdn = national(request)?;
        tracing::debug!(request_id = %request.request_id, msisdn = %masked(&msisdn), "Airtel USSD push");
        let body = PushRequest {
            reference: airtel_reference(&request.reference, &request.request_id),
            subscriber: PushSubscriber {
                country: Some(request.country.clone()),
                currency: Some(request.currency.clone()),
                msisdn,
            },
            transaction: PushTransaction {
                amount: whole_amount(request)?,
                country: request.country.clone(),
                currency: request.currency.clone(),
                id: request.request_id.clone(),
            },
        };
        let market = (request.country.as_str(), request.currency.as_str());
        self.call(
            "payment",
            Method::POST,
            "/merchant/v1/payments/",
            market,
            Some(&body),
            Call::Send,
        )
        .await
        .map(prompted)
    }

    /// Asks what became of our request `request_id` of `direction`.
    pub async fn enquire(
        &self,
        direction: Direction,
        request_id: &str,
        country: &str,
        currency: &str,
    ) -> Result<Reply, CallError> {
        let id = path_segment(request_id);
        let (operation, path) = match direction {
            Direction::Payout => ("disbursement_enquiry", format!("/standard/v1/disbursements/{id}")),
            Direction::Collection => ("payment_enquiry", format!("/standard/v1/payments/{id}")),
        };
        match self
            .call::<()>(operation, Method::GET, &path, (country, currency), None, Call::Status)
            .await
        {
            // A query has no duplicate; an answer that says so is not understood.
            Err(CallError::Duplicate) => Ok(Reply::new(
                crate::providers::Outcome::Unknown {
                    code: "duplicate".into(),
                    detail: "a duplicate answer to an enquiry".into(),
                },
                None,
            )),
            other => other,
        }
    }
}

/// What a USSD push's answer can say: that the prompt went out (or not),
/// never that the payer paid. Airtel documents DP00800001006 for a sent
/// prompt, but answers carrying its success code have been seen; a payer
/// who has not yet entered a PIN must not read as paid, so such an answer
/// waits, like any sent prompt, for the callback or an enquiry.
fn prompted(reply: Reply) -> Reply {
    match reply.outcome {
        crate::providers::Outcome::Succeeded => {
            tracing::warn!("Airtel answered a USSD push with a success code; waiting for the payer's answer");
            Reply::new(crate::providers::Outcome::Pending, None)
        }
        _ => reply,
    }
}

/// What one HTTP answer means (after the token retry).
fn answer(status: StatusCode, envelope: Option<Envelope>, call: Call) -> Result<Reply, CallError> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(CallError::Busy("Airtel rate limit (HTTP 429)".into()));
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let detail = envelope.map(|e| e.message()).unwrap_or_default();
        return Err(CallError::Config(format!(
            "Airtel refused access (HTTP {status}): {detail}"
        )));
    }
    match envelope {
        Some(envelope) if envelope.code().is_some() || status.is_success() => codes::reading(&envelope, call),
        _ if status.is_success() => Err(unclear(call, format!("unreadable Airtel answer (HTTP {status})"))),
        _ if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() => {
            Err(unclear(call, format!("HTTP {status}")))
        }
        envelope => Err(CallError::Rejected {
            code: status.as_u16().to_string(),
            message: envelope.map_or_else(|| "refused".to_owned(), |e| e.message()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn request(amount: &str) -> Request {
        Request {
            direction: Direction::Payout,
            request_id: "r-1".into(),
            msisdn: "256752604392".into(),
            country: "UG".into(),
            currency: "UGX".into(),
            amount: amount.parse::<Decimal>().unwrap(),
            reference: "Salary / March".into(),
            callback_token: String::new(),
        }
    }

    #[test]
    fn amounts_must_be_whole_and_positive() {
        assert_eq!(whole_amount(&request("5000")).unwrap(), Amount(5000));
        assert_eq!(whole_amount(&request("5000.00")).unwrap(), Amount(5000));
        assert!(matches!(
            whole_amount(&request("10.50")),
            Err(CallError::Rejected { .. })
        ));
        assert!(matches!(whole_amount(&request("0")), Err(CallError::Rejected { .. })));
    }

    #[test]
    fn references_are_alphanumeric_and_four_to_sixty_four_characters() {
        assert_eq!(airtel_reference("Salary / March", "r-1"), "SalaryMarch");
        assert_eq!(airtel_reference("", "r-1"), "00r1");
        assert_eq!(airtel_reference(&"x".repeat(80), "r-1").len(), 64);
    }

    #[test]
    fn the_pin_encrypts_under_both_paddings_with_the_simulator_key() {
        let key = public_key(crate::providers::airtel::SIMULATOR_PUBLIC_KEY).unwrap();
        for padding in [PinPadding::Pkcs1v15, PinPadding::Oaep] {
            let encrypted = encrypt_pin(&key, "1357", padding).unwrap();
            let bytes = base64::engine::general_purpose::STANDARD.decode(encrypted).unwrap();
            assert_eq!(bytes.len(), 256, "one 2048-bit RSA block");
        }
        assert!(public_key("not a key").is_err());
    }

    #[test]
    fn http_answers_without_a_code_say_what_is_known_about_the_money() {
        let send = |status: u16| answer(StatusCode::from_u16(status).unwrap(), None, Call::Send);
        assert!(matches!(send(429), Err(CallError::Busy(_))));
        for status in [408, 500, 502, 503, 504] {
            assert!(matches!(send(status), Err(CallError::Ambiguous(_))), "{status}");
        }
        assert!(matches!(send(200), Err(CallError::Ambiguous(_))), "unreadable success");
        assert!(matches!(send(400), Err(CallError::Rejected { .. })));
        assert!(matches!(
            answer(StatusCode::GATEWAY_TIMEOUT, None, Call::Status),
            Err(CallError::Busy(_))
        ));
    }

    #[test]
    fn a_push_answered_with_a_success_code_still_waits_for_the_payer() {
        use crate::providers::Outcome;
        let paid = prompted(Reply::new(Outcome::Succeeded, Some("MP1".into())));
        assert!(matches!(paid.outcome, Outcome::Pending) && paid.receipt.is_none());
        let refused = prompted(Reply::new(
            Outcome::Failed {
                code: "DP00800001007".into(),
                reason: "refused".into(),
            },
            None,
        ));
        assert!(matches!(refused.outcome, Outcome::Failed { .. }), "a refusal stands");
    }

    #[test]
    fn numbers_are_masked_to_their_last_three_digits() {
        assert_eq!(masked("752604392"), "***392");
    }

    #[test]
    fn request_ids_are_one_path_segment() {
        assert_eq!(path_segment("pay_01J9-x.y~z"), "pay_01J9-x.y~z");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
