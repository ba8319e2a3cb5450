//! `tuma jobs …`: the admin operations on jobs, from the shell.

use clap::Subcommand;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::JobId;
use crate::runner::{CancelOutcome, JobClient, RetryOutcome};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs in one state, newest first, as JSON lines.
    List {
        /// available, running, completed, dead or cancelled.
        #[arg(long, default_value = "dead")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one job, with its error history.
    Show { id: i64 },
    /// Re-run a dead job with a fresh set of attempts.
    Retry { id: i64 },
    /// Cancel a job: at once if waiting, at the next heartbeat if running.
    Cancel { id: i64 },
    /// Stop every node from claiming jobs of a queue.
    Pause { queue: String },
    /// Let nodes claim jobs of a paused queue again.
    Resume { queue: String },
}

const STATES: [&str; 5] = ["available", "running", "completed", "dead", "cancelled"];

pub async fn run(config: Config, command: JobsCommand) -> anyhow::Result<()> {
    let pool = crate::store::connect(&config.database).await?;
    let client = JobClient::new(pool, Clock::Database);
    match command {
        JobsCommand::List { state, limit } => {
            anyhow::ensure!(
                STATES.contains(&state.as_str()),
                "--state must be one of {}",
                STATES.join(", ")
            );
            for job in client.list(&state, limit).await? {
                println!("{}", serde_json::to_string(&job)?);
            }
        }
        JobsCommand::Show { id } => match client.get(JobId::from(id)).await? {
            Some(job) => println!("{}", serde_json::to_string_pretty(&job)?),
            None => anyhow::bail!("no job {id}"),
        },
        JobsCommand::Retry { id } => match client.retry_dead(JobId::from(id)).await? {
            RetryOutcome::Requeued => println!("job {id} will run again"),
            RetryOutcome::NotDead => anyhow::bail!("job {id} is not dead; only dead jobs are re-run"),
            RetryOutcome::KeyTaken => anyhow::bail!("job {id} stays dead: a live job holds its unique key"),
        },
        JobsCommand::Cancel { id } => match client.cancel(JobId::from(id)).await? {
            CancelOutcome::Cancelled => println!("job {id} cancelled"),
            CancelOutcome::Requested => println!("job {id} is running; its node will stop it at the next heartbeat"),
            CancelOutcome::AlreadyFinished => anyhow::bail!("job {id} does not exist or has already finished"),
        },
        JobsCommand::Pause { queue } => {
            client.pause_queue(&queue).await?;
            println!("queue {queue} paused");
        }
        JobsCommand::Resume { queue } => {
            client.resume_queue(&queue).await?;
            println!("queue {queue} resumed");
        }
    }
    Ok(())
}
