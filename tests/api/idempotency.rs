//! Idempotency-Key: a replay returns the first response, a reuse with a
//! different body is refused, and keys belong to their owner.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::app::{payout_body, spawn_app, spawn_app_with, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_requests_with_one_key_create_one_intent() {
    let app = Arc::new(spawn_app().await);
    let body = payout_body("2500", "0712345678");
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut requests = Vec::new();
    for _ in 0..20 {
        let (app, body, barrier) = (app.clone(), body.clone(), barrier.clone());
        requests.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = app.create("/v1/payouts", &app.key, "salary-run-7", &body).await;
            (response.status(), response.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = HashSet::new();
    for request in requests {
        let (status, payout) = request.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{payout}");
        ids.insert(payout["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one key made several intents: {ids:?}");
    assert_eq!(app.count("SELECT count(*) FROM intents").await, 1);
    // Its creation and its release, once.
    assert_eq!(app.count("SELECT count(*) FROM intent_events").await, 2);
}

#[tokio::test]
async fn a_replay_returns_the_original_response_even_after_the_intent_moved_on() {
    let app = spawn_app().await;
    let body = payout_body("2500", "0712345678");
    let first = app.create("/v1/payouts", &app.key, "k", &body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/payouts/{}", first["id"].as_str().unwrap()).as_str()
    );
    app.run_jobs().await;
    // Key order and whitespace do not make a different request.
    let reordered: Value = serde_json::from_str(&serde_json::to_string(&body).unwrap()).unwrap();
    let replay = app.create("/v1/payouts", &app.key, "k", &reordered).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        replay.headers()["location"],
        location,
        "the first answer's Location too"
    );
    assert_eq!(replay.json::<Value>().await.unwrap(), first);
}

#[tokio::test]
async fn reusing_a_key_with_a_different_body_is_a_conflict_and_writes_nothing() {
    let app = spawn_app().await;
    let created = app
        .create("/v1/payouts", &app.key, "k", &payout_body("2500", "0712345678"))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let reused = app
        .create("/v1/payouts", &app.key, "k", &payout_body("2600", "0712345678"))
        .await;
    assert_eq!(reused.status(), StatusCode::CONFLICT);
    assert_eq!(reused.headers()["content-type"], "application/problem+json");
    let problem: Value = reused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:idempotency-key-reused");
    assert_eq!(app.count("SELECT count(*) FROM intents").await, 1);
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_owner_and_expire() {
    let app = spawn_app().await;
    let body = payout_body("2500", "0712345678");
    let ours: Value = app
        .create("/v1/payouts", &app.key, "k", &body)
        .await
        .json()
        .await
        .unwrap();
    let theirs: Value = app
        .create("/v1/payouts", &app.other_key, "k", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(
        ours["id"], theirs["id"],
        "another owner's key must not replay our intent"
    );
    // Each owner sees only its own intents.
    let listed: Value = app.get("/v1/payouts", &app.other_key).await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let id = ours["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/payouts/{id}"), &app.other_key).await.status(),
        StatusCode::NOT_FOUND
    );

    // After the retention period (a day by default) the key is free again.
    app.advance(std::time::Duration::from_secs(86_401));
    let later: Value = app
        .create("/v1/payouts", &app.key, "k", &payout_body("999", "0712345678"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(later["id"], ours["id"]);
}

#[tokio::test]
async fn a_create_without_an_idempotency_key_is_refused() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/v1/payouts"))
        .bearer_auth(&app.key)
        .json(&payout_body("2500", "0712345678"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:idempotency-key-invalid");
    assert_eq!(app.count("SELECT count(*) FROM intents").await, 0);
}

#[tokio::test]
async fn a_retry_is_answered_with_the_first_response_even_when_the_request_would_no_longer_validate() {
    // Creates admitted in groups (the default) and one at a time.
    replays_though_the_route_changed(&spawn_app().await).await;
    replays_though_the_route_changed(&spawn_app_with("[api]\ngroup_creates = 1").await).await;
}

async fn replays_though_the_route_changed(app: &TestApp) {
    let body = payout_body("2500", "0712345678");
    let first = app.create("/v1/payouts", &app.key, "earnings-9", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["recipient"]["provider"], "mpesa", "{first}");
    // The party now pays out through MTN, which carries no KES: the same
    // payout asked for afresh is refused.
    let settings = serde_json::json!({ "role": "creator", "kyc_tier": 2, "country": "KE",
                                       "payout_msisdn": "0712345678", "payout_provider": "mtn" });
    app.put_party(&app.admin_key, "creator-42", &settings).await;
    let fresh = app.create("/v1/payouts", &app.key, "earnings-10", &body).await;
    assert_eq!(fresh.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The retry of the first one still hears that it was created.
    let retry = app.create("/v1/payouts", &app.key, "earnings-9", &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    // A key that was never used keeps no trace of the refusal.
    assert_eq!(
        app.count("SELECT count(*) FROM idempotency_keys WHERE key = 'earnings-10'")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM intents").await, 1);
}
