//! What the API (and webhook deliveries) show of intents and their events.
//! Phone numbers appear masked to their last three digits: product services
//! know the full number they sent, and responses end up in logs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Currency, Money, Msisdn};
use crate::policy::fees::Breakdown;
use crate::store::intents::{EventRow, IntentRow};

/// An amount as the API shows it: a decimal string at its currency's
/// precision (`"1500.00"`, `"5000"` for UGX).
pub fn money_text(value: rust_decimal::Decimal, currency: &str) -> String {
    currency
        .parse::<Currency>()
        .ok()
        .and_then(|c| Money::new(value, c).ok())
        .map_or_else(|| value.normalize().to_string(), |m| m.amount().to_string())
}

/// The phone side of an intent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PhoneView {
    /// The number with all but the last three digits masked.
    #[schema(example = "*********678")]
    pub msisdn: String,
    #[schema(example = "mpesa")]
    pub provider: String,
}

/// A payout or collection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IntentView {
    pub id: Uuid,
    /// `payout` or `collection`.
    pub kind: String,
    /// The workflow state, e.g. `pending`, `processing`, `completed`.
    pub state: String,
    /// Decimal string in major units, at the currency's precision.
    #[schema(example = "1500.00")]
    pub amount: String,
    #[schema(example = "KES")]
    pub currency: String,
    /// For payouts: who receives the money.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<PhoneView>,
    /// For collections: who pays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<PhoneView>,
    pub party_id: String,
    pub reference: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Tuma's request id toward the provider, once assigned.
    pub provider_ref: Option<String>,
    /// The provider's transaction id (e.g. the M-Pesa receipt) once paid.
    pub receipt: Option<String>,
    /// Why a pending intent is being held back (e.g. the float is too low).
    pub hold_reason: Option<String>,
    /// For payouts: what leaves the balance, each fee, the rate, and what
    /// arrives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fees: Option<Breakdown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote_id: Option<Uuid>,
    /// What the payout counts for against USD limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "12.21")]
    pub usd_equivalent: Option<rust_decimal::Decimal>,
    /// Approvals from different approvers it needs (0: none).
    pub approvals_required: i16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the intent reached a final state.
    pub final_at: Option<DateTime<Utc>>,
}

impl IntentView {
    pub fn from_row(row: &IntentRow) -> IntentView {
        let amount = money_text(row.amount, &row.currency);
        let masked = Msisdn::try_from(row.msisdn.clone())
            .map(|m| m.masked())
            .unwrap_or_else(|_| "***".to_owned());
        let phone = PhoneView {
            msisdn: masked,
            provider: row.provider.clone(),
        };
        let (recipient, payer) = if row.kind == "collection" {
            (None, Some(phone))
        } else {
            (Some(phone), None)
        };
        IntentView {
            id: row.id,
            kind: row.kind.clone(),
            state: row.state.clone(),
            amount,
            currency: row.currency.clone(),
            recipient,
            payer,
            party_id: row.party_id.clone(),
            reference: row.reference.clone(),
            metadata: row.metadata.clone(),
            provider_ref: row.provider_ref.clone(),
            receipt: row.receipt.clone(),
            hold_reason: row.hold_reason.clone(),
            fees: row.fees.clone().and_then(|f| serde_json::from_value(f).ok()),
            quote_id: row.quote_id,
            usd_equivalent: row.usd_equivalent,
            approvals_required: row.approvals_required,
            campaign_id: row.campaign_id.clone(),
            batch_id: row.batch_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
            final_at: row.final_at,
        }
    }
}

/// One entry of an intent's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub event: String,
    /// Absent for the creation.
    pub from: Option<String>,
    /// Absent when the event was rejected.
    pub to: Option<String>,
    /// `applied` or `rejected`.
    pub outcome: String,
    pub reason: Option<String>,
    /// `api`, `callback`, `poll`, `timer`, `admin` or `policy`.
    pub cause: String,
    pub actor: String,
    pub provider_ref: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<&EventRow> for EventView {
    fn from(row: &EventRow) -> EventView {
        EventView {
            id: row.id,
            event: row.event.clone(),
            from: row.from_state.clone(),
            to: row.to_state.clone(),
            outcome: row.outcome.clone(),
            reason: row.reason.clone(),
            cause: row.cause.clone(),
            actor: row.actor.clone(),
            provider_ref: row.provider_ref.clone(),
            at: row.at,
        }
    }
}

/// An intent with its full history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IntentDetail {
    #[serde(flatten)]
    pub intent: IntentView,
    pub events: Vec<EventView>,
    /// What policy noticed (AML, velocity), rule by rule.
    pub flags: Vec<FlagView>,
    /// Approvers' decisions.
    pub approvals: Vec<ApprovalView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagView {
    #[schema(example = "aml_large_payout")]
    pub rule: String,
    /// `flag` (recorded) or `review` (sent to an approver).
    pub action: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovalView {
    pub approver: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A page of intents, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IntentPage {
    pub data: Vec<IntentView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}
