//! The Vodacom Tanzania simulator's wire format, pinned by raw HTTP exactly
//! as the M-Pesa Open API documents it (paths, RSA bearers, `input_…` and
//! `output_…` fields, `INS-` codes, HTTP statuses), independently of Tuma's
//! adapter; then the adapter driven against it.

use std::time::Duration;

use base64::Engine as _;
use figment::providers::{Format, Toml};
use figment::Figment;
use reqwest::StatusCode;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Encrypt, RsaPublicKey};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tuma::config::{Config, DEFAULT_TOML};
use tuma::providers::adapter::{Adapter, CallError, Direction, Request};
use tuma::providers::vodacom_tz::{VodacomClient, SIMULATOR_PUBLIC_KEY};
use tuma::providers::Outcome;
use tuma::simulator::vodacom_tz::{VodacomSim, API_KEY, SANDBOX_PREFIX};
use tuma::simulator::{Chaos, SimOptions, SimulatedProvider};

const WAIT: Duration = Duration::from_secs(5);

/// `base64(RSA_PKCS1v15(secret))` under the simulator's public key, as the
/// Open API SDKs build their bearers.
fn bearer(secret: &str) -> String {
    let der = base64::engine::general_purpose::STANDARD
        .decode(SIMULATOR_PUBLIC_KEY)
        .unwrap();
    let key = RsaPublicKey::from_public_key_der(&der).unwrap();
    let encrypted = key
        .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, secret.as_bytes())
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(encrypted)
}

fn url(sim: &VodacomSim, operation: &str) -> String {
    format!("{}{SANDBOX_PREFIX}/{operation}", sim.base_url())
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Opens a session; returns the bearer for later calls.
async fn session(http: &reqwest::Client, sim: &VodacomSim) -> String {
    let response = http
        .get(url(sim, "getSession/"))
        .bearer_auth(bearer(API_KEY))
        .header("Origin", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["output_ResponseCode"], "INS-0");
    let session_id = body["output_SessionID"].as_str().unwrap();
    bearer(session_id)
}

fn payment(msisdn: &str, id: &str, amount: Value) -> Value {
    json!({
        "input_Amount": amount,
        "input_Country": "TZN",
        "input_Currency": "TZS",
        "input_CustomerMSISDN": msisdn,
        "input_ServiceProviderCode": "000000",
        "input_ThirdPartyConversationID": id,
        "input_TransactionReference": "T12345C",
        "input_PaymentItemsDesc": "Salary",
        "input_PurchasedItemsDesc": "Shoes",
    })
}

async fn post(http: &reqwest::Client, url: &str, bearer: &str, body: &Value) -> (StatusCode, Value) {
    let response = http
        .post(url)
        .bearer_auth(bearer)
        .header("Origin", "*")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn query(http: &reqwest::Client, sim: &VodacomSim, bearer: &str, reference: &str) -> Value {
    let query_id = new_id();
    let response = http
        .get(url(sim, "queryTransactionStatus/"))
        .bearer_auth(bearer)
        .header("Origin", "*")
        .query(&[
            ("input_QueryReference", reference),
            ("input_ServiceProviderCode", "000000"),
            ("input_ThirdPartyConversationID", query_id.as_str()),
            ("input_Country", "TZN"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["output_ResponseCode"], "INS-0");
    assert_eq!(
        body["output_ThirdPartyConversationID"], query_id,
        "the query's own id is echoed"
    );
    body
}

fn codes(answer: &(StatusCode, Value)) -> (u16, &str) {
    (
        answer.0.as_u16(),
        answer.1["output_ResponseCode"].as_str().unwrap_or(""),
    )
}

async fn quick_sim(options: SimOptions) -> VodacomSim {
    VodacomSim::spawn(options).await.unwrap()
}

#[tokio::test]
async fn a_session_opens_only_with_the_encrypted_api_key_and_dies_when_sessions_expire() {
    let sim = quick_sim(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let good = session(&http, &sim).await;

    let wrong_key = http
        .get(url(&sim, "getSession/"))
        .bearer_auth(bearer("not-the-key"))
        .header("Origin", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_key.json::<Value>().await.unwrap()["output_ResponseCode"], "INS-2");

    let b2c = url(&sim, "b2cPayment/");
    let body = payment("255754000111", &new_id(), json!("1000"));
    let with_api_key = post(&http, &b2c, &bearer(API_KEY), &body).await;
    assert_eq!(
        codes(&with_api_key),
        (401, "INS-2"),
        "payments take a session, not the API key"
    );

    sim.expire_tokens();
    let expired = post(&http, &b2c, &good, &body).await;
    assert_eq!(codes(&expired), (401, "INS-2"));
    assert!(sim.movements().is_empty());
}

#[tokio::test]
async fn a_b2c_payout_is_paid_in_the_call_and_the_status_query_says_completed() {
    let sim = quick_sim(SimOptions::default()).await;
    let float = sim.float("TZS");
    let http = reqwest::Client::new();
    let bearer = session(&http, &sim).await;
    let id = new_id();
    // Amounts as numbers are read too, though the portal sends strings.
    let answer = post(
        &http,
        &url(&sim, "b2cPayment/"),
        &bearer,
        &payment("255754000111", &id, json!(2500)),
    )
    .await;
    assert_eq!(codes(&answer), (201, "INS-0"));
    assert_eq!(answer.1["output_ThirdPartyConversationID"], id.as_str());
    let receipt = answer.1["output_TransactionID"].as_str().unwrap().to_owned();
    assert_eq!(receipt.len(), 10);
    assert_eq!(answer.1["output_ConversationID"].as_str().unwrap().len(), 32);
    assert_eq!(sim.float("TZS"), float - 2500);
    let moved = sim.movements_for(&id);
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].direction, moved[0].amount), ("payout", 2500));

    let status = query(&http, &sim, &bearer, &id).await;
    assert_eq!(status["output_ResponseTransactionStatus"], "Completed");
    assert_eq!(status["output_OriginalTransactionID"], receipt.as_str());
    let by_receipt = query(&http, &sim, &bearer, &receipt).await;
    assert_eq!(by_receipt["output_ResponseTransactionStatus"], "Completed");
    let unknown = query(&http, &sim, &bearer, "never-sent").await;
    assert_eq!(unknown["output_ResponseTransactionStatus"], "N/A");
}

#[tokio::test]
async fn a_repeated_third_party_conversation_id_is_refused_with_ins_10_and_pays_once() {
    let sim = quick_sim(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let bearer = session(&http, &sim).await;
    let id = new_id();
    let body = payment("255754000111", &id, json!("1000"));
    let b2c = url(&sim, "b2cPayment/");
    assert_eq!(codes(&post(&http, &b2c, &bearer, &body).await), (201, "INS-0"));
    assert_eq!(codes(&post(&http, &b2c, &bearer, &body).await), (409, "INS-10"));
    let c2b = url(&sim, "c2bPayment/singleStage/");
    assert_eq!(
        codes(&post(&http, &c2b, &bearer, &body).await),
        (409, "INS-10"),
        "the id is taken whatever the operation"
    );
    assert_eq!(sim.movements_for(&id).len(), 1);
}

#[tokio::test]
async fn refusals_carry_the_documented_codes_and_move_nothing() {
    let sim = quick_sim(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let bearer = session(&http, &sim).await;
    let b2c = url(&sim, "b2cPayment/");
    let c2b = url(&sim, "c2bPayment/singleStage/");

    let unregistered = post(&http, &b2c, &bearer, &payment("255754000009", &new_id(), json!("1000"))).await;
    assert_eq!(codes(&unregistered), (400, "INS-2002"));
    let unregistered = post(&http, &c2b, &bearer, &payment("255754000009", &new_id(), json!("1000"))).await;
    assert_eq!(codes(&unregistered), (400, "INS-2051"));

    sim.set_float("TZS", 999);
    let low_float = post(&http, &b2c, &bearer, &payment("255754000111", &new_id(), json!("1000"))).await;
    assert_eq!(codes(&low_float), (422, "INS-2006"));

    let mut long_reference = payment("255754000111", &new_id(), json!("10"));
    long_reference["input_TransactionReference"] = json!("ABCDEFGHIJKLMNOPQRSTU");
    assert_eq!(
        codes(&post(&http, &b2c, &bearer, &long_reference).await),
        (400, "INS-17")
    );
    let mut wrong_code = payment("255754000111", &new_id(), json!("10"));
    wrong_code["input_ServiceProviderCode"] = json!("123456");
    assert_eq!(codes(&post(&http, &b2c, &bearer, &wrong_code).await), (400, "INS-13"));
    let mut missing = payment("255754000111", &new_id(), json!("10"));
    missing.as_object_mut().unwrap().remove("input_CustomerMSISDN");
    assert_eq!(codes(&post(&http, &b2c, &bearer, &missing).await), (400, "INS-20"));
    let fraction = payment("255754000111", &new_id(), json!("10.50"));
    assert_eq!(codes(&post(&http, &b2c, &bearer, &fraction).await), (400, "INS-15"));

    assert!(sim.movements().is_empty());
    assert_eq!(sim.float("TZS"), 999);
}

#[tokio::test]
async fn a_single_stage_collection_answers_with_the_payers_decision() {
    let sim = quick_sim(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let bearer = session(&http, &sim).await;
    let c2b = url(&sim, "c2bPayment/singleStage/");
    let float = sim.float("TZS");

    let paid_id = new_id();
    let paid = post(&http, &c2b, &bearer, &payment("255754000123", &paid_id, json!("700"))).await;
    assert_eq!(codes(&paid), (201, "INS-0"));
    let receipt = paid.1["output_TransactionID"].as_str().unwrap();
    assert_eq!(sim.movements_for(&paid_id)[0].receipt, receipt);
    assert_eq!(sim.movements_for(&paid_id)[0].direction, "collection");
    assert_eq!(sim.float("TZS"), float + 700);

    for (msisdn, expected, status) in [
        ("255754000001", (401, "INS-5"), "Cancelled"),
        ("255754000002", (401, "INS-6"), "Failed"),
        ("255754000004", (422, "INS-2006"), "Failed"),
    ] {
        let id = new_id();
        let answer = post(&http, &c2b, &bearer, &payment(msisdn, &id, json!("700"))).await;
        assert_eq!(codes(&answer), expected, "payer {msisdn}");
        let queried = query(&http, &sim, &bearer, &id).await;
        assert_eq!(queried["output_ResponseTransactionStatus"], status, "payer {msisdn}");
        assert!(sim.movements_for(&id).is_empty());
    }
}

#[tokio::test]
async fn a_prompt_nobody_answers_times_out_with_ins_9_and_the_status_says_expired() {
    let sim = quick_sim(SimOptions {
        prompt_timeout: Duration::from_millis(200),
        ..SimOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let bearer = session(&http, &sim).await;
    let id = new_id();
    let answer = post(
        &http,
        &url(&sim, "c2bPayment/singleStage/"),
        &bearer,
        &payment("255754000003", &id, json!("700")),
    )
    .await;
    assert_eq!(codes(&answer), (408, "INS-9"));
    let status = query(&http, &sim, &bearer, &id).await;
    assert_eq!(status["output_ResponseTransactionStatus"], "Expired");
    assert!(sim.movements().is_empty());
}

#[tokio::test]
async fn a_waiting_prompt_is_pending_until_the_test_answers_it() {
    let sim = quick_sim(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let bearer = session(&http, &sim).await;
    let id = new_id();
    let call = {
        let (http, url, bearer) = (http.clone(), url(&sim, "c2bPayment/singleStage/"), bearer.clone());
        let body = payment("255754000005", &id, json!("700"));
        tokio::spawn(async move { post(&http, &url, &bearer, &body).await })
    };
    crate::common::eventually(WAIT, "the prompt to be pending", || async {
        query(&http, &sim, &bearer, &id).await["output_ResponseTransactionStatus"] == "Pending"
    })
    .await;
    assert!(!call.is_finished(), "the call blocks while the payer decides");
    sim.answer(&id, true).await;
    let answer = call.await.unwrap();
    assert_eq!(codes(&answer), (201, "INS-0"));
    let status = query(&http, &sim, &bearer, &id).await;
    assert_eq!(status["output_ResponseTransactionStatus"], "Completed");
    assert_eq!(status["output_OriginalTransactionID"], answer.1["output_TransactionID"]);
}

#[tokio::test]
async fn a_timeout_after_money_answers_ins_9_yet_the_status_tells_the_truth_and_a_resend_is_a_duplicate() {
    let sim = quick_sim(SimOptions::default()).await;
    sim.set_chaos(Chaos {
        timeout_after_money_permille: 1000,
        ..Chaos::default()
    });
    let http = reqwest::Client::new();
    let bearer = session(&http, &sim).await;
    let id = new_id();
    let body = payment("255754000111", &id, json!("1000"));
    let b2c = url(&sim, "b2cPayment/");
    assert_eq!(codes(&post(&http, &b2c, &bearer, &body).await), (408, "INS-9"));
    assert_eq!(sim.timeouts_after_money(), 1);
    assert_eq!(sim.movements_for(&id).len(), 1, "the money moved");
    let status = query(&http, &sim, &bearer, &id).await;
    assert_eq!(status["output_ResponseTransactionStatus"], "Completed");

    sim.set_chaos(Chaos::default());
    assert_eq!(codes(&post(&http, &b2c, &bearer, &body).await), (409, "INS-10"));
    assert_eq!(sim.movements_for(&id).len(), 1, "paid once");
    assert_eq!((sim.callbacks_lost(), sim.callbacks_duplicated()), (0, 0));
}

#[tokio::test]
async fn an_overloaded_simulator_answers_ins_16_before_anything_happens() {
    let sim = quick_sim(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let bearer = session(&http, &sim).await;
    sim.set_chaos(Chaos {
        server_error_permille: 1000,
        ..Chaos::default()
    });
    let id = new_id();
    let body = payment("255754000111", &id, json!("1000"));
    let b2c = url(&sim, "b2cPayment/");
    assert_eq!(codes(&post(&http, &b2c, &bearer, &body).await), (503, "INS-16"));
    assert!(sim.movements().is_empty());
    sim.set_chaos(Chaos::default());
    assert_eq!(
        codes(&post(&http, &b2c, &bearer, &body).await),
        (201, "INS-0"),
        "an overloaded refusal kept nothing: the same id goes through"
    );
}

// --- The adapter, against the simulator -----------------------------------

async fn adapter(sim: &VodacomSim) -> VodacomClient {
    let mut config = Config::from_figment(Figment::from(Toml::string(DEFAULT_TOML))).unwrap();
    sim.configure(&mut config, "http://127.0.0.1:8080");
    VodacomClient::new(config.vodacom_tz.expect("configured")).unwrap()
}

fn request(direction: Direction, msisdn: &str, amount: u32) -> Request {
    Request {
        direction,
        request_id: new_id(),
        msisdn: msisdn.to_owned(),
        country: "TZ".into(),
        currency: "TZS".into(),
        amount: Decimal::from(amount),
        reference: "Order #42 / May".into(),
        callback_token: "unused".into(),
    }
}

async fn status_of(client: &VodacomClient, request: &Request) -> tuma::providers::adapter::Reply {
    client
        .status(request.direction, request.request_id.clone(), "TZ".into(), "TZS".into())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_adapter_gets_final_answers_in_the_call_and_the_same_from_the_status_query() {
    let sim = quick_sim(SimOptions::default()).await;
    let client = adapter(&sim).await;
    assert!(client.callback_kinds().is_empty());
    assert_eq!(client.app_callback_token(), None);
    assert!(
        client.parse_callback("result", b"{}").is_err(),
        "there are no callbacks"
    );

    let payout = request(Direction::Payout, "255754000111", 5000);
    let paid = client.send(payout.clone()).await.unwrap();
    assert_eq!(paid.outcome, Outcome::Succeeded);
    let receipt = paid.receipt.clone().expect("the transaction id");
    assert_eq!(sim.movements_for(&payout.request_id)[0].receipt, receipt);
    let status = status_of(&client, &payout).await;
    assert_eq!((status.outcome, status.receipt), (Outcome::Succeeded, Some(receipt)));

    assert!(matches!(client.send(payout.clone()).await, Err(CallError::Duplicate)));
    assert_eq!(sim.movements_for(&payout.request_id).len(), 1);

    let collection = request(Direction::Collection, "255754000123", 700);
    let collected = client.send(collection.clone()).await.unwrap();
    assert_eq!(collected.outcome, Outcome::Succeeded);
    assert!(collected.receipt.is_some());

    let declined = request(Direction::Collection, "255754000001", 700);
    let answer = client.send(declined.clone()).await.unwrap();
    assert!(matches!(answer.outcome, Outcome::Failed { ref code, .. } if code == "INS-5"));
    assert!(matches!(
        status_of(&client, &declined).await.outcome,
        Outcome::Failed { .. }
    ));

    let unregistered = request(Direction::Payout, "255754000009", 5000);
    let refused = client.send(unregistered).await.unwrap();
    assert!(matches!(refused.outcome, Outcome::Failed { ref code, .. } if code == "INS-2002"));

    let never_sent = request(Direction::Payout, "255754000111", 5000);
    assert_eq!(status_of(&client, &never_sent).await.outcome, Outcome::Pending);
}

#[tokio::test]
async fn the_adapter_reopens_an_expired_session_and_treats_lost_answers_as_ambiguous() {
    let sim = quick_sim(SimOptions::default()).await;
    let client = adapter(&sim).await;
    let first = request(Direction::Payout, "255754000111", 1000);
    assert_eq!(client.send(first).await.unwrap().outcome, Outcome::Succeeded);

    sim.expire_tokens();
    let after_expiry = request(Direction::Payout, "255754000111", 1000);
    assert_eq!(
        client.send(after_expiry).await.unwrap().outcome,
        Outcome::Succeeded,
        "INS-2 opens a new session and sends once more"
    );

    sim.set_chaos(Chaos {
        timeout_after_money_permille: 1000,
        ..Chaos::default()
    });
    let lost = request(Direction::Payout, "255754000111", 1000);
    assert!(matches!(client.send(lost.clone()).await, Err(CallError::Ambiguous(_))));
    sim.set_chaos(Chaos {
        server_error_permille: 1000,
        ..Chaos::default()
    });
    assert!(matches!(
        client.send(request(Direction::Payout, "255754000111", 1000)).await,
        Err(CallError::Busy(_))
    ));
    sim.set_chaos(Chaos::default());
    assert!(matches!(client.send(lost.clone()).await, Err(CallError::Duplicate)));
    let status = status_of(&client, &lost).await;
    assert_eq!(status.outcome, Outcome::Succeeded, "the query tells the truth");
    assert_eq!(
        status.receipt,
        Some(sim.movements_for(&lost.request_id)[0].receipt.clone())
    );
}

#[tokio::test]
async fn the_adapter_reports_a_client_side_timeout_on_a_slow_prompt_as_ambiguous() {
    let sim = quick_sim(SimOptions::default()).await;
    let mut config = Config::from_figment(Figment::from(Toml::string(DEFAULT_TOML))).unwrap();
    sim.configure(&mut config, "http://127.0.0.1:8080");
    let mut vodacom = config.vodacom_tz.unwrap();
    vodacom.c2b_timeout_ms = 200;
    let client = VodacomClient::new(vodacom).unwrap();
    // `…005` waits for an answer that does not come within the client's 200 ms.
    let waiting = request(Direction::Collection, "255754000005", 700);
    assert!(matches!(
        client.send(waiting.clone()).await,
        Err(CallError::Ambiguous(_))
    ));
    assert_eq!(status_of(&client, &waiting).await.outcome, Outcome::Pending);
    sim.answer(&waiting.request_id, true).await;
    crate::common::eventually(WAIT, "the late payment to be completed", || async {
        status_of(&client, &waiting).await.outcome == Outcome::Succeeded
    })
    .await;
}
