//! [`DeliveryActor`]: the actor serving one endpoint, and one signed attempt.
//!
//! Every delivery is committed (with its event) before it reaches an actor (outbox
//! before network). The actor for an endpoint — a registered webhook, or one
//! callback / report URL — owns that endpoint's queue, its in-flight cap, its retry
//! timers and its pause state, so a slow or dead endpoint only fills its own queue.
//! Each attempt is bounded by `attempt_timeout_secs`, policy-checked (literal hosts
//! here, resolved addresses in the pinned resolver), signed, logged, and followed by
//! a retry on the [`RetrySchedule`] or a final status. Idle actors leave the registry.
//! [`DeliveryContext`] is what every delivery actor shares.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::dispatcher::EndpointHealth;
use super::headers::{request_headers, Stamp};
use super::model::{AttemptRecord, Delivery, DeliveryStatus, EndpointKey};
use super::retry::RetrySchedule;
use crate::clock::{rfc3339, to_millis, Clock, Stopwatch};
use crate::config::DeliveryConfig;
use crate::storage::{Change, Snapshot};
use crate::telemetry;
use crate::url_policy::UrlPolicy;
use crate::webhooks::WebhookDirectory;

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

impl DeliveryActor {
    /// A new, idle actor for `key` (the dispatcher starts it in an arbiter).
    pub(super) fn new(
        key: EndpointKey,
        cx: Arc<DeliveryContext>,
        busy: Arc<AtomicUsize>,
        health: Arc<EndpointHealth>,
    ) -> DeliveryActor {
        DeliveryActor {
            key,
            cx,
            queue: VecDeque::new(),
            in_flight: 0,
            busy,
            health,
            resume_scheduled: false,
        }
    }
}

impl Actor for DeliveryActor {
    type Context = Context<Self>;
}

/// A committed delivery for this actor's queue.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Enqueue(pub(super) Box<Delivery>);

/// Try the queue again (a pause was lifted).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Pump;

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
        telemetry::observe(
            "otpd_delivery_attempt_duration_seconds",
            telemetry::one("kind", d.kind.as_str()),
            outcome.duration_ms as f64 / 1000.0,
        );
        d.updated_at = now;
        let mut retry_in = None;
        if outcome.succeeded() {
            d.status = DeliveryStatus::Succeeded;
            d.next_attempt_at = None;
            self.health.consecutive_failures.store(0, Ordering::Release);
            self.cx.succeeded.fetch_add(1, Ordering::Relaxed);
            telemetry::count(
                "otpd_deliveries_total",
                telemetry::two(("kind", d.kind.as_str()), ("outcome", "succeeded")),
                1,
            );
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
                    telemetry::count(
                        "otpd_deliveries_total",
                        telemetry::two(("kind", d.kind.as_str()), ("outcome", "failed")),
                        1,
                    );
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
    let body = d.event.body.as_bytes().to_vec();
    let stamp = Stamp::Attempt {
        number: d.attempts,
        unix_ts: at.timestamp(),
        secrets: &secrets,
    };
    let req = request_headers(&cx.config, d, stamp).into_iter().fold(
        cx.client
            .post(&url)
            .timeout(Duration::from_secs(cx.config.attempt_timeout_secs)),
        |req, (name, value)| req.header(name, value),
    );
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
