//! The workflow actions M-Pesa performs: `submit` (B2C), `prompt` (STK
//! push) and `query_status` (transaction status, STK query).
//!
//! The money rules live here: the B2C request id is committed before the
//! call; an ambiguous answer never fails a payout (it is re-sent under the
//! same id, which Daraja refuses as a duplicate if the first one arrived,
//! while the status polls find out what happened); only Daraja's word moves
//! an intent to `completed` or `failed`.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rust_decimal::prelude::ToPrimitive;

use super::{MpesaClient, MpesaError};
use crate::providers::actions::{gate, note_sending, record_answer, refusal_is_final, start_sending, unstart_sending};
use crate::providers::circuit::Circuits;
use crate::providers::Outcome;
use crate::runner::JobError;
use crate::store::intents::{self, IntentRow, Start};
use crate::workflow::engine::{Cause, Event};
use crate::workflow::workers::ActionContext;

/// This engine's callback URL of `kind` for `intent`.
fn callback_url(client: &MpesaClient, kind: &str, intent: &IntentRow) -> Result<String, JobError> {
    let token = intent
        .callback_token
        .as_deref()
        .ok_or_else(|| JobError::fatal("intent has no callback token"))?;
    Ok(super::callback_url(client.config(), kind, token))
}

fn whole_kes(intent: &IntentRow) -> Result<u64, JobError> {
    if intent.currency != "KES" || !intent.amount.fract().is_zero() {
        return Err(JobError::fatal(
            "M-Pesa carries whole KES only; the intent should have been refused",
        ));
    }
    intent
        .amount
        .to_u64()
        .ok_or_else(|| JobError::fatal("amount out of range"))
}

/// Applies `event` and completes the job in one transaction.
async fn apply(ctx: &ActionContext, event: &str, cause: Cause, provider_ref: Option<&str>) -> Result<(), JobError> {
    let mut tx = ctx.job.pool().begin().await?;
    if let Some(reference) = provider_ref {
        intents::assign_provider_ref(&mut tx, ctx.intent.id, reference).await?;
    }
    let mut event = Event::new(event, cause, "mpesa");
    event.provider_ref = provider_ref;
    let applied = ctx
        .engine
        .apply(&mut tx, ctx.intent.id, &event)
        .await
        .map_err(JobError::retryable)?;
    crate::providers::actions::not_lost(&applied)?;
    ctx.job.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// [`apply`] after Daraja may have acted on a request it cannot recognise
/// if sent again (an STK push, a reversal: Daraja names them itself). A
/// failed job would be retried and send it a second time, so a database
/// that is briefly unreachable (a cut connection, a restart) is waited out
/// here, for about ten seconds, before the job gives up.
async fn apply_once_sent(ctx: &ActionContext, event: &str, provider_ref: Option<&str>) -> Result<(), JobError> {
    (|| apply(ctx, event, Cause::Api, provider_ref))
        .retry(patience())
        .notify(|error, wait| {
            tracing::warn!(intent_id = %ctx.intent.id, event, %error, retry_in_ms = wait.as_millis() as u64,
                "could not record a request M-Pesa may have acted on; retrying");
        })
        .await
}

/// How long a write that must not be lost rides out an unreachable
/// database: about ten seconds over ten tries.
fn patience() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(10)
}

/// Commits the CheckoutRequestID of a prompt Daraja accepted, on its own
/// and at once, riding out a briefly unreachable database like
/// [`apply_once_sent`]. Best effort: should it still fail, the attempt's
/// own record of the prompt carries the id too.
async fn keep_checkout(pool: &sqlx::PgPool, intent_id: uuid::Uuid, checkout: &str) {
    let kept = (|| async {
        let mut conn = pool.acquire().await?;
        intents::assign_provider_ref(&mut conn, intent_id, checkout).await
    })
    .retry(patience())
    .await;
    if let Err(error) = kept {
        tracing::warn!(%intent_id, %error, "could not keep the CheckoutRequestID of an accepted prompt");
    }
}

/// Withdraws [`start_sending`]'s mark when the request never reached
/// Daraja or was refused before processing (overloaded, or no token: our
/// credentials refused), so that a later attempt may send it and, until
/// then, the intent may still be cancelled. (Should this write fail, that
/// attempt takes the request as sent: it waits for Daraja's word or its
/// expiry, never sent twice.)
async fn unstart_if_refused<T>(ctx: &ActionContext, answer: &Result<T, MpesaError>) -> Result<(), JobError> {
    if busy(answer) || matches!(answer, Err(MpesaError::Config(_))) {
        unstart_sending(ctx).await?;
    }
    Ok(())
}

/// Whether Daraja failed fast (overloaded, 5xx, timed out): what trips
/// its circuit breaker.
fn trouble<T>(answer: &Result<T, MpesaError>) -> bool {
    matches!(answer, Err(MpesaError::Busy(_) | MpesaError::Ambiguous(_)))
}

/// Whether Daraja refused before processing (overload, spike arrest).
fn busy<T>(answer: &Result<T, MpesaError>) -> bool {
    matches!(answer, Err(MpesaError::Busy(_)))
}

/// B2C: pay the recipient.
pub async fn submit(ctx: ActionContext, client: Arc<MpesaClient>, circuits: Circuits) -> Result<(), JobError> {
    gate(&ctx, &circuits, "mpesa")?;
    let intent = &ctx.intent;
    let amount = whole_kes(intent)?;
    // Rule 1: the request id exists, committed, before the call (since the
    // payout's creation, or assigned now).
    let originator = ctx
        .grouped
        .committed_request_id(intent, || crate::providers::new_request_id("mpesa"))
        .await?;
    let result_url = callback_url(&client, "b2c-result", intent)?;
    let timeout_url = callback_url(&client, "b2c-timeout", intent)?;
    note_sending(&ctx, "mpesa", &originator).await?;
    let started = std::time::Instant::now();
    let answer = client
        .b2c(
            &originator,
            &intent.msisdn,
            amount,
            &intent.reference,
            &result_url,
            &timeout_url,
        )
        .await;
    note(
        &ctx,
        "send",
        Some(&originator),
        summary(&answer, |_| ("pending", None)),
        started,
    )
    .await;
    record_answer(&ctx, &circuits, "mpesa", trouble(&answer)).await?;
    match answer {
        Ok(_) | Err(MpesaError::Duplicate) => Ok(()),
        Err(MpesaError::Rejected { code, .. }) => {
            if !refusal_is_final(&ctx, "mpesa").await? {
                // A refused re-send says nothing of the B2C before it.
                tracing::warn!(intent_id = %intent.id, code,
                    "M-Pesa refused a re-sent payout, but an earlier one may have reached it; the status polls decide");
                return Ok(());
            }
            tracing::warn!(intent_id = %intent.id, code, "M-Pesa refused the payout request");
            apply(&ctx, "provider_failed", Cause::Api, None).await
        }
        Err(error @ MpesaError::Busy(_)) => Err(JobError::retryable(error)),
        // Maybe sent: the same id again is safe (a duplicate if it arrived).
        Err(error @ MpesaError::Ambiguous(_)) => {
            tracing::warn!(intent_id = %intent.id, %error, "ambiguous B2C answer; re-sending under the same id");
            Err(JobError::retryable(error))
        }
        Err(error @ MpesaError::Config(_)) => Err(JobError::fatal(error)),
    }
}

/// `(outcome, code)` of a Daraja answer for the intent's record of
/// provider calls; `ok` reads an accepted one.
fn summary<T>(
    answer: &Result<T, MpesaError>,
    ok: impl FnOnce(&T) -> (&'static str, Option<String>),
) -> (&'static str, Option<String>) {
    match answer {
        Ok(value) => ok(value),
        Err(MpesaError::Rejected { code, .. }) => ("rejected", Some(code.clone())),
        Err(MpesaError::Busy(_)) => ("busy", None),
        Err(MpesaError::Ambiguous(_)) => ("ambiguous", None),
        Err(MpesaError::Duplicate) => ("duplicate", None),
        Err(MpesaError::Config(_)) => ("config", None),
    }
}

async fn note(
    ctx: &ActionContext,
    call: &'static str,
    request_id: Option<&str>,
    summary: (&'static str, Option<String>),
    started: std::time::Instant,
) {
    crate::providers::actions::note(ctx, "mpesa", call, request_id, summary, started.elapsed()).await;
}

/// STK push: prompt the payer.
pub async fn prompt(ctx: ActionContext, client: Arc<MpesaClient>, circuits: Circuits) -> Result<(), JobError> {
    gate(&ctx, &circuits, "mpesa")?;
    let intent = &ctx.intent;
    let amount = whole_kes(intent)?;
    let url = callback_url(&client, "stk", intent)?;
    // Daraja names these requests itself, so one cannot be re-sent under
    // the same id: `Again` (an earlier attempt started it, and may have died
    // after Daraja accepted it) means do not send it again, and `Moved` (the
    // intent left the action's state: cancelled) means send nothing.
    let start = start_sending(&ctx).await?;
    if start == Start::Moved {
        tracing::info!(intent_id = %intent.id, "cancelled before its prompt was sent; not prompting");
        return Ok(());
    }
    if start == Start::Again {
        // If the earlier attempt lived to keep or note Daraja's answer, that
        // names the prompt, and the status polls can ask about it.
        let checkout = match &intent.provider_ref {
            Some(known) => Some(known.clone()),
            None => crate::store::provider_calls::sent_request(ctx.job.pool(), intent.id, "mpesa").await?,
        };
        tracing::warn!(intent_id = %intent.id, named = checkout.is_some(),
            "an earlier attempt may have prompted the payer; not prompting again");
        return apply_once_sent(&ctx, "prompted", checkout.as_deref()).await;
    }
    let started = std::time::Instant::now();
    // The push, and keeping the CheckoutRequestID Daraja answers with, run
    // on a task of their own: an attempt stopped mid-call (its timeout, a
    // lost lease, a node fencing itself off a cut database) must not drop
    // the one answer that names the prompt. The rerun will not push again.
    let push = {
        let (client, pool, intent_id) = (Arc::clone(&client), ctx.job.pool().clone(), intent.id);
        let (msisdn, reference) = (intent.msisdn.clone(), intent.reference.clone());
        tokio::spawn(async move {
            let answer = client.stk_push(&msisdn, amount, &reference, &url).await;
            if let Ok(checkout) = &answer {
                keep_checkout(&pool, intent_id, checkout).await;
            }
            answer
        })
    };
    let answer = push
        .await
        .map_err(|e| JobError::retryable(format!("the STK push task failed: {e}")))?;
    let checkout = answer.as_ref().ok().map(String::as_str);
    note(&ctx, "send", checkout, summary(&answer, |_| ("pending", None)), started).await;
    unstart_if_refused(&ctx, &answer).await?;
    // Only a refusal before processing may delay this job: an ambiguous
    // prompt must be recorded as sent now, never pushed again.
    record_answer(&ctx, &circuits, "mpesa", busy(&answer)).await?;
    match answer {
        Ok(checkout_id) => apply_once_sent(&ctx, "prompted", Some(&checkout_id)).await,
        Err(MpesaError::Rejected { code, .. }) => {
            tracing::warn!(intent_id = %intent.id, code, "M-Pesa refused the prompt");
            apply(&ctx, "prompt_failed", Cause::Api, None).await
        }
        Err(error @ MpesaError::Busy(_)) => Err(JobError::retryable(error)),
        // The prompt may be on the payer's phone: do not prompt again. Its
        // callback (which names the intent by token) or its expiry decides.
        Err(MpesaError::Ambiguous(_)) | Err(MpesaError::Duplicate) => apply_once_sent(&ctx, "prompted", None).await,
        Err(error @ MpesaError::Config(_)) => Err(JobError::fatal(error)),
    }
}

/// The shortcode a reversal takes the money back on: the original
/// payment's (a payout's B2C shortcode, a collection's or C2B payment's
/// PayBill), as its intent was created with.
fn reversal_party(intent: &IntentRow, client: &MpesaClient) -> String {
    intent.metadata["receiver_party"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| client.config().c2b_shortcode.clone())
}

/// Ask M-Pesa what became of the request.
pub async fn query_status(ctx: ActionContext, client: Arc<MpesaClient>, circuits: Circuits) -> Result<(), JobError> {
    gate(&ctx, &circuits, "mpesa")?;
    let intent = &ctx.intent;
    metrics::counter!("tuma_provider_polls_total", "provider" => "mpesa", "kind" => intent.kind.clone()).increment(1);
    let Some(reference) = intent.provider_ref.clone() else {
        tracing::info!(intent_id = %intent.id, "no provider reference to query yet");
        return Ok(());
    };
    if intent.kind == "collection" {
        let started = std::time::Instant::now();
        let answer = client.stk_query(&reference).await;
        let outcome = summary(&answer, |outcome| match outcome {
            Outcome::Succeeded => ("succeeded", None),
            Outcome::Failed { code, .. } => ("failed", Some(code.clone())),
            Outcome::Pending => ("pending", None),
            Outcome::Unknown { code, .. } => ("unknown", Some(code.clone())),
        });
        note(&ctx, "status", Some(&reference), outcome, started).await;
        record_answer(&ctx, &circuits, "mpesa", trouble(&answer)).await?;
        match answer {
            Ok(Outcome::Succeeded) => apply(&ctx, "provider_succeeded", Cause::Poll, None).await,
            Ok(Outcome::Failed { .. }) => apply(&ctx, "provider_failed", Cause::Poll, None).await,
            Ok(Outcome::Pending) | Ok(Outcome::Unknown { .. }) => Ok(()),
            Err(error @ MpesaError::Config(_)) => Err(JobError::fatal(error)),
            Err(error) => Err(JobError::retryable(error)),
        }
    } else {
        let result_url = callback_url(&client, "status-result", intent)?;
        let timeout_url = callback_url(&client, "status-timeout", intent)?;
        let started = std::time::Instant::now();
        let party = if intent.kind == "reversal" {
            reversal_party(intent, &client)
        } else {
            client.config().b2c_shortcode.clone()
        };
        let answer = client
            .transaction_status(&reference, &party, &result_url, &timeout_url)
            .await;
        // Accepted: the answer comes by callback.
        note(
            &ctx,
            "status",
            Some(&reference),
            summary(&answer, |_| ("pending", None)),
            started,
        )
        .await;
        record_answer(&ctx, &circuits, "mpesa", trouble(&answer)).await?;
        match answer {
            Ok(()) => Ok(()),
            Err(error @ MpesaError::Config(_)) => Err(JobError::fatal(error)),
            Err(error) => Err(JobError::retryable(error)),
        }
    }
}

/// Reversal: ask M-Pesa to send a payment back. The reversal's own id is
/// Daraja's (it names none of ours), so an ambiguous answer is never
/// re-sent: a second request would be refused as "already reversed" and
/// read as a failure. The intent waits in `processing` for the result
/// callback (matched by its token) or, with no callback, for the polls to
/// run out and a person to decide.
pub async fn reverse(ctx: ActionContext, client: Arc<MpesaClient>, circuits: Circuits) -> Result<(), JobError> {
    gate(&ctx, &circuits, "mpesa")?;
    let intent = &ctx.intent;
    let amount = whole_kes(intent)?;
    let receiver = reversal_party(intent, &client);
    let remarks = intent.metadata["reason"].as_str().unwrap_or("reversal").to_owned();
    let result_url = callback_url(&client, "reversal-result", intent)?;
    let timeout_url = callback_url(&client, "reversal-timeout", intent)?;
    let start = start_sending(&ctx).await?;
    if start == Start::Moved {
        tracing::info!(intent_id = %intent.id, "the reversal moved on before it was sent; not sending it");
        return Ok(());
    }
    if start == Start::Again {
        tracing::warn!(intent_id = %intent.id, "an earlier attempt may have sent the reversal; waiting for M-Pesa's word");
        return apply_once_sent(&ctx, "requested", None).await;
    }
    let answer = client
        .reversal(
            &intent.reference,
            amount,
            &receiver,
            &remarks,
            &result_url,
            &timeout_url,
        )
        .await;
    unstart_if_refused(&ctx, &answer).await?;
    // As for prompts: an ambiguous reversal is never sent again.
    record_answer(&ctx, &circuits, "mpesa", busy(&answer)).await?;
    match answer {
        Ok(originator) => apply_once_sent(&ctx, "requested", Some(&originator)).await,
        Err(MpesaError::Rejected { code, .. }) => {
            tracing::warn!(intent_id = %intent.id, code, "M-Pesa refused the reversal request");
            apply(&ctx, "request_refused", Cause::Api, None).await
        }
        Err(error @ MpesaError::Busy(_)) => Err(JobError::retryable(error)),
        Err(MpesaError::Ambiguous(_)) | Err(MpesaError::Duplicate) => {
            tracing::warn!(intent_id = %intent.id, "ambiguous reversal answer; waiting for M-Pesa's word");
            apply_once_sent(&ctx, "requested", None).await
        }
        Err(error @ MpesaError::Config(_)) => Err(JobError::fatal(error)),
    }
}
