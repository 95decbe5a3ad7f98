//! Messages: every text otpd sends (OTP codes included) and its delivery status.
//!
//! A message is committed as `queued` before the provider is called (outbox before
//! network), then moves to `sent` or `failed`. The body of an OTP message is never
//! stored: it contains the code. If otpd dies before such a message was handed over,
//! start-up recovery asks the flake's actor to issue a fresh code for the same flake
//! and send that (see `OtpActor`'s `ResumeSend`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::serde_ts;

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// SMS (the default).
    #[default]
    Sms,
    /// WhatsApp.
    Whatsapp,
    /// Telegram.
    Telegram,
}

impl Channel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Telegram => "telegram",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sms" => Ok(Channel::Sms),
            "whatsapp" => Ok(Channel::Whatsapp),
            "telegram" => Ok(Channel::Telegram),
            other => Err(format!("unknown channel {other:?}")),
        }
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Committed, not yet accepted by the provider.
    #[default]
    Queued,
    /// Accepted by the provider.
    Sent,
    /// Reported delivered to the handset.
    Delivered,
    /// Reported read (WhatsApp only).
    Read,
    /// Gave up, or reported failed (terminal).
    Failed,
}

impl MessageStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }
}

impl FromStr for MessageStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" => Ok(MessageStatus::Queued),
            "sent" => Ok(MessageStatus::Sent),
            "delivered" => Ok(MessageStatus::Delivered),
            "read" => Ok(MessageStatus::Read),
            "failed" => Ok(MessageStatus::Failed),
            other => Err(format!("unknown message status {other:?}")),
        }
    }
}

/// Why a message exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Carries an OTP code (body never stored).
    Otp,
    /// Sent through `POST /v1/messages`.
    Message,
}

/// One message as stored and as shown by the API.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    /// Id (UUID).
    pub message_id: Uuid,
    /// Owning app.
    #[serde(skip)]
    pub app_id: Uuid,
    /// Channel.
    pub channel: Channel,
    /// Canonical phone.
    pub to: String,
    /// Status.
    pub status: MessageStatus,
    /// Machine-readable failure reason (`provider_error`, …).
    pub error_code: Option<String>,
    /// Human failure detail.
    pub error_message: Option<String>,
    /// Sender ID.
    pub sender_id: Option<String>,
    /// The provider's id for correlating status reports.
    #[serde(skip)]
    pub provider_message_id: Option<String>,
    /// Why the message exists.
    #[serde(skip)]
    pub purpose: Purpose,
    /// The text; `None` for OTP messages (never stored).
    #[serde(skip)]
    pub body: Option<String>,
    /// Provider calls made so far.
    #[serde(skip)]
    pub attempts: u32,
    /// Per-message delivery reports, when requested.
    #[serde(skip)]
    pub report: Option<ReportTarget>,
    /// Created.
    #[serde(with = "serde_ts")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "serde_ts")]
    pub updated_at: DateTime<Utc>,
    /// When each status after `queued` was reached (its status history).
    #[serde(skip)]
    pub reached: StatusTimes,
}

/// When a message reached each status after `queued` (which is `created_at`).
///
/// The rank guard lets a message reach each status at most once, in rank order, so
/// these four times are its whole status history; a status it skipped (a `delivered`
/// report that arrived before the provider's receipt) has none. Messages stored
/// before schema version 5 have only the time of the status they were in then.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusTimes {
    /// Accepted by the provider.
    pub sent_at: Option<DateTime<Utc>>,
    /// Reported delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Reported read.
    pub read_at: Option<DateTime<Utc>>,
    /// Failed.
    pub failed_at: Option<DateTime<Utc>>,
}

impl StatusTimes {
    fn slot(&mut self, status: MessageStatus) -> Option<&mut Option<DateTime<Utc>>> {
        match status {
            MessageStatus::Queued => None,
            MessageStatus::Sent => Some(&mut self.sent_at),
            MessageStatus::Delivered => Some(&mut self.delivered_at),
            MessageStatus::Read => Some(&mut self.read_at),
            MessageStatus::Failed => Some(&mut self.failed_at),
        }
    }

    /// Records that `status` was reached at `at`, keeping an earlier time.
    pub fn mark(&mut self, status: MessageStatus, at: DateTime<Utc>) {
        if let Some(slot) = self.slot(status) {
            slot.get_or_insert(at);
        }
    }
}

/// One step of a message's status history (`GET /v1/messages/{id}/history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusStep {
    /// The status reached.
    pub status: MessageStatus,
    /// When.
    #[serde(with = "serde_ts")]
    pub at: DateTime<Utc>,
    /// The failure reason, on the `failed` step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The failure detail, on the `failed` step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl MessageRecord {
    /// A new message, `queued` at `now`, with no sender id, text or report (callers
    /// set those they have), no error, no provider id and no attempt yet.
    pub fn queued(
        message_id: Uuid,
        app_id: Uuid,
        channel: Channel,
        to: String,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> MessageRecord {
        MessageRecord {
            message_id,
            app_id,
            channel,
            to,
            status: MessageStatus::Queued,
            error_code: None,
            error_message: None,
            sender_id: None,
            provider_message_id: None,
            purpose,
            body: None,
            attempts: 0,
            report: None,
            created_at: now,
            updated_at: now,
            reached: StatusTimes::default(),
        }
    }

    /// Moves the message to `status` at `now` (the caller has applied the rank
    /// guard), recording when it got there.
    pub fn set_status(&mut self, status: MessageStatus, now: DateTime<Utc>) {
        self.status = status;
        self.updated_at = now;
        self.reached.mark(status, now);
    }

    /// The statuses the message went through, oldest first: `queued` at
    /// `created_at`, then each later status it reached, `failed` with its reason.
    pub fn history(&self) -> Vec<StatusStep> {
        let step = |status, at| StatusStep {
            status,
            at,
            error_code: None,
            error_message: None,
        };
        let r = &self.reached;
        let mut out = vec![step(MessageStatus::Queued, self.created_at)];
        for (status, at) in [
            (MessageStatus::Sent, r.sent_at),
            (MessageStatus::Delivered, r.delivered_at),
            (MessageStatus::Read, r.read_at),
        ] {
            if let Some(at) = at {
                out.push(step(status, at));
            }
        }
        if let Some(at) = r.failed_at {
            out.push(StatusStep {
                error_code: self.error_code.clone(),
                error_message: self.error_message.clone(),
                ..step(MessageStatus::Failed, at)
            });
        }
        out
    }
}

/// Which statuses a per-message delivery report is sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReportType {
    /// Every applied `sent`, `delivered` and `failed`.
    #[default]
    All,
    /// Only `delivered` and `failed`.
    Final,
}

impl ReportType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportType::All => "all",
            ReportType::Final => "final",
        }
    }

    /// Whether a report for `status` is the last one (`is_final`): delivered and failed.
    pub fn is_final_report(status: MessageStatus) -> bool {
        matches!(status, MessageStatus::Delivered | MessageStatus::Failed)
    }

    /// Whether a report goes out for `status`.
    pub fn wants(self, status: MessageStatus) -> bool {
        match self {
            ReportType::All => matches!(
                status,
                MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Failed
            ),
            ReportType::Final => matches!(status, MessageStatus::Delivered | MessageStatus::Failed),
        }
    }
}

/// Where a message's delivery reports go.
#[derive(Clone, PartialEq, Eq)]
pub struct ReportTarget {
    /// Policy-checked URL.
    pub url: String,
    /// `all` or `final`.
    pub report_type: ReportType,
    /// Sent in `<prefix>-Webhook-Secret` and keys the signatures.
    pub secret: Option<String>,
}

impl fmt::Debug for ReportTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportTarget")
            .field("url", &self.url)
            .field("report_type", &self.report_type)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl MessageStatus {
    fn rank(self) -> u8 {
        match self {
            MessageStatus::Queued => 0,
            MessageStatus::Sent => 1,
            MessageStatus::Delivered => 2,
            MessageStatus::Read => 3,
            MessageStatus::Failed => 4,
        }
    }

    /// Delivered, read and failed end a message's life (a whatsapp `read` may still follow `delivered`).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MessageStatus::Delivered | MessageStatus::Read | MessageStatus::Failed
        )
    }
}

/// The status-rank guard (SPEC section 7): whether `new` may replace `current`.
///
/// `queued < sent < delivered < read`; a status applies only if it ranks above the
/// current one; `failed` applies only from `queued` or `sent` and is terminal;
/// `read` only on whatsapp; nothing moves back to `queued`.
pub fn status_applies(channel: Channel, current: MessageStatus, new: MessageStatus) -> bool {
    match new {
        MessageStatus::Queued => false,
        MessageStatus::Failed => matches!(current, MessageStatus::Queued | MessageStatus::Sent),
        MessageStatus::Read if channel != Channel::Whatsapp => false,
        _ => current != MessageStatus::Failed && new.rank() > current.rank(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;

    #[test]
    fn rank_guard_only_moves_forward() {
        let sms = Channel::Sms;
        assert!(status_applies(sms, Queued, Sent));
        assert!(status_applies(sms, Queued, Delivered));
        assert!(status_applies(sms, Sent, Delivered));
        assert!(!status_applies(sms, Delivered, Sent));
        assert!(!status_applies(sms, Sent, Sent));
        assert!(!status_applies(sms, Sent, Queued));
    }

    #[test]
    fn failed_only_from_queued_or_sent_and_terminal() {
        let sms = Channel::Sms;
        assert!(status_applies(sms, Queued, Failed));
        assert!(status_applies(sms, Sent, Failed));
        assert!(!status_applies(sms, Delivered, Failed));
        assert!(!status_applies(sms, Failed, Failed));
        assert!(!status_applies(sms, Failed, Delivered));
    }

    #[test]
    fn read_only_on_whatsapp() {
        assert!(status_applies(Channel::Whatsapp, Delivered, Read));
        assert!(status_applies(Channel::Whatsapp, Sent, Read));
        assert!(!status_applies(Channel::Sms, Delivered, Read));
        assert!(!status_applies(Channel::Telegram, Sent, Read));
        assert!(!status_applies(Channel::Whatsapp, Read, Delivered));
    }

    #[test]
    fn report_types_choose_statuses() {
        assert!(ReportType::All.wants(Sent));
        assert!(!ReportType::All.wants(Read));
        assert!(!ReportType::Final.wants(Sent));
        assert!(ReportType::Final.wants(Failed));
    }

    fn message(channel: Channel, at: DateTime<Utc>) -> MessageRecord {
        let to = "255712345678".into();
        MessageRecord::queued(Uuid::nil(), Uuid::nil(), channel, to, Purpose::Message, at)
    }

    fn steps(m: &MessageRecord) -> Vec<(MessageStatus, i64)> {
        m.history()
            .iter()
            .map(|s| (s.status, s.at.timestamp_millis()))
            .collect()
    }

    #[test]
    fn history_lists_each_status_reached_in_order() {
        let t = |ms| DateTime::from_timestamp_millis(ms).unwrap();
        let mut m = message(Channel::Whatsapp, t(1_000));
        assert_eq!(steps(&m), [(Queued, 1_000)]);
        // A delivered report overtaking the provider's receipt: sent is skipped.
        m.set_status(Delivered, t(1_200));
        m.set_status(Read, t(1_500));
        assert_eq!(m.updated_at, t(1_500));
        assert_eq!(
            steps(&m),
            [(Queued, 1_000), (Delivered, 1_200), (Read, 1_500)]
        );
        // A status reached twice (a replayed write) keeps its first time.
        m.reached.mark(Delivered, t(9_000));
        assert_eq!(m.reached.delivered_at, Some(t(1_200)));
        assert!(m.history().iter().all(|s| s.error_code.is_none()));
    }

    #[test]
    fn a_failed_step_carries_its_reason() {
        let t = |ms| DateTime::from_timestamp_millis(ms).unwrap();
        let mut m = message(Channel::Sms, t(1_000));
        m.set_status(Sent, t(1_100));
        m.error_code = Some("undeliverable".into());
        m.error_message = Some("handset off".into());
        m.set_status(Failed, t(1_300));
        let h = m.history();
        assert_eq!(steps(&m), [(Queued, 1_000), (Sent, 1_100), (Failed, 1_300)]);
        assert_eq!(h[1].error_code, None);
        assert_eq!(h[2].error_code.as_deref(), Some("undeliverable"));
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json[0].get("error_code"), None, "absent, not null");
        assert_eq!(json[2]["error_message"], "handset off");
        assert_eq!(json[2]["status"], "failed");
    }
}
