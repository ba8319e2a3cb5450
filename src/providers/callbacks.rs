//! The job applying a stored callback from any provider behind the adapter
//! interface: the adapter reads the body into a [`CallbackReport`], and the
//! rules here are the same for all of them. The callback names its intent
//! by the intent's callback token (per-request callback URLs) or, sent to
//! the app-wide URL set in the provider's portal, by our request id.
//! Duplicates are dropped by the provider's ids; a callback for a request
//! whose id is not recorded yet waits a little; an outcome the adapter does
//! not understand is stored and never applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::adapter::{Adapter, CallbackReport};
use super::Outcome;
use crate::runner::{JobArgs, JobContext, JobError, Worker};
use crate::store::intents::IntentRow;
use crate::store::{inbox, intents};
use crate::workflow::engine::{Applied, Cause, Engine, Event};

/// How long a callback naming an unknown request id may wait for it to be
/// recorded (the callback raced the request's own answer), in seconds.
const MATCH_WINDOW_S: i64 = 600;
/// How long to wait between tries of matching such a callback.
const MATCH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Job arguments: process one stored callback of a provider behind the
/// adapter interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessProviderCallback {
    pub inbox_id: i64,
}

impl JobArgs for ProcessProviderCallback {
    const KIND: &'static str = "callback.provider";
}

pub struct ProviderCallbackWorker {
    pub engine: Engine,
    pub adapters: BTreeMap<String, Arc<dyn Adapter>>,
}

/// Where a callback stands once its intent is looked up.
enum Match {
    Found(Box<IntentRow>),
    /// Not (yet) known: keep trying while the callback is young.
    Wait,
    /// Settled without an intent, with this outcome.
    Nothing(&'static str),
}

impl Worker for ProviderCallbackWorker {
    type Args = ProcessProviderCallback;

    async fn work(&self, ctx: JobContext, args: ProcessProviderCallback) -> Result<(), JobError> {
        let mut tx = ctx.pool().begin().await?;
        let Some(row) = inbox::get(&mut tx, args.inbox_id).await? else {
            return Err(JobError::fatal("inbox row is gone"));
        };
        let Some(adapter) = self.adapters.get(&row.provider).cloned() else {
            // Configured when the callback came in, not any more: keep it.
            return Err(JobError::retryable(format!(
                "no adapter for {} on this node",
                row.provider
            )));
        };
        let report = match adapter.parse_callback(&row.kind, &row.body) {
            Ok(report) => report,
            Err(error) => {
                finish_row(&mut tx, &row, None, None, "malformed", Some(&error)).await?;
                return finish(ctx, tx).await;
            }
        };
        let intent = match find(&mut tx, adapter.as_ref(), &row, &report).await? {
            Match::Found(intent) => intent,
            Match::Wait if (chrono::Utc::now() - row.received_at).num_seconds() < MATCH_WINDOW_S => {
                drop(tx);
                return Err(JobError::Snooze(MATCH_RETRY));
            }
            Match::Wait => {
                finish_row(&mut tx, &row, None, Some(&report.dedupe_key), "unmatched", None).await?;
                return finish(ctx, tx).await;
            }
            Match::Nothing(outcome) => {
                tracing::warn!(
                    inbox_id = row.id,
                    provider = row.provider,
                    outcome,
                    "callback not processed"
                );
                finish_row(&mut tx, &row, None, Some(&report.dedupe_key), outcome, None).await?;
                return finish(ctx, tx).await;
            }
        };
        self.apply(ctx, tx, &row, &report, *intent).await
    }
}

/// Finds the intent a callback is about, locked.
async fn find(
    tx: &mut sqlx::PgConnection,
    adapter: &dyn Adapter,
    row: &inbox::InboxRow,
    report: &CallbackReport,
) -> Result<Match, sqlx::Error> {
    if adapter.app_callback_token().as_deref() == Some(row.token.as_str()) {
        let Some(request_id) = &report.request_id else {
            return Ok(Match::Nothing("unmatched"));
        };
        return Ok(match intents::by_provider_ref(tx, adapter.name(), request_id).await? {
            Some(intent) => Match::Found(Box::new(intent)),
            // Our ids are committed before the request is sent, so an
            // unknown one is not ours (or belongs to a wiped database).
            None => Match::Nothing("unknown_request"),
        });
    }
    let Some(intent) = intents::by_callback_token(tx, &row.token).await? else {
        return Ok(Match::Nothing("unknown_token"));
    };
    if intent.provider != adapter.name() {
        return Ok(Match::Nothing("wrong_provider"));
    }
    match (&intent.provider_ref, &report.request_id) {
        (None, _) => Ok(Match::Wait),
        (Some(expected), Some(got)) if expected != got => Ok(Match::Nothing("reference_mismatch")),
        _ => Ok(Match::Found(Box::new(intent))),
    }
}

impl ProviderCallbackWorker {
    async fn apply(
        &self,
        ctx: JobContext,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        row: &inbox::InboxRow,
        report: &CallbackReport,
        intent: IntentRow,
    ) -> Result<(), JobError> {
        let key = Some(report.dedupe_key.as_str());
        if inbox::already_applied(&mut tx, &row.provider, &report.dedupe_key, row.id).await? {
            finish_row(&mut tx, row, Some(intent.id), key, "duplicate", None).await?;
            return finish(ctx, tx).await;
        }
        let event = match &report.outcome {
            Outcome::Succeeded => "provider_succeeded",
            Outcome::Failed { .. } => "provider_failed",
            Outcome::Pending | Outcome::Unknown { .. } => {
                let detail = format!("{:?}", report.outcome);
                finish_row(&mut tx, row, Some(intent.id), key, "ignored", Some(&detail)).await?;
                return finish(ctx, tx).await;
            }
        };
        let mut intent = intent;
        if let (Outcome::Succeeded, Some(receipt)) = (&report.outcome, &report.receipt) {
            intents::set_receipt(&mut tx, intent.id, receipt).await?;
            intent.receipt.get_or_insert_with(|| receipt.clone());
        }
        let id = intent.id;
        let note = match &report.outcome {
            Outcome::Failed { code, reason } => Some(format!("{code}: {reason}")),
            _ => None,
        };
        let mut applied_event = Event::new(event, Cause::Callback, &row.provider);
        applied_event.provider_ref = report.receipt.as_deref();
        applied_event.note = note.as_deref();
        applied_event.payload_digest = Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&row.body)));
        let applied = self
            .engine
            .apply_to(&mut tx, intent, &applied_event)
            .await
            .map_err(JobError::retryable)?;
        let (outcome, detail) = match &applied {
            Applied::Moved { .. } => ("applied", note),
            Applied::Rejected { reason, .. } => ("rejected", Some(reason.clone())),
            Applied::Lost { .. } => {
                return Err(JobError::retryable("the intent changed while the callback was applied"));
            }
        };
        finish_row(&mut tx, row, Some(id), key, outcome, detail.as_deref()).await?;
        finish(ctx, tx).await
    }
}

/// Records what became of a stored callback, and counts it
/// (`tuma_callbacks_total{provider, kind, outcome}`). Daraja's callback job
/// uses it too.
pub(crate) async fn finish_row(
    conn: &mut sqlx::PgConnection,
    row: &inbox::InboxRow,
    intent_id: Option<uuid::Uuid>,
    dedupe_key: Option<&str>,
    outcome: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    inbox::finish(conn, row.id, intent_id, dedupe_key, outcome, detail).await?;
    metrics::counter!(
        "tuma_callbacks_total",
        "provider" => row.provider.clone(),
        "kind" => row.kind.clone(),
        "outcome" => outcome.to_owned()
    )
    .increment(1);
    Ok(())
}

/// Completes the callback's job in its transaction and commits.
pub(crate) async fn finish(ctx: JobContext, mut tx: sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), JobError> {
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}
