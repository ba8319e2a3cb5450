//! Money: a decimal amount in one currency, never a float.
//!
//! An amount always carries exactly its currency's minor units (KES 2, UGX 0,
//! TZS 2, RWF 0, USD 2): `Money::new` refuses an amount that would need more
//! precision instead of rounding it, and arithmetic is only defined between
//! equal currencies. Provider formats (whole units, strings, minor-unit
//! integers) are produced by the provider adapters from these values.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The currencies Tuma moves. Adding one means saying how many minor units it
/// has; every `match` below must then be updated, which is the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    /// Kenyan shilling.
    KES,
    /// Ugandan shilling (no minor unit in circulation).
    UGX,
    /// Tanzanian shilling.
    TZS,
    /// Rwandan franc (no minor unit in circulation).
    RWF,
    /// US dollar, the currency creator earnings are held in.
    USD,
}

impl Currency {
    /// Every supported currency, for iteration in tests and reports.
    pub const ALL: [Currency; 5] = [
        Currency::KES,
        Currency::UGX,
        Currency::TZS,
        Currency::RWF,
        Currency::USD,
    ];

    /// Digits after the decimal point in this currency's smallest unit.
    pub fn minor_units(self) -> u32 {
        match self {
            Currency::KES => 2,
            Currency::UGX => 0,
            Currency::TZS => 2,
            Currency::RWF => 0,
            Currency::USD => 2,
        }
    }

    /// A code read back from the database, where only supported codes are
    /// ever written; anything else is a broken invariant.
    pub fn from_stored(code: &str) -> Currency {
        code.parse()
            .unwrap_or_else(|_| panic!("stored currency code {code:?} is not a supported currency"))
    }

    /// The ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::KES => "KES",
            Currency::UGX => "UGX",
            Currency::TZS => "TZS",
            Currency::RWF => "RWF",
            Currency::USD => "USD",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "KES" => Ok(Currency::KES),
            "UGX" => Ok(Currency::UGX),
            "TZS" => Ok(Currency::TZS),
            "RWF" => Ok(Currency::RWF),
            "USD" => Ok(Currency::USD),
            _ => Err(MoneyError::UnknownCurrency(s.chars().take(8).collect())),
        }
    }
}

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}: supported are KES, UGX, TZS, RWF and USD")]
    UnknownCurrency(String),
    #[error("{amount} has more decimal places than {currency} allows ({minor_units})")]
    ExcessPrecision {
        amount: Decimal,
        currency: Currency,
        minor_units: u32,
    },
    #[error("{0:?} is not a decimal amount")]
    NotANumber(String),
    #[error("cannot combine {left} with {right}: currencies differ")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount out of range")]
    Overflow,
}

/// An amount of money in one currency, held at exactly the currency's minor
/// units (`KES 1500` is stored and shown as `1500.00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

/// Largest amount Tuma accepts, in major units. Far above any mobile money
/// limit; it exists so that minor-unit conversions can never overflow an i64.
const MAX_MAJOR_UNITS: i64 = 1_000_000_000_000;

impl Money {
    /// An amount in major units. Refuses an amount with more precision than
    /// the currency has (never rounds) and amounts beyond ±10^12.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let minor_units = currency.minor_units();
        let normalized = amount.normalize();
        if normalized.scale() > minor_units {
            return Err(MoneyError::ExcessPrecision {
                amount,
                currency,
                minor_units,
            });
        }
        if normalized.abs() > Decimal::from(MAX_MAJOR_UNITS) {
            return Err(MoneyError::Overflow);
        }
        let mut amount = normalized;
        amount.rescale(minor_units);
        Ok(Money { amount, currency })
    }

    /// Parses a decimal string in major units, as the API receives it
    /// (`"1500.00"`, `"1500"`). Exponents, thousands separators and signs other
    /// than a leading `-` are refused.
    pub fn parse(amount: &str, currency: Currency) -> Result<Money, MoneyError> {
        let trimmed = amount.trim();
        let well_formed = !trimmed.is_empty()
            && trimmed
                .strip_prefix('-')
                .unwrap_or(trimmed)
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.');
        if !well_formed {
            return Err(MoneyError::NotANumber(trimmed.chars().take(32).collect()));
        }
        let value =
            Decimal::from_str_exact(trimmed).map_err(|_| MoneyError::NotANumber(trimmed.chars().take(32).collect()))?;
        Money::new(value, currency)
    }

    /// An amount given in minor units (cents, or whole units for UGX/RWF).
    pub fn from_minor(amount_minor: i64, currency: Currency) -> Result<Money, MoneyError> {
        Money::new(Decimal::new(amount_minor, currency.minor_units()), currency)
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money::from_minor(0, currency).expect("zero is always representable")
    }

    /// The amount in major units, at the currency's scale.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in minor units. Exact, because the scale is the currency's.
    pub fn amount_minor(&self) -> i64 {
        self.amount.mantissa() as i64
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    pub fn is_positive(&self) -> bool {
        self.amount.is_sign_positive() && !self.amount.is_zero()
    }

    /// Whether the amount is a whole number of major units, which most mobile
    /// money providers require for KES, TZS, UGX and RWF.
    pub fn is_whole(&self) -> bool {
        self.amount.fract().is_zero()
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let sum = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Money::new(sum, self.currency)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let difference = self.amount.checked_sub(other.amount).ok_or(MoneyError::Overflow)?;
        Money::new(difference, self.currency)
    }

    /// Compares two amounts of the same currency; there is no order between
    /// currencies without an FX rate.
    pub fn checked_cmp(&self, other: &Money) -> Result<std::cmp::Ordering, MoneyError> {
        self.same_currency(*other)?;
        Ok(self.amount.cmp(&other.amount))
    }

    fn same_currency(&self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency, self.amount)
    }
}

/// Wire form: `{"amount": "1500.00", "currency": "KES"}`; the amount is a
/// string so that no JSON parser turns it into a float.
#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    amount: String,
    currency: Currency,
}

impl TryFrom<MoneyRepr> for Money {
    type Error = MoneyError;

    fn try_from(repr: MoneyRepr) -> Result<Self, Self::Error> {
        Money::parse(&repr.amount, repr.currency)
    }
}

impl From<Money> for MoneyRepr {
    fn from(money: Money) -> Self {
        MoneyRepr {
            amount: money.amount.to_string(),
            currency: money.currency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_currency() -> impl Strategy<Value = Currency> {
        proptest::sample::select(Currency::ALL.to_vec())
    }

    #[test]
    fn amounts_are_held_at_the_currency_scale() {
        let kes = Money::parse("1500", Currency::KES).unwrap();
        assert_eq!(kes.to_string(), "KES 1500.00");
        assert_eq!(kes.amount_minor(), 150_000);
        let ugx = Money::parse("1500.0", Currency::UGX).unwrap();
        assert_eq!(ugx.to_string(), "UGX 1500");
    }

    #[test]
    fn excess_precision_is_refused_not_rounded() {
        assert!(matches!(
            Money::parse("10.5", Currency::UGX),
            Err(MoneyError::ExcessPrecision { .. })
        ));
        assert!(matches!(
            Money::parse("10.005", Currency::KES),
            Err(MoneyError::ExcessPrecision { .. })
        ));
    }

    #[test]
    fn malformed_amounts_are_refused() {
        for bad in ["", "1e3", "1,500", "+5", "abc", "1.2.3", " - 4"] {
            assert!(Money::parse(bad, Currency::KES).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn arithmetic_between_currencies_is_refused() {
        let kes = Money::parse("1", Currency::KES).unwrap();
        let usd = Money::parse("1", Currency::USD).unwrap();
        assert_eq!(
            kes.checked_add(usd),
            Err(MoneyError::CurrencyMismatch {
                left: Currency::KES,
                right: Currency::USD
            })
        );
        assert!(kes.checked_cmp(&usd).is_err());
    }

    #[test]
    fn money_round_trips_through_json_as_a_string_amount() {
        let money = Money::parse("12.50", Currency::USD).unwrap();
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(json, r#"{"amount":"12.50","currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1.001","currency":"USD"}"#).is_err());
    }

    proptest! {
        #[test]
        fn minor_units_round_trip(minor in -1_000_000_000_000i64..1_000_000_000_000, currency in any_currency()) {
            let money = Money::from_minor(minor, currency).unwrap();
            prop_assert_eq!(money.amount_minor(), minor);
            prop_assert_eq!(Money::parse(&money.amount().to_string(), currency).unwrap(), money);
        }

        #[test]
        fn addition_and_subtraction_are_exact_inverses(
            a in -500_000_000_000i64..500_000_000_000,
            b in -500_000_000_000i64..500_000_000_000,
            currency in any_currency(),
        ) {
            let x = Money::from_minor(a, currency).unwrap();
            let y = Money::from_minor(b, currency).unwrap();
            let sum = x.checked_add(y).unwrap();
            prop_assert_eq!(sum.amount_minor(), a + b);
            prop_assert_eq!(sum.checked_sub(y).unwrap(), x);
            prop_assert_eq!(x.checked_add(y).unwrap(), y.checked_add(x).unwrap());
        }

        #[test]
        fn parsing_never_changes_the_value(whole in 0u64..10_000_000_000, cents in 0u32..100) {
            let text = format!("{whole}.{cents:02}");
            let money = Money::parse(&text, Currency::KES).unwrap();
            prop_assert_eq!(money.amount_minor(), (whole * 100 + cents as u64) as i64);
        }
    }
}
