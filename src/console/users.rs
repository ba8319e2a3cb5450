//! Console users: creating them (here for admins, and `tuma users create`
//! for the first one) and disabling them.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use sqlx::PgPool;

use super::pages::when;
use super::session::{
    audit, hash_password, Chrome, Permission, Posted, Role, Session, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS,
};
use super::{render, ConsoleError};
use crate::api::AppState;
use crate::store::console as store;

/// Most users the users page lists.
const MAX_USERS_LISTED: i64 = 1000;
/// Longest user name, in characters.
const MAX_USERNAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("the user name must be 1 to 64 of a-z, 0-9, '.', '_' and '-'")]
    BadName,
    #[error("the password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")]
    BadPassword,
    #[error("a user named {0} already exists")]
    Taken(String),
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Creates a console user with an Argon2id hash of `password`.
pub async fn create_user(
    pool: &PgPool,
    username: &str,
    role: Role,
    password: &str,
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), CreateUserError> {
    let name_ok = !username.is_empty()
        && username.chars().count() <= MAX_USERNAME_CHARS
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !name_ok {
        return Err(CreateUserError::BadName);
    }
    let length = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&length) {
        return Err(CreateUserError::BadPassword);
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| CreateUserError::Hash(e.to_string()))?
        .map_err(|e| CreateUserError::Hash(e.to_string()))?;
    match store::insert_user(pool, username, &hash, role.as_str(), now).await? {
        Some(_) => Ok(()),
        None => Err(CreateUserError::Taken(username.to_owned())),
    }
}

struct UserLine {
    username: String,
    role: String,
    created_at: String,
    disabled: String,
}

#[derive(askama::Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserLine>,
    roles: Vec<&'static str>,
}

/// `GET /console/users` (admins).
pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, ConsoleError> {
    if !session.role.allows(Permission::ManageUsers) {
        return Err(ConsoleError::Forbidden(session.role.as_str(), "manage users"));
    }
    let users = store::users(&state.pool, MAX_USERS_LISTED).await?;
    render(&UsersPage {
        chrome: Chrome::new(&session, "users"),
        users: users
            .into_iter()
            .map(|u| UserLine {
                username: u.username,
                role: u.role,
                created_at: when(u.created_at),
                disabled: u.disabled_at.map(when).unwrap_or_default(),
            })
            .collect(),
        roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
    })
}

/// `POST /console/users`: `username`, `role`, `password`.
pub async fn create(State(state): State<AppState>, posted: Posted) -> Result<Response, ConsoleError> {
    let username = posted.form.get("username").unwrap_or_default().to_owned();
    posted
        .session
        .require(&state, Permission::ManageUsers, "create_user", Some(&username))
        .await?;
    let role = Role::parse(posted.form.get("role").unwrap_or_default()).map_err(ConsoleError::Invalid)?;
    let password = posted
        .form
        .0
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let now = state.engine.jobs().clock().sql_now();
    match create_user(&state.pool, &username, role, password, now).await {
        Ok(()) => {
            audit(
                &state,
                &posted.session,
                "create_user",
                Some(&username),
                "ok",
                Some(role.as_str()),
            )
            .await?;
            Ok(Redirect::to("/console/users").into_response())
        }
        Err(CreateUserError::Database(e)) => Err(e.into()),
        Err(e @ CreateUserError::Hash(_)) => Err(ConsoleError::Internal(e.into())),
        Err(refused) => Err(ConsoleError::Invalid(refused.to_string())),
    }
}

/// `POST /console/users/{name}/disable`: ends the user's sessions too.
pub async fn disable(
    State(state): State<AppState>,
    Path(name): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    posted
        .session
        .require(&state, Permission::ManageUsers, "disable_user", Some(&name))
        .await?;
    if !store::disable_user(&state.pool, &name, state.engine.jobs().clock().sql_now()).await? {
        return Err(ConsoleError::NotFound(format!("no active user {name}")));
    }
    audit(&state, &posted.session, "disable_user", Some(&name), "ok", None).await?;
    Ok(Redirect::to("/console/users").into_response())
}
