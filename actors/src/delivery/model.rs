//! The delivery records: what storage persists and the API lists.
//!
//! [`Delivery`] (one event on its way to one endpoint), its [`DeliveryKind`] and
//! [`DeliveryStatus`], the API's [`DeliveryView`], one attempt's [`AttemptRecord`],
//! and the [`EndpointKey`] that names the actor carrying a delivery. Plain data: this
//! file imports nothing from storage or the actors, so storage can depend on it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::clock::serde_ts;
use crate::events::Event;
use crate::secrets::ordered_hex;

/// Which route a delivery travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// Per-request callback (`flake.*`).
    Callback,
    /// Registered webhook.
    Webhook,
    /// Per-message delivery report.
    Report,
}

impl DeliveryKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Callback => "callback",
            DeliveryKind::Webhook => "webhook",
            DeliveryKind::Report => "report",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<DeliveryKind> {
        match s {
            "callback" => Some(DeliveryKind::Callback),
            "webhook" => Some(DeliveryKind::Webhook),
            "report" => Some(DeliveryKind::Report),
            _ => None,
        }
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for (another) attempt.
    Pending,
    /// A 2xx was received.
    Succeeded,
    /// Gave up (retries exhausted, 410, or endpoint gone).
    Failed,
}

impl DeliveryStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One event on its way to one endpoint.
#[derive(Clone)]
pub struct Delivery {
    /// `dlv_<32 hex>`.
    pub delivery_id: String,
    /// Owning app.
    pub app_id: Uuid,
    /// The event (its body is sent byte-exact on every attempt).
    pub event: Event,
    /// Route.
    pub kind: DeliveryKind,
    /// For webhook deliveries: the webhook (URL and secrets are read at attempt time).
    pub webhook_id: Option<String>,
    /// Destination (for webhooks, the URL when the delivery was created).
    pub url: String,
    /// Signing secret of a callback or report.
    pub secret: Option<String>,
    /// Reports also send the secret itself in `<prefix>-Webhook-Secret`.
    pub report_secret: bool,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts made in all.
    pub attempts: u32,
    /// `attempts` when the current attempt series began (manual retries start new series).
    pub series_start: u32,
    /// Last HTTP status received.
    pub last_status_code: Option<u16>,
    /// Last error (timeout, connection, policy…).
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("delivery_id", &self.delivery_id)
            .field("event", &self.event.event)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A new pending delivery of `event`.
    pub fn new(
        event: &Event,
        kind: DeliveryKind,
        url: String,
        webhook_id: Option<String>,
        secret: Option<String>,
    ) -> Delivery {
        Delivery {
            delivery_id: format!("dlv_{}", ordered_hex(event.created_at)),
            app_id: event.app_id,
            event: event.clone(),
            kind,
            webhook_id,
            url,
            secret,
            report_secret: false,
            status: DeliveryStatus::Pending,
            attempts: 0,
            series_start: 0,
            last_status_code: None,
            last_error: None,
            next_attempt_at: Some(event.created_at),
            created_at: event.created_at,
            updated_at: event.created_at,
        }
    }

    /// The endpoint whose actor carries this delivery.
    pub fn endpoint(&self) -> EndpointKey {
        match &self.webhook_id {
            Some(id) => EndpointKey::Webhook(id.clone()),
            None => EndpointKey::Url(self.url.clone()),
        }
    }

    /// The API view.
    pub fn view(&self) -> DeliveryView {
        DeliveryView {
            delivery_id: self.delivery_id.clone(),
            event_id: self.event.id.clone(),
            event: self.event.event.clone(),
            kind: self.kind,
            status: self.status,
            attempts: self.attempts,
            last_status_code: self.last_status_code,
            last_error: self.last_error.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            next_attempt_at: self.next_attempt_at,
        }
    }

    /// Starts a new attempt series (manual retry, recover).
    pub fn restart_series(&mut self, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Pending;
        self.series_start = self.attempts;
        self.next_attempt_at = Some(now);
        self.updated_at = now;
    }
}

/// A delivery as listed by the API.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    /// `dlv_…`.
    pub delivery_id: String,
    /// `evt_…`.
    pub event_id: String,
    /// Event name.
    pub event: String,
    /// Route.
    pub kind: DeliveryKind,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Last HTTP status.
    pub last_status_code: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// Created.
    #[serde(with = "serde_ts")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "serde_ts")]
    pub updated_at: DateTime<Utc>,
    /// Next attempt, when pending.
    #[serde(with = "serde_ts::option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// One attempt's log line.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// Delivery.
    #[serde(skip)]
    pub delivery_id: String,
    /// 1, 2, 3 …
    pub attempt: u32,
    /// When it started.
    #[serde(with = "serde_ts")]
    pub at: DateTime<Utc>,
    /// HTTP status, when one came back.
    pub status_code: Option<u16>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

/// An endpoint: what one `DeliveryActor` serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointKey {
    /// A registered webhook (its URL may change; its queue stays).
    Webhook(String),
    /// A callback or report URL.
    Url(String),
}

impl EndpointKey {
    /// A loggable name: the webhook id, or only scheme and host of a URL (a callback
    /// URL may carry a token in its path or query).
    pub fn redacted(&self) -> String {
        match self {
            EndpointKey::Webhook(id) => id.clone(),
            EndpointKey::Url(raw) => match url::Url::parse(raw) {
                Ok(u) => format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")),
                Err(_) => "<unparsable url>".into(),
            },
        }
    }
}
