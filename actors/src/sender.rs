//! The message sender: hands committed `queued` messages to the provider, with retries.
//!
//! A send runs as a task on one of the runtime's arbiters, so a slow provider never
//! holds an API worker or an OTP actor. It retries on the delivery retry schedule
//! (time from the injectable clock). The outcome — `sent` with the provider's id, or
//! `failed` with `error_code: "provider_error"` — goes through the message's actor
//! like any status report, so it obeys the rank guard and emits the same events.
//!
//! Every provider call is counted in `otpd_provider_sends_total{provider, outcome}`
//! (`accepted` / `failed`) and timed in `otpd_provider_send_duration_seconds`. A
//! failing provider does not make otpd unready (`/readyz` is about storage and
//! recovery); it shows in those metrics and in a WARN line at most once per
//! [`WARN_EVERY`], which carries how many failures were not logged since the last
//! one (each failure is still logged at DEBUG).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::ArbiterHandle;

use crate::clock::{Clock, Stopwatch};
use crate::delivery::RetrySchedule;
use crate::message::{MessageRecord, MessageStatus};
use crate::message_actor::{MessageRouter, StatusUpdate};
use crate::provider::{OutboundMessage, Provider};
use crate::telemetry;

/// How soon after the commit (dispatch) the sender may seed the message's actor with
/// the record it holds. Any actor a status report made since the commit was touched
/// after it, and stays registered for the registry's done-grace (2 s) after that
/// touch, so within this window a live report actor always wins over the seed.
/// Measured on the clock's monotonic time, like the done-grace.
const SEED_WITHIN: Duration = Duration::from_millis(900);

/// At most one WARN per this interval about a failing provider.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(30);

/// Rate limit for provider-failure warnings: one WARN per [`WARN_EVERY`], with the
/// count of failures suppressed since the previous one. Times are the runtime
/// clock's monotonic time ([`Clock::monotonic`]).
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    /// When the last WARN was written, and failures not logged since.
    state: Mutex<(Option<Duration>, u64)>,
}

impl FailureLog {
    /// Records a failure at monotonic time `now`; returns `Some(suppressed)` when it
    /// should be logged at WARN (with that many earlier failures not logged), else `None`.
    pub(crate) fn failure(&self, now: Duration) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *state;
        match last {
            Some(at) if now.saturating_sub(*at) < WARN_EVERY => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

/// A message that must go out once its queued record is committed.
#[derive(Debug, Clone)]
pub struct PendingSend {
    /// The queued record (as committed).
    pub record: MessageRecord,
    /// The text and addressing for the provider.
    pub outbound: OutboundMessage,
}

/// Sends messages through the configured provider.
pub(crate) struct MessageSender {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) router: Arc<MessageRouter>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retry_schedule: RetrySchedule,
    pub(crate) arbiters: Vec<ArbiterHandle>,
    pub(crate) next: AtomicUsize,
    /// Rate limit for WARNs about provider failures.
    pub(crate) failures: FailureLog,
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
        let committed = self.clock.monotonic();
        if actix::Arbiter::try_current().is_some() {
            let mut send = Box::pin(async move { this.run(pending, committed).await });
            // Started here rather than in a task of its own: the provider call begins
            // at once, and a provider that answers without waiting (an in-process
            // queue, the `log` provider) has its receipt queued for the writer before
            // the caller's answer leaves. Whatever is left (the network, the receipt's
            // commit, retries) continues as a task; its first poll there registers the
            // task's own waker, replacing the no-op one of this poll.
            // A provider that panics fails only its send, as it would in a task.
            let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                send.as_mut().poll(&mut cx)
            }));
            match polled {
                Ok(std::task::Poll::Pending) => {
                    actix_rt::spawn(send);
                }
                Ok(std::task::Poll::Ready(())) => {}
                Err(_) => tracing::error!("the provider panicked; the message stays queued"),
            }
            return;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters[i].spawn(async move { this.run(pending, committed).await });
    }

    /// `committed` is the clock's monotonic time of the commit.
    async fn run(&self, pending: PendingSend, committed: Duration) {
        let PendingSend { record, outbound } = pending;
        let mut last_error = String::new();
        let mut attempts = record.attempts;
        for failed in 0..self.retry_schedule.attempts() {
            if let Some(delay) = self.retry_schedule.next_delay(failed, None) {
                self.clock.sleep(delay).await;
            }
            attempts += 1;
            let provider = self.provider.name();
            let started = Stopwatch::start();
            let sent = self.provider.send(&outbound).await;
            telemetry::observe(
                "otpd_provider_send_duration_seconds",
                telemetry::one("provider", provider),
                started.elapsed().as_secs_f64(),
            );
            let outcome = if sent.is_ok() { "accepted" } else { "failed" };
            telemetry::count(
                "otpd_provider_sends_total",
                telemetry::two(("provider", provider), ("outcome", outcome)),
                1,
            );
            match sent {
                Ok(receipt) => {
                    let update = StatusUpdate {
                        provider_message_id: receipt.provider_message_id,
                        attempts: Some(attempts),
                        ..StatusUpdate::status(MessageStatus::Sent)
                    };
                    // Soon after the commit, the committed record is what SQLite holds
                    // unless a live actor says otherwise (see SEED_WITHIN).
                    let since = self.clock.monotonic().saturating_sub(committed);
                    let id = record.message_id;
                    let seed = (since < SEED_WITHIN).then_some(record);
                    self.record(id, update, seed).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(message_id = %record.message_id, attempt = attempts, error = %e, "provider refused a message");
                    if let Some(suppressed) = self.failures.failure(self.clock.monotonic()) {
                        tracing::warn!(
                            provider,
                            message_id = %record.message_id,
                            attempt = attempts,
                            error = %e,
                            suppressed,
                            "provider send failed (at most one warning per {}s; `suppressed` failures since the last one were not logged)",
                            WARN_EVERY.as_secs()
                        );
                    }
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
        if let Err(e) = self.router.apply(id, update, seed).await {
            tracing::error!(message_id = %id, error = %e, "recording a message status failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_log_warns_once_per_interval_with_the_suppressed_count() {
        let log = FailureLog::default();
        let t0 = Duration::from_secs(1_000);
        assert_eq!(log.failure(t0), Some(0));
        assert_eq!(log.failure(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.failure(t0 + Duration::from_secs(2)), None);
        assert_eq!(
            log.failure(t0 + WARN_EVERY + Duration::from_secs(1)),
            Some(2)
        );
        assert_eq!(log.failure(t0 + WARN_EVERY + Duration::from_secs(2)), None);
    }
}
