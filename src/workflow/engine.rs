//! The transition engine: the only code that changes an intent's state.
//!
//! [`Engine::apply`] applies one event to one intent inside the caller's
//! transaction: it looks the transition up in the loaded workflow, checks its
//! guard, moves the state with a compare-and-set, appends the event to
//! `intent_events`, and enqueues what the new state asks for (its on-enter
//! actions, its timers) and the outbound notifications. Everything commits
//! together or not at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::model::{State, Timer, Workflow};
use super::Workflows;
use crate::domain::{IntentId, Money, Msisdn, PartyId};
use crate::runner::{JobArgs, JobClient, NewJob};
use crate::store::intents::{self, Entering, IntentRow, NewEvent};
use crate::store::late_successes;

/// What caused an event; recorded with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Api,
    Callback,
    Poll,
    Timer,
    Admin,
    Policy,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Api => "api",
            Cause::Callback => "callback",
            Cause::Poll => "poll",
            Cause::Timer => "timer",
            Cause::Admin => "admin",
            Cause::Policy => "policy",
        }
    }
}

/// An event to apply.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub name: &'a str,
    pub cause: Cause,
    /// Who: an API key name, an admin, `timer:<name>`, `engine`.
    pub actor: &'a str,
    pub provider_ref: Option<&'a str>,
    /// SHA-256 (hex) of what carried the event, e.g. a callback body.
    pub payload_digest: Option<String>,
    /// Why, in a person's words (an admin's evidence), kept with the event.
    pub note: Option<&'a str>,
}

impl<'a> Event<'a> {
    pub fn new(name: &'a str, cause: Cause, actor: &'a str) -> Event<'a> {
        Event {
            name,
            cause,
            actor,
            provider_ref: None,
            payload_digest: None,
            note: None,
        }
    }
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The state moved.
    Moved { from: String, to: String, event_id: i64 },
    /// The event is not legal in the current state, or its guard said no;
    /// recorded, state unchanged.
    Rejected {
        state: String,
        reason: String,
        event_id: i64,
        /// The provider said the money did not move (`provider_failed`)
        /// of an intent that had ended saying it did: a contradiction a
        /// person must judge (see [`PROVIDER_FAILED`]).
        contradicts_paid: bool,
    },
    /// Someone moved the intent between our read and our write. Normal
    /// under concurrency; nothing was written.
    Lost { expected: String },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no intent {0}")]
    NotFound(Uuid),
    #[error("no workflow for intent kind {0:?}")]
    UnknownKind(String),
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The event by which a provider says the money moved. Refused on an
/// intent that ended without it, it is a contradiction a person must
/// settle: counted, logged, and listed by reconciliation.
pub const PROVIDER_SUCCEEDED: &str = "provider_succeeded";

/// The event by which a provider says the money did not move. Refused on
/// an intent that ended saying it did (a payout completed on an admin's
/// evidence, a collection credited), it is a contradiction too: the
/// callback that told it is listed by reconciliation (`contradicts_final`)
/// until a person reviews it.
pub const PROVIDER_FAILED: &str = "provider_failed";

/// Counts (in `counter`, by kind, state and provider) and logs as a
/// warning a provider's `event` refused because it contradicts how
/// `intent` ended.
fn contradiction(counter: &'static str, intent: &IntentRow, event: &Event<'_>, message: &str) {
    metrics::counter!(
        counter,
        "kind" => intent.kind.clone(),
        "state" => intent.state.clone(),
        "provider" => intent.provider.clone()
    )
    .increment(1);
    tracing::warn!(
        intent_id = %intent.id,
        kind = intent.kind,
        state = intent.state,
        provider = intent.provider,
        cause = event.cause.as_str(),
        "{message}"
    );
}

/// A guard: may this event move this intent? `Err` says why not.
pub type Guard = fn(&IntentRow, &Event<'_>) -> Result<(), String>;

/// Guards by the name workflow files use.
pub fn built_in_guards() -> BTreeMap<&'static str, Guard> {
    BTreeMap::from([
        ("actor_is_not_creator", actor_is_not_creator as Guard),
        ("provider_knows_the_request", provider_knows_the_request as Guard),
        ("request_not_started", request_not_started as Guard),
    ])
}

/// Only an intent whose request nobody has begun to send can be stopped: a
/// collection's prompt, once sent, may be paid whatever we decide, and the
/// provider's word must then settle it. Read under the intent's lock (the
/// cancel takes it), which the sender's mark takes too.
fn request_not_started(intent: &IntentRow, _event: &Event<'_>) -> Result<(), String> {
    match intent.request_started_at {
        None => Ok(()),
        Some(_) => Err(format!(
            "its request to {} has been sent (the payer may already be paying), so only the provider's answer can end it",
            intent.provider
        )),
    }
}

/// Only a request the provider has named can be declared unanswered: an
/// M-Pesa prompt whose answer was lost (a timeout, an engine killed before
/// it could record the CheckoutRequestID) may have been paid, and with no
/// id there is nothing to ask. Such an intent waits for its callback, or
/// for the polls to run out and make it `unresolved`, instead of a guess.
fn provider_knows_the_request(intent: &IntentRow, _event: &Event<'_>) -> Result<(), String> {
    if intent.provider_ref.is_some() {
        Ok(())
    } else {
        Err(
            "the provider never named this request (its answer was lost and no callback came), \
             so whether the payer paid cannot be asked; not declared expired"
                .to_owned(),
        )
    }
}

/// Maker-checker: whoever created an intent cannot approve or reject it.
fn actor_is_not_creator(intent: &IntentRow, event: &Event<'_>) -> Result<(), String> {
    if intent.created_by == event.actor {
        Err(format!(
            "{} created this intent and cannot also decide on it",
            event.actor
        ))
    } else {
        Ok(())
    }
}

/// A new intent, already parsed into domain values.
#[derive(Debug, Clone)]
pub struct NewIntent {
    pub kind: String,
    pub owner: String,
    pub created_by: String,
    pub party_id: PartyId,
    pub amount: Money,
    pub msisdn: Msisdn,
    pub provider: String,
    pub reference: String,
    pub metadata: serde_json::Value,
    /// Money and policy terms (payouts; collections into a campaign).
    pub terms: IntentTerms,
}

/// What policy decided about an intent when it was admitted.
#[derive(Debug, Clone, Default)]
pub struct IntentTerms {
    pub fees: Option<serde_json::Value>,
    pub quote_id: Option<Uuid>,
    pub usd_equivalent: Option<rust_decimal::Decimal>,
    pub approvals_required: i16,
    pub campaign_id: Option<String>,
    pub batch_id: Option<Uuid>,
    /// The intent this one was started by (it hears when this one ends).
    pub parent_id: Option<Uuid>,
    /// Our id for its request to the provider, when it is fixed as the
    /// intent is created (payouts): committed with the intent, so the
    /// submission need not write it first.
    pub request_id: Option<String>,
}

/// Job arguments: run a workflow action for one visit to a state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionJob {
    pub intent_id: Uuid,
    pub action: String,
    pub state: String,
    pub version: i32,
}

impl JobArgs for ActionJob {
    const KIND: &'static str = "workflow.action";
}

/// Job arguments: a state's timer firing for the `fire`th time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimerJob {
    pub intent_id: Uuid,
    pub state: String,
    pub version: i32,
    pub timer: String,
    pub fire: u32,
}

impl JobArgs for TimerJob {
    const KIND: &'static str = "workflow.timer";
}

/// Job arguments: a child intent (one created with a `parent_id`) reached
/// a final state. The parent's kind decides what that means (a loan's
/// disbursement completed, its reminder was paid).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSettled {
    pub parent_id: Uuid,
    pub child_id: Uuid,
    pub state: String,
}

impl JobArgs for ChildSettled {
    const KIND: &'static str = "intent.child_settled";
}

/// The unique key of the [`ChildSettled`] job of a child's move to a final
/// state at `version`.
fn child_settled_key(child_id: Uuid, version: i32) -> String {
    format!("child:{child_id}:{version}")
}

/// Whether the parent of `child`, a final intent, has still to hear that
/// it settled: its [`ChildSettled`] job is queued or running (or waiting
/// to retry). Until then whatever the parent does with it, such as a
/// loan's repayment from a paid reminder, is not written yet.
pub async fn parent_still_to_hear(conn: &mut PgConnection, child: &IntentRow) -> Result<bool, sqlx::Error> {
    if child.parent_id.is_none() {
        return Ok(false);
    }
    let key = child_settled_key(child.id, child.state_version);
    Ok(crate::runner::store::live_by_unique_key(conn, &key).await?.is_some())
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    workflows: Workflows,
    guards: BTreeMap<&'static str, Guard>,
    jobs: JobClient,
    /// Runner queues named after a provider: provider calls go there, under
    /// that queue's concurrency and rate limit.
    provider_queues: std::collections::BTreeSet<String>,
    /// The KYC tier of a party first met when a settlement credits it
    /// (`policy.default_kyc_tier`).
    default_party_tier: i16,
}

impl Engine {
    /// An engine whose provider calls run on the queues in `provider_queues`
    /// named after their provider (others on the default queue), and whose
    /// settlements create a party they credit and have not met with
    /// `default_party_tier`.
    pub fn new(
        workflows: Workflows,
        jobs: JobClient,
        provider_queues: impl IntoIterator<Item = String>,
        default_party_tier: i16,
    ) -> Engine {
        Engine {
            inner: Arc::new(EngineInner {
                workflows,
                guards: built_in_guards(),
                jobs,
                provider_queues: provider_queues.into_iter().collect(),
                default_party_tier,
            }),
        }
    }

    /// The job that runs `action` for one visit to `state` of `intent`;
    /// `fire` tells repeats of a timer's action apart.
    pub(crate) fn action_job(
        &self,
        workflow: &Workflow,
        intent: &IntentRow,
        action: &str,
        state: &str,
        version: i32,
        fire: Option<u32>,
    ) -> NewJob {
        let spec = workflow.actions.get(action).expect("validated: actions are declared");
        let intent_id = intent.id;
        let key = action_key(intent_id, action, version, fire);
        let job = NewJob::new(&ActionJob {
            intent_id,
            action: action.to_owned(),
            state: state.to_owned(),
            version,
        })
        .max_attempts(spec.max_attempts as i32)
        .timeout(spec.timeout)
        .retry_policy(spec.retry)
        .unique_key(key);
        if spec.provider_call && self.inner.provider_queues.contains(&intent.provider) {
            job.queue(intent.provider.clone())
        } else {
            job
        }
    }

    pub fn workflows(&self) -> &Workflows {
        &self.inner.workflows
    }

    pub fn jobs(&self) -> &JobClient {
        &self.inner.jobs
    }

    fn workflow(&self, kind: &str) -> Result<&Arc<Workflow>, EngineError> {
        self.inner
            .workflows
            .get(kind)
            .ok_or_else(|| EngineError::UnknownKind(kind.to_owned()))
    }

    /// [`Engine::create`] for many intents with one statement: each with
    /// its first event and its first state's jobs. An intent given an event
    /// takes it at once: when the event is legal in the initial state and
    /// leads to a state that neither ends the intent nor settles money, the
    /// intent is written already there, with both events in its history and
    /// only the jobs of the state it is in (a payout nothing holds back
    /// skips a release job); otherwise it is created in its initial state
    /// and the event applied as [`Engine::apply_many`] would, rejection
    /// recorded (before anything the caller writes afterwards in the same
    /// transaction, such as a payout's hold: give only events whose effects
    /// do not depend on that). Returns the rows, as written, in the order
    /// given.
    pub async fn create_many(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        news: Vec<(NewIntent, Option<Event<'_>>)>,
    ) -> Result<Vec<IntentRow>, EngineError> {
        let now = self.inner.jobs.clock().sql_now();
        let mut rows = Vec::with_capacity(news.len());
        let mut firsts: Vec<Option<Event<'_>>> = Vec::with_capacity(news.len());
        let mut initials: Vec<String> = Vec::with_capacity(news.len());
        let mut later = Vec::new();
        let mut jobs = Vec::new();
        for (i, (new, then)) in news.into_iter().enumerate() {
            let workflow = Arc::clone(self.workflow(&new.kind)?);
            let mut row = new_row(new, &workflow.initial);
            // Taken at once when it is legal and leads to a state with no
            // settling to do; otherwise applied the usual way below.
            let folded = then.as_ref().and_then(|event| {
                let to = &self.transition_for(&workflow, &row, event).ok()?.to;
                let spec = workflow.state(to)?;
                (!spec.is_final && spec.ledger.is_none()).then(|| to.clone())
            });
            match (folded, then) {
                (Some(to), Some(event)) => {
                    row.state = to;
                    row.state_version = 1;
                    firsts.push(Some(event));
                }
                (_, then) => {
                    later.extend(then.map(|event| (i, event)));
                    firsts.push(None);
                }
            }
            jobs.extend(self.state_jobs(&workflow, &row, &row.state, row.state_version));
            initials.push(workflow.initial.clone());
            rows.push(row);
        }
        let moves: Vec<Option<intents::FirstMove<'_>>> = firsts
            .iter()
            .zip(&initials)
            .map(|(first, initial)| {
                first.as_ref().map(|event| intents::FirstMove {
                    event: event.name,
                    from_state: initial,
                    cause: event.cause.as_str(),
                    actor: event.actor,
                })
            })
            .collect();
        let notify = self.inner.jobs.notify_for(&jobs);
        let written = intents::insert_intents(tx, &rows, &moves, Cause::Api.as_str(), now, &jobs, notify).await?;
        drop(moves);
        for (((row, written), first), initial) in rows.iter_mut().zip(written).zip(&firsts).zip(&initials) {
            row.created_at = written.created_at;
            row.updated_at = written.created_at;
            self.deliver(tx, written.event_id, &written.endpoints).await?;
            tracing::info!(intent_id = %row.id, kind = row.kind, state = initial, "intent created");
            if let (Some(event), Some(event_id)) = (first, written.moved_event_id) {
                self.deliver(tx, event_id, &written.endpoints).await?;
                metrics::counter!(
                    "tuma_intent_transitions_total",
                    "kind" => row.kind.clone(),
                    "from" => initial.clone(),
                    "to" => row.state.clone(),
                    "cause" => event.cause.as_str()
                )
                .increment(1);
                tracing::info!(intent_id = %row.id, from = initial, to = row.state, event = event.name, cause = event.cause.as_str(), "transition");
            }
        }
        if !later.is_empty() {
            let items = later
                .iter()
                .map(|(i, event)| (rows[*i].clone(), event.clone()))
                .collect();
            for ((i, _), applied) in later.iter().zip(self.apply_many(tx, items).await?) {
                if let Applied::Moved { to, .. } = applied {
                    rows[*i].state = to;
                    rows[*i].state_version += 1;
                }
            }
        }
        Ok(rows)
    }

    /// Creates an intent in its workflow's initial state, records the
    /// creation as its first event, and starts what that state asks for.
    pub async fn create(&self, tx: &mut Transaction<'_, Postgres>, new: NewIntent) -> Result<IntentRow, EngineError> {
        let workflow = Arc::clone(self.workflow(&new.kind)?);
        let now = self.inner.jobs.clock().sql_now();
        let mut row = new_row(new, &workflow.initial);
        let jobs = self.state_jobs(&workflow, &row, &row.state, row.state_version);
        let (created_at, event_id, endpoints) = intents::insert_intent(
            tx,
            &row,
            &NewEvent {
                intent_id: row.id,
                event: "create",
                from_state: None,
                to_state: Some(&row.state),
                outcome: "applied",
                reason: None,
                cause: Cause::Api.as_str(),
                actor: &row.created_by,
                provider_ref: None,
                payload_digest: None,
            },
            Some(&row.owner),
            now,
            &jobs,
            self.inner.jobs.notify_for(&jobs),
        )
        .await?;
        row.created_at = created_at;
        row.updated_at = created_at;
        self.deliver(tx, event_id, &endpoints).await?;
        tracing::info!(intent_id = %row.id, kind = row.kind, state = row.state, "intent created");
        Ok(row)
    }

    /// Applies `event` to intent `id` in the caller's transaction. The
    /// intent is read under its row lock, so no other move can come between
    /// the read and the compare-and-set: a provider's answer that arrives
    /// while another move is being written waits for it and is then judged
    /// against the state it left, never dropped as `Lost`.
    pub async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: Uuid,
        event: &Event<'_>,
    ) -> Result<Applied, EngineError> {
        let intent = intents::get_for_update(tx, id)
            .await?
            .ok_or(EngineError::NotFound(id))?;
        self.apply_to(tx, intent, event).await
    }

    /// Applies `event` to `intent` as the caller has just read it (ideally
    /// locked, in this transaction), saving the engine's own read. The
    /// compare-and-set still guards it: if the row has moved on since it was
    /// read, nothing is written and the answer is `Lost`.
    pub async fn apply_to(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        intent: IntentRow,
        event: &Event<'_>,
    ) -> Result<Applied, EngineError> {
        let id = intent.id;
        let workflow = Arc::clone(self.workflow(&intent.kind)?);
        let now = self.inner.jobs.clock().sql_now();
        let transition = match self.transition_for(&workflow, &intent, event) {
            Ok(transition) => transition,
            Err(reason) => return self.reject(tx, intent, event, reason).await,
        };
        let to = transition.to.clone();
        let is_final = workflow.state(&to).is_some_and(|s| s.is_final);
        // The compare-and-set moves the version one on.
        let jobs = self.state_jobs(&workflow, &intent, &to, intent.state_version + 1);
        let entering = Entering {
            withdraw: &Self::armed_timers(&workflow, &intent),
            jobs: &jobs,
            notify: self.inner.jobs.notify_for(&jobs),
        };
        let Some((version, event_id, endpoints)) = intents::move_and_record(
            tx,
            &Self::new_event(&intent, event, Some(&to), "applied", event.note),
            intent.state_version,
            is_final,
            Some(&intent.owner),
            now,
            &entering,
        )
        .await?
        else {
            tracing::info!(intent_id = %id, expected = intent.state, event = event.name, "state changed concurrently; event not applied");
            return Ok(Applied::Lost { expected: intent.state });
        };
        debug_assert_eq!(version, intent.state_version + 1);
        self.after_move(tx, intent, event, to, is_final, version, event_id, &endpoints, false)
            .await
    }

    /// The transition `event` takes `intent` through, or why it may not.
    fn transition_for<'w>(
        &self,
        workflow: &'w Workflow,
        intent: &IntentRow,
        event: &Event<'_>,
    ) -> Result<&'w crate::workflow::model::Transition, String> {
        match workflow.transition(&intent.state, event.name) {
            None => Err(format!(
                "event {:?} is not allowed in state {:?} (allowed: {})",
                event.name,
                intent.state,
                workflow.events_from(&intent.state).join(", ")
            )),
            Some(transition) => match &transition.guard {
                Some(guard) => (self.inner.guards[guard.as_str()])(intent, event).map(|()| transition),
                None => Ok(transition),
            },
        }
    }

    /// Whether `intent` sits in a final state for which `ended` holds
    /// ([`State::ends_unpaid`], [`State::ends_paid`]).
    fn ended(&self, intent: &IntentRow, ended: fn(&State) -> bool) -> Result<bool, EngineError> {
        let workflow = self.workflow(&intent.kind)?;
        Ok(workflow.state(&intent.state).is_some_and(ended))
    }

    /// Records `event` as rejected on `intent` for `reason`.
    async fn reject(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        intent: IntentRow,
        event: &Event<'_>,
        reason: String,
    ) -> Result<Applied, EngineError> {
        let now = self.inner.jobs.clock().sql_now();
        // The provider says the money moved, and the intent ended saying
        // it did not (its hold released, or nothing credited): a late
        // success. Its owner is told (the product may have sent the money
        // again meanwhile); other refusals concern nobody outside.
        let late = event.name == PROVIDER_SUCCEEDED && self.ended(&intent, State::ends_unpaid)?;
        let contradicts_paid = event.name == PROVIDER_FAILED && self.ended(&intent, State::ends_paid)?;
        let rejected = Self::new_event(&intent, event, None, "rejected", Some(&reason));
        let deliver_to = late.then_some(intent.owner.as_str());
        let (event_id, endpoints) = intents::insert_event(tx, &rejected, deliver_to, now).await?;
        tracing::info!(intent_id = %intent.id, state = intent.state, event = event.name, reason, "event rejected");
        if late {
            // No transition may follow, so a person must. Recorded as a late
            // success, it is in every reconciliation report until a person
            // settles it with evidence.
            if late_successes::record(tx, intent.id, event_id, now).await? {
                // Told once: the provider saying it again is the same money.
                self.deliver(tx, event_id, &endpoints).await?;
            }
            contradiction(
                "tuma_late_successes_refused_total",
                &intent,
                event,
                "the provider reported success for an intent that had already ended without it: \
                 money may have moved that the ledger does not show; listed for reconciliation",
            );
        }
        if contradicts_paid {
            contradiction(
                "tuma_contradicting_failures_total",
                &intent,
                event,
                "the provider reported failure for an intent that had already ended paid: \
                 the ledger may show money that did not move; a person must judge",
            );
        }
        Ok(Applied::Rejected {
            state: intent.state,
            reason,
            event_id,
            contradicts_paid,
        })
    }

    /// [`Engine::apply_to`] for many intents (each as its caller just read
    /// it) in one transaction: every move is written by one statement, each
    /// intent still by its own compare-and-set; rejections are recorded
    /// one by one. What follows each move (its ledger effect, its webhook
    /// deliveries) runs in the order given, so callers that order their
    /// items by the accounts settling locks keep two batches from
    /// deadlocking. One answer per item, in order.
    pub async fn apply_many(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        items: Vec<(IntentRow, Event<'_>)>,
    ) -> Result<Vec<Applied>, EngineError> {
        let now = self.inner.jobs.clock().sql_now();
        let mut answers: Vec<Option<Applied>> = items.iter().map(|_| None).collect();
        // Per item that may move: where it goes, whether that ends it, and
        // the timers it leaves.
        let mut plans: Vec<Option<(String, bool, Vec<String>)>> = Vec::with_capacity(items.len());
        let mut jobs = Vec::new();
        for (i, (intent, event)) in items.iter().enumerate() {
            let workflow = Arc::clone(self.workflow(&intent.kind)?);
            match self.transition_for(&workflow, intent, event) {
                Ok(transition) => {
                    let to = transition.to.clone();
                    let is_final = workflow.state(&to).is_some_and(|s| s.is_final);
                    jobs.extend(self.state_jobs(&workflow, intent, &to, intent.state_version + 1));
                    plans.push(Some((to, is_final, Self::armed_timers(&workflow, intent))));
                }
                Err(reason) => {
                    answers[i] = Some(self.reject(tx, intent.clone(), event, reason).await?);
                    plans.push(None);
                }
            }
        }
        let moves: Vec<intents::Move<'_>> = items
            .iter()
            .zip(&plans)
            .filter_map(|((intent, event), plan)| {
                let (to, is_final, withdraw) = plan.as_ref()?;
                Some(intents::Move {
                    event: Self::new_event(intent, event, Some(to), "applied", event.note),
                    version: intent.state_version,
                    is_final: *is_final,
                    deliver_to: &intent.owner,
                    withdraw,
                    receipt: intent.receipt.as_deref(),
                })
            })
            .collect();
        let notify = self.inner.jobs.notify_for(&jobs);
        let moved = if moves.is_empty() {
            Vec::new()
        } else {
            intents::move_and_record_many(tx, &moves, now, &jobs, notify).await?
        };
        drop(moves);
        // The payouts that moved into a state with a ledger effect: their
        // holds posted or voided with one statement, in account order. Only
        // when nothing else in the batch settles: other kinds lock their
        // accounts one by one in the caller's order, and the two orders
        // mixed could deadlock two batches.
        let mut outcomes = moved.into_iter();
        let moved: Vec<Option<_>> = plans
            .iter()
            .map(|plan| plan.as_ref().and_then(|_| outcomes.next().expect("an answer per move")))
            .collect();
        let mut payouts = Vec::new();
        let mut others_settle = false;
        for ((intent, _), (plan, moved)) in items.iter().zip(plans.iter().zip(&moved)) {
            let (Some((to, _, _)), Some(_)) = (plan, moved) else {
                continue;
            };
            let workflow = self.workflow(&intent.kind)?;
            match (workflow.state(to).and_then(|s| s.ledger), intent.kind.as_str()) {
                (Some(effect), "payout") => payouts.push((intent, effect)),
                (Some(_), _) => others_settle = true,
                (None, _) => {}
            }
        }
        let together = !payouts.is_empty() && !others_settle;
        if together {
            crate::policy::settle_payouts(tx, &payouts, now).await?;
        }
        drop(payouts);
        for (i, ((intent, event), (plan, moved))) in items.into_iter().zip(plans.into_iter().zip(moved)).enumerate() {
            let Some((to, is_final, _)) = plan else { continue };
            answers[i] = Some(match moved {
                Some((version, event_id, endpoints)) => {
                    debug_assert_eq!(version, intent.state_version + 1);
                    let settled = together && intent.kind == "payout";
                    self.after_move(tx, intent, &event, to, is_final, version, event_id, &endpoints, settled)
                        .await?
                }
                None => {
                    tracing::info!(intent_id = %intent.id, expected = intent.state, event = event.name, "state changed concurrently; event not applied");
                    Applied::Lost { expected: intent.state }
                }
            });
        }
        Ok(answers.into_iter().map(|a| a.expect("every item answered")).collect())
    }

    /// What follows a move, in its transaction: the new state's ledger
    /// effect (unless the caller `settled` it already), the webhook
    /// deliveries, the parent's notice, metrics.
    #[allow(clippy::too_many_arguments)]
    async fn after_move(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        intent: IntentRow,
        event: &Event<'_>,
        to: String,
        is_final: bool,
        version: i32,
        event_id: i64,
        endpoints: &[Uuid],
        settled: bool,
    ) -> Result<Applied, EngineError> {
        let id = intent.id;
        let now = self.inner.jobs.clock().sql_now();
        let workflow = Arc::clone(self.workflow(&intent.kind)?);
        if let (Some(effect), false) = (workflow.state(&to).and_then(|s| s.ledger), settled) {
            crate::policy::settle_intent(
                tx,
                &self.inner.jobs,
                &intent,
                effect,
                now,
                self.inner.default_party_tier,
            )
            .await?;
        }
        self.deliver(tx, event_id, endpoints).await?;
        metrics::counter!(
            "tuma_intent_transitions_total",
            "kind" => intent.kind.clone(),
            "from" => intent.state.clone(),
            "to" => to.clone(),
            "cause" => event.cause.as_str()
        )
        .increment(1);
        if is_final {
            let elapsed = (now.unwrap_or_else(chrono::Utc::now) - intent.created_at)
                .to_std()
                .unwrap_or_default();
            metrics::histogram!(
                "tuma_intent_time_to_final_seconds",
                "kind" => intent.kind.clone(),
                "provider" => intent.provider.clone(),
                "state" => to.clone()
            )
            .record(elapsed.as_secs_f64());
        }
        if let (true, Some(parent_id)) = (is_final, intent.parent_id) {
            let settled = ChildSettled {
                parent_id,
                child_id: id,
                state: to.clone(),
            };
            let job = NewJob::new(&settled).unique_key(child_settled_key(id, version));
            self.inner.jobs.enqueue(tx, &job).await?;
        }
        tracing::info!(intent_id = %id, from = intent.state, to, event = event.name, cause = event.cause.as_str(), "transition");
        Ok(Applied::Moved {
            from: intent.state,
            to,
            event_id,
        })
    }

    /// The unique keys of the timers of the state `intent` is leaving, to
    /// withdraw those that have not fired yet: each would only find the
    /// intent gone and do nothing, at the cost of a claim and a
    /// transaction. (One already running sees the same and does nothing.)
    fn armed_timers(workflow: &Workflow, intent: &IntentRow) -> Vec<String> {
        let Some(spec) = workflow.state(&intent.state) else {
            return Vec::new();
        };
        spec.timers
            .iter()
            .flat_map(|timer| {
                let fires = match timer {
                    Timer::Once { .. } => 1,
                    // The last fire applies the exhausted event.
                    Timer::Repeat { max_fires, .. } => max_fires + 1,
                };
                (1..=fires).map(move |fire| timer_key(intent.id, timer.name(), intent.state_version, fire))
            })
            .collect()
    }

    /// The row recording `event` on `intent`: applied (moving it `to` a
    /// state) or rejected (with `reason`).
    fn new_event<'a>(
        intent: &'a IntentRow,
        event: &'a Event<'_>,
        to: Option<&'a str>,
        outcome: &'a str,
        reason: Option<&'a str>,
    ) -> NewEvent<'a> {
        NewEvent {
            intent_id: intent.id,
            event: event.name,
            from_state: Some(&intent.state),
            to_state: to,
            outcome,
            reason,
            cause: event.cause.as_str(),
            actor: event.actor,
            provider_ref: event.provider_ref,
            payload_digest: event.payload_digest.as_deref(),
        }
    }

    /// The jobs entering `state` (at `version`) asks for: its on-enter
    /// actions and its timers. They are written by the statement that moves
    /// the intent.
    fn state_jobs(&self, workflow: &Workflow, intent: &IntentRow, state: &str, version: i32) -> Vec<NewJob> {
        let spec = workflow
            .state(state)
            .expect("validated: transitions go to declared states");
        let mut jobs = Vec::new();
        for action in &spec.on_enter {
            jobs.push(self.action_job(workflow, intent, action, state, version, None));
        }
        for timer in &spec.timers {
            jobs.push(
                NewJob::new(&TimerJob {
                    intent_id: intent.id,
                    state: state.to_owned(),
                    version,
                    timer: timer.name().to_owned(),
                    fire: 1,
                })
                .run_after(timer.after())
                .unique_key(timer_key(intent.id, timer.name(), version, 1)),
            );
        }
        jobs
    }

    /// Enqueues a delivery of event `event_id` to each of the owner's
    /// webhook `endpoints` (none: nothing to write).
    async fn deliver(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event_id: i64,
        endpoints: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        self.inner
            .jobs
            .enqueue_many(tx, &crate::notify::deliveries(event_id, endpoints))
            .await?;
        Ok(())
    }
}

/// The unique key of the `fire`th firing of timer `name` armed when the
/// intent entered its state at `version`.
/// The unique key of the job that runs `action` for one visit (`version`)
/// to a state; `fire` tells repeats of a timer's action apart.
pub(crate) fn action_key(intent_id: Uuid, action: &str, version: i32, fire: Option<u32>) -> String {
    match fire {
        Some(fire) => format!("action:{intent_id}:{action}:{version}:{fire}"),
        None => format!("action:{intent_id}:{action}:{version}"),
    }
}

pub(crate) fn timer_key(intent_id: Uuid, name: &str, version: i32, fire: u32) -> String {
    format!("timer:{intent_id}:{name}:{version}:{fire}")
}

/// 128 random bits, hex: the secret path segment of an intent's callback
/// URLs.
fn new_callback_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The timer named `name` of `state`, if the workflow declares it.
pub(crate) fn find_timer<'w>(workflow: &'w Workflow, state: &str, name: &str) -> Option<&'w Timer> {
    workflow.state(state)?.timers.iter().find(|t| t.name() == name)
}

/// A new intent's row, in `initial`, before it is written.
fn new_row(new: NewIntent, initial: &str) -> IntentRow {
    IntentRow {
        id: IntentId::new().as_uuid(),
        kind: new.kind,
        state: initial.to_owned(),
        state_version: 0,
        owner: new.owner,
        created_by: new.created_by,
        party_id: new.party_id.as_str().to_owned(),
        amount: new.amount.amount(),
        currency: new.amount.currency().code().to_owned(),
        msisdn: new.msisdn.digits().to_owned(),
        provider: new.provider,
        reference: new.reference,
        metadata: new.metadata,
        provider_ref: new.terms.request_id,
        callback_token: Some(new_callback_token()),
        receipt: None,
        hold_reason: None,
        fees: new.terms.fees,
        quote_id: new.terms.quote_id,
        usd_equivalent: new.terms.usd_equivalent,
        approvals_required: new.terms.approvals_required,
        campaign_id: new.terms.campaign_id,
        batch_id: new.terms.batch_id,
        parent_id: new.terms.parent_id,
        created_at: chrono::DateTime::UNIX_EPOCH,
        updated_at: chrono::DateTime::UNIX_EPOCH,
        final_at: None,
        request_started_at: None,
    }
}
