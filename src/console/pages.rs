//! The console's read-only pages: the overview, payout and collection
//! lists, an intent's full timeline, and the audit log. Every role may read
//! them; raw callback bodies are for admins only.

use std::collections::BTreeSet;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::filters::{self, first, pairs, query_without};
use super::session::{Chrome, Permission, Session};
use super::{render, ConsoleError, PAGE_ROWS};
use crate::api::views::money_text;
use crate::api::AppState;
use crate::domain::{mask_numbers_in, Msisdn};
use crate::runner::JobFilter;
use crate::store::console as store;
use crate::store::intents::IntentRow;

/// Most rows of each part of an intent's timeline: an intent that had
/// more (a long-running poll, a receiver down for days) shows the first
/// ones, which is where the story starts.
const TIMELINE_ROWS: i64 = 200;
/// Longest raw callback body shown, in bytes; the inbox keeps up to 64 KiB.
const RAW_BODY_SHOWN_BYTES: usize = 16 * 1024;

/// A time as the console shows it.
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A stored number, masked; a number that does not parse is hidden whole.
pub fn masked(msisdn: &str) -> String {
    Msisdn::try_from(msisdn.to_owned()).map_or_else(|_| "(hidden)".to_owned(), |m| m.masked())
}

/// One intent in a list.
pub struct IntentLine {
    pub id: String,
    pub short_id: String,
    pub kind: String,
    pub state: String,
    pub amount: String,
    pub currency: String,
    pub msisdn: String,
    pub provider: String,
    pub party: String,
    pub owner: String,
    pub created_by: String,
    pub reference: String,
    pub receipt: String,
    pub created_at: String,
    pub approvals_required: i16,
    pub batch_id: String,
}

impl IntentLine {
    pub fn from_row(row: &IntentRow) -> IntentLine {
        let id = row.id.to_string();
        IntentLine {
            short_id: id[id.len() - 12..].to_owned(),
            id,
            kind: row.kind.clone(),
            state: row.state.clone(),
            amount: money_text(row.amount, &row.currency),
            currency: row.currency.clone(),
            msisdn: masked(&row.msisdn),
            provider: row.provider.clone(),
            party: row.party_id.clone(),
            owner: row.owner.clone(),
            created_by: row.created_by.clone(),
            reference: row.reference.clone(),
            receipt: row.receipt.clone().unwrap_or_default(),
            created_at: when(row.created_at),
            approvals_required: row.approvals_required,
            batch_id: row.batch_id.map(|b| b.to_string()).unwrap_or_default(),
        }
    }
}

/// One cell of the overview's counts: intents of a kind, provider and state.
struct CountLine {
    kind: String,
    provider: String,
    state: String,
    count: i64,
    link: String,
}

struct HealthLine {
    provider: String,
    success: String,
    ended: i64,
    p50: String,
    p90: String,
    p99: String,
}

struct QueueLine {
    name: String,
    depth: i64,
    lag: String,
}

#[derive(askama::Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    window: &'static str,
    counts: Vec<CountLine>,
    health: Vec<HealthLine>,
    queues: Vec<QueueLine>,
    awaiting_approval: i64,
    unresolved: i64,
    flagged: i64,
    dead_jobs: i64,
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |s| format!("{s:.1} s"))
}

/// `GET /console`: what is happening now, each number linking to its list.
pub async fn overview(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let pairs = pairs(query.as_deref());
    let (window, span) = match first(&pairs, "window") {
        Some("hour") => ("hour", chrono::Duration::hours(1)),
        _ => ("day", chrono::Duration::days(1)),
    };
    let now = state.engine.jobs().clock().local_now();
    let since = now - span;
    let since_text = since.format("%Y-%m-%dT%H:%M").to_string();
    let counts = store::counts_since(&state.pool, since)
        .await?
        .into_iter()
        .map(|c| CountLine {
            link: format!(
                "/console/{}s?{}",
                c.kind,
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("provider", &c.provider)
                    .append_pair("state", &c.state)
                    .append_pair("from", &since_text)
                    .finish()
            ),
            kind: c.kind,
            provider: c.provider,
            state: c.state,
            count: c.count,
        })
        .collect();
    let health = store::provider_health(&state.pool, since)
        .await?
        .into_iter()
        .map(|h| HealthLine {
            success: if h.ended > 0 {
                format!("{:.1} %", 100.0 * h.completed as f64 / h.ended as f64)
            } else {
                "–".to_owned()
            },
            ended: h.ended,
            p50: seconds(h.p50_s),
            p90: seconds(h.p90_s),
            p99: seconds(h.p99_s),
            provider: h.provider,
        })
        .collect();
    let queues = crate::runner::store::queue_depths(&state.pool, state.engine.jobs().clock().sql_now())
        .await?
        .into_iter()
        .map(|(name, depth, lag_s)| QueueLine {
            name,
            depth,
            lag: seconds(Some(lag_s)),
        })
        .collect();
    let (awaiting_approval, unresolved, flagged) = store::waiting_counts(&state.pool).await?;
    let dead = JobFilter {
        states: vec!["dead".to_owned()],
        ..JobFilter::default()
    };
    let dead_jobs = state.engine.jobs().count_filtered(&dead).await?;
    render(&OverviewPage {
        chrome: Chrome::new(&session, "overview"),
        window,
        counts,
        health,
        queues,
        awaiting_approval,
        unresolved,
        flagged,
        dead_jobs,
    })
}

#[derive(askama::Template)]
#[template(path = "console/intents.html")]
struct ListPage {
    chrome: Chrome,
    title: &'static str,
    path: &'static str,
    states: Vec<String>,
    providers: Vec<String>,
    chosen_states: Vec<String>,
    provider: String,
    party: String,
    min: String,
    max: String,
    from: String,
    to: String,
    q: String,
    rows: Vec<IntentLine>,
    /// The query string of this view without its cursor.
    this_query: String,
    next_query: Option<String>,
}

impl ListPage {
    /// Whether the filter names state `state` (for the select box).
    fn chosen(&self, state: &str) -> bool {
        self.chosen_states.iter().any(|s| s == state)
    }
}

/// `GET /console/payouts`.
pub async fn payouts(state: State<AppState>, session: Session, query: RawQuery) -> Result<Response, ConsoleError> {
    list(state, session, query, "payout").await
}

/// `GET /console/collections`.
pub async fn collections(state: State<AppState>, session: Session, query: RawQuery) -> Result<Response, ConsoleError> {
    list(state, session, query, "collection").await
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
    kind: &'static str,
) -> Result<Response, ConsoleError> {
    let pairs = pairs(query.as_deref());
    let filter = filters::intent_filter(kind, &pairs)?;
    let mut rows = store::intents(&state.pool, &filter, PAGE_ROWS + 1).await?;
    let more = rows.len() as i64 > PAGE_ROWS;
    rows.truncate(PAGE_ROWS as usize);
    let this_query = query_without(&pairs, &["before"]);
    let next_query = match (more, rows.last()) {
        (true, Some(last)) => {
            let mut next = pairs.clone();
            next.retain(|(k, _)| k != "before");
            next.push(("before".into(), last.id.to_string()));
            Some(query_without(&next, &[]))
        }
        _ => None,
    };
    let workflow = state.engine.workflows().get(kind);
    let text = |name: &str| first(&pairs, name).unwrap_or_default().to_owned();
    render(&ListPage {
        chrome: Chrome::new(&session, if kind == "payout" { "payouts" } else { "collections" }),
        title: if kind == "payout" { "Payouts" } else { "Collections" },
        path: if kind == "payout" {
            "/console/payouts"
        } else {
            "/console/collections"
        },
        states: workflow.map(|w| w.states.keys().cloned().collect()).unwrap_or_default(),
        providers: state.config.providers.keys().cloned().collect(),
        chosen_states: filter.states.clone(),
        provider: text("provider"),
        party: text("party"),
        min: text("min"),
        max: text("max"),
        from: text("from"),
        to: text("to"),
        q: text("q"),
        rows: rows.iter().map(IntentLine::from_row).collect(),
        this_query,
        next_query,
    })
}

struct EventLine {
    at: String,
    event: String,
    from: String,
    to: String,
    outcome: String,
    cause: String,
    actor: String,
    reason: String,
    provider_ref: String,
}

struct JobLine {
    id: i64,
    kind: String,
    queue: String,
    state: String,
    attempt: i32,
    max_attempts: i32,
    attempted_at: String,
    took: String,
    errors: Vec<String>,
}

struct CallbackLine {
    id: i64,
    provider: String,
    kind: String,
    outcome: String,
    detail: String,
    received_at: String,
    body: Option<String>,
}

struct LedgerLine {
    transfer: String,
    state: String,
    account: String,
    amount: String,
    currency: String,
    memo: String,
}

struct DeliveryLine {
    event: String,
    endpoint: String,
    attempt: i32,
    status: String,
    error: String,
    latency_ms: i32,
    at: String,
}

/// One state of the workflow diagram drawn in HTML.
struct StateBox {
    name: String,
    description: String,
    is_final: bool,
    current: bool,
    visited: bool,
    exits: Vec<(String, String)>,
}

struct LateNote {
    reported_at: String,
    cause: String,
    provider_ref: String,
    /// `(when, by whom, evidence, how)` once settled; how: `recovered` or
    /// `booked`.
    settled: Option<(String, String, String, String)>,
}

#[derive(askama::Template)]
#[template(path = "console/intent.html")]
struct IntentPage {
    chrome: Chrome,
    intent: IntentLine,
    hold_reason: String,
    /// A success the provider reported after the intent ended unpaid.
    late: Option<LateNote>,
    flags: Vec<(String, String, String)>,
    approvals: Vec<(String, String, String)>,
    events: Vec<EventLine>,
    /// `(at, provider, call, request id, outcome, code, latency)`.
    calls: Vec<(String, String, String, String, String, String, String)>,
    jobs: Vec<JobLine>,
    callbacks: Vec<CallbackLine>,
    ledger: Vec<LedgerLine>,
    deliveries: Vec<DeliveryLine>,
    diagram: Vec<StateBox>,
    mermaid: String,
}

fn job_errors(errors: &serde_json::Value) -> Vec<String> {
    errors
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    format!(
                        "attempt {} at {}: {} ({})",
                        e["attempt"],
                        e["at"].as_str().unwrap_or("?"),
                        mask_numbers_in(e["error"].as_str().unwrap_or("?")),
                        e["kind"].as_str().unwrap_or("?"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn diagram(state: &AppState, row: &IntentRow, visited: &BTreeSet<String>) -> (Vec<StateBox>, String) {
    let Some(workflow) = state.engine.workflows().get(&row.kind) else {
        return (Vec::new(), String::new());
    };
    let mut names: Vec<&String> = vec![&workflow.initial];
    names.extend(workflow.states.keys().filter(|n| **n != workflow.initial));
    let boxes = names
        .into_iter()
        .filter_map(|name| workflow.state(name))
        .map(|s| StateBox {
            name: s.name.clone(),
            description: s.description.clone(),
            is_final: s.is_final,
            current: s.name == row.state,
            visited: visited.contains(&s.name),
            exits: workflow
                .transitions
                .iter()
                .filter(|t| t.from.contains(&s.name))
                .map(|t| (t.event.clone(), t.to.clone()))
                .collect(),
        })
        .collect();
    (boxes, crate::workflow::mermaid::render(workflow, Some(&row.state)))
}

/// `GET /console/intents/{id}`: everything that happened to one intent.
pub async fn intent(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let not_found = || ConsoleError::NotFound(format!("no intent {id}"));
    let intent_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let row = store::intent(&state.pool, intent_id).await?.ok_or_else(not_found)?;
    let events = crate::store::intents::events(&state.pool, intent_id).await?;
    let mut visited: BTreeSet<String> = events.iter().filter_map(|e| e.to_state.clone()).collect();
    visited.insert(row.state.clone());
    let jobs = state
        .engine
        .jobs()
        .list_filtered(
            &JobFilter {
                intent_id: Some(intent_id),
                ..JobFilter::default()
            },
            TIMELINE_ROWS,
        )
        .await?;
    let raw_bodies = session.role.allows(Permission::ReadRawBodies);
    let callbacks = store::callbacks(&state.pool, intent_id, TIMELINE_ROWS).await?;
    let ledger = store::ledger_lines(&state.pool, intent_id, TIMELINE_ROWS).await?;
    let deliveries = store::deliveries(&state.pool, intent_id, TIMELINE_ROWS).await?;
    let flags = crate::store::policy::flags(&state.pool, intent_id).await?;
    let calls = crate::store::provider_calls::for_intent(&state.pool, intent_id, TIMELINE_ROWS).await?;
    let mut conn = state.pool.acquire().await?;
    let approvals = crate::store::policy::approvals(&mut conn, intent_id).await?;
    drop(conn);
    let late = crate::store::late_successes::for_intent(&state.pool, intent_id)
        .await?
        .map(|l| LateNote {
            reported_at: when(l.at),
            cause: l.cause,
            provider_ref: l.provider_ref.unwrap_or_default(),
            settled: l.settled_at.map(|at| {
                (
                    when(at),
                    l.settled_by.unwrap_or_default(),
                    l.evidence.unwrap_or_default(),
                    l.outcome.unwrap_or_default(),
                )
            }),
        });
    let (diagram, mermaid) = diagram(&state, &row, &visited);
    render(&IntentPage {
        chrome: Chrome::new(
            &session,
            if row.kind == "collection" {
                "collections"
            } else {
                "payouts"
            },
        ),
        intent: IntentLine::from_row(&row),
        hold_reason: row.hold_reason.clone().unwrap_or_default(),
        late,
        flags: flags.into_iter().map(|f| (f.rule, f.action, f.detail)).collect(),
        approvals: approvals
            .into_iter()
            .map(|a| (a.approver, a.decision, a.reason.unwrap_or_default()))
            .collect(),
        events: events
            .into_iter()
            .map(|e| EventLine {
                at: when(e.at),
                event: e.event,
                from: e.from_state.unwrap_or_default(),
                to: e.to_state.unwrap_or_default(),
                outcome: e.outcome,
                cause: e.cause,
                actor: e.actor,
                reason: e.reason.map(|r| mask_numbers_in(&r)).unwrap_or_default(),
                provider_ref: e.provider_ref.unwrap_or_default(),
            })
            .collect(),
        calls: calls
            .into_iter()
            .map(|c| {
                (
                    when(c.called_at),
                    c.provider,
                    c.call,
                    c.request_id.unwrap_or_default(),
                    c.outcome,
                    c.code.unwrap_or_default(),
                    format!("{} ms", c.latency_ms),
                )
            })
            .collect(),
        jobs: jobs
            .into_iter()
            .map(|j| JobLine {
                id: j.id.get(),
                kind: j.kind,
                queue: j.queue,
                state: j.state,
                attempt: j.attempt,
                max_attempts: j.max_attempts,
                attempted_at: j.attempted_at.map(when).unwrap_or_default(),
                took: match (j.attempted_at, j.finished_at) {
                    (Some(start), Some(end)) => format!("{} ms", (end - start).num_milliseconds()),
                    _ => String::new(),
                },
                errors: job_errors(&j.errors),
            })
            .collect(),
        callbacks: callbacks
            .into_iter()
            .map(|c| CallbackLine {
                id: c.id,
                provider: c.provider,
                kind: c.kind,
                outcome: c.outcome.unwrap_or_default(),
                detail: c.detail.map(|d| mask_numbers_in(&d)).unwrap_or_default(),
                received_at: when(c.received_at),
                body: raw_bodies.then(|| {
                    let shown = &c.body[..c.body.len().min(RAW_BODY_SHOWN_BYTES)];
                    mask_numbers_in(&String::from_utf8_lossy(shown))
                }),
            })
            .collect(),
        ledger: ledger
            .into_iter()
            .map(|l| LedgerLine {
                transfer: l.transfer_key,
                state: l.transfer_state,
                account: l.account,
                amount: money_text(l.amount, &l.currency),
                currency: l.currency,
                memo: l.memo,
            })
            .collect(),
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryLine {
                event: d.event,
                endpoint: d.endpoint_id.to_string(),
                attempt: d.attempt,
                status: d.status_code.map(|s| s.to_string()).unwrap_or_default(),
                error: d.error.unwrap_or_default(),
                latency_ms: d.latency_ms,
                at: when(d.at),
            })
            .collect(),
        diagram,
        mermaid,
    })
}

struct AuditLine {
    at: String,
    actor: String,
    role: String,
    action: String,
    target: String,
    outcome: String,
    detail: String,
    remote_addr: String,
}

#[derive(askama::Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    actor: String,
    rows: Vec<AuditLine>,
    next_query: Option<String>,
}

/// `GET /console/audit`: every console action, newest first.
pub async fn audit(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let pairs = pairs(query.as_deref());
    let actor = first(&pairs, "actor");
    let before = first(&pairs, "before")
        .map(|b| {
            b.parse::<i64>()
                .map_err(|_| ConsoleError::Invalid("before: use the next-page link".into()))
        })
        .transpose()?;
    let mut rows = store::audit(&state.pool, actor, before, PAGE_ROWS + 1).await?;
    let more = rows.len() as i64 > PAGE_ROWS;
    rows.truncate(PAGE_ROWS as usize);
    let next_query = match (more, rows.last()) {
        (true, Some(last)) => {
            let mut next: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "before").cloned().collect();
            next.push(("before".into(), last.id.to_string()));
            Some(query_without(&next, &[]))
        }
        _ => None,
    };
    render(&AuditPage {
        chrome: Chrome::new(&session, "audit"),
        actor: actor.unwrap_or_default().to_owned(),
        rows: rows
            .into_iter()
            .map(|r| AuditLine {
                at: when(r.at),
                actor: r.actor,
                role: r.role.unwrap_or_default(),
                action: r.action,
                target: r.target.unwrap_or_default(),
                outcome: r.outcome,
                detail: r.detail.unwrap_or_default(),
                remote_addr: r.remote_addr.unwrap_or_default(),
            })
            .collect(),
        next_query,
    })
}
