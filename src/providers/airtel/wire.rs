//! Airtel Money Open API wire format: request bodies, the response
//! envelope, error bodies and callback bodies, with the tolerance Airtel's
//! answers demand (ids, codes and flags sent as strings, numbers, booleans —
//! `data.transaction.id` is sometimes `false` — blocks that are missing,
//! empty or `null`, and errors in three different shapes).
//!
//! The simulator ([`crate::simulator::airtel`]) reads and writes the same
//! types, so the two cannot drift apart silently.

use base64::Engine as _;
use hmac::Mac;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A scalar Airtel sends as a string, a number or a boolean, or leaves out.
/// `false`, `null`, an empty string and an absent field all read as `None`:
/// Airtel uses `false` for "no value" in `data.transaction.id`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loose(pub Option<String>);

impl Loose {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The value, or `""` when there is none.
    pub fn text(&self) -> &str {
        self.0.as_deref().unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Loose(match Value::deserialize(deserializer)? {
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(true) => Some("true".to_owned()),
            Value::Bool(false) | Value::Null | Value::Array(_) | Value::Object(_) => None,
        }))
    }
}

impl Serialize for Loose {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(value) => serializer.serialize_str(value),
            None => serializer.serialize_none(),
        }
    }
}

/// A field whose value may have an unexpected shape: anything that does not
/// read as `T` reads as `None` rather than failing the whole body.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// A whole amount in major units, sent as a JSON number. Read from a number
/// (`100`, `100.0`) or a numeric string (`"100"`); a fraction does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub u64);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = match Value::deserialize(deserializer)? {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            other => return Err(serde::de::Error::custom(format!("expected an amount, got {other}"))),
        };
        let decimal: rust_decimal::Decimal = text
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("not an amount: {text}")))?;
        if !decimal.fract().is_zero() || decimal.is_sign_negative() {
            return Err(serde::de::Error::custom(format!("not a whole positive amount: {text}")));
        }
        use rust_decimal::prelude::ToPrimitive;
        decimal
            .to_u64()
            .map(Amount)
            .ok_or_else(|| serde::de::Error::custom(format!("amount out of range: {text}")))
    }
}

/// `POST /auth/oauth2/token` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: String,
    /// Always `client_credentials`.
    pub grant_type: String,
}

/// `POST /auth/oauth2/token` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Seconds; `"180"` (a string) in UAT samples, a number elsewhere.
    #[serde(default)]
    pub expires_in: Loose,
    #[serde(default)]
    pub token_type: Loose,
}

/// `payee` of a disbursement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payee {
    /// National number: no country code, no leading 0.
    pub msisdn: String,
}

/// `transaction` of a disbursement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisbursementTransaction {
    pub amount: Amount,
    /// Our request id: Airtel's caller-chosen idempotency key.
    pub id: String,
}

/// `POST /standard/v1/disbursements/` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisbursementRequest {
    pub payee: Payee,
    pub reference: String,
    /// The disbursement PIN, RSA-encrypted with Airtel's public key, base64.
    pub pin: String,
    pub transaction: DisbursementTransaction,
}

/// `subscriber` of a collection (USSD push).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushSubscriber {
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    /// National number: no country code, no leading 0.
    pub msisdn: String,
}

/// `transaction` of a collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushTransaction {
    pub amount: Amount,
    pub country: String,
    pub currency: String,
    /// Our request id: Airtel's caller-chosen idempotency key.
    pub id: String,
}

/// `POST /merchant/v1/payments/` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushRequest {
    pub reference: String,
    pub subscriber: PushSubscriber,
    pub transaction: PushTransaction,
}

/// `data.transaction` of an answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransactionBlock {
    /// Our id echoed back; sometimes `false`.
    #[serde(default)]
    pub id: Loose,
    #[serde(default)]
    pub reference_id: Loose,
    #[serde(default)]
    pub airtel_money_id: Loose,
    /// `TS`, `TF`, `TIP`, `TA`, `TE`, `TR`, or `SUCCESS` for a push sent.
    #[serde(default)]
    pub status: Loose,
    #[serde(default)]
    pub message: Loose,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataBlock {
    #[serde(default, deserialize_with = "lenient")]
    pub transaction: Option<TransactionBlock>,
}

/// The `status` block: `response_code` is the business outcome (DP008…,
/// DP009…), `result_code` the gateway's (ESB…, ROUTER…).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusBlock {
    #[serde(default)]
    pub code: Loose,
    #[serde(default)]
    pub message: Loose,
    #[serde(default)]
    pub result_code: Loose,
    #[serde(default)]
    pub response_code: Loose,
    #[serde(default)]
    pub success: Loose,
}

/// Every answer body Airtel sends, in one tolerant shape: the usual
/// `{data, status}` envelope, the router's flat `{status_code,
/// status_message}` errors and the OAuth `{error, error_description}` ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default, deserialize_with = "lenient")]
    pub data: Option<DataBlock>,
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<StatusBlock>,
    #[serde(default)]
    pub status_code: Loose,
    #[serde(default)]
    pub status_message: Loose,
    #[serde(default)]
    pub error: Loose,
    #[serde(default)]
    pub error_description: Loose,
}

impl Envelope {
    pub fn transaction(&self) -> Option<&TransactionBlock> {
        self.data.as_ref().and_then(|d| d.transaction.as_ref())
    }

    /// The code to branch on: `status.response_code` first, then the
    /// gateway's `status.result_code`, then a router error's `status_code`.
    pub fn code(&self) -> Option<&str> {
        let status = self.status.as_ref();
        status
            .and_then(|s| s.response_code.as_deref())
            .or_else(|| status.and_then(|s| s.result_code.as_deref()))
            .or_else(|| self.status_code.as_deref())
    }

    /// What Airtel said in words, for logs and failure reasons.
    pub fn message(&self) -> String {
        let status = self.status.as_ref();
        status
            .and_then(|s| s.message.as_deref())
            .or_else(|| self.status_message.as_deref())
            .or_else(|| self.error_description.as_deref())
            .or_else(|| self.transaction().and_then(|t| t.message.as_deref()))
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect()
    }
}

/// The `transaction` block of a callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallbackTransaction {
    /// Our request id.
    pub id: Loose,
    #[serde(default)]
    pub message: Loose,
    /// `TS` or `TF`.
    pub status_code: Loose,
    #[serde(default)]
    pub airtel_money_id: Loose,
}

/// A callback body as received: the `transaction` object is kept as the
/// exact text sent, because the optional `hash` signs that text.
#[derive(Debug, Deserialize)]
pub struct CallbackBody<'a> {
    #[serde(borrow)]
    pub transaction: &'a serde_json::value::RawValue,
    #[serde(default)]
    pub hash: Loose,
}

/// The callback `hash`: base64(HMAC-SHA256(key, the exact JSON text of the
/// `transaction` object)). Which string Airtel signs is unverified (see the
/// fact sheet, 2.5); this is the reading both sides of Tuma agree on.
pub fn callback_hash(key: &str, transaction_json: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(transaction_json.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `hash` (base64) is the callback hash of `transaction_json`,
/// compared in constant time.
pub fn callback_hash_matches(key: &str, transaction_json: &str, hash: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(hash.trim()) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(transaction_json.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// The international calling code of an Airtel market (ISO 3166 alpha-2).
pub fn calling_code(country: &str) -> Option<&'static str> {
    Some(match country {
        "KE" => "254",
        "UG" => "256",
        "TZ" => "255",
        "RW" => "250",
        "ZM" => "260",
        "MW" => "265",
        "NG" => "234",
        "CD" => "243",
        "CG" => "242",
        "GA" => "241",
        "TD" => "235",
        "NE" => "227",
        "MG" => "261",
        "SC" => "248",
        _ => return None,
    })
}

/// The number as Airtel wants it: national, without the country code and
/// without a leading 0 (`256752604392` in `UG` → `752604392`).
pub fn national_number(msisdn: &str, country: &str) -> Result<String, String> {
    let code = calling_code(&country.trim().to_ascii_uppercase())
        .ok_or_else(|| format!("{country} is not an Airtel market"))?;
    let digits = msisdn.trim().trim_start_matches('+');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the number is not E.164 digits".into());
    }
    let national = digits
        .strip_prefix(code)
        .ok_or_else(|| format!("the number is not in {country} (+{code})"))?
        .trim_start_matches('0');
    if national.is_empty() {
        return Err("the number has no national part".into());
    }
    Ok(national.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_ids_and_codes_of_any_type_and_a_false_id() {
        let body = r#"{"data":{"transaction":{"reference_id":123,"airtel_money_id":"MP1.2","id":false,"status":"TS"}},
            "status":{"code":200,"message":"SUCCESS","result_code":"ESB000010","response_code":"DP00900001001","success":true}}"#;
        let envelope: Envelope = serde_json::from_str(body).unwrap();
        let transaction = envelope.transaction().unwrap();
        assert_eq!(transaction.id, Loose(None), "`false` is no id");
        assert_eq!(transaction.reference_id.as_deref(), Some("123"));
        assert_eq!(envelope.code(), Some("DP00900001001"));
        assert_eq!(envelope.status.as_ref().unwrap().success.as_deref(), Some("true"));
    }

    #[test]
    fn router_and_oauth_errors_and_odd_blocks_read_as_envelopes() {
        let router: Envelope = serde_json::from_str(
            r#"{"status_code":"ROUTER115","status_message":"Pin you have entered is incorrect."}"#,
        )
        .unwrap();
        assert_eq!(router.code(), Some("ROUTER115"));
        assert_eq!(router.message(), "Pin you have entered is incorrect.");
        let gateway: Envelope =
            serde_json::from_str(r#"{"data":{},"status":{"code":"400","result_code":"ESB000041","success":false}}"#)
                .unwrap();
        assert_eq!(
            gateway.code(),
            Some("ESB000041"),
            "no response_code: the gateway's code"
        );
        let odd: Envelope = serde_json::from_str(r#"{"data":"","status":"FAILED","error":"invalid_token"}"#).unwrap();
        assert!(odd.data.is_none() && odd.status.is_none());
        assert_eq!(odd.error.as_deref(), Some("invalid_token"));
    }

    #[test]
    fn amounts_are_whole_numbers_from_numbers_or_strings() {
        assert_eq!(serde_json::from_str::<Amount>("100").unwrap(), Amount(100));
        assert_eq!(serde_json::from_str::<Amount>("100.0").unwrap(), Amount(100));
        assert_eq!(serde_json::from_str::<Amount>("\"2500\"").unwrap(), Amount(2500));
        assert!(serde_json::from_str::<Amount>("10.5").is_err());
        assert!(serde_json::from_str::<Amount>("-3").is_err());
        assert_eq!(serde_json::to_string(&Amount(7)).unwrap(), "7", "sent as a number");
    }

    #[test]
    fn numbers_become_national_without_country_code_or_leading_zero() {
        assert_eq!(national_number("256752604392", "UG").unwrap(), "752604392");
        assert_eq!(national_number("+254733000123", "KE").unwrap(), "733000123");
        assert_eq!(national_number("2550712345678", "TZ").unwrap(), "712345678");
        assert!(national_number("256752604392", "KE").is_err(), "wrong market");
        assert!(national_number("2567526O4392", "UG").is_err());
        assert!(national_number("256752604392", "US").is_err());
    }

    #[test]
    fn the_callback_hash_is_checked_against_the_exact_transaction_text() {
        let text = r#"{"id":"t-1","message":"ok","status_code":"TS","airtel_money_id":"MP1"}"#;
        let hash = callback_hash("key", text);
        assert!(callback_hash_matches("key", text, &hash));
        assert!(!callback_hash_matches("other", text, &hash));
        assert!(!callback_hash_matches("key", &text.replace("TS", "TF"), &hash));
        assert!(!callback_hash_matches("key", text, "not base64!"));
    }
}
