//! Jobs and queues: jobs by state, kind and queue with their error history;
//! retry, cancel or discard one job, a selection, or everything matching
//! the filter (after a confirmation naming the count); queues with their
//! limits, pause and resume. Every change goes through `JobClient`, one job
//! at a time, so each keeps the runner's compare-and-set rules.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::approvals::ResultsPage;
use super::filters::{all, first, pairs, query_without};
use super::pages::when;
use super::session::{audit, Chrome, Permission, Posted, Session};
use super::{render, ConsoleError, PAGE_ROWS};
use crate::api::AppState;
use crate::domain::{mask_numbers_in, JobId};
use crate::runner::{CancelOutcome, JobFilter, RetryOutcome};

/// Most jobs one filter-wide action touches: a large incident's dead
/// letters, acted on one by one, within a request's patience.
const MAX_BULK_JOBS: i64 = 10_000;
/// Longest filter value, in characters.
const MAX_FILTER_CHARS: usize = 100;

const STATES: [&str; 5] = ["available", "running", "completed", "dead", "cancelled"];

/// What an admin can do to jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    /// Re-run a dead job with fresh attempts.
    Retry,
    /// Cancel a waiting job, or ask its node to stop a running one.
    Cancel,
    /// Delete a dead job that will not be re-run.
    Discard,
}

impl Operation {
    fn parse(text: Option<&str>) -> Result<Operation, ConsoleError> {
        match text {
            Some("retry") => Ok(Operation::Retry),
            Some("cancel") => Ok(Operation::Cancel),
            Some("discard") => Ok(Operation::Discard),
            _ => Err(ConsoleError::Invalid("op: retry, cancel or discard".into())),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Operation::Retry => "retry",
            Operation::Cancel => "cancel",
            Operation::Discard => "discard",
        }
    }

    /// The states a job must be in for this operation to apply.
    fn applies_to(self) -> &'static [&'static str] {
        match self {
            Operation::Retry | Operation::Discard => &["dead"],
            Operation::Cancel => &["available", "running"],
        }
    }
}

/// The job filter a query string asks for.
fn job_filter(pairs: &[(String, String)]) -> Result<JobFilter, ConsoleError> {
    let states: Vec<String> = all(pairs, "state").into_iter().map(str::to_owned).collect();
    if let Some(bad) = states.iter().find(|s| !STATES.contains(&s.as_str())) {
        return Err(ConsoleError::Invalid(format!("state: {bad} is not a job state")));
    }
    let text = |name: &str| match first(pairs, name) {
        Some(v) if v.chars().count() > MAX_FILTER_CHARS => Err(ConsoleError::Invalid(format!(
            "{name}: at most {MAX_FILTER_CHARS} characters"
        ))),
        other => Ok(other.map(str::to_owned)),
    };
    Ok(JobFilter {
        states,
        kind: text("kind")?,
        queue: text("queue")?,
        intent_id: None,
        before: first(pairs, "before")
            .map(|b| {
                b.parse::<i64>()
                    .map_err(|_| ConsoleError::Invalid("before: use the next-page link".into()))
            })
            .transpose()?,
    })
}

struct JobLine {
    id: i64,
    kind: String,
    queue: String,
    state: String,
    attempt: i32,
    max_attempts: i32,
    run_at: String,
    intent: String,
    last_error: String,
    errors: Vec<String>,
}

struct QueueLine {
    name: String,
    concurrency: u32,
    rate: String,
    paused: String,
    available: i64,
    running: i64,
    dead: i64,
}

#[derive(askama::Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    states: Vec<&'static str>,
    chosen_states: Vec<String>,
    kind: String,
    queue: String,
    rows: Vec<JobLine>,
    queues: Vec<QueueLine>,
    matching: i64,
    filter_query: String,
    next_query: Option<String>,
}

impl JobsPage {
    /// Whether the filter names state `state` (for the select box).
    fn chosen(&self, state: &str) -> bool {
        self.chosen_states.iter().any(|s| s == state)
    }
}

fn error_lines(errors: &serde_json::Value) -> Vec<String> {
    errors
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    format!(
                        "#{} {} {}: {}",
                        e["attempt"],
                        e["at"].as_str().unwrap_or("?"),
                        e["kind"].as_str().unwrap_or("?"),
                        mask_numbers_in(e["error"].as_str().unwrap_or("?"))
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn queue_lines(state: &AppState) -> Result<Vec<QueueLine>, ConsoleError> {
    let controls = crate::runner::store::queue_controls(&state.pool).await?;
    let counts = crate::runner::store::counts_by_queue(&state.pool).await?;
    let count = |queue: &str, job_state: &str| {
        counts
            .iter()
            .find(|(q, s, _)| q == queue && s == job_state)
            .map_or(0, |c| c.2)
    };
    let now = state.engine.jobs().clock().local_now();
    Ok(state
        .config
        .runner
        .queues
        .iter()
        .map(|(name, settings)| {
            let control = controls.iter().find(|c| &c.0 == name);
            let paused = match control {
                Some((_, Some(_), None)) => "paused".to_owned(),
                Some((_, Some(_), Some(until))) if *until > now => format!("paused until {}", when(*until)),
                _ => String::new(),
            };
            QueueLine {
                name: name.clone(),
                concurrency: settings.concurrency,
                rate: match (settings.rate_per_s, settings.burst) {
                    (Some(rate), Some(burst)) => format!("{rate}/s (burst {burst})"),
                    (Some(rate), None) => format!("{rate}/s"),
                    (None, _) => "unlimited".to_owned(),
                },
                paused,
                available: count(name, "available"),
                running: count(name, "running"),
                dead: count(name, "dead"),
            }
        })
        .collect())
}

/// `GET /console/jobs`.
pub async fn list(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let pairs = pairs(query.as_deref());
    let filter = job_filter(&pairs)?;
    let client = state.engine.jobs();
    let mut rows = client.list_filtered(&filter, PAGE_ROWS + 1).await?;
    let more = rows.len() as i64 > PAGE_ROWS;
    rows.truncate(PAGE_ROWS as usize);
    let matching = client.count_filtered(&filter).await?;
    let next_query = match (more, rows.last()) {
        (true, Some(last)) => {
            let mut next: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "before").cloned().collect();
            next.push(("before".into(), last.id.get().to_string()));
            Some(query_without(&next, &[]))
        }
        _ => None,
    };
    render(&JobsPage {
        chrome: Chrome::new(&session, "jobs"),
        states: STATES.to_vec(),
        chosen_states: filter.states.clone(),
        kind: filter.kind.clone().unwrap_or_default(),
        queue: filter.queue.clone().unwrap_or_default(),
        rows: rows
            .into_iter()
            .map(|job| {
                let errors = error_lines(&job.errors);
                JobLine {
                    id: job.id.get(),
                    intent: job.args["intent_id"].as_str().unwrap_or_default().to_owned(),
                    kind: job.kind,
                    queue: job.queue,
                    state: job.state,
                    attempt: job.attempt,
                    max_attempts: job.max_attempts,
                    run_at: when(job.run_at),
                    last_error: errors.last().cloned().unwrap_or_default(),
                    errors,
                }
            })
            .collect(),
        queues: queue_lines(&state).await?,
        matching,
        filter_query: query_without(&pairs, &["before"]),
        next_query,
    })
}

#[derive(askama::Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    op: &'static str,
    count: i64,
    filter_query: String,
}

/// Does `op` to one job; returns what happened, in words, and whether it
/// did anything.
async fn apply(state: &AppState, op: Operation, id: JobId) -> Result<(bool, &'static str), ConsoleError> {
    let client = state.engine.jobs();
    Ok(match op {
        Operation::Retry => match client.retry_dead(id).await? {
            RetryOutcome::Requeued => (true, "will run again"),
            RetryOutcome::NotDead => (false, "not dead; only dead jobs are re-run"),
            RetryOutcome::KeyTaken => (false, "stays dead: a live job holds its unique key"),
        },
        Operation::Cancel => match client.cancel(id).await? {
            CancelOutcome::Cancelled => (true, "cancelled"),
            CancelOutcome::Requested => (true, "running; its node stops it at the next heartbeat"),
            CancelOutcome::AlreadyFinished => (false, "already finished"),
        },
        Operation::Discard => match client.discard_dead(id).await? {
            true => (true, "discarded"),
            false => (false, "not dead; only dead jobs are discarded"),
        },
    })
}

/// `POST /console/jobs/action`: `op` (retry, cancel, discard) on the
/// selected jobs (`id`, repeated), or with `scope=filter` on every job
/// matching `filter` (a jobs-page query string) to which `op` applies; a
/// filter-wide action first answers with a confirmation naming the count,
/// and then acts on at most the count confirmed.
pub async fn action(State(state): State<AppState>, posted: Posted) -> Result<Response, ConsoleError> {
    let op = Operation::parse(posted.form.get("op"))?;
    posted
        .session
        .require(&state, Permission::Operate, op.as_str(), Some("jobs"))
        .await?;
    let filter_query = posted.form.get("filter").unwrap_or_default().to_owned();
    let ids: Vec<JobId> = if posted.form.get("scope") == Some("filter") {
        let mut filter = job_filter(&pairs(Some(&filter_query)))?;
        filter.before = None;
        filter.states = if filter.states.is_empty() {
            op.applies_to().iter().map(|s| (*s).to_owned()).collect()
        } else {
            filter
                .states
                .into_iter()
                .filter(|s| op.applies_to().contains(&s.as_str()))
                .collect()
        };
        if filter.states.is_empty() {
            return Err(ConsoleError::Invalid(format!(
                "no job in the filtered states can be {}",
                match op {
                    Operation::Retry => "retried",
                    Operation::Cancel => "cancelled",
                    Operation::Discard => "discarded",
                }
            )));
        }
        let Some(confirmed) = posted.form.get("confirm") else {
            let count = state.engine.jobs().count_filtered(&filter).await?;
            return render(&ConfirmPage {
                chrome: Chrome::new(&posted.session, "jobs"),
                op: op.as_str(),
                count: count.min(MAX_BULK_JOBS),
                filter_query,
            });
        };
        let confirmed: i64 = confirmed
            .parse()
            .map_err(|_| ConsoleError::Invalid("confirm: the count shown".into()))?;
        state
            .engine
            .jobs()
            .ids_filtered(&filter, confirmed.clamp(0, MAX_BULK_JOBS))
            .await?
    } else {
        posted
            .form
            .all("id")
            .into_iter()
            .map(|id| {
                id.parse::<i64>()
                    .map(JobId::from)
                    .map_err(|_| ConsoleError::Invalid(format!("not a job id: {id}")))
            })
            .collect::<Result<_, _>>()?
    };
    if ids.is_empty() {
        return Err(ConsoleError::Invalid("select at least one job".into()));
    }
    if ids.len() as i64 > MAX_BULK_JOBS {
        return Err(ConsoleError::Invalid(format!("at most {MAX_BULK_JOBS} jobs at once")));
    }
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let target = format!("job {}", id.get());
        let (done, text) = apply(&state, op, id).await?;
        let outcome = if done { "ok" } else { "refused" };
        audit(&state, &posted.session, op.as_str(), Some(&target), outcome, Some(text)).await?;
        results.push((target, text.to_owned()));
    }
    render(&ResultsPage {
        chrome: Chrome::new(&posted.session, "jobs"),
        title: format!("{} {} job(s)", op.as_str(), results.len()),
        results,
        back: format!("/console/jobs?{filter_query}"),
    })
}

async fn set_paused(state: AppState, name: String, posted: Posted, paused: bool) -> Result<Response, ConsoleError> {
    let action = if paused { "pause_queue" } else { "resume_queue" };
    posted
        .session
        .require(&state, Permission::Operate, action, Some(&name))
        .await?;
    if !state.config.runner.queues.contains_key(&name) {
        return Err(ConsoleError::NotFound(format!("no queue {name}")));
    }
    let client = state.engine.jobs();
    if paused {
        client.pause_queue(&name).await?;
    } else {
        client.resume_queue(&name).await?;
    }
    audit(&state, &posted.session, action, Some(&name), "ok", None).await?;
    Ok(Redirect::to("/console/jobs").into_response())
}

/// `POST /console/queues/{name}/pause`: no node claims its jobs until
/// resumed.
pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    set_paused(state, name, posted, true).await
}

/// `POST /console/queues/{name}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    set_paused(state, name, posted, false).await
}
