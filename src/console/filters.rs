//! List filters kept in the URL: parsed from the query string into store
//! filters, and written back as query strings for links (the next page, a
//! bookmark), so a view can be shared as it is.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::ConsoleError;
use crate::store::console::IntentFilter;

/// Most states one filter may name.
const MAX_STATES: usize = 20;
/// Longest free-text filter value, in characters.
const MAX_TEXT_CHARS: usize = 100;

/// The query string's pairs, in order (a name may repeat: `state=a&state=b`).
pub fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .filter(|(_, value)| !value.trim().is_empty())
        .collect()
}

/// The first value of `name`.
pub fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim())
}

/// Every value of `name`.
pub fn all<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.trim()).collect()
}

/// `pairs` without `drop`, as a query string (no leading `?`).
pub fn query_without(pairs: &[(String, String)], drop: &[&str]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs.iter().filter(|(k, _)| !drop.contains(&k.as_str())) {
        out.append_pair(key, value);
    }
    out.finish()
}

fn text(pairs: &[(String, String)], name: &str) -> Result<Option<String>, ConsoleError> {
    match first(pairs, name) {
        Some(value) if value.chars().count() > MAX_TEXT_CHARS => Err(ConsoleError::Invalid(format!(
            "{name}: at most {MAX_TEXT_CHARS} characters"
        ))),
        Some(value) => Ok(Some(value.to_owned())),
        None => Ok(None),
    }
}

/// A time as typed: RFC 3339, a `datetime-local` value (`2026-11-23T14:05`)
/// or a date; the last two are UTC.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M")
                .ok()
                .map(|t| t.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

fn time(pairs: &[(String, String)], name: &str) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    first(pairs, name)
        .map(|value| {
            parse_time(value).ok_or_else(|| {
                ConsoleError::Invalid(format!("{name}: a date (2026-11-23) or a time (2026-11-23T14:05)"))
            })
        })
        .transpose()
}

fn amount(pairs: &[(String, String)], name: &str) -> Result<Option<Decimal>, ConsoleError> {
    first(pairs, name)
        .map(|value| {
            value
                .parse::<Decimal>()
                .ok()
                .filter(|d| !d.is_sign_negative())
                .ok_or_else(|| ConsoleError::Invalid(format!("{name}: a non-negative amount, e.g. 1500 or 1500.50")))
        })
        .transpose()
}

/// The intent filter a list's query string asks for.
pub fn intent_filter(kind: &str, pairs: &[(String, String)]) -> Result<IntentFilter, ConsoleError> {
    let states: Vec<String> = all(pairs, "state").into_iter().map(str::to_owned).collect();
    if states.len() > MAX_STATES || states.iter().any(|s| s.len() > MAX_TEXT_CHARS) {
        return Err(ConsoleError::Invalid("state: too many states".into()));
    }
    let filter = IntentFilter {
        kind: kind.to_owned(),
        states,
        provider: text(pairs, "provider")?,
        party_id: text(pairs, "party")?,
        amount_min: amount(pairs, "min")?,
        amount_max: amount(pairs, "max")?,
        created_from: time(pairs, "from")?,
        created_to: time(pairs, "to")?,
        search: text(pairs, "q")?,
        before: first(pairs, "before")
            .map(|v| Uuid::parse_str(v).map_err(|_| ConsoleError::Invalid("before: use the next-page link".into())))
            .transpose()?,
    };
    if let (Some(min), Some(max)) = (filter.amount_min, filter.amount_max) {
        if min > max {
            return Err(ConsoleError::Invalid("min must not be above max".into()));
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_survive_the_round_trip_through_the_url() {
        let query = "state=completed&state=failed&provider=mpesa&min=100&max=2500.50&from=2026-11-01&q=earnings";
        let parsed = pairs(Some(query));
        let filter = intent_filter("payout", &parsed).unwrap();
        assert_eq!(filter.states, ["completed", "failed"]);
        assert_eq!(filter.provider.as_deref(), Some("mpesa"));
        assert_eq!(filter.amount_max, Some("2500.50".parse().unwrap()));
        assert_eq!(filter.created_from.unwrap().to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(query_without(&parsed, &[]), query);
        assert!(!query_without(&parsed, &["q"]).contains("earnings"));
    }

    #[test]
    fn a_bad_filter_says_which_field_and_how_to_fix_it() {
        let error = intent_filter("payout", &pairs(Some("min=-3"))).unwrap_err();
        assert!(error.to_string().starts_with("min:"));
        let error = intent_filter("payout", &pairs(Some("from=yesterday"))).unwrap_err();
        assert!(error.to_string().starts_with("from:"));
        assert!(intent_filter("payout", &pairs(Some("min=10&max=5"))).is_err());
    }
}
