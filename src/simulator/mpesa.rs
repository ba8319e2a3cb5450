//! A Daraja simulator on Daraja's own paths (at the root of its base URL),
//! field names, codes and callback bodies: OAuth, STK push and query, B2C
//! (v1 and v3) and transaction status.
//!
//! Subscribers behave by the last digits of their number: `…001` cancels
//! the prompt (1032), `…002` enters a wrong PIN (2001), `…003` never answers
//! (1037 once the prompt times out), `…004` has too little money (1), `…005`
//! waits for the test to answer ([`SimHandle::answer_prompt`]), `…006` is
//! busy with another transaction (the push is refused, `500.001.1001`
//! "Unable to lock subscriber"; Daraja's alone among the simulators),
//! `…009` is not an M-Pesa customer (B2C 2040, STK 1037). Everyone else
//! pays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};
use serde_json::{json, Value};

use super::Chaos;
use crate::providers::mpesa::client::stk_password;
use crate::providers::mpesa::wire::{B2cRequest, StkPushRequest, StkQueryRequest, TransactionStatusRequest};

const PRIVATE_KEY: &str = include_str!("simulator_key.pem");

/// What the simulated Safaricom account is set up with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub initiator_name: String,
    pub initiator_password: String,
    pub stk_shortcode: String,
    pub passkey: String,
    pub b2c_shortcode: String,
    /// The B2C utility account's float, in whole KES.
    pub float_kes: u64,
    /// Each subscriber's opening balance, in whole KES.
    pub wallet_kes: u64,
    /// What a B2C payment costs the business, by band: `(up to, fee)` in
    /// whole KES, taken from the utility account with the payment.
    pub b2c_tariff: Vec<(u64, u64)>,
    /// Lifetime of an access token.
    pub token_ttl: Duration,
    /// How long a prompt waits for the customer before 1037.
    pub prompt_timeout: Duration,
    /// How long every STK push and B2C answer is held back (a slow network:
    /// with `callback_before_response`, the callback lands well before it).
    pub response_delay: Duration,
    /// How a re-sent OriginatorConversationID is refused: `false` (the
    /// default) with an immediate `500.002.1001` error; `true` by accepting
    /// the request and sending a result callback with ResultCode 15
    /// ("duplicate detected"), as integrators also report. Either way the
    /// original request, and only it, moves money.
    pub duplicate_in_result: bool,
    pub chaos: Chaos,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            consumer_key: "tuma-sim-key".into(),
            consumer_secret: "tuma-sim-secret".into(),
            initiator_name: "tuma-initiator".into(),
            initiator_password: "Tuma#Sim2026".into(),
            stk_shortcode: "174379".into(),
            passkey: "tuma-sim-passkey".into(),
            b2c_shortcode: "600000".into(),
            float_kes: 10_000_000,
            wallet_kes: 1_000_000,
            // Safaricom's published B2C bands (the same as Tuma's default
            // fee configuration).
            b2c_tariff: vec![
                (100, 0),
                (500, 11),
                (1_000, 25),
                (2_500, 50),
                (5_000, 75),
                (250_000, 105),
            ],
            token_ttl: Duration::from_secs(3599),
            prompt_timeout: Duration::from_secs(60),
            response_delay: Duration::ZERO,
            duplicate_in_result: false,
            chaos: Chaos::default(),
            seed: 1,
        }
    }
}

/// One movement of money the simulator made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The request it belongs to: OriginatorConversationID (B2C) or
    /// CheckoutRequestID (STK).
    pub request_id: String,
    pub msisdn: String,
    pub amount_kes: u64,
    pub receipt: String,
    /// `b2c` (float → subscriber), `stk` or `c2b` (subscriber → business).
    pub kind: &'static str,
}

#[derive(Debug, Clone)]
struct Prompt {
    msisdn: String,
    amount: u64,
    callback_url: String,
    merchant_request_id: String,
    sent_at: Instant,
    /// `(ResultCode, ResultDesc, receipt)` once decided.
    result: Option<(String, String, Option<String>)>,
}

#[derive(Debug, Clone)]
struct Disbursement {
    /// The shortcode it was made from: a status query finds it only when
    /// asked from there, as Daraja's does.
    shortcode: String,
    conversation_id: String,
    msisdn: String,
    amount: u64,
    code: String,
    receipt: Option<String>,
}

struct SimState {
    config: SimConfig,
    rng: StdRng,
    tokens: HashMap<String, Instant>,
    /// Token requests still to be answered with a 503 (an OAuth outage).
    oauth_outage: u32,
    float_kes: u64,
    collected_kes: u64,
    wallets: HashMap<String, u64>,
    prompts: HashMap<String, Prompt>,
    /// Shortcode → (confirmation URL, validation URL, response type).
    c2b_urls: HashMap<String, (String, String, String)>,
    disbursements: HashMap<String, Disbursement>,
    payments: Vec<Payment>,
    /// Receipts already reversed.
    reversed: std::collections::HashSet<String>,
    /// Each reversal request's result by its OriginatorConversationID (the
    /// shortcode it reversed on, its ResultCode, receipt and amount), for
    /// status queries.
    reversals: HashMap<String, Disbursement>,
    counter: u64,
    callbacks_lost: u64,
    callbacks_duplicated: u64,
    timeouts_after_money: u64,
    /// B2C requests refused by the API gateway, before Daraja sees them.
    gateway_refuses_b2c: bool,
}

/// A running simulator: its base URL and a handle on its state.
#[derive(Clone)]
pub struct SimHandle {
    pub base_url: String,
    state: Arc<Mutex<SimState>>,
    http: reqwest::Client,
    key: Arc<RsaPrivateKey>,
    /// Credentials already decrypted, with what they decrypt to. A client
    /// computes its `SecurityCredential` once and sends it on every
    /// request; an RSA private-key operation per request would make the
    /// simulator, not the engine, what a benchmark measures.
    decrypted: Arc<Mutex<HashMap<String, Option<Vec<u8>>>>>,
}

type Shared = SimHandle;

/// Most credentials remembered; past it the memory starts over.
const MAX_DECRYPTED: usize = 64;

impl SimHandle {
    /// Serves the simulator on `listener` until the task is dropped.
    pub fn new(config: SimConfig, base_url: String) -> SimHandle {
        let float_kes = config.float_kes;
        let rng = StdRng::seed_from_u64(config.seed);
        SimHandle {
            base_url,
            state: Arc::new(Mutex::new(SimState {
                config,
                rng,
                tokens: HashMap::new(),
                oauth_outage: 0,
                float_kes,
                collected_kes: 0,
                wallets: HashMap::new(),
                prompts: HashMap::new(),
                c2b_urls: HashMap::new(),
                disbursements: HashMap::new(),
                payments: Vec::new(),
                reversed: std::collections::HashSet::new(),
                reversals: HashMap::new(),
                counter: 0,
                callbacks_lost: 0,
                callbacks_duplicated: 0,
                timeouts_after_money: 0,
                gateway_refuses_b2c: false,
            })),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            key: Arc::new(RsaPrivateKey::from_pkcs1_pem(PRIVATE_KEY).expect("the simulator key parses")),
            decrypted: Arc::default(),
        }
    }

    /// What a `SecurityCredential` decrypts to with the simulator's key;
    /// `None` when it is not base64 or not encrypted with that key.
    fn decrypt_credential(&self, credential: &str) -> Option<Vec<u8>> {
        if let Some(known) = self
            .decrypted
            .lock()
            .expect("credential cache poisoned")
            .get(credential)
        {
            return known.clone();
        }
        let password = base64::engine::general_purpose::STANDARD
            .decode(credential)
            .ok()
            .and_then(|bytes| self.key.decrypt(Pkcs1v15Encrypt, &bytes).ok());
        let mut decrypted = self.decrypted.lock().expect("credential cache poisoned");
        if decrypted.len() >= MAX_DECRYPTED {
            decrypted.clear();
        }
        decrypted.insert(credential.to_owned(), password.clone());
        password
    }

    /// Starts a simulator on a free local port.
    pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let handle = SimHandle::new(config, format!("http://{}", listener.local_addr()?));
        let app = router(handle.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(handle)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().expect("simulator state poisoned")
    }

    /// Every movement of money so far.
    pub fn payments(&self) -> Vec<Payment> {
        self.lock().payments.clone()
    }

    /// Movements of money for one request id.
    pub fn payments_for(&self, request_id: &str) -> Vec<Payment> {
        self.lock()
            .payments
            .iter()
            .filter(|p| p.request_id == request_id)
            .cloned()
            .collect()
    }

    pub fn float_kes(&self) -> u64 {
        self.lock().float_kes
    }

    pub fn set_float_kes(&self, kes: u64) {
        self.lock().float_kes = kes;
    }

    /// While `refuse` holds, every B2C request is turned away by the API
    /// gateway in front of Daraja with a 403 page (not Daraja's JSON), as
    /// a firewall rule or an IP allow-list change does: nothing is paid.
    pub fn refuse_b2c_at_gateway(&self, refuse: bool) {
        self.lock().gateway_refuses_b2c = refuse;
    }

    pub fn set_chaos(&self, chaos: Chaos) {
        self.lock().config.chaos = chaos;
    }

    /// Invalidates every access token, as their expiry would.
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Answers the next `requests` token requests with a 503, as an OAuth
    /// endpoint that is down while the payment API is not.
    pub fn oauth_outage(&self, requests: u32) {
        self.lock().oauth_outage = requests;
    }

    /// Tokens issued so far that are still valid.
    pub fn live_tokens(&self) -> usize {
        self.lock().tokens.len()
    }

    pub fn callbacks_lost(&self) -> u64 {
        self.lock().callbacks_lost
    }

    pub fn callbacks_duplicated(&self) -> u64 {
        self.lock().callbacks_duplicated
    }

    /// B2C requests that moved the money and then answered as if they had
    /// timed out.
    pub fn timeouts_after_money(&self) -> u64 {
        self.lock().timeouts_after_money
    }

    /// A customer pays `amount_kes` into `shortcode` with account reference
    /// `bill_ref`, as from their phone: validation (if registered) first,
    /// then the confirmation. Returns the receipt, or the refusal code.
    pub async fn pay_bill(
        &self,
        shortcode: &str,
        msisdn: &str,
        amount_kes: u64,
        bill_ref: &str,
    ) -> Result<String, String> {
        let (urls, trans_id, notice) = {
            let mut state = self.lock();
            let Some(urls) = state.c2b_urls.get(shortcode).cloned() else {
                return Err("no URLs registered for this shortcode".into());
            };
            let trans_id = receipt(&mut state.rng);
            let masked = format!(
                "{} ***** {}",
                &msisdn[..msisdn.len().min(4)],
                &msisdn[msisdn.len().saturating_sub(3)..]
            );
            let notice = json!({
                "TransactionType": "Pay Bill", "TransID": trans_id,
                "TransTime": crate::providers::mpesa::client::daraja_timestamp(chrono::Utc::now()),
                "TransAmount": format!("{amount_kes}.00"), "BusinessShortCode": shortcode,
                "BillRefNumber": bill_ref, "InvoiceNumber": "", "OrgAccountBalance": "",
                "ThirdPartyTransID": "", "MSISDN": masked, "FirstName": "Simulated", "MiddleName": "", "LastName": "",
            });
            (urls, trans_id, notice)
        };
        let (confirmation_url, validation_url, response_type) = urls;
        if !validation_url.is_empty() {
            let answer = self.http.post(&validation_url).json(&notice).send().await;
            let code = match answer {
                Ok(response) => response.json::<Value>().await.ok().and_then(|v| {
                    v["ResultCode"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| v["ResultCode"].as_i64().map(|c| c.to_string()))
                }),
                Err(_) => None,
            };
            let accepted = match code.as_deref() {
                Some("0") => true,
                Some(_) => false,
                // Unreachable validation: the registered ResponseType decides.
                None => response_type == "Completed",
            };
            if !accepted {
                return Err(code.unwrap_or_else(|| "Cancelled".into()));
            }
        }
        {
            let mut state = self.lock();
            let opening = state.config.wallet_kes;
            let wallet = state.wallets.entry(msisdn.to_owned()).or_insert(opening);
            if *wallet < amount_kes {
                return Err("insufficient funds".into());
            }
            *wallet -= amount_kes;
            state.collected_kes += amount_kes;
            state.payments.push(Payment {
                request_id: trans_id.clone(),
                msisdn: msisdn.to_owned(),
                amount_kes,
                receipt: trans_id.clone(),
                kind: "c2b",
            });
        }
        self.deliver(confirmation_url, notice).await;
        Ok(trans_id)
    }

    /// The customer of a `…005` prompt answers now: `0` pays, any other STK
    /// code refuses. Sends the callback.
    pub async fn answer_prompt(&self, checkout_request_id: &str, code: &str) {
        let callback = {
            let mut state = self.lock();
            let Some(prompt) = state.prompts.get(checkout_request_id).cloned() else {
                return;
            };
            let result = settle_prompt(&mut state, checkout_request_id, &prompt, code);
            state.prompts.get_mut(checkout_request_id).expect("present").result = Some(result.clone());
            (
                prompt.callback_url.clone(),
                stk_callback_body(checkout_request_id, &prompt, &result),
            )
        };
        self.deliver(callback.0, callback.1).await;
    }

    /// Sends a callback under the chaos settings.
    async fn deliver(&self, url: String, body: Value) {
        let (lost, duplicate, delay) = {
            let mut state = self.lock();
            let chaos = state.config.chaos.clone();
            let lost = roll(&mut state.rng, chaos.callback_loss_permille);
            let duplicate = roll(&mut state.rng, chaos.callback_duplicate_permille);
            let delay = if chaos.callback_max_delay_ms > 0 {
                state.rng.random_range(0..=chaos.callback_max_delay_ms)
            } else {
                0
            };
            if lost {
                state.callbacks_lost += 1;
            }
            if duplicate {
                state.callbacks_duplicated += 1;
            }
            (lost, duplicate, delay)
        };
        if lost {
            return;
        }
        let http = self.http.clone();
        let send = async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            for _ in 0..if duplicate { 2 } else { 1 } {
                let _ = http.post(&url).json(&body).send().await;
            }
        };
        let before_response = self.lock().config.chaos.callback_before_response;
        if before_response {
            send.await;
        } else {
            tokio::spawn(send);
        }
    }

    fn next_id(&self, state: &mut SimState, prefix: &str) -> String {
        state.counter += 1;
        let _ = self;
        format!(
            "{prefix}{}{:06}",
            chrono::Utc::now().format("%Y%m%d%H%M%S"),
            state.counter
        )
    }
}

async fn hold_response(sim: &Shared) {
    let delay = sim.lock().config.response_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The B2C tariff for `amount` (zero above the last band).
fn b2c_fee(config: &SimConfig, amount: u64) -> u64 {
    config
        .b2c_tariff
        .iter()
        .find(|(up_to, _)| amount <= *up_to)
        .map_or(0, |(_, fee)| *fee)
}

fn roll(rng: &mut StdRng, permille: u32) -> bool {
    permille > 0 && rng.random_range(0..1000) < permille
}

fn receipt(rng: &mut StdRng) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..10)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

/// The subscriber behaviour a number's last digits select.
fn behaviour(msisdn: &str) -> &'static str {
    match &msisdn[msisdn.len().saturating_sub(3)..] {
        "001" => "cancels",
        "002" => "wrong_pin",
        "003" => "never_answers",
        "004" => "insufficient",
        "005" => "manual",
        "006" => "locked",
        "009" => "unregistered",
        _ => "pays",
    }
}

fn daraja_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        json!({ "requestId": uuid::Uuid::new_v4().simple().to_string(), "errorCode": code, "errorMessage": message });
    (status, Json(body)).into_response()
}

fn invalid_token() -> Response {
    daraja_error(StatusCode::NOT_FOUND, "404.001.03", "Invalid Access Token")
}

/// Daraja's routes, at the root.
pub fn router(sim: SimHandle) -> Router {
    Router::new()
        .route("/oauth/v1/generate", get(oauth))
        .route("/mpesa/stkpush/v1/processrequest", post(stk_push))
        .route("/mpesa/stkpushquery/v1/query", post(stk_query))
        .route("/mpesa/b2c/v1/paymentrequest", post(b2c))
        .route("/mpesa/b2c/v3/paymentrequest", post(b2c))
        .route("/mpesa/transactionstatus/v1/query", post(transaction_status))
        .route("/mpesa/accountbalance/v1/query", post(account_balance))
        .route("/mpesa/reversal/v1/request", post(reversal))
        .route("/mpesa/c2b/v1/registerurl", post(register_c2b))
        .route("/mpesa/c2b/v2/registerurl", post(register_c2b))
        .route("/mpesa/c2b/v1/simulate", post(simulate_c2b))
        .route("/mpesa/c2b/v2/simulate", post(simulate_c2b))
        .with_state(sim)
}

async fn oauth(State(sim): State<Shared>, headers: HeaderMap) -> Response {
    let expected = {
        let mut state = sim.lock();
        if state.oauth_outage > 0 {
            state.oauth_outage -= 1;
            return (StatusCode::SERVICE_UNAVAILABLE, "<html>503 Service Unavailable</html>").into_response();
        }
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            state.config.consumer_key, state.config.consumer_secret
        ))
    };
    let given = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "));
    if given != Some(expected.as_str()) {
        // Daraja answers bad client credentials with a 400 and this body.
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "resultCode": "999991", "resultDesc": "Invalid client id passed" })),
        )
            .into_response();
    }
    let mut state = sim.lock();
    let token: String = (0..28)
        .map(|_| state.rng.sample(rand::distr::Alphanumeric) as char)
        .collect();
    let ttl = state.config.token_ttl;
    state.tokens.insert(token.clone(), Instant::now() + ttl);
    Json(json!({ "access_token": token, "expires_in": ttl.as_secs().to_string() })).into_response()
}

/// Checks the bearer token; `None` means refused.
fn authorized(sim: &Shared, headers: &HeaderMap) -> bool {
    let token = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let state = sim.lock();
    token.is_some_and(|t| state.tokens.get(t).is_some_and(|expiry| Instant::now() < *expiry))
}

/// A 5xx before anything happens, when chaos says so.
fn server_error(sim: &Shared) -> Option<Response> {
    let mut state = sim.lock();
    let permille = state.config.chaos.server_error_permille;
    roll(&mut state.rng, permille)
        .then(|| daraja_error(StatusCode::SERVICE_UNAVAILABLE, "503.001.01", "Service Unavailable"))
}

// The error is the ready Daraja answer; its size is no concern in a simulator.
#[allow(clippy::result_large_err)]
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        daraja_error(
            StatusCode::BAD_REQUEST,
            "400.002.02",
            &format!("Bad Request - Invalid request: {e}"),
        )
    })
}

async fn stk_push(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&sim, &headers) {
        return invalid_token();
    }
    if let Some(error) = server_error(&sim) {
        return error;
    }
    let request: StkPushRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let (checkout_id, prompt, immediate) = {
        let mut state = sim.lock();
        let expected = stk_password(&state.config.stk_shortcode, &state.config.passkey, &request.timestamp);
        if request.business_short_code != state.config.stk_shortcode || request.password != expected {
            return daraja_error(StatusCode::INTERNAL_SERVER_ERROR, "500.001.1001", "Wrong credentials");
        }
        if request.amount < 1 || request.amount > 250_000 {
            return daraja_error(StatusCode::BAD_REQUEST, "400.002.02", "Bad Request - Invalid Amount");
        }
        if behaviour(&request.party_a) == "locked" {
            // Busy with another transaction: no prompt is sent.
            return daraja_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500.001.1001",
                "Unable to lock subscriber, a transaction is already in process for the current subscriber",
            );
        }
        let checkout_id = sim.next_id(&mut state, "ws_CO_");
        let merchant_suffix: u32 = state.rng.random_range(10_000..99_999);
        let prompt = Prompt {
            msisdn: request.party_a.clone(),
            amount: request.amount,
            callback_url: request.callback_url.clone(),
            merchant_request_id: format!("{}-{merchant_suffix}-1", state.counter),
            sent_at: Instant::now(),
            result: None,
        };
        let immediate = match behaviour(&request.party_a) {
            "pays" => Some("0"),
            "cancels" => Some("1032"),
            "wrong_pin" => Some("2001"),
            "insufficient" => Some("1"),
            "unregistered" => Some("1037"),
            _ => None,
        };
        state.prompts.insert(checkout_id.clone(), prompt.clone());
        (checkout_id, prompt, immediate)
    };
    if let Some(code) = immediate {
        let callback = {
            let mut state = sim.lock();
            let result = settle_prompt(&mut state, &checkout_id, &prompt, code);
            state.prompts.get_mut(&checkout_id).expect("present").result = Some(result.clone());
            stk_callback_body(&checkout_id, &prompt, &result)
        };
        sim.deliver(prompt.callback_url.clone(), callback).await;
    } else if behaviour(&prompt.msisdn) == "never_answers" {
        let sim = sim.clone();
        let id = checkout_id.clone();
        let timeout = sim.lock().config.prompt_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            sim.answer_prompt(&id, "1037").await;
        });
    }
    hold_response(&sim).await;
    Json(json!({
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": checkout_id,
        "ResponseCode": "0",
        "ResponseDescription": "Success. Request accepted for processing",
        "CustomerMessage": "Success. Request accepted for processing",
    }))
    .into_response()
}

/// Decides a prompt: moves the money when `code` is 0 and the wallet holds it.
fn settle_prompt(
    state: &mut SimState,
    checkout_id: &str,
    prompt: &Prompt,
    code: &str,
) -> (String, String, Option<String>) {
    if let Some(result) = &prompt.result {
        return result.clone();
    }
    let opening = state.config.wallet_kes;
    let wallet = state.wallets.entry(prompt.msisdn.clone()).or_insert(opening);
    let code = if code == "0" && *wallet < prompt.amount {
        "1"
    } else {
        code
    };
    let description = match code {
        "0" => "The service request is processed successfully.",
        "1" => "The balance is insufficient for the transaction.",
        "1032" => "Request cancelled by user",
        "1037" => "DS timeout user cannot be reached",
        "2001" => "The initiator information is invalid.",
        _ => "Request failed",
    };
    let receipt = (code == "0").then(|| {
        *wallet -= prompt.amount;
        let receipt = receipt(&mut state.rng);
        state.collected_kes += prompt.amount;
        state.payments.push(Payment {
            request_id: checkout_id.to_owned(),
            msisdn: prompt.msisdn.clone(),
            amount_kes: prompt.amount,
            receipt: receipt.clone(),
            kind: "stk",
        });
        receipt
    });
    (code.to_owned(), description.to_owned(), receipt)
}

fn stk_callback_body(checkout_id: &str, prompt: &Prompt, result: &(String, String, Option<String>)) -> Value {
    let mut callback = json!({
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": checkout_id,
        "ResultCode": result.0.parse::<i64>().unwrap_or(1),
        "ResultDesc": result.1,
    });
    if let Some(receipt) = &result.2 {
        let date: u64 = crate::providers::mpesa::client::daraja_timestamp(chrono::Utc::now())
            .parse()
            .unwrap_or(0);
        callback["CallbackMetadata"] = json!({ "Item": [
            { "Name": "Amount", "Value": prompt.amount },
            { "Name": "MpesaReceiptNumber", "Value": receipt },
            { "Name": "Balance" },
            { "Name": "TransactionDate", "Value": date },
            { "Name": "PhoneNumber", "Value": prompt.msisdn.parse::<u64>().unwrap_or(0) },
        ]});
    }
    json!({ "Body": { "stkCallback": callback } })
}

async fn stk_query(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&sim, &headers) {
        return invalid_token();
    }
    let request: StkQueryRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let state = sim.lock();
    let expected = stk_password(&state.config.stk_shortcode, &state.config.passkey, &request.timestamp);
    if request.password != expected {
        return daraja_error(StatusCode::INTERNAL_SERVER_ERROR, "500.001.1001", "Wrong credentials");
    }
    let Some(prompt) = state.prompts.get(&request.checkout_request_id) else {
        return daraja_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500.001.1001",
            "The transaction does not exist",
        );
    };
    match &prompt.result {
        None => {
            let _ = prompt.sent_at;
            daraja_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500.001.1001",
                "The transaction is being processed",
            )
        }
        Some((code, description, _)) => Json(json!({
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successsfully",
            "MerchantRequestID": prompt.merchant_request_id,
            "CheckoutRequestID": request.checkout_request_id,
            "ResultCode": code,
            "ResultDesc": description,
        }))
        .into_response(),
    }
}

async fn b2c(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if sim.lock().gateway_refuses_b2c {
        return (
            StatusCode::FORBIDDEN,
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>403 Forbidden</h1></body></html>",
        )
            .into_response();
    }
    if !authorized(&sim, &headers) {
        return invalid_token();
    }
    if let Some(error) = server_error(&sim) {
        return error;
    }
    let request: B2cRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let credential_ok = sim
        .decrypt_credential(&request.security_credential)
        .is_some_and(|password| {
            let state = sim.lock();
            password == state.config.initiator_password.as_bytes()
                && request.initiator_name == state.config.initiator_name
        });
    let (originator_id, conversation_id, result, timed_out) = 'decided: {
        let mut state = sim.lock();
        // v1 has no caller id: the simulator makes one, as Daraja does.
        let originator_id = request
            .originator_conversation_id
            .clone()
            .unwrap_or_else(|| sim.next_id(&mut state, "OC_"));
        if state.disbursements.contains_key(&originator_id) {
            if !state.config.duplicate_in_result {
                return daraja_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500.002.1001",
                    "Duplicate OriginatorConversationID.",
                );
            }
            // Accepted, then refused by its result callback; the
            // original's disbursement stands untouched.
            let conversation_id = sim.next_id(&mut state, "AG_");
            break 'decided (originator_id, conversation_id, ("15".to_owned(), None), false);
        }
        let conversation_id = sim.next_id(&mut state, "AG_");
        let code = if !credential_ok {
            "2001"
        } else if behaviour(&request.party_b) == "unregistered" {
            "2040"
        } else if request.amount < 10 {
            "2"
        } else if request.amount > 250_000 {
            "3"
        } else if state.float_kes < request.amount + b2c_fee(&state.config, request.amount) {
            "1"
        } else {
            "0"
        };
        let receipt = (code == "0").then(|| {
            state.float_kes -= request.amount + b2c_fee(&state.config, request.amount);
            let opening = state.config.wallet_kes;
            *state.wallets.entry(request.party_b.clone()).or_insert(opening) += request.amount;
            let receipt = receipt(&mut state.rng);
            state.payments.push(Payment {
                request_id: originator_id.clone(),
                msisdn: request.party_b.clone(),
                amount_kes: request.amount,
                receipt: receipt.clone(),
                kind: "b2c",
            });
            receipt
        });
        state.disbursements.insert(
            originator_id.clone(),
            Disbursement {
                shortcode: request.party_a.clone(),
                conversation_id: conversation_id.clone(),
                msisdn: request.party_b.clone(),
                amount: request.amount,
                code: code.to_owned(),
                receipt: receipt.clone(),
            },
        );
        let permille = state.config.chaos.timeout_after_money_permille;
        let timed_out = roll(&mut state.rng, permille);
        if timed_out && code == "0" {
            state.timeouts_after_money += 1;
        }
        (originator_id, conversation_id, (code.to_owned(), receipt), timed_out)
    };
    let callback = b2c_result_body(
        &originator_id,
        &conversation_id,
        &result.0,
        result.1.as_deref(),
        &request,
    );
    sim.deliver(request.result_url.clone(), callback).await;
    hold_response(&sim).await;
    if timed_out {
        // The money moved; the answer never comes back in time.
        return (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout").into_response();
    }
    Json(json!({
        "ConversationID": conversation_id,
        "OriginatorConversationID": originator_id,
        "ResponseCode": "0",
        "ResponseDescription": "Accept the service request successfully.",
    }))
    .into_response()
}

fn b2c_result_body(
    originator_id: &str,
    conversation_id: &str,
    code: &str,
    receipt: Option<&str>,
    request: &B2cRequest,
) -> Value {
    let description = match code {
        "0" => "The service request is processed successfully.",
        "1" => "The balance is insufficient for the transaction.",
        "2001" => "The initiator information is invalid.",
        "2040" => "Credit Party customer type (Unregistered or Registered Customer) can't be supported by the service.",
        "15" => "Duplicate detected.",
        _ => "The service request failed.",
    };
    let mut result = json!({
        "ResultType": 0,
        "ResultCode": code.parse::<i64>().unwrap_or(1),
        "ResultDesc": description,
        "OriginatorConversationID": originator_id,
        "ConversationID": conversation_id,
        "TransactionID": receipt.unwrap_or("OAK0000000"),
        "ReferenceData": { "ReferenceItem": { "Key": "QueueTimeoutURL", "Value": request.queue_timeout_url } },
    });
    if let Some(receipt) = receipt {
        result["ResultParameters"] = json!({ "ResultParameter": [
            { "Key": "TransactionAmount", "Value": request.amount },
            { "Key": "TransactionReceipt", "Value": receipt },
            { "Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y" },
            { "Key": "ReceiverPartyPublicName", "Value": format!("{} - Simulated Customer", request.party_b) },
            { "Key": "TransactionCompletedDateTime", "Value": (chrono::Utc::now() + chrono::TimeDelta::hours(3)).format("%d.%m.%Y %H:%M:%S").to_string() },
        ]});
    }
    json!({ "Result": result })
}

async fn transaction_status(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&sim, &headers) {
        return invalid_token();
    }
    if let Some(error) = server_error(&sim) {
        return error;
    }
    let request: TransactionStatusRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let (reply, callback) = {
        let mut state = sim.lock();
        let conversation_id = sim.next_id(&mut state, "AG_");
        let originator_id = sim.next_id(&mut state, "TS_");
        let key = request.original_conversation_id.clone().unwrap_or_default();
        let found = state.disbursements.get(&key).cloned().or_else(|| {
            state
                .disbursements
                .values()
                .find(|d| d.receipt.as_deref() == Some(request.transaction_id.as_str()))
                .cloned()
        });
        let reversal = state.reversals.get(&key).cloned();
        // Asked from another shortcode than its own, a request is not found.
        let (found, reversal) = (
            found.filter(|d| d.shortcode == request.party_a),
            reversal.filter(|d| d.shortcode == request.party_a),
        );
        // A customer's C2B payment into our shortcode, by its receipt.
        let paid_in = || {
            state
                .payments
                .iter()
                .find(|p| p.kind == "c2b" && !request.transaction_id.is_empty() && p.receipt == request.transaction_id)
                .map(|p| Disbursement {
                    shortcode: request.party_a.clone(),
                    conversation_id: String::new(),
                    msisdn: p.msisdn.clone(),
                    amount: p.amount_kes,
                    code: "0".into(),
                    receipt: Some(p.receipt.clone()),
                })
        };
        let found = found.or(reversal).or_else(paid_in);
        let callback = found.map(|d| {
            let status = if d.code == "0" { "Completed" } else { "Declined" };
            json!({ "Result": {
                "ResultType": 0, "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "OriginatorConversationID": originator_id, "ConversationID": conversation_id,
                "TransactionID": d.receipt.clone().unwrap_or_default(),
                "ResultParameters": { "ResultParameter": [
                    { "Key": "ReceiptNo", "Value": d.receipt.clone().unwrap_or_default() },
                    { "Key": "TransactionStatus", "Value": status },
                    { "Key": "Amount", "Value": d.amount },
                    { "Key": "OriginatorConversationID", "Value": key },
                    { "Key": "ConversationID", "Value": d.conversation_id },
                    { "Key": "CreditPartyName", "Value": format!("{} - Simulated Customer", d.msisdn) },
                    { "Key": "DebitPartyName" },
                ]},
            }})
        });
        let reply = json!({
            "OriginatorConversationID": originator_id, "ConversationID": conversation_id,
            "ResponseCode": "0", "ResponseDescription": "Accept the service request successfully.",
        });
        (reply, callback)
    };
    // An id the simulator never saw gets no result, as with Daraja's silence.
    if let Some(callback) = callback {
        sim.deliver(request.result_url.clone(), callback).await;
    }
    Json(reply).into_response()
}

async fn account_balance(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&sim, &headers) {
        return invalid_token();
    }
    let request: Value = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Some(result_url) = request["ResultURL"].as_str().map(str::to_owned) else {
        return daraja_error(StatusCode::BAD_REQUEST, "400.002.02", "Bad Request - Invalid ResultURL");
    };
    let (reply, callback) = {
        let mut state = sim.lock();
        let conversation_id = sim.next_id(&mut state, "AG_");
        let originator_id = sim.next_id(&mut state, "AB_");
        let float = state.float_kes;
        let collected = state.collected_kes;
        let packed = format!(
            "Working Account|KES|{collected}.00|{collected}.00|0.00|0.00&Utility Account|KES|{float}.00|{float}.00|0.00|0.00&Charges Paid Account|KES|0.00|0.00|0.00|0.00"
        );
        let completed: u64 = crate::providers::mpesa::client::daraja_timestamp(chrono::Utc::now())
            .parse()
            .unwrap_or(0);
        let callback = json!({ "Result": {
            "ResultType": 0, "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
            "OriginatorConversationID": originator_id, "ConversationID": conversation_id, "TransactionID": "OAK0000000",
            "ResultParameters": { "ResultParameter": [
                { "Key": "AccountBalance", "Value": packed },
                { "Key": "BOCompletedTime", "Value": completed },
            ]},
        }});
        let reply = json!({
            "OriginatorConversationID": originator_id, "ConversationID": conversation_id,
            "ResponseCode": "0", "ResponseDescription": "Accept the service request successfully.",
        });
        (reply, callback)
    };
    sim.deliver(result_url, callback).await;
    Json(reply).into_response()
}

async fn register_c2b(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&sim, &headers) {
        return invalid_token();
    }
    let request: Value = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let field = |name: &str| request[name].as_str().unwrap_or_default().to_owned();
    let (shortcode, response_type) = (field("ShortCode"), field("ResponseType"));
    if !matches!(response_type.as_str(), "Completed" | "Cancelled") {
        return daraja_error(
            StatusCode::BAD_REQUEST,
            "400.002.02",
            "Bad Request - Invalid ResponseType",
        );
    }
    let mut state = sim.lock();
    // Production registers once; changing URLs needs the org portal.
    if state.c2b_urls.contains_key(&shortcode) {
        return daraja_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500.003.1001",
            "URLs are already registered",
        );
    }
    state.c2b_urls.insert(
        shortcode,
        (field("ConfirmationURL"), field("ValidationURL"), response_type),
    );
    Json(json!({
        "OriginatorCoversationID": uuid::Uuid::new_v4().simple().to_string(),
        "ResponseCode": "0",
        "ResponseDescription": "Success",
    }))
    .into_response()
}

async fn simulate_c2b(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&sim, &headers) {
        return invalid_token();
    }
    let request: Value = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let shortcode = request["ShortCode"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| request["ShortCode"].to_string());
    let msisdn = request["Msisdn"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| request["Msisdn"].to_string());
    let amount = request["Amount"]
        .as_u64()
        .or_else(|| request["Amount"].as_str().and_then(|a| a.parse().ok()))
        .unwrap_or(0);
    let bill_ref = request["BillRefNumber"].as_str().unwrap_or_default().to_owned();
    let simulator = sim.clone();
    // The customer's payment happens after Daraja accepts the simulation.
    tokio::spawn(async move {
        let _ = simulator.pay_bill(&shortcode, &msisdn, amount, &bill_ref).await;
    });
    Json(json!({
        "OriginatorCoversationID": uuid::Uuid::new_v4().simple().to_string(),
        "ResponseCode": "0",
        "ResponseDescription": "Accept the service request successfully.",
    }))
    .into_response()
}

/// Reverses a C2B or STK payment: the money goes back to the customer, once.
async fn reversal(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&sim, &headers) {
        return invalid_token();
    }
    let request: Value = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let receipt = request["TransactionID"].as_str().unwrap_or_default().to_owned();
    let Some(result_url) = request["ResultURL"].as_str().map(str::to_owned) else {
        return daraja_error(StatusCode::BAD_REQUEST, "400.002.02", "Bad Request - Invalid ResultURL");
    };
    let (reply, callback) = {
        let mut state = sim.lock();
        let conversation_id = sim.next_id(&mut state, "AG_");
        let originator_id = sim.next_id(&mut state, "RV_");
        let original = state
            .payments
            .iter()
            .find(|p| p.receipt == receipt && p.kind != "reversal")
            .cloned();
        let (code, description, reversal_receipt) = match original {
            _ if state.reversed.contains(&receipt) => ("R000001", "The transaction has already been reversed", None),
            None => ("R000002", "The OriginalTransactionID is invalid", None),
            Some(payment) => {
                let opening = state.config.wallet_kes;
                let wallet = *state.wallets.entry(payment.msisdn.clone()).or_insert(opening);
                if payment.kind == "b2c" && wallet < payment.amount_kes {
                    // The recipient already spent it: nothing to pull back.
                    ("1", "The balance is insufficient for the transaction.", None)
                } else {
                    state.reversed.insert(receipt.clone());
                    if payment.kind == "b2c" {
                        *state.wallets.get_mut(&payment.msisdn).expect("inserted above") -= payment.amount_kes;
                        state.float_kes += payment.amount_kes;
                    } else {
                        *state.wallets.get_mut(&payment.msisdn).expect("inserted above") += payment.amount_kes;
                        state.collected_kes = state.collected_kes.saturating_sub(payment.amount_kes);
                    }
                    let reversal_receipt = self::receipt(&mut state.rng);
                    state.payments.push(Payment {
                        request_id: originator_id.clone(),
                        msisdn: payment.msisdn,
                        amount_kes: payment.amount_kes,
                        receipt: reversal_receipt.clone(),
                        kind: "reversal",
                    });
                    (
                        "0",
                        "The service request is processed successfully.",
                        Some(reversal_receipt),
                    )
                }
            }
        };
        state.reversals.insert(
            originator_id.clone(),
            Disbursement {
                shortcode: request["ReceiverParty"].as_str().unwrap_or_default().to_owned(),
                conversation_id: conversation_id.clone(),
                msisdn: String::new(),
                amount: request["Amount"].as_u64().unwrap_or(0),
                code: code.to_owned(),
                receipt: reversal_receipt.clone(),
            },
        );
        let mut result = json!({
            "ResultType": 0, "ResultCode": code, "ResultDesc": description,
            "OriginatorConversationID": originator_id, "ConversationID": conversation_id,
            "TransactionID": reversal_receipt.clone().unwrap_or_default(),
        });
        if reversal_receipt.is_some() {
            result["ResultParameters"] = json!({ "ResultParameter": [
                { "Key": "OriginalTransactionID", "Value": receipt },
                { "Key": "Amount", "Value": request["Amount"] },
            ]});
        }
        let reply = json!({
            "OriginatorConversationID": originator_id, "ConversationID": conversation_id,
            "ResponseCode": "0", "ResponseDescription": "Accept the service request successfully.",
        });
        (reply, json!({ "Result": result }))
    };
    sim.deliver(result_url, callback).await;
    Json(reply).into_response()
}

impl SimConfig {
    /// A Daraja simulator set up from the options every simulator shares
    /// (floats and wallets in whole KES).
    pub fn from_options(options: &super::SimOptions) -> SimConfig {
        SimConfig {
            float_kes: options.float,
            wallet_kes: options.wallet,
            token_ttl: options.token_ttl,
            prompt_timeout: options.prompt_timeout,
            response_delay: options.response_delay,
            chaos: options.chaos.clone(),
            seed: options.seed,
            ..SimConfig::default()
        }
    }
}

impl super::SimulatedProvider for SimHandle {
    fn name(&self) -> &'static str {
        "mpesa"
    }

    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    fn set_chaos(&self, chaos: Chaos) {
        SimHandle::set_chaos(self, chaos);
    }

    fn movements(&self) -> Vec<super::Movement> {
        self.payments()
            .into_iter()
            .map(|p| super::Movement {
                request_id: p.request_id,
                msisdn: p.msisdn,
                currency: "KES".into(),
                amount: p.amount_kes,
                receipt: p.receipt,
                direction: if p.kind == "b2c" { "payout" } else { "collection" },
            })
            .collect()
    }

    /// The utility account (B2C pays from it) plus the working account
    /// (collections land in it): what the ledger's M-Pesa float tracks.
    fn float(&self, currency: &str) -> u64 {
        if currency == "KES" {
            let state = self.lock();
            state.float_kes + state.collected_kes
        } else {
            0
        }
    }

    /// Sets the utility account, which payouts are made from.
    fn set_float(&self, currency: &str, amount: u64) {
        if currency == "KES" {
            self.set_float_kes(amount);
        }
    }

    fn top_up(&self, currency: &str, amount: u64) {
        if currency == "KES" {
            let mut state = self.lock();
            state.float_kes += amount;
        }
    }

    fn answer(&self, request_id: &str, pay: bool) -> futures::future::BoxFuture<'_, ()> {
        let request_id = request_id.to_owned();
        Box::pin(async move { self.answer_prompt(&request_id, if pay { "0" } else { "1032" }).await })
    }

    fn callbacks_lost(&self) -> u64 {
        SimHandle::callbacks_lost(self)
    }

    fn callbacks_duplicated(&self) -> u64 {
        SimHandle::callbacks_duplicated(self)
    }

    fn timeouts_after_money(&self) -> u64 {
        SimHandle::timeouts_after_money(self)
    }

    fn expire_tokens(&self) {
        SimHandle::expire_tokens(self);
    }

    fn configure(&self, config: &mut crate::config::Config, callback_base_url: &str) {
        let sim = self.lock().config.clone();
        let defaults: crate::config::Config =
            crate::config::Config::load(None).expect("the built-in configuration loads");
        let mut mpesa = config
            .mpesa
            .clone()
            .or(defaults.mpesa)
            .expect("the built-in configuration has [mpesa]");
        mpesa.base_url = self.base_url.clone();
        mpesa.callback_base_url = callback_base_url.to_owned();
        mpesa.consumer_key = sim.consumer_key;
        mpesa.consumer_secret = sim.consumer_secret.into();
        mpesa.initiator_name = sim.initiator_name;
        mpesa.initiator_password = sim.initiator_password.into();
        mpesa.stk_shortcode = sim.stk_shortcode;
        mpesa.passkey = sim.passkey.into();
        mpesa.b2c_shortcode = sim.b2c_shortcode;
        mpesa.certificate_path = String::new();
        config.mpesa = Some(mpesa);
    }
}
