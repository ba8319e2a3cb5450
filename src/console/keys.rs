//! API keys, for admins: who holds which scopes, and revoking a key at
//! once. Keys are made with `tuma keys create`, which shows a new key once
//! on the operator's terminal; a page never shows one.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::pages::when;
use super::session::{audit, Chrome, Permission, Posted, Session};
use super::{render, ConsoleError};
use crate::api::AppState;
use crate::store::keys as store;

/// Most keys the page lists.
const MAX_KEYS_LISTED: i64 = 1000;

struct KeyLine {
    name: String,
    owner: String,
    prefix: String,
    scopes: String,
    created_at: String,
    revoked: String,
}

#[derive(askama::Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyLine>,
}

/// `GET /console/keys` (admins).
pub async fn list(State(state): State<AppState>, session: Session) -> Result<Response, ConsoleError> {
    if !session.role.allows(Permission::ManageUsers) {
        return Err(ConsoleError::Forbidden(session.role.as_str(), "manage API keys"));
    }
    let keys = store::list(&state.pool, MAX_KEYS_LISTED).await?;
    render(&KeysPage {
        chrome: Chrome::new(&session, "keys"),
        keys: keys
            .into_iter()
            .map(|k| KeyLine {
                name: k.name,
                owner: k.owner,
                prefix: k.prefix,
                scopes: k.scopes.join(", "),
                created_at: when(k.created_at),
                revoked: k.revoked_at.map(when).unwrap_or_default(),
            })
            .collect(),
    })
}

/// `POST /console/keys/{prefix}/revoke`: the key stops working at once,
/// for the API and for signing in here.
pub async fn revoke(
    State(state): State<AppState>,
    Path(prefix): Path<String>,
    posted: Posted,
) -> Result<Response, ConsoleError> {
    posted
        .session
        .require(&state, Permission::ManageUsers, "revoke_key", Some(&prefix))
        .await?;
    let Some(name) = store::revoke(&state.pool, &prefix, state.engine.jobs().clock().sql_now()).await? else {
        return Err(ConsoleError::NotFound(format!("no live key with prefix {prefix}")));
    };
    // Every node forgets the key when the revocation's notification
    // arrives; this one need not wait for it.
    state.keys.forget(&prefix);
    audit(&state, &posted.session, "revoke_key", Some(&prefix), "ok", Some(&name)).await?;
    Ok(Redirect::to("/console/keys").into_response())
}
