//! The job workers that drive workflows: actions (named in workflow files,
//! registered here by name) and timers.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::engine::{find_timer, timer_key, ActionJob, Applied, Cause, Engine, Event, TimerJob};
use super::model::{Timer, Workflow};
use super::KnownNames;
use crate::runner::{Batcher, JobContext, JobError, NewJob, Registry, Worker};
use crate::store::grouped::Grouped;
use crate::store::intents::{self, IntentRow};

/// What an action runs with.
pub struct ActionContext {
    pub engine: Engine,
    pub job: JobContext,
    pub intent: IntentRow,
    /// Statements shared with the actions running beside this one.
    pub grouped: Grouped,
}

/// A named step of a workflow, run as a job when its state is entered (or by
/// a repeating timer). Actions must be idempotent or finish in one
/// transaction with `job.complete_in`, like every job.
pub trait Action: Send + Sync + 'static {
    fn run(&self, ctx: ActionContext) -> BoxFuture<'static, Result<(), JobError>>;
}

/// Actions by the name workflow files use.
#[derive(Clone, Default)]
pub struct Actions {
    by_name: BTreeMap<&'static str, Arc<dyn Action>>,
}

impl Actions {
    pub fn register(&mut self, name: &'static str, action: impl Action) -> &mut Self {
        let previous = self.by_name.insert(name, Arc::new(action));
        assert!(previous.is_none(), "action {name:?} registered twice");
        self
    }

    /// The names workflows may use: these actions and the engine's guards.
    pub fn known_names(&self) -> KnownNames {
        KnownNames {
            actions: self.by_name.keys().map(|n| n.to_string()).collect(),
            guards: super::engine::built_in_guards().keys().map(|n| n.to_string()).collect(),
        }
    }

    /// Registers the workers that run actions and timers on `registry`.
    pub fn register_workers(&self, engine: &Engine, grouped: &Grouped, registry: &mut Registry) {
        registry.register(ActionWorker {
            engine: engine.clone(),
            actions: self.clone(),
            grouped: grouped.clone(),
        });
        registry.register(TimerWorker { engine: engine.clone() });
    }
}

/// The provider clients this node has; an absent one means intents of
/// that provider wait (their provider is not configured on this node).
#[derive(Clone, Default)]
pub struct ProviderClients {
    pub mpesa: Option<Arc<crate::providers::mpesa::MpesaClient>>,
    /// Every other configured provider, by name, behind the shared adapter
    /// interface.
    pub adapters: BTreeMap<String, Arc<dyn crate::providers::adapter::Adapter>>,
    /// Their circuit breakers.
    pub circuits: crate::providers::circuit::Circuits,
}

/// The actions this build has. Provider calls (`submit`, `prompt`,
/// `query_status`) go to the intent's provider's adapter; a provider
/// without one leaves its intent where it is and says so in the log.
pub fn built_in_actions(providers: &ProviderClients) -> Actions {
    let mut actions = Actions::default();
    actions.register("release", Release::new(providers.clone()));
    for call in [
        ProviderCall::Submit,
        ProviderCall::Prompt,
        ProviderCall::QueryStatus,
        ProviderCall::Reverse,
    ] {
        actions.register(
            call.name(),
            ProviderAction {
                call,
                providers: providers.clone(),
            },
        );
    }
    actions
}

#[derive(Clone, Copy)]
enum ProviderCall {
    Submit,
    Prompt,
    QueryStatus,
    Reverse,
}

impl ProviderCall {
    fn name(self) -> &'static str {
        match self {
            ProviderCall::Submit => "submit",
            ProviderCall::Prompt => "prompt",
            ProviderCall::QueryStatus => "query_status",
            ProviderCall::Reverse => "request_reversal",
        }
    }
}

/// A provider call, routed to the intent's provider.
struct ProviderAction {
    call: ProviderCall,
    providers: ProviderClients,
}

impl Action for ProviderAction {
    fn run(&self, ctx: ActionContext) -> BoxFuture<'static, Result<(), JobError>> {
        use crate::providers::actions as shared;
        use crate::providers::mpesa::actions as mpesa;
        let call = self.call;
        if let Some(adapter) = self.providers.adapters.get(ctx.intent.provider.as_str()) {
            let provider = shared::Provider {
                adapter: Arc::clone(adapter),
                circuits: self.providers.circuits.clone(),
            };
            return match call {
                ProviderCall::Submit | ProviderCall::Prompt => Box::pin(shared::send(ctx, provider)),
                ProviderCall::QueryStatus => Box::pin(shared::query_status(ctx, provider)),
                ProviderCall::Reverse => NoProviderAdapter { action: call.name() }.run(ctx),
            };
        }
        match (ctx.intent.provider.as_str(), &self.providers.mpesa) {
            ("mpesa", Some(client)) => {
                let client = Arc::clone(client);
                let circuits = self.providers.circuits.clone();
                match call {
                    ProviderCall::Submit => Box::pin(mpesa::submit(ctx, client, circuits)),
                    ProviderCall::Prompt => Box::pin(mpesa::prompt(ctx, client, circuits)),
                    ProviderCall::QueryStatus => Box::pin(mpesa::query_status(ctx, client, circuits)),
                    ProviderCall::Reverse => Box::pin(mpesa::reverse(ctx, client, circuits)),
                }
            }
            _ => NoProviderAdapter { action: call.name() }.run(ctx),
        }
    }
}

/// `release`: a pending payout goes on to the provider, once nothing holds
/// it back. Today that is the provider's float (M-Pesa); the policy gates
/// (limits, approvals) join here.
///
/// Releases running at the same time on this node are applied together
/// ([`Batcher`]), in one transaction: the float is locked and read once,
/// each release takes its share of it in turn, every released job is
/// completed by one statement, and each intent moves by its own
/// compare-and-set. A batch that fails is retried one release at a time.
struct Release {
    batcher: Batcher<ActionContext, Result<(), JobError>>,
}

/// Most releases applied together.
const RELEASE_BATCH: usize = 64;
/// Batches of releases in progress at once on a node.
const RELEASE_LANES: usize = 2;

impl Release {
    fn new(providers: ProviderClients) -> Release {
        let providers = Arc::new(providers);
        Release {
            batcher: Batcher::new("release", RELEASE_BATCH, RELEASE_LANES, move |items| {
                let providers = Arc::clone(&providers);
                async move { release_batch(&providers, items).await }.boxed()
            }),
        }
    }
}

/// Releases a batch together; should that fail, one at a time.
async fn release_batch(providers: &ProviderClients, items: Vec<ActionContext>) -> Vec<Result<(), JobError>> {
    match release_together(providers, &items).await {
        Ok(answers) => answers,
        Err(error) if items.len() > 1 => {
            metrics::counter!("tuma_batch_fallbacks_total", "batch" => "release").increment(1);
            tracing::warn!(%error, releases = items.len(), "a batch of releases rolled back; one at a time");
            let mut answers = Vec::with_capacity(items.len());
            for item in &items {
                let answer = release_together(providers, std::slice::from_ref(item)).await;
                answers.push(answer.and_then(|mut one| one.pop().expect("one answer per release")));
            }
            answers
        }
        Err(error) => vec![Err(error)],
    }
}

/// How long a held payout waits before it is looked at again.
const HOLD_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl Action for Release {
    fn run(&self, ctx: ActionContext) -> BoxFuture<'static, Result<(), JobError>> {
        let batcher = self.batcher.clone();
        Box::pin(async move { batcher.run(ctx).await.unwrap_or_else(|e| Err(JobError::retryable(e))) })
    }
}

/// The M-Pesa client whose float gates `intent`'s release, if any.
fn float_gate<'p>(
    providers: &'p ProviderClients,
    intent: &IntentRow,
) -> Option<&'p crate::providers::mpesa::MpesaClient> {
    match (&providers.mpesa, intent.kind.as_str(), intent.provider.as_str()) {
        (Some(client), "payout", "mpesa") if client.config().float_check => Some(client),
        _ => None,
    }
}

/// Releases `items` in one transaction; one answer per item.
async fn release_together(
    providers: &ProviderClients,
    items: &[ActionContext],
) -> Result<Vec<Result<(), JobError>>, JobError> {
    use crate::providers::mpesa::float;
    let Some(first) = items.first() else {
        return Ok(Vec::new());
    };
    let mut tx = first.job.pool().begin().await?;
    let mut answers: Vec<Option<Result<(), JobError>>> = vec![None; items.len()];
    let mut budget = None;
    let mut held_any = false;
    for (i, ctx) in items.iter().enumerate() {
        let Some(client) = float_gate(providers, &ctx.intent) else {
            continue;
        };
        let budget = match &mut budget {
            Some(budget) => budget,
            None => budget.insert(float::budget(&mut tx, client.config(), ctx.job.clock().local_now()).await?),
        };
        let tariff: rust_decimal::Decimal = ctx
            .intent
            .fees
            .as_ref()
            .and_then(|f| f["provider_fee"].as_str())
            .and_then(|f| f.parse().ok())
            .unwrap_or_default();
        if let float::Gate::Hold(reason) = budget.take(ctx.intent.amount + tariff) {
            tracing::info!(intent_id = %ctx.intent.id, reason, "payout held");
            crate::store::floats::set_hold_reason(&mut tx, ctx.intent.id, Some(&reason)).await?;
            answers[i] = Some(Err(JobError::Snooze(HOLD_RETRY)));
            held_any = true;
        }
    }
    if held_any {
        float::request_report(first.engine.jobs(), &mut tx).await?;
    }
    // Intents in id order, as every batch takes them.
    let mut releasing: Vec<usize> = (0..items.len()).filter(|&i| answers[i].is_none()).collect();
    releasing.sort_by_key(|&i| items[i].intent.id);
    // Locked before anything of them is written: the moves below find
    // their rows by address ([`intents::move_and_record_many`]).
    let ids: Vec<uuid::Uuid> = releasing.iter().map(|&i| items[i].intent.id).collect();
    intents::lock_many(&mut tx, &ids).await?;
    let jobs: Vec<&JobContext> = releasing.iter().map(|&i| &items[i].job).collect();
    let held = JobContext::complete_all_in(&mut tx, &jobs).await?;
    let mut moving = Vec::with_capacity(releasing.len());
    for (&i, held) in releasing.iter().zip(held) {
        let ctx = &items[i];
        if !held {
            answers[i] = Some(Err(JobError::retryable(
                "the job is no longer leased to this node; its release was left out",
            )));
            continue;
        }
        if ctx.intent.hold_reason.is_some() {
            crate::store::floats::set_hold_reason(&mut tx, ctx.intent.id, None).await?;
        }
        moving.push(i);
    }
    // Each intent as its action worker read it: the compare-and-set finds
    // out if it moved since. All moved by one statement.
    let applied = first
        .engine
        .apply_many(
            &mut tx,
            moving
                .iter()
                .map(|&i| (items[i].intent.clone(), Event::new("release", Cause::Policy, "engine")))
                .collect(),
        )
        .await
        .map_err(JobError::retryable)?;
    let mut refused = Vec::new();
    for (&i, applied) in moving.iter().zip(applied) {
        if let Applied::Rejected { reason, .. } = applied {
            refused.push((items[i].intent.id, reason));
        }
        answers[i] = Some(Ok(()));
    }
    tx.commit().await?;
    for (intent_id, reason) in refused {
        tracing::warn!(%intent_id, reason, "release was not applied");
    }
    Ok(answers
        .into_iter()
        .map(|answer| answer.expect("every release answered"))
        .collect())
}

/// Stands for a provider call the intent's provider cannot make here (not
/// configured on this node, or a reversal through a provider other than
/// Daraja): the intent keeps waiting for the provider's word or a person,
/// which is the truthful state; nothing is invented.
struct NoProviderAdapter {
    action: &'static str,
}

impl Action for NoProviderAdapter {
    fn run(&self, ctx: ActionContext) -> BoxFuture<'static, Result<(), JobError>> {
        let action = self.action;
        Box::pin(async move {
            tracing::warn!(
                intent_id = %ctx.intent.id,
                provider = ctx.intent.provider,
                action,
                "this provider cannot make this call here; the intent waits"
            );
            Ok(())
        })
    }
}

struct ActionWorker {
    engine: Engine,
    actions: Actions,
    grouped: Grouped,
}

impl Worker for ActionWorker {
    type Args = ActionJob;

    async fn work(&self, ctx: JobContext, args: ActionJob) -> Result<(), JobError> {
        let Some(action) = self.actions.by_name.get(args.action.as_str()).cloned() else {
            return Err(JobError::fatal(format!("no action {:?} is registered", args.action)));
        };
        let Some(intent) = self.grouped.intent(args.intent_id).await? else {
            return Err(JobError::fatal(format!("intent {} does not exist", args.intent_id)));
        };
        if intent.state != args.state || intent.state_version != args.version {
            // The intent has moved on since this action was enqueued.
            tracing::debug!(intent_id = %intent.id, action = args.action, "stale action skipped");
            return Ok(());
        }
        action
            .run(ActionContext {
                engine: self.engine.clone(),
                job: ctx,
                intent,
                grouped: self.grouped.clone(),
            })
            .await
    }
}

struct TimerWorker {
    engine: Engine,
}

impl Worker for TimerWorker {
    type Args = TimerJob;

    async fn work(&self, ctx: JobContext, args: TimerJob) -> Result<(), JobError> {
        let mut tx = ctx.pool().begin().await?;
        let Some(intent) = intents::get(&mut tx, args.intent_id).await? else {
            return Err(JobError::fatal(format!("intent {} does not exist", args.intent_id)));
        };
        if intent.state != args.state || intent.state_version != args.version {
            // Disarmed: the intent left the state this timer belongs to.
            ctx.complete_in(&mut tx).await?;
            tx.commit().await?;
            return Ok(());
        }
        let workflow = self
            .engine
            .workflows()
            .get(&intent.kind)
            .cloned()
            .ok_or_else(|| JobError::fatal(format!("no workflow {:?}", intent.kind)))?;
        let Some(timer) = find_timer(&workflow, &args.state, &args.timer) else {
            return Err(JobError::fatal(format!(
                "state {:?} has no timer {:?}",
                args.state, args.timer
            )));
        };
        let actor = format!("timer:{}", args.timer);
        match timer {
            Timer::Once { event, .. } => {
                self.fire_event(&mut tx, &intent, event, &actor).await?;
            }
            Timer::Repeat {
                every,
                max_fires,
                action,
                exhausted_event,
                ..
            } => {
                if self.entry_actions_pending(&mut tx, &workflow, &args).await? {
                    // The state's own work has not been done yet (a
                    // submission waiting in a paused or busy provider queue,
                    // or for its retry): nothing has been asked that a poll
                    // could follow up, so the polls and their budget wait.
                    return Err(JobError::Snooze(*every));
                }
                if args.fire > *max_fires {
                    self.fire_event(&mut tx, &intent, exhausted_event, &actor).await?;
                } else {
                    let jobs = [
                        self.engine
                            .action_job(&workflow, &intent, action, &args.state, args.version, Some(args.fire)),
                        NewJob::new(&TimerJob {
                            fire: args.fire + 1,
                            ..args.clone()
                        })
                        .run_after(*every)
                        .unique_key(timer_key(
                            intent.id,
                            &args.timer,
                            args.version,
                            args.fire + 1,
                        )),
                    ];
                    self.engine.jobs().enqueue_many(&mut tx, &jobs).await?;
                }
            }
        }
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl TimerWorker {
    /// Whether a job running one of the state's `on_enter` actions for this
    /// visit is still waiting or running.
    async fn entry_actions_pending(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        workflow: &Workflow,
        args: &TimerJob,
    ) -> Result<bool, JobError> {
        let keys: Vec<String> = workflow
            .states
            .get(&args.state)
            .map(|state| state.on_enter.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|action| super::engine::action_key(args.intent_id, action, args.version, None))
            .collect();
        if keys.is_empty() {
            return Ok(false);
        }
        let pending = crate::runner::store::unique_keys_pending(&mut **tx, &keys).await?;
        Ok(pending)
    }

    async fn fire_event(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        intent: &IntentRow,
        event: &str,
        actor: &str,
    ) -> Result<(), JobError> {
        let event = Event::new(event, Cause::Timer, actor);
        self.engine
            .apply(tx, intent.id, &event)
            .await
            .map_err(JobError::retryable)?;
        Ok(())
    }
}
