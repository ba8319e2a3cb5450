//! Workflow files: the TOML form of an intent's state machine, and loading
//! it with every problem reported as `file:line: what is wrong`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// One workflow file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkflowFile {
    pub(crate) kind: Spanned<String>,
    pub(crate) description: String,
    pub(crate) initial: Spanned<String>,
    pub(crate) states: BTreeMap<Spanned<String>, StateFile>,
    #[serde(default)]
    pub(crate) transitions: Vec<Spanned<TransitionFile>>,
    #[serde(default)]
    pub(crate) actions: BTreeMap<Spanned<String>, ActionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateFile {
    pub(crate) description: String,
    #[serde(default, rename = "final")]
    pub(crate) is_final: bool,
    /// Exits a final state may take as a declared late correction
    /// (`expired → completed` when the provider's success arrives late).
    #[serde(default)]
    pub(crate) late_exits: Vec<Spanned<String>>,
    /// Actions enqueued as jobs when the state is entered.
    #[serde(default)]
    pub(crate) on_enter: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) timers: Vec<Spanned<TimerFile>>,
    /// What entering the state does to the intent's ledger transfer.
    #[serde(default)]
    pub(crate) ledger: Option<super::model::LedgerEffect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimerFile {
    pub(crate) name: String,
    pub(crate) after_s: u64,
    #[serde(default)]
    pub(crate) every_s: Option<u64>,
    #[serde(default)]
    pub(crate) max_fires: Option<u32>,
    #[serde(default)]
    pub(crate) action: Option<String>,
    #[serde(default)]
    pub(crate) event: Option<String>,
    #[serde(default)]
    pub(crate) exhausted_event: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransitionFile {
    pub(crate) event: String,
    pub(crate) from: Vec<String>,
    pub(crate) to: String,
    #[serde(default)]
    pub(crate) guard: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionFile {
    pub(crate) description: String,
    pub(crate) max_attempts: u32,
    pub(crate) timeout_ms: u64,
    pub(crate) retry_base_ms: u64,
    pub(crate) retry_max_ms: u64,
    /// A call to the intent's provider: runs on the provider's own runner
    /// queue (its rate limit) when one is configured.
    #[serde(default)]
    pub(crate) provider_call: bool,
}

/// A problem in a workflow file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowProblem {
    pub file: PathBuf,
    pub line: usize,
    pub problem: String,
}

impl std::fmt::Display for WorkflowProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.problem)
    }
}

/// Turns byte offsets of one file into 1-based line numbers.
pub(crate) struct Locator<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl Locator<'_> {
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    pub(crate) fn at(&self, offset: usize, problem: impl Into<String>) -> WorkflowProblem {
        WorkflowProblem {
            file: self.file.to_owned(),
            line: self.line(offset),
            problem: problem.into(),
        }
    }
}

/// Parses one file; a TOML or shape error is reported at its line.
pub(crate) fn parse(file: &Path, text: &str) -> Result<WorkflowFile, WorkflowProblem> {
    toml::from_str(text).map_err(|error| {
        let locator = Locator { file, text };
        let line = error.span().map_or(1, |span| locator.line(span.start));
        WorkflowProblem {
            file: file.to_owned(),
            line,
            problem: error.message().to_owned(),
        }
    })
}
