//! `POST /v1/reversals`: send a completed payment back (admin).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{Caller, Scope};
use super::intents::{claim, created, idempotency_key, Claimed};
use super::problem::{ApiError, Problem};
use super::views::IntentView;
use super::{body, AppState};
use crate::reversals::{self, NewReversal, ReversalError};

/// Longest reason kept with a reversal (Daraja takes 100 characters of it).
const MAX_REASON_CHARS: usize = 100;

/// `POST /v1/reversals`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReversal {
    /// The provider's receipt of the completed payment (an M-Pesa
    /// transaction id).
    #[schema(example = "TKL3X8F2QA")]
    pub receipt: String,
    /// Why; kept in the history and sent to the provider.
    #[schema(example = "paid to the wrong loan")]
    pub reason: String,
}

/// Reverse a completed payment (admin): a collection, a C2B payment
/// applied to a loan or borrower, or a payout.
#[utoipa::path(post, path = "/v1/reversals", tag = "reversals", request_body = CreateReversal,
    params(("Idempotency-Key" = String, Header, description = "Unique per reversal asked for")),
    responses((status = 201, body = IntentView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, description = "No completed payment with that receipt", body = Problem),
        (status = 409, description = "Already reversed, or not reversible", body = Problem),
        (status = 422, description = "Invalid fields, or a balance no longer holds what the reversal takes back", body = Problem)),
    security(("api_key" = [])))]
pub async fn create_reversal(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    idempotency_key(&headers)?;
    let (request, json) = body::parse::<CreateReversal>(&headers, body, state.config.api.body_limit_bytes)?;
    let receipt = request.receipt.trim().to_owned();
    let reason = request.reason.trim().to_owned();
    let mut errors = Vec::new();
    if receipt.is_empty() || receipt.len() > 64 || !receipt.bytes().all(|b| b.is_ascii_alphanumeric()) {
        errors.push(super::problem::FieldError::new(
            "receipt",
            "invalid_receipt",
            "the provider's receipt: 1 to 64 letters and digits",
        ));
    }
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        errors.push(super::problem::FieldError::new(
            "reason",
            "invalid_reason",
            format!("1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let location = |view: &serde_json::Value| Some(format!("/v1/reversals/{}", view["id"].as_str()?));
    let (mut tx, key) = match claim(&state, &caller, &headers, &json, location).await? {
        Claimed::Replay(response) => return Ok(response),
        Claimed::Fresh(tx, key) => (tx, key),
    };
    let row = reversals::create(
        &state.engine,
        &state.config,
        &mut tx,
        NewReversal {
            owner: caller.owner.clone(),
            created_by: caller.name.clone(),
            receipt,
            reason,
        },
    )
    .await
    .map_err(|error| match error {
        ReversalError::NotFound(_) => ApiError::NotFound(error.to_string()),
        ReversalError::Conflict(detail) => ApiError::InvalidState(detail),
        ReversalError::Refused(refusal) => ApiError::Refused(refusal),
        other => ApiError::Internal(other.into()),
    })?;
    let view = serde_json::to_value(IntentView::from_row(&row)).map_err(|e| ApiError::Internal(e.into()))?;
    created(tx, &caller.owner, &key, view, &format!("/v1/reversals/{}", row.id)).await
}
