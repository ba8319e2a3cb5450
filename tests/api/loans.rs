//! Peer loans end to end: request, approval, B2C disbursement through the
//! Daraja simulator, C2B repayments with `LOAN-<n>` references, reminders,
//! overdue and default on a manual clock; balances and the ledger checked
//! at each step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tuma::simulator::mpesa::SimConfig;

use crate::common::app::{spawn_mpesa_app, TestApp};
use crate::common::eventually;

const LENDER: &str = "lender-1";
const BORROWER: &str = "borrower-1";

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// A funded lender and an app ready to take C2B payments.
async fn setup() -> TestApp {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    app.register_c2b().await;
    app.set_party(&app.admin_key, LENDER, 2).await;
    app.fund(&app.admin_key, LENDER, "100000", "KES").await;
    app
}

async fn request_loan(app: &TestApp, msisdn: &str, extra: Value) -> Value {
    let mut body = json!({
        "borrower": { "party_id": BORROWER, "msisdn": msisdn },
        "lender_id": LENDER,
        "principal": "5000",
        "currency": "KES",
        "installment_amount": "500",
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let response = app
        .create("/v1/loans", &app.key, &uuid::Uuid::new_v4().to_string(), &body)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn decide(app: &TestApp, id: &str, action: &str, acting_party: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/v1/loans/{id}/{action}")))
        .bearer_auth(&app.key)
        .json(&json!({ "acting_party": acting_party }))
        .send()
        .await
        .unwrap()
}

async fn loan(app: &TestApp, id: &str) -> Value {
    let response = app.get(&format!("/v1/loans/{id}"), &app.key).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Works the queues until the loan is in `state` (callbacks arrive over
/// HTTP in the background).
async fn until_loan(app: &TestApp, id: &str, state: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("loan {id} to become {state}"),
        || async {
            app.run_jobs().await;
            loan(app, id).await["state"] == state
        },
    )
    .await;
    loan(app, id).await
}

/// Requests and approves a loan, and waits for its disbursement.
async fn active_loan(app: &TestApp, msisdn: &str, extra: Value) -> (String, String) {
    let requested = request_loan(app, msisdn, extra).await;
    let id = requested["id"].as_str().unwrap().to_owned();
    let approved = decide(app, &id, "approve", LENDER).await;
    assert_eq!(approved.status(), StatusCode::OK);
    until_loan(app, &id, "active").await;
    (id, requested["reference"].as_str().unwrap().to_owned())
}

/// A ledger account's posted balance on its normal side (zero if absent).
async fn posted(app: &TestApp, kind: &str, reference: &str) -> Decimal {
    sqlx::query_scalar::<_, Decimal>("SELECT posted FROM ledger_accounts WHERE kind = $1 AND ref = $2")
        .bind(kind)
        .bind(reference)
        .fetch_optional(&app.db.pool)
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn suspense(app: &TestApp) -> Decimal {
    sqlx::query_scalar::<_, Option<Decimal>>(
        "SELECT sum(e.amount) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
         WHERE a.kind = 'suspense'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
    .unwrap_or_default()
}

/// Pays `amount` into the PayBill with `reference` and waits until the
/// confirmation is processed.
async fn pay_bill(app: &TestApp, msisdn: &str, amount: u64, reference: &str) -> String {
    let sim = app.sim.clone().unwrap();
    let before = app
        .count("SELECT count(*) FROM callback_inbox WHERE kind = 'c2b-confirmation' AND processed_at IS NOT NULL")
        .await;
    let receipt = sim.pay_bill("174379", msisdn, amount, reference).await.unwrap();
    eventually(Duration::from_secs(10), "the confirmation processed", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM callback_inbox WHERE kind = 'c2b-confirmation' AND processed_at IS NOT NULL")
            .await
            > before
    })
    .await;
    receipt
}

/// The borrower answers the STK prompt of the reminder collection
/// `reminder` with their PIN.
async fn pay_reminder(app: &TestApp, reminder: &str) {
    let checkout: String = sqlx::query_scalar("SELECT provider_ref FROM intents WHERE id = $1::uuid")
        .bind(reminder)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    app.sim.clone().unwrap().answer_prompt(&checkout, "0").await;
}

/// Runs one loans sweep now (the cron entry's job).
async fn sweep(app: &TestApp) {
    app.enqueue(&tuma::runner::NewJob::new(&tuma::loans::LoanSweep {}))
        .await;
    app.run_jobs().await;
}

async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::<Value>::new()));
    let store = received.clone();
    let router = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_loan_is_disbursed_and_repaid_by_1000_c2b_payments_with_every_balance_exact() {
    let app = setup().await;
    let (hook_url, deliveries) = receiver().await;
    let endpoint = app
        .http
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(&app.key)
        .json(&json!({ "url": hook_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), StatusCode::CREATED);

    let requested = request_loan(&app, "0712345678", json!({})).await;
    assert_eq!(requested["state"], "requested");
    assert_eq!(requested["outstanding"], "5000.00");
    let id = requested["id"].as_str().unwrap().to_owned();
    let reference = requested["reference"].as_str().unwrap().to_owned();
    assert!(reference.starts_with("LOAN-"), "{reference}");

    // Neither the borrower nor a stranger may approve; the lender may.
    let own = decide(&app, &id, "approve", BORROWER).await;
    assert_eq!(own.status(), StatusCode::FORBIDDEN);
    let problem: Value = own.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("borrower"), "{problem}");
    assert_eq!(
        decide(&app, &id, "approve", "someone-else").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(loan(&app, &id).await["state"], "requested");
    let approved = decide(&app, &id, "approve", LENDER).await;
    assert_eq!(approved.status(), StatusCode::OK);
    let approved: Value = approved.json().await.unwrap();
    assert_eq!(approved["state"], "disbursing");
    let payout_id = approved["disbursement_id"].as_str().unwrap().to_owned();
    // Deciding twice is a conflict.
    assert_eq!(
        decide(&app, &id, "approve", LENDER).await.status(),
        StatusCode::CONFLICT
    );

    let active = until_loan(&app, &id, "active").await;
    let payout: Value = app
        .get(&format!("/v1/payouts/{payout_id}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(payout["state"], "completed");
    assert_eq!(payout["party_id"], LENDER, "the lender's balance pays the disbursement");
    // 5,000 to the borrower, 125 platform fee and the 75 KES tariff on top.
    assert_eq!(app.available(LENDER, "KES").await, d("94800"));
    assert_eq!(active["installments"].as_array().unwrap().len(), 10);
    assert_eq!(posted(&app, "receivable", &reference).await, d("5000"));
    assert_eq!(posted(&app, "lent", &reference).await, d("5000"));
    let sim = app.sim.clone().unwrap();
    assert_eq!(
        sim.payments()
            .iter()
            .filter(|p| p.kind == "b2c")
            .map(|p| p.amount_kes)
            .sum::<u64>(),
        5000
    );

    // Each 1,000 in repays the 500 installment due; 500 goes to the
    // borrower's balance. References are read the way people type them.
    let typed = [reference.clone(), reference.to_lowercase(), reference.replace('-', " ")];
    let mut receipts = Vec::new();
    for n in 1..=10u32 {
        let typed_ref = &typed[n as usize % typed.len()];
        receipts.push(pay_bill(&app, "254712345678", 1000, typed_ref).await);
        let repaid = d("500") * Decimal::from(n);
        let view = loan(&app, &id).await;
        assert_eq!(
            view["outstanding"].as_str().unwrap().parse::<Decimal>().unwrap(),
            d("5000") - repaid,
            "after payment {n}"
        );
        assert_eq!(posted(&app, "receivable", &reference).await, d("5000") - repaid);
        assert_eq!(posted(&app, "lent", &reference).await, d("5000") - repaid);
        assert_eq!(app.available(LENDER, "KES").await, d("94800") + repaid);
        assert_eq!(
            app.available(BORROWER, "KES").await,
            repaid,
            "the excess of each payment"
        );
        let expected_state = if n == 10 { "repaid" } else { "active" };
        assert_eq!(view["state"], expected_state, "after payment {n}");
    }
    let view = loan(&app, &id).await;
    let repayments = view["repayments"].as_array().unwrap();
    assert_eq!(repayments.len(), 10);
    assert_eq!(repayments[0]["applied"], "500.00");
    assert_eq!(repayments[0]["excess"], "500.00");
    assert_eq!(repayments[0]["outstanding_after"], "4500.00");
    assert_eq!(repayments[0]["receipt"], receipts[0].as_str());

    // The same confirmation delivered again repays nothing.
    let body: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM callback_inbox WHERE kind = 'c2b-confirmation' ORDER BY id LIMIT 1")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let again = app.post_c2b_confirmation(body).await;
    assert_eq!(again.status(), StatusCode::OK);
    app.run_jobs().await;
    assert_eq!(loan(&app, &id).await["repayments"].as_array().unwrap().len(), 10);
    assert_eq!(app.available(LENDER, "KES").await, d("99800"));
    assert_eq!(app.available(BORROWER, "KES").await, d("5000"));

    // A repaid loan's reference is refused at validation: no money moves.
    assert_eq!(
        sim.pay_bill("174379", "254712345678", 1000, &reference).await,
        Err("C2B00012".to_owned())
    );
    assert_eq!(
        sim.pay_bill("174379", "254712345678", 1000, "LOAN-999999").await,
        Err("C2B00012".to_owned())
    );
    // A reference that names no loan at all is taken and kept in suspense.
    let orphan = pay_bill(&app, "254712345670", 750, "INV-2231").await;
    assert_eq!(suspense(&app).await, d("750"));
    let routed: String = sqlx::query_scalar("SELECT applied_to FROM c2b_payments WHERE trans_id = $1")
        .bind(&orphan)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(routed, "suspense");

    // Borrower and lender hear of every step through the product service
    // (deliveries run side by side, in no promised order).
    let wanted = ["approve", "disburse", "disbursed", "repayment_received", "repaid"];
    eventually(Duration::from_secs(10), "the loan's webhooks", || async {
        app.work("webhooks").await;
        let delivered = deliveries.lock().unwrap();
        wanted
            .iter()
            .all(|w| delivered.iter().any(|d| d["data"]["event"]["event"] == *w))
    })
    .await;
    let events: Vec<(String, String)> = deliveries
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d["data"]["intent"]["kind"] == "loan")
        .map(|d| {
            (
                d["data"]["event"]["event"].as_str().unwrap().to_owned(),
                d["data"]["loan"]["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for wanted in wanted {
        assert!(events.iter().any(|(e, _)| e == wanted), "{wanted} in {events:?}");
    }
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overpayment_repays_ahead_and_the_rest_is_credited_back() {
    let app = setup().await;
    let (id, reference) = active_loan(&app, "0712345678", json!({ "excess": "next_installment" })).await;
    pay_bill(&app, "254712345678", 3000, &reference).await;
    let view = loan(&app, &id).await;
    assert_eq!(view["outstanding"], "2000.00");
    assert_eq!(view["state"], "active");
    let paid: Vec<&str> = view["installments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["paid"].as_str().unwrap())
        .collect();
    assert_eq!(
        &paid[..7],
        ["500.00", "500.00", "500.00", "500.00", "500.00", "500.00", "0.00"]
    );
    assert_eq!(app.available(BORROWER, "KES").await, Decimal::ZERO);

    pay_bill(&app, "254712345678", 3000, &reference).await;
    let view = loan(&app, &id).await;
    assert_eq!(view["state"], "repaid");
    assert_eq!(view["outstanding"], "0.00");
    let last = view["repayments"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["applied"].as_str(), last["excess"].as_str()),
        (Some("2000.00"), Some("1000.00"))
    );
    assert_eq!(app.available(BORROWER, "KES").await, d("1000"), "never lost");
    assert_eq!(app.available(LENDER, "KES").await, d("94800") + d("5000"));
    assert_eq!(posted(&app, "receivable", &reference).await, Decimal::ZERO);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_due_date_brings_a_reminder_overdue_then_back_to_active_when_paid_and_default_after_grace() {
    let app = setup().await;
    // Prompts to …005 wait for the test to answer them.
    let (id, reference) = active_loan(
        &app,
        "0712345005",
        json!({ "installment_amount": "2500", "interval_days": 7, "grace_days": 3 }),
    )
    .await;
    sweep(&app).await;
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE kind = 'collection'")
            .await,
        0
    );

    // The due date: one STK reminder for the installment, once.
    app.advance(Duration::from_secs(7 * 86400));
    sweep(&app).await;
    sweep(&app).await;
    let view = loan(&app, &id).await;
    let reminder = view["installments"][0]["reminder_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE kind = 'collection'")
            .await,
        1
    );
    let collection: Value = app
        .get(&format!("/v1/collections/{reminder}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(collection["amount"], "2500.00");
    assert_eq!(collection["reference"], reference.as_str());
    assert_eq!(view["state"], "active");

    // A day later, unpaid: overdue.
    app.advance(Duration::from_secs(86400));
    sweep(&app).await;
    assert_eq!(loan(&app, &id).await["state"], "overdue");

    // The borrower answers the prompt: the reminder repays the installment
    // and the loan is back to active.
    pay_reminder(&app, &reminder).await;
    let view = until_loan(&app, &id, "active").await;
    assert_eq!(view["outstanding"], "2500.00");
    let events: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "applied")
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "create",
            "approve",
            "disburse",
            "disbursed",
            "fell_overdue",
            "caught_up"
        ]
    );
    assert_eq!(app.available(LENDER, "KES").await, d("94800") + d("2500"));
    assert_eq!(app.available(BORROWER, "KES").await, Decimal::ZERO);

    // The second installment goes unpaid: overdue, then defaulted once the
    // grace period is over, and not before.
    app.advance(Duration::from_secs(6 * 86400));
    sweep(&app).await;
    app.advance(Duration::from_secs(86400));
    sweep(&app).await;
    assert_eq!(loan(&app, &id).await["state"], "overdue");
    app.advance(Duration::from_secs(2 * 86400));
    sweep(&app).await;
    assert_eq!(loan(&app, &id).await["state"], "overdue");
    app.advance(Duration::from_secs(86400));
    sweep(&app).await;
    assert_eq!(loan(&app, &id).await["state"], "defaulted");

    // A defaulted loan still takes payments; paid off, it is repaid.
    pay_bill(&app, "254712345005", 2500, &reference).await;
    let view = loan(&app, &id).await;
    assert_eq!(view["state"], "repaid");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_request_is_validated_field_by_field_and_a_rejected_loan_moves_no_money() {
    let app = setup().await;
    let response = app
        .create(
            "/v1/loans",
            &app.key,
            "bad",
            &json!({
                "borrower": { "party_id": LENDER, "msisdn": "12" },
                "lender_id": LENDER,
                "principal": "5000.50",
                "currency": "KES",
                "installment_amount": "0",
                "interval_days": 0,
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in ["borrower.msisdn", "principal", "lender_id", "interval_days"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }

    // The lender cannot fund more than it has: approval is refused and the
    // loan stays requested.
    let big = request_loan(
        &app,
        "0712345678",
        json!({ "principal": "200000", "installment_amount": "20000" }),
    )
    .await;
    let id = big["id"].as_str().unwrap();
    let refused = decide(&app, id, "approve", LENDER).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(loan(&app, id).await["state"], "requested");
    let rejected = decide(&app, id, "reject", LENDER).await;
    assert_eq!(rejected.status(), StatusCode::OK);
    assert_eq!(loan(&app, id).await["state"], "rejected");
    assert_eq!(app.available(LENDER, "KES").await, d("100000"));
    assert_eq!(app.count("SELECT count(*) FROM intents WHERE kind = 'payout'").await, 0);
    app.assert_ledger_balanced().await;
}

async fn reverse(app: &TestApp, key: &str, receipt: &str) -> reqwest::Response {
    app.create(
        "/v1/reversals",
        key,
        &uuid::Uuid::new_v4().to_string(),
        &json!({ "receipt": receipt, "reason": "paid to the wrong loan" }),
    )
    .await
}

/// Works the queues until the reversal `id` has completed.
async fn until_reversal_completed(app: &TestApp, id: &str) {
    eventually(Duration::from_secs(20), "the reversal to complete", || async {
        app.run_jobs().await;
        let view: Value = app
            .get(&format!("/v1/reversals/{id}"), &app.admin_key)
            .await
            .json()
            .await
            .unwrap();
        view["state"] == "completed"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversing_a_repayment_sends_the_money_back_and_reopens_the_loan() {
    let app = setup().await;
    let (id, reference) = active_loan(&app, "0712345678", json!({ "excess": "next_installment" })).await;
    let receipt = pay_bill(&app, "254712345678", 5000, &reference).await;
    assert_eq!(loan(&app, &id).await["state"], "repaid");
    assert_eq!(app.available(LENDER, "KES").await, d("99800"));
    let orphan = pay_bill(&app, "254712345670", 300, "no reference").await;

    // Only admins reverse; a receipt must name something reversible.
    assert_eq!(reverse(&app, &app.key, &receipt).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        reverse(&app, &app.admin_key, "NOSUCHRCPT1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reverse(&app, &app.admin_key, &orphan).await.status(),
        StatusCode::CONFLICT,
        "a payment in suspense has no payer number to go back to"
    );

    let created = reverse(&app, &app.admin_key, &receipt).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let reversal: Value = created.json().await.unwrap();
    let reversal_id = reversal["id"].as_str().unwrap().to_owned();
    // What it takes back is held at once: the lender cannot spend it meanwhile.
    assert_eq!(app.available(LENDER, "KES").await, d("94800"));
    assert_eq!(
        reverse(&app, &app.admin_key, &receipt).await.status(),
        StatusCode::CONFLICT,
        "one reversal per payment"
    );

    until_reversal_completed(&app, &reversal_id).await;
    let view = until_loan(&app, &id, "active").await;
    assert_eq!(view["outstanding"], "5000.00");
    assert_eq!(view["repayments"][0]["reversed_by"], reversal_id.as_str());
    assert!(view["installments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["paid"] == "0.00"));
    let events: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.ends_with(&["repaid", "reopened"]), "{events:?}");
    assert_eq!(posted(&app, "receivable", &reference).await, d("5000"));
    assert_eq!(posted(&app, "lent", &reference).await, d("5000"));
    assert_eq!(app.available(LENDER, "KES").await, d("94800"));
    let sim = app.sim.clone().unwrap();
    let back: Vec<_> = sim.payments().into_iter().filter(|p| p.kind == "reversal").collect();
    assert_eq!(back.len(), 1, "the money went back once");
    assert_eq!(back[0].amount_kes, 5000);

    // The reopened loan repays again as before.
    pay_bill(&app, "254712345678", 1000, &reference).await;
    assert_eq!(loan(&app, &id).await["outstanding"], "4000.00");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disbursement_the_provider_refuses_ends_the_loan_and_releases_the_lenders_money() {
    let app = setup().await;
    // …009 is not an M-Pesa customer: B2C answers 2040.
    let requested = request_loan(&app, "0712345009", json!({})).await;
    let id = requested["id"].as_str().unwrap().to_owned();
    assert_eq!(decide(&app, &id, "approve", LENDER).await.status(), StatusCode::OK);
    assert_eq!(app.available(LENDER, "KES").await, d("94800"), "held while it is sent");
    let view = until_loan(&app, &id, "disbursement_failed").await;
    let payout: Value = app
        .get(
            &format!("/v1/payouts/{}", view["disbursement_id"].as_str().unwrap()),
            &app.key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(payout["state"], "failed");
    assert_eq!(app.available(LENDER, "KES").await, d("100000"));
    assert_eq!(
        posted(&app, "receivable", requested["reference"].as_str().unwrap()).await,
        Decimal::ZERO
    );

    // Were M-Pesa to say later that it paid after all, the disbursement
    // could not be booked by hand: the loan's books would not follow.
    use tuma::workflow::engine::{Applied, Cause, Event, PROVIDER_SUCCEEDED};
    let payout_id = payout["id"].as_str().unwrap();
    let succeeded = Event::new(PROVIDER_SUCCEEDED, Cause::Callback, "mpesa");
    let applied = app.apply(payout_id.parse().unwrap(), &succeeded).await;
    assert!(matches!(applied, Applied::Rejected { .. }));
    let settle = |outcome: &'static str| {
        let request = app
            .http
            .post(app.url(&format!("/v1/late-successes/{payout_id}/settle")))
            .bearer_auth(&app.admin_key)
            .json(&json!({ "evidence": "statement line 9", "outcome": outcome }));
        async move { request.send().await.unwrap() }
    };
    let refused = settle("booked").await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("belongs to loan {id}")),
        "{problem}"
    );
    assert_eq!(app.available(LENDER, "KES").await, d("100000"));
    assert_eq!(settle("recovered").await.status(), StatusCode::OK);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_cannot_be_applied_to_its_loan_is_kept_in_suspense_not_lost() {
    let app = setup().await;
    let (id, reference) = active_loan(&app, "0712345678", json!({})).await;
    // Something already holds the transfer key this payment's repayment
    // would use, with other legs: applying it must fail.
    let mut tx = app.db.pool.begin().await.unwrap();
    tuma::ledger::record(
        &mut tx,
        &tuma::ledger::NewTransfer {
            key: "repayment:c2b:TKX9000001".into(),
            owner: "shop".into(),
            kind: "test".into(),
            intent_id: None,
            description: "a clash".into(),
            legs: vec![
                tuma::ledger::Leg::debit(
                    tuma::ledger::AccountKey::funding("shop", tuma::domain::Currency::KES),
                    d("1"),
                    "",
                ),
                tuma::ledger::Leg::credit(
                    tuma::ledger::AccountKey::party("shop", "someone", tuma::domain::Currency::KES),
                    d("1"),
                    "",
                ),
            ],
        },
        tuma::ledger::Mode::Post,
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let notice = json!({
        "TransactionType": "Pay Bill", "TransID": "TKX9000001", "TransTime": "20261123101500",
        "TransAmount": "1000.00", "BusinessShortCode": "174379", "BillRefNumber": reference,
        "InvoiceNumber": "", "OrgAccountBalance": "", "ThirdPartyTransID": "",
        "MSISDN": "2547 ***** 678", "FirstName": "John", "MiddleName": "", "LastName": "",
    });
    let answer = app.post_c2b_confirmation(notice.to_string().into_bytes()).await;
    assert_eq!(answer.status(), StatusCode::OK);
    app.run_jobs().await;
    let routed: String = sqlx::query_scalar("SELECT applied_to FROM c2b_payments WHERE trans_id = 'TKX9000001'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(routed, "suspense");
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM callback_inbox WHERE kind = 'c2b-confirmation' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(detail.starts_with("to suspense:"), "{detail}");
    assert_eq!(suspense(&app).await, d("1000"));
    assert_eq!(loan(&app, &id).await["outstanding"], "5000.00");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repayment_that_takes_the_lender_over_its_auto_payout_threshold_pays_its_balance_out() {
    let app = setup().await;
    let (_, reference) = active_loan(&app, "0712345678", json!({})).await;
    let lent = app.available(LENDER, "KES").await;
    let profile = json!({ "role": "creator", "kyc_tier": 2, "country": "KE", "payout_msisdn": "0712345600" });
    app.put_party(&app.admin_key, LENDER, &profile).await;
    let threshold = lent + d("200");
    let settings = app
        .http
        .put(app.url(&format!("/v1/parties/{LENDER}/payout-settings")))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "auto_payout": true, "threshold": threshold.to_string(), "currency": "KES" }))
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), StatusCode::OK);

    // 1,000 paid: the 500 due goes to the lender, over its threshold, and
    // its balance is paid out; the other 500 goes to the borrower, who has
    // no auto-payout.
    pay_bill(&app, "254712345678", 1000, &reference).await;
    let swept = app
        .count(&format!(
            "SELECT count(*) FROM intents WHERE party_id = '{LENDER}' AND kind = 'payout' AND created_by = 'auto-payout'"
        ))
        .await;
    assert_eq!(swept, 1);
    assert_eq!(app.available(LENDER, "KES").await, d("0"), "the whole balance went out");
    assert_eq!(app.available(BORROWER, "KES").await, d("500"));
    let jobs: Vec<Value> = sqlx::query_scalar("SELECT args FROM tuma_jobs WHERE kind = 'party.auto_payout'")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["party_id"], LENDER);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_reopened_after_its_due_dates_is_overdue_at_once() {
    let app = setup().await;
    let (id, reference) = active_loan(&app, "0712345678", json!({ "excess": "next_installment" })).await;
    let receipt = pay_bill(&app, "254712345678", 5000, &reference).await;
    assert_eq!(loan(&app, &id).await["state"], "repaid");
    // Long after the first due date, the payment turns out to be wrong.
    app.advance(Duration::from_secs(40 * 86400));
    let created = reverse(&app, &app.admin_key, &receipt).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let view = until_loan(&app, &id, "overdue").await;
    let events: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.ends_with(&["repaid", "reopened", "fell_overdue"]), "{events:?}");
    app.assert_ledger_balanced().await;
}

/// Runs one pass of the cron entry asking about validated C2B payments
/// with no confirmation.
async fn ask_about_unconfirmed(app: &TestApp) {
    app.enqueue(&tuma::runner::NewJob::new(
        &tuma::providers::mpesa::c2b::QueryUnconfirmed {},
    ))
    .await;
    app.run_jobs().await;
}

/// Pays `amount` into the PayBill with `reference` while Daraja loses
/// every callback: the confirmation never comes. Callbacks stay lost until
/// the caller sets the chaos again.
async fn pay_bill_confirmation_lost(app: &TestApp, msisdn: &str, amount: u64, reference: &str) -> String {
    let sim = app.sim.clone().unwrap();
    sim.set_chaos(tuma::simulator::Chaos {
        callback_loss_permille: 1000,
        ..Default::default()
    });
    sim.pay_bill("174379", msisdn, amount, reference).await.unwrap()
}

/// Works the jobs until the one payment is recorded from a status answer.
async fn until_recorded_from_its_status(app: &TestApp) {
    eventually(
        Duration::from_secs(10),
        "the payment recorded from its status",
        || async {
            app.run_jobs().await;
            app.count("SELECT count(*) FROM c2b_payments").await == 1
        },
    )
    .await;
}

/// What was asked about `receipt`: Daraja's status answer, if any, and
/// how often it was asked.
async fn asked_about(app: &TestApp, receipt: &str) -> (Option<String>, i32) {
    sqlx::query_as("SELECT status, attempts FROM c2b_status_queries WHERE trans_id = $1")
        .bind(receipt)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repayment_whose_confirmation_was_lost_is_recorded_from_its_status_once() {
    let app = setup().await;
    let (id, reference) = active_loan(&app, "0712345678", json!({})).await;
    let sim = app.sim.clone().unwrap();
    // The borrower pays; Daraja asks our validation URL (a question it
    // waits on), and the confirmation callback is lost.
    let receipt = pay_bill_confirmation_lost(&app, "254712345678", 1000, &reference).await;
    sim.set_chaos(tuma::simulator::Chaos::default());
    app.run_jobs().await;
    assert_eq!(app.count("SELECT count(*) FROM c2b_payments").await, 0);

    // Within its first minute a confirmation may still come: not asked.
    ask_about_unconfirmed(&app).await;
    assert_eq!(app.count("SELECT count(*) FROM c2b_status_queries").await, 0);

    // A minute on, Daraja is asked by receipt; its answer records the
    // payment from the validated notice and repays the loan.
    app.advance(Duration::from_secs(61));
    ask_about_unconfirmed(&app).await;
    until_recorded_from_its_status(&app).await;
    let (recorded, told_by): (String, String) =
        sqlx::query_as("SELECT p.trans_id, c.kind FROM c2b_payments p JOIN callback_inbox c ON c.id = p.inbox_id")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (recorded.as_str(), told_by.as_str()),
        (receipt.as_str(), "c2b-status-result")
    );
    let view = loan(&app, &id).await;
    assert_eq!(
        view["outstanding"].as_str().unwrap().parse::<Decimal>().unwrap(),
        d("4500")
    );
    assert_eq!(view["repayments"][0]["receipt"], receipt.as_str());
    assert_eq!(app.available(BORROWER, "KES").await, d("500"), "the excess");
    let (status, attempts) = asked_about(&app, &receipt).await;
    assert_eq!((status.as_deref(), attempts), (Some("Completed"), 1));

    // The lost confirmation turning up after all repays nothing more.
    let validated: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM callback_inbox WHERE kind = 'c2b-validation' ORDER BY id DESC LIMIT 1")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let late = app.post_c2b_confirmation(validated).await;
    assert_eq!(late.status(), StatusCode::OK);
    app.run_jobs().await;
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE kind = 'c2b-confirmation' AND outcome = 'duplicate'")
            .await,
        1
    );
    assert_eq!(loan(&app, &id).await["outstanding"], view["outstanding"]);

    // A recorded payment is not asked about again.
    app.advance(Duration::from_secs(600));
    ask_about_unconfirmed(&app).await;
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM c2b_status_queries")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_answer_still_in_progress_leaves_the_payment_to_be_asked_again() {
    let app = setup().await;
    let (id, reference) = active_loan(&app, "0712345678", json!({})).await;
    let sim = app.sim.clone().unwrap();
    // The confirmation is lost, and so is Daraja's own answer to the
    // first question about it.
    let receipt = pay_bill_confirmation_lost(&app, "254712345678", 1000, &reference).await;
    app.advance(Duration::from_secs(61));
    ask_about_unconfirmed(&app).await;
    assert_eq!(app.count("SELECT count(*) FROM c2b_status_queries").await, 1);

    // An answer saying the payment is still in progress is no answer.
    let mpesa = app.config.mpesa.clone().unwrap();
    let url =
        tuma::providers::mpesa::callback_url(&mpesa, "c2b-status-result", &tuma::providers::mpesa::c2b_token(&mpesa));
    let pending = json!({ "Result": {
        "ResultType": 0, "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
        "OriginatorConversationID": "OC_1", "ConversationID": "AG_1", "TransactionID": receipt,
        "ResultParameters": { "ResultParameter": [
            { "Key": "ReceiptNo", "Value": receipt },
            { "Key": "TransactionStatus", "Value": "Pending" },
            { "Key": "Amount", "Value": 1000 },
        ]},
    }});
    let answered = app.http.post(url).json(&pending).send().await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    app.run_jobs().await;
    let (outcome, detail): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT outcome, detail FROM callback_inbox WHERE kind = 'c2b-status-result'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(outcome.as_deref(), Some("ignored"), "{detail:?}");
    let (status, _) = asked_about(&app, &receipt).await;
    assert_eq!(status, None, "still open: asked again");
    assert_eq!(app.count("SELECT count(*) FROM c2b_payments").await, 0);

    // Asked again later, Daraja's final word records the payment once.
    sim.set_chaos(tuma::simulator::Chaos::default());
    app.advance(Duration::from_secs(301));
    ask_about_unconfirmed(&app).await;
    until_recorded_from_its_status(&app).await;
    let (status, attempts) = asked_about(&app, &receipt).await;
    assert_eq!((status.as_deref(), attempts), (Some("Completed"), 2));
    assert_eq!(
        loan(&app, &id).await["outstanding"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        d("4500")
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_question_daraja_did_not_take_is_asked_again_at_the_next_run_uncounted() {
    let app = setup().await;
    let (id, reference) = active_loan(&app, "0712345678", json!({})).await;
    let sim = app.sim.clone().unwrap();
    let receipt = pay_bill_confirmation_lost(&app, "254712345678", 1000, &reference).await;
    // Daraja answers every request with a 5xx when the question is asked.
    sim.set_chaos(tuma::simulator::Chaos {
        server_error_permille: 1000,
        ..Default::default()
    });
    app.advance(Duration::from_secs(61));
    ask_about_unconfirmed(&app).await;
    let (status, attempts) = asked_about(&app, &receipt).await;
    assert_eq!((status, attempts), (None, 0), "a question not taken is not counted");

    // The next run, a minute on and well inside the wait for an answer,
    // asks again and the answer repays the loan.
    sim.set_chaos(tuma::simulator::Chaos::default());
    app.advance(Duration::from_secs(60));
    ask_about_unconfirmed(&app).await;
    until_recorded_from_its_status(&app).await;
    let (status, attempts) = asked_about(&app, &receipt).await;
    assert_eq!((status.as_deref(), attempts), (Some("Completed"), 1));
    assert_eq!(loan(&app, &id).await["outstanding"], "4500.00");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validated_payment_never_confirmed_nor_answered_is_asked_five_times_then_reported() {
    let app = setup().await;
    // Every callback lost: the confirmation, and each answer about it.
    let receipt = pay_bill_confirmation_lost(&app, "254712345670", 750, "INV-2231").await;
    app.advance(Duration::from_secs(61));
    for _ in 0..8 {
        ask_about_unconfirmed(&app).await;
        app.advance(Duration::from_secs(301));
    }
    let (status, attempts) = asked_about(&app, &receipt).await;
    assert_eq!((status, attempts), (None, 5), "asked five times, then left to a person");
    assert_eq!(app.count("SELECT count(*) FROM c2b_payments").await, 0);

    let report = app.reconciliation_report().await;
    assert!(!report.ok);
    let line = report
        .unmatched_callbacks
        .iter()
        .find(|c| c.outcome == "unconfirmed")
        .expect("the unconfirmed payment is listed");
    assert_eq!(line.kind, "c2b-validation");
    assert_eq!(line.provider_ids.as_deref(), Some(format!("c2b:{receipt}").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_for_an_installment_left_with_cents_asks_for_whole_shillings() {
    let app = setup().await;
    // Prompts to …005 wait for the test to answer them.
    let (id, _) = active_loan(
        &app,
        "0712345005",
        json!({ "installment_amount": "2500", "interval_days": 7 }),
    )
    .await;
    // A repayment from a balance with cents in it paid part of the first
    // installment.
    sqlx::query("UPDATE loan_installments SET paid = 0.50 WHERE loan_id = $1::uuid AND seq = 1")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.advance(Duration::from_secs(7 * 86400));
    sweep(&app).await;
    app.run_jobs().await;
    let reminder = loan(&app, &id).await["installments"][0]["reminder_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let collection: Value = app
        .get(&format!("/v1/collections/{reminder}"), &app.key)
        .await
        .json()
        .await
        .unwrap();
    // 2,499.50 is unpaid; M-Pesa carries whole shillings, so the prompt
    // asks for 2,500 and it is sent.
    assert_eq!(collection["amount"], "2500.00", "{collection}");
    assert_eq!(collection["state"], "processing", "{collection}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_reminder_is_reversed_only_once_its_repayment_is_applied() {
    let app = setup().await;
    // Prompts to …005 wait for the test to answer them.
    let (id, _) = active_loan(
        &app,
        "0712345005",
        json!({ "installment_amount": "2500", "interval_days": 7 }),
    )
    .await;
    app.advance(Duration::from_secs(7 * 86400));
    sweep(&app).await;
    app.run_jobs().await;
    let reminder = loan(&app, &id).await["installments"][0]["reminder_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The borrower pays the prompt. The collection completes; the loan's
    // repayment from it is a job of its own that has not run yet.
    pay_reminder(&app, &reminder).await;
    let state = |app: &TestApp| {
        let reminder = reminder.clone();
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT state FROM intents WHERE id = $1::uuid")
                .bind(&reminder)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    eventually(Duration::from_secs(10), "the reminder to complete", || async {
        // One claim at a time, so nothing runs after the collection settles.
        if state(&app).await != "completed" {
            app.runner.work_once("default").await.unwrap();
            app.runner.work_once("mpesa").await.unwrap();
        }
        state(&app).await == "completed"
    })
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE kind = 'intent.child_settled' AND state = 'available'")
            .await,
        1
    );
    let receipt: String = sqlx::query_scalar("SELECT receipt FROM intents WHERE id = $1::uuid")
        .bind(&reminder)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let early = reverse(&app, &app.admin_key, &receipt).await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    let problem: Value = early.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("still being applied to its loan"),
        "{problem}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM intents WHERE kind = 'reversal'").await,
        0
    );

    // Once applied, the reversal takes the repayment back with the money.
    app.run_jobs().await;
    assert_eq!(loan(&app, &id).await["outstanding"], "2500.00");
    let created = reverse(&app, &app.admin_key, &receipt).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let reversal_id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    until_reversal_completed(&app, &reversal_id).await;
    let view = loan(&app, &id).await;
    assert_eq!(view["outstanding"], "5000.00", "{view}");
    assert_eq!(view["repayments"][0]["reversed_by"], reversal_id.as_str());
    app.assert_ledger_balanced().await;
}
