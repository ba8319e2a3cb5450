//! Daraja's wire format: request and response bodies and callback bodies,
//! with the tolerance its quirks demand (codes as integers or strings,
//! parameter lists that may be a single object, values that may be absent,
//! two spellings of the same field).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A code Daraja sends as a number or a string; kept as a string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Code(pub String);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(Code(s)),
            Value::Number(n) => Ok(Code(n.to_string())),
            other => Err(serde::de::Error::custom(format!("expected a code, got {other}"))),
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A list Daraja sometimes sends as a single object.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|item| serde_json::from_value(item).map_err(serde::de::Error::custom))
            .collect(),
        single => Ok(vec![serde_json::from_value(single).map_err(serde::de::Error::custom)?]),
    }
}

/// `GET /oauth/v1/generate` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Seconds, sent as a string (`"3599"`).
    pub expires_in: Code,
}

/// Daraja's synchronous error envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub request_id: String,
    pub error_code: String,
    #[serde(default)]
    pub error_message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkPushRequest {
    pub business_short_code: String,
    pub password: String,
    pub timestamp: String,
    pub transaction_type: String,
    pub amount: u64,
    pub party_a: String,
    pub party_b: String,
    pub phone_number: String,
    #[serde(rename = "CallBackURL")]
    pub callback_url: String,
    pub account_reference: String,
    pub transaction_desc: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkPushResponse {
    #[serde(rename = "MerchantRequestID")]
    pub merchant_request_id: String,
    #[serde(rename = "CheckoutRequestID")]
    pub checkout_request_id: String,
    pub response_code: Code,
    pub response_description: String,
    #[serde(default)]
    pub customer_message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkQueryRequest {
    pub business_short_code: String,
    pub password: String,
    pub timestamp: String,
    #[serde(rename = "CheckoutRequestID")]
    pub checkout_request_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkQueryResponse {
    #[serde(rename = "MerchantRequestID", default)]
    pub merchant_request_id: String,
    #[serde(rename = "CheckoutRequestID")]
    pub checkout_request_id: String,
    pub response_code: Code,
    #[serde(default)]
    pub response_description: String,
    pub result_code: Code,
    #[serde(default)]
    pub result_desc: String,
}

/// One `{Name, Value}` item of STK callback metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NameValue {
    pub name: String,
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CallbackMetadata {
    #[serde(deserialize_with = "one_or_many", default)]
    pub item: Vec<NameValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkCallback {
    #[serde(rename = "MerchantRequestID", default)]
    pub merchant_request_id: String,
    #[serde(rename = "CheckoutRequestID")]
    pub checkout_request_id: String,
    pub result_code: Code,
    #[serde(default)]
    pub result_desc: String,
    #[serde(default)]
    pub callback_metadata: Option<CallbackMetadata>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StkCallbackBody {
    #[serde(rename = "stkCallback")]
    pub stk_callback: StkCallback,
}

/// The STK callback document: `{"Body": {"stkCallback": …}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StkCallbackEnvelope {
    #[serde(rename = "Body")]
    pub body: StkCallbackBody,
}

impl StkCallback {
    /// A metadata value by name; Daraja's order is not to be relied on.
    pub fn metadata(&self, name: &str) -> Option<&Value> {
        self.callback_metadata
            .as_ref()?
            .item
            .iter()
            .find(|item| item.name == name)?
            .value
            .as_ref()
    }

    pub fn receipt(&self) -> Option<String> {
        self.metadata("MpesaReceiptNumber")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct B2cRequest {
    #[serde(
        rename = "OriginatorConversationID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub originator_conversation_id: Option<String>,
    pub initiator_name: String,
    pub security_credential: String,
    #[serde(rename = "CommandID")]
    pub command_id: String,
    pub amount: u64,
    pub party_a: String,
    pub party_b: String,
    pub remarks: String,
    #[serde(rename = "QueueTimeOutURL")]
    pub queue_timeout_url: String,
    #[serde(rename = "ResultURL")]
    pub result_url: String,
    /// Daraja's own spelling; `Occasion` is accepted too.
    #[serde(default, alias = "Occasion", skip_serializing_if = "Option::is_none")]
    pub occassion: Option<String>,
}

/// The synchronous answer to B2C, transaction status, balance and reversal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AcceptedResponse {
    #[serde(rename = "ConversationID")]
    pub conversation_id: String,
    #[serde(rename = "OriginatorConversationID")]
    pub originator_conversation_id: String,
    pub response_code: Code,
    pub response_description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionStatusRequest {
    pub initiator: String,
    pub security_credential: String,
    #[serde(rename = "CommandID")]
    pub command_id: String,
    #[serde(rename = "TransactionID", default)]
    pub transaction_id: String,
    #[serde(rename = "OriginalConversationID", default, skip_serializing_if = "Option::is_none")]
    pub original_conversation_id: Option<String>,
    pub party_a: String,
    pub identifier_type: String,
    #[serde(rename = "ResultURL")]
    pub result_url: String,
    #[serde(rename = "QueueTimeOutURL")]
    pub queue_timeout_url: String,
    pub remarks: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occasion: Option<String>,
}

/// One `{Key, Value}` result parameter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResultParameters {
    #[serde(deserialize_with = "one_or_many", default)]
    pub result_parameter: Vec<KeyValue>,
}

/// The `Result` of a B2C, status, balance or reversal callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResultBody {
    #[serde(default)]
    pub result_type: Option<Code>,
    pub result_code: Code,
    #[serde(default)]
    pub result_desc: String,
    #[serde(rename = "OriginatorConversationID", default)]
    pub originator_conversation_id: String,
    #[serde(rename = "ConversationID", default)]
    pub conversation_id: String,
    #[serde(rename = "TransactionID", default)]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub result_parameters: Option<ResultParameters>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultEnvelope {
    #[serde(rename = "Result")]
    pub result: ResultBody,
}

impl ResultBody {
    /// A result parameter by key (the first, when keys repeat).
    pub fn parameter(&self, key: &str) -> Option<&Value> {
        self.result_parameters
            .as_ref()?
            .result_parameter
            .iter()
            .find(|p| p.key == key)?
            .value
            .as_ref()
    }

    pub fn parameter_str(&self, key: &str) -> Option<String> {
        self.parameter(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The body Daraja sends to both C2B URLs (validation and confirmation).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct C2bNotice {
    #[serde(default)]
    pub transaction_type: String,
    #[serde(rename = "TransID")]
    pub trans_id: String,
    #[serde(default)]
    pub trans_time: String,
    /// A string such as "5.00".
    pub trans_amount: String,
    pub business_short_code: String,
    #[serde(default)]
    pub bill_ref_number: String,
    #[serde(default)]
    pub invoice_number: String,
    #[serde(default)]
    pub org_account_balance: String,
    #[serde(default, rename = "ThirdPartyTransID")]
    pub third_party_trans_id: String,
    /// Masked (v2) or hashed (v1) by Daraja.
    #[serde(rename = "MSISDN", default)]
    pub msisdn: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub middle_name: String,
    #[serde(default)]
    pub last_name: String,
}

impl C2bNotice {
    /// The first field (its wire name) holding a NUL character, which
    /// PostgreSQL's text refuses: such a notice cannot be recorded as sent,
    /// and an id cleaned of it would no longer be Daraja's.
    pub fn nul_field(&self) -> Option<&'static str> {
        [
            ("TransactionType", &self.transaction_type),
            ("TransID", &self.trans_id),
            ("TransTime", &self.trans_time),
            ("TransAmount", &self.trans_amount),
            ("BusinessShortCode", &self.business_short_code),
            ("BillRefNumber", &self.bill_ref_number),
            ("InvoiceNumber", &self.invoice_number),
            ("OrgAccountBalance", &self.org_account_balance),
            ("ThirdPartyTransID", &self.third_party_trans_id),
            ("MSISDN", &self.msisdn),
            ("FirstName", &self.first_name),
            ("MiddleName", &self.middle_name),
            ("LastName", &self.last_name),
        ]
        .into_iter()
        .find(|(_, value)| value.contains('\0'))
        .map(|(name, _)| name)
    }
}

/// One account of an `AccountBalance` result parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountBalance {
    pub name: String,
    pub currency: String,
    pub available: rust_decimal::Decimal,
}

/// Parses Daraja's packed balance string: accounts separated by `&`, fields
/// by `|`: `name|currency|balance|available|reserved|uncleared`. Accounts
/// that do not parse are skipped (and named in the error list).
pub fn parse_balances(packed: &str) -> (Vec<AccountBalance>, Vec<String>) {
    let mut accounts = Vec::new();
    let mut skipped = Vec::new();
    for account in packed.split('&').filter(|a| !a.trim().is_empty()) {
        let fields: Vec<&str> = account.split('|').map(str::trim).collect();
        let available = fields.get(3).and_then(|v| v.parse::<rust_decimal::Decimal>().ok());
        match (fields.first(), fields.get(1), available) {
            (Some(name), Some(currency), Some(available)) => accounts.push(AccountBalance {
                name: (*name).to_owned(),
                currency: (*currency).to_owned(),
                available,
            }),
            _ => skipped.push(account.chars().take(60).collect()),
        }
    }
    (accounts, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_balances_parse_by_account() {
        let (accounts, skipped) = parse_balances(
            "Working Account|KES|700000.00|700000.00|0.00|0.00&Utility Account|KES|228037.00|228000.50|37.00|0.00&Charges Paid Account|KES|-1540.00|-1540.00|0.00|0.00&garbage",
        );
        assert_eq!(accounts.len(), 3);
        assert_eq!(accounts[1].name, "Utility Account");
        assert_eq!(accounts[1].available, "228000.50".parse().unwrap());
        assert_eq!(skipped, vec!["garbage".to_owned()]);
    }

    #[test]
    fn callbacks_parse_despite_daraja_quirks() {
        let stk = r#"{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1","CheckoutRequestID":"ws_CO_191220191020363925",
            "ResultCode":0,"ResultDesc":"The service request is processed successfully.",
            "CallbackMetadata":{"Item":[{"Name":"Amount","Value":1.00},{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"},
            {"Name":"Balance"},{"Name":"TransactionDate","Value":20191219102115},{"Name":"PhoneNumber","Value":254708374149}]}}}}"#;
        let parsed: StkCallbackEnvelope = serde_json::from_str(stk).unwrap();
        assert_eq!(parsed.body.stk_callback.result_code.0, "0");
        assert_eq!(parsed.body.stk_callback.receipt().as_deref(), Some("NLJ7RT61SV"));

        let b2c = r#"{"Result":{"ResultType":0,"ResultCode":"2001","ResultDesc":"The initiator information is invalid.",
            "OriginatorConversationID":"abc","ConversationID":"AG_1","TransactionID":"SG632NMUAB",
            "ResultParameters":{"ResultParameter":{"Key":"TransactionAmount","Value":10}}}}"#;
        let parsed: ResultEnvelope = serde_json::from_str(b2c).unwrap();
        assert_eq!(parsed.result.result_code.0, "2001");
        assert_eq!(parsed.result.parameter_str("TransactionAmount").as_deref(), Some("10"));
    }
}
