//! A Vodacom M-Pesa Tanzania simulator on the M-Pesa Open API's own paths,
//! headers, fields, `INS-` codes and HTTP statuses, so that the Open API's
//! public SDKs work against it with only the host changed.
//!
//! The contract it assumes (public facts are thin where marked):
//! - Paths under `/sandbox/ipg/v2/vodacomTZN` (and the production prefix
//!   `/openapi/ipg/v2/vodacomTZN`), each with or without its trailing `/`:
//!   `GET getSession/`, `POST b2cPayment/`, `POST c2bPayment/singleStage/`,
//!   `GET queryTransactionStatus/`.
//! - Auth: `Authorization: Bearer base64(RSA_PKCS1v15(x))` under the key
//!   pair of `simulator_key.pem`; `x` is the API key ([`API_KEY`]) for
//!   `getSession`, which answers 200 `{output_ResponseCode: "INS-0",
//!   output_ResponseDesc, output_SessionID}`, and the session id for every
//!   other call. A session is accepted at once (Vodacom's ~30 s activation
//!   is not simulated) and lives `token_ttl`. A bad or expired bearer gets
//!   401 `INS-2` "Invalid API Key". The `Origin` header is not checked.
//! - Payments: the answer is the final outcome, `output_ResponseCode`,
//!   `output_ResponseDesc`, `output_TransactionID`, `output_ConversationID`,
//!   `output_ThirdPartyConversationID`; success is HTTP 201 `INS-0`
//!   (unverified: some SDKs see 200). Refusals: `INS-20` 400 (a field
//!   missing), `INS-998` 400 (country not `TZN`), `INS-21` 400 (currency not
//!   `TZS`, or an unreadable body), `INS-13` 400 (short code not
//!   [`SERVICE_PROVIDER_CODE`]), `INS-15` 400 (amount not whole, not
//!   positive, or above [`MAX_AMOUNT_TZS`]), `INS-17` 400 (reference not
//!   1–20 characters), `INS-2051` 400 (number not 9–15 digits), `INS-10` 409
//!   (the `input_ThirdPartyConversationID` was used before, whatever became
//!   of it).
//! - B2C pays at once: `…009` → `INS-2002` 400 (receiver invalid); float
//!   too low → `INS-2006` 422; else the float is debited, the wallet
//!   credited, 201 `INS-0`.
//! - Single-stage C2B blocks until the payer answers: payers who pay, after
//!   `approval_delay` (201 `INS-0`, or `INS-2006` 422 when the wallet is
//!   short); `…001` declines (`INS-5` 401, status `Cancelled`); `…002` wrong
//!   PIN (`INS-6` 401, `Failed`); `…004` too little money (`INS-2006` 422,
//!   `Failed`); `…003` never answers: after `prompt_timeout`, `INS-9` 408
//!   (the documented "request timeout"; status `Expired`); `…005` waits for
//!   [`SimulatedProvider::answer`] or `prompt_timeout`; `…009` → `INS-2051`
//!   400 at once. The prompt runs on its own task, so a caller that gives up
//!   waiting changes nothing: the status query tells what happened.
//! - Status query by `input_QueryReference` = the payment's
//!   ThirdPartyConversationID, ConversationID or TransactionID: 200 `INS-0`
//!   with `output_ResponseTransactionStatus` `Completed` | `Pending` |
//!   `Cancelled` | `Expired` | `Failed`, or `N/A` for an unknown reference
//!   (unverified: what the real API answers for one), plus
//!   `output_OriginalTransactionID` (`N/A` until paid) and the query's own
//!   `output_ThirdPartyConversationID`.
//! - Chaos, on payment calls only: `server_error_permille` → 503 `INS-16`
//!   before anything happens; `timeout_after_money_permille` → the money
//!   moves, then 408 `INS-9`. There are no callbacks: the callback loss and
//!   duplicate settings do nothing here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};
use serde_json::json;
use tokio::sync::oneshot;

use super::{CallbackSender, Chaos, Movement, SimOptions, SimulatedProvider, Subscriber};
use crate::providers::vodacom_tz::wire::{B2cRequest, C2bRequest, StatusQuery};
use crate::providers::vodacom_tz::VodacomConfig;

const PRIVATE_KEY: &str = include_str!("simulator_key.pem");

/// The API key the simulated portal issued.
pub const API_KEY: &str = "tuma-sim-vodacom-api-key";
/// The simulated organisation's short code (the sandbox's).
pub const SERVICE_PROVIDER_CODE: &str = "000000";
/// The sandbox path prefix, the one [`VodacomSim::configure`] sets.
pub const SANDBOX_PREFIX: &str = "/sandbox/ipg/v2/vodacomTZN";
const PREFIXES: [&str; 2] = [SANDBOX_PREFIX, "/openapi/ipg/v2/vodacomTZN"];
const COUNTRY: &str = "TZN";
const CURRENCY: &str = "TZS";
/// The largest single payment the simulator takes, whole TZS (M-Pesa
/// Tanzania's per-transaction limit is of this order; not a published fact).
pub const MAX_AMOUNT_TZS: u64 = 5_000_000;
/// Decrypted bearers kept, so a client reusing its bearer costs one RSA
/// decryption per session; cleared when full (clients that encrypt afresh
/// for every call would otherwise grow it without end).
const BEARER_CACHE_MAX_ENTRIES: usize = 10_000;

/// Where a transaction stands, in the status query's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Completed,
    Cancelled,
    Expired,
    Failed,
}

impl Status {
    fn wire(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::Completed => "Completed",
            Status::Cancelled => "Cancelled",
            Status::Expired => "Expired",
            Status::Failed => "Failed",
        }
    }
}

/// One payment request, by its ThirdPartyConversationID.
#[derive(Debug, Clone)]
struct Transaction {
    conversation_id: String,
    /// M-Pesa's transaction id, once the money moved.
    transaction_id: Option<String>,
    status: Status,
}

/// A validated payment request, B2C or C2B alike.
#[derive(Debug, Clone)]
struct Payment {
    id: String,
    msisdn: String,
    amount: u64,
}

/// What a payment call answers.
struct Answer {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
    transaction_id: Option<String>,
}

impl Answer {
    fn new(status: StatusCode, code: &'static str, description: &'static str) -> Answer {
        Answer {
            status,
            code,
            description,
            transaction_id: None,
        }
    }
}

struct SimState {
    rng: StdRng,
    /// Session id → expiry.
    sessions: HashMap<String, Instant>,
    /// Bearer → what it decrypts to.
    bearers: HashMap<String, String>,
    /// Business float per currency, whole units.
    floats: HashMap<String, u64>,
    wallets: HashMap<String, u64>,
    transactions: HashMap<String, Transaction>,
    movements: Vec<Movement>,
    /// `…005` prompts waiting for the test's answer.
    prompts: HashMap<String, oneshot::Sender<bool>>,
    timeouts_after_money: u64,
}

struct Shared {
    state: Mutex<SimState>,
    /// Rolls the request-side chaos dice; it sends nothing here.
    chaos: CallbackSender,
    key: RsaPrivateKey,
    options: SimOptions,
}

/// A running simulator: its base URL and a handle on its state.
#[derive(Clone)]
pub struct VodacomSim {
    base_url: String,
    shared: Arc<Shared>,
}

impl VodacomSim {
    /// Starts a simulator on a free local port.
    pub async fn spawn(options: SimOptions) -> std::io::Result<VodacomSim> {
        VodacomSim::spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), options).await
    }

    /// Starts a simulator on `address` (`tuma simulate` uses a fixed port).
    pub async fn spawn_at(address: SocketAddr, options: SimOptions) -> std::io::Result<VodacomSim> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let sim = VodacomSim {
            base_url: format!("http://{}", listener.local_addr()?),
            shared: Arc::new(Shared {
                state: Mutex::new(SimState {
                    rng: StdRng::seed_from_u64(options.seed),
                    sessions: HashMap::new(),
                    bearers: HashMap::new(),
                    floats: HashMap::from([(CURRENCY.to_owned(), options.float)]),
                    wallets: HashMap::new(),
                    transactions: HashMap::new(),
                    movements: Vec::new(),
                    prompts: HashMap::new(),
                    timeouts_after_money: 0,
                }),
                chaos: CallbackSender::new(options.chaos.clone(), options.seed),
                key: RsaPrivateKey::from_pkcs1_pem(PRIVATE_KEY).expect("the simulator key parses"),
                options,
            }),
        };
        let app = router(sim.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(sim)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.shared.state.lock().expect("simulator state poisoned")
    }

    /// Holds an answer back by `response_delay` (a slow network).
    async fn hold(&self) {
        let delay = self.shared.options.response_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// What the bearer of `headers` decrypts to, if it decrypts at all.
    fn bearer_secret(&self, headers: &HeaderMap) -> Option<String> {
        let bearer = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))?
            .trim()
            .to_owned();
        if let Some(secret) = self.lock().bearers.get(&bearer) {
            return Some(secret.clone());
        }
        let encrypted = base64::engine::general_purpose::STANDARD.decode(&bearer).ok()?;
        let plain = self.shared.key.decrypt(Pkcs1v15Encrypt, &encrypted).ok()?;
        let secret = String::from_utf8(plain).ok()?;
        let mut state = self.lock();
        if state.bearers.len() >= BEARER_CACHE_MAX_ENTRIES {
            state.bearers.clear();
        }
        state.bearers.insert(bearer, secret.clone());
        Some(secret)
    }

    /// `Ok` when the bearer is a live session's.
    // The error is the ready answer; its size is no concern in a simulator.
    #[allow(clippy::result_large_err)]
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Response> {
        let secret = self.bearer_secret(headers);
        let state = self.lock();
        let live = secret.is_some_and(|id| state.sessions.get(&id).is_some_and(|expiry| Instant::now() < *expiry));
        if live {
            Ok(())
        } else {
            Err(ins(StatusCode::UNAUTHORIZED, "INS-2", "Invalid API Key"))
        }
    }

    /// Settles a collection prompt the payer answered (`Some(pay)`) or let
    /// expire (`None`); moves the money when they paid and have it.
    fn settle_collection(&self, payment: &Payment, answer: Option<bool>, broke: bool) -> Answer {
        let mut state = self.lock();
        state.prompts.remove(&payment.id);
        let opening = self.shared.options.wallet;
        let wallet = *state.wallets.entry(payment.msisdn.clone()).or_insert(opening);
        let (status, answer) = match answer {
            None => (
                Status::Expired,
                Answer::new(StatusCode::REQUEST_TIMEOUT, "INS-9", "Request timeout"),
            ),
            Some(false) => (
                Status::Cancelled,
                Answer::new(StatusCode::UNAUTHORIZED, "INS-5", "Transaction cancelled by customer"),
            ),
            Some(true) if broke || wallet < payment.amount => (
                Status::Failed,
                Answer::new(StatusCode::UNPROCESSABLE_ENTITY, "INS-2006", "Insufficient balance"),
            ),
            Some(true) => {
                *state.wallets.get_mut(&payment.msisdn).expect("inserted above") -= payment.amount;
                *state.floats.entry(CURRENCY.to_owned()).or_insert(0) += payment.amount;
                let receipt = record_movement(&mut state, payment, "collection");
                (
                    Status::Completed,
                    Answer {
                        transaction_id: Some(receipt),
                        ..Answer::new(StatusCode::CREATED, "INS-0", "Request processed successfully")
                    },
                )
            }
        };
        let transaction = state.transactions.get_mut(&payment.id).expect("recorded when prompted");
        transaction.status = status;
        transaction.transaction_id = answer.transaction_id.clone();
        answer
    }

    /// The answer of a wrong PIN: nothing moves.
    fn fail_collection(&self, payment: &Payment) -> Answer {
        let mut state = self.lock();
        if let Some(transaction) = state.transactions.get_mut(&payment.id) {
            transaction.status = Status::Failed;
        }
        Answer::new(StatusCode::UNAUTHORIZED, "INS-6", "Transaction Failed")
    }
}

/// An `INS-` answer with just its code and description.
fn ins(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "output_ResponseCode": code, "output_ResponseDesc": description })),
    )
        .into_response()
}

fn random_hex(rng: &mut StdRng, length: usize) -> String {
    (0..length)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).expect("a hex digit"))
        .collect()
}

fn random_transaction_id(rng: &mut StdRng) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..10)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

/// Records a movement under the payment's id; returns its receipt.
fn record_movement(state: &mut SimState, payment: &Payment, direction: &'static str) -> String {
    let receipt = random_transaction_id(&mut state.rng);
    state.movements.push(Movement {
        request_id: payment.id.clone(),
        msisdn: payment.msisdn.clone(),
        currency: CURRENCY.to_owned(),
        amount: payment.amount,
        receipt: receipt.clone(),
        direction,
    });
    receipt
}

/// The fields B2C and C2B share, checked in the order the API reports
/// them.
struct Fields<'a> {
    amount: &'a str,
    country: &'a str,
    currency: &'a str,
    msisdn: &'a str,
    service_provider_code: &'a str,
    id: &'a str,
    reference: &'a str,
    description: &'a str,
}

// The error is the ready answer; its size is no concern in a simulator.
#[allow(clippy::result_large_err)]
fn validate(fields: &Fields<'_>) -> Result<Payment, Response> {
    let required = [
        fields.amount,
        fields.country,
        fields.currency,
        fields.msisdn,
        fields.service_provider_code,
        fields.id,
        fields.description,
    ];
    if required.iter().any(|f| f.trim().is_empty()) {
        return Err(ins(
            StatusCode::BAD_REQUEST,
            "INS-20",
            "Not All Parameters Provided. Please try again.",
        ));
    }
    if fields.country != COUNTRY {
        return Err(ins(StatusCode::BAD_REQUEST, "INS-998", "Invalid Market"));
    }
    if fields.currency != CURRENCY {
        return Err(ins(
            StatusCode::BAD_REQUEST,
            "INS-21",
            "Parameter validations failed. Please try again.",
        ));
    }
    if fields.service_provider_code != SERVICE_PROVIDER_CODE {
        return Err(ins(StatusCode::BAD_REQUEST, "INS-13", "Invalid Shortcode Used"));
    }
    let amount = fields
        .amount
        .trim()
        .parse::<rust_decimal::Decimal>()
        .ok()
        .filter(|a| a.fract().is_zero())
        .and_then(|a| u64::try_from(a).ok())
        .filter(|a| (1..=MAX_AMOUNT_TZS).contains(a));
    let Some(amount) = amount else {
        return Err(ins(StatusCode::BAD_REQUEST, "INS-15", "Invalid Amount Used"));
    };
    if !(1..=20).contains(&fields.reference.chars().count()) {
        return Err(ins(
            StatusCode::BAD_REQUEST,
            "INS-17",
            "Invalid Transaction Reference. Length Should Be Between 1 and 20.",
        ));
    }
    let msisdn = fields.msisdn.trim();
    if !(9..=15).contains(&msisdn.len()) || !msisdn.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ins(StatusCode::BAD_REQUEST, "INS-2051", "MSISDN invalid."));
    }
    Ok(Payment {
        id: fields.id.to_owned(),
        msisdn: msisdn.to_owned(),
        amount,
    })
}

/// A payment's answer body.
fn payment_response(answer: &Answer, conversation_id: &str, id: &str) -> Response {
    (
        answer.status,
        Json(json!({
            "output_ResponseCode": answer.code,
            "output_ResponseDesc": answer.description,
            "output_TransactionID": answer.transaction_id.clone().unwrap_or_default(),
            "output_ConversationID": conversation_id,
            "output_ThirdPartyConversationID": id,
        })),
    )
        .into_response()
}

/// The Open API's routes, under each prefix, with and without the trailing
/// slash the documentation writes.
pub fn router(sim: VodacomSim) -> Router {
    let mut router = Router::new();
    for prefix in PREFIXES {
        for slash in ["/", ""] {
            router = router
                .route(&format!("{prefix}/getSession{slash}"), get(get_session))
                .route(&format!("{prefix}/b2cPayment{slash}"), post(b2c_payment))
                .route(&format!("{prefix}/c2bPayment/singleStage{slash}"), post(c2b_payment))
                .route(
                    &format!("{prefix}/queryTransactionStatus{slash}"),
                    get(query_transaction_status),
                );
        }
    }
    router.with_state(sim)
}

async fn get_session(State(sim): State<VodacomSim>, headers: HeaderMap) -> Response {
    let answer = if sim.bearer_secret(&headers).as_deref() == Some(API_KEY) {
        let mut state = sim.lock();
        let session_id = random_hex(&mut state.rng, 32);
        let expiry = Instant::now() + sim.shared.options.token_ttl;
        state.sessions.insert(session_id.clone(), expiry);
        Json(json!({
            "output_ResponseCode": "INS-0",
            "output_ResponseDesc": "Request processed successfully",
            "output_SessionID": session_id,
        }))
        .into_response()
    } else {
        ins(StatusCode::UNAUTHORIZED, "INS-2", "Invalid API Key")
    };
    sim.hold().await;
    answer
}

/// What every payment call does before its own work: the session, chaos's
/// overload, the body. Returns the body and whether chaos wants the money
/// to move and the answer to be lost.
// The error is the ready answer; its size is no concern in a simulator.
#[allow(clippy::result_large_err)]
fn admit<T: serde::de::DeserializeOwned>(
    sim: &VodacomSim,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(T, bool), Response> {
    sim.authorize(headers)?;
    let (server_error, timeout_after_money) = sim.shared.chaos.roll_request();
    if server_error {
        return Err(ins(
            StatusCode::SERVICE_UNAVAILABLE,
            "INS-16",
            "Unable to handle the request due to a temporary overloading",
        ));
    }
    let request = serde_json::from_slice(body).map_err(|_| {
        ins(
            StatusCode::BAD_REQUEST,
            "INS-21",
            "Parameter validations failed. Please try again.",
        )
    })?;
    Ok((request, timeout_after_money))
}

/// Records a new transaction under the payment's id, or answers `INS-10`
/// when the id was used before. Returns its ConversationID.
// The error is the ready answer; its size is no concern in a simulator.
#[allow(clippy::result_large_err)]
fn open_transaction(state: &mut SimState, payment: &Payment, status: Status) -> Result<String, Response> {
    if let Some(previous) = state.transactions.get(&payment.id) {
        let answer = Answer::new(StatusCode::CONFLICT, "INS-10", "Duplicate Transaction");
        return Err(payment_response(&answer, &previous.conversation_id, &payment.id));
    }
    let conversation_id = random_hex(&mut state.rng, 32);
    state.transactions.insert(
        payment.id.clone(),
        Transaction {
            conversation_id: conversation_id.clone(),
            transaction_id: None,
            status,
        },
    );
    Ok(conversation_id)
}

/// Turns a money-moving answer into a lost one when chaos says so.
fn maybe_lose(sim: &VodacomSim, answer: Answer, timeout_after_money: bool) -> Answer {
    if timeout_after_money && answer.transaction_id.is_some() {
        sim.lock().timeouts_after_money += 1;
        return Answer::new(StatusCode::REQUEST_TIMEOUT, "INS-9", "Request timeout");
    }
    answer
}

async fn b2c_payment(State(sim): State<VodacomSim>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let response = b2c_answer(&sim, &headers, &body);
    sim.hold().await;
    response
}

fn b2c_answer(sim: &VodacomSim, headers: &HeaderMap, body: &[u8]) -> Response {
    let (request, timeout_after_money): (B2cRequest, bool) = match admit(sim, headers, body) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let payment = match validate(&Fields {
        amount: &request.amount,
        country: &request.country,
        currency: &request.currency,
        msisdn: &request.customer_msisdn,
        service_provider_code: &request.service_provider_code,
        id: &request.third_party_conversation_id,
        reference: &request.transaction_reference,
        description: &request.payment_items_desc,
    }) {
        Ok(payment) => payment,
        Err(response) => return response,
    };
    let (answer, conversation_id) = {
        let mut state = sim.lock();
        let conversation_id = match open_transaction(&mut state, &payment, Status::Failed) {
            Ok(id) => id,
            Err(response) => return response,
        };
        let float = state.floats.get(CURRENCY).copied().unwrap_or(0);
        let answer = if Subscriber::of(&payment.msisdn) == Subscriber::Unregistered {
            Answer::new(StatusCode::BAD_REQUEST, "INS-2002", "Receiver invalid")
        } else if float < payment.amount {
            Answer::new(StatusCode::UNPROCESSABLE_ENTITY, "INS-2006", "Insufficient balance")
        } else {
            *state.floats.get_mut(CURRENCY).expect("present: float checked") -= payment.amount;
            let opening = sim.shared.options.wallet;
            *state.wallets.entry(payment.msisdn.clone()).or_insert(opening) += payment.amount;
            let receipt = record_movement(&mut state, &payment, "payout");
            let transaction = state.transactions.get_mut(&payment.id).expect("opened above");
            transaction.status = Status::Completed;
            transaction.transaction_id = Some(receipt.clone());
            Answer {
                transaction_id: Some(receipt),
                ..Answer::new(StatusCode::CREATED, "INS-0", "Request processed successfully")
            }
        };
        (answer, conversation_id)
    };
    let answer = maybe_lose(sim, answer, timeout_after_money);
    payment_response(&answer, &conversation_id, &payment.id)
}

async fn c2b_payment(State(sim): State<VodacomSim>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let response = c2b_answer(&sim, &headers, &body).await;
    sim.hold().await;
    response
}

async fn c2b_answer(sim: &VodacomSim, headers: &HeaderMap, body: &[u8]) -> Response {
    let (request, timeout_after_money): (C2bRequest, bool) = match admit(sim, headers, body) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let payment = match validate(&Fields {
        amount: &request.amount,
        country: &request.country,
        currency: &request.currency,
        msisdn: &request.customer_msisdn,
        service_provider_code: &request.service_provider_code,
        id: &request.third_party_conversation_id,
        reference: &request.transaction_reference,
        description: &request.purchased_items_desc,
    }) {
        Ok(payment) => payment,
        Err(response) => return response,
    };
    let subscriber = Subscriber::of(&payment.msisdn);
    let (conversation_id, waiter) = {
        let mut state = sim.lock();
        if subscriber == Subscriber::Unregistered {
            let conversation_id = match open_transaction(&mut state, &payment, Status::Failed) {
                Ok(id) => id,
                Err(response) => return response,
            };
            let answer = Answer::new(StatusCode::BAD_REQUEST, "INS-2051", "MSISDN invalid.");
            return payment_response(&answer, &conversation_id, &payment.id);
        }
        let conversation_id = match open_transaction(&mut state, &payment, Status::Pending) {
            Ok(id) => id,
            Err(response) => return response,
        };
        // Registered with the transaction, so that once a status query
        // says Pending, `answer` reaches this prompt.
        let waiter = (subscriber == Subscriber::WaitsForTest).then(|| {
            let (sender, receiver) = oneshot::channel();
            state.prompts.insert(payment.id.clone(), sender);
            receiver
        });
        (conversation_id, waiter)
    };
    // The prompt runs on its own task: the payer's answer stands even if
    // the caller stops waiting for this call.
    let prompt = tokio::spawn(run_prompt(sim.clone(), payment.clone(), subscriber, waiter));
    let answer = match prompt.await {
        Ok(answer) => maybe_lose(sim, answer, timeout_after_money),
        Err(_) => Answer::new(StatusCode::INTERNAL_SERVER_ERROR, "INS-1", "Internal Error"),
    };
    payment_response(&answer, &conversation_id, &payment.id)
}

/// The payer's side of a USSD prompt, by their number's behaviour.
async fn run_prompt(
    sim: VodacomSim,
    payment: Payment,
    subscriber: Subscriber,
    waiter: Option<oneshot::Receiver<bool>>,
) -> Answer {
    let options = &sim.shared.options;
    let answered = |pay: bool| async move {
        tokio::time::sleep(options.approval_delay).await;
        Some(pay)
    };
    let (answer, broke) = match subscriber {
        Subscriber::Pays => (answered(true).await, false),
        Subscriber::Broke => (answered(true).await, true),
        Subscriber::Declines => (answered(false).await, false),
        Subscriber::WrongPin => {
            tokio::time::sleep(options.approval_delay).await;
            return sim.fail_collection(&payment);
        }
        Subscriber::NeverAnswers => {
            tokio::time::sleep(options.prompt_timeout).await;
            (None, false)
        }
        // Expires unless the test answers in time.
        Subscriber::WaitsForTest => match waiter {
            Some(waiter) => (
                tokio::time::timeout(options.prompt_timeout, waiter)
                    .await
                    .ok()
                    .and_then(Result::ok),
                false,
            ),
            None => (None, false),
        },
        // Refused before any prompt (see `c2b_answer`).
        Subscriber::Unregistered => (Some(false), false),
    };
    sim.settle_collection(&payment, answer, broke)
}

async fn query_transaction_status(
    State(sim): State<VodacomSim>,
    headers: HeaderMap,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let response = query_answer(&sim, &headers, query.ok().map(|Query(q)| q));
    sim.hold().await;
    response
}

fn query_answer(sim: &VodacomSim, headers: &HeaderMap, query: Option<StatusQuery>) -> Response {
    if let Err(response) = sim.authorize(headers) {
        return response;
    }
    let Some(query) = query else {
        return ins(
            StatusCode::BAD_REQUEST,
            "INS-21",
            "Parameter validations failed. Please try again.",
        );
    };
    let fields = [
        &query.query_reference,
        &query.service_provider_code,
        &query.third_party_conversation_id,
        &query.country,
    ];
    if fields.iter().any(|f| f.trim().is_empty()) {
        return ins(
            StatusCode::BAD_REQUEST,
            "INS-20",
            "Not All Parameters Provided. Please try again.",
        );
    }
    if query.country != COUNTRY {
        return ins(StatusCode::BAD_REQUEST, "INS-998", "Invalid Market");
    }
    if query.service_provider_code != SERVICE_PROVIDER_CODE {
        return ins(StatusCode::BAD_REQUEST, "INS-13", "Invalid Shortcode Used");
    }
    let state = sim.lock();
    let reference = query.query_reference.trim();
    let found = state.transactions.get(reference).or_else(|| {
        state
            .transactions
            .values()
            .find(|t| t.conversation_id == reference || t.transaction_id.as_deref() == Some(reference))
    });
    let (status, conversation_id, transaction_id) = match found {
        Some(t) => (
            t.status.wire(),
            t.conversation_id.clone(),
            t.transaction_id.clone().unwrap_or_else(|| "N/A".into()),
        ),
        None => ("N/A", String::new(), "N/A".to_owned()),
    };
    Json(json!({
        "output_ResponseCode": "INS-0",
        "output_ResponseDesc": "Request processed successfully",
        "output_ResponseTransactionStatus": status,
        "output_ConversationID": conversation_id,
        "output_ThirdPartyConversationID": query.third_party_conversation_id,
        "output_OriginalTransactionID": transaction_id,
    }))
    .into_response()
}

impl SimulatedProvider for VodacomSim {
    fn name(&self) -> &'static str {
        "vodacom_tz"
    }

    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    fn set_chaos(&self, chaos: Chaos) {
        self.shared.chaos.set_chaos(chaos);
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
        let waiting = {
            let mut state = self.lock();
            // Our ThirdPartyConversationID, or the ConversationID M-Pesa gave.
            let key = state
                .transactions
                .iter()
                .find(|(_, t)| t.conversation_id == request_id)
                .map_or_else(|| request_id.to_owned(), |(id, _)| id.clone());
            state.prompts.remove(&key)
        };
        Box::pin(async move {
            if let Some(prompt) = waiting {
                // The prompt may have expired meanwhile; then this is moot.
                let _ = prompt.send(pay);
            }
        })
    }

    fn callbacks_lost(&self) -> u64 {
        self.shared.chaos.lost()
    }

    fn callbacks_duplicated(&self) -> u64 {
        self.shared.chaos.duplicated()
    }

    fn timeouts_after_money(&self) -> u64 {
        self.lock().timeouts_after_money
    }

    fn expire_tokens(&self) {
        self.lock().sessions.clear();
    }

    fn configure(&self, config: &mut crate::config::Config, callback_base_url: &str) {
        // Long enough for a never-answered prompt to come back as INS-9.
        let c2b_timeout_ms = 100_000u64.max(self.shared.options.prompt_timeout.as_millis() as u64 + 10_000);
        config.vodacom_tz = Some(VodacomConfig {
            base_url: self.base_url.clone(),
            path_prefix: SANDBOX_PREFIX.to_owned(),
            api_key: API_KEY.to_owned().into(),
            // Empty: the simulator's own key.
            public_key: String::new(),
            service_provider_code: SERVICE_PROVIDER_CODE.to_owned(),
            origin: "*".to_owned(),
            request_timeout_ms: 30_000,
            c2b_timeout_ms,
            session_max_age_s: 1_800,
            session_activation_ms: 0,
            callback_base_url: callback_base_url.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::EncodePublicKey;

    #[test]
    fn the_adapters_built_in_public_key_is_this_simulators() {
        let key = RsaPrivateKey::from_pkcs1_pem(PRIVATE_KEY).unwrap();
        let der = key.to_public_key().to_public_key_der().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(der.as_bytes()),
            crate::providers::vodacom_tz::SIMULATOR_PUBLIC_KEY
        );
    }

    #[test]
    fn payment_fields_are_checked_in_the_documented_order() {
        let fields = |amount: &'static str, reference: &'static str, msisdn: &'static str| Fields {
            amount,
            country: "TZN",
            currency: "TZS",
            msisdn,
            service_provider_code: "000000",
            id: "r1",
            reference,
            description: "d",
        };
        let code = |result: Result<Payment, Response>| result.err().map(|r| r.status());
        assert!(validate(&fields("1000", "ref", "255754000123")).is_ok());
        assert!(validate(&fields("1000.00", "ref", "255754000123")).is_ok());
        assert_eq!(
            code(validate(&fields("10.5", "ref", "255754000123"))),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            code(validate(&fields("", "ref", "255754000123"))),
            Some(StatusCode::BAD_REQUEST)
        );
        assert!(validate(&fields("1000", "abcdefghijklmnopqrstu", "255754000123")).is_err());
        assert!(validate(&fields("1000", "ref", "2557540x0123")).is_err());
    }
}
