//! `Idempotency-Key` (SPEC section 1): a repeated POST returns the first response.
//!
//! The first response is stored durably (keys survive a restart) for 24 hours. A
//! second request with the same key while the first is still running is refused
//! with 409 `conflict` instead of running twice. 5xx answers, 429s and auth failures
//! are not stored: retrying them with the same key should be able to succeed.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use dashmap::DashSet;
use uuid::Uuid;

use crate::error::Error;
use crate::secrets::Digest32;
use crate::storage::{load_idempotency, Change, IdempotencyRecord, Snapshot};

/// How long a key is remembered.
pub const RETENTION_HOURS: i64 = 24;

/// The result of starting an idempotent request.
#[derive(Debug)]
pub enum Begin {
    /// First use of the key: run the request, then [`IdempotencyGuard::finish`].
    Fresh(IdempotencyGuard),
    /// The key was used before for this same request: answer with this.
    Replay {
        /// Status of the first response.
        status: u16,
        /// Body of the first response.
        body: Vec<u8>,
    },
}

/// Holds a key while its first request runs; dropping it without `finish` frees the key.
#[derive(Debug)]
pub struct IdempotencyGuard {
    in_flight: Arc<DashSet<(Uuid, String)>>,
    snapshot: Snapshot,
    app_id: Uuid,
    key: String,
    request_hash: Digest32,
}

impl IdempotencyGuard {
    /// Stores the response (when storable) so repeats replay it; returns once durable.
    pub async fn finish(self, status: u16, body: Vec<u8>, now: DateTime<Utc>) -> Result<(), Error> {
        if !storable(status) {
            return Ok(());
        }
        let record = IdempotencyRecord {
            app_id: self.app_id,
            key: self.key.clone(),
            request_hash: self.request_hash,
            status,
            body,
            created_at: now,
        };
        self.snapshot
            .write(vec![Change::Idempotency(record)])
            .committed()
            .await?;
        Ok(())
    }
}

impl Drop for IdempotencyGuard {
    fn drop(&mut self) {
        self.in_flight
            .remove(&(self.app_id, std::mem::take(&mut self.key)));
    }
}

fn storable(status: u16) -> bool {
    status < 500 && !matches!(status, 401 | 403 | 409 | 429)
}

/// Checks the header value: 1–255 printable ASCII.
pub fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(Error::InvalidRequest(
            "Idempotency-Key must be 1–255 printable ASCII characters".into(),
        ));
    }
    Ok(())
}

/// Starts an idempotent request (see [`Begin`]).
pub(crate) async fn begin(
    in_flight: &Arc<DashSet<(Uuid, String)>>,
    snapshot: &Snapshot,
    app_id: Uuid,
    key: &str,
    request_hash: Digest32,
    now: DateTime<Utc>,
) -> Result<Begin, Error> {
    validate_key(key)?;
    if !in_flight.insert((app_id, key.to_string())) {
        return Err(Error::Conflict(
            "a request with this Idempotency-Key is still in progress".into(),
        ));
    }
    let guard = IdempotencyGuard {
        in_flight: in_flight.clone(),
        snapshot: snapshot.clone(),
        app_id,
        key: key.to_string(),
        request_hash,
    };
    let k = key.to_string();
    let stored = snapshot
        .read(move |conn| load_idempotency(conn, &app_id, &k))
        .await?;
    match stored {
        Some(rec) if rec.created_at > now - Duration::hours(RETENTION_HOURS) => {
            if rec.request_hash != request_hash {
                return Err(Error::IdempotencyKeyReused);
            }
            Ok(Begin::Replay {
                status: rec.status,
                body: rec.body,
            })
        }
        _ => Ok(Begin::Fresh(guard)),
    }
}
