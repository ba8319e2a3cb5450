//! An Airtel Money Open API simulator on Airtel's own paths, headers, field
//! names, codes and callback bodies, so that Airtel's public client
//! libraries work against it with only the base URL changed.
//!
//! The contract it assumes (from the fact sheet, section 2; where public
//! facts are thin, the choice is marked *assumed*):
//! - `POST /auth/oauth2/token`, JSON `{client_id, client_secret,
//!   grant_type: "client_credentials"}` → `{access_token, expires_in (a
//!   string, as in UAT), token_type: "bearer"}`; bad credentials → 400
//!   `{error: "invalid_client", error_description}`. A missing, unknown or
//!   expired bearer token → 401 `{error: "invalid_token", …}` (*assumed*:
//!   one integrator's mock answers 403).
//! - Every other call needs `X-Country`/`X-Currency`: KE/KES, UG/UGX,
//!   TZ/TZS and RW/RWF are served. Router refusals come as HTTP 400 with a
//!   flat `{status_code, status_message}` (*assumed*, after one integrator's
//!   mock): missing country `ROUTER003`, unknown country `ROUTER006`,
//!   missing currency `ROUTER119`, a currency not the country's `ROUTER112`.
//! - Gateway and business answers are HTTP 200 with the envelope
//!   `{data: {transaction: {…}}, status: {code, message, result_code,
//!   response_code, success}}`, also for refusals (`code: "400"`,
//!   `success: false`). `data.transaction.id` is `false` in refusals.
//! - `POST /standard/v1/disbursements/` (also v2, unsigned): the PIN is
//!   decrypted with `simulator_key.pem` under PKCS#1 v1.5 or OAEP-SHA-256
//!   (either is accepted); undecryptable → `ROUTER114`, wrong → `ROUTER115`
//!   (router refusals, HTTP 400, *assumed*). A disbursement completes in the
//!   call: `DP00900001001`/`TS` with `airtel_money_id`, then a callback.
//!   Unregistered payee `DP00900001012`, float too low `DP00900001007`
//!   (`TF`), a repeated `transaction.id` `DP00900001017` with result
//!   `ESB000041` (no transaction block).
//! - `POST /merchant/v1/payments/` (also v2): a body country/currency that
//!   differs from the headers → `ESB000034`/`ESB000035`; accepted →
//!   `DP00800001006` with `transaction.status: "SUCCESS"` (prompt sent);
//!   unregistered payer → `DP00800001010`; a repeated id → `ESB000041`
//!   (collections have no DP008 duplicate code, *assumed*).
//! - `GET /standard/v1/disbursements/{id}` (also v2) and
//!   `GET /standard/v1/payments/{id}` → the envelope with the transaction's
//!   status (`TIP`, `TS`, `TF`, `TE`) and the matching response code (a
//!   paid collection keeps the in-process `DP00800001006` beside `TS`, as
//!   Airtel answers); unknown id → `DP00900001015` / `DP00800001025` with
//!   result `ESB000045`.
//! - Callbacks (the portal's one URL per app, [`AirtelSim::set_callback_url`]):
//!   `{"transaction":{"id","message","status_code":"TS"|"TF",
//!   "airtel_money_id"},"hash"?}` for collections and disbursements; `hash`
//!   = base64(HMAC-SHA256(key, the `transaction` JSON text as sent)) while a
//!   hash key is set (which text Airtel signs is unverified).
//! - Chaos: a server error is HTTP 503 before anything happens (every call
//!   but the token's); a timeout after money answers HTTP 504 or
//!   `DP00900001014` (disbursements, chosen by the seeded dice) or 504
//!   (collections, whose prompt goes out), with the transaction recorded so
//!   the enquiry tells the truth. Tokens live `token_ttl`.
//!
//! Subscribers behave by [`Subscriber::of`]: collections from `…001` are
//! refused (`DP00800001008`), `…002` wrong PIN (`DP00800001002`), `…003`
//! never answer (`TE`/`DP00800001029` after the prompt timeout), `…004` too
//! little money (`DP00800001007`), `…005` wait for [`SimulatedProvider::answer`];
//! payouts to `…009` are refused, as are collections from it. The business
//! float is kept per currency served; wallets by E.164 number.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::RsaPrivateKey;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::{CallbackSender, Chaos, Movement, SimOptions, SimulatedProvider, Subscriber};
use crate::providers::adapter::derive_token;
use crate::providers::airtel::wire::{callback_hash, calling_code, DisbursementRequest, PushRequest};
use crate::providers::airtel::{AirtelConfig, PinPadding};

/// The simulated app's credentials, as its portal would show them.
pub const CLIENT_ID: &str = "tuma-sim-airtel-client";
pub const CLIENT_SECRET: &str = "tuma-sim-airtel-secret";
/// The simulated disbursement wallet's PIN.
pub const DISBURSEMENT_PIN: &str = "1357";
/// The simulated portal's callback authentication key (on by default).
pub const CALLBACK_HASH_KEY: &str = "tuma-sim-airtel-hash-key";
/// Where callbacks go until told otherwise: a `tuma serve` on its default
/// address, configured with the credentials above.
pub const DEFAULT_CALLBACK_BASE_URL: &str = "http://127.0.0.1:8080";

const PRIVATE_KEY: &str = include_str!("simulator_key.pem");

/// The markets served: `(X-Country, X-Currency)`.
const MARKETS: [(&str, &str); 4] = [("KE", "KES"), ("UG", "UGX"), ("TZ", "TZS"), ("RW", "RWF")];
/// National numbers in the markets served have nine digits.
const NATIONAL_DIGITS: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Disbursement,
    Payment,
}

/// One request Airtel processed, by its kind and our `transaction.id`.
#[derive(Debug, Clone)]
struct Txn {
    /// E.164 digits.
    msisdn: String,
    currency: String,
    amount: u64,
    /// `TIP`, `TS`, `TF` or `TE`.
    status: &'static str,
    /// The response code the enquiry answers with.
    code: &'static str,
    message: String,
    airtel_money_id: Option<String>,
}

struct SimState {
    options: SimOptions,
    rng: StdRng,
    tokens: HashMap<String, Instant>,
    wallets: HashMap<String, u64>,
    floats: HashMap<String, u64>,
    txns: HashMap<(Kind, String), Txn>,
    movements: Vec<Movement>,
    timeouts_after_money: u64,
    callback_url: String,
    hash_key: String,
    counter: u64,
}

/// A running Airtel simulator.
#[derive(Clone)]
pub struct AirtelSim {
    base_url: String,
    state: Arc<Mutex<SimState>>,
    callbacks: CallbackSender,
    key: Arc<RsaPrivateKey>,
}

impl AirtelSim {
    /// Starts a simulator on a free local port.
    pub async fn spawn(options: SimOptions) -> std::io::Result<AirtelSim> {
        AirtelSim::spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), options).await
    }

    /// Starts a simulator on `address` (`tuma simulate` serves it on 9091).
    pub async fn spawn_at(address: SocketAddr, options: SimOptions) -> std::io::Result<AirtelSim> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let sim = AirtelSim::new(options, format!("http://{}", listener.local_addr()?));
        let app = sim.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(sim)
    }

    fn new(options: SimOptions, base_url: String) -> AirtelSim {
        let floats = MARKETS
            .iter()
            .map(|(_, currency)| ((*currency).to_owned(), options.float))
            .collect();
        let callback_url = format!(
            "{DEFAULT_CALLBACK_BASE_URL}/callbacks/airtel/payment/{}",
            derive_token("airtel", CLIENT_SECRET)
        );
        AirtelSim {
            base_url,
            callbacks: CallbackSender::new(options.chaos.clone(), options.seed),
            key: Arc::new(RsaPrivateKey::from_pkcs1_pem(PRIVATE_KEY).expect("the simulator key parses")),
            state: Arc::new(Mutex::new(SimState {
                rng: StdRng::seed_from_u64(options.seed),
                options,
                tokens: HashMap::new(),
                wallets: HashMap::new(),
                floats,
                txns: HashMap::new(),
                movements: Vec::new(),
                timeouts_after_money: 0,
                callback_url,
                hash_key: CALLBACK_HASH_KEY.to_owned(),
                counter: 0,
            })),
        }
    }

    /// Airtel's routes, at the root.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/auth/oauth2/token", post(token))
            .route("/standard/v1/disbursements", post(disburse))
            .route("/standard/v1/disbursements/", post(disburse))
            .route("/standard/v2/disbursements/", post(disburse))
            .route("/standard/v1/disbursements/{id}", get(disbursement_enquiry))
            .route("/standard/v2/disbursements/{id}", get(disbursement_enquiry))
            .route("/merchant/v1/payments", post(push))
            .route("/merchant/v1/payments/", post(push))
            .route("/merchant/v2/payments/", post(push))
            .route("/standard/v1/payments/{id}", get(payment_enquiry))
            .layer(axum::middleware::from_fn_with_state(self.clone(), hold_response))
            .with_state(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().expect("airtel simulator state poisoned")
    }

    /// The portal's callback URL: where every callback goes.
    pub fn set_callback_url(&self, url: &str) {
        self.lock().callback_url = url.to_owned();
    }

    /// The portal's callback authentication key; empty turns `hash` off.
    pub fn set_callback_hash_key(&self, key: &str) {
        self.lock().hash_key = key.to_owned();
    }

    /// A subscriber's wallet balance (E.164 digits), whole units.
    pub fn wallet(&self, msisdn: &str) -> u64 {
        let state = self.lock();
        state.wallets.get(msisdn).copied().unwrap_or(state.options.wallet)
    }

    /// Decides a waiting collection: `pays`, or any other behaviour's
    /// refusal. Returns the callback to send, or `None` if it was decided.
    fn settle(&self, id: &str, behaviour: Subscriber) -> Option<Value> {
        let mut state = self.lock();
        let key = (Kind::Payment, id.to_owned());
        let txn = state.txns.get(&key).filter(|t| t.status == "TIP")?.clone();
        let wallet = state.wallets.get(&txn.msisdn).copied().unwrap_or(state.options.wallet);
        let (status, code, message) = match behaviour {
            // A paid collection's enquiry answers as Airtel's does: the
            // in-process code beside the final status TS.
            Subscriber::Pays if wallet >= txn.amount => ("TS", "DP00800001006", "Transaction is successful."),
            Subscriber::Pays | Subscriber::Broke => (
                "TF",
                "DP00800001007",
                "User wallet does not have enough money to cover the payable amount.",
            ),
            Subscriber::Declines | Subscriber::WaitsForTest | Subscriber::Unregistered => {
                ("TF", "DP00800001008", "The transaction was refused.")
            }
            Subscriber::WrongPin => ("TF", "DP00800001002", "Incorrect pin has been entered."),
            Subscriber::NeverAnswers => ("TE", "DP00800001029", "Transaction has been expired."),
        };
        let airtel_money_id = next_id(&mut state, "MP");
        if status == "TS" {
            *state.wallets.entry(txn.msisdn.clone()).or_insert(wallet) -= txn.amount;
            *state.floats.entry(txn.currency.clone()).or_default() += txn.amount;
            state.movements.push(Movement {
                request_id: id.to_owned(),
                msisdn: txn.msisdn.clone(),
                currency: txn.currency.clone(),
                amount: txn.amount,
                receipt: airtel_money_id.clone(),
                direction: "collection",
            });
        }
        let settled = Txn {
            status,
            code,
            message: message.to_owned(),
            airtel_money_id: Some(airtel_money_id),
            ..txn
        };
        state.txns.insert(key, settled.clone());
        Some(callback_body(&state.hash_key, id, &settled))
    }

    /// Settles collection `id` as `behaviour` and sends its callback.
    async fn settle_and_call_back(&self, id: &str, behaviour: Subscriber) {
        if let Some(body) = self.settle(id, behaviour) {
            let url = self.lock().callback_url.clone();
            self.callbacks.send(reqwest::Method::POST, url, body).await;
        }
    }
}

/// The callback body of a decided transaction, signed when a key is set.
fn callback_body(hash_key: &str, id: &str, txn: &Txn) -> Value {
    let transaction = json!({
        "id": id,
        "message": txn.message,
        "status_code": if txn.status == "TS" { "TS" } else { "TF" },
        "airtel_money_id": txn.airtel_money_id.clone().unwrap_or_default(),
    });
    let mut body = json!({ "transaction": transaction });
    if !hash_key.is_empty() {
        // The hash covers the exact text the transaction object is sent as:
        // the body is serialised the same way when it goes out.
        let text = serde_json::to_string(&transaction).expect("JSON serialises");
        body["hash"] = json!(callback_hash(hash_key, &text));
    }
    body
}

/// An Airtel-style transaction id (`MP240928.2123.H05897`), unique per run.
fn next_id(state: &mut SimState, prefix: &str) -> String {
    state.counter += 1;
    let letter = state.rng.random_range(b'A'..=b'Z') as char;
    format!(
        "{prefix}{}.{letter}{:05}",
        chrono::Utc::now().format("%y%m%d.%H%M"),
        state.counter
    )
}

async fn hold_response(State(sim): State<AirtelSim>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let delay = sim.lock().options.response_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

/// The `{data, status}` envelope.
fn envelope(transaction: Value, result_code: &str, response_code: Option<&str>, message: &str) -> Response {
    let success = result_code == "ESB000010";
    let mut status = json!({
        "code": if success { "200" } else { "400" },
        "message": message,
        "result_code": result_code,
        "success": success,
    });
    if let Some(code) = response_code {
        status["response_code"] = json!(code);
    }
    let data = if transaction.is_null() {
        json!({})
    } else {
        json!({ "transaction": transaction })
    };
    Json(json!({ "data": data, "status": status })).into_response()
}

/// A refusal by the router, before anything is processed.
fn router_error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "status_code": code, "status_message": message })),
    )
        .into_response()
}

/// What every call but the token's checks first: the token, the chaos dice
/// and the market headers. `Ok((country, currency, timeout after money))`.
#[allow(clippy::result_large_err)] // the error is the ready answer
fn admit(sim: &AirtelSim, headers: &HeaderMap) -> Result<(String, String, bool), Response> {
    let token = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let valid = {
        let state = sim.lock();
        token.is_some_and(|t| state.tokens.get(t).is_some_and(|expiry| Instant::now() < *expiry))
    };
    if !valid {
        let body =
            json!({ "error": "invalid_token", "error_description": "The access token is invalid or has expired" });
        return Err((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    }
    let (server_error, timeout) = sim.callbacks.roll_request();
    if server_error {
        let body = json!({ "status": { "code": "503", "message": "Service Unavailable", "success": false } });
        return Err((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.trim().to_ascii_uppercase())
            .filter(|h| !h.is_empty())
    };
    let country = header("x-country").ok_or_else(|| router_error("ROUTER003", "Missing mandatory header X-Country"))?;
    let Some((_, market_currency)) = MARKETS.iter().find(|(c, _)| *c == country) else {
        return Err(router_error("ROUTER006", "Invalid country code provided."));
    };
    let currency = header("x-currency").ok_or_else(|| router_error("ROUTER119", "Missing currency."))?;
    if currency != *market_currency {
        return Err(router_error("ROUTER112", "Invalid currency provided."));
    }
    Ok((country, currency, timeout))
}

/// A national number as Airtel wants it: nine digits, no leading 0.
#[allow(clippy::result_large_err)] // the error is the ready answer
fn check_msisdn(msisdn: &str) -> Result<(), Response> {
    if msisdn.is_empty() || !msisdn.bytes().all(|b| b.is_ascii_digit()) || msisdn.starts_with('0') {
        return Err(envelope(Value::Null, "ESB000036", None, "Invalid MSISDN format"));
    }
    if msisdn.len() != NATIONAL_DIGITS {
        let message = format!("Invalid Msisdn Length. Msisdn Length should be {NATIONAL_DIGITS}");
        return Err(envelope(Value::Null, "ESB000033", None, &message));
    }
    Ok(())
}

#[allow(clippy::result_large_err)] // the error is the ready answer
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| envelope(Value::Null, "ESB000008", None, &format!("Field validation: {e}")))
}

async fn token(State(sim): State<AirtelSim>, body: axum::body::Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |name: &str| request[name].as_str().unwrap_or_default();
    if field("client_id") != CLIENT_ID
        || field("client_secret") != CLIENT_SECRET
        || field("grant_type") != "client_credentials"
    {
        let body = json!({ "error": "invalid_client", "error_description": "Invalid client authentication" });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let mut state = sim.lock();
    let token: String = (0..32)
        .map(|_| state.rng.sample(rand::distr::Alphanumeric) as char)
        .collect();
    let ttl = state.options.token_ttl;
    state.tokens.insert(token.clone(), Instant::now() + ttl);
    Json(json!({ "access_token": token, "expires_in": ttl.as_secs().to_string(), "token_type": "bearer" }))
        .into_response()
}

/// The PIN as the simulator's key decrypts it, under either padding.
fn decrypt_pin(key: &RsaPrivateKey, pin: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(pin.trim()).ok()?;
    let plain = key
        .decrypt(rsa::Pkcs1v15Encrypt, &bytes)
        .or_else(|_| key.decrypt(rsa::Oaep::new::<sha2::Sha256>(), &bytes))
        .ok()?;
    String::from_utf8(plain).ok()
}

async fn disburse(State(sim): State<AirtelSim>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (country, currency, timeout) = match admit(&sim, &headers) {
        Ok(market) => market,
        Err(answer) => return answer,
    };
    let request: DisbursementRequest = match parse(&body) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    match decrypt_pin(&sim.key, &request.pin) {
        None => return router_error("ROUTER114", "An error occurred while validating the pin."),
        Some(pin) if pin != DISBURSEMENT_PIN => return router_error("ROUTER115", "Pin you have entered is incorrect."),
        Some(_) => {}
    }
    if let Err(answer) = check_msisdn(&request.payee.msisdn) {
        return answer;
    }
    let id = request.transaction.id.clone();
    let (answer, callback) = {
        let mut state = sim.lock();
        if state.txns.contains_key(&(Kind::Disbursement, id.clone())) {
            let message = "Duplicate Transaction Id. To know the status of the actual transaction, please do transaction enquiry.";
            return envelope(Value::Null, "ESB000041", Some("DP00900001017"), message);
        }
        let msisdn = format!("{}{}", calling_code(&country).unwrap_or_default(), request.payee.msisdn);
        let amount = request.transaction.amount.0;
        let float = state.floats.get(&currency).copied().unwrap_or(0);
        let (status, code, message) = match Subscriber::of(&msisdn) {
            Subscriber::Unregistered => ("TF", "DP00900001012", "Mobile number entered is incorrect."),
            _ if float < amount => (
                "TF",
                "DP00900001007",
                "Not enough funds in account to complete the transaction.",
            ),
            _ => ("TS", "DP00900001001", "Transaction is successful."),
        };
        let mut txn = Txn {
            msisdn,
            currency,
            amount,
            status,
            code,
            message: message.to_owned(),
            airtel_money_id: None,
        };
        if status == "TS" {
            pay_out(&mut state, &id, &mut txn);
        }
        state.txns.insert((Kind::Disbursement, id.clone()), txn.clone());
        let callback =
            (status == "TS").then(|| (state.callback_url.clone(), callback_body(&state.hash_key, &id, &txn)));
        (disbursement_answer(&mut state, &id, &txn, timeout), callback)
    };
    if let Some((url, body)) = callback {
        sim.callbacks.send(reqwest::Method::POST, url, body).await;
    }
    answer
}

/// Moves a disbursement's money: float → wallet, recorded once.
fn pay_out(state: &mut SimState, id: &str, txn: &mut Txn) {
    let receipt = next_id(state, "MP");
    let opening = state.options.wallet;
    *state.floats.get_mut(&txn.currency).expect("a served currency") -= txn.amount;
    *state.wallets.entry(txn.msisdn.clone()).or_insert(opening) += txn.amount;
    state.movements.push(Movement {
        request_id: id.to_owned(),
        msisdn: txn.msisdn.clone(),
        currency: txn.currency.clone(),
        amount: txn.amount,
        receipt: receipt.clone(),
        direction: "payout",
    });
    txn.airtel_money_id = Some(receipt);
}

/// The synchronous answer to a processed disbursement; under chaos, a
/// timeout after the money moved.
fn disbursement_answer(state: &mut SimState, id: &str, txn: &Txn, timeout: bool) -> Response {
    if txn.status == "TS" && timeout {
        state.timeouts_after_money += 1;
        if state.rng.random_bool(0.5) {
            return (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout").into_response();
        }
        let transaction = json!({ "id": id, "status": "TA", "message": "Transaction Timed Out" });
        let message = "The transaction may be processed or failed due to time out. To know the exact status please do the transaction enquiry.";
        return envelope(transaction, "ESB000001", Some("DP00900001014"), message);
    }
    let reference_id = next_id(state, "CI");
    if txn.status == "TS" {
        let transaction = json!({
            "reference_id": reference_id,
            "airtel_money_id": txn.airtel_money_id,
            "id": id,
            "status": "TS",
            "message": format!("You have sent {} {} to {}.", txn.currency, txn.amount, mask(&txn.msisdn)),
        });
        return envelope(transaction, "ESB000010", Some(txn.code), "SUCCESS");
    }
    let transaction = json!({ "reference_id": reference_id, "id": false, "status": "TF", "message": txn.message });
    envelope(transaction, "ESB000011", Some(txn.code), &txn.message)
}

fn mask(msisdn: &str) -> String {
    format!("***{}", &msisdn[msisdn.len().saturating_sub(3)..])
}

async fn push(State(sim): State<AirtelSim>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (country, currency, timeout) = match admit(&sim, &headers) {
        Ok(market) => market,
        Err(answer) => return answer,
    };
    let request: PushRequest = match parse(&body) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let subscriber = &request.subscriber;
    let same = |given: Option<&String>, expected: &str| given.is_none_or(|g| g.eq_ignore_ascii_case(expected));
    if !same(Some(&request.transaction.country), &country) || !same(subscriber.country.as_ref(), &country) {
        return envelope(Value::Null, "ESB000034", None, "Invalid country");
    }
    if !same(Some(&request.transaction.currency), &currency) || !same(subscriber.currency.as_ref(), &currency) {
        return envelope(Value::Null, "ESB000035", None, "Invalid currency");
    }
    if let Err(answer) = check_msisdn(&subscriber.msisdn) {
        return answer;
    }
    let id = request.transaction.id.clone();
    let msisdn = format!("{}{}", calling_code(&country).unwrap_or_default(), subscriber.msisdn);
    let behaviour = Subscriber::of(&msisdn);
    let (prompt_timeout, approval_delay) = {
        let mut state = sim.lock();
        let key = (Kind::Payment, id.clone());
        if state.txns.contains_key(&key) {
            return envelope(Value::Null, "ESB000041", None, "External Transaction ID already exists");
        }
        let refused = behaviour == Subscriber::Unregistered;
        let (status, code, message) = if refused {
            (
                "TF",
                "DP00800001010",
                "Payee is not registered on Airtel Money platform.",
            )
        } else {
            (
                "TIP",
                "DP00800001006",
                "Transaction in pending state. Please check after sometime.",
            )
        };
        let txn = Txn {
            msisdn,
            currency,
            amount: request.transaction.amount.0,
            status,
            code,
            message: message.to_owned(),
            airtel_money_id: None,
        };
        state.txns.insert(key, txn);
        if refused {
            let transaction = json!({ "id": false, "status": "TF", "message": message });
            return envelope(transaction, "ESB000011", Some(code), message);
        }
        if timeout {
            state.timeouts_after_money += 1;
        }
        (state.options.prompt_timeout, state.options.approval_delay)
    };
    let before_response = sim.callbacks.chaos().callback_before_response;
    match behaviour {
        // Waits for the test's answer.
        Subscriber::WaitsForTest => {}
        Subscriber::NeverAnswers => spawn_settle(&sim, id.clone(), behaviour, prompt_timeout),
        _ if before_response => sim.settle_and_call_back(&id, behaviour).await,
        _ => spawn_settle(&sim, id.clone(), behaviour, approval_delay),
    }
    if timeout {
        return (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout").into_response();
    }
    let transaction = json!({ "id": id, "status": "SUCCESS" });
    envelope(transaction, "ESB000010", Some("DP00800001006"), "SUCCESS")
}

/// The payer answers (or the prompt expires) after `delay`.
fn spawn_settle(sim: &AirtelSim, id: String, behaviour: Subscriber, delay: std::time::Duration) {
    let sim = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        sim.settle_and_call_back(&id, behaviour).await;
    });
}

async fn disbursement_enquiry(State(sim): State<AirtelSim>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    enquiry(&sim, &headers, Kind::Disbursement, &id)
}

async fn payment_enquiry(State(sim): State<AirtelSim>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    enquiry(&sim, &headers, Kind::Payment, &id)
}

fn enquiry(sim: &AirtelSim, headers: &HeaderMap, kind: Kind, id: &str) -> Response {
    if let Err(answer) = admit(sim, headers) {
        return answer;
    }
    let Some(txn) = sim.lock().txns.get(&(kind, id.to_owned())).cloned() else {
        let code = match kind {
            Kind::Disbursement => "DP00900001015",
            Kind::Payment => "DP00800001025",
        };
        return envelope(Value::Null, "ESB000045", Some(code), "Transaction Not Found");
    };
    let transaction = json!({
        "airtel_money_id": txn.airtel_money_id.unwrap_or_default(),
        "id": id,
        "message": txn.message,
        "status": txn.status,
    });
    envelope(transaction, "ESB000010", Some(txn.code), "SUCCESS")
}

impl SimulatedProvider for AirtelSim {
    fn name(&self) -> &'static str {
        "airtel"
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
        let id = request_id.to_owned();
        let behaviour = if pay { Subscriber::Pays } else { Subscriber::Declines };
        Box::pin(async move { self.settle_and_call_back(&id, behaviour).await })
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

    fn configure(&self, config: &mut crate::config::Config, callback_base_url: &str) {
        let previous = config.airtel.take();
        let hash_key = self.lock().hash_key.clone();
        let airtel = AirtelConfig {
            base_url: self.base_url.clone(),
            client_id: CLIENT_ID.to_owned(),
            client_secret: SecretString::from(CLIENT_SECRET),
            disbursement_pin: SecretString::from(DISBURSEMENT_PIN),
            public_key: String::new(),
            pin_padding: PinPadding::Pkcs1v15,
            callback_base_url: callback_base_url.to_owned(),
            callback_hash_key: SecretString::from(hash_key),
            request_timeout_ms: previous.as_ref().map_or(30_000, |p| p.request_timeout_ms),
            token_refresh_margin_s: previous.as_ref().map_or(30, |p| p.token_refresh_margin_s),
        };
        self.set_callback_url(&format!(
            "{}/callbacks/airtel/payment/{}",
            callback_base_url.trim_end_matches('/'),
            derive_token("airtel", CLIENT_SECRET)
        ));
        config.airtel = Some(airtel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapters_built_in_public_key_is_the_simulators() {
        use rsa::pkcs8::EncodePublicKey;
        let key = RsaPrivateKey::from_pkcs1_pem(PRIVATE_KEY).unwrap();
        let der = key.to_public_key().to_public_key_der().unwrap();
        let shown = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        assert_eq!(shown, crate::providers::airtel::SIMULATOR_PUBLIC_KEY);
    }

    #[test]
    fn a_pin_decrypts_under_either_padding_and_garbage_does_not() {
        use rsa::pkcs8::DecodePublicKey;
        let key = RsaPrivateKey::from_pkcs1_pem(PRIVATE_KEY).unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(crate::providers::airtel::SIMULATOR_PUBLIC_KEY)
            .unwrap();
        let public = rsa::RsaPublicKey::from_public_key_der(&der).unwrap();
        for padding in [PinPadding::Pkcs1v15, PinPadding::Oaep] {
            let pin = crate::providers::airtel::client::encrypt_pin(&public, "1357", padding).unwrap();
            assert_eq!(decrypt_pin(&key, &pin).as_deref(), Some("1357"));
        }
        assert_eq!(decrypt_pin(&key, "bm90IGEgcGlu"), None);
        assert_eq!(decrypt_pin(&key, "%%%"), None);
    }

    #[test]
    fn a_callback_is_signed_over_the_transaction_text_it_is_sent_with() {
        let txn = Txn {
            msisdn: "256752604392".into(),
            currency: "UGX".into(),
            amount: 500,
            status: "TS",
            code: "DP00800001001",
            message: "ok".into(),
            airtel_money_id: Some("MP1".into()),
        };
        let body = callback_body("key", "c-1", &txn);
        let sent = serde_json::to_vec(&body).unwrap();
        let report = crate::providers::airtel::callbacks::parse("payment", &sent, "key").unwrap();
        assert_eq!(report.request_id.as_deref(), Some("c-1"));
        assert!(callback_body("", "c-1", &txn).get("hash").is_none(), "no key, no hash");
    }
}
