//! Talking to mobile money providers. One module per provider holds its
//! client, wire types and result-code mapping; only that module knows the
//! provider's wire format. The rest of Tuma sees [`Outcome`]s.

pub mod actions;
pub mod adapter;
pub mod airtel;
pub mod callbacks;
pub mod circuit;
pub mod mpesa;
pub mod mtn;
pub mod tigo_tz;
pub mod vodacom_tz;

/// A fresh request id for `provider`, in the form it accepts as its
/// idempotency key: MTN documents `X-Reference-Id` as a UUID version 4;
/// the others take any unique string and get a time-ordered UUID (v7).
pub fn new_request_id(provider: &str) -> String {
    match provider {
        "mtn" => uuid::Uuid::new_v4().to_string(),
        _ => uuid::Uuid::now_v7().to_string(),
    }
}

/// What a provider's answer means for the money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The money moved.
    Succeeded,
    /// The provider definitively refused; the money did not move.
    Failed { code: String, reason: String },
    /// Not decided yet; ask again later.
    Pending,
    /// An answer Tuma does not understand. Never guessed at: the intent
    /// waits for a status query or an admin.
    Unknown { code: String, detail: String },
}

impl Outcome {
    /// The outcome and the provider's code, without its free text (which
    /// may quote a phone number or a name): what a log line may carry.
    pub fn label(&self) -> String {
        match self {
            Outcome::Succeeded => "succeeded".to_owned(),
            Outcome::Failed { code, .. } => format!("failed {code}"),
            Outcome::Pending => "pending".to_owned(),
            Outcome::Unknown { code, .. } => format!("unknown {code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_take_the_form_each_provider_accepts() {
        let version = |provider: &str| {
            super::new_request_id(provider)
                .parse::<uuid::Uuid>()
                .expect("a UUID")
                .get_version_num()
        };
        assert_eq!(version("mtn"), 4, "MTN's X-Reference-Id is a UUID v4");
        for provider in ["mpesa", "airtel", "vodacom_tz", "tigo_tz"] {
            assert_eq!(version(provider), 7, "{provider}");
        }
        assert_ne!(super::new_request_id("mpesa"), super::new_request_id("mpesa"));
    }
}
