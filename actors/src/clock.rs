//! Injectable time.
//!
//! Every rule that depends on time reads it from a [`Clock`], so tests and the
//! load-test harness can move time forward without sleeping:
//!
//! - wall time ([`Clock::now`]): expiry, cooldowns, hourly windows, timestamps
//!   written to storage;
//! - monotonic time ([`Clock::monotonic`]): how long something has been idle or
//!   since an event (the registry's idle and done-grace times, the sender's seed
//!   window, the provider-failure warning window, the app directory's refresh);
//! - waits ([`Clock::sleep`]): retry schedules and pauses; and
//!   [`Clock::sleep_periodic`] (through [`Ticker`]): the runtime's housekeeping and
//!   retention rounds.
//!
//! [`SystemClock`] is the real clock; [`ManualClock`] only moves when told to.
//! [`Stopwatch`] is the one real-time helper outside a clock: it measures how long
//! work took (metrics, statistics, log lines, the storage writer's gathering
//! deadline in its own thread), never a rule. This file is the only place that may
//! read the system's time (`clippy.toml` bans `Instant::now`, `SystemTime::now` and
//! `Utc::now` everywhere else).
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::oneshot;

/// A source of "now" and of timed waits.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// Time since this clock's origin; never goes backwards (a wall clock can be
    /// set back), so it is what idle times and windows are measured in.
    fn monotonic(&self) -> Duration;
    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
    /// The wait between two rounds of a periodic background task (see [`Ticker`]).
    /// It completes like [`Clock::sleep`]; a [`ManualClock`] leaves it out of
    /// [`ManualClock::sleepers`], which counts the waits tests look for (retries).
    fn sleep_periodic(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.sleep(duration)
    }
}

/// The real clock: `Utc::now()`, a process-wide monotonic origin, and tokio timers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The monotonic origin of [`SystemClock`]: the first time any code asked for it.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn monotonic(&self) -> Duration {
        origin().elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(duration).boxed()
    }
}

/// Rounds of a periodic background task on a [`Clock`]: the first
/// [`tick`](Ticker::tick) completes at once, each later one `period` after the
/// previous round ended (a slow round delays the next, it never bursts).
pub struct Ticker {
    clock: Arc<dyn Clock>,
    period: Duration,
    started: bool,
}

impl Ticker {
    /// Rounds every `period` of `clock`'s time.
    pub fn new(clock: Arc<dyn Clock>, period: Duration) -> Ticker {
        Ticker {
            clock,
            period,
            started: false,
        }
    }

    /// Waits for the next round.
    pub async fn tick(&mut self) {
        if std::mem::replace(&mut self.started, true) {
            self.clock.sleep_periodic(self.period).await;
        }
    }
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// Real elapsed time, for measuring how long work took: metrics histograms, commit
/// and checkpoint statistics, attempt durations, log lines, and the storage
/// writer's batch-gathering deadline in its own thread. Not for rules: those read a
/// [`Clock`], so tests can move them.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts measuring now.
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    /// Real time since [`Stopwatch::start`].
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// CPU time the calling thread has used since it started
/// (`CLOCK_THREAD_CPUTIME_ID`). Differenced around a piece of work on one thread it
/// gives the time that work spent on a core, which on a shared machine can be much
/// less than its [`Stopwatch`] time: the storage writer reports both.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A clock that only moves when told to; sleepers wake when it passes their deadline.
#[derive(Debug)]
pub struct ManualClock {
    inner: Mutex<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    now: DateTime<Utc>,
    /// Everything [`ManualClock::advance`] has moved the clock by.
    elapsed: Duration,
    sleepers: Vec<Sleeper>,
}

#[derive(Debug)]
struct Sleeper {
    at: DateTime<Utc>,
    /// A [`Clock::sleep_periodic`] wait (not counted by [`ManualClock::sleepers`]).
    periodic: bool,
    wake: oneshot::Sender<()>,
}

impl ManualClock {
    /// A manual clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock {
            inner: Mutex::new(ManualInner {
                now: start,
                elapsed: Duration::ZERO,
                sleepers: Vec::new(),
            }),
        })
    }

    /// Moves time forward (wall and monotonic alike) and wakes every sleeper whose
    /// deadline has passed.
    pub fn advance(&self, by: Duration) {
        let due = {
            let mut inner = self.lock();
            inner.now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
            inner.elapsed = inner.elapsed.saturating_add(by);
            let now = inner.now;
            let (due, waiting): (Vec<_>, Vec<_>) =
                inner.sleepers.drain(..).partition(|s| s.at <= now);
            inner.sleepers = waiting;
            due
        };
        for sleeper in due {
            let _ = sleeper.wake.send(());
        }
    }

    /// How many sleepers are waiting (lets tests wait until a retry is scheduled).
    /// The waits of periodic background tasks ([`Clock::sleep_periodic`]) are not
    /// counted.
    pub fn sleepers(&self) -> usize {
        self.lock().sleepers.iter().filter(|s| !s.periodic).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        // A poisoned lock only means a test panicked mid-advance; the data is still valid.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait(&self, duration: Duration, periodic: bool) -> BoxFuture<'static, ()> {
        if duration.is_zero() {
            return futures::future::ready(()).boxed();
        }
        let (wake, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            let at =
                inner.now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
            inner.sleepers.push(Sleeper { at, periodic, wake });
        }
        async move {
            let _ = rx.await;
        }
        .boxed()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.lock().now
    }

    fn monotonic(&self) -> Duration {
        self.lock().elapsed
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.wait(duration, false)
    }

    fn sleep_periodic(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.wait(duration, true)
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

    #[tokio::test]
    async fn periodic_waits_wake_on_advance_but_are_not_counted_as_sleepers() {
        let clock = ManualClock::new(from_millis(0));
        let periodic = tokio::spawn(clock.sleep_periodic(Duration::from_secs(5)));
        let retry = tokio::spawn(clock.sleep(Duration::from_secs(5)));
        tokio::task::yield_now().await;
        assert_eq!(clock.sleepers(), 1, "only the retry counts");
        clock.advance(Duration::from_secs(5));
        periodic.await.expect("periodic wait completes");
        retry.await.expect("retry wait completes");
        assert_eq!(clock.sleepers(), 0);
    }

    #[test]
    fn manual_monotonic_time_moves_only_with_advance() {
        let clock = ManualClock::new(from_millis(1_000));
        assert_eq!(clock.monotonic(), Duration::ZERO);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        assert_eq!(clock.now(), from_millis(2_500));
    }

    #[test]
    fn system_monotonic_time_never_goes_backwards() {
        let a = SystemClock.monotonic();
        let b = SystemClock.monotonic();
        assert!(b >= a);
    }

    #[test]
    fn thread_cpu_time_counts_work_and_not_sleep() {
        let start = thread_cpu_time();
        let wall = Stopwatch::start();
        let mut x = 0u64;
        while wall.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let busy = thread_cpu_time() - start;
        assert!(busy > Duration::ZERO, "a busy loop uses CPU");
        assert!(
            busy <= wall.elapsed(),
            "never more than the wall time on one thread"
        );
        let before_sleep = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_time() - before_sleep;
        assert!(
            slept < Duration::from_millis(25),
            "sleeping is not CPU time: {slept:?}"
        );
    }

    #[tokio::test]
    async fn a_ticker_starts_at_once_then_waits_a_period_of_its_clock() {
        let clock = ManualClock::new(from_millis(0));
        let mut ticker = Ticker::new(clock.clone(), Duration::from_secs(60));
        ticker.tick().await;
        let mut next = Box::pin(ticker.tick());
        assert!(futures::poll!(&mut next).is_pending());
        clock.advance(Duration::from_secs(59));
        assert!(futures::poll!(&mut next).is_pending());
        clock.advance(Duration::from_secs(1));
        next.await;
    }

    #[test]
    fn timestamps_have_millisecond_precision_and_z() {
        assert_eq!(
            rfc3339(from_millis(1_780_833_605_123)),
            "2026-06-07T12:00:05.123Z"
        );
    }
}
