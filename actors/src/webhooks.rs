//! Registered webhooks (SPEC section 6): one per app per service type.
//!
//! Webhooks are few and read on every event, so they are mirrored in memory
//! (`WebhookDirectory`) and written through storage. Secrets stay here: a delivery
//! to a webhook signs with the secret current at attempt time, plus the previous
//! secret during its grace period (Standard Webhooks rotation).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::clock::serde_ts;
use crate::events::ServiceType;

/// Whether a webhook receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Receives its subscribed events.
    Active,
    /// Receives nothing new (pending deliveries still finish).
    Disabled,
}

impl WebhookStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Active => "active",
            WebhookStatus::Disabled => "disabled",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<WebhookStatus> {
        match s {
            "active" => Some(WebhookStatus::Active),
            "disabled" => Some(WebhookStatus::Disabled),
            _ => None,
        }
    }
}

/// A registered webhook.
#[derive(Clone, Serialize)]
pub struct Webhook {
    /// `wh_<32 hex>`.
    pub id: String,
    /// Owning app.
    #[serde(skip)]
    pub app_id: Uuid,
    /// Which events it can receive.
    pub service_type: ServiceType,
    /// Where deliveries go (policy-checked).
    pub url: String,
    /// Subscribed events.
    pub events: Vec<String>,
    /// Active or disabled.
    pub status: WebhookStatus,
    /// Free text.
    pub description: Option<String>,
    /// Current signing secret (`whsec_…`); shown only by the secret endpoints.
    #[serde(skip)]
    pub secret: String,
    /// The rotated-out secret and until when it still signs.
    #[serde(skip)]
    pub previous_secret: Option<(String, DateTime<Utc>)>,
    /// Created.
    #[serde(with = "serde_ts")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "serde_ts")]
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("service_type", &self.service_type)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Whether a new `event` should be delivered here.
    pub fn wants(&self, event: &str) -> bool {
        self.status == WebhookStatus::Active && self.events.iter().any(|e| e == event)
    }

    /// Secrets that sign at `now`: the current one first, then the previous one in its grace period.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut secrets = vec![self.secret.clone()];
        if let Some((old, until)) = &self.previous_secret {
            if now < *until {
                secrets.push(old.clone());
            }
        }
        secrets
    }
}

/// Checks a subscription list for a service type; `None` = every active event.
pub fn validate_events(
    service_type: ServiceType,
    events: Option<Vec<String>>,
) -> Result<Vec<String>, String> {
    let Some(events) = events else {
        return Ok(service_type
            .active_events()
            .iter()
            .map(|e| e.to_string())
            .collect());
    };
    if events.is_empty() {
        return Err("events must name at least one event".into());
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        if !service_type.accepts(&e) {
            return Err(format!(
                "unknown event {e:?} for service_type {service_type}"
            ));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Checks a description.
pub fn validate_description(d: &Option<String>) -> Result<(), String> {
    match d {
        Some(d) if d.chars().count() > 500 => {
            Err("description must be at most 500 characters".into())
        }
        _ => Ok(()),
    }
}

/// Webhooks by id and by (app, service type), mirrored from SQLite.
#[derive(Default)]
pub(crate) struct WebhookDirectory {
    by_id: crate::FastDashMap<String, Arc<Webhook>>,
    by_app: crate::FastDashMap<(Uuid, ServiceType), String>,
}

impl WebhookDirectory {
    pub(crate) fn insert(&self, w: Webhook) -> Arc<Webhook> {
        let w = Arc::new(w);
        self.by_app.insert((w.app_id, w.service_type), w.id.clone());
        self.by_id.insert(w.id.clone(), w.clone());
        w
    }

    pub(crate) fn remove(&self, id: &str) {
        if let Some((_, w)) = self.by_id.remove(id) {
            self.by_app
                .remove_if(&(w.app_id, w.service_type), |_, v| v == id);
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Webhook>> {
        self.by_id.get(id).map(|w| w.clone())
    }

    /// The app's webhook for a service type.
    pub(crate) fn for_app(&self, app_id: Uuid, service_type: ServiceType) -> Option<Arc<Webhook>> {
        let id = self.by_app.get(&(app_id, service_type))?.clone();
        self.get(&id)
    }

    pub(crate) fn list(&self, app_id: Uuid) -> Vec<Arc<Webhook>> {
        let mut v: Vec<_> = self
            .by_id
            .iter()
            .filter(|w| w.app_id == app_id)
            .map(|w| w.clone())
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_default_to_every_active_event_and_refuse_unknown_ones() {
        assert_eq!(validate_events(ServiceType::Otp, None).unwrap().len(), 4);
        assert!(validate_events(
            ServiceType::Otp,
            Some(vec!["otp.verified".into(), "identity.created".into()])
        )
        .is_ok());
        assert!(validate_events(ServiceType::Otp, Some(vec!["sms.sent".into()])).is_err());
        assert!(validate_events(ServiceType::Otp, Some(vec![])).is_err());
    }

    #[test]
    fn rotated_secret_signs_only_during_grace() {
        let t0 = crate::clock::from_millis(1_000_000);
        let w = Webhook {
            id: "wh_1".into(),
            app_id: Uuid::nil(),
            service_type: ServiceType::Otp,
            url: "https://example.com".into(),
            events: vec![],
            status: WebhookStatus::Active,
            description: None,
            secret: "new".into(),
            previous_secret: Some(("old".into(), t0 + chrono::Duration::seconds(10))),
            created_at: t0,
            updated_at: t0,
        };
        assert_eq!(
            w.signing_secrets(t0),
            vec!["new".to_string(), "old".to_string()]
        );
        assert_eq!(
            w.signing_secrets(t0 + chrono::Duration::seconds(10)),
            vec!["new".to_string()]
        );
    }
}
