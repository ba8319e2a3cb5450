//! The Open API's `output_ResponseCode`s and transaction statuses, and what
//! each means for the money. The table is the portal's (copied alike by
//! several SDKs); a code not in it is `Unknown`: logged, never guessed.
//!
//! Three kinds of answer, so the client can act on each:
//! - the transaction's outcome ([`Verdict::Outcome`]): `INS-0` paid, or a
//!   final refusal of this transaction after it was looked at (customer
//!   cancelled, wrong PIN, receiver invalid, too little money);
//! - a call error ([`Verdict::Error`]): the request was refused before it
//!   was processed (bad field: `Rejected`; our setup: `Config`), could not
//!   be taken now (`Busy`), may or may not have been processed
//!   (`Ambiguous`), or repeats an id (`Duplicate`);
//! - the session was refused ([`Verdict::SessionRefused`], `INS-2`): open a
//!   new session and send again, once.

use crate::providers::adapter::CallError;
use crate::providers::Outcome;

/// What one `output_ResponseCode` means.
// No `PartialEq`: `CallError` has none.
#[derive(Debug, Clone)]
pub enum Verdict {
    Outcome(Outcome),
    Error(CallError),
    SessionRefused,
}

fn failed(code: &str, reason: &str) -> Verdict {
    Verdict::Outcome(Outcome::Failed {
        code: code.to_owned(),
        reason: reason.to_owned(),
    })
}

fn rejected(code: &str, message: &str) -> Verdict {
    Verdict::Error(CallError::Rejected {
        code: code.to_owned(),
        message: message.to_owned(),
    })
}

fn config(code: &str, message: &str) -> Verdict {
    Verdict::Error(CallError::Config(format!("{code}: {message}")))
}

fn unknown(code: &str, description: &str) -> Outcome {
    tracing::warn!(
        code,
        "unrecognised Vodacom response code; left for a status query or an admin"
    );
    Outcome::Unknown {
        code: code.to_owned(),
        detail: description.chars().take(200).collect(),
    }
}

/// The meaning of a payment answer's `output_ResponseCode` (B2C or
/// single-stage C2B; the session call uses the same table).
pub fn response(code: &str, description: &str) -> Verdict {
    let code = code.trim();
    match code {
        "INS-0" => Verdict::Outcome(Outcome::Succeeded),
        // Internal error after the request reached M-Pesa: a B2C may have
        // been paid (integrators report it); the status query decides.
        "INS-1" => Verdict::Error(CallError::Ambiguous("INS-1 internal error".into())),
        "INS-2" => Verdict::SessionRefused,
        // "User is not active": the customer's (or, when every request
        // gets it, our API user's) account. Final for this transaction.
        "INS-4" => failed(code, "user is not active"),
        "INS-5" => failed(code, "cancelled by the customer"),
        // Wrong PIN and other customer-side failures all answer INS-6.
        "INS-6" => failed(code, "transaction failed"),
        // Request timeout: the transaction may have completed.
        "INS-9" => Verdict::Error(CallError::Ambiguous("INS-9 request timeout".into())),
        "INS-10" => Verdict::Error(CallError::Duplicate),
        // Our short code: every request would get it.
        "INS-13" => config(code, "invalid short code (check vodacom_tz.service_provider_code)"),
        "INS-14" => rejected(code, "invalid reference"),
        "INS-15" => rejected(code, "invalid amount"),
        // Overloaded, refused before processing: the same id may be resent.
        "INS-16" => Verdict::Error(CallError::Busy("INS-16 temporary overload".into())),
        "INS-17" => rejected(code, "invalid transaction reference (1-20 characters)"),
        "INS-18" => rejected(code, "invalid transaction id"),
        "INS-19" => rejected(code, "invalid third party reference"),
        // We always send every field: a missing one is our client's fault.
        "INS-20" => config(code, "not all parameters provided"),
        // Validation of this request's values (a number, an amount): may be
        // one request's data, so refused rather than a setup fault.
        "INS-21" => rejected(code, "parameter validation failed"),
        "INS-22" => config(code, "invalid operation type"),
        // Vodacom itself does not know: only M-Pesa support can say.
        "INS-23" => Verdict::Outcome(Outcome::Unknown {
            code: code.to_owned(),
            detail: format!("unknown status, contact M-Pesa: {}", clip(description)),
        }),
        "INS-24" => config(code, "invalid initiator identifier"),
        "INS-25" => config(code, "invalid security credential"),
        "INS-26" => config(code, "not authorized for this operation"),
        "INS-993" | "INS-994" | "INS-995" | "INS-996" | "INS-997" => {
            rejected(code, "direct debit or customer profile error")
        }
        "INS-998" => config(code, "invalid market (check vodacom_tz.path_prefix)"),
        "INS-2001" => config(code, "initiator authentication error"),
        "INS-2002" => failed(code, "receiver invalid"),
        "INS-2006" => failed(code, "insufficient balance"),
        "INS-2051" => failed(code, "MSISDN invalid"),
        "INS-2057" => config(code, "invalid language code"),
        other => Verdict::Outcome(unknown(other, description)),
    }
}

/// The meaning of `output_ResponseTransactionStatus` in a status query's
/// `INS-0` answer.
pub fn transaction_status(status: &str) -> Outcome {
    let status = status.trim();
    match status {
        "Completed" => Outcome::Succeeded,
        "Cancelled" => Outcome::Failed {
            code: status.to_owned(),
            reason: "cancelled".into(),
        },
        "Expired" => Outcome::Failed {
            code: status.to_owned(),
            reason: "the customer did not answer in time".into(),
        },
        "Failed" => Outcome::Failed {
            code: status.to_owned(),
            reason: "the transaction failed".into(),
        },
        "Pending" => Outcome::Pending,
        // Not found: the request may still be arriving after an ambiguous
        // send; the engine's poll budget bounds the wait.
        "N/A" => Outcome::Pending,
        other => unknown(other, "transaction status"),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_failed(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Outcome(Outcome::Failed { .. }))
    }

    #[test]
    fn success_and_final_refusals_are_outcomes() {
        assert!(matches!(response(" INS-0 ", ""), Verdict::Outcome(Outcome::Succeeded)));
        for code in ["INS-4", "INS-5", "INS-6", "INS-2002", "INS-2006", "INS-2051"] {
            assert!(is_failed(response(code, "")), "{code} is a final failure");
        }
    }

    #[test]
    fn timeouts_and_internal_errors_are_ambiguous_never_failed() {
        assert!(matches!(response("INS-1", ""), Verdict::Error(CallError::Ambiguous(_))));
        assert!(matches!(response("INS-9", ""), Verdict::Error(CallError::Ambiguous(_))));
        assert!(matches!(
            response("INS-23", "Unknown status"),
            Verdict::Outcome(Outcome::Unknown { .. })
        ));
    }

    #[test]
    fn duplicates_overload_and_session_refusals_are_told_apart() {
        assert!(matches!(response("INS-10", ""), Verdict::Error(CallError::Duplicate)));
        assert!(matches!(response("INS-16", ""), Verdict::Error(CallError::Busy(_))));
        assert!(matches!(response("INS-2", "Invalid API Key"), Verdict::SessionRefused));
    }

    #[test]
    fn setup_faults_are_config_and_bad_fields_are_rejected() {
        for code in [
            "INS-13", "INS-20", "INS-22", "INS-24", "INS-25", "INS-26", "INS-998", "INS-2001", "INS-2057",
        ] {
            assert!(
                matches!(response(code, ""), Verdict::Error(CallError::Config(_))),
                "{code} is our setup"
            );
        }
        for code in ["INS-14", "INS-15", "INS-17", "INS-18", "INS-19", "INS-21", "INS-996"] {
            assert!(
                matches!(response(code, ""), Verdict::Error(CallError::Rejected { .. })),
                "{code} refuses the request"
            );
        }
    }

    #[test]
    fn unknown_codes_are_never_guessed() {
        assert!(matches!(
            response("INS-4242", "who knows"),
            Verdict::Outcome(Outcome::Unknown { .. })
        ));
        assert!(matches!(response("", ""), Verdict::Outcome(Outcome::Unknown { .. })));
    }

    #[test]
    fn transaction_statuses_map_and_not_found_is_pending() {
        assert_eq!(transaction_status("Completed"), Outcome::Succeeded);
        for status in ["Cancelled", "Expired", "Failed"] {
            assert!(matches!(transaction_status(status), Outcome::Failed { .. }));
        }
        assert_eq!(transaction_status("Pending"), Outcome::Pending);
        assert_eq!(transaction_status("N/A"), Outcome::Pending);
        assert!(matches!(transaction_status("Reversed"), Outcome::Unknown { .. }));
    }
}
