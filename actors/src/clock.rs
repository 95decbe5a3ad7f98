//! Injectable time.
//!
//! Every rule that depends on time (expiry, cooldowns, hourly windows, retry
//! schedules) reads it from a [`Clock`], so tests and the load-test harness can move
//! time forward without sleeping for minutes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::oneshot;

/// A source of "now" and of timed waits.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The real clock: `Utc::now()` and tokio timers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(duration).boxed()
    }
}

/// A clock that only moves when told to; sleepers wake when it passes their deadline.
#[derive(Debug)]
pub struct ManualClock {
    inner: Mutex<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    now: DateTime<Utc>,
    sleepers: Vec<(DateTime<Utc>, oneshot::Sender<()>)>,
}

impl ManualClock {
    /// A manual clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock {
            inner: Mutex::new(ManualInner {
                now: start,
                sleepers: Vec::new(),
            }),
        })
    }

    /// Moves time forward and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, by: Duration) {
        let due = {
            let mut inner = self.lock();
            inner.now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
            let now = inner.now;
            let (due, waiting): (Vec<_>, Vec<_>) =
                inner.sleepers.drain(..).partition(|(at, _)| *at <= now);
            inner.sleepers = waiting;
            due
        };
        for (_, tx) in due {
            let _ = tx.send(());
        }
    }

    /// How many sleepers are waiting (lets tests wait until a retry is scheduled).
    pub fn sleepers(&self) -> usize {
        self.lock().sleepers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        // A poisoned lock only means a test panicked mid-advance; the data is still valid.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.lock().now
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        if duration.is_zero() {
            return futures::future::ready(()).boxed();
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            let at =
                inner.now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
            inner.sleepers.push((at, tx));
        }
        async move {
            let _ = rx.await;
        }
        .boxed()
    }
}

/// Formats a timestamp the way the wire contract wants: RFC 3339 UTC, milliseconds, `Z`.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde helpers that write timestamps with [`rfc3339`].
pub mod serde_ts {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    /// Serializes a timestamp as RFC 3339 with milliseconds.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*at))
    }

    /// Serializes an optional timestamp (`null` when absent).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::Serializer;

        /// Serializes `Some` as RFC 3339 with milliseconds and `None` as `null`.
        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.serialize_str(&super::super::rfc3339(*at)),
                None => s.serialize_none(),
            }
        }
    }
}

/// Milliseconds since the Unix epoch: how timestamps are stored.
pub fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The inverse of [`to_millis`]; out-of-range values clamp to the epoch.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_their_deadline_passes() {
        let clock = ManualClock::new(from_millis(0));
        let sleep = clock.sleep(Duration::from_secs(10));
        let handle = tokio::spawn(sleep);
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(9));
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_secs(1));
        handle.await.expect("sleeper completes");
        assert_eq!(clock.now(), from_millis(10_000));
    }

    #[test]
    fn timestamps_have_millisecond_precision_and_z() {
        assert_eq!(
            rfc3339(from_millis(1_780_833_605_123)),
            "2026-06-07T12:00:05.123Z"
        );
    }
}
