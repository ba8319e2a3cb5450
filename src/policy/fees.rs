//! Fees: the platform's percentage, the conversion spread and fee when
//! currencies differ, and the provider's tariff, as one breakdown whose parts
//! add up exactly.
//!
//! # Rounding
//!
//! Amounts are exact decimals; rounding happens at four named points and
//! nowhere else:
//!
//! 1. each percentage fee is rounded to the source currency's minor unit,
//!    half to even (banker's rounding), so that over many payouts the
//!    rounding is not biased either way;
//! 2. the converted amount is `converted_source × rate`, rounded half to
//!    even to the target currency's minor unit;
//! 3. the amount received is rounded *down* to what the provider can carry
//!    (whole units for M-Pesa, Airtel, MTN, Vodacom and Tigo) and, when
//!    fees are taken from a sent amount, to what fits under the tariff band
//!    it falls in (just above a band's top, the top: see `most_received`);
//! 4. what step 3 cut off is kept as `rounding` (fee revenue), never lost.
//!
//! So on the source side `sent = platform_fee + fx_spread + conversion_fee +
//! converted_source`, and on the target side `converted = provider_fee +
//! rounding + received`, both exactly.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Currency;

/// The fee schedule, from `[fees]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeSchedule {
    /// Percent of what is sent, kept by the platform.
    pub platform_percent: Decimal,
    /// Percent of what remains after the platform fee, when currencies
    /// differ: the spread on the rate…
    pub fx_spread_percent: Decimal,
    /// …and the conversion fee.
    pub conversion_fee_percent: Decimal,
    /// Per provider, per currency: tariff bands, lowest first.
    #[serde(default)]
    pub tariffs: BTreeMap<String, BTreeMap<Currency, Vec<TariffBand>>>,
}

/// A provider charges `fee` for amounts up to and including `up_to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffBand {
    pub up_to: Decimal,
    pub fee: Decimal,
}

/// Who pays for what, and what arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Breakdown {
    /// What leaves the source balance.
    #[schema(value_type = String, example = "50.00")]
    pub sent: Decimal,
    #[schema(example = "USD")]
    #[schema(value_type = String)]
    pub source_currency: Currency,
    #[schema(value_type = String, example = "1.25")]
    pub platform_fee: Decimal,
    #[schema(value_type = String, example = "0.73")]
    pub fx_spread: Decimal,
    #[schema(value_type = String, example = "0.98")]
    pub conversion_fee: Decimal,
    /// What is converted, in the source currency.
    #[schema(value_type = String, example = "47.04")]
    pub converted_source: Decimal,
    /// Target units per source unit (1 when the currencies are the same).
    #[schema(value_type = String, example = "130")]
    pub rate: Decimal,
    #[schema(example = "KES")]
    #[schema(value_type = String)]
    pub target_currency: Currency,
    /// `converted_source × rate`, in the target currency.
    #[schema(value_type = String, example = "6115.20")]
    pub converted: Decimal,
    /// The provider's tariff, in the target currency.
    #[schema(value_type = String, example = "75.00")]
    pub provider_fee: Decimal,
    /// Cut off to make `received` something the provider can carry (and,
    /// from a sent amount just above a tariff band's top, what lies between
    /// the top and the next band).
    #[schema(value_type = String, example = "0.20")]
    pub rounding: Decimal,
    /// What the recipient gets.
    #[schema(value_type = String, example = "6040.00")]
    pub received: Decimal,
}

impl Breakdown {
    /// Whether both sides add up exactly.
    pub fn adds_up(&self) -> bool {
        self.sent == self.platform_fee + self.fx_spread + self.conversion_fee + self.converted_source
            && self.converted == self.provider_fee + self.rounding + self.received
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    #[error("after fees nothing would arrive")]
    NothingLeft,
    #[error("{amount} {currency} is above every tariff band of {provider}")]
    AboveTariff {
        provider: String,
        currency: Currency,
        amount: Decimal,
    },
}

fn round_fee(amount: Decimal, currency: Currency) -> Decimal {
    let mut rounded = amount.round_dp_with_strategy(currency.minor_units(), RoundingStrategy::MidpointNearestEven);
    rounded.rescale(currency.minor_units());
    rounded
}

fn percent(of: Decimal, percent: Decimal, currency: Currency) -> Decimal {
    round_fee(of * percent / Decimal::ONE_HUNDRED, currency)
}

fn at_scale(mut amount: Decimal, currency: Currency) -> Decimal {
    amount.rescale(currency.minor_units());
    amount
}

impl FeeSchedule {
    /// The provider's tariff for moving `amount` (zero when it publishes
    /// none for the currency).
    pub fn tariff(&self, provider: &str, currency: Currency, amount: Decimal) -> Result<Decimal, FeeError> {
        let Some(bands) = self.tariffs.get(provider).and_then(|c| c.get(&currency)) else {
            return Ok(at_scale(Decimal::ZERO, currency));
        };
        bands
            .iter()
            .find(|band| amount <= band.up_to)
            .map(|band| at_scale(band.fee, currency))
            .ok_or_else(|| FeeError::AboveTariff {
                provider: provider.to_owned(),
                currency,
                amount,
            })
    }

    /// Fees taken *from* `sent`: what arrives when `sent` (source currency)
    /// leaves the balance and is converted at `rate` (quotes, auto-payouts).
    /// `whole_units`: the provider carries whole units of the target only.
    pub fn from_sent(
        &self,
        sent: Decimal,
        source: Currency,
        target: Currency,
        rate: Decimal,
        provider: &str,
        whole_units: bool,
    ) -> Result<Breakdown, FeeError> {
        let sent = at_scale(sent, source);
        let platform_fee = percent(sent, self.platform_percent, source);
        let remainder = sent - platform_fee;
        let (fx_spread, conversion_fee) = if source == target {
            (at_scale(Decimal::ZERO, source), at_scale(Decimal::ZERO, source))
        } else {
            (
                percent(remainder, self.fx_spread_percent, source),
                percent(remainder, self.conversion_fee_percent, source),
            )
        };
        let converted_source = remainder - fx_spread - conversion_fee;
        let converted = round_fee(converted_source * rate, target);
        let (provider_fee, received) = self.most_received(provider, target, converted, whole_units)?;
        Ok(Breakdown {
            sent,
            source_currency: source,
            platform_fee,
            fx_spread,
            conversion_fee,
            converted_source,
            rate,
            target_currency: target,
            converted,
            provider_fee,
            rounding: converted - provider_fee - received,
            received,
        })
    }

    /// The most that can arrive out of `converted` once the provider's
    /// tariff is paid, with that tariff. A provider charges by the amount
    /// it moves (what arrives), so the band is the received amount's, not
    /// `converted`'s: each band offers `converted` less its fee, capped at
    /// the band's top, and the largest offer that falls in its own band
    /// wins. (Just above a band's top, its fee would carry the amount into
    /// the next band and the next band's fee would push it back below:
    /// there the band's top arrives and the few units between are kept as
    /// rounding, which costs the recipient less than the higher fee.)
    fn most_received(
        &self,
        provider: &str,
        target: Currency,
        converted: Decimal,
        whole_units: bool,
    ) -> Result<(Decimal, Decimal), FeeError> {
        let carried = |amount: Decimal| {
            if whole_units {
                at_scale(amount.floor(), target)
            } else {
                at_scale(amount, target)
            }
        };
        let zero = at_scale(Decimal::ZERO, target);
        let best = match self.tariffs.get(provider).and_then(|c| c.get(&target)) {
            None => Some((zero, carried(converted))),
            Some(bands) => {
                if let Some(top) = bands.last() {
                    let most = converted - at_scale(top.fee, target);
                    if carried(most) > top.up_to {
                        return Err(FeeError::AboveTariff {
                            provider: provider.to_owned(),
                            currency: target,
                            amount: most,
                        });
                    }
                }
                let mut best: Option<(Decimal, Decimal)> = None;
                let mut below = Decimal::ZERO;
                for band in bands {
                    let fee = at_scale(band.fee, target);
                    let received = carried((converted - fee).min(band.up_to));
                    if received > below && best.is_none_or(|(_, so_far)| received > so_far) {
                        best = Some((fee, received));
                    }
                    below = band.up_to;
                }
                best
            }
        };
        match best {
            Some((fee, received)) if received > Decimal::ZERO => Ok((fee, received)),
            _ => Err(FeeError::NothingLeft),
        }
    }

    /// Fees charged *on top of* `received` in one currency: what leaves the
    /// balance so that the recipient gets exactly `received` (a payout that
    /// names its amount).
    pub fn on_top(&self, received: Decimal, currency: Currency, provider: &str) -> Result<Breakdown, FeeError> {
        let received = at_scale(received, currency);
        let provider_fee = self.tariff(provider, currency, received)?;
        let platform_fee = percent(received, self.platform_percent, currency);
        let converted = received + provider_fee;
        let zero = at_scale(Decimal::ZERO, currency);
        Ok(Breakdown {
            sent: converted + platform_fee,
            source_currency: currency,
            platform_fee,
            fx_spread: zero,
            conversion_fee: zero,
            converted_source: converted,
            rate: Decimal::ONE,
            target_currency: currency,
            converted,
            provider_fee,
            rounding: zero,
            received,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn schedule(tariff: &[(&str, &str)]) -> FeeSchedule {
        FeeSchedule {
            platform_percent: d("2.5"),
            fx_spread_percent: d("1.5"),
            conversion_fee_percent: d("2"),
            tariffs: BTreeMap::from([(
                "mpesa".to_owned(),
                BTreeMap::from([(
                    Currency::KES,
                    tariff
                        .iter()
                        .map(|(up_to, fee)| TariffBand {
                            up_to: d(up_to),
                            fee: d(fee),
                        })
                        .collect(),
                )]),
            )]),
        }
    }

    /// design.md's M-Pesa B2C bands.
    const MPESA_B2C: [(&str, &str); 6] = [
        ("100", "0"),
        ("500", "11"),
        ("1000", "25"),
        ("2500", "50"),
        ("5000", "75"),
        ("70000", "105"),
    ];

    #[test]
    fn the_fifty_dollar_sale_adds_up_to_the_cent() {
        // The worked example as stated: a 75 KES tariff on the converted
        // amount.
        let fees = schedule(&[("250000", "75")]);
        let b = fees
            .from_sent(d("50"), Currency::USD, Currency::KES, d("130"), "mpesa", true)
            .unwrap();
        assert_eq!(b.platform_fee, d("1.25"));
        assert_eq!(b.fx_spread, d("0.73"), "1.5 % of 48.75 = 0.73125");
        assert_eq!(b.conversion_fee, d("0.98"), "2 % of 48.75 = 0.975, half to even");
        assert_eq!(b.converted_source, d("47.04"));
        assert_eq!(b.converted, d("6115.20"));
        assert_eq!(b.provider_fee, d("75"));
        assert_eq!(b.received, d("6040"));
        assert_eq!(b.rounding, d("0.20"));
        assert!(b.adds_up());
    }

    #[test]
    fn with_the_published_bands_the_same_sale_pays_the_higher_band() {
        let b = schedule(&MPESA_B2C)
            .from_sent(d("50"), Currency::USD, Currency::KES, d("130"), "mpesa", true)
            .unwrap();
        assert_eq!(b.provider_fee, d("105"), "6,115.20 KES is in the 5,001–70,000 band");
        assert_eq!(b.received, d("6010"));
        assert!(b.adds_up());
    }

    #[test]
    fn fees_on_top_leave_the_named_amount_to_arrive() {
        let b = schedule(&MPESA_B2C).on_top(d("1500"), Currency::KES, "mpesa").unwrap();
        assert_eq!(b.received, d("1500"));
        assert_eq!(b.provider_fee, d("50"));
        assert_eq!(b.platform_fee, d("37.50"));
        assert_eq!(b.sent, d("1587.50"));
        assert!(b.adds_up());
        assert!(matches!(
            schedule(&MPESA_B2C).on_top(d("80000"), Currency::KES, "mpesa"),
            Err(FeeError::AboveTariff { .. })
        ));
    }

    #[test]
    fn tariff_bands_include_their_upper_bound() {
        let fees = schedule(&MPESA_B2C);
        for (amount, fee) in [
            ("1", "0"),
            ("100", "0"),
            ("101", "11"),
            ("1000", "25"),
            ("1001", "50"),
            ("70000", "105"),
        ] {
            assert_eq!(
                fees.tariff("mpesa", Currency::KES, d(amount)).unwrap(),
                d(fee),
                "{amount}"
            );
        }
        assert_eq!(fees.tariff("airtel", Currency::UGX, d("5000")).unwrap(), Decimal::ZERO);
    }

    #[test]
    fn the_band_is_the_one_of_what_arrives() {
        let fees = schedule(&MPESA_B2C);
        // 1,050 KES after the platform's 26.25 leaves 1,023.75: sent in the
        // 1,001–2,500 band (50) only 973 would arrive, which M-Pesa charges
        // 25 for; in the 501–1,000 band 998 arrives for 25.
        let b = fees
            .from_sent(d("1050"), Currency::KES, Currency::KES, Decimal::ONE, "mpesa", true)
            .unwrap();
        assert_eq!((b.provider_fee, b.received, b.rounding), (d("25"), d("998"), d("0.75")));
        assert!(b.adds_up());
        // Just above a band's top neither band's fee fits exactly: its top
        // arrives, and what is left over is rounding.
        let b = fees
            .from_sent(d("1064"), Currency::KES, Currency::KES, Decimal::ONE, "mpesa", false)
            .unwrap();
        assert_eq!((b.provider_fee, b.received), (d("25"), d("1000")), "{b:?}");
        assert!(b.adds_up());
        // Above the top band only once what would arrive is.
        let b = fees
            .from_sent(d("71800"), Currency::KES, Currency::KES, Decimal::ONE, "mpesa", true)
            .unwrap();
        assert_eq!((b.provider_fee, b.received), (d("105"), d("69900")));
        assert!(matches!(
            fees.from_sent(d("72000"), Currency::KES, Currency::KES, Decimal::ONE, "mpesa", true),
            Err(FeeError::AboveTariff { .. })
        ));
    }

    #[test]
    fn nothing_more_could_arrive_for_what_is_converted() {
        let fees = schedule(&MPESA_B2C);
        for whole in 101..6_000 {
            let b = fees
                .from_sent(
                    Decimal::from(whole),
                    Currency::KES,
                    Currency::KES,
                    Decimal::ONE,
                    "mpesa",
                    true,
                )
                .unwrap();
            assert!(b.adds_up(), "{b:?}");
            assert_eq!(
                fees.tariff("mpesa", Currency::KES, b.received).unwrap(),
                b.provider_fee,
                "{b:?}"
            );
            let more = b.received + Decimal::ONE;
            let fee = fees.tariff("mpesa", Currency::KES, more).unwrap();
            assert!(more + fee > b.converted, "{more} KES could arrive: {b:?}");
        }
    }

    #[test]
    fn every_breakdown_adds_up() {
        let fees = schedule(&MPESA_B2C);
        for cents in (100..2_000_000).step_by(7_919) {
            let sent = Decimal::new(cents, 2);
            if let Ok(b) = fees.from_sent(sent, Currency::USD, Currency::KES, d("129.37"), "mpesa", true) {
                assert!(b.adds_up(), "{b:?}");
                assert!(b.received.fract().is_zero());
            }
        }
    }
}
