//! Reconciliation and the back office: float adjustments, the report
//! (floats, unresolved, suspense), resolving with evidence; through the
//! API, the runner and the Daraja simulator.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tuma::simulator::mpesa::{SimConfig, SimHandle};
use tuma::simulator::Chaos;

use crate::common::app::{spawn_mpesa_app, TestApp};
use crate::common::eventually;

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

async fn payout(app: &TestApp, amount: &str) -> String {
    payout_from(app, "worker-7", amount).await
}

/// A payout of `amount` KES from `party` to an M-Pesa number.
async fn payout_from(app: &TestApp, party: &str, amount: &str) -> String {
    let response = app
        .create(
            "/v1/payouts",
            &app.key,
            &uuid::Uuid::new_v4().to_string(),
            &json!({ "amount": amount, "currency": "KES", "recipient": { "msisdn": "0712345678" },
                     "party_id": party, "reference": "wages" }),
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

/// A payout of `amount` that completes, its callback and all.
async fn completed_payout(app: &TestApp, amount: &str) -> String {
    completed_payout_from(app, "worker-7", amount).await
}

async fn completed_payout_from(app: &TestApp, party: &str, amount: &str) -> String {
    let id = payout_from(app, party, amount).await;
    eventually(Duration::from_secs(10), "the payout to complete", || async {
        app.run_jobs().await;
        state_of(app, &id).await == "completed"
    })
    .await;
    id
}

/// A payout of `amount` whose every callback and status answer Daraja
/// loses (the chaos is left on): its polls run out and it is unresolved.
async fn unresolved_payout(app: &TestApp, sim: &SimHandle, amount: &str) -> String {
    unresolved_payout_from(app, sim, "worker-7", amount).await
}

async fn unresolved_payout_from(app: &TestApp, sim: &SimHandle, party: &str, amount: &str) -> String {
    sim.set_chaos(Chaos {
        callback_loss_permille: 1000,
        ..Chaos::default()
    });
    let id = payout_from(app, party, amount).await;
    app.run_jobs().await;
    assert_eq!(state_of(app, &id).await, "processing");
    for _ in 0..11 {
        app.advance(Duration::from_secs(30));
        app.run_jobs().await;
    }
    assert_eq!(state_of(app, &id).await, "unresolved");
    id
}

/// An admin's `POST /v1/payouts/{id}/resolve` with `body`.
async fn resolve(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/v1/payouts/{id}/resolve")))
        .bearer_auth(&app.admin_key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The text `/metrics` serves.
async fn metrics_text(app: &TestApp) -> String {
    app.http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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

/// Records the simulated M-Pesa float's opening balance (10,000,000 KES)
/// in the ledger; the adjustment's status.
async fn open_mpesa_float(app: &TestApp) -> StatusCode {
    app.http
        .post(app.url("/v1/floats/mpesa/adjustments"))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "amount": "10000000", "currency": "KES", "reference": "opening-balance" }))
        .send()
        .await
        .unwrap()
        .status()
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
        assert_eq!(open_mpesa_float(&app).await, expected);
    }

    // A payout that completes, a payment that matches nothing, and a
    // payout whose every callback and status answer is lost.
    let paid = completed_payout(&app, "1000").await;
    let orphan = sim.pay_bill("174379", "254712345670", 750, "INV-1").await.unwrap();
    let lost = unresolved_payout(&app, &sim, "2000").await;
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
    let refused = resolve(&app, &paid, json!({ "outcome": "failed", "evidence": "statement" })).await;
    assert_eq!(
        refused.status(),
        StatusCode::CONFLICT,
        "only unresolved intents are resolved"
    );
    let paid_receipt: String = sqlx::query_scalar("SELECT receipt FROM intents WHERE id = $1::uuid")
        .bind(&paid)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let borrowed = resolve(
        &app,
        &lost,
        json!({ "outcome": "succeeded", "evidence": "statement", "receipt": paid_receipt }),
    )
    .await;
    assert_eq!(
        borrowed.status(),
        StatusCode::CONFLICT,
        "another payment's receipt cannot settle this one"
    );
    let resolved = resolve(
        &app,
        &lost,
        json!({ "outcome": "succeeded", "evidence": "Daraja statement line 4411", "receipt": receipt }),
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_snapshots_the_tax_report_and_provider_success_rates() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let mut ids = vec![payout(&app, "60000").await, payout(&app, "60000").await];
    let small = app
        .create(
            "/v1/payouts",
            &app.key,
            "small",
            &json!({ "amount": "1000", "currency": "KES", "recipient": { "msisdn": "0712345678" },
                     "party_id": "creator-42", "reference": "earnings" }),
        )
        .await;
    ids.push(small.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    eventually(Duration::from_secs(10), "the payouts to complete", || async {
        app.run_jobs().await;
        let mut all = true;
        for id in &ids {
            all &= state_of(&app, id).await == "completed";
        }
        all
    })
    .await;

    // Snapshots: the same tick twice writes one point.
    let now = app.clock.now();
    for _ in 0..2 {
        app.enqueue(&tuma::runner::NewJob::new(&tuma::reports::SnapshotBalances { at: now }))
            .await;
        app.run_jobs().await;
    }
    let history: Value = app
        .get("/v1/parties/worker-7/balance-history?currency=KES", &app.key)
        .await
        .json()
        .await
        .unwrap();
    let points = history["data"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{history}");
    // 10,000,000 less two payouts of 60,000 with 1,500 platform fee and 105 tariff each.
    assert_eq!(points[0]["available"], "9876790.00");

    // The month's tax report names the party paid above 100,000 KES.
    let month = format!("{}", now.format("%Y-%m"));
    app.enqueue(&tuma::runner::NewJob::new(&tuma::reports::TaxReport {
        month: month.clone(),
    }))
    .await;
    app.run_jobs().await;
    let tax: Value = app
        .get(&format!("/v1/reports/tax?month={month}"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let lines = tax["data"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{tax}");
    assert_eq!(lines[0]["party_id"], "worker-7");
    assert_eq!(lines[0]["payouts"], 2);
    assert_eq!(lines[0]["total"], "120000");
    assert_eq!(
        app.get("/v1/reports/tax?month=2026-13", &app.admin_key).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let providers: Value = app
        .get("/v1/reports/providers", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let mpesa = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == "mpesa" && r["kind"] == "payout")
        .unwrap()
        .clone();
    assert_eq!(
        (mpesa["total"].as_i64(), mpesa["completed"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(mpesa["success_rate"], 1.0);

    // Processed callbacks are kept 90 days.
    let callbacks = app.count("SELECT count(*) FROM callback_inbox").await;
    assert!(callbacks >= 3);
    app.enqueue(&tuma::runner::NewJob::new(&tuma::reports::PurgeCallbacks {}))
        .await;
    app.run_jobs().await;
    assert_eq!(app.count("SELECT count(*) FROM callback_inbox").await, callbacks);
    app.advance(Duration::from_secs(91 * 86400));
    app.enqueue(&tuma::runner::NewJob::new(&tuma::reports::PurgeCallbacks {}))
        .await;
    app.run_jobs().await;
    assert_eq!(app.count("SELECT count(*) FROM callback_inbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configured_cron_entry_fires_once_per_tick_across_two_nodes() {
    use tuma::clock::Clock;
    use tuma::runner::{fire_cron_tick, JobClient};
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let entries = tuma::jobs::cron_entries(&app.config.cron, true).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name()).collect();
    for wanted in [
        "purge-idempotency-keys",
        "mpesa-float-report",
        "loans-sweep",
        "reconciliation",
        "balance-snapshots",
        "tax-report",
        "callback-retention",
    ] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    let before = app.count("SELECT count(*) FROM tuma_jobs").await;
    let nodes = [
        JobClient::new(app.db.node_pool(2).await, Clock::Database),
        JobClient::new(app.db.node_pool(2).await, Clock::Database),
    ];
    let at: chrono::DateTime<chrono::Utc> = "2026-12-01T03:15:00.400Z".parse().unwrap();
    for entry in &entries {
        let tick = entry.tick_at_or_before(at).unwrap();
        let (a, b) = tokio::join!(
            fire_cron_tick(&nodes[0], entry, tick),
            fire_cron_tick(&nodes[1], entry, tick)
        );
        let fired = [a.unwrap(), b.unwrap()];
        assert_eq!(
            fired.iter().filter(|f| f.is_some()).count(),
            1,
            "{} fired {fired:?}",
            entry.name()
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs").await - before,
        entries.len() as i64
    );
    // The tax report fired on 1 December covers November.
    let month: String = sqlx::query_scalar("SELECT args->>'month' FROM tuma_jobs WHERE kind = 'reports.tax'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(month, "2026-11");
}

/// A donation of 800 KES from donor-3, collected by STK push; its M-Pesa
/// receipt.
async fn collected_donation(app: &TestApp) -> String {
    let created = app
        .create(
            "/v1/collections",
            &app.key,
            "donation-1",
            &json!({ "amount": "800", "currency": "KES", "payer": { "msisdn": "0712345678" },
                     "party_id": "donor-3", "reference": "campaign-9" }),
        )
        .await;
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(10), "the collection to complete", || async {
        app.run_jobs().await;
        let body: Value = app
            .get(&format!("/v1/collections/{id}"), &app.key)
            .await
            .json()
            .await
            .unwrap();
        body["state"] == "completed"
    })
    .await;
    assert_eq!(app.available("donor-3", "KES").await, d("800"));
    sqlx::query_scalar("SELECT receipt FROM intents WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// An admin's request to reverse `receipt`, under `idempotency_key`.
async fn request_reversal(app: &TestApp, idempotency_key: &str, receipt: &str) -> reqwest::Response {
    app.create(
        "/v1/reversals",
        &app.admin_key,
        idempotency_key,
        &json!({ "receipt": receipt, "reason": "charged twice" }),
    )
    .await
}

/// An admin's reversal of `receipt`; its id.
async fn reverse(app: &TestApp, receipt: &str) -> String {
    let reversal = request_reversal(app, "rev-1", receipt).await;
    assert_eq!(reversal.status(), StatusCode::CREATED);
    reversal.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET /v1/reversals/{id}`.
async fn reversal(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/reversals/{id}"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_reversal_whose_result_is_lost_is_completed_by_the_status_poll() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let receipt = collected_donation(&app).await;
    let reversal_id = reversal_with_its_result_lost(&app, &sim, &receipt).await;
    assert_eq!(app.available("donor-3", "KES").await, Decimal::ZERO, "held");
    completed_by_the_status_poll(&app, &sim, &reversal_id).await;
    assert_eq!(app.available("donor-3", "KES").await, Decimal::ZERO);
    app.assert_ledger_balanced().await;
}

/// Reverses `receipt` while Daraja loses every callback: the reversal is
/// sent and waits, `processing`. Its id; the chaos is off again.
async fn reversal_with_its_result_lost(app: &TestApp, sim: &SimHandle, receipt: &str) -> String {
    sim.set_chaos(Chaos {
        callback_loss_permille: 1000,
        ..Chaos::default()
    });
    let reversal_id = reverse(app, receipt).await;
    app.run_jobs().await;
    assert_eq!(reversal(app, &reversal_id).await["state"], "processing");
    sim.set_chaos(Chaos::default());
    reversal_id
}

/// The reversal `id`'s first status poll completes it, and M-Pesa holds
/// one reversal.
async fn completed_by_the_status_poll(app: &TestApp, sim: &SimHandle, id: &str) {
    app.advance(Duration::from_secs(30));
    eventually(Duration::from_secs(10), "the poll to find the reversal", || async {
        app.run_jobs().await;
        reversal(app, id).await["state"] == "completed"
    })
    .await;
    let events = event_causes(&reversal(app, id).await);
    assert!(events.contains(&"provider_succeeded:poll".to_owned()), "{events:?}");
    assert_eq!(sim.payments().iter().filter(|p| p.kind == "reversal").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_reversal_whose_result_is_lost_is_completed_by_the_status_poll() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let paid = completed_payout(&app, "1000").await;
    let receipt: String = sqlx::query_scalar("SELECT receipt FROM intents WHERE id = $1::uuid")
        .bind(&paid)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    // The payout went from the B2C shortcode, not the PayBill: so did its
    // reversal, and that is where its status is asked.
    let reversal_id = reversal_with_its_result_lost(&app, &sim, &receipt).await;
    completed_by_the_status_poll(&app, &sim, &reversal_id).await;
    app.assert_ledger_balanced().await;
}

/// An intent's history as `event:cause`, in order.
fn event_causes(intent: &Value) -> Vec<String> {
    intent["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["event"].as_str().unwrap(), e["cause"].as_str().unwrap()))
        .collect()
}

/// Someone reverses `receipt` at M-Pesa directly (the organisation
/// portal): the money goes back, and Tuma hears nothing of it.
async fn reversed_at_the_portal(app: &TestApp, sim: &SimHandle, receipt: &str) {
    sim.set_chaos(Chaos {
        callback_loss_permille: 1000,
        ..Chaos::default()
    });
    let portal = tuma::providers::mpesa::MpesaClient::new(app.config.mpesa.clone().unwrap()).unwrap();
    let nowhere = "http://127.0.0.1:9/none";
    portal
        .reversal(receipt, 800, "174379", "portal", nowhere, nowhere)
        .await
        .unwrap();
    sim.set_chaos(Chaos::default());
    assert_eq!(sim.payments().iter().filter(|p| p.kind == "reversal").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_of_a_payment_already_reversed_another_way_waits_for_a_person_with_its_hold_kept() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let receipt = collected_donation(&app).await;
    reversed_at_the_portal(&app, &sim, &receipt).await;

    // Tuma's own reversal is refused as already reversed (`R000001`).
    let id = reverse(&app, &receipt).await;
    eventually(Duration::from_secs(10), "M-Pesa's answer to the reversal", || async {
        app.run_jobs().await;
        reversal(&app, &id).await["state"] != "processing"
    })
    .await;
    let body = reversal(&app, &id).await;
    assert_eq!(body["state"], "unresolved", "{body}");
    let events = body["events"].as_array().unwrap();
    let said = events
        .iter()
        .find(|e| e["event"] == "already_reversed")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(said["outcome"], "applied");
    assert_eq!(said["cause"], "callback");
    assert!(said["reason"].as_str().unwrap().starts_with("R000001"), "{said}");
    // The money is gone from the donor's balance until a person says where
    // it went; the polls stop asking.
    assert_eq!(app.available("donor-3", "KES").await, Decimal::ZERO, "still held");
    app.advance(Duration::from_secs(30 * 11));
    app.run_jobs().await;
    assert_eq!(reversal(&app, &id).await["state"], "unresolved");
    assert_eq!(app.available("donor-3", "KES").await, Decimal::ZERO);
    assert_eq!(
        sim.payments().iter().filter(|p| p.kind == "reversal").count(),
        1,
        "no second reversal"
    );
    // A second reversal of the receipt waits for this one's resolution.
    let again = request_reversal(&app, "rev-2", &receipt).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    app.assert_ledger_balanced().await;

    let resolved = app
        .http
        .post(app.url(&format!("/v1/reversals/{id}/resolve")))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "outcome": "succeeded", "evidence": "portal reversal on the org statement" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), StatusCode::OK);
    assert_eq!(reversal(&app, &id).await["state"], "completed");
    assert_eq!(app.available("donor-3", "KES").await, Decimal::ZERO);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_the_status_query_calls_declined_waits_for_a_person_with_its_hold_kept() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let receipt = collected_donation(&app).await;
    reversed_at_the_portal(&app, &sim, &receipt).await;
    // Tuma's reversal is refused as already reversed, and that answer is
    // lost: the status query learns only that it was declined.
    sim.set_chaos(Chaos {
        callback_loss_permille: 1000,
        ..Chaos::default()
    });
    let id = reverse(&app, &receipt).await;
    app.run_jobs().await;
    assert_eq!(reversal(&app, &id).await["state"], "processing");
    sim.set_chaos(Chaos::default());
    app.advance(Duration::from_secs(30));
    eventually(Duration::from_secs(10), "the status query's answer", || async {
        app.run_jobs().await;
        reversal(&app, &id).await["state"] != "processing"
    })
    .await;
    let body = reversal(&app, &id).await;
    assert_eq!(body["state"], "unresolved", "{body}");
    let events = event_causes(&body);
    assert!(events.contains(&"status_declined:poll".to_owned()), "{events:?}");
    assert_eq!(app.available("donor-3", "KES").await, Decimal::ZERO, "still held");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_intents_callbacks_polls_and_provider_calls() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let paid = payout(&app, "1000").await;
    eventually(Duration::from_secs(10), "the payout to complete", || async {
        app.run_jobs().await;
        state_of(&app, &paid).await == "completed"
    })
    .await;
    // One held back, so that an open intent shows.
    app.sim.clone().unwrap().set_chaos(Chaos {
        callback_loss_permille: 1000,
        ..Chaos::default()
    });
    let waiting = payout(&app, "2000").await;
    app.run_jobs().await;
    app.advance(Duration::from_secs(30));
    app.run_jobs().await;
    assert_eq!(state_of(&app, &waiting).await, "processing");
    let scrape = || metrics_text(&app);
    let text = scrape().await;
    for wanted in [
        r#"tuma_intents_open{kind="payout",state="processing",provider="mpesa"} 1"#,
        "tuma_intent_time_to_final_seconds",
        r#"tuma_intent_transitions_total{kind="payout",from="processing",to="completed",cause="callback"}"#,
        r#"tuma_callbacks_total{provider="mpesa",kind="b2c-result",outcome="applied"}"#,
        r#"tuma_callbacks_received_total{provider="mpesa",kind="b2c-result"}"#,
        r#"tuma_provider_polls_total{provider="mpesa",kind="payout"}"#,
        r#"tuma_provider_request_seconds"#,
        r#"outcome="ok""#,
    ] {
        assert!(text.contains(wanted), "{wanted} missing from /metrics:\n{text}");
    }
    // No reconciliation report kept yet: nothing to say of one.
    assert!(!text.contains("tuma_reconciliation_ok"), "{text}");

    // The newest day's kept report is the one shown.
    let yesterday = app.clock.now() - chrono::Duration::days(1);
    let today = app.clock.now();
    let body = serde_json::json!({});
    tuma::store::reports::store_reconciliation(&app.db.pool, today.date_naive(), today, false, &body)
        .await
        .unwrap();
    tuma::store::reports::store_reconciliation(&app.db.pool, yesterday.date_naive(), yesterday, true, &body)
        .await
        .unwrap();
    let text = scrape().await;
    assert_eq!(value_of(&text, "tuma_reconciliation_ok"), 0.0);
    assert_eq!(
        value_of(&text, "tuma_reconciliation_generated_timestamp_seconds"),
        today.timestamp() as f64
    );

    // An hour later, by the database's clock, the payout still processing
    // has waited an hour and a little more since it last changed.
    app.advance(Duration::from_secs(3600));
    let text = scrape().await;
    let waited = value_of(
        &text,
        r#"tuma_intents_open_oldest_seconds{kind="payout",state="processing",provider="mpesa"}"#,
    );
    assert!((3600.0..3700.0).contains(&waited), "waited {waited} s");
}

/// The value of `series` (a name with its labels, as rendered) in
/// Prometheus text `text`.
fn value_of(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(series))
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"));
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_reported_after_the_payout_ended_failed_is_listed_until_a_person_settles_it() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    // One payout completes; another loses every word from Daraja, runs out
    // its polls, and an admin resolves it as failed (its hold released).
    let paid = completed_payout(&app, "1000").await;
    let lost = unresolved_payout(&app, &sim, "2000").await;
    let resolved = resolve(
        &app,
        &lost,
        json!({ "outcome": "failed", "evidence": "no line on the statement yet" }),
    )
    .await;
    assert_eq!(resolved.status(), StatusCode::OK);
    assert_eq!(state_of(&app, &lost).await, "failed");
    let body: Value = report(&app, "").await.json().await.unwrap();
    assert_eq!(body["late_successes"].as_array().unwrap().len(), 0, "{body}");

    // Then Daraja's delayed result says both were paid. The completed
    // payout's second word is a duplicate; the failed one's contradicts
    // its end: refused (nothing may move a final intent), but not lost.
    success_refused(&app, &paid, "QKL1LATE00").await;
    success_refused(&app, &lost, "QKL1LATE00").await;
    assert_eq!(state_of(&app, &lost).await, "failed");

    let body: Value = report(&app, "").await.json().await.unwrap();
    assert_eq!(body["ok"], false);
    let late = body["late_successes"].as_array().unwrap();
    assert_eq!(late.len(), 1, "only the contradiction, not the duplicate: {body}");
    assert_eq!(late[0]["id"], lost.as_str());
    assert_eq!(late[0]["state"], "failed");
    assert_eq!(late[0]["cause"], "callback");
    assert_eq!(late[0]["provider_ref"], "QKL1LATE00");
    assert_eq!(money(&late[0]["amount"]), d("2000"));
    // Scraped before any report is kept here: /metrics shows the newest
    // kept report's verdict, and the recorder is shared by every test of
    // this binary.
    let metrics = metrics_text(&app).await;
    assert!(
        value_of(
            &metrics,
            r#"tuma_late_successes_refused_total{kind="payout",state="failed",provider="mpesa"}"#
        ) >= 1.0,
        "{metrics}"
    );
    let today = app.clock.now().date_naive();
    app.enqueue(&tuma::runner::NewJob::new(&tuma::reconcile::Reconcile { date: today }))
        .await;
    app.run_jobs().await;
    let csv = report(&app, &format!("?date={today}&format=csv"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains(&format!("late_success,{lost},payout,failed,2000,KES,mpesa,")),
        "{csv}"
    );

    // The provider saying it again is the same money: still one line.
    success_refused(&app, &lost, "QKL1LATE00").await;
    // A day later it is still listed: nobody has settled it.
    app.advance(Duration::from_secs(86_400));
    let body: Value = report(&app, "").await.json().await.unwrap();
    let late = body["late_successes"].as_array().unwrap();
    assert_eq!(late.len(), 1, "{body}");
    let app = &app;
    let listed = |query: &'static str| async move {
        app.get(&format!("/v1/late-successes{query}"), &app.admin_key)
            .await
            .json::<Value>()
            .await
            .unwrap()
    };
    let open = listed("").await;
    assert_eq!(open["data"].as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open["data"][0]["id"], lost.as_str());
    assert_eq!(money(&open["data"][0]["amount"]), d("2000"));
    assert!(open["data"][0]["settled_at"].is_null());

    // Settling takes evidence and an admin; an intent without a late
    // success has nothing to settle.
    let evidence = json!({ "evidence": "recovered by reversal, receipt TKL9REV001" });
    assert_eq!(
        settle_late(app, &lost, &app.admin_key, json!({ "evidence": "  " }))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        settle_late(app, &lost, &app.key, evidence.clone()).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        settle_late(app, &paid, &app.admin_key, evidence.clone()).await.status(),
        StatusCode::NOT_FOUND
    );
    let settled = settle_late(app, &lost, &app.admin_key, evidence.clone()).await;
    assert_eq!(settled.status(), StatusCode::OK);
    let settled: Value = settled.json().await.unwrap();
    assert_eq!(settled["id"], lost.as_str());
    assert_eq!(settled["state"], "failed", "the intent stays as it ended");
    assert_eq!(settled["evidence"], "recovered by reversal, receipt TKL9REV001");
    assert!(
        settled["settled_at"].is_string() && settled["settled_by"].is_string(),
        "{settled}"
    );
    let again = settle_late(app, &lost, &app.admin_key, evidence).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    let body: Value = report(&app, "").await.json().await.unwrap();
    assert_eq!(body["late_successes"].as_array().unwrap().len(), 0, "{body}");
    let open = listed("").await;
    assert_eq!(open["data"].as_array().unwrap().len(), 0, "{open}");
    let done = listed("?status=settled").await;
    assert_eq!(done["data"][0]["settled_at"], settled["settled_at"], "{done}");
    assert_eq!(state_of(&app, &lost).await, "failed");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_reported_after_the_payout_was_resolved_paid_is_listed_for_a_person() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let lost = unresolved_payout(&app, &sim, "2000").await;
    let (request, token): (String, String) =
        sqlx::query_as("SELECT provider_ref, callback_token FROM intents WHERE id = $1::uuid")
            .bind(&lost)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    // An admin, reading a statement line that was not this payout's,
    // resolves it paid: the party is charged.
    let resolved = resolve(
        &app,
        &lost,
        json!({ "outcome": "succeeded", "evidence": "statement line 77", "receipt": "QKL3MISREAD" }),
    )
    .await;
    assert_eq!(resolved.status(), StatusCode::OK);
    assert_eq!(state_of(&app, &lost).await, "completed");
    assert!(app.listed_callbacks().await.is_empty());

    // Then Daraja's delayed result says it failed. Nothing may move a
    // completed payout, but the books may show money that never left:
    // the callback is listed for a person, not filed as a mere refusal.
    sim.set_chaos(Chaos::default());
    let failed = json!({ "Result": {
        "ResultType": 0, "ResultCode": 2001, "ResultDesc": "The initiator information is invalid.",
        "OriginatorConversationID": request, "ConversationID": "AG_LATE_FAIL", "TransactionID": "QKL3NOTPAID",
    }});
    // Daraja may send it twice: the same word is one item for a person.
    for _ in 0..2 {
        let posted = app
            .http
            .post(app.url(&format!("/callbacks/mpesa/b2c-result/{token}")))
            .json(&failed)
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), StatusCode::OK);
        app.run_jobs().await;
    }
    assert_eq!(state_of(&app, &lost).await, "completed");
    assert_eq!(app.listed_callbacks().await, ["contradicts_final"]);
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'duplicate'")
            .await,
        1
    );
    let metrics = metrics_text(&app).await;
    assert!(
        value_of(
            &metrics,
            r#"tuma_contradicting_failures_total{kind="payout",state="completed",provider="mpesa"}"#
        ) >= 1.0,
        "{metrics}"
    );
    app.assert_ledger_balanced().await;
}

/// M-Pesa's success, with `receipt`, for intent `id`, which has already
/// ended: refused (a late success when it ended without the money, a
/// duplicate when completed).
async fn success_refused(app: &TestApp, id: &str, receipt: &'static str) {
    use tuma::workflow::engine::{Applied, Cause, Event, PROVIDER_SUCCEEDED};
    let mut event = Event::new(PROVIDER_SUCCEEDED, Cause::Callback, "mpesa");
    event.provider_ref = Some(receipt);
    let applied = app.apply(id.parse().unwrap(), &event).await;
    assert!(matches!(applied, Applied::Rejected { .. }), "{applied:?}");
}

/// `POST /v1/late-successes/{id}/settle` with `body`, as `key`.
async fn settle_late(app: &TestApp, id: &str, key: &str, body: Value) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/v1/late-successes/{id}/settle")))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_success_booked_takes_the_payout_from_its_party_once_the_balance_can_pay_and_the_float_then_matches() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    assert_eq!(open_mpesa_float(&app).await, StatusCode::CREATED);
    app.fund(&app.admin_key, "late-1", "3000", "KES").await;

    // Daraja pays, then loses every word about it; an admin resolves the
    // payout as failed, which gives its party the money back.
    let lost = unresolved_payout_from(&app, &sim, "late-1", "2000").await;
    sim.set_chaos(Chaos::default());
    let held = d("3000") - app.available("late-1", "KES").await;
    assert!(held >= d("2000"), "the amount and its fees: {held}");
    let resolved = resolve(
        &app,
        &lost,
        json!({ "outcome": "failed", "evidence": "no statement line yet" }),
    )
    .await;
    assert_eq!(resolved.status(), StatusCode::OK);
    assert_eq!(app.available("late-1", "KES").await, d("3000"));
    // Then Daraja's delayed result says it was paid: the float is short of
    // the ledger by what the payout took.
    success_refused(&app, &lost, "QKL1LATE01").await;
    refresh_float(&app).await;
    let body: Value = report(&app, "").await.json().await.unwrap();
    assert_eq!(body["floats"][0]["matches"], false, "{body}");
    let short = money(&body["floats"][0]["difference"]);
    assert!(short < Decimal::ZERO, "{body}");

    assert_eq!(
        settle_late(
            &app,
            &lost,
            &app.admin_key,
            json!({ "evidence": "paid", "outcome": "kept" })
        )
        .await
        .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Meanwhile the party spent what it got back: booking would overdraw
    // it, so nothing is written and the late success stays open.
    let spent = completed_payout_from(&app, "late-1", "1000").await;
    let left = app.available("late-1", "KES").await;
    assert!(left < held, "{left} left, {held} to book");
    let evidence = json!({ "evidence": "statement line 4411: paid", "outcome": "booked" });
    let refused = settle_late(&app, &lost, &app.admin_key, evidence.clone()).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let problem: Value = refused.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("insufficient funds"), "{detail}");
    assert_eq!(app.available("late-1", "KES").await, left);
    let body: Value = report(&app, "").await.json().await.unwrap();
    assert_eq!(body["late_successes"][0]["id"], lost.as_str(), "{body}");

    // Credited, the party pays for it: the hold posted again, leg for leg,
    // and the float agrees with the ledger.
    app.fund(&app.admin_key, "late-1", "500", "KES").await;
    let booked = settle_late(&app, &lost, &app.admin_key, evidence.clone()).await;
    assert_eq!(booked.status(), StatusCode::OK);
    let booked: Value = booked.json().await.unwrap();
    assert_eq!(booked["outcome"], "booked", "{booked}");
    assert!(booked["transfer_id"].is_string(), "{booked}");
    assert_eq!(booked["state"], "failed", "the intent stays as it ended");
    assert_eq!(app.available("late-1", "KES").await, left + d("500") - held);
    refresh_float(&app).await;
    let body: Value = report(&app, "").await.json().await.unwrap();
    assert_eq!(body["floats"][0]["matches"], true, "{body}");
    assert_eq!(money(&body["floats"][0]["difference"]), Decimal::ZERO, "{body}");
    assert_eq!(body["late_successes"].as_array().unwrap().len(), 0, "{body}");
    assert_eq!(
        settle_late(&app, &lost, &app.admin_key, evidence).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM ledger_transfers WHERE intent_id = '{lost}' AND kind = 'late_success' AND state = 'posted'"
        ))
        .await,
        1
    );
    assert_eq!(state_of(&app, &spent).await, "completed");
    let settled: Value = app
        .get("/v1/late-successes?status=settled", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settled["data"][0]["outcome"], "booked", "{settled}");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_success_of_a_failed_collection_booked_credits_its_payee_and_recovered_leaves_the_ledger() {
    use crate::common::app::{collection_body, spawn_app};
    use tuma::workflow::engine::{Cause, Event};

    let app = spawn_app().await;
    let collection = |amount: &'static str| {
        let app = &app;
        async move {
            let created: Value = app
                .create(
                    "/v1/collections",
                    &app.key,
                    &uuid::Uuid::new_v4().to_string(),
                    &collection_body(amount, "0754123456"),
                )
                .await
                .json()
                .await
                .unwrap();
            let id = created["id"].as_str().unwrap().to_owned();
            app.apply(
                id.parse().unwrap(),
                &Event::new("prompt_failed", Cause::Api, "vodacom_tz"),
            )
            .await;
            let state: String = sqlx::query_scalar("SELECT state FROM intents WHERE id = $1::uuid")
                .bind(&id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
            assert_eq!(state, "failed");
            success_refused(app, &id, "QKL1LATE01").await;
            id
        }
    };
    let booked = collection("5000").await;
    let recovered = collection("7000").await;
    let before = app.available("vpn-customer-7", "TZS").await;
    let settled = settle_late(
        &app,
        &booked,
        &app.admin_key,
        json!({ "evidence": "paid, statement line 77", "outcome": "booked" }),
    )
    .await;
    assert_eq!(settled.status(), StatusCode::OK);
    assert_eq!(app.available("vpn-customer-7", "TZS").await, before + d("5000"));
    // Said nothing of the outcome: recovered, the ledger left as it was.
    let settled = settle_late(
        &app,
        &recovered,
        &app.admin_key,
        json!({ "evidence": "refunded to the payer, ticket 12" }),
    )
    .await;
    assert_eq!(settled.status(), StatusCode::OK);
    let settled: Value = settled.json().await.unwrap();
    assert_eq!(settled["outcome"], "recovered", "{settled}");
    assert!(settled["transfer_id"].is_null(), "{settled}");
    assert_eq!(app.available("vpn-customer-7", "TZS").await, before + d("5000"));
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c2b_confirmation_refused_at_the_door_stays_on_the_report_until_a_person_reviews_it() {
    let app = crate::common::app::spawn_mpesa_app_with(SimConfig::default(), |mpesa| {
        mpesa.callback_allowlist = vec!["196.201.214.200".into()];
    })
    .await;
    // Daraja does not send a confirmation twice: refused (here, from an
    // address the allow-list does not name), the payment has no other way
    // into the books.
    let notice = json!({
        "TransactionType": "Pay Bill", "TransID": "TKX9000077", "TransTime": "20261205101500",
        "TransAmount": "1000.00", "BusinessShortCode": "174379", "BillRefNumber": "LOAN-1",
        "InvoiceNumber": "", "OrgAccountBalance": "", "ThirdPartyTransID": "",
        "MSISDN": "2547 ***** 678", "FirstName": "John", "MiddleName": "", "LastName": "",
    });
    let answer = app.post_c2b_confirmation(notice.to_string().into_bytes()).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let report = app.reconciliation_report().await;
    assert!(!report.ok);
    let listed: Vec<(i64, &str, &str)> = report
        .unmatched_callbacks
        .iter()
        .map(|line| (line.inbox_id, line.kind.as_str(), line.outcome.as_str()))
        .collect();
    let [(inbox_id, "c2b-confirmation", "refused_source")] = listed[..] else {
        panic!("{listed:?}");
    };

    let review = |key: &str, id: String, evidence: &str| {
        let request = app
            .http
            .post(app.url(&format!("/v1/callbacks/{id}/review")))
            .bearer_auth(key)
            .json(&json!({ "evidence": evidence }));
        async move { request.send().await.unwrap() }
    };
    // Retention keeps it, however old, while nobody has reviewed it.
    let later = chrono::Utc::now() + chrono::Duration::days(365);
    tuma::store::reports::purge_inbox(&app.db.pool, later, 1000)
        .await
        .unwrap();
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM callback_inbox WHERE id = {inbox_id}"))
            .await,
        1
    );
    let evidence = "credited by hand against LOAN-1, Daraja statement line TKX9000077";
    assert_eq!(
        review(&app.key, inbox_id.to_string(), evidence).await.status(),
        StatusCode::FORBIDDEN,
        "admins only"
    );
    assert_eq!(
        review(&app.admin_key, inbox_id.to_string(), "  ").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        review(&app.admin_key, "999999".into(), evidence).await.status(),
        StatusCode::NOT_FOUND
    );
    let reviewed = review(&app.admin_key, inbox_id.to_string(), evidence).await;
    assert_eq!(reviewed.status(), StatusCode::OK);
    let reviewed: Value = reviewed.json().await.unwrap();
    assert_eq!(reviewed["reviewed_by"], "shop-admin");
    assert_eq!(reviewed["evidence"], evidence);
    assert_eq!(reviewed["outcome"], "refused_source");
    let again = review(&app.admin_key, inbox_id.to_string(), evidence).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let problem: Value = again.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("shop-admin"), "{problem}");
    assert!(app.reconciliation_report().await.unmatched_callbacks.is_empty());
    tuma::store::reports::purge_inbox(&app.db.pool, later, 1000)
        .await
        .unwrap();
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM callback_inbox WHERE id = {inbox_id}"))
            .await,
        0,
        "reviewed, it goes with the rest"
    );

    // One not processed yet has nothing to review either.
    let waiting: i64 = sqlx::query_scalar(
        "INSERT INTO callback_inbox (provider, kind, token, body) VALUES ('mpesa', 'stk', 'ab', '{}') RETURNING id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        review(&app.admin_key, waiting.to_string(), evidence).await.status(),
        StatusCode::CONFLICT
    );
    // A callback the report does not list (a validation refused at the
    // door: Daraja then applies the registered default, and a payment it
    // lets through is confirmed) has nothing to review.
    let validation: i64 = {
        let mpesa = app.config.mpesa.clone().unwrap();
        let url =
            tuma::providers::mpesa::callback_url(&mpesa, "c2b-validation", &tuma::providers::mpesa::c2b_token(&mpesa));
        let response = app.http.post(url).json(&notice).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        sqlx::query_scalar("SELECT max(id) FROM callback_inbox")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    assert_eq!(
        review(&app.admin_key, validation.to_string(), evidence).await.status(),
        StatusCode::CONFLICT
    );
}
