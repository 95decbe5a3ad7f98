//! The message sender: hands committed `queued` messages to the provider, with retries.
//!
//! A send runs as a task on one of the runtime's arbiters, so a slow provider never
//! holds an API worker or an OTP actor. It retries on the delivery retry schedule
//! (time from the injectable clock), then records `sent` (with the provider's id) or
//! `failed` with `error_code: "provider_error"`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::ArbiterHandle;

use crate::clock::Clock;
use crate::message::MessageStatus;
use crate::otp_actor::PendingSend;
use crate::provider::Provider;
use crate::storage::{Change, Snapshot};

/// Sends messages through the configured provider.
pub(crate) struct MessageSender {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) snapshot: Snapshot,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retry_schedule: Vec<Duration>,
    pub(crate) arbiters: Vec<ArbiterHandle>,
    pub(crate) next: AtomicUsize,
}

impl MessageSender {
    /// Starts sending `pending` (its queued record must already be committed).
    pub(crate) fn dispatch(self: &Arc<Self>, pending: PendingSend) {
        let this = self.clone();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters[i].spawn(async move { this.run(pending).await });
    }

    async fn run(&self, pending: PendingSend) {
        let PendingSend {
            mut record,
            outbound,
        } = pending;
        let mut last_error = String::new();
        for attempt in 0..=self.retry_schedule.len() {
            if attempt > 0 {
                self.clock.sleep(self.retry_schedule[attempt - 1]).await;
            }
            record.attempts += 1;
            match self.provider.send(&outbound).await {
                Ok(receipt) => {
                    record.status = MessageStatus::Sent;
                    record.provider_message_id = receipt.provider_message_id;
                    record.error_code = None;
                    record.error_message = None;
                    record.updated_at = self.clock.now();
                    self.save(record).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(message_id = %record.message_id, attempt = record.attempts, error = %e, "provider refused a message");
                    last_error = e.0;
                }
            }
        }
        record.status = MessageStatus::Failed;
        record.error_code = Some("provider_error".into());
        record.error_message = Some(last_error);
        record.updated_at = self.clock.now();
        self.save(record).await;
    }

    async fn save(&self, record: crate::message::MessageRecord) {
        let id = record.message_id;
        if let Err(e) = self
            .snapshot
            .write(vec![Change::Message(record)])
            .committed()
            .await
        {
            tracing::error!(message_id = %id, error = %e, "recording a message status failed");
        }
    }
}
