//! FX rates behind one interface, [`RateSource`], so that a live feed can
//! replace the configured table without touching quotes or limits.
//!
//! To plug in a live source: implement `RateSource::rate` (return the
//! mid-market rate with its source name and the time it was observed, or
//! `None` when the pair is unknown), and hand it to
//! [`super::Policy::with_rates`]. The fees and spread are applied by Tuma
//! on top of whatever rate the source returns, and every quote records the
//! rate, the source and its time.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::domain::Currency;

/// A rate: `rate` units of `to` for one unit of `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub from: Currency,
    pub to: Currency,
    pub rate: Decimal,
    /// Where it came from, recorded with each quote (`config`, a feed's
    /// name).
    pub source: String,
    pub as_of: DateTime<Utc>,
}

/// Where FX rates come from.
pub trait RateSource: Send + Sync + 'static {
    /// The rate from `from` to `to` at `now`, if known.
    fn rate(&self, from: Currency, to: Currency, now: DateTime<Utc>) -> BoxFuture<'_, Option<Rate>>;
}

/// `[fx]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxConfig {
    /// How long a quote's rate is honoured.
    pub quote_ttl_s: u64,
    /// `USD_KES = "130"`: one unit of the first currency in the second.
    /// Inverses are derived; other pairs cross through a common currency.
    pub rates: BTreeMap<String, Decimal>,
}

/// Rates from the configuration: fixed, with inverses and crosses derived.
#[derive(Debug, Clone)]
pub struct StaticRates {
    pairs: BTreeMap<(Currency, Currency), Decimal>,
}

/// Digits kept in a derived (inverse or cross) rate.
const DERIVED_RATE_SCALE: u32 = 10;

impl StaticRates {
    pub fn from_config(config: &FxConfig) -> Result<StaticRates, String> {
        let mut pairs = BTreeMap::new();
        for (name, rate) in &config.rates {
            let (from, to) = name
                .split_once('_')
                .and_then(|(a, b)| Some((a.parse::<Currency>().ok()?, b.parse::<Currency>().ok()?)))
                .ok_or_else(|| format!("fx.rates.{name}: expected FROM_TO with two supported currencies"))?;
            if *rate <= Decimal::ZERO || from == to {
                return Err(format!(
                    "fx.rates.{name}: a rate must be positive, between two currencies"
                ));
            }
            pairs.insert((from, to), *rate);
        }
        Ok(StaticRates { pairs })
    }

    fn lookup(&self, from: Currency, to: Currency) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        if let Some(rate) = self.pairs.get(&(from, to)) {
            return Some(*rate);
        }
        if let Some(inverse) = self.pairs.get(&(to, from)) {
            return Some((Decimal::ONE / inverse).round_dp(DERIVED_RATE_SCALE));
        }
        // Cross through any currency both sides have a direct rate with.
        Currency::ALL.into_iter().find_map(|via| {
            let first = self.direct(from, via)?;
            let second = self.direct(via, to)?;
            Some((first * second).round_dp(DERIVED_RATE_SCALE))
        })
    }

    fn direct(&self, from: Currency, to: Currency) -> Option<Decimal> {
        if from == to {
            return None;
        }
        self.pairs
            .get(&(from, to))
            .copied()
            .or_else(|| self.pairs.get(&(to, from)).map(|r| Decimal::ONE / r))
    }
}

impl RateSource for StaticRates {
    fn rate(&self, from: Currency, to: Currency, now: DateTime<Utc>) -> BoxFuture<'_, Option<Rate>> {
        let rate = self.lookup(from, to).map(|rate| Rate {
            from,
            to,
            rate,
            source: "config".to_owned(),
            as_of: now,
        });
        Box::pin(async move { rate })
    }
}

/// A shared rate source.
pub type Rates = Arc<dyn RateSource>;

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> StaticRates {
        StaticRates::from_config(&FxConfig {
            quote_ttl_s: 300,
            rates: BTreeMap::from([
                ("USD_KES".to_owned(), Decimal::from(130)),
                ("USD_UGX".to_owned(), Decimal::from(3700)),
            ]),
        })
        .unwrap()
    }

    #[test]
    fn direct_inverse_and_cross_rates() {
        let rates = rates();
        assert_eq!(rates.lookup(Currency::USD, Currency::KES), Some(Decimal::from(130)));
        assert_eq!(
            rates.lookup(Currency::KES, Currency::USD),
            Some("0.0076923077".parse().unwrap())
        );
        let cross = rates.lookup(Currency::KES, Currency::UGX).unwrap();
        assert_eq!(cross.round_dp(4), "28.4615".parse().unwrap());
        assert_eq!(rates.lookup(Currency::KES, Currency::RWF), None);
        assert_eq!(rates.lookup(Currency::KES, Currency::KES), Some(Decimal::ONE));
    }

    #[test]
    fn bad_pairs_are_refused() {
        for name in ["USDKES", "USD_XYZ", "KES_KES"] {
            let config = FxConfig {
                quote_ttl_s: 1,
                rates: BTreeMap::from([(name.to_owned(), Decimal::ONE)]),
            };
            assert!(StaticRates::from_config(&config).is_err(), "{name}");
        }
    }
}
