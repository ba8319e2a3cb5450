//! SQL for idempotency records.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// A stored first response.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub request_hash: Vec<u8>,
    pub response_status: i16,
    pub response_body: Value,
}

/// Claims `(owner, key)` for this request. `None` means the key is new and
/// now held by this transaction; otherwise the committed record of the
/// request that used it first (a concurrent first user is waited for).
pub async fn claim(
    conn: &mut PgConnection,
    owner: &str,
    key: &str,
    request_hash: &[u8],
    ttl_s: i64,
    now: Option<DateTime<Utc>>,
) -> Result<Option<Record>, sqlx::Error> {
    // An expired record is as good as none: it is replaced in place. A live
    // one is left alone (and locked; a concurrent first user is waited for).
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (owner, key, request_hash, response_status, response_body, created_at, expires_at)
         VALUES ($1, $2, $3, 0, 'null'::jsonb, coalesce($5, now()), coalesce($5, now()) + $4 * interval '1 second')
         ON CONFLICT (owner, key) DO UPDATE
         SET request_hash = EXCLUDED.request_hash, response_status = 0, response_body = 'null'::jsonb,
             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
         WHERE idempotency_keys.expires_at <= coalesce($5, now())",
    )
    .bind(owner)
    .bind(key)
    .bind(request_hash)
    .bind(ttl_s)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE owner = $1 AND key = $2",
    )
    .bind(owner)
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .map(Some)
}

/// A key claimed for a request, for [`claim_many`].
pub struct Claim<'a> {
    pub owner: &'a str,
    pub key: &'a str,
    pub request_hash: &'a [u8],
}

/// [`claim`] for many requests with one statement, for creates admitted
/// together: returns, per claim, whether this transaction now holds its
/// key. A key used before (or held by a transaction still running, which
/// is waited for) is not claimed here: its request answers alone, through
/// [`claim`]. Claims must name different keys; they are taken in the order
/// given, which callers make (owner, key) order so that two such
/// statements cannot deadlock.
pub async fn claim_many(
    conn: &mut PgConnection,
    claims: &[Claim<'_>],
    ttl_s: i64,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<bool>, sqlx::Error> {
    let claimed: Vec<i64> = sqlx::query_scalar(
        "WITH wanted AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS w(owner, key, hash, n)
         ), claimed AS (
             INSERT INTO idempotency_keys AS k
                    (owner, key, request_hash, response_status, response_body, created_at, expires_at)
             SELECT owner, key, hash, 0, 'null'::jsonb, coalesce($5, now()),
                    coalesce($5, now()) + $4 * interval '1 second'
             FROM wanted ORDER BY n
             ON CONFLICT (owner, key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, response_status = 0, response_body = 'null'::jsonb,
                 created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
             WHERE k.expires_at <= coalesce($5, now())
             RETURNING owner, key
         )
         SELECT w.n FROM wanted w JOIN claimed c ON c.owner = w.owner AND c.key = w.key",
    )
    .bind(claims.iter().map(|c| c.owner).collect::<Vec<&str>>())
    .bind(claims.iter().map(|c| c.key).collect::<Vec<&str>>())
    .bind(claims.iter().map(|c| c.request_hash).collect::<Vec<&[u8]>>())
    .bind(ttl_s)
    .bind(now)
    .fetch_all(conn)
    .await?;
    let mut held = vec![false; claims.len()];
    for n in claimed {
        held[n as usize - 1] = true;
    }
    Ok(held)
}

/// Gives back keys this transaction claimed for requests that will be
/// answered another way (alone, after it commits).
pub async fn release_many(conn: &mut PgConnection, keys: &[(&str, &str)]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    // Found by key, deleted by address: see [`store_responses`].
    sqlx::query(
        "DELETE FROM idempotency_keys k
         USING unnest((SELECT $1::text[]), $2::text[]) AS r(owner, key)
         CROSS JOIN LATERAL (
             SELECT h.ctid AS held FROM idempotency_keys h WHERE h.owner = r.owner AND h.key = r.key LIMIT 1
         ) AS found
         WHERE k.ctid = found.held AND k.response_status = 0",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<&str>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<&str>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// The statement of [`store_responses`] (public for the tests of its plan).
///
/// `(SELECT $N)` around the first array hides the batch's size from the
/// planner, so one generic plan serves every batch; with the size in
/// sight, every call looked cheaper planned afresh, and was.
///
/// Each row is found by its key (the lateral lookup, which `LIMIT` keeps
/// from being merged into a join, always goes by the primary key) and
/// updated by its address (`ctid`). A plain join on the key left the
/// access path to the statistics: a generic plan made while the table
/// was small hashed it whole on every call from then on, until the next
/// ANALYZE. The address is safe here: the rows are this transaction's
/// own claims, locked by it since, so the version found is the one to
/// update.
#[doc(hidden)]
pub const STORE_RESPONSES: &str = "UPDATE idempotency_keys k SET response_status = r.status, response_body = r.body
FROM unnest((SELECT $1::text[]), $2::text[], $3::int2[], $4::jsonb[]) AS r(owner, key, status, body)
CROSS JOIN LATERAL (
    SELECT h.ctid AS held FROM idempotency_keys h WHERE h.owner = r.owner AND h.key = r.key LIMIT 1
) AS found
WHERE k.ctid = found.held";

/// [`store_response`] for many held keys with one statement: `(owner,
/// key, status, body)`.
pub async fn store_responses(
    conn: &mut PgConnection,
    responses: &[(&str, &str, i16, &Value)],
) -> Result<(), sqlx::Error> {
    if responses.is_empty() {
        return Ok(());
    }
    sqlx::query(STORE_RESPONSES)
        .bind(responses.iter().map(|r| r.0).collect::<Vec<&str>>())
        .bind(responses.iter().map(|r| r.1).collect::<Vec<&str>>())
        .bind(responses.iter().map(|r| r.2).collect::<Vec<i16>>())
        .bind(responses.iter().map(|r| r.3).collect::<Vec<&Value>>())
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores the response of the request that holds the key.
pub async fn store_response(
    conn: &mut PgConnection,
    owner: &str,
    key: &str,
    status: i16,
    body: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE owner = $1 AND key = $2")
        .bind(owner)
        .bind(key)
        .bind(status)
        .bind(body)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes up to `limit` expired records; returns how many.
pub async fn purge_expired(pool: &sqlx::PgPool, limit: i64, now: Option<DateTime<Utc>>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE (owner, key) IN (
             SELECT owner, key FROM idempotency_keys WHERE expires_at <= coalesce($2, now())
             ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(limit)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
