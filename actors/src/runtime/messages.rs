//! Messages on the runtime (SPEC section 7): sending, reading, provider status reports.

use uuid::Uuid;

use super::Runtime;
use crate::app::App;
use crate::error::Error;
use crate::message::{Channel, MessageRecord, MessageStatus, Purpose, ReportTarget, ReportType};
use crate::message_actor::{Applied, StatusUpdate};
use crate::phone::Phone;
use crate::provider::OutboundMessage;
use crate::sender::PendingSend;
use crate::storage::{self, Change};

/// `POST /v1/messages` input.
#[derive(Debug, Clone, Default)]
pub struct SendMessage {
    /// Channel.
    pub channel: Channel,
    /// Recipient in any accepted phone spelling.
    pub to: String,
    /// Text, 1–1600 characters.
    pub text: String,
    /// Sender ID (default: the app's).
    pub sender_id: Option<String>,
    /// Per-message delivery reports.
    pub delivery_report: Option<DeliveryReportRequest>,
}

/// `delivery_report` of `POST /v1/messages`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryReportRequest {
    /// Where reports go (URL policy applies).
    pub webhook_url: String,
    /// `all` (default) or `final`.
    pub delivery_report_type: Option<ReportType>,
    /// Sent in `X-Otpd-Webhook-Secret` and keys the signatures.
    pub webhook_secret: Option<String>,
}

/// `POST /v1/providers/status` input.
#[derive(Debug, Clone, Default)]
pub struct StatusReport {
    /// otpd's message id.
    pub message_id: Option<String>,
    /// The provider's id (used when `message_id` is absent).
    pub provider_message_id: Option<String>,
    /// `sent`, `delivered`, `read` or `failed`.
    pub status: MessageStatus,
    /// Reason code (failed).
    pub error_code: Option<String>,
    /// Reason text (failed).
    pub error_message: Option<String>,
}

fn bounded(field: &str, value: &Option<String>, max: usize) -> Result<(), Error> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > max => Err(Error::Validation(format!(
            "{field} must be 1–{max} characters"
        ))),
        _ => Ok(()),
    }
}

impl Runtime {
    /// Queues a message; it is committed before the provider is called. 202 semantics:
    /// the answer is `queued`, the outcome arrives as status changes and events.
    pub async fn send_message(&self, app: &App, req: SendMessage) -> Result<MessageRecord, Error> {
        self.check_open()?;
        let phone = Phone::parse(&req.to)
            .map_err(|e| Error::InvalidPhoneNumber(e.to_string().replace("phone_number", "to")))?;
        Self::check_country(app, &phone)?;
        let len = req.text.chars().count();
        if !(1..=1600).contains(&len) {
            return Err(Error::Validation("text must be 1–1600 characters".into()));
        }
        bounded("sender_id", &req.sender_id, 32)?;
        let report = match req.delivery_report {
            Some(r) => {
                bounded("webhook_secret", &r.webhook_secret, 256)?;
                let url = self.check_callback_url(&r.webhook_url).await?.to_string();
                Some(ReportTarget {
                    url,
                    report_type: r.delivery_report_type.unwrap_or_default(),
                    secret: r.webhook_secret,
                })
            }
            None => None,
        };
        let now = self.inner.shared.clock.now();
        let record = MessageRecord {
            sender_id: req.sender_id.or_else(|| app.settings.sender_id.clone()),
            body: Some(req.text.clone()),
            report,
            ..MessageRecord::queued(
                crate::secrets::ordered_id(now),
                app.app_id,
                req.channel,
                phone.to_string(),
                Purpose::Message,
                now,
            )
        };
        let outbound = OutboundMessage {
            message_id: record.message_id,
            channel: record.channel,
            to: record.to.clone(),
            text: req.text,
            sender_id: record.sender_id.clone(),
        };
        let ticket = self
            .inner
            .shared
            .snapshot
            .write(vec![Change::Message(record.clone())]);
        let pending = PendingSend {
            record: record.clone(),
            outbound,
        };
        self.settle(ticket, None, move |rt| rt.inner.sender.dispatch(pending))
            .await?;
        Ok(record)
    }

    /// One message of the app.
    pub async fn message(&self, app: &App, message_id: Uuid) -> Result<MessageRecord, Error> {
        let app_id = app.app_id;
        self.inner
            .shared
            .snapshot
            .read(move |conn| storage::load_message(conn, &app_id, &message_id))
            .await?
            .ok_or_else(|| Error::NotFound("no such message".into()))
    }

    /// Applies a provider's status report through the message's actor (rank guard,
    /// one writer per message). Reports that change nothing emit nothing.
    pub async fn report_status(&self, report: StatusReport) -> Result<Applied, Error> {
        self.check_open()?;
        if report.status == MessageStatus::Queued {
            return Err(Error::InvalidRequest(
                "status must be sent, delivered, read or failed".into(),
            ));
        }
        bounded("error_code", &report.error_code, 100)?;
        bounded("error_message", &report.error_message, 1000)?;
        let id = match (&report.message_id, &report.provider_message_id) {
            (Some(id), _) => {
                Uuid::parse_str(id).map_err(|_| Error::NotFound("no such message".into()))?
            }
            (None, Some(pid)) => {
                if pid.is_empty() || pid.len() > 255 {
                    return Err(Error::NotFound("no such message".into()));
                }
                let pid = pid.clone();
                self.inner
                    .shared
                    .snapshot
                    .read(move |c| storage::message_id_by_provider_id(c, &pid))
                    .await?
                    .ok_or_else(|| Error::NotFound("no such message".into()))?
            }
            (None, None) => {
                return Err(Error::InvalidRequest(
                    "give message_id or provider_message_id".into(),
                ))
            }
        };
        let update = StatusUpdate {
            status: report.status,
            error_code: report.error_code,
            error_message: report.error_message,
            provider_message_id: report.provider_message_id,
            attempts: None,
        };
        self.inner.router.apply(id, update, None).await
    }

    /// Message actors alive.
    pub fn message_actors(&self) -> usize {
        self.inner.router.actors()
    }
}
