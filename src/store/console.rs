//! SQL of the admin console: its users, sessions and audit log, and the
//! read-only views it shows of intents (lists across owners, the overview,
//! an intent's timeline). The runner's side (jobs, queues) stays in
//! `runner::store`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::intents::{IntentRow, COLUMNS};

/// A console user as sign-in and the users page need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// Creates a user; `None` when the username is taken.
pub async fn insert_user(
    pool: &PgPool,
    username: &str,
    password_hash: &str,
    role: &str,
    now: Option<DateTime<Utc>>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO console_users (id, username, password_hash, role, created_at)
         VALUES ($1, $2, $3, $4, coalesce($5, now()))
         ON CONFLICT (username) DO NOTHING
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(username)
    .bind(password_hash)
    .bind(role)
    .bind(now)
    .fetch_optional(pool)
    .await
}

pub async fn user_by_name(pool: &PgPool, username: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, password_hash, role, created_at, disabled_at FROM console_users WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await
}

/// Every user, by name. The console has a handful; `limit` bounds it anyway.
pub async fn users(pool: &PgPool, limit: i64) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, password_hash, role, created_at, disabled_at FROM console_users
         ORDER BY username LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Disables a user and ends their sessions; `false` if no such live user.
pub async fn disable_user(pool: &PgPool, username: &str, now: Option<DateTime<Utc>>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE console_users SET disabled_at = coalesce($2, now())
         WHERE username = $1 AND disabled_at IS NULL RETURNING id",
    )
    .bind(username)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = id {
        sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(id.is_some())
}

/// A live session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub actor: String,
    pub role: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// What a new session records.
pub struct NewSession<'a> {
    pub token_hash: &'a [u8],
    pub user_id: Option<Uuid>,
    /// The API key's prefix, for a session signed in with a key.
    pub key_prefix: Option<&'a str>,
    pub actor: &'a str,
    pub role: &'a str,
    pub csrf_token: &'a str,
    pub ttl_s: i64,
}

/// Stores a session, and deletes sessions that have expired (a bounded
/// batch: sign-ins are rare, so the table stays small without a job).
pub async fn insert_session(
    pool: &PgPool,
    session: &NewSession<'_>,
    now: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM console_sessions WHERE token_hash IN (
             SELECT token_hash FROM console_sessions WHERE expires_at <= coalesce($1, now())
             ORDER BY expires_at LIMIT 1000)",
    )
    .bind(now)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO console_sessions
             (token_hash, user_id, actor, role, csrf_token, created_at, last_seen_at, expires_at, key_prefix)
         VALUES ($1, $2, $3, $4, $5, coalesce($7, now()), coalesce($7, now()),
                 coalesce($7, now()) + make_interval(secs => $6), $8)",
    )
    .bind(session.token_hash)
    .bind(session.user_id)
    .bind(session.actor)
    .bind(session.role)
    .bind(session.csrf_token)
    .bind(session.ttl_s as f64)
    .bind(now)
    .bind(session.key_prefix)
    .execute(pool)
    .await?;
    Ok(())
}

/// The session with this token hash, marked as used now, unless it
/// expired, went unused for longer than `idle_timeout_s`, its user was
/// disabled or its API key revoked.
pub async fn session(
    pool: &PgPool,
    token_hash: &[u8],
    idle_timeout_s: u64,
    now: Option<DateTime<Utc>>,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE console_sessions s SET last_seen_at = coalesce($2, now())
         WHERE s.token_hash = $1 AND s.expires_at > coalesce($2, now())
           AND s.last_seen_at > coalesce($2, now()) - make_interval(secs => $3)
           AND (s.user_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM console_users u WHERE u.id = s.user_id AND u.disabled_at IS NOT NULL))
           AND (s.key_prefix IS NULL OR EXISTS (
                SELECT 1 FROM api_keys k WHERE k.prefix = s.key_prefix AND k.revoked_at IS NULL))
         RETURNING s.actor, s.role, s.csrf_token, s.expires_at",
    )
    .bind(token_hash)
    .bind(now)
    .bind(idle_timeout_s as f64)
    .fetch_optional(pool)
    .await
}

pub async fn delete_session(pool: &PgPool, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// One line of the audit log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub remote_addr: Option<String>,
}

/// What an audit line records.
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub role: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
    pub remote_addr: Option<&'a str>,
}

pub async fn insert_audit(pool: &PgPool, entry: &NewAudit<'_>, now: Option<DateTime<Utc>>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO console_audit (at, actor, role, action, target, outcome, detail, remote_addr)
         VALUES (coalesce($1, now()), $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(now)
    .bind(entry.actor)
    .bind(entry.role)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.outcome)
    .bind(entry.detail)
    .bind(entry.remote_addr)
    .execute(pool)
    .await?;
    Ok(())
}

/// Refused sign-ins of `actor` in the last `window_s` seconds.
pub async fn recent_refusals(
    pool: &PgPool,
    actor: &str,
    window_s: i64,
    now: Option<DateTime<Utc>>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM console_audit
         WHERE actor = $1 AND action = 'sign_in' AND outcome = 'refused'
           AND at > coalesce($3, now()) - make_interval(secs => $2)",
    )
    .bind(actor)
    .bind(window_s as f64)
    .bind(now)
    .fetch_one(pool)
    .await
}

/// Audit lines older than `before` (an id), newest first, optionally one
/// actor's.
pub async fn audit(
    pool: &PgPool,
    actor: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, role, action, target, outcome, detail, remote_addr FROM console_audit
         WHERE ($1::text IS NULL OR actor = $1) AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(actor)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The filters of the console's intent lists; every one optional, all
/// combined.
#[derive(Debug, Default, Clone)]
pub struct IntentFilter {
    pub kind: String,
    pub states: Vec<String>,
    pub provider: Option<String>,
    pub party_id: Option<String>,
    pub amount_min: Option<Decimal>,
    pub amount_max: Option<Decimal>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    /// Matches the reference, the provider's receipt or the intent id.
    pub search: Option<String>,
    /// The cursor: only intents older than this id (ids sort by creation).
    pub before: Option<Uuid>,
}

/// One page of intents of every owner, newest first.
pub async fn intents(pool: &PgPool, filter: &IntentFilter, limit: i64) -> Result<Vec<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM intents
         WHERE kind = $1
           AND (cardinality($2::text[]) = 0 OR state = ANY($2))
           AND ($3::text IS NULL OR provider = $3)
           AND ($4::text IS NULL OR party_id = $4)
           AND ($5::numeric IS NULL OR amount >= $5)
           AND ($6::numeric IS NULL OR amount <= $6)
           AND ($7::timestamptz IS NULL OR created_at >= $7)
           AND ($8::timestamptz IS NULL OR created_at < $8)
           AND ($9::text IS NULL OR reference = $9 OR receipt = $9 OR id::text = $9)
           AND ($10::uuid IS NULL OR id < $10)
         ORDER BY id DESC
         LIMIT $11"
    ))
    .bind(&filter.kind)
    .bind(&filter.states)
    .bind(&filter.provider)
    .bind(&filter.party_id)
    .bind(filter.amount_min)
    .bind(filter.amount_max)
    .bind(filter.created_from)
    .bind(filter.created_to)
    .bind(&filter.search)
    .bind(filter.before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Intents of `kind` in any of `states`, oldest first, after the cursor
/// `after` (an intent id): the approval and review queues.
pub async fn queue(
    pool: &PgPool,
    kinds: &[&str],
    states: &[&str],
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<IntentRow>, sqlx::Error> {
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let states: Vec<String> = states.iter().map(|s| (*s).to_owned()).collect();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM intents
         WHERE kind = ANY($1) AND state = ANY($2) AND ($3::uuid IS NULL OR id > $3)
         ORDER BY id LIMIT $4"
    ))
    .bind(&kinds)
    .bind(&states)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Intents still moving that policy flagged (AML, velocity), oldest first.
pub async fn flagged_open(pool: &PgPool, after: Option<Uuid>, limit: i64) -> Result<Vec<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM intents i
         WHERE final_at IS NULL AND state <> 'unresolved' AND ($1::uuid IS NULL OR id > $1)
           AND EXISTS (SELECT 1 FROM intent_flags f WHERE f.intent_id = i.id)
         ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Flags of many intents at once: (intent, rule, action, detail).
pub async fn flags_of(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<(Uuid, String, String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT intent_id, rule, action, detail FROM intent_flags WHERE intent_id = ANY($1) ORDER BY id")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Approvals already given, per intent: (intent, approver, decision).
pub async fn decisions_of(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<(Uuid, String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT intent_id, approver, decision FROM approvals WHERE intent_id = ANY($1) ORDER BY created_at")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Parties' KYC tiers: (owner, party, tier).
pub async fn tiers_of(pool: &PgPool, parties: &[(String, String)]) -> Result<Vec<(String, String, i16)>, sqlx::Error> {
    let owners: Vec<&str> = parties.iter().map(|p| p.0.as_str()).collect();
    let ids: Vec<&str> = parties.iter().map(|p| p.1.as_str()).collect();
    sqlx::query_as(
        "SELECT p.owner, p.id, p.kyc_tier FROM parties p
         JOIN unnest($1::text[], $2::text[]) AS q(owner, id) ON q.owner = p.owner AND q.id = p.id",
    )
    .bind(&owners)
    .bind(&ids)
    .fetch_all(pool)
    .await
}

/// Intents created since `since`, per kind, provider and state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StateCount {
    pub kind: String,
    pub provider: String,
    pub state: String,
    pub count: i64,
}

pub async fn counts_since(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<StateCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, provider, state, count(*) AS count FROM intents
         WHERE created_at >= $1 AND kind IN ('payout', 'collection')
         GROUP BY kind, provider, state ORDER BY kind, provider, state",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

/// How each provider did with intents created since `since`: success
/// rate over those that ended, and time-to-final percentiles in seconds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderHealth {
    pub provider: String,
    pub completed: i64,
    pub ended: i64,
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub p99_s: Option<f64>,
}

pub async fn provider_health(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<ProviderHealth>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider,
                count(*) FILTER (WHERE state = 'completed') AS completed,
                count(*) FILTER (WHERE final_at IS NOT NULL) AS ended,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM final_at - created_at))
                    FILTER (WHERE final_at IS NOT NULL) AS p50_s,
                percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM final_at - created_at))
                    FILTER (WHERE final_at IS NOT NULL) AS p90_s,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM final_at - created_at))
                    FILTER (WHERE final_at IS NOT NULL) AS p99_s
         FROM intents
         WHERE created_at >= $1 AND kind IN ('payout', 'collection')
         GROUP BY provider ORDER BY provider",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Waiting for a person: (awaiting approval, unresolved, flagged and open).
pub async fn waiting_counts(pool: &PgPool) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM intents WHERE state = 'awaiting_approval'),
                (SELECT count(*) FROM intents WHERE state = 'unresolved'),
                (SELECT count(*) FROM intents i WHERE final_at IS NULL AND state <> 'unresolved'
                    AND EXISTS (SELECT 1 FROM intent_flags f WHERE f.intent_id = i.id))",
    )
    .fetch_one(pool)
    .await
}

pub async fn intent(pool: &PgPool, id: Uuid) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM intents WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A callback stored for an intent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallbackRow {
    pub id: i64,
    pub provider: String,
    pub kind: String,
    pub body: Vec<u8>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// Callbacks received for an intent, oldest first, at most `limit`.
pub async fn callbacks(pool: &PgPool, intent_id: Uuid, limit: i64) -> Result<Vec<CallbackRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, kind, body, outcome, detail, received_at FROM callback_inbox
         WHERE intent_id = $1 ORDER BY id LIMIT $2",
    )
    .bind(intent_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One ledger leg of an intent's transfers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerLine {
    pub transfer_key: String,
    pub transfer_state: String,
    pub account: String,
    pub amount: Decimal,
    pub currency: String,
    pub memo: String,
    pub created_at: DateTime<Utc>,
}

pub async fn ledger_lines(pool: &PgPool, intent_id: Uuid, limit: i64) -> Result<Vec<LedgerLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.key AS transfer_key, t.state AS transfer_state,
                a.kind || ':' || a.ref AS account, e.amount, e.currency, e.memo, t.created_at
         FROM ledger_transfers t
         JOIN ledger_entries e ON e.transfer_id = t.id
         JOIN ledger_accounts a ON a.id = e.account_id
         WHERE t.intent_id = $1 ORDER BY e.id LIMIT $2",
    )
    .bind(intent_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One outbound webhook delivery attempt for an intent's events.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryLine {
    pub event: String,
    pub endpoint_id: Uuid,
    pub attempt: i32,
    pub status_code: Option<i16>,
    pub error: Option<String>,
    pub latency_ms: i32,
    pub at: DateTime<Utc>,
}

pub async fn deliveries(pool: &PgPool, intent_id: Uuid, limit: i64) -> Result<Vec<DeliveryLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT ev.event, d.endpoint_id, d.attempt, d.status_code, d.error, d.latency_ms, d.at
         FROM webhook_deliveries d JOIN intent_events ev ON ev.id = d.event_id
         WHERE ev.intent_id = $1 ORDER BY d.id LIMIT $2",
    )
    .bind(intent_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
