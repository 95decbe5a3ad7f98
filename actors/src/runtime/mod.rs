//! `Runtime`: the cheap, cloneable handle every user of otpd drives.
//!
//! The HTTP API, the load-test harness and embedders all call these methods, so every
//! rule is enforced the same way for all of them. Input is validated before it
//! reaches an actor; the actor applies the rules; the runtime waits for the commit
//! (`durability = "commit"`) and only then answers and hands messages to the
//! provider and deliveries to their endpoints.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | [`Runtime`], what its clones share, commit waits, gauges, shutdown |
//! | `builder.rs` | [`RuntimeBuilder`]: start-up and wiring |
//! | `otp.rs` | the OTP calls: request, resend, verify, invalidate, status |
//! | `messages.rs` | `/v1/messages` sends, provider status reports, delivery reports |
//! | `apps.rs` | app administration and API keys |
//! | `stats.rs` | read-only OTP statistics (`/v1/stats/otp`) |
//! | `webhooks.rs` | registered webhooks, the delivery log, retry and recover |
//! | `recovery.rs` | start-up recovery of queued messages and pending deliveries |
//! | `housekeeping.rs` | idle-actor reaping, idempotency purge, retention rounds |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Addr, Arbiter, Handler, MailboxError, Message, Supervisor};
use dashmap::DashSet;
use uuid::Uuid;

use crate::apps::AppDirectory;
use crate::clock::Clock;
use crate::config::RuntimeConfig;
use crate::delivery::Dispatcher;
use crate::error::Error;
use crate::message_actor::MessageRouter;
use crate::otp::OtpKey;
use crate::otp_actor::{OtpActor, OtpContext, Reload};
use crate::phone::Phone;
use crate::registry::Registry;
use crate::retention::Pruner;
use crate::sender::MessageSender;
use crate::storage::{self, Change, Ticket};
use crate::url_policy::UrlPolicy;
use crate::webhooks::WebhookDirectory;

mod apps;
mod builder;
mod housekeeping;
mod messages;
mod otp;
mod recovery;
mod stats;
mod webhooks;

pub use crate::stats::{OtpStats, StatsBucket, StatsWindow};
pub(crate) use builder::RecoverLimits;
pub use builder::RuntimeBuilder;
pub use messages::{DeliveryReportRequest, SendMessage, StatusReport};
pub use otp::{SendOtp, VerifyOtp, VerifyResult};
pub use webhooks::{
    DeliveryDetail, DeliveryPage, DeliveryQuery, Latency, NewWebhook, RotatedSecret, WebhookPatch,
    WebhookStats, RECOVER_MAX_BACKLOG, RECOVER_PAGE,
};

/// Figures read at scrape time by `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeGauges {
    /// OTP actors alive.
    pub otp_actors: usize,
    /// Message actors alive.
    pub message_actors: usize,
    /// Delivery (endpoint) actors alive.
    pub delivery_actors: usize,
    /// Deliveries not yet final: the delivery queue depth.
    pub deliveries_pending: usize,
    /// Endpoints whose health (failures in a row, pause) is held in memory.
    pub delivery_endpoints_tracked: usize,
    /// Group commits so far.
    pub snapshot_commits: u64,
    /// Writes carried by those commits.
    pub snapshot_ops: u64,
    /// Reads run on the read connections.
    pub snapshot_reads: u64,
    /// Operations in the last commit.
    pub snapshot_last_batch: u64,
    /// Time spent in commits, in seconds.
    pub snapshot_commit_seconds: f64,
    /// Of that, the writer thread's CPU time, in seconds.
    pub snapshot_commit_cpu_seconds: f64,
    /// Failed commits.
    pub snapshot_failures: u64,
}
/// What every clone of one [`Runtime`] shares: the configuration, the actor
/// registries and directories, the storage and sender handles, and the lifecycle flags.
struct RuntimeParts {
    config: RuntimeConfig,
    dispatcher: Arc<Dispatcher>,
    router: Arc<MessageRouter>,
    webhooks: Arc<WebhookDirectory>,
    registry: Registry<OtpKey, OtpActor>,
    apps: AppDirectory,
    shared: Arc<OtpContext>,
    sender: Arc<MessageSender>,
    policy: UrlPolicy,
    idempotency: Arc<DashSet<(Uuid, String)>>,
    ready: AtomicBool,
    shutting_down: AtomicBool,
    arbiters: std::sync::Mutex<Vec<Arbiter>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// How `recover_webhook` pages.
    recover_limits: RecoverLimits,
    /// Retention cursors; one round at a time (housekeeping or [`Runtime::prune_now`]).
    pruner: tokio::sync::Mutex<Pruner>,
}

/// The runtime handle. Clone it freely; every clone drives the same actors.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeParts>,
}

impl Runtime {
    /// The configuration the runtime runs with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The clock every rule reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.shared.clock
    }

    /// The outbound URL policy (callbacks, webhooks, reports).
    pub fn url_policy(&self) -> &UrlPolicy {
        &self.inner.policy
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(Error::Unavailable("otpd is shutting down".into()));
        }
        Ok(())
    }

    /// Waits for a commit when `durability = "commit"`; in async mode watches it in
    /// the background. `after_commit` (sending messages, dispatching deliveries) runs
    /// only once the commit is done, in both modes: outbox before network. A failed
    /// commit reloads the actor from its last snapshot.
    async fn settle(
        &self,
        ticket: Ticket,
        key: Option<&OtpKey>,
        after_commit: impl FnOnce(&Runtime) + Send + 'static,
    ) -> Result<(), Error> {
        let (on_commit, on_error) = (self.clone(), self.clone());
        let key = key.cloned();
        ticket
            .settle(
                self.inner.config.storage.durability,
                move || after_commit(&on_commit),
                move || {
                    if let Some(key) = key {
                        on_error.reload_actor(&key);
                    }
                },
            )
            .await
            .map_err(Error::Storage)
    }

    /// Hands committed deliveries to their endpoints.
    pub(crate) fn dispatch_all(
        &self,
        deliveries: impl IntoIterator<Item = crate::delivery::Delivery>,
    ) {
        for d in deliveries {
            self.inner.dispatcher.dispatch(d);
        }
    }

    fn reload_actor(&self, key: &OtpKey) {
        if let Some(addr) = self.inner.registry.peek(key) {
            addr.do_send(Reload);
        }
    }

    /// Sends `make()` to the actor for `key`, replacing an actor whose mailbox closed.
    async fn ask<M>(&self, key: &OtpKey, msg: M) -> Result<M::Result, Error>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        OtpActor: Handler<M>,
    {
        self.check_open()?;
        for _ in 0..3 {
            let shared = &self.inner.shared;
            let addr = self.inner.registry.get_or_spawn(key, |arbiter, _| {
                let (key, shared) = (key.clone(), shared.clone());
                Supervisor::start_in_arbiter(arbiter, move |_| OtpActor::new(key, shared))
            });
            match addr.send(msg.clone()).await {
                Ok(result) => return Ok(result),
                Err(MailboxError::Closed) => self.inner.registry.forget(key, &addr),
                Err(MailboxError::Timeout) => break,
            }
        }
        Err(Error::Unavailable(
            "the OTP actor is not answering; try again".into(),
        ))
    }

    // ----- operations -------------------------------------------------------

    /// True once start-up recovery is done and until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
            && !self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Whether storage accepts a write right now (a tiny committed write).
    pub async fn storage_writable(&self) -> bool {
        let now = self
            .inner
            .shared
            .clock
            .now()
            .timestamp_millis()
            .to_be_bytes()
            .to_vec();
        self.inner
            .shared
            .snapshot
            .write(vec![Change::Meta("heartbeat".into(), now)])
            .committed()
            .await
            .is_ok()
    }

    /// Point-in-time figures for `/metrics` (read at scrape time).
    pub fn gauges(&self) -> RuntimeGauges {
        let stats = self.inner.shared.snapshot.stats();
        let cx = self.inner.dispatcher.context();
        RuntimeGauges {
            otp_actors: self.live_actors(),
            message_actors: self.inner.router.actors(),
            delivery_actors: self.inner.dispatcher.actors(),
            deliveries_pending: cx.pending.load(Ordering::Relaxed),
            delivery_endpoints_tracked: self.inner.dispatcher.health_records(),
            snapshot_commits: stats.commits.load(Ordering::Relaxed),
            snapshot_ops: stats.ops.load(Ordering::Relaxed),
            snapshot_reads: stats.reads.load(Ordering::Relaxed),
            snapshot_last_batch: stats.last_batch.load(Ordering::Relaxed),
            snapshot_commit_seconds: stats.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            snapshot_commit_cpu_seconds: stats.commit_cpu_micros.load(Ordering::Relaxed) as f64
                / 1e6,
            snapshot_failures: stats.failures.load(Ordering::Relaxed),
        }
    }

    /// OTP actors alive right now.
    pub fn live_actors(&self) -> usize {
        self.inner.shared.live_actors.load(Ordering::Relaxed).max(0) as usize
    }

    /// Actors in the registry (live actors minus those already reaped and stopping).
    pub fn registered_actors(&self) -> usize {
        self.inner.registry.len()
    }

    /// Group-commit counters.
    pub fn storage_stats(&self) -> &storage::SnapshotStats {
        self.inner.shared.snapshot.stats()
    }
    /// The address of the actor for (app, phone), if one is registered. For tests
    /// and diagnostics: lets a test show the supervisor kept the same mailbox.
    #[doc(hidden)]
    pub fn actor_addr(&self, app_id: Uuid, phone: &str) -> Option<Addr<OtpActor>> {
        let phone = Phone::parse(phone).ok()?;
        self.inner.registry.peek(&OtpKey { app_id, phone })
    }

    /// Stops accepting calls, commits everything queued and stops the actors.
    /// Unfinished sends stay `queued` and resume at the next start.
    pub async fn shutdown(&self) {
        if self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.shared.snapshot.shutdown().await;
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = actix_rt::task::spawn_blocking(move || writer.join()).await;
        }
        for arbiter in self
            .inner
            .arbiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            arbiter.stop();
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("live_actors", &self.live_actors())
            .finish_non_exhaustive()
    }
}
