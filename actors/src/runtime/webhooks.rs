//! Webhook management and the delivery log on the runtime (SPEC section 6).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Runtime;
use crate::app::App;
use crate::clock::{from_millis, serde_ts, to_millis};
use crate::delivery::headers::{request_headers, Stamp};
use crate::delivery::{
    AttemptRecord, Delivery, DeliveryKind, DeliveryStatus, DeliveryView, EndpointKey,
};
use crate::error::Error;
use crate::events::{Event, ServiceType};
use crate::secrets::random_hex;
use crate::signing::generate_webhook_secret;
use crate::storage::{self, Change, DeliveryFilter, StorageError};
use crate::webhooks::{validate_description, validate_events, Webhook, WebhookStatus};

/// Failed deliveries one page of a recovery reads and commits.
pub const RECOVER_PAGE: usize = 500;

/// A recovery waits before its next page while the endpoint's actor holds more
/// deliveries than this.
pub const RECOVER_MAX_BACKLOG: usize = 2_000;

/// What a secret rotation answers.
#[derive(Debug, Clone)]
pub struct RotatedSecret {
    /// The new secret: it keys `X-Otpd-Signature` from now on.
    pub secret: String,
    /// Until when the previous secret still signs (`webhook-signature` and
    /// `X-Otpd-Signature-Previous`).
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// `POST /v1/webhooks` input.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    /// Destination.
    pub url: String,
    /// `otp`, `sms`, `whatsapp` or `telegram`.
    pub service_type: String,
    /// Subscribed events (default: every active event of the type).
    pub events: Option<Vec<String>>,
    /// Free text.
    pub description: Option<String>,
}

/// `PATCH /v1/webhooks/{id}` input: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// New destination.
    pub url: Option<String>,
    /// New subscription.
    pub events: Option<Vec<String>>,
    /// `active` or `disabled`.
    pub status: Option<String>,
    /// New description.
    pub description: Option<String>,
}

/// A delivery with its payload and attempt log.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDetail {
    /// The list item.
    #[serde(flatten)]
    pub view: DeliveryView,
    /// Destination.
    pub url: String,
    /// The exact body sent.
    pub payload: String,
    /// Every attempt.
    pub attempt_log: Vec<AttemptRecord>,
    /// The request headers otpd sends for it (SPEC section 6), built by the same code
    /// as a real attempt's; values computed per attempt (attempt number, timestamps,
    /// signatures) read [`crate::PER_ATTEMPT`], and no secret is shown.
    pub headers: BTreeMap<String, String>,
}

/// Percentiles of attempt latency.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median (ms).
    pub p50: Option<i64>,
    /// 95th percentile (ms).
    pub p95: Option<i64>,
}

/// `GET /v1/webhooks/{id}/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookStats {
    /// Deliveries in all.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed for good.
    pub failed: u64,
    /// Pending.
    pub pending: u64,
    /// succeeded / (succeeded + failed); `null` before any finished.
    pub success_rate: Option<f64>,
    /// Failed deliveries in a row.
    pub consecutive_failures: u32,
    /// When a pause ends.
    #[serde(with = "serde_ts::option")]
    pub paused_until: Option<DateTime<Utc>>,
    /// Last 2xx attempt.
    #[serde(with = "serde_ts::option")]
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last failed attempt.
    #[serde(with = "serde_ts::option")]
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Attempt latency.
    pub latency_ms: Latency,
}

/// A page of the delivery log.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Only this webhook's.
    pub webhook_id: Option<String>,
    /// `callback`, `webhook` or `report`.
    pub kind: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// From a previous page.
    pub cursor: Option<String>,
    /// Page size (1–100, default 50).
    pub limit: Option<usize>,
}

fn conflict_or_storage(e: StorageError) -> Error {
    match e {
        StorageError::Conflict(m) => Error::Conflict(m),
        e => Error::Storage(e),
    }
}

impl Runtime {
    async fn commit(&self, changes: Vec<Change>) -> Result<(), Error> {
        self.inner
            .shared
            .snapshot
            .write(changes)
            .committed()
            .await
            .map_err(conflict_or_storage)
    }

    async fn webhook_url(&self, raw: &str) -> Result<String, Error> {
        Ok(self.check_callback_url(raw).await?.to_string())
    }

    /// Registers a webhook; its secret is in the returned value (`secret`).
    pub async fn create_webhook(&self, app: &App, new: NewWebhook) -> Result<Arc<Webhook>, Error> {
        self.check_open()?;
        let service_type: ServiceType = new.service_type.parse().map_err(Error::Validation)?;
        if !service_type.registrable() {
            return Err(Error::Validation(
                "service_type must be otp, sms, whatsapp or telegram".into(),
            ));
        }
        let events = validate_events(service_type, new.events).map_err(Error::Validation)?;
        validate_description(&new.description).map_err(Error::Validation)?;
        let url = self.webhook_url(&new.url).await?;
        if self
            .inner
            .webhooks
            .for_app(app.app_id, service_type)
            .is_some()
        {
            return Err(Error::Conflict(format!(
                "this app already has a webhook for service_type \"{service_type}\""
            )));
        }
        let now = self.inner.shared.clock.now();
        let webhook = Webhook {
            id: format!("wh_{}", random_hex(16)),
            app_id: app.app_id,
            service_type,
            url,
            events,
            status: WebhookStatus::Active,
            description: new.description,
            secret: generate_webhook_secret(),
            previous_secret: None,
            created_at: now,
            updated_at: now,
        };
        self.commit(vec![Change::Webhook(webhook.clone())]).await?;
        Ok(self.inner.webhooks.insert(webhook))
    }

    /// The app's webhooks.
    pub fn webhooks(&self, app: &App) -> Vec<Arc<Webhook>> {
        self.inner.webhooks.list(app.app_id)
    }

    /// One webhook of the app (404 for another app's).
    pub fn webhook(&self, app: &App, id: &str) -> Result<Arc<Webhook>, Error> {
        self.inner
            .webhooks
            .get(id)
            .filter(|w| w.app_id == app.app_id)
            .ok_or_else(|| Error::NotFound("no such webhook".into()))
    }

    /// Changes a webhook's URL, events, status or description.
    pub async fn update_webhook(
        &self,
        app: &App,
        id: &str,
        patch: WebhookPatch,
    ) -> Result<Arc<Webhook>, Error> {
        self.check_open()?;
        let mut w = (*self.webhook(app, id)?).clone();
        if let Some(url) = patch.url {
            w.url = self.webhook_url(&url).await?;
        }
        if let Some(events) = patch.events {
            w.events = validate_events(w.service_type, Some(events)).map_err(Error::Validation)?;
        }
        if let Some(status) = patch.status {
            w.status = WebhookStatus::parse(&status)
                .ok_or_else(|| Error::Validation("status must be active or disabled".into()))?;
        }
        if patch.description.is_some() {
            validate_description(&patch.description).map_err(Error::Validation)?;
            w.description = patch.description;
        }
        w.updated_at = self.inner.shared.clock.now();
        self.commit(vec![Change::Webhook(w.clone())]).await?;
        Ok(self.inner.webhooks.insert(w))
    }

    /// Deletes a webhook. Its pending deliveries end `failed` ("the webhook was
    /// deleted") at their next attempt; none is sent after the delete.
    pub async fn delete_webhook(&self, app: &App, id: &str) -> Result<(), Error> {
        self.check_open()?;
        let w = self.webhook(app, id)?;
        self.commit(vec![Change::DeleteWebhook(w.id.clone())])
            .await?;
        self.inner.webhooks.remove(&w.id);
        self.inner.dispatcher.forget_webhook(&w.id);
        Ok(())
    }

    /// Rotates the secret; the previous one keeps signing for `delivery.secret_grace_secs`.
    pub async fn rotate_webhook_secret(&self, app: &App, id: &str) -> Result<RotatedSecret, Error> {
        self.check_open()?;
        let mut w = (*self.webhook(app, id)?).clone();
        let now = self.inner.shared.clock.now();
        let grace = chrono::Duration::seconds(self.inner.config.delivery.secret_grace_secs as i64);
        w.previous_secret = Some((
            std::mem::replace(&mut w.secret, generate_webhook_secret()),
            now + grace,
        ));
        w.updated_at = now;
        self.commit(vec![Change::Webhook(w.clone())]).await?;
        let rotated = RotatedSecret {
            secret: w.secret.clone(),
            previous_secret_expires_at: now + grace,
        };
        self.inner.webhooks.insert(w);
        Ok(rotated)
    }

    /// Sends a signed `<service_type>.test` event through the normal pipeline.
    pub async fn test_webhook(&self, app: &App, id: &str) -> Result<String, Error> {
        self.check_open()?;
        let w = self.webhook(app, id)?;
        let now = self.inner.shared.clock.now();
        let name = format!("{}.test", w.service_type);
        let event = Event::new(
            &name,
            w.service_type,
            app.app_id,
            now,
            serde_json::json!({"test": true}),
        );
        let delivery = Delivery::new(
            &event,
            DeliveryKind::Webhook,
            w.url.clone(),
            Some(w.id.clone()),
            None,
        );
        let id = delivery.delivery_id.clone();
        self.commit(vec![Change::Outbox(event, vec![delivery.clone()])])
            .await?;
        self.inner.dispatcher.dispatch(delivery);
        Ok(id)
    }

    /// Gives every failed delivery of the webhook created in `[since, until]` a new attempt series.
    ///
    /// Pages through the window [`RECOVER_PAGE`] deliveries at a time: each page is
    /// one bounded read and one commit (so the writer is never held long), then goes
    /// to the endpoint's actor; before the next page the actor's backlog must be under
    /// [`RECOVER_MAX_BACKLOG`], so memory stays bounded however large the window. The
    /// work runs in its own task: a caller that goes away does not stop it halfway.
    pub async fn recover_webhook(
        &self,
        app: &App,
        id: &str,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<usize, Error> {
        self.check_open()?;
        let w = self.webhook(app, id)?;
        let now = self.inner.shared.clock.now();
        let until = until.unwrap_or(now);
        if until < since {
            return Err(Error::Validation("until must not be before since".into()));
        }
        let runtime = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        actix_rt::spawn(async move {
            let _ = tx.send(runtime.recover_pages(&w.id, since, until, now).await);
        });
        rx.await
            .unwrap_or_else(|_| Err(Error::Unavailable("recovery stopped".into())))
    }

    async fn recover_pages(
        &self,
        webhook_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize, Error> {
        let key = EndpointKey::Webhook(webhook_id.to_string());
        let limits = self.inner.recover_limits;
        self.inner.dispatcher.resume(&key);
        let mut count = 0;
        let mut after: Option<(i64, String)> = None;
        loop {
            while self.inner.dispatcher.backlog(&key) > limits.max_backlog {
                if self
                    .inner
                    .shutting_down
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    return Ok(count);
                }
                // Polls other tasks' progress (backpressure), not a time rule: real time.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let wid = webhook_id.to_string();
            let from = after.clone();
            let mut page = self
                .inner
                .shared
                .snapshot
                .read(move |c| {
                    storage::failed_deliveries_between(c, &wid, since, until, from, limits.page)
                })
                .await?;
            let Some(last) = page.last() else {
                return Ok(count);
            };
            after = Some((to_millis(last.created_at), last.delivery_id.clone()));
            let full = page.len() == limits.page;
            for d in &mut page {
                d.restart_series(now);
            }
            self.commit(page.iter().cloned().map(Change::DeliveryState).collect())
                .await?;
            count += page.len();
            self.dispatch_all(page);
            if !full {
                return Ok(count);
            }
        }
    }

    /// A page of the app's delivery log.
    pub async fn deliveries(&self, app: &App, q: DeliveryQuery) -> Result<DeliveryPage, Error> {
        let kind = q
            .kind
            .map(|k| {
                DeliveryKind::parse(&k).ok_or_else(|| {
                    Error::InvalidRequest("kind must be callback, webhook or report".into())
                })
            })
            .transpose()?;
        let status = q
            .status
            .map(|s| {
                DeliveryStatus::parse(&s).ok_or_else(|| {
                    Error::InvalidRequest("status must be pending, succeeded or failed".into())
                })
            })
            .transpose()?;
        let limit = q.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(Error::InvalidRequest(
                "limit must be between 1 and 100".into(),
            ));
        }
        let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
        let filter = DeliveryFilter {
            app_id: app.app_id,
            webhook_id: q.webhook_id,
            kind,
            status,
            after,
            limit,
        };
        let (items, next) = self
            .inner
            .shared
            .snapshot
            .read(move |c| storage::list_deliveries(c, &filter))
            .await?;
        Ok(DeliveryPage {
            items,
            next_cursor: next.map(|(at, id)| format!("{at}.{id}")),
        })
    }

    /// One delivery of the app with payload and attempt log.
    pub async fn delivery(&self, app: &App, delivery_id: &str) -> Result<DeliveryDetail, Error> {
        let (d, attempts) = self.load_delivery(app, delivery_id).await?;
        // A webhook delivery goes to the webhook's URL at attempt time.
        let webhook = d
            .webhook_id
            .as_deref()
            .and_then(|id| self.inner.webhooks.get(id));
        let url = webhook
            .as_ref()
            .map(|w| w.url.clone())
            .unwrap_or_else(|| d.url.clone());
        let secrets = match &webhook {
            Some(w) => w.signing_secrets(self.inner.shared.clock.now()).len(),
            None => usize::from(d.secret.is_some()),
        };
        let headers = request_headers(
            &self.inner.config.delivery,
            &d,
            Stamp::Described { secrets },
        );
        Ok(DeliveryDetail {
            view: d.view(),
            url,
            payload: d.event.body.to_string(),
            attempt_log: attempts,
            headers: headers.into_iter().collect(),
        })
    }

    async fn load_delivery(
        &self,
        app: &App,
        delivery_id: &str,
    ) -> Result<(Delivery, Vec<AttemptRecord>), Error> {
        if delivery_id.len() > 64 {
            return Err(Error::NotFound("no such delivery".into()));
        }
        let (app_id, id) = (app.app_id, delivery_id.to_string());
        self.inner
            .shared
            .snapshot
            .read(move |c| storage::load_delivery(c, &app_id, &id))
            .await?
            .ok_or_else(|| Error::NotFound("no such delivery".into()))
    }

    /// Starts a new attempt series for a delivery (same event id and body). A pending
    /// delivery is already queued: its endpoint's pause, if any, is lifted instead.
    pub async fn retry_delivery(
        &self,
        app: &App,
        delivery_id: &str,
    ) -> Result<DeliveryView, Error> {
        self.check_open()?;
        let (mut d, _) = self.load_delivery(app, delivery_id).await?;
        self.inner.dispatcher.resume(&d.endpoint());
        if d.status == DeliveryStatus::Pending {
            return Ok(d.view());
        }
        d.restart_series(self.inner.shared.clock.now());
        self.commit(vec![Change::DeliveryState(d.clone())]).await?;
        let view = d.view();
        self.inner.dispatcher.dispatch(d);
        Ok(view)
    }

    /// Counts, health and latency of a webhook.
    pub async fn webhook_stats(&self, app: &App, id: &str) -> Result<WebhookStats, Error> {
        let w = self.webhook(app, id)?;
        let wid = w.id.clone();
        let c = self
            .inner
            .shared
            .snapshot
            .read(move |conn| storage::webhook_counts(conn, &wid))
            .await?;
        let health = self
            .inner
            .dispatcher
            .health(&EndpointKey::Webhook(w.id.clone()));
        let now = self.inner.shared.clock.now();
        let finished = c.succeeded + c.failed;
        Ok(WebhookStats {
            total: c.total,
            succeeded: c.succeeded,
            failed: c.failed,
            pending: c.pending,
            success_rate: (finished > 0).then(|| c.succeeded as f64 / finished as f64),
            consecutive_failures: health
                .consecutive_failures
                .load(std::sync::atomic::Ordering::Acquire),
            paused_until: health.paused_until(now),
            last_success_at: c.last_success_at,
            last_failure_at: c.last_failure_at,
            latency_ms: Latency {
                p50: c.latency_p50,
                p95: c.latency_p95,
            },
        })
    }

    /// Endpoint (delivery) actors alive.
    pub fn delivery_actors(&self) -> usize {
        self.inner.dispatcher.actors()
    }

    /// Deliveries finished since start: (succeeded, failed).
    pub fn deliveries_finished(&self) -> (usize, usize) {
        let cx = self.inner.dispatcher.context();
        (
            cx.succeeded.load(std::sync::atomic::Ordering::Relaxed),
            cx.failed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

fn parse_cursor(raw: &str) -> Result<(i64, String), Error> {
    let bad = || Error::InvalidRequest("cursor is not one this API returned".into());
    let (at, id) = raw.split_once('.').ok_or_else(bad)?;
    let at: i64 = at.parse().map_err(|_| bad())?;
    if !id.starts_with("dlv_") || id.len() > 64 {
        return Err(bad());
    }
    let _ = from_millis(at);
    Ok((at, id.to_string()))
}
