//! Apps and their hashed API keys, server-wide meta values (the generated pepper),
//! and stored `Idempotency-Key` responses: what start-up and authentication read.
//!
//! Written by [`Change::App`](super::Change::App), [`Change::ApiKey`](super::Change::ApiKey),
//! [`Change::Meta`](super::Change::Meta) and [`Change::Idempotency`](super::Change::Idempotency)
//! in the writer.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use uuid::Uuid;

use super::{parse_uuid, schema, IdempotencyRecord, StorageError, UuidText};
use crate::app::{App, AppSettings};
use crate::clock::from_millis;
use crate::secrets::Digest32;

/// Every app in the database at `path`, read through one read-only connection of
/// its own: no writer, no migration, no checkpoint, so it never writes and never
/// disturbs a running daemon (it works on a `0444` file too). A file written by a
/// newer otpd is refused ([`StorageError::SchemaTooNew`]) rather than misread.
pub fn read_apps(path: &Path) -> Result<Vec<App>, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StorageError::Sqlite(format!("{}: {e}", path.display())))?;
    // A daemon's commit may hold the lock for a moment.
    conn.busy_timeout(Duration::from_secs(5))?;
    schema::refuse_unknown(schema::user_version(&conn)?)?;
    load_apps(&conn)
}

/// Every app with its settings.
pub fn load_apps(conn: &Connection) -> Result<Vec<App>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT app_id, app_key, name, settings, created_at FROM apps ORDER BY created_at",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, app_key, name, settings, created) = row?;
        let settings: AppSettings = serde_json::from_str(&settings)
            .map_err(|e| StorageError::Corrupt(format!("app settings: {e}")))?;
        out.push(App {
            app_id: parse_uuid(&id)?,
            app_key,
            name,
            settings,
            created_at: from_millis(created),
        });
    }
    Ok(out)
}

/// Every API key hash with its key id and app.
pub fn load_api_keys(conn: &Connection) -> Result<Vec<(Digest32, Uuid, Uuid)>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT key_hash, key_id, app_id FROM api_keys")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hash, key_id, app_id) = row?;
        let hash: Digest32 = hash
            .try_into()
            .map_err(|_| StorageError::Corrupt("key_hash".into()))?;
        out.push((hash, parse_uuid(&key_id)?, parse_uuid(&app_id)?));
    }
    Ok(out)
}

/// Whether an API key id exists for an app.
pub fn api_key_exists(
    conn: &Connection,
    app_id: &Uuid,
    key_id: &Uuid,
) -> Result<bool, StorageError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM api_keys WHERE app_id = ?1 AND key_id = ?2")?
        .query_row(params![UuidText::new(app_id), UuidText::new(key_id)], |r| {
            r.get(0)
        })?;
    Ok(n > 0)
}

/// A server-wide value.
pub fn load_meta(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()?)
}

/// A stored idempotent response.
pub fn load_idempotency(
    conn: &Connection,
    app_id: &Uuid,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StorageError> {
    let row = conn
        .prepare_cached("SELECT request_hash, status, body, created_at FROM idempotency WHERE app_id = ?1 AND key = ?2")?
        .query_row(params![UuidText::new(app_id), key], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u16>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, i64>(3)?))
        })
        .optional()?;
    let Some((hash, status, body, created)) = row else {
        return Ok(None);
    };
    let request_hash: Digest32 = hash
        .try_into()
        .map_err(|_| StorageError::Corrupt("request_hash".into()))?;
    Ok(Some(IdempotencyRecord {
        app_id: *app_id,
        key: key.to_string(),
        request_hash,
        status,
        body,
        created_at: from_millis(created),
    }))
}
