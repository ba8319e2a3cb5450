//! Reading Airtel's callbacks. One kind, `payment`, carries the results of
//! both USSD push collections and disbursements:
//! `{"transaction":{"id","message","status_code","airtel_money_id"},"hash"?}`.
//!
//! With callback authentication on (`airtel.callback_hash_key` set), a body
//! without a `hash`, or with one that does not verify, is refused. The hash
//! is checked over the exact text of the `transaction` object as received
//! ([`super::wire::callback_hash`]; which string Airtel signs is
//! unverified). Without it a callback is unauthenticated, and applied on
//! the strength of the app's callback token in its URL alone (derived
//! from the client secret): set the key wherever the portal offers
//! callback authentication.

use super::codes;
use super::wire::{callback_hash_matches, CallbackBody, CallbackTransaction};
use crate::providers::adapter::CallbackReport;
use crate::providers::Outcome;

/// The only callback kind: `/callbacks/airtel/payment/{token}`.
pub const KIND: &str = "payment";

/// Reads a callback body of `kind`, checking its hash when `hash_key` is
/// not empty.
pub fn parse(kind: &str, body: &[u8], hash_key: &str) -> Result<CallbackReport, String> {
    if kind != KIND {
        return Err(format!("Airtel sends no {kind:?} callbacks"));
    }
    let raw: CallbackBody<'_> = serde_json::from_slice(body).map_err(|e| format!("unreadable Airtel callback: {e}"))?;
    if !hash_key.is_empty() {
        let hash = raw
            .hash
            .as_deref()
            .ok_or("Airtel callback without a hash, but callback authentication is on")?;
        if !callback_hash_matches(hash_key, raw.transaction.get(), hash) {
            return Err("Airtel callback hash does not verify".into());
        }
    }
    let transaction: CallbackTransaction = serde_json::from_str(raw.transaction.get())
        .map_err(|e| format!("unreadable Airtel callback transaction: {e}"))?;
    let status = transaction
        .status_code
        .as_deref()
        .ok_or("Airtel callback without a status_code")?;
    let outcome = codes::transaction_status(status, None, transaction.message.text());
    let airtel_money_id = transaction.airtel_money_id.text();
    let receipt = match outcome {
        Outcome::Succeeded => transaction.airtel_money_id.0.clone(),
        Outcome::Failed { .. } | Outcome::Pending | Outcome::Unknown { .. } => None,
    };
    Ok(CallbackReport {
        dedupe_key: format!("{}:{airtel_money_id}:{status}", transaction.id.text()),
        request_id: transaction.id.0,
        outcome,
        receipt,
        amount: None,
        currency: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::airtel::wire::callback_hash;

    #[test]
    fn a_success_callback_names_our_id_and_the_receipt() {
        let body = br#"{"transaction":{"id":"pay-1","message":"Paid UGX 5,000","status_code":"TS","airtel_money_id":"MP210603.1234.L06941"}}"#;
        let report = parse(KIND, body, "").unwrap();
        assert_eq!(report.request_id.as_deref(), Some("pay-1"));
        assert_eq!(report.outcome, Outcome::Succeeded);
        assert_eq!(report.receipt.as_deref(), Some("MP210603.1234.L06941"));
        assert_eq!(report.dedupe_key, "pay-1:MP210603.1234.L06941:TS");
    }

    #[test]
    fn a_failure_callback_fails_without_a_receipt_and_differs_from_a_success() {
        let body =
            br#"{"transaction":{"id":12345,"message":"Incorrect Pin","status_code":"TF","airtel_money_id":null}}"#;
        let report = parse(KIND, body, "").unwrap();
        assert_eq!(report.request_id.as_deref(), Some("12345"), "numeric ids read as text");
        assert!(matches!(report.outcome, Outcome::Failed { ref reason, .. } if reason == "Incorrect Pin"));
        assert_eq!(report.receipt, None);
        assert_eq!(report.dedupe_key, "12345::TF");
    }

    #[test]
    fn with_a_hash_key_only_a_verifying_hash_is_accepted() {
        let transaction = r#"{"id":"pay-2", "message":"ok","status_code":"TS","airtel_money_id":"MP9"}"#;
        let hash = callback_hash("portal-key", transaction);
        let signed = format!(r#"{{"transaction":{transaction},"hash":"{hash}"}}"#);
        assert!(parse(KIND, signed.as_bytes(), "portal-key").is_ok());
        assert!(
            parse(KIND, signed.as_bytes(), "").is_ok(),
            "no key: the hash is not checked"
        );
        assert!(parse(KIND, signed.as_bytes(), "another-key").is_err());
        let tampered = signed.replace("\"TS\"", "\"TF\"");
        assert!(parse(KIND, tampered.as_bytes(), "portal-key").is_err());
        let unsigned = format!(r#"{{"transaction":{transaction}}}"#);
        assert!(parse(KIND, unsigned.as_bytes(), "portal-key").is_err());
    }

    #[test]
    fn unreadable_bodies_and_other_kinds_are_refused() {
        assert!(parse(KIND, b"not json", "").is_err());
        assert!(
            parse(KIND, br#"{"transaction":{"id":"x"}}"#, "").is_err(),
            "no status_code"
        );
        assert!(parse("refund", br#"{"transaction":{"id":"x","status_code":"TS"}}"#, "").is_err());
    }
}
