//! Maker-checker approvals and bulk payouts.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, Scope};
use super::intents::idempotency_key;
use super::problem::{ApiError, FieldError, Problem};
use super::validate::{validate, CreatePayout};
use super::views::IntentView;
use super::{body, AppState};
use crate::policy::approvals::{decide, Decided, Decision, DecisionError};
use crate::policy::{AdmitError, PayoutExtras};
use crate::store::{idempotency, intents, policy as store};

/// Payouts waiting for approval.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalPage {
    pub data: Vec<IntentView>,
    pub next_cursor: Option<String>,
}

/// Payouts waiting for approval, oldest first. Admin keys see every
/// owner's.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals",
    params(("state" = Option<String>, Query, description = "Only `pending` is supported"),
        ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = ApprovalPage), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ApprovalPage>, ApiError> {
    caller.require(Scope::ApprovalsWrite)?;
    if query.get("state").is_some_and(|s| s != "pending") {
        return Err(ApiError::invalid(
            "state",
            "invalid_state",
            "only state=pending is listed",
        ));
    }
    let owner = if caller.require(Scope::Admin).is_ok() {
        None
    } else {
        Some(caller.owner.as_str())
    };
    let after = match query.get("cursor") {
        Some(cursor) => {
            let id = Uuid::parse_str(cursor)
                .map_err(|_| ApiError::invalid("cursor", "invalid_cursor", "use next_cursor from a previous page"))?;
            let mut conn = state.pool.acquire().await?;
            let row = intents::get(&mut conn, id)
                .await?
                .ok_or_else(|| ApiError::invalid("cursor", "invalid_cursor", "use next_cursor from a previous page"))?;
            Some((row.created_at, row.id))
        }
        None => None,
    };
    let limit = body::page_limit(&query, &state.config.api)?;
    let mut rows = store::pending_approvals(&state.pool, owner, after, i64::from(limit) + 1).await?;
    let next_cursor = body::next_page(&mut rows, limit, |r| r.id.to_string());
    Ok(Json(ApprovalPage {
        data: rows.iter().map(IntentView::from_row).collect(),
        next_cursor,
    }))
}

/// An approver's decision.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Required to reject; kept with the decision.
    #[schema(example = "matches the signed contract")]
    pub reason: Option<String>,
}

/// The payout after a decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    /// `approved`, `waiting` (more approvals needed) or `rejected`.
    pub outcome: String,
    pub approvals: usize,
    pub approvals_required: usize,
    pub payout: IntentView,
}

/// Approve a payout waiting for approval.
#[utoipa::path(post, path = "/v1/payouts/{id}/approve", tag = "approvals", request_body = DecisionBody,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DecisionView), (status = 401, body = Problem),
        (status = 403, description = "Missing scope, or the approver created the payout", body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
pub async fn approve(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DecisionView>, ApiError> {
    decide_one(state, caller, id, headers, body, Decision::Approve).await
}

/// Reject a payout waiting for approval; its hold is released.
#[utoipa::path(post, path = "/v1/payouts/{id}/reject", tag = "approvals", request_body = DecisionBody,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DecisionView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn reject(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DecisionView>, ApiError> {
    decide_one(state, caller, id, headers, body, Decision::Reject).await
}

async fn decide_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    decision: Decision,
) -> Result<Json<DecisionView>, ApiError> {
    caller.require(Scope::ApprovalsWrite)?;
    let not_found = || ApiError::NotFound(format!("no payout {id}"));
    let intent_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let reason = decision_reason(&state, &headers, body, decision)?;
    let owner = if caller.require(Scope::Admin).is_ok() {
        None
    } else {
        Some(caller.owner.as_str())
    };
    let mut tx = state.pool.begin().await?;
    let decided = decide(
        &state.engine,
        &mut tx,
        owner,
        intent_id,
        &caller.name,
        decision,
        reason.as_deref(),
    )
    .await
    .map_err(decision_error)?;
    tx.commit().await?;
    let mut conn = state.pool.acquire().await?;
    let row = intents::get(&mut conn, intent_id).await?.ok_or_else(not_found)?;
    let approvals = store::approvals(&mut conn, intent_id)
        .await?
        .iter()
        .filter(|a| a.decision == "approve")
        .count();
    Ok(Json(DecisionView {
        outcome: match decided {
            Decided::Approved => "approved",
            Decided::Waiting { .. } => "waiting",
            Decided::Rejected => "rejected",
        }
        .to_owned(),
        approvals,
        approvals_required: usize::try_from(row.approvals_required).unwrap_or(0),
        payout: IntentView::from_row(&row),
    }))
}

fn decision_reason(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    decision: Decision,
) -> Result<Option<String>, ApiError> {
    let request: DecisionBody = body::parse_or_default(headers, body, state.config.api.body_limit_bytes)?;
    let reason = request.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if decision == Decision::Reject && reason.is_none() {
        return Err(ApiError::invalid(
            "reason",
            "missing_field",
            "a rejection needs a reason",
        ));
    }
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::invalid("reason", "invalid_reason", "at most 500 characters"));
    }
    Ok(reason)
}

fn decision_error(error: DecisionError) -> ApiError {
    match error {
        DecisionError::NotFound(id) => ApiError::NotFound(format!("no payout {id}")),
        DecisionError::OwnIntent(_) => ApiError::NotAllowed(error.to_string()),
        DecisionError::NotAwaiting(_) | DecisionError::AlreadyDecided(_) => ApiError::InvalidState(error.to_string()),
        other => ApiError::Internal(other.into()),
    }
}

/// `POST /v1/payout-batches`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    #[schema(example = "salaries-2026-11")]
    pub reference: String,
    pub payouts: Vec<CreatePayout>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchView {
    pub id: Uuid,
    pub reference: String,
    /// The batch's total in USD equivalent.
    #[schema(value_type = String)]
    pub usd_equivalent: Decimal,
    pub payouts: Vec<IntentView>,
}

/// Most payouts in one batch.
const MAX_BATCH: usize = 1000;

/// Create many payouts at once: all pass validation and policy and are
/// created, or none is. When the batch's total is above an approval
/// threshold, every payout in it waits for approval, and the batch is
/// approved as one (`POST /v1/payout-batches/{id}/approve`).
#[utoipa::path(post, path = "/v1/payout-batches", tag = "payouts", request_body = CreateBatch,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = BatchView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, description = "Which payouts failed and why; none was created", body = Problem)),
    security(("api_key" = [])))]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Scope::IntentsWrite)?;
    let key = idempotency_key(&headers)?;
    let limit = state.config.api.body_limit_bytes.max(1024 * 1024);
    let (request, json) = body::parse::<CreateBatch>(&headers, body, limit)?;
    if request.payouts.is_empty() || request.payouts.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "payouts",
            "invalid_batch",
            format!("1 to {MAX_BATCH} payouts"),
        ));
    }
    let mut news = Vec::new();
    let mut errors = Vec::new();
    for (i, payout) in request.payouts.iter().enumerate() {
        let party_provider = super::intents::party_provider(&state, &caller.owner, &payout.input()).await?;
        let mut input = payout.input();
        input.party_provider = party_provider.as_deref();
        match validate(&input, &state.config, &caller.owner, &caller.name) {
            Ok(new) => news.push((new, payout.quote_id)),
            Err(fields) => errors.extend(fields.into_iter().map(|mut f| {
                f.field = format!("payouts[{i}].{}", f.field);
                f
            })),
        }
    }
    let request_hash = super::intents::request_hash(&json);
    let now = state.engine.jobs().clock().sql_now();
    let mut tx = state.pool.begin().await?;
    let ttl_s = state.config.api.idempotency_ttl_s as i64;
    if let Some(first) = idempotency::claim(&mut tx, &caller.owner, &key, &request_hash, ttl_s, now).await? {
        tx.rollback().await?;
        if first.request_hash != request_hash {
            return Err(ApiError::IdempotencyConflict);
        }
        let status = StatusCode::from_u16(first.response_status as u16).map_err(|e| ApiError::Internal(e.into()))?;
        return Ok((status, Json(first.response_body)));
    }
    // Judged after the key: a retry of a batch that was created gets its
    // first response even if a party's settings or a provider's limits
    // changed since and its payouts would no longer validate.
    if !errors.is_empty() {
        tx.rollback().await?;
        return Err(ApiError::Invalid(errors));
    }
    let batch_id = Uuid::now_v7();
    store::insert_batch(
        &mut tx,
        batch_id,
        &caller.owner,
        request.reference.trim(),
        &caller.name,
        now,
    )
    .await?;
    let mut rows = Vec::new();
    let mut refusals = Vec::new();
    for (i, (new, quote_id)) in news.into_iter().enumerate() {
        let extras = PayoutExtras {
            quote_id,
            campaign_id: new.terms.campaign_id.clone(),
            batch_id: Some(batch_id),
            priced: None,
        };
        match state.policy.admit_payout(&state.engine, &mut tx, new, extras).await {
            Ok(row) => rows.push(row),
            // A refusal leaves the transaction usable only if nothing failed
            // half-way in SQL; collect it and stop at the first, so the
            // client sees which payout and why. Nothing is created.
            Err(AdmitError::Refused(refusal)) => {
                refusals.push(FieldError::new(
                    &format!("payouts[{i}]"),
                    "refused",
                    refusal.to_string(),
                ));
                break;
            }
            Err(other) => return Err(ApiError::Internal(other.into())),
        }
    }
    if !refusals.is_empty() {
        tx.rollback().await?;
        return Err(ApiError::Invalid(refusals));
    }
    let total = state
        .policy
        .gate_batch(&state.engine, &mut tx, &mut rows)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let view = BatchView {
        id: batch_id,
        reference: request.reference.trim().to_owned(),
        usd_equivalent: total,
        payouts: rows.iter().map(IntentView::from_row).collect(),
    };
    let view = serde_json::to_value(view).map_err(|e| ApiError::Internal(e.into()))?;
    idempotency::store_response(&mut tx, &caller.owner, &key, StatusCode::CREATED.as_u16() as i16, &view).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// What approving a batch did, payout by payout.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchDecisionView {
    pub batch_id: Uuid,
    /// Payout id → `approved`, `waiting`, or why it was skipped.
    pub outcomes: HashMap<Uuid, String>,
}

/// Approve every payout of a batch that waits for approval.
#[utoipa::path(post, path = "/v1/payout-batches/{id}/approve", tag = "approvals", params(("id" = Uuid, Path)),
    responses((status = 200, body = BatchDecisionView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub async fn approve_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BatchDecisionView>, ApiError> {
    caller.require(Scope::ApprovalsWrite)?;
    let not_found = || ApiError::NotFound(format!("no batch {id}"));
    let batch_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let owner = store::batch_owner(&state.pool, batch_id).await?.ok_or_else(not_found)?;
    if owner != caller.owner && caller.require(Scope::Admin).is_err() {
        return Err(not_found());
    }
    let ids = store::batch_awaiting(&state.pool, batch_id).await?;
    let mut tx = state.pool.begin().await?;
    let mut outcomes = HashMap::new();
    for intent_id in ids {
        let outcome = match decide(
            &state.engine,
            &mut tx,
            Some(&owner),
            intent_id,
            &caller.name,
            Decision::Approve,
            None,
        )
        .await
        {
            Ok(Decided::Approved) => "approved".to_owned(),
            Ok(Decided::Waiting { approvals, required }) => format!("waiting ({approvals} of {required})"),
            Ok(Decided::Rejected) => "rejected".to_owned(),
            Err(DecisionError::Database(e)) => return Err(e.into()),
            Err(DecisionError::Engine(e)) => return Err(ApiError::Internal(e.into())),
            Err(e @ DecisionError::OwnIntent(_)) => return Err(ApiError::NotAllowed(e.to_string())),
            Err(e) => e.to_string(),
        };
        outcomes.insert(intent_id, outcome);
    }
    tx.commit().await?;
    Ok(Json(BatchDecisionView { batch_id, outcomes }))
}
