//! Phone numbers: validated with libphonenumber's rules and canonicalised to E.164
//! digits without the `+` (SPEC section 3).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest input we even try to parse; E.164 numbers have at most 15 digits.
const MAX_INPUT_LEN: usize = 64;

/// A valid phone number in canonical form: E.164 digits without `+` (`"255712345678"`).
///
/// Shared, not copied, on clone: an (app, phone) key lives in its actor, its record
/// and the registry, and with 100,000 live flakes each copy was an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(Arc<str>);

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not something that looks like an international number.
    #[error("phone_number must be in international form, e.g. \"+255 712 345 678\"")]
    Malformed,
    /// Parsed, but not a valid number for its country.
    #[error("phone_number is not a valid number for its country")]
    Invalid,
}

impl Phone {
    /// Validates `input` (with or without `+`/`00`, spaces, dashes, dots, parentheses)
    /// and returns its canonical form.
    pub fn parse(input: &str) -> Result<Phone, PhoneError> {
        if input.len() > MAX_INPUT_LEN {
            return Err(PhoneError::Malformed);
        }
        let trimmed = input.trim();
        let mut digits = String::with_capacity(16);
        for (i, ch) in trimmed.chars().enumerate() {
            match ch {
                '0'..='9' => digits.push(ch),
                '+' if i == 0 => {}
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(PhoneError::Malformed),
            }
        }
        let digits = if !trimmed.starts_with('+') {
            digits
                .strip_prefix("00")
                .map(str::to_string)
                .unwrap_or(digits)
        } else {
            digits
        };
        if !(7..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(PhoneError::Malformed);
        }
        let number =
            phonenumber::parse(None, format!("+{digits}")).map_err(|_| PhoneError::Invalid)?;
        if !number.is_valid() {
            return Err(PhoneError::Invalid);
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        Ok(Phone(e164.trim_start_matches('+').into()))
    }

    /// Wraps an already-canonical number read back from storage.
    pub fn from_canonical(digits: String) -> Phone {
        Phone(digits.into())
    }

    /// The canonical digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ISO 3166 alpha-2 region of the number (`"TZ"`), when libphonenumber knows it.
    pub fn country(&self) -> Option<String> {
        let number = phonenumber::parse(None, format!("+{}", self.0)).ok()?;
        let id = number.country().id()?;
        Some(id.as_ref().to_string())
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_international_spelling_and_canonicalises() {
        for input in [
            "+255 712-345-678",
            "255712345678",
            "00255712345678",
            "+255.712.345.678",
            "+255 (712) 345 678",
            " +255712345678 ",
        ] {
            assert_eq!(
                Phone::parse(input).expect(input).as_str(),
                "255712345678",
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_impossible_and_malformed_numbers() {
        for input in [
            "",
            "+",
            "abc",
            "+255 712 345 67a",
            "12345",
            "+999 123 456 789",
            "+1 555 0100",
            "+2557123456789999999",
            "255712345678\u{0}",
            "+44 20 7946 0958 ext 1",
            "++255712345678",
            "٢٥٥٧١٢٣٤٥٦٧٨",
        ] {
            assert!(Phone::parse(input).is_err(), "{input:?} should be refused");
        }
    }

    #[test]
    fn knows_the_country_of_a_number() {
        assert_eq!(
            Phone::parse("+255712345678").unwrap().country().as_deref(),
            Some("TZ")
        );
        assert_eq!(
            Phone::parse("+254712345678").unwrap().country().as_deref(),
            Some("KE")
        );
        assert_eq!(
            Phone::parse("+14155552671").unwrap().country().as_deref(),
            Some("US")
        );
    }
}
