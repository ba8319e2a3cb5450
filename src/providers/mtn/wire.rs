//! MTN MoMo's wire format: request bodies as MTN documents them, and
//! answers read with the tolerance its versions and markets demand (ids and
//! amounts as strings or numbers, `reason` as an object or a bare string,
//! `expires_in` as a number or a string).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A value MTN sends as a string or a number; kept as a string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string or a number, got {other}"
            ))),
        }
    }
}

/// `POST /{product}/token/` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    /// Seconds (3600), a number, though some gateways send a string.
    pub expires_in: Text,
}

/// Who pays or is paid: `partyIdType` `MSISDN` with full international
/// digits, or `EMAIL` / `PARTY_CODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Party {
    pub party_id_type: String,
    pub party_id: String,
}

impl Party {
    pub fn msisdn(digits: &str) -> Party {
        Party {
            party_id_type: "MSISDN".to_owned(),
            party_id: digits.to_owned(),
        }
    }
}

/// `POST /disbursement/v1_0/transfer` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferRequest {
    /// Major units, as a string (`"500"`).
    pub amount: String,
    pub currency: String,
    pub external_id: String,
    pub payee: Party,
    /// Up to [`MAX_NOTE_CHARS`].
    pub payer_message: String,
    /// Up to [`MAX_NOTE_CHARS`].
    pub payee_note: String,
}

/// `POST /collection/v1_0/requesttopay` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestToPay {
    /// Major units, as a string (`"500"`).
    pub amount: String,
    pub currency: String,
    pub external_id: String,
    pub payer: Party,
    /// Up to [`MAX_NOTE_CHARS`].
    pub payer_message: String,
    /// Up to [`MAX_NOTE_CHARS`].
    pub payee_note: String,
}

/// MTN refuses a `payerMessage` or `payeeNote` longer than this (HTTP 400).
/// Its API reference says 160 characters; its later note on failure
/// reasons says 128, so notes are kept within the stricter.
pub const MAX_NOTE_CHARS: usize = 128;

/// Why a transaction failed: `{"code", "message"}` in the documented
/// shape, a bare code string in some versions and markets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: String,
    pub message: String,
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(code) => Ok(Reason {
                code,
                message: String::new(),
            }),
            Value::Object(fields) => {
                let text = |name: &str| match fields.get(name) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                Ok(Reason {
                    code: text("code"),
                    message: text("message"),
                })
            }
            other => Err(serde::de::Error::custom(format!("expected a reason, got {other}"))),
        }
    }
}

/// `GET /disbursement/v1_0/transfer/{referenceId}` and
/// `GET /collection/v1_0/requesttopay/{referenceId}` answers, and the
/// callback bodies (the same JSON). Everything but `status` may be absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionStatus {
    #[serde(default)]
    pub amount: Option<Text>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub external_id: Option<Text>,
    /// Not in MTN's documented body; read when a market adds it.
    #[serde(default)]
    pub reference_id: Option<String>,
    #[serde(default)]
    pub payee: Option<Party>,
    #[serde(default)]
    pub payer: Option<Party>,
    /// MTN's transaction id, present once SUCCESSFUL.
    #[serde(default)]
    pub financial_transaction_id: Option<Text>,
    /// `PENDING`, `SUCCESSFUL` or `FAILED`.
    pub status: String,
    #[serde(default)]
    pub reason: Option<Reason>,
}

impl TransactionStatus {
    /// Our request id: the reference id where the body has it, else the
    /// `externalId` the client set to the same id.
    pub fn request_id(&self) -> Option<String> {
        self.reference_id
            .clone()
            .or_else(|| self.external_id.as_ref().map(|id| id.0.clone()))
            .filter(|id| !id.trim().is_empty())
    }
}

/// MTN's error body on 4xx/5xx: `{"code", "message"}`. The API gateway's
/// own refusals (bad subscription key, bad token) use `{"statusCode",
/// "message"}` instead, so both fields default.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// `GET /{product}/v1_0/account/balance` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceResponse {
    /// Major units, a string (`"1000"`), sometimes a number.
    pub available_balance: Text,
    pub currency: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reason_is_read_as_an_object_or_a_bare_string() {
        let object: TransactionStatus = serde_json::from_str(
            r#"{"status":"FAILED","reason":{"code":"PAYEE_NOT_FOUND","message":"Payee not found"}}"#,
        )
        .unwrap();
        let bare: TransactionStatus =
            serde_json::from_str(r#"{"status":"FAILED","reason":"APPROVAL_REJECTED"}"#).unwrap();
        assert_eq!(object.reason.unwrap().code, "PAYEE_NOT_FOUND");
        assert_eq!(bare.reason.unwrap().code, "APPROVAL_REJECTED");
    }

    #[test]
    fn ids_and_amounts_are_read_as_strings_or_numbers() {
        let status: TransactionStatus = serde_json::from_str(
            r#"{"amount":500,"currency":"UGX","externalId":12345,"financialTransactionId":1927264368,"status":"SUCCESSFUL"}"#,
        )
        .unwrap();
        assert_eq!(status.amount, Some(Text("500".into())));
        assert_eq!(status.request_id().as_deref(), Some("12345"));
        assert_eq!(status.financial_transaction_id, Some(Text("1927264368".into())));
        let token: TokenResponse =
            serde_json::from_str(r#"{"access_token":"t","token_type":"access_token","expires_in":"3600"}"#).unwrap();
        assert_eq!(token.expires_in.0, "3600");
        let balance: BalanceResponse = serde_json::from_str(r#"{"availableBalance":1000.5,"currency":"EUR"}"#).unwrap();
        assert_eq!(balance.available_balance.0, "1000.5");
    }

    #[test]
    fn a_reference_id_in_the_body_wins_over_the_external_id_and_blank_ids_are_none() {
        let both: TransactionStatus =
            serde_json::from_str(r#"{"referenceId":"ref","externalId":"ext","status":"PENDING"}"#).unwrap();
        assert_eq!(both.request_id().as_deref(), Some("ref"));
        let blank: TransactionStatus = serde_json::from_str(r#"{"externalId":" ","status":"PENDING"}"#).unwrap();
        assert_eq!(blank.request_id(), None);
    }

    #[test]
    fn request_bodies_use_mtn_field_names() {
        let body = serde_json::to_value(TransferRequest {
            amount: "500".into(),
            currency: "UGX".into(),
            external_id: "id".into(),
            payee: Party::msisdn("256772123456"),
            payer_message: "m".into(),
            payee_note: "n".into(),
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"amount":"500","currency":"UGX","externalId":"id",
                "payee":{"partyIdType":"MSISDN","partyId":"256772123456"},"payerMessage":"m","payeeNote":"n"})
        );
    }
}
