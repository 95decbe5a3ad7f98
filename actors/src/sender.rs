//! The message sender: hands committed `queued` messages to the provider, with retries.
//!
//! A send runs as a task on one of the runtime's arbiters, so a slow provider never
//! holds an API worker or an OTP actor. It retries on the delivery retry schedule
//! (time from the injectable clock). The outcome — `sent` with the provider's id, or
//! `failed` with `error_code: "provider_error"` — goes through the message's actor
//! like any status report, so it obeys the rank guard and emits the same events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::ArbiterHandle;

use crate::clock::Clock;
use crate::message::{MessageRecord, MessageStatus};
use crate::message_actor::{MessageBook, StatusUpdate};
use crate::otp_actor::PendingSend;
use crate::provider::Provider;

/// How soon after the commit (dispatch) the sender may seed the message's actor with
/// the record it holds. Any actor a status report made since the commit was touched
/// after it, and stays registered for the registry's done-grace (2 s) after that
/// touch, so within this window a live report actor always wins over the seed.
const SEED_WITHIN: Duration = Duration::from_millis(900);

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
        // Dispatch happens right after the commit (outbox before network).
        let committed = Instant::now();
        if actix::Arbiter::try_current().is_some() {
            actix_rt::spawn(async move { this.run(pending, committed).await });
            return;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters[i].spawn(async move { this.run(pending, committed).await });
    }

    async fn run(&self, pending: PendingSend, committed: Instant) {
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
                    // Soon after the commit, the committed record is what SQLite holds
                    // unless a live actor says otherwise (see SEED_WITHIN).
                    let seed = (committed.elapsed() < SEED_WITHIN).then(|| record.clone());
                    self.record(record.message_id, update, seed).await;
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
        self.record(record.message_id, update, None).await;
    }

    async fn record(&self, id: uuid::Uuid, update: StatusUpdate, seed: Option<MessageRecord>) {
        if let Err(e) = self.book.apply(id, update, seed).await {
            tracing::error!(message_id = %id, error = %e, "recording a message status failed");
        }
    }
}
