//! The Tigo simulator's wire format, pinned by raw HTTP as the public Tigo
//! clients speak it (form-encoded password grant, `bearer` tokens, the
//! push bill-pay body and callback) and as Tuma's assumed contract defines
//! the rest (disbursement, status enquiry, `SIM-…` codes); then Tuma's
//! adapter driven against it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tuma::providers::adapter::{Adapter, CallError, Direction, Request};
use tuma::providers::tigo_tz::{TigoClient, TigoConfig};
use tuma::providers::Outcome;
use tuma::simulator::tigo_tz::{TigoSim, SIM_BILLER_MSISDN, SIM_PASSWORD, SIM_USERNAME};
use tuma::simulator::{Chaos, SimOptions, SimulatedProvider};

const PUSH: &str = "/API/BillerPayment/BillerPay";

async fn token(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .post(format!("{base}/token"))
        .form(&[
            ("username", SIM_USERNAME),
            ("password", SIM_PASSWORD),
            ("grant_type", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert!(body["expires_in"].is_u64(), "expires_in is an integer: {body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A plain-http receiver of callbacks on the engine's route, answering as
/// Tuma does; records `(token, body)`.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/callbacks/tigo_tz/payment/{token}",
        axum::routing::post(
            move |axum::extract::Path(token): axum::extract::Path<String>, axum::Json(body): axum::Json<Value>| {
                let store = store.clone();
                async move {
                    store.lock().unwrap().push((token, body));
                    axum::Json(tuma::providers::tigo_tz::callback_ack(true).1)
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

async fn sim_with_receiver(options: SimOptions) -> (TigoSim, Arc<Mutex<Vec<(String, Value)>>>) {
    let sim = TigoSim::spawn(options).await.unwrap();
    let (base, seen) = receiver().await;
    sim.set_callback_url(&format!("{base}/callbacks/tigo_tz/payment/t0ken"));
    (sim, seen)
}

async fn push(http: &reqwest::Client, sim: &TigoSim, token: &str, msisdn: &str, reference: &str) -> reqwest::Response {
    http.post(format!("{}{PUSH}", sim.base_url()))
        .header("Authorization", format!("bearer {token}"))
        .header("Username", SIM_USERNAME)
        .header("Password", SIM_PASSWORD)
        .json(&json!({
            "CustomerMSISDN": msisdn, "BillerMSISDN": SIM_BILLER_MSISDN,
            "Amount": 1500, "Remarks": "Invoice 7", "ReferenceID": reference
        }))
        .send()
        .await
        .unwrap()
}

async fn disburse(
    http: &reqwest::Client,
    sim: &TigoSim,
    token: &str,
    msisdn: &str,
    reference: &str,
) -> reqwest::Response {
    http.post(format!("{}/disbursements", sim.base_url()))
        .header("Authorization", format!("bearer {token}"))
        .json(&json!({ "reference_id": reference, "msisdn": msisdn, "amount": 2000, "remarks": "Salary" }))
        .send()
        .await
        .unwrap()
}

async fn enquire(http: &reqwest::Client, sim: &TigoSim, token: &str, reference: &str) -> (StatusCode, Value) {
    let response = http
        .get(format!("{}/transactions/{reference}", sim.base_url()))
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// The callbacks received for `reference`, once there are `count`.
async fn callbacks_for(seen: &Arc<Mutex<Vec<(String, Value)>>>, reference: &str, count: usize) -> Vec<Value> {
    let of = |seen: &Arc<Mutex<Vec<(String, Value)>>>| -> Vec<Value> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(_, body)| body["ReferenceID"] == reference)
            .map(|(_, body)| body.clone())
            .collect()
    };
    crate::common::eventually(Duration::from_secs(5), "the Tigo callback", || async {
        of(seen).len() >= count
    })
    .await;
    of(seen)
}

#[tokio::test]
async fn the_token_is_a_password_grant_and_calls_without_a_live_token_get_401() {
    let sim = TigoSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let good = token(&http, &sim.base_url()).await;
    let url = format!("{}/token", sim.base_url());
    let wrong = http
        .post(&url)
        .form(&[
            ("username", SIM_USERNAME),
            ("password", "nope"),
            ("grant_type", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let grant = http
        .post(&url)
        .form(&[
            ("username", SIM_USERNAME),
            ("password", SIM_PASSWORD),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(grant.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");

    let anonymous = http
        .get(format!("{}/transactions/x", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.json::<Value>().await.unwrap()["Message"].is_string());
    assert_eq!(
        enquire(&http, &sim, &good, "x").await.0,
        StatusCode::NOT_FOUND,
        "the token works"
    );
    sim.expire_tokens();
    let expired = push(&http, &sim, &good, "255712345678", "r-1").await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(sim.movements().is_empty());
}

#[tokio::test]
async fn a_push_is_accepted_then_paid_and_reported_by_callback_and_status_enquiry() {
    let (sim, seen) = sim_with_receiver(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim.base_url()).await;
    let response = push(&http, &sim, &token, "255712345678", "c-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (&body["ResponseCode"], &body["ResponseStatus"], &body["ReferenceID"]),
        (&json!("BILLER-18-0000-S"), &json!(true), &json!("c-1"))
    );
    assert!(body["ResponseDescription"].is_string() && body["Message"].is_string());

    let callback = callbacks_for(&seen, "c-1", 1).await.remove(0);
    assert_eq!(callback["Status"], true);
    assert_eq!(callback["Amount"], "1500", "the callback's Amount is a string");
    let receipt = callback["MFSTransactionID"].as_str().unwrap().to_owned();
    assert!(callback["Description"].is_string());
    assert_eq!(seen.lock().unwrap()[0].0, "t0ken", "sent to the configured URL");

    let (status, enquiry) = enquire(&http, &sim, &token, "c-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            &enquiry["Status"],
            &enquiry["ResponseCode"],
            &enquiry["MFSTransactionID"]
        ),
        (&json!("SUCCESS"), &json!("BILLER-18-0000-S"), &json!(receipt))
    );
    assert_eq!(sim.movements_for("c-1").len(), 1);
    assert_eq!(sim.wallet("255712345678"), SimOptions::default().wallet - 1500);
    assert_eq!(sim.float("TZS"), SimOptions::default().float + 1500);
}

#[tokio::test]
async fn a_disbursement_pays_in_the_call_calls_back_and_refuses_its_reference_a_second_time() {
    let (sim, seen) = sim_with_receiver(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim.base_url()).await;
    let response = disburse(&http, &sim, &token, "255712345678", "p-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (&body["response_code"], &body["status"]),
        (&json!("BILLER-18-0000-S"), &json!(true))
    );
    let receipt = body["mfs_transaction_id"].as_str().unwrap().to_owned();
    let callback = callbacks_for(&seen, "p-1", 1).await.remove(0);
    assert_eq!(
        (&callback["Status"], &callback["MFSTransactionID"]),
        (&json!(true), &json!(receipt))
    );

    let again: Value = disburse(&http, &sim, &token, "255712345678", "p-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&again["response_code"], &again["status"]),
        (&json!("SIM-DUPLICATE-REFERENCE"), &json!(false))
    );
    let as_push: Value = push(&http, &sim, &token, "255712345678", "p-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        as_push["ResponseCode"], "SIM-DUPLICATE-REFERENCE",
        "one ReferenceID across both products"
    );
    assert_eq!(as_push["ResponseStatus"], false);
    assert_eq!(sim.movements_for("p-1").len(), 1);
    assert_eq!(sim.float("TZS"), SimOptions::default().float - 2000);
    let (_, enquiry) = enquire(&http, &sim, &token, "p-1").await;
    assert_eq!(
        (&enquiry["Status"], &enquiry["MFSTransactionID"]),
        (&json!("SUCCESS"), &json!(receipt))
    );
}

#[tokio::test]
async fn unregistered_numbers_and_a_short_float_are_refused_with_codes_the_status_enquiry_repeats() {
    let sim = TigoSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let token = token(&http, &sim.base_url()).await;
    let payout: Value = disburse(&http, &sim, &token, "255712345009", "p-9")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&payout["response_code"], &payout["status"]),
        (&json!("DebitMandate-10-2005-E"), &json!(false))
    );
    let collection: Value = push(&http, &sim, &token, "255712345009", "c-9")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&collection["ResponseCode"], &collection["ResponseStatus"]),
        (&json!("DebitMandate-10-2005-E"), &json!(false))
    );
    sim.set_float("TZS", 1_000);
    let short: Value = disburse(&http, &sim, &token, "255712345678", "p-2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(short["response_code"], "SIM-INSUFFICIENT-FUNDS");
    for (reference, code) in [
        ("p-9", "DebitMandate-10-2005-E"),
        ("c-9", "DebitMandate-10-2005-E"),
        ("p-2", "SIM-INSUFFICIENT-FUNDS"),
    ] {
        let (_, enquiry) = enquire(&http, &sim, &token, reference).await;
        assert_eq!(
            (&enquiry["Status"], &enquiry["ResponseCode"]),
            (&json!("FAILED"), &json!(code)),
            "{reference}"
        );
        assert!(enquiry.get("MFSTransactionID").is_none());
    }
    let (status, unknown) = enquire(&http, &sim, &token, "never-sent").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(unknown["ResponseCode"], "SIM-NOT-FOUND");
    assert!(sim.movements().is_empty());
    assert_eq!(sim.float("TZS"), 1_000);

    let wrong_biller: Value = http
        .post(format!("{}{PUSH}", sim.base_url()))
        .header("Authorization", format!("bearer {token}"))
        .header("Username", SIM_USERNAME)
        .header("Password", SIM_PASSWORD)
        .json(&json!({ "CustomerMSISDN": "255712345678", "BillerMSISDN": "255650000999", "Amount": 10, "ReferenceID": "c-x" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wrong_biller["ResponseCode"], "BILLER-18-3040-E");
}

#[tokio::test]
async fn a_timeout_after_money_answers_504_and_the_status_enquiry_tells_the_truth() {
    let (sim, seen) = sim_with_receiver(SimOptions {
        chaos: Chaos {
            timeout_after_money_permille: 1000,
            ..Chaos::default()
        },
        ..SimOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim.base_url()).await;
    let payout = disburse(&http, &sim, &token, "255712345678", "p-t").await;
    assert_eq!(payout.status(), StatusCode::GATEWAY_TIMEOUT);
    let collection = push(&http, &sim, &token, "255712345678", "c-t").await;
    assert_eq!(collection.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(sim.timeouts_after_money(), 2);
    sim.set_chaos(Chaos::default());
    for reference in ["p-t", "c-t"] {
        let (_, enquiry) = enquire(&http, &sim, &token, reference).await;
        assert_eq!(enquiry["Status"], "SUCCESS", "{reference}");
        assert_eq!(sim.movements_for(reference).len(), 1);
        assert_eq!(callbacks_for(&seen, reference, 1).await[0]["Status"], true);
    }
    let again: Value = disburse(&http, &sim, &token, "255712345678", "p-t")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["response_code"], "SIM-DUPLICATE-REFERENCE");
    assert_eq!(sim.movements_for("p-t").len(), 1);
}

#[tokio::test]
async fn a_server_error_answers_503_busy_before_anything_happens() {
    let sim = TigoSim::spawn(SimOptions {
        chaos: Chaos {
            server_error_permille: 1000,
            ..Chaos::default()
        },
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let token = token(&http, &sim.base_url()).await;
    let payout = disburse(&http, &sim, &token, "255712345678", "p-b").await;
    assert_eq!(payout.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        payout.json::<Value>().await.unwrap()["response_code"],
        "SIM-SYSTEM-BUSY"
    );
    let collection = push(&http, &sim, &token, "255712345678", "c-b").await;
    assert_eq!(collection.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        collection.json::<Value>().await.unwrap()["ResponseCode"],
        "SIM-SYSTEM-BUSY"
    );
    sim.set_chaos(Chaos::default());
    assert_eq!(enquire(&http, &sim, &token, "p-b").await.0, StatusCode::NOT_FOUND);
    assert_eq!(enquire(&http, &sim, &token, "c-b").await.0, StatusCode::NOT_FOUND);
    assert!(sim.movements().is_empty());
}

#[tokio::test]
async fn collections_follow_the_subscriber_table() {
    let (sim, seen) = sim_with_receiver(SimOptions {
        prompt_timeout: Duration::from_millis(100),
        ..SimOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let token = token(&http, &sim.base_url()).await;
    let refusals = [
        ("255712345001", "SIM-DECLINED", "FAILED"),
        ("255712345002", "SIM-WRONG-PIN", "FAILED"),
        ("255712345003", "SIM-EXPIRED", "EXPIRED"),
        ("255712345004", "SIM-INSUFFICIENT-FUNDS", "FAILED"),
    ];
    for (msisdn, code, word) in refusals {
        let reference = format!("c-{code}");
        let accepted: Value = push(&http, &sim, &token, msisdn, &reference)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            accepted["ResponseCode"], "BILLER-18-0000-S",
            "the push itself is accepted"
        );
        let callback = callbacks_for(&seen, &reference, 1).await.remove(0);
        assert_eq!(callback["Status"], false, "{msisdn}");
        assert!(callback.get("MFSTransactionID").is_none());
        let (_, enquiry) = enquire(&http, &sim, &token, &reference).await;
        assert_eq!(
            (&enquiry["Status"], &enquiry["ResponseCode"]),
            (&json!(word), &json!(code)),
            "{msisdn}"
        );
    }

    push(&http, &sim, &token, "255712345005", "c-wait").await;
    assert_eq!(enquire(&http, &sim, &token, "c-wait").await.1["Status"], "PENDING");
    sim.answer("c-wait", true).await;
    assert_eq!(callbacks_for(&seen, "c-wait", 1).await[0]["Status"], true);
    assert_eq!(enquire(&http, &sim, &token, "c-wait").await.1["Status"], "SUCCESS");
    let moved: Vec<String> = sim.movements().into_iter().map(|m| m.request_id).collect();
    assert_eq!(moved, ["c-wait"], "only the paid prompt moved money");
}

fn adapter_config(sim: &TigoSim, callback_base_url: &str) -> TigoConfig {
    TigoConfig {
        base_url: sim.base_url(),
        token_path: "/token".into(),
        push_path: PUSH.into(),
        disbursement_path: "/disbursements".into(),
        status_path: "/transactions".into(),
        username: SIM_USERNAME.into(),
        password: SIM_PASSWORD.into(),
        biller_msisdn: SIM_BILLER_MSISDN.into(),
        callback_base_url: callback_base_url.into(),
        request_timeout_ms: 5_000,
        token_refresh_margin_s: 60,
    }
}

fn request(direction: Direction, request_id: &str, msisdn: &str) -> Request {
    Request {
        direction,
        request_id: request_id.into(),
        msisdn: msisdn.into(),
        country: "TZ".into(),
        currency: "TZS".into(),
        amount: Decimal::new(2500, 0),
        reference: "Order 42".into(),
        callback_token: "unused-per-request".into(),
    }
}

async fn status(
    client: &TigoClient,
    direction: Direction,
    request_id: &str,
) -> Result<tuma::providers::adapter::Reply, CallError> {
    // The trait's status, not the client's own by-reference one.
    Adapter::status(client, direction, request_id.into(), "TZ".into(), "TZS".into()).await
}

#[tokio::test]
async fn the_adapter_pays_collects_and_reads_the_simulators_callbacks() {
    // The process's recorder, installed before the first call is counted.
    let metrics = tuma::telemetry::metrics_handle();
    let sim = TigoSim::spawn(SimOptions::default()).await.unwrap();
    let (base, seen) = receiver().await;
    let config = adapter_config(&sim, &base);
    sim.set_callback_url(&config.callback_url());
    let client = TigoClient::new(config).unwrap();

    let paid = client
        .send(request(Direction::Payout, "p-1", "255712345678"))
        .await
        .unwrap();
    assert_eq!(paid.outcome, Outcome::Succeeded, "disbursements are paid in the call");
    let receipt = paid.receipt.clone().expect("the MFSTransactionID");
    let queried = status(&client, Direction::Payout, "p-1").await.unwrap();
    assert_eq!(
        (queried.outcome, queried.receipt),
        (Outcome::Succeeded, Some(receipt.clone()))
    );
    assert!(matches!(
        client.send(request(Direction::Payout, "p-1", "255712345678")).await,
        Err(CallError::Duplicate)
    ));
    match client.send(request(Direction::Payout, "p-9", "255712345009")).await {
        Err(CallError::Rejected { code, .. }) => assert_eq!(code, "DebitMandate-10-2005-E"),
        other => panic!("an unregistered number is refused, got {other:?}"),
    }
    assert!(matches!(
        status(&client, Direction::Payout, "p-9").await.unwrap().outcome,
        Outcome::Failed { ref code, .. } if code == "DebitMandate-10-2005-E"
    ));
    assert_eq!(sim.movements_for("p-1").len(), 1);

    let prompted = client
        .send(request(Direction::Collection, "c-1", "255712345678"))
        .await
        .unwrap();
    assert_eq!(prompted.outcome, Outcome::Pending, "a push only prompts the payer");
    let callbacks = callbacks_for(&seen, "c-1", 1).await;
    let token = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(_, b)| b["ReferenceID"] == "c-1")
        .unwrap()
        .0
        .clone();
    assert_eq!(
        Some(token),
        client.app_callback_token(),
        "the URL carries the app-wide token"
    );
    assert_eq!(client.callback_kinds(), ["payment"]);
    let body = serde_json::to_vec(&callbacks[0]).unwrap();
    let report = client.parse_callback("payment", &body).unwrap();
    assert_eq!(report.request_id.as_deref(), Some("c-1"));
    assert_eq!(report.outcome, Outcome::Succeeded);
    let collected = status(&client, Direction::Collection, "c-1").await.unwrap();
    assert_eq!(collected.receipt, report.receipt);

    let declined = client
        .send(request(Direction::Collection, "c-2", "255712345001"))
        .await
        .unwrap();
    assert_eq!(declined.outcome, Outcome::Pending);
    let body = serde_json::to_vec(&callbacks_for(&seen, "c-2", 1).await[0]).unwrap();
    let report = client.parse_callback("payment", &body).unwrap();
    assert!(matches!(report.outcome, Outcome::Failed { .. }));
    assert_eq!(report.receipt, None);
    assert_eq!(
        status(&client, Direction::Collection, "never-sent")
            .await
            .unwrap()
            .outcome,
        Outcome::Pending,
        "not found is pending"
    );

    // Every call is counted and timed, like every other provider's.
    let text = metrics.render();
    for wanted in [
        r#"tuma_provider_request_seconds_count{provider="tigo_tz",operation="disbursement"}"#,
        r#"tuma_provider_request_seconds_count{provider="tigo_tz",operation="push"}"#,
        r#"tuma_provider_request_seconds_count{provider="tigo_tz",operation="status"}"#,
        r#"tuma_provider_responses_total{provider="tigo_tz",operation="disbursement",outcome="succeeded"}"#,
        r#"tuma_provider_responses_total{provider="tigo_tz",operation="disbursement",outcome="duplicate"}"#,
        r#"tuma_provider_responses_total{provider="tigo_tz",operation="disbursement",outcome="DebitMandate-10-2005-E"}"#,
        r#"tuma_provider_responses_total{provider="tigo_tz",operation="push",outcome="pending"}"#,
    ] {
        assert!(text.contains(wanted), "{wanted} missing from the metrics:\n{text}");
    }
}

#[tokio::test]
async fn the_adapter_refreshes_a_refused_token_and_classifies_chaos() {
    let sim = TigoSim::spawn(SimOptions::default()).await.unwrap();
    let client = TigoClient::new(adapter_config(&sim, "http://127.0.0.1:9")).unwrap();
    assert_eq!(
        status(&client, Direction::Payout, "x").await.unwrap().outcome,
        Outcome::Pending
    );
    sim.expire_tokens();
    let paid = client
        .send(request(Direction::Payout, "p-r", "255712345678"))
        .await
        .unwrap();
    assert_eq!(
        paid.outcome,
        Outcome::Succeeded,
        "a 401 refreshes the token and retries once"
    );

    sim.set_chaos(Chaos {
        timeout_after_money_permille: 1000,
        ..Chaos::default()
    });
    assert!(matches!(
        client.send(request(Direction::Payout, "p-t", "255712345678")).await,
        Err(CallError::Ambiguous(_))
    ));
    sim.set_chaos(Chaos {
        server_error_permille: 1000,
        ..Chaos::default()
    });
    assert!(matches!(
        client.send(request(Direction::Payout, "p-b", "255712345678")).await,
        Err(CallError::Busy(_))
    ));
    assert!(matches!(
        status(&client, Direction::Payout, "p-t").await,
        Err(CallError::Busy(_))
    ));
    sim.set_chaos(Chaos::default());
    assert_eq!(
        status(&client, Direction::Payout, "p-t").await.unwrap().outcome,
        Outcome::Succeeded
    );
    assert!(matches!(
        client.send(request(Direction::Payout, "p-t", "255712345678")).await,
        Err(CallError::Duplicate)
    ));
    assert_eq!(sim.movements_for("p-t").len(), 1, "paid once");
    assert!(sim.movements_for("p-b").is_empty());

    let wrong = TigoClient::new(TigoConfig {
        password: "wrong".into(),
        ..adapter_config(&sim, "http://127.0.0.1:9")
    })
    .unwrap();
    assert!(matches!(
        wrong.send(request(Direction::Payout, "p-w", "255712345678")).await,
        Err(CallError::Config(_))
    ));
}

#[tokio::test]
async fn the_built_in_configuration_reads_and_configure_points_it_at_the_simulator() {
    let mut config = crate::common::config_with("");
    let built_in = config.tigo_tz.clone().expect("[tigo_tz] in config/default.toml");
    assert_eq!(built_in.base_url, "http://127.0.0.1:9094");
    let sim = TigoSim::spawn(SimOptions::default()).await.unwrap();
    let (base, seen) = receiver().await;
    sim.configure(&mut config, &base);
    let configured = config.tigo_tz.clone().unwrap();
    assert_eq!(configured.base_url, sim.base_url());
    let client = TigoClient::new(configured).unwrap();
    client
        .send(request(Direction::Collection, "c-cfg", "255712345678"))
        .await
        .unwrap();
    let delivered = callbacks_for(&seen, "c-cfg", 1).await;
    assert_eq!(delivered[0]["Status"], true);
}
