//! Choosing a provider (explicit, the party's settings, the number's
//! prefix, or a clear refusal) and running several: per-provider amount
//! limits, and the circuit breaker that pauses a provider failing fast.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tuma::simulator::{Chaos, SimOptions};

use crate::common::app::{spawn_app, spawn_app_with, spawn_provider_app, TestApp};
use crate::common::eventually;

fn payout(number: &str, currency: &str, amount: &str) -> Value {
    json!({ "amount": amount, "currency": currency, "recipient": { "msisdn": number },
            "party_id": "creator-42", "reference": "earnings" })
}

#[tokio::test]
async fn numbers_in_kenya_uganda_tanzania_and_rwanda_are_routed_to_their_operator() {
    let app = spawn_app().await;
    for currency in ["UGX", "TZS", "RWF"] {
        app.fund(&app.admin_key, "creator-42", "100000000", currency).await;
    }
    let cases = [
        ("0712345678", "KES", "1000", "mpesa"),
        ("+254733345678", "KES", "1000", "airtel"),
        ("0772345678", "UGX", "5000", "mtn"),
        ("256702345678", "UGX", "5000", "airtel"),
        ("0742345678", "TZS", "5000", "vodacom_tz"),
        ("0682345678", "TZS", "5000", "airtel"),
        ("0652345678", "TZS", "5000", "tigo_tz"),
        ("0782345678", "RWF", "5000", "mtn"),
        ("0722345678", "RWF", "5000", "airtel"),
    ];
    for (number, currency, amount, provider) in cases {
        let response = app
            .create(
                "/v1/payouts",
                &app.key,
                &uuid::Uuid::new_v4().to_string(),
                &payout(number, currency, amount),
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{number}: {body}");
        assert_eq!(body["recipient"]["provider"], provider, "{number} in {currency}");
    }
}

#[tokio::test]
async fn a_number_no_operator_serves_and_a_provider_without_the_currency_are_refused_clearly() {
    let app = spawn_app().await;
    app.fund(&app.admin_key, "creator-42", "100000000", "TZS").await;
    let unknown = app
        .create("/v1/payouts", &app.key, "k1", &payout("0612345678", "TZS", "5000"))
        .await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "recipient.msisdn", "{body}");
    assert_eq!(body["errors"][0]["code"], "no_provider_for_number", "{body}");
    assert!(body["errors"][0]["detail"].as_str().unwrap().contains("612"), "{body}");

    let mut wrong = payout("0772345678", "UGX", "5000");
    wrong["recipient"]["provider"] = json!("vodacom_tz");
    let refused = app.create("/v1/payouts", &app.key, "k2", &wrong).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "currency_not_served", "{body}");
}

#[tokio::test]
async fn the_partys_payout_provider_wins_over_the_prefix_and_an_explicit_one_over_both() {
    // Creates admitted in groups (the default), which check the party's
    // settings under its lock, and one at a time, which read them first.
    routes_by_the_partys_settings(&spawn_app().await).await;
    routes_by_the_partys_settings(&spawn_app_with("[api]\ngroup_creates = 1").await).await;
}

async fn routes_by_the_partys_settings(app: &TestApp) {
    app.fund(&app.admin_key, "creator-42", "100000000", "UGX").await;
    let settings = json!({ "role": "creator", "kyc_tier": 2, "country": "UG",
                           "payout_msisdn": "0772345678", "payout_provider": "airtel" });
    app.put_party(&app.admin_key, "creator-42", &settings).await;
    let by_party: Value = app
        .create("/v1/payouts", &app.key, "p1", &payout("0772345678", "UGX", "5000"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_party["recipient"]["provider"], "airtel", "{by_party}");
    // A number whose prefix agrees with the settings, and one no prefix
    // matches, which the settings route all the same.
    for (key, number) in [("p3", "0702345678"), ("p4", "0712345678")] {
        let response = app
            .create("/v1/payouts", &app.key, key, &payout(number, "UGX", "5000"))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{number}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["recipient"]["provider"], "airtel", "{number}: {body}");
    }
    let mut named = payout("0772345678", "UGX", "5000");
    named["recipient"]["provider"] = json!("mtn");
    let explicit: Value = app
        .create("/v1/payouts", &app.key, "p2", &named)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(explicit["recipient"]["provider"], "mtn", "{explicit}");
    // Collections route by the payer's number only.
    let collection: Value = app
        .create(
            "/v1/collections",
            &app.key,
            "c1",
            &json!({ "amount": "5000", "currency": "UGX", "payer": { "msisdn": "0772345678" },
                     "party_id": "creator-42", "reference": "bundle" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(collection["payer"]["provider"], "mtn", "{collection}");
}

#[tokio::test]
async fn each_provider_has_its_own_amount_limits() {
    let app = spawn_app().await;
    app.fund(&app.admin_key, "creator-42", "100000000", "TZS").await;
    // Vodacom pays out from 1,000 TZS; Airtel Tanzania from 100.
    let vodacom = app
        .create("/v1/payouts", &app.key, "v", &payout("0742345678", "TZS", "500"))
        .await;
    assert_eq!(vodacom.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = vodacom.json().await.unwrap();
    assert!(
        body["errors"][0]["detail"].as_str().unwrap().contains("vodacom_tz"),
        "{body}"
    );
    let airtel = app
        .create("/v1/payouts", &app.key, "a", &payout("0682345678", "TZS", "500"))
        .await;
    assert_eq!(airtel.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_fast_pauses_its_queue_instead_of_burning_retries_and_resumes_on_its_own() {
    let app = spawn_provider_app(
        "mtn",
        SimOptions {
            chaos: Chaos {
                server_error_permille: 1000,
                ..Chaos::default()
            },
            ..SimOptions::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let response = app
            .create(
                "/v1/payouts",
                &app.key,
                &format!("burst-{i}"),
                &json!({ "amount": "5000", "currency": "UGX", "recipient": { "msisdn": format!("0772345{i:03}") },
                         "party_id": "worker-7", "reference": "wages" }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.push(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    app.run_jobs().await;
    let paused: i64 = app
        .count("SELECT count(*) FROM tuma_job_queues WHERE name = 'mtn' AND paused_until IS NOT NULL")
        .await;
    assert_eq!(paused, 1, "the breaker paused the provider's queue");
    let first_pause: i64 = app
        .count("SELECT extract(epoch FROM paused_until - paused_at)::bigint FROM tuma_job_queues WHERE name = 'mtn'")
        .await;
    assert_eq!(first_pause, 5, "open_base_s, reckoned on the claims' clock");
    let attempts: i64 = app
        .count("SELECT coalesce(max(attempt), 0)::bigint FROM tuma_jobs WHERE queue = 'mtn'")
        .await;
    assert!(
        attempts <= 1,
        "jobs kept retrying against a failing provider ({attempts} attempts)"
    );
    // More time passes while the provider is still down: the breaker
    // probes, fails and pauses longer; nothing gives up.
    for _ in 0..5 {
        app.advance(Duration::from_secs(6));
        app.run_jobs().await;
    }
    let dead = app.count("SELECT count(*) FROM tuma_jobs WHERE state = 'dead'").await;
    assert_eq!(dead, 0);
    // The provider recovers: once the pause is over, everything goes out.
    app.provider_sim.as_ref().unwrap().set_chaos(Chaos::default());
    for id in &ids {
        eventually(Duration::from_secs(20), "the payout to complete", || async {
            app.advance(Duration::from_secs(10));
            app.run_jobs().await;
            let state = app
                .get(&format!("/v1/payouts/{id}"), &app.key)
                .await
                .json::<Value>()
                .await
                .unwrap()["state"]
                .clone();
            state == "completed"
        })
        .await;
    }
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn whether_a_request_may_have_been_sent_before_is_read_from_every_earlier_run() {
    let app = spawn_app().await;
    let response = app
        .create(
            "/v1/payouts",
            &app.key,
            &uuid::Uuid::new_v4().to_string(),
            &payout("+254733345678", "KES", "1000"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id: uuid::Uuid = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pool = &app.db.pool;
    // A send's note by run `run` of job `job` (none: written before runs
    // were recorded).
    let noted = |provider: &'static str, job_run: Option<(i64, i32)>, outcome: &'static str| async move {
        sqlx::query(
            "INSERT INTO provider_calls (intent_id, provider, call, outcome, latency_ms, job_id, run)
             VALUES ($1, $2, 'send', $3, 0, $4, $5)",
        )
        .bind(id)
        .bind(provider)
        .bind(outcome)
        .bind(job_run.map(|(job, _)| job))
        .bind(job_run.map(|(_, run)| run))
        .execute(pool)
        .await
        .unwrap();
    };
    let note = |job: i64, run: i32, outcome: &'static str| noted("airtel", Some((job, run)), outcome);
    let sent_before = |run: i32| tuma::store::provider_calls::may_have_sent_before(pool, id, "airtel", 7, run);

    assert!(!sent_before(1).await.unwrap(), "a first run follows nothing");
    note(7, 1, "sending").await;
    note(7, 1, "busy").await;
    assert!(!sent_before(2).await.unwrap(), "run 1 was refused before processing");
    // Run 2 ended before sending (an open circuit, a database error): no
    // note, and it counts for nothing.
    assert!(!sent_before(3).await.unwrap());
    note(7, 3, "sending").await;
    assert!(
        sent_before(4).await.unwrap(),
        "run 3 was sending and learned nothing: it may have ended mid-call"
    );
    note(7, 3, "rejected").await;
    assert!(!sent_before(4).await.unwrap(), "run 3's request was refused");
    // This run's own notes are not about an earlier one.
    note(7, 4, "sending").await;
    note(7, 4, "rejected").await;
    assert!(!sent_before(4).await.unwrap());
    note(8, 1, "sending").await;
    assert!(
        sent_before(5).await.unwrap(),
        "another job's unanswered send may have reached the provider"
    );
    note(8, 1, "ambiguous").await;
    assert!(sent_before(5).await.unwrap(), "an ambiguous answer may have been paid");
    // Notes from before runs were recorded count when they say it arrived.
    let other = |outcome: &'static str| noted("mtn", None, outcome);
    other("busy").await;
    let mtn = tuma::store::provider_calls::may_have_sent_before(pool, id, "mtn", 9, 1);
    assert!(!mtn.await.unwrap());
    other("pending").await;
    let mtn = tuma::store::provider_calls::may_have_sent_before(pool, id, "mtn", 9, 1);
    assert!(mtn.await.unwrap(), "an accepted send from an older node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_cancelled_before_its_prompt_never_reaches_the_provider() {
    let app = spawn_provider_app("airtel", SimOptions::default()).await;
    let created = app
        .create(
            "/v1/collections",
            &app.key,
            "c-1",
            &json!({ "amount": "5000", "currency": "UGX", "payer": { "msisdn": "0702345678" },
                     "party_id": "donor-3", "reference": "campaign-9" }),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The cancel holds the intent's lock while the prompt job starts: the
    // job has read the collection as pending, and its mark before sending
    // waits for the lock, then finds it cancelled.
    let intent_id: uuid::Uuid = id.parse().unwrap();
    let mut tx = app.db.pool.begin().await.unwrap();
    let locked = tuma::store::intents::get_for_update(&mut tx, intent_id)
        .await
        .unwrap()
        .unwrap();
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let applied = app
            .engine
            .apply_to(
                &mut tx,
                locked,
                &tuma::workflow::engine::Event::new("cancel", tuma::workflow::engine::Cause::Api, "shop"),
            )
            .await
            .unwrap();
        assert!(matches!(applied, tuma::workflow::engine::Applied::Moved { .. }));
        tx.commit().await.unwrap();
    };
    let (ran, ()) = tokio::join!(app.run_jobs(), cancel);
    assert!(ran >= 1, "the prompt job ran");
    app.run_jobs().await;
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM provider_calls WHERE intent_id = '{id}'"))
            .await,
        0,
        "the prompt job found it cancelled and sent nothing"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM intents WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(state, "cancelled");
}

/// Creates a 5,000 UGX payout to `number`; its id.
/// An app whose `provider` simulator loses every callback: only the status
/// polls tell what became of a request.
async fn losing_every_callback(provider: &str) -> TestApp {
    let options = SimOptions {
        chaos: Chaos {
            callback_loss_permille: 1000,
            ..Chaos::default()
        },
        ..SimOptions::default()
    };
    spawn_provider_app(provider, options).await
}

async fn create_payout(app: &TestApp, number: &str) -> uuid::Uuid {
    let created = app
        .create("/v1/payouts", &app.key, "p-1", &payout(number, "UGX", "5000"))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// MTN's transfer callback `body`, delivered to the intent of `token`.
async fn mtn_transfer_callback(app: &TestApp, token: &str, body: &Value) {
    let answer = app
        .http
        .post(app.url(&format!("/callbacks/mtn/transfer/{token}")))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
}

/// Runs jobs, moving the test's clock by `step` before each round, until
/// intent `id` is in `state`.
async fn until_in_state(app: &TestApp, id: uuid::Uuid, state: &str, step: Duration, what: &str) {
    eventually(Duration::from_secs(20), what, || async {
        app.advance(step);
        app.run_jobs().await;
        app.count(&format!(
            "SELECT count(*) FROM intents WHERE id = '{id}' AND state = '{state}'"
        ))
        .await
            == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_or_a_failure_reported_after_a_payout_completed_goes_to_a_person() {
    let app = spawn_provider_app("airtel", SimOptions::default()).await;
    let id = create_payout(&app, "0702345678").await;
    let state = || async {
        sqlx::query_scalar::<_, String>("SELECT state FROM intents WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    eventually(Duration::from_secs(20), "the payout to complete", || async {
        app.run_jobs().await;
        state().await == "completed"
    })
    .await;
    let (request_id, receipt): (String, String) =
        sqlx::query_as("SELECT provider_ref, receipt FROM intents WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let token: String = sqlx::query_scalar("SELECT token FROM callback_inbox WHERE provider = 'airtel' LIMIT 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    // Airtel then says the same transaction was reversed, and then that
    // it failed: neither is guessed at, both are for a person.
    for (status, message) in [("TR", "Transaction reversed"), ("TF", "Transaction failed")] {
        let transaction = json!({ "id": request_id, "message": message,
                                  "status_code": status, "airtel_money_id": receipt })
        .to_string();
        let hash =
            tuma::providers::airtel::wire::callback_hash(tuma::simulator::airtel::CALLBACK_HASH_KEY, &transaction);
        let body = format!(r#"{{"transaction":{transaction},"hash":"{hash}"}}"#);
        let answer = app
            .http
            .post(app.url(&format!("/callbacks/airtel/payment/{token}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    eventually(Duration::from_secs(10), "the callbacks to be processed", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome IS NULL")
            .await
            == 0
    })
    .await;
    assert_eq!(
        state().await,
        "completed",
        "the engine does not guess what a reversal means"
    );
    assert!(!app.reconciliation_report().await.ok);
    assert_eq!(app.listed_callbacks().await, ["contradicts_final", "contradicts_final"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_naming_another_amount_or_currency_is_left_to_the_status_poll() {
    let app = losing_every_callback("mtn").await;
    let id = create_payout(&app, "0772345678").await;
    app.run_jobs().await;
    let (state, reference, token): (String, String, String) =
        sqlx::query_as("SELECT state, provider_ref, callback_token FROM intents WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(state, "processing");
    // The last names a currency no database text column can hold.
    for (amount, currency) in [("1", "UGX"), ("5000", "EUR"), ("5000", "E\u{0}R")] {
        let body = json!({ "referenceId": reference, "externalId": reference, "amount": amount,
                           "currency": currency, "status": "SUCCESSFUL", "financialTransactionId": "9911" });
        mtn_transfer_callback(&app, &token, &body).await;
        app.run_jobs().await;
    }
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'amount_mismatch'")
            .await,
        3
    );
    assert_eq!(
        app.listed_callbacks().await,
        ["amount_mismatch", "amount_mismatch", "amount_mismatch"]
    );
    // The status poll asks MTN itself, and its answer settles the payout.
    app.advance(Duration::from_secs(30));
    until_in_state(&app, id, "completed", Duration::ZERO, "the poll to complete the payout").await;
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_id_carrying_a_nul_character_is_applied_once_not_retried_to_death() {
    let app = losing_every_callback("mtn").await;
    let id = create_payout(&app, "0772345678").await;
    app.run_jobs().await;
    let (reference, token): (String, String) =
        sqlx::query_as("SELECT provider_ref, callback_token FROM intents WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    // PostgreSQL's text refuses a NUL; a provider's id may still hold one.
    let body = json!({ "referenceId": reference, "externalId": reference, "amount": "5000",
                       "currency": "UGX", "status": "SUCCESSFUL", "financialTransactionId": "99\u{0}11" });
    for _ in 0..2 {
        mtn_transfer_callback(&app, &token, &body).await;
    }
    until_in_state(
        &app,
        id,
        "completed",
        Duration::ZERO,
        "the callback to complete the payout",
    )
    .await;
    let receipt: String = sqlx::query_scalar("SELECT receipt FROM intents WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(receipt, "99\u{FFFD}11");
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'duplicate'")
            .await,
        1,
        "the second delivery is the first one's duplicate"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tuma_jobs WHERE state IN ('available', 'running', 'dead') AND kind LIKE 'callback%'"
        )
        .await,
        0
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_answer_naming_another_amount_never_completes_the_payout() {
    let app = losing_every_callback("mtn").await;
    let id = create_payout(&app, "0772345678").await;
    app.run_jobs().await;
    let reference: String = sqlx::query_scalar("SELECT provider_ref FROM intents WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let sim = app.provider_sim.as_ref().expect("a simulator");
    assert!(sim.misreport_amount(&reference, 1), "the simulator knows the request");
    // Every poll hears "SUCCESSFUL" for 1 UGX on a 5,000 UGX payout: none
    // completes it, each is noted with the code, and when the polls run out
    // the payout is unresolved, for a person.
    for poll in 1..=10 {
        app.advance(Duration::from_secs(30));
        eventually(Duration::from_secs(20), "the status poll", || async {
            app.run_jobs().await;
            app.count(&format!(
                "SELECT count(*) FROM provider_calls WHERE intent_id = '{id}' AND call = 'status' \
                 AND outcome = 'unknown' AND code = 'amount_mismatch'"
            ))
            .await
                == poll
        })
        .await;
        let state: String = sqlx::query_scalar("SELECT state FROM intents WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        assert_ne!(state, "completed", "poll {poll} applied a success for another amount");
    }
    until_in_state(
        &app,
        id,
        "unresolved",
        Duration::from_secs(30),
        "the payout to be unresolved",
    )
    .await;
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_whose_text_the_database_cannot_hold_still_ends_its_intent() {
    let app = losing_every_callback("tigo_tz").await;
    let created = app
        .create(
            "/v1/collections",
            &app.key,
            "c-1",
            &json!({ "amount": "5000", "currency": "TZS", "payer": { "msisdn": "0652345001" },
                     "party_id": "creator-42", "reference": "bundle-30d" }),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id: uuid::Uuid = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.run_jobs().await;
    let reference: String = sqlx::query_scalar("SELECT provider_ref FROM intents WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    // Tigo's description is free text, and may carry a NUL, which no
    // PostgreSQL text column holds.
    let token = tuma::providers::tigo_tz::callback_token(app.config.tigo_tz.as_ref().unwrap());
    let body = json!({ "Status": false, "Description": "Insufficient\u{0}balance", "ReferenceID": reference });
    let answer = app
        .http
        .post(app.url(&format!("/callbacks/tigo_tz/payment/{token}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    eventually(Duration::from_secs(10), "the collection to fail", || async {
        app.run_jobs().await;
        app.count(&format!(
            "SELECT count(*) FROM intents WHERE id = '{id}' AND state = 'failed'"
        ))
        .await
            == 1
    })
    .await;
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM intent_events WHERE intent_id = $1 AND event = 'provider_failed'")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(reason.contains("Insufficient\u{FFFD}balance"), "{reason}");
}
