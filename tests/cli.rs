//! The `tuma` binary as an operator meets it: configuration errors at
//! start-up, and `tuma serve` answering health checks and stopping cleanly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestDb;

fn tuma() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tuma"));
    command.env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TUMA__")) {
        command.env_remove(key);
    }
    command
}

fn failing_start(command: &mut Command) -> String {
    let output = command.arg("migrate").output().expect("tuma runs");
    assert!(!output.status.success(), "tuma started with a bad configuration");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unknown_configuration_key_stops_start_up_naming_the_key() {
    let stderr = failing_start(tuma().env("TUMA__RUNNER__CONCURENCY", "8"));
    assert!(
        stderr.contains("runner.concurency") && stderr.contains("unknown field"),
        "{stderr}"
    );
}

#[test]
fn a_negative_concurrency_stops_start_up_naming_the_key() {
    let stderr = failing_start(tuma().env("TUMA__RUNNER__QUEUES__DEFAULT__CONCURRENCY", "-4"));
    assert!(stderr.contains("runner.queues.default.concurrency"), "{stderr}");
}

#[test]
fn an_unknown_key_in_a_config_file_names_the_key() {
    let dir = std::env::temp_dir().join(format!("tuma-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:0\"\nport = 8080\n").unwrap();
    let stderr = failing_start(tuma().arg("--config").arg(&file));
    assert!(stderr.contains("http.port"), "{stderr}");
    let stderr = failing_start(tuma().arg("--config").arg(dir.join("missing.toml")));
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn an_unreachable_database_stops_start_up_saying_where_it_looked() {
    // Port 1 on loopback: nothing listens there.
    let stderr = failing_start(tuma().env("DATABASE_URL", "postgres://tuma:secret@127.0.0.1:1/tuma"));
    assert!(
        stderr.contains("cannot reach the database at postgres://tuma:***@127.0.0.1:1/tuma"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 GET: status code and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_health_readiness_and_metrics_then_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut child = tuma()
        .arg("serve")
        .env("DATABASE_URL", db.url())
        .env("TUMA__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("TUMA__RUNNER__SHUTDOWN_TIMEOUT_MS", "2000")
        .env("TUMA__RUNNER__STATS_INTERVAL_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(answer) = get(port, "/healthz") {
            break answer;
        }
        assert!(Instant::now() < deadline, "tuma serve did not come up");
        assert!(child.try_wait().unwrap().is_none(), "tuma serve exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health.0, 200);
    assert_eq!(get(port, "/readyz").unwrap().0, 200);
    // The queue statistics service samples every 100 ms here; its gauge
    // shows up on /metrics in Prometheus' text format.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, metrics) = get(port, "/metrics").unwrap();
        assert_eq!(status, 200);
        if metrics.contains("tuma_job_queue_depth{queue=\"default\"} 0") {
            break;
        }
        assert!(Instant::now() < deadline, "no queue depth on /metrics:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A queue paused from another process shows as paused on this node's
    // /metrics, read from the database; resumed, it shows as running.
    let metrics_say = |wanted: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, metrics) = get(port, "/metrics").unwrap();
            if metrics.contains(wanted) {
                break;
            }
            assert!(Instant::now() < deadline, "{wanted} not on /metrics:\n{metrics}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    metrics_say("tuma_job_queue_paused{queue=\"mpesa\"} 0").await;
    for (command, shown) in [
        ("pause", "tuma_job_queue_paused{queue=\"mpesa\"} 1"),
        ("resume", "tuma_job_queue_paused{queue=\"mpesa\"} 0"),
    ] {
        let output = tuma()
            .args(["jobs", command, "mpesa"])
            .env("DATABASE_URL", db.url())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        metrics_say(shown).await;
    }

    // SIGTERM: the one cancellation path stops the server and the runner.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tuma serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
}

/// Party `big` of owner `shop`, credited 200,000 KES, and a payout of
/// `amount` KES from it to an M-Pesa number, admitted by policy as the API
/// would (nothing runs it on).
async fn funded_payout(db: &TestDb, amount: &str) -> (tuma::app::App, tuma::store::intents::IntentRow) {
    use tuma::domain::{Country, Currency, Money, Msisdn, PartyId};
    use tuma::ledger::{AccountKey, Leg, NewTransfer};

    let app = tuma::app::assemble(common::config_with(""), db.pool.clone(), tuma::clock::Clock::Database).unwrap();
    let policy = tuma::policy::Policy::from_config(&common::config_with("")).unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO parties (owner, id, kyc_tier) VALUES ('shop', 'big', 2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let wallet = AccountKey::party("shop", "big", Currency::KES);
    let funding = NewTransfer {
        key: "credit:big:1".into(),
        owner: "shop".into(),
        kind: "credit".into(),
        intent_id: None,
        description: "earnings".into(),
        legs: vec![
            Leg::debit(
                AccountKey::funding("shop", Currency::KES),
                "200000".parse().unwrap(),
                "in",
            ),
            Leg::credit(wallet.clone(), "200000".parse().unwrap(), "in"),
        ],
    };
    tuma::policy::credit(
        &mut tx,
        app.engine.jobs(),
        &funding,
        &wallet,
        "200000".parse().unwrap(),
        None,
        policy.default_tier(),
    )
    .await
    .unwrap();
    let new = tuma::workflow::engine::NewIntent {
        kind: "payout".into(),
        owner: "shop".into(),
        created_by: "shop-backend".into(),
        party_id: PartyId::parse("big").unwrap(),
        amount: Money::parse(amount, Currency::KES).unwrap(),
        msisdn: Msisdn::parse("0712345678", Country::KE).unwrap(),
        provider: "mpesa".into(),
        reference: "large".into(),
        metadata: serde_json::json!({}),
        terms: Default::default(),
    };
    let row = policy
        .admit_payout(&app.engine, &mut tx, new, Default::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (app, row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_listed_and_decided_from_the_shell_under_the_maker_checker_rule() {
    let db = TestDb::new().await;
    let (_app, row) = funded_payout(&db, "76000").await;
    assert_eq!(row.state, "awaiting_approval");
    let id = row.id.to_string();

    let run = |args: &[&str]| tuma().args(args).env("DATABASE_URL", db.url()).output().unwrap();
    let listed = run(&["approvals", "list"]);
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id));
    let own = run(&["approvals", "approve", &id, "--as", "shop-backend"]);
    assert!(!own.status.success());
    assert!(String::from_utf8_lossy(&own.stderr).contains("cannot decide"));
    let approved = run(&["approvals", "approve", &id, "--as", "amina"]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let state: String = sqlx::query_scalar("SELECT state FROM intents WHERE id = $1")
        .bind(row.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_reconciliation_leaves_to_a_person_is_settled_from_the_shell_with_evidence() {
    use tuma::workflow::engine::{Applied, Cause, Event, PROVIDER_SUCCEEDED};

    let db = TestDb::new().await;
    let (app, row) = funded_payout(&db, "1000").await;
    let id = row.id.to_string();
    // Its provider's every word was lost: it waits for a person.
    sqlx::query("UPDATE intents SET state = 'unresolved' WHERE id = $1")
        .bind(row.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let wallet = tuma::ledger::AccountKey::party("shop", "big", tuma::domain::Currency::KES);
    let available = || async {
        let mut conn = db.pool.acquire().await.unwrap();
        tuma::ledger::available_of(&mut conn, &wallet).await.unwrap()
    };
    let held = rust_decimal::Decimal::from(200_000) - available().await;
    let run = |args: &[&str]| tuma().args(args).env("DATABASE_URL", db.url()).output().unwrap();
    let said = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    let unsaid = run(&[
        "review",
        "resolve",
        &id,
        "--outcome",
        "maybe",
        "--evidence",
        " ",
        "--as",
        "amina",
    ]);
    assert!(!unsaid.status.success());
    assert!(
        said(&unsaid).contains("--outcome: succeeded or failed")
            && said(&unsaid).contains("--evidence: 1 to 500 characters"),
        "{}",
        said(&unsaid)
    );
    let resolved = run(&[
        "review",
        "resolve",
        &id,
        "--outcome",
        "failed",
        "--evidence",
        "no statement line",
        "--as",
        "amina",
    ]);
    assert!(resolved.status.success(), "{}", said(&resolved));
    let state: String = sqlx::query_scalar("SELECT state FROM intents WHERE id = $1")
        .bind(row.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(
        available().await,
        rust_decimal::Decimal::from(200_000),
        "its hold released"
    );

    // M-Pesa then says it paid after all: booked from the shell, the party
    // pays for it.
    let mut tx = db.pool.begin().await.unwrap();
    let succeeded = Event::new(PROVIDER_SUCCEEDED, Cause::Callback, "mpesa");
    let applied = app.engine.apply(&mut tx, row.id, &succeeded).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(applied, Applied::Rejected { .. }));
    let settle = |outcome: &'static str| {
        run(&[
            "review",
            "settle",
            &id,
            "--outcome",
            outcome,
            "--evidence",
            "statement line 4411",
            "--as",
            "amina",
        ])
    };
    let unknown = settle("kept");
    assert!(!unknown.status.success());
    assert!(
        said(&unknown).contains("--outcome: recovered or booked"),
        "{}",
        said(&unknown)
    );
    let booked = settle("booked");
    assert!(booked.status.success(), "{}", said(&booked));
    assert!(said(&booked).contains("booked by transfer"), "{}", said(&booked));
    assert_eq!(available().await, rust_decimal::Decimal::from(200_000) - held);
    let again = settle("booked");
    assert!(!again.status.success());
    assert!(said(&again).contains("settled already, by amina"), "{}", said(&again));
    let settled: (String, String) =
        sqlx::query_as("SELECT settled_by, outcome FROM late_successes WHERE intent_id = $1")
            .bind(row.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(settled, ("amina".to_owned(), "booked".to_owned()));

    let missing = run(&["review", "callback", "999999", "--evidence", "looked", "--as", "amina"]);
    assert!(!missing.status.success());
    assert!(said(&missing).contains("no callback 999999"), "{}", said(&missing));
    let nobody = run(&["review", "callback", "999999", "--evidence", "looked", "--as", " "]);
    assert!(
        said(&nobody).contains("--as must name who is acting"),
        "{}",
        said(&nobody)
    );
}

#[tokio::test]
async fn tuma_reconcile_keeps_the_days_report_prints_it_and_exits_1_on_discrepancies() {
    let db = TestDb::new().await;
    let run = |args: &[&str]| tuma().args(args).env("DATABASE_URL", db.url()).output().unwrap();
    let clean = run(&["reconcile", "--date", "2026-11-22"]);
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let report: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["date"], "2026-11-22");

    // A C2B payment that matched nothing waits in suspense.
    sqlx::query(
        "INSERT INTO callback_inbox (provider, kind, token, body, outcome, processed_at)
         VALUES ('mpesa', 'c2b-confirmation', 'x', '\\x7b7d', 'applied', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO c2b_payments (trans_id, shortcode, amount, bill_ref, msisdn_masked, trans_time, inbox_id,
                                   applied_to)
         SELECT 'TKX0000001', '174379', 750, '=cmd()', '2547 ***** 670', '20261123101500', id, 'suspense'
         FROM callback_inbox",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let found = run(&["reconcile", "--date", "2026-11-23", "--csv"]);
    assert_eq!(found.status.code(), Some(1));
    let csv = String::from_utf8_lossy(&found.stdout);
    assert!(
        csv.contains("suspense,TKX0000001,c2b,suspense,750,,mpesa,'=cmd()"),
        "{csv}"
    );
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM reconciliation_reports")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(kept, 2);
}

/// The demo and the soak each run engines with dozens of database
/// connections: one at a time keeps the server under its limit.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn tuma_demo_runs_every_scenario_on_a_database_of_its_own_and_reports_every_invariant() {
    let _heavy = HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let output = tuma()
        .args(["demo", "--chaos", "none", "--json", "--seed", "3"])
        .env("DATABASE_URL", common::server_url())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["double_payouts"], 0);
    assert_eq!(report["reconciliation_floats_match"], true);
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 5);
    let loans = scenarios.iter().find(|s| s["name"] == "loans").unwrap();
    assert_eq!(loans["intents"]["loan"]["repaid"], 1);
    let vpn = scenarios.iter().find(|s| s["name"] == "vpn").unwrap();
    assert_eq!(vpn["intents"]["collection"]["completed"], 9, "{vpn}");
    assert!(vpn["skipped"].is_null());
    let creators = scenarios.iter().find(|s| s["name"] == "creators").unwrap();
    assert!(
        creators["expectations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e[0].as_str().unwrap().contains("Airtel") && e[1] == true),
        "{creators}"
    );
    assert!(report["float_mismatches"].as_array().unwrap().is_empty());
    let salaries = scenarios.iter().find(|s| s["name"] == "salaries").unwrap();
    assert_eq!(salaries["intents"]["payout"]["completed"], 20);
    assert!(report["database"].as_str().unwrap().contains("dropped at the end"));
}

#[test]
fn the_chaos_soak_keeps_the_promise_through_crashes_cut_connections_and_provider_faults() {
    let _heavy = HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let output = tuma()
        .args(["chaos", "--payouts", "500", "--seed", "11", "--json"])
        .env("DATABASE_URL", common::server_url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true, "{stdout}");
    assert!(report["violations"].as_array().unwrap().is_empty(), "{stdout}");
    assert_eq!(report["intents_created"], 500);
    assert_eq!(report["double_payments"], 0);
    // The faults really happened.
    assert_eq!(report["engines_killed"], 1);
    assert_eq!(report["server_error_bursts"], 2);
    assert!(report["database_connections_cut"].as_i64().unwrap() > 0, "{stdout}");
    assert!(report["callbacks_lost"].as_u64().unwrap() > 0, "{stdout}");
    assert!(report["outcomes_learned_by_polling"].as_i64().unwrap() > 0, "{stdout}");
    // Every provider carried both payouts and collections to a final state.
    for provider in ["mpesa", "airtel", "mtn", "vodacom_tz", "tigo_tz"] {
        for kind in ["payout", "collection"] {
            let states = &report["intents"][provider][kind];
            assert!(
                states["completed"].as_i64().unwrap_or(0) > 0,
                "{provider} {kind}: {states}"
            );
        }
    }
    assert!(report["float_mismatches"].as_array().unwrap().is_empty(), "{stdout}");
    assert!(report["ledger_balanced"]
        .as_object()
        .unwrap()
        .values()
        .all(|b| b == true));
}

#[test]
fn the_benchmarks_run_end_to_end_at_a_small_size() {
    let run = |args: &[&str]| {
        let output = tuma()
            .args(args)
            .env("DATABASE_URL", common::server_url())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let api = run(&["bench", "api", "--rate", "50", "--duration", "2", "--no-runner"]);
    assert!(api.contains("100 created, 0 refused"), "{api}");
    assert!(api.contains("p999"), "{api}");
    // The process's CPU per create, and the server's when it runs here.
    assert!(
        api.contains("CPU: PostgreSQL ") && api.contains("ms a create)\n"),
        "{api}"
    );
    let url = common::server_url();
    let local = ["@127.0.0.1", "@localhost", "@[::1]", "@%2F"]
        .iter()
        .any(|h| url.contains(h));
    if local {
        assert!(api.contains("ms a create), this process "), "{api}");
    }
    let jobs = run(&["bench", "jobs", "--count", "2000", "--probes", "5"]);
    assert!(jobs.contains("jobs/s"), "{jobs}");
    assert!(jobs.contains("s a job)\n"), "{jobs}");
    let payouts = run(&["bench", "payouts", "--count", "40", "--clients", "8"]);
    assert!(payouts.contains("ledger invariants: hold"), "{payouts}");
    assert!(payouts.contains("payments per request id: at most 1"), "{payouts}");
    assert!(payouts.contains("ms a payout)\n"), "{payouts}");
    if local {
        assert!(payouts.contains("ms a payout), this process "), "{payouts}");
    }
    // The WAL the server wrote meanwhile (pg_stat_wal, PostgreSQL 14 on),
    // per unit of each bench.
    for (out, unit) in [(&api, "create"), (&jobs, "job"), (&payouts, "payout")] {
        let wal = out
            .lines()
            .find(|l| l.starts_with("WAL: "))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            wal.contains(&format!(" a {unit} (")) && wal.ends_with("in all, the whole server's)"),
            "{wal}"
        );
    }
}

/// The bad-input sweep (`.ci/schemathesis`): schemathesis, at the versions
/// pinned in `.ci/schemathesis-requirements.txt`, installed from PyPI into a
/// virtual environment under `target/`, against the served
/// `/openapi.json`. Needs Python 3 with venv; under `CI=true` its absence
/// fails the suite, elsewhere the test says it skipped.
#[test]
fn the_bad_input_sweep_finds_no_server_error_and_no_answer_off_the_documented_schema() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/schemathesis-venv");
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // The pinned versions; the venv keeps a copy of what it was built from.
    let requirements = root.join(".ci/schemathesis-requirements.txt");
    let pinned = std::fs::read(&requirements).unwrap();
    let current =
        venv.join("bin/st").exists() && std::fs::read(venv.join("requirements.txt")).is_ok_and(|held| held == pinned);
    if !current {
        let installed = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements)
                .status()
                .is_ok_and(|s| s.success())
            && std::fs::write(venv.join("requirements.txt"), &pinned).is_ok();
        if !installed {
            assert!(
                !in_ci,
                "schemathesis could not be installed (python3 -m venv, pip from PyPI)"
            );
            eprintln!("SKIPPED: the bad-input sweep needs python3 with venv and PyPI to install schemathesis");
            return;
        }
    }
    let mut command = Command::new(root.join(".ci/schemathesis"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TUMA__")) {
        command.env_remove(key);
    }
    let output = command
        .current_dir(root)
        .env("TUMA_BIN", env!("CARGO_BIN_EXE_tuma"))
        .env("DATABASE_URL", common::server_url())
        .env("PORT", free_port().to_string())
        .env("MAX_TIME", "90")
        .env("TUMA__DATABASE__MAX_CONNECTIONS", "10")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tail: String = stdout
        .chars()
        .rev()
        .take(6000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        output.status.success(),
        "{tail}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn tuma_users_create_reads_the_password_from_stdin_and_stores_only_its_hash() {
    let db = TestDb::new().await;
    let create = |name: &str, role: &str, password: &str| {
        let mut child = tuma()
            .args(["users", "create", "--username", name, "--role", role])
            .env("DATABASE_URL", db.url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let made = create("ada", "admin", "the first admin's long password");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(String::from_utf8_lossy(&made.stdout).contains("ada created with role admin"));
    let (hash, role): (String, String) = sqlx::query_as("SELECT password_hash, role FROM console_users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(role, "admin");
    assert!(hash.starts_with("$argon2id$") && !hash.contains("long password"));

    let short = create("bob", "viewer", "short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("12 to 1024 characters"));
    let taken = create("ada", "viewer", "another long password here");
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already exists"));
    let bad_role = create("cy", "root", "another long password here");
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role"));

    let run = |args: &[&str]| tuma().args(args).env("DATABASE_URL", db.url()).output().unwrap();
    let listed = run(&["users", "list"]);
    let line: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(line["username"], "ada");
    assert!(line["disabled_at"].is_null());
    assert!(run(&["users", "disable", "--username", "ada"]).status.success());
    let listed = run(&["users", "list"]);
    let line: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(line["disabled_at"].is_string());
    let again = run(&["users", "disable", "--username", "ada"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("no active console user ada"));
}

#[tokio::test]
async fn tuma_keys_lists_without_secrets_and_revokes_a_key_given_whole_at_once() {
    let db = TestDb::new().await;
    let run = |args: &[&str]| tuma().args(args).env("DATABASE_URL", db.url()).output().unwrap();
    let made = run(&[
        "keys",
        "create",
        "--name",
        "shop-backend",
        "--owner",
        "shop",
        "--scopes",
        "intents:write",
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let key = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let caller = tuma::api::authenticate(&db.pool, &key).await.unwrap();
    assert_eq!((caller.name.as_str(), caller.owner.as_str()), ("shop-backend", "shop"));

    let listed = run(&["keys", "list"]);
    assert!(listed.status.success());
    let text = String::from_utf8(listed.stdout).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let prefix = line["prefix"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("tuma_{prefix}_")));
    assert_eq!(
        (line["name"].as_str(), line["owner"].as_str()),
        (Some("shop-backend"), Some("shop"))
    );
    assert!(line["revoked_at"].is_null());
    let secret = key.rsplit('_').next().unwrap();
    assert!(!text.contains(secret), "the list shows no secret");

    // A leaked key, pasted whole, is revoked; its secret is never printed.
    let revoked = run(&["keys", "revoke", &key]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let said = String::from_utf8_lossy(&revoked.stdout);
    assert!(
        said.contains(&prefix) && said.contains("shop-backend") && !said.contains(secret),
        "{said}"
    );
    assert!(tuma::api::authenticate(&db.pool, &key).await.is_err());
    let listed = run(&["keys", "list"]);
    let line: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(line["revoked_at"].is_string());
    let audited: (String, String, String) =
        sqlx::query_as("SELECT action, target, outcome FROM console_audit WHERE actor LIKE 'shell:%'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, ("revoke_key".to_owned(), prefix.clone(), "ok".to_owned()));

    let again = run(&["keys", "revoke", &prefix]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("no live key with prefix {prefix}")));
    let garbage = run(&["keys", "revoke", "shop-backend"]);
    assert!(!garbage.status.success());
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("8 hex digits"));
}
