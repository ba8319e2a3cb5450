//! The provider conformance suite: the same end-to-end cases, through the
//! HTTP API, the runner, the provider's adapter and its simulator (with
//! callbacks over real HTTP), for every provider. Adding a provider means
//! adding one line at the bottom of this file; it is done when every case
//! passes.
//!
//! The cases: the happy path; a lost callback recovered by the status poll;
//! duplicate callbacks applied once; a request that times out after moving
//! the money is paid exactly once; definite refusals fail with the
//! provider's reason and move nothing; an unanswered prompt expires, and a
//! late payment still completes it (where the provider can pay late).
//! Subscribers behave by the last digits of their number, the same way in
//! every simulator (`tuma::simulator::Subscriber`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tuma::simulator::{Chaos, SimOptions};

use crate::common::app::{spawn_provider_app, TestApp};
use crate::common::eventually;

/// One provider, in one of its markets.
pub struct Case {
    pub provider: &'static str,
    pub currency: &'static str,
    /// A national number of that provider's subscribers, without its last
    /// three digits (which choose the behaviour).
    pub number_stem: &'static str,
    pub amount: &'static str,
    /// Whether collection results come by callback (else in the call's
    /// answer and by status query only).
    pub calls_back: bool,
    /// Whether a payout's outcome comes in the answer to its request (else
    /// by callback or status query).
    pub payout_final_in_call: bool,
    /// Whether the provider also calls back with a payout's outcome when
    /// the answer already carried it (Airtel and Tigo do).
    pub payout_calls_back_too: bool,
}

impl Case {
    /// Whether the result of a `kind` intent comes by callback.
    fn result_by_callback(&self, kind: &str) -> bool {
        match kind {
            "payout" => !self.payout_final_in_call,
            _ => self.calls_back,
        }
    }

    /// Whether the simulator sends a callback with a `kind` intent's
    /// result, whether or not Tuma learns the result from it.
    fn sends_callback(&self, kind: &str) -> bool {
        self.result_by_callback(kind) || (kind == "payout" && self.payout_calls_back_too)
    }
}

impl Case {
    fn number(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.number_stem)
    }

    fn payout(&self, suffix: &str) -> Value {
        json!({ "amount": self.amount, "currency": self.currency,
                "recipient": { "msisdn": self.number(suffix) },
                "party_id": "worker-7", "reference": "wages-nov" })
    }

    fn collection(&self, suffix: &str) -> Value {
        json!({ "amount": self.amount, "currency": self.currency,
                "payer": { "msisdn": self.number(suffix) },
                "party_id": "vpn-shop", "reference": "bundle-30d" })
    }
}

pub async fn start(case: &Case, chaos: Chaos) -> TestApp {
    // A provider that answers a prompt in the call itself holds the call
    // open until the payer answers or the prompt times out: keep that short.
    let prompt_timeout = if case.calls_back {
        Duration::from_secs(60)
    } else {
        Duration::from_millis(300)
    };
    spawn_provider_app(
        case.provider,
        SimOptions {
            chaos,
            prompt_timeout,
            ..SimOptions::default()
        },
    )
    .await
}

async fn create(app: &TestApp, path: &str, body: &Value) -> String {
    let response = app
        .create(path, &app.key, &uuid::Uuid::new_v4().to_string(), body)
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn fetch(app: &TestApp, kind: &str, id: &str) -> Value {
    app.get(&format!("/v1/{kind}s/{id}"), &app.key)
        .await
        .json()
        .await
        .unwrap()
}

async fn until_state(app: &TestApp, kind: &str, id: &str, states: &[&str]) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("{kind} {id} to become one of {states:?}"),
        || async {
            app.run_jobs().await;
            let state = fetch(app, kind, id).await["state"].clone();
            states.iter().any(|s| state == *s)
        },
    )
    .await;
    fetch(app, kind, id).await
}

async fn request_id(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT provider_ref FROM intents WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// The applied events, as (event, cause).
fn applied(intent: &Value) -> Vec<(String, String)> {
    intent["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "applied")
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["cause"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sim(app: &TestApp) -> &dyn tuma::simulator::SimulatedProvider {
    app.provider_sim
        .as_deref()
        .or(app.sim.as_ref().map(|s| s as &dyn tuma::simulator::SimulatedProvider))
        .expect("a simulator")
}

/// Each request moved money exactly once.
async fn paid_once(app: &TestApp, ids: &[&str]) {
    for id in ids {
        let reference = request_id(app, id).await;
        assert_eq!(
            sim(app).movements_for(&reference).len(),
            1,
            "request {reference} of {id} moved money other than once"
        );
    }
}

pub async fn happy_path(case: &Case) {
    let app = start(case, Chaos::default()).await;
    let paying = create(&app, "/v1/payouts", &case.payout("321")).await;
    let collecting = create(&app, "/v1/collections", &case.collection("322")).await;
    for (kind, id) in [("payout", &paying), ("collection", &collecting)] {
        let done = until_state(&app, kind, id, &["completed"]).await;
        let phone = if kind == "payout" { "recipient" } else { "payer" };
        assert_eq!(done[phone]["provider"], case.provider, "routed by the number's prefix");
        assert!(
            done["receipt"].as_str().is_some_and(|r| !r.is_empty()),
            "no receipt on {done}"
        );
        assert_eq!(applied(&done).last().unwrap().0, "provider_succeeded");
        // The call is on the intent's record, with its answer and latency.
        let calls: Vec<(String, String, String, i32)> = sqlx::query_as(
            "SELECT provider, call, outcome, latency_ms FROM provider_calls
             WHERE intent_id = $1::uuid AND outcome <> 'sending' ORDER BY id",
        )
        .bind(id)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        let (provider, call, outcome, latency_ms) = calls.first().expect("the send is recorded");
        assert_eq!((provider.as_str(), call.as_str()), (case.provider, "send"), "{calls:?}");
        assert!(["pending", "succeeded"].contains(&outcome.as_str()), "{calls:?}");
        assert!(*latency_ms >= 0);
    }
    paid_once(&app, &[&paying, &collecting]).await;
    assert_eq!(sim(&app).movements().len(), 2);
    app.assert_ledger_balanced().await;
}

pub async fn lost_callbacks_are_recovered_by_the_status_poll(case: &Case) {
    let app = start(
        case,
        Chaos {
            callback_loss_permille: 1000,
            ..Chaos::default()
        },
    )
    .await;
    let paying = create(&app, "/v1/payouts", &case.payout("331")).await;
    let collecting = create(&app, "/v1/collections", &case.collection("332")).await;
    let waiting = ["processing", "completed"];
    until_state(&app, "payout", &paying, &waiting).await;
    until_state(&app, "collection", &collecting, &waiting).await;
    // Every callback the simulator sends is lost before the losses stop: a
    // payer who answers the prompt after that would be heard by callback.
    // (A payout's callback counts too where the provider sends one besides
    // the answer, or the count would be reached before the payer answers.)
    let sent = ["payout", "collection"]
        .into_iter()
        .filter(|kind| case.sends_callback(kind))
        .count() as u64;
    eventually(Duration::from_secs(10), "every result callback lost", || async {
        app.run_jobs().await;
        sim(&app).callbacks_lost() >= sent
    })
    .await;
    sim(&app).set_chaos(Chaos::default());
    app.advance(Duration::from_secs(30));
    for (kind, id) in [("payout", &paying), ("collection", &collecting)] {
        let done = until_state(&app, kind, id, &["completed"]).await;
        let last = applied(&done).last().unwrap().clone();
        let expected_cause = if case.result_by_callback(kind) { "poll" } else { "api" };
        assert_eq!(last, ("provider_succeeded".into(), expected_cause.into()), "{done}");
    }
    if case.calls_back {
        assert!(sim(&app).callbacks_lost() >= 1, "no callback was lost");
    }
    paid_once(&app, &[&paying, &collecting]).await;
    app.assert_ledger_balanced().await;
}

pub async fn duplicate_callbacks_change_nothing_the_second_time(case: &Case) {
    let app = start(
        case,
        Chaos {
            callback_duplicate_permille: 1000,
            ..Chaos::default()
        },
    )
    .await;
    let paying = create(&app, "/v1/payouts", &case.payout("341")).await;
    let collecting = create(&app, "/v1/collections", &case.collection("342")).await;
    until_state(&app, "payout", &paying, &["completed"]).await;
    until_state(&app, "collection", &collecting, &["completed"]).await;
    if case.calls_back {
        eventually(Duration::from_secs(10), "every delivery processed", || async {
            app.run_jobs().await;
            app.count("SELECT count(*) FROM callback_inbox WHERE outcome IS NULL")
                .await
                == 0
                && app.count("SELECT count(*) FROM callback_inbox").await >= 4
        })
        .await;
        let applied_count = app
            .count("SELECT count(*) FROM callback_inbox WHERE outcome = 'applied'")
            .await;
        let duplicates = app
            .count("SELECT count(*) FROM callback_inbox WHERE outcome = 'duplicate'")
            .await;
        assert!(applied_count <= 2, "{applied_count} callbacks applied");
        assert!(duplicates >= 2, "only {duplicates} duplicates recognised");
    }
    for (kind, id) in [("payout", &paying), ("collection", &collecting)] {
        let done = fetch(&app, kind, id).await;
        let successes = applied(&done)
            .iter()
            .filter(|(event, _)| event == "provider_succeeded")
            .count();
        assert_eq!(successes, 1, "{done}");
    }
    paid_once(&app, &[&paying, &collecting]).await;
    app.assert_ledger_balanced().await;
}

pub async fn a_request_that_times_out_after_moving_money_is_paid_once(case: &Case) {
    let app = start(
        case,
        Chaos {
            timeout_after_money_permille: 1000,
            callback_loss_permille: 1000,
            ..Chaos::default()
        },
    )
    .await;
    let paying = create(&app, "/v1/payouts", &case.payout("351")).await;
    until_state(&app, "payout", &paying, &["processing"]).await;
    let reference = request_id(&app, &paying).await;
    assert_eq!(
        sim(&app).movements_for(&reference).len(),
        1,
        "the money moved though the call timed out"
    );
    assert!(sim(&app).timeouts_after_money() >= 1);
    // The re-send goes under the same id: the provider refuses the duplicate.
    sim(&app).set_chaos(Chaos::default());
    for _ in 0..3 {
        app.advance(Duration::from_secs(5));
        app.run_jobs().await;
    }
    assert_eq!(sim(&app).movements_for(&reference).len(), 1, "re-sending paid twice");
    app.advance(Duration::from_secs(30));
    let done = until_state(&app, "payout", &paying, &["completed"]).await;
    assert_eq!(
        applied(&done).last().unwrap(),
        &("provider_succeeded".to_owned(), "poll".to_owned())
    );
    assert_eq!(sim(&app).movements().len(), 1);
    app.assert_ledger_balanced().await;
}

pub async fn definite_refusals_fail_with_the_providers_reason_and_move_nothing(case: &Case) {
    let app = start(case, Chaos::default()).await;
    let unregistered = create(&app, "/v1/payouts", &case.payout("009")).await;
    let declined = create(&app, "/v1/collections", &case.collection("001")).await;
    let wrong_pin = create(&app, "/v1/collections", &case.collection("002")).await;
    let broke = create(&app, "/v1/collections", &case.collection("004")).await;
    for (kind, id) in [
        ("payout", &unregistered),
        ("collection", &declined),
        ("collection", &wrong_pin),
        ("collection", &broke),
    ] {
        let done = until_state(&app, kind, id, &["failed"]).await;
        let reasons: Vec<&str> = done["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        let from_inbox: Vec<String> =
            sqlx::query_scalar("SELECT detail FROM callback_inbox WHERE intent_id = $1::uuid AND detail IS NOT NULL")
                .bind(id.as_str())
                .fetch_all(&app.db.pool)
                .await
                .unwrap();
        assert!(
            !reasons.is_empty() || !from_inbox.is_empty(),
            "{kind} {id} failed without the provider's reason: {done}"
        );
    }
    assert!(sim(&app).movements().is_empty(), "{:?}", sim(&app).movements());
    // The payout's hold was released: the balance is whole again.
    app.assert_ledger_balanced().await;
}

pub async fn an_unanswered_prompt_expires_and_a_late_payment_still_completes(case: &Case) {
    let app = start(case, Chaos::default()).await;
    let silent = create(&app, "/v1/collections", &case.collection("003")).await;
    let late = if case.calls_back {
        Some(create(&app, "/v1/collections", &case.collection("005")).await)
    } else {
        None
    };
    app.run_jobs().await;
    for _ in 0..11 {
        app.advance(Duration::from_secs(30));
        app.run_jobs().await;
    }
    let expired = fetch(&app, "collection", &silent).await;
    if case.calls_back {
        assert_eq!(expired["state"], "expired", "{expired}");
    } else {
        // The call itself ends with the prompt: the provider says it expired.
        assert!(
            ["expired", "failed"].contains(&expired["state"].as_str().unwrap()),
            "{expired}"
        );
    }
    if let Some(late) = late {
        assert_eq!(fetch(&app, "collection", &late).await["state"], "expired");
        sim(&app).answer(&request_id(&app, &late).await, true).await;
        let done = until_state(&app, "collection", &late, &["completed"]).await;
        let history: Vec<String> = applied(&done).into_iter().map(|(event, _)| event).collect();
        assert_eq!(
            history,
            vec!["create", "prompted", "prompt_expired", "provider_succeeded"]
        );
        paid_once(&app, &[&late]).await;
    }
    assert!(sim(&app).movements().iter().all(|m| !m.msisdn.ends_with("003")));
    app.assert_ledger_balanced().await;
}

/// One module of tests per provider, each case its own test.
/// Results that wait together are applied together, in shared
/// transactions, each exactly as it would be alone.
pub async fn results_waiting_together_are_applied_together(case: &Case) {
    if !case.calls_back {
        return;
    }
    let app = start(case, Chaos::default()).await;
    const N: i64 = 6;
    let mut ids = Vec::new();
    for _ in 0..N {
        ids.push(create(&app, "/v1/collections", &case.collection("322")).await);
    }
    // Send every prompt; hold the results back until all are stored, so
    // that one claim takes them together.
    app.work("default").await;
    app.work(case.provider).await;
    eventually(Duration::from_secs(10), "every result stored", || async {
        app.count("SELECT count(*) FROM callback_inbox").await >= N
    })
    .await;
    app.work("default").await;
    for id in &ids {
        let done = fetch(&app, "collection", id).await;
        assert_eq!(done["state"], "completed", "{done}");
        assert!(done["receipt"].as_str().is_some_and(|r| !r.is_empty()), "{done}");
    }
    let transactions = app
        .count("SELECT count(DISTINCT xmin::text) FROM callback_inbox WHERE outcome = 'applied'")
        .await;
    assert!(transactions < N, "{N} results applied in {transactions} transactions");
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    paid_once(&app, &ids).await;
    app.assert_ledger_balanced().await;
}

/// A payer who answers faster than the provider answers us: the result
/// callback is stored while the prompt is still `pending` (its request id
/// committed, its record as sent not yet), waits for that record instead
/// of being refused by the state machine, and is applied once it lands.
pub async fn a_result_that_beats_its_requests_record_waits_and_is_applied(case: &Case) {
    if !case.calls_back {
        return;
    }
    let app = std::sync::Arc::new(
        spawn_provider_app(
            case.provider,
            SimOptions {
                chaos: Chaos {
                    callback_before_response: true,
                    ..Chaos::default()
                },
                prompt_timeout: Duration::from_secs(60),
                response_delay: Duration::from_millis(1_500),
                ..SimOptions::default()
            },
        )
        .await,
    );
    let id = create(&app, "/v1/collections", &case.collection("323")).await;
    let prompting = {
        let app = app.clone();
        tokio::spawn(async move { app.run_jobs().await })
    };
    eventually(Duration::from_secs(10), "the early result to be stored", || async {
        app.count("SELECT count(*) FROM callback_inbox").await >= 1
    })
    .await;
    app.work("default").await;
    assert_eq!(fetch(&app, "collection", &id).await["state"], "pending");
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome IS NOT NULL")
            .await,
        0,
        "the early result was processed against a pending intent"
    );
    prompting.await.unwrap();
    app.advance(Duration::from_secs(1));
    let done = until_state(&app, "collection", &id, &["completed"]).await;
    assert_eq!(
        applied(&done).last().unwrap(),
        &("provider_succeeded".to_owned(), "callback".to_owned()),
        "{done}"
    );
    paid_once(&app, &[&id]).await;
    app.assert_ledger_balanced().await;
}

macro_rules! conformance {
    ($module:ident, $case:expr) => {
        mod $module {
            use super::*;

            const CASE: Case = $case;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_payout_and_a_collection_complete_with_their_receipts() {
                happy_path(&CASE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_result_that_beats_its_requests_record_waits_and_is_applied() {
                super::a_result_that_beats_its_requests_record_waits_and_is_applied(&CASE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lost_callbacks_are_recovered_by_the_status_poll() {
                super::lost_callbacks_are_recovered_by_the_status_poll(&CASE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn duplicate_callbacks_change_nothing_the_second_time() {
                super::duplicate_callbacks_change_nothing_the_second_time(&CASE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_request_that_times_out_after_moving_money_is_paid_once() {
                super::a_request_that_times_out_after_moving_money_is_paid_once(&CASE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn definite_refusals_fail_with_the_providers_reason_and_move_nothing() {
                super::definite_refusals_fail_with_the_providers_reason_and_move_nothing(&CASE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn results_waiting_together_are_applied_together() {
                super::results_waiting_together_are_applied_together(&CASE).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_unanswered_prompt_expires_and_a_late_payment_still_completes() {
                super::an_unanswered_prompt_expires_and_a_late_payment_still_completes(&CASE).await;
            }
        }
    };
}

conformance!(
    mpesa,
    Case {
        provider: "mpesa",
        payout_final_in_call: false,
        payout_calls_back_too: false,
        currency: "KES",
        number_stem: "0712345",
        amount: "1000",
        calls_back: true,
    }
);
conformance!(
    airtel,
    Case {
        provider: "airtel",
        payout_final_in_call: true,
        payout_calls_back_too: true,
        currency: "UGX",
        number_stem: "0702345",
        amount: "5000",
        calls_back: true,
    }
);
conformance!(
    mtn,
    Case {
        provider: "mtn",
        payout_final_in_call: false,
        payout_calls_back_too: false,
        currency: "UGX",
        number_stem: "0772345",
        amount: "5000",
        calls_back: true,
    }
);
conformance!(
    vodacom_tz,
    Case {
        provider: "vodacom_tz",
        payout_final_in_call: true,
        payout_calls_back_too: false,
        currency: "TZS",
        number_stem: "0742345",
        amount: "5000",
        calls_back: false,
    }
);
conformance!(
    tigo_tz,
    Case {
        provider: "tigo_tz",
        payout_final_in_call: true,
        payout_calls_back_too: true,
        currency: "TZS",
        number_stem: "0652345",
        amount: "5000",
        calls_back: true,
    }
);
