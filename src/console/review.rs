//! The needs-review queue: `unresolved` intents (the provider's word never
//! came) with the evidence gathered so far (status polls, the provider's
//! last answers, callbacks), late successes not yet settled (a provider's
//! success refused because its intent had already ended without the money
//! moving), the callbacks the reconciliation report lists, and open intents
//! that AML or velocity rules flagged. Operators resolve an unresolved
//! intent, settle a late success and review a callback here through
//! `resolve`, the same rules as the API.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use super::approvals::back;
use super::filters::{first, pairs};
use super::pages::{when, IntentLine};
use super::session::{audit, Chrome, Permission, Posted, Session};
use super::{render, ConsoleError, PAGE_ROWS};
use crate::api::AppState;
use crate::domain::mask_numbers_in;
use crate::resolve::{RecordError, Resolution, ResolveError};
use crate::store::console as store;

/// Provider answers shown per intent: the last few tell the story.
const LAST_ANSWERS: usize = 3;

struct UnresolvedLine {
    intent: IntentLine,
    polls: usize,
    last_poll: String,
    answers: Vec<String>,
    callbacks: usize,
}

struct LateLine {
    id: String,
    short_id: String,
    kind: String,
    state: String,
    amount: String,
    currency: String,
    provider: String,
    provider_ref: String,
    cause: String,
    reported_at: String,
}

struct CallbackLine {
    id: i64,
    provider: String,
    kind: String,
    outcome: String,
    /// The provider's ids for it (never the raw body), masked.
    ids: String,
    received_at: String,
}

struct FlaggedLine {
    intent: IntentLine,
    flags: Vec<String>,
}

#[derive(askama::Template)]
#[template(path = "console/review.html")]
struct ReviewPage {
    chrome: Chrome,
    unresolved: Vec<UnresolvedLine>,
    late: Vec<LateLine>,
    callbacks: Vec<CallbackLine>,
    flagged: Vec<FlaggedLine>,
    next_query: Option<String>,
}

/// `GET /console/review`.
pub async fn queue(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let pairs = pairs(query.as_deref());
    let after = first(&pairs, "after")
        .map(|a| Uuid::parse_str(a).map_err(|_| ConsoleError::Invalid("after: use the next-page link".into())))
        .transpose()?;
    let mut rows = store::queue(
        &state.pool,
        &["payout", "collection", "reversal"],
        &["unresolved"],
        after,
        PAGE_ROWS + 1,
    )
    .await?;
    let more = rows.len() as i64 > PAGE_ROWS;
    rows.truncate(PAGE_ROWS as usize);
    let mut unresolved = Vec::with_capacity(rows.len());
    for row in &rows {
        let events = crate::store::intents::events(&state.pool, row.id).await?;
        let polls: Vec<_> = events.iter().filter(|e| e.cause == "poll").collect();
        let answers: Vec<String> = events
            .iter()
            .filter(|e| e.cause == "poll" || e.cause == "callback")
            .rev()
            .take(LAST_ANSWERS)
            .map(|e| {
                let reason = e.reason.as_deref().map(mask_numbers_in).unwrap_or_default();
                format!("{} {} ({}) {}", when(e.at), e.event, e.cause, reason)
            })
            .collect();
        let callbacks = store::callbacks(&state.pool, row.id, 100).await?.len();
        unresolved.push(UnresolvedLine {
            polls: polls.len(),
            last_poll: polls.last().map(|e| when(e.at)).unwrap_or_default(),
            answers,
            callbacks,
            intent: IntentLine::from_row(row),
        });
    }
    let late = crate::store::late_successes::list(&state.pool, None, false, PAGE_ROWS)
        .await?
        .into_iter()
        .map(|l| {
            let id = l.id.to_string();
            LateLine {
                short_id: id[id.len() - 12..].to_owned(),
                id,
                amount: crate::api::views::money_text(l.amount, &l.currency),
                kind: l.kind,
                state: l.state,
                currency: l.currency,
                provider: l.provider,
                provider_ref: l.provider_ref.unwrap_or_default(),
                cause: l.cause,
                reported_at: when(l.at),
            }
        })
        .collect();
    let callbacks =
        crate::store::reports::unmatched_callbacks(&state.pool, PAGE_ROWS, crate::providers::mpesa::c2b::MAX_ASKS)
            .await?
            .into_iter()
            .map(|c| CallbackLine {
                id: c.id,
                provider: c.provider,
                kind: c.kind,
                outcome: c.outcome,
                ids: c.dedupe_key.as_deref().map(mask_numbers_in).unwrap_or_default(),
                received_at: when(c.received_at),
            })
            .collect();
    let flagged_rows = store::flagged_open(&state.pool, None, PAGE_ROWS).await?;
    let ids: Vec<Uuid> = flagged_rows.iter().map(|r| r.id).collect();
    let flags = store::flags_of(&state.pool, &ids).await?;
    let flagged = flagged_rows
        .iter()
        .map(|row| FlaggedLine {
            intent: IntentLine::from_row(row),
            flags: flags
                .iter()
                .filter(|f| f.0 == row.id)
                .map(|(_, rule, action, detail)| format!("{rule} ({action}): {detail}"))
                .collect(),
        })
        .collect();
    render(&ReviewPage {
        chrome: Chrome::new(&session, "review"),
        unresolved,
        late,
        callbacks,
        flagged,
        next_query: match (more, rows.last()) {
            (true, Some(last)) => Some(format!("after={}", last.id)),
            _ => None,
        },
    })
}

/// `POST /console/intents/{id}/resolve`: `outcome` (succeeded or failed),
/// `evidence`, and the provider's `receipt` when the money moved.
pub async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    posted
        .session
        .require(&state, Permission::Operate, "resolve", Some(&id))
        .await?;
    let intent_id = Uuid::parse_str(&id).map_err(|_| ConsoleError::NotFound(format!("no intent {id}")))?;
    let resolution = Resolution {
        outcome: posted.form.get("outcome").unwrap_or_default(),
        evidence: posted.form.get("evidence").unwrap_or_default(),
        receipt: posted.form.get("receipt"),
    };
    let result = crate::resolve::resolve(
        &state.engine,
        &state.pool,
        None,
        None,
        intent_id,
        &posted.session.actor,
        &resolution,
    )
    .await;
    match result {
        Ok(()) => {
            let detail = format!("{}: {}", resolution.outcome, resolution.evidence.trim());
            audit(&state, &posted.session, "resolve", Some(&id), "ok", Some(&detail)).await?;
            Ok(Redirect::to(&back(&posted, "/console/review")).into_response())
        }
        Err(ResolveError::Invalid(problems)) => {
            let text: Vec<String> = problems.iter().map(|(f, _, d)| format!("{f}: {d}")).collect();
            Err(ConsoleError::Invalid(text.join("; ")))
        }
        Err(ResolveError::NotFound) => Err(ConsoleError::NotFound(format!("no intent {id}"))),
        Err(ResolveError::InvalidState(message)) => {
            audit(&state, &posted.session, "resolve", Some(&id), "refused", Some(&message)).await?;
            Err(ConsoleError::Refused(message))
        }
        Err(ResolveError::Engine(e)) => Err(ConsoleError::Internal(e.into())),
        Err(ResolveError::Database(e)) => Err(e.into()),
    }
}

/// `POST /console/intents/{id}/settle-late-success`: `evidence` of how the
/// money was recovered or the books corrected.
pub async fn settle_late_success(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    posted
        .session
        .require(&state, Permission::Operate, "settle_late_success", Some(&id))
        .await?;
    let not_found = || ConsoleError::NotFound(format!("no late success for intent {id}"));
    let intent_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let evidence = posted.form.get("evidence").unwrap_or_default();
    let Some(settlement) = crate::resolve::Settlement::parse(posted.form.get("outcome")) else {
        return Err(ConsoleError::Invalid("outcome: recovered or booked".into()));
    };
    let now = state.engine.jobs().clock().sql_now();
    let settled = crate::resolve::settle_late_success(
        &state.engine,
        state.policy.default_tier(),
        None,
        intent_id,
        &posted.session.actor,
        evidence,
        settlement,
        now,
    )
    .await
    .map(|settled| {
        Some(format!(
            "{}: {}",
            settlement.as_str(),
            settled.evidence.unwrap_or_default()
        ))
    });
    recorded(
        &state,
        &posted,
        "settle_late_success",
        &id,
        settled,
        "/console/review#late",
        not_found,
    )
    .await
}

/// `POST /console/callbacks/{id}/review`: `evidence` of what was found and
/// done about a callback the reconciliation report lists.
pub async fn review_callback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    posted
        .session
        .require(&state, Permission::Operate, "review_callback", Some(&id))
        .await?;
    let not_found = || ConsoleError::NotFound(format!("no callback {id}"));
    let inbox_id = id.parse::<i64>().map_err(|_| not_found())?;
    let evidence = posted.form.get("evidence").unwrap_or_default();
    let now = state.engine.jobs().clock().sql_now();
    let reviewed = crate::resolve::review_callback(&state.pool, inbox_id, &posted.session.actor, evidence, now)
        .await
        .map(|reviewed| reviewed.review_note);
    recorded(
        &state,
        &posted,
        "review_callback",
        &id,
        reviewed,
        "/console/review#callbacks",
        not_found,
    )
    .await
}

/// Answers a record with evidence (`action` on `id`): audited with the
/// evidence kept and back to `back_to`, or refused (audited, with why).
async fn recorded(
    state: &AppState,
    posted: &Posted,
    action: &str,
    id: &str,
    result: Result<Option<String>, RecordError>,
    back_to: &str,
    not_found: impl FnOnce() -> ConsoleError,
) -> Result<Response, ConsoleError> {
    match result {
        Ok(evidence) => {
            audit(state, &posted.session, action, Some(id), "ok", evidence.as_deref()).await?;
            Ok(Redirect::to(&back(posted, back_to)).into_response())
        }
        Err(RecordError::Invalid) => Err(ConsoleError::Invalid("evidence: 1 to 500 characters".into())),
        Err(RecordError::NotFound) => Err(not_found()),
        Err(RecordError::Refused(message)) => {
            audit(state, &posted.session, action, Some(id), "refused", Some(&message)).await?;
            Err(ConsoleError::Refused(message))
        }
        Err(RecordError::Database(e)) => Err(e.into()),
        Err(RecordError::Ledger(e)) => Err(ConsoleError::Internal(e.into())),
    }
}
