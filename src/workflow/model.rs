//! The validated, in-memory form of a workflow. Built only by
//! [`super::validate`], so every name in it refers to something that exists.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::runner::RetryPolicy;

/// One intent kind's state machine.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub kind: String,
    pub description: String,
    pub initial: String,
    pub states: BTreeMap<String, State>,
    pub transitions: Vec<Transition>,
    pub actions: BTreeMap<String, ActionSpec>,
    pub source: PathBuf,
}

#[derive(Debug, Clone)]
pub struct State {
    pub name: String,
    pub description: String,
    pub is_final: bool,
    pub late_exits: Vec<String>,
    pub on_enter: Vec<String>,
    pub timers: Vec<Timer>,
    /// What entering this state does to the intent's ledger transfer.
    pub ledger: Option<LedgerEffect>,
}

impl State {
    /// A final state that says the intent's money did not move: it posts
    /// no transfer (a payout's hold released, a collection never credited).
    pub fn ends_unpaid(&self) -> bool {
        self.is_final && self.ledger != Some(LedgerEffect::Post)
    }

    /// A final state that says the intent's money moved: it posts the
    /// intent's transfer (a payout paid, a collection credited).
    pub fn ends_paid(&self) -> bool {
        self.is_final && self.ledger == Some(LedgerEffect::Post)
    }
}

/// A state's effect on the ledger, applied in the same transaction as the
/// transition that enters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerEffect {
    /// The money moved: post the intent's transfer (a payout's hold, or a
    /// collection's credit to the payee).
    Post,
    /// The money did not move: release the intent's hold.
    Void,
}

/// A timer armed when its state is entered and disarmed (ignored when it
/// fires) once the intent has left that visit to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Apply `event` once, `after` entering the state (an expiry).
    Once {
        name: String,
        after: Duration,
        event: String,
    },
    /// Run `action` `after` entering the state, then every `every`, at most
    /// `max_fires` times; one `every` after the last, apply
    /// `exhausted_event` (status polls, then `unresolved`).
    Repeat {
        name: String,
        after: Duration,
        every: Duration,
        max_fires: u32,
        action: String,
        exhausted_event: String,
    },
}

impl Timer {
    pub fn name(&self) -> &str {
        match self {
            Timer::Once { name, .. } | Timer::Repeat { name, .. } => name,
        }
    }

    pub fn after(&self) -> Duration {
        match self {
            Timer::Once { after, .. } | Timer::Repeat { after, .. } => *after,
        }
    }

    /// How long after entering the state this timer has done all it will
    /// (its event applied, or its repeats run out).
    pub fn horizon(&self) -> Duration {
        match self {
            Timer::Once { after, .. } => *after,
            Timer::Repeat {
                after,
                every,
                max_fires,
                ..
            } => *after + *every * *max_fires,
        }
    }
}

impl State {
    /// How long an intent may sit in this state before it is stuck: its
    /// timers' horizon, or `default` for a state with work to do on entry
    /// and no timers. `None` for states that wait for the outside world by
    /// design (an active loan, `unresolved`) and final states.
    pub fn stuck_after(&self, default: Duration) -> Option<Duration> {
        if self.is_final {
            return None;
        }
        match self.timers.iter().map(Timer::horizon).max() {
            Some(horizon) => Some(horizon),
            None if !self.on_enter.is_empty() => Some(default),
            None => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub event: String,
    pub from: Vec<String>,
    pub to: String,
    pub guard: Option<String>,
}

/// How the runner treats an action's job.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    /// Runs on the provider's queue when the runner has one.
    pub provider_call: bool,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl Workflow {
    /// The transition `event` takes from `state`, if it is legal there.
    pub fn transition(&self, state: &str, event: &str) -> Option<&Transition> {
        self.transitions
            .iter()
            .find(|t| t.event == event && t.from.iter().any(|f| f == state))
    }

    pub fn state(&self, name: &str) -> Option<&State> {
        self.states.get(name)
    }

    /// Events legal in `state`, for error messages.
    pub fn events_from(&self, state: &str) -> Vec<&str> {
        self.transitions
            .iter()
            .filter(|t| t.from.iter().any(|f| f == state))
            .map(|t| t.event.as_str())
            .collect()
    }
}
