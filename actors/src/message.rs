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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Committed, not yet accepted by the provider.
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
    /// Created.
    #[serde(with = "serde_ts")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "serde_ts")]
    pub updated_at: DateTime<Utc>,
}
