//! Outbound webhooks: signed with the documented recipe, retried after a
//! receiver's failure, every attempt recorded.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::app::{payout_body, spawn_app, spawn_app_holding_payouts, spawn_app_with, TestApp};

#[derive(Default)]
struct Received {
    answers: Vec<StatusCode>,
    deliveries: Vec<(HeaderMap, Bytes)>,
}

/// A receiver that answers with `answers` in order, then 200.
async fn receiver(answers: Vec<StatusCode>) -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received {
        answers,
        deliveries: Vec::new(),
    }));
    let state = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let mut state = state.lock().unwrap();
                state.deliveries.push((headers, body));
                if state.answers.is_empty() {
                    StatusCode::OK
                } else {
                    state.answers.remove(0)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Registers an endpoint with `body` under `key`.
async fn register(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A payout of 1,500 KES created under idempotency key `key`: its view.
async fn payout(app: &TestApp, key: &str) -> Value {
    app.create("/v1/payouts", &app.key, key, &payout_body("1500", "0712345678"))
        .await
        .json()
        .await
        .unwrap()
}

/// The README's verification recipe, written as a receiver would.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let Ok(signature) = hex::decode(signature) else {
        return false;
    };
    mac.verify_slice(&signature).is_ok()
}

#[tokio::test]
async fn state_changes_are_delivered_signed_and_retried_after_a_receiver_error() {
    let app = spawn_app_holding_payouts().await;
    let (url, received) = receiver(vec![StatusCode::INTERNAL_SERVER_ERROR]).await;
    let endpoint = register(&app, &app.key, &json!({ "url": url })).await;
    assert_eq!(endpoint.status(), StatusCode::CREATED);
    let endpoint: Value = endpoint.json().await.unwrap();
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    let payout = payout(&app, "k").await;
    // The first attempt meets the receiver's 500 and is scheduled again.
    assert_eq!(app.work("webhooks").await, 1);
    assert_eq!(received.lock().unwrap().deliveries.len(), 1);
    let retry_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT run_at FROM tuma_jobs WHERE kind = 'webhook.deliver'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let wait = retry_at - app.clock.now();
    assert!(
        wait <= chrono::TimeDelta::seconds(5),
        "the first retry waits at most 5 s, not {wait}"
    );
    if wait > chrono::TimeDelta::zero() {
        assert_eq!(app.work("webhooks").await, 0, "retried before its backoff");
    }
    app.clock.set(retry_at);
    assert_eq!(app.work("webhooks").await, 1);

    let deliveries = std::mem::take(&mut received.lock().unwrap().deliveries);
    assert_eq!(deliveries.len(), 2);
    for (headers, body) in &deliveries {
        let signature = headers["tuma-signature"].to_str().unwrap();
        assert!(
            verify(&secret, signature, body),
            "signature does not verify: {signature}"
        );
        assert!(!verify("whsec_wrong", signature, body));
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert!(!verify(&secret, signature, &tampered));
    }
    let event: Value = serde_json::from_slice(&deliveries[1].1).unwrap();
    assert_eq!(event["type"], "payout.created");
    assert_eq!(event["data"]["intent"]["id"], payout["id"]);
    assert_eq!(event["data"]["event"]["to"], "pending");
    assert_eq!(event["data"]["intent"]["recipient"]["msisdn"], "*********678");

    let attempts: Vec<(i32, Option<i16>)> =
        sqlx::query_as("SELECT attempt, status_code FROM webhook_deliveries ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, vec![(1, Some(500)), (2, Some(200))]);

    // The next state change is delivered too.
    let cancel = app
        .post(
            &format!("/v1/payouts/{}/cancel", payout["id"].as_str().unwrap()),
            &app.key,
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    app.work("webhooks").await;
    let next: Value = serde_json::from_slice(&received.lock().unwrap().deliveries[0].1).unwrap();
    assert_eq!(next["type"], "payout.state_changed");
    assert_eq!(
        (
            next["data"]["event"]["from"].as_str(),
            next["data"]["event"]["to"].as_str()
        ),
        (Some("pending"), Some("cancelled"))
    );
}

#[tokio::test]
async fn a_late_success_is_delivered_to_the_owner_once_and_other_refused_events_are_not() {
    use tuma::workflow::engine::{Applied, Cause, Event, PROVIDER_SUCCEEDED};

    let app = spawn_app_holding_payouts().await;
    let (url, received) = receiver(Vec::new()).await;
    assert_eq!(
        register(&app, &app.key, &json!({ "url": url })).await.status(),
        StatusCode::CREATED
    );
    let payout = payout(&app, "k").await;
    let id = payout["id"].as_str().unwrap();
    let cancel_path = format!("/v1/payouts/{id}/cancel");
    let cancel = || app.post(&cancel_path, &app.key);
    assert_eq!(cancel().await.status(), StatusCode::OK);
    app.work("webhooks").await;
    assert_eq!(received.lock().unwrap().deliveries.len(), 2, "created, then cancelled");
    received.lock().unwrap().deliveries.clear();

    // Cancelling it again is refused, and nobody outside hears of that.
    assert_eq!(cancel().await.status(), StatusCode::CONFLICT);
    // The provider then says the cancelled payout was paid: refused too
    // (no transition leaves a final state), but its owner is told, since
    // it may have sent the money again meanwhile.
    let succeed = || async {
        let mut succeeded = Event::new(PROVIDER_SUCCEEDED, Cause::Callback, "mpesa");
        succeeded.provider_ref = Some("QKL1LATE02");
        let applied = app.apply(id.parse().unwrap(), &succeeded).await;
        assert!(matches!(applied, Applied::Rejected { .. }), "{applied:?}");
    };
    succeed().await;
    // The provider saying it again (a poll after the callback, say) is the
    // same money: told once.
    succeed().await;
    assert_eq!(app.work("webhooks").await, 1);
    let deliveries = std::mem::take(&mut received.lock().unwrap().deliveries);
    assert_eq!(deliveries.len(), 1);
    let event: Value = serde_json::from_slice(&deliveries[0].1).unwrap();
    assert_eq!(event["type"], "payout.late_success", "{event}");
    assert_eq!(event["data"]["intent"]["state"], "cancelled");
    assert_eq!(event["data"]["event"]["event"], "provider_succeeded");
    assert_eq!(event["data"]["event"]["outcome"], "rejected");
    assert_eq!(event["data"]["event"]["provider_ref"], "QKL1LATE02");
}

#[tokio::test]
async fn endpoint_registration_refuses_bad_urls_and_weak_secrets() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({ "url": "ftp://example.org/x" }), "url"),
        (json!({ "url": "not a url" }), "url"),
        (json!({ "url": "https://example.org/x", "secret": "short" }), "secret"),
    ] {
        let response = register(&app, &app.key, &body).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field);
    }
    assert_eq!(app.count("SELECT count(*) FROM webhook_endpoints").await, 0);
}

#[tokio::test]
async fn endpoints_reaching_into_the_network_are_refused_and_redirects_are_not_followed() {
    // As deployed: no private addresses.
    let app = spawn_app_with("[webhooks]\nallow_private_addresses = false").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://localhost:8080/hook",
        "http://10.0.0.7/hook",
    ] {
        let response = register(&app, &app.key, &json!({ "url": url })).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["code"], "address_not_public", "{url}");
    }
    // One registered before the rule (or under another setting) is not
    // delivered to either.
    let (url, received) = receiver(vec![]).await;
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, owner, url, secret) VALUES ($1, 'shop', $2, 'whsec_0123456789abcdef')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(&url)
    .execute(&app.db.pool)
    .await
    .unwrap();
    app.create("/v1/payouts", &app.key, "k1", &payout_body("1500", "0712345678"))
        .await;
    app.work("webhooks").await;
    assert!(received.lock().unwrap().deliveries.is_empty());
    let errors: Vec<String> = sqlx::query_scalar(
        "SELECT e->>'error' FROM tuma_jobs, jsonb_array_elements(errors) e WHERE kind = 'webhook.deliver'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e.contains("127.0.0.1 is not a public address")),
        "{errors:?}"
    );

    // Where private receivers are allowed, a redirect is still an answer,
    // not a way elsewhere.
    let app = spawn_app().await;
    let (elsewhere, diverted) = receiver(vec![]).await;
    let redirecting = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let to = elsewhere.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, to)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?token=s3cr3t", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirecting).await.unwrap() });
    let endpoint = register(&app, &app.key, &json!({ "url": url })).await;
    assert_eq!(endpoint.status(), StatusCode::CREATED);
    app.create("/v1/payouts", &app.key, "k2", &payout_body("1500", "0712345678"))
        .await;
    app.work("webhooks").await;
    assert!(
        diverted.lock().unwrap().deliveries.is_empty(),
        "the redirect was followed"
    );
    let recorded: Vec<(Option<i16>, Option<String>)> =
        sqlx::query_as("SELECT status_code, error FROM webhook_deliveries")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert!(!recorded.is_empty());
    assert!(recorded.iter().all(|(status, _)| *status == Some(307)), "{recorded:?}");
}

#[tokio::test]
async fn owners_list_and_disable_their_endpoints_and_have_only_so_many() {
    let app = spawn_app().await;
    let (kept_url, kept) = receiver(vec![]).await;
    let (dropped_url, dropped) = receiver(vec![]).await;
    let kept_id = register(&app, &app.key, &json!({ "url": kept_url }))
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .clone();
    let dropped_id = register(&app, &app.key, &json!({ "url": dropped_url }))
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .clone();
    let list = |key: &str| {
        let request = app.http.get(app.url("/v1/webhook-endpoints")).bearer_auth(key);
        async move { request.send().await.unwrap() }
    };
    let listed: Value = list(&app.key).await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("secret").is_none()),
        "{listed}"
    );
    let other: Value = list(&app.other_key).await.json().await.unwrap();
    assert_eq!(
        other["data"].as_array().unwrap().len(),
        0,
        "another owner's are not listed"
    );

    let disable = |key: &str, id: &Value| {
        let request = app
            .http
            .delete(app.url(&format!("/v1/webhook-endpoints/{}", id.as_str().unwrap())))
            .bearer_auth(key);
        async move { request.send().await.unwrap() }
    };
    assert_eq!(
        disable(&app.other_key, &dropped_id).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        disable(&app.read_key, &dropped_id).await.status(),
        StatusCode::FORBIDDEN
    );
    let disabled = disable(&app.key, &dropped_id).await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let disabled: Value = disabled.json().await.unwrap();
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    let again: Value = disable(&app.key, &dropped_id).await.json().await.unwrap();
    assert_eq!(
        again["disabled_at"], disabled["disabled_at"],
        "disabling twice keeps the first time"
    );
    let listed: Value = list(&app.key).await.json().await.unwrap();
    assert_eq!(listed["data"][0]["id"], kept_id, "live ones first");
    assert!(listed["data"][0]["disabled_at"].is_null());

    // The next state change goes to the live endpoint only.
    app.create("/v1/payouts", &app.key, "k1", &payout_body("1500", "0712345678"))
        .await;
    app.work("webhooks").await;
    assert!(!kept.lock().unwrap().deliveries.is_empty());
    assert!(dropped.lock().unwrap().deliveries.is_empty());

    // Ten live endpoints at the most; a disabled one does not count.
    for i in 0..9 {
        let response = register(&app, &app.key, &json!({ "url": format!("{kept_url}?n={i}") })).await;
        assert_eq!(response.status(), StatusCode::CREATED, "endpoint {i}");
    }
    let refused = register(&app, &app.key, &json!({ "url": format!("{kept_url}?n=10") })).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["code"], "too_many_endpoints");
}
