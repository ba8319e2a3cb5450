//! Reconciliation: does the ledger agree with the providers, and is
//! anything waiting on a person? One report answers, built the same way by
//! `tuma reconcile`, the daily cron job and `GET /v1/reports/reconciliation`:
//!
//! - **floats**: the ledger's view of each provider float against the sum
//!   of the provider's last balance report (the accounts named in
//!   `[reconciliation] float_accounts`); money still held by pending
//!   transfers explains a difference of exactly that much;
//! - **unresolved**: intents whose provider's word never came;
//! - **stuck**: intents in a state longer than its workflow allows;
//! - **suspense**: C2B payments whose reference matched nothing;
//! - **unmatched callbacks**: provider results naming no intent of ours;
//! - **late successes**: successes a provider reported that day for
//!   intents that had already ended without the money moving (failed,
//!   cancelled, rejected, expired): the provider says money moved that the
//!   ledger does not show, and no transition may follow, so a person
//!   settles it with the provider's statement.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::runner::{JobArgs, JobContext, JobError, Worker};
use crate::store::{c2b, reports as store};
use crate::workflow::Workflows;

/// `[reconciliation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationConfig {
    /// Per provider, the reported accounts whose sum is its float.
    pub float_accounts: BTreeMap<String, Vec<String>>,
    /// How long an intent may sit in a state with on-entry work and no
    /// timers before it is listed as stuck.
    pub stuck_after_s: u64,
    /// Most rows of each list.
    pub max_rows: u32,
}

/// One provider float, two views.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FloatCheck {
    pub provider: String,
    pub currency: String,
    /// Posted ledger balance of the float.
    #[schema(value_type = String)]
    pub ledger: Decimal,
    /// What pending transfers would still move (negative: on its way out).
    #[schema(value_type = String)]
    pub ledger_pending: Decimal,
    /// The provider's reported balance, if it ever reported.
    #[schema(value_type = Option<String>)]
    pub provider_balance: Option<Decimal>,
    pub reported_at: Option<DateTime<Utc>>,
    /// Provider minus ledger.
    #[schema(value_type = Option<String>)]
    pub difference: Option<Decimal>,
    /// No difference, or one that pending transfers account for exactly.
    pub matches: bool,
}

/// An intent waiting on a person.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntentLine {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub currency: String,
    pub provider: String,
    pub reference: String,
    /// In this state since.
    pub since: DateTime<Utc>,
}

impl From<store::IntentLine> for IntentLine {
    fn from(row: store::IntentLine) -> IntentLine {
        IntentLine {
            id: row.id,
            kind: row.kind,
            state: row.state,
            amount: row.amount.normalize(),
            currency: row.currency,
            provider: row.provider,
            reference: row.reference,
            since: row.updated_at,
        }
    }
}

/// A C2B payment nobody's reference matched.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SuspenseLine {
    pub receipt: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// The account reference the payer typed.
    pub bill_ref: String,
    pub received_at: DateTime<Utc>,
}

/// A provider callback that named no intent of ours.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackLine {
    pub inbox_id: i64,
    pub provider: String,
    pub kind: String,
    /// `unknown_token`, `unknown_request` (an app-wide callback naming a
    /// request id we never sent), `wrong_provider` (a token of another
    /// provider's intent), `unmatched`, `reference_mismatch`,
    /// `contradicts_final` (a failure about an intent that had ended
    /// paid, or a word the engine cannot read, such as Airtel's
    /// "reversed", about an intent that had already ended),
    /// `amount_mismatch` (a success naming another amount or currency than
    /// its intent's), or
    /// `unconfirmed` (a C2B payment accepted at validation that Daraja
    /// never confirmed nor answered about).
    pub outcome: String,
    /// The provider's ids (request id, result code).
    pub provider_ids: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A success a provider reported for an intent that had already ended
/// without the money moving.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LateSuccessLine {
    pub id: Uuid,
    pub kind: String,
    /// The final state it stays in (`failed`, `cancelled`, ...).
    pub state: String,
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub currency: String,
    pub provider: String,
    pub reference: String,
    /// The provider's reference the success carried, if any.
    pub provider_ref: Option<String>,
    /// How it came: `callback` or `poll`.
    pub cause: String,
    /// When it was refused.
    pub at: DateTime<Utc>,
}

impl From<crate::store::late_successes::LateSuccess> for LateSuccessLine {
    fn from(l: crate::store::late_successes::LateSuccess) -> LateSuccessLine {
        LateSuccessLine {
            id: l.id,
            kind: l.kind,
            state: l.state,
            amount: l.amount.normalize(),
            currency: l.currency,
            provider: l.provider,
            reference: l.reference,
            provider_ref: l.provider_ref,
            cause: l.cause,
            at: l.at,
        }
    }
}

/// The reconciliation report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Report {
    pub date: NaiveDate,
    pub generated_at: DateTime<Utc>,
    /// Every float matches and every list is empty.
    pub ok: bool,
    pub floats: Vec<FloatCheck>,
    pub unresolved: Vec<IntentLine>,
    pub stuck: Vec<IntentLine>,
    pub suspense: Vec<SuspenseLine>,
    pub unmatched_callbacks: Vec<CallbackLine>,
    /// What the ledger's own check found wrong: a transfer whose legs do
    /// not sum to zero, a running total that drifted from its entries, a
    /// balance below zero, rows whose parent is missing. Empty when the
    /// books hold.
    #[serde(default)]
    pub books: Vec<String>,
    /// Successes a provider reported for intents that had already ended
    /// without the money moving, not yet settled by a person (`POST
    /// /v1/late-successes/{id}/settle`), whenever they came up to the end of
    /// the report's day (UTC).
    #[serde(default)]
    pub late_successes: Vec<LateSuccessLine>,
}

/// Builds the report as of `now`, labelled `date`.
pub async fn build(
    pool: &PgPool,
    workflows: &Workflows,
    config: &ReconciliationConfig,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Report, sqlx::Error> {
    let limit = i64::from(config.max_rows.max(1));
    let reported = store::reported_floats(pool).await?;
    let mut floats = Vec::new();
    for ledger in store::ledger_floats(pool).await? {
        let accounts = config.float_accounts.get(&ledger.provider);
        let matching: Vec<&store::ReportedFloat> = reported
            .iter()
            .filter(|r| r.provider == ledger.provider && r.currency == ledger.currency)
            .filter(|r| accounts.is_none_or(|names| names.iter().any(|n| n == &r.account)))
            .collect();
        let provider_balance = (!matching.is_empty()).then(|| matching.iter().map(|r| r.available).sum::<Decimal>());
        let reported_at = matching.iter().map(|r| r.reported_at).max();
        let difference = provider_balance.map(|p| p - ledger.posted);
        let matches = difference.is_some_and(|d| d.is_zero() || d == ledger.pending);
        floats.push(FloatCheck {
            provider: ledger.provider,
            currency: ledger.currency,
            ledger: ledger.posted.normalize(),
            ledger_pending: ledger.pending.normalize(),
            provider_balance: provider_balance.map(|p| p.normalize()),
            reported_at,
            difference: difference.map(|d| d.normalize()),
            matches,
        });
    }
    let default_bound = Duration::from_secs(config.stuck_after_s);
    let bounds: Vec<(String, String, i64)> = workflows
        .all()
        .flat_map(|workflow| {
            workflow.states.values().filter_map(move |state| {
                let bound = state.stuck_after(default_bound)?;
                Some((workflow.kind.clone(), state.name.clone(), bound.as_secs() as i64))
            })
        })
        .collect();
    let unresolved = store::unresolved(pool, limit).await?;
    let stuck = store::stuck(pool, &bounds, now, limit).await?;
    let suspense = c2b::in_suspense(pool, limit).await?;
    // With the C2B payments we accepted at validation and asked Daraja
    // about in vain: their confirmation never came, and neither did an
    // answer.
    let callbacks = store::unmatched_callbacks(pool, limit, crate::providers::mpesa::c2b::MAX_ASKS).await?;
    // A read of the whole ledger (nightly, or when a report is asked
    // for): what foreign keys and the writers' own checks would have
    // refused, found after the fact.
    let books = crate::ledger::check_invariants(pool).await?;
    // Every late success not yet settled, whatever day it came: until a
    // person settles it, the provider and the ledger disagree. Those
    // reported after the report's day are left to the next one.
    let day_end = date.and_time(chrono::NaiveTime::MIN).and_utc() + chrono::Days::new(1);
    let late = crate::store::late_successes::open(pool, day_end, limit).await?;
    // A float no provider report covers (the provider has no balance query
    // in Tuma) is listed, unverified, without failing the report.
    let ok = floats
        .iter()
        .filter(|f| f.provider_balance.is_some())
        .all(|f| f.matches)
        && unresolved.is_empty()
        && stuck.is_empty()
        && suspense.is_empty()
        && callbacks.is_empty()
        && books.is_empty()
        && late.is_empty();
    Ok(Report {
        date,
        generated_at: now,
        ok,
        floats,
        unresolved: unresolved.into_iter().map(IntentLine::from).collect(),
        stuck: stuck.into_iter().map(IntentLine::from).collect(),
        suspense: suspense
            .into_iter()
            .map(|p| SuspenseLine {
                receipt: p.trans_id,
                amount: p.amount.normalize(),
                bill_ref: p.bill_ref,
                received_at: p.received_at,
            })
            .collect(),
        unmatched_callbacks: callbacks
            .into_iter()
            .map(|c| CallbackLine {
                inbox_id: c.id,
                provider: c.provider,
                kind: c.kind,
                outcome: c.outcome,
                provider_ids: c.dedupe_key,
                received_at: c.received_at,
            })
            .collect(),
        books,
        late_successes: late.into_iter().map(LateSuccessLine::from).collect(),
    })
}

/// Builds the report and keeps it as `date`'s.
pub async fn run(
    pool: &PgPool,
    workflows: &Workflows,
    config: &ReconciliationConfig,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Report, sqlx::Error> {
    let report = build(pool, workflows, config, date, now).await?;
    let body = serde_json::to_value(&report).expect("a report serializes");
    store::store_reconciliation(pool, date, now, report.ok, &body).await?;
    Ok(report)
}

/// The report as CSV: one row per finding, `section` first.
pub fn to_csv(report: &Report) -> String {
    let mut out = String::from("section,id,kind,state,amount,currency,provider,detail,at\n");
    let mut row = |fields: [String; 9]| {
        let escaped: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&escaped.join(","));
        out.push('\n');
    };
    for f in &report.floats {
        row([
            "float".into(),
            String::new(),
            String::new(),
            if f.matches { "matches" } else { "MISMATCH" }.into(),
            f.difference.map(|d| d.to_string()).unwrap_or_default(),
            f.currency.clone(),
            f.provider.clone(),
            format!(
                "ledger {} (pending {}), provider {}",
                f.ledger,
                f.ledger_pending,
                f.provider_balance
                    .map_or_else(|| "never reported".to_owned(), |p| p.to_string())
            ),
            f.reported_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        ]);
    }
    for (section, lines) in [("unresolved", &report.unresolved), ("stuck", &report.stuck)] {
        for l in lines {
            row([
                section.into(),
                l.id.to_string(),
                l.kind.clone(),
                l.state.clone(),
                l.amount.to_string(),
                l.currency.clone(),
                l.provider.clone(),
                l.reference.clone(),
                l.since.to_rfc3339(),
            ]);
        }
    }
    for s in &report.suspense {
        row([
            "suspense".into(),
            s.receipt.clone(),
            "c2b".into(),
            "suspense".into(),
            s.amount.to_string(),
            String::new(),
            "mpesa".into(),
            s.bill_ref.clone(),
            s.received_at.to_rfc3339(),
        ]);
    }
    for c in &report.unmatched_callbacks {
        row([
            "unmatched_callback".into(),
            c.inbox_id.to_string(),
            c.kind.clone(),
            c.outcome.clone(),
            String::new(),
            String::new(),
            c.provider.clone(),
            c.provider_ids.clone().unwrap_or_default(),
            c.received_at.to_rfc3339(),
        ]);
    }
    for l in &report.late_successes {
        row([
            "late_success".into(),
            l.id.to_string(),
            l.kind.clone(),
            l.state.clone(),
            l.amount.to_string(),
            l.currency.clone(),
            l.provider.clone(),
            format!(
                "success by {} for {} (provider ref {})",
                l.cause,
                l.reference,
                l.provider_ref.as_deref().unwrap_or("none")
            ),
            l.at.to_rfc3339(),
        ]);
    }
    for problem in &report.books {
        row([
            "books".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            problem.clone(),
            String::new(),
        ]);
    }
    out
}

/// A CSV field, quoted when it must be; a leading formula character is
/// neutralised so a spreadsheet never evaluates a payer's typed reference.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) && value.parse::<Decimal>().is_err() {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Job arguments: the daily reconciliation for the tick's day.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reconcile {
    pub date: NaiveDate,
}

impl JobArgs for Reconcile {
    const KIND: &'static str = "reports.reconcile";
}

pub struct ReconcileWorker {
    pub workflows: Workflows,
    pub config: ReconciliationConfig,
}

impl Worker for ReconcileWorker {
    type Args = Reconcile;

    async fn work(&self, ctx: JobContext, args: Reconcile) -> Result<(), JobError> {
        let now = ctx.clock().local_now();
        let report = run(ctx.pool(), &self.workflows, &self.config, args.date, now).await?;
        if report.ok {
            tracing::info!(date = %args.date, "reconciliation: everything matches");
        } else {
            tracing::warn!(
                date = %args.date,
                float_mismatches = report.floats.iter().filter(|f| !f.matches).count(),
                unresolved = report.unresolved.len(),
                stuck = report.stuck.len(),
                suspense = report.suspense.len(),
                unmatched_callbacks = report.unmatched_callbacks.len(),
                late_successes = report.late_successes.len(),
                books = report.books.len(),
                "reconciliation found discrepancies"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1234"), "-1234");
    }
}
