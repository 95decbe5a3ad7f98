//! The storage writer's commits as otpd makes them over HTTP, with nothing of otpd
//! around them, for `docs/benchmarks-passes.md` ("Sixth pass"): what a commit costs by its
//! size, and what other shapes of the `messages` table would save.
//!
//! ```text
//! cargo run --release -p otpd-actors --example commit_shapes -- [VARIANT] [OPS_PER_COMMIT]
//! cargo run --release -p otpd-actors --example commit_shapes -- current 10
//! ```
//!
//! A fresh WAL file with the frozen version-6 schema (`src/storage/fixtures`), 2 KiB
//! pages, `synchronous = NORMAL`, the writer's page cache and prepared statements,
//! 20,000 phones in `otp_state`. The ops come in the cycle's rotation: a request
//! (the `otp_state` row and the `queued` message), the provider's receipt (the
//! message's `UPDATE` to `sent`; its upsert before the seventh pass), a verify (the `otp_state` row), with the writer's
//! own statements, `OPS_PER_COMMIT` to a commit (over HTTP ~11, in process ~300).
//! Every 64 commits a passive checkpoint copies the WAL and lets it start over; it
//! is timed apart, and its frame count gives the WAL frames per commit.
//!
//! `VARIANT` reshapes `messages`: `current`; `receipt-upsert` (the current table,
//! the receipt written with the message's upsert as before the seventh pass); `blob-ids` (16-byte `message_id` and
//! `app_id`); `blob-without-rowid` (the same, `WITHOUT ROWID`); `blob-no-queued`
//! (that, without the `messages_queued` index); `no-indexes` (the current table
//! without its two secondary indexes). Prints µs per op (commits, not
//! checkpoints), µs per commit, WAL frames per commit, and checkpoint µs per op.

#![allow(clippy::disallowed_methods)] // a benchmark measures real time

mod common;

use std::time::Instant;

use rand::Rng;
use rusqlite::types::Value;
use rusqlite::{params, Connection};

const PHONES: usize = 20_000;
const OPS: usize = 180_000;
const CHECKPOINT_EVERY_COMMITS: u64 = 64;

const SCHEMA: &str = include_str!("../src/storage/fixtures/schema_v6.sql");
const QUEUED_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS messages_queued ON messages(status) WHERE status = 'queued';";
const RECENT_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS messages_recent ON messages(app_id, purpose, created_at);";
const TEXT_KEYS: &str = "message_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, channel";
const BLOB_KEYS: &str = "message_id BLOB PRIMARY KEY, app_id BLOB NOT NULL, channel";
const TABLE_END: &str = "report_url TEXT, report_type TEXT, report_secret TEXT);";
const WITHOUT_ROWID_END: &str =
    "report_url TEXT, report_type TEXT, report_secret TEXT) WITHOUT ROWID;";

const OTP_UPDATE: &str = "UPDATE otp_state SET flake_id = ?3, code_hash = ?4, status = ?5,
    attempts = ?6, max_attempts = ?7, delivery_method = ?8, message_id = ?9, callback_url = ?10,
    callback_secret = ?11, created_at = ?12, expires_at = ?13, finished_at = ?14, sends = ?15,
    updated_at = ?16 WHERE app_id = ?1 AND phone = ?2";
const OTP_INSERT: &str = "INSERT INTO otp_state (app_id, phone, flake_id, code_hash, status,
    attempts, max_attempts, delivery_method, message_id, callback_url, callback_secret,
    created_at, expires_at, finished_at, sends, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
const MESSAGE_UPSERT: &str = "INSERT INTO messages (message_id, app_id, channel, recipient, body,
    sender_id, purpose, status, error_code, error_message, provider_message_id, attempts,
    created_at, updated_at, report_url, report_type, report_secret, sent_at, delivered_at,
    read_at, failed_at)
    VALUES (?1, ?2, 'sms', ?3, NULL, NULL, 'otp', ?4, NULL, NULL, NULL, ?5, ?6, ?6, NULL, NULL,
    NULL, ?7, NULL, NULL, NULL)
    ON CONFLICT(message_id) DO UPDATE SET status = excluded.status,
    error_code = excluded.error_code, error_message = excluded.error_message,
    provider_message_id = excluded.provider_message_id, attempts = excluded.attempts,
    body = excluded.body, updated_at = excluded.updated_at, sent_at = excluded.sent_at,
    delivered_at = excluded.delivered_at, read_at = excluded.read_at,
    failed_at = excluded.failed_at";

/// The receipt as the writer has written it since the seventh pass
/// (`Change::MessageUpdate`): the columns a status change touches, by primary key.
const MESSAGE_STATUS_UPDATE: &str = "UPDATE messages SET status = ?2, error_code = ?3,
    error_message = ?4, provider_message_id = ?5, attempts = ?6, body = ?7, updated_at = ?8,
    sent_at = ?9, delivered_at = ?10, read_at = ?11, failed_at = ?12 WHERE message_id = ?1";

/// The schema with `variant`'s `messages`, and whether its ids are blobs.
fn schema(variant: &str) -> Option<(String, bool)> {
    let base = SCHEMA.replace("PRAGMA user_version = 6;", "");
    Some(match variant {
        "current" | "receipt-upsert" => (base, false),
        "blob-ids" => (base.replace(TEXT_KEYS, BLOB_KEYS), true),
        "blob-without-rowid" => (
            base.replace(TEXT_KEYS, BLOB_KEYS)
                .replace(TABLE_END, WITHOUT_ROWID_END),
            true,
        ),
        "blob-no-queued" => (
            base.replace(TEXT_KEYS, BLOB_KEYS)
                .replace(TABLE_END, WITHOUT_ROWID_END)
                .replace(QUEUED_INDEX, ""),
            true,
        ),
        "no-indexes" => (
            base.replace(QUEUED_INDEX, "").replace(RECENT_INDEX, ""),
            false,
        ),
        _ => return None,
    })
}

fn open(path: &std::path::Path, ddl: &str) -> Connection {
    let conn = common::open_like_the_writer(path);
    conn.query_row("PRAGMA wal_autocheckpoint = 0", [], |_| Ok(()))
        .expect("autocheckpoint");
    conn.execute_batch(ddl).expect("schema");
    conn
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map_or("current", String::as_str);
    let per_commit: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let Some((ddl, blob_ids)) = schema(variant) else {
        eprintln!("unknown variant {variant}: current, receipt-upsert, blob-ids, blob-without-rowid, blob-no-queued, no-indexes");
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = open(&dir.path().join("shapes.sqlite3"), &ddl);
    let app = uuid::Uuid::new_v4();
    let app_text = app.hyphenated().to_string();
    let id = |u: uuid::Uuid| -> Value {
        if blob_ids {
            Value::Blob(u.as_bytes().to_vec())
        } else {
            Value::Text(u.hyphenated().to_string())
        }
    };
    let phones: Vec<String> = (0..PHONES).map(|k| format!("25571{k:07}")).collect();
    // ~24 compact send times, as row 1's phones carry within a run.
    let sends: Vec<u8> = (0..25).collect();
    let hash = [7u8; 32];
    let now = 1_765_000_000_000i64;

    conn.execute_batch("BEGIN").expect("begin");
    for phone in &phones {
        let flake = uuid::Uuid::now_v7().hyphenated().to_string();
        conn.prepare_cached(OTP_INSERT)
            .expect("prepare")
            .execute(params![
                app_text,
                phone,
                flake,
                &hash[..],
                "verified",
                1,
                3,
                "sms",
                None::<String>,
                None::<String>,
                None::<String>,
                now,
                now + 600_000,
                now,
                &sends,
                now
            ])
            .expect("seed");
    }
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("seed commit");

    let mut otp = conn.prepare(OTP_UPDATE).expect("prepare");
    let mut message = conn.prepare(MESSAGE_UPSERT).expect("prepare");
    let mut status_update = conn.prepare(MESSAGE_STATUS_UPDATE).expect("prepare");
    // Every variant but `receipt-upsert` writes the receipt as the writer does now.
    let receipt_as_update = variant != "receipt-upsert";
    // The flake's row, as a request (`finished` none) or a verify writes it.
    let mut write_otp = |phone: usize, message_id: uuid::Uuid, finished: Option<i64>| {
        let flake = uuid::Uuid::now_v7().hyphenated().to_string();
        let (status, attempts) = if finished.is_some() {
            ("verified", 1)
        } else {
            ("pending", 0)
        };
        otp.execute(params![
            app_text,
            phones[phone],
            flake,
            &hash[..],
            status,
            attempts,
            3,
            "sms",
            message_id.hyphenated().to_string(),
            None::<String>,
            None::<String>,
            now,
            now + 600_000,
            finished,
            &sends,
            now
        ])
        .expect("otp_state");
    };
    // The message's row: `queued` at the request, `sent` at the receipt.
    let mut write_message = |phone: usize, message_id: uuid::Uuid, sent_at: Option<i64>| {
        let (status, attempts) = if sent_at.is_some() {
            ("sent", 1)
        } else {
            ("queued", 0)
        };
        if sent_at.is_some() && receipt_as_update {
            let changed = status_update
                .execute(params![
                    id(message_id),
                    status,
                    None::<String>,
                    None::<String>,
                    None::<String>,
                    attempts,
                    None::<String>,
                    now,
                    sent_at,
                    None::<i64>,
                    None::<i64>,
                    None::<i64>
                ])
                .expect("messages");
            assert_eq!(changed, 1, "the receipt's message row exists");
            return;
        }
        message
            .execute(params![
                id(message_id),
                id(app),
                phones[phone],
                status,
                attempts,
                now,
                sent_at
            ])
            .expect("messages");
    };
    let mut rng = rand::thread_rng();
    // Requests whose receipt, and receipts whose verify, are still to come.
    let mut queued: std::collections::VecDeque<(uuid::Uuid, usize)> = Default::default();
    let mut sent: std::collections::VecDeque<(uuid::Uuid, usize)> = Default::default();
    let (mut commits, mut frames, mut checkpoint_secs) = (0u64, 0i64, 0f64);
    let started = Instant::now();
    let mut op = 0;
    while op < OPS {
        conn.execute_batch("BEGIN").expect("begin");
        for _ in 0..per_commit {
            match op % 3 {
                0 => {
                    let phone = rng.gen_range(0..PHONES);
                    let message_id = uuid::Uuid::now_v7();
                    write_otp(phone, message_id, None);
                    write_message(phone, message_id, None);
                    queued.push_back((message_id, phone));
                }
                1 => {
                    if let Some((message_id, phone)) = queued.pop_front() {
                        write_message(phone, message_id, Some(now));
                        sent.push_back((message_id, phone));
                    }
                }
                _ => {
                    if let Some((message_id, phone)) = sent.pop_front() {
                        write_otp(phone, message_id, Some(now));
                    }
                }
            }
            op += 1;
        }
        conn.execute_batch("COMMIT").expect("commit");
        commits += 1;
        if commits % CHECKPOINT_EVERY_COMMITS == 0 {
            let at = Instant::now();
            let log: i64 = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .expect("checkpoint");
            checkpoint_secs += at.elapsed().as_secs_f64();
            frames += log;
        }
    }
    let commit_secs = started.elapsed().as_secs_f64() - checkpoint_secs;
    let counted = (commits / CHECKPOINT_EVERY_COMMITS * CHECKPOINT_EVERY_COMMITS).max(1);
    println!(
        "{variant} at {per_commit} ops per commit: {:.2} µs/op, {:.1} µs/commit, {:.2} WAL frames/commit, checkpoints {:.2} µs/op",
        commit_secs * 1e6 / OPS as f64,
        commit_secs * 1e6 / commits as f64,
        frames as f64 / counted as f64,
        checkpoint_secs * 1e6 / OPS as f64,
    );
}
