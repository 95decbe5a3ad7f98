//! The delivery engine: one `DeliveryActor` per endpoint, fed by the `Dispatcher`.
//!
//! Every delivery is committed (with its event) before it reaches an actor (outbox
//! before network). The actor for an endpoint — a registered webhook, or one
//! callback / report URL — owns that endpoint's queue, its in-flight cap, its retry
//! timers and its pause state, so a slow or dead endpoint only fills its own queue.
//! Each attempt is bounded by `attempt_timeout_secs`, policy-checked (literal hosts
//! here, resolved addresses in the pinned resolver), signed, logged, and followed by
//! a retry on the [`RetrySchedule`] or a final status. Idle actors leave the registry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use uuid::Uuid;

use crate::clock::{rfc3339, serde_ts, to_millis, Clock, Stopwatch};
use crate::config::DeliveryConfig;
use crate::events::{Event, ServiceType};
use crate::registry::Registry;
use crate::secrets::random_hex;
use crate::signing::{otpd_signature, standard_signature_header};
use crate::storage::{Change, Snapshot};
use crate::url_policy::UrlPolicy;
use crate::webhooks::WebhookDirectory;

/// Which route a delivery travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// Per-request callback (`flake.*`).
    Callback,
    /// Registered webhook.
    Webhook,
    /// Per-message delivery report.
    Report,
}

impl DeliveryKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Callback => "callback",
            DeliveryKind::Webhook => "webhook",
            DeliveryKind::Report => "report",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<DeliveryKind> {
        match s {
            "callback" => Some(DeliveryKind::Callback),
            "webhook" => Some(DeliveryKind::Webhook),
            "report" => Some(DeliveryKind::Report),
            _ => None,
        }
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for (another) attempt.
    Pending,
    /// A 2xx was received.
    Succeeded,
    /// Gave up (retries exhausted, 410, or endpoint gone).
    Failed,
}

impl DeliveryStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One event on its way to one endpoint.
#[derive(Clone)]
pub struct Delivery {
    /// `dlv_<32 hex>`.
    pub delivery_id: String,
    /// Owning app.
    pub app_id: Uuid,
    /// The event (its body is sent byte-exact on every attempt).
    pub event: Event,
    /// Route.
    pub kind: DeliveryKind,
    /// For webhook deliveries: the webhook (URL and secrets are read at attempt time).
    pub webhook_id: Option<String>,
    /// Destination (for webhooks, the URL when the delivery was created).
    pub url: String,
    /// Signing secret of a callback or report.
    pub secret: Option<String>,
    /// Reports also send the secret itself in `<prefix>-Webhook-Secret`.
    pub report_secret: bool,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts made in all.
    pub attempts: u32,
    /// `attempts` when the current attempt series began (manual retries start new series).
    pub series_start: u32,
    /// Last HTTP status received.
    pub last_status_code: Option<u16>,
    /// Last error (timeout, connection, policy…).
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("delivery_id", &self.delivery_id)
            .field("event", &self.event.event)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A new pending delivery of `event`.
    pub fn new(
        event: &Event,
        kind: DeliveryKind,
        url: String,
        webhook_id: Option<String>,
        secret: Option<String>,
    ) -> Delivery {
        Delivery {
            delivery_id: format!("dlv_{}", random_hex(16)),
            app_id: event.app_id,
            event: event.clone(),
            kind,
            webhook_id,
            url,
            secret,
            report_secret: false,
            status: DeliveryStatus::Pending,
            attempts: 0,
            series_start: 0,
            last_status_code: None,
            last_error: None,
            next_attempt_at: Some(event.created_at),
            created_at: event.created_at,
            updated_at: event.created_at,
        }
    }

    /// The endpoint whose actor carries this delivery.
    pub fn endpoint(&self) -> EndpointKey {
        match &self.webhook_id {
            Some(id) => EndpointKey::Webhook(id.clone()),
            None => EndpointKey::Url(self.url.clone()),
        }
    }

    /// The API view.
    pub fn view(&self) -> DeliveryView {
        DeliveryView {
            delivery_id: self.delivery_id.clone(),
            event_id: self.event.id.clone(),
            event: self.event.event.clone(),
            kind: self.kind,
            status: self.status,
            attempts: self.attempts,
            last_status_code: self.last_status_code,
            last_error: self.last_error.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            next_attempt_at: self.next_attempt_at,
        }
    }

    /// Starts a new attempt series (manual retry, recover).
    pub fn restart_series(&mut self, now: DateTime<Utc>) {
        self.status = DeliveryStatus::Pending;
        self.series_start = self.attempts;
        self.next_attempt_at = Some(now);
        self.updated_at = now;
    }
}

/// A delivery as listed by the API.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    /// `dlv_…`.
    pub delivery_id: String,
    /// `evt_…`.
    pub event_id: String,
    /// Event name.
    pub event: String,
    /// Route.
    pub kind: DeliveryKind,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Last HTTP status.
    pub last_status_code: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// Created.
    #[serde(with = "serde_ts")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "serde_ts")]
    pub updated_at: DateTime<Utc>,
    /// Next attempt, when pending.
    #[serde(with = "serde_ts::option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// One attempt's log line.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// Delivery.
    #[serde(skip)]
    pub delivery_id: String,
    /// 1, 2, 3 …
    pub attempt: u32,
    /// When it started.
    #[serde(with = "serde_ts")]
    pub at: DateTime<Utc>,
    /// HTTP status, when one came back.
    pub status_code: Option<u16>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

/// An endpoint: what one `DeliveryActor` serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointKey {
    /// A registered webhook (its URL may change; its queue stays).
    Webhook(String),
    /// A callback or report URL.
    Url(String),
}

impl EndpointKey {
    /// A loggable name: the webhook id, or only scheme and host of a URL (a callback
    /// URL may carry a token in its path or query).
    pub fn redacted(&self) -> String {
        match self {
            EndpointKey::Webhook(id) => id.clone(),
            EndpointKey::Url(raw) => match url::Url::parse(raw) {
                Ok(u) => format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")),
                Err(_) => "<unparsable url>".into(),
            },
        }
    }
}

/// The delays between attempts of one series (`delivery.retry_schedule_secs`).
#[derive(Debug, Clone)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// From seconds.
    pub fn from_secs(secs: &[u64]) -> RetrySchedule {
        RetrySchedule(secs.iter().map(|s| Duration::from_secs(*s)).collect())
    }

    /// Attempts per series.
    pub fn attempts(&self) -> u32 {
        self.0.len() as u32 + 1
    }

    /// The wait after failed attempt `n` (1-based) of a series, honouring a
    /// `Retry-After` up to four times the scheduled delay; `None` when the series is over.
    pub fn next_delay(&self, n: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let scheduled = *self.0.get((n as usize).checked_sub(1)?)?;
        Some(match retry_after {
            Some(ra) => ra.min(scheduled * 4),
            None => scheduled,
        })
    }
}

/// Health of one endpoint, readable by the stats API even after its actor stopped.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// Deliveries in a row that ended failed.
    pub consecutive_failures: AtomicU32,
    /// Paused until (ms since epoch; 0 = not paused).
    pub paused_until_ms: AtomicI64,
}

impl EndpointHealth {
    /// The pause end, if paused at `now`.
    pub fn paused_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ms = self.paused_until_ms.load(Ordering::Acquire);
        (ms > to_millis(now)).then(|| crate::clock::from_millis(ms))
    }
}

/// What every delivery actor shares.
pub(crate) struct DeliveryContext {
    pub(crate) client: reqwest::Client,
    pub(crate) policy: UrlPolicy,
    pub(crate) snapshot: Snapshot,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: DeliveryConfig,
    pub(crate) schedule: RetrySchedule,
    pub(crate) webhooks: Arc<WebhookDirectory>,
    /// Deliveries finished (succeeded, failed) since start, for metrics.
    pub(crate) succeeded: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    /// Deliveries handed to actors and not yet final (queued, in flight, or waiting to retry).
    pub(crate) pending: AtomicUsize,
}

impl DeliveryContext {
    pub(crate) fn new(
        policy: UrlPolicy,
        snapshot: Snapshot,
        clock: Arc<dyn Clock>,
        config: DeliveryConfig,
        webhooks: Arc<WebhookDirectory>,
    ) -> Result<DeliveryContext, String> {
        let client = policy
            .client_builder()
            .user_agent(config.user_agent.clone())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("building the delivery HTTP client: {e}"))?;
        Ok(DeliveryContext {
            client,
            policy,
            snapshot,
            clock,
            schedule: RetrySchedule::from_secs(&config.retry_schedule_secs),
            config,
            webhooks,
            succeeded: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        })
    }
}

/// Routes committed deliveries to their endpoint's actor.
pub(crate) struct Dispatcher {
    registry: Registry<EndpointKey, DeliveryActor>,
    cx: Arc<DeliveryContext>,
    health: DashMap<EndpointKey, Arc<EndpointHealth>>,
}

impl Dispatcher {
    pub(crate) fn new(cx: Arc<DeliveryContext>, arbiters: Vec<ArbiterHandle>) -> Dispatcher {
        Dispatcher {
            registry: Registry::with_busy_counters(arbiters, cx.clock.clone()),
            cx,
            health: DashMap::new(),
        }
    }

    /// The health record of an endpoint.
    pub(crate) fn health(&self, key: &EndpointKey) -> Arc<EndpointHealth> {
        self.health.entry(key.clone()).or_default().clone()
    }

    /// Hands a committed delivery to its endpoint's actor.
    pub(crate) fn dispatch(&self, delivery: Delivery) {
        let key = delivery.endpoint();
        let health = self.health(&key);
        let cx = self.cx.clone();
        let spawn = |arbiter: &ArbiterHandle, busy: Arc<AtomicUsize>| {
            let k = key.clone();
            DeliveryActor::start_in_arbiter(arbiter, move |_| DeliveryActor {
                key: k,
                cx,
                queue: VecDeque::new(),
                in_flight: 0,
                busy,
                health,
                resume_scheduled: false,
            })
        };
        self.registry.with_actor(&key, spawn, |addr, busy| {
            // Counted under the entry lock: the reaper keeps a busy actor.
            busy.fetch_add(1, Ordering::AcqRel);
            self.cx.pending.fetch_add(1, Ordering::Relaxed);
            addr.do_send(Enqueue(Box::new(delivery)));
        });
    }

    /// Lifts an endpoint's pause now (manual retry) and restarts its queue.
    pub(crate) fn resume(&self, key: &EndpointKey) {
        let health = self.health(key);
        health.paused_until_ms.store(0, Ordering::Release);
        health.consecutive_failures.store(0, Ordering::Release);
        if let Some(addr) = self.registry.peek(key) {
            addr.do_send(Pump);
        }
    }

    /// Drops idle endpoint actors, then the health records nobody needs; returns how
    /// many actors.
    pub(crate) fn reap(&self, idle_secs: u64) -> usize {
        let reaped = self.registry.reap(idle_secs);
        self.prune_health();
        reaped
    }

    /// Forgets the health of callback and report URLs that have no actor and are not
    /// paused: each distinct callback URL would otherwise stay in memory for good.
    /// Webhook records stay (one per webhook, read by its stats) until it is deleted.
    fn prune_health(&self) {
        let now = to_millis(self.cx.clock.now());
        self.health.retain(|key, h| match key {
            EndpointKey::Webhook(_) => true,
            // An actor holds a clone while it lives; a paused endpoint keeps its pause.
            EndpointKey::Url(_) => {
                Arc::strong_count(h) > 1 || h.paused_until_ms.load(Ordering::Acquire) > now
            }
        });
    }

    /// Forgets a deleted webhook's health record.
    pub(crate) fn forget_webhook(&self, webhook_id: &str) {
        self.health
            .remove(&EndpointKey::Webhook(webhook_id.to_string()));
    }

    /// Health records held (for tests and gauges).
    pub(crate) fn health_records(&self) -> usize {
        self.health.len()
    }

    /// Deliveries the endpoint's actor holds (queued, in flight or waiting to retry).
    pub(crate) fn backlog(&self, key: &EndpointKey) -> usize {
        self.registry.backlog(key)
    }

    /// Endpoint actors alive.
    pub(crate) fn actors(&self) -> usize {
        self.registry.len()
    }

    pub(crate) fn context(&self) -> &Arc<DeliveryContext> {
        &self.cx
    }
}

/// The actor serving one endpoint. See the module docs.
pub struct DeliveryActor {
    key: EndpointKey,
    cx: Arc<DeliveryContext>,
    queue: VecDeque<Box<Delivery>>,
    in_flight: usize,
    busy: Arc<AtomicUsize>,
    health: Arc<EndpointHealth>,
    resume_scheduled: bool,
}

impl Actor for DeliveryActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Enqueue(Box<Delivery>);

#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

impl Handler<Enqueue> for DeliveryActor {
    type Result = ();
    fn handle(&mut self, msg: Enqueue, ctx: &mut Self::Context) {
        self.queue.push_back(msg.0);
        self.pump(ctx);
    }
}

impl Handler<Pump> for DeliveryActor {
    type Result = ();
    fn handle(&mut self, _: Pump, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

/// How one attempt went.
struct Outcome {
    at: DateTime<Utc>,
    status_code: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
    duration_ms: i64,
    /// The endpoint cannot be attempted at all (webhook deleted, URL refused).
    abandon: bool,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

impl DeliveryActor {
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = self.cx.clock.now();
        if let Some(until) = self.health.paused_until(now) {
            if !self.resume_scheduled {
                self.resume_scheduled = true;
                let wait = (until - now).to_std().unwrap_or_default();
                ctx.spawn(
                    self.cx
                        .clock
                        .sleep(wait)
                        .into_actor(self)
                        .map(|_, act, ctx| {
                            act.resume_scheduled = false;
                            act.pump(ctx);
                        }),
                );
            }
            return;
        }
        while self.in_flight < self.cx.config.max_in_flight {
            let Some(mut delivery) = self.queue.pop_front() else {
                break;
            };
            self.in_flight += 1;
            delivery.attempts += 1;
            let cx = self.cx.clone();
            let job = delivery.clone();
            ctx.spawn(
                async move { attempt(&cx, &job).await }
                    .into_actor(self)
                    .map(move |outcome, act, ctx| act.finished(delivery, outcome, ctx)),
            );
        }
    }

    fn finished(&mut self, mut d: Box<Delivery>, outcome: Outcome, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        let now = self.cx.clock.now();
        let attempt = AttemptRecord {
            delivery_id: d.delivery_id.clone(),
            attempt: d.attempts,
            at: outcome.at,
            status_code: outcome.status_code,
            error: outcome.error.clone(),
            duration_ms: outcome.duration_ms,
        };
        d.last_status_code = outcome.status_code;
        d.last_error = outcome.error.clone();
        metrics::histogram!("otpd_delivery_attempt_duration_seconds", "kind" => d.kind.as_str())
            .record(outcome.duration_ms as f64 / 1000.0);
        d.updated_at = now;
        let mut retry_in = None;
        if outcome.succeeded() {
            d.status = DeliveryStatus::Succeeded;
            d.next_attempt_at = None;
            self.health.consecutive_failures.store(0, Ordering::Release);
            self.cx.succeeded.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("otpd_deliveries_total", "kind" => d.kind.as_str(), "outcome" => "succeeded").increment(1);
        } else {
            let gone = outcome.status_code == Some(410);
            let delay = self
                .cx
                .schedule
                .next_delay(d.attempts - d.series_start, outcome.retry_after);
            match delay {
                Some(delay) if !gone && !outcome.abandon => {
                    d.next_attempt_at =
                        Some(now + chrono::Duration::from_std(delay).unwrap_or_default());
                    retry_in = Some(delay);
                }
                _ => {
                    d.status = DeliveryStatus::Failed;
                    d.next_attempt_at = None;
                    self.cx.failed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("otpd_deliveries_total", "kind" => d.kind.as_str(), "outcome" => "failed").increment(1);
                    let failures = self
                        .health
                        .consecutive_failures
                        .fetch_add(1, Ordering::AcqRel)
                        + 1;
                    let limit = self.cx.config.pause_after_failures;
                    if limit > 0 && failures >= limit {
                        let until =
                            now + chrono::Duration::seconds(self.cx.config.pause_secs as i64);
                        self.health
                            .paused_until_ms
                            .store(to_millis(until), Ordering::Release);
                        self.health.consecutive_failures.store(0, Ordering::Release);
                        tracing::warn!(endpoint = %self.key.redacted(), until = %rfc3339(until), "endpoint paused after consecutive failed deliveries");
                    }
                }
            }
        }
        let _ = self.cx.snapshot.write(vec![
            Change::Attempt(attempt),
            Change::DeliveryState((*d).clone()),
        ]);
        match retry_in {
            Some(delay) => {
                ctx.spawn(
                    self.cx
                        .clock
                        .sleep(delay)
                        .into_actor(self)
                        .map(move |_, act, ctx| {
                            act.queue.push_back(d);
                            act.pump(ctx);
                        }),
                );
            }
            None => {
                self.busy.fetch_sub(1, Ordering::AcqRel);
                self.cx.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.pump(ctx);
    }
}

fn abandon(at: DateTime<Utc>, error: String) -> Outcome {
    Outcome {
        at,
        status_code: None,
        error: Some(error),
        retry_after: None,
        duration_ms: 0,
        abandon: true,
    }
}

/// Makes one signed attempt.
async fn attempt(cx: &DeliveryContext, d: &Delivery) -> Outcome {
    let at = cx.clock.now();
    let (url, secrets) = match &d.webhook_id {
        Some(id) => match cx.webhooks.get(id) {
            Some(w) => (w.url.clone(), w.signing_secrets(at)),
            None => return abandon(at, "the webhook was deleted".into()),
        },
        None => (d.url.clone(), d.secret.iter().cloned().collect()),
    };
    // Literal addresses never reach the resolver, so check the URL on every attempt.
    if let Err(e) = cx.policy.check_url(&url) {
        return abandon(at, format!("URL refused by policy: {e}"));
    }
    let p = &cx.config.header_prefix;
    let body = d.event.body.as_bytes().to_vec();
    let mut req = cx
        .client
        .post(&url)
        .timeout(Duration::from_secs(cx.config.attempt_timeout_secs))
        .header("Content-Type", "application/json")
        .header(format!("{p}-Event"), &d.event.event)
        .header(format!("{p}-Event-Id"), &d.event.id)
        .header(format!("{p}-Timestamp"), rfc3339(d.event.created_at))
        .header(format!("{p}-App-Id"), d.app_id.to_string())
        .header(format!("{p}-Service-Type"), d.event.channel.as_str())
        .header(format!("{p}-Delivery-Id"), &d.delivery_id)
        .header(format!("{p}-Attempt"), d.attempts.to_string());
    if let Some(current) = secrets.first() {
        let ts = at.timestamp();
        let all: Vec<&str> = secrets.iter().map(String::as_str).collect();
        req = req
            .header(format!("{p}-Signature"), otpd_signature(current, &body))
            .header("webhook-id", &d.event.id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                standard_signature_header(&all, &d.event.id, ts, &body),
            );
        // During a rotation's grace the primary header stays one exact value (receivers
        // that compare it as a string keep working); the previous secret signs here.
        if let Some(previous) = secrets.get(1) {
            req = req.header(
                format!("{p}-Signature-Previous"),
                otpd_signature(previous, &body),
            );
        }
        if d.report_secret {
            req = req.header(format!("{p}-Webhook-Secret"), current.as_str());
        }
    }
    let started = Stopwatch::start();
    let result = req.body(body).send().await;
    let duration_ms = started.elapsed().as_millis() as i64;
    match result {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let retry_after = if code == 429 || code == 503 {
                resp.headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            } else {
                None
            };
            let error = (!(200..300).contains(&code)).then(|| format!("HTTP {code}"));
            Outcome {
                at,
                status_code: Some(code),
                error,
                retry_after,
                duration_ms,
                abandon: false,
            }
        }
        Err(e) => {
            let error = if e.is_timeout() {
                format!("timed out after {} s", cx.config.attempt_timeout_secs)
            } else if e.is_connect() {
                format!("connection failed: {}", root_cause(&e))
            } else {
                format!("request failed: {}", root_cause(&e))
            };
            Outcome {
                at,
                status_code: None,
                error: Some(error),
                retry_after: None,
                duration_ms,
                abandon: false,
            }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The events and deliveries an action produced, to commit with it and dispatch after.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    /// Event with its deliveries.
    pub items: Vec<(Event, Vec<Delivery>)>,
}

impl Outbox {
    /// Adds an event for a registered webhook of `service_type`, if the app has one that wants it.
    pub(crate) fn webhook_event(
        &mut self,
        webhooks: &WebhookDirectory,
        app_id: Uuid,
        service_type: ServiceType,
        name: &str,
        now: DateTime<Utc>,
        data: serde_json::Value,
    ) {
        let Some(w) = webhooks.for_app(app_id, service_type) else {
            return;
        };
        if !w.wants(name) {
            return;
        }
        let event = Event::new(name, service_type, app_id, now, data);
        let d = Delivery::new(
            &event,
            DeliveryKind::Webhook,
            w.url.clone(),
            Some(w.id.clone()),
            None,
        );
        self.items.push((event, vec![d]));
    }

    /// Adds a per-request callback event.
    pub(crate) fn callback_event(
        &mut self,
        app_id: Uuid,
        target: &crate::otp::CallbackTarget,
        name: &str,
        now: DateTime<Utc>,
        data: serde_json::Value,
    ) {
        let event = Event::new(name, ServiceType::Flake, app_id, now, data);
        let d = Delivery::new(
            &event,
            DeliveryKind::Callback,
            target.url.clone(),
            None,
            target.secret.clone(),
        );
        self.items.push((event, vec![d]));
    }

    /// The storage changes that commit this outbox.
    pub fn changes(&self) -> Vec<Change> {
        self.items
            .iter()
            .map(|(e, ds)| Change::Outbox(e.clone(), ds.clone()))
            .collect()
    }

    /// Every delivery, for dispatch after the commit.
    pub fn deliveries(self) -> impl Iterator<Item = Delivery> {
        self.items.into_iter().flat_map(|(_, ds)| ds)
    }

    /// True when nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_gives_delays_then_ends_and_caps_retry_after() {
        let s = RetrySchedule::from_secs(&[1, 4]);
        assert_eq!(s.attempts(), 3);
        assert_eq!(s.next_delay(1, None), Some(Duration::from_secs(1)));
        assert_eq!(s.next_delay(2, None), Some(Duration::from_secs(4)));
        assert_eq!(s.next_delay(3, None), None);
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(100))),
            Some(Duration::from_secs(4))
        );
        assert_eq!(s.next_delay(0, None), None);
    }
}
