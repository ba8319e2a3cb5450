//! Back-office endpoints (admin): reconciliation reports, float
//! adjustments, resolving an `unresolved` intent with evidence, and
//! settling a late success.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, Scope};
use super::problem::{ApiError, FieldError, Problem};
use super::views::{money_text, IntentView};
use super::{body, AppState};
use crate::domain::{Currency, Money};
use crate::ledger::{self, AccountKey, Leg, Mode, NewTransfer, Recorded};
use crate::reconcile::{self, Report};
use crate::store::{intents, reports};

/// The reconciliation report. With `date`, the one kept for that day (by
/// the daily job or `tuma reconcile`); without, one built now and not
/// kept. `format=csv` for a spreadsheet.
#[utoipa::path(get, path = "/v1/reports/reconciliation", tag = "reports",
    params(("date" = Option<String>, Query, description = "YYYY-MM-DD"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`")),
    responses((status = 200, body = Report), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No report kept for that day", body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn reconciliation_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let csv = match query.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("format", "invalid_format", "json or csv")),
    };
    let report: Report = match query.get("date") {
        Some(date) => {
            let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map_err(|_| ApiError::invalid("date", "invalid_date", "a date as YYYY-MM-DD"))?;
            let body = reports::reconciliation(&state.pool, day)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no reconciliation report for {day}")))?;
            serde_json::from_value(body).map_err(|e| ApiError::Internal(e.into()))?
        }
        None => {
            let now = state.engine.jobs().clock().local_now();
            reconcile::build(
                &state.pool,
                state.engine.workflows(),
                &state.config.reconciliation,
                now.date_naive(),
                now,
            )
            .await?
        }
    };
    if csv {
        Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            reconcile::to_csv(&report),
        )
            .into_response())
    } else {
        Ok(Json(report).into_response())
    }
}

/// Money put into (or taken out of) a provider float outside Tuma: the
/// ledger's float follows it, so reconciliation compares like with like.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatAdjustment {
    /// Positive: a top-up; negative: a withdrawal.
    #[schema(example = "1000000")]
    pub amount: String,
    #[schema(example = "KES")]
    pub currency: String,
    /// Your reference (the bank transfer); the same one again is a no-op.
    #[schema(example = "topup-2026-11-23")]
    pub reference: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FloatAdjustmentView {
    pub provider: String,
    pub transfer_id: Uuid,
    /// False when this reference was recorded before (nothing new written).
    pub created: bool,
}

/// Record a float top-up or withdrawal (admin).
#[utoipa::path(post, path = "/v1/floats/{provider}/adjustments", tag = "reports", request_body = FloatAdjustment,
    params(("provider" = String, Path)),
    responses((status = 201, body = FloatAdjustmentView), (status = 200, body = FloatAdjustmentView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The reference was used with other amounts", body = Problem),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn adjust_float(
    State(state): State<AppState>,
    caller: Caller,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<FloatAdjustmentView>), ApiError> {
    caller.require(Scope::Admin)?;
    if !state.config.providers.contains_key(&provider) {
        return Err(ApiError::NotFound(format!("no provider {provider}")));
    }
    let (request, _) = body::parse::<FloatAdjustment>(&headers, body, state.config.api.body_limit_bytes)?;
    let mut errors = Vec::new();
    let currency = request
        .currency
        .parse::<Currency>()
        .map_err(|_| {
            errors.push(FieldError::new(
                "currency",
                "unsupported_currency",
                "KES, UGX, TZS, RWF or USD",
            ))
        })
        .ok();
    let amount = currency.and_then(|c| match Money::parse(&request.amount, c) {
        Ok(money) if !money.is_zero() => Some(money),
        _ => {
            errors.push(FieldError::new(
                "amount",
                "invalid_amount",
                "a non-zero decimal string at the currency's precision",
            ));
            None
        }
    });
    let reference = request.reference.trim();
    if reference.is_empty() || reference.chars().count() > 64 {
        errors.push(FieldError::new("reference", "invalid_reference", "1 to 64 characters"));
    }
    let (Some(currency), Some(amount), true) = (currency, amount, errors.is_empty()) else {
        return Err(ApiError::Invalid(errors));
    };
    let value = amount.amount();
    let float = AccountKey::float(&provider, currency);
    let outside = AccountKey::funding(ledger::SYSTEM, currency);
    let legs = if value.is_sign_positive() {
        vec![
            Leg::debit(float, value, "top-up"),
            Leg::credit(outside, value, "top-up"),
        ]
    } else {
        vec![
            Leg::credit(float, -value, "withdrawal"),
            Leg::debit(outside, -value, "withdrawal"),
        ]
    };
    let mut tx = state.pool.begin().await?;
    let recorded = ledger::record(
        &mut tx,
        &NewTransfer {
            key: format!("float:{provider}:{reference}"),
            owner: ledger::SYSTEM.into(),
            kind: "float_adjustment".into(),
            intent_id: None,
            description: format!("{provider} float adjustment {reference} by {}", caller.name),
            legs,
        },
        Mode::Post,
        state.engine.jobs().clock().sql_now(),
    )
    .await
    .map_err(|error| match error {
        ledger::LedgerError::Mismatch { .. } => ApiError::InvalidState(error.to_string()),
        other => ApiError::Internal(other.into()),
    })?;
    tx.commit().await?;
    let (status, transfer_id, created) = match recorded {
        Recorded::New { transfer_id } => (StatusCode::CREATED, transfer_id, true),
        Recorded::Already { transfer_id, .. } => (StatusCode::OK, transfer_id, false),
    };
    Ok((
        status,
        Json(FloatAdjustmentView {
            provider,
            transfer_id,
            created,
        }),
    ))
}

/// How an admin settles an `unresolved` intent.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// `succeeded` (the money moved) or `failed` (it did not).
    #[schema(example = "succeeded")]
    pub outcome: String,
    /// What shows it: a statement line, the provider's support ticket.
    #[schema(example = "Daraja statement 2026-11-23 line 4411, receipt TKL3X8F2QA")]
    pub evidence: String,
    /// The provider's receipt, when the money moved.
    #[serde(default)]
    pub receipt: Option<String>,
}

/// Resolve an `unresolved` payout with evidence (admin).
#[utoipa::path(post, path = "/v1/payouts/{id}/resolve", tag = "reports", request_body = Resolution,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = IntentView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "Not unresolved", body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn resolve_payout(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IntentView>, ApiError> {
    resolve(state, caller, id, headers, body, "payout").await
}

/// Resolve an `unresolved` collection with evidence (admin).
#[utoipa::path(post, path = "/v1/collections/{id}/resolve", tag = "reports", request_body = Resolution,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = IntentView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "Not unresolved", body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn resolve_collection(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IntentView>, ApiError> {
    resolve(state, caller, id, headers, body, "collection").await
}

/// Resolve an `unresolved` reversal with evidence (admin).
#[utoipa::path(post, path = "/v1/reversals/{id}/resolve", tag = "reports", request_body = Resolution,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = IntentView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "Not unresolved", body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn resolve_reversal(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IntentView>, ApiError> {
    resolve(state, caller, id, headers, body, "reversal").await
}

async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: &str,
) -> Result<Json<IntentView>, ApiError> {
    caller.require(Scope::Admin)?;
    let (request, _) = body::parse::<Resolution>(&headers, body, state.config.api.body_limit_bytes)?;
    let not_found = || ApiError::NotFound(format!("no {kind} {id}"));
    let resolution = crate::resolve::Resolution {
        outcome: &request.outcome,
        evidence: &request.evidence,
        receipt: request.receipt.as_deref(),
    };
    // An unparsable id is a 404 only once the fields are known good, as
    // for any other id: field errors come first.
    let intent_id = match Uuid::parse_str(&id) {
        Ok(intent_id) => intent_id,
        Err(_) => {
            crate::resolve::check(&resolution).map_err(resolve_error_fields)?;
            return Err(not_found());
        }
    };
    crate::resolve::resolve(
        &state.engine,
        &state.pool,
        Some(&caller.owner),
        Some(kind),
        intent_id,
        &caller.name,
        &resolution,
    )
    .await
    .map_err(|error| match error {
        crate::resolve::ResolveError::Invalid(problems) => resolve_error_fields(problems),
        crate::resolve::ResolveError::NotFound => not_found(),
        crate::resolve::ResolveError::InvalidState(message) => ApiError::InvalidState(message),
        crate::resolve::ResolveError::Engine(e) => ApiError::Internal(e.into()),
        crate::resolve::ResolveError::Database(e) => e.into(),
    })?;
    let mut conn = state.pool.acquire().await?;
    let row = intents::get(&mut conn, intent_id).await?.ok_or_else(not_found)?;
    Ok(Json(IntentView::from_row(&row)))
}

fn resolve_error_fields(problems: Vec<crate::resolve::FieldProblem>) -> ApiError {
    ApiError::Invalid(
        problems
            .into_iter()
            .map(|(field, code, detail)| FieldError::new(field, code, detail))
            .collect(),
    )
}

/// A provider's success refused because its intent had already ended
/// without the money moving, and whether a person has settled it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LateSuccessView {
    /// The intent's id.
    pub id: Uuid,
    pub kind: String,
    /// The final state it stays in (`failed`, `cancelled`, ...).
    pub state: String,
    #[schema(example = "2000")]
    pub amount: String,
    pub currency: String,
    pub provider: String,
    pub reference: String,
    /// The provider's reference the success carried, if any.
    pub provider_ref: Option<String>,
    /// How it came: `callback`, `poll` or `admin`.
    pub cause: String,
    /// When the success was refused.
    pub reported_at: chrono::DateTime<chrono::Utc>,
    /// Null while open.
    pub settled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The API key that settled it.
    pub settled_by: Option<String>,
    pub evidence: Option<String>,
    /// Once settled: `recovered` (the ledger left as it was) or `booked`
    /// (the money posted by `transfer_id`).
    pub outcome: Option<String>,
    /// The ledger transfer that booked it.
    pub transfer_id: Option<Uuid>,
}

impl From<crate::store::late_successes::LateSuccess> for LateSuccessView {
    fn from(l: crate::store::late_successes::LateSuccess) -> LateSuccessView {
        LateSuccessView {
            amount: money_text(l.amount, &l.currency),
            id: l.id,
            kind: l.kind,
            state: l.state,
            currency: l.currency,
            provider: l.provider,
            reference: l.reference,
            provider_ref: l.provider_ref,
            cause: l.cause,
            reported_at: l.at,
            settled_at: l.settled_at,
            settled_by: l.settled_by,
            evidence: l.evidence,
            outcome: l.outcome,
            transfer_id: l.transfer_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LateSuccessList {
    /// Open ones oldest first; settled ones most recently settled first.
    pub data: Vec<LateSuccessView>,
}

/// How an admin settles a late success.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LateSuccessSettlement {
    /// What was done and what shows it: the money recovered (a reversal's
    /// receipt), or why it stays where it went (the statement line).
    #[schema(example = "recovered by reversal, Daraja receipt TKL9REV001")]
    pub evidence: String,
    /// `recovered` (the default): the money came back, or was put right
    /// outside Tuma, and the ledger is left as it is. `booked`: the money
    /// stays where the provider moved it, and Tuma posts it as completing
    /// the intent would have: a payout's or reversal's released hold is
    /// posted again (its party pays for it now; refused with 409 when the
    /// balance cannot cover it), a collection credits its payee.
    #[schema(example = "recovered")]
    pub outcome: Option<String>,
}

/// Late successes (admin): `status=open` (the default) or `settled`.
#[utoipa::path(get, path = "/v1/late-successes", tag = "reports",
    params(("status" = Option<String>, Query, description = "`open` (default) or `settled`"),
        ("limit" = Option<u32>, Query)),
    responses((status = 200, body = LateSuccessList), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn late_successes(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<LateSuccessList>, ApiError> {
    caller.require(Scope::Admin)?;
    let settled = match query.get("status").map(String::as_str) {
        None | Some("open") => false,
        Some("settled") => true,
        Some(_) => return Err(ApiError::invalid("status", "invalid_status", "open or settled")),
    };
    let limit = body::page_limit(&query, &state.config.api)?;
    let rows = crate::store::late_successes::list(&state.pool, Some(&caller.owner), settled, i64::from(limit)).await?;
    Ok(Json(LateSuccessList {
        data: rows.into_iter().map(LateSuccessView::from).collect(),
    }))
}

/// Settle a late success with evidence (admin): the money was recovered,
/// or it stays where the provider moved it and is booked, so
/// reconciliation stops listing it. The intent stays in its final state.
#[utoipa::path(post, path = "/v1/late-successes/{id}/settle", tag = "reports", request_body = LateSuccessSettlement,
    params(("id" = Uuid, Path, description = "The intent's id")),
    responses((status = 200, body = LateSuccessView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No late success for that intent", body = Problem),
        (status = 409, description = "Already settled, or it cannot be booked (a balance that cannot cover it, a loan's intent)", body = Problem),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn settle_late_success(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LateSuccessView>, ApiError> {
    caller.require(Scope::Admin)?;
    let (request, _) = body::parse::<LateSuccessSettlement>(&headers, body, state.config.api.body_limit_bytes)?;
    let not_found = || ApiError::NotFound(format!("no late success for intent {id}"));
    // An unparsable id is looked for as the nil id, which names no intent:
    // a 404 once the fields are known good, as for any other id.
    let intent_id = Uuid::parse_str(&id).unwrap_or(Uuid::nil());
    let settlement = crate::resolve::Settlement::parse(request.outcome.as_deref())
        .ok_or_else(|| ApiError::invalid("outcome", "invalid_outcome", "recovered or booked"))?;
    let now = state.engine.jobs().clock().sql_now();
    let late = crate::resolve::settle_late_success(
        &state.engine,
        state.policy.default_tier(),
        Some(&caller.owner),
        intent_id,
        &caller.name,
        &request.evidence,
        settlement,
        now,
    )
    .await
    .map_err(|error| record_error(error, not_found))?;
    Ok(Json(LateSuccessView::from(late)))
}

/// A record with evidence that was not kept, as the API answers it: 422 for
/// the evidence, `not_found`, or 409 with why.
fn record_error(error: crate::resolve::RecordError, not_found: impl FnOnce() -> ApiError) -> ApiError {
    use crate::resolve::RecordError;
    match error {
        RecordError::Invalid => ApiError::invalid("evidence", "invalid_evidence", "1 to 500 characters"),
        RecordError::NotFound => not_found(),
        RecordError::Refused(message) => ApiError::InvalidState(message),
        RecordError::Database(e) => e.into(),
        RecordError::Ledger(e) => ApiError::Internal(e.into()),
    }
}

/// A callback the reconciliation report listed, and its review.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallbackReviewView {
    /// The callback's id in the inbox (`inbox_id` on the report).
    pub id: i64,
    pub provider: String,
    pub kind: String,
    /// What processing made of it (`unknown_token`, `amount_mismatch`, ...).
    pub outcome: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub reviewed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The API key that reviewed it.
    pub reviewed_by: Option<String>,
    pub evidence: Option<String>,
}

impl From<crate::store::reports::CallbackReview> for CallbackReviewView {
    fn from(c: crate::store::reports::CallbackReview) -> CallbackReviewView {
        CallbackReviewView {
            id: c.id,
            provider: c.provider,
            kind: c.kind,
            outcome: c.outcome,
            received_at: c.received_at,
            reviewed_at: c.reviewed_at,
            reviewed_by: c.reviewed_by,
            evidence: c.review_note,
        }
    }
}

/// How an admin records the review of a listed callback.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackReviewRequest {
    /// What was found and done: a probe from an unknown address, the
    /// payment credited by hand (its reference), the provider asked.
    #[schema(example = "asked Safaricom: a test call from their side, no money moved")]
    pub evidence: String,
}

/// Review a callback the reconciliation report lists (admin): one that
/// named no intent of ours, contradicted an ended intent, reported another
/// amount, or a C2B confirmation refused at the door. The report stops
/// listing it; the review is kept on the callback.
#[utoipa::path(post, path = "/v1/callbacks/{id}/review", tag = "reports", request_body = CallbackReviewRequest,
    params(("id" = i64, Path, description = "The callback's inbox id, as the report gives it")),
    responses((status = 200, body = CallbackReviewView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No callback with that id", body = Problem),
        (status = 409, description = "Reviewed already, or not one the report lists", body = Problem),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn review_callback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CallbackReviewView>, ApiError> {
    caller.require(Scope::Admin)?;
    let (request, _) = body::parse::<CallbackReviewRequest>(&headers, body, state.config.api.body_limit_bytes)?;
    // An unparsable id names no callback: a 404 once the fields are good.
    let inbox_id = id.parse::<i64>().unwrap_or(0);
    let now = state.engine.jobs().clock().sql_now();
    let not_found = || ApiError::NotFound(format!("no callback {id}"));
    let reviewed = crate::resolve::review_callback(&state.pool, inbox_id, &caller.name, &request.evidence, now)
        .await
        .map_err(|error| record_error(error, not_found))?;
    Ok(Json(CallbackReviewView::from(reviewed)))
}

/// One point of a balance history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BalancePoint {
    pub at: chrono::DateTime<chrono::Utc>,
    pub currency: String,
    #[schema(example = "1500.00")]
    pub posted: String,
    /// Posted, less what pending payouts hold.
    #[schema(example = "1200.00")]
    pub available: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BalanceHistory {
    pub party_id: String,
    /// Newest first, one point per snapshot (`[cron] balance_snapshots`).
    pub data: Vec<BalancePoint>,
}

/// A party's balance history.
#[utoipa::path(get, path = "/v1/parties/{id}/balance-history", tag = "money",
    params(("id" = String, Path), ("currency" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = BalanceHistory), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn balance_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(party): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<BalanceHistory>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let currency = match query.get("currency") {
        Some(code) => Some(
            code.parse::<Currency>()
                .map_err(|_| ApiError::invalid("currency", "unsupported_currency", "KES, UGX, TZS, RWF or USD"))?,
        ),
        None => None,
    };
    let limit = body::page_limit(&query, &state.config.api)?;
    let rows = reports::party_history(
        &state.pool,
        &caller.owner,
        &party,
        currency.map(Currency::code),
        i64::from(limit),
    )
    .await?;
    Ok(Json(BalanceHistory {
        party_id: party,
        data: rows
            .iter()
            .map(|r| BalancePoint {
                at: r.taken_at,
                currency: r.currency.clone(),
                posted: money_text(r.posted, &r.currency),
                available: money_text(r.posted - r.pending_out, &r.currency),
            })
            .collect(),
    }))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaxLineView {
    pub party_id: String,
    pub currency: String,
    pub payouts: i64,
    #[schema(example = "250000")]
    pub total: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaxReportView {
    /// `YYYY-MM`.
    pub month: String,
    /// Parties paid more than the month's threshold in a currency.
    pub data: Vec<TaxLineView>,
}

/// The monthly tax report (admin): recipients paid above the threshold.
#[utoipa::path(get, path = "/v1/reports/tax", tag = "reports",
    params(("month" = String, Query, description = "YYYY-MM")),
    responses((status = 200, body = TaxReportView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn tax_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<TaxReportView>, ApiError> {
    caller.require(Scope::Admin)?;
    let month = query
        .get("month")
        .filter(|m| crate::reports::month_bounds(m).is_some())
        .ok_or_else(|| ApiError::invalid("month", "invalid_month", "a month as YYYY-MM"))?;
    let lines = reports::tax_report(&state.pool, &caller.owner, month).await?;
    Ok(Json(TaxReportView {
        month: month.clone(),
        data: lines
            .into_iter()
            .map(|l| TaxLineView {
                party_id: l.party_id,
                currency: l.currency,
                payouts: l.payouts,
                total: l.total.normalize().to_string(),
            })
            .collect(),
    }))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderStatsView {
    pub provider: String,
    /// `payout`, `collection` or `reversal`.
    pub kind: String,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub expired: i64,
    pub unresolved: i64,
    /// Not final yet.
    pub open: i64,
    /// Completed out of those that ended (0 to 1), if any ended.
    pub success_rate: Option<f64>,
    /// Median seconds from creation to a final state.
    pub median_seconds_to_final: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProvidersReport {
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    pub data: Vec<ProviderStatsView>,
}

/// Success rates per provider (admin), for intents created in `[from, to)`
/// (default: the last 24 hours).
#[utoipa::path(get, path = "/v1/reports/providers", tag = "reports",
    params(("from" = Option<String>, Query, description = "RFC 3339"), ("to" = Option<String>, Query, description = "RFC 3339")),
    responses((status = 200, body = ProvidersReport), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn providers_report(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ProvidersReport>, ApiError> {
    caller.require(Scope::Admin)?;
    let parse = |name: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        query
            .get(name)
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| ApiError::invalid(name, "invalid_time", "an RFC 3339 time"))
            })
            .transpose()
    };
    let to = parse("to")?.unwrap_or_else(|| state.engine.jobs().clock().local_now() + chrono::Duration::seconds(1));
    let from = parse("from")?.unwrap_or(to - chrono::Duration::days(1));
    if from >= to {
        return Err(ApiError::invalid("from", "invalid_range", "from must be before to"));
    }
    let rows = reports::provider_stats(&state.pool, &caller.owner, from, to).await?;
    Ok(Json(ProvidersReport {
        from,
        to,
        data: rows
            .into_iter()
            .map(|r| {
                let ended = r.completed + r.failed + r.expired;
                ProviderStatsView {
                    success_rate: (ended > 0).then(|| r.completed as f64 / ended as f64),
                    provider: r.provider,
                    kind: r.kind,
                    total: r.total,
                    completed: r.completed,
                    failed: r.failed,
                    expired: r.expired,
                    unresolved: r.unresolved,
                    open: r.open,
                    median_seconds_to_final: r.median_final_s,
                }
            })
            .collect(),
    }))
}
