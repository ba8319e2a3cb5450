//! Tigo Pesa Tanzania ("Mixx by Yas"): push bill-pay collections,
//! disbursements, the status enquiry and the callback that carries results.
//! Only this module knows Tigo's wire format.
//!
//! Little of Tigo's API is public: there is no developer portal, URLs are
//! partner-specific paths on a gateway host, and callbacks are configured by
//! Tigo. The contract below marks what two independent public clients agree
//! on **[x2]** and what is Tuma's **assumption** (the simulated contract,
//! to be confirmed against Tigo's integration documents before money moves):
//!
//! | Step | Contract |
//! |---|---|
//! | Token | `POST {token_path}`, form `username`, `password`, `grant_type=password` → `{access_token, token_type, expires_in}` **[x2]**; refused: 400 `{error: "invalid_grant"}` (OAuth, assumed) |
//! | Collection | `POST {push_path}`, headers `Authorization: bearer <token>`, `Username`, `Password`; JSON `{CustomerMSISDN, BillerMSISDN, Amount (integer TZS), Remarks, ReferenceID}` → `{ResponseCode, ResponseStatus, ResponseDescription, ReferenceID, Message}`; `BILLER-18-0000-S` = prompt sent **[x2]** |
//! | Callback | POST to the URL given to Tigo: `{Status (bool), Description, MFSTransactionID (absent on failure), ReferenceID, Amount (string)}` **[x2]**; answered `{ResponseCode: "BILLER-30-0000-S" \| "BILLER-30-3030-E", ResponseStatus, ResponseDescription}` (codes from several SDKs; one public client answers `BILLER-18-…` instead, unverified which Tigo checks) |
//! | Payout | `POST {disbursement_path}` with bearer token, JSON `{reference_id, msisdn, amount, remarks}` → `{response_code, status, description, mfs_transaction_id?}` (**assumed**: Tigo's real A2W is legacy XML; [`client::TigoClient::disburse`] is the one place to swap it in). `status` true with an id = paid in the call; then the callback too |
//! | Status | `GET {status_path}/{ReferenceID}` → `{ReferenceID, Status: SUCCESS\|FAILED\|PENDING\|EXPIRED, MFSTransactionID?, ResponseCode, Description}`; unknown id → 404 `SIM-NOT-FOUND` (**assumed**) |
//! | Codes | [`codes`]: the public push codes, plus `SIM-…` codes of the simulated contract |
//!
//! What public sources say of the real payout, for when this adapter moves
//! to it (two clients agree on the command and its fields; the status
//! meanings come from one SDK's table): an XML `COMMAND` posted as
//! `application/xml` with `TYPE` `REQMFCI`, `REFERENCEID`, `MSISDN` (our
//! disbursement account), `PIN`, `MSISDN1` (the payee), `AMOUNT`,
//! `SENDERNAME`, `LANGUAGE1` and `BRAND_ID`, answered by a `COMMAND` of
//! `TYPE`, `REFERENCEID`, `TXNID`, `TXNSTATUS` and `MESSAGE`. `TXNSTATUS`
//! `200` (or `0`) is paid; `100` is a generic error after which the money
//! may have moved (hold it and ask); `00317` (payee barred), `00410` and
//! `60018` (over the limit), `00031`, `00042` and the other `600xx` limits
//! are refusals; `02117` (our account barred), `00026` (our PIN expired)
//! and `60074` (no transfer profile) are our setup's.
//!
//! Money rules: our request id is the `ReferenceID` (the idempotency key);
//! a duplicate refusal is [`CallError::Duplicate`]; a timeout or a 5xx after
//! sending is [`CallError::Ambiguous`]; a 401 refreshes the token and
//! retries once; 429 and an explicit overload code are [`CallError::Busy`].

pub mod client;
pub mod codes;
pub mod wire;

use futures::future::BoxFuture;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::adapter::{derive_token, Adapter, CallError, CallbackReport, Direction, Reply, Request};
pub use client::TigoClient;

/// The one callback kind: Tigo reports collections and disbursements with
/// the same body to the same configured URL.
pub const CALLBACK_KIND: &str = "payment";

/// `[tigo_tz]` in the configuration. Secrets are never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TigoConfig {
    /// The gateway Tigo assigned (scheme, host, port), or the simulator's.
    pub base_url: String,
    /// Token URL path (password grant), e.g. `/token`.
    pub token_path: String,
    /// Push bill-pay URL path, e.g. `/API/BillerPayment/BillerPay`.
    pub push_path: String,
    /// Disbursement URL path (Tuma's assumed JSON contract).
    pub disbursement_path: String,
    /// Status enquiry URL path; the ReferenceID is appended as a segment.
    pub status_path: String,
    /// The API user name Tigo issued; also sent as the `Username` header.
    pub username: String,
    /// The API password Tigo issued; also sent as the `Password` header,
    /// and the secret the callback token is derived from.
    pub password: SecretString,
    /// The business account's MSISDN (`BillerMSISDN`), digits only.
    pub biller_msisdn: String,
    /// This engine's public base URL; give Tigo
    /// `{callback_base_url}/callbacks/tigo_tz/payment/{token}`
    /// as the callback URL ([`TigoConfig::callback_url`]).
    pub callback_base_url: String,
    /// How long one Tigo request may take before it is ambiguous.
    pub request_timeout_ms: u64,
    /// Refresh the access token this long before it expires.
    pub token_refresh_margin_s: u64,
}

impl TigoConfig {
    /// The callback URL to give Tigo: the token is derived from the
    /// password, so it is stable and as unguessable as the password.
    pub fn callback_url(&self) -> String {
        format!(
            "{}/callbacks/tigo_tz/{CALLBACK_KIND}/{}",
            self.callback_base_url.trim_end_matches('/'),
            callback_token(self)
        )
    }
}

/// The app-wide callback token (Tigo's callback URL is configured once).
pub fn callback_token(config: &TigoConfig) -> String {
    derive_token("tigo_tz", config.password.expose_secret())
}

/// Tigo carries TZS in whole shillings only.
const CURRENCY: &str = "TZS";

/// The request's amount as whole TZS; a fraction is refused, never rounded
/// (intents are checked for whole units when created, so this is a bug).
fn whole_amount(amount: Decimal) -> Result<u64, CallError> {
    match amount.to_u64() {
        Some(whole) if amount.fract().is_zero() && whole > 0 => Ok(whole),
        _ => Err(CallError::Rejected {
            code: "TUMA-AMOUNT".into(),
            message: "Tigo takes positive whole TZS amounts only".into(),
        }),
    }
}

/// Checks what Tigo can carry; the number stays in full E.164 digits.
fn check(request: &Request) -> Result<u64, CallError> {
    if request.currency != CURRENCY {
        return Err(CallError::Rejected {
            code: "TUMA-CURRENCY".into(),
            message: format!("Tigo Pesa carries TZS only, not {}", request.currency),
        });
    }
    let msisdn = &request.msisdn;
    if !(msisdn.len() == 12 && msisdn.starts_with("255") && msisdn.bytes().all(|b| b.is_ascii_digit())) {
        return Err(CallError::Rejected {
            code: "TUMA-MSISDN".into(),
            message: "not a Tanzanian MSISDN (255 and nine digits)".into(),
        });
    }
    whole_amount(request.amount)
}

fn masked(msisdn: &str) -> String {
    let visible = msisdn.len().min(3);
    format!(
        "{}{}",
        "*".repeat(msisdn.len() - visible),
        &msisdn[msisdn.len() - visible..]
    )
}

impl Adapter for TigoClient {
    fn name(&self) -> &'static str {
        "tigo_tz"
    }

    fn send(&self, request: Request) -> BoxFuture<'_, Result<Reply, CallError>> {
        Box::pin(async move {
            let amount = check(&request)?;
            let reply = match request.direction {
                Direction::Collection => {
                    self.push(&request.request_id, &request.msisdn, amount, &request.reference)
                        .await
                }
                Direction::Payout => {
                    self.disburse(&request.request_id, &request.msisdn, amount, &request.reference)
                        .await
                }
            };
            tracing::info!(
                request_id = %request.request_id,
                msisdn = %masked(&request.msisdn),
                direction = ?request.direction,
                answer = ?reply.as_ref().map(|r| r.outcome.label()),
                "Tigo request sent"
            );
            reply
        })
    }

    fn status(
        &self,
        _direction: Direction,
        request_id: String,
        _country: String,
        _currency: String,
    ) -> BoxFuture<'_, Result<Reply, CallError>> {
        // One enquiry serves both directions: Tigo keys both by ReferenceID.
        Box::pin(async move { TigoClient::status(self, &request_id).await })
    }

    fn callback_kinds(&self) -> &'static [&'static str] {
        &[CALLBACK_KIND]
    }

    /// The body carries no signature: only its ReferenceID is used, to find
    /// the intent (the token in the URL is the only proof of origin).
    fn parse_callback(&self, kind: &str, body: &[u8]) -> Result<CallbackReport, String> {
        parse_callback(kind, body)
    }

    fn app_callback_token(&self) -> Option<String> {
        Some(callback_token(self.config()))
    }

    fn callback_ack(&self, _kind: &str, accepted: bool) -> (u16, serde_json::Value) {
        callback_ack(accepted)
    }
}

/// Reads a callback body: see [`Adapter::parse_callback`].
pub fn parse_callback(kind: &str, body: &[u8]) -> Result<CallbackReport, String> {
    if kind != CALLBACK_KIND {
        return Err(format!("unknown Tigo callback kind {kind:?}"));
    }
    let callback: wire::Callback =
        serde_json::from_slice(body).map_err(|e| format!("unreadable Tigo callback: {e}"))?;
    let reference = callback
        .reference_id
        .non_empty()
        .ok_or("Tigo callback without a ReferenceID")?;
    let outcome = codes::callback(callback.status.0, &callback.description.0);
    let receipt = callback.mfs_transaction_id.non_empty();
    Ok(CallbackReport {
        dedupe_key: format!("{reference}|{}|{}", callback.status.0, receipt.as_deref().unwrap_or("")),
        request_id: Some(reference),
        receipt: if callback.status.0 { receipt } else { None },
        outcome,
        amount: callback
            .amount
            .non_empty()
            .and_then(|amount| amount.trim().parse().ok()),
        currency: None,
    })
}

/// The answer Tigo expects to a callback (always HTTP 200, the verdict in
/// the body, as the public SDKs answer). The ReferenceID is left out: the
/// answer is made without reading the body.
pub fn callback_ack(accepted: bool) -> (u16, serde_json::Value) {
    let (code, description) = if accepted {
        ("BILLER-30-0000-S", "Callback successful")
    } else {
        ("BILLER-30-3030-E", "Callback failed")
    };
    (
        200,
        serde_json::json!({
            "ResponseCode": code,
            "ResponseStatus": accepted,
            "ResponseDescription": description,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outcome;

    #[test]
    fn a_paid_callback_reports_our_id_the_receipt_and_a_key_naming_its_status() {
        let body = br#"{"Status":true,"Description":"Success","MFSTransactionID":"8H123","ReferenceID":"r-1","Amount":"1000"}"#;
        let report = parse_callback("payment", body).unwrap();
        assert_eq!(report.request_id.as_deref(), Some("r-1"));
        assert_eq!(report.outcome, Outcome::Succeeded);
        assert_eq!(report.receipt.as_deref(), Some("8H123"));
        assert_eq!(report.dedupe_key, "r-1|true|8H123");
    }

    #[test]
    fn a_failed_callback_has_no_receipt_and_a_different_key_from_a_success() {
        let body = br#"{"Status":"false","Description":"Wrong PIN entered","ReferenceID":"r-1","Amount":1000}"#;
        let report = parse_callback("payment", body).unwrap();
        assert!(matches!(report.outcome, Outcome::Failed { ref reason, .. } if reason == "Wrong PIN entered"));
        assert_eq!(report.receipt, None);
        assert_eq!(report.dedupe_key, "r-1|false|");
    }

    #[test]
    fn callbacks_without_a_reference_or_of_another_kind_are_unreadable() {
        assert!(parse_callback("payment", br#"{"Status":true,"ReferenceID":""}"#).is_err());
        assert!(parse_callback("payment", b"<xml/>").is_err());
        assert!(parse_callback("refund", br#"{"Status":true,"ReferenceID":"r"}"#).is_err());
    }

    #[test]
    fn the_acknowledgement_uses_tigos_callback_codes() {
        let (status, body) = callback_ack(true);
        assert_eq!((status, body["ResponseCode"].as_str()), (200, Some("BILLER-30-0000-S")));
        assert_eq!(body["ResponseStatus"], true);
        let (_, refused) = callback_ack(false);
        assert_eq!(refused["ResponseCode"], "BILLER-30-3030-E");
        assert_eq!(refused["ResponseStatus"], false);
    }

    #[test]
    fn amounts_must_be_positive_whole_shillings() {
        assert_eq!(whole_amount(Decimal::new(1000, 0)).unwrap(), 1000);
        assert_eq!(whole_amount(Decimal::new(100000, 2)).unwrap(), 1000);
        assert!(whole_amount(Decimal::new(100050, 2)).is_err());
        assert!(whole_amount(Decimal::ZERO).is_err());
        assert!(whole_amount(Decimal::new(-5, 0)).is_err());
    }

    #[test]
    fn numbers_are_masked_to_their_last_three_digits() {
        assert_eq!(masked("255712345678"), "*********678");
        assert_eq!(masked("12"), "12");
    }
}
