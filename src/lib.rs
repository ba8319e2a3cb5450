//! Tuma: a durable payout and collection engine for mobile money.
//!
//! Product services hand Tuma money-movement intents; Tuma carries each one,
//! as a persisted state machine advanced by a Postgres-backed job runner, to
//! a final and provable outcome. See `ARCHITECTURE.md` for the map.

pub mod api;
pub mod app;
pub mod chaos;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod domain;
pub mod jobs;
pub mod ledger;
pub mod loans;
pub mod notify;
pub mod policy;
pub mod providers;
pub mod reconcile;
pub mod reports;
pub mod resolve;
pub mod reversals;
pub mod runner;
pub mod simulator;
pub mod store;
pub mod telemetry;
pub mod workflow;
