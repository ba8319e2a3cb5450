//! Vodacom M-Pesa Tanzania (the M-Pesa Open API, market `vodacomTZN`): B2C
//! payouts, single-stage C2B collections and transaction status queries.
//! Only this module knows the Open API's wire format.
//!
//! The Tanzanian API answers synchronously: a B2C call returns the paid (or
//! refused) result in its own answer, and a single-stage C2B call blocks
//! while the customer enters their PIN and then returns the outcome. There
//! are no callbacks. A call that times out is ambiguous and is resolved by
//! the status query, asked by our request id (`input_ThirdPartyConversationID`).
//!
//! Unverified, and to confirm with Vodacom before going live: open-source
//! Tanzanian clients also know an asynchronous C2B mode, where `INS-0`
//! only means "accepted" and the outcome comes by callback
//! (`input_ResultCode`, `input_OriginalConversationID`). This adapter
//! assumes the application is provisioned for the synchronous mode; in
//! the other, its reading of `INS-0` as paid would be wrong.

pub mod client;
pub mod codes;
pub mod wire;

use secrecy::SecretString;
use serde::Deserialize;

pub use client::VodacomClient;

/// `[vodacom_tz]` in the configuration. Secrets are never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VodacomConfig {
    /// The Open API host (`https://openapi.m-pesa.com`), or the simulator's.
    pub base_url: String,
    /// The path every operation hangs under: `/sandbox/ipg/v2/vodacomTZN`
    /// (sandbox) or `/openapi/ipg/v2/vodacomTZN` (production, unverified).
    pub path_prefix: String,
    /// The application's API key from the Open API portal; only ever sent
    /// RSA-encrypted, to open a session.
    pub api_key: SecretString,
    /// Vodacom's RSA public key as the portal shows it: base64 of the DER
    /// SubjectPublicKeyInfo (a PEM `PUBLIC KEY` block is accepted too).
    /// Empty means the built-in simulator's key.
    pub public_key: String,
    /// Our organisation's short code (`input_ServiceProviderCode`); the
    /// sandbox's is `000000`.
    pub service_provider_code: String,
    /// The `Origin` header every call carries (`*`, or the origin the
    /// portal application was registered with).
    pub origin: String,
    /// How long a session, B2C or status call may take before its answer
    /// counts as lost (ambiguous for a payout).
    pub request_timeout_ms: u64,
    /// How long a single-stage C2B call may take: it blocks while the
    /// customer enters their PIN, tens of seconds.
    pub c2b_timeout_ms: u64,
    /// A session is replaced after this long. The API does not say how long
    /// a session lives ("hours", unverified); an `INS-2` answer replaces it
    /// earlier.
    pub session_max_age_s: u64,
    /// How long a new session is left to activate before its first use.
    /// Vodacom is reported to need about 30 s (unverified); the simulator
    /// accepts a session at once.
    pub session_activation_ms: u64,
    /// This engine's public base URL. Unused by the Tanzanian API, which
    /// has no callbacks; kept so every provider section reads alike.
    pub callback_base_url: String,
}

/// The built-in simulator's public key, in the portal's form (base64 DER
/// SubjectPublicKeyInfo), used when `public_key` is empty. Its private half
/// is `src/simulator/simulator_key.pem`.
pub const SIMULATOR_PUBLIC_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlAGwsKWt2VVEhav7yx+HZi8x49kETrMQ7VFP9SW4+MJdaHXE7C41A/tzWbgch9bR399Md7R+Y432XNXpr2FXd/tEmkwNo8PFOADFt47hA2L3aB3xC/XEVq8Tth1n+tpiliKW5VyJcpQzeNVrF+JWZxIgPDdiIOMxTF14UuRdSHxG/4o+xjVnqvR/7DQKJHo4UC0Bj6B/Ii0pY6l4znOYZz6k++rkfNe/jkNzJ2VybfHc70jEzdyUanrKqdUuKbUymJHEBAD/rVmjJe4qkbP2OnKW7nA0Hhtq9kgUE6bnbCgaQ6w/AfvrCvT0SP7XsI+Yo9tJA5DkjA7IspJC1QKAfQIDAQAB";
