//! `/v1/webhook-endpoints`: where product services hear about state
//! changes; registered, listed and disabled by the owner's keys.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, Scope};
use super::problem::{ApiError, Problem};
use super::{body, AppState};
use crate::store::webhooks;

/// Live endpoints an owner may have: every event is delivered to each, by
/// jobs that share the webhooks queue with every other owner.
const MAX_LIVE_ENDPOINTS: i64 = 10;

/// Shortest secret accepted from a client, in characters.
const MIN_SECRET_CHARS: usize = 24;
const MAX_URL_CHARS: usize = 2_048;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where deliveries are POSTed (http or https).
    #[schema(example = "https://shop.example/hooks/tuma")]
    pub url: String,
    /// The signing secret; Tuma makes one when absent.
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    /// Shown once, here: keep it to verify `Tuma-Signature`.
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

/// Register a webhook endpoint. Every state change of the caller's intents
/// is then delivered to it, signed; see `Tuma-Signature` in the README.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", request_body = CreateEndpoint,
    responses((status = 201, body = EndpointView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
    caller.require(Scope::IntentsWrite)?;
    let (request, _) = body::parse::<CreateEndpoint>(&headers, body, state.config.api.body_limit_bytes)?;
    let url_ok = url::Url::parse(&request.url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        && request.url.len() <= MAX_URL_CHARS;
    if !url_ok {
        return Err(ApiError::invalid("url", "invalid_url", "an absolute http or https URL"));
    }
    if !state.config.webhooks.allow_private_addresses {
        let refused = url::Url::parse(&request.url)
            .ok()
            .and_then(|url| crate::notify::address::refused_host(&url));
        if let Some(why) = refused {
            return Err(ApiError::invalid("url", "address_not_public", why));
        }
    }
    let secret = match request.secret {
        Some(secret) if secret.chars().count() < MIN_SECRET_CHARS => {
            return Err(ApiError::invalid(
                "secret",
                "secret_too_short",
                format!("at least {MIN_SECRET_CHARS} characters"),
            ));
        }
        Some(secret) => secret,
        None => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            format!("whsec_{}", hex::encode(bytes))
        }
    };
    if webhooks::live_endpoints(&state.pool, &caller.owner).await? >= MAX_LIVE_ENDPOINTS {
        return Err(ApiError::invalid(
            "url",
            "too_many_endpoints",
            format!("at most {MAX_LIVE_ENDPOINTS} live endpoints: disable one first"),
        ));
    }
    let row = webhooks::insert_endpoint(&state.pool, &caller.owner, &request.url, &secret).await?;
    Ok((
        StatusCode::CREATED,
        Json(EndpointView {
            id: row.id,
            url: row.url,
            secret: row.secret,
            created_at: row.created_at,
        }),
    ))
}

/// A registered endpoint, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointSummary {
    pub id: Uuid,
    pub url: String,
    pub created_at: DateTime<Utc>,
    /// When it was disabled; null while deliveries go to it.
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<webhooks::EndpointRow> for EndpointSummary {
    fn from(row: webhooks::EndpointRow) -> EndpointSummary {
        EndpointSummary {
            id: row.id,
            url: row.url,
            created_at: row.created_at,
            disabled_at: row.disabled_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    /// Live ones first, newest first within each.
    pub data: Vec<EndpointSummary>,
}

/// The caller's webhook endpoints (their secrets are shown only when made).
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks",
    responses((status = 200, body = EndpointList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
pub async fn list_endpoints(State(state): State<AppState>, caller: Caller) -> Result<Json<EndpointList>, ApiError> {
    caller.require(Scope::IntentsWrite)?;
    let rows = webhooks::list_endpoints(&state.pool, &caller.owner).await?;
    Ok(Json(EndpointList {
        data: rows.into_iter().map(EndpointSummary::from).collect(),
    }))
}

/// Disable one of the caller's webhook endpoints: nothing more is delivered
/// to it, deliveries already queued included. Disabling it again changes
/// nothing.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, body = EndpointSummary), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No such endpoint of the caller's", body = Problem)),
    security(("api_key" = [])))]
pub async fn disable_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EndpointSummary>, ApiError> {
    caller.require(Scope::IntentsWrite)?;
    let not_found = || ApiError::NotFound(format!("no webhook endpoint {id}"));
    let endpoint_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let now = state.engine.jobs().clock().sql_now();
    let row = webhooks::disable_endpoint(&state.pool, &caller.owner, endpoint_id, now)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(EndpointSummary::from(row)))
}
