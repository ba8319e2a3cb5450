//! Money and policy through the API: the ledger's holds, posts and voids,
//! balances that cannot be overdrawn, KYC limits, AML review, maker-checker
//! approvals, FX quotes, auto-payouts and batches. Every test ends with the
//! ledger's invariants.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tuma::simulator::mpesa::SimConfig;

use crate::common::app::{spawn_app, spawn_app_holding_payouts, spawn_app_with, spawn_mpesa_app, TestApp};
use crate::common::eventually;

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn payout_from(party: &str, amount: &str) -> Value {
    json!({ "amount": amount, "currency": "KES", "recipient": { "msisdn": "0712345678" },
            "party_id": party, "reference": "earnings" })
}

async fn create_payout(app: &TestApp, body: &Value) -> reqwest::Response {
    app.create("/v1/payouts", &app.key, &uuid::Uuid::new_v4().to_string(), body)
        .await
}

async fn created(app: &TestApp, body: &Value) -> Value {
    let response = create_payout(app, body).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn post_json(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn fetch(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/payouts/{id}"), &app.key)
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_payout_holds_its_amount_and_fees_and_a_cancel_releases_them() {
    let app = spawn_app_holding_payouts().await;
    app.set_party(&app.admin_key, "maria", 1).await;
    app.fund(&app.admin_key, "maria", "5000", "KES").await;
    let payout = created(&app, &payout_from("maria", "1500")).await;
    // 1,500 to the phone, 37.50 platform fee (2.5 %), 50 M-Pesa tariff.
    assert_eq!(payout["fees"]["sent"], "1587.50");
    assert_eq!(payout["fees"]["platform_fee"], "37.50");
    assert_eq!(payout["fees"]["provider_fee"], "50.00");
    assert_eq!(payout["fees"]["received"], "1500.00");
    assert_eq!(app.available("maria", "KES").await, d("3412.50"));
    let balances: Value = app
        .get("/v1/parties/maria/balances", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(balances["accounts"][0]["held"], "1587.50");
    assert_eq!(balances["accounts"][0]["posted"], "5000.00");

    let cancelled = app
        .post(
            &format!("/v1/payouts/{}/cancel", payout["id"].as_str().unwrap()),
            &app.key,
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(app.available("maria", "KES").await, d("5000"));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_payout_the_balance_cannot_cover_is_refused_and_nothing_is_created() {
    let app = spawn_app().await;
    app.set_party(&app.admin_key, "maria", 1).await;
    app.fund(&app.admin_key, "maria", "1000", "KES").await;
    let response = create_payout(&app, &payout_from("maria", "1000")).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:insufficient-funds");
    assert_eq!(problem["available"], "1000.00");
    assert_eq!(problem["needed"], "1050.00");
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE party_id = 'maria'").await,
        0
    );
    assert_eq!(app.available("maria", "KES").await, d("1000"));
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_payouts_never_overdraw_a_balance() {
    let app = spawn_app().await;
    app.set_party(&app.admin_key, "busy", 2).await;
    // Each 400 KES payout costs 400 + 10 platform fee + 11 tariff = 421:
    // 10,000 covers 23 of them, not 30.
    app.fund(&app.admin_key, "busy", "10000", "KES").await;
    let body = payout_from("busy", "400");
    let attempts = (0..30).map(|_| create_payout(&app, &body));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    let accepted = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!((accepted, refused), (23, 7), "{statuses:?}");
    assert_eq!(
        app.available("busy", "KES").await,
        d("10000") - d("421") * Decimal::from(23)
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_payouts_never_exceed_a_daily_limit() {
    let app = spawn_app().await;
    // Tier 0: 100 USD a day. 3,000 KES + 75 platform fee + 75 tariff =
    // 3,150 KES is 24.23 USD at 130 KES/USD: four fit in 100 USD, not five.
    app.set_party(&app.admin_key, "newcomer", 0).await;
    app.fund(&app.admin_key, "newcomer", "100000", "KES").await;
    let body = payout_from("newcomer", "3000");
    let attempts = (0..12).map(|_| create_payout(&app, &body));
    let responses = futures::future::join_all(attempts).await;
    let mut accepted = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => accepted += 1,
            StatusCode::UNPROCESSABLE_ENTITY => {
                let problem: Value = response.json().await.unwrap();
                assert_eq!(problem["type"], "urn:tuma:problem:limit-exceeded", "{problem}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 4);
    let used: Decimal = sqlx::query_scalar("SELECT sum(usd_equivalent) FROM intents WHERE party_id = 'newcomer'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(used <= d("100"), "{used}");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_tier_0_party_asking_for_150_dollars_in_a_day_is_refused_with_the_limit_named() {
    let app = spawn_app().await;
    app.set_party(&app.admin_key, "amani", 0).await;
    app.fund(&app.admin_key, "amani", "500", "USD").await;
    let first = quote(&app, "amani", "80").await;
    created(
        &app,
        &json!({ "amount": first["received"], "currency": "KES", "recipient": { "msisdn": "0712345678" },
                 "party_id": "amani", "reference": "first", "quote_id": first["id"] }),
    )
    .await;
    let second = quote(&app, "amani", "70").await;
    let response = create_payout(
        &app,
        &json!({ "amount": second["received"], "currency": "KES", "recipient": { "msisdn": "0712345678" },
                 "party_id": "amani", "reference": "second", "quote_id": second["id"] }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:limit-exceeded");
    assert_eq!(problem["limit"], "KYC tier 0 daily");
    assert_eq!(problem["limit_usd"], "100");
    assert_eq!(problem["used_usd"], "80.00");
    assert_eq!(problem["left_usd"], "20.00");
    assert_eq!(problem["asked_usd"], "70.00");
    // Nothing was held for the refused payout, and its quote is still free.
    assert_eq!(app.available("amani", "USD").await, d("420.00"));
    let unused: Value = app
        .get(&format!("/v1/quotes/{}", second["id"].as_str().unwrap()), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unused["used_by"], Value::Null);
    app.assert_ledger_balanced().await;
}

async fn quote(app: &TestApp, party: &str, usd: &str) -> Value {
    let response = post_json(
        app,
        "/v1/quotes",
        &app.key,
        &json!({ "party_id": party, "source_amount": usd, "source_currency": "USD", "target_currency": "KES" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_fifty_dollar_sale_is_quoted_and_paid_with_a_breakdown_that_adds_up() {
    // The worked example's 75 KES tariff.
    let app = spawn_app_with("[fees.tariffs.mpesa]\nKES = [{ up_to = \"250000\", fee = \"75\" }]\n").await;
    app.set_party(&app.admin_key, "wanjiru", 1).await;
    app.fund(&app.admin_key, "wanjiru", "50", "USD").await;
    let quote = quote(&app, "wanjiru", "50").await;
    let b = &quote["breakdown"];
    assert_eq!(quote["rate"], "130");
    assert_eq!(quote["rate_source"], "config");
    assert_eq!(b["sent"], "50.00");
    assert_eq!(b["platform_fee"], "1.25");
    assert_eq!(b["fx_spread"], "0.73");
    assert_eq!(b["conversion_fee"], "0.98");
    assert_eq!(b["converted_source"], "47.04");
    assert_eq!(b["converted"], "6115.20");
    assert_eq!(b["provider_fee"], "75.00");
    assert_eq!(b["rounding"], "0.20");
    assert_eq!(b["received"], "6040.00");
    let parts: Decimal = ["platform_fee", "fx_spread", "conversion_fee", "converted_source"]
        .iter()
        .map(|k| d(b[k].as_str().unwrap()))
        .sum();
    assert_eq!(parts, d("50.00"));

    let payout = created(
        &app,
        &json!({ "amount": "6040", "currency": "KES", "recipient": { "msisdn": "0712345678" },
                 "party_id": "wanjiru", "reference": "sale-1", "quote_id": quote["id"] }),
    )
    .await;
    assert_eq!(payout["quote_id"], quote["id"]);
    assert_eq!(payout["fees"], quote["breakdown"]);
    assert_eq!(payout["usd_equivalent"], "50.00");
    assert_eq!(app.available("wanjiru", "USD").await, d("0"));
    // A quote pays one payout.
    let again = create_payout(
        &app,
        &json!({ "amount": "6040", "currency": "KES", "recipient": { "msisdn": "0712345678" },
                 "party_id": "wanjiru", "reference": "sale-1b", "quote_id": quote["id"] }),
    )
    .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:quote-used");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn an_expired_quote_is_a_conflict() {
    let app = spawn_app().await;
    app.set_party(&app.admin_key, "wanjiru", 1).await;
    app.fund(&app.admin_key, "wanjiru", "50", "USD").await;
    let quote = quote(&app, "wanjiru", "20").await;
    app.advance(Duration::from_secs(301));
    let response = create_payout(
        &app,
        &json!({ "amount": quote["received"], "currency": "KES", "recipient": { "msisdn": "0712345678" },
                 "party_id": "wanjiru", "reference": "late", "quote_id": quote["id"] }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:quote-expired");
    assert_eq!(app.available("wanjiru", "USD").await, d("50.00"));
}

#[tokio::test]
async fn a_600_dollar_payout_is_flagged_and_waits_for_approval_then_goes_on() {
    let app = spawn_app().await;
    app.set_party(&app.admin_key, "big", 2).await;
    app.fund(&app.admin_key, "big", "200000", "KES").await;
    // 76,000 KES + fees ≈ 600 USD.
    let payout = created(&app, &payout_from("big", "76000")).await;
    let id = payout["id"].as_str().unwrap();
    assert_eq!(payout["state"], "awaiting_approval");
    assert_eq!(payout["approvals_required"], 1);
    let detail = fetch(&app, id).await;
    assert_eq!(detail["flags"][0]["rule"], "aml_large_payout");
    assert_eq!(detail["flags"][0]["action"], "review");
    let pending: Value = app
        .get("/v1/approvals?state=pending", &app.approver_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["data"][0]["id"], id);

    // Created waiting for approval: no release job was ever enqueued.
    app.work("default").await;
    assert_eq!(fetch(&app, id).await["state"], "awaiting_approval");

    let decided = post_json(
        &app,
        &format!("/v1/payouts/{id}/approve"),
        &app.approver_key,
        &json!({}),
    )
    .await;
    assert_eq!(decided.status(), StatusCode::OK);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!(decided["outcome"], "approved");
    assert_eq!(decided["payout"]["state"], "pending");
    app.work("default").await;
    assert_eq!(fetch(&app, id).await["state"], "processing");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn above_the_second_threshold_two_different_approvers_are_needed_and_the_maker_cannot_approve() {
    let app = spawn_app().await;
    app.set_party(&app.admin_key, "ngo", 2).await;
    app.fund(&app.admin_key, "ngo", "2000000", "KES").await;
    // Three 240,000 KES payouts: each is over 500 USD (one approval), the
    // batch is over 5,000 USD, so each needs two different approvers. The
    // maker holds approvals:write too, to show the rule is not about scope.
    let maker = tuma::api::create_key(
        &app.db.pool,
        "maker-mo",
        "shop",
        &[tuma::api::Scope::IntentsWrite, tuma::api::Scope::ApprovalsWrite],
    )
    .await
    .unwrap();
    let body = json!({ "reference": "relief-wave-1", "payouts": [
        payout_from("ngo", "240000"), payout_from("ngo", "240000"), payout_from("ngo", "240000") ] });
    let response = app.create("/v1/payout-batches", &maker, "batch-1", &body).await;
    let status = response.status();
    let batch: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let ids: Vec<String> = batch["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["state"], "awaiting_approval");
            assert_eq!(p["approvals_required"], 2);
            p["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let first = &ids[0];

    let own = post_json(&app, &format!("/v1/payouts/{first}/approve"), &maker, &json!({})).await;
    assert_eq!(own.status(), StatusCode::FORBIDDEN);
    let problem: Value = own.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:not-allowed");

    let one: Value = post_json(
        &app,
        &format!("/v1/payouts/{first}/approve"),
        &app.approver_key,
        &json!({}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(one["outcome"], "waiting");
    assert_eq!(one["payout"]["state"], "awaiting_approval");
    let same_again = post_json(
        &app,
        &format!("/v1/payouts/{first}/approve"),
        &app.approver_key,
        &json!({}),
    )
    .await;
    assert_eq!(same_again.status(), StatusCode::CONFLICT, "one approver counts once");
    let two: Value = post_json(
        &app,
        &format!("/v1/payouts/{first}/approve"),
        &app.second_approver_key,
        &json!({ "reason": "matches the relief plan" }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(two["outcome"], "approved");
    assert_eq!(two["payout"]["state"], "pending");

    // The rest of the batch is approved as one, by both approvers.
    let batch_id = batch["id"].as_str().unwrap();
    let path = format!("/v1/payout-batches/{batch_id}/approve");
    let outcome: Value = app.post(&path, &app.approver_key).await.json().await.unwrap();
    assert_eq!(outcome["outcomes"][&ids[1]], "waiting (1 of 2)");
    let outcome: Value = app.post(&path, &app.second_approver_key).await.json().await.unwrap();
    assert_eq!(outcome["outcomes"][&ids[1]], "approved");
    assert_eq!(outcome["outcomes"][&ids[2]], "approved");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_rejection_and_an_expired_approval_both_release_the_hold() {
    let app = spawn_app().await;
    app.set_party(&app.admin_key, "big", 2).await;
    app.fund(&app.admin_key, "big", "200000", "KES").await;
    let rejected = created(&app, &payout_from("big", "70000")).await;
    let expiring = created(&app, &payout_from("big", "70000")).await;
    assert!(app.available("big", "KES").await < d("60000"));

    let no_reason = post_json(
        &app,
        &format!("/v1/payouts/{}/reject", rejected["id"].as_str().unwrap()),
        &app.approver_key,
        &json!({}),
    )
    .await;
    assert_eq!(no_reason.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let response = post_json(
        &app,
        &format!("/v1/payouts/{}/reject", rejected["id"].as_str().unwrap()),
        &app.approver_key,
        &json!({ "reason": "recipient not on the contract" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(fetch(&app, rejected["id"].as_str().unwrap()).await["state"], "rejected");

    // Three days pass with nobody deciding.
    app.advance(Duration::from_secs(3 * 86_400 + 1));
    app.work("default").await;
    assert_eq!(fetch(&app, expiring["id"].as_str().unwrap()).await["state"], "expired");
    assert_eq!(app.available("big", "KES").await, d("200000"));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_batch_is_created_whole_or_not_at_all() {
    let app = spawn_app().await;
    app.set_party(&app.admin_key, "payroll", 2).await;
    app.fund(&app.admin_key, "payroll", "3000", "KES").await;
    // The third payout does not fit the balance left by the first two.
    let body = json!({ "reference": "wages", "payouts": [
        payout_from("payroll", "1000"), payout_from("payroll", "1000"), payout_from("payroll", "1000") ] });
    let response = app.create("/v1/payout-batches", &app.key, "wages-1", &body).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "payouts[2]");
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE party_id = 'payroll'")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM payout_batches").await, 0);
    assert_eq!(app.available("payroll", "KES").await, d("3000"));

    // A field error anywhere refuses the batch too, naming the payout.
    let mut bad = body.clone();
    bad["payouts"][1]["amount"] = json!("-5");
    let response = app.create("/v1/payout-batches", &app.key, "wages-2", &bad).await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "payouts[1].amount");

    let fits = json!({ "reference": "wages", "payouts": [
        payout_from("payroll", "1000"), payout_from("payroll", "1000") ] });
    let response = app.create("/v1/payout-batches", &app.key, "wages-3", &fits).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE party_id = 'payroll'")
            .await,
        2
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn crediting_past_the_threshold_pays_out_once() {
    let app = spawn_app().await;
    let profile = json!({ "role": "creator", "kyc_tier": 1, "country": "KE", "payout_msisdn": "0712345678" });
    app.put_party(&app.admin_key, "kamau", &profile).await;
    let settings = app
        .http
        .put(app.url("/v1/parties/kamau/payout-settings"))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "auto_payout": true, "threshold": "100", "currency": "KES" }))
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), StatusCode::OK);

    app.fund(&app.admin_key, "kamau", "60", "KES").await;
    app.work("default").await;
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE party_id = 'kamau'").await,
        0
    );
    // 60 + 90 = 150 crosses 100: one payout of the balance, fees taken
    // from it (150 - 3.75 platform fee - 11 tariff = 135.25 → 135 whole).
    app.fund(&app.admin_key, "kamau", "90", "KES").await;
    app.work("default").await;
    let payouts: Vec<(Decimal, String)> =
        sqlx::query_as("SELECT amount, created_by FROM intents WHERE party_id = 'kamau' AND kind = 'payout'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(payouts, vec![(d("135.00"), "auto-payout".to_owned())]);
    assert_eq!(app.available("kamau", "KES").await, d("0"));
    // The same crossing's job run again (a replay) pays nothing more: the
    // balance it was about is gone.
    let args: Value = sqlx::query_scalar("SELECT args FROM tuma_jobs WHERE kind = 'party.auto_payout'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let job: tuma::policy::auto_payout::AutoPayoutJob = serde_json::from_value(args).unwrap();
    let mut tx = app.db.pool.begin().await.unwrap();
    app.engine
        .jobs()
        .enqueue(&mut tx, &tuma::runner::NewJob::new(&job))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.work("default").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE party_id = 'kamau'").await,
        1
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn an_auto_payout_above_what_its_provider_carries_is_paid_in_parts_it_carries() {
    let app = spawn_app().await;
    // Airtel carries at most 150,000 KES a payout and charges no tariff;
    // M-Pesa 250,000, where its tariff bands end too.
    for (party, msisdn, provider, credit, expected) in [
        ("wanjiru", "0733345678", "airtel", "200000", ["150000", "45093"]),
        ("otieno", "0712345678", "mpesa", "300000", ["250000", "42448"]),
    ] {
        let profile = json!({ "role": "creator", "kyc_tier": 2, "country": "KE",
                              "payout_msisdn": msisdn, "payout_provider": provider });
        app.put_party(&app.admin_key, party, &profile).await;
        let settings = app
            .http
            .put(app.url(&format!("/v1/parties/{party}/payout-settings")))
            .bearer_auth(&app.admin_key)
            .json(&json!({ "auto_payout": true, "threshold": "100", "currency": "KES" }))
            .send()
            .await
            .unwrap();
        assert_eq!(settings.status(), StatusCode::OK);
        app.fund(&app.admin_key, party, credit, "KES").await;
        app.work("default").await;
        let payouts: Vec<(Decimal, String)> = sqlx::query_as(
            "SELECT amount, provider FROM intents WHERE party_id = $1 AND kind = 'payout' ORDER BY created_at, id",
        )
        .bind(party)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        let expected: Vec<(Decimal, String)> = expected.iter().map(|a| (d(a), provider.to_owned())).collect();
        // The first carries the provider's most, with its fees on top; the
        // rest follows at once, its fees taken from it.
        assert_eq!(payouts, expected, "{party}");
        assert_eq!(app.available(party, "KES").await, d("0"), "{party}");
    }
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn crediting_makes_the_party_and_the_same_reference_twice_is_a_no_op_and_a_different_amount_a_conflict() {
    let app = spawn_app().await;
    let credit = |amount: &'static str| {
        let app = &app;
        async move {
            post_json(
                app,
                "/v1/parties/zawadi/credits",
                &app.admin_key,
                &json!({ "amount": amount, "currency": "KES", "reference": "sale-7" }),
            )
            .await
        }
    };
    assert_eq!(credit("500").await.status(), StatusCode::CREATED);
    let replay = credit("500").await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.json::<Value>().await.unwrap()["created"], false);
    let conflict = credit("600").await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let problem: Value = conflict.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("was +500.00, now +600"), "{detail}");
    assert_eq!(app.available("zawadi", "KES").await, d("500"));
    // The first credit made the party, with the default tier, as a first
    // payout would have.
    let party = app.get("/v1/parties/zawadi", &app.key).await;
    assert_eq!(party.status(), StatusCode::OK);
    let party: Value = party.json().await.unwrap();
    assert_eq!(party["kyc_tier"], app.config.policy.default_kyc_tier);
    // Crediting needs parties:write.
    let refused = post_json(
        &app,
        "/v1/parties/zawadi/credits",
        &app.key,
        &json!({ "amount": "1", "currency": "KES", "reference": "x" }),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    app.assert_ledger_balanced().await;
}

/// An admin's credit of 500 KES to `party` under `reference`; its status.
async fn credit_500(app: &TestApp, party: &str, reference: &str) -> StatusCode {
    post_json(
        app,
        &format!("/v1/parties/{party}/credits"),
        &app.admin_key,
        &json!({ "amount": "500", "currency": "KES", "reference": reference }),
    )
    .await
    .status()
}

#[tokio::test]
async fn credits_whose_party_and_reference_split_at_a_colon_differently_are_two_credits() {
    let app = spawn_app().await;
    let credit = |party, reference| credit_500(&app, party, reference);
    // Party ids and references may both hold a colon: "a:b" with "c" and
    // "a" with "b:c" are different credits, not a replay of each other.
    assert_eq!(credit("shop:7", "sale").await, StatusCode::CREATED);
    assert_eq!(credit("shop", "7:sale").await, StatusCode::CREATED);
    assert_eq!(app.available("shop:7", "KES").await, d("500"));
    assert_eq!(app.available("shop", "KES").await, d("500"));
    // Each is still its own replay.
    assert_eq!(credit("shop", "7:sale").await, StatusCode::OK);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_credit_recorded_under_the_old_unescaped_key_is_not_credited_again() {
    let app = spawn_app().await;
    let credit = |party, reference| credit_500(&app, party, reference);
    // Rewrites a credit's key as a build before escaped keys wrote it:
    // the parts joined as they were.
    let unescaped = |party: &'static str, reference: &'static str| {
        let app = &app;
        async move {
            let rewritten = sqlx::query(
                "UPDATE ledger_transfers SET key = 'credit:' || owner || ':' || $1 || ':' || $2
                 WHERE kind = 'credit' AND description = 'credit ' || $2
                   AND key = 'credit:' || owner || ':' || replace(replace($1, '%', '%25'), ':', '%3A')
                                      || ':' || replace(replace($2, '%', '%25'), ':', '%3A')",
            )
            .bind(party)
            .bind(reference)
            .execute(&app.db.pool)
            .await
            .unwrap();
            assert_eq!(rewritten.rows_affected(), 1);
        }
    };
    let migrate = || async {
        sqlx::raw_sql(include_str!("../../migrations/20261205000027_credit_keys_escaped.sql"))
            .execute(&app.db.pool)
            .await
            .unwrap();
    };
    let written = [("shop:7", "50%off:spring"), ("p", "a:b"), ("p", "a%3Ab"), ("q:1", "r")];
    for (party, reference) in written {
        assert_eq!(credit(party, reference).await, StatusCode::CREATED);
    }
    for (party, reference) in written {
        unescaped(party, reference).await;
    }
    // One sent again between the two changes was credited a second time
    // under the new key; the migration must not stop on it.
    assert_eq!(credit("q:1", "r").await, StatusCode::CREATED);
    // Party p's "a%3Ab", unescaped, has the key "a:b" takes escaped: the
    // rewrite must not trip on it, whatever order the rows come in.
    migrate().await;
    // Sent again after the upgrade, each finds its first one.
    for (party, reference) in written {
        assert_eq!(credit(party, reference).await, StatusCode::OK, "{party} {reference}");
    }
    assert_eq!(app.available("shop:7", "KES").await, d("500"));
    assert_eq!(app.available("p", "KES").await, d("1000"));
    assert_eq!(
        app.available("q:1", "KES").await,
        d("1000"),
        "the double credit stays in the books"
    );
    // The migration leaves keys already in the new form as they are.
    let keys = || async {
        sqlx::query_scalar::<_, String>("SELECT key FROM ledger_transfers WHERE kind = 'credit' ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap()
    };
    let before = keys().await;
    migrate().await;
    assert_eq!(keys().await, before);
    assert!(
        before.iter().any(|key| key.ends_with(":shop%3A7:50%25off%3Aspring")),
        "{before:?}"
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn account_entries_page_newest_first_and_stay_within_their_owner() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.fund(&app.admin_key, "pages", &format!("{}", 10 + i), "KES").await;
    }
    let balances: Value = app
        .get("/v1/parties/pages/balances", &app.key)
        .await
        .json()
        .await
        .unwrap();
    let account = balances["accounts"][0]["id"].as_str().unwrap().to_owned();
    let first: Value = app
        .get(&format!("/v1/ledger/accounts/{account}/entries?limit=3"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    let amounts: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["14.00", "13.00", "12.00"]);
    assert_eq!(first["data"][0]["side"], "credit");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(
            &format!("/v1/ledger/accounts/{account}/entries?limit=3&cursor={cursor}"),
            &app.key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["data"].as_array().unwrap().len(), 2);
    assert_eq!(second["next_cursor"], Value::Null);
    let other = app
        .get(&format!("/v1/ledger/accounts/{account}/entries"), &app.other_key)
        .await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_payout_posts_its_hold_and_a_failed_one_voids_it() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    app.set_party(&app.admin_key, "wafula", 1).await;
    app.fund(&app.admin_key, "wafula", "10000", "KES").await;
    let paid = created(&app, &payout_from("wafula", "1500")).await;
    // An unregistered number: M-Pesa refuses it.
    let mut refused_body = payout_from("wafula", "1000");
    refused_body["recipient"]["msisdn"] = json!("0712345009");
    let refused = created(&app, &refused_body).await;
    for (payout, state) in [(&paid, "completed"), (&refused, "failed")] {
        let id = payout["id"].as_str().unwrap().to_owned();
        eventually(
            Duration::from_secs(20),
            &format!("payout to become {state}"),
            || async {
                app.run_jobs().await;
                fetch(&app, &id).await["state"] == state
            },
        )
        .await;
    }
    let balances: Value = app
        .get("/v1/parties/wafula/balances", &app.key)
        .await
        .json()
        .await
        .unwrap();
    let account = &balances["accounts"][0];
    assert_eq!(account["posted"], "8412.50", "10,000 less 1,500 + 37.50 + 50");
    assert_eq!(account["held"], "0.00");
    let float: Decimal = sqlx::query_scalar(
        "SELECT sum(e.amount) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
         JOIN ledger_transfers t ON t.id = e.transfer_id
         WHERE a.kind = 'float' AND a.ref = 'mpesa' AND t.state = 'posted'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(float, d("1550.00"), "the payout and its tariff left the float");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn donations_fill_a_campaign_bucket_and_the_ngo_is_paid_from_it_only_while_it_holds_enough() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    for (i, amount) in ["2000", "3000"].iter().enumerate() {
        let body = json!({ "amount": amount, "currency": "KES", "payer": { "msisdn": format!("072200001{i}") },
                           "party_id": "donor-x", "reference": "flood", "campaign_id": "flood-relief" });
        let response = app
            .create("/v1/collections", &app.key, &format!("donation-{i}"), &body)
            .await;
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        eventually(Duration::from_secs(20), "donation to complete", || async {
            app.run_jobs().await;
            app.get(&format!("/v1/collections/{id}"), &app.key)
                .await
                .json::<Value>()
                .await
                .unwrap()["state"]
                == "completed"
        })
        .await;
    }
    let bucket: Value = app
        .get("/v1/campaigns/flood-relief/balances", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bucket["accounts"][0]["available"], "5000.00");
    app.set_party(&app.admin_key, "red-cross", 2).await;
    let mut too_much = payout_from("red-cross", "4900");
    too_much["campaign_id"] = json!("flood-relief");
    let response = create_payout(&app, &too_much).await;
    assert_eq!(
        response.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "4,900 + fees > 5,000"
    );
    let mut fits = payout_from("red-cross", "4000");
    fits["campaign_id"] = json!("flood-relief");
    let payout = created(&app, &fits).await;
    assert_eq!(payout["campaign_id"], "flood-relief");
    let bucket: Value = app
        .get("/v1/campaigns/flood-relief/balances", &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        bucket["accounts"][0]["available"], "825.00",
        "5,000 - 4,000 - 100 fee - 75 tariff"
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn blocked_countries_and_velocity_blocks_are_refused_with_their_rule() {
    let app = spawn_app_with(
        "[policy]\nblocked_countries = [\"KE\"]\nvelocity = [{ name = \"two_an_hour\", window_s = 3600, max_count = 2, action = \"block\" }]\n",
    )
    .await;
    let response = create_payout(&app, &payout_from("creator-42", "100")).await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:blocked-country", "{problem}");

    let app = spawn_app_with(
        "[policy]\nvelocity = [{ name = \"two_an_hour\", window_s = 3600, max_count = 2, action = \"block\" }]\n",
    )
    .await;
    created(&app, &payout_from("creator-42", "100")).await;
    created(&app, &payout_from("creator-42", "100")).await;
    let response = create_payout(&app, &payout_from("creator-42", "100")).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tuma:problem:velocity-blocked");
    assert!(problem["detail"].as_str().unwrap().contains("two_an_hour"));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_flag_rule_records_its_flag_and_lets_the_payout_go_on() {
    let app = spawn_app_with(
        "[policy]\nvelocity = [{ name = \"second_in_an_hour\", window_s = 3600, max_count = 1, action = \"flag\" }]\n",
    )
    .await;
    let first = created(&app, &payout_from("creator-42", "100")).await;
    let second = created(&app, &payout_from("creator-42", "100")).await;
    assert!(fetch(&app, first["id"].as_str().unwrap()).await["flags"]
        .as_array()
        .unwrap()
        .is_empty());
    let detail = fetch(&app, second["id"].as_str().unwrap()).await;
    assert_eq!(detail["state"], "processing", "flagged, and on its way all the same");
    assert_eq!(detail["approvals_required"], 0);
    assert_eq!(detail["flags"][0]["rule"], "second_in_an_hour");
    assert_eq!(detail["flags"][0]["action"], "flag");
    assert_eq!(detail["flags"][0]["detail"], "2 payouts in 3600 s (at most 1)");
    app.assert_ledger_balanced().await;
}

fn payout_intent(party: &str, amount: &str) -> tuma::workflow::engine::NewIntent {
    use tuma::domain::{Country, Currency, Money, Msisdn, PartyId};
    tuma::workflow::engine::NewIntent {
        kind: "payout".into(),
        owner: "shop".into(),
        created_by: "shop-backend".into(),
        party_id: PartyId::parse(party).unwrap(),
        amount: Money::parse(amount, Currency::KES).unwrap(),
        msisdn: Msisdn::parse("0712345678", Country::KE).unwrap(),
        provider: "mpesa".into(),
        reference: "earnings".into(),
        metadata: json!({}),
        terms: Default::default(),
    }
}

#[tokio::test]
async fn payouts_admitted_together_each_see_the_holds_and_limits_of_those_before_them() {
    use tuma::policy::Together;
    let app = spawn_app().await;
    // Tier 0: 100 USD a day, and 3,150 KES (3,000 with fees) is 24.23 USD:
    // four fit, not five.
    app.set_party(&app.admin_key, "newcomer", 0).await;
    app.fund(&app.admin_key, "newcomer", "100000", "KES").await;
    // 10,000 KES covers 23 payouts of 400 KES (421 with fees), not 30.
    app.set_party(&app.admin_key, "busy", 2).await;
    app.fund(&app.admin_key, "busy", "10000", "KES").await;
    // A party seen for the first time has no balance to lock yet.
    let mut payouts = vec![payout_intent("stranger", "100")];
    for i in 0..30 {
        payouts.push(payout_intent("busy", "400"));
        if i < 6 {
            payouts.push(payout_intent("newcomer", "3000"));
        }
    }
    let parties: Vec<String> = payouts.iter().map(|p| p.party_id.as_str().to_owned()).collect();

    let policy = tuma::policy::Policy::from_config(&app.config).unwrap();
    let mut tx = app.db.pool.begin().await.unwrap();
    let named = vec![false; payouts.len()];
    let outcomes = policy
        .admit_together(&app.engine, &mut tx, payouts, &named)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let admitted = |party: &str| -> Vec<bool> {
        parties
            .iter()
            .zip(&outcomes)
            .filter(|(p, _)| p.as_str() == party)
            .map(|(_, o)| matches!(o, Together::Admitted(_)))
            .collect()
    };
    // In order: the first that fit are admitted, the rest left to be
    // admitted (or refused) alone.
    assert_eq!(admitted("newcomer"), [vec![true; 4], vec![false; 2]].concat());
    assert_eq!(admitted("busy"), [vec![true; 23], vec![false; 7]].concat());
    assert_eq!(admitted("stranger"), vec![false]);
    for outcome in &outcomes {
        if let Together::Admitted(row) = outcome {
            // Nothing holds these back at release: handed on as created.
            assert_eq!((row.state.as_str(), row.state_version), ("processing", 1));
            assert!(row.usd_equivalent.is_some() && row.fees.is_some(), "{row:?}");
            // Its request id is committed with it (rule 1), a UUID.
            let request_id = row.provider_ref.as_deref().expect("a request id from creation");
            assert!(request_id.parse::<uuid::Uuid>().is_ok(), "{request_id}");
        }
    }
    // Each was written with its submit and its status poll; none with a
    // release job.
    let actions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(args->>'action', args->>'timer'), count(*) FROM tuma_jobs
         WHERE kind IN ('workflow.action', 'workflow.timer') GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(actions, vec![("status_poll".to_owned(), 27), ("submit".to_owned(), 27)]);
    assert_eq!(
        app.available("busy", "KES").await,
        d("10000") - d("421") * Decimal::from(23)
    );
    assert_eq!(
        app.available("newcomer", "KES").await,
        d("100000") - d("3150") * Decimal::from(4)
    );
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE party_id = 'stranger'")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM parties WHERE id = 'stranger'").await, 0);
    // What was left alone is refused alone, with its reason.
    let refused = create_payout(&app, &payout_from("busy", "400")).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = create_payout(&app, &payout_from("newcomer", "3000")).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_payout_routed_by_its_prefix_is_sent_back_when_its_partys_settings_name_another_provider() {
    use tuma::domain::{Country, Msisdn};
    use tuma::policy::Together;
    let app = spawn_app().await;
    app.fund(&app.admin_key, "creator-7", "100000", "KES").await;
    let settings = json!({ "role": "creator", "kyc_tier": 2, "country": "KE",
                           "payout_msisdn": "0733345678", "payout_provider": "airtel" });
    app.put_party(&app.admin_key, "creator-7", &settings).await;
    let mut to_airtel = payout_intent("creator-7", "100");
    to_airtel.msisdn = Msisdn::parse("0733345678", Country::KE).unwrap();
    to_airtel.provider = "airtel".into();
    // M-Pesa by the prefix, where the settings say Airtel: sent back. M-Pesa
    // named by the request: the settings do not matter. Airtel by the
    // prefix, as the settings say: admitted.
    let payouts = vec![
        payout_intent("creator-7", "100"),
        payout_intent("creator-7", "100"),
        to_airtel,
    ];
    let policy = tuma::policy::Policy::from_config(&app.config).unwrap();
    let mut tx = app.db.pool.begin().await.unwrap();
    let outcomes = policy
        .admit_together(&app.engine, &mut tx, payouts, &[true, false, true])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let providers: Vec<Option<String>> = outcomes
        .iter()
        .map(|o| match o {
            Together::Admitted(row) => Some(row.provider.clone()),
            Together::Alone => None,
        })
        .collect();
    assert_eq!(providers, [None, Some("mpesa".into()), Some("airtel".into())]);
    // Through the API, the payout routed by its prefix goes to Airtel.
    let body = created(&app, &payout_from("creator-7", "100")).await;
    assert_eq!(body["recipient"]["provider"], "airtel", "{body}");
    app.assert_ledger_balanced().await;
}

/// Moves the party's payouts `days` into the past, as if created then.
async fn backdate_payouts(app: &TestApp, party: &str, days: i32) {
    sqlx::query("UPDATE intents SET created_at = created_at - make_interval(days => $2) WHERE party_id = $1")
        .bind(party)
        .bind(days)
        .execute(&app.db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tier_0_party_is_held_to_its_weekly_limit_by_the_payouts_of_earlier_days() {
    use tuma::policy::Together;
    let app = spawn_app().await;
    // Tier 0: 100 USD a day, 300 a week. 3,150 KES (3,000 with fees) is
    // 24.23 USD: four a day fit, and twelve in a week leave 9.24 USD.
    app.set_party(&app.admin_key, "newcomer", 0).await;
    app.fund(&app.admin_key, "newcomer", "100000", "KES").await;
    for days in [2, 2, 2] {
        for _ in 0..4 {
            created(&app, &payout_from("newcomer", "3000")).await;
        }
        backdate_payouts(&app, "newcomer", days).await;
    }
    // Nothing today, so the daily limit has room; the week has not.
    let response = create_payout(&app, &payout_from("newcomer", "3000")).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["limit"], "KYC tier 0 weekly", "{problem}");
    assert_eq!(problem["used_usd"], "290.76", "{problem}");
    // Admitted together, it is refused too (left to be refused alone).
    let policy = tuma::policy::Policy::from_config(&app.config).unwrap();
    let mut tx = app.db.pool.begin().await.unwrap();
    let outcomes = policy
        .admit_together(&app.engine, &mut tx, vec![payout_intent("newcomer", "3000")], &[false])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(matches!(outcomes[..], [Together::Alone]), "{outcomes:?}");

    // A week on, the oldest four no longer count, and a failed payout
    // never did: the week then holds 8 payouts less the failed one.
    backdate_payouts(&app, "newcomer", 1).await;
    sqlx::query(
        "UPDATE intents SET state = 'failed' WHERE id = (
             SELECT id FROM intents WHERE party_id = 'newcomer' ORDER BY created_at DESC LIMIT 1)",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let usage = {
        let now = chrono::Utc::now();
        let windows = [
            Some(now - chrono::Duration::days(1)),
            Some(now - chrono::Duration::days(7)),
            None,
            Some(now - chrono::Duration::days(30)),
        ];
        let mut conn = app.db.pool.acquire().await.unwrap();
        tuma::store::policy::payout_usage(
            &mut conn,
            &[("shop", "newcomer", &windows), ("shop", "nobody", &windows)],
        )
        .await
        .unwrap()
    };
    assert_eq!(
        usage,
        vec![
            vec![(0, d("0")), (7, d("169.61")), (0, d("0")), (11, d("266.53"))],
            vec![(0, d("0")); 4],
        ]
    );
    created(&app, &payout_from("newcomer", "3000")).await;
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_idempotency_key_make_one_payout() {
    let app = spawn_app().await;
    let body = payout_from("creator-42", "250");
    let attempts = (0..24).map(|_| app.create("/v1/payouts", &app.key, "same-key", &body));
    let mut ids = std::collections::BTreeSet::new();
    for response in futures::future::join_all(attempts).await {
        assert_eq!(response.status(), StatusCode::CREATED);
        let view: Value = response.json().await.unwrap();
        ids.insert(view["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.count("SELECT count(*) FROM intents WHERE amount = 250").await, 1);
    // The same key with another body is a conflict, grouped or not.
    let other = payout_from("creator-42", "251");
    let attempts = (0..8).map(|_| app.create("/v1/payouts", &app.key, "same-key", &other));
    for response in futures::future::join_all(attempts).await {
        assert_eq!(response.status(), StatusCode::CONFLICT);
    }
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn the_books_check_reports_entries_events_and_call_notes_whose_parent_is_missing() {
    // The hottest child tables carry no foreign keys: the check is what
    // would notice a row written for a parent that does not exist.
    let app = spawn_app_holding_payouts().await;
    app.fund(&app.admin_key, "maria", "5000", "KES").await;
    created(&app, &payout_from("maria", "1500")).await;
    app.assert_ledger_balanced().await;
    for orphan in [
        "INSERT INTO ledger_entries (transfer_id, account_id, amount, currency, memo)
         SELECT gen_random_uuid(), id, 1, 'KES', 'x' FROM ledger_accounts LIMIT 1",
        "INSERT INTO ledger_entries (transfer_id, account_id, amount, currency, memo)
         SELECT id, gen_random_uuid(), 1, 'KES', 'x' FROM ledger_transfers LIMIT 1",
        "INSERT INTO intent_events (intent_id, event, outcome, cause, actor, at)
         VALUES (gen_random_uuid(), 'create', 'applied', 'api', 'x', now())",
        "INSERT INTO provider_calls (intent_id, provider, call, outcome, latency_ms)
         VALUES (gen_random_uuid(), 'mpesa', 'send', 'pending', 1)",
    ] {
        sqlx::query(orphan).execute(&app.db.pool).await.unwrap();
    }
    let problems = tuma::ledger::check_invariants(&app.db.pool).await.unwrap();
    for expected in [
        "1 ledger entries without their transfer",
        "1 ledger entries without their account",
        "1 intent events without their intent",
        "1 provider-call notes without their intent",
    ] {
        assert!(problems.iter().any(|p| p == expected), "{expected}: {problems:?}");
    }
    // The daily reconciliation report carries what the check found.
    let report = app.reconciliation_report().await;
    assert!(!report.ok);
    assert_eq!(report.books, problems);
    let csv = tuma::reconcile::to_csv(&report);
    assert!(
        csv.lines()
            .any(|line| line == "books,,,,,,,1 intent events without their intent,"),
        "{csv}"
    );
}
