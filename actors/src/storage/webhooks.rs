//! Registered webhooks, loaded at start into the in-memory directory.
//!
//! Written by [`Change::Webhook`](super::Change::Webhook) and
//! [`Change::DeleteWebhook`](super::Change::DeleteWebhook) in the writer.

use rusqlite::Connection;

use super::{parse_uuid, StorageError};
use crate::clock::from_millis;
use crate::events::ServiceType;
use crate::webhooks::{Webhook, WebhookStatus};

/// Every webhook.
pub fn load_webhooks(conn: &Connection) -> Result<Vec<Webhook>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT webhook_id, app_id, service_type, url, events, status, description, secret,
         previous_secret, previous_secret_until, created_at, updated_at FROM webhooks",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<i64>>(9)?,
            r.get::<_, i64>(10)?,
            r.get::<_, i64>(11)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            id,
            app,
            st,
            url,
            events,
            status,
            description,
            secret,
            prev,
            prev_until,
            created,
            updated,
        ) = row?;
        out.push(Webhook {
            id,
            app_id: parse_uuid(&app)?,
            service_type: st.parse::<ServiceType>().map_err(StorageError::Corrupt)?,
            url,
            events: serde_json::from_str(&events)
                .map_err(|e| StorageError::Corrupt(format!("events: {e}")))?,
            status: WebhookStatus::parse(&status)
                .ok_or_else(|| StorageError::Corrupt(format!("status {status:?}")))?,
            description,
            secret,
            previous_secret: prev.zip(prev_until.map(from_millis)),
            created_at: from_millis(created),
            updated_at: from_millis(updated),
        });
    }
    Ok(out)
}
