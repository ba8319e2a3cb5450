//! The job runner against real Postgres: each test gets its own database.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod cron;
mod delivery;
mod failures;
mod operations;
