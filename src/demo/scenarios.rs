//! The scenarios of the demo, each driven through the HTTP API as a
//! product service would, every intent tagged with its scenario in its
//! metadata.

use std::time::Duration;

use anyhow::Context;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::api::Api;
use crate::simulator::mpesa::SimHandle;

/// The demo's API keys.
pub struct Keys {
    pub admin: String,
    pub product: String,
    pub approver: String,
    pub second_approver: String,
}

/// What a scenario did beyond its intents.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Notes {
    pub lines: Vec<String>,
    /// Expectations the scenario checked itself (a refusal that must
    /// happen, a loan that must be repaid); all must hold.
    pub expectations: Vec<(String, bool)>,
}

impl Notes {
    fn line(&mut self, text: impl Into<String>) {
        self.lines.push(text.into());
    }

    fn expect(&mut self, what: impl Into<String>, held: bool) {
        self.expectations.push((what.into(), held));
    }
}

pub struct Ctx {
    pub api: Api,
    pub keys: Keys,
    pub sim: SimHandle,
    pub scale: usize,
}

/// A Kenyan number for person `n` whose last three digits are 100–899, so
/// it pays (the simulator's special behaviours are …001–…009).
fn phone(prefix: u32, n: usize) -> String {
    format!("07{prefix:02}{:03}{:03}", n % 1000, 100 + n % 800)
}

async fn party(ctx: &Ctx, id: &str, tier: u8) -> anyhow::Result<()> {
    ctx.api
        .put(
            &format!("/v1/parties/{id}"),
            &ctx.keys.admin,
            &json!({ "role": "creator", "kyc_tier": tier, "country": "KE" }),
        )
        .await?;
    Ok(())
}

async fn credit(ctx: &Ctx, id: &str, amount: &str, currency: &str, reference: &str) -> anyhow::Result<()> {
    ctx.api
        .ok(
            &format!("/v1/parties/{id}/credits"),
            &ctx.keys.admin,
            &json!({ "amount": amount, "currency": currency, "reference": reference }),
        )
        .await?;
    Ok(())
}

/// A creator paid USD earnings to M-Pesa in KES at a quoted rate.
async fn quoted_payout(
    ctx: &Ctx,
    creator: &str,
    usd: &str,
    msisdn: &str,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    quoted_payout_via(ctx, creator, usd, msisdn, "KES", "mpesa").await
}

/// A creator paid USD earnings in `currency` through `provider` at a
/// quoted rate (the payout itself is routed by the number's prefix).
async fn quoted_payout_via(
    ctx: &Ctx,
    creator: &str,
    usd: &str,
    msisdn: &str,
    currency: &str,
    provider: &str,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let quote = ctx
        .api
        .ok(
            "/v1/quotes",
            &ctx.keys.product,
            &json!({ "party_id": creator, "source_amount": usd, "source_currency": "USD",
                     "target_currency": currency, "provider": provider }),
        )
        .await?;
    ctx.api
        .post(
            "/v1/payouts",
            &ctx.keys.product,
            &json!({
                "amount": quote["received"], "currency": currency, "recipient": { "msisdn": msisdn },
                "party_id": creator, "reference": format!("earnings-{creator}"), "quote_id": quote["id"],
                "metadata": { "scenario": "creators" },
            }),
        )
        .await
}

/// Creators' USD earnings to M-Pesa with FX and fees; one payout large
/// enough for an approver, one over its tier's daily limit.
pub async fn creators(ctx: &Ctx) -> anyhow::Result<Notes> {
    let mut notes = Notes::default();
    for i in 0..5 * ctx.scale {
        let creator = format!("creator-{i}");
        party(ctx, &creator, 1).await?;
        credit(ctx, &creator, "50.00", "USD", &format!("sale-{i}")).await?;
        let (status, answer) = quoted_payout(ctx, &creator, "50", &phone(12, i)).await?;
        anyhow::ensure!(status.is_success(), "creator payout refused: {answer}");
        if i == 0 {
            let fees = &answer["fees"];
            notes.line(format!(
                "50 USD → {} KES received (platform {} + FX spread {} + conversion {} USD, rate {})",
                answer["amount"].as_str().unwrap_or("?"),
                fees["platform_fee"].as_str().unwrap_or("?"),
                fees["fx_spread"].as_str().unwrap_or("?"),
                fees["conversion_fee"].as_str().unwrap_or("?"),
                fees["rate"].as_str().unwrap_or("?"),
            ));
        }
    }
    party(ctx, "creator-star", 2).await?;
    credit(ctx, "creator-star", "900.00", "USD", "sale-star").await?;
    let (status, big) = quoted_payout(ctx, "creator-star", "900", &phone(12, 999)).await?;
    anyhow::ensure!(status.is_success(), "the large payout was refused: {big}");
    let awaiting = big["state"] == "awaiting_approval";
    notes.expect("a 900 USD payout waits for an approver", awaiting);
    if awaiting {
        let id = big["id"].as_str().context("payout id")?;
        ctx.api
            .ok(
                &format!("/v1/payouts/{id}/approve"),
                &ctx.keys.approver,
                &json!({ "reason": "matches the sales report" }),
            )
            .await?;
        notes.line("900 USD payout: flagged for review, approved by approver-amina");
    }
    party(ctx, "creator-new", 0).await?;
    credit(ctx, "creator-new", "200.00", "USD", "sale-new").await?;
    let (status, refused) = quoted_payout(ctx, "creator-new", "150", &phone(12, 998)).await?;
    let limit_refused = status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
        && refused["type"].as_str().is_some_and(|t| t.ends_with("limit-exceeded"));
    notes.expect(
        "a tier-0 creator's 150 USD payout is refused by the daily limit",
        limit_refused,
    );
    notes.line(format!(
        "150 USD from a tier-0 creator: {} ({})",
        status.as_u16(),
        refused["detail"].as_str().unwrap_or("")
    ));
    // Creators in Uganda, paid to Airtel Money in UGX.
    let mut airtel_ids = Vec::new();
    for i in 0..3 * ctx.scale {
        let creator = format!("creator-ug-{i}");
        party(ctx, &creator, 1).await?;
        credit(ctx, &creator, "40.00", "USD", &format!("sale-ug-{i}")).await?;
        let number = format!("070{:04}{:03}", i % 10_000, 100 + i % 800);
        let (status, answer) = quoted_payout_via(ctx, &creator, "40", &number, "UGX", "airtel").await?;
        anyhow::ensure!(status.is_success(), "Airtel payout refused: {answer}");
        let routed = answer["recipient"]["provider"] == "airtel";
        if i == 0 {
            notes.expect("a Ugandan 070… number is routed to Airtel Money", routed);
            notes.line(format!(
                "40 USD → {} UGX to Airtel Money Uganda (routed by the number's prefix)",
                answer["amount"].as_str().unwrap_or("?")
            ));
        }
        airtel_ids.push(answer["id"].as_str().context("payout id")?.to_owned());
    }
    let mut paid = 0;
    for id in &airtel_ids {
        let state = until_final(ctx, "payouts", id).await?;
        paid += usize::from(state == "completed");
    }
    notes.expect("every Airtel Money payout completed", paid == airtel_ids.len());
    Ok(notes)
}

/// VPN bundles bought with mobile money in Tanzania: one prompt per
/// purchase, through Vodacom, Tigo and Airtel as the buyer's number says;
/// every fourth buyer lets the prompt go unanswered.
pub async fn vpn(ctx: &Ctx) -> anyhow::Result<Notes> {
    let mut notes = Notes::default();
    let operators = [("vodacom_tz", "74"), ("tigo_tz", "65"), ("airtel", "68")];
    let mut purchases = Vec::new();
    for (provider, prefix) in operators {
        for i in 0..4 * ctx.scale {
            let unanswered = i % 4 == 3;
            // …003 never answers the prompt (the simulators' convention).
            let tail = if unanswered { 3 } else { 100 + i % 800 };
            let number = format!("0{prefix}{:04}{tail:03}", i % 10_000);
            let (status, answer) = ctx
                .api
                .post(
                    "/v1/collections",
                    &ctx.keys.product,
                    &json!({
                        "amount": "5000", "currency": "TZS", "payer": { "msisdn": number },
                        "party_id": "vpn-shop", "reference": format!("bundle-30d-{provider}-{i}"),
                        "metadata": { "scenario": "vpn", "bundle": "30 days" },
                    }),
                )
                .await?;
            anyhow::ensure!(status.is_success(), "bundle purchase refused: {answer}");
            let id = answer["id"].as_str().context("collection id")?.to_owned();
            let routed = answer["payer"]["provider"] == provider;
            purchases.push((provider, unanswered, id, routed));
        }
    }
    notes.expect(
        "every buyer's number is routed to its operator",
        purchases.iter().all(|(_, _, _, routed)| *routed),
    );
    for (provider, _) in operators {
        let (mut paid, mut unanswered, mut wrong) = (0, 0, 0);
        let mut ended = std::collections::BTreeSet::new();
        for (_, silent, id, _) in purchases.iter().filter(|(p, ..)| *p == provider) {
            let state = until_final(ctx, "collections", id).await?;
            match (silent, state.as_str()) {
                (false, "completed") => paid += 1,
                (true, "expired" | "failed") => {
                    unanswered += 1;
                    ended.insert(state);
                }
                _ => wrong += 1,
            }
        }
        notes.line(format!(
            "{provider}: {paid} bundles paid, {unanswered} prompts unanswered (ended {})",
            ended.into_iter().collect::<Vec<_>>().join("/")
        ));
        notes.expect(
            format!("{provider}: paid prompts completed, unanswered ones took no money"),
            wrong == 0,
        );
    }
    Ok(notes)
}

/// Polls a payout or collection until it is final (or unresolved).
async fn until_final(ctx: &Ctx, kind: &str, id: &str) -> anyhow::Result<String> {
    const SETTLED: [&str; 7] = [
        "completed",
        "failed",
        "expired",
        "cancelled",
        "rejected",
        "unresolved",
        "reversed",
    ];
    for _ in 0..840 {
        let view = ctx.api.get(&format!("/v1/{kind}/{id}"), &ctx.keys.product).await?;
        let state = view["state"].as_str().unwrap_or_default().to_owned();
        if SETTLED.contains(&state.as_str()) {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("{kind} {id} did not settle in time")
}

/// Donations by STK push into a campaign bucket, then the NGO paid out of
/// what the bucket holds.
pub async fn donations(
    ctx: &Ctx,
    wait: impl Fn() -> futures::future::BoxFuture<'static, anyhow::Result<()>>,
) -> anyhow::Result<Notes> {
    let mut notes = Notes::default();
    let count = 10 * ctx.scale;
    for i in 0..count {
        // Every fifth donor cancels the prompt on the phone (…001).
        let msisdn = if i % 5 == 4 {
            format!("0713{:03}001", i % 1000)
        } else {
            phone(13, i)
        };
        let amount = 100 + (i % 20) * 95;
        ctx.api
            .ok(
                "/v1/collections",
                &ctx.keys.product,
                &json!({
                    "amount": amount.to_string(), "currency": "KES", "payer": { "msisdn": msisdn },
                    "party_id": format!("donor-{i}"), "reference": "flood-relief",
                    "campaign_id": "flood-relief", "metadata": { "scenario": "donations" },
                }),
            )
            .await?;
    }
    wait().await?;
    let balances = ctx
        .api
        .get("/v1/campaigns/flood-relief/balances", &ctx.keys.product)
        .await?;
    let available: Decimal = balances["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["currency"] == "KES"))
        .and_then(|a| a["available"].as_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or_default();
    notes.line(format!("campaign flood-relief collected {available} KES"));
    // Half of it to the NGO; the fees come out of the bucket too.
    let payout = (available / Decimal::TWO).floor();
    if payout >= Decimal::from(10) {
        party(ctx, "ngo-relief", 2).await?;
        ctx.api
            .ok(
                "/v1/payouts",
                &ctx.keys.product,
                &json!({
                    "amount": payout.to_string(), "currency": "KES", "recipient": { "msisdn": phone(14, 1) },
                    "party_id": "ngo-relief", "reference": "relief-tranche-1", "campaign_id": "flood-relief",
                    "metadata": { "scenario": "donations" },
                }),
            )
            .await?;
        notes.line(format!("NGO payout of {payout} KES from the campaign bucket"));
    }
    Ok(notes)
}

/// A 5,000 KES peer loan, disbursed by B2C and repaid by 1,000 KES C2B
/// payments with its `LOAN-<n>` reference.
pub async fn loan(ctx: &Ctx) -> anyhow::Result<Notes> {
    let mut notes = Notes::default();
    party(ctx, "jane", 2).await?;
    credit(ctx, "jane", "20000", "KES", "jane-savings").await?;
    let borrower = "0712000123";
    let loan = ctx
        .api
        .ok(
            "/v1/loans",
            &ctx.keys.product,
            &json!({
                "borrower": { "party_id": "john", "msisdn": borrower }, "lender_id": "jane",
                "principal": "5000", "currency": "KES", "installment_amount": "500",
                "metadata": { "scenario": "loans" },
            }),
        )
        .await?;
    let id = loan["id"].as_str().context("loan id")?.to_owned();
    let reference = loan["reference"].as_str().context("loan reference")?.to_owned();
    ctx.api
        .ok(
            &format!("/v1/loans/{id}/approve"),
            &ctx.keys.product,
            &json!({ "acting_party": "jane" }),
        )
        .await?;
    let state = until(ctx, &id, |s| s == "active" || s == "disbursement_failed").await?;
    notes.expect("the loan is disbursed", state == "active");
    if state != "active" {
        return Ok(notes);
    }
    let mut paid = 0;
    for _ in 0..10 {
        if ctx
            .sim
            .pay_bill("174379", "254712000123", 1000, &reference)
            .await
            .is_ok()
        {
            paid += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let state = until(ctx, &id, |s| s == "repaid").await.unwrap_or_default();
    let view = ctx.api.get(&format!("/v1/loans/{id}"), &ctx.keys.product).await?;
    notes.line(format!(
        "{reference}: {paid} C2B payments of 1,000 KES; each repaid the 500 due, 500 to john's balance; \
         outstanding {}",
        view["outstanding"].as_str().unwrap_or("?")
    ));
    notes.expect("the loan is repaid to 0 by C2B payments", state == "repaid");
    Ok(notes)
}

/// Polls a loan until `done(state)`, for up to seven minutes (a lost
/// callback waits for the 30-second status polls).
async fn until(ctx: &Ctx, id: &str, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    for _ in 0..840 {
        let view = ctx.api.get(&format!("/v1/loans/{id}"), &ctx.keys.product).await?;
        let state = view["state"].as_str().unwrap_or_default().to_owned();
        if done(&state) {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("loan {id} did not get there in time")
}

/// Worker wages as one batch from the employer's balance, approved as one,
/// paid only as the B2C float allows: some wait for a top-up.
pub async fn salaries(
    ctx: &Ctx,
    top_up: impl std::future::Future<Output = anyhow::Result<i64>>,
) -> anyhow::Result<Notes> {
    let mut notes = Notes::default();
    party(ctx, "acme", 2).await?;
    credit(ctx, "acme", "2000000", "KES", "acme-payroll-budget").await?;
    let workers = 20 * ctx.scale;
    let payouts: Vec<Value> = (0..workers)
        .map(|i| {
            json!({
                "amount": (10_000 + (i % 11) * 500).to_string(), "currency": "KES",
                "recipient": { "msisdn": phone(15, i) }, "party_id": "acme",
                "reference": format!("wages-2026-11-{i}"), "metadata": { "scenario": "salaries" },
            })
        })
        .collect();
    let batch = ctx
        .api
        .ok(
            "/v1/payout-batches",
            &ctx.keys.product,
            &json!({ "reference": "wages-2026-11", "payouts": payouts }),
        )
        .await?;
    let id = batch["id"].as_str().context("batch id")?;
    notes.line(format!(
        "batch of {workers} wage payouts, {} USD in all: approved as one",
        batch["usd_equivalent"].as_str().unwrap_or("?")
    ));
    ctx.api
        .ok(
            &format!("/v1/payout-batches/{id}/approve"),
            &ctx.keys.approver,
            &json!({}),
        )
        .await?;
    // Above the two-approver threshold (larger scales) a second approver
    // completes it; below it there is nothing left to approve.
    ctx.api
        .post(
            &format!("/v1/payout-batches/{id}/approve"),
            &ctx.keys.second_approver,
            &json!({}),
        )
        .await?;
    let held = top_up.await?;
    notes.line(format!(
        "float check: {held} payouts waited for the B2C float, released by a 10,000,000 KES top-up"
    ));
    Ok(notes)
}
