//! Safaricom M-Pesa (Daraja): B2C payouts and STK push collections, status
//! queries, and the callbacks that carry their results. Only this module
//! knows Daraja's wire format.

pub mod actions;
pub mod c2b;
pub mod callbacks;
pub mod client;
pub mod codes;
pub mod float;
pub mod wire;

use secrecy::SecretString;
use serde::Deserialize;

pub use client::{MpesaClient, MpesaError};

/// `[mpesa]` in the configuration. Secrets are never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpesaConfig {
    /// Daraja's base URL (`https://api.safaricom.co.ke`), or the simulator's.
    pub base_url: String,
    pub consumer_key: String,
    pub consumer_secret: SecretString,
    /// The B2C (bulk disbursement) shortcode payouts are paid from.
    pub b2c_shortcode: String,
    pub initiator_name: String,
    pub initiator_password: SecretString,
    /// Safaricom's X.509 certificate (PEM file) for the security credential;
    /// empty means the built-in simulator's certificate.
    pub certificate_path: String,
    /// `SalaryPayment`, `BusinessPayment` or `PromotionPayment`.
    pub b2c_command_id: String,
    /// The STK (Lipa na M-Pesa Online) shortcode and its passkey.
    pub stk_shortcode: String,
    pub passkey: SecretString,
    /// `CustomerPayBillOnline` or `CustomerBuyGoodsOnline`.
    pub stk_transaction_type: String,
    /// For Buy Goods: the till number (PartyB); empty for PayBill.
    pub till_number: String,
    /// This engine's public base URL, where Daraja sends callbacks.
    pub callback_base_url: String,
    /// Callback source addresses accepted; empty accepts any (rely on the
    /// per-intent token). Safaricom publishes its list.
    pub callback_allowlist: Vec<String>,
    /// How long one Daraja request may take before it is ambiguous.
    pub request_timeout_ms: u64,
    /// Refresh the OAuth token this long before it expires.
    pub token_refresh_margin_s: u64,
    /// Hold payouts in `pending` unless a recent float report covers them.
    pub float_check: bool,
    /// The account B2C pays from, as Daraja names it in balance reports.
    pub float_account: String,
    /// A float report older than this is refreshed before releasing.
    pub float_max_age_s: u64,
    /// The PayBill or till customers pay into on their own (C2B).
    pub c2b_shortcode: String,
    /// What M-Pesa does when our validation URL does not answer in time:
    /// `Completed` (accept) or `Cancelled` (refuse).
    pub c2b_response_type: String,
}

/// This engine's URL where Daraja sends callbacks of `kind` (the path
/// segment the callback handler dispatches on) under `token`.
pub fn callback_url(config: &MpesaConfig, kind: &str, token: &str) -> String {
    format!(
        "{}/callbacks/mpesa/{kind}/{token}",
        config.callback_base_url.trim_end_matches('/')
    )
}

/// The callback token of C2B validation and confirmation notices.
pub fn c2b_token(config: &MpesaConfig) -> String {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("tuma.c2b.{}", config.consumer_secret.expose_secret()));
    hex::encode(&digest[..16])
}

/// The callback token of balance reports: stable for this app, and as
/// unguessable as its consumer secret.
pub fn balance_token(config: &MpesaConfig) -> String {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("tuma.balance.{}", config.consumer_secret.expose_secret()));
    hex::encode(&digest[..16])
}

/// The simulator's certificate, used when no Safaricom certificate is
/// configured (development, tests, the demo).
pub const SIMULATOR_CERTIFICATE: &str = include_str!("../../simulator/simulator_cert.pem");
