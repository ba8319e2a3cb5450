//! Reading Daraja's callbacks into what they report, and the job that
//! applies a stored callback to its intent.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::codes;
use super::wire::{B2cRequest, ResultEnvelope, StkCallbackEnvelope};
use crate::providers::callbacks::{
    amount_contradiction, awaits_its_request, begin_one, finish, finish_row, finish_with, refused, unreadable_outcome,
    CallbackGroups, CallbackJobs, CallbackProcessing, Ready,
};
use crate::providers::Outcome;
use crate::runner::{JobArgs, JobContext, JobError, NewJob, Worker};
use crate::store::intents::IntentRow;
use crate::store::{inbox, intents};
use crate::workflow::engine::{Applied, Cause, Engine, Event};

/// The callback URLs Tuma hands Daraja; the last path segment is the
/// intent's token.
pub const KINDS: [&str; 13] = [
    "stk",
    "b2c-result",
    "b2c-timeout",
    "status-result",
    "status-timeout",
    "balance-result",
    "balance-timeout",
    "c2b-validation",
    "c2b-confirmation",
    "c2b-status-result",
    "c2b-status-timeout",
    "reversal-result",
    "reversal-timeout",
];

/// Whether a body of `kind` can be read at all (the HTTP handler refuses
/// what cannot, after storing it).
pub fn validate(kind: &str, body: &[u8]) -> Result<(), String> {
    match kind {
        "balance-result" | "c2b-status-result" => serde_json::from_slice::<ResultEnvelope>(body)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "balance-timeout" | "c2b-status-timeout" => Ok(()),
        "c2b-validation" | "c2b-confirmation" => serde_json::from_slice::<super::wire::C2bNotice>(body)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => parse(kind, body).map(|_| ()),
    }
}

/// How long a callback may wait for its intent to be ready for it (a
/// prompt's callback that beat the prompt's own answer), in seconds.
const MATCH_WINDOW_S: f64 = 600.0;
/// How long to wait between tries of matching such a callback.
const MATCH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// What one callback says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The request id it answers: CheckoutRequestID (STK) or
    /// OriginatorConversationID (B2C and status queries of it).
    pub provider_ref: Option<String>,
    pub outcome: Outcome,
    pub receipt: Option<String>,
    /// Provider ids that make two deliveries the same callback.
    pub dedupe_key: String,
    /// A status-query result, rather than the request's own result.
    pub from_query: bool,
    /// The amount the body says moved (KES), when it says.
    pub amount: Option<rust_decimal::Decimal>,
}

/// A JSON number or numeric string as a decimal.
fn decimal(value: &serde_json::Value) -> Option<rust_decimal::Decimal> {
    match value {
        serde_json::Value::String(text) => text.trim().parse().ok(),
        other => other.to_string().parse().ok(),
    }
}

/// Whether `report` is a status query's "declined" for reversal `intent`.
/// Daraja's status answer names no reason, and a reversal refused as
/// already reversed (`codes::ALREADY_REVERSED`: the money went back some
/// other way) is declined too, so it is left to a person, never taken
/// for a reversal that moved nothing.
fn declined_reversal_by_query(report: &Report, intent: &IntentRow) -> bool {
    report.from_query && intent.kind == "reversal" && matches!(report.outcome, Outcome::Failed { .. })
}

/// Parses a callback body of `kind`.
pub fn parse(kind: &str, body: &[u8]) -> Result<Report, String> {
    read(kind, body).map(Report::storable)
}

impl Report {
    /// The report with every id as the database can hold and compare it: a
    /// NUL, which PostgreSQL's text refuses, becomes U+FFFD (as when the
    /// inbox stored the dedupe key), so that such an id is applied once
    /// instead of failing its job until it dies.
    fn storable(self) -> Report {
        let clean = crate::store::storable_owned;
        Report {
            provider_ref: self.provider_ref.map(clean),
            receipt: self.receipt.map(clean),
            dedupe_key: clean(self.dedupe_key),
            ..self
        }
    }
}

fn read(kind: &str, body: &[u8]) -> Result<Report, String> {
    match kind {
        "stk" => {
            let envelope: StkCallbackEnvelope = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let callback = envelope.body.stk_callback;
            Ok(Report {
                dedupe_key: format!("stk:{}:{}", callback.checkout_request_id, callback.result_code.0),
                outcome: codes::stk(&callback.result_code.0, &callback.result_desc),
                receipt: callback.receipt(),
                amount: callback.metadata("Amount").and_then(decimal),
                provider_ref: Some(callback.checkout_request_id),
                from_query: false,
            })
        }
        "b2c-result" => {
            let result = serde_json::from_slice::<ResultEnvelope>(body)
                .map_err(|e| e.to_string())?
                .result;
            let outcome = codes::b2c(&result.result_code.0, &result.result_desc);
            let receipt = result
                .parameter_str("TransactionReceipt")
                .or(result.transaction_id.clone())
                .filter(|_| outcome == Outcome::Succeeded);
            Ok(Report {
                dedupe_key: format!("b2c:{}:{}", result.originator_conversation_id, result.result_code.0),
                outcome,
                receipt,
                amount: result
                    .parameter_str("TransactionAmount")
                    .and_then(|a| a.trim().parse().ok()),
                provider_ref: Some(result.originator_conversation_id),
                from_query: false,
            })
        }
        "b2c-timeout" => {
            // Two shapes are seen: a Result envelope, or an echo of the request.
            let originator = match serde_json::from_slice::<ResultEnvelope>(body) {
                Ok(envelope) => envelope.result.originator_conversation_id,
                Err(_) => serde_json::from_slice::<B2cRequest>(body)
                    .map_err(|e| e.to_string())?
                    .originator_conversation_id
                    .unwrap_or_default(),
            };
            Ok(Report {
                dedupe_key: format!("b2c-timeout:{originator}"),
                // A queue timeout proves nothing: the status query decides.
                outcome: Outcome::Unknown {
                    code: "queue-timeout".into(),
                    detail: "B2C queue timeout".into(),
                },
                receipt: None,
                provider_ref: Some(originator),
                from_query: false,
                amount: None,
            })
        }
        "status-result" => {
            let result = serde_json::from_slice::<ResultEnvelope>(body)
                .map_err(|e| e.to_string())?
                .result;
            let original = result.parameter_str("OriginatorConversationID");
            let outcome = if result.result_code.0 == "0" {
                codes::transaction_status(&result.parameter_str("TransactionStatus").unwrap_or_default())
            } else {
                Outcome::Unknown {
                    code: result.result_code.0.clone(),
                    detail: result.result_desc.clone(),
                }
            };
            Ok(Report {
                dedupe_key: format!("status:{}", result.conversation_id),
                receipt: result.parameter_str("ReceiptNo").filter(|r| !r.is_empty()),
                outcome,
                provider_ref: original,
                from_query: true,
                // The status answer names the amount too, and comes to the
                // same token URL as any callback: a success for another
                // amount is no more believed from it than from the result.
                amount: result.parameter_str("Amount").and_then(|a| a.trim().parse().ok()),
            })
        }
        "reversal-result" => {
            let result = serde_json::from_slice::<ResultEnvelope>(body)
                .map_err(|e| e.to_string())?
                .result;
            let outcome = codes::reversal(&result.result_code.0, &result.result_desc);
            Ok(Report {
                dedupe_key: format!(
                    "reversal:{}:{}",
                    result.originator_conversation_id, result.result_code.0
                ),
                receipt: result
                    .transaction_id
                    .clone()
                    .filter(|r| !r.is_empty() && outcome == Outcome::Succeeded),
                outcome,
                provider_ref: Some(result.originator_conversation_id),
                from_query: false,
                amount: None,
            })
        }
        "reversal-timeout" => {
            let result = serde_json::from_slice::<ResultEnvelope>(body)
                .map_err(|e| e.to_string())?
                .result;
            Ok(Report {
                dedupe_key: format!("reversal-timeout:{}", result.originator_conversation_id),
                outcome: Outcome::Unknown {
                    code: "queue-timeout".into(),
                    detail: "reversal queue timeout".into(),
                },
                receipt: None,
                provider_ref: Some(result.originator_conversation_id),
                from_query: false,
                amount: None,
            })
        }
        "status-timeout" => Ok(Report {
            dedupe_key: format!("status-timeout:{}", String::from_utf8_lossy(body).len()),
            outcome: Outcome::Unknown {
                code: "queue-timeout".into(),
                detail: "status query timed out".into(),
            },
            receipt: None,
            provider_ref: None,
            from_query: true,
            amount: None,
        }),
        other => Err(format!("unknown callback kind {other:?}")),
    }
}

/// Job arguments: process one stored M-Pesa callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessCallback {
    pub inbox_id: i64,
}

impl JobArgs for ProcessCallback {
    const KIND: &'static str = "callback.mpesa";
}

/// Job arguments: process the M-Pesa callbacks stored together (one job
/// for a group, see [`inbox::insert_and_enqueue`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessCallbacks {
    pub inbox_ids: Vec<i64>,
}

impl JobArgs for ProcessCallbacks {
    const KIND: &'static str = "callback.mpesa.group";
}

/// What processing Daraja's callbacks needs.
pub struct Callbacks {
    pub engine: Engine,
    /// The token of balance reports ([`super::balance_token`]).
    pub balance_token: Option<String>,
    /// The token of C2B notices ([`super::c2b_token`]).
    pub c2b_token: Option<String>,
    /// Where C2B payments go: a loan, a borrower, or suspense.
    pub loans: crate::loans::Loans,
}

/// The job processing a stored Daraja callback. Callback jobs running at
/// the same time on this node are handled together ([`CallbackJobs`]): the
/// common case (a result for a known, recorded request) of the whole batch
/// is applied in one transaction, everything else one at a time.
pub struct CallbackWorker {
    jobs: CallbackJobs<ProcessCallback>,
}

/// The job processing a group of Daraja callbacks stored together
/// ([`CallbackGroups`]).
pub struct CallbackGroupWorker {
    groups: CallbackGroups,
}

impl CallbackWorker {
    /// The worker of single callbacks' jobs, and that of groups' jobs.
    pub fn new(callbacks: Callbacks) -> (CallbackWorker, CallbackGroupWorker) {
        let callbacks = std::sync::Arc::new(callbacks);
        (
            CallbackWorker {
                jobs: CallbackJobs::new("callbacks.mpesa", std::sync::Arc::clone(&callbacks)),
            },
            CallbackGroupWorker {
                groups: CallbackGroups::new("callback_groups.mpesa", callbacks),
            },
        )
    }
}

impl Worker for CallbackGroupWorker {
    type Args = ProcessCallbacks;

    async fn work(&self, ctx: JobContext, args: ProcessCallbacks) -> Result<(), JobError> {
        self.groups.run(ctx, args.inbox_ids).await
    }
}

impl Worker for CallbackWorker {
    type Args = ProcessCallback;

    async fn work(&self, ctx: JobContext, args: ProcessCallback) -> Result<(), JobError> {
        self.jobs.run(ctx, args).await
    }
}

impl CallbackProcessing for Callbacks {
    type Args = ProcessCallback;

    fn inbox_id(args: &ProcessCallback) -> i64 {
        args.inbox_id
    }

    fn alone(inbox_id: i64) -> NewJob {
        NewJob::new(&ProcessCallback { inbox_id })
    }

    fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The results for known, recorded requests.
    async fn ready<'r>(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: &'r [Option<inbox::InboxRow>],
    ) -> Result<Vec<Ready<'r>>, JobError> {
        let mut parsed = Vec::new();
        for (item, row) in rows.iter().enumerate() {
            let Some(row) = row else { continue };
            if row.kind.starts_with("balance-") || row.kind.starts_with("c2b-") {
                continue;
            }
            let Ok(report) = parse(&row.kind, &row.body) else {
                continue;
            };
            if matches!(report.outcome, Outcome::Succeeded | Outcome::Failed { .. }) {
                parsed.push((item, row, report));
            }
        }
        if parsed.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<&str> = parsed.iter().map(|(_, row, _)| row.token.as_str()).collect();
        let mut locked: HashMap<String, IntentRow> = intents::lock_for_callbacks(tx, &tokens, &[])
            .await?
            .into_iter()
            .filter_map(|intent| Some((intent.callback_token.clone()?, intent)))
            .collect();
        let mut ready = Vec::new();
        for (item, row, report) in parsed {
            // A second callback for the same intent is left to the
            // one-at-a-time path, after this batch.
            let Some(intent) = locked.remove(&row.token) else {
                continue;
            };
            if intent.provider != row.provider {
                // Another provider's intent: refused by the one-at-a-time
                // path.
                continue;
            }
            let Some(expected) = intent.provider_ref.as_ref().filter(|_| !awaits_its_request(&intent)) else {
                // Not recorded yet, or learned from this callback: the
                // one-at-a-time path waits or records it.
                continue;
            };
            if report.provider_ref.as_ref().is_some_and(|got| got != expected) {
                continue;
            }
            if report.outcome == Outcome::Succeeded && amount_contradiction(report.amount, None, &intent).is_some() {
                continue;
            }
            if declined_reversal_by_query(&report, &intent) {
                continue;
            }
            ready.push(Ready {
                item,
                row,
                intent,
                dedupe_key: report.dedupe_key,
                outcome: report.outcome,
                receipt: report.receipt,
                cause: if report.from_query {
                    Cause::Poll
                } else {
                    Cause::Callback
                },
                actor: "mpesa",
                note: None,
            });
        }
        Ok(ready)
    }

    /// One callback, whatever it is.
    async fn one(&self, ctx: JobContext, args: ProcessCallback) -> Result<(), JobError> {
        let Some((mut tx, row)) = begin_one(&ctx, args.inbox_id).await? else {
            return Ok(());
        };
        if row.kind.starts_with("balance-") {
            return self.balance(ctx, tx, row).await;
        }
        if row.kind == "c2b-confirmation" {
            return self.confirmation(ctx, tx, row).await;
        }
        if row.kind.starts_with("c2b-status-") {
            return self.c2b_status(ctx, tx, row).await;
        }
        let report = match parse(&row.kind, &row.body) {
            Ok(report) => report,
            Err(error) => {
                return finish_with(ctx, tx, &row, None, None, "malformed", Some(&error)).await;
            }
        };
        let Some(mut intent) = intents::by_callback_token(&mut tx, &row.token).await? else {
            finish_row(&mut tx, &row, None, Some(&report.dedupe_key), "unknown_token", None).await?;
            tracing::warn!(
                inbox_id = row.id,
                "callback with an unknown token: stored, not processed"
            );
            return finish(ctx, tx).await;
        };
        if intent.provider != row.provider {
            // A token is a secret of one intent, handed to its own
            // provider only: Daraja cannot speak for another's.
            finish_row(&mut tx, &row, None, Some(&report.dedupe_key), "wrong_provider", None).await?;
            tracing::warn!(
                inbox_id = row.id,
                intent_id = %intent.id,
                "callback on Daraja's path with another provider's intent token: stored, not processed"
            );
            return finish(ctx, tx).await;
        }
        if awaits_its_request(&intent) {
            // The callback beat the record of its own request (a prompt
            // answered before Daraja's reply reached us, or before the
            // prompt was recorded as sent): match it later.
            if inbox::age_s(&mut tx, row.id, ctx.clock().sql_now()).await? < MATCH_WINDOW_S {
                drop(tx);
                return Err(JobError::Snooze(MATCH_RETRY));
            }
            return finish_with(
                ctx,
                tx,
                &row,
                Some(intent.id),
                Some(&report.dedupe_key),
                "unmatched",
                Some("its request never recorded a provider reference"),
            )
            .await;
        }
        if let (Some(expected), Some(got)) = (&intent.provider_ref, &report.provider_ref) {
            if expected != got {
                finish_row(
                    &mut tx,
                    &row,
                    Some(intent.id),
                    Some(&report.dedupe_key),
                    "reference_mismatch",
                    Some(got),
                )
                .await?;
                tracing::warn!(intent_id = %intent.id, "callback names another request than its intent's; not processed");
                return finish(ctx, tx).await;
            }
        }
        if let (None, Some(reference)) = (&intent.provider_ref, &report.provider_ref) {
            // Our request's answer never arrived (ambiguous); the callback
            // tells us its id.
            let assigned = intents::assign_provider_ref(&mut tx, intent.id, reference).await?;
            intent.provider_ref = Some(assigned);
        }
        if inbox::already_applied(&mut tx, "mpesa", &report.dedupe_key, row.id).await? {
            return finish_with(
                ctx,
                tx,
                &row,
                Some(intent.id),
                Some(&report.dedupe_key),
                "duplicate",
                None,
            )
            .await;
        }
        if report.outcome == Outcome::Succeeded {
            if let Some(detail) = amount_contradiction(report.amount, None, &intent) {
                tracing::warn!(intent_id = %intent.id, %detail,
                    "a Daraja success for another amount than its intent's: not applied, left to the polls and the report");
                return finish_with(
                    ctx,
                    tx,
                    &row,
                    Some(intent.id),
                    Some(&report.dedupe_key),
                    "amount_mismatch",
                    Some(&detail),
                )
                .await;
            }
        }
        let event = match &report.outcome {
            Outcome::Succeeded => "provider_succeeded",
            // Declined, the status query says, but not why: a reversal
            // declined as already reversed moved the money all the same.
            Outcome::Failed { .. } if declined_reversal_by_query(&report, &intent) => "status_declined",
            Outcome::Failed { .. } => "provider_failed",
            // The payment went back some other way: the reversal waits for
            // a person, its hold kept (`codes::ALREADY_REVERSED`).
            Outcome::Unknown { code, .. } if code == codes::ALREADY_REVERSED && row.kind == "reversal-result" => {
                "already_reversed"
            }
            Outcome::Pending | Outcome::Unknown { .. } => {
                let outcome = match report.outcome {
                    Outcome::Unknown { .. } => unreadable_outcome(&self.engine, &intent),
                    _ => "ignored",
                };
                return finish_with(
                    ctx,
                    tx,
                    &row,
                    Some(intent.id),
                    Some(&report.dedupe_key),
                    outcome,
                    Some(&format!("{:?} in state {}", report.outcome, intent.state)),
                )
                .await;
            }
        };
        if let (Outcome::Succeeded, Some(receipt)) = (&report.outcome, &report.receipt) {
            intents::set_receipt(&mut tx, intent.id, receipt).await?;
            intent.receipt.get_or_insert_with(|| receipt.clone());
        }
        let intent_id = intent.id;
        let mut applied_event = Event::new(
            event,
            if report.from_query {
                Cause::Poll
            } else {
                Cause::Callback
            },
            "mpesa",
        );
        applied_event.provider_ref = report.receipt.as_deref();
        applied_event.payload_digest = Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&row.body)));
        let said = match &report.outcome {
            Outcome::Failed { code, reason } => Some(format!("{code}: {reason}")),
            Outcome::Unknown { code, detail } => Some(format!("{code}: {detail}")),
            _ => None,
        };
        if event == "already_reversed" {
            applied_event.note = said.as_deref();
        }
        if event == "status_declined" {
            applied_event.note = Some(
                "M-Pesa's status query says the reversal was declined, not why; one declined as already \
                 reversed (R000001) moved the money another way: a person confirms",
            );
        }
        let applied = self
            .engine
            .apply_to(&mut tx, intent, &applied_event)
            .await
            .map_err(JobError::retryable)?;
        let outcome = match &applied {
            Applied::Moved { .. } => "applied",
            Applied::Rejected { contradicts_paid, .. } => refused(*contradicts_paid),
            Applied::Lost { .. } => {
                return Err(JobError::retryable("the intent changed while the callback was applied"))
            }
        };
        let detail = match (said, &applied) {
            (Some(said), _) => Some(said),
            (None, Applied::Rejected { reason, .. }) => Some(reason.clone()),
            (None, _) => None,
        };
        finish_with(
            ctx,
            tx,
            &row,
            Some(intent_id),
            Some(&report.dedupe_key),
            outcome,
            detail.as_deref(),
        )
        .await
    }
}

impl Callbacks {
    /// A C2B confirmation: records the payment, once per M-Pesa receipt.
    async fn confirmation(
        &self,
        ctx: JobContext,
        tx: sqlx::Transaction<'_, sqlx::Postgres>,
        row: inbox::InboxRow,
    ) -> Result<(), JobError> {
        if self.c2b_token.as_deref() != Some(row.token.as_str()) {
            return finish_with(ctx, tx, &row, None, None, "unknown_token", None).await;
        }
        let notice = match serde_json::from_slice::<super::wire::C2bNotice>(&row.body) {
            Ok(notice) => notice,
            Err(error) => {
                return finish_with(ctx, tx, &row, None, None, "malformed", Some(&error.to_string())).await;
            }
        };
        if let Some(field) = notice.nul_field() {
            // Listed on the report for a person, who has the statement.
            let detail = format!("a NUL character in {field}");
            return finish_with(ctx, tx, &row, None, None, "malformed", Some(&detail)).await;
        }
        self.record_payment(ctx, tx, row, notice).await
    }

    /// Daraja's answer about a payment it validated whose confirmation was
    /// lost ([`super::c2b::UnconfirmedWorker`] asked): `Completed` records
    /// the payment from the validated notice, exactly as its confirmation
    /// would have (once per receipt, whichever comes first); anything else
    /// is noted, and an answer that is not one is asked again later.
    async fn c2b_status(
        &self,
        ctx: JobContext,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        row: inbox::InboxRow,
    ) -> Result<(), JobError> {
        if self.c2b_token.as_deref() != Some(row.token.as_str()) {
            return finish_with(ctx, tx, &row, None, None, "unknown_token", None).await;
        }
        if row.kind == "c2b-status-timeout" {
            let detail = Some("status query timed out; asked again later");
            return finish_with(ctx, tx, &row, None, None, "ignored", detail).await;
        }
        let result = match serde_json::from_slice::<ResultEnvelope>(&row.body) {
            Ok(envelope) => envelope.result,
            Err(error) => {
                return finish_with(ctx, tx, &row, None, None, "malformed", Some(&error.to_string())).await;
            }
        };
        let receipt = result
            .parameter_str("ReceiptNo")
            .filter(|r| !r.is_empty())
            .or_else(|| result.transaction_id.clone().filter(|r| !r.is_empty()));
        let (Some(receipt), "0") = (receipt, result.result_code.0.as_str()) else {
            let detail = format!("no status: {} {}", result.result_code.0, result.result_desc);
            return finish_with(ctx, tx, &row, None, None, "ignored", Some(&detail)).await;
        };
        let dedupe_key = format!("c2b:{receipt}");
        let Some(body) = crate::store::c2b::asked_notice(&mut tx, &receipt).await? else {
            return finish_with(
                ctx,
                tx,
                &row,
                None,
                Some(&dedupe_key),
                "unmatched",
                Some("not asked about"),
            )
            .await;
        };
        let status = result.parameter_str("TransactionStatus").unwrap_or_default();
        // Only a final status answers the question; one still in progress
        // (or not understood) leaves the payment to be asked about again,
        // and listed for a person if it never is.
        let paid = match codes::transaction_status(&status) {
            Outcome::Succeeded => true,
            Outcome::Failed { .. } => false,
            Outcome::Pending | Outcome::Unknown { .. } => {
                let detail = format!("Daraja says {status:?}: asked again later");
                return finish_with(ctx, tx, &row, None, None, "ignored", Some(&detail)).await;
            }
        };
        let now = ctx.clock().local_now();
        crate::store::c2b::mark_answered(&mut tx, &receipt, &status, now).await?;
        let notice = match serde_json::from_slice::<super::wire::C2bNotice>(&body) {
            Ok(notice) if notice.trans_id == receipt => notice,
            Ok(_) | Err(_) => {
                return finish_with(
                    ctx,
                    tx,
                    &row,
                    None,
                    Some(&dedupe_key),
                    "malformed",
                    Some("the validated notice cannot be read"),
                )
                .await;
            }
        };
        if !paid {
            let detail = format!("Daraja says {status:?}: not paid");
            return finish_with(ctx, tx, &row, None, Some(&dedupe_key), "ignored", Some(&detail)).await;
        }
        let amount = |text: &str| text.trim().parse::<rust_decimal::Decimal>().ok();
        let answered = result.parameter_str("Amount").as_deref().and_then(amount);
        if answered.is_none() || answered != amount(&notice.trans_amount) {
            let detail = format!(
                "Daraja's amount {:?} is not the validated {:?}",
                result.parameter_str("Amount"),
                notice.trans_amount
            );
            finish_row(
                &mut tx,
                &row,
                None,
                Some(&dedupe_key),
                "reference_mismatch",
                Some(&detail),
            )
            .await?;
            tracing::warn!(
                inbox_id = row.id,
                "a C2B status answer does not match its validated payment; not recorded"
            );
            return finish(ctx, tx).await;
        }
        tracing::info!(
            inbox_id = row.id,
            "a C2B payment whose confirmation was lost is recorded from its status"
        );
        self.record_payment(ctx, tx, row, notice).await
    }

    /// Records a confirmed C2B payment (once per receipt) told by `row`
    /// and routes it: to its loan or borrower, else to suspense.
    async fn record_payment(
        &self,
        ctx: JobContext,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        row: inbox::InboxRow,
        notice: super::wire::C2bNotice,
    ) -> Result<(), JobError> {
        let dedupe_key = format!("c2b:{}", notice.trans_id);
        let parsed = notice.trans_amount.trim().parse::<rust_decimal::Decimal>();
        let Some(amount) = parsed.ok().filter(|a| *a > rust_decimal::Decimal::ZERO) else {
            return finish_with(
                ctx,
                tx,
                &row,
                None,
                Some(&dedupe_key),
                "malformed",
                Some("TransAmount is not a positive number"),
            )
            .await;
        };
        let recorded = crate::store::c2b::record(
            &mut tx,
            &crate::store::c2b::NewPayment {
                trans_id: &notice.trans_id,
                shortcode: &notice.business_short_code,
                amount,
                bill_ref: notice.bill_ref_number.trim(),
                msisdn_masked: &notice.msisdn,
                trans_time: &notice.trans_time,
                inbox_id: row.id,
            },
        )
        .await?;
        if !recorded {
            return finish_with(ctx, tx, &row, None, Some(&dedupe_key), "duplicate", None).await;
        }
        let payment = crate::loans::C2bPayment {
            provider: "mpesa",
            trans_id: &notice.trans_id,
            amount,
            currency: crate::domain::Currency::KES,
            bill_ref: notice.bill_ref_number.trim(),
        };
        // Routing runs under a savepoint: if it cannot be done (not a
        // passing database error), the payment is still recorded and kept
        // in suspense rather than lost with a job that keeps failing.
        let mut attempt = sqlx::Acquire::begin(&mut *tx).await?;
        let (routed, trouble) = match self.loans.route_c2b(&mut attempt, &payment).await {
            Ok(routed) => {
                attempt.commit().await?;
                (routed, None)
            }
            Err(crate::loans::LoanError::Database(error)) => return Err(error.into()),
            Err(error) => {
                attempt.rollback().await?;
                tracing::error!(trans_id = notice.trans_id, %error, "C2B payment could not be routed; kept in suspense");
                let routed = self
                    .loans
                    .to_suspense(&mut tx, &payment)
                    .await
                    .map_err(JobError::retryable)?;
                (routed, Some(error.to_string()))
            }
        };
        let intent_id = match &routed {
            crate::loans::Routed::Loan(id) | crate::loans::Routed::Borrower(id) => Some(*id),
            crate::loans::Routed::Suspense => None,
        };
        let detail = match trouble {
            Some(error) => format!("to suspense: {error}"),
            None => format!("to {}", routed.applied_to()),
        };
        finish_with(ctx, tx, &row, intent_id, Some(&dedupe_key), "applied", Some(&detail)).await
    }

    /// A balance report: records every account's available balance.
    async fn balance(
        &self,
        ctx: JobContext,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        row: inbox::InboxRow,
    ) -> Result<(), JobError> {
        if self.balance_token.as_deref() != Some(row.token.as_str()) {
            return finish_with(ctx, tx, &row, None, None, "unknown_token", None).await;
        }
        if row.kind == "balance-timeout" {
            return finish_with(ctx, tx, &row, None, None, "ignored", Some("balance query timed out")).await;
        }
        let result = match serde_json::from_slice::<ResultEnvelope>(&row.body) {
            Ok(envelope) => envelope.result,
            Err(error) => {
                return finish_with(ctx, tx, &row, None, None, "malformed", Some(&error.to_string())).await;
            }
        };
        let packed = result.parameter_str("AccountBalance").unwrap_or_default();
        let (accounts, skipped) = super::wire::parse_balances(&packed);
        for account in &accounts {
            crate::store::floats::record(
                &mut tx,
                "mpesa",
                &account.name,
                &account.currency,
                account.available,
                ctx.clock().sql_now(),
            )
            .await?;
        }
        let detail = (!skipped.is_empty()).then(|| format!("unreadable accounts: {}", skipped.join("; ")));
        finish_with(
            ctx,
            tx,
            &row,
            None,
            Some(&format!("balance:{}", result.conversation_id)),
            "applied",
            detail.as_deref(),
        )
        .await
    }
}
