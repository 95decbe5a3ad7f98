//! Phone numbers: validated with libphonenumber's rules and canonicalised to E.164
//! digits without the `+` (SPEC section 3).

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest input we even try to parse; E.164 numbers have at most 15 digits.
const MAX_INPUT_LEN: usize = 64;

/// The most digits a canonical number has (E.164).
const MAX_DIGITS: usize = 15;

/// A valid phone number in canonical form: E.164 digits without `+` (`"255712345678"`).
///
/// Held as the digits' value: a canonical number has 7 to 15 digits and never
/// starts with `0`, so its decimal form is exactly its digits. An (app, phone) key
/// lives in its actor, its record and the registry; as a value it is copied
/// without an allocation, and comparing two keys reads no memory outside them
/// (the registry compares keys on every lookup). Serialised as the digit string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Phone(u64);

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
        Phone::from_canonical(e164.trim_start_matches('+')).ok_or(PhoneError::Invalid)
    }

    /// The number whose canonical digits are `digits` (7 to 15 ASCII digits, the
    /// first not `0`), without libphonenumber's validation: for numbers validated
    /// before (read back from storage, or naming a live actor). `None` for anything
    /// else.
    pub fn from_canonical(digits: &str) -> Option<Phone> {
        let canonical = (7..=MAX_DIGITS).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit());
        canonical.then(|| digits.parse().ok()).flatten().map(Phone)
    }

    /// The canonical digits, formatted on the stack.
    pub fn digits(&self) -> Digits {
        let mut buf = [0u8; MAX_DIGITS];
        let mut start = MAX_DIGITS;
        let mut rest = self.0;
        while start > 0 {
            start -= 1;
            // `rest % 10` is below 10.
            buf[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        Digits { buf, start }
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
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Phone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.digits())
    }
}

impl<'de> Deserialize<'de> for Phone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Phone, D::Error> {
        let digits = String::deserialize(deserializer)?;
        Phone::from_canonical(&digits)
            .ok_or_else(|| serde::de::Error::custom("not a canonical phone number"))
    }
}

/// A phone's canonical digits as a `&str` (through `Deref`), without an allocation.
#[derive(Clone, Copy)]
pub struct Digits {
    buf: [u8; MAX_DIGITS],
    /// Where the digits start in `buf`; they run to its end.
    start: usize,
}

impl Deref for Digits {
    type Target = str;

    fn deref(&self) -> &str {
        // Only ASCII digits are ever written to `buf[start..]`.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or_default()
    }
}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
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
                &*Phone::parse(input).expect(input).digits(),
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
    fn canonical_digits_round_trip_through_the_value() {
        for digits in [
            "1234567",
            "255712345678",
            "999999999999999",
            "100000000000000",
        ] {
            let phone = Phone::from_canonical(digits).expect(digits);
            assert_eq!(&*phone.digits(), digits);
            assert_eq!(phone.to_string(), digits);
            let json = serde_json::to_string(&phone).expect("serialises");
            assert_eq!(json, format!("\"{digits}\""));
            let back: Phone = serde_json::from_str(&json).expect("deserialises");
            assert_eq!(back, phone);
        }
    }

    #[test]
    fn from_canonical_takes_only_canonical_digits() {
        for digits in [
            "",
            "123456",
            "0255712345678",
            "1234567890123456",
            "+255712345678",
            "255 712345678",
            "25571234567a",
            "٢٥٥٧١٢٣٤٥٦٧٨",
        ] {
            assert_eq!(Phone::from_canonical(digits), None, "{digits:?}");
        }
        assert!(serde_json::from_str::<Phone>("\"0255712345678\"").is_err());
        assert!(serde_json::from_str::<Phone>("255712345678").is_err());
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
