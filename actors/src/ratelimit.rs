//! The app-wide send cap (`max_sends_per_minute`, a guard against SMS pumping).
//!
//! Per-phone limits live in each OTP actor's record; this one spans every actor of
//! an app, so it is a small shared structure: sixty one-second buckets per app,
//! which bounds memory whatever the cap is and keeps the check O(60).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clock::to_millis;
use crate::otp::RetryAfter;

const BUCKETS: usize = 60;

#[derive(Debug)]
struct Window {
    /// `(second, count)` per slot `second % 60`.
    slots: [(i64, u32); BUCKETS],
}

impl Default for Window {
    fn default() -> Self {
        Window {
            slots: [(i64::MIN, 0); BUCKETS],
        }
    }
}

impl Window {
    fn count(&self, now_sec: i64) -> u64 {
        self.slots
            .iter()
            .filter(|(sec, _)| now_sec.saturating_sub(*sec) < BUCKETS as i64 && *sec <= now_sec)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }

    fn add(&mut self, sec: i64) {
        let slot = &mut self.slots[sec.rem_euclid(BUCKETS as i64) as usize];
        if slot.0 == sec {
            slot.1 += 1;
        } else {
            *slot = (sec, 1);
        }
    }

    /// Seconds until enough of the window has passed for one more send.
    fn retry_after(&self, now_sec: i64, max: u64) -> u64 {
        let mut live: Vec<(i64, u32)> = self
            .slots
            .iter()
            .copied()
            .filter(|(sec, n)| {
                *n > 0 && now_sec.saturating_sub(*sec) < BUCKETS as i64 && *sec <= now_sec
            })
            .collect();
        live.sort_unstable();
        let mut total: u64 = live.iter().map(|(_, n)| u64::from(*n)).sum();
        for (sec, n) in live {
            total -= u64::from(n);
            if total < max {
                return ((sec + BUCKETS as i64) - now_sec).max(1) as u64;
            }
        }
        1
    }
}

/// Sends per app in the last minute.
#[derive(Debug, Default)]
pub struct AppLimiter {
    windows: crate::FastDashMap<Uuid, Window>,
}

impl AppLimiter {
    /// Takes one send for `app` if fewer than `max` happened in the last 60 s.
    pub fn try_acquire(&self, app: Uuid, now: DateTime<Utc>, max: u32) -> Result<(), RetryAfter> {
        let now_sec = to_millis(now).div_euclid(1000);
        let mut window = self.windows.entry(app).or_default();
        if window.count(now_sec) >= u64::from(max) {
            return Err(RetryAfter(window.retry_after(now_sec, u64::from(max))));
        }
        window.add(now_sec);
        Ok(())
    }

    /// Records a past send (start-up rebuilds the window from stored messages).
    pub fn record(&self, app: Uuid, at_millis: i64) {
        self.windows
            .entry(app)
            .or_default()
            .add(at_millis.div_euclid(1000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;

    #[test]
    fn caps_sends_per_rolling_minute_and_says_when_to_retry() {
        let limiter = AppLimiter::default();
        let app = Uuid::new_v4();
        let t0 = from_millis(1_000_000_000);
        for _ in 0..3 {
            assert!(limiter.try_acquire(app, t0, 3).is_ok());
        }
        assert_eq!(
            limiter.try_acquire(app, t0 + chrono::Duration::seconds(20), 3),
            Err(RetryAfter(40))
        );
        assert!(limiter
            .try_acquire(app, t0 + chrono::Duration::seconds(60), 3)
            .is_ok());
        assert!(limiter.try_acquire(Uuid::new_v4(), t0, 3).is_ok());
    }
}
