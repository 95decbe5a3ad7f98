//! OTP outcome counts over a recent window: the query behind `GET /v1/stats/otp`.
//!
//! Source of truth, chosen because it is durable and exists for apps without
//! webhooks (the `events` table is only written when something subscribes):
//! - `messages` rows with `purpose = 'otp'`: one per code sent, counted by status;
//! - `otp_state` rows: the latest flake per phone, counted by its outcome. A flake
//!   replaced by a newer request to the same phone is no longer there, so outcome
//!   counts are "latest flake per phone created in the window".

use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::storage::StorageError;

/// The window a stats call covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsWindow {
    /// The last hour, in twelve 5-minute buckets.
    Hour,
    /// The last day, in twenty-four 1-hour buckets.
    Day,
}

impl StatsWindow {
    /// Parses `hour` or `day`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(StatsWindow::Hour),
            "day" => Some(StatsWindow::Day),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StatsWindow::Hour => "hour",
            StatsWindow::Day => "day",
        }
    }

    fn bucket(self) -> Duration {
        match self {
            StatsWindow::Hour => Duration::minutes(5),
            StatsWindow::Day => Duration::hours(1),
        }
    }

    fn buckets(self) -> i64 {
        match self {
            StatsWindow::Hour => 12,
            StatsWindow::Day => 24,
        }
    }
}

/// One time bucket of the chart.
#[derive(Debug, Clone, Serialize)]
pub struct StatsBucket {
    /// Start of the bucket (RFC 3339).
    pub start: DateTime<Utc>,
    /// OTP messages created in the bucket.
    pub sent: u64,
    /// Latest flakes created in the bucket, by outcome.
    pub outcomes: BTreeMap<String, u64>,
}

/// The answer of `GET /v1/stats/otp`.
#[derive(Debug, Clone, Serialize)]
pub struct OtpStats {
    /// `hour` or `day`.
    pub window: &'static str,
    /// Start of the window.
    pub from: DateTime<Utc>,
    /// End of the window (now).
    pub until: DateTime<Utc>,
    /// Bucket width in seconds.
    pub bucket_seconds: i64,
    /// OTP messages created in the window, by message status.
    pub sends: BTreeMap<String, u64>,
    /// Latest flake per phone created in the window, by outcome
    /// (`pending`, `verified`, `failed`, `expired`, `invalidated`).
    pub outcomes: BTreeMap<String, u64>,
    /// The window cut into equal buckets, oldest first.
    pub buckets: Vec<StatsBucket>,
}

const OUTCOMES: [&str; 5] = ["pending", "verified", "failed", "expired", "invalidated"];

/// Reads the OTP stats of `app_id` for `window` ending at `now`.
///
/// A pending flake past its `expires_at` counts as `expired`, as the status call
/// reports it.
pub fn otp_stats(
    c: &Connection,
    app_id: &Uuid,
    window: StatsWindow,
    now: DateTime<Utc>,
) -> Result<OtpStats, StorageError> {
    let bucket = window.bucket();
    let n = window.buckets();
    let from = now - bucket * (n as i32);
    let from_ms = from.timestamp_millis();
    let now_ms = now.timestamp_millis();
    let bucket_ms = bucket.num_milliseconds();
    let app = app_id.hyphenated().to_string();
    let index = |at: i64| -> Option<usize> {
        // The last bucket closes at `now` itself.
        let i = ((at - from_ms) / bucket_ms).min(n - 1);
        (at >= from_ms && at <= now_ms).then_some(i as usize)
    };
    let mut buckets: Vec<StatsBucket> = (0..n)
        .map(|i| StatsBucket {
            start: from + bucket * (i as i32),
            sent: 0,
            outcomes: OUTCOMES.iter().map(|o| (o.to_string(), 0)).collect(),
        })
        .collect();
    let mut sends = BTreeMap::new();
    let mut stmt = c.prepare_cached(
        "SELECT status, created_at FROM messages
         WHERE app_id = ?1 AND purpose = 'otp' AND created_at >= ?2 AND created_at <= ?3",
    )?;
    let rows = stmt.query_map(params![app, from_ms, now_ms], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (status, at) = row?;
        *sends.entry(status).or_insert(0) += 1;
        if let Some(i) = index(at) {
            buckets[i].sent += 1;
        }
    }
    let mut outcomes: BTreeMap<String, u64> = OUTCOMES.iter().map(|o| (o.to_string(), 0)).collect();
    let mut stmt = c.prepare_cached(
        "SELECT status, created_at, expires_at FROM otp_state
         WHERE app_id = ?1 AND status IS NOT NULL AND created_at >= ?2 AND created_at <= ?3",
    )?;
    let rows = stmt.query_map(params![app, from_ms, now_ms], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    for row in rows {
        let (mut status, at, expires) = row?;
        if status == "pending" && expires.is_some_and(|e| now_ms >= e) {
            status = "expired".into();
        }
        if let Some(i) = index(at) {
            *buckets[i].outcomes.entry(status.clone()).or_insert(0) += 1;
        }
        *outcomes.entry(status).or_insert(0) += 1;
    }
    Ok(OtpStats {
        window: window.as_str(),
        from,
        until: now,
        bucket_seconds: bucket.num_seconds(),
        sends,
        outcomes,
        buckets,
    })
}
