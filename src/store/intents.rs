//! SQL for intents and their events.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::runner::store::{bind_jobs, jobs_cte};
use crate::runner::NewJob;

/// An intent row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntentRow {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub state_version: i32,
    pub owner: String,
    pub created_by: String,
    pub party_id: String,
    pub amount: Decimal,
    pub currency: String,
    pub msisdn: String,
    pub provider: String,
    pub reference: String,
    pub metadata: Value,
    pub provider_ref: Option<String>,
    pub callback_token: Option<String>,
    pub receipt: Option<String>,
    pub hold_reason: Option<String>,
    /// The fee breakdown (a `policy::fees::Breakdown`), for payouts.
    pub fees: Option<Value>,
    pub quote_id: Option<Uuid>,
    /// What the payout counts for against USD limits.
    pub usd_equivalent: Option<Decimal>,
    pub approvals_required: i16,
    pub campaign_id: Option<String>,
    pub batch_id: Option<Uuid>,
    /// The intent that started this one (a loan, for its disbursement and
    /// its reminders).
    pub parent_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub final_at: Option<DateTime<Utc>>,
    /// When an action first began sending this intent's request
    /// ([`start_request`]): a collection's prompt may be on the payer's
    /// phone from then on.
    #[sqlx(default)]
    pub request_started_at: Option<DateTime<Utc>>,
}

/// One row of an intent's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub event: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub cause: String,
    pub actor: String,
    pub provider_ref: Option<String>,
    pub at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, kind, state, state_version, owner, created_by, party_id, amount, currency, msisdn, \
     provider, reference, metadata, provider_ref, callback_token, receipt, hold_reason, fees, quote_id, usd_equivalent, \
     approvals_required, campaign_id, batch_id, parent_id, created_at, updated_at, final_at, request_started_at";

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM intents WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The intents `ids` (those that exist), in no particular order.
pub async fn get_many(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<IntentRow>, sqlx::Error> {
    sqlx::query_as(&GET_MANY).bind(ids).fetch_all(pool).await
}

/// The statement of [`get_many`] (public for the tests of its plan).
///
/// Each intent is looked up on its own (`LIMIT 1` keeps the lateral
/// subquery from being merged into a join), so the primary key is the way
/// whatever the table's statistics: `id = ANY($1)` on a generic plan made
/// while the table was small scanned it whole on every call until the
/// next ANALYZE.
#[doc(hidden)]
pub static GET_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT i.* FROM unnest($1::uuid[]) AS wanted(id)
         CROSS JOIN LATERAL (SELECT {COLUMNS} FROM intents WHERE id = wanted.id LIMIT 1) AS i"
    )
});

/// An intent as its owner may see it; `None` for another owner's intent, so
/// that ids cannot be probed across owners.
pub async fn get_owned(pool: &PgPool, owner: &str, kind: &str, id: Uuid) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM intents WHERE id = $1 AND owner = $2 AND kind = $3"
    ))
    .bind(id)
    .bind(owner)
    .bind(kind)
    .fetch_optional(pool)
    .await
}

/// What an event row records.
pub struct NewEvent<'a> {
    pub intent_id: Uuid,
    pub event: &'a str,
    pub from_state: Option<&'a str>,
    pub to_state: Option<&'a str>,
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    pub cause: &'a str,
    pub actor: &'a str,
    pub provider_ref: Option<&'a str>,
    pub payload_digest: Option<&'a str>,
}

/// The event's insert, its columns bound as `$1`–`$11` (`$11` the clock's
/// time, else the database's), taking one row from `source`.
fn event_insert(source: &str) -> String {
    format!(
        "INSERT INTO intent_events (intent_id, event, from_state, to_state, outcome, reason, cause, actor,
                                    provider_ref, payload_digest, at)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, now()) FROM {source}
         RETURNING id"
    )
}

/// The active webhook endpoints of the owner bound as `$12`, by id.
const ENDPOINTS: &str =
    "ARRAY(SELECT e.id FROM webhook_endpoints e WHERE e.owner = $12 AND e.disabled_at IS NULL ORDER BY e.id)";

type EventQuery<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

/// Binds `$1`–`$12` of [`event_insert`] and [`ENDPOINTS`].
fn bind_event<'q, O>(
    query: EventQuery<'q, O>,
    event: &'q NewEvent<'q>,
    deliver_to: Option<&'q str>,
    now: Option<DateTime<Utc>>,
) -> EventQuery<'q, O> {
    query
        .bind(event.intent_id)
        .bind(event.event)
        .bind(event.from_state)
        .bind(event.to_state)
        .bind(event.outcome)
        .bind(event.reason.map(|r| super::storable(r).into_owned()))
        .bind(event.cause)
        .bind(event.actor)
        .bind(event.provider_ref.map(|r| super::storable(r).into_owned()))
        .bind(event.payload_digest)
        .bind(now)
        .bind(deliver_to)
}

/// Records `event` and, in the same round trip, reads the active webhook
/// endpoints of `deliver_to` (the owner who must hear of it; `None` for an
/// event nobody is told of). Returns the event's id and the endpoints' ids.
pub async fn insert_event(
    conn: &mut PgConnection,
    event: &NewEvent<'_>,
    deliver_to: Option<&str>,
    now: Option<DateTime<Utc>>,
) -> Result<(i64, Vec<Uuid>), sqlx::Error> {
    let sql = format!(
        "WITH inserted AS ({}) SELECT id, {ENDPOINTS} FROM inserted",
        event_insert("(VALUES (1)) AS one")
    );
    bind_event(sqlx::query_as(&sql), event, deliver_to, now)
        .fetch_one(conn)
        .await
}

/// Inserts `row`, its first event (`event`, told to `deliver_to`) and the
/// `jobs` its first state asks for (notifying their queues with `notify`)
/// with one statement, stamping them with the clock's time (`now`, else
/// the database's). Returns that time, the event's id and the endpoints to
/// deliver it to.
pub async fn insert_intent(
    conn: &mut PgConnection,
    row: &IntentRow,
    event: &NewEvent<'_>,
    deliver_to: Option<&str>,
    now: Option<DateTime<Utc>>,
    jobs: &[NewJob],
    notify: bool,
) -> Result<(DateTime<Utc>, i64, Vec<Uuid>), sqlx::Error> {
    let sql = format!(
        "WITH created AS (
             INSERT INTO intents (id, kind, state, state_version, owner, created_by, party_id, amount, currency,
                                  msisdn, provider, reference, metadata, provider_ref, created_at, updated_at,
                                  final_at, callback_token, fees, quote_id, usd_equivalent, approvals_required,
                                  campaign_id, batch_id, parent_id)
             VALUES ($13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26,
                     coalesce($11, now()), coalesce($11, now()), NULL, $27, $28, $29, $30, $31, $32, $33, $34)
             RETURNING created_at
         ), inserted AS ({}), {}
         SELECT created.created_at, inserted.id, {ENDPOINTS}, (SELECT count(*) FROM jobs_notified)
         FROM created, inserted",
        event_insert("created"),
        jobs_cte(35, "$11", "true")
    );
    let query = bind_event(sqlx::query_as(&sql), event, deliver_to, now)
        .bind(row.id)
        .bind(&row.kind)
        .bind(&row.state)
        .bind(row.state_version)
        .bind(&row.owner)
        .bind(&row.created_by)
        .bind(&row.party_id)
        .bind(row.amount)
        .bind(&row.currency)
        .bind(&row.msisdn)
        .bind(&row.provider)
        .bind(&row.reference)
        .bind(&row.metadata)
        .bind(&row.provider_ref)
        .bind(&row.callback_token)
        .bind(&row.fees)
        .bind(row.quote_id)
        .bind(row.usd_equivalent)
        .bind(row.approvals_required)
        .bind(&row.campaign_id)
        .bind(row.batch_id)
        .bind(row.parent_id);
    let (created_at, event_id, endpoints, _notified): (DateTime<Utc>, i64, Vec<Uuid>, i64) =
        bind_jobs(query, jobs, notify).fetch_one(conn).await?;
    Ok((created_at, event_id, endpoints))
}

/// The event a new intent takes at once (before anyone could see it in its
/// first state), written with its creation: `from_state` is its
/// workflow's initial state; the row's `state` is where the event took it.
#[derive(Debug, Clone, Copy)]
pub struct FirstMove<'a> {
    pub event: &'a str,
    pub from_state: &'a str,
    pub cause: &'a str,
    pub actor: &'a str,
}

/// What [`insert_intents`] wrote for one row.
#[derive(Debug, Clone)]
pub struct Inserted {
    pub created_at: DateTime<Utc>,
    /// Its `create` event.
    pub event_id: i64,
    /// Its [`FirstMove`]'s event, if it took one.
    pub moved_event_id: Option<i64>,
    /// Its owner's webhook endpoints.
    pub endpoints: Vec<Uuid>,
}

/// [`insert_intent`] for many new rows with one statement: each row, its
/// `create` event (caused by `cause`, by its creator, told to its owner),
/// the event of its [`FirstMove`] if `moves` gives it one (the row is then
/// written in the state that move reached, at version 1, and its `create`
/// event goes to the move's `from_state`), and `jobs` (all the rows' jobs
/// for the states they are written in). One answer per row, in order.
pub async fn insert_intents(
    conn: &mut PgConnection,
    rows: &[IntentRow],
    moves: &[Option<FirstMove<'_>>],
    cause: &str,
    now: Option<DateTime<Utc>>,
    jobs: &[NewJob],
    notify: bool,
) -> Result<Vec<Inserted>, sqlx::Error> {
    assert_eq!(rows.len(), moves.len(), "a first move, or none, per row");
    // `(SELECT $N)` around the first array hides the batch's size from the
    // planner, so one generic plan serves every batch; with the size in
    // sight, every call looked cheaper planned afresh, and was.
    let sql = format!(
        "WITH input AS (
             SELECT * FROM unnest((SELECT $3::uuid[]), $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                  $9::numeric[], $10::text[], $11::text[], $12::text[], $13::text[], $14::jsonb[],
                                  $15::text[], $16::jsonb[], $17::uuid[], $18::numeric[], $19::int2[], $20::text[],
                                  $21::uuid[], $22::uuid[], $23::text[], $24::text[], $25::text[],
                                  $26::text[], $27::text[]) WITH ORDINALITY
                 AS i(id, kind, state, owner, created_by, party_id, amount, currency, msisdn, provider, reference,
                      metadata, callback_token, fees, quote_id, usd_equivalent, approvals_required, campaign_id,
                      batch_id, parent_id, first_state, move_event, move_cause, move_actor, provider_ref, n)
         ), created AS (
             INSERT INTO intents (id, kind, state, state_version, owner, created_by, party_id, amount, currency,
                                  msisdn, provider, reference, metadata, provider_ref, created_at, updated_at,
                                  final_at, callback_token, fees, quote_id, usd_equivalent, approvals_required,
                                  campaign_id, batch_id, parent_id)
             SELECT id, kind, state, CASE WHEN move_event IS NULL THEN 0 ELSE 1 END, owner, created_by, party_id,
                    amount, currency, msisdn, provider, reference, metadata, provider_ref, coalesce($1, now()),
                    coalesce($1, now()), NULL, callback_token, fees, quote_id, usd_equivalent, approvals_required,
                    campaign_id, batch_id, parent_id
             FROM input ORDER BY n
             RETURNING id, created_at
         ), inserted AS (
             INSERT INTO intent_events (intent_id, event, from_state, to_state, outcome, reason, cause, actor,
                                        provider_ref, payload_digest, at)
             SELECT i.id, e.event, e.from_state, e.to_state, 'applied', NULL, e.cause, e.actor, NULL, NULL,
                    coalesce($1, now())
             FROM created c JOIN input i ON i.id = c.id
             CROSS JOIN LATERAL (VALUES (1, 'create', NULL, i.first_state, $2, i.created_by),
                                        (2, i.move_event, i.first_state, i.state, i.move_cause, i.move_actor))
                 AS e(step, event, from_state, to_state, cause, actor)
             WHERE e.event IS NOT NULL
             ORDER BY i.n, e.step
             RETURNING id, intent_id, from_state IS NULL AS creation
         ), {}
         SELECT c.created_at,
                (SELECT e.id FROM inserted e WHERE e.intent_id = i.id AND e.creation),
                (SELECT e.id FROM inserted e WHERE e.intent_id = i.id AND NOT e.creation),
                ARRAY(SELECT w.id FROM webhook_endpoints w WHERE w.owner = i.owner AND w.disabled_at IS NULL ORDER BY w.id),
                (SELECT count(*) FROM jobs_notified)
         FROM input i JOIN created c ON c.id = i.id
         ORDER BY i.n",
        jobs_cte(28, "$1", "true")
    );
    let column = |f: fn(&IntentRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let query = sqlx::query_as(&sql)
        .bind(now)
        .bind(cause)
        .bind(rows.iter().map(|r| r.id).collect::<Vec<Uuid>>())
        .bind(column(|r| &r.kind))
        .bind(column(|r| &r.state))
        .bind(column(|r| &r.owner))
        .bind(column(|r| &r.created_by))
        .bind(column(|r| &r.party_id))
        .bind(rows.iter().map(|r| r.amount).collect::<Vec<Decimal>>())
        .bind(column(|r| &r.currency))
        .bind(column(|r| &r.msisdn))
        .bind(column(|r| &r.provider))
        .bind(column(|r| &r.reference))
        .bind(rows.iter().map(|r| &r.metadata).collect::<Vec<&Value>>())
        .bind(
            rows.iter()
                .map(|r| r.callback_token.as_deref())
                .collect::<Vec<Option<&str>>>(),
        )
        .bind(rows.iter().map(|r| r.fees.as_ref()).collect::<Vec<Option<&Value>>>())
        .bind(rows.iter().map(|r| r.quote_id).collect::<Vec<Option<Uuid>>>())
        .bind(rows.iter().map(|r| r.usd_equivalent).collect::<Vec<Option<Decimal>>>())
        .bind(rows.iter().map(|r| r.approvals_required).collect::<Vec<i16>>())
        .bind(
            rows.iter()
                .map(|r| r.campaign_id.as_deref())
                .collect::<Vec<Option<&str>>>(),
        )
        .bind(rows.iter().map(|r| r.batch_id).collect::<Vec<Option<Uuid>>>())
        .bind(rows.iter().map(|r| r.parent_id).collect::<Vec<Option<Uuid>>>())
        .bind(
            rows.iter()
                .zip(moves)
                .map(|(r, m)| m.as_ref().map_or(r.state.as_str(), |m| m.from_state))
                .collect::<Vec<&str>>(),
        )
        .bind(moves.iter().map(|m| m.map(|m| m.event)).collect::<Vec<_>>())
        .bind(moves.iter().map(|m| m.map(|m| m.cause)).collect::<Vec<_>>())
        .bind(moves.iter().map(|m| m.map(|m| m.actor)).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.provider_ref.as_deref())
                .collect::<Vec<Option<&str>>>(),
        );
    // Per row: created_at, its create event, its first move's event, its
    // owner's endpoints, and the jobs-notified count.
    type Written = (DateTime<Utc>, i64, Option<i64>, Vec<Uuid>, i64);
    let written: Vec<Written> = bind_jobs(query, jobs, notify).fetch_all(conn).await?;
    if written.len() != rows.len() {
        return Err(sqlx::Error::Protocol(format!(
            "{} of {} intents were written",
            written.len(),
            rows.len()
        )));
    }
    Ok(written
        .into_iter()
        .map(|(created_at, event_id, moved_event_id, endpoints, _)| Inserted {
            created_at,
            event_id,
            moved_event_id,
            endpoints,
        })
        .collect())
}

/// What a transition writes besides the intent and its event.
pub struct Entering<'a> {
    /// Unique keys of the timers of the state left, withdrawn if they have
    /// not fired.
    pub withdraw: &'a [String],
    /// The jobs the new state asks for.
    pub jobs: &'a [NewJob],
    /// Whether to notify their queues.
    pub notify: bool,
}

/// The statement of [`move_and_record`] (public for the tests of its plan).
#[doc(hidden)]
pub fn move_and_record_sql() -> String {
    format!(
        "WITH moved AS (
             UPDATE intents
             SET state = $4, state_version = state_version + 1, updated_at = coalesce($11, now()),
                 final_at = CASE WHEN $14 THEN coalesce($11, now()) ELSE NULL END
             WHERE id = $1 AND state = $3 AND state_version = $13
             RETURNING state_version
         ), inserted AS ({}), withdrawn AS (
             DELETE FROM tuma_jobs j
             USING unnest($15::text[]) AS w(unique_key)
             CROSS JOIN LATERAL (SELECT ctid AS at, state FROM tuma_jobs
                                 WHERE unique_key = w.unique_key AND state IN ('available', 'running')
                                 LIMIT 1) AS timer
             WHERE j.ctid = timer.at AND timer.state = 'available' AND EXISTS (SELECT 1 FROM moved)
         ), {}
         SELECT moved.state_version, inserted.id, {ENDPOINTS}, (SELECT count(*) FROM jobs_notified)
         FROM moved, inserted",
        event_insert("moved"),
        jobs_cte(16, "$11", "EXISTS (SELECT 1 FROM moved)")
    )
}

/// Moves the event's intent from its `from_state` at `version` to its
/// `to_state` (`is_final` says whether that ends it), records the event,
/// withdraws the timers and enqueues the jobs of `entering`, all in the
/// same statement; nothing is written when someone else moved the intent
/// first (`None`). Returns the new version, the event's id and the
/// endpoints of `deliver_to` to tell.
pub async fn move_and_record(
    conn: &mut PgConnection,
    event: &NewEvent<'_>,
    version: i32,
    is_final: bool,
    deliver_to: Option<&str>,
    now: Option<DateTime<Utc>>,
    entering: &Entering<'_>,
) -> Result<Option<(i32, i64, Vec<Uuid>)>, sqlx::Error> {
    let sql = move_and_record_sql();
    let query = bind_event(sqlx::query_as(&sql), event, deliver_to, now)
        .bind(version)
        .bind(is_final)
        .bind(entering.withdraw);
    let moved: Option<(i32, i64, Vec<Uuid>, i64)> = bind_jobs(query, entering.jobs, entering.notify)
        .fetch_optional(conn)
        .await?;
    Ok(moved.map(|(version, event_id, endpoints, _notified)| (version, event_id, endpoints)))
}

/// One intent's move for [`move_and_record_many`].
pub struct Move<'a> {
    /// The event, applied (`from_state` and `to_state` set).
    pub event: NewEvent<'a>,
    /// The version the move expects.
    pub version: i32,
    pub is_final: bool,
    /// The owner to tell, whose endpoints are read.
    pub deliver_to: &'a str,
    /// Unique keys of the timers of the state left.
    pub withdraw: &'a [String],
    /// The provider's receipt, recorded on the intent with the move unless
    /// one is recorded already.
    pub receipt: Option<&'a str>,
}

/// The statement of [`move_and_record_many`] (public for the tests of its
/// plan). `(SELECT $2)`: one generic plan for every batch, as in
/// [`insert_intents`].
#[doc(hidden)]
pub fn move_and_record_many_sql() -> String {
    format!(
        "WITH wanted AS (
             SELECT * FROM unnest((SELECT $2::uuid[]), $3::text[], $4::text[], $5::int4[], $6::bool[], $7::text[],
                                  $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                                  $14::text[])
                 WITH ORDINALITY
                 AS m(id, from_state, to_state, version, is_final, event, reason, cause, actor, provider_ref,
                      payload_digest, deliver_to, receipt, n)
         ), moved AS (
             UPDATE intents i
             SET state = m.to_state, state_version = i.state_version + 1, updated_at = coalesce($1, now()),
                 final_at = CASE WHEN m.is_final THEN coalesce($1, now()) ELSE NULL END,
                 receipt = coalesce(i.receipt, m.receipt)
             FROM wanted m
             CROSS JOIN LATERAL (SELECT ctid AS at FROM intents
                                 WHERE id = m.id AND state = m.from_state AND state_version = m.version
                                 LIMIT 1) AS found
             WHERE i.ctid = found.at
             RETURNING i.id, i.state_version
         ), inserted AS (
             INSERT INTO intent_events (intent_id, event, from_state, to_state, outcome, reason, cause, actor,
                                        provider_ref, payload_digest, at)
             SELECT m.id, m.event, m.from_state, m.to_state, 'applied', m.reason, m.cause, m.actor, m.provider_ref,
                    m.payload_digest, coalesce($1, now())
             FROM wanted m JOIN moved ON moved.id = m.id
             ORDER BY m.n
             RETURNING id, intent_id
         ), withdrawn AS (
             DELETE FROM tuma_jobs j
             USING unnest($15::text[], $16::uuid[]) AS w(unique_key, intent_id)
             CROSS JOIN LATERAL (SELECT ctid AS at, state FROM tuma_jobs
                                 WHERE unique_key = w.unique_key AND state IN ('available', 'running')
                                 LIMIT 1) AS timer
             WHERE j.ctid = timer.at AND timer.state = 'available' AND w.intent_id IN (SELECT id FROM moved)
         ), {}
         SELECT m.n, moved.state_version, inserted.id,
                ARRAY(SELECT e.id FROM webhook_endpoints e
                      WHERE e.owner = m.deliver_to AND e.disabled_at IS NULL ORDER BY e.id),
                (SELECT count(*) FROM jobs_notified)
         FROM wanted m JOIN moved ON moved.id = m.id JOIN inserted ON inserted.intent_id = m.id
         ORDER BY m.n",
        jobs_cte(17, "$1", "(input.args->>'intent_id')::uuid IN (SELECT id FROM moved)")
    )
}

/// [`move_and_record`] for many intents with one statement, each by its own
/// compare-and-set: `jobs` are all the new states' jobs, each naming its
/// intent in its arguments (`intent_id`), and only those of intents that
/// moved are enqueued; only their timers are withdrawn. Returns, per move
/// in order, what [`move_and_record`] returns (`None`: someone else moved
/// that intent first, and nothing of it was written).
///
/// Every intent must be locked by this transaction (or created by it): the
/// compare-and-set is a lateral lookup of the primary key (which `LIMIT 1`
/// keeps from being merged into a join) for the row in the state and
/// version expected, and the update then finds the row by the address
/// (`ctid`) the lookup gave. As a join on `id`, the plan followed the
/// statistics, and a generic plan made while the table was small scanned
/// `intents` whole on every batch, until the next ANALYZE. A concurrent
/// update would change the address, turning a move that should succeed
/// into a `None` (its caller retries it, needlessly; nothing is written
/// over the other update). The timers left are withdrawn the same way,
/// by key and then address: a plan made while the jobs table was small
/// read the whole index of waiting jobs instead. (The key's lookup names
/// the states of the index of live keys, so that it is the index taken;
/// `LIMIT` keeps the test for a waiting job outside it.)
pub async fn move_and_record_many(
    conn: &mut PgConnection,
    moves: &[Move<'_>],
    now: Option<DateTime<Utc>>,
    jobs: &[NewJob],
    notify: bool,
) -> Result<Vec<Option<(i32, i64, Vec<Uuid>)>>, sqlx::Error> {
    // The UPDATE moves each intent once, but its event would be written
    // once per row naming it: callers move each intent at most once per call.
    let ids: std::collections::HashSet<Uuid> = moves.iter().map(|m| m.event.intent_id).collect();
    assert_eq!(ids.len(), moves.len(), "an intent moved twice in one call");
    let sql = move_and_record_many_sql();
    let events: Vec<&NewEvent<'_>> = moves.iter().map(|m| &m.event).collect();
    let withdraw: Vec<(&str, Uuid)> = moves
        .iter()
        .flat_map(|m| m.withdraw.iter().map(move |key| (key.as_str(), m.event.intent_id)))
        .collect();
    let query = sqlx::query_as(&sql)
        .bind(now)
        .bind(events.iter().map(|e| e.intent_id).collect::<Vec<Uuid>>())
        .bind(events.iter().map(|e| e.from_state).collect::<Vec<Option<&str>>>())
        .bind(events.iter().map(|e| e.to_state).collect::<Vec<Option<&str>>>())
        .bind(moves.iter().map(|m| m.version).collect::<Vec<i32>>())
        .bind(moves.iter().map(|m| m.is_final).collect::<Vec<bool>>())
        .bind(events.iter().map(|e| e.event).collect::<Vec<&str>>())
        .bind(
            events
                .iter()
                .map(|e| e.reason.map(|r| super::storable(r).into_owned()))
                .collect::<Vec<Option<String>>>(),
        )
        .bind(events.iter().map(|e| e.cause).collect::<Vec<&str>>())
        .bind(events.iter().map(|e| e.actor).collect::<Vec<&str>>())
        .bind(
            events
                .iter()
                .map(|e| e.provider_ref.map(|r| super::storable(r).into_owned()))
                .collect::<Vec<Option<String>>>(),
        )
        .bind(events.iter().map(|e| e.payload_digest).collect::<Vec<Option<&str>>>())
        .bind(moves.iter().map(|m| m.deliver_to).collect::<Vec<&str>>())
        .bind(
            moves
                .iter()
                .map(|m| m.receipt.map(|r| super::storable(r).into_owned()))
                .collect::<Vec<Option<String>>>(),
        )
        .bind(withdraw.iter().map(|w| w.0).collect::<Vec<&str>>())
        .bind(withdraw.iter().map(|w| w.1).collect::<Vec<Uuid>>());
    let rows: Vec<(i64, i32, i64, Vec<Uuid>, i64)> = bind_jobs(query, jobs, notify).fetch_all(conn).await?;
    let mut answers = vec![None; moves.len()];
    for (n, version, event_id, endpoints, _notified) in rows {
        answers[n as usize - 1] = Some((version, event_id, endpoints));
    }
    Ok(answers)
}

pub async fn events(pool: &PgPool, intent_id: Uuid) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event, from_state, to_state, outcome, reason, cause, actor, provider_ref, at
         FROM intent_events WHERE intent_id = $1 ORDER BY id",
    )
    .bind(intent_id)
    .fetch_all(pool)
    .await
}

/// Filters of an intent listing; all optional.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub state: Option<String>,
    pub party_id: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    /// Only intents older than this id (the cursor: ids sort by creation).
    pub before: Option<Uuid>,
}

/// One page of an owner's intents of a kind, newest first.
pub async fn list(
    pool: &PgPool,
    owner: &str,
    kind: &str,
    filter: &ListFilter,
    limit: i64,
) -> Result<Vec<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM intents
         WHERE owner = $1 AND kind = $2
           AND ($3::text IS NULL OR state = $3)
           AND ($4::text IS NULL OR party_id = $4)
           AND ($5::timestamptz IS NULL OR created_at >= $5)
           AND ($6::timestamptz IS NULL OR created_at < $6)
           AND ($7::uuid IS NULL OR id < $7)
         ORDER BY id DESC
         LIMIT $8"
    ))
    .bind(owner)
    .bind(kind)
    .bind(&filter.state)
    .bind(&filter.party_id)
    .bind(filter.created_from)
    .bind(filter.created_to)
    .bind(filter.before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The intent a callback token belongs to, locked until the caller's
/// transaction ends: callbacks of one intent are processed one at a time,
/// so a duplicate always sees its twin's outcome.
pub async fn by_callback_token(conn: &mut PgConnection, token: &str) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM intents WHERE callback_token = $1 FOR UPDATE"
    ))
    .bind(token)
    .fetch_optional(conn)
    .await
}

/// The intents of callback `tokens` and of `(provider, request id)` pairs
/// (those that exist), locked like [`by_callback_token`], in id order so
/// that batches locking overlapping sets queue rather than deadlock.
pub async fn lock_for_callbacks(
    conn: &mut PgConnection,
    tokens: &[&str],
    requests: &[(&str, &str)],
) -> Result<Vec<IntentRow>, sqlx::Error> {
    let providers: Vec<&str> = requests.iter().map(|(p, _)| *p).collect();
    let refs: Vec<&str> = requests.iter().map(|(_, r)| *r).collect();
    sqlx::query_as(&LOCK_FOR_CALLBACKS)
        .bind(tokens)
        .bind(providers)
        .bind(refs)
        .fetch_all(conn)
        .await
}

/// Locks the intents `ids` (those that exist) in id order, one by one by
/// primary key (a lateral lookup ending in `LIMIT 1`, whatever the table's
/// statistics), for [`move_and_record_many`], which needs its intents
/// locked.
pub async fn lock_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query(LOCK_MANY).bind(ids).execute(conn).await?;
    Ok(())
}

/// The statement of [`lock_many`] (public for the tests of its plan).
#[doc(hidden)]
pub const LOCK_MANY: &str =
    "SELECT i.id FROM (SELECT DISTINCT id FROM unnest($1::uuid[]) AS wanted(id) ORDER BY id) AS w
     CROSS JOIN LATERAL (SELECT id FROM intents WHERE id = w.id LIMIT 1 FOR UPDATE) AS i";

/// The statement of [`lock_for_callbacks`] (public for the tests of its
/// plan).
///
/// Every lookup is lateral and ends in `LIMIT 1` (a token names one intent,
/// a provider's request id one request), so each goes by its index
/// whatever the statistics said when the plan was made: as joins, a
/// generic plan made while the table was small scanned `intents` whole on
/// every batch. The ids are sorted before the rows are locked, one by one
/// in that order.
#[doc(hidden)]
pub static LOCK_FOR_CALLBACKS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT i.* FROM (
             SELECT t.id FROM unnest($1::text[]) AS k(token)
             CROSS JOIN LATERAL (SELECT id FROM intents WHERE callback_token = k.token LIMIT 1) AS t
             UNION
             SELECT r.id FROM unnest($2::text[], $3::text[]) AS p(provider, provider_ref)
             CROSS JOIN LATERAL (SELECT id FROM intents
                                 WHERE provider = p.provider AND provider_ref = p.provider_ref LIMIT 1) AS r
             ORDER BY 1
         ) AS found
         CROSS JOIN LATERAL (SELECT {COLUMNS} FROM intents WHERE id = found.id LIMIT 1 FOR UPDATE) AS i
         ORDER BY i.id"
    )
});

/// The intent whose request toward `provider` has id `provider_ref`, locked
/// like [`by_callback_token`]: how callbacks sent to an app-wide URL (set
/// once in the provider's portal) find their intent.
pub async fn by_provider_ref(
    conn: &mut PgConnection,
    provider: &str,
    provider_ref: &str,
) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM intents WHERE provider = $1 AND provider_ref = $2 FOR UPDATE"
    ))
    .bind(provider)
    .bind(provider_ref)
    .fetch_optional(conn)
    .await
}

/// Records the provider-side request id, unless one is already recorded;
/// returns the id in force (ours or the one recorded before).
pub async fn assign_provider_ref(conn: &mut PgConnection, id: Uuid, provider_ref: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE intents SET provider_ref = coalesce(provider_ref, $2) WHERE id = $1 RETURNING provider_ref",
    )
    .bind(id)
    .bind(super::storable(provider_ref))
    .fetch_one(conn)
    .await
}

/// [`assign_provider_ref`] for many intents in one autocommitted
/// statement: each intent's request id as recorded (those that exist).
pub async fn assign_provider_refs(
    pool: &PgPool,
    wanted: &[(Uuid, String)],
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let ids: Vec<Uuid> = wanted.iter().map(|(id, _)| *id).collect();
    let refs: Vec<String> = wanted.iter().map(|(_, r)| super::storable(r).into_owned()).collect();
    sqlx::query_as(
        "UPDATE intents i SET provider_ref = coalesce(i.provider_ref, w.provider_ref)
         FROM (SELECT DISTINCT ON (id) id, provider_ref
               FROM unnest($1::uuid[], $2::text[]) AS u(id, provider_ref) ORDER BY id) AS w
         WHERE i.id = w.id
         RETURNING i.id, i.provider_ref",
    )
    .bind(ids)
    .bind(refs)
    .fetch_all(pool)
    .await
}

/// What [`start_request`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Marked now: this is the first attempt to send.
    First,
    /// An earlier attempt marked it: that request may have been sent.
    Again,
    /// The intent is no longer in the state the action was for (a
    /// collection cancelled meanwhile): send nothing.
    Moved,
}

/// Marks that intent `id`'s request is about to be sent (see the
/// `request_started_at` migration), if the intent is still in `state`.
/// The row's lock orders this against a cancel, which locks the row and
/// refuses once the mark is there: a request is sent only for an intent
/// nobody cancelled, and an intent is cancelled only before its request.
pub async fn start_request(conn: &mut PgConnection, id: Uuid, state: &str) -> Result<Start, sqlx::Error> {
    let (there, marked): (bool, bool) = sqlx::query_as(
        "WITH there AS (
             SELECT id FROM intents WHERE id = $1 AND state = $2 FOR UPDATE
         ), marked AS (
             UPDATE intents i SET request_started_at = now()
             FROM there WHERE i.id = there.id AND i.request_started_at IS NULL
             RETURNING i.id
         )
         SELECT EXISTS (SELECT 1 FROM there), EXISTS (SELECT 1 FROM marked)",
    )
    .bind(id)
    .bind(state)
    .fetch_one(conn)
    .await?;
    Ok(match (there, marked) {
        (false, _) => Start::Moved,
        (true, true) => Start::First,
        (true, false) => Start::Again,
    })
}

/// Reads intent `id` and locks it until the transaction ends.
pub async fn get_for_update(conn: &mut PgConnection, id: Uuid) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM intents WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Clears the mark of [`start_request`]: the provider refused the request
/// before processing it, so a later attempt may send it.
pub async fn unstart_request(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE intents SET request_started_at = NULL WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_receipt(conn: &mut PgConnection, id: Uuid, receipt: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE intents SET receipt = coalesce(receipt, $2) WHERE id = $1")
        .bind(id)
        .bind(super::storable(receipt))
        .execute(conn)
        .await?;
    Ok(())
}

/// [`set_receipt`] for many intents in one statement.
pub async fn set_receipts(conn: &mut PgConnection, receipts: &[(Uuid, &str)]) -> Result<(), sqlx::Error> {
    if receipts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = receipts.iter().map(|(id, _)| *id).collect();
    let values: Vec<String> = receipts.iter().map(|(_, r)| super::storable(r).into_owned()).collect();
    sqlx::query(
        "UPDATE intents i SET receipt = coalesce(i.receipt, r.receipt)
         FROM unnest($1::uuid[], $2::text[]) AS r(id, receipt)
         WHERE i.id = r.id",
    )
    .bind(ids)
    .bind(values)
    .execute(conn)
    .await?;
    Ok(())
}

/// The completed payout or collection of `owner` with provider receipt
/// `receipt`, locked.
pub async fn lock_completed_by_receipt(
    conn: &mut PgConnection,
    owner: &str,
    receipt: &str,
) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM intents
         WHERE receipt = $1 AND owner = $2 AND state = 'completed' AND kind IN ('payout', 'collection')
         FOR UPDATE"
    ))
    .bind(receipt)
    .bind(owner)
    .fetch_optional(conn)
    .await
}

/// Whether a reversal of `receipt` exists that did not fail.
pub async fn live_reversal_exists(conn: &mut PgConnection, receipt: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM intents WHERE kind = 'reversal' AND reference = $1 AND state <> 'failed')",
    )
    .bind(receipt)
    .fetch_one(conn)
    .await
}

/// Whether `receipt` is already another intent's (than `except`) or a
/// recorded C2B payment's.
pub async fn receipt_in_use(conn: &mut PgConnection, receipt: &str, except: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM intents WHERE receipt = $1 AND id <> $2)
             OR EXISTS (SELECT 1 FROM c2b_payments WHERE trans_id = $1)",
    )
    .bind(receipt)
    .bind(except)
    .fetch_one(conn)
    .await
}
