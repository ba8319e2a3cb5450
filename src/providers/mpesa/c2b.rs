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
pub const OTHER_ERROR: &str = "C2B00016";

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
    if notice.nul_field().is_some() {
        // Its confirmation could not be recorded as sent (a person would
        // have to): no money moves for it instead.
        return Err((OTHER_ERROR, "Other Error"));
    }
    Ok(())
}

/// How long after its validation a payment's confirmation may take before
/// Daraja is asked about it.
const UNCONFIRMED_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// How far back validations are looked at.
const LOOK_BACK: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How long a question Daraja accepted waits for its answer before it is
/// asked again (the answer normally comes within seconds; a lost one
/// should not hold a repayment back for long)…
const ASK_AGAIN_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(2);
/// …and how often it is asked at most. After that the payment is left to a
/// person: the reconciliation report lists it (`unconfirmed`). A question
/// Daraja did not take (busy, unreachable, a 5xx) is not counted: it is
/// asked again at the next run, for as long as the validation is looked at.
pub const MAX_ASKS: i32 = 5;
/// Most payments asked about per run.
const PER_RUN: i64 = 200;

/// Job arguments: ask Daraja about the payments it validated whose
/// confirmation never came.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct QueryUnconfirmed {}

impl crate::runner::JobArgs for QueryUnconfirmed {
    const KIND: &'static str = "mpesa.c2b_unconfirmed";
}

/// Daraja calls our validation URL, we accept, and then its confirmation
/// callback is what records the payment. When that callback is lost, the
/// money has moved and nothing else would tell us: this worker finds
/// accepted validations with no recorded payment a minute on, and asks
/// Transaction Status about each receipt. The answer comes back as a
/// `c2b-status-result` callback, which records a `Completed` payment from
/// the validated notice (see `callbacks`). Without external validation
/// there is no notice to start from; such a lost confirmation is left to
/// the statement.
pub struct UnconfirmedWorker {
    pub client: std::sync::Arc<super::MpesaClient>,
}

impl crate::runner::Worker for UnconfirmedWorker {
    type Args = QueryUnconfirmed;

    async fn work(
        &self,
        ctx: crate::runner::JobContext,
        _args: QueryUnconfirmed,
    ) -> Result<(), crate::runner::JobError> {
        use crate::store::c2b as store;
        let now = ctx.clock().local_now();
        let mut conn = ctx.pool().acquire().await?;
        let due = store::unconfirmed(
            &mut conn,
            now - LOOK_BACK,
            now - UNCONFIRMED_AFTER,
            now - ASK_AGAIN_AFTER,
            MAX_ASKS,
            PER_RUN,
        )
        .await?;
        if due.is_empty() {
            return Ok(());
        }
        let config = self.client.config();
        let token = super::c2b_token(config);
        let (result_url, timeout_url) = (
            super::callback_url(config, "c2b-status-result", &token),
            super::callback_url(config, "c2b-status-timeout", &token),
        );
        let mut unasked = 0;
        for payment in &due {
            // Noted first, so a crash mid-question still counts it; a
            // question Daraja did not take is made due again at once.
            store::mark_asked(&mut conn, &payment.trans_id, payment.inbox_id, now).await?;
            if let Err(error) = self
                .client
                .c2b_status(&payment.trans_id, &result_url, &timeout_url)
                .await
            {
                unasked += 1;
                tracing::warn!(inbox_id = payment.inbox_id, %error, "could not ask about an unconfirmed C2B payment");
                if !matches!(error, super::MpesaError::Rejected { .. } | super::MpesaError::Config(_)) {
                    store::not_taken(&mut conn, &payment.trans_id, ASK_AGAIN_AFTER).await?;
                }
            }
        }
        metrics::counter!("tuma_c2b_unconfirmed_asked_total").increment((due.len() - unasked) as u64);
        tracing::info!(
            asked = due.len() - unasked,
            failed = unasked,
            "asked M-Pesa about validated C2B payments with no confirmation"
        );
        Ok(())
    }
}
