//! The approvals queue: payouts waiting for approval, with what an approver
//! needs to decide (amount, party, KYC tier, flags, why approval is needed,
//! who approved already), and the approve, reject and bulk approve actions.
//! Decisions go through `policy::approvals::decide`, the same rules as the
//! API: one decision per approver, never on a payout one created, two
//! different approvers where two are required.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use super::filters::{first, pairs};
use super::pages::IntentLine;
use super::session::{audit, Chrome, Permission, Posted, Session};
use super::{render, ConsoleError, PAGE_ROWS};
use crate::api::AppState;
use crate::policy::approvals::{decide, Decided, Decision, DecisionError};
use crate::store::console as store;
use crate::store::intents::IntentRow;

/// Most payouts one bulk approval acts on: a large batch, approved in one
/// click, still finishes well within a request's patience.
const MAX_BULK: usize = 1000;
/// Longest reason kept with a decision, in characters.
const MAX_REASON_CHARS: usize = 500;

/// A payout in the queue, with what the approver needs to decide.
struct QueueLine {
    intent: IntentLine,
    tier: String,
    flags: Vec<String>,
    why: Vec<String>,
    approvals: Vec<String>,
    approvals_given: usize,
    own: bool,
    decided: bool,
}

#[derive(askama::Template)]
#[template(path = "console/approvals.html")]
struct QueuePage {
    chrome: Chrome,
    rows: Vec<QueueLine>,
    batches: Vec<(String, usize)>,
    next_query: Option<String>,
}

/// Why a payout waits for approval, in words.
fn why(state: &AppState, row: &IntentRow, flags: &[(String, String, String)]) -> Vec<String> {
    let policy = &state.config.policy;
    let mut reasons = Vec::new();
    if let Some(usd) = row.usd_equivalent {
        let usd = usd.round_dp(2);
        if usd > policy.two_approvals_above_usd {
            reasons.push(format!(
                "USD {usd} is above {}: two approvers",
                policy.two_approvals_above_usd
            ));
        } else if usd > policy.approval_above_usd {
            reasons.push(format!("USD {usd} is above {}", policy.approval_above_usd));
        }
    }
    for (_, rule, detail) in flags.iter().filter(|(action, _, _)| action == "review") {
        reasons.push(format!("flagged for review by {rule}: {detail}"));
    }
    if reasons.is_empty() && row.batch_id.is_some() {
        reasons.push("its batch's total is above the approval threshold".to_owned());
    }
    if reasons.is_empty() {
        reasons.push(format!("{} approval(s) required", row.approvals_required.max(1)));
    }
    reasons
}

/// `GET /console/approvals`: payouts waiting for approval, oldest first.
pub async fn queue(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let pairs = pairs(query.as_deref());
    let after = first(&pairs, "after")
        .map(|a| Uuid::parse_str(a).map_err(|_| ConsoleError::Invalid("after: use the next-page link".into())))
        .transpose()?;
    let mut rows = store::queue(&state.pool, &["payout"], &["awaiting_approval"], after, PAGE_ROWS + 1).await?;
    let more = rows.len() as i64 > PAGE_ROWS;
    rows.truncate(PAGE_ROWS as usize);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut flags: HashMap<Uuid, Vec<(String, String, String)>> = HashMap::new();
    for (id, rule, action, detail) in store::flags_of(&state.pool, &ids).await? {
        flags.entry(id).or_default().push((action, rule, detail));
    }
    let mut decisions: HashMap<Uuid, Vec<(String, String)>> = HashMap::new();
    for (id, approver, decision) in store::decisions_of(&state.pool, &ids).await? {
        decisions.entry(id).or_default().push((approver, decision));
    }
    let parties: Vec<(String, String)> = rows.iter().map(|r| (r.owner.clone(), r.party_id.clone())).collect();
    let tiers: HashMap<(String, String), i16> = store::tiers_of(&state.pool, &parties)
        .await?
        .into_iter()
        .map(|(owner, party, tier)| ((owner, party), tier))
        .collect();
    let mut batches: Vec<(String, usize)> = Vec::new();
    for batch in rows.iter().filter_map(|r| r.batch_id) {
        match batches.iter_mut().find(|(id, _)| *id == batch.to_string()) {
            Some((_, count)) => *count += 1,
            None => batches.push((batch.to_string(), 1)),
        }
    }
    let lines = rows
        .iter()
        .map(|row| {
            let flags = flags.remove(&row.id).unwrap_or_default();
            let decisions = decisions.remove(&row.id).unwrap_or_default();
            QueueLine {
                tier: tiers
                    .get(&(row.owner.clone(), row.party_id.clone()))
                    .map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
                why: why(&state, row, &flags),
                flags: flags.iter().map(|(a, r, d)| format!("{r} ({a}): {d}")).collect(),
                approvals_given: decisions.iter().filter(|(_, d)| d == "approve").count(),
                approvals: decisions.iter().map(|(who, d)| format!("{who}: {d}")).collect(),
                own: row.created_by == session.actor,
                decided: decisions.iter().any(|(who, _)| *who == session.actor),
                intent: IntentLine::from_row(row),
            }
        })
        .collect();
    render(&QueuePage {
        chrome: Chrome::new(&session, "approvals"),
        rows: lines,
        batches,
        next_query: match (more, rows.last()) {
            (true, Some(last)) => Some(format!("after={}", last.id)),
            _ => None,
        },
    })
}

/// Where to go back to after an action: a console page only.
pub fn back(posted: &Posted, default: &str) -> String {
    posted
        .form
        .get("return")
        .filter(|r| r.starts_with("/console") && !r.contains("//") && !r.contains('\\'))
        .unwrap_or(default)
        .to_owned()
}

fn outcome_text(decided: &Decided) -> String {
    match decided {
        Decided::Approved => "approved".to_owned(),
        Decided::Waiting { approvals, required } => format!("waiting ({approvals} of {required} approvals)"),
        Decided::Rejected => "rejected".to_owned(),
    }
}

/// Decides on one payout in its own transaction.
async fn decide_one(
    state: &AppState,
    actor: &str,
    id: Uuid,
    decision: Decision,
    reason: Option<&str>,
) -> Result<Decided, DecisionError> {
    let mut tx = state.pool.begin().await?;
    let decided = decide(&state.engine, &mut tx, None, id, actor, decision, reason).await?;
    tx.commit().await?;
    Ok(decided)
}

fn refusal(error: DecisionError) -> ConsoleError {
    match error {
        DecisionError::NotFound(id) => ConsoleError::NotFound(format!("no payout {id}")),
        DecisionError::OwnIntent(_) => ConsoleError::NotAllowed(error.to_string()),
        DecisionError::NotAwaiting(_) | DecisionError::AlreadyDecided(_) => ConsoleError::Refused(error.to_string()),
        DecisionError::Engine(e) => ConsoleError::Internal(e.into()),
        DecisionError::Database(e) => e.into(),
    }
}

async fn decide_posted(
    state: AppState,
    id: String,
    posted: Posted,
    decision: Decision,
) -> Result<Response, ConsoleError> {
    let action = decision.as_str();
    posted
        .session
        .require(&state, Permission::Approve, action, Some(&id))
        .await?;
    let intent_id = Uuid::parse_str(&id).map_err(|_| ConsoleError::NotFound(format!("no payout {id}")))?;
    let reason = posted.form.get("reason");
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(ConsoleError::Invalid(format!(
            "reason: at most {MAX_REASON_CHARS} characters"
        )));
    }
    if decision == Decision::Reject && reason.is_none() {
        return Err(ConsoleError::Invalid("reason: a rejection needs a reason".into()));
    }
    match decide_one(&state, &posted.session.actor, intent_id, decision, reason).await {
        Ok(decided) => {
            let text = outcome_text(&decided);
            audit(&state, &posted.session, action, Some(&id), "ok", Some(&text)).await?;
            Ok(Redirect::to(&back(&posted, "/console/approvals")).into_response())
        }
        Err(error) => {
            let shown = error.to_string();
            audit(&state, &posted.session, action, Some(&id), "refused", Some(&shown)).await?;
            Err(refusal(error))
        }
    }
}

/// `POST /console/intents/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    decide_posted(state, id, posted, Decision::Approve).await
}

/// `POST /console/intents/{id}/reject`: needs a reason.
pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    decide_posted(state, id, posted, Decision::Reject).await
}

#[derive(askama::Template)]
#[template(path = "console/results.html")]
pub struct ResultsPage {
    pub chrome: Chrome,
    pub title: String,
    pub results: Vec<(String, String)>,
    pub back: String,
}

/// `POST /console/approvals/bulk`: approves the selected payouts (`id`,
/// repeated) or every payout of a batch waiting for approval (`batch`).
/// Each payout is decided in its own transaction, so one that cannot be
/// approved (your own, already decided) does not hold up the others.
pub async fn bulk_approve(State(state): State<AppState>, posted: Posted) -> Result<Response, ConsoleError> {
    let batch = posted.form.get("batch");
    posted
        .session
        .require(&state, Permission::Approve, "bulk_approve", batch)
        .await?;
    let ids: Vec<Uuid> = match batch {
        Some(batch) => {
            let batch_id = Uuid::parse_str(batch).map_err(|_| ConsoleError::NotFound(format!("no batch {batch}")))?;
            crate::store::policy::batch_awaiting(&state.pool, batch_id).await?
        }
        None => posted
            .form
            .all("id")
            .into_iter()
            .map(|id| Uuid::parse_str(id).map_err(|_| ConsoleError::Invalid(format!("not a payout id: {id}"))))
            .collect::<Result<_, _>>()?,
    };
    if ids.is_empty() {
        return Err(ConsoleError::Invalid("select at least one payout".into()));
    }
    if ids.len() > MAX_BULK {
        return Err(ConsoleError::Invalid(format!("at most {MAX_BULK} payouts at once")));
    }
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let target = id.to_string();
        let (outcome, text) = match decide_one(&state, &posted.session.actor, id, Decision::Approve, None).await {
            Ok(decided) => ("ok", outcome_text(&decided)),
            Err(e @ (DecisionError::Engine(_) | DecisionError::Database(_))) => return Err(refusal(e)),
            Err(refused) => ("refused", refused.to_string()),
        };
        audit(&state, &posted.session, "approve", Some(&target), outcome, Some(&text)).await?;
        results.push((target, text));
    }
    render(&ResultsPage {
        chrome: Chrome::new(&posted.session, "approvals"),
        title: format!("Bulk approval: {} payout(s)", results.len()),
        results,
        back: "/console/approvals".to_owned(),
    })
}
