//! Events (SPEC section 5): the catalogue, the one envelope, and the payloads.
//!
//! An [`Event`] is rendered to its body bytes once, when it is created; every
//! attempt and every manual retry sends those exact bytes, so signatures and the
//! `evt_` id are stable. Payloads never carry the code.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | [`ServiceType`] and its event catalogue, the [`Event`] envelope, the payload builders |
//! | `outbox.rs` | `Outbox`: the events and deliveries an action produced, committed with it |

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::clock::rfc3339;
use crate::secrets::ordered_hex;

pub(crate) mod outbox;

/// The routes and webhook kinds events travel on (`channel` in the envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// Per-request callbacks (`flake.*`); not registrable as a webhook.
    Flake,
    /// OTP lifecycle webhooks.
    Otp,
    /// SMS status webhooks.
    Sms,
    /// WhatsApp status webhooks.
    Whatsapp,
    /// Telegram status webhooks.
    Telegram,
}

/// Registrable but never emitted.
pub const RESERVED_EVENTS: [&str; 4] = [
    "identity.created",
    "identity.updated",
    "application.created",
    "application.deleted",
];

impl ServiceType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Flake => "flake",
            ServiceType::Otp => "otp",
            ServiceType::Sms => "sms",
            ServiceType::Whatsapp => "whatsapp",
            ServiceType::Telegram => "telegram",
        }
    }

    /// Every event this service type emits (the default subscription).
    pub fn active_events(self) -> &'static [&'static str] {
        match self {
            ServiceType::Flake => &["flake.verified", "flake.failed"],
            ServiceType::Otp => &["otp.created", "otp.verified", "otp.failed", "otp.expired"],
            ServiceType::Sms => &["sms.sent", "sms.delivered", "sms.failed"],
            ServiceType::Whatsapp => &[
                "whatsapp.sent",
                "whatsapp.delivered",
                "whatsapp.read",
                "whatsapp.failed",
            ],
            ServiceType::Telegram => &["telegram.sent", "telegram.delivered", "telegram.failed"],
        }
    }

    /// Whether a webhook of this type may subscribe to `event`.
    pub fn accepts(self, event: &str) -> bool {
        self.active_events().contains(&event) || RESERVED_EVENTS.contains(&event)
    }

    /// Whether a webhook may be registered for this type.
    pub fn registrable(self) -> bool {
        self != ServiceType::Flake
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "flake" => ServiceType::Flake,
            "otp" => ServiceType::Otp,
            "sms" => ServiceType::Sms,
            "whatsapp" => ServiceType::Whatsapp,
            "telegram" => ServiceType::Telegram,
            other => {
                return Err(format!(
                    "unknown service_type {other:?}; expected one of \"otp\", \"sms\", \"whatsapp\", \"telegram\""
                ))
            }
        })
    }
}

impl From<crate::message::Channel> for ServiceType {
    fn from(c: crate::message::Channel) -> Self {
        match c {
            crate::message::Channel::Sms => ServiceType::Sms,
            crate::message::Channel::Whatsapp => ServiceType::Whatsapp,
            crate::message::Channel::Telegram => ServiceType::Telegram,
        }
    }
}

/// One event, rendered.
#[derive(Debug, Clone)]
pub struct Event {
    /// `evt_<32 hex>`: the idempotency key receivers dedupe on.
    pub id: String,
    /// Event name, e.g. `otp.verified`.
    pub event: String,
    /// Envelope `channel`.
    pub channel: ServiceType,
    /// Owning app.
    pub app_id: Uuid,
    /// Envelope `created_at`.
    pub created_at: DateTime<Utc>,
    /// The exact body bytes sent (and signed) on every attempt.
    pub body: Arc<str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    event: &'a str,
    channel: &'a str,
    app_id: Uuid,
    created_at: String,
    data: &'a Value,
}

impl Event {
    /// Creates an event with a fresh id and renders its envelope.
    pub fn new(
        event: &str,
        channel: ServiceType,
        app_id: Uuid,
        created_at: DateTime<Utc>,
        data: Value,
    ) -> Event {
        let id = format!("evt_{}", ordered_hex(created_at));
        Self::render(id, event, channel, app_id, created_at, &data)
    }

    /// Renders an envelope with a body that is not an envelope (delivery reports).
    pub fn with_body(
        event: &str,
        channel: ServiceType,
        app_id: Uuid,
        created_at: DateTime<Utc>,
        body: String,
    ) -> Event {
        Event {
            id: format!("evt_{}", ordered_hex(created_at)),
            event: event.to_string(),
            channel,
            app_id,
            created_at,
            body: body.into(),
        }
    }

    fn render(
        id: String,
        event: &str,
        channel: ServiceType,
        app_id: Uuid,
        created_at: DateTime<Utc>,
        data: &Value,
    ) -> Event {
        let envelope = Envelope {
            id: &id,
            event,
            channel: channel.as_str(),
            app_id,
            created_at: rfc3339(created_at),
            data,
        };
        // Serializing a struct of strings and a Value cannot fail.
        let body = serde_json::to_string(&envelope).unwrap_or_default();
        Event {
            id,
            event: event.to_string(),
            channel,
            app_id,
            created_at,
            body: body.into(),
        }
    }
}

/// `otp.created`.
pub fn otp_created(
    flake_id: Uuid,
    phone: &str,
    delivery_method: &str,
    expires_at: DateTime<Utc>,
) -> Value {
    json!({"flake_id": flake_id, "phone_number": phone, "delivery_method": delivery_method, "expires_at": rfc3339(expires_at)})
}

/// `otp.verified`.
pub fn otp_verified(flake_id: Uuid, phone: &str, verified_at: DateTime<Utc>) -> Value {
    json!({"flake_id": flake_id, "phone_number": phone, "verified_at": rfc3339(verified_at)})
}

/// `otp.failed` (`reason`: `invalid_code` or `max_attempts`).
pub fn otp_failed(
    flake_id: Uuid,
    phone: &str,
    reason: &str,
    remaining: u32,
    failed_at: DateTime<Utc>,
) -> Value {
    json!({"flake_id": flake_id, "phone_number": phone, "reason": reason, "remaining_attempts": remaining, "failed_at": rfc3339(failed_at)})
}

/// `otp.expired`.
pub fn otp_expired(flake_id: Uuid, phone: &str, expired_at: DateTime<Utc>) -> Value {
    json!({"flake_id": flake_id, "phone_number": phone, "expired_at": rfc3339(expired_at)})
}

/// `flake.verified`.
pub fn flake_verified(flake_id: Uuid, phone: &str, verified_at: DateTime<Utc>) -> Value {
    json!({"flake_id": flake_id, "phone_number": phone, "status": "verified", "verified_at": rfc3339(verified_at)})
}

/// `flake.failed`.
pub fn flake_failed(flake_id: Uuid, phone: &str, failed_at: DateTime<Utc>) -> Value {
    json!({"flake_id": flake_id, "phone_number": phone, "status": "failed", "reason": "max_attempts", "failed_at": rfc3339(failed_at), "remaining_attempts": 0})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;

    #[test]
    fn envelope_has_the_contract_fields_in_order() {
        let e = Event::new(
            "otp.verified",
            ServiceType::Otp,
            Uuid::nil(),
            from_millis(1_780_833_605_123),
            json!({"a": 1}),
        );
        assert!(e.id.starts_with("evt_") && e.id.len() == 36);
        assert!(e.id[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let expected = format!(
            r#"{{"id":"{}","event":"otp.verified","channel":"otp","app_id":"00000000-0000-0000-0000-000000000000","created_at":"2026-06-07T12:00:05.123Z","data":{{"a":1}}}}"#,
            e.id
        );
        assert_eq!(&*e.body, expected);
    }

    #[test]
    fn catalogue_accepts_active_and_reserved_events_only() {
        assert!(ServiceType::Otp.accepts("otp.expired"));
        assert!(ServiceType::Sms.accepts("application.created"));
        assert!(!ServiceType::Sms.accepts("whatsapp.read"));
        assert!(!ServiceType::Otp.accepts("otp.test"));
        assert!(!ServiceType::Flake.registrable());
    }
}
