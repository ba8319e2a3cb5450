//! `tuma reconcile`: build today's reconciliation report now, keep it as
//! the day's, and print it. Exits 1 when it finds discrepancies, so a
//! scheduler or a shell script notices.

use chrono::NaiveDate;
use clap::Args;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The day the report is kept as (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<NaiveDate>,
    /// Print CSV instead of JSON.
    #[arg(long)]
    csv: bool,
}

/// Whether the report was clean.
pub async fn run(config: Config, args: ReconcileArgs) -> anyhow::Result<bool> {
    let pool = crate::store::open(&config.database).await?;
    let known = crate::workflow::workers::built_in_actions(&Default::default()).known_names();
    let workflows = crate::app::load_workflows(&config, &known)?;
    let now = chrono::Utc::now();
    let date = args.date.unwrap_or_else(|| now.date_naive());
    let report = crate::reconcile::run(&pool, &workflows, &config.reconciliation, date, now).await?;
    if args.csv {
        print!("{}", crate::reconcile::to_csv(&report));
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(report.ok)
}
