//! C2B: money customers send to our PayBill or till on their own. Daraja
//! asks our validation URL whether to accept a payment (when external
//! validation is enabled for the shortcode), then tells our confirmation
//! URL that it happened. Validation answers at once, by rules; confirmations
//! are stored and recorded by a job, once per M-Pesa receipt.

use rust_decimal::Decimal;

use super::wire::C2bNotice;
use super::MpesaConfig;

/// Daraja's validation refusal codes.
pub const INVALID_ACCOUNT: &str = "C2B00012";
pub const INVALID_AMOUNT: &str = "C2B00013";
pub const INVALID_SHORTCODE: &str = "C2B00015";

/// Whether to accept a payment Daraja asks about: `Err((code, reason))`
/// refuses it. Loans and campaigns add their own rules for references.
pub fn validate(config: &MpesaConfig, notice: &C2bNotice) -> Result<(), (&'static str, &'static str)> {
    let amount_ok = notice
        .trans_amount
        .trim()
        .parse::<Decimal>()
        .is_ok_and(|a| a >= Decimal::ONE);
    if !amount_ok {
        return Err((INVALID_AMOUNT, "Invalid Amount"));
    }
    if notice.business_short_code.trim() != config.c2b_shortcode {
        return Err((INVALID_SHORTCODE, "Invalid Shortcode"));
    }
    if notice.bill_ref_number.trim().is_empty() {
        return Err((INVALID_ACCOUNT, "Invalid Account Number"));
    }
    Ok(())
}
