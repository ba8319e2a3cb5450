//! The HTTP API (`/v1`, JSON, errors as problem+json), health and metrics
//! endpoints, and the OpenAPI document, all on one axum router.

mod approvals;
mod auth;
mod body;
mod callbacks;
mod health;
mod intents;
pub mod key_cache;
pub mod loans;
mod money;
pub mod openapi;
mod operations;
pub mod problem;
mod reversals;
mod together;
mod validate;
pub mod views;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use utoipa::OpenApi;

pub use auth::{authenticate, create_key, Caller, Scope, KEY_PREFIX};
pub use callbacks::Inbox as CallbackInbox;
pub use key_cache::KeyCache;
pub use together::PayoutCreates;
pub use validate::home_country;

use crate::config::Config;
use crate::workflow::engine::Engine;

/// Largest callback body stored; Daraja's are a few kilobytes.
const CALLBACK_BODY_LIMIT_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub engine: Engine,
    pub policy: crate::policy::Policy,
    pub loans: crate::loans::Loans,
    pub config: Arc<Config>,
    /// The providers behind the adapter interface, for their callbacks.
    pub adapters: std::collections::BTreeMap<String, Arc<dyn crate::providers::adapter::Adapter>>,
    pub metrics: PrometheusHandle,
    /// Payout creates admitted together.
    pub payout_creates: PayoutCreates,
    /// Provider callbacks stored together.
    pub callbacks: callbacks::Inbox,
    /// API keys remembered between requests.
    pub keys: KeyCache,
}

/// Refuses a path or query carrying a percent-encoded control character
/// before any handler sees it: no id, filter or cursor of ours contains
/// one, and PostgreSQL cannot store NUL.
async fn refuse_control_characters(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = request.uri();
    let raw = format!("{}?{}", uri.path(), uri.query().unwrap_or_default());
    if body::has_encoded_control(&raw) {
        return problem::ApiError::invalid(
            "",
            "invalid_character",
            "the path or query contains a control character",
        )
        .into_response();
    }
    next.run(request).await
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.api.body_limit_bytes;
    let v1 = Router::new()
        .route("/v1/payouts", post(intents::create_payout).get(intents::list_payouts))
        .route("/v1/payouts/{id}", get(intents::get_payout))
        .route("/v1/payouts/{id}/cancel", post(intents::cancel_payout))
        .route(
            "/v1/collections",
            post(intents::create_collection).get(intents::list_collections),
        )
        .route("/v1/collections/{id}", get(intents::get_collection))
        .route("/v1/collections/{id}/cancel", post(intents::cancel_collection))
        .route(
            "/v1/webhook-endpoints",
            post(webhooks::create_endpoint).get(webhooks::list_endpoints),
        )
        .route("/v1/webhook-endpoints/{id}", delete(webhooks::disable_endpoint))
        .route("/v1/parties/{id}", put(money::put_party).get(money::get_party))
        .route("/v1/parties/{id}/payout-settings", put(money::put_payout_settings))
        .route("/v1/parties/{id}/balances", get(money::party_balances))
        .route("/v1/parties/{id}/credits", post(money::credit_party))
        .route("/v1/campaigns/{id}/balances", get(money::campaign_balances))
        .route("/v1/ledger/accounts/{id}/entries", get(money::account_entries))
        .route("/v1/quotes", post(money::create_quote))
        .route("/v1/quotes/{id}", get(money::get_quote))
        .route("/v1/approvals", get(approvals::list_approvals))
        .route("/v1/payouts/{id}/approve", post(approvals::approve))
        .route("/v1/payouts/{id}/reject", post(approvals::reject))
        .route("/v1/payout-batches", post(approvals::create_batch))
        .route("/v1/payout-batches/{id}/approve", post(approvals::approve_batch))
        .route("/v1/reports/reconciliation", get(operations::reconciliation_report))
        .route("/v1/reports/tax", get(operations::tax_report))
        .route("/v1/reports/providers", get(operations::providers_report))
        .route("/v1/parties/{id}/balance-history", get(operations::balance_history))
        .route("/v1/floats/{provider}/adjustments", post(operations::adjust_float))
        .route("/v1/payouts/{id}/resolve", post(operations::resolve_payout))
        .route("/v1/collections/{id}/resolve", post(operations::resolve_collection))
        .route("/v1/reversals/{id}/resolve", post(operations::resolve_reversal))
        .route("/v1/late-successes", get(operations::late_successes))
        .route("/v1/late-successes/{id}/settle", post(operations::settle_late_success))
        .route("/v1/callbacks/{id}/review", post(operations::review_callback))
        .route("/v1/reversals", post(reversals::create_reversal))
        .route("/v1/reversals/{id}", get(intents::get_reversal))
        .route("/v1/loans", post(loans::create_loan))
        .route("/v1/loans/{id}", get(loans::get_loan))
        .route("/v1/loans/{id}/approve", post(loans::approve_loan))
        .route("/v1/loans/{id}/reject", post(loans::reject_loan))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(refuse_control_characters));
    Router::new()
        .merge(v1)
        .route("/openapi.json", get(|| async { Json(openapi::ApiDoc::openapi()) }))
        .route(
            "/callbacks/mpesa/{kind}/{token}",
            post(callbacks::mpesa).layer(DefaultBodyLimit::max(CALLBACK_BODY_LIMIT_BYTES)),
        )
        // MTN calls back with PUT in some markets and POST in others.
        .route(
            "/callbacks/{provider}/{kind}/{token}",
            post(callbacks::provider)
                .put(callbacks::provider)
                .layer(DefaultBodyLimit::max(CALLBACK_BODY_LIMIT_BYTES)),
        )
        .merge(health::router())
        .merge(crate::console::router())
        .fallback(|| async { problem::ApiError::NotFound("no such route".into()) })
        .with_state(state)
}
