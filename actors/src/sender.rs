//! The message sender: hands committed `queued` messages to the provider, with retries.
//!
//! A send runs as a task on one of the runtime's arbiters, so a slow provider never
//! holds an API worker or an OTP actor. It retries on the delivery retry schedule
//! (time from the injectable clock). The outcome — `sent` with the provider's id, or
//! `failed` with `error_code: "provider_error"` — goes through the message's actor
//! like any status report, so it obeys the rank guard and emits the same events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::ArbiterHandle;

use crate::clock::Clock;
use crate::message::MessageStatus;
use crate::message_actor::{MessageBook, StatusUpdate};
use crate::otp_actor::PendingSend;
use crate::provider::Provider;

/// Sends messages through the configured provider.
pub(crate) struct MessageSender {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) book: Arc<MessageBook>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retry_schedule: Vec<Duration>,
    pub(crate) arbiters: Vec<ArbiterHandle>,
    pub(crate) next: AtomicUsize,
}

impl MessageSender {
    /// Starts sending `pending` (its queued record must already be committed).
    ///
    /// Called from an actix thread (an API worker, an arbiter, the harness's
    /// drivers), the send runs as a local task on that thread: no hand-over through
    /// another arbiter's queue and no cross-thread wake-up per message. The send is
    /// a short async task (the provider call is I/O, its retries are timers), so it
    /// does not hold the thread. From any other thread it goes round-robin to the
    /// runtime's arbiters, as before.
    pub(crate) fn dispatch(self: &Arc<Self>, pending: PendingSend) {
        let this = self.clone();
        if actix::Arbiter::try_current().is_some() {
            actix_rt::spawn(async move { this.run(pending).await });
            return;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters[i].spawn(async move { this.run(pending).await });
    }

    async fn run(&self, pending: PendingSend) {
        let PendingSend { record, outbound } = pending;
        let mut last_error = String::new();
        let mut attempts = record.attempts;
        for attempt in 0..=self.retry_schedule.len() {
            if attempt > 0 {
                self.clock.sleep(self.retry_schedule[attempt - 1]).await;
            }
            attempts += 1;
            match self.provider.send(&outbound).await {
                Ok(receipt) => {
                    let update = StatusUpdate {
                        provider_message_id: receipt.provider_message_id,
                        attempts: Some(attempts),
                        ..StatusUpdate::status(MessageStatus::Sent)
                    };
                    self.record(record.message_id, update).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(message_id = %record.message_id, attempt = attempts, error = %e, "provider refused a message");
                    last_error = e.0;
                }
            }
        }
        let update = StatusUpdate {
            error_code: Some("provider_error".into()),
            error_message: Some(last_error),
            attempts: Some(attempts),
            ..StatusUpdate::status(MessageStatus::Failed)
        };
        self.record(record.message_id, update).await;
    }

    async fn record(&self, id: uuid::Uuid, update: StatusUpdate) {
        if let Err(e) = self.book.apply(id, update).await {
            tracing::error!(message_id = %id, error = %e, "recording a message status failed");
        }
    }
}
