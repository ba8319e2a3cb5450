//! The intents API, the transition engine and the workflow files, through
//! the same router and engine `tuma serve` runs, on a fresh database each.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod conformance;
mod console;
mod daraja_wire;
mod idempotency;
mod intents;
mod loans;
mod money;
mod mpesa;
mod operations;
mod plans;
mod providers;
mod transitions;
mod validation;
mod webhooks;
mod wire_airtel;
mod wire_mtn;
mod wire_tigo_tz;
mod wire_vodacom_tz;
mod workflow_files;
