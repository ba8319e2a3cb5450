//! The job applying a stored callback from any provider behind the adapter
//! interface: the adapter reads the body into a [`CallbackReport`], and the
//! rules here are the same for all of them. The callback names its intent
//! by the intent's callback token (per-request callback URLs) or, sent to
//! the app-wide URL set in the provider's portal, by our request id.
//! Duplicates are dropped by the provider's ids; a callback for a request
//! whose id is not recorded yet waits a little; an outcome the adapter does
//! not understand is stored and never applied.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::adapter::{Adapter, CallbackReport};
use super::Outcome;
use crate::runner::{Batcher, JobArgs, JobContext, JobError, NewJob, Worker};
use crate::store::intents::IntentRow;
use crate::store::{inbox, intents};
use crate::workflow::engine::{Applied, Cause, Engine, Event};

/// How long a callback naming an unknown request id may wait for it to be
/// recorded (the callback raced the request's own answer), in seconds.
const MATCH_WINDOW_S: f64 = 600.0;
/// How long to wait between tries of matching such a callback.
const MATCH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `intent` is still before any provider request was recorded as
/// sent (`pending` in every built-in workflow). A result for it beat that
/// record, so it waits to be matched again instead of being applied.
pub(crate) fn awaits_its_request(intent: &IntentRow) -> bool {
    intent.state == "pending"
}

/// Most callbacks one batch applies together.
const CALLBACK_BATCH: usize = 64;
/// Most groups of callbacks one batch handles together. A group holds up
/// to 128 callbacks (most far fewer), and every intent of a batch stays
/// locked until it commits; with 4, the time from a payout's create to its
/// completion doubled at the same throughput (`bench payouts`), as groups
/// queued for the batches.
const GROUP_BATCH: usize = 8;
/// Batches of one callback kind in progress at once on a node.
const CALLBACK_LANES: usize = 2;

/// Job arguments: process one stored callback of a provider behind the
/// adapter interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessProviderCallback {
    pub inbox_id: i64,
}

impl JobArgs for ProcessProviderCallback {
    const KIND: &'static str = "callback.provider";
}

/// Job arguments: process the callbacks of adapter providers stored
/// together (one job for a group, see [`inbox::insert_and_enqueue`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessProviderCallbacks {
    pub inbox_ids: Vec<i64>,
}

impl JobArgs for ProcessProviderCallbacks {
    const KIND: &'static str = "callback.provider.group";
}

/// What processing adapter providers' callbacks needs.
pub struct ProviderCallbacks {
    pub engine: Engine,
    pub adapters: BTreeMap<String, Arc<dyn Adapter>>,
}

/// The job processing a stored callback of an adapter provider. Callback
/// jobs running at the same time on this node are handled together
/// ([`CallbackJobs`]): the common case (a final word on a known, recorded
/// request) of the whole batch is applied in one transaction
/// ([`apply_batch`]), everything else one at a time.
pub struct ProviderCallbackWorker {
    jobs: CallbackJobs<ProcessProviderCallback>,
}

/// The job processing a group of adapter providers' callbacks stored
/// together ([`CallbackGroups`]).
pub struct ProviderCallbackGroupWorker {
    groups: CallbackGroups,
}

impl ProviderCallbackWorker {
    /// The worker of single callbacks' jobs, and that of groups' jobs.
    pub fn new(callbacks: ProviderCallbacks) -> (ProviderCallbackWorker, ProviderCallbackGroupWorker) {
        let callbacks = Arc::new(callbacks);
        (
            ProviderCallbackWorker {
                jobs: CallbackJobs::new("callbacks.provider", Arc::clone(&callbacks)),
            },
            ProviderCallbackGroupWorker {
                groups: CallbackGroups::new("callback_groups.provider", callbacks),
            },
        )
    }
}

impl Worker for ProviderCallbackGroupWorker {
    type Args = ProcessProviderCallbacks;

    async fn work(&self, ctx: JobContext, args: ProcessProviderCallbacks) -> Result<(), JobError> {
        self.groups.run(ctx, args.inbox_ids).await
    }
}

/// How one kind of callback is processed: the common cases of many
/// together, or one callback, whatever it is.
pub(crate) trait CallbackProcessing: Send + Sync + 'static {
    type Args: Send + Sync + 'static;

    /// The inbox row a single callback's job is about.
    fn inbox_id(args: &Self::Args) -> i64;

    /// The job that processes the callback `inbox_id` on its own.
    fn alone(inbox_id: i64) -> NewJob;

    fn engine(&self) -> &Engine;

    /// Of the callbacks `rows` (read in `tx`; `None` where a row is gone),
    /// those a batch can apply, their intents locked in `tx`; each
    /// [`Ready::item`] is the callback's place in `rows`.
    fn ready<'r>(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: &'r [Option<inbox::InboxRow>],
    ) -> impl Future<Output = Result<Vec<Ready<'r>>, JobError>> + Send;

    /// One callback on its own.
    fn one(&self, ctx: JobContext, args: Self::Args) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// The inbox rows `ids`, in that order, for a batch to apply: `None`
/// where one is gone, or was processed already (by an earlier attempt of
/// its group, say), which the second list tells.
async fn read_rows(
    tx: &mut sqlx::PgConnection,
    ids: &[i64],
) -> Result<(Vec<Option<inbox::InboxRow>>, Vec<bool>), sqlx::Error> {
    let mut rows: HashMap<i64, inbox::InboxRow> = inbox::get_many(tx, ids)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let mut processed = Vec::with_capacity(ids.len());
    let rows = ids
        .iter()
        .map(|id| {
            let row = rows.remove(id);
            let done = row.as_ref().is_some_and(|row| row.outcome.is_some());
            processed.push(done);
            row.filter(|_| !done)
        })
        .collect();
    Ok((rows, processed))
}

/// Single callbacks' jobs of one kind running at the same time on this
/// node, handed to `processing` together ([`Batcher`]): a batch of more
/// than one has its common cases applied in one transaction first
/// ([`singles_together`]), and [`many`] answers each job.
pub(crate) struct CallbackJobs<A> {
    batcher: Batcher<(JobContext, A), Result<(), JobError>>,
}

impl<A: Send + Sync + 'static> CallbackJobs<A> {
    pub(crate) fn new<C: CallbackProcessing<Args = A>>(name: &'static str, processing: Arc<C>) -> CallbackJobs<A> {
        CallbackJobs {
            batcher: Batcher::new(name, CALLBACK_BATCH, CALLBACK_LANES, move |items| {
                let processing = Arc::clone(&processing);
                async move {
                    let together = if items.len() > 1 {
                        Some(singles_together(processing.as_ref(), &items).await)
                    } else {
                        None
                    };
                    many(name, items, together, |ctx, args| processing.one(ctx, args)).await
                }
                .boxed()
            }),
        }
    }

    /// Processes one job's callback, with whatever runs beside it.
    pub(crate) async fn run(&self, ctx: JobContext, args: A) -> Result<(), JobError> {
        self.batcher
            .run((ctx, args))
            .await
            .unwrap_or_else(|e| Err(JobError::retryable(e)))
    }
}

/// The common cases of a batch of single callbacks' jobs, applied in one
/// transaction.
async fn singles_together<C: CallbackProcessing>(
    processing: &C,
    items: &[(JobContext, C::Args)],
) -> Result<BatchDone, JobError> {
    let mut tx = items[0].0.pool().begin().await?;
    let ids: Vec<i64> = items.iter().map(|(_, args)| C::inbox_id(args)).collect();
    // One processed already goes the one-at-a-time way, which completes
    // its job and changes nothing.
    let (rows, _) = read_rows(&mut tx, &ids).await?;
    let ready = processing.ready(&mut tx, &rows).await?;
    let jobs: Vec<&JobContext> = items.iter().map(|(ctx, _)| ctx).collect();
    apply_batch(processing.engine(), tx, &jobs, ready).await
}

/// Jobs over groups of callbacks (the callbacks stored together, one job
/// for them all) running at the same time on this node, handled together
/// ([`Batcher`]): in one transaction, the groups' jobs are completed, the
/// common cases of all their callbacks applied ([`apply_in`]), and every
/// other callback given its own job (the one-at-a-time path, which also
/// waits for a request not yet recorded). Should that fail, a second
/// transaction gives every callback of the groups its own job.
pub(crate) struct CallbackGroups {
    batcher: Batcher<(JobContext, Vec<i64>), Result<(), JobError>>,
}

impl CallbackGroups {
    pub(crate) fn new<C: CallbackProcessing>(name: &'static str, processing: Arc<C>) -> CallbackGroups {
        CallbackGroups {
            batcher: Batcher::new(name, GROUP_BATCH, CALLBACK_LANES, move |items| {
                let processing = Arc::clone(&processing);
                async move {
                    // A panic must not cost the groups their fallback: each
                    // callback then still gets its own job, and only one
                    // that panics again is stuck.
                    let together = std::panic::AssertUnwindSafe(groups_together(processing.as_ref(), &items))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| Err(JobError::retryable("processing the groups panicked")));
                    let held = match together {
                        Ok(held) => Ok(held),
                        Err(error) => {
                            metrics::counter!("tuma_batch_fallbacks_total", "batch" => name).increment(1);
                            tracing::warn!(%error, batch = name, groups = items.len(), "a batch of callback groups rolled back; each callback gets its own job");
                            groups_apart::<C>(processing.as_ref(), &items).await
                        }
                    };
                    match held {
                        Ok(held) => held
                            .into_iter()
                            .map(|held| if held { Ok(()) } else { Err(left_out()) })
                            .collect(),
                        Err(error) => items.iter().map(|_| Err(error.clone())).collect(),
                    }
                }
                .boxed()
            }),
        }
    }

    /// Processes one group job's callbacks, with whatever runs beside it.
    pub(crate) async fn run(&self, ctx: JobContext, inbox_ids: Vec<i64>) -> Result<(), JobError> {
        self.batcher
            .run((ctx, inbox_ids))
            .await
            .unwrap_or_else(|e| Err(JobError::retryable(e)))
    }
}

/// The callbacks of the groups `items` this node still holds, and which
/// it holds: the groups' jobs completed in `tx`.
async fn held_callbacks(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    items: &[(JobContext, Vec<i64>)],
) -> Result<(Vec<bool>, Vec<i64>), JobError> {
    let contexts: Vec<&JobContext> = items.iter().map(|(ctx, _)| ctx).collect();
    let held = JobContext::complete_all_in(tx, &contexts).await?;
    let ids = items
        .iter()
        .zip(&held)
        .filter(|(_, held)| **held)
        .flat_map(|((_, ids), _)| ids.iter().copied())
        .collect();
    Ok((held, ids))
}

/// [`CallbackGroups`]' one transaction: says which groups' jobs were held.
async fn groups_together<C: CallbackProcessing>(
    processing: &C,
    items: &[(JobContext, Vec<i64>)],
) -> Result<Vec<bool>, JobError> {
    let mut tx = items[0].0.pool().begin().await?;
    let (held, ids) = held_callbacks(&mut tx, items).await?;
    // A callback processed already is left alone; every other one is
    // applied here or gets its own job.
    let (rows, mut settled) = read_rows(&mut tx, &ids).await?;
    let ready = processing.ready(&mut tx, &rows).await?;
    let (done, counted) = apply_in(processing.engine(), &mut tx, None, ready).await?;
    for i in done.applied {
        settled[i] = true;
    }
    let alone: Vec<NewJob> = ids
        .iter()
        .zip(&settled)
        .filter(|(_, settled)| !**settled)
        .map(|(&id, _)| C::alone(id))
        .collect();
    processing.engine().jobs().enqueue_many(&mut tx, &alone).await?;
    tx.commit().await?;
    for (row, outcome) in counted {
        count(row, outcome);
    }
    Ok(held)
}

/// [`CallbackGroups`]' fallback: every callback of the groups held gets
/// its own job.
async fn groups_apart<C: CallbackProcessing>(
    processing: &C,
    items: &[(JobContext, Vec<i64>)],
) -> Result<Vec<bool>, JobError> {
    let mut tx = items[0].0.pool().begin().await?;
    let (held, ids) = held_callbacks(&mut tx, items).await?;
    let alone: Vec<NewJob> = ids.into_iter().map(C::alone).collect();
    processing.engine().jobs().enqueue_many(&mut tx, &alone).await?;
    tx.commit().await?;
    Ok(held)
}

/// The answer for a job a batch found no longer leased to this node.
fn left_out() -> JobError {
    JobError::retryable("the job is no longer leased to this node; its work was left out")
}

/// Begins the transaction of a callback's own job with its row, locked.
/// `None` when the row was processed already (by another job of its own,
/// or by a group): then the job is completed and nothing else changes.
pub(crate) async fn begin_one(
    ctx: &JobContext,
    inbox_id: i64,
) -> Result<Option<(sqlx::Transaction<'static, sqlx::Postgres>, inbox::InboxRow)>, JobError> {
    let mut tx = ctx.pool().begin().await?;
    let Some(row) = inbox::get(&mut tx, inbox_id).await? else {
        return Err(JobError::fatal("inbox row is gone"));
    };
    if row.outcome.is_some() {
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        return Ok(None);
    }
    Ok(Some((tx, row)))
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
        self.jobs.run(ctx, args).await
    }
}

/// Answers a batch of callback jobs: what `together` (the batch's shared
/// transaction, when there was one) settled, and the rest one by one
/// (`one`), side by side. Should the batch have failed, every callback of
/// it goes one by one.
async fn many<A, O, OF>(
    batch: &'static str,
    items: Vec<(JobContext, A)>,
    together: Option<Result<BatchDone, JobError>>,
    one: O,
) -> Vec<Result<(), JobError>>
where
    O: Fn(JobContext, A) -> OF,
    OF: std::future::Future<Output = Result<(), JobError>>,
{
    let mut answers: Vec<Option<Result<(), JobError>>> = vec![None; items.len()];
    if let Some(together) = together {
        match together {
            Ok(done) => {
                for i in done.applied {
                    answers[i] = Some(Ok(()));
                }
                for i in done.lease_lost {
                    answers[i] = Some(Err(left_out()));
                }
            }
            Err(error) => {
                metrics::counter!("tuma_batch_fallbacks_total", "batch" => batch).increment(1);
                tracing::warn!(%error, batch, callbacks = items.len(), "a batch of callbacks rolled back; processing them one by one");
            }
        }
    }
    let rest = items
        .into_iter()
        .zip(answers.iter())
        .filter(|(_, answer)| answer.is_none())
        .map(|((ctx, args), _)| one(ctx, args))
        .collect::<Vec<_>>();
    let mut rest = futures::future::join_all(rest).await.into_iter();
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| rest.next().expect("one answer per callback left out")))
        .collect()
}

impl CallbackProcessing for ProviderCallbacks {
    type Args = ProcessProviderCallback;

    fn inbox_id(args: &ProcessProviderCallback) -> i64 {
        args.inbox_id
    }

    fn alone(inbox_id: i64) -> NewJob {
        NewJob::new(&ProcessProviderCallback { inbox_id })
    }

    fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The final words on known, recorded requests.
    async fn ready<'r>(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: &'r [Option<inbox::InboxRow>],
    ) -> Result<Vec<Ready<'r>>, JobError> {
        let mut parsed = Vec::new();
        for (item, row) in rows.iter().enumerate() {
            let Some(row) = row else { continue };
            let Some(adapter) = self.adapters.get(&row.provider) else {
                continue;
            };
            let Ok(report) = adapter
                .parse_callback(&row.kind, &row.body)
                .map(CallbackReport::storable)
            else {
                continue;
            };
            if !matches!(report.outcome, Outcome::Succeeded | Outcome::Failed { .. }) {
                continue;
            }
            // Sent to the app-wide URL: matched by our request id.
            let by_request = adapter.app_callback_token().as_deref() == Some(row.token.as_str());
            if by_request && report.request_id.is_none() {
                continue;
            }
            parsed.push((item, row, adapter.name(), by_request, report));
        }
        if parsed.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<&str> = parsed
            .iter()
            .filter(|p| !p.3)
            .map(|(_, row, ..)| row.token.as_str())
            .collect();
        let requests: Vec<(&str, &str)> = parsed
            .iter()
            .filter(|p| p.3)
            .filter_map(|(_, _, provider, _, report)| Some((*provider, report.request_id.as_deref()?)))
            .collect();
        let mut by_token = HashMap::new();
        let mut by_request = HashMap::new();
        for intent in intents::lock_for_callbacks(tx, &tokens, &requests).await? {
            if let Some(reference) = &intent.provider_ref {
                by_request.insert((intent.provider.clone(), reference.clone()), intent.clone());
            }
            if let Some(token) = &intent.callback_token {
                by_token.insert(token.clone(), intent);
            }
        }
        let mut ready = Vec::new();
        for (item, row, provider, app_wide, report) in parsed {
            let intent = if app_wide {
                let key = (provider.to_owned(), report.request_id.clone().unwrap_or_default());
                by_request.remove(&key)
            } else {
                by_token.remove(&row.token)
            };
            // Unknown, or a second callback for an intent already in the
            // batch: the one-at-a-time path.
            let Some(intent) = intent else { continue };
            if intent.provider != provider || awaits_its_request(&intent) {
                continue;
            }
            match (&intent.provider_ref, &report.request_id) {
                (None, _) => continue,
                (Some(expected), Some(got)) if expected != got => continue,
                _ => {}
            }
            if report.outcome == Outcome::Succeeded
                && amount_contradiction(report.amount, report.currency.as_deref(), &intent).is_some()
            {
                continue;
            }
            ready.push(Ready {
                item,
                row,
                intent,
                note: failure_detail(&report.outcome),
                dedupe_key: report.dedupe_key,
                outcome: report.outcome,
                receipt: report.receipt,
                cause: Cause::Callback,
                actor: &row.provider,
            });
        }
        Ok(ready)
    }

    /// One callback, whatever it is.
    async fn one(&self, ctx: JobContext, args: ProcessProviderCallback) -> Result<(), JobError> {
        let Some((mut tx, row)) = begin_one(&ctx, args.inbox_id).await? else {
            return Ok(());
        };
        let Some(adapter) = self.adapters.get(&row.provider).cloned() else {
            // Configured when the callback came in, not any more: keep it.
            return Err(JobError::retryable(format!(
                "no adapter for {} on this node",
                row.provider
            )));
        };
        let report = match adapter
            .parse_callback(&row.kind, &row.body)
            .map(CallbackReport::storable)
        {
            Ok(report) => report,
            Err(error) => {
                return finish_with(ctx, tx, &row, None, None, "malformed", Some(&error)).await;
            }
        };
        let intent = match find(&mut tx, adapter.as_ref(), &row, &report).await? {
            Match::Found(intent) => intent,
            Match::Wait => {
                if inbox::age_s(&mut tx, row.id, ctx.clock().sql_now()).await? < MATCH_WINDOW_S {
                    drop(tx);
                    return Err(JobError::Snooze(MATCH_RETRY));
                }
                return finish_with(ctx, tx, &row, None, Some(&report.dedupe_key), "unmatched", None).await;
            }
            Match::Nothing(outcome) => {
                tracing::warn!(
                    inbox_id = row.id,
                    provider = row.provider,
                    outcome,
                    "callback not processed"
                );
                return finish_with(ctx, tx, &row, None, Some(&report.dedupe_key), outcome, None).await;
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
            Some(intent) if awaits_its_request(&intent) => Match::Wait,
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
    if awaits_its_request(&intent) {
        return Ok(Match::Wait);
    }
    match (&intent.provider_ref, &report.request_id) {
        (None, _) => Ok(Match::Wait),
        (Some(expected), Some(got)) if expected != got => Ok(Match::Nothing("reference_mismatch")),
        _ => Ok(Match::Found(Box::new(intent))),
    }
}

impl ProviderCallbacks {
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
            return finish_with(ctx, tx, row, Some(intent.id), key, "duplicate", None).await;
        }
        if report.outcome == Outcome::Succeeded {
            if let Some(detail) = amount_contradiction(report.amount, report.currency.as_deref(), &intent) {
                tracing::warn!(intent_id = %intent.id, provider = row.provider, %detail,
                    "a success for another amount than its intent's: not applied, left to the polls and the report");
                return finish_with(ctx, tx, row, Some(intent.id), key, "amount_mismatch", Some(&detail)).await;
            }
        }
        let event = match &report.outcome {
            Outcome::Succeeded => "provider_succeeded",
            Outcome::Failed { .. } => "provider_failed",
            Outcome::Pending => {
                let detail = format!("{:?}", report.outcome);
                return finish_with(ctx, tx, row, Some(intent.id), key, "ignored", Some(&detail)).await;
            }
            Outcome::Unknown { .. } => {
                let outcome = unreadable_outcome(&self.engine, &intent);
                let detail = format!("{:?} in state {}", report.outcome, intent.state);
                return finish_with(ctx, tx, row, Some(intent.id), key, outcome, Some(&detail)).await;
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
            Applied::Rejected {
                reason,
                contradicts_paid,
                ..
            } => (refused(*contradicts_paid), Some(reason.clone())),
            Applied::Lost { .. } => {
                return Err(JobError::retryable("the intent changed while the callback was applied"));
            }
        };
        finish_with(ctx, tx, row, Some(id), key, outcome, detail.as_deref()).await
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
    count(row, outcome);
    Ok(())
}

/// `tuma_callbacks_total{provider, kind, outcome}`.
fn count(row: &inbox::InboxRow, outcome: &str) {
    metrics::counter!(
        "tuma_callbacks_total",
        "provider" => row.provider.clone(),
        "kind" => row.kind.clone(),
        "outcome" => outcome.to_owned()
    )
    .increment(1);
}

/// Records what became of a stored callback ([`finish_row`]), completes its
/// job and commits ([`finish`]): how a callback processed alone ends.
pub(crate) async fn finish_with(
    ctx: JobContext,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    row: &inbox::InboxRow,
    intent_id: Option<uuid::Uuid>,
    dedupe_key: Option<&str>,
    outcome: &str,
    detail: Option<&str>,
) -> Result<(), JobError> {
    finish_row(&mut tx, row, intent_id, dedupe_key, outcome, detail).await?;
    finish(ctx, tx).await
}

/// How a callback whose word the engine cannot read is finished. Before its
/// intent ends, `ignored`: the status polls ask again (and with no clear
/// answer the intent ends unresolved). After (Airtel's "reversed" for a
/// payment already completed), `contradicts_final`: the money may have
/// moved again, which only a person can judge, so the reconciliation report
/// lists it.
pub(crate) fn unreadable_outcome(engine: &Engine, intent: &IntentRow) -> &'static str {
    let ended = engine
        .workflows()
        .get(&intent.kind)
        .and_then(|workflow| workflow.states.get(&intent.state))
        .is_some_and(|state| state.is_final);
    if ended {
        "contradicts_final"
    } else {
        "ignored"
    }
}

/// How a callback whose event the engine refused is finished: `rejected`,
/// or `contradicts_final` when it said the money did not move of an intent
/// that had ended saying it did ([`Applied::Rejected`]'s
/// `contradicts_paid`), which the reconciliation report lists.
pub(crate) fn refused(contradicts_paid: bool) -> &'static str {
    if contradicts_paid {
        "contradicts_final"
    } else {
        "rejected"
    }
}

/// What is wrong with a success naming `amount` (and `currency`) for
/// `intent`, when either is not the intent's. A callback is believed on the
/// secret token in its URL; what it says moved must still be what was
/// asked for, or it is left to the status polls and to a person.
pub(crate) fn amount_contradiction(
    amount: Option<rust_decimal::Decimal>,
    currency: Option<&str>,
    intent: &IntentRow,
) -> Option<String> {
    let other_amount = amount.is_some_and(|amount| amount != intent.amount);
    let other_currency = currency.is_some_and(|currency| !currency.trim().eq_ignore_ascii_case(&intent.currency));
    (other_amount || other_currency).then(|| {
        format!(
            "reported {} {} for {} {}",
            amount.map_or_else(|| "?".to_owned(), |a| a.normalize().to_string()),
            // The provider's text, kept to what a currency code can be.
            currency
                .unwrap_or(&intent.currency)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect::<String>(),
            intent.amount.normalize(),
            intent.currency
        )
    })
}

/// Completes the callback's job in its transaction and commits.
pub(crate) async fn finish(ctx: JobContext, mut tx: sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), JobError> {
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A callback that a batch can apply: its intent found and locked, its
/// request id matching, and its report a final word (succeeded or failed).
pub(crate) struct Ready<'a> {
    /// Its place in the batch.
    pub item: usize,
    pub row: &'a inbox::InboxRow,
    pub intent: IntentRow,
    pub dedupe_key: String,
    pub outcome: Outcome,
    pub receipt: Option<String>,
    pub cause: Cause,
    pub actor: &'a str,
    /// Kept with the event.
    pub note: Option<String>,
}

/// What a batch settled, by place in the batch; every other callback of
/// the batch is left to be processed on its own.
#[derive(Debug, Default)]
pub(crate) struct BatchDone {
    pub applied: Vec<usize>,
    /// Their jobs are no longer this node's: their work was left out.
    pub lease_lost: Vec<usize>,
}

/// Applies `ready` callbacks in `tx`, and commits: [`apply_in`], each
/// callback's job completed with it. `jobs[i]` is the job of the batch's
/// `i`th callback. An error rolls all of it back; the caller then
/// processes each callback on its own.
pub(crate) async fn apply_batch(
    engine: &Engine,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: &[&JobContext],
    ready: Vec<Ready<'_>>,
) -> Result<BatchDone, JobError> {
    let (done, counted) = apply_in(engine, &mut tx, Some(jobs), ready).await?;
    tx.commit().await?;
    for (row, outcome) in counted {
        count(row, outcome);
    }
    Ok(done)
}

/// Applies `ready` callbacks in `tx`: what the one-at-a-time path does for
/// the common case (an outcome applied or rejected), with the reads and
/// bookkeeping of the whole batch done by one statement each. With `jobs`
/// (`jobs[i]` the job of the batch's `i`th callback), each applied
/// callback's job is completed too, and one no longer leased here is left
/// out; without, the caller has its jobs in hand. Returns what was
/// settled, and each settled callback's row and outcome, to be counted
/// once committed.
///
/// What the batch leaves out, the one-at-a-time path does after it: a
/// second callback for an intent already in the batch, a duplicate of an
/// earlier callback (marked as such there), a job no longer leased here.
pub(crate) async fn apply_in<'a>(
    engine: &Engine,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: Option<&[&JobContext]>,
    ready: Vec<Ready<'a>>,
) -> Result<(BatchDone, Vec<(&'a inbox::InboxRow, &'static str)>), JobError> {
    let mut seen_intents = std::collections::HashSet::new();
    let mut seen_keys = std::collections::HashSet::new();
    let mut ready: Vec<Ready<'_>> = ready
        .into_iter()
        .filter(|r| {
            seen_intents.insert(r.intent.id) && seen_keys.insert((r.row.provider.clone(), r.dedupe_key.clone()))
        })
        .collect();
    if !ready.is_empty() {
        let keys: Vec<(&str, &str)> = ready
            .iter()
            .map(|r| (r.row.provider.as_str(), r.dedupe_key.as_str()))
            .collect();
        let ids: Vec<i64> = ready.iter().map(|r| r.row.id).collect();
        let earlier = inbox::applied_keys(tx, &keys, &ids).await?;
        ready.retain(|r| {
            !earlier
                .iter()
                .any(|(provider, key)| *provider == r.row.provider && *key == r.dedupe_key)
        });
    }
    let mut done = BatchDone::default();
    if ready.is_empty() {
        return Ok((done, Vec::new()));
    }
    let held = match jobs {
        Some(jobs) => {
            let contexts: Vec<&JobContext> = ready.iter().map(|r| jobs[r.item]).collect();
            JobContext::complete_all_in(tx, &contexts).await?
        }
        None => vec![true; ready.len()],
    };
    let mut ready: Vec<Ready<'_>> = ready
        .into_iter()
        .zip(held)
        .filter_map(|(r, held)| {
            if !held {
                done.lease_lost.push(r.item);
            }
            held.then_some(r)
        })
        .collect();
    // Settling locks each intent's non-negative account (its party's
    // balance, its campaign's bucket): take them in one order in every
    // batch, so that two batches wait for each other instead of deadlocking.
    ready.sort_by(|a, b| ledger_order(&a.intent).cmp(&ledger_order(&b.intent)));
    // A success's receipt is kept on its intent: by the move that records
    // it (an intent row's receipt goes with its move), or below when the
    // move is refused.
    for r in &mut ready {
        if let (Outcome::Succeeded, Some(receipt)) = (&r.outcome, &r.receipt) {
            r.intent.receipt.get_or_insert_with(|| receipt.clone());
        }
    }
    // Every intent moved by one statement; their settlements follow in
    // the order above.
    let moves = ready
        .iter()
        .map(|r| {
            let name = match r.outcome {
                Outcome::Succeeded => "provider_succeeded",
                _ => "provider_failed",
            };
            let mut event = Event::new(name, r.cause, r.actor);
            event.provider_ref = r.receipt.as_deref();
            event.note = r.note.as_deref();
            event.payload_digest = Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&r.row.body)));
            (r.intent.clone(), event)
        })
        .collect();
    let applied = engine.apply_many(tx, moves).await.map_err(JobError::retryable)?;
    let refused_receipts: Vec<(uuid::Uuid, &str)> = ready
        .iter()
        .zip(&applied)
        .filter_map(|(r, applied)| match (applied, &r.outcome, &r.receipt) {
            (Applied::Rejected { .. }, Outcome::Succeeded, Some(receipt)) => Some((r.intent.id, receipt.as_str())),
            _ => None,
        })
        .collect();
    intents::set_receipts(tx, &refused_receipts).await?;
    let mut finished = Vec::with_capacity(ready.len());
    for (r, applied) in ready.iter().zip(applied) {
        let (outcome, detail) = match applied {
            Applied::Moved { .. } => ("applied", failure_detail(&r.outcome)),
            Applied::Rejected {
                reason,
                contradicts_paid,
                ..
            } => (refused(contradicts_paid), Some(reason)),
            Applied::Lost { .. } => {
                return Err(JobError::retryable("an intent changed while its callback was applied"));
            }
        };
        finished.push((r.item, r.row, r.intent.id, outcome, detail));
    }
    let rows: Vec<inbox::Finished<'_>> = finished
        .iter()
        .zip(&ready)
        .map(|((_, row, intent_id, outcome, detail), r)| inbox::Finished {
            id: row.id,
            intent_id: Some(*intent_id),
            dedupe_key: Some(r.dedupe_key.as_str()),
            outcome,
            detail: detail.as_deref(),
        })
        .collect();
    inbox::finish_many(tx, &rows).await?;
    let mut counted = Vec::with_capacity(finished.len());
    for (item, row, _, outcome, _) in finished {
        counted.push((row, outcome));
        done.applied.push(item);
    }
    Ok((done, counted))
}

/// The order in which a batch settles its intents: by the account settling
/// locks (owner, campaign or party, currency), then by intent.
fn ledger_order(intent: &IntentRow) -> (&str, Option<&str>, &str, &str, uuid::Uuid) {
    (
        &intent.owner,
        intent.campaign_id.as_deref(),
        &intent.party_id,
        &intent.currency,
        intent.id,
    )
}

/// What a failed outcome said, for the inbox row.
fn failure_detail(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Failed { code, reason } => Some(format!("{code}: {reason}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobId;

    fn job(id: i64) -> JobContext {
        JobContext {
            id: JobId::from(id),
            kind: Arc::from("callback.test"),
            attempt: 1,
            max_attempts: 5,
            scheduled_at: chrono::Utc::now(),
            pool: sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("a lazy pool"),
            node: Arc::from("node"),
            lease_seq: 1,
            clock: crate::clock::Clock::Database,
        }
    }

    /// Runs `many` over three callbacks with `together`'s result; returns
    /// the answers and which callbacks went one by one.
    async fn run_many(together: Option<Result<BatchDone, JobError>>) -> (Vec<Result<(), JobError>>, Vec<u32>) {
        let alone = std::sync::Mutex::new(Vec::new());
        let items = vec![(job(1), 0u32), (job(2), 1), (job(3), 2)];
        let answers = many("test", items, together, |_, n| {
            alone.lock().unwrap().push(n);
            async move { Err(JobError::Snooze(std::time::Duration::from_secs(u64::from(n)))) }
        })
        .await;
        let mut alone = alone.into_inner().unwrap();
        alone.sort();
        (answers, alone)
    }

    #[tokio::test]
    async fn a_batch_answers_what_it_applied_and_leaves_the_rest_to_the_one_at_a_time_path() {
        let done = BatchDone {
            applied: vec![0],
            lease_lost: vec![1],
        };
        let (answers, alone) = run_many(Some(Ok(done))).await;
        assert_eq!(answers[0], Ok(()));
        assert!(matches!(&answers[1], Err(JobError::Retryable(why)) if why.contains("no longer leased")));
        assert_eq!(answers[2], Err(JobError::Snooze(std::time::Duration::from_secs(2))));
        assert_eq!(alone, vec![2]);
    }

    #[tokio::test]
    async fn a_failed_batch_sends_every_callback_down_the_one_at_a_time_path() {
        let (answers, alone) = run_many(Some(Err(JobError::retryable("deadlock detected")))).await;
        assert_eq!(alone, vec![0, 1, 2]);
        for (n, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer, Err(JobError::Snooze(std::time::Duration::from_secs(n as u64))));
        }
        // A lone callback (no batch) goes the same way.
        let (_, alone) = run_many(None).await;
        assert_eq!(alone, vec![0, 1, 2]);
    }
}
