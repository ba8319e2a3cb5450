//! Turning a create request into domain values, collecting every field
//! problem at once so a client can fix them all in one go.

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::problem::FieldError;
use crate::config::Config;
use crate::domain::{Country, Currency, Money, MoneyError, Msisdn, PartyId};
use crate::policy::routing::RouteError;
use crate::workflow::engine::NewIntent;

/// Longest `reference`, in characters.
const MAX_REFERENCE_CHARS: usize = 64;

/// The phone side of a request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneInput {
    /// As people type it: `0712 345 678`, `+254712345678`, `712345678`.
    #[schema(example = "0712345678")]
    pub msisdn: String,
    /// `mpesa`, `airtel`, `mtn`, `vodacom_tz` or `tigo_tz`. Without it, a
    /// payout goes to the party's payout provider, else (and a collection)
    /// to the number's operator by its prefix.
    #[schema(example = "mpesa")]
    pub provider: Option<String>,
}

/// `POST /v1/payouts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    /// Decimal string in major units.
    #[schema(example = "1500.00")]
    pub amount: String,
    #[schema(example = "KES")]
    pub currency: String,
    pub recipient: PhoneInput,
    /// Whose balance and limits apply.
    #[schema(example = "creator-42")]
    pub party_id: String,
    /// Your reference for this payout (shown in reports).
    #[schema(example = "earnings-2026-11")]
    pub reference: String,
    /// Free JSON object, returned as given.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// A quote from `POST /v1/quotes`: the payout is paid from the quote's
    /// source currency at its rate and fees; `amount` must be the quote's
    /// `received`.
    #[serde(default)]
    pub quote_id: Option<uuid::Uuid>,
    /// Pay from this campaign's bucket instead of the party's balance.
    #[serde(default)]
    #[schema(example = "flood-relief-2026")]
    pub campaign_id: Option<String>,
}

/// `POST /v1/collections`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    #[schema(example = "500")]
    pub amount: String,
    #[schema(example = "TZS")]
    pub currency: String,
    pub payer: PhoneInput,
    #[schema(example = "vpn-customer-7")]
    pub party_id: String,
    #[schema(example = "bundle-30d")]
    pub reference: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Credit the money to this campaign's bucket instead of the party's
    /// balance.
    #[serde(default)]
    pub campaign_id: Option<String>,
}

/// The fields both kinds share, with the name of the phone field.
pub struct IntentInput<'a> {
    pub kind: &'static str,
    pub amount: &'a str,
    pub currency: &'a str,
    pub phone_field: &'static str,
    pub phone: &'a PhoneInput,
    pub party_id: &'a str,
    pub reference: &'a str,
    pub metadata: &'a Option<Value>,
    pub campaign_id: Option<&'a str>,
    /// The provider in the party's payout settings (payouts only): chosen
    /// when the request names none.
    pub party_provider: Option<&'a str>,
}

impl CreatePayout {
    pub fn input(&self) -> IntentInput<'_> {
        IntentInput {
            kind: "payout",
            amount: &self.amount,
            currency: &self.currency,
            phone_field: "recipient",
            phone: &self.recipient,
            party_id: &self.party_id,
            reference: &self.reference,
            metadata: &self.metadata,
            campaign_id: self.campaign_id.as_deref(),
            party_provider: None,
        }
    }
}

impl CreateCollection {
    pub fn input(&self) -> IntentInput<'_> {
        IntentInput {
            kind: "collection",
            amount: &self.amount,
            currency: &self.currency,
            phone_field: "payer",
            phone: &self.payer,
            party_id: &self.party_id,
            reference: &self.reference,
            metadata: &self.metadata,
            campaign_id: self.campaign_id.as_deref(),
            party_provider: None,
        }
    }
}

/// The country whose numbers a local currency's intents go to.
pub fn home_country(currency: Currency) -> Option<Country> {
    match currency {
        Currency::KES => Some(Country::KE),
        Currency::UGX => Some(Country::UG),
        Currency::TZS => Some(Country::TZ),
        Currency::RWF => Some(Country::RW),
        Currency::USD => None,
    }
}

/// Validates `input` for `owner`/`actor`; every problem is reported.
pub fn validate(
    input: &IntentInput<'_>,
    config: &Config,
    owner: &str,
    actor: &str,
) -> Result<NewIntent, Vec<FieldError>> {
    let mut errors = Vec::new();
    let phone = |name: &str| format!("{}.{name}", input.phone_field);

    let currency = match input.currency.parse::<Currency>() {
        Ok(currency) => Some(currency),
        Err(_) => {
            errors.push(FieldError::new(
                "currency",
                "unsupported_currency",
                "supported currencies are KES, UGX, TZS, RWF and USD",
            ));
            None
        }
    };
    let amount = currency.and_then(|currency| match Money::parse(input.amount, currency) {
        Ok(money) if !money.is_positive() => {
            errors.push(FieldError::new(
                "amount",
                "amount_not_positive",
                "the amount must be greater than zero",
            ));
            None
        }
        Ok(money) => Some(money),
        Err(MoneyError::ExcessPrecision { minor_units, .. }) => {
            errors.push(FieldError::new(
                "amount",
                "too_many_decimals",
                format!("{currency} allows at most {minor_units} decimal places"),
            ));
            None
        }
        Err(_) => {
            errors.push(FieldError::new(
                "amount",
                "invalid_amount",
                "the amount must be a decimal string such as \"1500.00\"",
            ));
            None
        }
    });

    let default_country = currency.and_then(home_country).unwrap_or(Country::KE);
    let msisdn = match Msisdn::parse(&input.phone.msisdn, default_country) {
        Ok(msisdn) => {
            if let Some(home) = currency.and_then(home_country) {
                if msisdn.country() != home {
                    errors.push(FieldError::new(
                        &phone("msisdn"),
                        "wrong_country",
                        format!(
                            "the number is in {:?}, but {} is paid in {home:?}",
                            msisdn.country(),
                            input.currency
                        ),
                    ));
                }
            }
            Some(msisdn)
        }
        Err(error) => {
            errors.push(FieldError::new(
                &phone("msisdn"),
                "invalid_phone_number",
                error.to_string(),
            ));
            None
        }
    };
    let carried = currency.is_some_and(|c| config.providers.values().any(|p| p.currencies.contains_key(&c)));
    if let (Some(currency), false) = (currency, carried) {
        errors.push(FieldError::new(
            "currency",
            "unsupported_currency",
            format!("no provider pays out or collects {currency}"),
        ));
    }
    let provider = match (&msisdn, currency) {
        (Some(msisdn), Some(currency)) if carried => match crate::policy::routing::route(
            &config.routing,
            &config.providers,
            msisdn,
            currency,
            input.phone.provider.as_deref(),
            input.party_provider,
        ) {
            Ok((name, _)) => Some(name),
            Err(error) => {
                let code = match &error {
                    RouteError::UnknownProvider { .. } => "unknown_provider",
                    RouteError::CurrencyNotServed { .. } => "currency_not_served",
                    RouteError::NoProvider { .. } => "no_provider_for_number",
                };
                let field = match &error {
                    RouteError::NoProvider { .. } => phone("msisdn"),
                    RouteError::UnknownProvider { .. } | RouteError::CurrencyNotServed { .. } => phone("provider"),
                };
                errors.push(FieldError::new(&field, code, error.to_string()));
                None
            }
        },
        _ => None,
    };
    match (amount, &provider) {
        (Some(money), Some(provider)) => check_provider_amount(input.kind, money, provider, config, &mut errors),
        // Not routed (the number is bad): still say what no provider takes.
        (Some(money), None) if carried && !money.is_whole() => {
            let whole_only = config
                .providers
                .values()
                .filter(|p| p.currencies.contains_key(&money.currency()))
                .all(|p| p.whole_units);
            if whole_only {
                errors.push(FieldError::new(
                    "amount",
                    "too_many_decimals",
                    format!("no provider carries fractions of {}", money.currency()),
                ));
            }
        }
        _ => {}
    }
    let party_id = PartyId::parse(input.party_id)
        .map_err(|detail| errors.push(FieldError::new("party_id", "invalid_party_id", detail)))
        .ok();
    let campaign_id = match input.campaign_id.map(PartyId::parse) {
        Some(Err(detail)) => {
            errors.push(FieldError::new("campaign_id", "invalid_campaign_id", detail));
            None
        }
        Some(Ok(id)) => Some(id.as_str().to_owned()),
        None => None,
    };
    let reference_ok = !input.reference.trim().is_empty()
        && input.reference.chars().count() <= MAX_REFERENCE_CHARS
        && !input.reference.chars().any(char::is_control);
    if !reference_ok {
        errors.push(FieldError::new(
            "reference",
            "invalid_reference",
            format!("1 to {MAX_REFERENCE_CHARS} printable characters"),
        ));
    }
    let metadata = match input.metadata {
        None => Value::Object(Default::default()),
        Some(value @ Value::Object(_)) => {
            let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > config.api.metadata_limit_bytes {
                errors.push(FieldError::new(
                    "metadata",
                    "metadata_too_large",
                    format!("at most {} bytes", config.api.metadata_limit_bytes),
                ));
            }
            value.clone()
        }
        Some(_) => {
            errors.push(FieldError::new(
                "metadata",
                "invalid_type",
                "metadata must be a JSON object",
            ));
            Value::Null
        }
    };

    match (errors.is_empty(), amount, msisdn, party_id, provider) {
        (true, Some(amount), Some(msisdn), Some(party_id), Some(provider)) => Ok(NewIntent {
            kind: input.kind.to_owned(),
            owner: owner.to_owned(),
            created_by: actor.to_owned(),
            party_id,
            amount,
            msisdn,
            provider,
            reference: input.reference.trim().to_owned(),
            metadata,
            terms: crate::workflow::engine::IntentTerms {
                campaign_id,
                ..Default::default()
            },
        }),
        _ => Err(errors),
    }
}

/// The provider's whole-unit rule and per-transaction limits.
fn check_provider_amount(kind: &str, money: Money, provider: &str, config: &Config, errors: &mut Vec<FieldError>) {
    let Some(settings) = config.providers.get(provider) else {
        return;
    };
    let Some(limits) = settings.currencies.get(&money.currency()) else {
        return;
    };
    if settings.whole_units && !money.is_whole() {
        errors.push(FieldError::new(
            "amount",
            "too_many_decimals",
            format!("{provider} carries whole {} only", money.currency()),
        ));
        return;
    }
    let (min, max): (Decimal, Decimal) = if kind == "collection" {
        (limits.collection_min, limits.collection_max)
    } else {
        (limits.payout_min, limits.payout_max)
    };
    if money.amount() < min || money.amount() > max {
        errors.push(FieldError::new(
            "amount",
            "amount_out_of_range",
            format!(
                "{provider} {kind}s in {} must be between {min} and {max}",
                money.currency()
            ),
        ));
    }
}
