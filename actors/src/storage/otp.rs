//! OTP state: the `otp_state` row behind each OTP actor, and the recent OTP sends
//! that rebuild the app-wide per-minute window at start.
//!
//! Written by [`Change::Otp`](super::Change::Otp) in the writer.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use integer_encoding::VarInt;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{parse_uuid, StorageError, UuidText};
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
    let (app_id, phone) = (UuidText::new(&key.app_id), key.phone.digits());
    let row = stmt
        .query_row(params![app_id, &*phone], |r| {
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
                r.get::<_, Value>(12)?,
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
    rec.sends = decode_sends((&sends).into())?;
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

/// The first byte of the compact form of `otp_state.sends` (schema version 6).
const SENDS_FORMAT: u8 = 1;

/// Encodes a record's send times (ms since the epoch, oldest first) for the
/// `otp_state.sends` column: a format byte, then each time as the zigzag varint of
/// its difference from the one before (the first from 0).
///
/// Sends a second apart take 2 bytes each and a minute apart 3, against 14 digits
/// and a comma in the text form that versions 1–5 wrote. The column is rewritten
/// with every snapshot of the actor, so its size is paid at every request and
/// verify (docs/benchmarks-passes.md, "Third pass"). A clock that steps back gives a negative
/// difference, which zigzag keeps small too.
pub(crate) fn encode_sends(sends: &VecDeque<i64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 3 * sends.len() + 6);
    out.push(SENDS_FORMAT);
    let mut buf = [0u8; 10];
    let mut prev = 0i64;
    for &at in sends {
        let n = at.wrapping_sub(prev).encode_var(&mut buf);
        out.extend_from_slice(&buf[..n]);
        prev = at;
    }
    out
}

/// Decodes `otp_state.sends`: the compact form of [`encode_sends`], or the
/// comma-separated text of versions 1–5 (the migration to 6 rewrites those rows, and
/// the text form is still read should one remain).
pub(crate) fn decode_sends(value: ValueRef<'_>) -> Result<VecDeque<i64>, StorageError> {
    match value {
        ValueRef::Blob(bytes) => {
            let Some((&SENDS_FORMAT, mut rest)) = bytes.split_first() else {
                return Err(StorageError::Corrupt(format!(
                    "sends: unknown format {:?}",
                    bytes.first()
                )));
            };
            let mut out = VecDeque::with_capacity(rest.len() / 2);
            let mut prev = 0i64;
            while !rest.is_empty() {
                let (delta, used) = i64::decode_var(rest)
                    .ok_or_else(|| StorageError::Corrupt("sends: truncated varint".into()))?;
                prev = prev.wrapping_add(delta);
                out.push_back(prev);
                rest = &rest[used..];
            }
            Ok(out)
        }
        ValueRef::Text(text) => std::str::from_utf8(text)
            .map_err(|e| StorageError::Corrupt(format!("sends: {e}")))?
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|e| StorageError::Corrupt(format!("sends: {e}")))
            })
            .collect(),
        other => Err(StorageError::Corrupt(format!(
            "sends: a {} value",
            other.data_type()
        ))),
    }
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

    fn round_trip(sends: &[i64]) -> VecDeque<i64> {
        let sends: VecDeque<i64> = sends.iter().copied().collect();
        let bytes = encode_sends(&sends);
        let back = decode_sends(ValueRef::Blob(&bytes)).unwrap();
        assert_eq!(back, sends);
        back
    }

    #[test]
    fn send_times_round_trip_in_the_compact_form() {
        round_trip(&[]);
        round_trip(&[1_700_000_000_000]);
        round_trip(&[1_700_000_000_000, 1_700_000_000_412, 1_700_000_060_000]);
        // A clock that stepped back, and the extremes of i64.
        round_trip(&[1_700_000_000_000, 1_699_999_999_000, 5]);
        round_trip(&[i64::MIN, i64::MAX, 0, -1]);
    }

    #[test]
    fn the_compact_form_is_a_few_bytes_per_send() {
        let t0 = 1_700_000_000_000;
        let second_apart: VecDeque<i64> = (0..24).map(|i| t0 + i * 1_000).collect();
        let text_len = second_apart
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",")
            .len();
        let compact = encode_sends(&second_apart);
        // Format byte, the first time (6 bytes), then 2 bytes per second-apart send.
        assert_eq!(compact.len(), 1 + 6 + 23 * 2);
        assert!(
            compact.len() * 6 < text_len,
            "{} vs {text_len}",
            compact.len()
        );
        assert_eq!(encode_sends(&VecDeque::new()), [SENDS_FORMAT]);
    }

    #[test]
    fn the_text_form_of_older_versions_still_reads() {
        let text = decode_sends(ValueRef::Text(b"1700000000000,1700000000412")).unwrap();
        assert_eq!(text, [1_700_000_000_000, 1_700_000_000_412]);
        assert!(decode_sends(ValueRef::Text(b"")).unwrap().is_empty());
    }

    #[test]
    fn damaged_send_times_are_refused_not_guessed() {
        let corrupt = |v: ValueRef<'_>| {
            assert!(
                matches!(decode_sends(v), Err(StorageError::Corrupt(_))),
                "{v:?}"
            )
        };
        corrupt(ValueRef::Blob(&[]));
        corrupt(ValueRef::Blob(&[2, 0]));
        corrupt(ValueRef::Blob(&[SENDS_FORMAT, 0x80]));
        corrupt(ValueRef::Text(b"12,x"));
        corrupt(ValueRef::Integer(5));
        corrupt(ValueRef::Null);
    }
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
