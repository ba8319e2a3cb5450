//! Reconciliation and the back office: float adjustments, the report
//! (floats, unresolved, suspense), resolving with evidence; through the
//! API, the runner and the Daraja simulator.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tuma::simulator::mpesa::SimConfig;
use tuma::simulator::Chaos;

use crate::common::app::{spawn_mpesa_app, TestApp};
use crate::common::eventually;

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

async fn payout(app: &TestApp, amount: &str) -> String {
    let response = app
        .create(
            "/v1/payouts",
            &app.key,
            &uuid::Uuid::new_v4().to_string(),
            &json!({ "amount": amount, "currency": "KES", "recipient": { "msisdn": "0712345678" },
                     "party_id": "worker-7", "reference": "wages" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn state_of(app: &TestApp, id: &str) -> String {
    let body: Value = app
        .get(&format!("/v1/payouts/{id}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    body["state"].as_str().unwrap().to_owned()
}

/// Asks M-Pesa for its balances and waits for the report to be recorded.
async fn refresh_float(app: &TestApp) {
    let before: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT max(processed_at) FROM callback_inbox WHERE kind = 'balance-result'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    app.enqueue(&tuma::runner::NewJob::new(
        &tuma::providers::mpesa::float::QueryBalance {},
    ))
    .await;
    eventually(Duration::from_secs(10), "a balance report", || async {
        app.run_jobs().await;
        let latest: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT max(processed_at) FROM callback_inbox WHERE kind = 'balance-result'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        latest > before
    })
    .await;
}

async fn report(app: &TestApp, query: &str) -> reqwest::Response {
    app.get(&format!("/v1/reports/reconciliation{query}"), &app.admin_key)
        .await
}

fn money(value: &Value) -> Decimal {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_flags_a_float_mismatch_an_unresolved_payout_and_an_orphan_c2b_payment() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    app.register_c2b().await;
    // The float as opened at Safaricom, recorded in the ledger once.
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let adjusted = app
            .http
            .post(app.url("/v1/floats/mpesa/adjustments"))
            .bearer_auth(&app.admin_key)
            .json(&json!({ "amount": "10000000", "currency": "KES", "reference": "opening-balance" }))
            .send()
            .await
            .unwrap();
        assert_eq!(adjusted.status(), expected);
    }

    // A payout that completes, a payment that matches nothing, and a
    // payout whose every callback and status answer is lost.
    let paid = payout(&app, "1000").await;
    eventually(Duration::from_secs(10), "the payout to complete", || async {
        app.run_jobs().await;
        state_of(&app, &paid).await == "completed"
    })
    .await;
    let orphan = sim.pay_bill("174379", "254712345670", 750, "INV-1").await.unwrap();
    sim.set_chaos(Chaos {
        callback_loss_permille: 1000,
        ..Chaos::default()
    });
    let lost = payout(&app, "2000").await;
    app.run_jobs().await;
    assert_eq!(state_of(&app, &lost).await, "processing");
    for _ in 0..11 {
        app.advance(Duration::from_secs(30));
        app.run_jobs().await;
    }
    assert_eq!(state_of(&app, &lost).await, "unresolved");
    sim.set_chaos(Chaos::default());
    eventually(Duration::from_secs(10), "the orphan payment recorded", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM c2b_payments").await == 1
    })
    .await;

    // The unresolved payout's money left the float but its hold is still
    // pending: the difference is explained, the payout is listed.
    refresh_float(&app).await;
    let body: Value = report(&app, "").await.json().await.unwrap();
    let float = &body["floats"][0];
    assert_eq!(float["provider"], "mpesa");
    assert_eq!(money(&float["ledger"]), d("10000000") - d("1025") + d("750"));
    assert_eq!(money(&float["difference"]), d("-2050"));
    assert_eq!(money(&float["ledger_pending"]), d("-2050"));
    assert_eq!(float["matches"], true);
    assert_eq!(body["ok"], false);
    assert_eq!(body["unresolved"][0]["id"], lost.as_str());
    assert_eq!(body["suspense"][0]["receipt"], orphan.as_str());
    assert_eq!(body["suspense"][0]["bill_ref"], "INV-1");

    // Money leaves the float behind Tuma's back: a mismatch.
    sim.set_float_kes(sim.float_kes() - 1234);
    refresh_float(&app).await;
    let body: Value = report(&app, "").await.json().await.unwrap();
    assert_eq!(body["floats"][0]["matches"], false);
    assert_eq!(money(&body["floats"][0]["difference"]), d("-3284"));

    // An admin settles the unresolved payout with the statement line.
    let receipt = sim
        .payments()
        .into_iter()
        .find(|p| p.kind == "b2c" && p.amount_kes == 2000)
        .unwrap()
        .receipt;
    let refused = app
        .http
        .post(app.url(&format!("/v1/payouts/{paid}/resolve")))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "outcome": "failed", "evidence": "statement" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::CONFLICT,
        "only unresolved intents are resolved"
    );
    let resolved = app
        .http
        .post(app.url(&format!("/v1/payouts/{lost}/resolve")))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "outcome": "succeeded", "evidence": "Daraja statement line 4411", "receipt": receipt }))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), StatusCode::OK);
    let detail: Value = app
        .get(&format!("/v1/payouts/{lost}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["state"], "completed");
    assert_eq!(detail["receipt"], receipt.as_str());
    let last = detail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["cause"], "admin");
    assert_eq!(last["actor"], "shop-admin");

    // The daily job keeps the report; the API serves it as JSON and CSV.
    let today = chrono::Utc::now().date_naive();
    assert_eq!(
        report(&app, &format!("?date={today}")).await.status(),
        StatusCode::NOT_FOUND
    );
    app.enqueue(&tuma::runner::NewJob::new(&tuma::reconcile::Reconcile { date: today }))
        .await;
    app.run_jobs().await;
    let kept: Value = report(&app, &format!("?date={today}")).await.json().await.unwrap();
    assert_eq!(kept["unresolved"].as_array().unwrap().len(), 0);
    assert_eq!(money(&kept["floats"][0]["difference"]), d("-1234"));
    let csv = report(&app, &format!("?date={today}&format=csv")).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("section,id,kind,state,amount,currency,provider,detail,at\n"));
    assert!(csv.contains("float,,,MISMATCH,-1234,KES,mpesa"), "{csv}");
    assert!(csv.contains(&format!("suspense,{orphan},c2b,suspense,750")), "{csv}");
    app.assert_ledger_balanced().await;
}
