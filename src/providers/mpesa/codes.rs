//! Daraja result codes and what they mean for the money. Codes are strings:
//! Daraja sends integers and strings, and some codes are alphanumeric.
//! Anything not listed is `Unknown`: logged, never guessed.

use crate::providers::Outcome;

fn failed(code: &str, reason: &str) -> Outcome {
    Outcome::Failed {
        code: code.to_owned(),
        reason: reason.to_owned(),
    }
}

fn unknown(code: &str, detail: &str) -> Outcome {
    tracing::warn!(
        code,
        "unrecognised M-Pesa result code; left for a status query or an admin"
    );
    Outcome::Unknown {
        code: code.to_owned(),
        detail: detail.chars().take(200).collect(),
    }
}

/// An STK push result (callback `ResultCode`, or STK query `ResultCode`).
pub fn stk(code: &str, description: &str) -> Outcome {
    match code.trim() {
        "0" => Outcome::Succeeded,
        "1" => failed("1", "insufficient M-Pesa balance"),
        "17" => failed("17", "M-Pesa temporarily unable to process"),
        "26" => failed("26", "M-Pesa system busy"),
        "1001" => failed("1001", "customer has another M-Pesa session in progress"),
        "1019" => failed("1019", "transaction expired before the customer answered"),
        "1025" => failed("1025", "error sending the payment prompt"),
        "1032" => failed("1032", "cancelled by the customer"),
        "1036" => failed("1036", "internal failure sending the prompt"),
        "1037" => failed("1037", "customer's phone unreachable or no answer to the prompt"),
        "2001" => failed("2001", "wrong M-Pesa PIN"),
        "2028" => failed("2028", "request not permitted for this shortcode"),
        "8006" => failed("8006", "customer's PIN is locked"),
        "9999" => failed("9999", "error sending the payment prompt"),
        "SFC_IC0003" => failed("SFC_IC0003", "receiver party invalid (check shortcode and till)"),
        other => unknown(other, description),
    }
}

/// A B2C result (result callback `ResultCode`).
pub fn b2c(code: &str, description: &str) -> Outcome {
    match code.trim() {
        "0" => Outcome::Succeeded,
        "1" => failed("1", "insufficient balance in the B2C utility account"),
        "2" => failed("2", "amount below the minimum"),
        "3" => failed("3", "amount above the maximum"),
        "4" => failed("4", "would exceed the recipient's daily limit"),
        "7" => failed("7", "receiver invalid"),
        "8" => failed("8", "would exceed the recipient's maximum balance"),
        "11" => failed("11", "B2C account in an invalid state"),
        "14" => failed("14", "recipient account in an invalid state"),
        // A re-send refused as a duplicate says nothing about the original
        // request under the same id, which may well have paid: the status
        // query about it decides, never this callback.
        "15" => Outcome::Unknown {
            code: "15".to_owned(),
            detail: "duplicate detected; the original request decides".to_owned(),
        },
        "17" => failed("17", "M-Pesa system error"),
        "18" => failed("18", "initiator credential check failed"),
        "20" => failed("20", "unresolved initiator"),
        "21" => failed("21", "initiator lacks the B2C role"),
        "24" => failed("24", "missing mandatory fields"),
        "25" => failed("25", "invalid request parameters"),
        "26" => failed("26", "M-Pesa system busy"),
        "29" => failed("29", "invalid command"),
        "1005" => failed("1005", "account reference invalid"),
        "2001" => failed("2001", "initiator information invalid"),
        "2006" => failed("2006", "account rule declined"),
        "2007" => failed("2007", "external validation failed"),
        "2020" => failed("2020", "invalid amount format"),
        "2028" => failed("2028", "shortcode not permitted for this product"),
        "2040" => failed("2040", "recipient is not a registered M-Pesa customer"),
        "2051" => failed("2051", "MSISDN invalid"),
        "8006" => failed("8006", "security credential locked"),
        "SFC_IC0003" => failed("SFC_IC0003", "receiver does not exist"),
        other => unknown(other, description),
    }
}

/// Daraja's answer to a reversal of a payment that was already reversed.
/// Tuma sends one reversal a receipt and never re-sends one (see
/// `actions::reverse`), so this reversal was made some other way (the
/// organisation portal, Safaricom's customer care): the money has gone
/// back, but not by this request, and for an amount Tuma did not choose.
/// Neither "failed" (the hold would be released as if the money were still
/// here) nor "completed" is known to be true: a person decides.
pub const ALREADY_REVERSED: &str = "R000001";

/// A reversal result (result callback `ResultCode`).
pub fn reversal(code: &str, description: &str) -> Outcome {
    match code.trim() {
        "0" => Outcome::Succeeded,
        ALREADY_REVERSED => Outcome::Unknown {
            code: ALREADY_REVERSED.to_owned(),
            detail: "the payment was already reversed, not by this request".to_owned(),
        },
        "R000002" => failed("R000002", "the original transaction is invalid"),
        "1" => failed("1", "insufficient balance to reverse"),
        "11" => failed("11", "account in an invalid state"),
        "21" => failed("21", "initiator lacks the reversal role"),
        "2001" => failed("2001", "initiator information invalid"),
        "2006" => failed("2006", "account rule declined"),
        "2028" => failed("2028", "shortcode not permitted for reversals"),
        "8006" => failed("8006", "security credential locked"),
        other => unknown(other, description),
    }
}

/// A transaction status result's `TransactionStatus` parameter.
pub fn transaction_status(status: &str) -> Outcome {
    match status.trim() {
        "Completed" => Outcome::Succeeded,
        "Declined" | "Cancelled" | "Expired" => {
            failed(status.trim(), "M-Pesa reports the transaction did not complete")
        }
        "Authorized" | "Pending Authorized" | "Initiated" => Outcome::Pending,
        other => unknown(other, "transaction status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_map_to_outcomes_and_unknown_ones_are_never_guessed() {
        assert_eq!(stk("0", ""), Outcome::Succeeded);
        assert!(matches!(stk("1032", ""), Outcome::Failed { .. }));
        assert!(matches!(stk("4242", "who knows"), Outcome::Unknown { .. }));
        assert_eq!(b2c(" 0 ", ""), Outcome::Succeeded);
        assert!(matches!(b2c("2040", ""), Outcome::Failed { .. }));
        assert!(matches!(b2c("500.002.1001", ""), Outcome::Unknown { .. }));
        assert!(
            matches!(b2c("15", "Duplicate detected"), Outcome::Unknown { .. }),
            "a duplicate refusal must not fail a payout the original may have paid"
        );
        assert_eq!(transaction_status("Pending Authorized"), Outcome::Pending);
        assert!(
            matches!(reversal("R000001", ""), Outcome::Unknown { .. }),
            "a payment reversed some other way is for a person, not a failure"
        );
        assert!(matches!(reversal("R000002", ""), Outcome::Failed { .. }));
        assert!(matches!(transaction_status("Declined"), Outcome::Failed { .. }));
    }
}
