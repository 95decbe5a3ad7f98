//! Schemas of the response bodies whose types live in `otpd-actors`.
//!
//! The envelope `{"success": true, "data": …}` is not written here: like
//! `Reply::ok`, `openapi::Shared` puts it around every 2xx JSON body of `/v1` and
//! `/admin/v1`.
//!
//! The runtime's records (`Issued`, `FlakeView`, `MessageRecord`, `Webhook`, …) are
//! serialized by the handlers as they are; `otpd-actors` does not depend on utoipa,
//! so their wire shape is described here, one type per record, field for field.
//! Two checks keep these from drifting: the enum test below maps every variant of
//! the runtime's public wire enums (an exhaustive `match`, so a new variant does not
//! compile until it is described), and `tests/openapi.rs` validates real responses
//! of every route against the document.
//!
//! These types are never built: they exist only to be described.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::ToSchema;
use uuid::Uuid;

/// `{"type": "boolean", "enum": [true]}`: `success` of the success envelope.
pub fn always_true() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
}

/// `{"type": "string", "enum": [value]}`: a field that only ever holds `value`.
fn literal(value: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([value]))
}

/// `status` of a successful verify.
pub fn literal_verified() -> ObjectBuilder {
    literal("verified")
}

/// `status` of an invalidate.
pub fn literal_invalidated() -> ObjectBuilder {
    literal("invalidated")
}

/// `status` of a message just accepted.
pub fn literal_queued() -> ObjectBuilder {
    literal("queued")
}

/// `status` of a provider's report: any message status but `queued`.
pub fn reported_status() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["sent", "delivered", "read", "failed"]))
}

/// A delivery channel.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// SMS.
    Sms,
    /// WhatsApp.
    Whatsapp,
    /// Telegram.
    Telegram,
}

/// The state of a flake (one issued code).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlakeState {
    /// Waiting for the code.
    Pending,
    /// The code was verified.
    Verified,
    /// Too many wrong codes.
    Failed,
    /// Past `expires_at`.
    Expired,
    /// Invalidated by the app, or replaced by a new request.
    Invalidated,
}

/// The status of a message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Committed, not yet accepted by the provider.
    Queued,
    /// Accepted by the provider.
    Sent,
    /// Delivered to the handset.
    Delivered,
    /// Read (WhatsApp, Telegram).
    Read,
    /// Failed for good.
    Failed,
}

/// Which statuses a per-message delivery report is sent for.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportType {
    /// Every status change.
    All,
    /// Only `delivered`, `read` and `failed`.
    Final,
}

/// What a webhook receives events of.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// OTP events (`flake.*`).
    Otp,
    /// SMS message events.
    Sms,
    /// WhatsApp message events.
    Whatsapp,
    /// Telegram message events.
    Telegram,
}

/// Whether a webhook receives deliveries.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Receives deliveries.
    Active,
    /// Receives none.
    Disabled,
}

/// Which route a delivery takes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// A per-request `callback_url` of an OTP call.
    Callback,
    /// A registered webhook.
    Webhook,
    /// A per-message delivery report.
    Report,
}

/// Where a delivery stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Attempts remain.
    Pending,
    /// A 2xx came back.
    Succeeded,
    /// Every attempt failed.
    Failed,
}

/// The answer of `POST /v1/otp/request`, `/send` and `/resend` (never the code).
#[derive(ToSchema)]
pub struct Issued {
    /// New flake id.
    flake_id: Uuid,
    /// Canonical phone number (E.164 digits, no `+`).
    phone_number: String,
    /// Channel the code went by.
    delivery_method: Channel,
    /// Expiry.
    expires_at: DateTime<Utc>,
    /// The message carrying the code (`null` for test numbers).
    #[schema(required = true)]
    message_id: Option<Uuid>,
}

/// The answer of `GET /v1/otp/status`.
#[derive(ToSchema)]
#[schema(as = FlakeStatus)]
pub struct FlakeView {
    /// Flake.
    flake_id: Uuid,
    /// Canonical phone number (E.164 digits, no `+`).
    phone_number: String,
    /// Status as seen now.
    status: FlakeState,
    /// Codes compared.
    attempts: u32,
    /// Attempts left.
    remaining_attempts: u32,
    /// Expiry.
    expires_at: DateTime<Utc>,
    /// Channel.
    delivery_method: Channel,
    /// The message carrying the code (`null` for test numbers).
    message_id: Option<Uuid>,
}

/// A message and its delivery status (`GET /v1/messages/{message_id}`).
#[derive(ToSchema)]
#[schema(as = Message)]
pub struct MessageRecord {
    /// Id.
    message_id: Uuid,
    /// Channel.
    channel: Channel,
    /// Canonical phone number (E.164 digits, no `+`).
    to: String,
    /// Status.
    status: MessageStatus,
    /// Machine-readable failure reason (`provider_error`, …).
    error_code: Option<String>,
    /// Human failure detail.
    error_message: Option<String>,
    /// Sender ID.
    sender_id: Option<String>,
    /// Created.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// A message's status history (`GET /v1/messages/{message_id}/history`; an otpd
/// addition beyond SPEC section 7).
#[derive(ToSchema)]
pub struct MessageHistory {
    /// Id.
    message_id: Uuid,
    /// The current status (the last step).
    status: MessageStatus,
    /// Every status the message reached, oldest first, starting with `queued` at
    /// its creation. A status it skipped (a `delivered` report that came before the
    /// provider's receipt) is absent; a message stored before otpd recorded
    /// histories has only `queued` and its status at that time.
    history: Vec<MessageStatusStep>,
}

/// One step of a message's status history.
#[derive(ToSchema)]
pub struct MessageStatusStep {
    /// The status reached.
    status: MessageStatus,
    /// When (RFC 3339, milliseconds).
    at: DateTime<Utc>,
    /// On the `failed` step: the machine-readable reason.
    error_code: Option<String>,
    /// On the `failed` step: the detail.
    error_message: Option<String>,
}

/// The answer of `POST /v1/providers/status`.
#[derive(ToSchema)]
pub struct Applied {
    /// Whether the report changed anything (the status-rank guard).
    applied: bool,
    /// The message's status after the report.
    status: MessageStatus,
}

/// A registered webhook (never its secret).
#[derive(ToSchema)]
pub struct Webhook {
    /// `wh_<32 hex>`.
    id: String,
    /// Which events it can receive.
    service_type: ServiceType,
    /// Where deliveries go.
    url: String,
    /// Subscribed events.
    events: Vec<String>,
    /// Active or disabled.
    status: WebhookStatus,
    /// Free text.
    description: Option<String>,
    /// Created.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// A delivery as listed.
#[derive(ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    /// `dlv_…`.
    delivery_id: String,
    /// `evt_…`: the event's id, the same on every retry.
    event_id: String,
    /// Event name.
    event: String,
    /// Route.
    kind: DeliveryKind,
    /// Status.
    status: DeliveryStatus,
    /// Attempts made.
    attempts: u32,
    /// Last HTTP status.
    last_status_code: Option<u16>,
    /// Last error.
    last_error: Option<String>,
    /// Created.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// Next attempt, when pending.
    next_attempt_at: Option<DateTime<Utc>>,
}

/// One attempt of a delivery.
#[derive(ToSchema)]
#[schema(as = Attempt)]
pub struct AttemptRecord {
    /// 1, 2, 3 …
    attempt: u32,
    /// When it started.
    at: DateTime<Utc>,
    /// HTTP status, when one came back.
    status_code: Option<u16>,
    /// What went wrong, when something did.
    error: Option<String>,
    /// How long it took.
    duration_ms: i64,
}

/// A delivery with its payload and attempt log.
#[derive(ToSchema)]
pub struct DeliveryDetail {
    /// The list item.
    #[serde(flatten)]
    view: DeliveryView,
    /// Destination.
    url: String,
    /// The exact body sent.
    payload: String,
    /// Every attempt.
    attempt_log: Vec<AttemptRecord>,
    /// The request headers otpd sends for this delivery (SPEC section 6), by name as
    /// written, from the same code that builds a real attempt. Values computed when
    /// each attempt is made (`X-Otpd-Attempt`, `X-Otpd-Signature`,
    /// `X-Otpd-Signature-Previous`, `webhook-timestamp`, `webhook-signature`) read
    /// `"computed per attempt"`; a report's `X-Otpd-Webhook-Secret` is named, never shown.
    headers: BTreeMap<String, String>,
}

/// A page of the delivery log, newest first.
#[derive(ToSchema)]
pub struct DeliveryPage {
    /// The deliveries.
    items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// Percentiles of attempt latency, in milliseconds.
#[derive(ToSchema)]
pub struct Latency {
    /// Median.
    p50: Option<i64>,
    /// 95th percentile.
    p95: Option<i64>,
}

/// The answer of `GET /v1/webhooks/{id}/stats`.
#[derive(ToSchema)]
pub struct WebhookStats {
    /// Deliveries in all.
    total: u64,
    /// Succeeded.
    succeeded: u64,
    /// Failed for good.
    failed: u64,
    /// Pending.
    pending: u64,
    /// succeeded / (succeeded + failed); `null` before any finished.
    success_rate: Option<f64>,
    /// Failed deliveries in a row.
    consecutive_failures: u32,
    /// When a pause ends.
    paused_until: Option<DateTime<Utc>>,
    /// Last 2xx attempt.
    last_success_at: Option<DateTime<Utc>>,
    /// Last failed attempt.
    last_failure_at: Option<DateTime<Utc>>,
    /// Attempt latency.
    latency_ms: Latency,
}

/// The window of `GET /v1/stats/otp`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatsWindow {
    /// The last hour, in twelve 5-minute buckets.
    Hour,
    /// The last day, in 24 one-hour buckets.
    Day,
}

/// One chart bucket of `GET /v1/stats/otp`.
#[derive(ToSchema)]
pub struct StatsBucket {
    /// Where the bucket starts.
    start: DateTime<Utc>,
    /// OTP messages created in it.
    sent: u64,
    /// Flakes created in it, by outcome.
    outcomes: BTreeMap<String, u64>,
}

/// The answer of `GET /v1/stats/otp`: the app's OTP sends and outcomes over the window.
#[derive(ToSchema)]
pub struct OtpStats {
    /// `hour` or `day`.
    window: StatsWindow,
    /// The window's start.
    from: DateTime<Utc>,
    /// Now.
    until: DateTime<Utc>,
    /// Width of each bucket, in seconds.
    bucket_seconds: i64,
    /// OTP messages created in the window, by message status.
    sends: BTreeMap<String, u64>,
    /// The latest flake of each phone created in the window, by outcome (`pending`,
    /// `verified`, `failed`, `expired`, `invalidated`).
    outcomes: BTreeMap<String, u64>,
    /// The chart: oldest bucket first.
    buckets: Vec<StatsBucket>,
}

/// Per-app OTP settings (SPEC section 2); a field left out takes its default.
#[derive(ToSchema)]
#[serde(default)]
pub struct AppSettings {
    /// Digits per code.
    #[schema(minimum = 4, maximum = 10)]
    code_length: u8,
    /// Default OTP lifetime in minutes.
    #[schema(minimum = 1, maximum = 60)]
    minutes_to_expire: u32,
    /// Wrong codes allowed before the flake fails.
    #[schema(minimum = 1, maximum = 10)]
    max_attempts: u32,
    /// Minimum seconds between two sends to one phone.
    resend_cooldown_secs: u64,
    /// Sends per phone in a rolling hour.
    max_sends_per_hour: u32,
    /// Sender ID passed to the provider.
    sender_id: Option<String>,
    /// Message text; `{code}` and `{minutes}` are replaced.
    message_template: String,
    /// Sends per minute for the whole app (a cap on SMS pumping).
    max_sends_per_minute: u32,
    /// ISO 3166 alpha-2 codes; empty means every country.
    allowed_countries: Vec<String>,
    /// Canonical phone → fixed code; no message is sent and rate limits do not apply.
    test_numbers: BTreeMap<String, String>,
}

/// The runtime's defaults, so the document shows them.
impl Default for AppSettings {
    fn default() -> AppSettings {
        let d = otpd_actors::AppSettings::default();
        AppSettings {
            code_length: d.code_length,
            minutes_to_expire: d.minutes_to_expire,
            max_attempts: d.max_attempts,
            resend_cooldown_secs: d.resend_cooldown_secs,
            max_sends_per_hour: d.max_sends_per_hour,
            sender_id: d.sender_id,
            message_template: d.message_template,
            max_sends_per_minute: d.max_sends_per_minute,
            allowed_countries: d.allowed_countries,
            test_numbers: d.test_numbers,
        }
    }
}

/// An app (no secrets).
#[derive(ToSchema)]
pub struct App {
    /// Stable identifier.
    app_id: Uuid,
    /// Public key clients put in request bodies.
    app_key: String,
    /// Human name.
    name: String,
    /// OTP settings.
    settings: AppSettings,
    /// When the app was created.
    created_at: DateTime<Utc>,
}

/// A created app with its first API key, shown once.
#[derive(ToSchema)]
pub struct CreatedApp {
    /// The app.
    #[serde(flatten)]
    app: App,
    /// The API key's id (for deletion).
    key_id: Uuid,
    /// The API key in plaintext: shown once.
    api_key: String,
}

/// A created API key, shown once.
#[derive(ToSchema)]
#[schema(as = ApiKey)]
pub struct CreatedApiKey {
    /// The key's id (for deletion).
    key_id: Uuid,
    /// The key in plaintext.
    api_key: String,
}

#[cfg(test)]
mod tests {
    //! Every variant of the runtime's wire enums, mapped by an exhaustive `match` to
    //! the variant described here, must serialize to the same string.

    use super::*;
    use otpd_actors::events::ServiceType as RtService;
    use otpd_actors::message::{
        Channel as RtChannel, MessageStatus as RtMessage, ReportType as RtReport,
    };
    use otpd_actors::otp::FlakeStatus as RtFlake;
    use otpd_actors::webhooks::WebhookStatus as RtWebhook;

    fn same<A: Serialize, B: Serialize>(runtime: A, described: B) {
        let (a, b) = (
            serde_json::to_value(runtime),
            serde_json::to_value(described),
        );
        assert_eq!(a.ok(), b.ok());
    }

    #[test]
    fn described_enums_serialize_like_the_runtime_ones() {
        for c in [RtChannel::Sms, RtChannel::Whatsapp, RtChannel::Telegram] {
            same(
                c,
                match c {
                    RtChannel::Sms => Channel::Sms,
                    RtChannel::Whatsapp => Channel::Whatsapp,
                    RtChannel::Telegram => Channel::Telegram,
                },
            );
        }
        use RtFlake as F;
        for f in [
            F::Pending,
            F::Verified,
            F::Failed,
            F::Expired,
            F::Invalidated,
        ] {
            same(
                f,
                match f {
                    F::Pending => FlakeState::Pending,
                    F::Verified => FlakeState::Verified,
                    F::Failed => FlakeState::Failed,
                    F::Expired => FlakeState::Expired,
                    F::Invalidated => FlakeState::Invalidated,
                },
            );
        }
        use RtMessage as M;
        for m in [M::Queued, M::Sent, M::Delivered, M::Read, M::Failed] {
            same(
                m,
                match m {
                    M::Queued => MessageStatus::Queued,
                    M::Sent => MessageStatus::Sent,
                    M::Delivered => MessageStatus::Delivered,
                    M::Read => MessageStatus::Read,
                    M::Failed => MessageStatus::Failed,
                },
            );
        }
        for r in [RtReport::All, RtReport::Final] {
            same(
                r,
                match r {
                    RtReport::All => ReportType::All,
                    RtReport::Final => ReportType::Final,
                },
            );
        }
        for w in [RtWebhook::Active, RtWebhook::Disabled] {
            same(
                w,
                match w {
                    RtWebhook::Active => WebhookStatus::Active,
                    RtWebhook::Disabled => WebhookStatus::Disabled,
                },
            );
        }
        // `flake` is the service type of OTP callbacks: no webhook can be registered
        // for it, so it is no value of `Webhook.service_type`.
        for t in [
            RtService::Otp,
            RtService::Sms,
            RtService::Whatsapp,
            RtService::Telegram,
        ] {
            let described = match t {
                RtService::Flake => continue,
                RtService::Otp => ServiceType::Otp,
                RtService::Sms => ServiceType::Sms,
                RtService::Whatsapp => ServiceType::Whatsapp,
                RtService::Telegram => ServiceType::Telegram,
            };
            same(t, described);
        }
    }
}
