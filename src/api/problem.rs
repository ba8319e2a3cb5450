//! Errors as `application/problem+json` (RFC 9457).
//!
//! Error policy: every error a client can cause maps to one [`ApiError`]
//! variant with a stable `type` (`urn:tuma:problem:<slug>`), a human title,
//! and where it helps, field-level details. Internal errors are logged here,
//! once, with the request's context, and answered with a bare 500 that says
//! nothing about the internals.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One problem with one field of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's path, e.g. `amount` or `recipient.msisdn`.
    pub field: String,
    /// A stable, machine-readable code, e.g. `too_many_decimals`.
    pub code: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: &str, code: &str, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_owned(),
            code: code.to_owned(),
            detail: detail.into(),
        }
    }
}

/// The problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Problem-specific members (e.g. a limit's `used_usd` and `left_usd`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this API key lacks the {0} scope")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    IdempotencyKey(String),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyConflict,
    #[error("{0}")]
    InvalidState(String),
    /// Policy refused a payout; nothing was held.
    #[error(transparent)]
    Refused(#[from] crate::policy::Refusal),
    /// Maker-checker: this caller may not decide on this intent.
    #[error("{0}")]
    NotAllowed(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

impl ApiError {
    pub fn invalid(field: &str, code: &str, detail: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![FieldError::new(field, code, detail)])
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "The request has invalid fields",
            ),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json", "The body is not valid JSON"),
            ApiError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "The body is too large"),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "The body must be JSON",
            ),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "A valid API key is required"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "The API key may not do this"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::IdempotencyKey(_) => (
                StatusCode::BAD_REQUEST,
                "idempotency-key-invalid",
                "A valid Idempotency-Key header is required",
            ),
            ApiError::IdempotencyConflict => (
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "The Idempotency-Key was already used with a different body",
            ),
            ApiError::InvalidState(_) => (
                StatusCode::CONFLICT,
                "invalid-state",
                "Not possible in the intent's current state",
            ),
            ApiError::Refused(refusal) => {
                use crate::policy::{QuoteProblem, Refusal};
                match refusal {
                    Refusal::LimitExceeded { .. } => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "limit-exceeded",
                        "The payout is over a KYC tier limit",
                    ),
                    Refusal::VelocityBlocked { .. } => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "velocity-blocked",
                        "A velocity rule blocks the payout",
                    ),
                    Refusal::BlockedCountry(_) => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "blocked-country",
                        "Payouts involving this country are blocked",
                    ),
                    Refusal::InsufficientFunds(_) => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "insufficient-funds",
                        "The balance does not cover the payout and its fees",
                    ),
                    Refusal::Fees(_) => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unpriceable",
                        "The payout cannot be priced",
                    ),
                    Refusal::NoRate { .. } => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "no-fx-rate",
                        "No FX rate for this pair of currencies",
                    ),
                    Refusal::Quote(QuoteProblem::NotFound(_)) => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "quote-not-found", "No such quote")
                    }
                    Refusal::Quote(QuoteProblem::Expired { .. }) => {
                        (StatusCode::CONFLICT, "quote-expired", "The quote has expired")
                    }
                    Refusal::Quote(QuoteProblem::Used { .. }) => {
                        (StatusCode::CONFLICT, "quote-used", "The quote was already used")
                    }
                    Refusal::Quote(QuoteProblem::Mismatch { .. }) => (
                        StatusCode::CONFLICT,
                        "quote-mismatch",
                        "The quote does not match the payout",
                    ),
                }
            }
            ApiError::NotAllowed(_) => (
                StatusCode::FORBIDDEN,
                "not-allowed",
                "This caller may not decide on this intent",
            ),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let extensions = match &self {
            ApiError::Refused(crate::policy::Refusal::LimitExceeded {
                limit,
                limit_usd,
                used_usd,
                left_usd,
                asked_usd,
            }) => serde_json::json!({
                "limit": limit,
                "limit_usd": limit_usd.to_string(),
                "used_usd": used_usd.to_string(),
                "left_usd": left_usd.to_string(),
                "asked_usd": asked_usd.to_string(),
            }),
            ApiError::Refused(crate::policy::Refusal::InsufficientFunds(shortfall)) => serde_json::json!({
                "currency": shortfall.currency.code(),
                "available": shortfall.available.to_string(),
                "needed": shortfall.needed.to_string(),
            }),
            _ => serde_json::json!({}),
        };
        let (detail, errors) = match self {
            ApiError::Invalid(errors) => (None, errors),
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                (None, Vec::new())
            }
            other => (Some(other.to_string()), Vec::new()),
        };
        let problem = Problem {
            problem_type: format!("urn:tuma:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
            extensions: match extensions {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        };
        let body = serde_json::to_vec(&problem).expect("problems serialize");
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}
