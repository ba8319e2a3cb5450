//! An MTN MoMo Open API simulator on MTN's own paths, headers, field names,
//! codes and HTTP statuses, so that MTN's public client libraries work
//! against it with only the base URL changed.
//!
//! The contract it assumes (from the fact sheet's §3; where public facts
//! are thin, the choice is marked *assumed*):
//! - Sandbox provisioning: `POST /v1_0/apiuser` (`X-Reference-Id` = the new
//!   user's UUID, body `{"providerCallbackHost"}`) → 201; `GET
//!   /v1_0/apiuser/{id}` → `{"providerCallbackHost", "targetEnvironment":
//!   "sandbox"}`; `POST /v1_0/apiuser/{id}/apikey` → 201 `{"apiKey"}`. Any
//!   product's subscription key is accepted on these. Provisioned users may
//!   use `sandbox` (EUR) only. A new key does not revoke the user's older
//!   ones (*assumed*; it keeps the built-in credentials valid).
//! - The built-in API user [`API_USER`] / [`API_KEY`] stands for one issued
//!   by MTN's partner portal: it may use `mtnuganda` (UGX), `mtnrwanda` (RWF)
//!   and `sandbox` (EUR). Its `providerCallbackHost` is `127.0.0.1` until
//!   [`SimulatedProvider::configure`] sets it to the engine's host.
//! - Tokens: `POST /collection/token/` and `POST /disbursement/token/` with
//!   `Authorization: Basic base64(apiUser:apiKey)` and the product's
//!   `Ocp-Apim-Subscription-Key` → `{"access_token", "token_type":
//!   "access_token", "expires_in": <seconds, a number>}`. A token works on
//!   its own product only. Wrong credentials → 401 `{"error":
//!   "login_failed"}` (*assumed* body). A wrong subscription key → 401 in the
//!   API gateway's shape `{"statusCode": 401, "message": …}`; a missing,
//!   expired or other product's token → 401 in the same shape (*assumed*
//!   message).
//! - `POST /disbursement/v1_0/transfer` (also `v1_0/deposit`, `v2_0/deposit`)
//!   and `POST /collection/v1_0/requesttopay` → 202 with an empty body;
//!   `X-Reference-Id` must be a UUID (any version; else 400), and a repeat is
//!   409 `RESOURCE_ALREADY_EXIST`. Body `amount` (a string of whole units; a
//!   JSON number is accepted too, *assumed*), `currency`, `externalId`,
//!   `payee`/`payer` `{partyIdType, partyId}`, `payerMessage`, `payeeNote`
//!   (≤ 128 characters, else 400). An unreadable body or amount is 400
//!   `{"code": "BAD_REQUEST"}` (*assumed* code).
//! - HTTP 500 configuration errors, checked in this order: a target
//!   environment the user may not use → `NOT_ALLOWED_TARGET_ENVIRONMENT`; a
//!   currency other than the environment's → `INVALID_CURRENCY`; an
//!   `X-Callback-Url` whose host is not the user's `providerCallbackHost` →
//!   `INVALID_CALLBACK_URL_HOST`. Nothing is recorded for them.
//! - Status: `GET /disbursement/v1_0/transfer/{referenceId}` and `GET
//!   /collection/v1_0/requesttopay/{referenceId}` → the request's fields plus
//!   `status` (`PENDING`/`SUCCESSFUL`/`FAILED`), `financialTransactionId`
//!   once SUCCESSFUL, and `reason` on FAILED: `{"code", "message"}` for
//!   transfers, a bare code string for requests to pay (both shapes occur in
//!   the wild; which market sends which is *assumed*). Unknown reference →
//!   404 `RESOURCE_NOT_FOUND`.
//! - Callbacks go to `X-Callback-Url` (when given) with the status body:
//!   `PUT` for requests to pay, `POST` for transfers.
//! - `GET /{collection,disbursement}/v1_0/account/balance` →
//!   `{"availableBalance": "<whole units>", "currency"}` (the one float per
//!   currency); `GET /{product}/v1_0/accountholder/msisdn/{msisdn}/active` →
//!   `{"result": bool}`.
//!
//! Subscribers behave by [`Subscriber::of`] their `partyId`. Transfers are
//! decided at once: `…009` FAILED `PAYEE_NOT_FOUND`, a float too low FAILED
//! `NOT_ENOUGH_FUNDS`, else SUCCESSFUL. Requests to pay: `…001` FAILED
//! `APPROVAL_REJECTED`; `…002` (wrong PIN) FAILED `PAYMENT_NOT_APPROVED`, the
//! closest documented reason; `…003` stays PENDING until `prompt_timeout`,
//! then FAILED `EXPIRED`; `…004` FAILED `NOT_ENOUGH_FUNDS`; `…005` stays
//! PENDING until [`SimulatedProvider::answer`]; `…009` FAILED
//! `PAYER_NOT_FOUND`; everyone else pays at once (or FAILED
//! `NOT_ENOUGH_FUNDS` when their wallet runs dry).
//!
//! Chaos: `server_error_permille` answers 503 `SERVICE_UNAVAILABLE` before
//! doing anything; `timeout_after_money_permille` records and decides the
//! request (and sends its callback), then answers 504 as a gateway timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::{CallbackSender, Chaos, Movement, SimOptions, SimulatedProvider, Subscriber};
use crate::providers::mtn::MtnConfig;

/// The built-in API user (as if issued by MTN's partner portal).
pub const API_USER: &str = "3f6b2a1c-9d4e-4c8b-a7f1-5e2d8c9b0a14";
/// The built-in API user's key.
pub const API_KEY: &str = "tuma-sim-mtn-api-key";
/// The Collection product's subscription key.
pub const COLLECTION_SUBSCRIPTION_KEY: &str = "tuma-sim-mtn-collection-key";
/// The Disbursement product's subscription key.
pub const DISBURSEMENT_SUBSCRIPTION_KEY: &str = "tuma-sim-mtn-disbursement-key";
/// The built-in user's `providerCallbackHost` until `configure` says.
const DEFAULT_CALLBACK_HOST: &str = "127.0.0.1";
/// Target environment → the currency it serves.
pub const MARKETS: [(&str, &str); 3] = [("mtnuganda", "UGX"), ("mtnrwanda", "RWF"), ("sandbox", "EUR")];
/// What provisioned (sandbox) users may use.
const SANDBOX_ONLY: &[&str] = &["sandbox"];
/// What the built-in user may use.
const ALL_MARKETS: &[&str] = &["mtnuganda", "mtnrwanda", "sandbox"];
/// The API gateway's answer to a wrong `Ocp-Apim-Subscription-Key`.
const INVALID_SUBSCRIPTION_KEY: &str =
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.";
/// MTN refuses longer `payerMessage` / `payeeNote`.
const MAX_NOTE_CHARS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Product {
    Collection,
    Disbursement,
}

impl Product {
    fn subscription_key(self) -> &'static str {
        match self {
            Product::Collection => COLLECTION_SUBSCRIPTION_KEY,
            Product::Disbursement => DISBURSEMENT_SUBSCRIPTION_KEY,
        }
    }

    /// `payer` on requests to pay, `payee` on transfers.
    fn party_field(self) -> &'static str {
        match self {
            Product::Collection => "payer",
            Product::Disbursement => "payee",
        }
    }

    fn callback_method(self) -> reqwest::Method {
        match self {
            Product::Collection => reqwest::Method::PUT,
            Product::Disbursement => reqwest::Method::POST,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Successful,
    /// With its reason code.
    Failed(&'static str),
}

struct ApiUser {
    keys: Vec<String>,
    callback_host: String,
    environments: &'static [&'static str],
}

struct Token {
    product: Product,
    user: String,
    expires_at: Instant,
}

#[derive(Debug, Clone)]
struct Transaction {
    product: Product,
    /// Whole units.
    amount: u64,
    currency: String,
    external_id: String,
    party_type: String,
    party_id: String,
    payer_message: String,
    payee_note: String,
    status: Status,
    financial_transaction_id: Option<String>,
    callback_url: Option<String>,
    created_at: Instant,
    /// Reported instead of `amount` (see `misreport_amount`).
    reported_amount: Option<u64>,
}

struct SimState {
    rng: StdRng,
    users: HashMap<String, ApiUser>,
    tokens: HashMap<String, Token>,
    floats: HashMap<String, u64>,
    wallets: HashMap<String, u64>,
    /// By product and `X-Reference-Id`.
    transactions: HashMap<(Product, String), Transaction>,
    movements: Vec<Movement>,
    timeouts_after_money: u64,
}

/// A running MTN simulator.
#[derive(Clone)]
pub struct MtnSim {
    base_url: String,
    options: Arc<SimOptions>,
    state: Arc<Mutex<SimState>>,
    callbacks: CallbackSender,
}

/// A refusal: an HTTP status and MTN's JSON body (or none).
struct Refusal(StatusCode, Option<Value>);

impl Refusal {
    fn mtn(status: StatusCode, code: &str, message: &str) -> Refusal {
        Refusal(status, Some(json!({ "code": code, "message": message })))
    }

    /// The API gateway's own 401, before MTN sees the request.
    fn gateway(message: &str) -> Refusal {
        Refusal(
            StatusCode::UNAUTHORIZED,
            Some(json!({ "statusCode": 401, "message": message })),
        )
    }

    fn bad_request(message: &str) -> Refusal {
        Refusal::mtn(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self.1 {
            Some(body) => (self.0, Json(body)).into_response(),
            None => self.0.into_response(),
        }
    }
}

impl MtnSim {
    /// Starts a simulator on a free local port.
    pub async fn spawn(options: SimOptions) -> std::io::Result<MtnSim> {
        MtnSim::spawn_at(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), options).await
    }

    /// Starts a simulator on `address` (`tuma simulate` serves it on 9092).
    pub async fn spawn_at(address: std::net::SocketAddr, options: SimOptions) -> std::io::Result<MtnSim> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let sim = MtnSim::new(format!("http://{}", listener.local_addr()?), options);
        let app = router(sim.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(sim)
    }

    fn new(base_url: String, options: SimOptions) -> MtnSim {
        let floats = MARKETS
            .iter()
            .map(|(_, currency)| ((*currency).to_owned(), options.float))
            .collect();
        let users = HashMap::from([(
            API_USER.to_owned(),
            ApiUser {
                keys: vec![API_KEY.to_owned()],
                callback_host: DEFAULT_CALLBACK_HOST.to_owned(),
                environments: ALL_MARKETS,
            },
        )]);
        MtnSim {
            base_url,
            callbacks: CallbackSender::new(options.chaos.clone(), options.seed),
            state: Arc::new(Mutex::new(SimState {
                rng: StdRng::seed_from_u64(options.seed),
                users,
                tokens: HashMap::new(),
                floats,
                wallets: HashMap::new(),
                transactions: HashMap::new(),
                movements: Vec::new(),
                timeouts_after_money: 0,
            })),
            options: Arc::new(options),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().expect("MTN simulator state poisoned")
    }

    /// Checks the product's subscription key and bearer token; the API user
    /// the token belongs to.
    fn authorize(&self, headers: &HeaderMap, product: Product) -> Result<String, Refusal> {
        if header(headers, "ocp-apim-subscription-key") != Some(product.subscription_key()) {
            return Err(Refusal::gateway(INVALID_SUBSCRIPTION_KEY));
        }
        let bearer = header(headers, "authorization").and_then(|h| h.strip_prefix("Bearer "));
        let state = self.lock();
        bearer
            .and_then(|token| state.tokens.get(token))
            .filter(|token| token.product == product && Instant::now() < token.expires_at)
            .map(|token| token.user.clone())
            .ok_or_else(|| Refusal::gateway("Access denied due to invalid or expired access token."))
    }

    /// The target environment (and its currency) if `user` may use it.
    fn market(&self, headers: &HeaderMap, user: &str) -> Result<(&'static str, &'static str), Refusal> {
        let wanted = header(headers, "x-target-environment").unwrap_or_default();
        let state = self.lock();
        let allowed = state.users.get(user).map(|u| u.environments).unwrap_or_default();
        MARKETS
            .iter()
            .find(|(environment, _)| *environment == wanted && allowed.contains(environment))
            .copied()
            .ok_or_else(|| {
                Refusal::mtn(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "NOT_ALLOWED_TARGET_ENVIRONMENT",
                    "Access to target environment is forbidden.",
                )
            })
    }

    /// Moves a transfer's money: float → wallet, once.
    fn pay_out(&self, state: &mut SimState, reference: &str, txn: &mut Transaction) {
        let float = state.floats.entry(txn.currency.clone()).or_insert(0);
        if *float < txn.amount {
            txn.status = Status::Failed("NOT_ENOUGH_FUNDS");
            return;
        }
        *float -= txn.amount;
        *state.wallets.entry(txn.party_id.clone()).or_insert(self.options.wallet) += txn.amount;
        self.moved(state, reference, txn, "payout");
    }

    /// Moves a request to pay's money: wallet → float, once.
    fn collect(&self, state: &mut SimState, reference: &str, txn: &mut Transaction) {
        let wallet = state.wallets.entry(txn.party_id.clone()).or_insert(self.options.wallet);
        if *wallet < txn.amount {
            txn.status = Status::Failed("NOT_ENOUGH_FUNDS");
            return;
        }
        *wallet -= txn.amount;
        *state.floats.entry(txn.currency.clone()).or_insert(0) += txn.amount;
        self.moved(state, reference, txn, "collection");
    }

    fn moved(&self, state: &mut SimState, reference: &str, txn: &mut Transaction, direction: &'static str) {
        let receipt = state.rng.random_range(1_000_000_000u64..10_000_000_000).to_string();
        state.movements.push(Movement {
            request_id: reference.to_owned(),
            msisdn: txn.party_id.clone(),
            currency: txn.currency.clone(),
            amount: txn.amount,
            receipt: receipt.clone(),
            direction,
        });
        txn.status = Status::Successful;
        txn.financial_transaction_id = Some(receipt);
    }

    /// Decides a new request as its subscriber would.
    fn decide(&self, state: &mut SimState, reference: &str, txn: &mut Transaction) {
        let subscriber = Subscriber::of(&txn.party_id);
        match (txn.product, subscriber) {
            (Product::Disbursement, Subscriber::Unregistered) => txn.status = Status::Failed("PAYEE_NOT_FOUND"),
            (Product::Disbursement, _) => self.pay_out(state, reference, txn),
            (Product::Collection, Subscriber::Pays) => self.collect(state, reference, txn),
            (Product::Collection, Subscriber::Declines) => txn.status = Status::Failed("APPROVAL_REJECTED"),
            (Product::Collection, Subscriber::WrongPin) => txn.status = Status::Failed("PAYMENT_NOT_APPROVED"),
            (Product::Collection, Subscriber::Broke) => txn.status = Status::Failed("NOT_ENOUGH_FUNDS"),
            (Product::Collection, Subscriber::Unregistered) => txn.status = Status::Failed("PAYER_NOT_FOUND"),
            (Product::Collection, Subscriber::NeverAnswers | Subscriber::WaitsForTest) => {}
        }
    }

    /// Settles a pending request to pay (`Some(true)` pays, `Some(false)`
    /// declines, `None` expires); the callback to send, if it changed.
    fn settle(&self, reference: &str, pay: Option<bool>) -> Option<(String, Value)> {
        let mut state = self.lock();
        let key = (Product::Collection, reference.to_owned());
        let mut txn = state
            .transactions
            .get(&key)
            .filter(|t| t.status == Status::Pending)?
            .clone();
        match pay {
            Some(true) => self.collect(&mut state, reference, &mut txn),
            Some(false) => txn.status = Status::Failed("APPROVAL_REJECTED"),
            None => txn.status = Status::Failed("EXPIRED"),
        }
        let callback = txn.callback_url.clone().map(|url| (url, status_body(&txn)));
        state.transactions.insert(key, txn);
        callback
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|h| h.to_str().ok()).map(str::trim)
}

/// The status body, which is also the callback body.
fn status_body(txn: &Transaction) -> Value {
    let mut body = json!({
        "amount": txn.reported_amount.unwrap_or(txn.amount).to_string(),
        "currency": txn.currency,
        "externalId": txn.external_id,
        txn.product.party_field(): { "partyIdType": txn.party_type, "partyId": txn.party_id },
        "payerMessage": txn.payer_message,
        "payeeNote": txn.payee_note,
        "status": match txn.status {
            Status::Pending => "PENDING",
            Status::Successful => "SUCCESSFUL",
            Status::Failed(_) => "FAILED",
        },
    });
    if let Some(id) = &txn.financial_transaction_id {
        body["financialTransactionId"] = json!(id);
    }
    if let Status::Failed(code) = txn.status {
        body["reason"] = match txn.product {
            Product::Disbursement => json!({ "code": code, "message": reason_message(code) }),
            Product::Collection => json!(code),
        };
    }
    body
}

fn reason_message(code: &str) -> &'static str {
    match code {
        "PAYEE_NOT_FOUND" => "Payee does not exist",
        "PAYER_NOT_FOUND" => "Payer does not exist",
        "NOT_ENOUGH_FUNDS" => "Not enough funds",
        "APPROVAL_REJECTED" => "Approval rejected",
        "PAYMENT_NOT_APPROVED" => "Payment not approved",
        "EXPIRED" => "Request expired",
        _ => "Transaction failed",
    }
}

/// MTN's routes, at the root.
fn router(sim: MtnSim) -> Router {
    use Product::{Collection, Disbursement};
    let token = |product| move |s: State<MtnSim>, h: HeaderMap| issue_token(s, h, product);
    let create = |product| move |s: State<MtnSim>, h: HeaderMap, b: Bytes| create(s, h, b, product);
    let status = |product| move |s: State<MtnSim>, h: HeaderMap, p: Path<String>| status(s, h, p, product);
    let balance = |product| move |s: State<MtnSim>, h: HeaderMap| balance(s, h, product);
    let active = |product| move |s: State<MtnSim>, h: HeaderMap, p: Path<(String, String)>| active(s, h, p, product);
    Router::new()
        .route("/v1_0/apiuser", post(create_api_user))
        .route("/v1_0/apiuser/{user}", get(get_api_user))
        .route("/v1_0/apiuser/{user}/apikey", post(create_api_key))
        .route("/collection/token/", post(token(Collection)))
        .route("/collection/token", post(token(Collection)))
        .route("/disbursement/token/", post(token(Disbursement)))
        .route("/disbursement/token", post(token(Disbursement)))
        .route("/collection/v1_0/requesttopay", post(create(Collection)))
        .route("/collection/v1_0/requesttopay/{reference}", get(status(Collection)))
        .route("/disbursement/v1_0/transfer", post(create(Disbursement)))
        .route("/disbursement/v1_0/transfer/{reference}", get(status(Disbursement)))
        .route("/disbursement/v1_0/deposit", post(create(Disbursement)))
        .route("/disbursement/v2_0/deposit", post(create(Disbursement)))
        .route("/disbursement/v1_0/deposit/{reference}", get(status(Disbursement)))
        .route("/collection/v1_0/account/balance", get(balance(Collection)))
        .route("/disbursement/v1_0/account/balance", get(balance(Disbursement)))
        .route(
            "/collection/v1_0/accountholder/{kind}/{id}/active",
            get(active(Collection)),
        )
        .route(
            "/disbursement/v1_0/accountholder/{kind}/{id}/active",
            get(active(Disbursement)),
        )
        .layer(axum::middleware::from_fn_with_state(sim.clone(), hold_response))
        .with_state(sim)
}

/// Holds every answer back by `response_delay` (a slow network).
async fn hold_response(State(sim): State<MtnSim>, request: axum::extract::Request, next: Next) -> Response {
    let response = next.run(request).await;
    if !sim.options.response_delay.is_zero() {
        tokio::time::sleep(sim.options.response_delay).await;
    }
    response
}

/// Provisioning takes either product's subscription key.
fn provisioning_key(headers: &HeaderMap) -> Result<(), Refusal> {
    match header(headers, "ocp-apim-subscription-key") {
        Some(COLLECTION_SUBSCRIPTION_KEY | DISBURSEMENT_SUBSCRIPTION_KEY) => Ok(()),
        _ => Err(Refusal::gateway(INVALID_SUBSCRIPTION_KEY)),
    }
}

/// The `X-Reference-Id`, which must be a UUID.
fn reference_id(headers: &HeaderMap) -> Result<String, Refusal> {
    let reference = header(headers, "x-reference-id").unwrap_or_default();
    uuid::Uuid::parse_str(reference)
        .map(|_| reference.to_owned())
        .map_err(|_| Refusal::bad_request("X-Reference-Id must be a UUID"))
}

fn not_found() -> Refusal {
    Refusal::mtn(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "Requested resource was not found.",
    )
}

async fn create_api_user(State(sim): State<MtnSim>, headers: HeaderMap, body: Bytes) -> Result<StatusCode, Refusal> {
    provisioning_key(&headers)?;
    let user = reference_id(&headers)?;
    let request: Value = serde_json::from_slice(&body).map_err(|_| Refusal::bad_request("unreadable body"))?;
    let host = request["providerCallbackHost"]
        .as_str()
        .filter(|host| !host.trim().is_empty())
        .ok_or_else(|| Refusal::bad_request("providerCallbackHost is required"))?;
    let mut state = sim.lock();
    if state.users.contains_key(&user) {
        return Err(Refusal::mtn(
            StatusCode::CONFLICT,
            "RESOURCE_ALREADY_EXIST",
            "Duplicated reference id. Creation of resource failed.",
        ));
    }
    let user_record = ApiUser {
        keys: Vec::new(),
        callback_host: host.trim().to_owned(),
        environments: SANDBOX_ONLY,
    };
    state.users.insert(user, user_record);
    Ok(StatusCode::CREATED)
}

async fn get_api_user(
    State(sim): State<MtnSim>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<Value>, Refusal> {
    provisioning_key(&headers)?;
    let state = sim.lock();
    let user = state.users.get(&user).ok_or_else(not_found)?;
    Ok(Json(json!({
        "providerCallbackHost": user.callback_host,
        "targetEnvironment": user.environments.last().copied().unwrap_or("sandbox"),
    })))
}

async fn create_api_key(
    State(sim): State<MtnSim>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<(StatusCode, Json<Value>), Refusal> {
    provisioning_key(&headers)?;
    let mut state = sim.lock();
    let key: String = (0..32)
        .map(|_| char::from_digit(state.rng.random_range(0..16), 16).expect("a hex digit"))
        .collect();
    let user = state.users.get_mut(&user).ok_or_else(not_found)?;
    user.keys.push(key.clone());
    Ok((StatusCode::CREATED, Json(json!({ "apiKey": key }))))
}

async fn issue_token(State(sim): State<MtnSim>, headers: HeaderMap, product: Product) -> Result<Json<Value>, Refusal> {
    if header(&headers, "ocp-apim-subscription-key") != Some(product.subscription_key()) {
        return Err(Refusal::gateway(INVALID_SUBSCRIPTION_KEY));
    }
    let credentials = header(&headers, "authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let login_failed = || Refusal(StatusCode::UNAUTHORIZED, Some(json!({ "error": "login_failed" })));
    let (user, key) = credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .ok_or_else(login_failed)?;
    let mut state = sim.lock();
    if !state.users.get(user).is_some_and(|u| u.keys.iter().any(|k| k == key)) {
        return Err(login_failed());
    }
    let token: String = (0..48)
        .map(|_| state.rng.sample(rand::distr::Alphanumeric) as char)
        .collect();
    let ttl = sim.options.token_ttl;
    let record = Token {
        product,
        user: user.to_owned(),
        expires_at: Instant::now() + ttl,
    };
    state.tokens.insert(token.clone(), record);
    Ok(Json(json!({
        "access_token": token,
        "token_type": "access_token",
        "expires_in": ttl.as_secs(),
    })))
}

/// A transfer or request to pay, read and checked as MTN would.
fn read_request(
    sim: &MtnSim,
    headers: &HeaderMap,
    body: &[u8],
    product: Product,
    user: &str,
) -> Result<Transaction, Refusal> {
    let (_, currency) = sim.market(headers, user)?;
    let request: Value = serde_json::from_slice(body).map_err(|_| Refusal::bad_request("unreadable body"))?;
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let amount = text(&request["amount"])
        .or_else(|| request["amount"].as_u64().map(|a| a.to_string()))
        .and_then(|a| a.trim().parse::<Decimal>().ok())
        .filter(|a| *a > Decimal::ZERO && a.fract().is_zero())
        .and_then(|a| a.trunc().to_u64())
        .ok_or_else(|| Refusal::bad_request("amount must be a positive whole number, as a string"))?;
    let party = &request[product.party_field()];
    let (Some(party_type), Some(party_id)) = (text(&party["partyIdType"]), text(&party["partyId"])) else {
        return Err(Refusal::bad_request("the party's partyIdType and partyId are required"));
    };
    let payer_message = text(&request["payerMessage"]).unwrap_or_default();
    let payee_note = text(&request["payeeNote"]).unwrap_or_default();
    if payer_message.chars().count() > MAX_NOTE_CHARS || payee_note.chars().count() > MAX_NOTE_CHARS {
        return Err(Refusal::bad_request(
            "payerMessage and payeeNote are at most 128 characters",
        ));
    }
    if text(&request["currency"]).as_deref() != Some(currency) {
        return Err(Refusal::mtn(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INVALID_CURRENCY",
            "Currency not supported.",
        ));
    }
    let callback_url = header(headers, "x-callback-url").map(str::to_owned);
    if let Some(url) = &callback_url {
        let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned));
        let state = sim.lock();
        let allowed = state.users.get(user).map(|u| u.callback_host.as_str());
        if host.is_none()
            || !host
                .as_deref()
                .zip(allowed)
                .is_some_and(|(h, a)| h.eq_ignore_ascii_case(a))
        {
            return Err(Refusal::mtn(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INVALID_CALLBACK_URL_HOST",
                "Callback URL with different host than the configured providerCallbackHost.",
            ));
        }
    }
    Ok(Transaction {
        product,
        amount,
        currency: currency.to_owned(),
        external_id: text(&request["externalId"]).unwrap_or_default(),
        party_type,
        party_id,
        payer_message,
        payee_note,
        status: Status::Pending,
        financial_transaction_id: None,
        callback_url,
        created_at: Instant::now(),
        reported_amount: None,
    })
}

async fn create(
    State(sim): State<MtnSim>,
    headers: HeaderMap,
    body: Bytes,
    product: Product,
) -> Result<Response, Refusal> {
    let user = sim.authorize(&headers, product)?;
    let (server_error, timeout_after_money) = sim.callbacks.roll_request();
    if server_error {
        return Err(unavailable());
    }
    let reference = reference_id(&headers)?;
    let mut txn = read_request(&sim, &headers, &body, product, &user)?;
    let callback = {
        let mut state = sim.lock();
        let key = (product, reference.clone());
        if state.transactions.contains_key(&key) {
            return Err(Refusal::mtn(
                StatusCode::CONFLICT,
                "RESOURCE_ALREADY_EXIST",
                "Duplicated reference id. Creation of resource failed.",
            ));
        }
        sim.decide(&mut state, &reference, &mut txn);
        if timeout_after_money && txn.status == Status::Successful {
            state.timeouts_after_money += 1;
        }
        state.transactions.insert(key, txn.clone());
        (txn.status != Status::Pending)
            .then(|| txn.callback_url.clone().map(|url| (url, status_body(&txn))))
            .flatten()
    };
    if expires(&txn) {
        let (sim, timeout) = (sim.clone(), sim.options.prompt_timeout);
        let reference = reference.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some((url, body)) = sim.settle(&reference, None) {
                sim.callbacks.send(reqwest::Method::PUT, url, body).await;
            }
        });
    }
    if let Some((url, body)) = callback {
        sim.callbacks.send(product.callback_method(), url, body).await;
    }
    if timeout_after_money {
        // Recorded and decided; the answer is lost on the way back.
        return Ok((StatusCode::GATEWAY_TIMEOUT, "upstream request timeout").into_response());
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A pending prompt that will expire: its payer never answers.
fn expires(txn: &Transaction) -> bool {
    txn.product == Product::Collection
        && txn.status == Status::Pending
        && Subscriber::of(&txn.party_id) == Subscriber::NeverAnswers
}

fn unavailable() -> Refusal {
    Refusal::mtn(
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
        "Service unavailable, try again later.",
    )
}

async fn status(
    State(sim): State<MtnSim>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    product: Product,
) -> Result<Json<Value>, Refusal> {
    let user = sim.authorize(&headers, product)?;
    if sim.callbacks.roll_request().0 {
        return Err(unavailable());
    }
    sim.market(&headers, &user)?;
    let key = (product, reference.clone());
    let due = {
        let state = sim.lock();
        let txn = state.transactions.get(&key).ok_or_else(not_found)?;
        expires(txn) && txn.created_at.elapsed() >= sim.options.prompt_timeout
    };
    // The expiry task may not have run yet: the prompt's age is what counts.
    if due {
        if let Some((url, body)) = sim.settle(&reference, None) {
            sim.callbacks.send(reqwest::Method::PUT, url, body).await;
        }
    }
    let state = sim.lock();
    Ok(Json(status_body(state.transactions.get(&key).ok_or_else(not_found)?)))
}

async fn balance(State(sim): State<MtnSim>, headers: HeaderMap, product: Product) -> Result<Json<Value>, Refusal> {
    let user = sim.authorize(&headers, product)?;
    let (_, currency) = sim.market(&headers, &user)?;
    let available = sim.lock().floats.get(currency).copied().unwrap_or(0);
    Ok(Json(
        json!({ "availableBalance": available.to_string(), "currency": currency }),
    ))
}

async fn active(
    State(sim): State<MtnSim>,
    headers: HeaderMap,
    Path((_kind, id)): Path<(String, String)>,
    product: Product,
) -> Result<Json<Value>, Refusal> {
    let user = sim.authorize(&headers, product)?;
    sim.market(&headers, &user)?;
    Ok(Json(
        json!({ "result": Subscriber::of(&id) != Subscriber::Unregistered }),
    ))
}

impl SimulatedProvider for MtnSim {
    fn name(&self) -> &'static str {
        "mtn"
    }

    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    fn set_chaos(&self, chaos: Chaos) {
        self.callbacks.set_chaos(chaos);
    }

    fn movements(&self) -> Vec<Movement> {
        self.lock().movements.clone()
    }

    fn float(&self, currency: &str) -> u64 {
        self.lock().floats.get(currency).copied().unwrap_or(0)
    }

    fn set_float(&self, currency: &str, amount: u64) {
        self.lock().floats.insert(currency.to_owned(), amount);
    }

    fn answer(&self, request_id: &str, pay: bool) -> BoxFuture<'_, ()> {
        let request_id = request_id.to_owned();
        Box::pin(async move {
            if let Some((url, body)) = self.settle(&request_id, Some(pay)) {
                self.callbacks.send(reqwest::Method::PUT, url, body).await;
            }
        })
    }

    fn callbacks_lost(&self) -> u64 {
        self.callbacks.lost()
    }

    fn callbacks_duplicated(&self) -> u64 {
        self.callbacks.duplicated()
    }

    fn timeouts_after_money(&self) -> u64 {
        self.lock().timeouts_after_money
    }

    fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    fn misreport_amount(&self, request_id: &str, amount: u64) -> bool {
        let mut state = self.lock();
        let mut found = false;
        for ((_, reference), txn) in state.transactions.iter_mut() {
            if reference == request_id {
                txn.reported_amount = Some(amount);
                found = true;
            }
        }
        found
    }

    /// Points `[mtn]` at this simulator with the built-in API user and keys,
    /// and makes the engine's host the user's `providerCallbackHost`.
    fn configure(&self, config: &mut crate::config::Config, callback_base_url: &str) {
        let host = url::Url::parse(callback_base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_CALLBACK_HOST.to_owned());
        if let Some(user) = self.lock().users.get_mut(API_USER) {
            user.callback_host = host;
        }
        let (request_timeout_ms, token_refresh_margin_s) = config
            .mtn
            .as_ref()
            .map(|c| (c.request_timeout_ms, c.token_refresh_margin_s))
            .unwrap_or((30_000, 300));
        config.mtn = Some(MtnConfig {
            base_url: self.base_url.clone(),
            api_user: API_USER.to_owned(),
            api_key: SecretString::from(API_KEY),
            collection_subscription_key: SecretString::from(COLLECTION_SUBSCRIPTION_KEY),
            disbursement_subscription_key: SecretString::from(DISBURSEMENT_SUBSCRIPTION_KEY),
            target_environments: BTreeMap::from([
                ("UG".to_owned(), "mtnuganda".to_owned()),
                ("RW".to_owned(), "mtnrwanda".to_owned()),
            ]),
            callback_base_url: callback_base_url.to_owned(),
            request_timeout_ms,
            token_refresh_margin_s,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> MtnSim {
        MtnSim::new("http://127.0.0.1:9".into(), SimOptions::default())
    }

    fn txn(product: Product, msisdn: &str, amount: u64) -> Transaction {
        Transaction {
            product,
            amount,
            currency: "UGX".into(),
            external_id: "ext".into(),
            party_type: "MSISDN".into(),
            party_id: msisdn.into(),
            payer_message: "m".into(),
            payee_note: "n".into(),
            status: Status::Pending,
            financial_transaction_id: None,
            callback_url: None,
            created_at: Instant::now(),
            reported_amount: None,
        }
    }

    fn decided(sim: &MtnSim, product: Product, msisdn: &str, amount: u64) -> Transaction {
        let mut txn = txn(product, msisdn, amount);
        sim.decide(&mut sim.lock(), "ref", &mut txn);
        txn
    }

    #[test]
    fn requests_to_pay_follow_the_shared_subscriber_table() {
        let sim = sim();
        let cases = [
            ("256772123456", Status::Successful),
            ("256772123001", Status::Failed("APPROVAL_REJECTED")),
            ("256772123002", Status::Failed("PAYMENT_NOT_APPROVED")),
            ("256772123003", Status::Pending),
            ("256772123004", Status::Failed("NOT_ENOUGH_FUNDS")),
            ("256772123005", Status::Pending),
            ("256772123009", Status::Failed("PAYER_NOT_FOUND")),
        ];
        for (msisdn, status) in cases {
            assert_eq!(
                decided(&sim, Product::Collection, msisdn, 10).status,
                status,
                "{msisdn}"
            );
        }
        assert_eq!(sim.lock().movements.len(), 1, "only the paying subscriber moved money");
    }

    #[test]
    fn transfers_pay_everyone_registered_while_the_float_lasts() {
        let sim = sim();
        assert_eq!(
            decided(&sim, Product::Disbursement, "256772123001", 10).status,
            Status::Successful
        );
        assert_eq!(
            decided(&sim, Product::Disbursement, "256772123009", 10).status,
            Status::Failed("PAYEE_NOT_FOUND")
        );
        sim.set_float("UGX", 5);
        assert_eq!(
            decided(&sim, Product::Disbursement, "256772123456", 10).status,
            Status::Failed("NOT_ENOUGH_FUNDS")
        );
        assert_eq!(sim.float("UGX"), 5);
        assert_eq!(sim.lock().movements.len(), 1);
    }

    #[test]
    fn failure_reasons_are_objects_on_transfers_and_bare_strings_on_requests_to_pay() {
        let sim = sim();
        let transfer = status_body(&decided(&sim, Product::Disbursement, "256772123009", 10));
        assert_eq!(transfer["reason"]["code"], "PAYEE_NOT_FOUND");
        assert!(transfer.get("financialTransactionId").is_none());
        let request = status_body(&decided(&sim, Product::Collection, "256772123001", 10));
        assert_eq!(request["reason"], "APPROVAL_REJECTED");
        assert_eq!(request["payer"]["partyId"], "256772123001");
        let paid = status_body(&decided(&sim, Product::Disbursement, "256772123456", 10));
        assert_eq!(paid["status"], "SUCCESSFUL");
        assert!(paid["financialTransactionId"].is_string() && paid.get("reason").is_none());
    }

    #[test]
    fn a_prompt_settles_once() {
        let sim = sim();
        let mut pending = txn(Product::Collection, "256772123005", 10);
        pending.callback_url = Some("http://127.0.0.1:9/cb".into());
        sim.lock()
            .transactions
            .insert((Product::Collection, "ref".into()), pending);
        let (_, body) = sim.settle("ref", Some(true)).expect("the first answer settles it");
        assert_eq!(body["status"], "SUCCESSFUL");
        assert!(sim.settle("ref", None).is_none(), "a settled prompt no longer expires");
        assert_eq!(sim.movements_for("ref").len(), 1);
    }
}
