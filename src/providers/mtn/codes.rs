//! MTN's statuses and failure reasons, and what they mean for the money.
//!
//! Two mappings, each exhaustive over [`Reason`] so that a new reason makes
//! the compiler point at both:
//! - [`status`]: a transaction's `status` (+ `reason` on FAILED) → an
//!   [`Outcome`]. An unrecognised status or reason is `Unknown`: logged,
//!   never guessed.
//! - [`refusal`]: a POST answered with anything but 202 → a [`CallError`]
//!   saying whether money may have moved. Several configuration errors come
//!   back as HTTP 500 with a code (`INVALID_CURRENCY`,
//!   `NOT_ALLOWED_TARGET_ENVIRONMENT`, `INVALID_CALLBACK_URL_HOST`): they are
//!   `Config`, never blind retries; a 500 without a known code is
//!   `Ambiguous`.
//!
//! 503 on a POST is `Busy`. MTN promises nothing about a 503, but the
//! choice is safe with MTN whatever the 503 meant: a re-send carries the
//! same `X-Reference-Id`, so if the first did get through MTN answers 409,
//! which is `Duplicate`, and the status query finds the original. (The
//! simulator's server-error chaos answers 503 before doing anything.)

use super::wire::Reason as WireReason;
use crate::providers::adapter::CallError;
use crate::providers::Outcome;

/// MTN's documented failure reasons (`reason.code` on FAILED, `code` on
/// error bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    PayeeNotFound,
    PayerNotFound,
    NotEnoughFunds,
    PayerLimitReached,
    PayeeLimitReached,
    PayeeNotAllowedToReceive,
    SenderAccountNotActive,
    NotAllowed,
    NotAllowedTargetEnvironment,
    InvalidCallbackUrlHost,
    InvalidCurrency,
    PaymentNotApproved,
    ApprovalRejected,
    Expired,
    TransactionCanceled,
    CouldNotPerformTransaction,
    InternalProcessingError,
    ServiceUnavailable,
    ResourceAlreadyExist,
    ResourceNotFound,
    TransferTypeUnknown,
    ValidationError,
}

impl Reason {
    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 22] = [
        Reason::PayeeNotFound,
        Reason::PayerNotFound,
        Reason::NotEnoughFunds,
        Reason::PayerLimitReached,
        Reason::PayeeLimitReached,
        Reason::PayeeNotAllowedToReceive,
        Reason::SenderAccountNotActive,
        Reason::NotAllowed,
        Reason::NotAllowedTargetEnvironment,
        Reason::InvalidCallbackUrlHost,
        Reason::InvalidCurrency,
        Reason::PaymentNotApproved,
        Reason::ApprovalRejected,
        Reason::Expired,
        Reason::TransactionCanceled,
        Reason::CouldNotPerformTransaction,
        Reason::InternalProcessingError,
        Reason::ServiceUnavailable,
        Reason::ResourceAlreadyExist,
        Reason::ResourceNotFound,
        Reason::TransferTypeUnknown,
        Reason::ValidationError,
    ];

    /// MTN's spelling.
    pub fn code(self) -> &'static str {
        match self {
            Reason::PayeeNotFound => "PAYEE_NOT_FOUND",
            Reason::PayerNotFound => "PAYER_NOT_FOUND",
            Reason::NotEnoughFunds => "NOT_ENOUGH_FUNDS",
            Reason::PayerLimitReached => "PAYER_LIMIT_REACHED",
            Reason::PayeeLimitReached => "PAYEE_LIMIT_REACHED",
            Reason::PayeeNotAllowedToReceive => "PAYEE_NOT_ALLOWED_TO_RECEIVE",
            Reason::SenderAccountNotActive => "SENDER_ACCOUNT_NOT_ACTIVE",
            Reason::NotAllowed => "NOT_ALLOWED",
            Reason::NotAllowedTargetEnvironment => "NOT_ALLOWED_TARGET_ENVIRONMENT",
            Reason::InvalidCallbackUrlHost => "INVALID_CALLBACK_URL_HOST",
            Reason::InvalidCurrency => "INVALID_CURRENCY",
            Reason::PaymentNotApproved => "PAYMENT_NOT_APPROVED",
            Reason::ApprovalRejected => "APPROVAL_REJECTED",
            Reason::Expired => "EXPIRED",
            Reason::TransactionCanceled => "TRANSACTION_CANCELED",
            Reason::CouldNotPerformTransaction => "COULD_NOT_PERFORM_TRANSACTION",
            Reason::InternalProcessingError => "INTERNAL_PROCESSING_ERROR",
            Reason::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Reason::ResourceAlreadyExist => "RESOURCE_ALREADY_EXIST",
            Reason::ResourceNotFound => "RESOURCE_NOT_FOUND",
            Reason::TransferTypeUnknown => "TRANSFER_TYPE_UNKNOWN",
            Reason::ValidationError => "VALIDATION_ERROR",
        }
    }

    /// What it means, for people.
    pub fn meaning(self) -> &'static str {
        match self {
            Reason::PayeeNotFound => "the payee is not a registered MoMo wallet",
            Reason::PayerNotFound => "the payer is not a registered MoMo wallet",
            Reason::NotEnoughFunds => {
                "not enough funds (the payer's wallet, or for transfers our disbursement account)"
            }
            Reason::PayerLimitReached => "the payer's limit is reached",
            Reason::PayeeLimitReached => "the payee's limit is reached",
            Reason::PayeeNotAllowedToReceive => "the payee's wallet may not receive (blocked or at its limit)",
            Reason::SenderAccountNotActive => "the sending account is not active",
            Reason::NotAllowed => "the API user is not permitted to do this",
            Reason::NotAllowedTargetEnvironment => "the X-Target-Environment is not allowed for these credentials",
            Reason::InvalidCallbackUrlHost => "the callback host is not the API user's providerCallbackHost",
            Reason::InvalidCurrency => "the currency is not served in this market",
            Reason::PaymentNotApproved => "the payer did not approve the payment",
            Reason::ApprovalRejected => "the payer rejected the payment",
            Reason::Expired => "the request expired before the payer approved it",
            Reason::TransactionCanceled => "the transaction was cancelled",
            Reason::CouldNotPerformTransaction => "MTN could not complete the transaction",
            Reason::InternalProcessingError => "MTN's generic processing failure",
            Reason::ServiceUnavailable => "MTN was temporarily unavailable",
            Reason::ResourceAlreadyExist => "the reference id was already used",
            Reason::ResourceNotFound => "MTN knows no such reference",
            Reason::TransferTypeUnknown => "transfer type unknown",
            Reason::ValidationError => "MTN found the request invalid",
        }
    }

    pub fn parse(code: &str) -> Option<Reason> {
        let code = code.trim();
        Reason::ALL
            .into_iter()
            .find(|reason| reason.code().eq_ignore_ascii_case(code))
    }
}

fn unknown(code: &str, detail: &str) -> Outcome {
    tracing::warn!(
        code,
        "unrecognised MTN status or reason; left for a status query or an admin"
    );
    Outcome::Unknown {
        code: code.to_owned(),
        detail: detail.chars().take(200).collect(),
    }
}

/// A transaction's `status` and, on FAILED, its `reason`.
pub fn status(status: &str, reason: Option<&WireReason>) -> Outcome {
    match status.trim().to_ascii_uppercase().as_str() {
        "PENDING" => Outcome::Pending,
        "SUCCESSFUL" => Outcome::Succeeded,
        "FAILED" => match reason.filter(|r| !r.code.trim().is_empty()) {
            Some(reason) => failed(&reason.code, &reason.message),
            // MTN's word is FAILED; the sandbox's generic failure gives no
            // reason.
            None => Outcome::Failed {
                code: "FAILED".to_owned(),
                reason: "MTN reports FAILED without a reason".to_owned(),
            },
        },
        _ => unknown(status, "transaction status"),
    }
}

/// A FAILED transaction's reason code.
pub fn failed(code: &str, message: &str) -> Outcome {
    let Some(reason) = Reason::parse(code) else {
        return unknown(code, message);
    };
    let final_failure = || Outcome::Failed {
        code: reason.code().to_owned(),
        reason: reason.meaning().to_owned(),
    };
    match reason {
        Reason::PayeeNotFound
        | Reason::PayerNotFound
        | Reason::NotEnoughFunds
        | Reason::PayerLimitReached
        | Reason::PayeeLimitReached
        | Reason::PayeeNotAllowedToReceive
        | Reason::SenderAccountNotActive
        | Reason::NotAllowed
        | Reason::NotAllowedTargetEnvironment
        | Reason::InvalidCallbackUrlHost
        | Reason::InvalidCurrency
        | Reason::PaymentNotApproved
        | Reason::ApprovalRejected
        | Reason::Expired
        | Reason::TransactionCanceled
        | Reason::CouldNotPerformTransaction
        | Reason::InternalProcessingError
        | Reason::ServiceUnavailable
        | Reason::TransferTypeUnknown
        | Reason::ValidationError => final_failure(),
        // Answers about a reference, not outcomes of a transaction: a
        // FAILED status carrying one is not understood.
        Reason::ResourceAlreadyExist | Reason::ResourceNotFound => unknown(code, message),
    }
}

/// A transfer or request to pay answered with HTTP `http` (not 202) and,
/// where the body had one, an error `code`.
pub fn refusal(http: u16, code: Option<&str>, message: &str) -> CallError {
    let rejected = |code: &str| CallError::Rejected {
        code: code.to_owned(),
        message: message.chars().take(200).collect(),
    };
    let Some(reason) = code.and_then(Reason::parse) else {
        return by_http_status(http, code.unwrap_or_default(), message);
    };
    match reason {
        Reason::ResourceAlreadyExist => CallError::Duplicate,
        Reason::ServiceUnavailable => CallError::Busy(format!("HTTP {http} SERVICE_UNAVAILABLE")),
        Reason::InvalidCurrency
        | Reason::NotAllowedTargetEnvironment
        | Reason::InvalidCallbackUrlHost
        | Reason::NotAllowed
        | Reason::SenderAccountNotActive
        // A POST to a resource MTN does not know: a wrong URL or product.
        | Reason::ResourceNotFound => CallError::Config(format!("MTN answered {}: {}", reason.code(), reason.meaning())),
        // Refusals of this one request, decided before anything moved.
        Reason::PayeeNotFound
        | Reason::PayerNotFound
        | Reason::NotEnoughFunds
        | Reason::PayerLimitReached
        | Reason::PayeeLimitReached
        | Reason::PayeeNotAllowedToReceive
        | Reason::PaymentNotApproved
        | Reason::ApprovalRejected
        | Reason::Expired
        | Reason::TransactionCanceled
        | Reason::TransferTypeUnknown
        | Reason::ValidationError => rejected(reason.code()),
        // Generic failures: on a 5xx the money may have moved.
        Reason::CouldNotPerformTransaction | Reason::InternalProcessingError => {
            by_http_status(http, reason.code(), message)
        }
    }
}

/// What an HTTP status alone says about a POST.
fn by_http_status(http: u16, code: &str, message: &str) -> CallError {
    let code = if code.is_empty() {
        http.to_string()
    } else {
        code.to_owned()
    };
    match http {
        409 => CallError::Duplicate,
        429 | 503 => CallError::Busy(format!("HTTP {http} {code}")),
        // The request timed out in a gateway that may already have handed
        // it on: the money may have moved.
        408 => CallError::Ambiguous(format!("HTTP {http} {code}")),
        401 | 403 | 404 => CallError::Config(format!(
            "MTN answered HTTP {http} {code} (credentials, subscription key, IP allow-list or URL)"
        )),
        400..=499 => CallError::Rejected {
            code,
            message: message.chars().take(200).collect(),
        },
        _ => CallError::Ambiguous(format!("HTTP {http} {code}")),
    }
}

/// A status or balance query answered with HTTP `http` (not 200, and for
/// a status not 404). A query moves no money, so nothing here is
/// `Ambiguous` or `Rejected` (which would read as a refused payment):
/// either ask again later, or our setup is wrong.
pub fn query_refusal(http: u16, code: Option<&str>) -> CallError {
    let code_text = code.unwrap_or_default();
    match code.and_then(Reason::parse) {
        Some(
            Reason::InvalidCurrency
            | Reason::NotAllowedTargetEnvironment
            | Reason::InvalidCallbackUrlHost
            | Reason::NotAllowed
            | Reason::SenderAccountNotActive,
        ) => CallError::Config(format!("MTN answered the query with {code_text}")),
        _ if matches!(http, 400..=499) && http != 408 && http != 429 => {
            CallError::Config(format!("MTN refused the query: HTTP {http} {code_text}"))
        }
        _ => CallError::Busy(format!("MTN query answered HTTP {http} {code_text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(code: &str) -> WireReason {
        WireReason {
            code: code.to_owned(),
            message: String::new(),
        }
    }

    #[test]
    fn every_reason_round_trips_through_its_code() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.code()), Some(reason));
        }
        assert_eq!(Reason::parse(" payee_not_found "), Some(Reason::PayeeNotFound));
        assert_eq!(Reason::parse("SOMETHING_NEW"), None);
    }

    #[test]
    fn statuses_map_to_outcomes_and_unknown_ones_are_never_guessed() {
        assert_eq!(status("PENDING", None), Outcome::Pending);
        assert_eq!(status("SUCCESSFUL", None), Outcome::Succeeded);
        assert_eq!(
            status("FAILED", Some(&reason("PAYER_NOT_FOUND"))),
            Outcome::Failed {
                code: "PAYER_NOT_FOUND".into(),
                reason: Reason::PayerNotFound.meaning().into()
            }
        );
        assert!(matches!(status("FAILED", None), Outcome::Failed { ref code, .. } if code == "FAILED"));
        assert!(matches!(
            status("FAILED", Some(&reason("NEW_REASON"))),
            Outcome::Unknown { .. }
        ));
        assert!(matches!(status("ONGOING", None), Outcome::Unknown { .. }));
        assert!(matches!(
            status("FAILED", Some(&reason("RESOURCE_NOT_FOUND"))),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn every_transaction_failure_reason_is_a_final_failure() {
        for reason in Reason::ALL {
            let outcome = failed(reason.code(), "");
            match reason {
                Reason::ResourceAlreadyExist | Reason::ResourceNotFound => {
                    assert!(matches!(outcome, Outcome::Unknown { .. }), "{reason:?}")
                }
                _ => assert!(matches!(outcome, Outcome::Failed { .. }), "{reason:?}"),
            }
        }
    }

    #[test]
    fn a_repeated_reference_is_a_duplicate_never_a_failure() {
        assert!(matches!(
            refusal(409, Some("RESOURCE_ALREADY_EXIST"), ""),
            CallError::Duplicate
        ));
        assert!(matches!(refusal(409, None, ""), CallError::Duplicate));
    }

    #[test]
    fn configuration_errors_sent_as_http_500_are_config_not_retries() {
        for code in [
            "INVALID_CURRENCY",
            "NOT_ALLOWED_TARGET_ENVIRONMENT",
            "INVALID_CALLBACK_URL_HOST",
        ] {
            assert!(matches!(refusal(500, Some(code), ""), CallError::Config(_)), "{code}");
        }
        assert!(matches!(refusal(401, None, ""), CallError::Config(_)));
        assert!(matches!(refusal(403, None, ""), CallError::Config(_)));
    }

    #[test]
    fn a_server_error_without_a_known_code_after_sending_is_ambiguous() {
        assert!(matches!(refusal(500, None, ""), CallError::Ambiguous(_)));
        assert!(matches!(refusal(500, Some("WHATEVER"), ""), CallError::Ambiguous(_)));
        assert!(matches!(
            refusal(500, Some("INTERNAL_PROCESSING_ERROR"), ""),
            CallError::Ambiguous(_)
        ));
        assert!(matches!(refusal(502, None, ""), CallError::Ambiguous(_)));
        assert!(matches!(refusal(504, None, ""), CallError::Ambiguous(_)));
    }

    #[test]
    fn overload_before_processing_is_busy() {
        assert!(matches!(refusal(429, None, ""), CallError::Busy(_)));
        assert!(matches!(refusal(503, None, ""), CallError::Busy(_)));
        assert!(matches!(
            refusal(500, Some("SERVICE_UNAVAILABLE"), ""),
            CallError::Busy(_)
        ));
    }

    #[test]
    fn a_request_timeout_on_a_payment_is_ambiguous_never_a_refusal() {
        assert!(matches!(refusal(408, None, ""), CallError::Ambiguous(_)));
        assert!(matches!(refusal(400, None, ""), CallError::Rejected { .. }));
    }

    #[test]
    fn a_bad_request_or_a_refused_party_is_rejected() {
        assert!(matches!(refusal(400, None, "bad"), CallError::Rejected { ref code, .. } if code == "400"));
        assert!(
            matches!(refusal(500, Some("PAYEE_NOT_FOUND"), ""), CallError::Rejected { ref code, .. } if code == "PAYEE_NOT_FOUND")
        );
    }

    #[test]
    fn a_failed_query_is_never_read_as_a_refused_payment() {
        assert!(matches!(query_refusal(503, None), CallError::Busy(_)));
        assert!(matches!(query_refusal(500, None), CallError::Busy(_)));
        assert!(matches!(query_refusal(429, None), CallError::Busy(_)));
        assert!(matches!(query_refusal(401, None), CallError::Config(_)));
        assert!(matches!(
            query_refusal(500, Some("NOT_ALLOWED_TARGET_ENVIRONMENT")),
            CallError::Config(_)
        ));
    }
}
