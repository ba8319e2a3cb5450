//! The workflow actions every [`Adapter`] serves: `submit` (a payout),
//! `prompt` (a collection) and `query_status`. M-Pesa's Daraja, whose STK
//! push names its requests itself and answers status queries by callback,
//! keeps actions of its own (`providers::mpesa::actions`).
//!
//! The money rules:
//! - the request id is ours, committed to the intent *before* the first
//!   call, and re-used by every re-send: the provider's duplicate check is
//!   what makes a re-send after an ambiguous answer safe;
//! - only the provider's word moves an intent to `completed` or `failed`; a
//!   timeout, a 5xx or an answer Tuma does not know never fails one;
//! - no transaction is held across a provider call;
//! - a provider failing fast trips its circuit ([`super::circuit`]): the
//!   job is snoozed and the provider's queue paused, instead of burning
//!   retries.

use std::sync::Arc;

use super::adapter::{Adapter, CallError, Direction, Reply, Request};
use super::circuit::{Circuits, Decision};
use super::Outcome;
use crate::domain::{Country, Msisdn};
use crate::runner::JobError;
use crate::store::intents::{self, IntentRow, Start};
use crate::workflow::engine::{Applied, Cause, Event};
use crate::workflow::workers::ActionContext;

/// What an action needs besides its context.
#[derive(Clone)]
pub struct Provider {
    pub adapter: Arc<dyn Adapter>,
    pub circuits: Circuits,
}

/// The events one reply leads to, in order, with the note kept on them.
fn events_for(direction: Direction, reply: &Reply) -> Vec<&'static str> {
    match (direction, &reply.outcome) {
        (Direction::Payout, Outcome::Succeeded) => vec!["provider_succeeded"],
        (Direction::Payout, Outcome::Failed { .. }) => vec!["provider_failed"],
        (Direction::Collection, Outcome::Succeeded) => vec!["prompted", "provider_succeeded"],
        (Direction::Collection, Outcome::Failed { .. }) => vec!["prompt_failed"],
        (Direction::Collection, Outcome::Pending | Outcome::Unknown { .. }) => vec!["prompted"],
        (Direction::Payout, Outcome::Pending | Outcome::Unknown { .. }) => vec![],
    }
}

fn note_of(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Failed { code, reason } => Some(format!("{code}: {reason}")),
        Outcome::Unknown { code, detail } => Some(format!("{code}: {detail}")),
        Outcome::Succeeded | Outcome::Pending => None,
    }
}

/// Applies `events` (with the receipt, if the money moved) and completes the
/// job, in one transaction.
async fn apply(
    ctx: &ActionContext,
    provider: &str,
    events: &[&str],
    cause: Cause,
    reply: &Reply,
) -> Result<(), JobError> {
    let mut tx = ctx.job.pool().begin().await?;
    if let (Outcome::Succeeded, Some(receipt)) = (&reply.outcome, &reply.receipt) {
        intents::set_receipt(&mut tx, ctx.intent.id, receipt).await?;
    }
    let note = note_of(&reply.outcome);
    for name in events {
        let mut event = Event::new(name, cause, provider);
        event.provider_ref = reply.receipt.as_deref();
        event.note = note.as_deref();
        let applied = ctx
            .engine
            .apply(&mut tx, ctx.intent.id, &event)
            .await
            .map_err(JobError::retryable)?;
        not_lost(&applied)?;
    }
    ctx.job.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A provider's answer is never dropped because the intent moved while it
/// was applied: the job runs again and the answer is judged against the
/// state the intent is in then. `Engine::apply` reads the intent under its
/// lock, so this guards against a change there, not a race that happens.
pub fn not_lost(applied: &Applied) -> Result<(), JobError> {
    match applied {
        Applied::Lost { expected } => Err(JobError::retryable(format!(
            "the intent moved on from {expected} while the provider's answer was applied"
        ))),
        Applied::Moved { .. } | Applied::Rejected { .. } => Ok(()),
    }
}

fn direction_of(intent: &IntentRow) -> Result<Direction, JobError> {
    Direction::of_kind(&intent.kind)
        .ok_or_else(|| JobError::fatal(format!("{} intents are not sent to a provider", intent.kind)))
}

fn country_of(intent: &IntentRow) -> Result<Country, JobError> {
    Msisdn::parse(&intent.msisdn, Country::KE)
        .map(|m| m.country())
        .map_err(|_| JobError::fatal("the intent's number does not parse"))
}

/// Snoozes the job while `provider`'s breaker is open. Daraja's actions
/// use it too.
pub fn gate(ctx: &ActionContext, circuits: &Circuits, provider: &str) -> Result<(), JobError> {
    let now = ctx.job.clock().local_now();
    match circuits.open_for(provider, now) {
        Some(remaining) => Err(JobError::Snooze(remaining.max(std::time::Duration::from_secs(1)))),
        None => Ok(()),
    }
}

/// Records an answer of `provider` on its breaker (`trouble`: it failed
/// fast); a trip pauses the provider's queue, and trouble while open
/// snoozes the job. Daraja's actions use it too.
pub async fn record_answer(
    ctx: &ActionContext,
    circuits: &Circuits,
    provider: &'static str,
    trouble: bool,
) -> Result<(), JobError> {
    match circuits.record(provider, trouble, ctx.job.clock().local_now()) {
        Decision::Closed => Ok(()),
        Decision::Trip { pause, .. } => {
            ctx.engine.jobs().pause_queue_for(provider, pause).await?;
            Err(JobError::Snooze(pause))
        }
        Decision::Open { remaining } => Err(JobError::Snooze(remaining.max(std::time::Duration::from_secs(1)))),
    }
}

/// Times a whole adapter call (token refresh included) and keeps it in the
/// intent's record of provider calls.
async fn note_call(
    ctx: &ActionContext,
    provider: &'static str,
    call: &'static str,
    request_id: &str,
    answer: &Result<Reply, CallError>,
    latency: std::time::Duration,
) {
    let summary = crate::store::provider_calls::summarize(answer);
    note(ctx, provider, call, Some(request_id), summary, latency).await;
}

/// Keeps one call (`summary`: its outcome and the provider's code) in the
/// intent's record of provider calls, with the job run that made it.
/// Daraja's actions use it too.
pub async fn note(
    ctx: &ActionContext,
    provider: &'static str,
    call: &'static str,
    request_id: Option<&str>,
    summary: (&'static str, Option<String>),
    latency: std::time::Duration,
) {
    ctx.grouped
        .note(call_note(ctx, provider, call, request_id, summary, latency))
        .await;
}

/// Commits, just before a send, that this run is sending `request_id`
/// ([`refusal_is_final`] reads it). Daraja's B2C uses it too.
pub async fn note_sending(ctx: &ActionContext, provider: &'static str, request_id: &str) -> Result<(), JobError> {
    let sending = call_note(
        ctx,
        provider,
        "send",
        Some(request_id),
        ("sending", None),
        std::time::Duration::ZERO,
    );
    ctx.grouped.note_sending(sending).await
}

/// The note of one call made by this run of the job, for this intent.
fn call_note(
    ctx: &ActionContext,
    provider: &'static str,
    call: &'static str,
    request_id: Option<&str>,
    (outcome, code): (&'static str, Option<String>),
    latency: std::time::Duration,
) -> crate::store::grouped::CallNote {
    crate::store::grouped::CallNote {
        intent_id: ctx.intent.id,
        job_id: ctx.job.id.get(),
        run: ctx.job.run(),
        provider,
        call,
        request_id: request_id.map(str::to_owned),
        outcome,
        code,
        latency,
    }
}

/// Whether the provider's refusal of this run's send is its word on the
/// intent: only when no earlier run may have reached it. Otherwise the
/// refusal is of a re-send (a gateway page, an expired credential, a rate
/// limit) and says nothing about the request that went before, which may
/// have moved the money.
pub async fn refusal_is_final(ctx: &ActionContext, provider: &str) -> Result<bool, JobError> {
    let sent = crate::store::provider_calls::may_have_sent_before(
        ctx.job.pool(),
        ctx.intent.id,
        provider,
        ctx.job.id.get(),
        ctx.job.run(),
    )
    .await?;
    Ok(!sent)
}

/// Counts an adapter's error and records the answer on the breaker.
async fn record(ctx: &ActionContext, provider: &Provider, error: Option<&CallError>) -> Result<(), JobError> {
    let name = provider.adapter.name();
    if let Some(error) = error {
        let label = match error {
            CallError::Rejected { .. } => "rejected",
            CallError::Busy(_) => "busy",
            CallError::Ambiguous(_) => "ambiguous",
            CallError::Duplicate => "duplicate",
            CallError::Config(_) => "config",
        };
        metrics::counter!("tuma_provider_errors_total", "provider" => name, "error" => label).increment(1);
    }
    let trouble = error.is_some_and(CallError::is_provider_trouble);
    record_answer(ctx, &provider.circuits, name, trouble).await
}

/// Commits our request id for the intent (the one already there, if its
/// creation or an earlier attempt assigned it) before anything is sent.
async fn request_for(ctx: &ActionContext, adapter: &dyn Adapter, direction: Direction) -> Result<Request, JobError> {
    let intent = &ctx.intent;
    let token = intent
        .callback_token
        .clone()
        .ok_or_else(|| JobError::fatal("intent has no callback token"))?;
    let country = country_of(intent)?;
    let request_id = ctx
        .grouped
        .committed_request_id(intent, || super::new_request_id(adapter.name()))
        .await?;
    Ok(Request {
        direction,
        request_id,
        msisdn: intent.msisdn.clone(),
        country: country.code().to_owned(),
        currency: intent.currency.clone(),
        amount: intent.amount,
        reference: intent.reference.clone(),
        callback_token: token,
    })
}

/// Marks that this action is about to send its intent's request (unless
/// an earlier attempt did), under the intent's lock and only while it is
/// still in the state the action is for: [`Start::Moved`] when it was
/// cancelled first. From the mark on, a cancel is refused
/// ([`intents::start_request`]). Collections' prompts take it (Daraja's
/// too, whose requests cannot be re-sent); a payout's submission needs
/// none: it is sent from `processing`, which nothing cancels.
pub async fn start_sending(ctx: &ActionContext) -> Result<Start, JobError> {
    let mut conn = ctx.job.pool().acquire().await?;
    Ok(intents::start_request(&mut conn, ctx.intent.id, &ctx.intent.state).await?)
}

/// Takes [`start_sending`]'s mark back: the provider refused the request
/// before processing it, so the job's next attempt may send it, and until
/// then the intent may be cancelled.
pub async fn unstart_sending(ctx: &ActionContext) -> Result<(), JobError> {
    let mut conn = ctx.job.pool().acquire().await?;
    Ok(intents::unstart_request(&mut conn, ctx.intent.id).await?)
}

/// `submit` (payouts) and `prompt` (collections): send the request.
pub async fn send(ctx: ActionContext, provider: Provider) -> Result<(), JobError> {
    gate(&ctx, &provider.circuits, provider.adapter.name())?;
    let direction = direction_of(&ctx.intent)?;
    if direction == Direction::Collection && start_sending(&ctx).await? == Start::Moved {
        tracing::info!(intent_id = %ctx.intent.id, "cancelled before its prompt was sent; not prompting");
        return Ok(());
    }
    let request = request_for(&ctx, provider.adapter.as_ref(), direction).await?;
    let name = provider.adapter.name();
    let request_id = request.request_id.clone();
    note_sending(&ctx, name, &request_id).await?;
    let started = std::time::Instant::now();
    let answer = provider.adapter.send(request).await;
    note_call(&ctx, name, "send", &request_id, &answer, started.elapsed()).await;
    if direction == Direction::Collection && matches!(answer, Err(CallError::Busy(_) | CallError::Config(_))) {
        // Refused before it was processed: no prompt reached the payer.
        unstart_sending(&ctx).await?;
    }
    record(&ctx, &provider, answer.as_ref().err()).await?;
    let intent_id = ctx.intent.id;
    match answer {
        Ok(reply) => settle(&ctx, name, direction, reply).await,
        Err(CallError::Rejected { code, message }) => {
            // The code only: the provider's message may quote the payee.
            tracing::warn!(%intent_id, provider = name, code, "the provider refused the request");
            let reply = Reply::new(Outcome::Failed { code, reason: message }, None);
            settle(&ctx, name, direction, reply).await
        }
        // Accepted earlier under this id: the status polls say how it ended.
        Err(CallError::Duplicate) => match direction {
            Direction::Payout => Ok(()),
            Direction::Collection => apply(&ctx, name, &["prompted"], Cause::Api, &Reply::pending()).await,
        },
        Err(error @ CallError::Busy(_)) => Err(JobError::retryable(error)),
        Err(error @ CallError::Ambiguous(_)) => match direction {
            // Maybe paid: the same id again is safe (refused as a duplicate
            // if the first arrived, and then the polls find out; they wait
            // while this job retries, so a long outage spends no polls).
            Direction::Payout => {
                tracing::warn!(%intent_id, provider = name, %error, "ambiguous answer; re-sending under the same id");
                Err(JobError::retryable(error))
            }
            // The prompt may be on the payer's phone: never prompt again;
            // the callback, the polls or the expiry decide.
            Direction::Collection => apply(&ctx, name, &["prompted"], Cause::Api, &Reply::pending()).await,
        },
        Err(error @ CallError::Config(_)) => Err(JobError::fatal(error)),
    }
}

/// Applies what the answer to this run's send leads to. A failure (a final
/// answer or a refusal) is the provider's word on the intent only when no
/// earlier run may have reached it ([`refusal_is_final`]); otherwise it is
/// only this re-send's, and the intent waits as on an unknown answer: a
/// payout for its callback or the status polls, a collection as prompted.
async fn settle(ctx: &ActionContext, name: &'static str, direction: Direction, reply: Reply) -> Result<(), JobError> {
    let intent_id = ctx.intent.id;
    let reply = match reply.outcome {
        Outcome::Failed { code, reason } if !refusal_is_final(ctx, name).await? => {
            tracing::warn!(%intent_id, provider = name, code,
                "a re-send failed, but an earlier send may have reached the provider; \
                 it is not the intent's outcome, the status polls decide");
            Reply::new(
                Outcome::Unknown {
                    code,
                    detail: format!("a re-send's answer, not the request's: {reason}"),
                },
                None,
            )
        }
        outcome => {
            if let Outcome::Unknown { code, .. } = &outcome {
                tracing::warn!(%intent_id, provider = name, code, "unknown answer; the status polls decide");
            }
            Reply { outcome, ..reply }
        }
    };
    let events = events_for(direction, &reply);
    if events.is_empty() {
        return Ok(());
    }
    apply(ctx, name, &events, Cause::Api, &reply).await
}

/// `query_status`: ask the provider what became of the request.
pub async fn query_status(ctx: ActionContext, provider: Provider) -> Result<(), JobError> {
    let name = provider.adapter.name();
    metrics::counter!("tuma_provider_polls_total", "provider" => name, "kind" => ctx.intent.kind.clone()).increment(1);
    gate(&ctx, &provider.circuits, provider.adapter.name())?;
    let direction = direction_of(&ctx.intent)?;
    let Some(request_id) = ctx.intent.provider_ref.clone() else {
        tracing::info!(intent_id = %ctx.intent.id, "no request id to query yet");
        return Ok(());
    };
    let country = country_of(&ctx.intent)?;
    let started = std::time::Instant::now();
    let answer = provider
        .adapter
        .status(
            direction,
            request_id.clone(),
            country.code().to_owned(),
            ctx.intent.currency.clone(),
        )
        .await;
    // A success naming another amount or currency than the intent's is not
    // applied: the status polls go on, and when they run out the intent is
    // unresolved for a person, its calls noted with the code.
    let answer = answer.map(|reply| match &reply.outcome {
        Outcome::Succeeded => {
            match super::callbacks::amount_contradiction(reply.amount, reply.currency.as_deref(), &ctx.intent) {
                Some(detail) => {
                    metrics::counter!("tuma_provider_amount_mismatches_total", "provider" => name, "source" => "poll")
                        .increment(1);
                    tracing::warn!(intent_id = %ctx.intent.id, provider = name, %detail,
                        "the provider's status answer names another amount; not applied");
                    Reply::new(
                        Outcome::Unknown {
                            code: "amount_mismatch".into(),
                            detail,
                        },
                        None,
                    )
                }
                None => reply,
            }
        }
        _ => reply,
    });
    note_call(&ctx, name, "status", &request_id, &answer, started.elapsed()).await;
    record(&ctx, &provider, answer.as_ref().err()).await?;
    match answer {
        Ok(reply) => {
            let event = match &reply.outcome {
                Outcome::Succeeded => "provider_succeeded",
                Outcome::Failed { .. } => "provider_failed",
                Outcome::Pending | Outcome::Unknown { .. } => return Ok(()),
            };
            apply(&ctx, name, &[event], Cause::Poll, &reply).await
        }
        Err(error @ CallError::Config(_)) => Err(JobError::fatal(error)),
        Err(error) => Err(JobError::retryable(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(outcome: Outcome) -> Reply {
        Reply::new(outcome, None)
    }

    #[test]
    fn a_synchronous_final_answer_settles_the_intent_and_anything_else_waits() {
        let failed = Outcome::Failed {
            code: "X".into(),
            reason: "no".into(),
        };
        let unknown = Outcome::Unknown {
            code: "?".into(),
            detail: "?".into(),
        };
        assert_eq!(
            events_for(Direction::Payout, &reply(Outcome::Succeeded)),
            ["provider_succeeded"]
        );
        assert_eq!(
            events_for(Direction::Payout, &reply(failed.clone())),
            ["provider_failed"]
        );
        assert!(events_for(Direction::Payout, &reply(Outcome::Pending)).is_empty());
        assert!(events_for(Direction::Payout, &reply(unknown.clone())).is_empty());
        assert_eq!(
            events_for(Direction::Collection, &reply(Outcome::Succeeded)),
            ["prompted", "provider_succeeded"]
        );
        assert_eq!(events_for(Direction::Collection, &reply(failed)), ["prompt_failed"]);
        assert_eq!(events_for(Direction::Collection, &reply(unknown)), ["prompted"]);
    }
}
