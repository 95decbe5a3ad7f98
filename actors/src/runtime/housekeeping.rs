//! Housekeeping: reaping idle actors, purging old idempotency records, and the
//! retention rounds that keep the database bounded (`[retention]`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Runtime, RuntimeParts};
use crate::clock::Ticker;
use crate::error::Error;
use crate::idempotency;
use crate::retention::Pruned;
use crate::storage::Change;

impl Runtime {
    /// Drops idle actors now, OTP and delivery alike (the housekeeping task does this
    /// periodically); returns how many.
    pub fn reap_idle(&self, idle: Duration) -> usize {
        let secs = idle.as_secs().max(1);
        self.inner.registry.reap(secs)
            + self.inner.dispatcher.reap(secs)
            + self.inner.router.reap(secs)
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

    pub(super) fn spawn_housekeeping(&self) {
        self.spawn_retention();
        let weak: Weak<RuntimeParts> = Arc::downgrade(&self.inner);
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
                let reaped = inner.registry.reap(idle)
                    + inner.dispatcher.reap(idle)
                    + inner.router.reap(idle);
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
    /// The retention task: one pruning round every `retention.interval_secs`, each
    /// step a short writer op, so the hot path waits a few milliseconds at most.
    fn spawn_retention(&self) {
        let weak: Weak<RuntimeParts> = Arc::downgrade(&self.inner);
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
