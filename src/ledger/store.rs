//! The ledger's SQL.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AccountKey, AccountKind, NewTransfer};
use crate::domain::Currency;

/// Creates those of `keys` (sorted, without repeats) that do not exist yet.
pub(super) async fn create_accounts(conn: &mut PgConnection, keys: &[&AccountKey]) -> Result<(), sqlx::Error> {
    let column = |f: fn(&AccountKey) -> String| keys.iter().map(|k| f(k)).collect::<Vec<String>>();
    let new_ids: Vec<Uuid> = keys.iter().map(|_| Uuid::now_v7()).collect();
    let non_negative: Vec<bool> = keys.iter().map(|k| k.kind.non_negative()).collect();
    sqlx::query(
        "INSERT INTO ledger_accounts (id, owner, kind, ref, currency, normal_side, non_negative)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[])
         ORDER BY 2, 3, 4, 5
         ON CONFLICT (owner, kind, ref, currency) DO NOTHING",
    )
    .bind(&new_ids)
    .bind(column(|k| k.owner.clone()))
    .bind(column(|k| k.kind.as_str().to_owned()))
    .bind(column(|k| k.reference.clone()))
    .bind(column(|k| k.currency.code().to_owned()))
    .bind(column(|k| k.kind.normal_side().as_str().to_owned()))
    .bind(&non_negative)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A change to one non-negative account's running totals, by its index in
/// the transfer's account list.
pub(super) struct Totals {
    pub account: usize,
    pub posted: Decimal,
    pub pending_out: Decimal,
    pub pending_in: Decimal,
}

/// What [`write_transfers`] did.
pub(super) enum Written {
    /// A transfer with one of the keys exists; nothing was written.
    KeyTaken,
    /// The transfers and their entries were written; `refused` lists the
    /// totals (by account index) that would have overdrawn their account
    /// and were not applied, so the caller must roll back.
    Inserted { refused: Vec<usize> },
}

/// Transfers to write together ([`write_transfers`]).
pub(super) struct Rows<'a> {
    /// `ids[i]` for `transfers[i]`.
    pub ids: &'a [Uuid],
    pub transfers: &'a [NewTransfer],
    /// `pending` or `posted`, for all of them.
    pub state: &'a str,
    /// Every leg's account, sorted without repeats.
    pub accounts: &'a [&'a AccountKey],
    /// Every transfer's legs, each with its transfer's id and the index of
    /// its account in `accounts`.
    pub legs: &'a [(Uuid, usize, &'a super::Leg)],
    /// The non-negative accounts' changes summed over all the transfers.
    pub totals: &'a [Totals],
}

/// The statement of [`write_transfers`] (public for the tests of its plan).
///
/// Lookups are lateral and end in `LIMIT 1` (each key is unique), which
/// keeps the planner from merging them into joins: a join's access path
/// follows the statistics, and a generic plan made while the tables were
/// small scanned `ledger_accounts` and `ledger_transfers` whole on every
/// call until the next ANALYZE. One row at a time, the index is always
/// the cheaper way. `free` keeps a replayed key from writing anything;
/// ON CONFLICT makes a key a concurrent transaction takes first a
/// skipped row (so `KeyTaken`), never an error.
#[doc(hidden)]
pub const WRITE_TRANSFERS: &str = "WITH keys AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
        AS k(owner, kind, ref, currency, n)
), found AS (
    SELECT k.n, a.id FROM keys k
    CROSS JOIN LATERAL (
        SELECT id FROM ledger_accounts account
        WHERE account.owner = k.owner AND account.kind = k.kind AND account.ref = k.ref
          AND account.currency = k.currency
        LIMIT 1
    ) AS a
), wanted AS (
    SELECT * FROM unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::uuid[], $10::text[])
        WITH ORDINALITY AS t(id, key, owner, kind, intent_id, description, n)
), free AS (
    SELECT NOT EXISTS (
        SELECT 1 FROM unnest($6::text[]) AS w(key)
        CROSS JOIN LATERAL (SELECT 1 FROM ledger_transfers t WHERE t.key = w.key LIMIT 1) AS taken
    ) AS ok
), transfers AS (
    INSERT INTO ledger_transfers (id, key, owner, kind, state, intent_id, description, created_at, settled_at)
    SELECT id, key, owner, kind, $21, intent_id, description, coalesce($11, now()),
           CASE WHEN $21 = 'posted' THEN coalesce($11, now()) END
    FROM wanted
    WHERE (SELECT count(*) FROM found) = cardinality($1::text[]) AND (SELECT ok FROM free)
    ORDER BY n
    ON CONFLICT (key) DO NOTHING
    RETURNING id
), entries AS (
    INSERT INTO ledger_entries (transfer_id, account_id, amount, currency, memo)
    SELECT transfers.id, found.id, legs.amount, legs.currency, legs.memo
    FROM unnest($12::uuid[], $13::int4[], $14::numeric[], $15::text[], $16::text[])
         AS legs(transfer_id, n, amount, currency, memo)
    JOIN transfers ON transfers.id = legs.transfer_id
    JOIN found ON found.n = legs.n
), changes AS (
    SELECT found.id, c.posted, c.pending_out, c.pending_in
    FROM unnest($17::int4[], $18::numeric[], $19::numeric[], $20::numeric[])
         AS c(n, posted, pending_out, pending_in)
    JOIN found ON found.n = c.n
    WHERE EXISTS (SELECT 1 FROM transfers)
), locked AS (
    SELECT a.id FROM ledger_accounts a
    WHERE a.id IN (SELECT id FROM changes)
    ORDER BY a.id
    FOR UPDATE
), applied AS (
    UPDATE ledger_accounts a
    SET posted = a.posted + c.posted,
        pending_out = a.pending_out + c.pending_out,
        pending_in = a.pending_in + c.pending_in
    FROM locked JOIN changes c ON c.id = locked.id
    WHERE a.id = locked.id AND a.posted + c.posted - (a.pending_out + c.pending_out) >= 0
    RETURNING a.id
)
SELECT (SELECT count(*) FROM found),
       (SELECT count(*) FROM transfers),
       coalesce((SELECT array_agg(found.n::int4) FROM applied JOIN found ON found.id = applied.id), '{}')";

/// Writes one or many transfers with one statement: finds their accounts,
/// inserts the transfers and their entries, and applies `totals` to the
/// non-negative accounts, locking them in id order and refusing any
/// change that would take one below zero. A key already taken writes
/// nothing of any of them ([`Written::KeyTaken`]); so does, for a single
/// transfer, a key a racing transaction takes first (for several, the
/// others are written and the caller rolls back). `None` when some of the
/// accounts do not exist yet, and nothing was written.
pub(super) async fn write_transfers(
    conn: &mut PgConnection,
    rows: &Rows<'_>,
    now: Option<DateTime<Utc>>,
) -> Result<Option<Written>, sqlx::Error> {
    let Rows {
        ids,
        transfers,
        state,
        accounts,
        legs,
        totals,
    } = rows;
    let column = |f: fn(&AccountKey) -> &str| accounts.iter().map(|k| f(k)).collect::<Vec<&str>>();
    let index = |i: usize| i as i32 + 1;
    let (found, inserted, applied): (i64, i64, Vec<i32>) = sqlx::query_as(WRITE_TRANSFERS)
        .bind(column(|k| k.owner.as_str()))
        .bind(column(|k| k.kind.as_str()))
        .bind(column(|k| k.reference.as_str()))
        .bind(column(|k| k.currency.code()))
        .bind(*ids)
        .bind(transfers.iter().map(|t| t.key.as_str()).collect::<Vec<&str>>())
        .bind(transfers.iter().map(|t| t.owner.as_str()).collect::<Vec<&str>>())
        .bind(transfers.iter().map(|t| t.kind.as_str()).collect::<Vec<&str>>())
        .bind(transfers.iter().map(|t| t.intent_id).collect::<Vec<Option<Uuid>>>())
        .bind(transfers.iter().map(|t| t.description.as_str()).collect::<Vec<&str>>())
        .bind(now)
        .bind(legs.iter().map(|l| l.0).collect::<Vec<Uuid>>())
        .bind(legs.iter().map(|l| index(l.1)).collect::<Vec<i32>>())
        .bind(legs.iter().map(|l| l.2.amount).collect::<Vec<Decimal>>())
        .bind(legs.iter().map(|l| l.2.account.currency.code()).collect::<Vec<&str>>())
        .bind(legs.iter().map(|l| l.2.memo.as_str()).collect::<Vec<&str>>())
        .bind(totals.iter().map(|t| index(t.account)).collect::<Vec<i32>>())
        .bind(totals.iter().map(|t| t.posted).collect::<Vec<Decimal>>())
        .bind(totals.iter().map(|t| t.pending_out).collect::<Vec<Decimal>>())
        .bind(totals.iter().map(|t| t.pending_in).collect::<Vec<Decimal>>())
        .bind(*state)
        .fetch_one(conn)
        .await?;
    if (found as usize) < accounts.len() {
        return Ok(None);
    }
    if (inserted as usize) < transfers.len() {
        return Ok(Some(Written::KeyTaken));
    }
    let refused = totals
        .iter()
        .map(|t| t.account)
        .filter(|&i| !applied.contains(&index(i)))
        .collect();
    Ok(Some(Written::Inserted { refused }))
}

/// Locks the transfer `key` and, if it is pending, moves it to `to`
/// (`posted` or `voided`) and releases or spends what it reserved on its
/// non-negative accounts, locked in id order, all with one statement.
/// Returns the state the transfer was in; `None` when there is no such
/// transfer. Settling only releases what was reserved, so it cannot
/// overdraw.
pub(super) async fn settle_transfer(
    conn: &mut PgConnection,
    key: &str,
    to: &str,
    now: Option<DateTime<Utc>>,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH found AS (
             SELECT id, state FROM ledger_transfers WHERE key = $1 FOR UPDATE
         ), settled AS (
             UPDATE ledger_transfers t SET state = $2, settled_at = coalesce($3, now())
             FROM found WHERE t.id = found.id AND found.state = 'pending'
         ), deltas AS (
             SELECT a.id, sum(CASE WHEN a.normal_side = 'credit' THEN e.amount ELSE -e.amount END) AS delta
             FROM found
             JOIN ledger_entries e ON e.transfer_id = found.id
             JOIN ledger_accounts a ON a.id = e.account_id
             WHERE a.non_negative AND found.state = 'pending'
             GROUP BY a.id
         ), locked AS (
             SELECT a.id FROM ledger_accounts a
             WHERE a.id IN (SELECT id FROM deltas WHERE delta <> 0)
             ORDER BY a.id
             FOR UPDATE
         ), released AS (
             UPDATE ledger_accounts a
             SET posted = a.posted + CASE WHEN $2 = 'posted' THEN d.delta ELSE 0 END,
                 pending_out = a.pending_out + least(d.delta, 0),
                 pending_in = a.pending_in - greatest(d.delta, 0)
             FROM locked JOIN deltas d ON d.id = locked.id
             WHERE a.id = locked.id
         )
         SELECT state FROM found",
    )
    .bind(key)
    .bind(to)
    .bind(now)
    .fetch_optional(conn)
    .await
}

/// [`settle_transfer`] for many transfers (`wanted[i]`: key, `posted` or
/// `voided`) with one statement. The non-negative accounts they release or
/// spend are locked in (owner, party or campaign, currency) order, byte by
/// byte: the order in which payout create groups lock their balances and
/// callback batches settle, so that none of them deadlock. Returns, per
/// transfer in order, the state it was in; `None` when there is none.
pub(super) async fn settle_transfers(
    conn: &mut PgConnection,
    wanted: &[(&str, &str)],
    now: Option<DateTime<Utc>>,
) -> Result<Vec<Option<String>>, sqlx::Error> {
    let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
        r#"WITH wanted AS (
             SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(key, to_state, n)
         ), found AS (
             SELECT t.id, t.state, w.to_state, w.n
             FROM wanted w
             CROSS JOIN LATERAL (SELECT id, state FROM ledger_transfers WHERE key = w.key FOR UPDATE) AS t
         ), settled AS (
             UPDATE ledger_transfers t SET state = f.to_state, settled_at = coalesce($3, now())
             FROM found f WHERE t.id = f.id AND f.state = 'pending'
         ), deltas AS (
             SELECT a.id, f.to_state,
                    sum(CASE WHEN a.normal_side = 'credit' THEN e.amount ELSE -e.amount END) AS delta
             FROM found f
             JOIN ledger_entries e ON e.transfer_id = f.id
             JOIN ledger_accounts a ON a.id = e.account_id
             WHERE a.non_negative AND f.state = 'pending'
             GROUP BY a.id, f.id, f.to_state
         ), per_account AS (
             SELECT id,
                    sum(CASE WHEN to_state = 'posted' THEN delta ELSE 0 END) AS posted,
                    sum(least(delta, 0)) AS pending_out,
                    sum(greatest(delta, 0)) AS pending_in
             FROM deltas
             GROUP BY id
         ), locked AS (
             SELECT a.id FROM ledger_accounts a
             WHERE a.id IN (SELECT id FROM per_account)
             ORDER BY a.owner COLLATE "C", a.kind = 'campaign', a.ref COLLATE "C", a.currency COLLATE "C"
             FOR UPDATE
         ), released AS (
             UPDATE ledger_accounts a
             SET posted = a.posted + p.posted,
                 pending_out = a.pending_out + p.pending_out,
                 pending_in = a.pending_in - p.pending_in
             FROM locked JOIN per_account p ON p.id = locked.id
             WHERE a.id = locked.id
         )
         SELECT w.n, f.state FROM wanted w LEFT JOIN found f ON f.n = w.n ORDER BY w.n"#,
    )
    .bind(wanted.iter().map(|w| w.0).collect::<Vec<&str>>())
    .bind(wanted.iter().map(|w| w.1).collect::<Vec<&str>>())
    .bind(now)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(_, state)| state).collect())
}

/// A non-negative account's available balance (zero if it has no account).
pub async fn available_of(conn: &mut PgConnection, key: &AccountKey) -> Result<Decimal, sqlx::Error> {
    let available: Option<Decimal> = sqlx::query_scalar(
        "SELECT posted - pending_out FROM ledger_accounts WHERE owner = $1 AND kind = $2 AND ref = $3 AND currency = $4",
    )
    .bind(&key.owner)
    .bind(key.kind.as_str())
    .bind(&key.reference)
    .bind(key.currency.code())
    .fetch_optional(conn)
    .await?;
    Ok(available.unwrap_or_default())
}

/// A recorded transfer's id, state and legs (account named as in
/// [`AccountKey`]'s display, amount).
pub(super) async fn legs_of(
    conn: &mut PgConnection,
    key: &str,
) -> Result<(Uuid, String, Vec<(String, Decimal)>), sqlx::Error> {
    let (id, state): (Uuid, String) = sqlx::query_as("SELECT id, state FROM ledger_transfers WHERE key = $1")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    let rows: Vec<(String, String, String, String, Decimal)> = sqlx::query_as(
        "SELECT a.owner, a.kind, a.ref, a.currency, e.amount
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
         WHERE e.transfer_id = $1",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    let legs = rows
        .into_iter()
        .map(|(owner, kind, reference, currency, amount)| {
            let name = match (AccountKind::parse(&kind), currency.parse::<Currency>()) {
                (Some(kind), Ok(currency)) => AccountKey::new(&owner, kind, &reference, currency).to_string(),
                _ => format!("{owner}:{kind}:{reference}:{currency}"),
            };
            (name, amount)
        })
        .collect();
    Ok((id, state, legs))
}

/// An account's balances, on its normal side.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AccountBalance {
    pub id: Uuid,
    /// Empty for the platform's own accounts.
    pub owner: String,
    #[schema(example = "party")]
    pub kind: String,
    #[schema(example = "creator-42")]
    pub reference: String,
    #[schema(example = "KES")]
    pub currency: String,
    /// `credit` for what Tuma owes (balances, revenue), `debit` for what it
    /// holds (floats, receivables).
    pub normal_side: String,
    /// Settled balance.
    #[schema(value_type = String, example = "1500.00")]
    pub posted: Decimal,
    /// Reserved by pending payouts.
    #[schema(value_type = String, example = "0")]
    pub held: Decimal,
    /// On its way in (pending credits).
    #[schema(value_type = String, example = "0")]
    pub incoming: Decimal,
    /// What can be spent now: posted less held.
    #[schema(value_type = String, example = "1500.00")]
    pub available: Decimal,
}

/// Running totals for non-negative accounts; sums of entries for the
/// others (which keep none).
const BALANCE_SELECT: &str = "
    SELECT a.id, a.owner, a.kind, a.ref AS reference, a.currency, a.normal_side,
           CASE WHEN a.non_negative THEN a.posted ELSE coalesce(s.posted, 0) END AS posted,
           CASE WHEN a.non_negative THEN a.pending_out ELSE coalesce(s.pending_out, 0) END AS held,
           CASE WHEN a.non_negative THEN a.pending_in ELSE coalesce(s.pending_in, 0) END AS incoming,
           CASE WHEN a.non_negative THEN a.posted - a.pending_out
                ELSE coalesce(s.posted, 0) - coalesce(s.pending_out, 0) END AS available
    FROM ledger_accounts a
    LEFT JOIN LATERAL (
        SELECT sum(d) FILTER (WHERE t.state = 'posted') AS posted,
               coalesce(-sum(d) FILTER (WHERE t.state = 'pending' AND d < 0), 0) AS pending_out,
               coalesce(sum(d) FILTER (WHERE t.state = 'pending' AND d > 0), 0) AS pending_in
        FROM (SELECT e.transfer_id, CASE WHEN a.normal_side = 'credit' THEN e.amount ELSE -e.amount END AS d
              FROM ledger_entries e WHERE e.account_id = a.id) x
        JOIN ledger_transfers t ON t.id = x.transfer_id
        WHERE NOT a.non_negative
    ) s ON true";

impl AccountBalance {
    /// Every amount at the currency's minor units, however Postgres summed
    /// them.
    fn at_scale(mut self) -> AccountBalance {
        let scale = scale_of(&self.currency);
        for amount in [
            &mut self.posted,
            &mut self.held,
            &mut self.incoming,
            &mut self.available,
        ] {
            *amount = amount.normalize();
            amount.rescale(scale);
        }
        self
    }
}

fn scale_of(currency: &str) -> u32 {
    currency.parse::<Currency>().map_or(2, Currency::minor_units)
}

/// The accounts of `(owner, kind, reference)`, one per currency.
pub async fn balances_of(
    pool: &PgPool,
    owner: &str,
    kind: AccountKind,
    reference: &str,
) -> Result<Vec<AccountBalance>, sqlx::Error> {
    let rows: Vec<AccountBalance> = sqlx::query_as(&format!(
        "{BALANCE_SELECT} WHERE a.owner = $1 AND a.kind = $2 AND a.ref = $3 ORDER BY a.currency"
    ))
    .bind(owner)
    .bind(kind.as_str())
    .bind(reference)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(AccountBalance::at_scale).collect())
}

pub async fn find_account(pool: &PgPool, id: Uuid) -> Result<Option<AccountBalance>, sqlx::Error> {
    let row: Option<AccountBalance> = sqlx::query_as(&format!("{BALANCE_SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(AccountBalance::at_scale))
}

/// One entry of an account's history.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct EntryRow {
    /// Also the cursor: entries are listed newest first.
    pub id: i64,
    pub transfer_id: Uuid,
    /// The transfer's idempotency key (`intent:<id>` for an intent's own).
    pub transfer_key: String,
    #[schema(example = "payout")]
    pub transfer_kind: String,
    /// `pending` (held), `posted` or `voided`.
    pub transfer_state: String,
    pub intent_id: Option<Uuid>,
    /// `debit` or `credit`.
    pub side: String,
    #[schema(value_type = String, example = "1500.00")]
    pub amount: Decimal,
    pub currency: String,
    pub memo: String,
    pub created_at: DateTime<Utc>,
}

/// Entries of `account_id` older than `before` (an entry id), newest first.
pub async fn entries(
    pool: &PgPool,
    account_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT e.id, e.transfer_id, t.key AS transfer_key, t.kind AS transfer_kind, t.state AS transfer_state,
                t.intent_id, CASE WHEN e.amount < 0 THEN 'debit' ELSE 'credit' END AS side,
                abs(e.amount) AS amount, e.currency, e.memo, t.created_at
         FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
         WHERE e.account_id = $1 AND ($2::bigint IS NULL OR e.id < $2)
         ORDER BY e.id DESC
         LIMIT $3",
    )
    .bind(account_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|mut row| {
            row.amount = row.amount.normalize();
            row.amount.rescale(scale_of(&row.currency));
            row
        })
        .collect())
}

/// Everything that must hold of the ledger, as a list of what does not:
/// every transfer balances per currency, every running total equals the
/// sum of its entries, no non-negative account is below zero, and no
/// ledger entry, intent event or provider-call note has lost its parent.
pub async fn check_invariants(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let mut problems = Vec::new();
    let unbalanced: Vec<(String, String, Decimal)> = sqlx::query_as(
        "SELECT t.key, e.currency, sum(e.amount)
         FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
         GROUP BY t.key, e.currency HAVING sum(e.amount) <> 0",
    )
    .fetch_all(pool)
    .await?;
    for (key, currency, sum) in unbalanced {
        problems.push(format!("transfer {key}: {currency} legs sum to {sum}"));
    }
    let drifted: Vec<(Uuid, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "SELECT a.id, a.posted, a.pending_out, a.pending_in,
                coalesce(sum(x.d) FILTER (WHERE t.state = 'posted'), 0),
                coalesce(-sum(x.d) FILTER (WHERE t.state = 'pending' AND x.d < 0), 0),
                coalesce(sum(x.d) FILTER (WHERE t.state = 'pending' AND x.d > 0), 0)
         FROM ledger_accounts a
         LEFT JOIN (SELECT e.account_id, e.transfer_id,
                           sum(CASE WHEN a2.normal_side = 'credit' THEN e.amount ELSE -e.amount END) AS d
                    FROM ledger_entries e JOIN ledger_accounts a2 ON a2.id = e.account_id
                    GROUP BY e.account_id, e.transfer_id) x ON x.account_id = a.id
         LEFT JOIN ledger_transfers t ON t.id = x.transfer_id
         WHERE a.non_negative
         GROUP BY a.id
         HAVING a.posted <> coalesce(sum(x.d) FILTER (WHERE t.state = 'posted'), 0)
             OR a.pending_out <> coalesce(-sum(x.d) FILTER (WHERE t.state = 'pending' AND x.d < 0), 0)
             OR a.pending_in <> coalesce(sum(x.d) FILTER (WHERE t.state = 'pending' AND x.d > 0), 0)
             OR a.posted - a.pending_out < 0",
    )
    .fetch_all(pool)
    .await?;
    for (id, posted, out, into, sum_posted, sum_out, sum_in) in drifted {
        problems.push(format!(
            "account {id}: totals posted {posted} held {out} incoming {into}, entries say {sum_posted} / {sum_out} / {sum_in}"
        ));
    }
    // The hottest child tables carry no foreign keys (their writers
    // guarantee the parent; see the migration that dropped them): what the
    // keys would have refused is looked for here.
    let orphans: Vec<(String, i64)> = sqlx::query_as(
        "SELECT 'ledger entries without their transfer', count(*) FROM ledger_entries e
         WHERE NOT EXISTS (SELECT 1 FROM ledger_transfers t WHERE t.id = e.transfer_id)
         UNION ALL
         SELECT 'ledger entries without their account', count(*) FROM ledger_entries e
         WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = e.account_id)
         UNION ALL
         SELECT 'intent events without their intent', count(*) FROM intent_events v
         WHERE NOT EXISTS (SELECT 1 FROM intents i WHERE i.id = v.intent_id)
         UNION ALL
         SELECT 'provider-call notes without their intent', count(*) FROM provider_calls c
         WHERE NOT EXISTS (SELECT 1 FROM intents i WHERE i.id = c.intent_id)",
    )
    .fetch_all(pool)
    .await?;
    for (what, count) in orphans {
        if count > 0 {
            problems.push(format!("{count} {what}"));
        }
    }
    Ok(problems)
}

/// The state and legs of transfer `key`, if it exists.
pub async fn transfer_legs(
    conn: &mut PgConnection,
    key: &str,
) -> Result<Option<(String, Vec<(AccountKey, Decimal, String)>)>, sqlx::Error> {
    let Some((id, state)): Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, state FROM ledger_transfers WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let rows: Vec<(String, String, String, String, Decimal, String)> = sqlx::query_as(
        "SELECT a.owner, a.kind, a.ref, a.currency, e.amount, e.memo
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
         WHERE e.transfer_id = $1 ORDER BY e.id",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    let legs = rows
        .into_iter()
        .filter_map(|(owner, kind, reference, currency, amount, memo)| {
            let key = AccountKey::new(&owner, AccountKind::parse(&kind)?, &reference, currency.parse().ok()?);
            Some((key, amount, memo))
        })
        .collect();
    Ok(Some((state, legs)))
}
