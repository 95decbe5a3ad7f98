//! [`RetrySchedule`]: the delays between attempts of one series.
//!
//! Built from `delivery.retry_schedule_secs`. Webhook, callback and report deliveries
//! retry on it (honouring a capped `Retry-After`), and so does the provider sender
//! (`sender.rs`): one schedule, one meaning of "attempts per series".

use std::time::Duration;

/// The delays between attempts of one series (`delivery.retry_schedule_secs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// `Retry-After` up to four times the scheduled delay; `None` when the series is over
    /// (and for `n == 0`: no attempt has failed yet, so there is nothing to wait for).
    pub fn next_delay(&self, n: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let scheduled = *self.0.get((n as usize).checked_sub(1)?)?;
        Some(match retry_after {
            Some(ra) => ra.min(scheduled * 4),
            None => scheduled,
        })
    }
}

impl FromIterator<Duration> for RetrySchedule {
    /// The delays in order: the first is the wait after the first failed attempt.
    fn from_iter<I: IntoIterator<Item = Duration>>(delays: I) -> RetrySchedule {
        RetrySchedule(delays.into_iter().collect())
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

    #[test]
    fn an_empty_schedule_is_one_attempt_and_no_retry() {
        let s = RetrySchedule::from_secs(&[]);
        assert_eq!(s, RetrySchedule::default());
        assert_eq!(s.attempts(), 1);
        assert_eq!(s.next_delay(0, None), None);
        assert_eq!(s.next_delay(1, None), None);
        assert_eq!(s.next_delay(1, Some(Duration::from_secs(5))), None);
    }

    #[test]
    fn collected_delays_equal_the_same_seconds() {
        let collected: RetrySchedule = [1, 4, 30].iter().map(|s| Duration::from_secs(*s)).collect();
        assert_eq!(collected, RetrySchedule::from_secs(&[1, 4, 30]));
    }

    /// The provider sender's loop: before attempt `k` (0-based) it waits
    /// `next_delay(k, None)`; this is the series the old `Vec<Duration>` loop produced
    /// (no wait, then each scheduled delay in order), with the same attempt count.
    #[test]
    fn the_sender_series_waits_each_delay_once_in_order() {
        let secs = [1, 4, 30];
        let s = RetrySchedule::from_secs(&secs);
        let waits: Vec<Option<Duration>> =
            (0..s.attempts()).map(|k| s.next_delay(k, None)).collect();
        let mut expected = vec![None];
        expected.extend(secs.iter().map(|x| Some(Duration::from_secs(*x))));
        assert_eq!(waits, expected);
        assert_eq!(s.attempts() as usize, secs.len() + 1);
    }
}
