//! The transition engine driving both workflows through every declared
//! transition, with timers on a controlled clock; illegal events and lost
//! races recorded as what they are.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tuma::workflow::engine::{Applied, Cause, Event};
use uuid::Uuid;

use crate::common::app::{collection_body, payout_body, spawn_app, spawn_app_holding_payouts, spawn_app_with, TestApp};

async fn create(app: &TestApp, kind: &str) -> Uuid {
    let (path, body) = match kind {
        "payout" => ("/v1/payouts", payout_body("1500", "0712345678")),
        _ => ("/v1/collections", collection_body("5000", "0754123456")),
    };
    let created: Value = app
        .create(path, &app.key, &Uuid::new_v4().to_string(), &body)
        .await
        .json()
        .await
        .unwrap();
    created["id"].as_str().unwrap().parse().unwrap()
}

/// A payout of `amount` KES, created through the API.
async fn payout_of(app: &TestApp, amount: &str) -> Uuid {
    let created: Value = app
        .create(
            "/v1/payouts",
            &app.key,
            &Uuid::new_v4().to_string(),
            &payout_body(amount, "0712345678"),
        )
        .await
        .json()
        .await
        .unwrap();
    created["id"].as_str().unwrap().parse().unwrap()
}

/// `event -> to` of `id`'s applied events, in order.
async fn events_of(app: &TestApp, id: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event || ' -> ' || to_state FROM intent_events WHERE intent_id = $1 AND outcome = 'applied' ORDER BY id",
    )
        .bind(id)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

async fn apply(app: &TestApp, id: Uuid, event: &str, cause: Cause, actor: &str) -> Applied {
    app.apply(id, &Event::new(event, cause, actor)).await
}

async fn state(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM intents WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

fn moved(applied: &Applied, to: &str) {
    assert!(
        matches!(applied, Applied::Moved { to: t, .. } if t == to),
        "expected a move to {to}, got {applied:?}"
    );
}

/// (from, event) of every transition a workflow declares.
fn declared(app: &TestApp, kind: &str) -> BTreeSet<(String, String)> {
    let workflow = app.engine.workflows().get(kind).unwrap();
    workflow
        .transitions
        .iter()
        .flat_map(|t| t.from.iter().map(|f| (f.clone(), t.event.clone())))
        .collect()
}

async fn exercised(app: &TestApp, kind: &str) -> BTreeSet<(String, String)> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT DISTINCT e.from_state, e.event FROM intent_events e JOIN intents i ON i.id = e.intent_id
         WHERE i.kind = $1 AND e.outcome = 'applied' AND e.from_state IS NOT NULL",
    )
    .bind(kind)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test]
async fn every_payout_transition_runs_as_declared() {
    // Payouts above 10 USD wait for approval from the start; those below
    // are handed on as created. A payout is `pending` only between an
    // approval and its release.
    let app = spawn_app_with("[policy]\napproval_above_usd = \"10\"\n").await;
    let admin = "admin-amina";

    // pending --release--> processing --provider_succeeded--> completed
    let paid = payout_of(&app, "100").await;
    assert_eq!(
        events_of(&app, paid).await,
        ["create -> pending", "release -> processing"]
    );
    app.run_jobs().await;
    assert_eq!(state(&app, paid).await, "processing");
    moved(
        &apply(&app, paid, "provider_succeeded", Cause::Callback, "mpesa").await,
        "completed",
    );

    // Approval: the creator cannot approve its own payout; another admin can.
    let approved = payout_of(&app, "1500").await;
    assert_eq!(
        events_of(&app, approved).await,
        ["create -> pending", "require_approval -> awaiting_approval"]
    );
    let own = apply(&app, approved, "approve", Cause::Admin, "shop-backend").await;
    assert!(
        matches!(&own, Applied::Rejected { reason, .. } if reason.contains("cannot also decide")),
        "{own:?}"
    );
    moved(&apply(&app, approved, "approve", Cause::Admin, admin).await, "pending");
    app.run_jobs().await;
    assert_eq!(state(&app, approved).await, "processing");
    moved(
        &apply(&app, approved, "provider_failed", Cause::Callback, "mpesa").await,
        "failed",
    );

    let rejected = payout_of(&app, "1500").await;
    moved(&apply(&app, rejected, "reject", Cause::Admin, admin).await, "rejected");

    let cancelled_in_approval = payout_of(&app, "1500").await;
    moved(
        &apply(&app, cancelled_in_approval, "cancel", Cause::Api, "shop-backend").await,
        "cancelled",
    );

    // Approved, and stopped before its release ran.
    let cancelled = payout_of(&app, "1500").await;
    moved(&apply(&app, cancelled, "approve", Cause::Admin, admin).await, "pending");
    moved(
        &apply(&app, cancelled, "cancel", Cause::Api, "shop-backend").await,
        "cancelled",
    );

    let refused = payout_of(&app, "1500").await;
    moved(&apply(&app, refused, "approve", Cause::Admin, admin).await, "pending");
    moved(
        &apply(&app, refused, "policy_rejected", Cause::Policy, "engine").await,
        "failed",
    );

    // An approval nobody gives expires after three days, by its timer.
    let lapsed = payout_of(&app, "1500").await;
    app.run_jobs().await;
    app.advance(Duration::from_secs(259_199));
    app.run_jobs().await;
    assert_eq!(state(&app, lapsed).await, "awaiting_approval", "expired a second early");
    app.advance(Duration::from_secs(1));
    app.run_jobs().await;
    assert_eq!(state(&app, lapsed).await, "expired");

    // No word from the provider: ten status polls 30 s apart, then unresolved.
    let (unknown_a, unknown_b) = (payout_of(&app, "100").await, payout_of(&app, "100").await);
    let (late_yes, late_no) = (payout_of(&app, "100").await, payout_of(&app, "100").await);
    app.run_jobs().await;
    for _ in 0..10 {
        app.advance(Duration::from_secs(30));
        app.run_jobs().await;
        assert_eq!(state(&app, unknown_a).await, "processing");
    }
    app.advance(Duration::from_secs(30));
    app.run_jobs().await;
    assert_eq!(state(&app, unknown_a).await, "unresolved");
    assert_eq!(state(&app, unknown_b).await, "unresolved");
    let polls = app
        .count("SELECT count(*) FROM tuma_jobs WHERE kind = 'workflow.action' AND args->>'action' = 'query_status' AND state = 'completed'")
        .await;
    assert_eq!(polls, 40, "ten polls per payout");
    // The provider's word, however late, settles an unresolved payout.
    for (id, event, to) in [
        (late_yes, "provider_succeeded", "completed"),
        (late_no, "provider_failed", "failed"),
    ] {
        assert_eq!(state(&app, id).await, "unresolved");
        moved(&apply(&app, id, event, Cause::Callback, "mpesa").await, to);
    }
    moved(
        &apply(&app, unknown_a, "resolved_succeeded", Cause::Admin, admin).await,
        "completed",
    );
    moved(
        &apply(&app, unknown_b, "resolved_failed", Cause::Admin, admin).await,
        "failed",
    );

    assert_eq!(exercised(&app, "payout").await, declared(&app, "payout"));
}

#[tokio::test]
async fn every_collection_transition_runs_as_declared_including_a_late_success_after_expiry() {
    let app = spawn_app().await;
    let paid = create(&app, "collection").await;
    moved(
        &apply(&app, paid, "prompted", Cause::Callback, "vodacom_tz").await,
        "processing",
    );
    moved(
        &apply(&app, paid, "provider_succeeded", Cause::Callback, "vodacom_tz").await,
        "completed",
    );

    let refused = create(&app, "collection").await;
    moved(
        &apply(&app, refused, "prompt_failed", Cause::Api, "mpesa").await,
        "failed",
    );

    let cancelled = create(&app, "collection").await;
    moved(
        &apply(&app, cancelled, "cancel", Cause::Api, "shop-backend").await,
        "cancelled",
    );

    let declined = create(&app, "collection").await;
    apply(&app, declined, "prompted", Cause::Callback, "vodacom_tz").await;
    moved(
        &apply(&app, declined, "provider_failed", Cause::Callback, "vodacom_tz").await,
        "failed",
    );

    // Nobody answers the prompt: it expires after five minutes; the
    // provider's late word that the money moved is still accepted.
    let late = create(&app, "collection").await;
    apply(&app, late, "prompted", Cause::Callback, "vodacom_tz").await;
    // Only a prompt the provider knows by a request id may expire (one
    // whose answer was lost may have been paid).
    sqlx::query("UPDATE intents SET provider_ref = 'vodacom-late-1' WHERE id = $1")
        .bind(late)
        .execute(&app.db.pool)
        .await
        .unwrap();
    for _ in 0..9 {
        app.advance(Duration::from_secs(30));
        app.run_jobs().await;
    }
    assert_eq!(state(&app, late).await, "processing");
    app.advance(Duration::from_secs(30));
    app.run_jobs().await;
    assert_eq!(state(&app, late).await, "expired");
    moved(
        &apply(&app, late, "provider_succeeded", Cause::Callback, "vodacom_tz").await,
        "completed",
    );

    let (lost_a, lost_b) = (create(&app, "collection").await, create(&app, "collection").await);
    let (late_yes, late_no) = (create(&app, "collection").await, create(&app, "collection").await);
    for id in [lost_a, lost_b, late_yes, late_no] {
        apply(&app, id, "prompted", Cause::Callback, "vodacom_tz").await;
        moved(
            &apply(&app, id, "polls_exhausted", Cause::Timer, "timer:status_poll").await,
            "unresolved",
        );
    }
    moved(
        &apply(&app, lost_a, "resolved_succeeded", Cause::Admin, "admin-amina").await,
        "completed",
    );
    moved(
        &apply(&app, lost_b, "resolved_failed", Cause::Admin, "admin-amina").await,
        "failed",
    );

    for (id, event, to) in [
        (late_yes, "provider_succeeded", "completed"),
        (late_no, "provider_failed", "failed"),
    ] {
        moved(&apply(&app, id, event, Cause::Callback, "vodacom_tz").await, to);
    }

    assert_eq!(exercised(&app, "collection").await, declared(&app, "collection"));
}

/// Live (waiting or running) timer jobs of intent `id`.
async fn armed_timers(app: &TestApp, id: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT unique_key FROM tuma_jobs
         WHERE kind = 'workflow.timer' AND state IN ('available', 'running') AND args->>'intent_id' = $1
         ORDER BY unique_key",
    )
    .bind(id.to_string())
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn leaving_a_state_withdraws_its_timers_that_have_not_fired() {
    let app = spawn_app().await;
    let paid = create(&app, "payout").await;
    app.run_jobs().await;
    assert_eq!(state(&app, paid).await, "processing");
    let armed = armed_timers(&app, paid).await;
    assert_eq!(armed.len(), 1, "{armed:?}");
    assert!(armed[0].contains(":status_poll:"), "{armed:?}");

    moved(
        &apply(&app, paid, "provider_succeeded", Cause::Callback, "mpesa").await,
        "completed",
    );
    assert_eq!(armed_timers(&app, paid).await, Vec::<String>::new());

    // A timer of another intent is not touched.
    let other = create(&app, "payout").await;
    app.run_jobs().await;
    assert_eq!(armed_timers(&app, other).await.len(), 1);
    assert_eq!(armed_timers(&app, paid).await, Vec::<String>::new());
}

#[tokio::test]
async fn an_illegal_event_is_recorded_as_rejected_and_changes_nothing() {
    let app = spawn_app_holding_payouts().await;
    let id = create(&app, "payout").await;
    let applied = apply(&app, id, "provider_succeeded", Cause::Callback, "mpesa").await;
    let Applied::Rejected {
        state: current, reason, ..
    } = applied
    else {
        panic!("{applied:?}")
    };
    assert_eq!(current, "pending");
    assert!(reason.contains("not allowed in state \"pending\""), "{reason}");
    assert_eq!(state(&app, id).await, "pending");
    let recorded: (String, Option<String>, String, String) = sqlx::query_as(
        "SELECT outcome, to_state, cause, actor FROM intent_events WHERE intent_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(recorded, ("rejected".into(), None, "callback".into(), "mpesa".into()));
    // A final state stays final: nothing but a declared late exit leaves it.
    apply(&app, id, "cancel", Cause::Api, "shop-backend").await;
    assert!(matches!(
        apply(&app, id, "release", Cause::Policy, "engine").await,
        Applied::Rejected { .. }
    ));
    assert_eq!(state(&app, id).await, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_events_racing_for_one_intent_move_it_once() {
    let app = Arc::new(spawn_app().await);
    for _ in 0..10 {
        let id = create(&app, "payout").await;
        app.run_jobs().await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let racers: Vec<_> = ["provider_succeeded", "provider_failed"]
            .into_iter()
            .map(|event| {
                let (app, barrier) = (app.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut tx = app.db.pool.begin().await.unwrap();
                    barrier.wait().await;
                    let applied = app
                        .engine
                        .apply(&mut tx, id, &Event::new(event, Cause::Callback, "mpesa"))
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    applied
                })
            })
            .collect();
        let results: Vec<Applied> = futures::future::join_all(racers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let moves = results.iter().filter(|a| matches!(a, Applied::Moved { .. })).count();
        assert_eq!(moves, 1, "{results:?}");
        let applied = app
            .count(&format!("SELECT count(*) FROM intent_events WHERE intent_id = '{id}' AND outcome = 'applied' AND from_state = 'processing'"))
            .await;
        assert_eq!(applied, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_arriving_while_another_move_is_written_waits_and_is_judged_on_the_new_state() {
    // The last status poll's success comes while the polls' timer is moving
    // the payout to unresolved: the answer must settle it, not be dropped.
    let app = Arc::new(spawn_app().await);
    let id = create(&app, "payout").await;
    app.run_jobs().await;
    assert_eq!(state(&app, id).await, "processing");
    let mut timer = app.db.pool.begin().await.unwrap();
    let locked = tuma::store::intents::get_for_update(&mut timer, id)
        .await
        .unwrap()
        .unwrap();
    let exhausted = app
        .engine
        .apply_to(
            &mut timer,
            locked,
            &Event::new("polls_exhausted", Cause::Timer, "runner"),
        )
        .await
        .unwrap();
    moved(&exhausted, "unresolved");
    let answer = {
        let app = app.clone();
        tokio::spawn(async move { apply(&app, id, "provider_succeeded", Cause::Poll, "mtn").await })
    };
    crate::common::eventually(
        Duration::from_secs(10),
        "the answer to wait for the move's lock",
        || async {
            app.count(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
                == 1
        },
    )
    .await;
    timer.commit().await.unwrap();
    moved(&answer.await.unwrap(), "completed");
    assert_eq!(
        events_of(&app, id).await[2..],
        ["polls_exhausted -> unresolved", "provider_succeeded -> completed"]
    );
}

async fn hold_state(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM ledger_transfers WHERE key = $1")
        .bind(format!("intent:{id}"))
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn events_applied_together_each_move_by_their_own_compare_and_set() {
    let app = spawn_app().await;
    let ids = [
        create(&app, "payout").await,
        create(&app, "payout").await,
        create(&app, "payout").await,
        create(&app, "payout").await,
    ];
    app.run_jobs().await;
    let [paid, refused, failed, raced] = ids;
    let rows = tuma::store::intents::get_many(&app.db.pool, &ids).await.unwrap();
    let row = |id: Uuid| rows.iter().find(|r| r.id == id).unwrap().clone();
    for id in ids {
        assert_eq!(row(id).state, "processing");
        assert_eq!(armed_timers(&app, id).await.len(), 1);
    }
    // Someone else moves one of them after it was read.
    moved(
        &apply(&app, raced, "provider_failed", Cause::Callback, "mpesa").await,
        "failed",
    );

    let mut tx = app.db.pool.begin().await.unwrap();
    let applied = app
        .engine
        .apply_many(
            &mut tx,
            vec![
                (row(paid), Event::new("provider_succeeded", Cause::Callback, "mpesa")),
                (row(refused), Event::new("release", Cause::Policy, "engine")),
                (row(failed), Event::new("provider_failed", Cause::Callback, "mpesa")),
                (row(raced), Event::new("provider_succeeded", Cause::Callback, "mpesa")),
            ],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    moved(&applied[0], "completed");
    assert!(
        matches!(&applied[1], Applied::Rejected { state, .. } if state == "processing"),
        "{:?}",
        applied[1]
    );
    moved(&applied[2], "failed");
    assert!(
        matches!(&applied[3], Applied::Lost { expected } if expected == "processing"),
        "{:?}",
        applied[3]
    );
    assert_eq!(state(&app, paid).await, "completed");
    assert_eq!(state(&app, refused).await, "processing");
    assert_eq!(state(&app, failed).await, "failed");
    assert_eq!(state(&app, raced).await, "failed");
    // Only the intents that moved left their timers and settled their holds.
    assert_eq!(armed_timers(&app, paid).await, Vec::<String>::new());
    assert_eq!(armed_timers(&app, refused).await.len(), 1);
    assert_eq!(armed_timers(&app, failed).await, Vec::<String>::new());
    assert_eq!(hold_state(&app, paid).await, "posted");
    assert_eq!(hold_state(&app, refused).await, "pending");
    assert_eq!(hold_state(&app, failed).await, "voided");
    assert_eq!(hold_state(&app, raced).await, "voided");
    let recorded = |id: Uuid| {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String)>(
                "SELECT event, outcome FROM intent_events WHERE intent_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let last = |events: Vec<(String, String)>| events.last().cloned().unwrap();
    assert_eq!(
        last(recorded(paid).await),
        ("provider_succeeded".into(), "applied".into())
    );
    assert_eq!(last(recorded(refused).await), ("release".into(), "rejected".into()));
    // The lost one wrote nothing: its last event is the one that won.
    assert_eq!(
        last(recorded(raced).await),
        ("provider_failed".into(), "applied".into())
    );
    app.assert_ledger_balanced().await;
}
