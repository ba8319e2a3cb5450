//! Create, get, list and cancel, as a product service uses them.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::app::{collection_body, payout_body, spawn_app, spawn_app_holding_payouts};

#[tokio::test]
async fn a_payout_is_created_read_listed_and_cancelled() {
    let app = spawn_app_holding_payouts().await;
    let created = app
        .create(
            "/v1/payouts",
            &app.key,
            "payout-1",
            &payout_body("1500.00", "0712 345 678"),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let payout: Value = created.json().await.unwrap();
    assert_eq!(payout["state"], "pending");
    assert_eq!(payout["amount"], "1500.00");
    assert_eq!(payout["currency"], "KES");
    assert_eq!(
        payout["recipient"]["msisdn"], "*********678",
        "the full number must not be echoed"
    );
    assert_eq!(payout["recipient"]["provider"], "mpesa");
    assert_eq!(payout["metadata"]["campaign"], "november");
    let id = payout["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/payouts/{id}"));

    let fetched: Value = app.get(&location, &app.read_key).await.json().await.unwrap();
    assert_eq!(fetched["id"], payout["id"]);
    assert_eq!(fetched["events"][0]["event"], "create");
    assert_eq!(fetched["events"][0]["to"], "pending");
    assert_eq!(fetched["events"][0]["cause"], "api");
    assert_eq!(fetched["events"][0]["actor"], "shop-backend");

    let listed: Value = app.get("/v1/payouts", &app.key).await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["next_cursor"].is_null());

    let cancelled = app.post(&format!("/v1/payouts/{id}/cancel"), &app.key).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    assert!(!cancelled["final_at"].is_null());
    // A cancelled payout's queued release finds nothing to do.
    app.run_jobs().await;
    let fetched: Value = app.get(&location, &app.key).await.json().await.unwrap();
    assert_eq!(fetched["state"], "cancelled");
    assert_eq!(fetched["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_payout_handed_to_the_provider_cannot_be_cancelled_and_the_attempt_is_recorded() {
    let app = spawn_app().await;
    let payout: Value = app
        .create("/v1/payouts", &app.key, "payout-1", &payout_body("1500", "0712345678"))
        .await
        .json()
        .await
        .unwrap();
    let id = payout["id"].as_str().unwrap();
    app.run_jobs().await;
    let refused = app.post(&format!("/v1/payouts/{id}/cancel"), &app.key).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:invalid-state");
    assert!(
        problem["detail"].as_str().unwrap().contains("handed to the provider"),
        "{problem}"
    );

    let fetched: Value = app
        .get(&format!("/v1/payouts/{id}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["state"], "processing");
    let last = fetched["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["event"].as_str(), last["outcome"].as_str()),
        (Some("cancel"), Some("rejected"))
    );
}

#[tokio::test]
async fn a_collection_is_created_read_and_cancelled() {
    let app = spawn_app().await;
    let created = app
        .create(
            "/v1/collections",
            &app.key,
            "c-1",
            &collection_body("5000", "0754 123 456"),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let collection: Value = created.json().await.unwrap();
    assert_eq!(collection["kind"], "collection");
    assert_eq!(collection["payer"]["provider"], "vodacom_tz");
    assert!(collection.get("recipient").is_none());
    let id = collection["id"].as_str().unwrap();
    let fetched = app.get(&format!("/v1/collections/{id}"), &app.key).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    // A collection is not a payout: the other collection's path does not find it.
    assert_eq!(
        app.get(&format!("/v1/payouts/{id}"), &app.key).await.status(),
        StatusCode::NOT_FOUND
    );
    let cancelled: Value = app
        .post(&format!("/v1/collections/{id}/cancel"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["state"], "cancelled");
}

#[tokio::test]
async fn listing_pages_with_a_cursor_and_filters_by_state_party_and_time() {
    let app = spawn_app_holding_payouts().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = payout_body("100", "0712345678");
        body["party_id"] = Value::from(if i % 2 == 0 { "creator-even" } else { "creator-odd" });
        let payout: Value = app
            .create("/v1/payouts", &app.key, &format!("p-{i}"), &body)
            .await
            .json()
            .await
            .unwrap();
        ids.push(payout["id"].as_str().unwrap().to_owned());
    }
    let cancelled = &ids[1];
    app.post(&format!("/v1/payouts/{cancelled}/cancel"), &app.key).await;

    let first: Value = app.get("/v1/payouts?limit=2", &app.key).await.json().await.unwrap();
    let page: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, vec![ids[4].as_str(), ids[3].as_str()], "newest first");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&format!("/v1/payouts?limit=2&cursor={cursor}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    let page: Vec<&str> = second["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, vec![ids[2].as_str(), ids[1].as_str()]);
    let cursor = second["next_cursor"].as_str().unwrap();
    let third: Value = app
        .get(&format!("/v1/payouts?limit=2&cursor={cursor}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(third["data"].as_array().unwrap().len(), 1);
    assert!(third["next_cursor"].is_null());

    let by_state: Value = app
        .get("/v1/payouts?state=cancelled", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_state["data"].as_array().unwrap().len(), 1);
    assert_eq!(by_state["data"][0]["id"].as_str(), Some(cancelled.as_str()));
    let by_party: Value = app
        .get("/v1/payouts?party_id=creator-even", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_party["data"].as_array().unwrap().len(), 3);
    let future = (app.clock.now() + chrono::TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none: Value = app
        .get(&format!("/v1/payouts?created_from={future}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    let all: Value = app
        .get(&format!("/v1/payouts?created_to={future}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 5);

    for bad in [
        "limit=0",
        "limit=1000",
        "cursor=nope",
        "created_from=yesterday",
        "colour=blue",
    ] {
        let response = app.get(&format!("/v1/payouts?{bad}"), &app.key).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

/// Payout create groups run on a pool of their own: the same database as
/// the node's pool, and no more connections than the groups admitted at
/// once.
#[tokio::test]
async fn a_lane_pool_reaches_the_same_database_with_one_connection_per_lane() {
    let db = crate::common::TestDb::new().await;
    let lanes = tuma::store::lane_pool(&db.pool, 2);
    assert_eq!(lanes.size(), 0, "connected only when first used");
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&lanes)
        .await
        .unwrap();
    assert_eq!(name, db.name);
    let first = lanes.acquire().await.unwrap();
    let second = lanes.acquire().await.unwrap();
    assert!(lanes.try_acquire().is_none(), "a third lane would wait");
    drop((first, second));
    lanes.close().await;
}
