//! The MTN MoMo HTTP client: one access token per product (Collection,
//! Disbursement), cached, refreshed early by one caller while the others
//! wait, and refreshed once more when MTN answers 401; transfers, requests
//! to pay, their status queries, and the disbursement balance. Every error
//! says whether money may have moved (see [`super::codes`]).

use std::time::{Duration, Instant};

use reqwest::Method;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::codes;
use super::wire::{BalanceResponse, ErrorBody, Party, RequestToPay, TokenResponse, TransactionStatus, TransferRequest};
use super::MtnConfig;
use crate::providers::adapter::{CallError, Direction, Reply, Request};

/// MTN's token lifetime when its answer does not say (it says 3600).
const DEFAULT_TOKEN_LIFETIME_S: u64 = 3600;

/// Bytes of an answer body kept for classification; MTN's bodies are small,
/// and a gateway's error page need not be read whole.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// An MTN product: its own subscription key, tokens and paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Collection,
    Disbursement,
}

impl Product {
    pub fn of(direction: Direction) -> Product {
        match direction {
            Direction::Payout => Product::Disbursement,
            Direction::Collection => Product::Collection,
        }
    }

    /// The path segment (`/collection/...`, `/disbursement/...`).
    pub fn path(self) -> &'static str {
        match self {
            Product::Collection => "collection",
            Product::Disbursement => "disbursement",
        }
    }

    /// The resource a request creates, which is also our callback kind.
    pub fn resource(self) -> &'static str {
        match self {
            Product::Collection => "requesttopay",
            Product::Disbursement => "transfer",
        }
    }
}

/// The disbursement account's balance, from `account/balance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Major units.
    pub available: Decimal,
    pub currency: String,
}

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

/// An HTTP answer other than a 401, read for classification.
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn error(&self) -> ErrorBody {
        serde_json::from_str(&self.text).unwrap_or_default()
    }
}

pub struct MtnClient {
    http: reqwest::Client,
    config: MtnConfig,
    collection_token: Mutex<Option<CachedToken>>,
    disbursement_token: Mutex<Option<CachedToken>>,
}

impl MtnClient {
    pub fn new(config: MtnConfig) -> Result<MtnClient, String> {
        uuid::Uuid::parse_str(config.api_user.trim()).map_err(|_| "api_user must be the API user's UUID".to_owned())?;
        for (name, value) in [
            ("base_url", &config.base_url),
            ("callback_base_url", &config.callback_base_url),
        ] {
            url::Url::parse(value).map_err(|e| format!("{name} is not a URL: {e}"))?;
        }
        if config.request_timeout_ms == 0 {
            return Err("request_timeout_ms must be above 0".to_owned());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(MtnClient {
            http,
            config,
            collection_token: Mutex::new(None),
            disbursement_token: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &MtnConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    fn subscription_key(&self, product: Product) -> &SecretString {
        match product {
            Product::Collection => &self.config.collection_subscription_key,
            Product::Disbursement => &self.config.disbursement_subscription_key,
        }
    }

    fn token_slot(&self, product: Product) -> &Mutex<Option<CachedToken>> {
        match product {
            Product::Collection => &self.collection_token,
            Product::Disbursement => &self.disbursement_token,
        }
    }

    fn target_environment(&self, country: &str) -> Result<&str, CallError> {
        self.config
            .target_environments
            .get(country.trim().to_ascii_uppercase().as_str())
            .map(String::as_str)
            .ok_or_else(|| CallError::Config(format!("mtn.target_environments has no entry for country {country:?}")))
    }

    /// A valid token for `product`: the cached one, or a new one fetched by
    /// exactly one caller while the others wait for it.
    async fn token(&self, product: Product) -> Result<String, CallError> {
        let mut cached = self.token_slot(product).lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.refresh_at {
                return Ok(token.value.clone());
            }
        }
        let response = self
            .http
            .post(self.url(&format!("/{}/token/", product.path())))
            .basic_auth(&self.config.api_user, Some(self.config.api_key.expose_secret()))
            .header(
                "Ocp-Apim-Subscription-Key",
                self.subscription_key(product).expose_secret(),
            )
            .body(Vec::new())
            .send()
            .await
            .map_err(|e| CallError::Busy(format!("MTN {} token request: {}", product.path(), without_url(&e))))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            401 | 403 | 404 => {
                return Err(CallError::Config(format!(
                    "MTN refused a {} token (HTTP {status}): check mtn.api_user, api_key and {}_subscription_key",
                    product.path(),
                    product.path()
                )))
            }
            _ => return Err(CallError::Busy(format!("MTN {} token: HTTP {status}", product.path()))),
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|e| CallError::Busy(format!("MTN {} token answer: {}", product.path(), without_url(&e))))?;
        let lifetime_s: u64 = token.expires_in.0.trim().parse().unwrap_or(DEFAULT_TOKEN_LIFETIME_S);
        let refresh_in_s = lifetime_s.saturating_sub(self.config.token_refresh_margin_s).max(1);
        metrics::counter!("tuma_provider_token_refreshes_total", "provider" => "mtn").increment(1);
        *cached = Some(CachedToken {
            value: token.access_token.clone(),
            refresh_at: Instant::now() + Duration::from_secs(refresh_in_s),
        });
        Ok(token.access_token)
    }

    /// Drops `rejected` from the cache, unless another caller already
    /// replaced it.
    async fn forget_token(&self, product: Product, rejected: &str) {
        let mut cached = self.token_slot(product).lock().await;
        if cached.as_ref().is_some_and(|t| t.value == rejected) {
            *cached = None;
        }
    }

    /// One authenticated call; on a 401 (an expired or refused token: the
    /// gateway stopped the request, so nothing was processed) refreshes the
    /// token and tries once more, under the same reference id. A POST that
    /// may have reached MTN and got no answer is `Ambiguous`; a query is
    /// `Busy`.
    async fn exchange(
        &self,
        product: Product,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, CallError> {
        let moves_money = method == Method::POST;
        for attempt in 0..2 {
            let token = self.token(product).await?;
            let mut call = self
                .http
                .request(method.clone(), self.url(path))
                .bearer_auth(&token)
                .header(
                    "Ocp-Apim-Subscription-Key",
                    self.subscription_key(product).expose_secret(),
                );
            for (name, value) in headers {
                call = call.header(*name, value);
            }
            if let Some(body) = body {
                call = call.json(body);
            }
            let response = match call.send().await {
                Ok(response) => response,
                // Never connected: nothing was sent.
                Err(e) if e.is_connect() => return Err(CallError::Busy(without_url(&e))),
                Err(e) if moves_money => return Err(CallError::Ambiguous(without_url(&e))),
                Err(e) => return Err(CallError::Busy(without_url(&e))),
            };
            let status = response.status().as_u16();
            if status == 401 && attempt == 0 {
                self.forget_token(product, &token).await;
                continue;
            }
            if status == 401 {
                return Err(CallError::Config(format!(
                    "MTN refused a fresh {} token (HTTP 401): check mtn.{}_subscription_key",
                    product.path(),
                    product.path()
                )));
            }
            let text = match response.bytes().await {
                Ok(bytes) => String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ANSWER_BYTES)]).into_owned(),
                // A 202's body is empty by contract: the acceptance stands.
                Err(_) if status == 202 => String::new(),
                Err(e) if moves_money => return Err(CallError::Ambiguous(without_url(&e))),
                Err(e) => return Err(CallError::Busy(without_url(&e))),
            };
            return Ok(Answer { status, text });
        }
        unreachable!("the second attempt always returns")
    }

    /// Records the latency and outcome of one operation
    /// (`tuma_provider_request_seconds`, `tuma_provider_responses_total`).
    fn record<T>(operation: &'static str, started: Instant, result: &Result<T, CallError>) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(CallError::Busy(_)) => "busy".to_owned(),
            Err(CallError::Ambiguous(_)) => "ambiguous".to_owned(),
            Err(CallError::Duplicate) => "duplicate".to_owned(),
            Err(CallError::Rejected { code, .. }) => code.clone(),
            Err(CallError::Config(_)) => "config".to_owned(),
        };
        metrics::histogram!("tuma_provider_request_seconds", "provider" => "mtn", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("tuma_provider_responses_total", "provider" => "mtn", "operation" => operation, "outcome" => outcome)
            .increment(1);
    }

    /// Sends a transfer (payout) or a request to pay (collection) under our
    /// request id as `X-Reference-Id`. MTN's 202 means accepted: Pending.
    pub(super) async fn submit(&self, request: Request) -> Result<Reply, CallError> {
        let product = Product::of(request.direction);
        let started = Instant::now();
        let result = self.submit_once(product, &request).await;
        Self::record(product.resource(), started, &result);
        match &result {
            Ok(_) => tracing::info!(
                request_id = %request.request_id,
                msisdn = %masked(&request.msisdn),
                operation = product.resource(),
                "MTN accepted the request"
            ),
            Err(error) => tracing::warn!(
                request_id = %request.request_id,
                msisdn = %masked(&request.msisdn),
                operation = product.resource(),
                %error,
                "MTN did not accept the request"
            ),
        }
        result
    }

    async fn submit_once(&self, product: Product, request: &Request) -> Result<Reply, CallError> {
        let environment = self.target_environment(&request.country)?.to_owned();
        // MTN refuses empty notes (HTTP 500 in production); fall back to our id.
        let note: String = if request.reference.trim().is_empty() {
            request.request_id.clone()
        } else {
            request.reference.chars().take(super::wire::MAX_NOTE_CHARS).collect()
        };
        let amount = request.amount.normalize().to_string();
        let party = Party::msisdn(request.msisdn.trim_start_matches('+'));
        let body = match product {
            Product::Disbursement => serde_json::to_value(TransferRequest {
                amount,
                currency: request.currency.clone(),
                external_id: request.request_id.clone(),
                payee: party,
                payer_message: note.clone(),
                payee_note: note,
            }),
            Product::Collection => serde_json::to_value(RequestToPay {
                amount,
                currency: request.currency.clone(),
                external_id: request.request_id.clone(),
                payer: party,
                payer_message: note.clone(),
                payee_note: note,
            }),
        }
        .expect("MTN request bodies serialise");
        let callback_url = format!(
            "{}/callbacks/mtn/{}/{}",
            self.config.callback_base_url.trim_end_matches('/'),
            product.resource(),
            request.callback_token
        );
        let headers = [
            ("X-Reference-Id", request.request_id.clone()),
            ("X-Target-Environment", environment),
            ("X-Callback-Url", callback_url),
        ];
        let path = format!("/{}/v1_0/{}", product.path(), product.resource());
        let answer = self
            .exchange(product, Method::POST, &path, &headers, Some(&body))
            .await?;
        match answer.status {
            200..=202 => Ok(Reply::pending()),
            status => {
                let error = answer.error();
                Err(codes::refusal(
                    status,
                    error.code.as_deref(),
                    error.message.as_deref().unwrap_or_default(),
                ))
            }
        }
    }

    /// Asks what became of our request `request_id`. A reference MTN does
    /// not know (404) is Pending: the request may still be arriving, and
    /// the engine's poll budget bounds the wait.
    pub(super) async fn query(
        &self,
        direction: Direction,
        request_id: &str,
        country: &str,
    ) -> Result<Reply, CallError> {
        let product = Product::of(direction);
        let started = Instant::now();
        let result = self.query_once(product, request_id, country).await;
        Self::record("status", started, &result);
        result
    }

    async fn query_once(&self, product: Product, request_id: &str, country: &str) -> Result<Reply, CallError> {
        let environment = self.target_environment(country)?.to_owned();
        let path = format!("/{}/v1_0/{}/{}", product.path(), product.resource(), request_id.trim());
        let answer = self
            .exchange(
                product,
                Method::GET,
                &path,
                &[("X-Target-Environment", environment)],
                None,
            )
            .await?;
        match answer.status {
            200 => {
                let status: TransactionStatus = serde_json::from_str(&answer.text)
                    .map_err(|e| CallError::Busy(format!("unreadable MTN status answer: {e}")))?;
                let outcome = codes::status(&status.status, status.reason.as_ref());
                let receipt = match outcome {
                    crate::providers::Outcome::Succeeded => status.financial_transaction_id.map(|id| id.0),
                    _ => None,
                };
                // What MTN says moved, checked against the intent before a
                // success is applied (`actions::query_status`).
                Ok(Reply {
                    amount: status.amount.and_then(|a| a.0.trim().parse().ok()),
                    currency: status.currency,
                    ..Reply::new(outcome, receipt)
                })
            }
            404 => Ok(Reply::pending()),
            status => Err(codes::query_refusal(status, answer.error().code.as_deref())),
        }
    }

    /// The disbursement account's balance in the market of `country` (not
    /// part of the adapter interface: for float checks and operators).
    pub async fn balance(&self, country: &str) -> Result<Balance, CallError> {
        let started = Instant::now();
        let result = self.balance_once(country).await;
        Self::record("balance", started, &result);
        result
    }

    async fn balance_once(&self, country: &str) -> Result<Balance, CallError> {
        let environment = self.target_environment(country)?.to_owned();
        let answer = self
            .exchange(
                Product::Disbursement,
                Method::GET,
                "/disbursement/v1_0/account/balance",
                &[("X-Target-Environment", environment)],
                None,
            )
            .await?;
        if answer.status != 200 {
            return Err(codes::query_refusal(answer.status, answer.error().code.as_deref()));
        }
        let balance: BalanceResponse = serde_json::from_str(&answer.text)
            .map_err(|e| CallError::Busy(format!("unreadable MTN balance answer: {e}")))?;
        let available = balance
            .available_balance
            .0
            .trim()
            .parse::<Decimal>()
            .map_err(|e| CallError::Busy(format!("unreadable MTN availableBalance: {e}")))?;
        Ok(Balance {
            available,
            currency: balance.currency,
        })
    }
}

/// A phone number for logs: its last three digits only.
fn masked(msisdn: &str) -> String {
    format!("***{}", &msisdn[msisdn.len().saturating_sub(3)..])
}

/// reqwest errors print the URL, which carries callback tokens in headers
/// only but reference ids in paths; the message is all an operator needs.
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
    fn phone_numbers_are_masked_to_their_last_three_digits() {
        assert_eq!(masked("256772123456"), "***456");
        assert_eq!(masked("12"), "***12");
    }

    #[test]
    fn a_client_is_refused_for_an_api_user_that_is_not_a_uuid() {
        let config: MtnConfig = toml::from_str(
            r#"
            base_url = "http://127.0.0.1:9092"
            api_user = "not-a-uuid"
            api_key = "k"
            collection_subscription_key = "c"
            disbursement_subscription_key = "d"
            callback_base_url = "http://127.0.0.1:8080"
            request_timeout_ms = 1000
            token_refresh_margin_s = 60
            "#,
        )
        .unwrap();
        assert_eq!(
            config.target_environments.get("UG").map(String::as_str),
            Some("mtnuganda")
        );
        assert!(MtnClient::new(config).is_err());
    }
}
