//! Tigo Pesa's wire format (the contract in [`super`]): the token answer,
//! the push bill-pay request and answer, the callback body, and Tuma's
//! assumed disbursement and status-enquiry bodies. Parsing is tolerant of
//! what integrators report of gateways like this one: booleans sent as
//! strings, ids and amounts sent as numbers or strings, fields left out.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Text Tigo may send as a string or a number (ids, amounts, codes);
/// `null` and `false` read as empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(Text(s.trim().to_owned())),
            Value::Number(n) => Ok(Text(n.to_string())),
            Value::Null | Value::Bool(false) => Ok(Text::default()),
            other => Err(serde::de::Error::custom(format!("expected text, got {other}"))),
        }
    }
}

impl Text {
    /// `None` when empty.
    pub fn non_empty(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.clone())
    }
}

/// A flag Tigo may send as a boolean, as `"true"`/`"false"` (any case) or
/// as `1`/`0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let flag = match &value {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            Value::Number(n) => match n.as_u64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            _ => None,
        };
        flag.map(Flag)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a boolean, got {value}")))
    }
}

/// A whole amount in TZS: sent as an integer, read from an integer or a
/// numeric string (`"1000"`, `"1000.00"`). A fraction is refused, never
/// rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeAmount(pub u64);

impl Serialize for WholeAmount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for WholeAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let text = match &value {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            _ => String::new(),
        };
        parse_whole(&text)
            .map(WholeAmount)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a whole amount, got {value}")))
    }
}

/// `"1000"`, `"1000.0"`, `"1000.00"` → 1000; anything with a fraction or
/// a sign → `None`.
fn parse_whole(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b == b'0') {
        return None;
    }
    whole.parse().ok()
}

/// `POST <token_path>` answer (OAuth 2 password grant).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Text,
    /// Seconds; an integer in the public SDKs, read from a string too.
    #[serde(default)]
    pub expires_in: Text,
}

/// The OAuth error body of a refused token request
/// (`invalid_grant`, `unsupported_grant_type`).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenError {
    pub error: String,
    #[serde(default)]
    pub error_description: String,
}

/// `POST <push_path>`: ask the customer to approve a payment on their phone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BillerPayRequest {
    /// The payer, `2557XXXXXXXX`.
    #[serde(rename = "CustomerMSISDN")]
    pub customer_msisdn: String,
    /// The business account the money goes to.
    #[serde(rename = "BillerMSISDN")]
    pub biller_msisdn: String,
    #[serde(rename = "Amount")]
    pub amount: WholeAmount,
    #[serde(rename = "Remarks", default, skip_serializing_if = "String::is_empty")]
    pub remarks: String,
    /// Our request id: Tigo's idempotency key and the callback's key.
    #[serde(rename = "ReferenceID")]
    pub reference_id: String,
}

/// The push bill-pay answer: `BILLER-18-0000-S` with `ResponseStatus` true
/// means the prompt was sent, not that the customer paid.
#[derive(Debug, Clone, Deserialize)]
pub struct BillerPayResponse {
    #[serde(rename = "ResponseCode")]
    pub response_code: Text,
    #[serde(rename = "ResponseStatus", default)]
    pub response_status: Flag,
    #[serde(rename = "ResponseDescription", default)]
    pub response_description: Text,
    #[serde(rename = "ReferenceID", alias = "ReferenceId", default)]
    pub reference_id: Text,
    #[serde(rename = "Message", default)]
    pub message: Text,
}

/// `POST <disbursement_path>` (Tuma's assumed JSON contract for A2W).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisbursementRequest {
    /// Our request id: the idempotency key.
    pub reference_id: String,
    /// The recipient, `2557XXXXXXXX`.
    pub msisdn: String,
    pub amount: WholeAmount,
    #[serde(default)]
    pub remarks: String,
}

/// The disbursement answer: `status` true with an `mfs_transaction_id`
/// means paid; true without one means accepted, the result to follow.
#[derive(Debug, Clone, Deserialize)]
pub struct DisbursementResponse {
    pub response_code: Text,
    #[serde(default)]
    pub status: Flag,
    #[serde(default)]
    pub description: Text,
    #[serde(default)]
    pub mfs_transaction_id: Text,
}

/// `GET <status_path>/{ReferenceID}` answer (assumed contract).
#[derive(Debug, Clone, Deserialize)]
pub struct StatusResponse {
    #[serde(rename = "ReferenceID", alias = "ReferenceId", default)]
    pub reference_id: Text,
    /// `SUCCESS`, `FAILED`, `PENDING` or `EXPIRED`; absent on "not found".
    #[serde(rename = "Status", default)]
    pub status: Text,
    #[serde(rename = "MFSTransactionID", alias = "MFSTransactionId", default)]
    pub mfs_transaction_id: Text,
    #[serde(rename = "ResponseCode", default)]
    pub response_code: Text,
    #[serde(rename = "Description", default)]
    pub description: Text,
}

/// The callback Tigo POSTs to the URL configured with it, for collections
/// and (assumed) disbursements alike. It carries no signature.
#[derive(Debug, Clone, Deserialize)]
pub struct Callback {
    #[serde(rename = "Status")]
    pub status: Flag,
    #[serde(rename = "Description", default)]
    pub description: Text,
    /// Left out when the payment failed.
    #[serde(rename = "MFSTransactionID", alias = "MFSTransactionId", default)]
    pub mfs_transaction_id: Text,
    #[serde(rename = "ReferenceID", alias = "ReferenceId")]
    pub reference_id: Text,
    /// A string (`"1000"`) in the public SDKs; a number is read too.
    #[serde(rename = "Amount", default)]
    pub amount: Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_is_read_with_mixed_types_and_a_missing_transaction_id() {
        let body = r#"{"Status":"false","Description":"Insufficient balance","ReferenceID":12345,"Amount":1000}"#;
        let callback: Callback = serde_json::from_str(body).unwrap();
        assert!(!callback.status.0);
        assert_eq!(callback.reference_id.0, "12345");
        assert_eq!(callback.amount.0, "1000");
        assert_eq!(callback.mfs_transaction_id.non_empty(), None);
    }

    #[test]
    fn flags_accept_booleans_strings_and_digits_and_refuse_anything_else() {
        for (json, expected) in [
            ("true", true),
            ("\"TRUE\"", true),
            ("1", true),
            ("false", false),
            ("\"0\"", false),
        ] {
            assert_eq!(serde_json::from_str::<Flag>(json).unwrap(), Flag(expected), "{json}");
        }
        assert!(serde_json::from_str::<Flag>("\"yes\"").is_err());
        assert!(serde_json::from_str::<Flag>("2").is_err());
    }

    #[test]
    fn whole_amounts_read_integers_and_zero_fractions_and_refuse_real_fractions() {
        assert_eq!(serde_json::from_str::<WholeAmount>("1000").unwrap(), WholeAmount(1000));
        assert_eq!(
            serde_json::from_str::<WholeAmount>("\"1000.00\"").unwrap(),
            WholeAmount(1000)
        );
        assert!(serde_json::from_str::<WholeAmount>("\"1000.50\"").is_err());
        assert!(serde_json::from_str::<WholeAmount>("-5").is_err());
        assert!(serde_json::from_str::<WholeAmount>("10.5").is_err());
        assert_eq!(serde_json::to_string(&WholeAmount(7)).unwrap(), "7");
    }

    #[test]
    fn a_push_request_leaves_out_empty_remarks_and_uses_tigos_field_names() {
        let request = BillerPayRequest {
            customer_msisdn: "255712345678".into(),
            biller_msisdn: "255650000000".into(),
            amount: WholeAmount(500),
            remarks: String::new(),
            reference_id: "r-1".into(),
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "CustomerMSISDN": "255712345678", "BillerMSISDN": "255650000000",
                "Amount": 500, "ReferenceID": "r-1"
            })
        );
    }

    #[test]
    fn token_answers_read_expires_in_as_a_number_or_a_string() {
        let a: TokenResponse =
            serde_json::from_str(r#"{"access_token":"t","token_type":"bearer","expires_in":3599}"#).unwrap();
        let b: TokenResponse = serde_json::from_str(r#"{"access_token":"t","expires_in":"3599"}"#).unwrap();
        assert_eq!((a.expires_in.0.as_str(), b.expires_in.0.as_str()), ("3599", "3599"));
    }
}
