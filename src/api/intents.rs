//! `/v1/payouts` and `/v1/collections`: create (idempotently), get, list,
//! cancel.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth::{Caller, Scope};
use super::problem::{ApiError, FieldError, Problem};
use super::validate::{validate, CreateCollection, CreatePayout, IntentInput};
use super::views::{ApprovalView, EventView, FlagView, IntentDetail, IntentPage, IntentView};
use super::{body, together, AppState};
use crate::policy::{AdmitError, PayoutExtras};
use crate::store::{idempotency, intents};
use crate::workflow::engine::{Applied, Cause, Event};

/// Longest Idempotency-Key accepted.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// Something that can be created through the API.
trait CreateRequest: DeserializeOwned {
    fn input(&self) -> IntentInput<'_>;

    fn quote_id(&self) -> Option<Uuid> {
        None
    }
}

impl CreateRequest for CreatePayout {
    fn input(&self) -> IntentInput<'_> {
        CreatePayout::input(self)
    }

    fn quote_id(&self) -> Option<Uuid> {
        self.quote_id
    }
}

impl CreateRequest for CreateCollection {
    fn input(&self) -> IntentInput<'_> {
        CreateCollection::input(self)
    }
}

/// Create a payout.
#[utoipa::path(post, path = "/v1/payouts", tag = "payouts", request_body = CreatePayout,
    params(("Idempotency-Key" = String, Header, description = "Unique per intended payout; a replay returns the first response")),
    responses(
        (status = 201, description = "Created", body = IntentView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "Idempotency-Key reused with a different body", body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn create_payout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    create::<CreatePayout>(state, caller, headers, body).await
}

/// Create a collection (a payment prompt to the payer's phone).
#[utoipa::path(post, path = "/v1/collections", tag = "collections", request_body = CreateCollection,
    params(("Idempotency-Key" = String, Header, description = "Unique per intended collection; a replay returns the first response")),
    responses(
        (status = 201, description = "Created", body = IntentView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn create_collection(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    create::<CreateCollection>(state, caller, headers, body).await
}

/// The provider in the payout party's settings, looked up only when the
/// request names none (routing's second choice).
pub(super) async fn party_provider(
    state: &AppState,
    owner: &str,
    input: &super::validate::IntentInput<'_>,
) -> Result<Option<String>, ApiError> {
    if input.kind != "payout" || input.phone.provider.is_some() {
        return Ok(None);
    }
    let party = crate::store::parties::get(&state.pool, owner, input.party_id).await?;
    Ok(party.and_then(|p| p.payout_provider))
}

async fn create<R: CreateRequest>(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::IntentsWrite)?;
    idempotency_key(&headers)?;
    let (request, json) = body::parse::<R>(&headers, body, state.config.api.body_limit_bytes)?;
    let mut input = request.input();
    let groupable = input.kind == "payout" && request.quote_id().is_none() && input.campaign_id.is_none();
    if groupable && state.payout_creates.groups() {
        // Routed first without the party's payout settings, which the group
        // reads anyway under the party's lock and checks the route against.
        // A request this does not validate goes the one-at-a-time way,
        // which routes with the settings and says what is wrong.
        if let Ok(new) = validate(&input, &state.config, &caller.owner, &caller.name) {
            let create = together::Create {
                owner: caller.owner.clone(),
                key: idempotency_key(&headers)?,
                request_hash: request_hash(&json),
                routed_by_prefix: input.phone.provider.is_none(),
                new,
            };
            if let together::Answer::Created { view, location } =
                state.payout_creates.run(create).await.map_err(ApiError::Internal)?
            {
                return Ok(created_response(view, &location));
            }
        }
    }
    let party_provider = party_provider(&state, &caller.owner, &input).await?;
    input.party_provider = party_provider.as_deref();
    let new = match validate(&input, &state.config, &caller.owner, &caller.name) {
        Ok(new) => new,
        Err(fields) => {
            return replay_or(
                &state,
                &caller,
                &headers,
                &json,
                intent_location,
                ApiError::Invalid(fields),
            )
            .await
        }
    };
    let (mut tx, key) = match claim(&state, &caller, &headers, &json, intent_location).await? {
        Claimed::Replay(response) => return Ok(response),
        Claimed::Fresh(tx, key) => (tx, key),
    };
    let row = if new.kind == "payout" {
        let extras = PayoutExtras {
            quote_id: request.quote_id(),
            campaign_id: new.terms.campaign_id.clone(),
            ..PayoutExtras::default()
        };
        state
            .policy
            .admit_payout(&state.engine, &mut tx, new, extras)
            .await
            .map_err(admit_error)?
    } else {
        state
            .engine
            .create(&mut tx, new)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
    };
    let view = serde_json::to_value(IntentView::from_row(&row)).map_err(|e| ApiError::Internal(e.into()))?;
    created(tx, &caller.owner, &key, view, &format!("/v1/{}s/{}", row.kind, row.id)).await
}

/// Where a create request stands with its `Idempotency-Key`.
pub(super) enum Claimed {
    /// The key was used before with this body: its first response.
    Replay(Response),
    /// A new request: a transaction holding the key, and the key.
    Fresh(sqlx::Transaction<'static, sqlx::Postgres>, String),
}

/// Where an intent's view says it lives (a created payout's or
/// collection's, or a reversal's, whose kind is `reversal`).
pub(super) fn intent_location(view: &serde_json::Value) -> Option<String> {
    Some(format!("/v1/{}s/{}", view["kind"].as_str()?, view["id"].as_str()?))
}

/// Claims the request's `Idempotency-Key` for `json` (the parsed body) in
/// a new transaction. A concurrent request with the same key waits for the
/// first one and then replays its response; a replayed `201` carries the
/// `Location` that `location` finds in its body, as the first one did.
pub(super) async fn claim(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    json: &serde_json::Value,
    location: fn(&serde_json::Value) -> Option<String>,
) -> Result<Claimed, ApiError> {
    let key = idempotency_key(headers)?;
    let request_hash = request_hash(json);
    let clock = state.engine.jobs().clock().sql_now();
    let mut tx = state.pool.begin().await?;
    let ttl_s = state.config.api.idempotency_ttl_s as i64;
    let Some(first) = idempotency::claim(&mut tx, &caller.owner, &key, &request_hash, ttl_s, clock).await? else {
        return Ok(Claimed::Fresh(tx, key));
    };
    tx.rollback().await?;
    if first.request_hash != request_hash {
        return Err(ApiError::IdempotencyConflict);
    }
    let status = StatusCode::from_u16(first.response_status as u16).map_err(|e| ApiError::Internal(e.into()))?;
    let place = (status == StatusCode::CREATED)
        .then(|| location(&first.response_body))
        .flatten()
        .and_then(|place| HeaderValue::from_str(&place).ok());
    let mut response = (status, Json(first.response_body)).into_response();
    if let Some(place) = place {
        response.headers_mut().insert(header::LOCATION, place);
    }
    response
        .headers_mut()
        .insert("Idempotent-Replayed", HeaderValue::from_static("true"));
    Ok(Claimed::Replay(response))
}

/// Answers a request that does not validate with `refusal`, unless its
/// `Idempotency-Key` already has a response for this body: that response
/// stands. Validation reads the party's settings and the providers' limits,
/// which may have changed since the first request; a retry of a payout
/// that was created must not hear 422 (a client would read "not created"
/// and create it again under a new key).
pub(super) async fn replay_or(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    json: &serde_json::Value,
    location: fn(&serde_json::Value) -> Option<String>,
    refusal: ApiError,
) -> Result<Response, ApiError> {
    match claim(state, caller, headers, json, location).await? {
        Claimed::Replay(response) => Ok(response),
        Claimed::Fresh(tx, _) => {
            tx.rollback().await?;
            Err(refusal)
        }
    }
}

/// What an `Idempotency-Key` remembers of the request it was first used
/// with: the hash of its parsed body.
pub(super) fn request_hash(json: &serde_json::Value) -> Vec<u8> {
    Sha256::digest(serde_json::to_vec(json).expect("a JSON value serializes")).to_vec()
}

/// Stores `view` as the response to the claimed key, commits, and answers
/// 201 with `location`.
pub(super) async fn created(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    owner: &str,
    key: &str,
    view: serde_json::Value,
    location: &str,
) -> Result<Response, ApiError> {
    idempotency::store_response(&mut tx, owner, key, StatusCode::CREATED.as_u16() as i16, &view).await?;
    tx.commit().await?;
    Ok(created_response(view, location))
}

/// 201 with `view` and its `location`.
fn created_response(view: serde_json::Value, location: &str) -> Response {
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A refusal is the client's to fix; anything else is ours.
pub(super) fn admit_error(error: AdmitError) -> ApiError {
    match error {
        AdmitError::Refused(refusal) => ApiError::Refused(refusal),
        other => ApiError::Internal(other.into()),
    }
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get("Idempotency-Key")
        .ok_or_else(|| ApiError::IdempotencyKey("the Idempotency-Key header is required on creates".into()))?;
    let key = value
        .to_str()
        .map_err(|_| ApiError::IdempotencyKey("the Idempotency-Key must be printable ASCII".into()))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(ApiError::IdempotencyKey(format!(
            "the Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        )));
    }
    Ok(key.to_owned())
}

/// Get a payout with its history.
#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payouts",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = IntentDetail), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub async fn get_payout(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Json<IntentDetail>, ApiError> {
    get(state, caller, id, "payout").await
}

/// Get a reversal with its history.
#[utoipa::path(get, path = "/v1/reversals/{id}", tag = "reversals",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = IntentDetail), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub async fn get_reversal(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Json<IntentDetail>, ApiError> {
    get(state, caller, id, "reversal").await
}

/// Get a collection with its history.
#[utoipa::path(get, path = "/v1/collections/{id}", tag = "collections",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = IntentDetail), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub async fn get_collection(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Json<IntentDetail>, ApiError> {
    get(state, caller, id, "collection").await
}

async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    kind: &str,
) -> Result<Json<IntentDetail>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let row = find(&state, &caller, &id, kind).await?;
    let events = intents::events(&state.pool, row.id).await?;
    let flags = crate::store::policy::flags(&state.pool, row.id).await?;
    let mut conn = state.pool.acquire().await?;
    let approvals = crate::store::policy::approvals(&mut conn, row.id).await?;
    Ok(Json(IntentDetail {
        intent: IntentView::from_row(&row),
        events: events.iter().map(EventView::from).collect(),
        flags: flags
            .into_iter()
            .map(|f| FlagView {
                rule: f.rule,
                action: f.action,
                detail: f.detail,
                at: f.created_at,
            })
            .collect(),
        approvals: approvals
            .into_iter()
            .map(|a| ApprovalView {
                approver: a.approver,
                decision: a.decision,
                reason: a.reason,
                at: a.created_at,
            })
            .collect(),
    }))
}

async fn find(state: &AppState, caller: &Caller, id: &str, kind: &str) -> Result<intents::IntentRow, ApiError> {
    let not_found = || ApiError::NotFound(format!("no {kind} {id}"));
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    intents::get_owned(&state.pool, &caller.owner, kind, id)
        .await?
        .ok_or_else(not_found)
}

/// List payouts, newest first.
#[utoipa::path(get, path = "/v1/payouts", tag = "payouts",
    params(
        ("state" = Option<String>, Query, description = "Only intents in this state"),
        ("party_id" = Option<String>, Query),
        ("created_from" = Option<DateTime<Utc>>, Query, description = "RFC 3339, inclusive"),
        ("created_to" = Option<DateTime<Utc>>, Query, description = "RFC 3339, exclusive"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<u32>, Query)),
    responses((status = 200, body = IntentPage), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn list_payouts(
    state: State<AppState>,
    caller: Caller,
    query: Query<HashMap<String, String>>,
) -> Result<Json<IntentPage>, ApiError> {
    list(state, caller, query, "payout").await
}

/// List collections, newest first.
#[utoipa::path(get, path = "/v1/collections", tag = "collections",
    params(
        ("state" = Option<String>, Query), ("party_id" = Option<String>, Query),
        ("created_from" = Option<DateTime<Utc>>, Query), ("created_to" = Option<DateTime<Utc>>, Query),
        ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = IntentPage), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn list_collections(
    state: State<AppState>,
    caller: Caller,
    query: Query<HashMap<String, String>>,
) -> Result<Json<IntentPage>, ApiError> {
    list(state, caller, query, "collection").await
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
    kind: &str,
) -> Result<Json<IntentPage>, ApiError> {
    caller.require(Scope::IntentsRead)?;
    let mut errors = Vec::new();
    let mut filter = intents::ListFilter::default();
    let mut limit = state.config.api.default_page_size;
    let time = |name: &str, value: &str, errors: &mut Vec<FieldError>| {
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                errors.push(FieldError::new(
                    name,
                    "invalid_time",
                    "an RFC 3339 time, e.g. 2026-11-23T10:00:00Z",
                ))
            })
            .ok()
    };
    for (name, value) in &query {
        match name.as_str() {
            "state" => filter.state = Some(value.clone()),
            "party_id" => filter.party_id = Some(value.clone()),
            "created_from" => filter.created_from = time(name, value, &mut errors),
            "created_to" => filter.created_to = time(name, value, &mut errors),
            "cursor" => match Uuid::parse_str(value) {
                Ok(id) => filter.before = Some(id),
                Err(_) => errors.push(FieldError::new(
                    "cursor",
                    "invalid_cursor",
                    "use next_cursor from a previous page",
                )),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=state.config.api.max_page_size).contains(&n) => limit = n,
                _ => errors.push(FieldError::new(
                    "limit",
                    "invalid_limit",
                    format!("between 1 and {}", state.config.api.max_page_size),
                )),
            },
            other => errors.push(FieldError::new(
                other,
                "unknown_parameter",
                "known: state, party_id, created_from, created_to, cursor, limit",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    // One extra row tells whether there is a next page.
    let mut rows = intents::list(&state.pool, &caller.owner, kind, &filter, i64::from(limit) + 1).await?;
    let next_cursor = body::next_page(&mut rows, limit, |r| r.id.to_string());
    Ok(Json(IntentPage {
        data: rows.iter().map(IntentView::from_row).collect(),
        next_cursor,
    }))
}

/// Cancel a payout that has not been handed to the provider yet.
#[utoipa::path(post, path = "/v1/payouts/{id}/cancel", tag = "payouts",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = IntentView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "Past the point of cancelling", body = Problem)),
    security(("api_key" = [])))]
pub async fn cancel_payout(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Json<IntentView>, ApiError> {
    cancel(state, caller, id, "payout").await
}

/// Cancel a collection whose prompt has not been sent yet.
#[utoipa::path(post, path = "/v1/collections/{id}/cancel", tag = "collections",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = IntentView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
pub async fn cancel_collection(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Json<IntentView>, ApiError> {
    cancel(state, caller, id, "collection").await
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    kind: &str,
) -> Result<Json<IntentView>, ApiError> {
    caller.require(Scope::IntentsWrite)?;
    let row = find(&state, &caller, &id, kind).await?;
    let mut tx = state.pool.begin().await?;
    // Locked, so that the action sending its request (which marks the
    // intent under the same lock) and this cancel see each other.
    let row = crate::store::intents::get_for_update(&mut tx, row.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{kind} {id}")))?;
    let event = Event::new("cancel", Cause::Api, &caller.name);
    let applied = state
        .engine
        .apply_to(&mut tx, row, &event)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    // A rejected cancel is recorded too: commit either way.
    tx.commit().await?;
    match applied {
        Applied::Moved { .. } => {
            let row = find(&state, &caller, &id, kind).await?;
            Ok(Json(IntentView::from_row(&row)))
        }
        // Still pending, refused by its guard: the prompt has been sent.
        Applied::Rejected {
            state: current, reason, ..
        } if current == "pending" => Err(ApiError::InvalidState(format!(
            "the {kind} can no longer be cancelled: {reason}"
        ))),
        Applied::Rejected { state: current, .. } => Err(ApiError::InvalidState(why_not_cancellable(kind, &current))),
        Applied::Lost { .. } => Err(ApiError::InvalidState(format!(
            "the {kind} changed state while it was being cancelled; fetch it and try again if it is still pending"
        ))),
    }
}

fn why_not_cancellable(kind: &str, state: &str) -> String {
    match state {
        "processing" => format!("the {kind} has been handed to the provider and can no longer be cancelled"),
        "unresolved" => {
            format!("the {kind} was handed to the provider and awaits reconciliation; it cannot be cancelled")
        }
        _ => format!("the {kind} is {state}; only a {kind} that has not been submitted can be cancelled"),
    }
}
