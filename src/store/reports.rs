//! SQL for reconciliation, the scheduled reports, and the read-only
//! summaries behind `/metrics`, `tuma demo` and `tuma bench payouts`.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The ledger's view of one provider float: posted and pending, on the
/// float's normal (debit) side.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerFloat {
    pub provider: String,
    pub currency: String,
    pub posted: Decimal,
    pub pending: Decimal,
}

pub async fn ledger_floats(pool: &PgPool) -> Result<Vec<LedgerFloat>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.ref AS provider, a.currency,
                coalesce(-sum(e.amount) FILTER (WHERE t.state = 'posted'), 0) AS posted,
                coalesce(-sum(e.amount) FILTER (WHERE t.state = 'pending'), 0) AS pending
         FROM ledger_entries e
         JOIN ledger_accounts a ON a.id = e.account_id
         JOIN ledger_transfers t ON t.id = e.transfer_id
         WHERE a.kind = 'float'
         GROUP BY a.ref, a.currency
         ORDER BY a.ref, a.currency",
    )
    .fetch_all(pool)
    .await
}

/// One account of a provider's latest balance report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportedFloat {
    pub provider: String,
    pub account: String,
    pub currency: String,
    pub available: Decimal,
    pub reported_at: DateTime<Utc>,
}

pub async fn reported_floats(pool: &PgPool) -> Result<Vec<ReportedFloat>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, account, currency, available, reported_at FROM provider_floats ORDER BY provider, account",
    )
    .fetch_all(pool)
    .await
}

/// An intent in a reconciliation list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntentLine {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub amount: Decimal,
    pub currency: String,
    pub provider: String,
    pub reference: String,
    pub updated_at: DateTime<Utc>,
}

const LINE: &str = "id, kind, state, amount, currency, provider, reference, updated_at";

pub async fn unresolved(pool: &PgPool, limit: i64) -> Result<Vec<IntentLine>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LINE} FROM intents WHERE state = 'unresolved' AND final_at IS NULL ORDER BY updated_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Non-final intents that have sat in a state longer than its bound:
/// `bounds` is `(kind, state, seconds)`.
pub async fn stuck(
    pool: &PgPool,
    bounds: &[(String, String, i64)],
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<IntentLine>, sqlx::Error> {
    let kinds: Vec<&str> = bounds.iter().map(|b| b.0.as_str()).collect();
    let states: Vec<&str> = bounds.iter().map(|b| b.1.as_str()).collect();
    let seconds: Vec<i64> = bounds.iter().map(|b| b.2).collect();
    sqlx::query_as(
        "SELECT i.id, i.kind, i.state, i.amount, i.currency, i.provider, i.reference, i.updated_at
         FROM intents i
         JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS b (kind, state, seconds)
           ON b.kind = i.kind AND b.state = i.state
         WHERE i.final_at IS NULL AND i.updated_at < $4 - make_interval(secs => b.seconds)
         ORDER BY i.updated_at
         LIMIT $5",
    )
    .bind(&kinds)
    .bind(&states)
    .bind(&seconds)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A callback that named no intent of ours (or not the one it claimed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnmatchedCallback {
    pub id: i64,
    pub provider: String,
    pub kind: String,
    pub outcome: String,
    /// The provider's ids for it (never the raw body).
    pub dedupe_key: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// The callbacks the reconciliation report lists, reviewed or not: one
/// that named no intent of ours or not the one it claimed, a word the
/// engine cannot read about an intent that had already ended or a failure
/// about one that had ended paid (`contradicts_final`), a success
/// for another amount than its intent's, and a C2B confirmation refused at
/// the door (from outside the allow-list, or unreadable), whose money has
/// no other way into the books.
const LISTED: &str =
    "(outcome IN ('unknown_token', 'unknown_request', 'wrong_provider', 'unmatched', 'reference_mismatch',
                       'contradicts_final', 'amount_mismatch')
           OR (kind = 'c2b-confirmation' AND outcome IN ('refused_source', 'malformed')))";

/// C2B payments accepted at validation (the row `c`) that were asked about
/// `$2` times with no answer and no confirmation.
const UNCONFIRMED: &str = "EXISTS (SELECT 1 FROM c2b_status_queries q
                WHERE q.inbox_id = c.id AND q.answered_at IS NULL AND q.attempts >= $2
                  AND NOT EXISTS (SELECT 1 FROM c2b_payments p WHERE p.trans_id = q.trans_id))";

/// Callbacks a person should look at and has not reviewed yet
/// ([`LISTED`]), and the C2B payments accepted at validation that were asked
/// about `c2b_max_asks` times with no answer and no confirmation (outcome
/// `unconfirmed`). The first part reads the partial index
/// `callback_inbox_to_review_idx`, whose predicate is this one.
pub async fn unmatched_callbacks(
    pool: &PgPool,
    limit: i64,
    c2b_max_asks: i32,
) -> Result<Vec<UnmatchedCallback>, sqlx::Error> {
    let query = format!(
        "SELECT id, provider, kind, outcome, dedupe_key, received_at FROM (
             SELECT id, provider, kind, outcome, dedupe_key, received_at FROM callback_inbox
             WHERE reviewed_at IS NULL
      AND {LISTED}
             UNION ALL
             SELECT c.id, c.provider, c.kind, 'unconfirmed', 'c2b:' || q.trans_id, c.received_at
             FROM c2b_status_queries q JOIN callback_inbox c ON c.id = q.inbox_id
             WHERE c.reviewed_at IS NULL AND q.answered_at IS NULL AND q.attempts >= $2
               AND NOT EXISTS (SELECT 1 FROM c2b_payments p WHERE p.trans_id = q.trans_id)
         ) AS lines
         ORDER BY id LIMIT $1"
    );
    sqlx::query_as(&query)
        .bind(limit)
        .bind(c2b_max_asks)
        .fetch_all(pool)
        .await
}

/// A callback as a person reviewing it sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallbackReview {
    pub id: i64,
    pub provider: String,
    pub kind: String,
    pub outcome: Option<String>,
    pub received_at: DateTime<Utc>,
    /// Whether the reconciliation report lists it (reviewed or not).
    pub listed: bool,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub reviewed_by: Option<String>,
    pub review_note: Option<String>,
}

/// Callback `id`, locked for its review; `c2b_max_asks` as the report
/// counts unconfirmed C2B payments.
pub async fn callback_for_review(
    conn: &mut PgConnection,
    id: i64,
    c2b_max_asks: i32,
) -> Result<Option<CallbackReview>, sqlx::Error> {
    let query = format!(
        "SELECT id, provider, kind, outcome, received_at, coalesce({LISTED} OR {UNCONFIRMED}, false) AS listed,
                reviewed_at, reviewed_by, review_note
         FROM callback_inbox c WHERE id = $1 FOR UPDATE"
    );
    sqlx::query_as(&query)
        .bind(id)
        .bind(c2b_max_asks)
        .fetch_optional(conn)
        .await
}

/// Records that `by` reviewed callback `id`, with `note`; when, by `now`
/// (the engine's clock) or the database's.
pub async fn review_callback(
    conn: &mut PgConnection,
    id: i64,
    by: &str,
    note: &str,
    now: Option<DateTime<Utc>>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE callback_inbox SET reviewed_at = coalesce($4, now()), reviewed_by = $2, review_note = $3
         WHERE id = $1 RETURNING reviewed_at",
    )
    .bind(id)
    .bind(by)
    .bind(note)
    .bind(now)
    .fetch_one(conn)
    .await
}

pub async fn store_reconciliation(
    pool: &PgPool,
    day: NaiveDate,
    generated_at: DateTime<Utc>,
    ok: bool,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reconciliation_reports (day, generated_at, ok, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (day) DO UPDATE SET generated_at = excluded.generated_at, ok = excluded.ok, body = excluded.body",
    )
    .bind(day)
    .bind(generated_at)
    .bind(ok)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// When the newest day's kept reconciliation report was made, and whether
/// it was ok; `None` before the first.
pub async fn newest_reconciliation(pool: &PgPool) -> Result<Option<(DateTime<Utc>, bool)>, sqlx::Error> {
    sqlx::query_as("SELECT generated_at, ok FROM reconciliation_reports ORDER BY day DESC LIMIT 1")
        .fetch_optional(pool)
        .await
}

pub async fn reconciliation(pool: &PgPool, day: NaiveDate) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT body FROM reconciliation_reports WHERE day = $1")
        .bind(day)
        .fetch_optional(pool)
        .await
}

/// Records every account's balance as of `at` (once per account and
/// instant). Accounts with running totals are read from them; the others
/// are summed from their posted entries. Returns the rows written.
pub async fn snapshot_balances(pool: &PgPool, at: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO balance_snapshots (taken_at, account_id, posted, pending_out, pending_in)
         SELECT $1, a.id,
                CASE WHEN a.non_negative THEN a.posted
                     ELSE coalesce(s.credit_sum, 0) * CASE WHEN a.normal_side = 'credit' THEN 1 ELSE -1 END END,
                CASE WHEN a.non_negative THEN a.pending_out ELSE 0 END,
                CASE WHEN a.non_negative THEN a.pending_in ELSE 0 END
         FROM ledger_accounts a
         LEFT JOIN (SELECT e.account_id, sum(e.amount) AS credit_sum
                    FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
                    WHERE t.state = 'posted'
                    GROUP BY e.account_id) s ON s.account_id = a.id
         ON CONFLICT DO NOTHING",
    )
    .bind(at)
    .execute(pool)
    .await?;
    Ok(written.rows_affected())
}

/// One snapshot of one account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotRow {
    pub taken_at: DateTime<Utc>,
    pub currency: String,
    pub posted: Decimal,
    pub pending_out: Decimal,
    pub pending_in: Decimal,
}

/// A party's balance history in `currency`, newest first.
pub async fn party_history(
    pool: &PgPool,
    owner: &str,
    party: &str,
    currency: Option<&str>,
    limit: i64,
) -> Result<Vec<SnapshotRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.taken_at, a.currency, s.posted, s.pending_out, s.pending_in
         FROM balance_snapshots s JOIN ledger_accounts a ON a.id = s.account_id
         WHERE a.owner = $1 AND a.kind = 'party' AND a.ref = $2 AND ($3::text IS NULL OR a.currency = $3)
         ORDER BY s.taken_at DESC, a.currency
         LIMIT $4",
    )
    .bind(owner)
    .bind(party)
    .bind(currency)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Writes `month`'s tax report: completed payouts in `[from, to)` per
/// owner, party and currency whose total is above that currency's
/// threshold. Replaces an earlier run of the same month.
pub async fn write_tax_report(
    pool: &PgPool,
    month: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    thresholds: &[(String, Decimal)],
) -> Result<u64, sqlx::Error> {
    let currencies: Vec<&str> = thresholds.iter().map(|t| t.0.as_str()).collect();
    let amounts: Vec<Decimal> = thresholds.iter().map(|t| t.1).collect();
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM tax_report_lines WHERE month = $1")
        .bind(month)
        .execute(&mut *tx)
        .await?;
    let written = sqlx::query(
        "INSERT INTO tax_report_lines (month, owner, party_id, currency, payouts, total)
         SELECT $1, i.owner, i.party_id, i.currency, count(*), sum(i.amount)
         FROM intents i
         JOIN unnest($4::text[], $5::numeric[]) AS t (currency, threshold) ON t.currency = i.currency
         WHERE i.kind = 'payout' AND i.state = 'completed' AND i.final_at >= $2 AND i.final_at < $3
         GROUP BY i.owner, i.party_id, i.currency, t.threshold
         HAVING sum(i.amount) > t.threshold",
    )
    .bind(month)
    .bind(from)
    .bind(to)
    .bind(&currencies)
    .bind(&amounts)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(written.rows_affected())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaxLine {
    pub party_id: String,
    pub currency: String,
    pub payouts: i64,
    pub total: Decimal,
}

pub async fn tax_report(pool: &PgPool, owner: &str, month: &str) -> Result<Vec<TaxLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT party_id, currency, payouts, total FROM tax_report_lines
         WHERE month = $1 AND owner = $2 ORDER BY currency, total DESC, party_id",
    )
    .bind(month)
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// How one provider did with one kind of intent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderStats {
    pub provider: String,
    pub kind: String,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub expired: i64,
    pub unresolved: i64,
    pub open: i64,
    /// Median seconds from creation to a final state.
    pub median_final_s: Option<f64>,
}

/// Per provider and kind, intents created in `[from, to)` of `owner`.
pub async fn provider_stats(
    pool: &PgPool,
    owner: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ProviderStats>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, kind, count(*) AS total,
                count(*) FILTER (WHERE state = 'completed') AS completed,
                count(*) FILTER (WHERE state = 'failed') AS failed,
                count(*) FILTER (WHERE state = 'expired') AS expired,
                count(*) FILTER (WHERE state = 'unresolved') AS unresolved,
                count(*) FILTER (WHERE final_at IS NULL AND state <> 'unresolved') AS open,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM final_at - created_at))
                    FILTER (WHERE final_at IS NOT NULL) AS median_final_s
         FROM intents
         WHERE owner = $1 AND kind IN ('payout', 'collection', 'reversal') AND created_at >= $2 AND created_at < $3
         GROUP BY provider, kind
         ORDER BY provider, kind",
    )
    .bind(owner)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Deletes processed callbacks received before `before` (a batch at a
/// time), except those C2B payments point at (their evidence).
pub async fn purge_inbox(pool: &PgPool, before: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    // What the reconciliation report lists and nobody has reviewed is kept
    // whatever its age: it may be the only record of money in a float.
    let query = format!(
        "DELETE FROM callback_inbox WHERE id IN (
             SELECT c.id FROM callback_inbox c
             WHERE c.outcome IS NOT NULL AND c.received_at < $1
               AND NOT EXISTS (SELECT 1 FROM c2b_payments p WHERE p.inbox_id = c.id)
               AND NOT (c.reviewed_at IS NULL
                        AND ({LISTED}
                             OR EXISTS (SELECT 1 FROM c2b_status_queries q
                                        WHERE q.inbox_id = c.id AND q.answered_at IS NULL
                                          AND NOT EXISTS (SELECT 1 FROM c2b_payments p
                                                          WHERE p.trans_id = q.trans_id))))
             ORDER BY c.id LIMIT $2)"
    );
    let deleted = sqlx::query(&query).bind(before).bind(batch).execute(pool).await?;
    Ok(deleted.rows_affected())
}

/// Intents by the scenario their metadata (or their parent's) names, kind
/// and state: `(scenario, kind, state, count)`.
pub async fn intents_by_scenario(pool: &PgPool) -> Result<Vec<(String, String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(i.metadata->>'scenario', p.metadata->>'scenario') AS scenario, i.kind, i.state, count(*)
         FROM intents i LEFT JOIN intents p ON p.id = i.parent_id
         WHERE coalesce(i.metadata->>'scenario', p.metadata->>'scenario') IS NOT NULL
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
}

/// Per scenario: `(scenario, settled, total)`, settled meaning final or
/// `unresolved` (waiting on a person, not on Tuma).
pub async fn scenario_progress(pool: &PgPool) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT metadata->>'scenario', count(*) FILTER (WHERE final_at IS NOT NULL OR state = 'unresolved'), count(*)
         FROM intents WHERE metadata ? 'scenario' GROUP BY 1",
    )
    .fetch_all(pool)
    .await
}

/// Fee revenue posted, per fee account and currency.
pub async fn fees_collected(pool: &PgPool) -> Result<Vec<(String, String, Decimal)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.ref, a.currency, sum(e.amount)
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
         JOIN ledger_transfers t ON t.id = e.transfer_id
         WHERE a.kind = 'fees' AND t.state = 'posted'
         GROUP BY a.ref, a.currency ORDER BY a.currency, a.ref",
    )
    .fetch_all(pool)
    .await
}

/// The sum of every posted entry per currency: zero when the books balance.
pub async fn ledger_sums(pool: &PgPool) -> Result<Vec<(String, Decimal)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.currency, sum(e.amount) FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
         WHERE t.state = 'posted' GROUP BY e.currency ORDER BY e.currency",
    )
    .fetch_all(pool)
    .await
}

/// Applied events with `cause` (e.g. `poll`: outcomes learned by asking).
pub async fn applied_events(pool: &PgPool, cause: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM intent_events WHERE cause = $1 AND outcome = 'applied'")
        .bind(cause)
        .fetch_one(pool)
        .await
}

/// Callbacks dropped as duplicates.
pub async fn duplicate_callbacks(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM callback_inbox WHERE outcome = 'duplicate'")
        .fetch_one(pool)
        .await
}

/// Pending payouts held back by the float gate right now.
pub async fn held_for_float(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM intents WHERE kind = 'payout' AND state = 'pending' AND hold_reason IS NOT NULL",
    )
    .fetch_one(pool)
    .await
}

/// When `provider` last reported its balances.
pub async fn last_float_report(pool: &PgPool, provider: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(reported_at) FROM provider_floats WHERE provider = $1")
        .bind(provider)
        .fetch_one(pool)
        .await
}

/// Per scenario, seconds from its first intent's creation to its last
/// intent's final state.
pub async fn scenario_spans(pool: &PgPool) -> Result<Vec<(String, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(i.metadata->>'scenario', p.metadata->>'scenario'),
                extract(epoch FROM max(coalesce(i.final_at, i.updated_at)) - min(i.created_at))::float8
         FROM intents i LEFT JOIN intents p ON p.id = i.parent_id
         WHERE coalesce(i.metadata->>'scenario', p.metadata->>'scenario') IS NOT NULL
         GROUP BY 1",
    )
    .fetch_all(pool)
    .await
}

/// Intents not final yet, by kind, state and provider (for /metrics).
pub async fn open_intents(
    pool: &PgPool,
    now: Option<DateTime<Utc>>,
) -> Result<Vec<(String, String, String, i64, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, state, provider, count(*),
                greatest(extract(epoch FROM coalesce($1, now()) - min(updated_at))::float8, 0)
         FROM intents WHERE final_at IS NULL GROUP BY 1, 2, 3",
    )
    .bind(now)
    .fetch_all(pool)
    .await
}

/// `(completed, p50, p99)`: how many intents of `kind` completed, and the
/// 50th and 99th percentiles of their creation-to-final seconds.
pub async fn completion_stats(pool: &PgPool, kind: &str) -> Result<(i64, Option<f64>, Option<f64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM final_at - created_at)),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM final_at - created_at))
         FROM intents WHERE kind = $1 AND state = 'completed'",
    )
    .bind(kind)
    .fetch_one(pool)
    .await
}

/// Every intent of `scenario`: `(id, provider, kind, state)` (why an
/// `unresolved` one waits is [`scenario_unresolved`]'s).
pub async fn scenario_intents(
    pool: &PgPool,
    scenario: &str,
) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id::text, provider, kind, state FROM intents WHERE metadata->>'scenario' = $1")
        .bind(scenario)
        .fetch_all(pool)
        .await
}

/// An `unresolved` intent, as a person settling it from the provider's
/// statement needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnresolvedIntent {
    pub id: uuid::Uuid,
    pub provider: String,
    pub kind: String,
    pub msisdn: String,
    pub amount: rust_decimal::Decimal,
    pub currency: String,
    pub provider_ref: Option<String>,
    /// The event that left it unresolved.
    pub reason: Option<String>,
}

/// `scenario`'s `unresolved` intents.
pub async fn scenario_unresolved(pool: &PgPool, scenario: &str) -> Result<Vec<UnresolvedIntent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.id, i.provider, i.kind, i.msisdn, i.amount, i.currency, i.provider_ref,
                (SELECT e.event FROM intent_events e WHERE e.intent_id = i.id AND e.outcome = 'applied'
                 ORDER BY e.id DESC LIMIT 1) AS reason
         FROM intents i WHERE i.metadata->>'scenario' = $1 AND i.state = 'unresolved' ORDER BY i.id",
    )
    .bind(scenario)
    .fetch_all(pool)
    .await
}

/// The largest groups of `scenario`'s intents still in flight (not final,
/// not `unresolved`): `(provider, kind, state, count)`.
pub async fn scenario_open(
    pool: &PgPool,
    scenario: &str,
    limit: i64,
) -> Result<Vec<(String, String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, kind, state, count(*) FROM intents
         WHERE metadata->>'scenario' = $1 AND final_at IS NULL AND state <> 'unresolved'
         GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT $2",
    )
    .bind(scenario)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Terminates every server connection to this connection's database but
/// itself; how many it cut.
pub async fn terminate_other_connections(connection: &mut sqlx::PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
         FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(connection)
    .await
}
