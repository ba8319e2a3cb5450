//! Every route checks the API key and its scope.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::app::{payout_body, spawn_app, spawn_app_with};
use crate::common::eventually;

#[tokio::test]
async fn requests_without_a_valid_key_are_unauthorized() {
    let app = spawn_app().await;
    let no_key = app.http.get(app.url("/v1/payouts")).send().await.unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(no_key.headers()["content-type"], "application/problem+json");
    // The real key with its last hex digit changed.
    let last = if app.key.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &app.key[..app.key.len() - 1]);
    for key in ["nonsense", "tuma_zzzzzzzz_00", forged.as_str()] {
        let response = app.get("/v1/payouts", key).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:tuma:problem:unauthorized");
    }
}

#[tokio::test]
async fn each_route_demands_its_scope() {
    let app = spawn_app().await;
    let body = payout_body("2500", "0712345678");
    let refused = app.create("/v1/payouts", &app.read_key, "k", &body).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:forbidden");
    assert!(problem["detail"].as_str().unwrap().contains("intents:write"));
    assert_eq!(app.count("SELECT count(*) FROM intents").await, 0);

    let created: Value = app
        .create("/v1/payouts", &app.write_key, "k", &body)
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    for path in [
        format!("/v1/payouts/{id}"),
        "/v1/payouts".to_owned(),
        "/v1/collections".to_owned(),
    ] {
        assert_eq!(
            app.get(&path, &app.write_key).await.status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(app.get(&path, &app.read_key).await.status(), StatusCode::OK, "{path}");
    }
    let cancel = app.post(&format!("/v1/payouts/{id}/cancel"), &app.read_key).await;
    assert_eq!(cancel.status(), StatusCode::FORBIDDEN);
    let endpoint = app
        .http
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(&app.read_key)
        .json(&serde_json::json!({ "url": "http://127.0.0.1:9/hook" }))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_unknown_routes_are_problems() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/payouts", "post"),
        ("/v1/payouts", "get"),
        ("/v1/payouts/{id}", "get"),
        ("/v1/payouts/{id}/cancel", "post"),
        ("/v1/collections", "post"),
        ("/v1/collections", "get"),
        ("/v1/collections/{id}", "get"),
        ("/v1/collections/{id}/cancel", "post"),
        ("/v1/webhook-endpoints", "post"),
        ("/v1/webhook-endpoints", "get"),
        ("/v1/webhook-endpoints/{id}", "delete"),
        ("/v1/parties/{id}", "put"),
        ("/v1/parties/{id}", "get"),
        ("/v1/parties/{id}/payout-settings", "put"),
        ("/v1/parties/{id}/balances", "get"),
        ("/v1/parties/{id}/credits", "post"),
        ("/v1/campaigns/{id}/balances", "get"),
        ("/v1/ledger/accounts/{id}/entries", "get"),
        ("/v1/quotes", "post"),
        ("/v1/quotes/{id}", "get"),
        ("/v1/approvals", "get"),
        ("/v1/payouts/{id}/approve", "post"),
        ("/v1/payouts/{id}/reject", "post"),
        ("/v1/payout-batches", "post"),
        ("/v1/payout-batches/{id}/approve", "post"),
        ("/v1/reports/reconciliation", "get"),
        ("/v1/reports/tax", "get"),
        ("/v1/reports/providers", "get"),
        ("/v1/parties/{id}/balance-history", "get"),
        ("/v1/floats/{provider}/adjustments", "post"),
        ("/v1/payouts/{id}/resolve", "post"),
        ("/v1/collections/{id}/resolve", "post"),
        ("/v1/reversals/{id}/resolve", "post"),
        ("/v1/late-successes", "get"),
        ("/v1/late-successes/{id}/settle", "post"),
        ("/v1/callbacks/{id}/review", "post"),
        ("/v1/reversals", "post"),
        ("/v1/reversals/{id}", "get"),
        ("/v1/loans", "post"),
        ("/v1/loans/{id}", "get"),
        ("/v1/loans/{id}/approve", "post"),
        ("/v1/loans/{id}/reject", "post"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
    assert_eq!(
        paths.values().map(|p| p.as_object().unwrap().len()).sum::<usize>(),
        expected.len()
    );
    // Errors are documented with the media type they are served with.
    let unauthorized = &paths["/v1/payouts"]["post"]["responses"]["401"]["content"];
    assert!(unauthorized.get("application/problem+json").is_some(), "{unauthorized}");
    assert!(unauthorized.get("application/json").is_none(), "{unauthorized}");
    // Refusals any operation can give are documented on every operation.
    for (path, method, code) in [
        ("/v1/payouts", "get", "422"),
        ("/v1/payouts", "post", "415"),
        ("/v1/loans/{id}", "get", "401"),
        ("/v1/reversals", "post", "413"),
    ] {
        assert!(
            paths[path][method]["responses"][code]["content"]["application/problem+json"].is_object(),
            "{method} {path} {code}"
        );
    }
    let missing = app.get("/v1/nothing-here", &app.key).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
}

/// The key's prefix: `tuma_<prefix>_<secret>`.
fn prefix(key: &str) -> &str {
    key.split('_').nth(1).unwrap()
}

/// Revokes `key` by plain SQL, as another process or an operator would.
async fn revoke_by_sql(pool: &sqlx::PgPool, key: &str) {
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE prefix = $1")
        .bind(prefix(key))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_remembered_key_stops_working_as_soon_as_it_is_revoked_anywhere() {
    // Remembered for an hour: only the revocation's notification can make
    // the server forget the key within this test.
    let app = spawn_app_with("[api]\nkey_cache_s = 3600").await;
    let ok = |key: String| {
        let app = &app;
        async move { app.get("/v1/payouts", &key).await.status() }
    };
    assert_eq!(ok(app.key.clone()).await, StatusCode::OK);
    assert!(
        app.keys.is_empty(),
        "nothing is remembered while no one listens for changes"
    );

    let running = app.runner.clone().start().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the key is remembered once changes are heard",
        || async { ok(app.key.clone()).await == StatusCode::OK && app.keys.len() == 1 },
    )
    .await;

    // Revoked by plain SQL, as another process or an operator would.
    revoke_by_sql(&app.db.pool, &app.key).await;
    eventually(Duration::from_secs(10), "the revoked key is refused", || async {
        ok(app.key.clone()).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(app.keys.is_empty());

    // The LISTEN connection is cut: everything remembered is forgotten, and
    // keys are remembered again only once a new connection listens.
    assert_eq!(ok(app.read_key.clone()).await, StatusCode::OK);
    assert_eq!(app.keys.len(), 1);
    let listener: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(listener)
        .execute(&app.db.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "a new connection listens", || async {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        !pids.is_empty() && !pids.contains(&listener)
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the keys were forgotten with the connection",
        || async { app.keys.is_empty() },
    )
    .await;
    eventually(Duration::from_secs(10), "keys are remembered again", || async {
        ok(app.read_key.clone()).await == StatusCode::OK && app.keys.len() == 1
    })
    .await;
    revoke_by_sql(&app.db.pool, &app.read_key).await;
    eventually(
        Duration::from_secs(10),
        "the new connection hears revocations",
        || async { ok(app.read_key.clone()).await == StatusCode::UNAUTHORIZED },
    )
    .await;
    running.shutdown().await;
}
