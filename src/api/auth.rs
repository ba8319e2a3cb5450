//! API keys and scopes.
//!
//! A key looks like `tuma_<prefix>_<secret>`: the prefix (8 hex digits) finds
//! its row, the whole key's SHA-256 is compared in constant time. Keys carry
//! 256 random bits, so a fast hash is enough; only the hash is stored, and
//! the key is shown once, when it is made.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::key_cache::KeyCache;
use super::problem::ApiError;
use super::AppState;
use crate::store::keys;

/// What a key may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    IntentsWrite,
    IntentsRead,
    ApprovalsWrite,
    /// Manage parties and their settings, and credit their balances.
    PartiesWrite,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::IntentsWrite,
        Scope::IntentsRead,
        Scope::ApprovalsWrite,
        Scope::PartiesWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::IntentsWrite => "intents:write",
            Scope::IntentsRead => "intents:read",
            Scope::ApprovalsWrite => "approvals:write",
            Scope::PartiesWrite => "parties:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {text:?} (known: {})", known.join(", "))
            })
    }
}

/// The caller, authenticated by its API key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name: the actor recorded on what it does.
    pub name: String,
    /// Whose intents, idempotency keys and webhooks these are.
    pub owner: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }
}

/// What every API key starts with.
pub const KEY_PREFIX: &str = "tuma_";

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new key for `name`, owned by `owner`, with `scopes`. Returns the key;
/// it cannot be recovered later.
pub async fn create_key(pool: &PgPool, name: &str, owner: &str, scopes: &[Scope]) -> Result<String, sqlx::Error> {
    let mut bytes = [0u8; 36];
    rand::rng().fill_bytes(&mut bytes);
    let prefix = hex::encode(&bytes[..4]);
    let key = format!("{KEY_PREFIX}{prefix}_{}", hex::encode(&bytes[4..]));
    let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    keys::insert(pool, name, owner, &prefix, &hash(&key), &scopes).await?;
    Ok(key)
}

/// Finds the caller a key belongs to, reading the key from the database.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Caller, ApiError> {
    let prefix = prefix_of(key)?;
    verify(keys::by_prefix(pool, prefix).await?, key)
}

/// Finds the caller a key belongs to, remembered by `cache` or read.
pub async fn authenticate_cached(cache: &KeyCache, pool: &PgPool, key: &str) -> Result<Caller, ApiError> {
    let prefix = prefix_of(key)?;
    verify(cache.by_prefix(pool, prefix).await?, key)
}

/// The prefix that finds a key's row: `tuma_<prefix>_<secret>`.
fn prefix_of(key: &str) -> Result<&str, ApiError> {
    key.strip_prefix(KEY_PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .map(|(prefix, _)| prefix)
        .filter(|prefix| prefix.len() == 8 && prefix.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or(ApiError::Unauthorized("the API key is not valid"))
}

/// The caller, if `row` is a live key whose hash is the key's.
fn verify(row: Option<keys::KeyRow>, key: &str) -> Result<Caller, ApiError> {
    let invalid = ApiError::Unauthorized("the API key is not valid");
    let row = row.ok_or(invalid)?;
    if !bool::from(row.key_hash.as_slice().ct_eq(&hash(key))) {
        return Err(ApiError::Unauthorized("the API key is not valid"));
    }
    Ok(Caller {
        name: row.name,
        owner: row.owner,
        scopes: row.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect(),
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "send the API key as `Authorization: Bearer <key>`",
            ))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized(
                "send the API key as `Authorization: Bearer <key>`",
            ))?;
        authenticate_cached(&state.keys, &state.pool, key).await
    }
}
