//! The schema, as an ordered list of migrations keyed on `PRAGMA user_version`.
//!
//! [`MIGRATIONS`]`[n]` takes a database from version `n` to `n + 1`. Each runs in
//! its own `BEGIN IMMEDIATE` transaction that also sets `user_version`, so a
//! migration either lands whole or not at all, and a second process opening the
//! same file waits and then finds the work done. A new database runs them all; an
//! older one runs only what it lacks; one at [`SCHEMA_VERSION`] runs nothing.
//!
//! | version | first written by | what it adds |
//! |---|---|---|
//! | 1 | 8e8cb5d | meta, apps, api_keys, otp_state, messages, idempotency |
//! | 2 | 55a498f | webhooks, events, deliveries, delivery_attempts |
//! | 3 | aeddb01 | the `report_url`, `report_type`, `report_secret` columns of messages |
//! | 4 | f9790ca | retired: see [`RETIRED_V4`] |
//! | 5 | the message-history change (issue 10) | the `sent_at`, `delivered_at`, `read_at`, `failed_at` columns of messages |
//! | 6 | the compact send times (issue 7) | no DDL: `otp_state.sends` holds the compact binary form of [`encode_sends`](super::otp::encode_sends); existing rows are rewritten |
//!
//! Versions 1 to 3 were written by a `SCHEMA` constant of `CREATE ... IF NOT EXISTS`
//! statements ending in `PRAGMA user_version = N`; version 3 added the report
//! columns to `CREATE TABLE messages` (for new files) and an `ALTER TABLE` step run
//! at every open (for files from 1 and 2). The steps below are those same
//! statements, so a file upgraded here matches one the old code made; the frozen
//! `fixtures/schema_v*.sql` and the tests at the bottom hold them to it.
//!
//! To change the schema: append a migration (never edit a landed one) taking the
//! current version to the next, and write its test from a database of the previous
//! version (a frozen `fixtures/schema_v*.sql` of it). Version 4 is taken (see
//! [`RETIRED_V4`]): version 5 follows 3 directly.

use rusqlite::Connection;

use super::StorageError;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].to;

/// Version 4 existed briefly in main's history (f9790ca to ad628a4, never in a
/// release): version 3 plus a `deliveries(event_id)` index for retention. It was
/// dropped (1b009ed) because it cost 12 % of webhook deliveries per second, and the
/// code of that time went back to writing `user_version = 3`, leaving the index in
/// place. A file at 4 is therefore exactly "3 plus that index", and someone who ran
/// such a build expects it to open: it is brought back to 3 by dropping the index
/// (which only slowed writes) rather than refused as "newer". That is why the
/// migration after 3 is version 5, never 4.
const RETIRED_V4: i64 = 4;

/// One step of the schema's history.
struct Migration {
    /// The version this step applies to.
    from: i64,
    /// The version this step produces.
    to: i64,
    /// What it adds, for the log line.
    adds: &'static str,
    /// The step itself, run inside the migration's transaction.
    apply: fn(&Connection) -> Result<(), StorageError>,
}

/// Every migration, oldest first; each starts where the one before ended, except
/// that 3 goes to 5 (see [`RETIRED_V4`], whose file is first taken back to 3).
const MIGRATIONS: [Migration; 5] = [
    Migration {
        from: 0,
        to: 1,
        adds: "meta, apps, api_keys, otp_state, messages, idempotency",
        apply: |conn| Ok(conn.execute_batch(V1)?),
    },
    Migration {
        from: 1,
        to: 2,
        adds: "webhooks, events, deliveries, delivery_attempts",
        apply: |conn| Ok(conn.execute_batch(V2)?),
    },
    Migration {
        from: 2,
        to: 3,
        adds: "messages report_url, report_type, report_secret",
        apply: add_report_columns,
    },
    Migration {
        from: 3,
        to: 5,
        adds: "messages sent_at, delivered_at, read_at, failed_at",
        apply: add_status_times,
    },
    Migration {
        from: 5,
        to: 6,
        adds: "otp_state send times in the compact form",
        apply: compact_sends,
    },
];

// Version 4 is neither produced by a migration nor current: a file at 4 is the
// retired one.
const _: () = {
    let mut i = 0;
    while i < MIGRATIONS.len() {
        assert!(MIGRATIONS[i].to != RETIRED_V4, "version 4 is retired");
        i += 1;
    }
};

/// Version 1 (8e8cb5d): apps and keys, OTP state, messages, idempotency.
const V1: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY, app_key TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    settings TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, key_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS api_keys_app ON api_keys(app_id);
CREATE TABLE IF NOT EXISTS otp_state (
    app_id TEXT NOT NULL, phone TEXT NOT NULL,
    flake_id TEXT, code_hash BLOB, status TEXT, attempts INTEGER, max_attempts INTEGER,
    delivery_method TEXT, message_id TEXT, callback_url TEXT, callback_secret TEXT,
    created_at INTEGER, expires_at INTEGER, finished_at INTEGER,
    sends TEXT NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, phone)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, channel TEXT NOT NULL,
    recipient TEXT NOT NULL, body TEXT, sender_id TEXT, purpose TEXT NOT NULL,
    status TEXT NOT NULL, error_code TEXT, error_message TEXT, provider_message_id TEXT,
    attempts INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS messages_queued ON messages(status) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS messages_provider_id ON messages(provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_recent ON messages(app_id, purpose, created_at);
CREATE TABLE IF NOT EXISTS idempotency (
    app_id TEXT NOT NULL, key TEXT NOT NULL, request_hash BLOB NOT NULL,
    status INTEGER NOT NULL, body BLOB NOT NULL, created_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency(created_at);
"#;

/// Version 2 (55a498f): webhooks, the event outbox, deliveries and their attempts.
const V2: &str = r#"
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, service_type TEXT NOT NULL,
    url TEXT NOT NULL, events TEXT NOT NULL, status TEXT NOT NULL, description TEXT,
    secret TEXT NOT NULL, previous_secret TEXT, previous_secret_until INTEGER,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    UNIQUE (app_id, service_type));
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, event TEXT NOT NULL, channel TEXT NOT NULL,
    body TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL,
    webhook_id TEXT, url TEXT NOT NULL, secret TEXT, report_secret INTEGER NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL, series_start INTEGER NOT NULL,
    last_status_code INTEGER, last_error TEXT, next_attempt_at INTEGER,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_app ON deliveries(app_id, created_at);
CREATE INDEX IF NOT EXISTS deliveries_webhook ON deliveries(webhook_id, created_at);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(status) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS delivery_attempts (
    delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL, at INTEGER NOT NULL,
    status_code INTEGER, error TEXT, duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)) WITHOUT ROWID;
"#;

/// The columns version 3 (aeddb01) added to `messages`, in their order.
const REPORT_COLUMNS: [&str; 3] = ["report_url", "report_type", "report_secret"];

/// Version 3: a message's delivery-report target. Adds only the columns that are
/// missing, so it also finishes a file the old code left half-upgraded (below).
fn add_report_columns(conn: &Connection) -> Result<(), StorageError> {
    let columns = message_columns(conn)?;
    for column in REPORT_COLUMNS {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {column} TEXT"))?;
        }
    }
    Ok(())
}

/// The status-time columns version 5 added to `messages`, with the status each
/// records.
const STATUS_TIME_COLUMNS: [(&str, &str); 4] = [
    ("sent_at", "sent"),
    ("delivered_at", "delivered"),
    ("read_at", "read"),
    ("failed_at", "failed"),
];

/// Version 5: when a message reached each status (its history). Finishes a
/// version-3 file the unversioned code left without report columns first.
///
/// A message stored before this version keeps the one time it is known to have:
/// that of its current status, which its `updated_at` recorded; the statuses it
/// passed through on the way have no time and are left out of its history.
fn add_status_times(conn: &Connection) -> Result<(), StorageError> {
    add_report_columns(conn)?;
    for (column, status) in STATUS_TIME_COLUMNS {
        conn.execute_batch(&format!(
            "ALTER TABLE messages ADD COLUMN {column} INTEGER;
             UPDATE messages SET {column} = updated_at WHERE status = '{status}';"
        ))?;
    }
    Ok(())
}

/// Rows [`compact_sends`] rewrites per statement page.
const COMPACT_SENDS_PAGE: i64 = 1_000;

/// Version 6: rewrites every `otp_state.sends` still in the text form of versions 1–5
/// into the compact form, in key order a page at a time (one pass over the table,
/// however large). The declared type stays `TEXT`: SQLite keeps a blob in a `TEXT`
/// column as it is, and changing the declaration would mean rebuilding the table.
/// An otpd from before version 6 refuses the file (it is newer than it knows), so
/// nothing reads the new form as text. A row whose text does not parse is left as it
/// is, with a warning.
fn compact_sends(conn: &Connection) -> Result<(), StorageError> {
    let mut select = conn.prepare(
        "SELECT app_id, phone, sends FROM otp_state WHERE (app_id, phone) > (?1, ?2)
         ORDER BY app_id, phone LIMIT ?3",
    )?;
    let mut update =
        conn.prepare("UPDATE otp_state SET sends = ?3 WHERE app_id = ?1 AND phone = ?2")?;
    let (mut app, mut phone) = (String::new(), String::new());
    loop {
        let rows: Vec<(String, String, rusqlite::types::Value)> = select
            .query_map(rusqlite::params![app, phone, COMPACT_SENDS_PAGE], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        for (row_app, row_phone, sends) in &rows {
            if let rusqlite::types::Value::Text(_) = sends {
                match super::otp::decode_sends(sends.into()) {
                    Ok(times) => {
                        let compact = super::otp::encode_sends(&times);
                        update.execute(rusqlite::params![row_app, row_phone, compact])?;
                    }
                    // Left as it was: one damaged row must not stop the daemon from
                    // starting. Its actor refuses to load it, as before.
                    Err(e) => tracing::warn!(error = %e, app_id = %row_app,
                        "otp_state row with unreadable send times left in the text form"),
                }
            }
        }
        let Some((last_app, last_phone, _)) = rows.into_iter().next_back() else {
            return Ok(());
        };
        (app, phone) = (last_app, last_phone);
    }
}

fn message_columns(conn: &Connection) -> Result<Vec<String>, StorageError> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('messages')")?;
    let columns = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(columns)
}

/// `PRAGMA user_version` of the open database.
pub(super) fn user_version(conn: &Connection) -> Result<i64, StorageError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the database up to [`SCHEMA_VERSION`], or refuses it.
///
/// A file at the current version is only read, never written. One at 3 without
/// its report columns was left by the unversioned code, which set
/// `user_version = 3` before adding the columns, each statement committing alone:
/// a crash in between left a version-3 file without them, which that code finished
/// at its next open; the step to 5 finishes it too.
pub(super) fn migrate(conn: &Connection) -> Result<(), StorageError> {
    let found = user_version(conn)?;
    refuse_unknown(found)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    // One transaction per step; each re-reads the version under the write lock,
    // since another process may have migrated the file since the read above.
    let mut now = found;
    while let Some(to) = in_transaction(conn, step)? {
        now = to;
    }
    if found == 0 {
        tracing::debug!(version = now, "database schema created");
    } else if now != found {
        tracing::info!(from = found, to = now, "database schema migrated");
    }
    Ok(())
}

/// Applies the next step, if any: `Some(version it reached)` when one ran.
fn step(conn: &Connection) -> Result<Option<i64>, StorageError> {
    let from = user_version(conn)?;
    refuse_unknown(from)?;
    if from == RETIRED_V4 {
        tracing::debug!(from, to = 3, "dropping the retired version 4's index");
        conn.execute_batch("DROP INDEX IF EXISTS deliveries_event")?;
        set_user_version(conn, 3)?;
        return Ok(Some(3));
    }
    if from == SCHEMA_VERSION {
        return Ok(None);
    }
    let migration = MIGRATIONS
        .iter()
        .find(|m| m.from == from)
        .ok_or_else(|| StorageError::Corrupt(format!("no migration from user_version {from}")))?;
    tracing::debug!(
        from,
        to = migration.to,
        adds = migration.adds,
        "migrating the database schema"
    );
    (migration.apply)(conn)?;
    set_user_version(conn, migration.to)?;
    Ok(Some(migration.to))
}

/// Refuses versions this build cannot read: newer than it knows, or negative (not
/// written by otpd).
pub(super) fn refuse_unknown(found: i64) -> Result<(), StorageError> {
    if found > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StorageError::Corrupt(format!("user_version {found}")));
    }
    Ok(())
}

fn set_user_version(conn: &Connection, version: i64) -> Result<(), StorageError> {
    Ok(conn.pragma_update(None, "user_version", version)?)
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: committed if it succeeds, rolled
/// back (with `user_version` unchanged) if it fails.
fn in_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
