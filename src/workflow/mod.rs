//! Intents as persisted state machines.
//!
//! Each kind's machine is data: a TOML file in `workflows/` (states, events,
//! transitions, timers, action retry policies), loaded and validated at
//! start-up. The Rust code registers the actions and guards those files name
//! and holds no second transition table: [`engine::Engine::apply`] looks every
//! transition up in the loaded [`Workflow`].

mod definition;
pub mod engine;
pub mod mermaid;
mod model;
mod validate;
pub mod workers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use definition::WorkflowProblem;
pub use model::{ActionSpec, LedgerEffect, State, Timer, Transition, Workflow};
pub use validate::KnownNames;

/// The workflow files compiled into the binary, used unless
/// `workflows.dir` points elsewhere.
pub const BUILT_IN: [(&str, &str); 4] = [
    ("workflows/payout.toml", include_str!("../../workflows/payout.toml")),
    (
        "workflows/collection.toml",
        include_str!("../../workflows/collection.toml"),
    ),
    ("workflows/loan.toml", include_str!("../../workflows/loan.toml")),
    ("workflows/reversal.toml", include_str!("../../workflows/reversal.toml")),
];

/// Every loaded workflow, by kind.
#[derive(Debug, Clone, Default)]
pub struct Workflows {
    by_kind: BTreeMap<String, Arc<Workflow>>,
}

impl Workflows {
    /// The built-in workflows.
    pub fn built_in(known: &KnownNames) -> Result<Workflows, Vec<WorkflowProblem>> {
        Workflows::from_sources(
            BUILT_IN
                .iter()
                .map(|(path, text)| (PathBuf::from(path), text.to_string())),
            known,
        )
    }

    /// Every `*.toml` file in `dir`.
    pub fn load_dir(dir: &Path, known: &KnownNames) -> Result<Workflows, Vec<WorkflowProblem>> {
        let problem = |problem: String| {
            vec![WorkflowProblem {
                file: dir.to_owned(),
                line: 0,
                problem,
            }]
        };
        let entries =
            std::fs::read_dir(dir).map_err(|e| problem(format!("cannot read the workflow directory: {e}")))?;
        let mut sources = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| problem(e.to_string()))?.path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                let text = std::fs::read_to_string(&path).map_err(|e| problem(format!("{}: {e}", path.display())))?;
                sources.push((path, text));
            }
        }
        sources.sort();
        if sources.is_empty() {
            return Err(problem("no workflow files (*.toml) found".into()));
        }
        Workflows::from_sources(sources, known)
    }

    /// Validates every source; all problems of all files are reported.
    pub fn from_sources(
        sources: impl IntoIterator<Item = (PathBuf, String)>,
        known: &KnownNames,
    ) -> Result<Workflows, Vec<WorkflowProblem>> {
        let mut by_kind = BTreeMap::new();
        let mut problems = Vec::new();
        for (path, text) in sources {
            match validate::load(&path, &text, known) {
                Ok(workflow) => {
                    if let Some(previous) = by_kind.insert(workflow.kind.clone(), Arc::new(workflow)) {
                        problems.push(WorkflowProblem {
                            file: path.clone(),
                            line: 1,
                            problem: format!(
                                "kind {:?} is also defined in {}",
                                previous.kind,
                                previous.source.display()
                            ),
                        });
                    }
                }
                Err(mut found) => problems.append(&mut found),
            }
        }
        if problems.is_empty() {
            Ok(Workflows { by_kind })
        } else {
            Err(problems)
        }
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<Workflow>> {
        self.by_kind.get(kind)
    }

    /// Every loaded workflow, by kind.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Workflow>> {
        self.by_kind.values()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }
}
