//! Who is using the console and what they may do: roles, password hashing,
//! sign-in and sign-out, the session extractor, CSRF checks, and the audit
//! log every action writes.
//!
//! A session is a random 256-bit token in an `HttpOnly`, `SameSite=Strict`
//! cookie; only its SHA-256 is stored, with the actor, role, expiry and the
//! session's CSRF token. Every POST carries that CSRF token in a hidden
//! field, compared in constant time. The sign-in form, before any session
//! exists, is protected the same way by a token in a short-lived cookie
//! that the form must repeat (double submit).

use std::net::SocketAddr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{render, ConsoleError};
use crate::api::{AppState, Scope};
use crate::store::console as store;

const SESSION_COOKIE: &str = "tuma_console";
const LOGIN_COOKIE: &str = "tuma_console_login";
/// How long a sign-in form stays usable, in seconds.
const LOGIN_FORM_TTL_S: u64 = 900;
/// Largest form body the console accepts: a bulk selection of a few
/// hundred ids fits many times over.
const FORM_LIMIT_BYTES: usize = 256 * 1024;
/// Wrong passwords allowed for one user name within
/// [`SIGN_IN_WINDOW_S`]; past that, sign-in under that name is refused
/// without checking the password until the window has moved on. Ten is
/// plenty for a person who mistypes, and far too few to guess a password
/// of twelve characters or more.
const SIGN_IN_FAILURES_ALLOWED: i64 = 10;
/// The window the failures are counted in, in seconds (15 minutes).
const SIGN_IN_WINDOW_S: i64 = 900;
/// Passwords shorter than this are refused when a user is created.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Passwords longer than this are refused (hashing cost is per byte).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// What a console user may do. Each role's rights are listed in
/// [`Role::allows`]; an approver cannot operate jobs and an operator cannot
/// approve money, so the two duties stay apart; an admin may do both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Approver,
    Operator,
    Admin,
}

/// A kind of action, checked against the role on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Approve or reject payouts.
    Approve,
    /// Retry, cancel or discard jobs, pause queues, resolve intents.
    Operate,
    /// Create and disable console users.
    ManageUsers,
    /// Read providers' raw callback bodies (numbers masked).
    ReadRawBodies,
}

impl Permission {
    fn verb(self) -> &'static str {
        match self {
            Permission::Approve => "approve or reject payouts",
            Permission::Operate => "operate jobs, queues and unresolved intents",
            Permission::ManageUsers => "manage users",
            Permission::ReadRawBodies => "read raw callback bodies",
        }
    }
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Approver, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text.trim())
            .ok_or_else(|| format!("unknown role {text:?} (known: viewer, approver, operator, admin)"))
    }

    pub fn allows(self, permission: Permission) -> bool {
        match (self, permission) {
            (Role::Admin, _) => true,
            (Role::Approver, Permission::Approve) => true,
            (Role::Operator, Permission::Operate) => true,
            (Role::Viewer | Role::Approver | Role::Operator, _) => false,
        }
    }
}

/// An Argon2id hash of `password` (PHC string, random salt), with the
/// crate's default cost (19 MiB, 2 passes: OWASP's recommendation).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Password checks (Argon2) running at once on this node.
static PASSWORD_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// How long a sign-in waits for a password check before it is told to try
/// again.
const PASSWORD_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A turn to check a password. Argon2 takes tens of milliseconds of CPU and
/// about 19 MiB, so only a few run at once: a flood of sign-ins (any name
/// will do) cannot take the node's memory and cores from the payments it
/// serves. A sign-in that waits too long for its turn is told to try again.
/// The turn is held from the name's throttle check to the refusal's record,
/// so that guesses arriving together cannot all pass the check first.
async fn password_turn() -> Result<tokio::sync::SemaphorePermit<'static>, ConsoleError> {
    match tokio::time::timeout(PASSWORD_CHECK_WAIT, PASSWORD_CHECKS.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ConsoleError::Busy("Too many sign-ins at once: try again in a moment.")),
    }
}

/// Whether `password` matches `hash`, off the async workers; the caller
/// holds a [`password_turn`].
async fn check_password(password: String, hash: String) -> Result<bool, ConsoleError> {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| ConsoleError::Internal(e.into()))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn set_cookie(state: &AppState, name: &str, value: &str, max_age_s: u64) -> HeaderValue {
    let secure = if state.config.console.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let text = format!("{name}={value}; Path=/console; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&text).expect("cookie names and hex tokens are valid header text")
}

fn remote_addr(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// The signed-in person behind a request.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user name, or the API key's name: the actor recorded on what
    /// they do (approvals, resolutions, the audit log).
    pub actor: String,
    pub role: Role,
    pub csrf: String,
    pub remote_addr: Option<String>,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::SignIn)?;
        let now = state.engine.jobs().clock().sql_now();
        let row = store::session(
            &state.pool,
            &token_hash(token),
            state.config.console.idle_timeout_s,
            now,
        )
        .await?
        .ok_or(ConsoleError::SignIn)?;
        Ok(Session {
            actor: row.actor,
            role: Role::parse(&row.role).map_err(|e| ConsoleError::Internal(anyhow::anyhow!(e)))?,
            csrf: row.csrf_token,
            remote_addr: remote_addr(parts),
        })
    }
}

impl Session {
    /// Refuses (and audits the refusal of) `action` unless the role allows
    /// `permission`.
    pub async fn require(
        &self,
        state: &AppState,
        permission: Permission,
        action: &str,
        target: Option<&str>,
    ) -> Result<(), ConsoleError> {
        if self.role.allows(permission) {
            return Ok(());
        }
        audit(state, self, action, target, "forbidden", None).await?;
        Err(ConsoleError::Forbidden(self.role.as_str(), permission.verb()))
    }
}

/// A form as posted: its fields in order (a field may repeat, e.g. the ids
/// of a selection).
#[derive(Debug, Clone, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    /// Every non-blank value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
            .collect()
    }
}

async fn read_form(request: Request) -> Result<Form, ConsoleError> {
    let body = axum::body::to_bytes(request.into_body(), FORM_LIMIT_BYTES)
        .await
        .map_err(|_| ConsoleError::Invalid("the form is too large".into()))?;
    Ok(Form::parse(&body))
}

/// A POST from a signed-in person whose CSRF token matched: the only way
/// an action handler gets its form.
pub struct Posted {
    pub session: Session,
    pub form: Form,
}

impl FromRequest<AppState> for Posted {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let action = parts.uri.path().to_owned();
        let form = read_form(Request::from_parts(parts, body)).await?;
        let sent = form.get("csrf").unwrap_or_default();
        if !same(sent, &session.csrf) {
            audit(state, &session, &action, None, "csrf_refused", None).await?;
            return Err(ConsoleError::Csrf);
        }
        Ok(Posted { session, form })
    }
}

/// Writes one audit line for `session`'s `action`.
pub async fn audit(
    state: &AppState,
    session: &Session,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    detail: Option<&str>,
) -> Result<(), ConsoleError> {
    let entry = store::NewAudit {
        actor: &session.actor,
        role: Some(session.role.as_str()),
        action,
        target,
        outcome,
        detail,
        remote_addr: session.remote_addr.as_deref(),
    };
    store::insert_audit(&state.pool, &entry, state.engine.jobs().clock().sql_now()).await?;
    Ok(())
}

/// What every page's frame shows: who is signed in, the token its forms
/// carry, and which section is open.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub actor: String,
    pub role: &'static str,
    pub csrf: String,
    pub section: &'static str,
    pub can_approve: bool,
    pub can_operate: bool,
    pub can_manage: bool,
}

impl Chrome {
    pub fn new(session: &Session, section: &'static str) -> Chrome {
        Chrome {
            actor: session.actor.clone(),
            role: session.role.as_str(),
            csrf: session.csrf.clone(),
            section,
            can_approve: session.role.allows(Permission::Approve),
            can_operate: session.role.allows(Permission::Operate),
            can_manage: session.role.allows(Permission::ManageUsers),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    csrf: String,
    error: Option<&'static str>,
    next: String,
}

/// Where to go after signing in: a console path only, never another site.
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/console") && !n.contains("//") && !n.contains('\\'))
        .unwrap_or("/console")
        .to_owned()
}

/// `GET /console/login`: the sign-in form, with a fresh form token.
pub async fn login_page(
    State(state): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let csrf = random_token();
    let page = LoginPage {
        csrf: csrf.clone(),
        error: None,
        next: safe_next(query.get("next").map(String::as_str)),
    };
    let mut response = render(&page)?;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, &csrf, LOGIN_FORM_TTL_S),
    );
    Ok(response)
}

/// Who the sign-in form names, once checked.
struct Identity {
    user_id: Option<uuid::Uuid>,
    key_prefix: Option<String>,
    actor: String,
    role: Role,
}

/// A hash to verify against when the user does not exist, so that an
/// unknown name costs as much time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("a password no one has").expect("hashing a constant works"))
}

async fn identify(state: &AppState, form: &Form) -> Result<Option<Identity>, ConsoleError> {
    if let Some(key) = form.get("api_key") {
        return Ok(match crate::api::authenticate(&state.pool, key).await {
            Ok(caller) if caller.scopes.contains(&Scope::Admin) => Some(Identity {
                user_id: None,
                // `tuma_<prefix>_<secret>`: authenticate checked the shape.
                key_prefix: key.split('_').nth(1).map(str::to_owned),
                actor: caller.name,
                role: Role::Admin,
            }),
            _ => None,
        });
    }
    let (Some(username), Some(password)) = (form.get("username"), form.0.iter().find(|(k, _)| k == "password")) else {
        return Ok(None);
    };
    let password = &password.1;
    let user = store::user_by_name(&state.pool, username).await?;
    let hash = user
        .as_ref()
        .map_or(decoy_hash(), |u| u.password_hash.as_str())
        .to_owned();
    let verified = check_password(password.clone(), hash).await?;
    Ok(match user {
        Some(user) if verified && user.disabled_at.is_none() => Some(Identity {
            user_id: Some(user.id),
            key_prefix: None,
            actor: user.username,
            role: Role::parse(&user.role).map_err(|e| ConsoleError::Internal(anyhow::anyhow!(e)))?,
        }),
        _ => None,
    })
}

async fn audit_sign_in(
    state: &AppState,
    actor: &str,
    outcome: &str,
    remote_addr: Option<&str>,
) -> Result<(), ConsoleError> {
    let entry = store::NewAudit {
        actor,
        role: None,
        action: "sign_in",
        target: None,
        outcome,
        detail: None,
        remote_addr,
    };
    store::insert_audit(&state.pool, &entry, state.engine.jobs().clock().sql_now()).await?;
    Ok(())
}

/// The sign-in form again, with why, and a fresh form token.
fn refused_sign_in(
    state: &AppState,
    form: &Form,
    status: StatusCode,
    error: &'static str,
) -> Result<Response, ConsoleError> {
    let csrf = random_token();
    let page = LoginPage {
        csrf: csrf.clone(),
        error: Some(error),
        next: safe_next(form.get("next")),
    };
    let mut response = render(&page)?;
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, LOGIN_COOKIE, &csrf, LOGIN_FORM_TTL_S),
    );
    Ok(response)
}

/// `POST /console/login`: checks the form token, then the password or API
/// key; on success starts a session and goes on to `next`.
pub async fn login(State(state): State<AppState>, request: Request) -> Result<Response, ConsoleError> {
    let (parts, body) = request.into_parts();
    let remote = remote_addr(&parts);
    let login_cookie = cookie(&parts.headers, LOGIN_COOKIE).map(str::to_owned);
    let form = read_form(Request::from_parts(parts, body)).await?;
    let sent = form.get("csrf").unwrap_or_default();
    if !login_cookie.is_some_and(|expected| same(sent, &expected)) {
        return Err(ConsoleError::Csrf);
    }
    let now = state.engine.jobs().clock().sql_now();
    let claimed = form.get("username").unwrap_or(if form.get("api_key").is_some() {
        "(api key)"
    } else {
        "(none)"
    });
    let _turn = match form.get("api_key") {
        Some(_) => None,
        None => Some(password_turn().await?),
    };
    if let Some(username) = form.get("username") {
        let failures = store::recent_refusals(&state.pool, username, SIGN_IN_WINDOW_S, now).await?;
        if failures >= SIGN_IN_FAILURES_ALLOWED {
            audit_sign_in(&state, username, "throttled", remote.as_deref()).await?;
            return refused_sign_in(
                &state,
                &form,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins for this name: wait a quarter of an hour, or ask an admin.",
            );
        }
    }
    let Some(identity) = identify(&state, &form).await? else {
        audit_sign_in(&state, claimed, "refused", remote.as_deref()).await?;
        return refused_sign_in(
            &state,
            &form,
            StatusCode::UNAUTHORIZED,
            "That sign-in did not work: check the name and password, or the key.",
        );
    };
    let token = random_token();
    let csrf = random_token();
    let ttl_s = state.config.console.session_ttl_s;
    store::insert_session(
        &state.pool,
        &store::NewSession {
            token_hash: &token_hash(&token),
            user_id: identity.user_id,
            key_prefix: identity.key_prefix.as_deref(),
            actor: &identity.actor,
            role: identity.role.as_str(),
            csrf_token: &csrf,
            ttl_s: ttl_s as i64,
        },
        now,
    )
    .await?;
    let session = Session {
        actor: identity.actor,
        role: identity.role,
        csrf,
        remote_addr: remote,
    };
    let how = if identity.user_id.is_some() {
        "password"
    } else {
        "api key"
    };
    audit(&state, &session, "sign_in", None, "ok", Some(how)).await?;
    let mut response = Redirect::to(&safe_next(form.get("next"))).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, &token, ttl_s));
    headers.append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, "", 0));
    Ok(response)
}

/// `POST /console/logout`: ends the session here and now.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        store::delete_session(&state.pool, &token_hash(token)).await?;
    }
    audit(&state, &posted.session, "sign_out", None, "ok", None).await?;
    let mut response = Redirect::to("/console/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn password_checks_beyond_the_few_at_once_are_told_to_come_back() {
        let held = PASSWORD_CHECKS.acquire_many(2).await.unwrap();
        let busy = password_turn().await;
        assert!(matches!(busy, Err(ConsoleError::Busy(_))), "{busy:?}");
        drop(held);
        let _turn = password_turn().await.unwrap();
        let checked = check_password("guess".into(), decoy_hash().to_owned()).await;
        assert!(matches!(checked, Ok(false)), "{checked:?}");
    }

    #[test]
    fn each_role_may_do_only_its_own_duty() {
        use Permission::*;
        assert!(Role::Approver.allows(Approve) && !Role::Approver.allows(Operate));
        assert!(Role::Operator.allows(Operate) && !Role::Operator.allows(Approve));
        assert!(!Role::Viewer.allows(Approve) && !Role::Viewer.allows(Operate) && !Role::Viewer.allows(ManageUsers));
        assert!(Role::ALL
            .into_iter()
            .all(|r| Role::Admin.allows(ReadRawBodies) || r != Role::Admin));
        assert!(!Role::Operator.allows(ReadRawBodies));
    }

    #[test]
    fn a_password_verifies_only_against_its_own_hash() {
        let hash = hash_password("correct horse battery staple").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("correct horse battery stapler", &hash));
        assert!(!verify_password("anything", "not a hash"));
    }

    #[test]
    fn sign_in_only_goes_on_to_console_pages() {
        assert_eq!(safe_next(Some("/console/approvals?x=1")), "/console/approvals?x=1");
        assert_eq!(safe_next(Some("https://evil.example")), "/console");
        assert_eq!(safe_next(Some("/console//evil.example")), "/console");
        assert_eq!(safe_next(None), "/console");
    }
}
