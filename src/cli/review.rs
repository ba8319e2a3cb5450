//! `tuma review …`: what the reconciliation report leaves to a person,
//! settled from the shell with evidence, by the same rules as the API and
//! the console's Needs review page (`crate::resolve`). `tuma reconcile`
//! lists what is waiting; whoever has the shell and the database is an
//! admin, and `--as` names them in the records.

use clap::Subcommand;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::Config;
use crate::resolve::{RecordError, Resolution, ResolveError, Settlement};

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Resolve an `unresolved` payout, collection or reversal: whether the
    /// money moved, and what shows it.
    Resolve {
        /// The intent's id.
        id: Uuid,
        /// `succeeded` (the money moved) or `failed` (it did not).
        #[arg(long)]
        outcome: String,
        /// What shows it: a statement line, a support ticket.
        #[arg(long)]
        evidence: String,
        /// The provider's receipt, when the money moved.
        #[arg(long)]
        receipt: Option<String>,
        /// Who resolves it, recorded as the transition's actor.
        #[arg(long = "as", value_name = "NAME")]
        actor: String,
    },
    /// Settle a late success (a provider's success after its intent ended
    /// saying the money did not move).
    Settle {
        /// The intent's id.
        id: Uuid,
        /// `recovered`: the money came back, or was put right outside
        /// Tuma, and the ledger is left as it is. `booked`: it stays where
        /// the provider moved it, and the ledger posts it (a payout's party
        /// pays for it now).
        #[arg(long, default_value = "recovered")]
        outcome: String,
        /// What was done, and what shows it.
        #[arg(long)]
        evidence: String,
        /// Who settles it, recorded with the settlement.
        #[arg(long = "as", value_name = "NAME")]
        actor: String,
    },
    /// Record the review of a callback the reconciliation report lists
    /// (its `inbox_id`): what was found, and done.
    Callback {
        /// The callback's id in the inbox.
        id: i64,
        #[arg(long)]
        evidence: String,
        /// Who reviewed it, recorded with the review.
        #[arg(long = "as", value_name = "NAME")]
        actor: String,
    },
}

pub async fn run(config: Config, command: ReviewCommand) -> anyhow::Result<()> {
    let pool = crate::store::connect(&config.database).await?;
    let app = crate::app::assemble(config, pool.clone(), Clock::Database)?;
    let default_tier = app.state.policy.default_tier();
    match command {
        ReviewCommand::Resolve {
            id,
            outcome,
            evidence,
            receipt,
            actor,
        } => {
            let actor = named(&actor)?;
            let resolution = Resolution {
                outcome: outcome.trim(),
                evidence: &evidence,
                receipt: receipt.as_deref(),
            };
            match crate::resolve::resolve(&app.engine, &pool, None, None, id, actor, &resolution).await {
                Ok(()) => println!("intent {id} resolved as {}", outcome.trim()),
                Err(ResolveError::Invalid(problems)) => {
                    let said: Vec<String> = problems
                        .iter()
                        .map(|(field, _, detail)| format!("--{field}: {detail}"))
                        .collect();
                    anyhow::bail!("{}", said.join("; "));
                }
                Err(ResolveError::NotFound) => anyhow::bail!("no intent {id}"),
                Err(error) => return Err(error.into()),
            }
        }
        ReviewCommand::Settle {
            id,
            outcome,
            evidence,
            actor,
        } => {
            let actor = named(&actor)?;
            let settlement =
                Settlement::parse(Some(&outcome)).ok_or_else(|| anyhow::anyhow!("--outcome: recovered or booked"))?;
            let settled = crate::resolve::settle_late_success(
                &app.engine,
                default_tier,
                None,
                id,
                actor,
                &evidence,
                settlement,
                None,
            )
            .await
            .map_err(|error| recorded_error(error, || format!("no late success for intent {id}")))?;
            match settled.transfer_id {
                Some(transfer) => println!("late success of intent {id} booked by transfer {transfer}"),
                None => println!("late success of intent {id} settled as recovered"),
            }
        }
        ReviewCommand::Callback { id, evidence, actor } => {
            let actor = named(&actor)?;
            crate::resolve::review_callback(&pool, id, actor, &evidence, None)
                .await
                .map_err(|error| recorded_error(error, || format!("no callback {id} in the inbox")))?;
            println!("callback {id} reviewed");
        }
    }
    Ok(())
}

/// `--as`, trimmed; it must name someone.
fn named(actor: &str) -> anyhow::Result<&str> {
    let actor = actor.trim();
    anyhow::ensure!(!actor.is_empty(), "--as must name who is acting");
    Ok(actor)
}

/// A record that was not kept, said as the shell says it.
fn recorded_error(error: RecordError, not_found: impl FnOnce() -> String) -> anyhow::Error {
    match error {
        RecordError::Invalid => anyhow::anyhow!("--evidence: 1 to 500 characters"),
        RecordError::NotFound => anyhow::anyhow!(not_found()),
        other => other.into(),
    }
}
