//! The admin console in a real browser: headless Chromium driven over
//! WebDriver (chromedriver), against the engine on a free port. A handful
//! of flows a person runs: sign in, approve a payout and see it complete,
//! retry a dead job, filter a list and reload the bookmarked address.
//! Screenshots of the pages land in `test-artifacts/console/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Without them the suite says it skipped, except under `CI=true`,
//! where a missing browser fails it.

#[path = "../common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tuma::console::Role;
use tuma::simulator::mpesa::SimConfig;

use common::app::{spawn_app, spawn_mpesa_app, TestApp};
use common::console::password_of;
use common::eventually;

/// One browser at a time: the machines running the suite have two cores,
/// and a Chromium per test would starve the engine under test.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long chromedriver may take to start listening.
const DRIVER_START: Duration = Duration::from_secs(20);
/// How long a page element may take to appear.
const ELEMENT_WAIT: Duration = Duration::from_secs(10);

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Where screenshots are kept: `test-artifacts/console/` at the root of the
/// repository (git-ignored).
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver process and a WebDriver session on headless Chromium.
struct Browser {
    client: Client,
    driver: Child,
}

impl Browser {
    /// Starts one, or says why not: `None` (the test skips) outside CI.
    async fn start() -> Option<Browser> {
        let driver = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| on_path(&["chromedriver"]));
        let chromium = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| on_path(&["chromium", "chromium-browser", "google-chrome"]));
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            let why = "headless Chromium and chromedriver are not installed \
                       (apt-get install chromium chromium-driver)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("browser tests need a browser under CI: {why}");
            }
            // Written to stderr directly: the test harness hides what a
            // passing test prints, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: browser test: {why}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Its own process group, so that a failing test can stop the
        // driver and the browser it started together (see `Drop`).
        let driver = Command::new(driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DRIVER_START;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args = vec![
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            "--force-device-scale-factor=1",
        ];
        if running_as_root() {
            args.push("--no-sandbox");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), json!({ "args": args, "binary": chromium }));
        // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let client = builder.connect(&url).await.expect("a WebDriver session starts");
        Some(Browser { client, driver })
    }

    async fn shot(&self, name: &str) -> Vec<u8> {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(artifacts().join(format!("{name}.png")), &png).unwrap();
        png
    }

    async fn text_of(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(ELEMENT_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Waits until the text of `css` contains `needle` (across a page load:
    /// an element of the page being left may go stale while it is read);
    /// returns the text.
    async fn text_containing(&self, css: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + ELEMENT_WAIT;
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                    last = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never contained {needle:?}; last read: {last:?}");
    }

    async fn sign_in(&self, app: &TestApp, name: &str) {
        self.client.goto(&app.url("/console/login")).await.unwrap();
        let form = self.client.form(Locator::Id("password-form")).await.unwrap();
        form.set_by_name("username", name).await.unwrap();
        form.set_by_name("password", &password_of(name)).await.unwrap();
        self.client
            .find(Locator::Id("sign-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let who = self.text_of("header .actor").await;
        assert_eq!(who, name);
    }

    /// Ends the WebDriver session (the driver closes the browser), then
    /// the driver.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Stops the driver and its browser, also when a test failed half-way
    /// and never reached `close`: nothing outlives the test.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
    }
}

fn payout(party: &str, amount: &str, reference: &str) -> Value {
    json!({ "amount": amount, "currency": "KES", "recipient": { "msisdn": "0712345678" },
            "party_id": party, "reference": reference })
}

async fn create(app: &TestApp, body: &Value) -> String {
    let response = app
        .create("/v1/payouts", &app.key, &uuid::Uuid::new_v4().to_string(), body)
        .await;
    let created: Value = response.json().await.unwrap();
    created["id"].as_str().expect("the payout was created").to_owned()
}

async fn state_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT state FROM intents WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_approver_signs_in_approves_a_payout_and_sees_it_complete() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else { return };
    let app = spawn_mpesa_app(SimConfig::default()).await;
    app.console_user("amina", Role::Approver).await;
    let id = create(&app, &payout("worker-7", "76000", "equipment-grant")).await;
    create(&app, &payout("creator-42", "90000", "november-bonus")).await;
    assert_eq!(state_of(&app, &id).await, "awaiting_approval");

    browser.sign_in(&app, "amina").await;
    browser.shot("overview").await;
    assert_eq!(browser.text_of("#awaiting-approval").await, "2");
    browser.client.goto(&app.url("/console/approvals")).await.unwrap();
    browser.text_of("#approvals").await;
    let png = browser.shot("approvals").await;
    if std::env::var_os("TUMA_UPDATE_DOCS_SCREENSHOT").is_some() {
        std::fs::write(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console-approvals.png"),
            png,
        )
        .unwrap();
    }
    browser
        .client
        .find(Locator::Css(&format!("button.approve[data-id=\"{id}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The row's form updates the queue in place, without a page load.
    browser
        .client
        .wait()
        .at_most(ELEMENT_WAIT)
        .for_element(Locator::Css("#flash.done"))
        .await
        .unwrap();
    assert_eq!(browser.text_of("#flash").await, "Approved.");
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("button.approve"))
            .await
            .unwrap()
            .len(),
        1
    );
    browser.shot("approvals-after").await;
    eventually(Duration::from_secs(30), "the approved payout to complete", || async {
        app.run_jobs().await;
        state_of(&app, &id).await == "completed"
    })
    .await;
    browser
        .client
        .goto(&app.url(&format!("/console/intents/{id}")))
        .await
        .unwrap();
    assert_eq!(browser.text_of("#intent-state").await, "completed");
    let timeline = browser.text_of("#timeline").await;
    assert!(
        timeline.contains("amina"),
        "the approval is in the timeline: {timeline}"
    );
    browser.shot("intent").await;
    browser.close().await;
}

#[tokio::test]
async fn an_operator_retries_a_dead_job_from_the_jobs_page() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else { return };
    let app = spawn_app().await;
    app.console_user("otto", Role::Operator).await;
    let job: i64 = sqlx::query_scalar(
        "INSERT INTO tuma_jobs (kind, queue, args, state, attempt, max_attempts, finished_at, errors)
         VALUES ('tuma.noop', 'default', '{}', 'dead', 3, 3, now(),
                 '[{\"attempt\": 3, \"at\": \"2026-11-23T10:00:00Z\", \"error\": \"provider timed out\", \"kind\": \"retryable\"}]')
         RETURNING id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();

    browser.sign_in(&app, "otto").await;
    browser.client.goto(&app.url("/console/jobs?state=dead")).await.unwrap();
    assert!(browser
        .text_of(&format!("#job-{job}"))
        .await
        .contains("provider timed out"));
    browser.shot("jobs").await;
    browser
        .client
        .find(Locator::Css(&format!("#job-{job} input[type=checkbox]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Id("retry-selected"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The retry is a form post: read the page it lands on.
    browser.text_containing("main", "will run again").await;
    app.work("default").await;
    let state: String = sqlx::query_scalar("SELECT state::text FROM tuma_jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(state, "completed");
    browser.close().await;
}

#[tokio::test]
async fn a_filtered_list_reloads_from_its_bookmarked_address() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start().await else { return };
    let app = spawn_app().await;
    app.console_user("vera", Role::Viewer).await;
    for (i, amount) in ["500", "1500", "2500", "3500"].iter().enumerate() {
        create(&app, &payout("creator-42", amount, &format!("wave-{i}"))).await;
    }
    browser.sign_in(&app, "vera").await;
    browser.client.goto(&app.url("/console/payouts")).await.unwrap();
    let form = browser.client.form(Locator::Id("filters")).await.unwrap();
    form.set_by_name("min", "1000").await.unwrap();
    form.set_by_name("max", "3000").await.unwrap();
    browser
        .client
        .find(Locator::Id("apply-filters"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + ELEMENT_WAIT;
    let bookmarked = loop {
        let url = browser.client.current_url().await.unwrap();
        if url.query().is_some_and(|q| q.contains("min=1000")) {
            break url;
        }
        assert!(
            Instant::now() < deadline,
            "the filters never reached the address: {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(bookmarked.as_str().contains("max=3000"), "{bookmarked}");
    let rows = browser.client.find_all(Locator::Css("#intents tbody a")).await.unwrap();
    assert_eq!(rows.len(), 2);
    browser.shot("payouts-filtered").await;

    // A fresh visit to the bookmarked address shows the same view.
    browser.client.goto(&app.url("/console")).await.unwrap();
    browser.client.goto(bookmarked.as_str()).await.unwrap();
    let rows = browser.client.find_all(Locator::Css("#intents tbody a")).await.unwrap();
    assert_eq!(rows.len(), 2);
    let min = browser
        .client
        .find(Locator::Id("f-min"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(min.as_deref(), Some("1000"));
    browser.close().await;
}
