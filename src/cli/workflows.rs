//! `tuma workflows …`: look at and check workflow definitions without
//! starting anything.

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::Config;
use crate::workflow::workers::built_in_actions;
use crate::workflow::{mermaid, Workflows};

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Print a workflow (or all) as a Mermaid state diagram.
    Show {
        /// payout, collection, …; all when absent.
        name: Option<String>,
    },
    /// Validate the workflow files in DIR (default: ./workflows).
    Check { dir: Option<PathBuf> },
}

pub fn run(config: &Config, command: WorkflowsCommand) -> anyhow::Result<()> {
    let known = built_in_actions(&Default::default()).known_names();
    match command {
        WorkflowsCommand::Show { name } => {
            let workflows = crate::app::load_workflows(config, &known)?;
            let kinds: Vec<&str> = match &name {
                Some(name) => {
                    anyhow::ensure!(
                        workflows.get(name).is_some(),
                        "no workflow {name:?} (there are: {})",
                        workflows.kinds().collect::<Vec<_>>().join(", ")
                    );
                    vec![name.as_str()]
                }
                None => workflows.kinds().collect(),
            };
            for kind in kinds {
                println!("{}", mermaid::render(workflows.get(kind).expect("listed"), None));
            }
            Ok(())
        }
        WorkflowsCommand::Check { dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("workflows"));
            match Workflows::load_dir(&dir, &known) {
                Ok(workflows) => {
                    println!(
                        "ok: {} in {}",
                        workflows.kinds().collect::<Vec<_>>().join(", "),
                        dir.display()
                    );
                    Ok(())
                }
                Err(problems) => {
                    for problem in &problems {
                        eprintln!("{problem}");
                    }
                    anyhow::bail!("{} problem(s) in {}", problems.len(), dir.display())
                }
            }
        }
    }
}
