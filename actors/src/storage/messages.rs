//! Messages: the loaders behind `GET /v1/messages/{id}`, provider status reports
//! (found by the provider's id), and start-up recovery of queued messages.
//!
//! Written by [`Change::Message`](super::Change::Message) in the writer.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{parse_uuid, StorageError, UuidText};
use crate::clock::from_millis;
use crate::message::{
    MessageRecord, MessageStatus, Purpose, ReportTarget, ReportType, StatusTimes,
};

fn message_from_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<MessageRecord, StorageError>> {
    let id: String = r.get(0)?;
    let app: String = r.get(1)?;
    let channel: String = r.get(2)?;
    let purpose: String = r.get(6)?;
    let status: String = r.get(7)?;
    let build = || -> Result<MessageRecord, StorageError> {
        Ok(MessageRecord {
            message_id: parse_uuid(&id)?,
            app_id: parse_uuid(&app)?,
            channel: channel.parse().map_err(StorageError::Corrupt)?,
            to: r.get(3).map_err(StorageError::from)?,
            body: r.get(4).map_err(StorageError::from)?,
            sender_id: r.get(5).map_err(StorageError::from)?,
            purpose: if purpose == "otp" {
                Purpose::Otp
            } else {
                Purpose::Message
            },
            status: status
                .parse::<MessageStatus>()
                .map_err(StorageError::Corrupt)?,
            error_code: r.get(8).map_err(StorageError::from)?,
            error_message: r.get(9).map_err(StorageError::from)?,
            provider_message_id: r.get(10).map_err(StorageError::from)?,
            attempts: r.get(11).map_err(StorageError::from)?,
            created_at: from_millis(r.get(12).map_err(StorageError::from)?),
            updated_at: from_millis(r.get(13).map_err(StorageError::from)?),
            report: r
                .get::<_, Option<String>>(14)
                .map_err(StorageError::from)?
                .map(|url| ReportTarget {
                    url,
                    report_type: match r.get::<_, Option<String>>(15).ok().flatten().as_deref() {
                        Some("final") => ReportType::Final,
                        _ => ReportType::All,
                    },
                    secret: r.get(16).ok().flatten(),
                }),
            reached: StatusTimes {
                sent_at: time(r, 17)?,
                delivered_at: time(r, 18)?,
                read_at: time(r, 19)?,
                failed_at: time(r, 20)?,
            },
        })
    };
    Ok(build())
}

const MESSAGE_COLUMNS: &str =
    "message_id, app_id, channel, recipient, body, sender_id, purpose, status,
     error_code, error_message, provider_message_id, attempts, created_at, updated_at,
     report_url, report_type, report_secret, sent_at, delivered_at, read_at, failed_at";

/// An optional millisecond timestamp column.
fn time(r: &rusqlite::Row<'_>, idx: usize) -> Result<Option<DateTime<Utc>>, StorageError> {
    Ok(r.get::<_, Option<i64>>(idx)?.map(from_millis))
}

/// Loads one message of an app.
pub fn load_message(
    conn: &Connection,
    app_id: &Uuid,
    message_id: &Uuid,
) -> Result<Option<MessageRecord>, StorageError> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = ?1 AND app_id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let row = stmt
        .query_row(
            params![UuidText::new(message_id), UuidText::new(app_id)],
            message_from_row,
        )
        .optional()?;
    row.transpose()
}

/// The message a provider's id belongs to.
pub fn message_id_by_provider_id(
    conn: &Connection,
    provider_message_id: &str,
) -> Result<Option<Uuid>, StorageError> {
    let id: Option<String> = conn
        .prepare_cached("SELECT message_id FROM messages WHERE provider_message_id = ?1 ORDER BY created_at DESC LIMIT 1")?
        .query_row(params![provider_message_id], |r| r.get(0))
        .optional()?;
    id.as_deref().map(parse_uuid).transpose()
}

/// One message by id, whatever its app (status reports come from the provider).
pub fn load_message_any(
    conn: &Connection,
    message_id: &Uuid,
) -> Result<Option<MessageRecord>, StorageError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let row = stmt
        .query_row(params![UuidText::new(message_id)], message_from_row)
        .optional()?;
    row.transpose()
}

/// Every message still `queued` (start-up recovery resumes them).
pub fn load_queued_messages(conn: &Connection) -> Result<Vec<MessageRecord>, StorageError> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = 'queued' ORDER BY created_at"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], message_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}
