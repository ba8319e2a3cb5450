//! The MTN simulator's wire format, pinned by raw HTTP exactly as MTN's
//! Open API documents it (paths, headers, bodies, HTTP statuses),
//! independently of Tuma's adapter; then the adapter driven against it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Uri};
use base64::Engine as _;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tuma::providers::adapter::{Adapter, CallError, Direction, Request};
use tuma::providers::mtn::MtnClient;
use tuma::providers::Outcome;
use tuma::simulator::mtn::{
    MtnSim, API_KEY, API_USER, COLLECTION_SUBSCRIPTION_KEY as COLLECTION_KEY,
    DISBURSEMENT_SUBSCRIPTION_KEY as DISBURSEMENT_KEY,
};
use tuma::simulator::{Chaos, SimOptions, SimulatedProvider};

const WAIT: Duration = Duration::from_secs(5);

fn new_reference() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn token_for(http: &reqwest::Client, base: &str, product: &str, key: &str, user: &str, api_key: &str) -> Value {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{api_key}"));
    let response = http
        .post(format!("{base}/{product}/token/"))
        .header("Authorization", format!("Basic {basic}"))
        .header("Ocp-Apim-Subscription-Key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// A bearer token of the built-in API user for `product`.
async fn token(http: &reqwest::Client, base: &str, product: &str) -> String {
    let key = if product == "collection" {
        COLLECTION_KEY
    } else {
        DISBURSEMENT_KEY
    };
    let body = token_for(http, base, product, key, API_USER, API_KEY).await;
    body["access_token"].as_str().unwrap().to_owned()
}

/// One callback as received: method, path, raw body.
type Seen = Arc<Mutex<Vec<(Method, String, Bytes)>>>;

/// A plain-http receiver on 127.0.0.1 recording every request; its base URL.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
        let store = store.clone();
        async move {
            store.lock().unwrap().push((method, uri.path().to_owned(), body));
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// A raw transfer or request to pay (`product` `disbursement`/`collection`).
struct Post<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
    environment: &'a str,
    callback_url: Option<&'a str>,
}

impl Post<'_> {
    async fn send(&self, product: &str, reference: &str, body: Value) -> reqwest::Response {
        let (path, key) = match product {
            "collection" => ("collection/v1_0/requesttopay", COLLECTION_KEY),
            _ => ("disbursement/v1_0/transfer", DISBURSEMENT_KEY),
        };
        let mut request = self
            .http
            .post(format!("{}/{path}", self.base))
            .bearer_auth(self.token)
            .header("X-Reference-Id", reference)
            .header("X-Target-Environment", self.environment)
            .header("Ocp-Apim-Subscription-Key", key)
            .json(&body);
        if let Some(url) = self.callback_url {
            request = request.header("X-Callback-Url", url);
        }
        request.send().await.unwrap()
    }
}

fn transfer_body(msisdn: &str, amount: &str, currency: &str) -> Value {
    json!({
        "amount": amount, "currency": currency, "externalId": "ext-1",
        "payee": { "partyIdType": "MSISDN", "partyId": msisdn },
        "payerMessage": "Salary", "payeeNote": "Salary"
    })
}

fn rtp_body(msisdn: &str, amount: &str, currency: &str) -> Value {
    json!({
        "amount": amount, "currency": currency, "externalId": "ext-2",
        "payer": { "partyIdType": "MSISDN", "partyId": msisdn },
        "payerMessage": "Invoice 7", "payeeNote": "Invoice 7"
    })
}

async fn get_status(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    product: &str,
    reference: &str,
) -> (StatusCode, Value) {
    let (path, key) = match product {
        "collection" => ("collection/v1_0/requesttopay", COLLECTION_KEY),
        _ => ("disbursement/v1_0/transfer", DISBURSEMENT_KEY),
    };
    let response = http
        .get(format!("{base}/{path}/{reference}"))
        .bearer_auth(token)
        .header("X-Target-Environment", "mtnuganda")
        .header("Ocp-Apim-Subscription-Key", key)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn callbacks(seen: &Seen) -> Vec<(Method, String, Value)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(m, p, b)| (m.clone(), p.clone(), serde_json::from_slice(b).unwrap()))
        .collect()
}

#[tokio::test]
async fn a_sandbox_api_user_is_provisioned_and_its_token_works_on_its_own_product_only() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let user = uuid::Uuid::new_v4().to_string();
    let create = || {
        http.post(format!("{base}/v1_0/apiuser"))
            .header("X-Reference-Id", &user)
            .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
            .json(&json!({ "providerCallbackHost": "127.0.0.1" }))
            .send()
    };
    assert_eq!(create().await.unwrap().status(), StatusCode::CREATED);
    let again = create().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], "RESOURCE_ALREADY_EXIST");
    let info: Value = http
        .get(format!("{base}/v1_0/apiuser/{user}"))
        .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info,
        json!({ "providerCallbackHost": "127.0.0.1", "targetEnvironment": "sandbox" })
    );
    let key = http
        .post(format!("{base}/v1_0/apiuser/{user}/apikey"))
        .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(key.status(), StatusCode::CREATED);
    let api_key = key.json::<Value>().await.unwrap()["apiKey"]
        .as_str()
        .unwrap()
        .to_owned();

    let token = token_for(&http, &base, "collection", COLLECTION_KEY, &user, &api_key).await;
    assert_eq!(token["token_type"], "access_token");
    assert_eq!(token["expires_in"], 3600, "expires_in is a number of seconds");
    let bearer = token["access_token"].as_str().unwrap();
    let mut post = Post {
        http: &http,
        base: &base,
        token: bearer,
        environment: "sandbox",
        callback_url: None,
    };
    let accepted = post
        .send("collection", &new_reference(), rtp_body("46733123454", "5", "EUR"))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    post.environment = "mtnuganda";
    let refused = post
        .send("collection", &new_reference(), rtp_body("46733123454", "5", "UGX"))
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "a sandbox user may use sandbox only"
    );
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "NOT_ALLOWED_TARGET_ENVIRONMENT"
    );

    let foreign = http
        .get(format!("{base}/disbursement/v1_0/account/balance"))
        .bearer_auth(bearer)
        .header("X-Target-Environment", "sandbox")
        .header("Ocp-Apim-Subscription-Key", DISBURSEMENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        foreign.status(),
        StatusCode::UNAUTHORIZED,
        "a collection token is refused on disbursement"
    );
    let wrong_key = http
        .post(format!("{base}/collection/token/"))
        .basic_auth(&user, Some("wrong"))
        .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_transfer_is_accepted_with_202_and_its_status_and_callback_carry_the_financial_transaction_id() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "disbursement").await;
    let (receiver, seen) = receiver().await;
    let callback_url = format!("{receiver}/callbacks/mtn/transfer/tok-1");
    let post = Post {
        http: &http,
        base: &base,
        token: &token,
        environment: "mtnuganda",
        callback_url: Some(&callback_url),
    };
    let reference = new_reference();
    let float_before = sim.float("UGX");

    let accepted = post
        .send("disbursement", &reference, transfer_body("256772123456", "1500", "UGX"))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert_eq!(accepted.text().await.unwrap(), "", "202 has an empty body");

    let (status, body) = get_status(&http, &base, &token, "disbursement", &reference).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "SUCCESSFUL");
    assert_eq!(body["amount"], "1500", "amounts are strings");
    assert_eq!(body["currency"], "UGX");
    assert_eq!(body["externalId"], "ext-1");
    assert_eq!(
        body["payee"],
        json!({ "partyIdType": "MSISDN", "partyId": "256772123456" })
    );
    let receipt = body["financialTransactionId"].as_str().unwrap().to_owned();
    let movements = sim.movements_for(&reference);
    assert_eq!(movements.len(), 1);
    assert_eq!(
        (movements[0].receipt.as_str(), movements[0].amount),
        (receipt.as_str(), 1500)
    );
    assert_eq!(sim.float("UGX"), float_before - 1500);

    crate::common::eventually(WAIT, "the transfer callback", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let (method, path, callback) = callbacks(&seen).remove(0);
    assert_eq!((method, path.as_str()), (Method::POST, "/callbacks/mtn/transfer/tok-1"));
    assert_eq!(callback, body, "the callback body is the status body");

    let balance: Value = http
        .get(format!("{base}/disbursement/v1_0/account/balance"))
        .bearer_auth(&token)
        .header("X-Target-Environment", "mtnuganda")
        .header("Ocp-Apim-Subscription-Key", DISBURSEMENT_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        balance,
        json!({ "availableBalance": (float_before - 1500).to_string(), "currency": "UGX" })
    );
}

#[tokio::test]
async fn a_request_to_pay_is_called_back_with_put_and_failures_carry_a_bare_reason() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "collection").await;
    let (receiver, seen) = receiver().await;
    let callback_url = format!("{receiver}/callbacks/mtn/requesttopay/tok-2");
    let post = Post {
        http: &http,
        base: &base,
        token: &token,
        environment: "mtnuganda",
        callback_url: Some(&callback_url),
    };
    let float_before = sim.float("UGX");

    let paid = new_reference();
    let accepted = post
        .send("collection", &paid, rtp_body("256772123456", "700", "UGX"))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let (_, body) = get_status(&http, &base, &token, "collection", &paid).await;
    assert_eq!(body["status"], "SUCCESSFUL");
    assert_eq!(
        body["payer"],
        json!({ "partyIdType": "MSISDN", "partyId": "256772123456" })
    );
    assert!(body["financialTransactionId"].is_string());
    assert_eq!(sim.float("UGX"), float_before + 700);
    assert_eq!(sim.movements_for(&paid)[0].direction, "collection");

    for (msisdn, reason) in [
        ("256772123001", "APPROVAL_REJECTED"),
        ("256772123009", "PAYER_NOT_FOUND"),
        ("256772123004", "NOT_ENOUGH_FUNDS"),
    ] {
        let reference = new_reference();
        assert_eq!(
            post.send("collection", &reference, rtp_body(msisdn, "700", "UGX"))
                .await
                .status(),
            StatusCode::ACCEPTED
        );
        let (_, body) = get_status(&http, &base, &token, "collection", &reference).await;
        assert_eq!(
            (body["status"].as_str(), body["reason"].as_str()),
            (Some("FAILED"), Some(reason)),
            "{msisdn}"
        );
        assert!(body.get("financialTransactionId").is_none());
        assert!(sim.movements_for(&reference).is_empty());
    }

    crate::common::eventually(WAIT, "four callbacks", || async { seen.lock().unwrap().len() == 4 }).await;
    for (method, path, body) in callbacks(&seen) {
        assert_eq!(
            (method, path.as_str()),
            (Method::PUT, "/callbacks/mtn/requesttopay/tok-2")
        );
        assert!(body["status"] == "SUCCESSFUL" || body["status"] == "FAILED", "{body}");
    }
}

#[tokio::test]
async fn a_repeated_reference_id_is_refused_with_409_and_moves_no_money_twice() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "disbursement").await;
    let post = Post {
        http: &http,
        base: &base,
        token: &token,
        environment: "mtnrwanda",
        callback_url: None,
    };
    let reference = new_reference();
    let body = transfer_body("250788123456", "2000", "RWF");
    assert_eq!(
        post.send("disbursement", &reference, body.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    let again = post.send("disbursement", &reference, body).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], "RESOURCE_ALREADY_EXIST");
    assert_eq!(sim.movements_for(&reference).len(), 1);
}

#[tokio::test]
async fn an_expired_token_or_a_wrong_subscription_key_is_refused_with_401() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "disbursement").await;
    let (status, _) = get_status(&http, &base, &token, "disbursement", &new_reference()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the token works before it expires");
    let wrong_key = http
        .get(format!("{base}/disbursement/v1_0/account/balance"))
        .bearer_auth(&token)
        .header("X-Target-Environment", "mtnuganda")
        .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);
    sim.expire_tokens();
    let (status, body) = get_status(&http, &base, &token, "disbursement", &new_reference()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["statusCode"], 401);
}

#[tokio::test]
async fn an_unregistered_payee_or_a_low_float_fails_the_transfer_with_mtn_reasons() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "disbursement").await;
    let post = Post {
        http: &http,
        base: &base,
        token: &token,
        environment: "mtnuganda",
        callback_url: None,
    };
    let unregistered = new_reference();
    assert_eq!(
        post.send(
            "disbursement",
            &unregistered,
            transfer_body("256772123009", "100", "UGX")
        )
        .await
        .status(),
        StatusCode::ACCEPTED
    );
    let (_, body) = get_status(&http, &base, &token, "disbursement", &unregistered).await;
    assert_eq!(body["status"], "FAILED");
    assert_eq!(
        body["reason"]["code"], "PAYEE_NOT_FOUND",
        "transfer reasons are {{code, message}}"
    );
    assert!(body["reason"]["message"].is_string());

    sim.set_float("UGX", 10);
    let broke = new_reference();
    post.send("disbursement", &broke, transfer_body("256772123456", "100", "UGX"))
        .await;
    let (_, body) = get_status(&http, &base, &token, "disbursement", &broke).await;
    assert_eq!(body["reason"]["code"], "NOT_ENOUGH_FUNDS");
    assert!(sim.movements().is_empty());
    assert_eq!(sim.float("UGX"), 10);
}

#[tokio::test]
async fn configuration_errors_come_back_as_http_500_with_their_codes_and_record_nothing() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "disbursement").await;
    let foreign_host = "http://localhost:9/callbacks/mtn/transfer/t";
    let mut post = Post {
        http: &http,
        base: &base,
        token: &token,
        environment: "mtnuganda",
        callback_url: None,
    };
    let cases = [
        (
            "mtnuganda",
            None,
            transfer_body("256772123456", "100", "EUR"),
            "INVALID_CURRENCY",
        ),
        (
            "mtnuganda",
            Some(foreign_host),
            transfer_body("256772123456", "100", "UGX"),
            "INVALID_CALLBACK_URL_HOST",
        ),
        (
            "mtnghana",
            None,
            transfer_body("233241234567", "100", "GHS"),
            "NOT_ALLOWED_TARGET_ENVIRONMENT",
        ),
    ];
    for (environment, callback_url, body, code) in cases {
        post.environment = environment;
        post.callback_url = callback_url;
        let reference = new_reference();
        let refused = post.send("disbursement", &reference, body).await;
        assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR, "{code}");
        assert_eq!(refused.json::<Value>().await.unwrap()["code"], code);
        let (status, body) = get_status(&http, &base, &token, "disbursement", &reference).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("RESOURCE_NOT_FOUND"))
        );
    }
    post.environment = "mtnuganda";
    post.callback_url = None;
    let not_uuid = post
        .send("disbursement", "payout-1", transfer_body("256772123456", "100", "UGX"))
        .await;
    assert_eq!(not_uuid.status(), StatusCode::BAD_REQUEST);
    let mut long_note = transfer_body("256772123456", "100", "UGX");
    long_note["payeeNote"] = json!("x".repeat(129));
    assert_eq!(
        post.send("disbursement", &new_reference(), long_note).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert!(sim.movements().is_empty());
}

#[tokio::test]
async fn a_transfer_that_times_out_after_moving_money_is_told_truthfully_by_its_status() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "disbursement").await;
    let post = Post {
        http: &http,
        base: &base,
        token: &token,
        environment: "mtnuganda",
        callback_url: None,
    };
    sim.set_chaos(Chaos {
        timeout_after_money_permille: 1000,
        ..Chaos::default()
    });
    let reference = new_reference();
    let body = transfer_body("256772123456", "900", "UGX");
    let timed_out = post.send("disbursement", &reference, body.clone()).await;
    assert_eq!(timed_out.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(sim.timeouts_after_money(), 1);
    sim.set_chaos(Chaos::default());
    let (_, status) = get_status(&http, &base, &token, "disbursement", &reference).await;
    assert_eq!(status["status"], "SUCCESSFUL");
    assert_eq!(
        post.send("disbursement", &reference, body).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(sim.movements_for(&reference).len(), 1);
}

#[tokio::test]
async fn a_server_error_is_answered_503_before_anything_happens() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "disbursement").await;
    let post = Post {
        http: &http,
        base: &base,
        token: &token,
        environment: "mtnuganda",
        callback_url: None,
    };
    sim.set_chaos(Chaos {
        server_error_permille: 1000,
        ..Chaos::default()
    });
    let reference = new_reference();
    let refused = post
        .send("disbursement", &reference, transfer_body("256772123456", "900", "UGX"))
        .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "SERVICE_UNAVAILABLE");
    sim.set_chaos(Chaos::default());
    let (status, _) = get_status(&http, &base, &token, "disbursement", &reference).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(sim.movements().is_empty());
}

#[tokio::test]
async fn a_request_to_pay_nobody_answers_expires_and_a_waiting_one_follows_the_test() {
    let options = SimOptions {
        prompt_timeout: Duration::from_millis(300),
        ..SimOptions::default()
    };
    let sim = MtnSim::spawn(options).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = token(&http, &base, "collection").await;
    let (receiver, seen) = receiver().await;
    let callback_url = format!("{receiver}/callbacks/mtn/requesttopay/tok-3");
    let post = Post {
        http: &http,
        base: &base,
        token: &token,
        environment: "mtnuganda",
        callback_url: Some(&callback_url),
    };
    let silent = new_reference();
    post.send("collection", &silent, rtp_body("256772123003", "50", "UGX"))
        .await;
    let waiting = new_reference();
    post.send("collection", &waiting, rtp_body("256772123005", "50", "UGX"))
        .await;
    let (_, body) = get_status(&http, &base, &token, "collection", &waiting).await;
    assert_eq!(body["status"], "PENDING");

    sim.answer(&waiting, true).await;
    let (_, body) = get_status(&http, &base, &token, "collection", &waiting).await;
    assert_eq!(body["status"], "SUCCESSFUL");
    assert_eq!(sim.movements_for(&waiting).len(), 1);

    crate::common::eventually(WAIT, "the prompt to expire", || async {
        get_status(&http, &base, &token, "collection", &silent).await.1["status"] == "FAILED"
    })
    .await;
    let (_, body) = get_status(&http, &base, &token, "collection", &silent).await;
    assert_eq!(body["reason"], "EXPIRED");
    crate::common::eventually(WAIT, "two callbacks", || async { seen.lock().unwrap().len() == 2 }).await;
    let statuses: Vec<Value> = callbacks(&seen)
        .into_iter()
        .map(|(_, _, b)| b["status"].clone())
        .collect();
    assert!(
        statuses.contains(&json!("SUCCESSFUL")) && statuses.contains(&json!("FAILED")),
        "{statuses:?}"
    );
}

/// The adapter, configured by the simulator as the engine would be.
async fn adapter(sim: &MtnSim, callback_base_url: &str) -> MtnClient {
    let mut config = crate::common::config_with("");
    sim.configure(&mut config, callback_base_url);
    MtnClient::new(config.mtn.expect("configure sets [mtn]")).unwrap()
}

fn request(direction: Direction, msisdn: &str, amount: u64) -> Request {
    Request {
        direction,
        request_id: new_reference(),
        msisdn: msisdn.to_owned(),
        country: "UG".to_owned(),
        currency: "UGX".to_owned(),
        amount: Decimal::from(amount),
        reference: "Invoice 42".to_owned(),
        callback_token: "intent-token".to_owned(),
    }
}

#[tokio::test]
async fn the_adapter_pays_out_queries_refuses_duplicates_and_reads_real_callbacks() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let (receiver, seen) = receiver().await;
    let client = adapter(&sim, &receiver).await;

    let payout = request(Direction::Payout, "256772123456", 2500);
    let reply = client.send(payout.clone()).await.unwrap();
    assert_eq!(reply.outcome, Outcome::Pending, "MTN's 202 only means accepted");
    let status = client
        .status(Direction::Payout, payout.request_id.clone(), "UG".into(), "UGX".into())
        .await
        .unwrap();
    let movement = sim.movements_for(&payout.request_id).remove(0);
    assert_eq!(
        (status.outcome, status.receipt.as_deref()),
        (Outcome::Succeeded, Some(movement.receipt.as_str()))
    );
    assert_eq!(movement.amount, 2500);
    assert!(matches!(client.send(payout.clone()).await, Err(CallError::Duplicate)));
    assert_eq!(sim.movements_for(&payout.request_id).len(), 1);

    crate::common::eventually(WAIT, "the transfer callback", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let (method, path, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (method, path.as_str()),
        (Method::POST, "/callbacks/mtn/transfer/intent-token")
    );
    let report = client.parse_callback("transfer", &body).unwrap();
    assert_eq!(report.request_id.as_deref(), Some(payout.request_id.as_str()));
    assert_eq!(
        (report.outcome, report.receipt.as_deref()),
        (Outcome::Succeeded, Some(movement.receipt.as_str()))
    );

    let unregistered = request(Direction::Payout, "256772123009", 100);
    assert_eq!(
        client.send(unregistered.clone()).await.unwrap().outcome,
        Outcome::Pending
    );
    let status = client
        .status(Direction::Payout, unregistered.request_id, "UG".into(), "UGX".into())
        .await
        .unwrap();
    assert!(
        matches!(status.outcome, Outcome::Failed { ref code, .. } if code == "PAYEE_NOT_FOUND"),
        "{status:?}"
    );

    let collection = request(Direction::Collection, "256772123009", 100);
    client.send(collection.clone()).await.unwrap();
    crate::common::eventually(WAIT, "the request-to-pay callback", || async {
        seen.lock().unwrap().iter().any(|(m, _, _)| m == Method::PUT)
    })
    .await;
    let (_, path, body) = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(m, _, _)| m == Method::PUT)
        .unwrap()
        .clone();
    assert_eq!(path, "/callbacks/mtn/requesttopay/intent-token");
    let report = client.parse_callback("requesttopay", &body).unwrap();
    assert_eq!(report.request_id.as_deref(), Some(collection.request_id.as_str()));
    assert!(matches!(report.outcome, Outcome::Failed { ref code, .. } if code == "PAYER_NOT_FOUND"));

    let unknown = client
        .status(Direction::Payout, new_reference(), "UG".into(), "UGX".into())
        .await
        .unwrap();
    assert_eq!(unknown.outcome, Outcome::Pending, "not found is pending, never failed");
    sim.expire_tokens();
    let balance = client
        .balance("UG")
        .await
        .expect("the token is refreshed once after a 401");
    assert_eq!(
        (balance.available, balance.currency.as_str()),
        (Decimal::from(sim.float("UGX")), "UGX")
    );
    let mut kenyan = request(Direction::Payout, "254712345678", 1);
    kenyan.country = "KE".into();
    assert!(matches!(client.send(kenyan).await, Err(CallError::Config(_))));
}

#[tokio::test]
async fn the_adapter_reads_a_timeout_after_money_as_ambiguous_and_a_503_as_busy() {
    let sim = MtnSim::spawn(SimOptions::default()).await.unwrap();
    let client = adapter(&sim, "http://127.0.0.1:9").await;

    sim.set_chaos(Chaos {
        timeout_after_money_permille: 1000,
        ..Chaos::default()
    });
    let payout = request(Direction::Payout, "256772123456", 300);
    assert!(matches!(
        client.send(payout.clone()).await,
        Err(CallError::Ambiguous(_))
    ));
    sim.set_chaos(Chaos::default());
    let status = client
        .status(Direction::Payout, payout.request_id.clone(), "UG".into(), "UGX".into())
        .await
        .unwrap();
    assert_eq!(status.outcome, Outcome::Succeeded);
    assert!(matches!(client.send(payout.clone()).await, Err(CallError::Duplicate)));
    assert_eq!(sim.movements_for(&payout.request_id).len(), 1);

    sim.set_chaos(Chaos {
        server_error_permille: 1000,
        ..Chaos::default()
    });
    let collection = request(Direction::Collection, "256772123456", 300);
    assert!(matches!(client.send(collection.clone()).await, Err(CallError::Busy(_))));
    sim.set_chaos(Chaos::default());
    let reply = client
        .send(collection.clone())
        .await
        .expect("a 503 came before anything was recorded");
    assert_eq!(reply.outcome, Outcome::Pending);
    assert_eq!(sim.movements_for(&collection.request_id).len(), 1);
}
