//! Which provider carries an intent. In order: the provider the request
//! names; else, for payouts, the one in the party's payout settings; else
//! the number's operator, by the configured prefix table of its country
//! (`[routing.prefixes]`). Whichever it is, it must carry the currency;
//! a number no provider serves is refused, never guessed.
//!
//! Prefix tables are indicative (numbers port between operators), so an
//! explicit provider or a party setting always wins over them.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::ProviderConfig;
use crate::domain::{Country, Currency, Msisdn};

/// `[routing]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// The provider a quote prices for when it names none (a quote has no
    /// phone number to route by).
    pub default_provider: BTreeMap<Currency, String>,
    /// Per country, per provider: the prefixes of the national number
    /// (after the country code, without the leading 0) that provider's
    /// subscribers have. The longest matching prefix wins.
    pub prefixes: BTreeMap<Country, BTreeMap<String, Vec<String>>>,
}

/// How a provider was chosen (kept on the intent's creation, for support).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    Explicit,
    PartySettings,
    Prefix,
}

/// Why no provider could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown provider {name:?}; known providers: {known}")]
    UnknownProvider { name: String, known: String },
    #[error("{provider} does not carry {currency}")]
    CurrencyNotServed { provider: String, currency: Currency },
    #[error("no provider serves {country:?} numbers starting {prefix}")]
    NoProvider { country: Country, prefix: String },
}

/// Chooses the provider for `msisdn` and `currency`.
pub fn route(
    routing: &RoutingConfig,
    providers: &BTreeMap<String, ProviderConfig>,
    msisdn: &Msisdn,
    currency: Currency,
    explicit: Option<&str>,
    party_setting: Option<&str>,
) -> Result<(String, RouteSource), RouteError> {
    let (name, source) = match (explicit, party_setting) {
        (Some(name), _) => (name.to_owned(), RouteSource::Explicit),
        (None, Some(name)) => (name.to_owned(), RouteSource::PartySettings),
        (None, None) => (by_prefix(routing, msisdn)?, RouteSource::Prefix),
    };
    let Some(settings) = providers.get(&name) else {
        let known: Vec<&str> = providers.keys().map(String::as_str).collect();
        return Err(RouteError::UnknownProvider {
            name,
            known: known.join(", "),
        });
    };
    if !settings.currencies.contains_key(&currency) {
        return Err(RouteError::CurrencyNotServed {
            provider: name,
            currency,
        });
    }
    Ok((name, source))
}

/// The provider whose prefix is the longest match for the number.
fn by_prefix(routing: &RoutingConfig, msisdn: &Msisdn) -> Result<String, RouteError> {
    let national = msisdn.national();
    routing
        .prefixes
        .get(&msisdn.country())
        .into_iter()
        .flat_map(|table| table.iter())
        .flat_map(|(provider, prefixes)| prefixes.iter().map(move |p| (provider, p)))
        .filter(|(_, prefix)| national.starts_with(prefix.as_str()))
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(provider, _)| provider.clone())
        .ok_or_else(|| RouteError::NoProvider {
            country: msisdn.country(),
            prefix: national.chars().take(3).collect(),
        })
}

/// Checks a routing table against the configured providers: every provider
/// named exists, and no prefix is claimed twice in one country.
pub fn check(routing: &RoutingConfig, providers: &BTreeMap<String, ProviderConfig>) -> Result<(), String> {
    for (country, table) in &routing.prefixes {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (provider, prefixes) in table {
            if !providers.contains_key(provider) {
                return Err(format!("routing.prefixes.{country:?}: unknown provider {provider:?}"));
            }
            for prefix in prefixes {
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "routing.prefixes.{country:?}.{provider}: {prefix:?} is not digits"
                    ));
                }
                if let Some(other) = seen.insert(prefix, provider) {
                    return Err(format!(
                        "routing.prefixes.{country:?}: prefix {prefix} is claimed by both {other} and {provider}"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> Config {
        Config::load(None).expect("the built-in configuration loads")
    }

    fn routed(number: &str, country: Country, currency: Currency) -> Result<String, RouteError> {
        let config = config();
        let msisdn = Msisdn::parse(number, country).unwrap();
        route(&config.routing, &config.providers, &msisdn, currency, None, None).map(|(name, _)| name)
    }

    #[test]
    fn numbers_in_each_country_go_to_their_operator() {
        use Country::*;
        use Currency::*;
        let cases = [
            ("0712345678", KE, KES, "mpesa"),
            ("0110345678", KE, KES, "mpesa"),
            ("0733345678", KE, KES, "airtel"),
            ("0752345678", KE, KES, "airtel"),
            ("0772345678", UG, UGX, "mtn"),
            ("0782345678", UG, UGX, "mtn"),
            ("0702345678", UG, UGX, "airtel"),
            ("0752345678", UG, UGX, "airtel"),
            ("0742345678", TZ, TZS, "vodacom_tz"),
            ("0754345678", TZ, TZS, "vodacom_tz"),
            ("0682345678", TZ, TZS, "airtel"),
            ("0782345678", TZ, TZS, "airtel"),
            ("0652345678", TZ, TZS, "tigo_tz"),
            ("0712345678", TZ, TZS, "tigo_tz"),
            ("0782345678", RW, RWF, "mtn"),
            ("0722345678", RW, RWF, "airtel"),
        ];
        for (number, country, currency, provider) in cases {
            assert_eq!(
                routed(number, country, currency).as_deref(),
                Ok(provider),
                "{number} in {country:?}"
            );
        }
    }

    #[test]
    fn a_number_no_operator_serves_is_refused_with_its_country_and_prefix() {
        assert_eq!(
            routed("0612345678", Country::TZ, Currency::TZS),
            Err(RouteError::NoProvider {
                country: Country::TZ,
                prefix: "612".into()
            })
        );
    }

    #[test]
    fn an_explicit_provider_or_a_party_setting_wins_but_must_carry_the_currency() {
        let config = config();
        let msisdn = Msisdn::parse("0772345678", Country::UG).unwrap();
        let go = |explicit, party| {
            route(
                &config.routing,
                &config.providers,
                &msisdn,
                Currency::UGX,
                explicit,
                party,
            )
        };
        assert_eq!(
            go(Some("airtel"), Some("mtn")),
            Ok(("airtel".into(), RouteSource::Explicit))
        );
        assert_eq!(
            go(None, Some("airtel")),
            Ok(("airtel".into(), RouteSource::PartySettings))
        );
        assert_eq!(go(None, None), Ok(("mtn".into(), RouteSource::Prefix)));
        assert_eq!(
            go(Some("vodacom_tz"), None),
            Err(RouteError::CurrencyNotServed {
                provider: "vodacom_tz".into(),
                currency: Currency::UGX
            })
        );
        assert!(matches!(
            go(Some("nope"), None),
            Err(RouteError::UnknownProvider { .. })
        ));
    }

    #[test]
    fn a_prefix_claimed_twice_is_a_configuration_error() {
        let mut config = config();
        let tz = config.routing.prefixes.get_mut(&Country::TZ).unwrap();
        tz.get_mut("airtel").unwrap().push("74".into());
        let error = check(&config.routing, &config.providers).unwrap_err();
        assert!(error.contains("prefix 74"), "{error}");
    }
}
