//! Airtel's codes and what they mean for the money: the business codes of
//! collections (DP008…) and disbursements (DP009…), the gateway's (ESB…)
//! and router's (ROUTER…) codes, and the transaction statuses (`TS`, `TF`,
//! `TIP`, `TA`, `TE`, `TR`). Every documented code is listed; anything else
//! is `Unknown`: logged, never guessed.
//!
//! How one answer is read ([`reading`]): `status.response_code` first, then
//! `status.result_code`, then a router error's `status_code`; where the code
//! leaves the outcome open (in process, or only "gateway OK"), the
//! transaction's own status decides. Airtel's collection enquiry answers
//! `DP00800001006` with a final `TS`, which this order reads correctly. A
//! code and a status that contradict each other (a success code beside
//! `TF`, a failure code beside `TS`) are `Unknown`: the status query, or a
//! person, decides.

use super::wire::Envelope;
use crate::providers::adapter::{CallError, Reply};
use crate::providers::Outcome;

/// Which call an answer belongs to: the same code means different things
/// for a request that may move money and for a query that cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A disbursement or a USSD push.
    Send,
    /// A disbursement or collection enquiry.
    Status,
}

/// What one code says.
#[derive(Debug, Clone)]
pub enum Meaning {
    /// What became of the money (or that it is not decided yet).
    Outcome(Outcome),
    /// The gateway processed the call (`ESB000010`): the transaction's
    /// status says the rest.
    Proceed,
    /// The enquiry found no such id (yet).
    NotFound,
    /// The request may or may not have been processed (timeouts, "something
    /// went wrong"): a send is ambiguous, a query is asked again.
    Unclear,
    /// The call itself was refused or is a duplicate.
    Error(CallError),
    /// Not a documented code.
    Unknown,
}

fn failed(code: &str, reason: &str) -> Meaning {
    Meaning::Outcome(Outcome::Failed {
        code: code.to_owned(),
        reason: reason.to_owned(),
    })
}

fn rejected(code: &str, reason: &str) -> Meaning {
    Meaning::Error(CallError::Rejected {
        code: code.to_owned(),
        message: reason.to_owned(),
    })
}

fn config(code: &str, reason: &str) -> Meaning {
    Meaning::Error(CallError::Config(format!("Airtel {code}: {reason}")))
}

/// One code of any family (DP008, DP009, ESB, ROUTER).
pub fn classify(code: &str) -> Meaning {
    match code.trim() {
        // Collections (USSD push), DP008….
        "DP00800001000" => Meaning::Outcome(Outcome::Pending),
        "DP00800001001" => Meaning::Outcome(Outcome::Succeeded),
        "DP00800001002" => failed("DP00800001002", "the customer entered an incorrect PIN"),
        "DP00800001003" => failed("DP00800001003", "exceeds the customer's wallet transaction limit"),
        "DP00800001004" => failed("DP00800001004", "invalid amount (below the minimum)"),
        "DP00800001005" => failed("DP00800001005", "the customer did not enter the PIN"),
        "DP00800001006" => Meaning::Outcome(Outcome::Pending),
        "DP00800001007" => failed("DP00800001007", "the customer's balance is insufficient"),
        "DP00800001008" => failed("DP00800001008", "refused"),
        "DP00800001009" => failed("DP00800001009", "do not honor (generic refusal)"),
        "DP00800001010" => failed("DP00800001010", "not permitted to payee (barred or not registered)"),
        "DP00800001024" => failed("DP00800001024", "the prompt timed out"),
        "DP00800001025" => Meaning::NotFound,
        "DP00800001026" => config("DP00800001026", "x-signature and payload did not match"),
        "DP00800001029" => failed("DP00800001029", "the prompt expired"),
        // Disbursements, DP009….
        "DP00900001000" => Meaning::Outcome(Outcome::Pending),
        "DP00900001001" => Meaning::Outcome(Outcome::Succeeded),
        "DP00900001003" => failed("DP00900001003", "maximum transaction limit reached for the day"),
        "DP00900001004" => failed("DP00900001004", "invalid amount (outside the limits)"),
        "DP00900001005" => failed("DP00900001005", "transaction failed"),
        "DP00900001006" => Meaning::Outcome(Outcome::Pending),
        "DP00900001007" => failed("DP00900001007", "insufficient funds in the disbursement wallet"),
        "DP00900001009" => failed("DP00900001009", "invalid initiatee"),
        "DP00900001010" => failed(
            "DP00900001010",
            "user not allowed (payer not permitted or payee barred)",
        ),
        "DP00900001011" => Meaning::Error(CallError::Duplicate),
        "DP00900001012" => failed("DP00900001012", "invalid mobile number"),
        "DP00900001013" => failed("DP00900001013", "refused"),
        "DP00900001014" => Meaning::Unclear,
        "DP00900001015" => Meaning::NotFound,
        "DP00900001016" => config("DP00900001016", "x-signature and payload did not match"),
        "DP00900001017" => Meaning::Error(CallError::Duplicate),
        "DP00900001018" => config("DP00900001018", "forbidden"),
        // The gateway (ESB).
        "ESB000010" => Meaning::Proceed,
        "ESB000001" | "ESB000004" | "ESB000014" => Meaning::Unclear,
        "ESB000008" => rejected("ESB000008", "field validation error"),
        "ESB000011" => rejected("ESB000011", "request failed"),
        "ESB000033" => rejected("ESB000033", "invalid MSISDN length"),
        "ESB000034" => rejected("ESB000034", "invalid country"),
        "ESB000035" => rejected("ESB000035", "invalid currency"),
        "ESB000036" => rejected("ESB000036", "invalid MSISDN format"),
        "ESB000039" => config("ESB000039", "vendor not configured for this country"),
        "ESB000041" => Meaning::Error(CallError::Duplicate),
        "ESB000045" => Meaning::NotFound,
        // The router, before anything is processed.
        "ROUTER001" => config("ROUTER001", "wallet not configured for this app"),
        "ROUTER003" => rejected("ROUTER003", "missing mandatory header or body field"),
        "ROUTER005" => config("ROUTER005", "country route not configured"),
        "ROUTER006" => rejected("ROUTER006", "invalid country"),
        "ROUTER007" => config("ROUTER007", "not authorised for this country"),
        "ROUTER112" => rejected("ROUTER112", "invalid currency"),
        "ROUTER119" => rejected("ROUTER119", "missing currency"),
        // A PIN problem is never retried blindly: repeated wrong PINs lock
        // the disbursement wallet.
        "ROUTER114" => config(
            "ROUTER114",
            "the PIN could not be validated (check airtel.public_key and pin_padding)",
        ),
        "ROUTER115" => config(
            "ROUTER115",
            "incorrect disbursement PIN (risk of lockout: fix airtel.disbursement_pin)",
        ),
        "ROUTER116" => config(
            "ROUTER116",
            "the encrypted PIN is wrong (check airtel.public_key and pin_padding)",
        ),
        "ROUTER117" => Meaning::Unclear,
        _ => Meaning::Unknown,
    }
}

/// A transaction status (`data.transaction.status`, a callback's
/// `status_code`). `failure_code` names a failure when the answer gave one.
pub fn transaction_status(status: &str, failure_code: Option<&str>, message: &str) -> Outcome {
    let reason = |fallback: &str| {
        if message.is_empty() {
            fallback.to_owned()
        } else {
            message.chars().take(200).collect()
        }
    };
    match status.trim() {
        "TS" => Outcome::Succeeded,
        "TF" => Outcome::Failed {
            code: failure_code.unwrap_or("TF").to_owned(),
            reason: reason("transaction failed"),
        },
        "TE" => Outcome::Failed {
            code: "TE".to_owned(),
            reason: reason("transaction expired"),
        },
        // In progress, ambiguous, or (a push's sync answer) the prompt sent.
        "TIP" | "TA" | "SUCCESS" => Outcome::Pending,
        // The money moved and came back: neither a plain success nor a
        // failure for the ledger, so a person decides.
        "TR" => unknown("TR", "the transaction was reversed"),
        other => unknown(other, message),
    }
}

fn unknown(code: &str, detail: &str) -> Outcome {
    tracing::warn!(
        code,
        "unrecognised Airtel code or status; left for a status query or an admin"
    );
    Outcome::Unknown {
        code: code.to_owned(),
        detail: detail.chars().take(200).collect(),
    }
}

/// Reads one parsed answer of `call` (see the module comment for the order).
pub fn reading(envelope: &Envelope, call: Call) -> Result<Reply, CallError> {
    let message = envelope.message();
    let transaction = envelope.transaction();
    let status = transaction.and_then(|t| t.status.as_deref());
    let receipt = transaction
        .and_then(|t| t.airtel_money_id.as_deref())
        .map(str::to_owned);
    let by_status = |failure_code: Option<&str>| match status {
        Some(status) => transaction_status(status, failure_code, &message),
        None => unknown(failure_code.unwrap_or("none"), "an answer without a code or a status"),
    };
    let code = envelope.code();
    let outcome = match code.map(|c| (c, classify(c))) {
        None => by_status(None),
        // A prompt that timed out at send time may still be answered.
        Some(("DP00800001024", _)) if call == Call::Send => {
            return Err(CallError::Ambiguous(format!("DP00800001024 {message}")))
        }
        Some((_, Meaning::Proceed)) => by_status(None),
        Some((_, Meaning::Outcome(Outcome::Pending))) => match status {
            Some("TS" | "TF" | "TE" | "TR") => by_status(None),
            _ => Outcome::Pending,
        },
        Some((code, Meaning::Outcome(Outcome::Succeeded))) => match status {
            Some("TF" | "TE" | "TR") => unknown(code, "success code with a failed transaction status"),
            _ => Outcome::Succeeded,
        },
        // Nor is a failure believed against a transaction Airtel itself
        // calls successful: a payout failed on it could be paid twice.
        Some((code, Meaning::Outcome(Outcome::Failed { .. }))) if status == Some("TS") => {
            unknown(code, "failure code with a successful transaction status")
        }
        Some((_, Meaning::Outcome(outcome))) => outcome,
        Some((code, Meaning::NotFound)) => match call {
            // Perhaps still arriving: the engine's poll budget bounds it.
            Call::Status => Outcome::Pending,
            Call::Send => unknown(code, "not found, in answer to a request"),
        },
        Some((code, Meaning::Unclear)) => match call {
            Call::Send => return Err(CallError::Ambiguous(format!("{code} {message}"))),
            Call::Status => Outcome::Pending,
        },
        Some((_, Meaning::Error(error))) => return Err(error),
        Some((code, Meaning::Unknown)) => unknown(code, &message),
    };
    let receipt = match outcome {
        Outcome::Succeeded => receipt,
        Outcome::Failed { .. } | Outcome::Pending | Outcome::Unknown { .. } => None,
    };
    Ok(Reply::new(outcome, receipt))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(json: &str) -> Envelope {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn documented_codes_map_to_outcomes_and_unknown_ones_are_never_guessed() {
        assert!(matches!(
            classify("DP00900001001"),
            Meaning::Outcome(Outcome::Succeeded)
        ));
        assert!(matches!(
            classify(" DP00800001001 "),
            Meaning::Outcome(Outcome::Succeeded)
        ));
        for pending in ["DP00900001000", "DP00900001006", "DP00800001000", "DP00800001006"] {
            assert!(
                matches!(classify(pending), Meaning::Outcome(Outcome::Pending)),
                "{pending}"
            );
        }
        for failed in [
            "DP00900001007",
            "DP00900001012",
            "DP00800001002",
            "DP00800001007",
            "DP00800001029",
        ] {
            assert!(
                matches!(classify(failed), Meaning::Outcome(Outcome::Failed { .. })),
                "{failed}"
            );
        }
        assert!(matches!(classify("DP00900001099"), Meaning::Unknown));
        assert!(matches!(classify("ROUTER110"), Meaning::Unknown));
        assert_eq!(transaction_status("TIP", None, ""), Outcome::Pending);
        assert_eq!(transaction_status("TA", None, ""), Outcome::Pending);
        assert!(matches!(transaction_status("TE", None, ""), Outcome::Failed { .. }));
        assert!(matches!(transaction_status("TR", None, ""), Outcome::Unknown { .. }));
        assert!(matches!(transaction_status("MAYBE", None, ""), Outcome::Unknown { .. }));
    }

    #[test]
    fn duplicates_timeouts_pin_problems_and_throttling_are_call_errors() {
        for duplicate in ["DP00900001017", "DP00900001011", "ESB000041"] {
            assert!(
                matches!(classify(duplicate), Meaning::Error(CallError::Duplicate)),
                "{duplicate}"
            );
        }
        for pin in ["ROUTER114", "ROUTER115", "ROUTER116"] {
            assert!(matches!(classify(pin), Meaning::Error(CallError::Config(_))), "{pin}");
        }
        let timed_out = envelope(r#"{"status":{"response_code":"DP00900001014","success":false}}"#);
        assert!(matches!(reading(&timed_out, Call::Send), Err(CallError::Ambiguous(_))));
        assert_eq!(reading(&timed_out, Call::Status).unwrap(), Reply::pending());
        let router = envelope(r#"{"status_code":"ROUTER117","status_message":"timeout"}"#);
        assert!(matches!(reading(&router, Call::Send), Err(CallError::Ambiguous(_))));
        let push_timeout = envelope(r#"{"status":{"response_code":"DP00800001024"}}"#);
        assert!(matches!(
            reading(&push_timeout, Call::Send),
            Err(CallError::Ambiguous(_))
        ));
        assert!(matches!(
            reading(&push_timeout, Call::Status).unwrap().outcome,
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn not_found_in_an_enquiry_is_pending_not_failed() {
        for code in ["DP00900001015", "DP00800001025", "ESB000045"] {
            let answer = envelope(&format!(r#"{{"data":{{}},"status":{{"response_code":"{code}"}}}}"#));
            assert_eq!(reading(&answer, Call::Status).unwrap(), Reply::pending(), "{code}");
        }
    }

    #[test]
    fn the_transaction_status_settles_what_an_in_process_code_leaves_open() {
        let enquiry = envelope(
            r#"{"data":{"transaction":{"airtel_money_id":"MP1","id":"c-1","status":"TS"}},
                "status":{"result_code":"ESB000010","response_code":"DP00800001006","success":true}}"#,
        );
        let reply = reading(&enquiry, Call::Status).unwrap();
        assert_eq!(
            (reply.outcome, reply.receipt.as_deref()),
            (Outcome::Succeeded, Some("MP1"))
        );
        let pushed = envelope(
            r#"{"data":{"transaction":{"id":"c-1","status":"SUCCESS"}},"status":{"response_code":"DP00800001006"}}"#,
        );
        assert_eq!(reading(&pushed, Call::Send).unwrap(), Reply::pending());
        let gateway_only =
            envelope(r#"{"data":{"transaction":{"status":"TF","message":"no"}},"status":{"result_code":"ESB000010"}}"#);
        assert!(matches!(
            reading(&gateway_only, Call::Status).unwrap().outcome,
            Outcome::Failed { .. }
        ));
        let contradicting =
            envelope(r#"{"data":{"transaction":{"status":"TF"}},"status":{"response_code":"DP00900001001"}}"#);
        assert!(matches!(
            reading(&contradicting, Call::Status).unwrap().outcome,
            Outcome::Unknown { .. }
        ));
        // The other way round: a failure code beside a successful status.
        let paid_but_refused = envelope(
            r#"{"data":{"transaction":{"airtel_money_id":"MP3","status":"TS"}},"status":{"response_code":"DP00900001003"}}"#,
        );
        for call in [Call::Send, Call::Status] {
            assert!(matches!(
                reading(&paid_but_refused, call).unwrap().outcome,
                Outcome::Unknown { .. }
            ));
        }
    }

    #[test]
    fn a_failure_carries_no_receipt_and_a_success_carries_the_airtel_money_id() {
        let paid = envelope(
            r#"{"data":{"transaction":{"airtel_money_id":"MP2","id":"p-1","status":"TS"}},"status":{"response_code":"DP00900001001"}}"#,
        );
        assert_eq!(reading(&paid, Call::Send).unwrap().receipt.as_deref(), Some("MP2"));
        let broke = envelope(
            r#"{"data":{"transaction":{"airtel_money_id":"MP3","id":false,"status":"TF"}},"status":{"response_code":"DP00900001007"}}"#,
        );
        let reply = reading(&broke, Call::Send).unwrap();
        assert!(matches!(reply.outcome, Outcome::Failed { ref code, .. } if code == "DP00900001007"));
        assert_eq!(reply.receipt, None);
    }
}
