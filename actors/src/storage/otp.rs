//! OTP state: the `otp_state` row behind each OTP actor, and the recent OTP sends
//! that rebuild the app-wide per-minute window at start.
//!
//! Written by [`Change::Otp`](super::Change::Otp) in the writer.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{parse_uuid, uuid_text, StorageError};
use crate::clock::{from_millis, to_millis};
use crate::message::Channel;
use crate::otp::{CallbackTarget, Flake, FlakeStatus, OtpKey, OtpRecord};
use crate::secrets::Digest32;

/// Loads one OTP actor's snapshot (an empty record when none exists).
pub fn load_otp(conn: &Connection, key: &OtpKey) -> Result<OtpRecord, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT flake_id, code_hash, status, attempts, max_attempts, delivery_method, message_id,
         callback_url, callback_secret, created_at, expires_at, finished_at, sends
         FROM otp_state WHERE app_id = ?1 AND phone = ?2",
    )?;
    let row = stmt
        .query_row(params![uuid_text(&key.app_id), key.phone.as_str()], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<u32>>(3)?,
                r.get::<_, Option<u32>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<i64>>(9)?,
                r.get::<_, Option<i64>>(10)?,
                r.get::<_, Option<i64>>(11)?,
                r.get::<_, String>(12)?,
            ))
        })
        .optional()?;
    let mut rec = OtpRecord::new(key.clone());
    let Some((
        flake_id,
        hash,
        status,
        attempts,
        max,
        method,
        message_id,
        cb_url,
        cb_secret,
        created,
        expires,
        finished,
        sends,
    )) = row
    else {
        return Ok(rec);
    };
    rec.sends = sends
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|e| StorageError::Corrupt(format!("sends: {e}")))
        })
        .collect::<Result<VecDeque<_>, _>>()?;
    if let (Some(flake_id), Some(hash), Some(status)) = (flake_id, hash, status) {
        let code_hash: Digest32 = hash
            .try_into()
            .map_err(|_| StorageError::Corrupt("code_hash is not 32 bytes".into()))?;
        rec.flake = Some(Flake {
            flake_id: parse_uuid(&flake_id)?,
            code_hash,
            status: FlakeStatus::parse(&status)
                .ok_or_else(|| StorageError::Corrupt(format!("status {status:?}")))?,
            attempts: attempts.unwrap_or(0),
            max_attempts: max.unwrap_or(3),
            delivery_method: method
                .as_deref()
                .unwrap_or("sms")
                .parse::<Channel>()
                .map_err(StorageError::Corrupt)?,
            message_id: message_id.as_deref().map(parse_uuid).transpose()?,
            callback: cb_url.map(|url| {
                Box::new(CallbackTarget {
                    url,
                    secret: cb_secret,
                })
            }),
            created_at: from_millis(created.unwrap_or(0)),
            expires_at: from_millis(expires.unwrap_or(0)),
            finished_at: finished.map(from_millis),
        });
    }
    Ok(rec)
}

/// OTP sends per app since `since` (rebuilds the app-wide per-minute window at start).
pub fn recent_otp_sends(
    conn: &Connection,
    since: DateTime<Utc>,
) -> Result<Vec<(Uuid, i64)>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT app_id, created_at FROM messages WHERE purpose = 'otp' AND created_at >= ?1 ORDER BY created_at",
    )?;
    let rows = stmt.query_map(params![to_millis(since)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (app, at) = row?;
        out.push((parse_uuid(&app)?, at));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Pepper;
    use crate::storage::tests::{config, key};
    use crate::storage::{Change, Snapshot};

    #[tokio::test]
    async fn a_written_record_reads_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        let mut rec = OtpRecord::new(key());
        rec.sends.extend([1, 2, 3]);
        let now = from_millis(1_700_000_000_000);
        rec.issue(
            now,
            &Pepper::new(b"0123456789abcdef"),
            "123456",
            5,
            3,
            Channel::Whatsapp,
            Some(Uuid::new_v4()),
            Some(CallbackTarget {
                url: "https://example.com/cb".into(),
                secret: Some("s".into()),
            }),
        );
        snap.write(vec![Change::Otp(rec.clone())])
            .committed()
            .await
            .unwrap();
        let k = rec.key.clone();
        let back = snap.read(move |c| load_otp(c, &k)).await.unwrap();
        assert_eq!(back, rec);
    }
}
