//! Mobile numbers (MSISDNs) of the countries Tuma pays into.
//!
//! People type numbers in many shapes: `0712 345 678`, `+254712345678`,
//! `254712345678`, `712345678`. `Msisdn::parse` accepts all of them, checks
//! the result is a mobile number of a supported country, and keeps only the
//! E.164 digits. `Display` and `Debug` mask all but the last three digits so
//! that a number can never reach a log line whole.
//!
//! Why not the `phonenumber` crate: mobile money only ever needs the mobile
//! ranges of four countries, and routing (a later layer) needs the operator
//! prefixes anyway; a small table we own is easier to audit than the full
//! numbering metadata, and cheaper to build.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A country whose mobile numbers Tuma understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Country {
    /// Kenya, +254.
    KE,
    /// Uganda, +256.
    UG,
    /// Tanzania, +255.
    TZ,
    /// Rwanda, +250.
    RW,
}

/// Digits in a national significant number: the same for all four countries.
const NATIONAL_DIGITS: usize = 9;

impl Country {
    pub const ALL: [Country; 4] = [Country::KE, Country::UG, Country::TZ, Country::RW];

    /// The ISO 3166 alpha-2 code.
    pub fn code(self) -> &'static str {
        match self {
            Country::KE => "KE",
            Country::UG => "UG",
            Country::TZ => "TZ",
            Country::RW => "RW",
        }
    }

    /// The international dialling code, without `+`.
    pub fn dial_code(self) -> &'static str {
        match self {
            Country::KE => "254",
            Country::UG => "256",
            Country::TZ => "255",
            Country::RW => "250",
        }
    }

    /// Whether a 9-digit national number is in this country's mobile ranges
    /// (Kenya 7xx and 1xx, Uganda 7xx, Tanzania 6xx and 7xx, Rwanda 7xx).
    fn is_mobile(self, national: &str) -> bool {
        let first = national.as_bytes()[0];
        match self {
            Country::KE => first == b'7' || first == b'1',
            Country::UG => first == b'7',
            Country::TZ => first == b'6' || first == b'7',
            Country::RW => first == b'7',
        }
    }

    fn from_dial_code(digits: &str) -> Option<Country> {
        Country::ALL
            .into_iter()
            .find(|country| digits.starts_with(country.dial_code()))
    }
}

/// Why a number was refused. The input is never echoed whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsisdnError {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number may contain only digits, spaces, '-', '.', '(', ')' and a leading '+'")]
    InvalidCharacter,
    #[error("phone number has an unsupported country code (supported: +254, +255, +256, +250)")]
    UnsupportedCountry,
    #[error("phone number has the wrong number of digits for {0:?}")]
    WrongLength(Country),
    #[error("phone number is not a mobile number in {0:?}")]
    NotMobile(Country),
}

/// A mobile number in E.164 form, e.g. digits `254712345678`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Msisdn {
    digits: String,
    country: Country,
}

/// Longest input worth looking at; anything longer is not a phone number.
const MAX_INPUT_CHARS: usize = 32;

impl Msisdn {
    /// Parses a number as a person would type it. Numbers without a country
    /// code (`0712…`, `712…`) are read as numbers of `default_country`.
    pub fn parse(input: &str, default_country: Country) -> Result<Msisdn, MsisdnError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(MsisdnError::Empty);
        }
        if input.chars().count() > MAX_INPUT_CHARS {
            return Err(MsisdnError::InvalidCharacter);
        }
        let (international, rest) = match input.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(MsisdnError::InvalidCharacter),
            }
        }
        if digits.is_empty() {
            return Err(MsisdnError::Empty);
        }
        let international = international || digits.starts_with("00") || digits.len() > 10;
        let (country, national) = if international {
            let digits = digits.strip_prefix("00").unwrap_or(&digits);
            let country = Country::from_dial_code(digits).ok_or(MsisdnError::UnsupportedCountry)?;
            let national = &digits[country.dial_code().len()..];
            // "+254 0712…" is a common slip: the trunk 0 does not belong there.
            let national = national.strip_prefix('0').unwrap_or(national);
            (country, national.to_owned())
        } else {
            let national = digits.strip_prefix('0').unwrap_or(&digits);
            (default_country, national.to_owned())
        };
        if national.len() != NATIONAL_DIGITS {
            return Err(MsisdnError::WrongLength(country));
        }
        if !country.is_mobile(&national) {
            return Err(MsisdnError::NotMobile(country));
        }
        Ok(Msisdn {
            digits: format!("{}{}", country.dial_code(), national),
            country,
        })
    }

    /// E.164 digits without `+`, the form most provider APIs take.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// E.164 with the leading `+`.
    pub fn e164(&self) -> String {
        format!("+{}", self.digits)
    }

    /// The 9-digit national significant number (no country code, no trunk 0).
    pub fn national(&self) -> &str {
        &self.digits[self.country.dial_code().len()..]
    }

    pub fn country(&self) -> Country {
        self.country
    }

    /// The number with every digit but the last three replaced by `*`: the
    /// only form of a number that may appear in logs and error messages.
    pub fn masked(&self) -> String {
        let visible = 3;
        let hidden = self.digits.len() - visible;
        format!("{}{}", "*".repeat(hidden), &self.digits[hidden..])
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msisdn({})", self.masked())
    }
}

impl TryFrom<String> for Msisdn {
    type Error = MsisdnError;

    /// Stored and wire forms are always international, so no default country
    /// is needed; a national number here is refused.
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let digits = value.trim().trim_start_matches('+');
        let country = Country::from_dial_code(digits).ok_or(MsisdnError::UnsupportedCountry)?;
        Msisdn::parse(&format!("+{digits}"), country)
    }
}

impl From<Msisdn> for String {
    fn from(msisdn: Msisdn) -> String {
        msisdn.digits
    }
}

/// Masks every phone number found in free text (a provider's raw callback
/// body, say) the way [`Msisdn::masked`] does. A run of 9 to 15 digits, with
/// an optional leading `+`, that reads as a mobile number of a supported
/// country, internationally or nationally, is masked; other digits (amounts,
/// receipts, timestamps) are left alone.
pub fn mask_numbers_in(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let plus = bytes[i] == b'+';
        let mut end = if plus { i + 1 } else { i };
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        let digits = end - start - usize::from(plus);
        let preceded_by_digit = start > 0 && bytes[start - 1].is_ascii_digit();
        if digits == 0 || preceded_by_digit {
            // Not the start of a run: copy one character (whole, for UTF-8).
            let c = text[i..].chars().next().expect("i is on a char boundary");
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let run = &text[start..end];
        let number = (9..=15)
            .contains(&digits)
            .then(|| Country::ALL.into_iter().find_map(|c| Msisdn::parse(run, c).ok()))
            .flatten();
        match number {
            Some(number) => out.push_str(&number.masked()),
            None => out.push_str(run),
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_forms_people_type_all_parse_to_the_same_number() {
        for input in [
            "0712 345 678",
            "+254712345678",
            "254712345678",
            "712345678",
            "0712-345-678",
            "+254 (0)712 345678",
            "00254712345678",
        ] {
            let msisdn = Msisdn::parse(input, Country::KE).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(msisdn.digits(), "254712345678", "{input}");
        }
    }

    #[test]
    fn each_country_parses_with_its_own_code() {
        let cases = [
            ("0772 123 456", Country::UG, "256772123456"),
            ("0754 123 456", Country::TZ, "255754123456"),
            ("0654 123 456", Country::TZ, "255654123456"),
            ("0788 123 456", Country::RW, "250788123456"),
            ("0110 123 456", Country::KE, "254110123456"),
        ];
        for (input, country, digits) in cases {
            let msisdn = Msisdn::parse(input, country).unwrap();
            assert_eq!(msisdn.digits(), digits);
            assert_eq!(msisdn.country(), country);
        }
        // An explicit country code wins over the default country.
        assert_eq!(
            Msisdn::parse("+256772123456", Country::KE).unwrap().country(),
            Country::UG
        );
    }

    #[test]
    fn bad_numbers_are_refused_with_a_reason() {
        assert_eq!(Msisdn::parse("", Country::KE), Err(MsisdnError::Empty));
        assert_eq!(
            Msisdn::parse("07123x5678", Country::KE),
            Err(MsisdnError::InvalidCharacter)
        );
        assert_eq!(
            Msisdn::parse("+1 202 555 0100", Country::KE),
            Err(MsisdnError::UnsupportedCountry)
        );
        assert_eq!(
            Msisdn::parse("071234567", Country::KE),
            Err(MsisdnError::WrongLength(Country::KE))
        );
        assert_eq!(
            Msisdn::parse("020 123 4567", Country::KE),
            Err(MsisdnError::NotMobile(Country::KE))
        );
        assert_eq!(
            Msisdn::parse("0612 345 678", Country::UG),
            Err(MsisdnError::NotMobile(Country::UG))
        );
    }

    #[test]
    fn display_and_debug_show_only_the_last_three_digits() {
        let msisdn = Msisdn::parse("0712345678", Country::KE).unwrap();
        assert_eq!(msisdn.to_string(), "*********678");
        assert_eq!(format!("{msisdn:?}"), "Msisdn(*********678)");
        assert!(!format!("{msisdn} {msisdn:?}").contains("712345"));
    }

    fn any_country() -> impl Strategy<Value = Country> {
        proptest::sample::select(Country::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn every_typed_form_of_a_mobile_number_parses_to_its_e164(
            country in any_country(),
            rest in "[0-9]{8}",
            separator in proptest::sample::select(vec!["", " ", "-"]),
            form in 0usize..4,
        ) {
            let national = format!("7{rest}");
            let spaced = format!("{}{separator}{}{separator}{}", &national[..3], &national[3..6], &national[6..]);
            let typed = match form {
                0 => format!("0{spaced}"),
                1 => format!("+{}{spaced}", country.dial_code()),
                2 => format!("{}{spaced}", country.dial_code()),
                _ => spaced,
            };
            let msisdn = Msisdn::parse(&typed, country).unwrap();
            prop_assert_eq!(msisdn.digits(), format!("{}{national}", country.dial_code()));
            prop_assert_eq!(msisdn.national(), national.as_str());
            // The stored form parses back to the same number.
            prop_assert_eq!(Msisdn::try_from(msisdn.digits().to_owned()).unwrap(), msisdn.clone());
            prop_assert!(!msisdn.to_string().contains(&national[..6]));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(input in "\\PC{0,40}", country in any_country()) {
            let _ = Msisdn::parse(&input, country);
        }
    }

    #[test]
    fn numbers_in_free_text_are_masked_and_other_digits_kept() {
        let body = r#"{"msisdn":"254712345678","amount":"1500","alt":"+255 ","n":"0712345678","receipt":"TKL3X8F2QA","ts":20261123174501}"#;
        let masked = super::mask_numbers_in(body);
        assert!(!masked.contains("712345678"), "{masked}");
        assert!(masked.contains("*********678"), "{masked}");
        assert!(masked.contains("\"amount\":\"1500\""));
        assert!(masked.contains("20261123174501"));
        assert_eq!(super::mask_numbers_in("ünïcode 12"), "ünïcode 12");
    }
}
