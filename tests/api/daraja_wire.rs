//! The simulator's wire format, pinned by raw HTTP exactly as Daraja
//! documents it (paths, headers, bodies), independently of Tuma's adapter.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tuma::simulator::mpesa::{SimConfig, SimHandle};

async fn token(http: &reqwest::Client, base: &str) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode("tuma-sim-key:tuma-sim-secret");
    let response = http
        .get(format!("{base}/oauth/v1/generate?grant_type=client_credentials"))
        .header("Authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], "3599", "Daraja sends expires_in as a string");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A plain-http receiver recording callback bodies.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                axum::Json(json!({ "ResultCode": 0, "ResultDesc": "Accepted" }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn oauth_answers_like_daraja_for_good_and_bad_credentials() {
    let sim = SimHandle::spawn(SimConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    token(&http, &sim.base_url).await;
    let bad = http
        .get(format!(
            "{}/oauth/v1/generate?grant_type=client_credentials",
            sim.base_url
        ))
        .basic_auth("tuma-sim-key", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let no_token = http
        .post(format!("{}/mpesa/stkpush/v1/processrequest", sim.base_url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::NOT_FOUND);
    let body: Value = no_token.json().await.unwrap();
    assert_eq!(
        (body["errorCode"].as_str(), body["errorMessage"].as_str()),
        (Some("404.001.03"), Some("Invalid Access Token"))
    );
}

#[tokio::test]
async fn stk_push_verifies_the_password_answers_with_string_codes_and_calls_back() {
    let sim = SimHandle::spawn(SimConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let token = token(&http, &sim.base_url).await;
    let (callback_url, seen) = receiver().await;
    let timestamp = "20261123153000";
    let password = base64::engine::general_purpose::STANDARD.encode(format!("174379tuma-sim-passkey{timestamp}"));
    let mut body = json!({
        "BusinessShortCode": "174379", "Password": password, "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline", "Amount": 1, "PartyA": "254708374149",
        "PartyB": "174379", "PhoneNumber": "254708374149", "CallBackURL": callback_url,
        "AccountReference": "Test", "TransactionDesc": "Test"
    });
    let url = format!("{}/mpesa/stkpush/v1/processrequest", sim.base_url);
    let accepted: Value = http
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["ResponseCode"], "0", "ResponseCode is the string \"0\"");
    let checkout = accepted["CheckoutRequestID"].as_str().unwrap().to_owned();
    assert!(checkout.starts_with("ws_CO_"));
    assert!(accepted["MerchantRequestID"].is_string());

    body["Password"] = json!("d3JvbmcK");
    let refused = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(refused.json::<Value>().await.unwrap()["errorCode"], "500.001.1001");

    let query = json!({ "BusinessShortCode": "174379", "Password": password, "Timestamp": timestamp, "CheckoutRequestID": checkout });
    let answer: Value = http
        .post(format!("{}/mpesa/stkpushquery/v1/query", sim.base_url))
        .bearer_auth(&token)
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["ResultCode"], "0", "the query's ResultCode is a string");

    crate::common::eventually(std::time::Duration::from_secs(5), "the STK callback", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let callback = seen.lock().unwrap()[0].clone();
    let stk = &callback["Body"]["stkCallback"];
    assert_eq!(stk["CheckoutRequestID"], checkout.as_str());
    assert_eq!(stk["ResultCode"], 0, "the callback's ResultCode is a number");
    let items = stk["CallbackMetadata"]["Item"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["Name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Amount",
            "MpesaReceiptNumber",
            "Balance",
            "TransactionDate",
            "PhoneNumber"
        ]
    );
}

#[tokio::test]
async fn b2c_is_served_on_v1_and_v3_and_refuses_a_repeated_originator_id() {
    let sim = SimHandle::spawn(SimConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let token = token(&http, &sim.base_url).await;
    let (callback_url, seen) = receiver().await;
    let credential = tuma::providers::mpesa::client::security_credential(
        tuma::providers::mpesa::SIMULATOR_CERTIFICATE,
        "Tuma#Sim2026",
    )
    .unwrap();
    let mut body = json!({
        "InitiatorName": "tuma-initiator", "SecurityCredential": credential, "CommandID": "BusinessPayment",
        "Amount": 100, "PartyA": "600000", "PartyB": "254708374149", "Remarks": "Test remarks",
        "QueueTimeOutURL": callback_url, "ResultURL": callback_url, "Occassion": ""
    });
    let v1: Value = http
        .post(format!("{}/mpesa/b2c/v1/paymentrequest", sim.base_url))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["ResponseCode"], "0");
    assert!(v1["ConversationID"].as_str().unwrap().starts_with("AG_"));
    assert!(
        v1["OriginatorConversationID"].is_string(),
        "v1 makes its own originator id"
    );

    body["OriginatorConversationID"] = json!("tuma-test-1");
    let url = format!("{}/mpesa/b2c/v3/paymentrequest", sim.base_url);
    let v3: Value = http
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v3["ResponseCode"].as_str(), v3["OriginatorConversationID"].as_str()),
        (Some("0"), Some("tuma-test-1"))
    );
    let again = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(again.json::<Value>().await.unwrap()["errorCode"], "500.002.1001");
    assert_eq!(sim.payments_for("tuma-test-1").len(), 1);

    crate::common::eventually(std::time::Duration::from_secs(5), "two B2C results", || async {
        seen.lock().unwrap().len() == 2
    })
    .await;
    let result = seen.lock().unwrap()[1]["Result"].clone();
    assert_eq!(result["ResultCode"], 0);
    let keys: Vec<&str> = result["ResultParameters"]["ResultParameter"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"TransactionReceipt") && keys.contains(&"TransactionAmount"),
        "{keys:?}"
    );
}
