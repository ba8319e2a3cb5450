//! SQL for parties and their payout settings.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PartyRow {
    pub owner: String,
    pub id: String,
    pub role: String,
    pub kyc_tier: i16,
    pub country: Option<String>,
    pub payout_msisdn: Option<String>,
    pub payout_provider: Option<String>,
    pub auto_payout_enabled: bool,
    pub auto_payout_threshold: Option<Decimal>,
    pub auto_payout_currency: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "owner, id, role, kyc_tier, country, payout_msisdn, payout_provider, auto_payout_enabled, \
                       auto_payout_threshold, auto_payout_currency, created_at, updated_at";

/// The party's row, locked for the rest of the transaction; a party seen
/// for the first time is created with `default_tier`. Every payout of a
/// party takes this lock first, so limit checks never race.
pub async fn lock_or_create(
    conn: &mut PgConnection,
    owner: &str,
    id: &str,
    default_tier: i16,
) -> Result<PartyRow, sqlx::Error> {
    let lock = format!("SELECT {COLUMNS} FROM parties WHERE owner = $1 AND id = $2 FOR UPDATE");
    // A party is created once and locked on every payout after: look first.
    let found: Option<PartyRow> = sqlx::query_as(&lock)
        .bind(owner)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(party) = found {
        return Ok(party);
    }
    create_if_new(&mut *conn, owner, id, default_tier).await?;
    sqlx::query_as(&lock).bind(owner).bind(id).fetch_one(conn).await
}

/// Creates the party with `default_tier` unless it exists, and changes
/// nothing of one that does; unlike [`lock_or_create`], locks nothing.
async fn create_if_new(conn: &mut PgConnection, owner: &str, id: &str, default_tier: i16) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO parties (owner, id, kyc_tier) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(owner)
        .bind(id)
        .bind(default_tier)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, owner: &str, id: &str) -> Result<Option<PartyRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM parties WHERE owner = $1 AND id = $2"))
        .bind(owner)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// What `PUT /v1/parties/{id}` sets.
pub struct PartyProfile<'a> {
    pub role: &'a str,
    pub kyc_tier: i16,
    pub country: Option<&'a str>,
    pub payout_msisdn: Option<&'a str>,
    pub payout_provider: Option<&'a str>,
}

pub async fn upsert_profile(
    conn: &mut PgConnection,
    owner: &str,
    id: &str,
    profile: &PartyProfile<'_>,
    now: Option<DateTime<Utc>>,
) -> Result<PartyRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO parties (owner, id, role, kyc_tier, country, payout_msisdn, payout_provider, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now()), coalesce($8, now()))
         ON CONFLICT (owner, id) DO UPDATE
         SET role = $3, kyc_tier = $4, country = $5, payout_msisdn = $6, payout_provider = $7,
             updated_at = coalesce($8, now())
         RETURNING {COLUMNS}"
    ))
    .bind(owner)
    .bind(id)
    .bind(profile.role)
    .bind(profile.kyc_tier)
    .bind(profile.country)
    .bind(profile.payout_msisdn)
    .bind(profile.payout_provider)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// What `PUT /v1/parties/{id}/payout-settings` sets.
#[derive(Debug, Clone, Copy)]
pub struct AutoPayout<'a> {
    pub enabled: bool,
    pub threshold: Option<Decimal>,
    pub currency: Option<&'a str>,
}

/// Sets the party's auto-payout; a party seen for the first time is
/// created with `default_tier`.
pub async fn set_auto_payout(
    conn: &mut PgConnection,
    owner: &str,
    id: &str,
    settings: &AutoPayout<'_>,
    default_tier: i16,
    now: Option<DateTime<Utc>>,
) -> Result<PartyRow, sqlx::Error> {
    let AutoPayout {
        enabled,
        threshold,
        currency,
    } = *settings;
    sqlx::query_as(&format!(
        "INSERT INTO parties (owner, id, kyc_tier, auto_payout_enabled, auto_payout_threshold, auto_payout_currency,
                              created_at, updated_at)
         VALUES ($1, $2, $7, $3, $4, $5, coalesce($6, now()), coalesce($6, now()))
         ON CONFLICT (owner, id) DO UPDATE
         SET auto_payout_enabled = $3, auto_payout_threshold = $4, auto_payout_currency = $5,
             updated_at = coalesce($6, now())
         RETURNING {COLUMNS}"
    ))
    .bind(owner)
    .bind(id)
    .bind(enabled)
    .bind(threshold)
    .bind(currency)
    .bind(now)
    .bind(default_tier)
    .fetch_one(conn)
    .await
}

/// A party's auto-payout settings (enabled, threshold, currency), the
/// party created with `default_tier` if it did not exist: a party credited
/// is a party, however its balance was credited. One statement; on a party
/// that exists the insert writes nothing. `None` only when a transaction
/// running alongside created the party after this statement began (its
/// settings are those of a party just made: no auto-payout).
pub async fn auto_payout_settings_creating(
    conn: &mut PgConnection,
    owner: &str,
    id: &str,
    default_tier: i16,
) -> Result<Option<(bool, Option<Decimal>, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "WITH made AS (
             INSERT INTO parties (owner, id, kyc_tier) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING
             RETURNING auto_payout_enabled, auto_payout_threshold, auto_payout_currency
         )
         SELECT * FROM made
         UNION ALL
         SELECT auto_payout_enabled, auto_payout_threshold, auto_payout_currency FROM parties
         WHERE owner = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM made)",
    )
    .bind(owner)
    .bind(id)
    .bind(default_tier)
    .fetch_optional(conn)
    .await
}

/// A party locked for a payout from its balance, with that balance's
/// available amount (`posted - pending_out`, read under the account's lock).
#[derive(Debug, Clone)]
pub struct LockedForPayout {
    pub party: PartyRow,
    pub available: Decimal,
}

/// Locks, for payouts admitted together, each wanted party's row and its
/// balance in the wanted currency (`wanted[i]`: owner, party, currency), in
/// the order given: callers sort `wanted` by owner, party and currency,
/// the order in which a batch of callbacks settles (so the two wait for
/// each other instead of deadlocking); each entry is looked up and locked
/// by its own index lookup, in turn. A lock taken after waiting returns
/// the row as its holder left it, so `available` is current. Returns the
/// index of each wanted entry found; a party or balance that does not
/// exist yet is not in the answer (and nothing of it is locked).
pub async fn lock_for_payouts(
    conn: &mut PgConnection,
    wanted: &[(&str, &str, &str)],
) -> Result<Vec<(usize, LockedForPayout)>, sqlx::Error> {
    let owners: Vec<&str> = wanted.iter().map(|w| w.0).collect();
    let ids: Vec<&str> = wanted.iter().map(|w| w.1).collect();
    let currencies: Vec<&str> = wanted.iter().map(|w| w.2).collect();
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("p.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    // `(SELECT $N)` around the first array hides the batch's size from the
    // planner, so one generic plan serves every batch; with the size in
    // sight, every call looked cheaper planned afresh, and was.
    let rows: Vec<LockedRow> = sqlx::query_as(&format!(
        "SELECT w.n, x.*
         FROM unnest((SELECT $1::text[]), $2::text[], $3::text[]) WITH ORDINALITY AS w(owner, id, currency, n)
         CROSS JOIN LATERAL (
             SELECT a.posted - a.pending_out AS available, {columns}
             FROM parties p
             JOIN ledger_accounts a
               ON a.owner = p.owner AND a.kind = 'party' AND a.ref = p.id AND a.currency = w.currency
             WHERE p.owner = w.owner AND p.id = w.id
             FOR UPDATE OF p, a
         ) AS x
         ORDER BY w.n"
    ))
    .bind(&owners)
    .bind(&ids)
    .bind(&currencies)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let locked = LockedForPayout {
                party: row.party,
                available: row.available,
            };
            (row.n as usize - 1, locked)
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct LockedRow {
    n: i64,
    available: Decimal,
    #[sqlx(flatten)]
    party: PartyRow,
}
