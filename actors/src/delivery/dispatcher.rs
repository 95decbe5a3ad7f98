//! [`Dispatcher`]: routes committed deliveries to one [`DeliveryActor`] per endpoint,
//! and keeps each endpoint's [`EndpointHealth`] (failures in a row, pause).
//!
//! The health record outlives the endpoint's actor, so the stats API reads it and a
//! pause survives an idle actor being reaped; records of callback and report URLs that
//! nobody needs are pruned with the idle actors.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use dashmap::DashMap;

use super::actor::{DeliveryActor, DeliveryContext, Enqueue, Pump};
use super::model::{Delivery, EndpointKey};
use crate::clock::to_millis;
use crate::registry::Registry;

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
            DeliveryActor::start_in_arbiter(arbiter, move |_| {
                DeliveryActor::new(k, cx, busy, health)
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
