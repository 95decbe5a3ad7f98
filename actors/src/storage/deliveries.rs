//! Deliveries and their attempt log: start-up recovery of pending deliveries, one
//! delivery with its attempts, the filtered delivery list, a webhook's counts and
//! latencies, and the failed deliveries a replay resends.
//!
//! Written by [`Change::Outbox`](super::Change::Outbox),
//! [`Change::DeliveryState`](super::Change::DeliveryState) and
//! [`Change::Attempt`](super::Change::Attempt) in the writer.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{parse_uuid, uuid_text, StorageError, UuidText};
use crate::clock::{from_millis, to_millis};
use crate::delivery::model::{AttemptRecord, Delivery, DeliveryKind, DeliveryStatus, DeliveryView};
use crate::events::{Event, ServiceType};

/// A page of deliveries and the cursor `(created_at ms, delivery_id)` of the next one.
pub type DeliveryListing = (Vec<DeliveryView>, Option<(i64, String)>);

const DELIVERY_COLUMNS: &str = "d.delivery_id, d.app_id, d.kind, d.webhook_id, d.url, d.secret, d.report_secret,
     d.status, d.attempts, d.series_start, d.last_status_code, d.last_error, d.next_attempt_at, d.created_at,
     d.updated_at, e.event_id, e.event, e.channel, e.body, e.created_at";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Delivery, StorageError>> {
    let app: String = r.get(1)?;
    let kind: String = r.get(2)?;
    let status: String = r.get(7)?;
    let channel: String = r.get(17)?;
    let event_app = app.clone();
    let build = || -> Result<Delivery, StorageError> {
        let app_id = parse_uuid(&app)?;
        Ok(Delivery {
            delivery_id: r.get(0)?,
            app_id,
            kind: DeliveryKind::parse(&kind)
                .ok_or_else(|| StorageError::Corrupt(format!("kind {kind:?}")))?,
            webhook_id: r.get(3)?,
            url: r.get(4)?,
            secret: r.get(5)?,
            report_secret: r.get(6)?,
            status: DeliveryStatus::parse(&status)
                .ok_or_else(|| StorageError::Corrupt(format!("status {status:?}")))?,
            attempts: r.get(8)?,
            series_start: r.get(9)?,
            last_status_code: r.get(10)?,
            last_error: r.get(11)?,
            next_attempt_at: r.get::<_, Option<i64>>(12)?.map(from_millis),
            created_at: from_millis(r.get(13)?),
            updated_at: from_millis(r.get(14)?),
            event: Event {
                id: r.get(15)?,
                event: r.get(16)?,
                channel: channel
                    .parse::<ServiceType>()
                    .map_err(StorageError::Corrupt)?,
                app_id: parse_uuid(&event_app)?,
                body: r.get::<_, String>(18)?.into(),
                created_at: from_millis(r.get(19)?),
            },
        })
    };
    Ok(build())
}

/// Every delivery still `pending` (start-up recovery resumes them), oldest first.
pub fn load_pending_deliveries(conn: &Connection) -> Result<Vec<Delivery>, StorageError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id
         WHERE d.status = 'pending' ORDER BY d.created_at"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], delivery_from_row)?;
    rows.map(|r| r?).collect()
}

/// One delivery of an app, with its attempt log.
pub fn load_delivery(
    conn: &Connection,
    app_id: &Uuid,
    delivery_id: &str,
) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StorageError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id
         WHERE d.delivery_id = ?1 AND d.app_id = ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let Some(delivery) = stmt
        .query_row(
            params![delivery_id, UuidText::new(app_id)],
            delivery_from_row,
        )
        .optional()?
    else {
        return Ok(None);
    };
    let delivery = delivery?;
    let mut stmt = conn.prepare_cached(
        "SELECT attempt, at, status_code, error, duration_ms FROM delivery_attempts
         WHERE delivery_id = ?1 ORDER BY attempt",
    )?;
    let attempts = stmt
        .query_map(params![delivery_id], |r| {
            Ok(AttemptRecord {
                delivery_id: delivery_id.to_string(),
                attempt: r.get(0)?,
                at: from_millis(r.get(1)?),
                status_code: r.get(2)?,
                error: r.get(3)?,
                duration_ms: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((delivery, attempts)))
}

/// Which deliveries a list shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// The app (always).
    pub app_id: Uuid,
    /// Only this webhook's.
    pub webhook_id: Option<String>,
    /// Only this kind.
    pub kind: Option<DeliveryKind>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Continue after this `(created_at ms, delivery_id)`.
    pub after: Option<(i64, String)>,
    /// Page size.
    pub limit: usize,
}

/// A page of deliveries, newest first, with the cursor of the last one when more remain.
pub fn list_deliveries(
    conn: &Connection,
    f: &DeliveryFilter,
) -> Result<DeliveryListing, StorageError> {
    let mut sql = String::from(
        "SELECT d.delivery_id, d.event_id, e.event, d.kind, d.status, d.attempts, d.last_status_code,
         d.last_error, d.created_at, d.updated_at, d.next_attempt_at
         FROM deliveries d JOIN events e ON e.event_id = d.event_id WHERE d.app_id = ?1",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![uuid_text(&f.app_id).into()];
    if let Some(w) = &f.webhook_id {
        args.push(w.clone().into());
        sql += &format!(" AND d.webhook_id = ?{}", args.len());
    }
    if let Some(k) = f.kind {
        args.push(k.as_str().to_string().into());
        sql += &format!(" AND d.kind = ?{}", args.len());
    }
    if let Some(s) = f.status {
        args.push(s.as_str().to_string().into());
        sql += &format!(" AND d.status = ?{}", args.len());
    }
    if let Some((at, id)) = &f.after {
        args.push((*at).into());
        args.push(id.clone().into());
        sql += &format!(
            " AND (d.created_at < ?{a} OR (d.created_at = ?{a} AND d.delivery_id < ?{b}))",
            a = args.len() - 1,
            b = args.len()
        );
    }
    args.push(((f.limit + 1) as i64).into());
    sql += &format!(
        " ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT ?{}",
        args.len()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, u32>(5)?,
            r.get::<_, Option<u16>>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, i64>(9)?,
            r.get::<_, Option<i64>>(10)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (
            delivery_id,
            event_id,
            event,
            kind,
            status,
            attempts,
            code,
            error,
            created,
            updated,
            next,
        ) = row?;
        items.push(DeliveryView {
            delivery_id,
            event_id,
            event,
            kind: DeliveryKind::parse(&kind)
                .ok_or_else(|| StorageError::Corrupt(format!("kind {kind:?}")))?,
            status: DeliveryStatus::parse(&status)
                .ok_or_else(|| StorageError::Corrupt(format!("status {status:?}")))?,
            attempts,
            last_status_code: code,
            last_error: error,
            created_at: from_millis(created),
            updated_at: from_millis(updated),
            next_attempt_at: next.map(from_millis),
        });
    }
    let next = if items.len() > f.limit {
        items.truncate(f.limit);
        items
            .last()
            .map(|d| (to_millis(d.created_at), d.delivery_id.clone()))
    } else {
        None
    };
    Ok((items, next))
}

/// Counts and latencies behind `GET /v1/webhooks/{id}/stats`.
#[derive(Debug, Clone, Default)]
pub struct WebhookCounts {
    /// Deliveries in all.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed for good.
    pub failed: u64,
    /// Still pending.
    pub pending: u64,
    /// Last successful attempt.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last failed attempt.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Attempt latency percentiles (ms) over the last 1000 attempts.
    pub latency_p50: Option<i64>,
    /// 95th percentile.
    pub latency_p95: Option<i64>,
}

/// Computes a webhook's counts.
pub fn webhook_counts(conn: &Connection, webhook_id: &str) -> Result<WebhookCounts, StorageError> {
    let mut c = WebhookCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM deliveries WHERE webhook_id = ?1 GROUP BY status",
    )?;
    for row in stmt.query_map(params![webhook_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
    })? {
        let (status, n) = row?;
        c.total += n;
        match status.as_str() {
            "succeeded" => c.succeeded = n,
            "failed" => c.failed = n,
            _ => c.pending += n,
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT a.at, a.status_code, a.duration_ms FROM delivery_attempts a
         JOIN deliveries d ON d.delivery_id = a.delivery_id
         WHERE d.webhook_id = ?1 ORDER BY a.at DESC LIMIT 1000",
    )?;
    let mut latencies = Vec::new();
    for row in stmt.query_map(params![webhook_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<u16>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (at, code, ms) = row?;
        let ok = code.is_some_and(|c| (200..300).contains(&c));
        if ok && c.last_success_at.is_none() {
            c.last_success_at = Some(from_millis(at));
        }
        if !ok && c.last_failure_at.is_none() {
            c.last_failure_at = Some(from_millis(at));
        }
        latencies.push(ms);
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    c.latency_p50 = pick(0.5);
    c.latency_p95 = pick(0.95);
    Ok(c)
}

/// Failed deliveries of a webhook created in `[since, until]`, in `(created_at, delivery_id)`
/// order after `after`, at most `limit`.
pub fn failed_deliveries_between(
    conn: &Connection,
    webhook_id: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    after: Option<(i64, String)>,
    limit: usize,
) -> Result<Vec<Delivery>, StorageError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id
         WHERE d.webhook_id = ?1 AND d.status = 'failed' AND d.created_at >= ?2 AND d.created_at <= ?3
         AND (d.created_at, d.delivery_id) > (?4, ?5)
         ORDER BY d.created_at, d.delivery_id LIMIT ?6"
    );
    let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            webhook_id,
            to_millis(since),
            to_millis(until),
            after_ms,
            after_id,
            limit as i64
        ],
        delivery_from_row,
    )?;
    rows.map(|r| r?).collect()
}
