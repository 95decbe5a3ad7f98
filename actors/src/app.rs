//! Apps: who may ask for codes, and with which OTP settings (SPEC section 2).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::serde_ts;
use crate::phone::Phone;

/// An app as the runtime knows it. API keys live beside it, hashed.
#[derive(Debug, Clone, Serialize)]
pub struct App {
    /// Stable identifier (UUID).
    pub app_id: Uuid,
    /// Public key clients put in request bodies (3–64 of `[A-Za-z0-9_-]`).
    pub app_key: String,
    /// Human name.
    pub name: String,
    /// OTP settings.
    pub settings: AppSettings,
    /// When the app was created.
    #[serde(with = "serde_ts")]
    pub created_at: DateTime<Utc>,
}

/// Per-app OTP settings, with the defaults of SPEC section 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSettings {
    /// Digits per code (4–10).
    pub code_length: u8,
    /// Default OTP lifetime in minutes (1–60).
    pub minutes_to_expire: u32,
    /// Wrong codes allowed before the flake fails (1–10).
    pub max_attempts: u32,
    /// Minimum seconds between two sends to one phone.
    pub resend_cooldown_secs: u64,
    /// Sends per phone in a rolling hour.
    pub max_sends_per_hour: u32,
    /// Sender ID passed to the provider.
    pub sender_id: Option<String>,
    /// Message text; `{code}` and `{minutes}` are replaced.
    pub message_template: String,
    /// Sends per minute for the whole app (a cap on SMS pumping).
    pub max_sends_per_minute: u32,
    /// ISO 3166 alpha-2 codes; empty means every country.
    pub allowed_countries: Vec<String>,
    /// Canonical phone → fixed code; no message is sent and rate limits do not apply.
    pub test_numbers: BTreeMap<String, String>,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            code_length: 6,
            minutes_to_expire: 10,
            max_attempts: 3,
            resend_cooldown_secs: 30,
            max_sends_per_hour: 5,
            sender_id: None,
            message_template: "Your verification code is {code}. It expires in {minutes} minutes."
                .into(),
            max_sends_per_minute: 600,
            allowed_countries: Vec::new(),
            test_numbers: BTreeMap::new(),
        }
    }
}

impl AppSettings {
    /// Checks every range and canonicalises `allowed_countries` (upper case) and
    /// `test_numbers` (canonical phones; codes must be digits of `code_length`).
    pub fn validated(mut self) -> Result<AppSettings, String> {
        if !(4..=10).contains(&self.code_length) {
            return Err("code_length must be between 4 and 10".into());
        }
        if !(1..=60).contains(&self.minutes_to_expire) {
            return Err("minutes_to_expire must be between 1 and 60".into());
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err("max_attempts must be between 1 and 10".into());
        }
        if self.resend_cooldown_secs > 86_400 {
            return Err("resend_cooldown_secs must be at most 86400".into());
        }
        if self.max_sends_per_hour == 0 || self.max_sends_per_hour > 1_000 {
            return Err("max_sends_per_hour must be between 1 and 1000".into());
        }
        if self.max_sends_per_minute == 0 || self.max_sends_per_minute > 1_000_000 {
            return Err("max_sends_per_minute must be between 1 and 1000000".into());
        }
        if let Some(sender) = &self.sender_id {
            if sender.is_empty() || sender.chars().count() > 32 {
                return Err("sender_id must be 1–32 characters".into());
            }
        }
        if !self.message_template.contains("{code}") {
            return Err("message_template must contain {code}".into());
        }
        if self.message_template.chars().count() > 1_000 {
            return Err("message_template must be at most 1000 characters".into());
        }
        for country in &mut self.allowed_countries {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!(
                    "allowed_countries: {country:?} is not an ISO 3166 alpha-2 code"
                ));
            }
            *country = country.to_ascii_uppercase();
        }
        let mut tests = BTreeMap::new();
        for (phone, code) in std::mem::take(&mut self.test_numbers) {
            let canonical =
                Phone::parse(&phone).map_err(|e| format!("test_numbers: {phone:?}: {e}"))?;
            if code.len() != usize::from(self.code_length)
                || !code.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "test_numbers: the code for {phone:?} must be {} digits",
                    self.code_length
                ));
            }
            tests.insert(canonical.to_string(), code);
        }
        self.test_numbers = tests;
        Ok(self)
    }

    /// Applies a JSON object of changed settings (PATCH semantics) and validates the result.
    pub fn patched(&self, patch: &serde_json::Value) -> Result<AppSettings, String> {
        let serde_json::Value::Object(changes) = patch else {
            return Err("settings must be an object".into());
        };
        let mut merged = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let serde_json::Value::Object(current) = &mut merged {
            for (k, v) in changes {
                current.insert(k.clone(), v.clone());
            }
        }
        let settings: AppSettings =
            serde_json::from_value(merged).map_err(|e| format!("settings: {e}"))?;
        settings.validated()
    }

    /// Renders the message for one code.
    pub fn render_message(&self, code: &str, minutes: u32) -> String {
        self.message_template
            .replace("{minutes}", &minutes.to_string())
            .replace("{code}", code)
    }
}

/// Checks an `app_key`: 3–64 of `[A-Za-z0-9_-]`.
pub fn validate_app_key(key: &str) -> Result<(), String> {
    let ok = (3..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("app_key must be 3–64 characters of A-Z, a-z, 0-9, _ and -".into())
    }
}

/// What creating (or upserting) an app takes.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    /// Human name.
    pub name: String,
    /// Public key; generated when absent.
    pub app_key: Option<String>,
    /// Fixed id (config `[[apps]]`); generated when absent.
    pub app_id: Option<Uuid>,
    /// Settings; defaults when absent.
    pub settings: AppSettings,
    /// A fixed API key (config `[[apps]]`); one is generated when absent.
    pub api_key: Option<String>,
}

/// A created app with its one-time-visible API key.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApp {
    /// The app.
    #[serde(flatten)]
    pub app: App,
    /// The API key's id (for deletion).
    pub key_id: Uuid,
    /// The API key in plaintext: shown once.
    pub api_key: String,
}

/// A created API key, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApiKey {
    /// The key's id (for deletion).
    pub key_id: Uuid,
    /// The key in plaintext.
    pub api_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let s = AppSettings::default().validated().unwrap();
        assert_eq!(
            (s.code_length, s.minutes_to_expire, s.max_attempts),
            (6, 10, 3)
        );
        assert_eq!(
            (
                s.resend_cooldown_secs,
                s.max_sends_per_hour,
                s.max_sends_per_minute
            ),
            (30, 5, 600)
        );
    }

    #[test]
    fn patch_changes_only_named_settings_and_refuses_unknown_ones() {
        let s = AppSettings::default();
        let p = s.patched(&serde_json::json!({"max_attempts": 5})).unwrap();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.code_length, 6);
        assert!(s.patched(&serde_json::json!({"max_atempts": 5})).is_err());
        assert!(s.patched(&serde_json::json!({"max_attempts": 50})).is_err());
        assert!(s
            .patched(&serde_json::json!({"max_attempts": "5"}))
            .is_err());
    }

    #[test]
    fn test_numbers_are_canonicalised_and_checked() {
        let mut s = AppSettings::default();
        s.test_numbers
            .insert("+255 700 000 001".into(), "123456".into());
        let v = s.clone().validated().unwrap();
        assert_eq!(
            v.test_numbers.get("255700000001").map(String::as_str),
            Some("123456")
        );
        s.test_numbers
            .insert("+255 700 000 002".into(), "12".into());
        assert!(s.validated().is_err());
    }

    #[test]
    fn app_keys_are_checked() {
        assert!(validate_app_key("shop").is_ok());
        assert!(validate_app_key("ab").is_err());
        assert!(validate_app_key("sh op").is_err());
    }
}
