//! The Airtel simulator's wire format, pinned by raw HTTP exactly as Airtel
//! documents it (paths, headers, bodies, codes), independently of Tuma's
//! adapter; then the adapter itself against the simulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::Mac;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tuma::providers::adapter::{Adapter, CallError, Direction, Request};
use tuma::providers::airtel::AirtelClient;
use tuma::providers::Outcome;
use tuma::simulator::airtel::{AirtelSim, CALLBACK_HASH_KEY};
use tuma::simulator::{Chaos, SimOptions, SimulatedProvider};

const PATIENCE: Duration = Duration::from_secs(5);

async fn token(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .post(format!("{base}/auth/oauth2/token"))
        .json(&json!({
            "client_id": "tuma-sim-airtel-client",
            "client_secret": "tuma-sim-airtel-secret",
            "grant_type": "client_credentials",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["expires_in"].is_string(), "expires_in is a string, as in UAT");
    assert_eq!(body["token_type"], "bearer");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The disbursement PIN encrypted as the portal instructs: RSA PKCS#1 v1.5
/// with the app's public key (base64 DER), base64.
fn encrypted_pin(pin: &str) -> String {
    use rsa::pkcs8::DecodePublicKey;
    let der = base64::engine::general_purpose::STANDARD
        .decode(tuma::providers::airtel::SIMULATOR_PUBLIC_KEY)
        .unwrap();
    let key = rsa::RsaPublicKey::from_public_key_der(&der).unwrap();
    let encrypted = key
        .encrypt(&mut rsa::rand_core::OsRng, rsa::Pkcs1v15Encrypt, pin.as_bytes())
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(encrypted)
}

fn disbursement(id: &str, msisdn: &str, amount: u64) -> Value {
    json!({
        "payee": { "msisdn": msisdn },
        "reference": "Salary0001",
        "pin": encrypted_pin("1357"),
        "transaction": { "amount": amount, "id": id },
    })
}

fn push(id: &str, msisdn: &str, amount: u64) -> Value {
    json!({
        "reference": "Invoice0001",
        "subscriber": { "country": "UG", "currency": "UGX", "msisdn": msisdn },
        "transaction": { "amount": amount, "country": "UG", "currency": "UGX", "id": id },
    })
}

/// Sends `body` (or a GET without one) in the Ugandan market.
async fn call(http: &reqwest::Client, token: &str, url: String, body: Option<&Value>) -> (StatusCode, Value) {
    let request = match body {
        Some(body) => http.post(url).json(body),
        None => http.get(url),
    };
    let response = request
        .bearer_auth(token)
        .header("X-Country", "UG")
        .header("X-Currency", "UGX")
        .header("Accept", "*/*")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A plain-http receiver recording callback bodies as received, on the
/// path Tuma serves (`/callbacks/airtel/payment/{token}`).
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/callbacks/airtel/payment/{token}",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                axum::Json(json!({ "status": "accepted" }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

/// A simulator whose portal sends callbacks to a fresh receiver.
async fn sim_with_receiver(options: SimOptions) -> (AirtelSim, Arc<Mutex<Vec<String>>>) {
    let sim = AirtelSim::spawn(options).await.unwrap();
    let (base, seen) = receiver().await;
    sim.set_callback_url(&format!("{base}/callbacks/airtel/payment/test-token"));
    (sim, seen)
}

async fn callback_for(seen: &Arc<Mutex<Vec<String>>>, id: &str) -> String {
    let find = || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|body| serde_json::from_str::<Value>(body).unwrap()["transaction"]["id"] == id)
            .cloned()
    };
    crate::common::eventually(PATIENCE, "the callback", || async { find().is_some() }).await;
    find().unwrap()
}

/// The exact text of the callback's `transaction` object, as sent.
fn transaction_text(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        transaction: &'a serde_json::value::RawValue,
    }
    serde_json::from_str::<Raw<'_>>(body)
        .unwrap()
        .transaction
        .get()
        .to_owned()
}

#[tokio::test]
async fn oauth_issues_tokens_and_refuses_bad_credentials_and_bad_or_expired_tokens() {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let good = token(&http, &base).await;
    let bad = http
        .post(format!("{base}/auth/oauth2/token"))
        .json(&json!({ "client_id": "tuma-sim-airtel-client", "client_secret": "wrong", "grant_type": "client_credentials" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_client");

    let url = format!("{base}/standard/v1/disbursements/nobody");
    let (status, body) = call(&http, "not-a-token", url.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(call(&http, &good, url.clone(), None).await.0, StatusCode::OK);
    sim.expire_tokens();
    assert_eq!(call(&http, &good, url, None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_disbursement_pays_in_the_call_calls_back_signed_and_its_enquiry_says_ts() {
    let (sim, seen) = sim_with_receiver(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    let float = sim.float("UGX");
    let body = disbursement("payout-1", "752604392", 5000);
    let (status, answer) = call(&http, &token, format!("{base}/standard/v1/disbursements/"), Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"]["response_code"], "DP00900001001");
    assert_eq!(answer["status"]["result_code"], "ESB000010");
    assert_eq!(
        (answer["status"]["code"].as_str(), answer["status"]["success"].as_bool()),
        (Some("200"), Some(true))
    );
    let transaction = &answer["data"]["transaction"];
    assert_eq!(
        (transaction["id"].as_str(), transaction["status"].as_str()),
        (Some("payout-1"), Some("TS"))
    );
    let receipt = transaction["airtel_money_id"].as_str().unwrap().to_owned();
    assert!(transaction["reference_id"].is_string());
    assert_eq!(sim.float("UGX"), float - 5000);
    assert_eq!(sim.wallet("256752604392"), SimOptions::default().wallet + 5000);
    assert_eq!(sim.movements_for("payout-1").len(), 1);

    let (_, enquiry) = call(
        &http,
        &token,
        format!("{base}/standard/v1/disbursements/payout-1"),
        None,
    )
    .await;
    assert_eq!(enquiry["data"]["transaction"]["status"], "TS");
    assert_eq!(enquiry["data"]["transaction"]["airtel_money_id"], receipt.as_str());
    assert_eq!(enquiry["status"]["response_code"], "DP00900001001");

    let callback = callback_for(&seen, "payout-1").await;
    let parsed: Value = serde_json::from_str(&callback).unwrap();
    assert_eq!(parsed["transaction"]["status_code"], "TS");
    assert_eq!(parsed["transaction"]["airtel_money_id"], receipt.as_str());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(CALLBACK_HASH_KEY.as_bytes()).unwrap();
    mac.update(transaction_text(&callback).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(
        parsed["hash"],
        expected.as_str(),
        "hash = base64(HMAC-SHA256(key, transaction text))"
    );
}

#[tokio::test]
async fn a_repeated_transaction_id_is_refused_as_a_duplicate_and_never_moves_money_twice() {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    let url = format!("{base}/standard/v1/disbursements/");
    let body = disbursement("payout-dup", "752604392", 700);
    assert_eq!(
        call(&http, &token, url.clone(), Some(&body)).await.1["status"]["response_code"],
        "DP00900001001"
    );
    let (status, again) = call(&http, &token, url, Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["status"]["response_code"], "DP00900001017");
    assert_eq!(again["status"]["result_code"], "ESB000041");
    assert_eq!(again["status"]["success"], false);
    assert_eq!(sim.movements_for("payout-dup").len(), 1);

    let collect = push("collect-dup", "752604005", 700);
    let url = format!("{base}/merchant/v1/payments/");
    assert_eq!(
        call(&http, &token, url.clone(), Some(&collect)).await.1["status"]["response_code"],
        "DP00800001006"
    );
    let (_, again) = call(&http, &token, url, Some(&collect)).await;
    assert_eq!(again["status"]["result_code"], "ESB000041");
}

#[tokio::test]
async fn a_wrong_or_undecryptable_pin_is_refused_by_the_router_before_anything_moves() {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    let url = format!("{base}/standard/v1/disbursements/");
    let mut body = disbursement("payout-pin", "752604392", 700);
    body["pin"] = json!(encrypted_pin("0000"));
    let (status, answer) = call(&http, &token, url.clone(), Some(&body)).await;
    assert_eq!(
        (status, answer["status_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ROUTER115"))
    );
    body["pin"] = json!("1357");
    let (status, answer) = call(&http, &token, url, Some(&body)).await;
    assert_eq!(
        (status, answer["status_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ROUTER114"))
    );
    assert!(sim.movements().is_empty());
}

#[tokio::test]
async fn an_unregistered_payee_and_a_low_float_are_refused_with_airtels_codes() {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    let url = format!("{base}/standard/v1/disbursements/");
    let (status, unregistered) = call(
        &http,
        &token,
        url.clone(),
        Some(&disbursement("p-009", "752604009", 700)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unregistered["status"]["response_code"], "DP00900001012");
    assert_eq!(unregistered["status"]["success"], false);
    assert_eq!(unregistered["data"]["transaction"]["status"], "TF");
    assert_eq!(
        unregistered["data"]["transaction"]["id"], false,
        "Airtel sends id: false here"
    );

    sim.set_float("UGX", 100);
    let (_, broke) = call(&http, &token, url, Some(&disbursement("p-float", "752604392", 700))).await;
    assert_eq!(broke["status"]["response_code"], "DP00900001007");
    assert_eq!(sim.float("UGX"), 100);

    let (_, refused) = call(
        &http,
        &token,
        format!("{base}/merchant/v1/payments/"),
        Some(&push("c-009", "752604009", 700)),
    )
    .await;
    assert_eq!(refused["status"]["response_code"], "DP00800001010");
    assert!(sim.movements().is_empty());
}

#[tokio::test]
async fn a_ussd_push_is_in_process_then_paid_called_back_and_enquired_as_ts() {
    let (sim, seen) = sim_with_receiver(SimOptions::default()).await;
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    let float = sim.float("UGX");
    let (status, answer) = call(
        &http,
        &token,
        format!("{base}/merchant/v1/payments/"),
        Some(&push("collect-1", "752604392", 2500)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"]["response_code"], "DP00800001006");
    assert_eq!(
        answer["data"]["transaction"]["status"], "SUCCESS",
        "the prompt was sent"
    );
    assert_eq!(answer["data"]["transaction"]["id"], "collect-1");

    let callback: Value = serde_json::from_str(&callback_for(&seen, "collect-1").await).unwrap();
    assert_eq!(callback["transaction"]["status_code"], "TS");
    let receipt = callback["transaction"]["airtel_money_id"].as_str().unwrap().to_owned();
    assert!(callback["hash"].is_string());
    let (_, enquiry) = call(&http, &token, format!("{base}/standard/v1/payments/collect-1"), None).await;
    assert_eq!(enquiry["data"]["transaction"]["status"], "TS");
    assert_eq!(
        enquiry["status"]["response_code"], "DP00800001006",
        "a paid collection's enquiry carries the in-process code; the status says paid"
    );
    assert_eq!(enquiry["data"]["transaction"]["airtel_money_id"], receipt.as_str());
    assert_eq!(sim.float("UGX"), float + 2500);
    assert_eq!(sim.wallet("256752604392"), SimOptions::default().wallet - 2500);
}

#[tokio::test]
async fn collections_follow_the_subscriber_table() {
    let options = SimOptions {
        prompt_timeout: Duration::from_millis(100),
        ..SimOptions::default()
    };
    let (sim, seen) = sim_with_receiver(options).await;
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    let url = format!("{base}/merchant/v1/payments/");
    for (id, msisdn) in [
        ("c-001", "752604001"),
        ("c-002", "752604002"),
        ("c-003", "752604003"),
        ("c-004", "752604004"),
        ("c-005", "752604005"),
    ] {
        call(&http, &token, url.clone(), Some(&push(id, msisdn, 1000))).await;
    }
    let enquire = |id: &str| call(&http, &token, format!("{base}/standard/v1/payments/{id}"), None);
    for (id, code) in [
        ("c-001", "DP00800001008"),
        ("c-002", "DP00800001002"),
        ("c-004", "DP00800001007"),
    ] {
        let callback: Value = serde_json::from_str(&callback_for(&seen, id).await).unwrap();
        assert_eq!(callback["transaction"]["status_code"], "TF", "{id}");
        let (_, enquiry) = enquire(id).await;
        assert_eq!(
            (
                enquiry["data"]["transaction"]["status"].as_str(),
                enquiry["status"]["response_code"].as_str()
            ),
            (Some("TF"), Some(code))
        );
    }
    callback_for(&seen, "c-003").await;
    let (_, expired) = enquire("c-003").await;
    assert_eq!(expired["data"]["transaction"]["status"], "TE", "the prompt expired");

    let (_, waiting) = enquire("c-005").await;
    assert_eq!(waiting["data"]["transaction"]["status"], "TIP");
    sim.answer("c-005", true).await;
    let (_, paid) = enquire("c-005").await;
    assert_eq!(paid["data"]["transaction"]["status"], "TS");
    assert_eq!(sim.movements().len(), 1, "only the answered prompt moved money");
}

#[tokio::test]
async fn market_headers_and_the_body_market_are_checked() {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    let url = format!("{base}/merchant/v1/payments/");
    let with = |country: &str, currency: &str| {
        let mut request = http
            .post(&url)
            .bearer_auth(&token)
            .json(&push("c-market", "752604392", 1000));
        if !country.is_empty() {
            request = request.header("X-Country", country);
        }
        if !currency.is_empty() {
            request = request.header("X-Currency", currency);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    for (country, currency, code) in [
        ("ZZ", "UGX", "ROUTER006"),
        ("KE", "UGX", "ROUTER112"),
        ("UG", "", "ROUTER119"),
        ("", "UGX", "ROUTER003"),
    ] {
        let (status, body) = with(country, currency).await;
        assert_eq!(
            (status, body["status_code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code))
        );
    }
    let mut kenyan = push("c-market", "752604392", 1000);
    kenyan["transaction"]["country"] = json!("KE");
    let (_, body) = call(&http, &token, url.clone(), Some(&kenyan)).await;
    assert_eq!(body["status"]["result_code"], "ESB000034");
    kenyan["transaction"]["country"] = json!("UG");
    kenyan["transaction"]["currency"] = json!("KES");
    let (_, body) = call(&http, &token, url, Some(&kenyan)).await;
    assert_eq!(body["status"]["result_code"], "ESB000035");
}

#[tokio::test]
async fn a_timeout_after_money_is_recorded_and_the_enquiry_tells_the_truth() {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    sim.set_chaos(Chaos {
        timeout_after_money_permille: 1000,
        ..Chaos::default()
    });
    let url = format!("{base}/standard/v1/disbursements/");
    let body = disbursement("payout-timeout", "752604392", 900);
    let (status, answer) = call(&http, &token, url.clone(), Some(&body)).await;
    assert!(
        status == StatusCode::GATEWAY_TIMEOUT || answer["status"]["response_code"] == "DP00900001014",
        "a timeout: {status} {answer}"
    );
    assert_eq!(sim.timeouts_after_money(), 1);
    sim.set_chaos(Chaos::default());
    let (_, enquiry) = call(
        &http,
        &token,
        format!("{base}/standard/v1/disbursements/payout-timeout"),
        None,
    )
    .await;
    assert_eq!(enquiry["data"]["transaction"]["status"], "TS", "the money moved");
    let (_, again) = call(&http, &token, url, Some(&body)).await;
    assert_eq!(again["status"]["response_code"], "DP00900001017");
    assert_eq!(sim.movements_for("payout-timeout").len(), 1);
}

#[tokio::test]
async fn a_server_error_comes_before_anything_happens() {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let token = token(&http, &base).await;
    sim.set_chaos(Chaos {
        server_error_permille: 1000,
        ..Chaos::default()
    });
    let body = disbursement("payout-503", "752604392", 900);
    let (status, _) = call(&http, &token, format!("{base}/standard/v1/disbursements/"), Some(&body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    sim.set_chaos(Chaos::default());
    let (_, enquiry) = call(
        &http,
        &token,
        format!("{base}/standard/v1/disbursements/payout-503"),
        None,
    )
    .await;
    assert_eq!(enquiry["status"]["response_code"], "DP00900001015", "never recorded");
    assert_eq!(enquiry["status"]["result_code"], "ESB000045");
    assert!(sim.movements().is_empty());
}

fn request(direction: Direction, id: &str, msisdn: &str) -> Request {
    Request {
        direction,
        request_id: id.to_owned(),
        msisdn: msisdn.to_owned(),
        country: "UG".into(),
        currency: "UGX".into(),
        amount: rust_decimal::Decimal::from(5000),
        reference: "Tuma test".into(),
        callback_token: "unused-by-airtel".into(),
    }
}

/// A simulator configured into Tuma's configuration, its callbacks going to
/// a receiver on Tuma's callback path, and the adapter built from it.
async fn adapter_and_sim() -> (AirtelClient, AirtelSim, Arc<Mutex<Vec<String>>>) {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let (base, seen) = receiver().await;
    let mut config = crate::common::config_with("");
    sim.configure(&mut config, &base);
    let client = AirtelClient::new(config.airtel.clone().expect("configured")).unwrap();
    (client, sim, seen)
}

#[tokio::test]
async fn the_adapter_pays_out_enquires_and_refuses_duplicates_against_the_simulator() {
    let (client, sim, _) = adapter_and_sim().await;
    let paid = client
        .send(request(Direction::Payout, "adapter-p1", "256752604392"))
        .await
        .unwrap();
    assert_eq!(paid.outcome, Outcome::Succeeded, "Airtel disburses in the call");
    let receipt = paid.receipt.clone().expect("airtel_money_id");
    let status = client
        .status(Direction::Payout, "adapter-p1".into(), "UG".into(), "UGX".into())
        .await
        .unwrap();
    assert_eq!((status.outcome, status.receipt), (Outcome::Succeeded, Some(receipt)));
    let again = client
        .send(request(Direction::Payout, "adapter-p1", "256752604392"))
        .await;
    assert!(matches!(again, Err(CallError::Duplicate)), "{again:?}");
    assert_eq!(sim.movements_for("adapter-p1").len(), 1);

    let unregistered = client
        .send(request(Direction::Payout, "adapter-p9", "256752604009"))
        .await
        .unwrap();
    assert!(matches!(unregistered.outcome, Outcome::Failed { ref code, .. } if code == "DP00900001012"));
    let unknown = client
        .status(Direction::Payout, "never-sent".into(), "UG".into(), "UGX".into())
        .await
        .unwrap();
    assert_eq!(unknown.outcome, Outcome::Pending, "not found is pending, not failed");

    sim.expire_tokens();
    let after_expiry = client
        .send(request(Direction::Payout, "adapter-p2", "256752604392"))
        .await;
    assert_eq!(
        after_expiry.unwrap().outcome,
        Outcome::Succeeded,
        "a refused token is refreshed once"
    );

    sim.set_chaos(Chaos {
        timeout_after_money_permille: 1000,
        ..Chaos::default()
    });
    let timed_out = client
        .send(request(Direction::Payout, "adapter-p3", "256752604392"))
        .await;
    assert!(matches!(timed_out, Err(CallError::Ambiguous(_))), "{timed_out:?}");
    sim.set_chaos(Chaos::default());
    let truth = client
        .status(Direction::Payout, "adapter-p3".into(), "UG".into(), "UGX".into())
        .await
        .unwrap();
    assert_eq!(truth.outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn the_adapter_collects_and_reads_the_simulators_signed_callback() {
    let (client, sim, seen) = adapter_and_sim().await;
    let token = client.app_callback_token().expect("an app-wide token");
    let pushed = client
        .send(request(Direction::Collection, "adapter-c1", "256752604392"))
        .await
        .unwrap();
    assert_eq!(pushed.outcome, Outcome::Pending, "the prompt is in process");
    let body = callback_for(&seen, "adapter-c1").await;
    assert_eq!(client.callback_kinds(), ["payment"]);
    let report = client.parse_callback("payment", body.as_bytes()).unwrap();
    assert_eq!(report.request_id.as_deref(), Some("adapter-c1"));
    assert_eq!(report.outcome, Outcome::Succeeded);
    let receipt = report.receipt.clone().expect("airtel_money_id");
    assert!(report.dedupe_key.contains("TS"));
    let status = client
        .status(Direction::Collection, "adapter-c1".into(), "UG".into(), "UGX".into())
        .await
        .unwrap();
    assert_eq!((status.outcome, status.receipt), (Outcome::Succeeded, Some(receipt)));
    let forged = body.replace("\"TS\"", "\"TF\"");
    assert!(
        client.parse_callback("payment", forged.as_bytes()).is_err(),
        "the hash no longer verifies"
    );
    assert!(
        client
            .portal_callback_url()
            .ends_with(&format!("/callbacks/airtel/payment/{token}")),
        "the portal URL carries the app-wide token"
    );

    let declined = client
        .send(request(Direction::Collection, "adapter-c2", "256752604001"))
        .await
        .unwrap();
    assert_eq!(declined.outcome, Outcome::Pending);
    let report = client
        .parse_callback("payment", callback_for(&seen, "adapter-c2").await.as_bytes())
        .unwrap();
    assert!(matches!(report.outcome, Outcome::Failed { .. }));
    assert_eq!(sim.movements_for("adapter-c2").len(), 0);
}

#[tokio::test]
async fn the_adapter_treats_a_wrong_pin_as_a_configuration_problem_never_a_failure() {
    let sim = AirtelSim::spawn(SimOptions::default()).await.unwrap();
    let mut config = crate::common::config_with("");
    sim.configure(&mut config, "http://127.0.0.1:9");
    let mut airtel = config.airtel.expect("configured");
    airtel.disbursement_pin = secrecy::SecretString::from("0000");
    let client = AirtelClient::new(airtel).unwrap();
    let refused = client
        .send(request(Direction::Payout, "adapter-pin", "256752604392"))
        .await;
    assert!(
        matches!(refused, Err(CallError::Config(ref m)) if m.contains("ROUTER115")),
        "{refused:?}"
    );
    assert!(sim.movements().is_empty());
}
