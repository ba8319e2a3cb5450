//! The provider simulator: providers' real HTTP APIs (paths, fields, codes,
//! callback bodies), served in-process for tests and the demo, or by
//! `tuma simulate`. It keeps subscriber wallets and business floats, sends
//! callbacks, misbehaves on purpose under a seeded chaos setting, and records
//! every movement of money by request id so tests can prove that nothing
//! was paid twice.

pub mod mpesa;

use serde::Deserialize;

/// How badly the simulated providers behave. Probabilities are per mille
/// (0–1000) so that settings are exact and seeds reproduce runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Chaos {
    /// Callbacks never sent.
    pub callback_loss_permille: u32,
    /// Callbacks sent twice.
    pub callback_duplicate_permille: u32,
    /// Callbacks held back this long (uniformly up to the value), which also
    /// reorders them.
    pub callback_max_delay_ms: u64,
    /// Requests answered with a 5xx before anything happens.
    pub server_error_permille: u32,
    /// Requests that move the money, then answer 504 as if they timed out.
    pub timeout_after_money_permille: u32,
    /// Callbacks sent before the request's own answer.
    pub callback_before_response: bool,
}

impl Chaos {
    /// `none`, `moderate` or `heavy`.
    pub fn preset(name: &str) -> Option<Chaos> {
        match name {
            "none" => Some(Chaos::default()),
            "moderate" => Some(Chaos {
                callback_loss_permille: 50,
                callback_duplicate_permille: 50,
                callback_max_delay_ms: 200,
                server_error_permille: 20,
                timeout_after_money_permille: 20,
                callback_before_response: false,
            }),
            "heavy" => Some(Chaos {
                callback_loss_permille: 200,
                callback_duplicate_permille: 200,
                callback_max_delay_ms: 1_000,
                server_error_permille: 100,
                timeout_after_money_permille: 100,
                callback_before_response: true,
            }),
            _ => None,
        }
    }
}
