//! Message providers: what actually hands a text to SMS/WhatsApp/Telegram.
//!
//! The runtime only knows the [`Provider`] trait; `log` and `http` ship with otpd,
//! and embedders (or the load-test harness) plug in their own.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::Channel;

/// One message as handed to a provider. Holds the plaintext text, so it lives only
/// in memory between the commit of the queued message and the provider call.
#[derive(Clone, Serialize)]
pub struct OutboundMessage {
    /// otpd's message id.
    pub message_id: Uuid,
    /// The channel.
    pub channel: Channel,
    /// Canonical phone (E.164 digits, no `+`).
    pub to: String,
    /// The text (for an OTP, it contains the code).
    pub text: String,
    /// Sender ID, when the app or request sets one.
    pub sender_id: Option<String>,
}

impl std::fmt::Debug for OutboundMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the text: it may carry a code.
        f.debug_struct("OutboundMessage")
            .field("message_id", &self.message_id)
            .field("channel", &self.channel)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// What a provider says after accepting a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderReceipt {
    /// The provider's own id, kept for correlating its status reports.
    pub provider_message_id: Option<String>,
}

/// Why a provider did not accept a message (the send is retried).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

/// Sends messages. Implementations must be cheap to share across threads.
pub trait Provider: Send + Sync + 'static {
    /// Hands one message to the provider; `Ok` means it was accepted.
    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<ProviderReceipt, ProviderError>>;

    /// A short, fixed name for metrics and logs (the `provider` label of
    /// `otpd_provider_sends_total`); `"custom"` unless the provider says otherwise.
    fn name(&self) -> &'static str {
        "custom"
    }
}

/// Development provider: logs the text (the one log line allowed to show a code)
/// and reports the message sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogProvider;

impl Provider for LogProvider {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<ProviderReceipt, ProviderError>> {
        tracing::info!(
            target: "otpd::provider::log",
            message_id = %message.message_id,
            channel = %message.channel,
            to = %message.to,
            text = %message.text,
            "log provider: message sent"
        );
        futures::future::ready(Ok(ProviderReceipt::default())).boxed()
    }
}

/// Production provider: POSTs `{message_id, channel, to, text, sender_id}` to a URL
/// with a bearer token. 2xx = accepted; a `provider_message_id` in the reply is kept.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    client: reqwest::Client,
    url: String,
    auth_token: Option<String>,
}

#[derive(Deserialize)]
struct HttpProviderReply {
    provider_message_id: Option<serde_json::Value>,
}

impl HttpProvider {
    /// A provider posting to `url`, each call bounded by `timeout`.
    pub fn new(
        url: String,
        auth_token: Option<String>,
        timeout: Duration,
    ) -> Result<HttpProvider, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError(format!("building the HTTP client: {e}")))?;
        Ok(HttpProvider {
            client,
            url,
            auth_token,
        })
    }
}

impl Provider for HttpProvider {
    fn name(&self) -> &'static str {
        "http"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<ProviderReceipt, ProviderError>> {
        async move {
            let mut req = self.client.post(&self.url).json(message);
            if let Some(token) = &self.auth_token {
                req = req.bearer_auth(token);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| ProviderError(format!("provider unreachable: {e}")))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(ProviderError(format!(
                    "provider answered {}",
                    status.as_u16()
                )));
            }
            let body = resp.bytes().await.unwrap_or_default();
            let provider_message_id = serde_json::from_slice::<HttpProviderReply>(&body)
                .ok()
                .and_then(|r| r.provider_message_id)
                .and_then(|v| match v {
                    serde_json::Value::String(s) if !s.is_empty() && s.len() <= 255 => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            Ok(ProviderReceipt {
                provider_message_id,
            })
        }
        .boxed()
    }
}
