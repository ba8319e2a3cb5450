//! Every kind of bad input gets the right status, problem type and field
//! code, and writes nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::app::{payout_body, spawn_app, TestApp};

async fn assert_refused(
    app: &TestApp,
    body: &Value,
    status: StatusCode,
    problem_type: &str,
    field: Option<(&str, &str)>,
) {
    let response = app
        .create("/v1/payouts", &app.key, &uuid::Uuid::new_v4().to_string(), body)
        .await;
    assert_eq!(response.status(), status, "{body}");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], format!("urn:tuma:problem:{problem_type}"), "{problem}");
    assert_eq!(problem["status"], status.as_u16());
    assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()));
    if let Some((field, code)) = field {
        let found = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == field && e["code"] == code);
        assert!(found, "expected {field}: {code} in {problem}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM intents").await,
        0,
        "a refused request wrote an intent"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM idempotency_keys").await,
        0,
        "a refused request used up its key"
    );
}

fn with(field: &str, value: Value) -> Value {
    let mut body = payout_body("1500", "0712345678");
    let mut target = &mut body;
    let parts: Vec<&str> = field.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        target = &mut target[*part];
    }
    target[parts[parts.len() - 1]] = value;
    body
}

#[tokio::test]
async fn bad_fields_are_refused_with_the_field_and_a_stable_code() {
    let app = spawn_app().await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases = [
        (
            with("recipient.msisdn", json!("0712 34")),
            "recipient.msisdn",
            "invalid_phone_number",
        ),
        (
            with("recipient.msisdn", json!("020 123 4567")),
            "recipient.msisdn",
            "invalid_phone_number",
        ),
        (
            with("recipient.msisdn", json!("+256772123456")),
            "recipient.msisdn",
            "wrong_country",
        ),
        (with("currency", json!("EUR")), "currency", "unsupported_currency"),
        (with("currency", json!("USD")), "currency", "unsupported_currency"),
        (with("amount", json!("0")), "amount", "amount_not_positive"),
        (with("amount", json!("-5")), "amount", "amount_not_positive"),
        (with("amount", json!("10.005")), "amount", "too_many_decimals"),
        (with("amount", json!("100.50")), "amount", "too_many_decimals"),
        (with("amount", json!("1e3")), "amount", "invalid_amount"),
        (with("amount", json!("5")), "amount", "amount_out_of_range"),
        (with("amount", json!("250001")), "amount", "amount_out_of_range"),
        (
            with("recipient.provider", json!("paypal")),
            "recipient.provider",
            "unknown_provider",
        ),
        (
            with("recipient.provider", json!("mtn")),
            "recipient.provider",
            "currency_not_served",
        ),
        (with("party_id", json!("creator 42")), "party_id", "invalid_party_id"),
        (with("reference", json!("")), "reference", "invalid_reference"),
        (with("metadata", json!([1, 2])), "metadata", "invalid_type"),
        (
            with("metadata", json!({ "blob": "x".repeat(5000) })),
            "metadata",
            "metadata_too_large",
        ),
        (with("amount", json!(1500)), "amount", "invalid_type"),
        (with("surprise", json!(true)), "surprise", "unknown_field"),
        (
            with("recipient.name", json!("Amina")),
            "recipient.name",
            "unknown_field",
        ),
    ];
    for (body, field, code) in cases {
        assert_refused(&app, &body, unprocessable, "invalid-request", Some((field, code))).await;
    }
    let mut missing = payout_body("1500", "0712345678");
    missing.as_object_mut().unwrap().remove("party_id");
    assert_refused(
        &app,
        &missing,
        unprocessable,
        "invalid-request",
        Some(("party_id", "missing_field")),
    )
    .await;
}

#[tokio::test]
async fn several_bad_fields_are_reported_together() {
    let app = spawn_app().await;
    let body = json!({
        "amount": "12.345", "currency": "KES", "recipient": { "msisdn": "12" },
        "party_id": "", "reference": "ok"
    });
    let problem: Value = app
        .create("/v1/payouts", &app.key, "k", &body)
        .await
        .json()
        .await
        .unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["amount", "recipient.msisdn", "party_id"]);
}

#[tokio::test]
async fn malformed_oversized_and_non_json_bodies_are_refused() {
    let app = spawn_app().await;
    let send = |body: Vec<u8>, content_type: &'static str| {
        app.http
            .post(app.url("/v1/payouts"))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let broken = send(b"{\"amount\": \"15".to_vec(), "application/json").await.unwrap();
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        broken.json::<Value>().await.unwrap()["type"],
        "urn:tuma:problem:malformed-json"
    );

    let not_object = send(b"[1,2,3]".to_vec(), "application/json").await.unwrap();
    assert_eq!(not_object.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let huge = json!({ "reference": "x".repeat(70_000) });
    let too_large = send(serde_json::to_vec(&huge).unwrap(), "application/json")
        .await
        .unwrap();
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_large.json::<Value>().await.unwrap()["type"],
        "urn:tuma:problem:body-too-large"
    );

    let form = send(b"amount=15".to_vec(), "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        form.json::<Value>().await.unwrap()["type"],
        "urn:tuma:problem:unsupported-media-type"
    );
    assert_eq!(app.count("SELECT count(*) FROM intents").await, 0);
}

#[tokio::test]
async fn nul_characters_anywhere_are_refused_as_invalid_not_a_server_error() {
    let app = spawn_app().await;
    let mut body = payout_body("1500", "0712345678");
    body["metadata"] = serde_json::json!({ "note": "a\u{0}b" });
    let response = app.create("/v1/payouts", &app.key, "nul-1", &body).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "metadata.note");
    for path in [
        "/v1/parties/a%00b/balances",
        "/v1/payouts?state=%00",
        "/v1/payouts?party_id=x%1Fy",
    ] {
        let response = app.get(path, &app.admin_key).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
    }
    assert_eq!(app.count("SELECT count(*) FROM intents").await, 0);
}
