//! Airtel Money Africa Open API: disbursements (payouts) and USSD push
//! collections in Airtel's markets, their enquiries, and the callbacks that
//! carry their results. Only this module knows Airtel's wire format.
//!
//! - [`client`]: OAuth token cache, the disbursement PIN's encryption, the
//!   calls and what each answer means for the money.
//! - [`wire`]: request, answer and callback bodies, tolerant of Airtel's
//!   mixed types.
//! - [`codes`]: every documented DP008/DP009/ESB/ROUTER code and status.
//! - [`callbacks`]: reading (and optionally authenticating) a callback.
//!
//! The market is chosen per request by the `X-Country`/`X-Currency`
//! headers, from the request's country and currency. Callbacks go to one
//! URL per app, set in Airtel's portal:
//! `{callback_base_url}/callbacks/airtel/payment/{token}`, the token derived
//! from the client secret ([`AirtelClient::portal_callback_url`]).

pub mod callbacks;
pub mod client;
pub mod codes;
pub mod wire;

use futures::future::BoxFuture;
use secrecy::SecretString;
use serde::Deserialize;

pub use client::AirtelClient;

use super::adapter::{Adapter, CallError, CallbackReport, Direction, Reply, Request};

/// `[airtel]` in the configuration. Secrets are never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirtelConfig {
    /// Airtel's base URL (`https://openapi.airtel.africa`; UAT
    /// `https://openapiuat.airtel.africa`), or the simulator's.
    pub base_url: String,
    /// The app's client id, from Airtel's developer portal.
    pub client_id: String,
    /// The app's client secret; also the seed of the callback URL's token.
    pub client_secret: SecretString,
    /// The disbursement wallet's 4-digit PIN, sent RSA-encrypted with
    /// `public_key`. Wrong PINs lock the wallet after a few tries.
    pub disbursement_pin: SecretString,
    /// Airtel's RSA public key for PIN encryption, base64 DER
    /// (SubjectPublicKeyInfo) as the portal shows it; empty means the
    /// built-in simulator's key.
    pub public_key: String,
    /// RSA padding of the encrypted PIN: `pkcs1v15` (what most integrations
    /// use) or `oaep` (OAEP with SHA-256 and MGF1-SHA-256). Which one Airtel
    /// expects per market is unverified; a wrong one answers ROUTER114/116.
    pub pin_padding: PinPadding,
    /// This engine's public base URL, where Airtel sends callbacks (the full
    /// URL to register in the portal is
    /// [`AirtelClient::portal_callback_url`]).
    pub callback_base_url: String,
    /// The portal's callback authentication key: when set, a callback must
    /// carry a `hash` that verifies; empty accepts unsigned callbacks.
    pub callback_hash_key: SecretString,
    /// How long one Airtel request may take before it is ambiguous.
    pub request_timeout_ms: u64,
    /// Refresh the OAuth token this long before it expires (UAT tokens live
    /// 180 s).
    pub token_refresh_margin_s: u64,
}

/// How the disbursement PIN is padded before RSA encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PinPadding {
    #[serde(rename = "pkcs1v15")]
    Pkcs1v15,
    #[serde(rename = "oaep")]
    Oaep,
}

/// The simulator's RSA public key, base64 DER, as Airtel's portal would
/// show it: the key of `src/simulator/simulator_key.pem`.
pub const SIMULATOR_PUBLIC_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlAGwsKWt2VVEhav7yx+HZi8x49kETrMQ7VFP9SW4+MJdaHXE7C41A/tzWbgch9bR399Md7R+Y432XNXpr2FXd/tEmkwNo8PFOADFt47hA2L3aB3xC/XEVq8Tth1n+tpiliKW5VyJcpQzeNVrF+JWZxIgPDdiIOMxTF14UuRdSHxG/4o+xjVnqvR/7DQKJHo4UC0Bj6B/Ii0pY6l4znOYZz6k++rkfNe/jkNzJ2VybfHc70jEzdyUanrKqdUuKbUymJHEBAD/rVmjJe4qkbP2OnKW7nA0Hhtq9kgUE6bnbCgaQ6w/AfvrCvT0SP7XsI+Yo9tJA5DkjA7IspJC1QKAfQIDAQAB";

impl Adapter for AirtelClient {
    fn name(&self) -> &'static str {
        "airtel"
    }

    fn send(&self, request: Request) -> BoxFuture<'_, Result<Reply, CallError>> {
        Box::pin(async move {
            match request.direction {
                Direction::Payout => self.disburse(&request).await,
                Direction::Collection => self.push(&request).await,
            }
        })
    }

    fn status(
        &self,
        direction: Direction,
        request_id: String,
        country: String,
        currency: String,
    ) -> BoxFuture<'_, Result<Reply, CallError>> {
        Box::pin(async move { self.enquire(direction, &request_id, &country, &currency).await })
    }

    fn callback_kinds(&self) -> &'static [&'static str] {
        &[callbacks::KIND]
    }

    fn parse_callback(&self, kind: &str, body: &[u8]) -> Result<CallbackReport, String> {
        use secrecy::ExposeSecret;
        callbacks::parse(kind, body, self.config().callback_hash_key.expose_secret())
    }

    fn app_callback_token(&self) -> Option<String> {
        Some(self.callback_token().to_owned())
    }
}
