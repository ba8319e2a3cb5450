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

/// Label sets of `tuma_intents_open` reported so far (reset to 0 when they
/// no longer appear).
static OPEN_SEEN: std::sync::Mutex<std::collections::BTreeSet<(String, String, String)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Open intents are read at scrape time, so every node reports the same
    // numbers and a state that empties drops to 0.
    // With them, how long the one unchanged longest has waited, so that an
    // alert can tell an approval or a held payout left waiting from a
    // steady flow of them.
    let now = state.engine.jobs().clock().sql_now();
    match crate::store::reports::open_intents(&state.pool, now).await {
        Ok(rows) => {
            for (kind, intent_state, provider) in OPEN_SEEN.lock().expect("not poisoned").iter() {
                let labels = [
                    ("kind", kind.clone()),
                    ("state", intent_state.clone()),
                    ("provider", provider.clone()),
                ];
                metrics::gauge!("tuma_intents_open", &labels).set(0.0);
                metrics::gauge!("tuma_intents_open_oldest_seconds", &labels).set(0.0);
            }
            let mut seen = OPEN_SEEN.lock().expect("not poisoned");
            for (kind, intent_state, provider, count, oldest_s) in rows {
                let labels = [
                    ("kind", kind.clone()),
                    ("state", intent_state.clone()),
                    ("provider", provider.clone()),
                ];
                metrics::gauge!("tuma_intents_open", &labels).set(count as f64);
                metrics::gauge!("tuma_intents_open_oldest_seconds", &labels).set(oldest_s);
                seen.insert((kind, intent_state, provider));
            }
        }
        Err(error) => tracing::warn!(%error, "could not count open intents for /metrics"),
    }
    // Late successes nobody has settled: an alert holds until a person has.
    match crate::store::late_successes::count_open(&state.pool).await {
        Ok(open) => metrics::gauge!("tuma_late_successes_open").set(open as f64),
        Err(error) => tracing::warn!(%error, "could not count open late successes for /metrics"),
    }
    // The newest kept reconciliation report, so that an alert can tell a
    // day whose books or floats did not reconcile, or a daily job that
    // stopped running.
    match crate::store::reports::newest_reconciliation(&state.pool).await {
        Ok(Some((generated_at, ok))) => {
            metrics::gauge!("tuma_reconciliation_ok").set(if ok { 1.0 } else { 0.0 });
            metrics::gauge!("tuma_reconciliation_generated_timestamp_seconds").set(generated_at.timestamp() as f64);
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "could not read the newest reconciliation report for /metrics"),
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
