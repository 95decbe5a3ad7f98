//! Retention: the pruner that keeps the database bounded (`[retention]`).
//!
//! Finished records older than their retention leave the database in small steps,
//! each one short operation on the writer (so a step delays other commits by at most
//! a few milliseconds), from the runtime's housekeeping task:
//!
//! | table | pruned when | never pruned |
//! |---|---|---|
//! | `deliveries`, `delivery_attempts` | created before the delivery-log horizon and not pending | a pending delivery |
//! | `events` | with the last of its deliveries | an event of any remaining delivery |
//! | `messages` | created before the messages horizon and not queued | a queued message |
//! | `otp_state` | its last send, expiry and finish are all `finished_flakes_hours` old, and its flake is not pending (or has expired) | a pending flake; a flake whose rate-limit windows still count |
//!
//! The rowid tables are walked in rowid (insertion) order from a cursor, so a step
//! reads only the rows it looks at and stops at the first row that is too young; when
//! the walk stops, the cursor returns to the first record it had to keep (a pending
//! delivery, a queued message) so that record is looked at again once it finishes. `otp_state` has no
//! rowid: it is swept in key order, a bounded page per step, round and round.

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection};

use crate::config::RetentionConfig;
use crate::storage::{decode_sends, Snapshot, StorageError};

/// How many rows each table lost in one pruning round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Delivery rows (their attempt log rows go with them).
    pub deliveries: u64,
    /// Event rows.
    pub events: u64,
    /// Message rows.
    pub messages: u64,
    /// `otp_state` rows (finished flakes).
    pub flakes: u64,
}

impl Pruned {
    /// All rows removed.
    pub fn total(&self) -> u64 {
        self.deliveries + self.events + self.messages + self.flakes
    }
}

/// One step's outcome: rows deleted, where the next step starts, and whether the
/// walk reached rows too young to prune (or the end of the table).
struct Step<C> {
    deleted: u64,
    next: C,
    done: bool,
    /// The first row kept because of its status (rowid walks only).
    first_kept: Option<i64>,
    /// Rows of a dependent table deleted with them (events, for deliveries).
    also: u64,
}

/// A rowid walk's position: the last rowid looked at, and the first row kept since
/// the walk last reached its end (the walk starts over there next time).
#[derive(Debug, Default, Clone, Copy)]
struct RowidCursor {
    at: i64,
    first_kept: Option<i64>,
}

impl RowidCursor {
    fn advance(&mut self, step: &Step<i64>) {
        self.at = step.next;
        if let Some(k) = step.first_kept {
            self.first_kept = Some(self.first_kept.map_or(k, |f| f.min(k)));
        }
        if step.done {
            if let Some(k) = self.first_kept.take() {
                self.at = k - 1;
            }
        }
    }
}

/// Where the next step of each table starts. Lives in the housekeeping task.
#[derive(Debug, Default)]
pub(crate) struct Pruner {
    deliveries: RowidCursor,
    messages: RowidCursor,
    /// Last `(app_id, phone)` looked at; `None` = from the start.
    flakes: Option<(String, String)>,
}

/// Steps a round may take per table, so one round stays bounded even when a backlog
/// is large (the next round goes on from the cursor).
const MAX_STEPS_PER_TABLE: usize = 200;

/// How far (in rowids) another delivery of the same event can sit from one being
/// pruned: an outbox write inserts an event's deliveries one after another.
const EVENT_NEIGHBOURS: i64 = 64;

impl Pruner {
    /// One round: steps through each table until it reaches rows too young to prune,
    /// at most [`MAX_STEPS_PER_TABLE`] steps each. Each step is one writer op.
    pub(crate) async fn round(
        &mut self,
        snapshot: &Snapshot,
        config: &RetentionConfig,
        now: DateTime<Utc>,
    ) -> Result<Pruned, StorageError> {
        let mut pruned = Pruned::default();
        let limit = config.batch_rows;
        if config.delivery_log_days > 0 {
            let before = horizon_ms(now, config.delivery_log_days * 24);
            (pruned.deliveries, pruned.events) = walk_table(
                snapshot,
                &mut self.deliveries,
                prune_deliveries,
                before,
                limit,
            )
            .await?;
        }
        if config.messages_days > 0 {
            let before = horizon_ms(now, config.messages_days * 24);
            (pruned.messages, _) =
                walk_table(snapshot, &mut self.messages, prune_messages, before, limit).await?;
        }
        if config.finished_flakes_hours > 0 {
            let before = horizon_ms(now, config.finished_flakes_hours);
            let now_ms = now.timestamp_millis();
            // One full sweep of the key space at most per round.
            for _ in 0..MAX_STEPS_PER_TABLE {
                let from = self.flakes.take();
                let step = snapshot
                    .write_with(move |c| prune_flakes(c, before, now_ms, from, limit))
                    .await?;
                self.flakes = step.next;
                pruned.flakes += step.deleted;
                if step.done {
                    break;
                }
            }
        }
        for (table, n) in [
            ("deliveries", pruned.deliveries),
            ("events", pruned.events),
            ("messages", pruned.messages),
            ("flakes", pruned.flakes),
        ] {
            if n > 0 {
                metrics::counter!("otpd_retention_pruned_rows_total", "table" => table)
                    .increment(n);
            }
        }
        Ok(pruned)
    }
}

/// One step of a rowid table: `(connection, before ms, after rowid, limit)`.
type RowidStep = fn(&Connection, i64, i64, usize) -> Result<Step<i64>, StorageError>;

/// Steps `prune` through a rowid table from `cursor` until it reaches rows too young
/// (at most [`MAX_STEPS_PER_TABLE`] steps, each one writer op); returns rows deleted
/// and dependent rows deleted with them.
async fn walk_table(
    snapshot: &Snapshot,
    cursor: &mut RowidCursor,
    prune: RowidStep,
    before: i64,
    limit: usize,
) -> Result<(u64, u64), StorageError> {
    let mut deleted = 0;
    let mut also = 0;
    for _ in 0..MAX_STEPS_PER_TABLE {
        let from = cursor.at;
        let step = snapshot
            .write_with(move |c| prune(c, before, from, limit))
            .await?;
        cursor.advance(&step);
        deleted += step.deleted;
        also += step.also;
        if step.done {
            break;
        }
    }
    Ok((deleted, also))
}

/// `(rowid, id, status, created_at)` of up to `limit` rows after rowid `from`; `sql`
/// selects exactly those four columns with `?1` = from and `?2` = limit.
fn rowid_page(
    conn: &Connection,
    sql: &str,
    from: i64,
    limit: usize,
) -> Result<Vec<(i64, String, String, i64)>, StorageError> {
    let rows = conn
        .prepare_cached(sql)?
        .query_map(params![from, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn horizon_ms(now: DateTime<Utc>, hours: u64) -> i64 {
    let hours = i64::try_from(hours).unwrap_or(i64::MAX / 3_600_000);
    now.timestamp_millis()
        .saturating_sub(hours.saturating_mul(3_600_000))
}

/// Deletes finished deliveries created before `before` (ms), walking rowids after `from`.
fn prune_deliveries(
    conn: &Connection,
    before: i64,
    from: i64,
    limit: usize,
) -> Result<Step<i64>, StorageError> {
    let rows = rowid_page(
        conn,
        "SELECT rowid, delivery_id, status, created_at FROM deliveries
         WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        from,
        limit,
    )?;
    let mut events = 0;
    let mut step = walk(
        rows.len() < limit,
        from,
        rows,
        before,
        "pending",
        |rowid, id| {
            let event_id: String = conn
                .prepare_cached("SELECT event_id FROM deliveries WHERE rowid = ?1")?
                .query_row([rowid], |r| r.get(0))?;
            conn.prepare_cached("DELETE FROM delivery_attempts WHERE delivery_id = ?1")?
                .execute([id])?;
            conn.prepare_cached("DELETE FROM deliveries WHERE rowid = ?1")?
                .execute([rowid])?;
            // An event's deliveries are inserted with it, in one outbox write, so any
            // other delivery of this event sits at a neighbouring rowid: no index needed.
            events += conn
            .prepare_cached(
                "DELETE FROM events WHERE event_id = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries
                 WHERE rowid BETWEEN ?2 - ?3 AND ?2 + ?3 AND event_id = ?1)",
            )?
            .execute(params![event_id, rowid, EVENT_NEIGHBOURS])? as u64;
            Ok(true)
        },
    )?;
    step.also = events;
    Ok(step)
}

/// Deletes messages created before `before` that are no longer queued.
fn prune_messages(
    conn: &Connection,
    before: i64,
    from: i64,
    limit: usize,
) -> Result<Step<i64>, StorageError> {
    let rows = rowid_page(
        conn,
        "SELECT rowid, message_id, status, created_at FROM messages
         WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        from,
        limit,
    )?;
    walk(rows.len() < limit, from, rows, before, "queued", |_, id| {
        conn.prepare_cached("DELETE FROM messages WHERE message_id = ?1")?
            .execute([id])?;
        Ok(true)
    })
}

/// The shared rowid walk: stops at the first row created at or after `before`;
/// keeps rows whose status is `keep` and rows `delete` declines (an event a delivery
/// still refers to), reporting the first one so the walk returns to it later.
fn walk(
    short_page: bool,
    from: i64,
    rows: Vec<(i64, String, String, i64)>,
    before: i64,
    keep: &str,
    mut delete: impl FnMut(i64, &str) -> Result<bool, StorageError>,
) -> Result<Step<i64>, StorageError> {
    let mut step = Step {
        deleted: 0,
        next: from,
        done: short_page,
        first_kept: None,
        also: 0,
    };
    for (rowid, id, status, created_at) in rows {
        if created_at >= before {
            step.done = true;
            return Ok(step);
        }
        if status != keep && delete(rowid, &id)? {
            step.deleted += 1;
        } else {
            step.first_kept.get_or_insert(rowid);
        }
        step.next = rowid;
    }
    Ok(step)
}

/// Deletes finished (or expired) flakes whose last moment — last send, expiry or
/// finish — is before `before`, one key-ordered page after `from`; at the end of the
/// key space the sweep starts over next round.
fn prune_flakes(
    conn: &Connection,
    before: i64,
    now: i64,
    from: Option<(String, String)>,
    limit: usize,
) -> Result<Step<Option<(String, String)>>, StorageError> {
    type Row = (String, String, Option<String>, [Option<i64>; 3], Value);
    let (app, phone) = from.clone().unwrap_or_default();
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT app_id, phone, status, created_at, expires_at, finished_at, sends
             FROM otp_state WHERE (app_id, phone) > (?1, ?2) ORDER BY app_id, phone LIMIT ?3",
        )?
        .query_map(params![app, phone, limit as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                [r.get(3)?, r.get(4)?, r.get(5)?],
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let done = rows.len() < limit;
    let mut deleted = 0;
    let mut last = None;
    for (app_id, phone, status, times, sends) in rows {
        let sends = match decode_sends((&sends).into()) {
            Ok(sends) => sends,
            Err(e) => {
                // Kept: its rate-limit window is unknown. The actor refuses to load it
                // too, so it shows up there as well.
                tracing::warn!(error = %e, %app_id, "otp_state row with unreadable send times kept");
                last = Some((app_id, phone));
                continue;
            }
        };
        let expires_at = times[1];
        let live = status.as_deref() == Some("pending") && expires_at.is_none_or(|e| e > now);
        // The flake's own times, not the row's write time: they follow the runtime's clock.
        let latest = times
            .into_iter()
            .flatten()
            .chain(sends)
            .max()
            .unwrap_or(i64::MIN);
        if !live && latest < before {
            deleted += conn
                .prepare_cached("DELETE FROM otp_state WHERE app_id = ?1 AND phone = ?2")?
                .execute(params![app_id, phone])? as u64;
        }
        last = Some((app_id, phone));
    }
    Ok(Step {
        deleted,
        next: if done { None } else { last },
        done,
        first_kept: None,
        also: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;

    const DAY_MS: i64 = 86_400_000;

    async fn open(dir: &std::path::Path) -> Snapshot {
        let config = StorageConfig {
            path: dir.join("otpd.sqlite3"),
            ..StorageConfig::default()
        };
        Snapshot::open(&config).expect("open").0
    }

    async fn sql(snapshot: &Snapshot, sql: &'static str) {
        snapshot
            .write_with(move |c| Ok(c.execute_batch(sql)?))
            .await
            .expect(sql);
    }

    async fn count(snapshot: &Snapshot, table: &'static str) -> i64 {
        snapshot
            .read(move |c| {
                Ok(c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
            })
            .await
            .expect("count")
    }

    /// Inserts delivery `n` (with one attempt row) of event `evt_n`, created at `at` ms.
    async fn delivery(snapshot: &Snapshot, n: i64, status: &'static str, at: i64) {
        snapshot
            .write_with(move |c| {
                c.execute(
                    "INSERT INTO events (event_id, app_id, event, channel, body, created_at)
                     VALUES (?1, 'app', 'otp.created', 'otp', '{}', ?2)",
                    params![format!("evt_{n}"), at],
                )?;
                c.execute(
                    "INSERT INTO deliveries (delivery_id, app_id, event_id, kind, url,
                     report_secret, status, attempts, series_start, created_at, updated_at)
                     VALUES (?1, 'app', ?2, 'webhook', 'https://example.com/', 0, ?3, 1, ?4, ?4, ?4)",
                    params![format!("dlv_{n}"), format!("evt_{n}"), status, at],
                )?;
                c.execute(
                    "INSERT INTO delivery_attempts (delivery_id, attempt, at, duration_ms)
                     VALUES (?1, 1, ?2, 3)",
                    params![format!("dlv_{n}"), at],
                )?;
                Ok(())
            })
            .await
            .expect("insert delivery");
    }

    fn config(batch_rows: usize) -> RetentionConfig {
        RetentionConfig {
            delivery_log_days: 1,
            messages_days: 1,
            finished_flakes_hours: 24,
            batch_rows,
            ..RetentionConfig::default()
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("in range")
    }

    #[actix_rt::test]
    async fn old_finished_deliveries_go_pending_ones_stay_and_go_once_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = open(dir.path()).await;
        let now = 100 * DAY_MS;
        delivery(&snap, 1, "pending", now - 10 * DAY_MS).await;
        for n in 2..=10 {
            delivery(
                &snap,
                n,
                if n % 2 == 0 { "succeeded" } else { "failed" },
                now - 5 * DAY_MS,
            )
            .await;
        }
        // Young: created after the horizon, kept whatever its status.
        delivery(&snap, 11, "succeeded", now - 1_000).await;
        let mut pruner = Pruner::default();
        // Three rows a step: the round takes several steps and still finishes.
        let p = pruner
            .round(&snap, &config(3), at(now))
            .await
            .expect("round");
        assert_eq!(p.deliveries, 9);
        assert_eq!(p.events, 9, "the events of pruned deliveries go too");
        assert_eq!(count(&snap, "deliveries").await, 2);
        assert_eq!(count(&snap, "delivery_attempts").await, 2);
        assert_eq!(count(&snap, "events").await, 2);

        // The pending delivery finishes: the next round comes back for it.
        sql(
            &snap,
            "UPDATE deliveries SET status = 'failed' WHERE delivery_id = 'dlv_1'",
        )
        .await;
        let p = pruner
            .round(&snap, &config(3), at(now))
            .await
            .expect("round");
        assert_eq!((p.deliveries, p.events), (1, 1));
        let left: String = snap
            .read(|c| Ok(c.query_row("SELECT delivery_id FROM deliveries", [], |r| r.get(0))?))
            .await
            .expect("read");
        assert_eq!(left, "dlv_11");
        assert_eq!(count(&snap, "delivery_attempts").await, 1);
        snap.shutdown().await;
    }

    #[actix_rt::test]
    async fn an_event_another_delivery_still_needs_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = open(dir.path()).await;
        let now = 100 * DAY_MS;
        delivery(&snap, 1, "succeeded", now - 5 * DAY_MS).await;
        // A manual retry's delivery of the same event, still pending.
        sql(
            &snap,
            "INSERT INTO deliveries (delivery_id, app_id, event_id, kind, url, report_secret,
             status, attempts, series_start, created_at, updated_at)
             VALUES ('dlv_retry', 'app', 'evt_1', 'webhook', 'https://example.com/', 0,
             'pending', 0, 0, 8553600000, 8553600000)",
        )
        .await;
        let p = Pruner::default()
            .round(&snap, &config(100), at(now))
            .await
            .expect("round");
        assert_eq!((p.deliveries, p.events), (1, 0));
        assert_eq!(count(&snap, "events").await, 1);
        snap.shutdown().await;
    }

    #[actix_rt::test]
    async fn messages_go_unless_queued_and_flakes_go_only_when_finished_and_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = open(dir.path()).await;
        let now = 100 * DAY_MS;
        snap.write_with(move |c| {
            for (id, status, created) in [
                ("m1", "delivered", now - 5 * DAY_MS),
                ("m2", "queued", now - 5 * DAY_MS),
                ("m3", "failed", now - 5 * DAY_MS),
                ("m4", "sent", now - 1_000),
            ] {
                c.execute(
                    "INSERT INTO messages (message_id, app_id, channel, recipient, purpose, status,
                     attempts, created_at, updated_at) VALUES (?1, 'app', 'sms', '255712345678',
                     'otp', ?2, 1, ?3, ?3)",
                    params![id, status, created],
                )?;
            }
            for (phone, status, expires, updated) in [
                // Verified two days ago: goes.
                ("1", Some("verified"), now - 2 * DAY_MS, now - 2 * DAY_MS),
                // Pending but expired long ago: goes.
                ("2", Some("pending"), now - 2 * DAY_MS, now - 2 * DAY_MS),
                // Pending and not expired (a long expiry): stays.
                ("3", Some("pending"), now + 1_000, now - 2 * DAY_MS),
                // Failed an hour ago: its send windows still count, stays.
                ("4", Some("failed"), now - 3_600_000, now - 3_600_000),
                // Only rate-limit state, untouched for two days: goes.
                ("5", None, now - 2 * DAY_MS, now - 2 * DAY_MS),
            ] {
                c.execute(
                    "INSERT INTO otp_state (app_id, phone, status, expires_at, sends, updated_at)
                     VALUES ('app', ?1, ?2, ?3, '', ?4)",
                    params![phone, status, expires, updated],
                )?;
            }
            Ok(())
        })
        .await
        .expect("insert");
        let p = Pruner::default()
            .round(&snap, &config(2), at(now))
            .await
            .expect("round");
        assert_eq!((p.messages, p.flakes), (2, 3));
        let phones: Vec<String> = snap
            .read(|c| {
                let mut s = c.prepare("SELECT phone FROM otp_state ORDER BY phone")?;
                let rows = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .expect("read");
        assert_eq!(phones, ["3", "4"]);
        assert_eq!(count(&snap, "messages").await, 2);
        snap.shutdown().await;
    }

    #[actix_rt::test]
    async fn zero_keeps_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = open(dir.path()).await;
        delivery(&snap, 1, "succeeded", 0).await;
        let keep = RetentionConfig {
            delivery_log_days: 0,
            messages_days: 0,
            finished_flakes_hours: 0,
            ..RetentionConfig::default()
        };
        let p = Pruner::default()
            .round(&snap, &keep, at(100 * DAY_MS))
            .await
            .expect("round");
        assert_eq!(p, Pruned::default());
        assert_eq!(count(&snap, "deliveries").await, 1);
        snap.shutdown().await;
    }
}
