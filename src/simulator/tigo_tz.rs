//! A Tigo Pesa ("Mixx by Yas") simulator: the token, push bill-pay,
//! disbursement and status-enquiry endpoints, and the callback Tigo sends
//! to the URL configured with it.
//!
//! The contract it assumes (see also `providers::tigo_tz`). **[x2]** marks
//! what two independent public clients agree on; the rest is Tuma's
//! assumption, where nothing is public, to be checked against Tigo's
//! integration documents:
//!
//! - `POST /token`, form `username`, `password`, `grant_type=password` →
//!   200 `{access_token, token_type: "bearer", expires_in}` (seconds, an
//!   integer) **[x2]**. Wrong credentials → 400 `{"error":"invalid_grant"}`;
//!   another grant type → 400 `{"error":"unsupported_grant_type"}` (OAuth
//!   error bodies, assumed).
//! - Every other call needs `Authorization: bearer <token>` (scheme in any
//!   case) **[x2]**; a missing, unknown or expired token → 401
//!   `{"Message":"Authorization has been denied for this request."}`
//!   (assumed: an ASP.NET-style gateway).
//! - `POST /API/BillerPayment/BillerPay` with headers `Username`, `Password`
//!   and JSON `{CustomerMSISDN, BillerMSISDN, Amount, Remarks, ReferenceID}`
//!   **[x2]** → 200 `{ResponseCode, ResponseStatus, ResponseDescription,
//!   ReferenceID, Message}` **[x2]**: `BILLER-18-0000-S`/true when the
//!   prompt was sent; refusals are also HTTP 200 with ResponseStatus false
//!   and a code (public `DebitMandate-10-…`/`BILLER-18-…` codes where one
//!   fits; `SIM-…` codes otherwise, see `providers::tigo_tz::codes`).
//! - The callback, POSTed to the configured URL once a payment is decided:
//!   `{Status, Description, MFSTransactionID (left out on failure),
//!   ReferenceID, Amount (a string)}` **[x2]**.
//! - `POST /disbursements` (assumed; Tigo's real A2W is XML) with JSON
//!   `{reference_id, msisdn, amount, remarks}` → 200 `{response_code,
//!   status, description, mfs_transaction_id}`; a disbursement is paid in
//!   the call, then the same callback is sent.
//! - `GET /transactions/{ReferenceID}` (assumed) → 200 `{ReferenceID,
//!   Status: SUCCESS|FAILED|PENDING|EXPIRED, MFSTransactionID (when paid),
//!   ResponseCode, Description}`; an unknown ReferenceID → 404
//!   `{ReferenceID, ResponseCode: "SIM-NOT-FOUND", Description}`.
//! - A ReferenceID is used once, across both products: a second request
//!   under it is refused with `SIM-DUPLICATE-REFERENCE` and moves nothing.
//!   Requests refused for the subscriber or the float (not registered,
//!   insufficient funds) are recorded as FAILED under their ReferenceID;
//!   requests refused for their fields are not recorded.
//! - Chaos: a server error is HTTP 503 with `SIM-SYSTEM-BUSY` before
//!   anything happens; a timeout after money moves the money (and sends
//!   the callback), then answers HTTP 504 with a gateway's text body.
//!
//! Subscribers behave by the last three digits of their number
//! ([`Subscriber::of`]): payouts to `…009` are refused `DebitMandate-10-2005-E`;
//! collections from `…001` are declined, `…002` a wrong PIN, `…003` expire
//! after `prompt_timeout`, `…004` have too little money, `…005` wait for
//! [`SimulatedProvider::answer`], `…009` are refused at once; everyone
//! else approves at once. Serves TZS only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{CallbackSender, Chaos, Movement, SimOptions, SimulatedProvider, Subscriber};
use crate::providers::tigo_tz::codes::TigoCode;
use crate::providers::tigo_tz::wire::WholeAmount;
use crate::providers::tigo_tz::TigoConfig;

/// The API user the simulator accepts.
pub const SIM_USERNAME: &str = "tuma-sim-tigo";
/// The API password the simulator accepts.
pub const SIM_PASSWORD: &str = "tuma-sim-tigo-password";
/// The simulated business account (`BillerMSISDN`).
pub const SIM_BILLER_MSISDN: &str = "255650000000";

pub const TOKEN_PATH: &str = "/token";
pub const PUSH_PATH: &str = "/API/BillerPayment/BillerPay";
pub const DISBURSEMENT_PATH: &str = "/disbursements";
pub const STATUS_PATH: &str = "/transactions";

/// The one currency served.
const CURRENCY: &str = "TZS";

/// Largest amount one request may carry, whole TZS (Tigo's real limits are
/// per account and not public); above it `BILLER-18-3019-E`.
const MAX_AMOUNT_TZS: u64 = 10_000_000;

/// Where a request stands, as the status enquiry reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Pending,
    Paid,
    Failed(TigoCode),
    Expired,
}

#[derive(Debug, Clone)]
struct Transaction {
    collection: bool,
    msisdn: String,
    amount: u64,
    standing: Standing,
    receipt: Option<String>,
}

/// How a pending prompt ends.
#[derive(Debug, Clone, Copy)]
enum Decision {
    Pay,
    Refuse(TigoCode),
    Expire,
}

struct SimState {
    rng: StdRng,
    /// Access token → expiry.
    tokens: HashMap<String, Instant>,
    float: u64,
    wallets: HashMap<String, u64>,
    /// By ReferenceID (the caller's id).
    transactions: HashMap<String, Transaction>,
    movements: Vec<Movement>,
    timeouts_after_money: u64,
    /// The callback URL "configured with Tigo".
    callback_url: String,
}

/// A running Tigo simulator.
#[derive(Clone)]
pub struct TigoSim {
    base_url: String,
    options: Arc<SimOptions>,
    state: Arc<Mutex<SimState>>,
    sender: CallbackSender,
}

impl TigoSim {
    /// Starts a simulator on a free local port.
    pub async fn spawn(options: SimOptions) -> std::io::Result<TigoSim> {
        TigoSim::spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), options).await
    }

    /// Starts a simulator on `address` (`tuma simulate` serves it on a
    /// fixed port).
    pub async fn spawn_at(address: SocketAddr, options: SimOptions) -> std::io::Result<TigoSim> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let sim = TigoSim {
            base_url: format!("http://{}", listener.local_addr()?),
            sender: CallbackSender::new(options.chaos.clone(), options.seed),
            state: Arc::new(Mutex::new(SimState {
                rng: StdRng::seed_from_u64(options.seed),
                tokens: HashMap::new(),
                float: options.float,
                wallets: HashMap::new(),
                transactions: HashMap::new(),
                movements: Vec::new(),
                timeouts_after_money: 0,
                callback_url: String::new(),
            })),
            options: Arc::new(options),
        };
        let app = router(sim.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(sim)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().expect("tigo simulator state poisoned")
    }

    /// Sets the callback URL "configured with Tigo" (done by
    /// [`SimulatedProvider::configure`]; tests may point it elsewhere).
    pub fn set_callback_url(&self, url: &str) {
        self.lock().callback_url = url.to_owned();
    }

    /// A subscriber's wallet balance, whole TZS.
    pub fn wallet(&self, msisdn: &str) -> u64 {
        self.lock().wallets.get(msisdn).copied().unwrap_or(self.options.wallet)
    }

    async fn hold(&self) {
        if !self.options.response_delay.is_zero() {
            tokio::time::sleep(self.options.response_delay).await;
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let token = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let state = self.lock();
        token.is_some_and(|t| state.tokens.get(t).is_some_and(|expiry| Instant::now() < *expiry))
    }

    /// Sends the callback of `reference` under the chaos settings.
    async fn call_back(&self, body: Value) {
        let url = self.lock().callback_url.clone();
        self.sender.send(reqwest::Method::POST, url, body).await;
    }

    /// Ends the pending prompt `reference`: moves the money on `Pay` when
    /// the wallet holds it. Returns the callback body, or `None` when the
    /// prompt was not pending.
    fn settle(&self, reference: &str, decision: Decision) -> Option<Value> {
        let mut state = self.lock();
        let state = &mut *state;
        let transaction = state.transactions.get_mut(reference)?;
        if !transaction.collection || transaction.standing != Standing::Pending {
            return None;
        }
        let opening = self.options.wallet;
        let wallet = state.wallets.entry(transaction.msisdn.clone()).or_insert(opening);
        transaction.standing = match decision {
            Decision::Pay if *wallet < transaction.amount => Standing::Failed(TigoCode::InsufficientFunds),
            Decision::Pay => {
                *wallet -= transaction.amount;
                state.float += transaction.amount;
                let receipt = receipt(&mut state.rng);
                state.movements.push(Movement {
                    request_id: reference.to_owned(),
                    msisdn: transaction.msisdn.clone(),
                    currency: CURRENCY.to_owned(),
                    amount: transaction.amount,
                    receipt: receipt.clone(),
                    direction: "collection",
                });
                transaction.receipt = Some(receipt);
                Standing::Paid
            }
            Decision::Refuse(code) => Standing::Failed(code),
            Decision::Expire => Standing::Expired,
        };
        Some(callback_body(reference, transaction))
    }

    /// Settles `reference` and sends its callback.
    async fn settle_and_call_back(&self, reference: &str, decision: Decision) {
        if let Some(body) = self.settle(reference, decision) {
            self.call_back(body).await;
        }
    }
}

/// 10 characters like a Tigo transaction id.
fn receipt(rng: &mut StdRng) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..10)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn callback_body(reference: &str, transaction: &Transaction) -> Value {
    let (status, description) = match transaction.standing {
        Standing::Paid => (true, "Transaction successful"),
        Standing::Failed(code) => (false, code.meaning()),
        Standing::Expired => (false, TigoCode::Expired.meaning()),
        Standing::Pending => unreachable!("only decided transactions are reported"),
    };
    let mut body = json!({
        "Status": status,
        "Description": description,
        "ReferenceID": reference,
        "Amount": transaction.amount.to_string(),
    });
    if let Some(receipt) = &transaction.receipt {
        body["MFSTransactionID"] = json!(receipt);
    }
    body
}

/// The status word and code a transaction is reported with.
fn standing_words(standing: Standing) -> (&'static str, TigoCode) {
    match standing {
        Standing::Pending => ("PENDING", TigoCode::Success),
        Standing::Paid => ("SUCCESS", TigoCode::Success),
        Standing::Failed(code) => ("FAILED", code),
        Standing::Expired => ("EXPIRED", TigoCode::Expired),
    }
}

/// Tigo's routes, at the root of its base URL.
fn router(sim: TigoSim) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route(PUSH_PATH, post(push))
        .route(DISBURSEMENT_PATH, post(disburse))
        .route(&format!("{STATUS_PATH}/{{reference}}"), get(status))
        .with_state(sim)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "Message": "Authorization has been denied for this request." })),
    )
        .into_response()
}

fn gateway_timeout() -> Response {
    (StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out").into_response()
}

fn invalid_body() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "Message": "The request is invalid." })),
    )
        .into_response()
}

async fn token(State(sim): State<TigoSim>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let response = if field("grant_type") != "password" {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "unsupported_grant_type" })),
        )
            .into_response()
    } else if field("username") != SIM_USERNAME || field("password") != SIM_PASSWORD {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": "The user name or password is incorrect." })),
        )
            .into_response()
    } else {
        let mut state = sim.lock();
        let now = Instant::now();
        // Expired tokens are forgotten as new ones are issued: the map stays
        // as small as the live tokens.
        state.tokens.retain(|_, expiry| now < *expiry);
        let value: String = (0..32)
            .map(|_| state.rng.sample(rand::distr::Alphanumeric) as char)
            .collect();
        state.tokens.insert(value.clone(), now + sim.options.token_ttl);
        Json(json!({
            "access_token": value,
            "token_type": "bearer",
            "expires_in": sim.options.token_ttl.as_secs(),
        }))
        .into_response()
    };
    sim.hold().await;
    response
}

fn push_answer(code: TigoCode, reference: &str) -> Response {
    let accepted = code == TigoCode::Success;
    let (status, message) = if code == TigoCode::SystemBusy {
        (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
    } else if accepted {
        (StatusCode::OK, "Push request sent to the customer")
    } else {
        (StatusCode::OK, code.meaning())
    };
    let body = json!({
        "ResponseCode": code.as_str(),
        "ResponseStatus": accepted,
        "ResponseDescription": code.meaning(),
        "ReferenceID": reference,
        "Message": message,
    });
    (status, Json(body)).into_response()
}

async fn push(State(sim): State<TigoSim>, headers: HeaderMap, body: Bytes) -> Response {
    let response = push_inner(&sim, &headers, &body).await;
    sim.hold().await;
    response
}

/// A required text field of a JSON body (strings or numbers).
fn text_field(request: &Value, name: &str) -> Option<String> {
    match &request[name] {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn amount_field(request: &Value, name: &str) -> Option<u64> {
    serde_json::from_value::<WholeAmount>(request[name].clone())
        .ok()
        .map(|a| a.0)
        .filter(|a| (1..=MAX_AMOUNT_TZS).contains(a))
}

fn tanzanian(msisdn: &str) -> bool {
    msisdn.len() == 12 && msisdn.starts_with("255") && msisdn.bytes().all(|b| b.is_ascii_digit())
}

async fn push_inner(sim: &TigoSim, headers: &HeaderMap, body: &[u8]) -> Response {
    if !sim.authorized(headers) {
        return unauthorized();
    }
    let (server_error, timeout) = sim.sender.roll_request();
    if server_error {
        return push_answer(TigoCode::SystemBusy, "");
    }
    let header = |name: &str| headers.get(name).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return invalid_body();
    };
    let reference = text_field(&request, "ReferenceID").unwrap_or_default();
    if header("Username").is_empty() || header("Password").is_empty() {
        return push_answer(TigoCode::CredentialsEmpty, &reference);
    }
    if header("Username") != SIM_USERNAME || header("Password") != SIM_PASSWORD {
        return push_answer(TigoCode::WrongCredentials, &reference);
    }
    let refusal = match (
        text_field(&request, "CustomerMSISDN"),
        text_field(&request, "BillerMSISDN"),
        amount_field(&request, "Amount"),
    ) {
        (None, _, _) => Some(TigoCode::CustomerMsisdnMissing),
        (_, None, _) => Some(TigoCode::BillerMsisdnMissing),
        _ if reference.is_empty() => Some(TigoCode::InvalidReference),
        (_, Some(biller), _) if biller != SIM_BILLER_MSISDN => Some(TigoCode::WrongBillerMsisdn),
        (Some(msisdn), _, _) if !tanzanian(&msisdn) => Some(TigoCode::InvalidMsisdn),
        (_, _, None) => Some(TigoCode::AmountOutOfRange),
        _ => None,
    };
    if let Some(code) = refusal {
        return push_answer(code, &reference);
    }
    let msisdn = text_field(&request, "CustomerMSISDN").expect("checked above");
    let amount = amount_field(&request, "Amount").expect("checked above");
    let subscriber = Subscriber::of(&msisdn);
    {
        let mut state = sim.lock();
        if state.transactions.contains_key(&reference) {
            return push_answer(TigoCode::DuplicateReference, &reference);
        }
        let refused = subscriber == Subscriber::Unregistered;
        state.transactions.insert(
            reference.clone(),
            Transaction {
                collection: true,
                msisdn,
                amount,
                standing: if refused {
                    Standing::Failed(TigoCode::NotRegistered)
                } else {
                    Standing::Pending
                },
                receipt: None,
            },
        );
        if refused {
            return push_answer(TigoCode::NotRegistered, &reference);
        }
    }
    let decision = match subscriber {
        Subscriber::Pays => Some(Decision::Pay),
        Subscriber::Declines => Some(Decision::Refuse(TigoCode::Declined)),
        Subscriber::WrongPin => Some(Decision::Refuse(TigoCode::WrongPin)),
        Subscriber::Broke => Some(Decision::Refuse(TigoCode::InsufficientFunds)),
        Subscriber::NeverAnswers => {
            let (sim, reference, wait) = (sim.clone(), reference.clone(), sim.options.prompt_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                sim.settle_and_call_back(&reference, Decision::Expire).await;
            });
            None
        }
        Subscriber::WaitsForTest | Subscriber::Unregistered => None,
    };
    if let Some(decision) = decision {
        // The payer answers at once. Inline when the callback must beat the
        // answer or the money must move before the "timeout"; otherwise
        // just after the answer, as a phone would.
        if timeout || sim.sender.chaos().callback_before_response {
            sim.settle_and_call_back(&reference, decision).await;
        } else {
            let (sim, reference) = (sim.clone(), reference.clone());
            tokio::spawn(async move { sim.settle_and_call_back(&reference, decision).await });
        }
    }
    if timeout {
        let mut state = sim.lock();
        if state.transactions[&reference].standing == Standing::Paid {
            state.timeouts_after_money += 1;
        }
        return gateway_timeout();
    }
    push_answer(TigoCode::Success, &reference)
}

fn disbursement_answer(code: TigoCode, receipt: Option<&str>) -> Response {
    let accepted = code == TigoCode::Success;
    let status = if code == TigoCode::SystemBusy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut body = json!({
        "response_code": code.as_str(),
        "status": accepted,
        "description": if accepted { "Disbursement successful" } else { code.meaning() },
    });
    if let Some(receipt) = receipt {
        body["mfs_transaction_id"] = json!(receipt);
    }
    (status, Json(body)).into_response()
}

async fn disburse(State(sim): State<TigoSim>, headers: HeaderMap, body: Bytes) -> Response {
    let response = disburse_inner(&sim, &headers, &body).await;
    sim.hold().await;
    response
}

async fn disburse_inner(sim: &TigoSim, headers: &HeaderMap, body: &[u8]) -> Response {
    if !sim.authorized(headers) {
        return unauthorized();
    }
    let (server_error, timeout) = sim.sender.roll_request();
    if server_error {
        return disbursement_answer(TigoCode::SystemBusy, None);
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return invalid_body();
    };
    let (reference, msisdn, amount) = match (
        text_field(&request, "reference_id"),
        text_field(&request, "msisdn"),
        amount_field(&request, "amount"),
    ) {
        (None, _, _) => return disbursement_answer(TigoCode::InvalidReference, None),
        (_, None, _) => return disbursement_answer(TigoCode::CustomerMsisdnMissing, None),
        (_, Some(msisdn), _) if !tanzanian(&msisdn) => return disbursement_answer(TigoCode::InvalidMsisdn, None),
        (_, _, None) => return disbursement_answer(TigoCode::AmountOutOfRange, None),
        (Some(reference), Some(msisdn), Some(amount)) => (reference, msisdn, amount),
    };
    let (standing, receipt, callback) = {
        let mut state = sim.lock();
        let state = &mut *state;
        if state.transactions.contains_key(&reference) {
            return disbursement_answer(TigoCode::DuplicateReference, None);
        }
        let (standing, receipt) = if Subscriber::of(&msisdn) == Subscriber::Unregistered {
            (Standing::Failed(TigoCode::NotRegistered), None)
        } else if state.float < amount {
            (Standing::Failed(TigoCode::InsufficientFunds), None)
        } else {
            state.float -= amount;
            *state.wallets.entry(msisdn.clone()).or_insert(sim.options.wallet) += amount;
            let receipt = receipt(&mut state.rng);
            state.movements.push(Movement {
                request_id: reference.clone(),
                msisdn: msisdn.clone(),
                currency: CURRENCY.to_owned(),
                amount,
                receipt: receipt.clone(),
                direction: "payout",
            });
            if timeout {
                state.timeouts_after_money += 1;
            }
            (Standing::Paid, Some(receipt))
        };
        let transaction = Transaction {
            collection: false,
            msisdn,
            amount,
            standing,
            receipt: receipt.clone(),
        };
        let callback = (standing == Standing::Paid).then(|| callback_body(&reference, &transaction));
        state.transactions.insert(reference.clone(), transaction);
        (standing, receipt, callback)
    };
    if let Some(callback) = callback {
        sim.call_back(callback).await;
    }
    match standing {
        Standing::Paid if timeout => gateway_timeout(),
        Standing::Paid => disbursement_answer(TigoCode::Success, receipt.as_deref()),
        Standing::Failed(code) => disbursement_answer(code, None),
        Standing::Pending | Standing::Expired => unreachable!("a disbursement is decided in the call"),
    }
}

async fn status(State(sim): State<TigoSim>, headers: HeaderMap, Path(reference): Path<String>) -> Response {
    let response = status_inner(&sim, &headers, &reference);
    sim.hold().await;
    response
}

fn status_inner(sim: &TigoSim, headers: &HeaderMap, reference: &str) -> Response {
    if !sim.authorized(headers) {
        return unauthorized();
    }
    // A query moves no money: only the server-error die counts.
    let refusal = |status: StatusCode, code: TigoCode| {
        let body = json!({ "ReferenceID": reference, "ResponseCode": code.as_str(), "Description": code.meaning() });
        (status, Json(body)).into_response()
    };
    if sim.sender.roll_request().0 {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, TigoCode::SystemBusy);
    }
    let Some(transaction) = sim.lock().transactions.get(reference).cloned() else {
        return refusal(StatusCode::NOT_FOUND, TigoCode::NotFound);
    };
    let (word, code) = standing_words(transaction.standing);
    let mut body = json!({
        "ReferenceID": reference,
        "Status": word,
        "ResponseCode": code.as_str(),
        "Description": code.meaning(),
    });
    if let Some(receipt) = &transaction.receipt {
        body["MFSTransactionID"] = json!(receipt);
    }
    Json(body).into_response()
}

impl SimulatedProvider for TigoSim {
    fn name(&self) -> &'static str {
        "tigo_tz"
    }

    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    fn set_chaos(&self, chaos: Chaos) {
        self.sender.set_chaos(chaos);
    }

    fn movements(&self) -> Vec<Movement> {
        self.lock().movements.clone()
    }

    fn float(&self, currency: &str) -> u64 {
        if currency == CURRENCY {
            self.lock().float
        } else {
            0
        }
    }

    fn set_float(&self, currency: &str, amount: u64) {
        if currency == CURRENCY {
            self.lock().float = amount;
        }
    }

    fn answer(&self, request_id: &str, pay: bool) -> BoxFuture<'_, ()> {
        let reference = request_id.to_owned();
        Box::pin(async move {
            let decision = if pay {
                Decision::Pay
            } else {
                Decision::Refuse(TigoCode::Declined)
            };
            self.settle_and_call_back(&reference, decision).await;
        })
    }

    fn callbacks_lost(&self) -> u64 {
        self.sender.lost()
    }

    fn callbacks_duplicated(&self) -> u64 {
        self.sender.duplicated()
    }

    fn timeouts_after_money(&self) -> u64 {
        self.lock().timeouts_after_money
    }

    fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    fn configure(&self, config: &mut crate::config::Config, callback_base_url: &str) {
        let tigo = TigoConfig {
            base_url: self.base_url.clone(),
            token_path: TOKEN_PATH.into(),
            push_path: PUSH_PATH.into(),
            disbursement_path: DISBURSEMENT_PATH.into(),
            status_path: STATUS_PATH.into(),
            username: SIM_USERNAME.into(),
            password: SIM_PASSWORD.into(),
            biller_msisdn: SIM_BILLER_MSISDN.into(),
            callback_base_url: callback_base_url.into(),
            request_timeout_ms: 30_000,
            token_refresh_margin_s: 60,
        };
        self.set_callback_url(&tigo.callback_url());
        config.tigo_tz = Some(tigo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(collection: bool) -> Transaction {
        Transaction {
            collection,
            msisdn: "255712345678".into(),
            amount: 1_000,
            standing: Standing::Pending,
            receipt: None,
        }
    }

    #[tokio::test]
    async fn a_prompt_is_settled_once_and_only_a_payment_moves_money() {
        let sim = TigoSim::spawn(SimOptions::default()).await.unwrap();
        sim.lock().transactions.insert("c-1".into(), pending(true));
        let paid = sim.settle("c-1", Decision::Pay).expect("pending prompt");
        assert_eq!(paid["Status"], true);
        assert_eq!(paid["Amount"], "1000", "the callback's Amount is a string");
        assert!(paid["MFSTransactionID"].is_string());
        assert!(sim.settle("c-1", Decision::Expire).is_none(), "settled once");
        assert_eq!(sim.movements_for("c-1").len(), 1);
        assert_eq!(sim.float(CURRENCY), SimOptions::default().float + 1_000);

        sim.lock().transactions.insert("c-2".into(), pending(true));
        let expired = sim.settle("c-2", Decision::Expire).unwrap();
        assert_eq!(expired["Status"], false);
        assert!(expired.get("MFSTransactionID").is_none(), "left out on failure");
        assert!(sim.movements_for("c-2").is_empty());

        sim.lock().transactions.insert("p-1".into(), pending(false));
        assert!(sim.settle("p-1", Decision::Pay).is_none(), "payouts are no prompts");
    }

    #[tokio::test]
    async fn a_payer_with_too_little_money_is_refused_for_insufficient_funds() {
        let sim = TigoSim::spawn(SimOptions {
            wallet: 500,
            ..SimOptions::default()
        })
        .await
        .unwrap();
        sim.lock().transactions.insert("c-1".into(), pending(true));
        let refused = sim.settle("c-1", Decision::Pay).unwrap();
        assert_eq!(refused["Description"], TigoCode::InsufficientFunds.meaning());
        assert_eq!(sim.wallet("255712345678"), 500);
    }
}
