//! `Runtime`: the cheap, cloneable handle every user of otpd drives.
//!
//! The HTTP API, the load-test harness and embedders all call these methods, so every
//! rule is enforced the same way for all of them. Input is validated here (phone,
//! country, ranges, URL policy) before it reaches an actor; the actor applies the
//! OTP rules; the runtime waits for the commit (`durability = "commit"`) and only
//! then answers and hands messages to the provider.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::{Addr, Arbiter, ArbiterHandle, Handler, MailboxError, Message, Supervisor};
use dashmap::DashSet;
use uuid::Uuid;

use crate::app::{App, AppSettings};
use crate::apps::AppDirectory;
use crate::clock::{Clock, SystemClock, Ticker};
use crate::config::{ProviderKind, RuntimeConfig};
use crate::delivery::{DeliveryContext, Dispatcher};
use crate::error::Error;
use crate::idempotency::{self, Begin};
use crate::message::{Channel, MessageRecord, MessageStatus, Purpose};
use crate::message_actor::{MessageBook, MessageShared};
use crate::otp::{
    CallbackChange, CallbackTarget, FlakeView, IssueKind, Issued, OtpKey, VerifyOutcome,
};
use crate::otp_actor::{
    Invalidate, Issue, IssueDone, OtpActor, PendingSend, Reload, ResumeSend, Shared, Status, Verify,
};
use crate::phone::Phone;
use crate::provider::{HttpProvider, LogProvider, Provider};
use crate::ratelimit::AppLimiter;
use crate::registry::Registry;
use crate::secrets::{Digest32, Pepper};
use crate::sender::MessageSender;
use crate::webhooks::WebhookDirectory;

mod apps;
mod messages;
mod webhooks;

pub use messages::{DeliveryReportRequest, SendMessage, StatusReport};

use crate::retention::{Pruned, Pruner};
use crate::storage::{self, Change, Snapshot, Ticket};
use crate::url_policy::{UrlPolicy, UrlPolicyError};
pub use webhooks::{
    DeliveryDetail, DeliveryPage, DeliveryQuery, Latency, NewWebhook, RotatedSecret, WebhookPatch,
    WebhookStats, RECOVER_MAX_BACKLOG, RECOVER_PAGE,
};

/// `POST /v1/otp/request` and `/resend` input (the phone as the client typed it).
#[derive(Debug, Clone, Default)]
pub struct SendOtp {
    /// Phone in any accepted spelling.
    pub phone_number: String,
    /// Channel (request default sms; resend default: the previous one).
    pub delivery_method: Option<Channel>,
    /// Lifetime override, 1–60.
    pub minutes_to_expire: Option<u32>,
    /// Per-request callback URL.
    pub callback_url: Option<String>,
    /// Its signing secret (1–256 chars).
    pub callback_secret: Option<String>,
}

/// `POST /v1/otp/verify` input.
#[derive(Debug, Clone, Default)]
pub struct VerifyOtp {
    /// Phone in any accepted spelling.
    pub phone_number: String,
    /// The code as typed.
    pub code: String,
    /// Callback target for this verification.
    pub callback_url: Option<String>,
    /// Its secret (the request's secret is reused when absent).
    pub callback_secret: Option<String>,
}

/// A verify's result with the flake's canonical phone.
#[derive(Debug, Clone)]
pub struct VerifyResult {
    /// Canonical phone.
    pub phone_number: String,
    /// What happened.
    pub outcome: VerifyOutcome,
}

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
    /// Operations carried by those commits.
    pub snapshot_ops: u64,
    /// Operations in the last commit.
    pub snapshot_last_batch: u64,
    /// Time spent in commits, in seconds.
    pub snapshot_commit_seconds: f64,
    /// Failed commits.
    pub snapshot_failures: u64,
}

/// Builds a [`Runtime`]; lets tests and embedders inject a clock and a provider.
pub struct RuntimeBuilder {
    config: RuntimeConfig,
    clock: Arc<dyn Clock>,
    provider: Option<Arc<dyn Provider>>,
    recover: bool,
    recover_limits: RecoverLimits,
}

/// How `recover_webhook` pages: deliveries per page, and the endpoint backlog above
/// which it waits before the next page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecoverLimits {
    pub(crate) page: usize,
    pub(crate) max_backlog: usize,
}

impl RuntimeBuilder {
    /// Uses `clock` for every time rule.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends messages through `provider` instead of the configured one.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Whether to resume queued messages and pending deliveries at start (default
    /// true). Admin tools that open the database beside a running daemon
    /// (`otpd apps create`) pass `false`, so nothing is sent twice.
    pub fn recover(mut self, recover: bool) -> Self {
        self.recover = recover;
        self
    }

    /// Pages of `recover_webhook` and the backlog it waits under (defaults
    /// [`RECOVER_PAGE`], [`RECOVER_MAX_BACKLOG`]): for tests that show the bound
    /// without thousands of deliveries.
    #[doc(hidden)]
    pub fn recover_limits(mut self, page: usize, max_backlog: usize) -> Self {
        self.recover_limits = RecoverLimits {
            page: page.max(1),
            max_backlog,
        };
        self
    }

    /// Opens storage, loads apps, recovers unfinished sends and starts the actors.
    /// Must run inside an actix `System`.
    pub async fn start(self) -> Result<Runtime, Error> {
        let RuntimeBuilder {
            config,
            clock,
            provider,
            recover,
            recover_limits,
        } = self;
        config.validate().map_err(Error::Validation)?;
        let (snapshot, writer) = Snapshot::open_with_clock(&config.storage, clock.clone())?;
        let pepper = load_pepper(&config, &snapshot).await?;
        let provider: Arc<dyn Provider> = match provider {
            Some(p) => p,
            None => match config.provider.kind {
                ProviderKind::Log => {
                    tracing::warn!("provider.kind = \"log\": messages are only logged, never sent (development only)");
                    Arc::new(LogProvider)
                }
                ProviderKind::Http => Arc::new(
                    HttpProvider::new(
                        config.provider.url.clone().unwrap_or_default(),
                        config.provider.auth_token.clone(),
                        Duration::from_secs(config.provider.timeout_secs),
                    )
                    .map_err(|e| Error::Validation(e.0))?,
                ),
            },
        };
        let n = match config.runtime.arbiters {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let arbiters: Vec<Arbiter> = (0..n).map(|_| Arbiter::new()).collect();
        let handles: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
        let webhooks = Arc::new(WebhookDirectory::default());
        let policy = UrlPolicy::new(
            config.callbacks.allow_http,
            config.callbacks.allowed_cidrs.clone(),
        );
        let delivery_cx = DeliveryContext::new(
            policy.clone(),
            snapshot.clone(),
            clock.clone(),
            config.delivery.clone(),
            webhooks.clone(),
        )
        .map_err(Error::Validation)?;
        let dispatcher = Arc::new(Dispatcher::new(Arc::new(delivery_cx), handles.clone()));
        let shared = Arc::new(Shared {
            clock: clock.clone(),
            snapshot: snapshot.clone(),
            pepper,
            limiter: AppLimiter::default(),
            live_actors: AtomicI64::new(0),
            webhooks: webhooks.clone(),
        });
        let book = Arc::new(MessageBook::new(
            MessageShared {
                snapshot: snapshot.clone(),
                clock: clock.clone(),
                webhooks: webhooks.clone(),
                dispatcher: dispatcher.clone(),
                durability: config.storage.durability,
            },
            handles.clone(),
        ));
        let sender = Arc::new(MessageSender {
            provider,
            book: book.clone(),
            clock: clock.clone(),
            retry_schedule: config
                .delivery
                .retry_schedule_secs
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            arbiters: handles.clone(),
            next: AtomicUsize::new(0),
            failures: Default::default(),
        });
        let inner = Arc::new(Inner {
            book,
            dispatcher,
            webhooks,
            registry: Registry::new(handles, clock.clone()),
            apps: AppDirectory::new(clock.clone()),
            shared,
            sender,
            policy,
            idempotency: Arc::new(DashSet::new()),
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            arbiters: std::sync::Mutex::new(arbiters),
            writer: std::sync::Mutex::new(Some(writer)),
            pruner: tokio::sync::Mutex::new(Pruner::default()),
            recover_limits,
            config,
        });
        let runtime = Runtime { inner };
        runtime
            .inner
            .apps
            .reload(&runtime.inner.shared.snapshot)
            .await?;
        for w in runtime
            .inner
            .shared
            .snapshot
            .read(storage::load_webhooks)
            .await?
        {
            runtime.inner.webhooks.insert(w);
        }
        if recover {
            runtime.recover().await?;
            runtime.spawn_housekeeping();
        }
        runtime.inner.ready.store(true, Ordering::Release);
        Ok(runtime)
    }
}

async fn load_pepper(config: &RuntimeConfig, snapshot: &Snapshot) -> Result<Pepper, Error> {
    if let Some(p) = &config.security.code_pepper {
        return Ok(Pepper::new(p.as_bytes()));
    }
    if let Some(path) = &config.security.code_pepper_file {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Validation(format!("security.code_pepper_file {}: {e}", path.display()))
        })?;
        let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        if trimmed.len() < 16 {
            return Err(Error::Validation(
                "security.code_pepper_file must hold at least 16 bytes".into(),
            ));
        }
        return Ok(Pepper::new(trimmed));
    }
    if let Some(stored) = snapshot
        .read(|conn| storage::load_meta(conn, "code_pepper"))
        .await?
    {
        return Ok(Pepper::new(&stored));
    }
    let pepper = Pepper::generate();
    snapshot
        .write(vec![Change::Meta(
            "code_pepper".into(),
            pepper.as_bytes().to_vec(),
        )])
        .committed()
        .await?;
    Ok(pepper)
}

struct Inner {
    config: RuntimeConfig,
    dispatcher: Arc<Dispatcher>,
    book: Arc<MessageBook>,
    webhooks: Arc<WebhookDirectory>,
    registry: Registry<OtpKey, OtpActor>,
    apps: AppDirectory,
    shared: Arc<Shared>,
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
    inner: Arc<Inner>,
}

impl Runtime {
    /// Starts building a runtime from `config` (system clock, configured provider).
    pub fn builder(config: RuntimeConfig) -> RuntimeBuilder {
        RuntimeBuilder {
            config,
            clock: Arc::new(SystemClock),
            provider: None,
            recover: true,
            recover_limits: RecoverLimits {
                page: RECOVER_PAGE,
                max_backlog: RECOVER_MAX_BACKLOG,
            },
        }
    }

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

    /// The actor key for `phone`. Input that is already canonical and names a live
    /// actor was validated when that actor was made, so it skips the (relatively
    /// costly) libphonenumber parse; anything else is parsed and validated.
    fn key(&self, app: &App, phone: &str) -> Result<OtpKey, Error> {
        let canonical = (7..=15).contains(&phone.len())
            && !phone.starts_with('0')
            && phone.bytes().all(|b| b.is_ascii_digit());
        if canonical {
            let key = OtpKey {
                app_id: app.app_id,
                phone: Phone::from_canonical(phone.to_string()),
            };
            if self.inner.registry.contains(&key) {
                return Ok(key);
            }
        }
        let phone = Phone::parse(phone).map_err(|e| Error::InvalidPhoneNumber(e.to_string()))?;
        Ok(OtpKey {
            app_id: app.app_id,
            phone,
        })
    }

    async fn callback_target(
        &self,
        url: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Option<CallbackTarget>, Error> {
        if let Some(secret) = secret {
            if secret.is_empty() || secret.chars().count() > 256 {
                return Err(Error::Validation(
                    "callback_secret must be 1–256 characters".into(),
                ));
            }
        }
        let Some(url) = url else {
            if secret.is_some() {
                return Err(Error::Validation(
                    "callback_secret needs a callback_url".into(),
                ));
            }
            return Ok(None);
        };
        let parsed = self.check_callback_url(url).await?;
        Ok(Some(CallbackTarget {
            url: parsed.to_string(),
            secret: secret.map(str::to_string),
        }))
    }

    /// Request-time URL policy: syntax and literal addresses always; when the host
    /// resolves, every address must be allowed. A name that does not resolve right
    /// now is accepted: the connect-time check refuses it if it later resolves badly.
    pub async fn check_callback_url(&self, raw: &str) -> Result<url::Url, Error> {
        let policy = &self.inner.policy;
        let url = policy
            .check_url(raw)
            .map_err(|e| Error::InvalidCallbackUrl(format!("callback URL refused: {e}")))?;
        if let Some(url::Host::Domain(_)) = url.host() {
            let resolved =
                tokio::time::timeout(Duration::from_secs(2), policy.check_url_resolved(raw)).await;
            match resolved {
                Ok(Ok(_))
                | Err(_)
                | Ok(Err(UrlPolicyError::ResolveFailed(_) | UrlPolicyError::NoAddresses)) => {}
                Ok(Err(e)) => {
                    return Err(Error::InvalidCallbackUrl(format!(
                        "callback URL refused: {e}"
                    )))
                }
            }
        }
        Ok(url)
    }

    /// The app's `allowed_countries` rule, for OTPs and messages alike.
    pub(crate) fn check_country(app: &App, phone: &Phone) -> Result<(), Error> {
        let allowed = &app.settings.allowed_countries;
        if allowed.is_empty() {
            return Ok(());
        }
        let country = phone.country().unwrap_or_else(|| "unknown".into());
        if allowed.contains(&country) {
            Ok(())
        } else {
            Err(Error::CountryNotAllowed(country))
        }
    }

    async fn issue(&self, app: &Arc<App>, req: SendOtp, kind: IssueKind) -> Result<Issued, Error> {
        let kind_label = match kind {
            IssueKind::Request => "request",
            IssueKind::Resend => "resend",
        };
        let result = self.issue_inner(app, req, kind).await;
        let outcome = match &result {
            Ok(_) => "issued",
            Err(e) => e.code(),
        };
        metrics::counter!("otpd_otp_sends_total", "kind" => kind_label, "outcome" => outcome)
            .increment(1);
        result
    }

    async fn issue_inner(
        &self,
        app: &Arc<App>,
        req: SendOtp,
        kind: IssueKind,
    ) -> Result<Issued, Error> {
        let key = self.key(app, &req.phone_number)?;
        Self::check_country(app, &key.phone)?;
        let minutes = req
            .minutes_to_expire
            .unwrap_or(app.settings.minutes_to_expire);
        if !(1..=60).contains(&minutes) {
            return Err(Error::Validation(
                "minutes_to_expire must be between 1 and 60".into(),
            ));
        }
        let callback = match self
            .callback_target(req.callback_url.as_deref(), req.callback_secret.as_deref())
            .await?
        {
            Some(target) => CallbackChange::Set(target),
            None => CallbackChange::Unchanged,
        };
        let test_code = app.settings.test_numbers.get(key.phone.as_str()).cloned();
        let msg = Issue {
            app: app.clone(),
            kind,
            delivery_method: req.delivery_method,
            minutes,
            callback,
            test_code,
        };
        let IssueDone {
            issued,
            send,
            outbox,
            ticket,
        } = self.ask(&key, msg).await??;
        self.settle(ticket, Some(&key), move |rt| {
            if let Some(send) = send {
                rt.inner.sender.dispatch(send);
            }
            rt.dispatch_all(outbox.deliveries());
        })
        .await?;
        Ok(issued)
    }

    /// Issues a new code for (phone, app), replacing any flake (SPEC section 4).
    pub async fn request(&self, app: &Arc<App>, req: SendOtp) -> Result<Issued, Error> {
        self.issue(app, req, IssueKind::Request).await
    }

    /// Issues a new code for a pending flake, keeping the callback unless a new one is given.
    pub async fn resend(&self, app: &Arc<App>, req: SendOtp) -> Result<Issued, Error> {
        self.issue(app, req, IssueKind::Resend).await
    }

    /// Compares a code; at most `max_attempts` codes are ever compared per flake.
    pub async fn verify(&self, app: &Arc<App>, req: VerifyOtp) -> Result<VerifyResult, Error> {
        let result = self.verify_inner(app, req).await;
        let outcome = match &result {
            Ok(r) => match r.outcome {
                VerifyOutcome::Verified { .. } => "verified",
                VerifyOutcome::InvalidCode { .. } => "invalid_code",
                VerifyOutcome::MaxAttempts { .. } => "max_attempts",
                VerifyOutcome::Expired { .. } => "expired",
                VerifyOutcome::AlreadyVerified { .. } => "already_verified",
            },
            Err(e) => e.code(),
        };
        metrics::counter!("otpd_otp_verifications_total", "outcome" => outcome).increment(1);
        result
    }

    async fn verify_inner(&self, app: &Arc<App>, req: VerifyOtp) -> Result<VerifyResult, Error> {
        let key = self.key(app, &req.phone_number)?;

        // Checked before the actor so a bad override uses no attempt; it becomes the
        // callback target of this verification (its secret defaults to the association's).
        let callback_override = self
            .callback_target(req.callback_url.as_deref(), req.callback_secret.as_deref())
            .await?
            .map(|t| (t.url, req.callback_secret.clone()));
        let msg = Verify {
            app_id: app.app_id,
            code: req.code,
            callback_override,
        };
        let verified = self.ask(&key, msg).await??;
        let outbox = verified.outbox;
        self.settle(verified.ticket, Some(&key), move |rt| {
            rt.dispatch_all(outbox.deliveries())
        })
        .await?;
        Ok(VerifyResult {
            phone_number: key.phone.to_string(),
            outcome: verified.outcome,
        })
    }

    /// Invalidates the pending flake and clears its callback association.
    pub async fn invalidate(
        &self,
        app: &Arc<App>,
        phone_number: &str,
    ) -> Result<(Uuid, String), Error> {
        let key = self.key(app, phone_number)?;
        let (flake_id, ticket) = self.ask(&key, Invalidate).await??;
        self.settle(ticket, Some(&key), |_| {}).await?;
        Ok((flake_id, key.phone.to_string()))
    }

    /// The current flake's status.
    pub async fn status(&self, app: &Arc<App>, phone_number: &str) -> Result<FlakeView, Error> {
        let key = self.key(app, phone_number)?;
        self.ask(&key, Status).await?
    }

    // ----- idempotency ------------------------------------------------------

    /// Starts a request carrying an `Idempotency-Key` (see [`idempotency`]).
    pub async fn idempotency_begin(
        &self,
        app_id: Uuid,
        key: &str,
        request_hash: Digest32,
    ) -> Result<Begin, Error> {
        self.check_open()?;
        let now = self.inner.shared.clock.now();
        idempotency::begin(
            &self.inner.idempotency,
            &self.inner.shared.snapshot,
            app_id,
            key,
            request_hash,
            now,
        )
        .await
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
            message_actors: self.inner.book.actors(),
            delivery_actors: self.inner.dispatcher.actors(),
            deliveries_pending: cx.pending.load(Ordering::Relaxed),
            delivery_endpoints_tracked: self.inner.dispatcher.health_records(),
            snapshot_commits: stats.commits.load(Ordering::Relaxed),
            snapshot_ops: stats.ops.load(Ordering::Relaxed),
            snapshot_last_batch: stats.last_batch.load(Ordering::Relaxed),
            snapshot_commit_seconds: stats.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
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

    /// Drops idle actors now, OTP and delivery alike (the housekeeping task does this
    /// periodically); returns how many.
    pub fn reap_idle(&self, idle: Duration) -> usize {
        let secs = idle.as_secs().max(1);
        self.inner.registry.reap(secs)
            + self.inner.dispatcher.reap(secs)
            + self.inner.book.reap(secs)
    }

    /// Runs one retention round now (the housekeeping task runs one every
    /// `retention.interval_secs`); returns what it removed.
    pub async fn prune_now(&self) -> Result<Pruned, Error> {
        let now = self.inner.shared.clock.now();
        let mut pruner = self.inner.pruner.lock().await;
        Ok(pruner
            .round(
                &self.inner.shared.snapshot,
                &self.inner.config.retention,
                now,
            )
            .await?)
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

    // ----- start-up ---------------------------------------------------------

    async fn recover(&self) -> Result<(), Error> {
        let snapshot = &self.inner.shared.snapshot;
        let since = self.inner.shared.clock.now() - chrono::Duration::seconds(60);
        for (app_id, at) in snapshot
            .read(move |c| storage::recent_otp_sends(c, since))
            .await?
        {
            self.inner.shared.limiter.record(app_id, at);
        }
        let queued = snapshot.read(storage::load_queued_messages).await?;
        if !queued.is_empty() {
            tracing::info!(
                count = queued.len(),
                "resuming messages that were queued at the last stop"
            );
        }
        for record in queued {
            if let Err(e) = self.resume(record).await {
                tracing::error!(error = %e, "resuming a queued message failed");
            }
        }
        let pending = snapshot.read(storage::load_pending_deliveries).await?;
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), "resuming unfinished deliveries");
        }
        self.dispatch_all(pending);
        Ok(())
    }

    async fn resume(&self, record: MessageRecord) -> Result<(), Error> {
        let Some(app) = self.app(record.app_id) else {
            return Ok(());
        };
        match record.purpose {
            Purpose::Otp => {
                let key = OtpKey {
                    app_id: app.app_id,
                    phone: Phone::from_canonical(record.to.clone()),
                };
                let resumed = self
                    .ask(
                        &key,
                        ResumeSend {
                            app: app.clone(),
                            record: record.clone(),
                        },
                    )
                    .await??;
                match resumed {
                    Some((pending, ticket)) => {
                        ticket.committed().await?;
                        self.inner.sender.dispatch(pending);
                    }
                    None => {
                        let mut superseded = record;
                        superseded.status = MessageStatus::Failed;
                        superseded.error_code = Some("superseded".into());
                        superseded.error_message =
                            Some("otpd stopped before sending and the OTP was no longer pending at restart".into());
                        superseded.updated_at = self.inner.shared.clock.now();
                        self.inner
                            .shared
                            .snapshot
                            .write(vec![Change::Message(superseded)])
                            .committed()
                            .await?;
                    }
                }
            }
            Purpose::Message => {
                let Some(text) = record.body.clone() else {
                    return Ok(());
                };
                let outbound = crate::provider::OutboundMessage {
                    message_id: record.message_id,
                    channel: record.channel,
                    to: record.to.clone(),
                    text,
                    sender_id: record.sender_id.clone(),
                };
                self.inner.sender.dispatch(PendingSend { record, outbound });
            }
        }
        Ok(())
    }

    fn spawn_housekeeping(&self) {
        self.spawn_retention();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let idle = self.inner.config.runtime.idle_actor_secs;
        // Frequent enough that finished messages leave memory within seconds.
        let period = Duration::from_secs((idle / 2).clamp(1, 5));
        let mut tick = Ticker::new(self.inner.shared.clock.clone(), period);
        actix_rt::spawn(async move {
            let mut rounds: u64 = 0;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.shutting_down.load(Ordering::Acquire) {
                    return;
                }
                let reaped =
                    inner.registry.reap(idle) + inner.dispatcher.reap(idle) + inner.book.reap(idle);
                if reaped > 0 {
                    tracing::debug!(reaped, "idle actors stopped");
                }
                rounds += 1;
                if rounds % 720 == 1 {
                    let horizon = inner.shared.clock.now()
                        - chrono::Duration::hours(idempotency::RETENTION_HOURS);
                    let _ = inner
                        .shared
                        .snapshot
                        .write(vec![Change::PurgeIdempotency(horizon)]);
                }
            }
        });
    }
}

impl Runtime {
    /// The retention task: one pruning round every `retention.interval_secs`, each
    /// step a short writer op, so the hot path waits a few milliseconds at most.
    fn spawn_retention(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = Duration::from_secs(self.inner.config.retention.interval_secs.max(1));
        let mut tick = Ticker::new(self.inner.shared.clock.clone(), period);
        actix_rt::spawn(async move {
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.shutting_down.load(Ordering::Acquire) {
                    return;
                }
                let runtime = Runtime { inner };
                match runtime.prune_now().await {
                    Ok(p) if p.total() > 0 => tracing::debug!(
                        deliveries = p.deliveries,
                        events = p.events,
                        messages = p.messages,
                        flakes = p.flakes,
                        "retention pruned rows"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention round failed"),
                }
            }
        });
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("live_actors", &self.live_actors())
            .finish_non_exhaustive()
    }
}

/// Default settings re-exported for embedders building apps in code.
pub fn default_settings() -> AppSettings {
    AppSettings::default()
}
