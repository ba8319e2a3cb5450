//! A workflow as a Mermaid state diagram, for `tuma workflows show` and the
//! admin console.

use std::fmt::Write;

use super::model::{Timer, Workflow};

/// Renders `workflow` as `stateDiagram-v2` source. Timers appear as notes
/// on their state; `highlight` marks one state (an intent's current one).
pub fn render(workflow: &Workflow, highlight: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "---\ntitle: {} ({})\n---", workflow.kind, workflow.description);
    let _ = writeln!(out, "stateDiagram-v2");
    let _ = writeln!(out, "    [*] --> {}", workflow.initial);
    for transition in &workflow.transitions {
        for from in &transition.from {
            let guard = transition
                .guard
                .as_deref()
                .map(|g| format!(" [{g}]"))
                .unwrap_or_default();
            let _ = writeln!(out, "    {from} --> {} : {}{guard}", transition.to, transition.event);
        }
    }
    for state in workflow.states.values() {
        if state.is_final {
            let _ = writeln!(out, "    {} --> [*]", state.name);
        }
        for timer in &state.timers {
            let note = match timer {
                Timer::Once { name, after, event } => format!("{name}: after {}s → {event}", after.as_secs()),
                Timer::Repeat {
                    name,
                    after,
                    every,
                    max_fires,
                    action,
                    exhausted_event,
                } => format!(
                    "{name}: {action} after {}s, then every {}s, {max_fires}×; then {exhausted_event}",
                    after.as_secs(),
                    every.as_secs()
                ),
            };
            let _ = writeln!(out, "    note right of {}\n        {note}\n    end note", state.name);
        }
    }
    if let Some(current) = highlight {
        let _ = writeln!(out, "    classDef current fill:#f9d71c,stroke:#333,stroke-width:2px");
        let _ = writeln!(out, "    class {current} current");
    }
    out
}
