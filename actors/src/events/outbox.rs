//! [`Outbox`]: the events and deliveries an action produced, committed with it.
//!
//! An actor fills an outbox while it applies a change (an OTP verify, a message
//! status), the same commit writes the outbox's events and deliveries, and only
//! after the commit does the runtime dispatch them (outbox before network).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Event, ServiceType};
use crate::delivery::model::{Delivery, DeliveryKind};
use crate::storage::Change;
use crate::webhooks::WebhookDirectory;

/// The events and deliveries an action produced, to commit with it and dispatch after.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    /// Event with its deliveries.
    pub items: Vec<(Event, Vec<Delivery>)>,
}

impl Outbox {
    /// Adds an event for a registered webhook of `service_type`, if the app has one that wants it.
    ///
    /// `data` builds the event's `data` object; it runs only when a webhook wants the
    /// event, so an app without webhooks pays nothing for it (most calls on the hot path).
    pub(crate) fn webhook_event(
        &mut self,
        webhooks: &WebhookDirectory,
        app_id: Uuid,
        service_type: ServiceType,
        name: &str,
        now: DateTime<Utc>,
        data: impl FnOnce() -> serde_json::Value,
    ) {
        let Some(w) = webhooks.for_app(app_id, service_type) else {
            return;
        };
        if !w.wants(name) {
            return;
        }
        let event = Event::new(name, service_type, app_id, now, data());
        let d = Delivery::new(
            &event,
            DeliveryKind::Webhook,
            w.url.clone(),
            Some(w.id.clone()),
            None,
        );
        self.items.push((event, vec![d]));
    }

    /// Adds a per-request callback event.
    pub(crate) fn callback_event(
        &mut self,
        app_id: Uuid,
        target: &crate::otp::CallbackTarget,
        name: &str,
        now: DateTime<Utc>,
        data: serde_json::Value,
    ) {
        let event = Event::new(name, ServiceType::Flake, app_id, now, data);
        let d = Delivery::new(
            &event,
            DeliveryKind::Callback,
            target.url.clone(),
            None,
            target.secret.clone(),
        );
        self.items.push((event, vec![d]));
    }

    /// The storage changes that commit this outbox.
    pub fn changes(&self) -> Vec<Change> {
        self.items
            .iter()
            .map(|(e, ds)| Change::Outbox(e.clone(), ds.clone()))
            .collect()
    }

    /// Every delivery, for dispatch after the commit.
    pub fn deliveries(self) -> impl Iterator<Item = Delivery> {
        self.items.into_iter().flat_map(|(_, ds)| ds)
    }

    /// True when nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
