//! Start-up and wiring: [`RuntimeBuilder`] opens storage, loads the pepper, apps and
//! webhooks, builds the arbiters, registries, dispatcher and sender, and (unless
//! told not to) recovers unfinished work and starts housekeeping.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, ArbiterHandle};
use dashmap::DashSet;

use super::{Runtime, RuntimeParts, RECOVER_MAX_BACKLOG, RECOVER_PAGE};
use crate::apps::AppDirectory;
use crate::clock::{Clock, SystemClock};
use crate::config::{ProviderKind, RuntimeConfig};
use crate::delivery::{DeliveryContext, Dispatcher, RetrySchedule};
use crate::error::Error;
use crate::message_actor::{MessageContext, MessageRouter};
use crate::otp_actor::OtpContext;
use crate::provider::{HttpProvider, LogProvider, Provider};
use crate::ratelimit::AppLimiter;
use crate::registry::Registry;
use crate::retention::Pruner;
use crate::secrets::Pepper;
use crate::sender::MessageSender;
use crate::storage::{self, Change, Snapshot};
use crate::url_policy::UrlPolicy;
use crate::webhooks::WebhookDirectory;

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
        let shared = Arc::new(OtpContext {
            clock: clock.clone(),
            snapshot: snapshot.clone(),
            pepper,
            limiter: AppLimiter::default(),
            live_actors: AtomicI64::new(0),
            webhooks: webhooks.clone(),
        });
        let router = Arc::new(MessageRouter::new(
            MessageContext {
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
            router: router.clone(),
            clock: clock.clone(),
            retry_schedule: RetrySchedule::from_secs(&config.delivery.retry_schedule_secs),
            arbiters: handles.clone(),
            next: AtomicUsize::new(0),
            failures: Default::default(),
        });
        let inner = Arc::new(RuntimeParts {
            router,
            dispatcher,
            webhooks,
            registry: Registry::new(handles, clock.clone()).local_first(),
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
