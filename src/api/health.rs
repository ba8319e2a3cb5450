//! Health, readiness and metrics: what orchestrators and Prometheus call.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

/// How long `/readyz` waits for the database before answering "not ready".
const READINESS_DB_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Alive: the process answers. Says nothing about dependencies, so an
/// orchestrator never restarts a node just because the database blinked.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the database answers within the timeout.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ping = crate::store::ping(&state.pool);
    match tokio::time::timeout(READINESS_DB_TIMEOUT, ping).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database error");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database timed out\n"),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
