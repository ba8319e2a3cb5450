//! `tuma approvals …`: maker-checker decisions from the shell. Whoever has
//! the shell and the database is an admin; `--as` names them in the
//! history, and the maker-checker rules apply as they do over the API.

use clap::Subcommand;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::Config;
use crate::policy::approvals::{decide, Decided, Decision};

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Payouts waiting for approval, oldest first, as JSON lines.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Approve a payout (one approval; some payouts need two approvers).
    Approve {
        id: Uuid,
        /// Who approves: recorded as the actor; must not be the payout's creator.
        #[arg(long = "as", value_name = "NAME")]
        approver: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a payout; its hold is released.
    Reject {
        id: Uuid,
        #[arg(long = "as", value_name = "NAME")]
        approver: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(config: Config, command: ApprovalsCommand) -> anyhow::Result<()> {
    let pool = crate::store::connect(&config.database).await?;
    match command {
        ApprovalsCommand::List { limit } => {
            for row in crate::store::policy::pending_approvals(&pool, None, None, limit).await? {
                let view = crate::api::views::IntentView::from_row(&row);
                println!("{}", serde_json::to_string(&view)?);
            }
        }
        ApprovalsCommand::Approve { id, approver, reason } => {
            decide_as(config, pool, id, &approver, Decision::Approve, reason.as_deref()).await?;
        }
        ApprovalsCommand::Reject { id, approver, reason } => {
            anyhow::ensure!(!reason.trim().is_empty(), "a rejection needs a --reason");
            decide_as(config, pool, id, &approver, Decision::Reject, Some(&reason)).await?;
        }
    }
    Ok(())
}

async fn decide_as(
    config: Config,
    pool: sqlx::PgPool,
    id: Uuid,
    approver: &str,
    decision: Decision,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!approver.trim().is_empty(), "--as must name the approver");
    let app = crate::app::assemble(config, pool.clone(), Clock::Database)?;
    let mut tx = pool.begin().await?;
    let decided = decide(&app.engine, &mut tx, None, id, approver.trim(), decision, reason).await?;
    tx.commit().await?;
    match decided {
        Decided::Approved => println!("payout {id} approved; it goes on to the provider"),
        Decided::Waiting { approvals, required } => {
            println!("payout {id}: {approvals} of {required} approvals; another approver is needed")
        }
        Decided::Rejected => println!("payout {id} rejected; its hold is released"),
    }
    Ok(())
}
