//! M-Pesa end to end: the HTTP API, the runner, the Daraja adapter and the
//! in-process Daraja simulator, with callbacks travelling over real HTTP
//! back into the engine. The engine's clock is manual; the simulator's
//! callbacks are real requests, so tests wait for them to *happen*.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tuma::simulator::mpesa::SimConfig;
use tuma::simulator::Chaos;

use crate::common::app::{spawn_mpesa_app, spawn_mpesa_app_with, TestApp};
use crate::common::eventually;

fn payout(msisdn: &str, amount: &str) -> Value {
    json!({ "amount": amount, "currency": "KES", "recipient": { "msisdn": msisdn },
            "party_id": "worker-7", "reference": "wages-nov" })
}

fn collection(msisdn: &str, amount: &str) -> Value {
    json!({ "amount": amount, "currency": "KES", "payer": { "msisdn": msisdn },
            "party_id": "donor-3", "reference": "campaign-9" })
}

/// A Daraja whose every callback is lost on the way.
fn losing_every_callback() -> SimConfig {
    SimConfig {
        chaos: Chaos {
            callback_loss_permille: 1000,
            ..Chaos::default()
        },
        ..SimConfig::default()
    }
}

/// A Daraja that takes 1.5 s to answer each request and loses every
/// callback, called with a client timeout of `client_timeout_ms`.
async fn slow_daraja_losing_every_callback(client_timeout_ms: u64) -> TestApp {
    crate::common::app::spawn_mpesa_app_with(
        SimConfig {
            response_delay: Duration::from_millis(1500),
            ..losing_every_callback()
        },
        |mpesa| mpesa.request_timeout_ms = client_timeout_ms,
    )
    .await
}

async fn create(app: &TestApp, path: &str, body: &Value) -> String {
    let response = app
        .create(path, &app.key, &uuid::Uuid::new_v4().to_string(), body)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn fetch(app: &TestApp, kind: &str, id: &str) -> Value {
    app.get(&format!("/v1/{kind}s/{id}"), &app.key)
        .await
        .json()
        .await
        .unwrap()
}

/// Works the default queue until the intent reaches `state` (callbacks
/// arrive over HTTP in the background).
async fn until_state(app: &TestApp, kind: &str, id: &str, state: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("{kind} {id} to become {state}"),
        || async {
            app.run_jobs().await;
            fetch(app, kind, id).await["state"] == state
        },
    )
    .await;
    fetch(app, kind, id).await
}

/// The secret token in the intent's callback URLs.
async fn callback_token(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT callback_token FROM intents WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn provider_ref(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT provider_ref FROM intents WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

fn events(intent: &Value) -> Vec<(String, String)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b2c_payout_completes_on_its_result_callback_with_the_receipt_recorded() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let float_before = sim.float_kes();
    let id = create(&app, "/v1/payouts", &payout("0712 345 678", "1500")).await;
    // Our request id was committed with the payout itself.
    let assigned = provider_ref(&app, &id).await;
    let done = until_state(&app, "payout", &id, "completed").await;
    // Provider calls run on the provider's own queue (its rate limit).
    // Nothing could hold the payout back (no float check here), so it was
    // created already released: no release job ran.
    let queues: Vec<(String, String)> =
        sqlx::query_as("SELECT args->>'action', queue FROM tuma_jobs WHERE kind = 'workflow.action' ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(queues, vec![("submit".to_owned(), "mpesa".to_owned())]);
    let reference = provider_ref(&app, &id).await;
    assert_eq!(reference, assigned, "the submission used the id it was created with");
    let paid = sim.payments_for(&reference);
    assert_eq!(paid.len(), 1);
    assert_eq!((paid[0].amount_kes, paid[0].msisdn.as_str()), (1500, "254712345678"));
    // The payment and Safaricom's tariff for it (50 KES up to 2,500).
    assert_eq!(sim.float_kes(), float_before - 1500 - 50);
    let receipt: Option<String> = sqlx::query_scalar("SELECT receipt FROM intents WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(receipt.as_deref(), Some(paid[0].receipt.as_str()));
    assert_eq!(
        events(&done),
        vec![
            ("create".into(), "api".into()),
            ("release".into(), "policy".into()),
            ("provider_succeeded".into(), "callback".into())
        ]
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_stk_collection_completes_on_its_callback_and_credits_its_party_making_it() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let id = create(&app, "/v1/collections", &collection("0722 000 111", "250")).await;
    let done = until_state(&app, "collection", &id, "completed").await;
    let reference = provider_ref(&app, &id).await;
    assert!(reference.starts_with("ws_CO_"), "{reference}");
    assert_eq!(app.sim.as_ref().unwrap().payments_for(&reference).len(), 1);
    assert_eq!(
        events(&done).last().unwrap(),
        &("provider_succeeded".to_owned(), "callback".to_owned())
    );
    // The payer's party was credited, so it exists, with the default tier,
    // as if its first payout or a credit through the API had made it.
    let party = app.get("/v1/parties/donor-3", &app.key).await;
    assert_eq!(party.status(), StatusCode::OK);
    let party: Value = party.json().await.unwrap();
    assert_eq!(party["kyc_tier"], app.config.policy.default_kyc_tier);
    assert_eq!(app.available("donor-3", "KES").await, rust_decimal::Decimal::from(250));
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_an_earlier_attempt_may_have_sent_is_never_sent_again() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let id = create(&app, "/v1/collections", &collection("0722 000 112", "250")).await;
    // An earlier attempt committed its start and died before it could
    // record Daraja's answer (killed, or the database gone for long).
    sqlx::query("UPDATE intents SET request_started_at = now() WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let prompted = until_state(&app, "collection", &id, "processing").await;
    assert_eq!(events(&prompted).last().unwrap().0, "prompted");
    assert!(
        sqlx::query_scalar::<_, Option<String>>("SELECT provider_ref FROM intents WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            .is_none(),
        "no second prompt, so no CheckoutRequestID of ours"
    );
    // Whether the payer was prompted (and paid) cannot be asked without
    // the CheckoutRequestID: no expiry, the polls run out, a person decides.
    app.advance(Duration::from_secs(301));
    app.run_jobs().await;
    assert_eq!(fetch(&app, "collection", &id).await["state"], "processing");
    run_out_the_polls(&app).await;
    until_state(&app, "collection", &id, "unresolved").await;
    assert!(sim.payments().is_empty(), "{:?}", sim.payments());
    assert_eq!(
        app.count("SELECT count(*) FROM provider_calls WHERE call = 'send'")
            .await,
        0,
        "the prompt was not sent"
    );
    app.assert_ledger_balanced().await;
}

/// The 30-second status poll finds the collection paid: it completes by
/// poll, its payer prompted once, the books balanced.
async fn completed_by_the_30_second_poll_prompted_once(app: &TestApp, id: &str) {
    app.advance(Duration::from_secs(30));
    let done = until_state(app, "collection", id, "completed").await;
    assert_eq!(
        events(&done).last().unwrap(),
        &("provider_succeeded".to_owned(), "poll".to_owned())
    );
    assert_eq!(app.sim.as_ref().unwrap().payments().len(), 1, "prompted once");
    app.assert_ledger_balanced().await;
}

/// Steps the clock through a collection's status polls (every 30 s, 12 of
/// them) and one more, working the jobs each time.
async fn run_out_the_polls(app: &TestApp) {
    for _ in 0..14 {
        app.advance(Duration::from_secs(30));
        app.run_jobs().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_whose_answer_and_callback_were_both_lost_becomes_unresolved_never_expired() {
    // Daraja answers the push after the client gave up, and the payer's
    // callback never arrives: Tuma holds no CheckoutRequestID to ask about.
    let app = slow_daraja_losing_every_callback(300).await;
    let sim = app.sim.clone().unwrap();
    let id = create(&app, "/v1/collections", &collection("0722 000 113", "250")).await;
    until_state(&app, "collection", &id, "processing").await;
    eventually(Duration::from_secs(10), "the payer to pay", || async {
        sim.payments().len() == 1
    })
    .await;
    app.advance(Duration::from_secs(301));
    app.run_jobs().await;
    let waiting = fetch(&app, "collection", &id).await;
    assert_eq!(waiting["state"], "processing", "the paid prompt was declared expired");
    let refused = waiting["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "prompt_expired")
        .expect("the expiry was considered");
    assert_eq!(refused["outcome"], "rejected");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be asked"),
        "{refused}"
    );
    run_out_the_polls(&app).await;
    until_state(&app, "collection", &id, "unresolved").await;
    // The statement shows the payment: an admin settles it with the receipt.
    let receipt = sim.payments()[0].receipt.clone();
    let resolved = app
        .http
        .post(app.url(&format!("/v1/collections/{id}/resolve")))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "outcome": "succeeded", "evidence": "Daraja statement", "receipt": receipt }))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), StatusCode::OK);
    assert_eq!(fetch(&app, "collection", &id).await["state"], "completed");
    assert_eq!(sim.payments().len(), 1, "prompted once");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_prompt_follows_the_checkout_id_its_dead_attempt_noted() {
    let app = spawn_mpesa_app(losing_every_callback()).await;
    let id = create(&app, "/v1/collections", &collection("0722 000 114", "250")).await;
    let intent_id: uuid::Uuid = id.parse().unwrap();
    // What the earlier attempt did before it was killed: committed its
    // start, pushed, and noted Daraja's answer; the "prompted" record and
    // the payer's callback were both lost.
    sqlx::query("UPDATE intents SET request_started_at = now() WHERE id = $1")
        .bind(intent_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let client = tuma::providers::mpesa::MpesaClient::new(app.config.mpesa.clone().unwrap()).unwrap();
    let token: String = sqlx::query_scalar("SELECT callback_token FROM intents WHERE id = $1")
        .bind(intent_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let url = format!("{}/callbacks/mpesa/stk/{token}", app.base);
    let checkout = client.stk_push("254722000114", 250, "campaign-9", &url).await.unwrap();
    tuma::store::provider_calls::record_many(
        &app.db.pool,
        &[tuma::store::grouped::CallNote {
            intent_id,
            job_id: 0,
            run: 1,
            provider: "mpesa",
            call: "send",
            request_id: Some(checkout.clone()),
            outcome: "pending",
            code: None,
            latency: Duration::from_millis(40),
        }],
    )
    .await
    .unwrap();
    until_state(&app, "collection", &id, "processing").await;
    assert_eq!(provider_ref(&app, &id).await, checkout);
    // The 30-second poll asks about that prompt and learns it was paid.
    completed_by_the_30_second_poll_prompted_once(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_attempt_stopped_mid_call_still_keeps_the_checkout_id_daraja_gave() {
    // Daraja takes 1.5 s to answer the push; the attempt is stopped at
    // 0.3 s (as a lost lease or a fencing node would stop it), and the
    // payer's callback is lost.
    let app = slow_daraja_losing_every_callback(10_000).await;
    let sim = app.sim.clone().unwrap();
    let id = create(&app, "/v1/collections", &collection("0722 000 115", "250")).await;
    sqlx::query("UPDATE tuma_jobs SET timeout_ms = 300 WHERE args->>'action' = 'prompt'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.run_jobs().await;
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE args->>'action' = 'prompt' AND errors->0->>'kind' = 'timeout'")
            .await,
        1,
        "the attempt was stopped"
    );
    eventually(
        Duration::from_secs(10),
        "Daraja's CheckoutRequestID to be kept",
        || async {
            app.count("SELECT count(*) FROM intents WHERE provider_ref IS NOT NULL")
                .await
                == 1
        },
    )
    .await;
    let checkout = provider_ref(&app, &id).await;
    assert_eq!(sim.payments_for(&checkout).len(), 1, "the payer paid that prompt");
    // The retry does not prompt again; the 30-second poll asks about the
    // prompt and learns it was paid.
    app.advance(Duration::from_secs(120));
    until_state(&app, "collection", &id, "processing").await;
    completed_by_the_30_second_poll_prompted_once(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_callback_is_recovered_by_the_30_second_status_poll() {
    let app = spawn_mpesa_app(losing_every_callback()).await;
    let sim = app.sim.clone().unwrap();
    let paying = create(&app, "/v1/payouts", &payout("0712345678", "900")).await;
    let collecting = create(&app, "/v1/collections", &collection("0712345679", "100")).await;
    until_state(&app, "payout", &paying, "processing").await;
    until_state(&app, "collection", &collecting, "processing").await;
    assert_eq!(sim.callbacks_lost(), 2, "both results were lost");
    // Daraja answers the status query with a result callback of its own.
    sim.set_chaos(Chaos::default());
    app.advance(Duration::from_secs(30));
    let paid = until_state(&app, "payout", &paying, "completed").await;
    let collected = until_state(&app, "collection", &collecting, "completed").await;
    assert_eq!(
        events(&paid).last().unwrap(),
        &("provider_succeeded".to_owned(), "poll".to_owned())
    );
    assert_eq!(
        events(&collected).last().unwrap(),
        &("provider_succeeded".to_owned(), "poll".to_owned())
    );
    assert_eq!(sim.payments().len(), 2);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_callbacks_change_nothing_the_second_time() {
    let app = spawn_mpesa_app(SimConfig {
        chaos: Chaos {
            callback_duplicate_permille: 1000,
            ..Chaos::default()
        },
        ..SimConfig::default()
    })
    .await;
    let id = create(&app, "/v1/payouts", &payout("0712345678", "700")).await;
    until_state(&app, "payout", &id, "completed").await;
    eventually(Duration::from_secs(10), "both deliveries processed", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome IS NOT NULL")
            .await
            == 2
    })
    .await;
    let outcomes = tuma::store::inbox::outcomes(&app.db.pool).await.unwrap();
    assert_eq!(
        outcomes,
        vec![(Some("applied".into()), 1), (Some("duplicate".into()), 1)]
    );
    let done = fetch(&app, "payout", &id).await;
    assert_eq!(done["events"].as_array().unwrap().len(), 3, "{done}");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_waiting_together_are_applied_in_shared_transactions_exactly_as_one_by_one() {
    let app = spawn_mpesa_app(SimConfig {
        chaos: Chaos {
            callback_duplicate_permille: 1000,
            ..Chaos::default()
        },
        ..SimConfig::default()
    })
    .await;
    let sim = app.sim.clone().unwrap();
    const N: i64 = 12;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(create(&app, "/v1/payouts", &payout("0712345678", &format!("{}", 100 + i))).await);
    }
    // Release and submit them all; hold the callbacks back until every
    // result (each sent twice) is stored, so one claim takes them together.
    app.work("default").await;
    app.work("mpesa").await;
    // The submissions ran side by side and noted their calls together.
    // Each was noted as sending before its call, and with its answer after.
    let notes = app
        .count("SELECT count(*) FROM provider_calls WHERE outcome <> 'sending'")
        .await;
    let transactions = app
        .count("SELECT count(DISTINCT xmin::text) FROM provider_calls WHERE outcome <> 'sending'")
        .await;
    assert_eq!(notes, N);
    assert_eq!(
        app.count("SELECT count(*) FROM provider_calls WHERE outcome = 'sending'")
            .await,
        N
    );
    assert!(transactions < N, "{N} calls noted in {transactions} transactions");
    eventually(
        Duration::from_secs(10),
        "every result callback stored, twice",
        || async { app.count("SELECT count(*) FROM callback_inbox").await == 2 * N },
    )
    .await;
    app.work("default").await;
    for id in &ids {
        let done = fetch(&app, "payout", id).await;
        assert_eq!(done["state"], "completed", "{done}");
        let paid = sim.payments_for(&provider_ref(&app, id).await);
        assert_eq!(paid.len(), 1);
        let receipt: Option<String> = sqlx::query_scalar("SELECT receipt FROM intents WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        assert_eq!(receipt.as_deref(), Some(paid[0].receipt.as_str()));
    }
    let outcomes = tuma::store::inbox::outcomes(&app.db.pool).await.unwrap();
    assert_eq!(
        outcomes,
        vec![(Some("applied".into()), N), (Some("duplicate".into()), N)]
    );
    // Rows one transaction wrote share its id (xmin): fewer transactions
    // than callbacks applied means they were applied together.
    let transactions = app
        .count("SELECT count(DISTINCT xmin::text) FROM callback_inbox WHERE outcome = 'applied'")
        .await;
    assert!(transactions < N, "{N} callbacks applied in {transactions} transactions");
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE kind LIKE 'callback.mpesa%' AND state <> 'completed'")
            .await,
        0
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_callbacks_whose_shared_transaction_fails_gives_each_its_own_job() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    const N: i64 = 6;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(create(&app, "/v1/payouts", &payout("0712345678", &format!("{}", 100 + i))).await);
    }
    app.work("default").await;
    app.work("mpesa").await;
    eventually(Duration::from_secs(10), "every result callback stored", || async {
        app.count("SELECT count(*) FROM callback_inbox").await == N
    })
    .await;
    // From now on, any statement that moves more than one intent on a
    // provider's word fails: every shared transaction rolls back.
    sqlx::raw_sql(
        "CREATE FUNCTION one_at_a_time() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT count(*) FROM moved WHERE event LIKE 'provider_%') > 1 THEN
                 RAISE EXCEPTION 'no shared transactions in this test';
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER one_at_a_time AFTER INSERT ON intent_events
             REFERENCING NEW TABLE AS moved FOR EACH STATEMENT EXECUTE FUNCTION one_at_a_time();",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    // The callbacks as one group (they arrived as the simulator sent them,
    // perhaps in several): one job naming every row, as the inbox writes
    // for callbacks stored together.
    let mut tx = app.db.pool.begin().await.unwrap();
    sqlx::query("DELETE FROM tuma_jobs WHERE kind = 'callback.mpesa.group'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let rows: Vec<i64> = sqlx::query_scalar("SELECT id FROM callback_inbox ORDER BY id")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let group = tuma::providers::mpesa::callbacks::ProcessCallbacks { inbox_ids: rows };
    app.engine
        .jobs()
        .enqueue(&mut tx, &tuma::runner::NewJob::new(&group))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.work("default").await;

    for id in &ids {
        let done = fetch(&app, "payout", id).await;
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(sim.payments_for(&provider_ref(&app, id).await).len(), 1);
    }
    assert_eq!(
        tuma::store::inbox::outcomes(&app.db.pool).await.unwrap(),
        vec![(Some("applied".into()), N)]
    );
    // Each applied alone, by a job of its own; the groups' jobs completed.
    assert_eq!(
        app.count("SELECT count(DISTINCT xmin::text) FROM callback_inbox").await,
        N
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE kind = 'callback.mpesa' AND state = 'completed'")
            .await,
        N
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE kind LIKE 'callback.mpesa%' AND state <> 'completed'")
            .await,
        0
    );
    // A second job for a callback processed already (a stale attempt's
    // leftovers) finds it processed and changes nothing.
    let events = app.count("SELECT count(*) FROM intent_events").await;
    let mut tx = app.db.pool.begin().await.unwrap();
    let again: Vec<tuma::runner::NewJob> = sqlx::query_scalar::<_, i64>("SELECT id FROM callback_inbox")
        .fetch_all(&mut *tx)
        .await
        .unwrap()
        .into_iter()
        .map(|inbox_id| tuma::runner::NewJob::new(&tuma::providers::mpesa::callbacks::ProcessCallback { inbox_id }))
        .collect();
    app.engine.jobs().enqueue_many(&mut tx, &again).await.unwrap();
    tx.commit().await.unwrap();
    app.work("default").await;
    assert_eq!(
        tuma::store::inbox::outcomes(&app.db.pool).await.unwrap(),
        vec![(Some("applied".into()), N)]
    );
    assert_eq!(app.count("SELECT count(*) FROM intent_events").await, events);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_beats_its_requests_answer_is_matched_later() {
    let chaos = Chaos {
        callback_before_response: true,
        ..Chaos::default()
    };
    let sim = SimConfig {
        chaos,
        response_delay: Duration::from_millis(1_500),
        ..SimConfig::default()
    };
    let app = std::sync::Arc::new(spawn_mpesa_app(sim).await);
    let id = create(&app, "/v1/collections", &collection("0712345678", "300")).await;
    // The prompt action waits for Daraja's answer; its callback is already here.
    let prompting = {
        let app = app.clone();
        tokio::spawn(async move { app.run_jobs().await })
    };
    eventually(Duration::from_secs(10), "the early callback to be stored", || async {
        app.count("SELECT count(*) FROM callback_inbox").await == 1
    })
    .await;
    app.run_jobs().await;
    assert_eq!(
        fetch(&app, "collection", &id).await["state"],
        "pending",
        "the prompt's answer is still on its way"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome IS NULL")
            .await,
        1,
        "the early callback waits, unprocessed"
    );
    prompting.await.unwrap();
    assert_eq!(fetch(&app, "collection", &id).await["state"], "processing");
    app.advance(Duration::from_secs(1));
    let done = until_state(&app, "collection", &id, "completed").await;
    assert_eq!(events(&done).last().unwrap().0, "provider_succeeded");
    app.assert_ledger_balanced().await;
}

/// Posts `body` to Tuma's Daraja callback URL of `kind` and `token`, as
/// Daraja would.
async fn daraja_callback(app: &TestApp, kind: &str, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/callbacks/mpesa/{kind}/{token}")))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Posts Daraja's STK callback for a paid prompt (`checkout`, `amount`
/// KES, `receipt`) to the intent whose callback token is `token`.
async fn paid_stk_callback(app: &TestApp, token: &str, checkout: &str, amount: u32, receipt: &str) -> StatusCode {
    let stk = json!({ "Body": { "stkCallback": {
        "MerchantRequestID": "1", "CheckoutRequestID": checkout, "ResultCode": 0, "ResultDesc": "ok",
        "CallbackMetadata": { "Item": [
            { "Name": "Amount", "Value": amount }, { "Name": "MpesaReceiptNumber", "Value": receipt },
        ]},
    }}});
    daraja_callback(app, "stk", token, &stk).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_for_another_amount_is_not_applied_and_goes_on_the_report() {
    let app = spawn_mpesa_app(losing_every_callback()).await;
    let id = create(&app, "/v1/collections", &collection("0712345678", "300")).await;
    app.run_jobs().await;
    assert_eq!(fetch(&app, "collection", &id).await["state"], "processing");
    let checkout = provider_ref(&app, &id).await;
    let token = callback_token(&app, &id).await;
    // A "paid" for 1 KES on a 300 KES prompt: the payee is not credited
    // 300 on its word.
    assert_eq!(
        paid_stk_callback(&app, &token, &checkout, 1, "QKL1WRONG0").await,
        StatusCode::OK
    );
    app.run_jobs().await;
    assert_eq!(fetch(&app, "collection", &id).await["state"], "processing");
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'amount_mismatch'")
            .await,
        1
    );
    assert_eq!(app.listed_callbacks().await, ["amount_mismatch"]);
    // The right amount is applied as ever.
    assert_eq!(
        paid_stk_callback(&app, &token, &checkout, 300, "QKL1RIGHT0").await,
        StatusCode::OK
    );
    let done = until_state(&app, "collection", &id, "completed").await;
    assert_eq!(done["receipt"], "QKL1RIGHT0", "{done}");
    app.assert_ledger_balanced().await;
}

/// Posts Daraja's Transaction Status answer (`conversation`, its own id)
/// saying request `original` completed for `amount` KES with `receipt`,
/// to the status URL of the intent whose callback token is `token`.
async fn completed_status_answer(
    app: &TestApp,
    token: &str,
    original: &str,
    conversation: &str,
    amount: u32,
    receipt: &str,
) -> StatusCode {
    let answer = json!({ "Result": {
        "ResultType": 0, "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
        "OriginatorConversationID": format!("query-{conversation}"), "ConversationID": conversation,
        "TransactionID": receipt,
        "ResultParameters": { "ResultParameter": [
            { "Key": "ReceiptNo", "Value": receipt },
            { "Key": "TransactionStatus", "Value": "Completed" },
            { "Key": "Amount", "Value": amount },
            { "Key": "OriginatorConversationID", "Value": original },
        ]},
    }});
    daraja_callback(app, "status-result", token, &answer).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_answer_for_another_amount_is_not_applied_either() {
    let app = spawn_mpesa_app(losing_every_callback()).await;
    let id = create(&app, "/v1/payouts", &payout("0712345678", "1500")).await;
    app.run_jobs().await;
    assert_eq!(fetch(&app, "payout", &id).await["state"], "processing");
    let request = provider_ref(&app, &id).await;
    let token = callback_token(&app, &id).await;
    // The status answer comes to the same token URL as the result would:
    // "completed" for ten times the amount is not taken on its word.
    assert_eq!(
        completed_status_answer(&app, &token, &request, "AG_1", 15_000, "QKL2WRONG0").await,
        StatusCode::OK
    );
    app.run_jobs().await;
    assert_eq!(fetch(&app, "payout", &id).await["state"], "processing");
    assert_eq!(app.listed_callbacks().await, ["amount_mismatch"]);
    // The right amount completes it, with the receipt it names.
    assert_eq!(
        completed_status_answer(&app, &token, &request, "AG_2", 1_500, "QKL2RIGHT0").await,
        StatusCode::OK
    );
    let done = until_state(&app, "payout", &id, "completed").await;
    assert_eq!(done["receipt"], "QKL2RIGHT0", "{done}");
    assert_eq!(
        events(&done).last().unwrap(),
        &("provider_succeeded".to_owned(), "poll".to_owned())
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_our_credentials_could_not_send_is_not_taken_as_sent() {
    // Daraja's OAuth refusing the app's key and secret; Daraja refusing
    // the push itself for a wrong passkey (`500.001.1001` "Wrong
    // credentials", an HTTP 500 that is no ambiguous 5xx).
    let misconfigured: [fn(&mut tuma::providers::mpesa::MpesaConfig); 2] = [
        |mpesa| mpesa.consumer_secret = "not-the-secret".to_owned().into(),
        |mpesa| mpesa.passkey = "not-the-passkey".to_owned().into(),
    ];
    for adjust in misconfigured {
        let app = spawn_mpesa_app_with(SimConfig::default(), adjust).await;
        let id = create(&app, "/v1/collections", &collection("0712345678", "300")).await;
        app.run_jobs().await;
        // No prompt went out: the job waits, dead, for an operator to
        // mend the configuration and retry it…
        assert_eq!(fetch(&app, "collection", &id).await["state"], "pending");
        assert_eq!(
            app.count("SELECT count(*) FROM tuma_jobs WHERE state = 'dead' AND args->>'action' = 'prompt'")
                .await,
            1
        );
        // …and the intent is not taken for one whose prompt may be on the
        // payer's phone: it can still be cancelled.
        let cancelled = app.post(&format!("/v1/collections/{id}/cancel"), &app.key).await;
        assert_eq!(cancelled.status(), StatusCode::OK);
        assert_eq!(fetch(&app, "collection", &id).await["state"], "cancelled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_to_a_subscriber_busy_with_another_transaction_fails_at_once() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    // Daraja refuses the push (`500.001.1001` "Unable to lock subscriber"):
    // no prompt reached the phone, so the collection fails now instead of
    // polling a prompt it cannot name into `unresolved`.
    let id = create(&app, "/v1/collections", &collection("0712345006", "300")).await;
    let failed = until_state(&app, "collection", &id, "failed").await;
    assert_eq!(
        events(&failed),
        vec![
            ("create".to_owned(), "api".to_owned()),
            ("prompt_failed".to_owned(), "api".to_owned())
        ]
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_carrying_a_nul_character_is_applied_once_not_retried_to_death() {
    let app = spawn_mpesa_app(losing_every_callback()).await;
    let id = create(&app, "/v1/collections", &collection("0712345678", "300")).await;
    app.run_jobs().await;
    let checkout = provider_ref(&app, &id).await;
    let token = callback_token(&app, &id).await;
    // PostgreSQL's text refuses a NUL; a provider's id may still hold one.
    for _ in 0..2 {
        assert_eq!(
            paid_stk_callback(&app, &token, &checkout, 300, "QKL1\u{0}NUL0").await,
            StatusCode::OK
        );
    }
    let done = until_state(&app, "collection", &id, "completed").await;
    assert_eq!(done["receipt"], "QKL1\u{FFFD}NUL0", "{done}");
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'duplicate'")
            .await,
        1,
        "the second delivery is the first one's duplicate"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE state IN ('available', 'running', 'dead')")
            .await,
        0
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_nobody_knows_about_a_completed_prompt_goes_on_the_report() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let id = create(&app, "/v1/collections", &collection("0712345678", "300")).await;
    until_state(&app, "collection", &id, "completed").await;
    let checkout = provider_ref(&app, &id).await;
    let token = callback_token(&app, &id).await;
    let stk = json!({ "Body": { "stkCallback": {
        "MerchantRequestID": "1", "CheckoutRequestID": checkout, "ResultCode": 9321, "ResultDesc": "reversed?",
    }}});
    let answer = daraja_callback(&app, "stk", &token, &stk).await;
    assert_eq!(answer.status(), StatusCode::OK);
    app.run_jobs().await;
    assert_eq!(fetch(&app, "collection", &id).await["state"], "completed");
    assert_eq!(app.listed_callbacks().await, ["contradicts_final"]);
}

#[tokio::test]
async fn an_early_callback_whose_request_never_comes_waits_ten_minutes_on_the_clock_that_stamped_it() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let id = create(&app, "/v1/collections", &collection("0712345678", "300")).await;
    let token = callback_token(&app, &id).await;
    assert_eq!(
        paid_stk_callback(&app, &token, "ws_CO_EARLY", 300, "QKL1EARLY0").await,
        StatusCode::OK
    );
    // Only callbacks run here (the prompt's queue is left alone), so its
    // collection never records a request: the callback waits, matching
    // again every second, for ten minutes of the test's clock.
    let unprocessed = "SELECT count(*) FROM callback_inbox WHERE outcome IS NULL";
    app.work("default").await;
    for _ in 0..3 {
        app.advance(Duration::from_secs(2));
        app.work("default").await;
        assert_eq!(app.count(unprocessed).await, 1, "still waiting for its request");
    }
    app.advance(Duration::from_secs(600));
    app.work("default").await;
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'unmatched'")
            .await,
        1
    );
    assert_eq!(fetch(&app, "collection", &id).await["state"], "pending");
}

/// A Daraja set up as `daraja` that pays every B2C, then answers as if
/// the call timed out and loses the result; and a 2,500 KES payout sent
/// to it, paid once and still `processing`. Returns the app, the payout's
/// id and its request id; Daraja behaves again from here on.
async fn a_payout_paid_behind_a_timeout(daraja: SimConfig) -> (TestApp, String, String) {
    let app = spawn_mpesa_app(SimConfig {
        chaos: Chaos {
            timeout_after_money_permille: 1000,
            callback_loss_permille: 1000,
            ..Chaos::default()
        },
        ..daraja
    })
    .await;
    let sim = app.sim.clone().unwrap();
    let id = create(&app, "/v1/payouts", &payout("0712345678", "2500")).await;
    until_state(&app, "payout", &id, "processing").await;
    let reference = provider_ref(&app, &id).await;
    assert_eq!(
        sim.payments_for(&reference).len(),
        1,
        "the money moved though the call timed out"
    );
    sim.set_chaos(Chaos::default());
    (app, id, reference)
}

/// The 30-second status poll finds the payout paid: it completes by poll,
/// paid once, the books balanced.
async fn completed_by_the_30_second_poll_paid_once(app: &TestApp, id: &str) {
    app.advance(Duration::from_secs(30));
    let done = until_state(app, "payout", id, "completed").await;
    assert_eq!(
        events(&done).last().unwrap(),
        &("provider_succeeded".to_owned(), "poll".to_owned())
    );
    assert_eq!(app.sim.as_ref().unwrap().payments().len(), 1, "paid once");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b2c_that_times_out_after_moving_money_is_found_by_the_status_query_and_paid_once() {
    let (app, id, reference) = a_payout_paid_behind_a_timeout(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    // The submit is re-sent under the same id: Daraja refuses the duplicate.
    app.advance(Duration::from_secs(2));
    app.run_jobs().await;
    assert_eq!(sim.payments_for(&reference).len(), 1, "re-sending paid twice");
    completed_by_the_30_second_poll_paid_once(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_b2c_refused_as_a_duplicate_by_result_code_15_is_left_to_the_status_query() {
    // Daraja reports the duplicate in a result callback (ResultCode 15)
    // naming our id: that says nothing about the original, which paid.
    let (app, id, reference) = a_payout_paid_behind_a_timeout(SimConfig {
        duplicate_in_result: true,
        ..SimConfig::default()
    })
    .await;
    let sim = app.sim.clone().unwrap();
    app.advance(Duration::from_secs(2));
    app.run_jobs().await;
    eventually(Duration::from_secs(10), "the code-15 result processed", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome IS NOT NULL")
            .await
            == 1
    })
    .await;
    let outcome: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT outcome, detail FROM callback_inbox WHERE kind = 'b2c-result'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(outcome.0.as_deref(), Some("ignored"), "{outcome:?}");
    assert_eq!(fetch(&app, "payout", &id).await["state"], "processing");
    assert_eq!(sim.payments_for(&reference).len(), 1, "re-sending paid twice");
    completed_by_the_30_second_poll_paid_once(&app, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_resend_after_money_may_have_moved_never_fails_the_payout() {
    let (app, paid, _) = a_payout_paid_behind_a_timeout(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();

    // The re-send meets a gateway that refuses it: that is no word on the
    // B2C before it, which paid.
    sim.refuse_b2c_at_gateway(true);
    app.advance(Duration::from_secs(2));
    app.run_jobs().await;
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM provider_calls WHERE intent_id = $1::uuid AND call = 'send' ORDER BY id",
    )
    .bind(&paid)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(outcomes, ["sending", "ambiguous", "sending", "rejected"]);
    assert_eq!(fetch(&app, "payout", &paid).await["state"], "processing");

    // A payout whose first and only request the gateway refuses was never
    // sent: that refusal is final.
    let refused = create(&app, "/v1/payouts", &payout("0712345670", "700")).await;
    until_state(&app, "payout", &refused, "failed").await;

    // The status poll learns that the first one paid.
    sim.refuse_b2c_at_gateway(false);
    completed_by_the_30_second_poll_paid_once(&app, &paid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_end_in_failed_with_the_providers_reason() {
    let app = spawn_mpesa_app(SimConfig {
        prompt_timeout: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let unregistered = create(&app, "/v1/payouts", &payout("0712345009", "1000")).await;
    let cancelled = create(&app, "/v1/collections", &collection("0712345001", "100")).await;
    let wrong_pin = create(&app, "/v1/collections", &collection("0712345002", "100")).await;
    let broke = create(&app, "/v1/collections", &collection("0712345004", "100")).await;
    let silent = create(&app, "/v1/collections", &collection("0712345003", "100")).await;
    for (kind, id) in [
        ("payout", &unregistered),
        ("collection", &cancelled),
        ("collection", &wrong_pin),
        ("collection", &broke),
        ("collection", &silent),
    ] {
        until_state(&app, kind, id, "failed").await;
    }
    let details: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM callback_inbox WHERE outcome = 'applied' ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let details = details.join(" | ");
    for code in ["2040", "1032", "2001", "1:", "1037"] {
        assert!(details.contains(code), "{code} missing from {details}");
    }
    assert!(app.sim.as_ref().unwrap().payments().is_empty());
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_prompt_paid_late_is_completed_with_both_events_in_its_history() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let id = create(&app, "/v1/collections", &collection("0712345005", "450")).await;
    until_state(&app, "collection", &id, "processing").await;
    // Status polls hear "being processed" until the prompt expires.
    for _ in 0..10 {
        app.advance(Duration::from_secs(30));
        app.run_jobs().await;
    }
    let expired = fetch(&app, "collection", &id).await;
    assert_eq!(expired["state"], "expired");
    sim.answer_prompt(&provider_ref(&app, &id).await, "0").await;
    let done = until_state(&app, "collection", &id, "completed").await;
    let history: Vec<String> = events(&done).into_iter().map(|(event, _)| event).collect();
    assert_eq!(
        history,
        vec!["create", "prompted", "prompt_expired", "provider_succeeded"]
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_once_and_no_intent_fails() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let first = create(&app, "/v1/payouts", &payout("0712345678", "100")).await;
    until_state(&app, "payout", &first, "completed").await;
    assert_eq!(sim.live_tokens(), 1);
    sim.expire_tokens();
    let second = create(&app, "/v1/payouts", &payout("0712345678", "200")).await;
    let third = create(&app, "/v1/payouts", &payout("0712345678", "300")).await;
    until_state(&app, "payout", &second, "completed").await;
    until_state(&app, "payout", &third, "completed").await;
    assert_eq!(sim.live_tokens(), 1, "one refresh for both payouts");
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE errors <> '[]'").await,
        0,
        "nothing failed along the way"
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_outage_delays_a_payout_and_never_fails_it() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    // Nothing is sent while no token can be had: the payout waits for
    // one, it is not refused.
    sim.oauth_outage(2);
    let id = create(&app, "/v1/payouts", &payout("0712345678", "100")).await;
    // Two attempts meet the outage; each waits its backoff (at most 1 s,
    // then 2 s) and is tried again.
    app.run_jobs().await;
    assert_eq!(fetch(&app, "payout", &id).await["state"], "processing");
    app.advance(Duration::from_secs(1));
    app.run_jobs().await;
    app.advance(Duration::from_secs(2));
    let done = until_state(&app, "payout", &id, "completed").await;
    assert!(
        !events(&done).iter().any(|(_, event)| event == "provider_failed"),
        "{:?}",
        events(&done)
    );
    let errors: Vec<String> = sqlx::query_scalar("SELECT e->>'error' FROM tuma_jobs, jsonb_array_elements(errors) e")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("token request: HTTP 503")),
        "{errors:?}"
    );
    assert_eq!(sim.payments_for(&provider_ref(&app, &id).await).len(), 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_whose_submission_waits_in_a_paused_queue_is_not_polled_into_unresolved() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let jobs = app.runner.client();
    jobs.pause_queue("mpesa").await.unwrap();
    let id = create(&app, "/v1/payouts", &payout("0712345678", "100")).await;
    app.run_jobs().await;
    // Far longer than the ten 30-second polls, with nothing sent.
    for _ in 0..15 {
        app.advance(Duration::from_secs(30));
        app.run_jobs().await;
    }
    assert_eq!(fetch(&app, "payout", &id).await["state"], "processing");
    assert!(sim.payments().is_empty());
    jobs.resume_queue("mpesa").await.unwrap();
    let done = until_state(&app, "payout", &id, "completed").await;
    assert_eq!(
        events(&done).last().unwrap(),
        &("provider_succeeded".to_owned(), "callback".to_owned())
    );
    assert_eq!(sim.payments_for(&provider_ref(&app, &id).await).len(), 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daraja_callback_carrying_another_providers_intent_token_is_refused() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    // A collection Airtel carries (its number's prefix), and a forged
    // Daraja success naming it by its token.
    let id = create(&app, "/v1/collections", &collection("0733 000 111", "250")).await;
    let (provider, token): (String, String) =
        sqlx::query_as("SELECT provider, callback_token FROM intents WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(provider, "airtel");
    assert_eq!(
        paid_stk_callback(&app, &token, "ws_CO_FORGED", 250, "QKL1FORGED").await,
        StatusCode::OK
    );
    app.run_jobs().await;
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'wrong_provider'")
            .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM intent_events WHERE intent_id = '{id}' AND cause = 'callback'"
        ))
        .await,
        0,
        "nothing Daraja says moves an Airtel intent"
    );
    let report: Value = app
        .get("/v1/reports/reconciliation", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let unmatched = report["unmatched_callbacks"].as_array().unwrap();
    assert!(
        unmatched
            .iter()
            .any(|c| c["outcome"] == "wrong_provider" && c["provider"] == "mpesa"),
        "{report}"
    );
}

#[tokio::test]
async fn malformed_forged_and_unknown_callbacks_are_stored_answered_and_never_applied() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let post = |path: String, body: &'static str| {
        let http = app.http.clone();
        let url = app.url(&path);
        async move {
            http.post(url)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let token = "0123456789abcdef0123456789abcdef";
    let malformed = post(format!("/callbacks/mpesa/stk/{token}"), "{\"Body\": ").await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(malformed.json::<Value>().await.unwrap()["ResultCode"], 1);
    let stk = r#"{"Body":{"stkCallback":{"MerchantRequestID":"1","CheckoutRequestID":"ws_CO_1","ResultCode":0,"ResultDesc":"ok"}}}"#;
    let unknown = post(format!("/callbacks/mpesa/stk/{token}"), stk).await;
    assert_eq!(unknown.status(), StatusCode::OK);
    let forged = post("/callbacks/mpesa/stk/not-a-token".into(), stk).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let bad_kind = post(format!("/callbacks/mpesa/refund/{token}"), stk).await;
    assert_eq!(bad_kind.status(), StatusCode::BAD_REQUEST);
    app.run_jobs().await;
    let outcomes = tuma::store::inbox::outcomes(&app.db.pool).await.unwrap();
    assert_eq!(
        outcomes,
        vec![(Some("malformed".into()), 2), (Some("unknown_token".into()), 2)],
        "every callback is stored with why it was not applied"
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT body FROM callback_inbox ORDER BY id LIMIT 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, b"{\"Body\": ", "the raw body is kept as received");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_the_float_cannot_cover_stays_pending_with_a_reason_until_the_float_is_topped_up() {
    let app = crate::common::app::spawn_mpesa_app_with(
        SimConfig {
            float_kes: 1_000,
            ..SimConfig::default()
        },
        |mpesa| mpesa.float_check = true,
    )
    .await;
    let sim = app.sim.clone().unwrap();
    let id = create(&app, "/v1/payouts", &payout("0712345678", "1500")).await;
    // No report yet: held, and a report is asked for.
    eventually(Duration::from_secs(20), "the first float report", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM provider_floats WHERE account = 'Utility Account' AND available = 1000")
            .await
            == 1
    })
    .await;
    app.advance(Duration::from_secs(5));
    app.run_jobs().await;
    let held = fetch(&app, "payout", &id).await;
    assert_eq!(held["state"], "pending");
    assert_eq!(
        held["hold_reason"],
        "M-Pesa float too low: 1000.00 KES free, 1550.00 KES needed (its tariff included)"
    );
    assert!(
        sim.payments().is_empty(),
        "nothing was sent that the float could not cover"
    );

    sim.set_float_kes(1_000_000);
    let done = {
        let mut state = String::new();
        for _ in 0..100 {
            app.advance(Duration::from_secs(5));
            app.run_jobs().await;
            state = fetch(&app, "payout", &id).await["state"].as_str().unwrap().to_owned();
            if state == "completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        state
    };
    assert_eq!(done, "completed");
    let paid = fetch(&app, "payout", &id).await;
    assert!(paid["hold_reason"].is_null());
    assert_eq!(sim.payments().len(), 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_released_together_share_the_float_as_if_released_one_after_another() {
    let app = crate::common::app::spawn_mpesa_app_with(
        SimConfig {
            float_kes: 5_000,
            ..SimConfig::default()
        },
        |mpesa| mpesa.float_check = true,
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(&app, "/v1/payouts", &payout("0712345678", "1000")).await);
    }
    // No report yet: all held, and a report is asked for.
    eventually(Duration::from_secs(20), "the first float report", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM provider_floats WHERE account = 'Utility Account' AND available = 5000")
            .await
            == 1
    })
    .await;
    // Their retries come due together while the float is held elsewhere:
    // the first releases wait on it in both lanes, and the rest queue
    // behind them and are applied together when it is let go.
    let float = "SELECT pg_advisory_lock(hashtext('tuma.float.mpesa'))";
    let mut holder = app.db.pool.acquire().await.unwrap();
    sqlx::query(float).execute(&mut *holder).await.unwrap();
    app.advance(Duration::from_secs(5));
    let runner = app.runner.clone();
    let working = tokio::spawn(async move { runner.work_once("default").await.unwrap() });
    eventually(Duration::from_secs(20), "two releases waiting on the float", || async {
        app.count(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await
            == 2
    })
    .await;
    // Both lanes are stuck on the lock; the other three need only reach
    // the batcher, which the runner's own reads take far less than this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext('tuma.float.mpesa'))")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    assert_eq!(working.await.unwrap(), 5);
    app.work("default").await;
    let mut states = Vec::new();
    for id in &ids {
        let intent = fetch(&app, "payout", id).await;
        states.push((
            intent["state"].as_str().unwrap().to_owned(),
            intent["hold_reason"].clone(),
        ));
    }
    // 1,025 KES each with the tariff: four fit in 5,000, the fifth does not.
    let released = states.iter().filter(|(state, _)| state != "pending").count();
    assert_eq!(released, 4, "{states:?}");
    let held: Vec<_> = states.iter().filter(|(state, _)| state == "pending").collect();
    assert_eq!(
        held[0].1,
        "M-Pesa float too low: 900.00 KES free, 1025.00 KES needed (its tariff included)"
    );
    let transactions = app
        .count("SELECT count(DISTINCT xmin::text) FROM intent_events WHERE event = 'release' AND outcome = 'applied'")
        .await;
    assert!(transactions < 4, "4 releases in {transactions} transactions");
    app.work("mpesa").await;
    assert_eq!(app.sim.clone().unwrap().payments().len(), 4);
}

#[tokio::test]
async fn callbacks_from_outside_the_allow_list_are_stored_and_refused() {
    let app = crate::common::app::spawn_mpesa_app_with(SimConfig::default(), |mpesa| {
        mpesa.callback_allowlist = vec!["196.201.214.200".into()];
    })
    .await;
    let stk = r#"{"Body":{"stkCallback":{"MerchantRequestID":"1","CheckoutRequestID":"ws_CO_1","ResultCode":0,"ResultDesc":"ok"}}}"#;
    let response = app
        .http
        .post(app.url("/callbacks/mpesa/stk/0123456789abcdef0123456789abcdef"))
        .header("Content-Type", "application/json")
        .body(stk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let stored: (String, Option<String>) = sqlx::query_as("SELECT remote_addr, outcome FROM callback_inbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, ("127.0.0.1".to_owned(), Some("refused_source".to_owned())));
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE kind LIKE 'callback.mpesa%'")
            .await,
        0
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c2b_notice_with_a_nul_is_refused_at_validation_and_listed_at_confirmation() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let mpesa = app.config.mpesa.clone().unwrap();
    let token = tuma::providers::mpesa::c2b_token(&mpesa);
    let notice = json!({
        "TransactionType": "Pay Bill", "TransID": "QK1\u{0}NUL", "TransTime": "20261205120000",
        "TransAmount": "500.00", "BusinessShortCode": "174379", "BillRefNumber": "INV-7",
        "MSISDN": "2547 ***** 678", "FirstName": "A",
    });
    let answer = daraja_callback(&app, "c2b-confirmation", &token, &notice).await;
    assert_eq!(answer.status(), StatusCode::OK);
    eventually(Duration::from_secs(10), "the confirmation processed", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM callback_inbox WHERE kind = 'c2b-confirmation' AND outcome IS NOT NULL")
            .await
            == 1
    })
    .await;
    assert_eq!(app.listed_callbacks().await, ["malformed"]);
    assert_eq!(app.count("SELECT count(*) FROM c2b_payments").await, 0);
    // Asked first, Tuma refuses it: no money moves for it.
    let mut asked = notice.clone();
    asked["BillRefNumber"] = json!("INV\u{0}7");
    let answer = daraja_callback(&app, "c2b-validation", &token, &asked).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let said: Value = answer.json().await.unwrap();
    assert_eq!(said["ResultCode"], "C2B00016", "{said}");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tuma_jobs WHERE kind LIKE 'callback.mpesa%' AND state IN ('available', 'running', 'dead')"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2b_payments_are_validated_by_rules_and_recorded_once_per_receipt() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let mpesa = app.config.mpesa.clone().unwrap();
    let client = tuma::providers::mpesa::MpesaClient::new(mpesa.clone()).unwrap();
    let base = format!("{}/callbacks/mpesa", mpesa.callback_base_url);
    let token = tuma::providers::mpesa::c2b_token(&mpesa);
    let (confirmation, validation) = (
        format!("{base}/c2b-confirmation/{token}"),
        format!("{base}/c2b-validation/{token}"),
    );
    assert_eq!(
        client.register_c2b_urls(&confirmation, &validation).await.unwrap(),
        "Success"
    );
    assert_eq!(
        client.register_c2b_urls(&confirmation, &validation).await.unwrap(),
        "URLs were already registered"
    );

    let receipt = sim.pay_bill("174379", "254712345678", 1000, "INV-42").await.unwrap();
    eventually(Duration::from_secs(10), "the confirmation recorded", || async {
        app.run_jobs().await;
        app.count("SELECT count(*) FROM c2b_payments").await == 1
    })
    .await;
    let recorded: (String, rust_decimal::Decimal, String, String) =
        sqlx::query_as("SELECT trans_id, amount, bill_ref, msisdn_masked FROM c2b_payments")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (recorded.0.as_str(), recorded.1, recorded.2.as_str()),
        (receipt.as_str(), rust_decimal::Decimal::from(1000), "INV-42")
    );
    assert!(
        !recorded.3.contains("12345678"),
        "Daraja's masked number is kept masked: {}",
        recorded.3
    );

    // The same confirmation again records nothing.
    let body: Vec<u8> = sqlx::query_scalar("SELECT body FROM callback_inbox WHERE kind = 'c2b-confirmation'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let again = app
        .http
        .post(&confirmation)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    app.run_jobs().await;
    assert_eq!(app.count("SELECT count(*) FROM c2b_payments").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'duplicate'")
            .await,
        1
    );

    // A payment without an account reference is refused at validation:
    // no money moves, nothing is recorded, the question is kept.
    let refused = sim.pay_bill("174379", "254712345679", 500, "").await;
    assert_eq!(refused, Err("C2B00012".to_owned()));
    assert_eq!(sim.payments().iter().filter(|p| p.kind == "c2b").count(), 1);
    let validations: Vec<Option<String>> =
        sqlx::query_scalar("SELECT outcome FROM callback_inbox WHERE kind = 'c2b-validation' ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        validations,
        vec![Some("accepted".to_owned()), Some("rejected".to_owned())]
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collected_payment_can_be_reversed_once_and_its_result_is_read() {
    use tuma::providers::mpesa::{codes, wire::ResultEnvelope};
    use tuma::providers::Outcome;
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let sim = app.sim.clone().unwrap();
    let id = create(&app, "/v1/collections", &collection("0712345678", "800")).await;
    until_state(&app, "collection", &id, "completed").await;
    let receipt: String = sqlx::query_scalar("SELECT receipt FROM intents WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    let results = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let store = results.clone();
    let receiver = axum::Router::new().route(
        "/reversal",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                axum::Json(json!({ "ResultCode": 0, "ResultDesc": "Accepted" }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reversal", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let client = tuma::providers::mpesa::MpesaClient::new(app.config.mpesa.clone().unwrap()).unwrap();
    for _ in 0..2 {
        client
            .reversal(&receipt, 800, "174379", "wrong payment", &url, &url)
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(5), "two reversal results", || async {
        results.lock().unwrap().len() == 2
    })
    .await;
    let outcomes: Vec<Outcome> = results
        .lock()
        .unwrap()
        .iter()
        .map(|body| {
            let result = serde_json::from_value::<ResultEnvelope>(body.clone()).unwrap().result;
            codes::reversal(&result.result_code.0, &result.result_desc)
        })
        .collect();
    // The simulator sends results asynchronously: either may arrive first.
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Succeeded).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Unknown { code, .. } if code == codes::ALREADY_REVERSED))
            .count(),
        1,
        "{outcomes:?}"
    );
    let reversals: Vec<_> = sim.payments().into_iter().filter(|p| p.kind == "reversal").collect();
    assert_eq!(reversals.len(), 1, "the money went back once");
    assert_eq!(reversals[0].amount_kes, 800);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn callbacks_arriving_together_are_stored_by_one_statement_with_one_job_for_them_all() {
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let inbox = tuma::api::CallbackInbox::new(app.db.pool.clone(), app.engine.jobs().clone());
    const N: usize = 20;
    let bodies: Vec<String> = (0..N)
        .map(|i| {
            format!(
                r#"{{"Body":{{"stkCallback":{{"MerchantRequestID":"m-{i}","CheckoutRequestID":"ws_CO_{i}","ResultCode":1032,"ResultDesc":"cancelled"}}}}}}"#
            )
        })
        .collect();
    // Every third one is settled at the door: stored, never processed.
    let settled = |i: usize| i % 3 == 0;
    // All handed over before the first group starts (this runtime has one
    // thread), so they are stored as one group.
    let kept = futures::future::join_all(bodies.iter().enumerate().map(|(i, body)| {
        inbox.keep(tuma::store::inbox::NewCallback {
            provider: "mpesa",
            kind: "stk".into(),
            token: format!("{i:032x}"),
            body: body.clone().into_bytes(),
            parse_error: None,
            remote_addr: Some("127.0.0.1".into()),
            outcome: settled(i).then_some("unknown_token"),
            process: tuma::runner::NewJob::new(&tuma::providers::mpesa::callbacks::ProcessCallbacks::default()),
        })
    }))
    .await;
    let ids: Vec<i64> = kept.into_iter().map(Result::unwrap).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids drawn in arrival order: {ids:?}"
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT xmin::text) FROM callback_inbox").await,
        1,
        "one statement, one commit"
    );
    for (i, id) in ids.iter().enumerate() {
        let (body, token, outcome): (Vec<u8>, String, Option<String>) =
            sqlx::query_as("SELECT body, token, outcome FROM callback_inbox WHERE id = $1")
                .bind(id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(body, bodies[i].as_bytes(), "row {id} holds callback {i}");
        assert_eq!(token, format!("{i:032x}"));
        assert_eq!(outcome.is_some(), settled(i));
    }
    // One job for the group, naming the rows to process in arrival order.
    let groups: Vec<(serde_json::Value,)> =
        sqlx::query_as("SELECT args FROM tuma_jobs WHERE kind = 'callback.mpesa.group'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let unsettled: Vec<i64> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| !settled(*i))
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].0, serde_json::json!({ "inbox_ids": unsettled }));
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE kind LIKE 'callback%'")
            .await,
        1
    );
    app.run_jobs().await;
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE processed_at IS NULL")
            .await,
        0,
        "every callback processed or settled"
    );
    // None of them names a known intent: the group left each to a job of
    // its own, where it was found unknown.
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE kind = 'callback.mpesa' AND state = 'completed'")
            .await,
        unsettled.len() as i64
    );
    // (Those settled at the door were stored with that outcome too.)
    assert_eq!(
        app.count("SELECT count(*) FROM callback_inbox WHERE outcome = 'unknown_token'")
            .await,
        N as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_is_cancelled_only_before_its_prompt_is_sent() {
    use tuma::store::intents::{get_for_update, start_request, Start};
    use tuma::workflow::engine::{Applied, Cause, Event};

    let app = spawn_mpesa_app(SimConfig::default()).await;
    // Cancelled first: its prompt job then sends nothing.
    let first = create(&app, "/v1/collections", &collection("0722 000 121", "250")).await;
    let cancelled = app.post(&format!("/v1/collections/{first}/cancel"), &app.key).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    app.run_jobs().await;
    assert_eq!(fetch(&app, "collection", &first).await["state"], "cancelled");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM provider_calls WHERE intent_id = '{first}'"
        ))
        .await,
        0,
        "no prompt went out"
    );

    // Its prompt begun (the mark the sending action writes, under the
    // intent's lock, before it calls Daraja): the cancel is refused.
    let second = create(&app, "/v1/collections", &collection("0722 000 122", "250")).await;
    let second_id: uuid::Uuid = second.parse().unwrap();
    let mut conn = app.db.pool.acquire().await.unwrap();
    assert_eq!(
        start_request(&mut conn, second_id, "pending").await.unwrap(),
        Start::First
    );
    assert_eq!(
        start_request(&mut conn, second_id, "pending").await.unwrap(),
        Start::Again
    );
    let refused = app.post(&format!("/v1/collections/{second}/cancel"), &app.key).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("has been sent"),
        "{problem}"
    );
    assert_eq!(fetch(&app, "collection", &second).await["state"], "pending");

    // The two at the same moment: a cancel holding the intent's lock makes
    // the sender wait, and the sender then finds it cancelled.
    let third = create(&app, "/v1/collections", &collection("0722 000 123", "250")).await;
    let third_id: uuid::Uuid = third.parse().unwrap();
    let mut tx = app.db.pool.begin().await.unwrap();
    let locked = get_for_update(&mut tx, third_id).await.unwrap().unwrap();
    let sender = {
        let pool = app.db.pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            start_request(&mut conn, third_id, "pending").await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sender.is_finished(), "the sender waits for the cancel's lock");
    let applied = app
        .engine
        .apply_to(&mut tx, locked, &Event::new("cancel", Cause::Api, "shop"))
        .await
        .unwrap();
    assert!(matches!(applied, Applied::Moved { .. }));
    tx.commit().await.unwrap();
    assert_eq!(sender.await.unwrap(), Start::Moved);
    app.run_jobs().await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM provider_calls WHERE intent_id = '{third}'"
        ))
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_refused_before_processing_leaves_the_collection_cancellable() {
    // Airtel is configured here but nothing answers at its address: the
    // prompt's call cannot connect, so no prompt reached the payer.
    let app = spawn_mpesa_app(SimConfig::default()).await;
    let id = create(&app, "/v1/collections", &collection("0733 000 112", "250")).await;
    app.run_jobs().await;
    assert!(
        app.count(&format!("SELECT count(*) FROM provider_calls WHERE intent_id = '{id}'"))
            .await
            >= 1,
        "the prompt was tried"
    );
    assert_eq!(fetch(&app, "collection", &id).await["state"], "pending");
    let cancelled = app.post(&format!("/v1/collections/{id}/cancel"), &app.key).await;
    assert_eq!(
        cancelled.status(),
        StatusCode::OK,
        "the refused prompt took its mark back"
    );
}
