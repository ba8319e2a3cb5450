//! Tigo Pesa response codes and what they mean for the money.
//!
//! Two kinds of code live here, and each variant says which it is:
//! - **public**: the push bill-pay codes that two independent open-source
//!   clients list with the same meaning (msomali/tigopesa's status table and
//!   a JavaScript client's code table) [x2];
//! - **simulated contract**: codes Tuma's simulator answers where nothing is
//!   public (duplicate reference, the customer's refusals, expiry, overload,
//!   "not found"). They are prefixed `SIM-` so that nobody mistakes them for
//!   Tigo's; real Tigo never sends them, so against the real gateway those
//!   situations arrive as codes Tuma does not know, which are never guessed
//!   at ([`Sync::NotUnderstood`], [`Outcome::Unknown`]) until Tigo's
//!   integration documents name them and they are added here.

use crate::providers::adapter::CallError;
use crate::providers::Outcome;

/// Every code Tuma understands. Matched exhaustively: a new code must be
/// placed in every mapping below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TigoCode {
    /// `BILLER-18-0000-S` (public): valid request; the push was sent, or
    /// (simulated contract) the disbursement was made.
    Success,
    /// `DebitMandate-10-1000-E` (public): internal service error.
    InternalError,
    /// `DebitMandate-10-2001-E` (public): user name or password empty.
    CredentialsEmpty,
    /// `DebitMandate-10-2002-E` (public): CustomerMSISDN not passed.
    CustomerMsisdnMissing,
    /// `DebitMandate-10-2003-E` (public): password not passed.
    PasswordMissing,
    /// `DebitMandate-10-2004-V` (public): invalid MSISDN.
    InvalidMsisdn,
    /// `DebitMandate-10-2005-E` (public): not registered (the simulator
    /// answers it for numbers that are no Tigo Pesa wallet).
    NotRegistered,
    /// `DebitMandate-10-2020-V` (public): not a valid reference id.
    InvalidReference,
    /// `DebitMandate-10-2038-V` (public): BillerMSISDN not passed.
    BillerMsisdnMissing,
    /// `DebitMandate-10-3000-E` (public): user name or password wrong.
    WrongCredentials,
    /// `DebitMandate-10-5000-E` (public): a back-end error (Tigo puts the
    /// back end's own description in the answer).
    BackendError,
    /// `BILLER-18-3018-E` (public): failed in sum amount (a total limit).
    SumAmountLimit,
    /// `BILLER-18-3019-E` (public): failed in minimum and maximum amount.
    AmountOutOfRange,
    /// `BILLER-18-3020-E` (public): failed in frequency.
    FrequencyLimit,
    /// `BILLER-18-3021-E` (public): biller user name or password wrong.
    WrongBillerCredentials,
    /// `BILLER-18-3022-E` (public): biller not active.
    BillerNotActive,
    /// `BILLER-18-3040-E` (public): BillerMSISDN is wrong.
    WrongBillerMsisdn,
    /// `SIM-DUPLICATE-REFERENCE` (simulated contract): this ReferenceID was
    /// used before; nothing new happened.
    DuplicateReference,
    /// `SIM-INSUFFICIENT-FUNDS` (simulated contract): the payer's wallet
    /// (collection) or the business account (disbursement) is too low.
    InsufficientFunds,
    /// `SIM-WRONG-PIN` (simulated contract): the customer entered a wrong PIN.
    WrongPin,
    /// `SIM-DECLINED` (simulated contract): the customer declined the prompt.
    Declined,
    /// `SIM-EXPIRED` (simulated contract): the customer did not answer in time.
    Expired,
    /// `SIM-SYSTEM-BUSY` (simulated contract): overloaded; the request was
    /// not processed.
    SystemBusy,
    /// `SIM-NOT-FOUND` (simulated contract): the status enquiry knows no
    /// such ReferenceID.
    NotFound,
}

impl TigoCode {
    pub const ALL: [TigoCode; 24] = [
        TigoCode::Success,
        TigoCode::InternalError,
        TigoCode::CredentialsEmpty,
        TigoCode::CustomerMsisdnMissing,
        TigoCode::PasswordMissing,
        TigoCode::InvalidMsisdn,
        TigoCode::NotRegistered,
        TigoCode::InvalidReference,
        TigoCode::BillerMsisdnMissing,
        TigoCode::WrongCredentials,
        TigoCode::BackendError,
        TigoCode::SumAmountLimit,
        TigoCode::AmountOutOfRange,
        TigoCode::FrequencyLimit,
        TigoCode::WrongBillerCredentials,
        TigoCode::BillerNotActive,
        TigoCode::WrongBillerMsisdn,
        TigoCode::DuplicateReference,
        TigoCode::InsufficientFunds,
        TigoCode::WrongPin,
        TigoCode::Declined,
        TigoCode::Expired,
        TigoCode::SystemBusy,
        TigoCode::NotFound,
    ];

    /// The code as it is on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TigoCode::Success => "BILLER-18-0000-S",
            TigoCode::InternalError => "DebitMandate-10-1000-E",
            TigoCode::CredentialsEmpty => "DebitMandate-10-2001-E",
            TigoCode::CustomerMsisdnMissing => "DebitMandate-10-2002-E",
            TigoCode::PasswordMissing => "DebitMandate-10-2003-E",
            TigoCode::InvalidMsisdn => "DebitMandate-10-2004-V",
            TigoCode::NotRegistered => "DebitMandate-10-2005-E",
            TigoCode::InvalidReference => "DebitMandate-10-2020-V",
            TigoCode::BillerMsisdnMissing => "DebitMandate-10-2038-V",
            TigoCode::WrongCredentials => "DebitMandate-10-3000-E",
            TigoCode::BackendError => "DebitMandate-10-5000-E",
            TigoCode::SumAmountLimit => "BILLER-18-3018-E",
            TigoCode::AmountOutOfRange => "BILLER-18-3019-E",
            TigoCode::FrequencyLimit => "BILLER-18-3020-E",
            TigoCode::WrongBillerCredentials => "BILLER-18-3021-E",
            TigoCode::BillerNotActive => "BILLER-18-3022-E",
            TigoCode::WrongBillerMsisdn => "BILLER-18-3040-E",
            TigoCode::DuplicateReference => "SIM-DUPLICATE-REFERENCE",
            TigoCode::InsufficientFunds => "SIM-INSUFFICIENT-FUNDS",
            TigoCode::WrongPin => "SIM-WRONG-PIN",
            TigoCode::Declined => "SIM-DECLINED",
            TigoCode::Expired => "SIM-EXPIRED",
            TigoCode::SystemBusy => "SIM-SYSTEM-BUSY",
            TigoCode::NotFound => "SIM-NOT-FOUND",
        }
    }

    /// What the code means, in words for an operator (also the simulator's
    /// descriptions).
    pub fn meaning(self) -> &'static str {
        match self {
            TigoCode::Success => "Valid request",
            TigoCode::InternalError => "Internal Service Error",
            TigoCode::CredentialsEmpty => "User name or password empty",
            TigoCode::CustomerMsisdnMissing => "CustomerMSISDN not passed",
            TigoCode::PasswordMissing => "Password not passed",
            TigoCode::InvalidMsisdn => "Invalid MSISDN",
            TigoCode::NotRegistered => "Not Registered",
            TigoCode::InvalidReference => "Not Valid Reference ID",
            TigoCode::BillerMsisdnMissing => "BillerMSISDN not passed",
            TigoCode::WrongCredentials => "Username/Password provided is wrong",
            TigoCode::BackendError => "Backend error",
            TigoCode::SumAmountLimit => "Failed in Sum Amount",
            TigoCode::AmountOutOfRange => "Failed in Min and Max Amount",
            TigoCode::FrequencyLimit => "Failed in Frequency",
            TigoCode::WrongBillerCredentials => "Biller Username or Password is wrong",
            TigoCode::BillerNotActive => "Biller not active",
            TigoCode::WrongBillerMsisdn => "BillerMSISDN is wrong",
            TigoCode::DuplicateReference => "Duplicate ReferenceID",
            TigoCode::InsufficientFunds => "Insufficient funds",
            TigoCode::WrongPin => "Wrong PIN entered",
            TigoCode::Declined => "Transaction declined by the customer",
            TigoCode::Expired => "Transaction expired: the customer did not answer in time",
            TigoCode::SystemBusy => "System busy, try again later",
            TigoCode::NotFound => "Transaction not found",
        }
    }

    /// The code of `text` (surrounding spaces ignored, case kept: Tigo's
    /// codes mix cases and are compared exactly).
    pub fn parse(text: &str) -> Option<TigoCode> {
        let text = text.trim();
        TigoCode::ALL.into_iter().find(|code| code.as_str() == text)
    }
}

/// What the code of a synchronous answer (push, disbursement) means.
#[derive(Debug, Clone)]
pub enum Sync {
    /// Taken: the push was sent or the disbursement made.
    Accepted,
    /// Not taken; the error says what is known about the money.
    Refused(CallError),
    /// A code Tuma does not know, or one that makes no sense here: never
    /// guessed at; the status polls decide.
    NotUnderstood,
}

fn rejected(code: TigoCode) -> Sync {
    Sync::Refused(CallError::Rejected {
        code: code.as_str().to_owned(),
        message: code.meaning().to_owned(),
    })
}

/// The meaning of a synchronous answer's `code`.
pub fn sync(code: &str) -> Sync {
    let Some(known) = TigoCode::parse(code) else {
        tracing::warn!(code, "unrecognised Tigo response code; left for the status polls");
        return Sync::NotUnderstood;
    };
    let described = || format!("{}: {}", known.as_str(), known.meaning());
    match known {
        TigoCode::Success => Sync::Accepted,
        // Failed inside Tigo: whether before or after the money moved is
        // not said.
        TigoCode::InternalError | TigoCode::BackendError => Sync::Refused(CallError::Ambiguous(described())),
        TigoCode::SystemBusy => Sync::Refused(CallError::Busy(described())),
        TigoCode::DuplicateReference => Sync::Refused(CallError::Duplicate),
        // Our ReferenceIDs are well-formed UUIDs, so "not a valid reference"
        // most plausibly means "already used" (unverified). Treated as a
        // duplicate, it sends the intent to the status polls; treated as a
        // refusal, it could fail a collection whose first push was paid.
        TigoCode::InvalidReference => Sync::Refused(CallError::Duplicate),
        TigoCode::CredentialsEmpty
        | TigoCode::PasswordMissing
        | TigoCode::WrongCredentials
        | TigoCode::BillerMsisdnMissing
        | TigoCode::WrongBillerCredentials
        | TigoCode::BillerNotActive
        | TigoCode::WrongBillerMsisdn => Sync::Refused(CallError::Config(described())),
        TigoCode::CustomerMsisdnMissing
        | TigoCode::InvalidMsisdn
        | TigoCode::NotRegistered
        | TigoCode::SumAmountLimit
        | TigoCode::AmountOutOfRange
        | TigoCode::FrequencyLimit
        | TigoCode::InsufficientFunds
        | TigoCode::WrongPin
        | TigoCode::Declined
        | TigoCode::Expired => rejected(known),
        TigoCode::NotFound => Sync::NotUnderstood,
    }
}

fn unknown(code: &str, detail: &str) -> Outcome {
    tracing::warn!(code, "unrecognised Tigo status; left for a later poll or an admin");
    Outcome::Unknown {
        code: code.to_owned(),
        detail: detail.chars().take(200).collect(),
    }
}

/// The outcome a status enquiry reports: `Status` decides; `ResponseCode`
/// names the reason of a failure. A failure that names the success code
/// contradicts itself and is not guessed at.
pub fn status(status: &str, code: &str, description: &str) -> Outcome {
    match status.trim().to_ascii_uppercase().as_str() {
        "SUCCESS" => Outcome::Succeeded,
        "PENDING" => Outcome::Pending,
        word @ ("FAILED" | "EXPIRED") => match TigoCode::parse(code) {
            Some(TigoCode::Success) => unknown(word, description),
            Some(known) => Outcome::Failed {
                code: known.as_str().to_owned(),
                reason: known.meaning().to_owned(),
            },
            None => Outcome::Failed {
                code: if code.trim().is_empty() { word } else { code.trim() }.to_owned(),
                reason: description.chars().take(200).collect(),
            },
        },
        other => unknown(other, description),
    }
}

/// The outcome a callback reports. It carries a flag and free text, no
/// code: a failure is recorded as `FAILED` with Tigo's description.
pub fn callback(status: bool, description: &str) -> Outcome {
    if status {
        Outcome::Succeeded
    } else {
        Outcome::Failed {
            code: "FAILED".to_owned(),
            reason: description.chars().take(200).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_from_its_wire_form_and_codes_are_distinct() {
        for code in TigoCode::ALL {
            assert_eq!(TigoCode::parse(code.as_str()), Some(code));
            assert_eq!(TigoCode::parse(&format!(" {} ", code.as_str())), Some(code));
        }
        let mut wire: Vec<&str> = TigoCode::ALL.iter().map(|c| c.as_str()).collect();
        wire.sort_unstable();
        wire.dedup();
        assert_eq!(wire.len(), TigoCode::ALL.len());
        assert_eq!(TigoCode::parse("biller-18-0000-s"), None, "codes compare exactly");
    }

    #[test]
    fn synchronous_codes_say_what_is_known_about_the_money() {
        assert!(matches!(sync("BILLER-18-0000-S"), Sync::Accepted));
        assert!(matches!(
            sync("SIM-DUPLICATE-REFERENCE"),
            Sync::Refused(CallError::Duplicate)
        ));
        assert!(matches!(
            sync("DebitMandate-10-2020-V"),
            Sync::Refused(CallError::Duplicate)
        ));
        assert!(matches!(sync("SIM-SYSTEM-BUSY"), Sync::Refused(CallError::Busy(_))));
        assert!(matches!(
            sync("DebitMandate-10-1000-E"),
            Sync::Refused(CallError::Ambiguous(_))
        ));
        assert!(matches!(
            sync("DebitMandate-10-5000-E"),
            Sync::Refused(CallError::Ambiguous(_))
        ));
        assert!(matches!(
            sync("DebitMandate-10-3000-E"),
            Sync::Refused(CallError::Config(_))
        ));
        assert!(matches!(sync("BILLER-18-3040-E"), Sync::Refused(CallError::Config(_))));
        match sync("DebitMandate-10-2005-E") {
            Sync::Refused(CallError::Rejected { code, .. }) => assert_eq!(code, "DebitMandate-10-2005-E"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            sync("SIM-INSUFFICIENT-FUNDS"),
            Sync::Refused(CallError::Rejected { .. })
        ));
        assert!(matches!(sync("SIM-NOT-FOUND"), Sync::NotUnderstood));
        assert!(matches!(sync("BILLER-18-9999-F"), Sync::NotUnderstood));
    }

    #[test]
    fn a_status_is_decided_by_its_status_word_and_never_guessed() {
        assert_eq!(status("SUCCESS", "BILLER-18-0000-S", ""), Outcome::Succeeded);
        assert_eq!(status("pending", "BILLER-18-0000-S", ""), Outcome::Pending);
        assert_eq!(
            status("EXPIRED", "SIM-EXPIRED", "x"),
            Outcome::Failed {
                code: "SIM-EXPIRED".into(),
                reason: TigoCode::Expired.meaning().into()
            }
        );
        assert_eq!(
            status("FAILED", "X-1", "limit reached"),
            Outcome::Failed {
                code: "X-1".into(),
                reason: "limit reached".into()
            }
        );
        assert!(matches!(
            status("FAILED", "BILLER-18-0000-S", ""),
            Outcome::Unknown { .. }
        ));
        assert!(matches!(status("REVERSED", "", ""), Outcome::Unknown { .. }));
        assert!(matches!(status("", "", ""), Outcome::Unknown { .. }));
    }

    #[test]
    fn a_callback_flag_decides_and_a_failure_keeps_tigos_words() {
        assert_eq!(callback(true, "ok"), Outcome::Succeeded);
        assert_eq!(
            callback(false, "Insufficient funds"),
            Outcome::Failed {
                code: "FAILED".into(),
                reason: "Insufficient funds".into()
            }
        );
    }
}
