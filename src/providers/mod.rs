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
