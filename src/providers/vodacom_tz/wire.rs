//! The Open API's wire format for Tanzania: `input_…` request fields and
//! `output_…` answer fields, exactly as the portal and its SDKs name them.
//!
//! Parsing is tolerant: any field may be missing (it reads as empty), and
//! values the documentation shows as strings may arrive as numbers
//! (amounts, ids), so every field is read as text whatever its JSON type.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `input_Country` of the Tanzanian market.
pub const COUNTRY: &str = "TZN";
/// `input_Currency` of the Tanzanian market: the only one it carries.
pub const CURRENCY: &str = "TZS";
/// `input_TransactionReference` is refused (`INS-17`) outside 1–20 chars.
pub const TRANSACTION_REFERENCE_MAX_CHARS: usize = 20;
/// Item descriptions are cut to this; the API names no limit (unverified),
/// and a short text is what the customer's SMS shows anyway.
pub const ITEMS_DESC_MAX_CHARS: usize = 64;

/// Reads a string, number or boolean as text; null and absence as empty.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(serde::de::Error::custom(format!("expected text, got {other}"))),
    }
}

/// `POST {prefix}/b2cPayment/`: pay a customer from our short code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct B2cRequest {
    /// Whole TZS, as a string (`"1000"`); numbers are read too.
    #[serde(rename = "input_Amount", default, deserialize_with = "text")]
    pub amount: String,
    #[serde(rename = "input_Country", default, deserialize_with = "text")]
    pub country: String,
    #[serde(rename = "input_Currency", default, deserialize_with = "text")]
    pub currency: String,
    /// Full international digits, `2557XXXXXXXX`.
    #[serde(rename = "input_CustomerMSISDN", default, deserialize_with = "text")]
    pub customer_msisdn: String,
    #[serde(rename = "input_ServiceProviderCode", default, deserialize_with = "text")]
    pub service_provider_code: String,
    /// Our request id: the idempotency key (`INS-10` when repeated).
    #[serde(rename = "input_ThirdPartyConversationID", default, deserialize_with = "text")]
    pub third_party_conversation_id: String,
    /// 1–20 characters.
    #[serde(rename = "input_TransactionReference", default, deserialize_with = "text")]
    pub transaction_reference: String,
    #[serde(rename = "input_PaymentItemsDesc", default, deserialize_with = "text")]
    pub payment_items_desc: String,
}

/// `POST {prefix}/c2bPayment/singleStage/`: prompt a customer to pay; the
/// call answers once they have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct C2bRequest {
    #[serde(rename = "input_Amount", default, deserialize_with = "text")]
    pub amount: String,
    #[serde(rename = "input_Country", default, deserialize_with = "text")]
    pub country: String,
    #[serde(rename = "input_Currency", default, deserialize_with = "text")]
    pub currency: String,
    #[serde(rename = "input_CustomerMSISDN", default, deserialize_with = "text")]
    pub customer_msisdn: String,
    #[serde(rename = "input_ServiceProviderCode", default, deserialize_with = "text")]
    pub service_provider_code: String,
    #[serde(rename = "input_ThirdPartyConversationID", default, deserialize_with = "text")]
    pub third_party_conversation_id: String,
    #[serde(rename = "input_TransactionReference", default, deserialize_with = "text")]
    pub transaction_reference: String,
    #[serde(rename = "input_PurchasedItemsDesc", default, deserialize_with = "text")]
    pub purchased_items_desc: String,
}

/// The query string of `GET {prefix}/queryTransactionStatus/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusQuery {
    /// The transaction's TransactionID, ConversationID or our
    /// ThirdPartyConversationID (we ask by the last).
    #[serde(rename = "input_QueryReference", default)]
    pub query_reference: String,
    #[serde(rename = "input_ServiceProviderCode", default)]
    pub service_provider_code: String,
    /// A new id for the query itself, not the transaction's.
    #[serde(rename = "input_ThirdPartyConversationID", default)]
    pub third_party_conversation_id: String,
    #[serde(rename = "input_Country", default)]
    pub country: String,
}

/// The two fields every answer carries, success or error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ResponseHead {
    /// `INS-0` on success; `INS-…` otherwise.
    #[serde(rename = "output_ResponseCode", default, deserialize_with = "text")]
    pub response_code: String,
    #[serde(rename = "output_ResponseDesc", default, deserialize_with = "text")]
    pub response_desc: String,
}

/// `GET {prefix}/getSession/` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SessionResponse {
    #[serde(rename = "output_ResponseCode", default, deserialize_with = "text")]
    pub response_code: String,
    #[serde(rename = "output_ResponseDesc", default, deserialize_with = "text")]
    pub response_desc: String,
    #[serde(rename = "output_SessionID", default, deserialize_with = "text")]
    pub session_id: String,
}

/// The answer to a B2C or single-stage C2B payment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PaymentResponse {
    #[serde(rename = "output_ResponseCode", default, deserialize_with = "text")]
    pub response_code: String,
    #[serde(rename = "output_ResponseDesc", default, deserialize_with = "text")]
    pub response_desc: String,
    /// M-Pesa's transaction id: the receipt.
    #[serde(rename = "output_TransactionID", default, deserialize_with = "text")]
    pub transaction_id: String,
    #[serde(rename = "output_ConversationID", default, deserialize_with = "text")]
    pub conversation_id: String,
    #[serde(rename = "output_ThirdPartyConversationID", default, deserialize_with = "text")]
    pub third_party_conversation_id: String,
}

/// The answer to a transaction status query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct QueryResponse {
    #[serde(rename = "output_ResponseCode", default, deserialize_with = "text")]
    pub response_code: String,
    #[serde(rename = "output_ResponseDesc", default, deserialize_with = "text")]
    pub response_desc: String,
    /// `Completed`, `Cancelled`, `Expired`, `Failed`, `Pending` or `N/A`.
    #[serde(rename = "output_ResponseTransactionStatus", default, deserialize_with = "text")]
    pub transaction_status: String,
    #[serde(rename = "output_ConversationID", default, deserialize_with = "text")]
    pub conversation_id: String,
    /// The query's own id, echoed.
    #[serde(rename = "output_ThirdPartyConversationID", default, deserialize_with = "text")]
    pub third_party_conversation_id: String,
    /// The queried transaction's id (the receipt), as most SDKs read it.
    #[serde(rename = "output_OriginalTransactionID", default, deserialize_with = "text")]
    pub original_transaction_id: String,
    /// Some answers carry the id here instead.
    #[serde(rename = "output_TransactionID", default, deserialize_with = "text")]
    pub transaction_id: String,
}

impl QueryResponse {
    /// The queried transaction's receipt, wherever this answer put it.
    pub fn receipt(&self) -> Option<String> {
        [&self.original_transaction_id, &self.transaction_id]
            .into_iter()
            .map(|id| id.trim())
            .find(|id| !id.is_empty() && *id != "N/A")
            .map(str::to_owned)
    }
}

/// `input_Amount`: whole TZS as an integer string; `None` for an amount the
/// API cannot carry (fractional, zero or negative).
pub fn amount_text(amount: Decimal) -> Option<String> {
    (amount > Decimal::ZERO && amount.fract().is_zero()).then(|| amount.trunc().normalize().to_string())
}

/// `input_TransactionReference` from the requester's reference: its ASCII
/// letters and digits, cut to 20; our request id's when none are left, so
/// the field is never empty (`INS-17`).
pub fn transaction_reference(reference: &str, request_id: &str) -> String {
    let pick = |text: &str| -> String {
        text.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(TRANSACTION_REFERENCE_MAX_CHARS)
            .collect()
    };
    let from_reference = pick(reference);
    if from_reference.is_empty() {
        pick(request_id)
    } else {
        from_reference
    }
}

/// `input_PaymentItemsDesc` / `input_PurchasedItemsDesc`: the reference in
/// plain characters, or `fallback` when it has none.
pub fn items_description(reference: &str, fallback: &str) -> String {
    let cleaned: String = reference
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '.' | '_'))
        .take(ITEMS_DESC_MAX_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        fallback.to_owned()
    } else {
        cleaned.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_when_ids_and_amounts_are_numbers_or_missing() {
        let answer: PaymentResponse = serde_json::from_str(
            r#"{"output_ResponseCode":"INS-0","output_ResponseDesc":"Request processed successfully",
                "output_TransactionID":4815162342,"output_ConversationID":null}"#,
        )
        .unwrap();
        assert_eq!(answer.response_code, "INS-0");
        assert_eq!(answer.transaction_id, "4815162342");
        assert_eq!(answer.conversation_id, "");
        assert_eq!(answer.third_party_conversation_id, "");

        let query: QueryResponse = serde_json::from_str(
            r#"{"output_ResponseCode":"INS-0","output_ResponseTransactionStatus":"Completed",
                "output_OriginalTransactionID":"N/A","output_TransactionID":"5C1400CVRO"}"#,
        )
        .unwrap();
        assert_eq!(query.receipt().as_deref(), Some("5C1400CVRO"));

        let request: B2cRequest = serde_json::from_str(r#"{"input_Amount":1000,"input_Country":"TZN"}"#).unwrap();
        assert_eq!(request.amount, "1000");
        assert_eq!(request.customer_msisdn, "", "a missing field reads as empty");
    }

    #[test]
    fn requests_serialize_with_the_portals_field_names() {
        let body = serde_json::to_value(C2bRequest {
            amount: "500".into(),
            purchased_items_desc: "Airtime".into(),
            ..C2bRequest::default()
        })
        .unwrap();
        assert_eq!(body["input_Amount"], "500", "amounts go out as strings");
        assert_eq!(body["input_PurchasedItemsDesc"], "Airtime");
        assert!(body.get("input_ThirdPartyConversationID").is_some());
    }

    #[test]
    fn amounts_go_out_as_whole_shillings_or_not_at_all() {
        assert_eq!(amount_text("1000.00".parse().unwrap()).as_deref(), Some("1000"));
        assert_eq!(amount_text("1000".parse().unwrap()).as_deref(), Some("1000"));
        assert_eq!(amount_text("10.5".parse().unwrap()), None);
        assert_eq!(amount_text(Decimal::ZERO), None);
    }

    #[test]
    fn transaction_references_are_one_to_twenty_plain_characters() {
        assert_eq!(
            transaction_reference("Invoice #2026/11-0042 for Asha", "r1"),
            "Invoice2026110042for"
        );
        assert_eq!(transaction_reference("###", "0192-abcd"), "0192abcd");
        assert_eq!(transaction_reference("", "0192abcd").len(), 8);
        assert_eq!(items_description("  ", "Payout"), "Payout");
        assert_eq!(items_description("Rent: May", "Payout"), "Rent May");
    }
}
