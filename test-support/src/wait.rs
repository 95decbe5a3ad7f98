//! Bounded polling in real time: wait until a condition holds or fail the test.
//!
//! Test support has to measure real time (a deadline a stuck test hits); the only
//! `Instant::now()` call lives in [`real_now`].

use std::time::{Duration, Instant};

/// How long [`eventually`] and [`eventually_blocking`] wait before failing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the conditions are polled.
const INTERVAL: Duration = Duration::from_millis(10);

/// The real monotonic time: the one place test support reads the wall.
// Test deadlines bound real waits for other threads and processes, not rules.
#[allow(clippy::disallowed_methods)]
pub fn real_now() -> Instant {
    Instant::now()
}

/// Waits (async, real time, at most [`DEFAULT_TIMEOUT`]) until `cond` holds;
/// panics naming `what` otherwise. Needs a tokio runtime (actix tests have one).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = real_now() + DEFAULT_TIMEOUT;
    while !cond() {
        assert!(real_now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Waits (blocking the thread, at most [`DEFAULT_TIMEOUT`]) until `cond` holds;
/// panics naming `what` otherwise.
pub fn eventually_blocking(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        poll_blocking(DEFAULT_TIMEOUT, cond),
        "timed out waiting for: {what}"
    );
}

/// Polls `cond` (blocking) every 10 ms for up to `timeout`; returns whether it
/// became true.
pub fn poll_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll_value(timeout, INTERVAL, &mut cond, |done| *done)
}

/// Calls `produce` (blocking) every `interval` until `done` accepts its value or
/// `timeout` has passed; returns the last value either way, so the caller's
/// assertion can show it.
pub fn poll_value<T>(
    timeout: Duration,
    interval: Duration,
    mut produce: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = real_now() + timeout;
    loop {
        let value = produce();
        if done(&value) || real_now() > deadline {
            return value;
        }
        std::thread::sleep(interval);
    }
}
