//! Domain values: money, phone numbers and identifiers.
//!
//! Everything here is a parse-only value type: raw input becomes one of these
//! at the edge of the system (API, provider callback, config), and the core
//! never handles a raw string amount or phone number. This module does no IO.

mod ids;
mod money;
mod msisdn;

pub use ids::{IntentId, JobId, PartyId};
pub use money::{Currency, Money, MoneyError};
pub use msisdn::{mask_numbers_in, Country, Msisdn, MsisdnError};
