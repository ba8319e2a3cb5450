//! The admin console: server-rendered pages under `/console` for the people
//! who approve payouts, resolve what providers left unclear and keep the
//! queues healthy.
//!
//! Pages are askama templates compiled into the binary (`templates/console/`)
//! and the stylesheet and script are embedded, so there is no front-end
//! build. Every request is checked on the server: the session (a random
//! cookie token, stored hashed, with an expiry), the role for the action,
//! and on every POST the session's CSRF token. Every action, allowed or
//! refused, is written to the audit log.
//!
//! - `session`: sign-in (password or admin API key), the session extractor,
//!   CSRF, roles, the audit helper.
//! - `pages`: read-only pages (overview, lists, the intent timeline, audit).
//! - `approvals`, `review`, `jobs`: the queues and their actions.
//! - `users`, `keys`: who may use the console and the API (admins).

mod approvals;
mod filters;
mod jobs;
mod keys;
mod pages;
mod review;
mod session;
mod users;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

pub use session::{hash_password, Role};
pub use users::{create_user, CreateUserError};

use crate::api::AppState;

/// Longest a session may be configured to last: a week.
pub const MAX_SESSION_TTL_S: u64 = 7 * 24 * 3600;

/// Rows on one page of a console list: enough to scan, small enough to
/// render fast.
const PAGE_ROWS: i64 = 50;

/// `[console]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// How long a sign-in lasts, in seconds.
    pub session_ttl_s: u64,
    /// How long a session may go unused before it ends, in seconds.
    pub idle_timeout_s: u64,
    /// Whether the session cookie is marked `Secure` (HTTPS only).
    pub secure_cookie: bool,
}

/// Why a console request did not succeed, as the page a person sees.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No live session: go and sign in.
    #[error("sign in first")]
    SignIn,
    #[error("your role ({0}) may not {1}")]
    Forbidden(&'static str, &'static str),
    #[error("the form has expired or did not come from this console; reload the page and try again")]
    Csrf,
    /// The role allows the action, but not on this: an approver's own
    /// payout.
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The action was refused by the rules (not awaiting approval, your own
    /// payout, ...).
    #[error("{0}")]
    Refused(String),
    /// Too many sign-ins being checked at once: try again shortly.
    #[error("{0}")]
    Busy(&'static str),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ConsoleError {
    fn from(error: sqlx::Error) -> Self {
        ConsoleError::Internal(error.into())
    }
}

impl From<askama::Error> for ConsoleError {
    fn from(error: askama::Error) -> Self {
        ConsoleError::Internal(error.into())
    }
}

#[derive(askama::Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    message: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            ConsoleError::SignIn => return Redirect::to("/console/login").into_response(),
            ConsoleError::Forbidden(..) => (StatusCode::FORBIDDEN, "Not allowed"),
            ConsoleError::Csrf => (StatusCode::FORBIDDEN, "Form expired"),
            ConsoleError::NotAllowed(_) => (StatusCode::FORBIDDEN, "Not allowed"),
            ConsoleError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            ConsoleError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Check the form"),
            ConsoleError::Refused(_) => (StatusCode::CONFLICT, "Refused"),
            ConsoleError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "Busy"),
            ConsoleError::Internal(error) => {
                // Logged once, here; the page says nothing about internals.
                tracing::error!(error = format!("{error:#}"), "console request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            message: self.to_string(),
        };
        match askama::Template::render(&page) {
            Ok(body) => (status, Html(body)).into_response(),
            Err(_) => (status, self.to_string()).into_response(),
        }
    }
}

/// Renders a template as an HTML response.
fn render(template: &impl askama::Template) -> Result<Response, ConsoleError> {
    Ok(Html(template.render()?).into_response())
}

const STYLESHEET: &str = include_str!("static/console.css");
const SCRIPT: &str = include_str!("static/console.js");

/// The embedded assets change only with the binary; a day of caching is
/// safe (a new release restarts the process, and browsers revalidate).
const ASSET_CACHE: &str = "public, max-age=86400";

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        STYLESHEET,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        SCRIPT,
    )
        .into_response()
}

/// Adds headers every console page carries: no caching of pages that show
/// money and people's data, no framing (clickjacking), and a content
/// policy that allows only our own script and style.
async fn page_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    response
}

/// The console's routes, merged into the engine's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/", get(|| async { Redirect::permanent("/console") }))
        .route("/console/login", get(session::login_page).post(session::login))
        .route("/console/logout", post(session::logout))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/static/console.js", get(script))
        .route("/console/payouts", get(pages::payouts))
        .route("/console/collections", get(pages::collections))
        .route("/console/intents/{id}", get(pages::intent))
        .route("/console/intents/{id}/approve", post(approvals::approve))
        .route("/console/intents/{id}/reject", post(approvals::reject))
        .route("/console/intents/{id}/resolve", post(review::resolve))
        .route(
            "/console/intents/{id}/settle-late-success",
            post(review::settle_late_success),
        )
        .route("/console/approvals", get(approvals::queue))
        .route("/console/approvals/bulk", post(approvals::bulk_approve))
        .route("/console/review", get(review::queue))
        .route("/console/callbacks/{id}/review", post(review::review_callback))
        .route("/console/jobs", get(jobs::list))
        .route("/console/jobs/action", post(jobs::action))
        .route("/console/queues/{name}/pause", post(jobs::pause))
        .route("/console/queues/{name}/resume", post(jobs::resume))
        .route("/console/audit", get(pages::audit))
        .route("/console/users", get(users::list).post(users::create))
        .route("/console/users/{name}/disable", post(users::disable))
        .route("/console/keys", get(keys::list))
        .route("/console/keys/{prefix}/revoke", post(keys::revoke))
        .layer(axum::middleware::from_fn(page_headers))
}
