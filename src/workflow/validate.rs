//! From a parsed workflow file to a [`Workflow`], or the list of everything
//! wrong with it, each at its line: unknown states, actions and guards,
//! unreachable states, states with no way to finish, undeclared exits from
//! final states, ambiguous transitions, malformed timers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use super::definition::{parse, Locator, TimerFile, WorkflowFile, WorkflowProblem};
use super::model::{ActionSpec, State, Timer, Transition, Workflow};
use crate::runner::RetryPolicy;

/// The names the Rust code registers: a workflow may only use these.
#[derive(Debug, Clone, Default)]
pub struct KnownNames {
    pub actions: BTreeSet<String>,
    pub guards: BTreeSet<String>,
}

/// Parses and validates one workflow file.
pub fn load(file: &Path, text: &str, known: &KnownNames) -> Result<Workflow, Vec<WorkflowProblem>> {
    let parsed = parse(file, text).map_err(|problem| vec![problem])?;
    let locator = Locator { file, text };
    let mut problems = Vec::new();
    let workflow = build(&parsed, &locator, known, &mut problems);
    if problems.is_empty() {
        Ok(workflow)
    } else {
        problems.sort_by_key(|p| p.line);
        Err(problems)
    }
}

fn build(file: &WorkflowFile, at: &Locator<'_>, known: &KnownNames, problems: &mut Vec<WorkflowProblem>) -> Workflow {
    let state_names: BTreeSet<&str> = file.states.keys().map(|k| k.get_ref().as_str()).collect();
    let mut report = |offset: usize, problem: String| problems.push(at.at(offset, problem));

    if !state_names.contains(file.initial.get_ref().as_str()) {
        report(
            file.initial.span().start,
            format!("initial state {:?} is not declared", file.initial.get_ref()),
        );
    }

    // Actions: declared here (with their retry policy) and registered in code.
    let mut actions = BTreeMap::new();
    for (name, action) in &file.actions {
        if !known.actions.contains(name.get_ref()) {
            report(name.span().start, unknown("action", name.get_ref(), &known.actions));
        }
        if action.max_attempts == 0 || action.timeout_ms == 0 || action.retry_base_ms == 0 {
            report(
                name.span().start,
                format!(
                    "action {:?}: max_attempts, timeout_ms and retry_base_ms must be positive",
                    name.get_ref()
                ),
            );
        }
        if action.retry_max_ms < action.retry_base_ms {
            report(
                name.span().start,
                format!("action {:?}: retry_max_ms is below retry_base_ms", name.get_ref()),
            );
        }
        let _ = &action.description;
        actions.insert(
            name.get_ref().clone(),
            ActionSpec {
                provider_call: action.provider_call,
                max_attempts: action.max_attempts.max(1),
                timeout: Duration::from_millis(action.timeout_ms),
                retry: RetryPolicy {
                    base_ms: action.retry_base_ms,
                    max_ms: action.retry_max_ms,
                },
            },
        );
    }
    let check_action = |offset: usize, name: &str, report: &mut dyn FnMut(usize, String)| {
        if !actions.contains_key(name) {
            if known.actions.contains(name) {
                report(
                    offset,
                    format!("action {name:?} has no [actions.{name}] section with its retry policy"),
                );
            } else {
                report(offset, unknown("action", name, &known.actions));
            }
        }
    };

    // Transitions.
    let mut transitions = Vec::new();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for spanned in &file.transitions {
        let (offset, t) = (spanned.span().start, spanned.get_ref());
        for from in &t.from {
            if !state_names.contains(from.as_str()) {
                report(
                    offset,
                    format!("transition {:?} starts from unknown state {from:?}", t.event),
                );
            }
            if let Some(first) = seen.insert((from.clone(), t.event.clone()), offset) {
                report(
                    offset,
                    format!(
                        "event {:?} from state {from:?} is declared twice (first at line {})",
                        t.event,
                        at.line(first)
                    ),
                );
            }
        }
        if t.from.is_empty() {
            report(offset, format!("transition {:?} has no `from` states", t.event));
        }
        if !state_names.contains(t.to.as_str()) {
            report(
                offset,
                format!("transition {:?} goes to unknown state {:?}", t.event, t.to),
            );
        }
        if let Some(guard) = &t.guard {
            if !known.guards.contains(guard) {
                report(offset, unknown("guard", guard, &known.guards));
            }
        }
        transitions.push(Transition {
            event: t.event.clone(),
            from: t.from.clone(),
            to: t.to.clone(),
            guard: t.guard.clone(),
        });
    }
    let legal = |state: &str, event: &str| {
        transitions
            .iter()
            .any(|t| t.event == event && t.from.iter().any(|f| f == state))
    };

    // States.
    let mut states = BTreeMap::new();
    for (name, state) in &file.states {
        let (offset, name) = (name.span().start, name.get_ref());
        for action in &state.on_enter {
            check_action(action.span().start, action.get_ref(), &mut report);
        }
        if state.is_final && !state.timers.is_empty() {
            report(
                offset,
                format!("final state {name:?} has timers; nothing may happen in a final state"),
            );
        }
        if !state.is_final && !state.late_exits.is_empty() {
            report(offset, format!("state {name:?} declares late_exits but is not final"));
        }
        for exit in &state.late_exits {
            if !state_names.contains(exit.get_ref().as_str()) {
                report(
                    exit.span().start,
                    format!("late exit of {name:?} names unknown state {:?}", exit.get_ref()),
                );
            }
        }
        let mut timers = Vec::new();
        for timer in &state.timers {
            match build_timer(timer.get_ref()) {
                Ok(built) => {
                    let offset = timer.span().start;
                    match &built {
                        Timer::Once { event, .. } => {
                            if !legal(name, event) {
                                report(
                                    offset,
                                    format!(
                                        "timer {:?} fires event {event:?}, which has no transition from {name:?}",
                                        built.name()
                                    ),
                                );
                            }
                        }
                        Timer::Repeat {
                            action,
                            exhausted_event,
                            ..
                        } => {
                            check_action(offset, action, &mut report);
                            if !legal(name, exhausted_event) {
                                report(offset, format!("timer {:?} ends with event {exhausted_event:?}, which has no transition from {name:?}", built.name()));
                            }
                        }
                    }
                    timers.push(built);
                }
                Err(problem) => report(timer.span().start, format!("timer in state {name:?}: {problem}")),
            }
        }
        states.insert(
            name.clone(),
            State {
                name: name.clone(),
                description: state.description.clone(),
                is_final: state.is_final,
                late_exits: state.late_exits.iter().map(|e| e.get_ref().clone()).collect(),
                on_enter: state.on_enter.iter().map(|a| a.get_ref().clone()).collect(),
                timers,
                ledger: state.ledger,
            },
        );
    }

    // Exits from final states must be declared late corrections.
    for spanned in &file.transitions {
        let t = spanned.get_ref();
        for from in &t.from {
            if let Some(state) = states.get(from) {
                if state.is_final && !state.late_exits.contains(&t.to) {
                    report(spanned.span().start, format!(
                        "final state {from:?} has an undeclared exit to {:?} (event {:?}); declare it in late_exits if it is a late correction",
                        t.to, t.event
                    ));
                }
            }
        }
    }

    // Reachability: forward from the initial state, backward from finals.
    if states.contains_key(file.initial.get_ref()) {
        let reachable = reach(file.initial.get_ref(), |s| {
            transitions
                .iter()
                .filter(move |t| t.from.iter().any(|f| f == s))
                .map(|t| t.to.as_str())
                .collect()
        });
        let finals: Vec<&str> = states
            .values()
            .filter(|s| s.is_final)
            .map(|s| s.name.as_str())
            .collect();
        if finals.is_empty() {
            report(file.kind.span().start, "workflow has no final state".to_owned());
        }
        let mut can_finish = BTreeSet::new();
        for final_state in &finals {
            can_finish.extend(reach(final_state, |s| {
                transitions
                    .iter()
                    .filter(move |t| t.to == s)
                    .flat_map(|t| t.from.iter().map(String::as_str))
                    .collect()
            }));
        }
        for (name, _) in file.states.iter() {
            if !reachable.contains(name.get_ref().as_str()) {
                report(
                    name.span().start,
                    format!(
                        "state {:?} is unreachable from the initial state {:?}",
                        name.get_ref(),
                        file.initial.get_ref()
                    ),
                );
            } else if !can_finish.contains(name.get_ref().as_str()) {
                report(
                    name.span().start,
                    format!("state {:?} has no path to a final state", name.get_ref()),
                );
            }
        }
    }

    Workflow {
        kind: file.kind.get_ref().clone(),
        description: file.description.clone(),
        initial: file.initial.get_ref().clone(),
        states,
        transitions,
        actions,
        source: at.file.to_owned(),
    }
}

/// States reachable from `start` by following `next`.
fn reach<'a>(start: &'a str, next: impl Fn(&'a str) -> Vec<&'a str>) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(state) = queue.pop_front() {
        for to in next(state) {
            if seen.insert(to) {
                queue.push_back(to);
            }
        }
    }
    seen
}

fn build_timer(timer: &TimerFile) -> Result<Timer, String> {
    let after = Duration::from_secs(timer.after_s);
    match (&timer.event, &timer.action) {
        (Some(event), None) => {
            if timer.every_s.is_some() || timer.max_fires.is_some() || timer.exhausted_event.is_some() {
                return Err(format!(
                    "{:?} fires an event once; every_s, max_fires and exhausted_event do not apply",
                    timer.name
                ));
            }
            Ok(Timer::Once {
                name: timer.name.clone(),
                after,
                event: event.clone(),
            })
        }
        (None, Some(action)) => match (timer.every_s, timer.max_fires, &timer.exhausted_event) {
            (Some(every_s), Some(max_fires), Some(exhausted_event)) if every_s > 0 && max_fires > 0 => {
                Ok(Timer::Repeat {
                    name: timer.name.clone(),
                    after,
                    every: Duration::from_secs(every_s),
                    max_fires,
                    action: action.clone(),
                    exhausted_event: exhausted_event.clone(),
                })
            }
            _ => Err(format!(
                "{:?} runs an action, so it needs every_s > 0, max_fires > 0 and exhausted_event",
                timer.name
            )),
        },
        _ => Err(format!(
            "{:?} must have exactly one of `event` (fire once) or `action` (repeat)",
            timer.name
        )),
    }
}

fn unknown(what: &str, name: &str, known: &BTreeSet<String>) -> String {
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    format!("unknown {what} {name:?} (registered {what}s: {})", known.join(", "))
}
