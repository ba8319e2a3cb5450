//! MTN MoMo Open API: disbursement transfers (payouts) and collection
//! requests to pay, their status queries, the callbacks MTN sends to the
//! per-request `X-Callback-Url`, and the disbursement account balance. Only
//! this module knows MTN's wire format.
//!
//! The money rules, in MTN's terms:
//! - our request id is the `X-Reference-Id` (MTN wants a UUID; ours are
//!   UUIDs), chosen and committed before the call; MTN answers a repeat with
//!   409 `RESOURCE_ALREADY_EXIST`, which is [`CallError::Duplicate`];
//! - a 202 only means "accepted": the outcome comes by callback or status
//!   query, so `send` answers [`Outcome::Pending`];
//! - the callback body is the status body, which does not carry the
//!   reference id, so the client sends our request id as `externalId` too,
//!   and the callback parser reads it from there.
//!
//! [`Outcome::Pending`]: super::Outcome::Pending

pub mod client;
pub mod codes;
pub mod wire;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use secrecy::SecretString;
use serde::Deserialize;

use super::adapter::{Adapter, CallError, CallbackReport, Direction, Reply, Request};

pub use client::{Balance, MtnClient};

/// The callback kinds, as the `{kind}` of `/callbacks/mtn/{kind}/{token}`:
/// a disbursement transfer's result, a collection request to pay's result.
pub const CALLBACK_KINDS: &[&str] = &["transfer", "requesttopay"];

/// `[mtn]` in the configuration. Secrets are never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtnConfig {
    /// MTN's base URL (`https://proxy.momoapi.mtn.com`, the sandbox's
    /// `https://sandbox.momodeveloper.mtn.com`), or the simulator's.
    pub base_url: String,
    /// The API user (a UUID), issued by MTN's partner portal (production)
    /// or provisioned with `POST /v1_0/apiuser` (sandbox).
    pub api_user: String,
    /// The API user's key.
    pub api_key: SecretString,
    /// The Collection product's subscription key (`Ocp-Apim-Subscription-Key`
    /// on request-to-pay calls and collection tokens).
    pub collection_subscription_key: SecretString,
    /// The Disbursement product's subscription key (transfers, balance and
    /// disbursement tokens).
    pub disbursement_subscription_key: SecretString,
    /// Country (ISO 3166 alpha-2) → `X-Target-Environment` (`mtnuganda`,
    /// `mtnrwanda`, … or `sandbox`). A request for a country missing here is
    /// a configuration error.
    #[serde(default = "default_target_environments")]
    pub target_environments: BTreeMap<String, String>,
    /// This engine's public base URL, where callbacks come in. Its host must
    /// be the API user's `providerCallbackHost`, or MTN refuses every request
    /// with `INVALID_CALLBACK_URL_HOST`.
    pub callback_base_url: String,
    /// How long one MTN request may take before it is ambiguous, ms.
    pub request_timeout_ms: u64,
    /// Refresh a product's access token this long before it expires, s.
    pub token_refresh_margin_s: u64,
}

/// The markets Tuma serves through MTN: Uganda and Rwanda.
fn default_target_environments() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("UG".to_owned(), "mtnuganda".to_owned()),
        ("RW".to_owned(), "mtnrwanda".to_owned()),
    ])
}

impl Adapter for MtnClient {
    fn name(&self) -> &'static str {
        "mtn"
    }

    fn send(&self, request: Request) -> BoxFuture<'_, Result<Reply, CallError>> {
        Box::pin(self.submit(request))
    }

    fn status(
        &self,
        direction: Direction,
        request_id: String,
        country: String,
        _currency: String,
    ) -> BoxFuture<'_, Result<Reply, CallError>> {
        Box::pin(async move { self.query(direction, &request_id, &country).await })
    }

    fn callback_kinds(&self) -> &'static [&'static str] {
        CALLBACK_KINDS
    }

    fn parse_callback(&self, kind: &str, body: &[u8]) -> Result<CallbackReport, String> {
        parse_callback(kind, body)
    }

    /// MTN takes a callback URL per request (`X-Callback-Url`), carrying the
    /// intent's own token: there is no app-wide one.
    fn app_callback_token(&self) -> Option<String> {
        None
    }
}

/// Reads a callback: MTN sends the status body of the transfer or request
/// to pay. Two deliveries with the same reference and status are the same
/// callback; a later different status is not.
pub fn parse_callback(kind: &str, body: &[u8]) -> Result<CallbackReport, String> {
    if !CALLBACK_KINDS.contains(&kind) {
        return Err(format!("unknown MTN callback kind {kind:?}"));
    }
    let status: wire::TransactionStatus =
        serde_json::from_slice(body).map_err(|e| format!("unreadable MTN {kind} callback: {e}"))?;
    let outcome = codes::status(&status.status, status.reason.as_ref());
    let receipt = match outcome {
        super::Outcome::Succeeded => status.financial_transaction_id.clone().map(|id| id.0),
        _ => None,
    };
    let request_id = status.request_id();
    let identity = request_id
        .clone()
        .or_else(|| status.financial_transaction_id.as_ref().map(|id| id.0.clone()))
        .ok_or_else(|| format!("MTN {kind} callback names no referenceId, externalId or financialTransactionId"))?;
    Ok(CallbackReport {
        request_id,
        outcome,
        receipt,
        dedupe_key: format!("{kind}:{identity}:{}", status.status.trim().to_ascii_uppercase()),
        amount: status.amount.as_ref().and_then(|amount| amount.0.trim().parse().ok()),
        currency: status.currency.clone().filter(|c| !c.trim().is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outcome;

    #[test]
    fn a_successful_transfer_callback_names_our_request_and_the_receipt() {
        let body = br#"{"financialTransactionId":1927264368,"externalId":"0192f0c4-7b1e-7cc0-9d3e-5a1b2c3d4e5f",
            "amount":"500","currency":"UGX","payee":{"partyIdType":"MSISDN","partyId":"256772123456"},
            "payerMessage":"Salary","payeeNote":"Salary","status":"SUCCESSFUL"}"#;
        let report = parse_callback("transfer", body).unwrap();
        assert_eq!(
            report.request_id.as_deref(),
            Some("0192f0c4-7b1e-7cc0-9d3e-5a1b2c3d4e5f")
        );
        assert_eq!(report.outcome, Outcome::Succeeded);
        assert_eq!(
            report.receipt.as_deref(),
            Some("1927264368"),
            "a numeric id is kept as text"
        );
        assert_eq!(
            report.dedupe_key,
            "transfer:0192f0c4-7b1e-7cc0-9d3e-5a1b2c3d4e5f:SUCCESSFUL"
        );
    }

    #[test]
    fn a_later_status_of_the_same_request_is_not_a_duplicate_callback() {
        let pending = br#"{"externalId":"r-1","status":"PENDING","payer":{"partyIdType":"MSISDN","partyId":"1"}}"#;
        let failed = br#"{"externalId":"r-1","status":"FAILED","reason":"APPROVAL_REJECTED"}"#;
        let first = parse_callback("requesttopay", pending).unwrap();
        let second = parse_callback("requesttopay", failed).unwrap();
        assert_eq!(first.outcome, Outcome::Pending);
        assert!(matches!(second.outcome, Outcome::Failed { ref code, .. } if code == "APPROVAL_REJECTED"));
        assert_eq!(second.receipt, None);
        assert_ne!(first.dedupe_key, second.dedupe_key);
    }

    #[test]
    fn a_callback_of_an_unknown_kind_or_without_any_id_is_unreadable() {
        let body = br#"{"status":"SUCCESSFUL"}"#;
        assert!(parse_callback("deposit", br#"{"externalId":"r","status":"SUCCESSFUL"}"#).is_err());
        assert!(parse_callback("transfer", body).is_err());
        assert!(parse_callback("transfer", b"<html>").is_err());
    }
}
