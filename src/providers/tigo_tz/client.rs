//! The Tigo Pesa HTTP client: the password-grant token cache, push
//! bill-pay (collections), disbursements and the status enquiry. Every
//! error says whether money may have moved.
//!
//! Disbursements go through [`TigoClient::disburse`] alone, so that Tigo's
//! real Account-to-Wallet transport (legacy XML over HTTP) can replace the
//! assumed JSON contract there without touching the adapter or the engine.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;

use super::codes::{self, Sync};
use super::wire::{
    BillerPayRequest, BillerPayResponse, DisbursementRequest, DisbursementResponse, StatusResponse, TokenError,
    TokenResponse, WholeAmount,
};
use super::TigoConfig;
use crate::providers::adapter::{observed, CallError, Reply};
use crate::providers::Outcome;

/// Token lifetime assumed when the answer does not say (seconds): short,
/// so a token of unknown life is refreshed soon rather than used stale.
const DEFAULT_TOKEN_LIFETIME_S: u64 = 300;

/// Longest `Remarks` sent: Tigo's limit is not public; 50 characters keep
/// the customer's prompt readable.
const MAX_REMARKS_CHARS: usize = 50;

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

/// The provider name in metrics.
const PROVIDER: &str = "tigo_tz";

/// What one HTTP exchange gave: the status and the body's text.
struct Answer {
    status: StatusCode,
    body: String,
}

pub struct TigoClient {
    http: reqwest::Client,
    config: TigoConfig,
    token: Mutex<Option<CachedToken>>,
}

impl TigoClient {
    pub fn new(config: TigoConfig) -> Result<TigoClient, String> {
        url::Url::parse(&config.base_url).map_err(|e| format!("tigo_tz.base_url: {e}"))?;
        for (key, path) in [
            ("token_path", &config.token_path),
            ("push_path", &config.push_path),
            ("disbursement_path", &config.disbursement_path),
            ("status_path", &config.status_path),
        ] {
            if !path.starts_with('/') {
                return Err(format!("tigo_tz.{key} must start with '/'"));
            }
        }
        if config.biller_msisdn.is_empty() || !config.biller_msisdn.bytes().all(|b| b.is_ascii_digit()) {
            return Err("tigo_tz.biller_msisdn must be the account's MSISDN in digits (2557…)".into());
        }
        if config.request_timeout_ms == 0 {
            return Err("tigo_tz.request_timeout_ms must be above zero".into());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build()
            .map_err(|e| format!("tigo_tz HTTP client: {e}"))?;
        Ok(TigoClient {
            http,
            config,
            token: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &TigoConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// A valid token: the cached one, or a new one fetched by exactly one
    /// caller while the others wait for it. Nothing has been sent toward
    /// the money yet, so every failure here is `Busy` or `Config`.
    async fn token(&self) -> Result<String, CallError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.refresh_at {
                return Ok(token.value.clone());
            }
        }
        let form = [
            ("username", self.config.username.as_str()),
            ("password", self.config.password.expose_secret()),
            ("grant_type", "password"),
        ];
        let response = self
            .http
            .post(self.url(&self.config.token_path))
            .header("Cache-Control", "no-cache")
            .form(&form)
            .send()
            .await
            .map_err(|e| CallError::Busy(format!("token request: {}", without_url(&e))))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Busy(format!("token response: {}", without_url(&e))))?;
        if !status.is_success() {
            return Err(token_refusal(status, &text));
        }
        let token: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| CallError::Busy(format!("unreadable token answer ({status}): {e}")))?;
        let lifetime_s = token.expires_in.0.parse().unwrap_or(DEFAULT_TOKEN_LIFETIME_S);
        let refresh_in_s = lifetime_s.saturating_sub(self.config.token_refresh_margin_s).max(1);
        metrics::counter!("tuma_provider_token_refreshes_total", "provider" => PROVIDER).increment(1);
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

    /// Sends the request `build` makes with a token; on 401 (the gateway
    /// refused the token before processing) fetches a new token and tries
    /// once more. Transport failures: never connected is `Busy`, anything
    /// after sending is `Ambiguous`.
    async fn exchange<F>(&self, build: F) -> Result<Answer, CallError>
    where
        F: Fn(&str) -> reqwest::RequestBuilder,
    {
        for attempt in 0..2 {
            let token = self.token().await?;
            let response = match build(&token).send().await {
                Ok(response) => response,
                Err(e) if e.is_connect() => return Err(CallError::Busy(without_url(&e))),
                Err(e) => return Err(CallError::Ambiguous(without_url(&e))),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.forget_token(&token).await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(CallError::Config(
                    "Tigo refused a fresh access token (check tigo_tz.username and password)".into(),
                ));
            }
            let body = response
                .text()
                .await
                .map_err(|e| CallError::Ambiguous(without_url(&e)))?;
            return Ok(Answer { status, body });
        }
        unreachable!("the second attempt always returns")
    }

    /// Asks the customer `msisdn` to approve paying `amount` TZS under our
    /// `reference_id`. `Pending` when the prompt was sent.
    pub async fn push(&self, reference_id: &str, msisdn: &str, amount: u64, remarks: &str) -> Result<Reply, CallError> {
        observed(PROVIDER, "push", self.push_once(reference_id, msisdn, amount, remarks)).await
    }

    async fn push_once(
        &self,
        reference_id: &str,
        msisdn: &str,
        amount: u64,
        remarks: &str,
    ) -> Result<Reply, CallError> {
        let request = BillerPayRequest {
            customer_msisdn: msisdn.to_owned(),
            biller_msisdn: self.config.biller_msisdn.clone(),
            amount: WholeAmount(amount),
            remarks: remarks.chars().take(MAX_REMARKS_CHARS).collect(),
            reference_id: reference_id.to_owned(),
        };
        let url = self.url(&self.config.push_path);
        let answer = self
            .exchange(|token| {
                self.http
                    .post(&url)
                    .header("Authorization", format!("bearer {token}"))
                    .header("Username", &self.config.username)
                    .header("Password", self.config.password.expose_secret())
                    .json(&request)
            })
            .await?;
        let Some(parsed) = readable::<BillerPayResponse>(&answer)? else {
            return Err(http_failure(answer.status, "push_path"));
        };
        let code = parsed.response_code.0;
        Ok(match (codes::sync(&code), parsed.response_status.0) {
            (Sync::Accepted, true) => Reply::pending(),
            (Sync::Refused(error), _) => return Err(error),
            (Sync::Accepted, false) | (Sync::NotUnderstood, _) => unknown_reply(&code, &parsed.response_description.0),
        })
    }

    /// Pays `amount` TZS to `msisdn` under our `reference_id`. `Succeeded`
    /// with the receipt when Tigo paid in the call; `Pending` when it only
    /// accepted.
    pub async fn disburse(
        &self,
        reference_id: &str,
        msisdn: &str,
        amount: u64,
        remarks: &str,
    ) -> Result<Reply, CallError> {
        observed(
            PROVIDER,
            "disbursement",
            self.disburse_once(reference_id, msisdn, amount, remarks),
        )
        .await
    }

    async fn disburse_once(
        &self,
        reference_id: &str,
        msisdn: &str,
        amount: u64,
        remarks: &str,
    ) -> Result<Reply, CallError> {
        let request = DisbursementRequest {
            reference_id: reference_id.to_owned(),
            msisdn: msisdn.to_owned(),
            amount: WholeAmount(amount),
            remarks: remarks.chars().take(MAX_REMARKS_CHARS).collect(),
        };
        let url = self.url(&self.config.disbursement_path);
        let answer = self
            .exchange(|token| {
                self.http
                    .post(&url)
                    .header("Authorization", format!("bearer {token}"))
                    .json(&request)
            })
            .await?;
        let Some(parsed) = readable::<DisbursementResponse>(&answer)? else {
            return Err(http_failure(answer.status, "disbursement_path"));
        };
        let code = parsed.response_code.0;
        let receipt = parsed.mfs_transaction_id.non_empty();
        Ok(match (codes::sync(&code), parsed.status.0) {
            (Sync::Accepted, true) => Reply::new(
                if receipt.is_some() {
                    Outcome::Succeeded
                } else {
                    Outcome::Pending
                },
                receipt,
            ),
            (Sync::Refused(error), _) => return Err(error),
            (Sync::Accepted, false) | (Sync::NotUnderstood, _) => unknown_reply(&code, &parsed.description.0),
        })
    }

    /// What became of the request sent under our `reference_id`. A query
    /// moves no money: an unclear answer is `Busy` (ask again later), and
    /// "not found" is `Pending` (the request may still be arriving).
    pub async fn status(&self, reference_id: &str) -> Result<Reply, CallError> {
        observed(PROVIDER, "status", self.status_once(reference_id)).await
    }

    async fn status_once(&self, reference_id: &str) -> Result<Reply, CallError> {
        let mut url = url::Url::parse(&self.url(&self.config.status_path))
            .map_err(|e| CallError::Config(format!("tigo_tz.status_path: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| CallError::Config("tigo_tz.base_url cannot take a path".into()))?
            .push(reference_id);
        let answer = self
            .exchange(|token| {
                self.http
                    .request(Method::GET, url.clone())
                    .header("Authorization", format!("bearer {token}"))
            })
            .await
            .map_err(as_query_error)?;
        let parsed = readable::<StatusResponse>(&answer).map_err(as_query_error)?;
        if answer.status == StatusCode::NOT_FOUND {
            if parsed.as_ref().is_none_or(|p| p.response_code.0.is_empty()) {
                // Not Tigo's "not found" body: maybe our status_path is
                // wrong. Still pending: the poll budget bounds the wait.
                tracing::warn!("Tigo status enquiry answered 404 without a code (check tigo_tz.status_path)");
            }
            return Ok(Reply::pending());
        }
        let Some(parsed) = parsed else {
            return Err(as_query_error(http_failure(answer.status, "status_path")));
        };
        if !answer.status.is_success() {
            return Err(match codes::sync(&parsed.response_code.0) {
                Sync::Refused(error @ CallError::Config(_)) => error,
                _ => CallError::Busy(format!("HTTP {}: {}", answer.status, parsed.response_code.0)),
            });
        }
        let outcome = codes::status(&parsed.status.0, &parsed.response_code.0, &parsed.description.0);
        let receipt = match outcome {
            Outcome::Succeeded => parsed.mfs_transaction_id.non_empty(),
            Outcome::Failed { .. } | Outcome::Pending | Outcome::Unknown { .. } => None,
        };
        Ok(Reply::new(outcome, receipt))
    }
}

/// A query's failure: nothing can have moved, so "maybe processed" is
/// only "ask again later".
fn as_query_error(error: CallError) -> CallError {
    match error {
        CallError::Ambiguous(detail) => CallError::Busy(detail),
        other => other,
    }
}

/// The body as `T` when it reads as one; `None` when it does not (a
/// gateway page, an empty body). A 2xx that does not read is ambiguous:
/// Tigo answered, but with what cannot be known.
fn readable<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<Option<T>, CallError> {
    if answer.status == StatusCode::TOO_MANY_REQUESTS {
        return Err(CallError::Busy("HTTP 429: rate limited".into()));
    }
    match serde_json::from_str::<T>(&answer.body) {
        Ok(parsed) => Ok(Some(parsed)),
        Err(e) if answer.status.is_success() => Err(CallError::Ambiguous(format!(
            "unreadable answer ({}): {e}",
            answer.status
        ))),
        Err(_) => Ok(None),
    }
}

/// A non-2xx answer without a Tigo body. 5xx (500, 502, 503, 504, …) or a
/// 408 (a gateway's request timeout) after sending: the request may have
/// been processed. 404/405: our URL is wrong. Other 4xx: refused before
/// processing.
fn http_failure(status: StatusCode, path_key: &str) -> CallError {
    match status.as_u16() {
        408 | 500..=599 => CallError::Ambiguous(format!("HTTP {status}")),
        403..=405 => CallError::Config(format!("HTTP {status} (check tigo_tz.base_url and {path_key})")),
        _ => CallError::Rejected {
            code: format!("HTTP-{}", status.as_u16()),
            message: "refused by Tigo's gateway".into(),
        },
    }
}

fn token_refusal(status: StatusCode, text: &str) -> CallError {
    match serde_json::from_str::<TokenError>(text) {
        Ok(error) => CallError::Config(format!(
            "Tigo refused the token request: {} {} (check tigo_tz.username and password)",
            error.error, error.error_description
        )),
        Err(_) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            CallError::Busy(format!("token request: HTTP {status}"))
        }
        Err(_) => CallError::Config(format!(
            "token request: HTTP {status} (check tigo_tz.base_url and token_path)"
        )),
    }
}

fn unknown_reply(code: &str, description: &str) -> Reply {
    Reply::new(
        Outcome::Unknown {
            code: code.to_owned(),
            detail: description.chars().take(200).collect(),
        },
        None,
    )
}

/// reqwest errors print the URL; the message is all an operator needs.
fn without_url(error: &reqwest::Error) -> String {
    let error = error.to_string();
    match error.split_once(" for url (") {
        Some((message, _)) => message.to_owned(),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_failures_without_a_tigo_body_say_what_is_known_about_the_money() {
        for status in [408, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                matches!(http_failure(status, "push_path"), CallError::Ambiguous(_)),
                "{status}"
            );
        }
        assert!(matches!(
            http_failure(StatusCode::NOT_FOUND, "push_path"),
            CallError::Config(_)
        ));
        assert!(matches!(
            http_failure(StatusCode::BAD_REQUEST, "push_path"),
            CallError::Rejected { .. }
        ));
    }

    #[test]
    fn a_rate_limit_is_busy_and_an_unreadable_success_is_ambiguous() {
        let limited = Answer {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: String::new(),
        };
        assert!(matches!(
            readable::<BillerPayResponse>(&limited),
            Err(CallError::Busy(_))
        ));
        let garbled = Answer {
            status: StatusCode::OK,
            body: "<html>".into(),
        };
        assert!(matches!(
            readable::<BillerPayResponse>(&garbled),
            Err(CallError::Ambiguous(_))
        ));
        let page = Answer {
            status: StatusCode::BAD_GATEWAY,
            body: "<html>".into(),
        };
        assert!(matches!(readable::<BillerPayResponse>(&page), Ok(None)));
    }

    #[test]
    fn a_refused_token_is_a_configuration_problem_unless_the_gateway_is_down() {
        let refused = token_refusal(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant","error_description":"The user name or password is incorrect."}"#,
        );
        assert!(matches!(refused, CallError::Config(_)));
        assert!(matches!(
            token_refusal(StatusCode::SERVICE_UNAVAILABLE, ""),
            CallError::Busy(_)
        ));
    }
}
