//! The plans of the hot statements that find rows by key. A connection
//! keeps a statement's generic plan until the next ANALYZE of its tables,
//! and a generic plan made while a table was small finds rows by scanning
//! it, as every later call then does, however large the table has grown.
//! These statements are written so that their plan goes by the index
//! whatever the statistics said when it was made.

use crate::common::app::{spawn_app, TestApp};

/// The generic plan of `sql` (all parameters NULL), made now, on tables as
/// they are: on a fresh database, empty and never analyzed.
async fn generic_plan(app: &TestApp, sql: &str, params: usize) -> String {
    let mut conn = app.db.pool.acquire().await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(&format!("PREPARE plan_under_test AS {sql}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let nulls = vec!["NULL"; params].join(", ");
    let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE plan_under_test({nulls})"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DEALLOCATE plan_under_test")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("RESET plan_cache_mode").execute(&mut *conn).await.unwrap();
    lines.join("\n")
}

#[tokio::test]
async fn a_group_stores_its_responses_by_key_and_address_on_a_plan_made_on_an_empty_table() {
    let app = spawn_app().await;
    let plan = generic_plan(&app, tuma::store::idempotency::STORE_RESPONSES, 4).await;
    assert!(!plan.contains("Seq Scan on idempotency_keys"), "{plan}");
    assert!(plan.contains("Index Scan using idempotency_keys_pkey"), "{plan}");
    assert!(plan.contains("Tid Scan on idempotency_keys"), "{plan}");
}

#[tokio::test]
async fn a_transfer_finds_its_accounts_and_checks_its_keys_by_index_on_a_plan_made_on_empty_tables() {
    let app = spawn_app().await;
    let plan = generic_plan(&app, tuma::ledger::WRITE_TRANSFERS, 21).await;
    // The accounts' lookup (aliased `account` in the statement) and the
    // replayed-key check. (The totals' lock and update still join
    // `ledger_accounts` by id: a plan made on an empty table scans it, a
    // table of one row per party and currency.)
    assert!(!plan.contains("Seq Scan on ledger_accounts account"), "{plan}");
    assert!(
        plan.contains("Index Scan using ledger_accounts_owner_kind_ref_currency_key on ledger_accounts account"),
        "{plan}"
    );
    assert!(!plan.contains("Seq Scan on ledger_transfers"), "{plan}");
    assert!(
        plan.contains("using ledger_transfers_key_key on ledger_transfers"),
        "{plan}"
    );
}

/// How many parameters `sql` takes (its highest `$N`).
fn parameters(sql: &str) -> usize {
    let mut most = 0;
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        most = most.max(digits.parse().unwrap_or(0));
    }
    most
}

#[tokio::test]
async fn intents_read_locked_and_moved_in_batches_are_found_by_key_on_a_plan_made_on_an_empty_table() {
    let app = spawn_app().await;
    let moves = tuma::store::intents::move_and_record_many_sql();
    for (name, sql, index) in [
        ("reads", tuma::store::intents::GET_MANY.as_str(), "intents_pkey"),
        ("locks", tuma::store::intents::LOCK_MANY, "intents_pkey"),
        (
            "callback locks",
            tuma::store::intents::LOCK_FOR_CALLBACKS.as_str(),
            "intents_pkey",
        ),
        ("moves", moves.as_str(), "intents_pkey"),
    ] {
        let plan = generic_plan(&app, sql, parameters(sql)).await;
        assert!(!plan.contains("Seq Scan on intents"), "{name}: {plan}");
        assert!(plan.contains(&format!("using {index} on intents")), "{name}: {plan}");
    }
    let callbacks = generic_plan(
        &app,
        &tuma::store::intents::LOCK_FOR_CALLBACKS,
        parameters(&tuma::store::intents::LOCK_FOR_CALLBACKS),
    )
    .await;
    assert!(
        callbacks.contains("using intents_callback_token_idx on intents"),
        "{callbacks}"
    );
    assert!(
        callbacks.contains("using intents_provider_ref_idx on intents"),
        "{callbacks}"
    );
    // The moves update each row by the address the key's lookup found, and
    // withdraw the timers left by key, not by reading every waiting job.
    let moves = generic_plan(&app, &moves, parameters(&moves)).await;
    assert!(moves.contains("Tid Scan on intents i"), "{moves}");
    let single = tuma::store::intents::move_and_record_sql();
    let single = generic_plan(&app, &single, parameters(&single)).await;
    for plan in [&moves, &single] {
        assert!(plan.contains("using tuma_jobs_unique_live_idx on tuma_jobs"), "{plan}");
        assert!(plan.contains("Tid Scan on tuma_jobs j"), "{plan}");
        assert!(!plan.contains("tuma_jobs_claim_idx"), "{plan}");
        assert!(!plan.contains("Seq Scan on tuma_jobs"), "{plan}");
    }
}

#[tokio::test]
async fn a_worker_completes_its_jobs_by_primary_key_on_a_plan_made_on_an_empty_table() {
    let app = spawn_app().await;
    let sql = tuma::runner::store::COMPLETE_HELD;
    let plan = generic_plan(&app, sql, parameters(sql)).await;
    assert!(!plan.contains("Seq Scan on tuma_jobs"), "{plan}");
    assert!(!plan.contains("tuma_jobs_lease_idx"), "{plan}");
    assert!(!plan.contains("tuma_jobs_owner_idx"), "{plan}");
    assert!(plan.contains("on tuma_jobs_pkey"), "{plan}");
}
