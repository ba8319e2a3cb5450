//! The admin console over HTTP: sign-in and sessions, roles checked on the
//! server, CSRF, list filters and pagination, the queues and their actions,
//! and the audit log.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tuma::console::Role;

use crate::common::app::{spawn_app, TestApp};
use crate::common::console::{location, Console};

fn payout(party: &str, amount: &str, reference: &str) -> Value {
    json!({ "amount": amount, "currency": "KES", "recipient": { "msisdn": "0712345678" },
            "party_id": party, "reference": reference })
}

/// Creates a payout with `key`; returns its id and state.
async fn create(app: &TestApp, key: &str, body: &Value) -> (String, String) {
    let response = app
        .create("/v1/payouts", key, &uuid::Uuid::new_v4().to_string(), body)
        .await;
    let status = response.status();
    let created: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["state"].as_str().unwrap().to_owned(),
    )
}

async fn state_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT state FROM intents WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn audit_outcomes(app: &TestApp, action: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT actor, outcome FROM console_audit WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_password_signs_in_a_session_that_sign_out_and_time_both_end() {
    let app = spawn_app().await;
    app.console_user("amina", Role::Viewer).await;

    let wrong = app
        .console_sign_in(&[("username", "amina"), ("password", "not her password")])
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let unknown = app
        .console_sign_in(&[("username", "nobody"), ("password", "whatever it is")])
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let console = app.console_as("amina").await;
    let overview = console.page("/console").await;
    assert!(overview.contains("amina") && overview.contains("viewer"));
    let signed_out = console.post("/console/logout", &[]).await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    let after = console.get("/console").await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&after), "/console/login");

    // A session lasts console.session_ttl_s, by the engine's clock, however
    // busy its person is ...
    let console = app.console_as("amina").await;
    let (ttl, idle) = (app.config.console.session_ttl_s, app.config.console.idle_timeout_s);
    let step = idle - 60;
    let mut used = 0;
    while used + step < ttl - 60 {
        app.advance(Duration::from_secs(step));
        used += step;
        assert_eq!(console.get("/console/payouts").await.status(), StatusCode::OK);
    }
    app.advance(Duration::from_secs(ttl - 60 - used));
    assert_eq!(console.get("/console/payouts").await.status(), StatusCode::OK);
    app.advance(Duration::from_secs(61));
    assert_eq!(console.get("/console/payouts").await.status(), StatusCode::SEE_OTHER);

    // ... and ends sooner when left unused for console.idle_timeout_s.
    let console = app.console_as("amina").await;
    app.advance(Duration::from_secs(idle - 1));
    assert_eq!(console.get("/console/payouts").await.status(), StatusCode::OK);
    app.advance(Duration::from_secs(idle - 1));
    assert_eq!(
        console.get("/console/payouts").await.status(),
        StatusCode::OK,
        "use keeps it alive"
    );
    app.advance(Duration::from_secs(idle + 1));
    let idled = console.get("/console/payouts").await;
    assert_eq!(idled.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&idled), "/console/login");

    let sign_ins = audit_outcomes(&app, "sign_in").await;
    assert_eq!(
        sign_ins,
        [
            ("amina".to_owned(), "refused".to_owned()),
            ("nobody".to_owned(), "refused".to_owned()),
            ("amina".to_owned(), "ok".to_owned()),
            ("amina".to_owned(), "ok".to_owned()),
            ("amina".to_owned(), "ok".to_owned()),
        ]
    );
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site_strict_and_stored_hashed() {
    let app = spawn_app().await;
    app.console_user("amina", Role::Viewer).await;
    let response = app
        .console_sign_in(&[
            ("username", "amina"),
            ("password", &crate::common::console::password_of("amina")),
        ])
        .await;
    let set_cookie: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = set_cookie.iter().find(|c| c.starts_with("tuma_console=")).unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(session.contains(attribute), "{session} lacks {attribute}");
    }
    let token = session.split(';').next().unwrap().trim_start_matches("tuma_console=");
    let stored = app
        .count(&format!(
            "SELECT count(*) FROM console_sessions WHERE encode(token_hash, 'hex') = '{token}'"
        ))
        .await;
    assert_eq!(stored, 0, "the token itself is never stored");
    assert_eq!(app.count("SELECT count(*) FROM console_sessions").await, 1);
}

#[tokio::test]
async fn pages_send_strangers_to_sign_in_and_only_admin_keys_sign_in() {
    let app = spawn_app().await;
    for path in [
        "/console",
        "/console/payouts",
        "/console/approvals",
        "/console/jobs",
        "/console/audit",
    ] {
        let response = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&response), "/console/login");
    }
    let login = reqwest::get(app.url("/console/login")).await.unwrap();
    let headers = login.headers();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    let refused = app.console_sign_in(&[("api_key", &app.approver_key)]).await;
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "an approvals:write key is not an admin key"
    );
    let console = app.console_with_key(&app.admin_key).await;
    assert!(console.page("/console").await.contains("shop-admin"));
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_changes_nothing() {
    let app = spawn_app().await;
    app.console_user("baraka", Role::Approver).await;
    let (id, state) = create(&app, &app.key, &payout("creator-42", "76000", "big-one")).await;
    assert_eq!(state, "awaiting_approval");
    let console = app.console_as("baraka").await;
    let path = format!("/console/intents/{id}/approve");

    let missing = console.post_raw(&path, &[]).await;
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    let forged = console.post_raw(&path, &[("csrf", &"0".repeat(64))]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(state_of(&app, &id).await, "awaiting_approval");
    assert_eq!(audit_outcomes(&app, &path).await.len(), 2);
    assert!(audit_outcomes(&app, &path)
        .await
        .iter()
        .all(|(_, o)| o == "csrf_refused"));

    // The sign-in form is protected too: without its cookie, a form posted
    // from elsewhere is refused before any password is checked.
    let cross_site = reqwest::Client::new()
        .post(app.url("/console/login"))
        .form(&[("csrf", "x"), ("username", "baraka"), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);

    let approved = console.post(&path, &[]).await;
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    assert_eq!(state_of(&app, &id).await, "pending");
}

/// Who posts what to where.
type Attempt<'a> = (&'a Console, &'a str, Vec<(&'a str, &'a str)>);

#[tokio::test]
async fn each_role_may_read_everything_but_act_only_within_its_duty() {
    let app = spawn_app().await;
    for (name, role) in [
        ("vera", Role::Viewer),
        ("amina", Role::Approver),
        ("otto", Role::Operator),
    ] {
        app.console_user(name, role).await;
    }
    let (id, _) = create(&app, &app.key, &payout("creator-42", "76000", "big-one")).await;
    let viewer = app.console_as("vera").await;
    let approver = app.console_as("amina").await;
    let operator = app.console_as("otto").await;
    for path in [
        "/console".to_owned(),
        "/console?window=hour".to_owned(),
        "/console/payouts".to_owned(),
        "/console/collections".to_owned(),
        format!("/console/intents/{id}"),
        "/console/approvals".to_owned(),
        "/console/review".to_owned(),
        "/console/jobs".to_owned(),
        "/console/audit".to_owned(),
    ] {
        viewer.page(&path).await;
    }
    let approve = format!("/console/intents/{id}/approve");
    let resolve = format!("/console/intents/{id}/resolve");
    let refused: Vec<Attempt> = vec![
        (&viewer, &approve, vec![]),
        (&viewer, "/console/approvals/bulk", vec![("id", &id)]),
        (&viewer, "/console/jobs/action", vec![("op", "retry"), ("id", "1")]),
        (&viewer, "/console/queues/default/pause", vec![]),
        (&viewer, &resolve, vec![("outcome", "failed"), ("evidence", "x")]),
        (
            &viewer,
            "/console/users",
            vec![("username", "x"), ("role", "admin"), ("password", "xxxxxxxxxxxxxxxx")],
        ),
        (&operator, &approve, vec![]),
        (&approver, "/console/jobs/action", vec![("op", "cancel"), ("id", "1")]),
        (&approver, "/console/queues/default/pause", vec![]),
        (&approver, "/console/users/vera/disable", vec![]),
    ];
    for (console, path, fields) in refused {
        let response = console.post(path, &fields).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "POST {path}");
    }
    assert_eq!(viewer.get("/console/users").await.status(), StatusCode::FORBIDDEN);
    assert_eq!(state_of(&app, &id).await, "awaiting_approval");
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_job_queues WHERE paused_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM console_audit WHERE outcome = 'forbidden'")
            .await,
        10,
        "every refused action is in the audit log"
    );
}

#[tokio::test]
async fn an_approver_can_never_approve_a_payout_they_created() {
    let app = spawn_app().await;
    // The admin key creates the payout, then its holder signs in with it.
    let (id, state) = create(&app, &app.admin_key, &payout("creator-42", "76000", "own")).await;
    assert_eq!(state, "awaiting_approval");
    let maker = app.console_with_key(&app.admin_key).await;
    let queue = maker.page("/console/approvals").await;
    assert!(queue.contains("You created it"));
    let refused = maker.post(&format!("/console/intents/{id}/approve"), &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("cannot decide on it"));
    assert_eq!(state_of(&app, &id).await, "awaiting_approval");
    let bulk = maker.post("/console/approvals/bulk", &[("id", &id)]).await;
    assert_eq!(bulk.status(), StatusCode::OK);
    assert!(bulk.text().await.unwrap().contains("cannot decide on it"));
    assert_eq!(state_of(&app, &id).await, "awaiting_approval");
    assert_eq!(
        audit_outcomes(&app, "approve").await,
        [
            ("shop-admin".to_owned(), "refused".to_owned()),
            ("shop-admin".to_owned(), "refused".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_rejection_needs_a_reason_and_releases_the_payout() {
    let app = spawn_app().await;
    app.console_user("amina", Role::Approver).await;
    let (id, _) = create(&app, &app.key, &payout("creator-42", "76000", "reject-me")).await;
    let console = app.console_as("amina").await;
    let path = format!("/console/intents/{id}/reject");
    assert_eq!(
        console.post(&path, &[]).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let rejected = console.post(&path, &[("reason", "duplicate of last week's")]).await;
    assert_eq!(rejected.status(), StatusCode::SEE_OTHER);
    assert_eq!(state_of(&app, &id).await, "rejected");
    let page = console.page(&format!("/console/intents/{id}")).await;
    assert!(page.contains("duplicate of last week"));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn two_approvers_see_who_decided_and_the_second_moves_the_batch_on() {
    let app = spawn_app().await;
    app.console_user("amina", Role::Approver).await;
    app.console_user("baraka", Role::Approver).await;
    app.set_party(&app.admin_key, "ngo", 2).await;
    app.fund(&app.admin_key, "ngo", "2000000", "KES").await;
    let body = json!({ "reference": "relief-wave-1", "payouts": [
        payout("ngo", "240000", "a"), payout("ngo", "240000", "b"), payout("ngo", "240000", "c") ] });
    let response = app.create("/v1/payout-batches", &app.key, "batch-1", &body).await;
    let batch: Value = response.json().await.unwrap();
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let ids: Vec<String> = batch["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();

    let amina = app.console_as("amina").await;
    let first = amina.post("/console/approvals/bulk", &[("batch", &batch_id)]).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.text().await.unwrap().contains("waiting (1 of 2 approvals)"));
    let queue = amina.page("/console/approvals").await;
    assert!(queue.contains("You decided; waiting for another approver"));
    assert!(queue.contains("amina: approve"));
    assert!(queue.contains("1 of 2"));
    // Approving again is refused: one decision per approver.
    let again = amina.post(&format!("/console/intents/{}/approve", ids[0]), &[]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    let baraka = app.console_as("baraka").await;
    let selection: Vec<(&str, &str)> = ids.iter().map(|id| ("id", id.as_str())).collect();
    let second = baraka.post("/console/approvals/bulk", &selection).await;
    assert_eq!(second.status(), StatusCode::OK);
    for id in &ids {
        assert_eq!(state_of(&app, id).await, "pending");
    }
    assert!(baraka
        .page("/console/approvals")
        .await
        .contains("Nothing waits for approval"));
    assert_eq!(
        app.count("SELECT count(*) FROM console_audit WHERE action = 'approve' AND outcome = 'ok'")
            .await,
        6
    );
}

#[tokio::test]
async fn list_filters_combine_in_the_url_and_pages_follow_the_cursor() {
    let app = spawn_app().await;
    app.console_user("vera", Role::Viewer).await;
    for i in 0..53 {
        let amount = if i % 2 == 0 { "1000" } else { "2500" };
        create(&app, &app.key, &payout("creator-42", amount, &format!("ref-{i}"))).await;
    }
    create(&app, &app.key, &payout("creator-odd", "1000", "odd-one")).await;
    let console = app.console_as("vera").await;
    let rows = |html: &str| html.matches("href=\"/console/intents/").count();

    let first = console.page("/console/payouts").await;
    assert_eq!(rows(&first), 50);
    let next = first
        .split("id=\"next-page\"")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .map(|href| href.trim_end_matches("\" ").trim_end_matches('"').replace("&amp;", "&"))
        .unwrap();
    let second = console.page(&next).await;
    assert_eq!(rows(&second), 4);
    assert!(!second.contains("id=\"next-page\""));

    let filtered = console
        .page("/console/payouts?state=processing&provider=mpesa&party=creator-42&min=2000&max=3000")
        .await;
    assert_eq!(rows(&filtered), 26);
    assert!(
        filtered.contains("value=\"creator-42\""),
        "the form shows the filter in force"
    );
    let searched = console.page("/console/payouts?q=odd-one").await;
    assert_eq!(rows(&searched), 1);
    let none = console
        .page("/console/payouts?min=1000&max=1000&party=creator-odd&from=2000-01-01&to=2001-01-01")
        .await;
    assert_eq!(rows(&none), 0);
    let bad = console.get("/console/payouts?min=lots").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("min:"));
    // Numbers are shown masked, never whole.
    assert!(!first.contains("712345678"));
    assert!(first.contains("*********678"));
}

/// A dead job of kind `tuma.noop` on the default queue, as a worker that
/// gave up would leave it.
async fn dead_job(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO tuma_jobs (kind, queue, args, state, attempt, max_attempts, finished_at, errors)
         VALUES ('tuma.noop', 'default', '{}', 'dead', 3, 3, now(),
                 '[{\"attempt\": 3, \"at\": \"2026-11-23T10:00:00Z\", \"error\": \"provider said no\", \"kind\": \"retryable\"}]')
         RETURNING id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn operators_retry_cancel_and_discard_one_a_selection_or_the_whole_filter() {
    let app = spawn_app().await;
    app.console_user("otto", Role::Operator).await;
    let console = app.console_as("otto").await;
    let dead: Vec<i64> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(dead_job(&app).await);
        }
        ids
    };
    let page = console.page("/console/jobs?state=dead").await;
    assert!(page.contains("provider said no"));
    assert!(page.contains("<strong id=\"matching\">5</strong>"));

    // One.
    let one = dead[0].to_string();
    let retried = console
        .post("/console/jobs/action", &[("op", "retry"), ("id", &one)])
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert!(retried.text().await.unwrap().contains("will run again"));
    app.work("default").await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tuma_jobs WHERE id = {one} AND state = 'completed'"
        ))
        .await,
        1
    );
    // A selection: discard two.
    let (a, b) = (dead[1].to_string(), dead[2].to_string());
    let discarded = console
        .post("/console/jobs/action", &[("op", "discard"), ("id", &a), ("id", &b)])
        .await;
    assert_eq!(discarded.status(), StatusCode::OK);
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE state = 'dead'").await,
        2
    );

    // Everything matching the filter: first a confirmation naming the count,
    // then at most that many.
    let confirm = console
        .post(
            "/console/jobs/action",
            &[
                ("op", "retry"),
                ("scope", "filter"),
                ("filter", "state=dead&kind=tuma.noop"),
            ],
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::OK);
    let confirm = confirm.text().await.unwrap();
    assert!(confirm.contains("retry 2 job(s)"), "{confirm}");
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE state = 'dead'").await,
        2
    );
    let newer = dead_job(&app).await;
    let done = console
        .post(
            "/console/jobs/action",
            &[
                ("op", "retry"),
                ("scope", "filter"),
                ("filter", "state=dead&kind=tuma.noop"),
                ("confirm", "2"),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE state = 'dead'").await,
        1,
        "the job that died after the confirmation is left alone"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tuma_jobs WHERE id = {newer} AND state = 'dead'"
        ))
        .await,
        1
    );

    // Cancel applies to waiting jobs only; the filter narrows to them.
    let confirm = console
        .post(
            "/console/jobs/action",
            &[("op", "cancel"), ("scope", "filter"), ("filter", "queue=default")],
        )
        .await;
    assert!(confirm.text().await.unwrap().contains("cancel 2 job(s)"));
    console
        .post(
            "/console/jobs/action",
            &[
                ("op", "cancel"),
                ("scope", "filter"),
                ("filter", "queue=default"),
                ("confirm", "2"),
            ],
        )
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_jobs WHERE state = 'cancelled'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT count(*) FROM console_audit WHERE actor = 'otto' AND outcome = 'ok'")
            .await,
        1 + 1 + 2 + 2 + 2,
        "a sign-in and one line per job acted on"
    );
}

#[tokio::test]
async fn operators_pause_and_resume_a_queue_for_every_node() {
    let app = spawn_app().await;
    app.console_user("otto", Role::Operator).await;
    let console = app.console_as("otto").await;
    let paused = console.post("/console/queues/mpesa/pause", &[]).await;
    assert_eq!(paused.status(), StatusCode::SEE_OTHER);
    let page = console.page("/console/jobs").await;
    assert!(page.contains("/console/queues/mpesa/resume"));
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_job_queues WHERE name = 'mpesa' AND paused_at IS NOT NULL")
            .await,
        1
    );
    console.post("/console/queues/mpesa/resume", &[]).await;
    assert_eq!(
        app.count("SELECT count(*) FROM tuma_job_queues WHERE name = 'mpesa' AND paused_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        console.post("/console/queues/no-such-queue/pause", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_intent_page_tells_the_whole_story_and_shows_raw_bodies_to_admins_only_masked() {
    let app = spawn_app().await;
    app.console_user("vera", Role::Viewer).await;
    app.console_user("ada", Role::Admin).await;
    let (id, _) = create(&app, &app.key, &payout("creator-42", "1500", "story")).await;
    sqlx::query(
        "INSERT INTO callback_inbox (provider, kind, token, body, intent_id, outcome)
         VALUES ('mpesa', 'b2c-result', 't', $1, $2::uuid, 'applied')",
    )
    .bind(br#"{"Result":{"ReceiverPartyPublicName":"254712345678 - Jane","ResultCode":0}}"#.to_vec())
    .bind(&id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO provider_calls (intent_id, provider, call, request_id, outcome, code, latency_ms)
         VALUES ($1::uuid, 'mpesa', 'send', 'req-0042', 'rejected', '2001', 143)",
    )
    .bind(&id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let path = format!("/console/intents/{id}");

    let admin = app.console_as("ada").await.page(&path).await;
    assert!(
        admin.contains("req-0042") && admin.contains("2001") && admin.contains("143 ms"),
        "each provider call with its id, code and latency"
    );
    assert!(admin.contains("ResultCode"), "admins see the raw body");
    assert!(!admin.contains("712345678"), "never the whole number");
    assert!(admin.contains("*********678"));
    assert!(admin.contains("aria-current=\"step\""), "the current state is marked");
    assert!(
        admin.contains("class processing current"),
        "and highlighted in the Mermaid source"
    );
    assert!(admin.contains("shop-backend"), "the creating actor is in the timeline");
    assert!(admin.contains(&format!("intent:{id}")), "the ledger hold is listed");

    let viewer = app.console_as("vera").await.page(&path).await;
    assert!(!viewer.contains("ResultCode"));
    assert!(viewer.contains("admins only"));
    assert!(!viewer.contains("712345678"));
}

#[tokio::test]
async fn operators_resolve_an_unresolved_payout_with_evidence_from_the_review_queue() {
    let app = spawn_app().await;
    app.console_user("otto", Role::Operator).await;
    let (id, _) = create(&app, &app.key, &payout("creator-42", "1500", "lost")).await;
    sqlx::query("UPDATE intents SET state = 'unresolved' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let console = app.console_as("otto").await;
    let review = console.page("/console/review").await;
    assert!(review.contains(&format!("unresolved-{id}")));
    let path = format!("/console/intents/{id}/resolve");
    let missing = console.post(&path, &[("outcome", "succeeded")]).await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resolved = console
        .post(
            &path,
            &[
                ("outcome", "succeeded"),
                ("evidence", "statement line 4411"),
                ("receipt", "TKL3X8F2QA"),
            ],
        )
        .await;
    assert_eq!(resolved.status(), StatusCode::SEE_OTHER);
    assert_eq!(state_of(&app, &id).await, "completed");
    let again = console
        .post(&path, &[("outcome", "failed"), ("evidence", "second thoughts")])
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let timeline = console.page(&format!("/console/intents/{id}")).await;
    assert!(timeline.contains("evidence: statement line 4411"));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn operators_settle_a_late_success_with_evidence_from_the_review_queue() {
    use tuma::workflow::engine::{Applied, Cause, Event, PROVIDER_SUCCEEDED};

    let app = spawn_app().await;
    app.console_user("otto", Role::Operator).await;
    app.console_user("vera", Role::Viewer).await;
    let (id, _) = create(&app, &app.key, &payout("creator-42", "1500", "late")).await;
    sqlx::query("UPDATE intents SET state = 'unresolved' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let otto = app.console_as("otto").await;
    let resolved = otto
        .post(
            &format!("/console/intents/{id}/resolve"),
            &[("outcome", "failed"), ("evidence", "no statement line")],
        )
        .await;
    assert_eq!(resolved.status(), StatusCode::SEE_OTHER);
    // Then the provider says it paid after all.
    let mut tx = app.db.pool.begin().await.unwrap();
    let applied = app
        .engine
        .apply(
            &mut tx,
            id.parse().unwrap(),
            &Event::new(PROVIDER_SUCCEEDED, Cause::Callback, "mpesa"),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(applied, Applied::Rejected { .. }));

    let review = otto.page("/console/review").await;
    assert!(review.contains(&format!("late-{id}")), "{review}");
    let page = otto.page(&format!("/console/intents/{id}")).await;
    assert!(
        page.contains("Late success") && page.contains("late-evidence"),
        "{page}"
    );
    let path = format!("/console/intents/{id}/settle-late-success");
    let vera = app.console_as("vera").await;
    assert_eq!(
        vera.post(&path, &[("evidence", "not mine to settle")]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        otto.post(&path, &[("evidence", " ")]).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let settled = otto
        .post(
            &path,
            &[
                ("outcome", "recovered"),
                ("evidence", "recovered by reversal TKL9REV001"),
            ],
        )
        .await;
    assert_eq!(settled.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        otto.post(&path, &[("evidence", "twice")]).await.status(),
        StatusCode::CONFLICT
    );
    let review = otto.page("/console/review").await;
    assert!(!review.contains(&format!("late-{id}")), "{review}");
    let page = otto.page(&format!("/console/intents/{id}")).await;
    assert!(
        page.contains("Settled by otto")
            && page.contains("recovered (the ledger left as it was)")
            && page.contains("recovered by reversal TKL9REV001"),
        "{page}"
    );
    assert_eq!(state_of(&app, &id).await, "failed");
    let (by, evidence): (String, String) =
        sqlx::query_as("SELECT settled_by, evidence FROM late_successes WHERE intent_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (by.as_str(), evidence.as_str()),
        ("otto", "recovered by reversal TKL9REV001")
    );
    let audited = audit_outcomes(&app, "settle_late_success").await;
    assert!(audited.contains(&("otto".to_owned(), "ok".to_owned())), "{audited:?}");
    assert!(
        audited.contains(&("otto".to_owned(), "refused".to_owned())),
        "{audited:?}"
    );
}

#[tokio::test]
async fn admins_add_and_disable_users_and_the_audit_log_shows_who_did_what_from_where() {
    let app = spawn_app().await;
    app.console_user("ada", Role::Admin).await;
    let admin = app.console_as("ada").await;
    let created = admin
        .post(
            "/console/users",
            &[
                ("username", "vera"),
                ("role", "viewer"),
                ("password", &crate::common::console::password_of("vera")),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let short = admin
        .post(
            "/console/users",
            &[("username", "tim"), ("role", "viewer"), ("password", "short")],
        )
        .await;
    assert_eq!(short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let vera = app.console_as("vera").await;
    assert_eq!(
        admin.post("/console/users/vera/disable", &[]).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        vera.get("/console").await.status(),
        StatusCode::SEE_OTHER,
        "her session ended"
    );
    let refused = app
        .console_sign_in(&[
            ("username", "vera"),
            ("password", &crate::common::console::password_of("vera")),
        ])
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let audit = admin.page("/console/audit").await;
    for expected in ["create_user", "disable_user", "127.0.0.1", "vera"] {
        assert!(audit.contains(expected), "{expected}");
    }
    let only_vera = admin.page("/console/audit?actor=vera").await;
    assert!(!only_vera.contains("create_user"));
}

#[tokio::test]
async fn an_admin_revokes_an_api_key_which_ends_its_console_sessions_and_api_access() {
    let app = spawn_app().await;
    app.console_user("ada", Role::Admin).await;
    app.console_user("vera", Role::Viewer).await;
    let ada = app.console_as("ada").await;
    let keyholder = app.console_with_key(&app.admin_key).await;
    let keys = ada.page("/console/keys").await;
    assert!(keys.contains("shop-backend") && keys.contains("approvals:write"));
    assert!(!keys.contains(&app.admin_key), "a page never shows a key");
    let vera = app.console_as("vera").await;
    assert_eq!(vera.get("/console/keys").await.status(), StatusCode::FORBIDDEN);
    let prefix = &app.admin_key[5..13];
    let path = format!("/console/keys/{prefix}/revoke");
    assert_eq!(vera.post(&path, &[]).await.status(), StatusCode::FORBIDDEN);

    assert_eq!(ada.post(&path, &[]).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(keyholder.get("/console").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/v1/approvals", &app.admin_key).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(ada.post(&path, &[]).await.status(), StatusCode::NOT_FOUND);
    assert!(ada.page("/console/keys").await.contains("revoked"));
    assert_eq!(
        audit_outcomes(&app, "revoke_key").await.len(),
        2,
        "vera's refusal and ada's revocation"
    );
}

#[tokio::test]
async fn ten_wrong_passwords_lock_a_name_out_for_a_quarter_of_an_hour() {
    let app = spawn_app().await;
    app.console_user("amina", Role::Approver).await;
    app.console_user("baraka", Role::Approver).await;
    for _ in 0..10 {
        let wrong = app
            .console_sign_in(&[("username", "amina"), ("password", "a guess at her password")])
            .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let right = crate::common::console::password_of("amina");
    let locked = app
        .console_sign_in(&[("username", "amina"), ("password", &right)])
        .await;
    assert_eq!(
        locked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    // Another name is not affected.
    app.console_as("baraka").await;
    app.advance(Duration::from_secs(15 * 60 + 1));
    app.console_as("amina").await;
    assert_eq!(
        app.count("SELECT count(*) FROM console_audit WHERE outcome = 'throttled'")
            .await,
        1
    );
}

#[tokio::test]
async fn operators_review_a_listed_callback_from_the_review_queue() {
    let app = spawn_app().await;
    app.console_user("otto", Role::Operator).await;
    app.console_user("vera", Role::Viewer).await;
    // A callback to a token no intent has: stored, found to name no
    // intent, and listed.
    let stk = r#"{"Body":{"stkCallback":{"MerchantRequestID":"1","CheckoutRequestID":"ws_CO_9","ResultCode":0,"ResultDesc":"ok"}}}"#;
    let answer = app
        .http
        .post(app.url("/callbacks/mpesa/stk/0123456789abcdef0123456789abcdef"))
        .header("Content-Type", "application/json")
        .body(stk)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    app.run_jobs().await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM callback_inbox WHERE outcome = 'unknown_token'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let otto = app.console_as("otto").await;
    let review = otto.page("/console/review").await;
    assert!(review.contains(&format!("callback-{id}")), "{review}");
    let path = format!("/console/callbacks/{id}/review");
    let vera = app.console_as("vera").await;
    assert_eq!(
        vera.post(&path, &[("evidence", "not mine")]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        otto.post(&path, &[("evidence", " ")]).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let reviewed = otto
        .post(&path, &[("evidence", "a probe from outside; no intent of ours")])
        .await;
    assert_eq!(reviewed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        otto.post(&path, &[("evidence", "twice")]).await.status(),
        StatusCode::CONFLICT
    );
    let review = otto.page("/console/review").await;
    assert!(!review.contains(&format!("callback-{id}")), "{review}");
    let (by, note): (String, String) =
        sqlx::query_as("SELECT reviewed_by, review_note FROM callback_inbox WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (by.as_str(), note.as_str()),
        ("otto", "a probe from outside; no intent of ours")
    );
    let audited = audit_outcomes(&app, "review_callback").await;
    assert!(audited.contains(&("otto".to_owned(), "ok".to_owned())), "{audited:?}");
    assert!(
        audited.contains(&("otto".to_owned(), "refused".to_owned())),
        "{audited:?}"
    );
    assert!(
        audited.contains(&("vera".to_owned(), "forbidden".to_owned())),
        "{audited:?}"
    );
}
