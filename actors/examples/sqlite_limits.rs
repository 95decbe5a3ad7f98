//! The SQLite limits of this machine, for `BENCHMARKS.md`: how fast the bundled
//! SQLite (the same build otpd links) writes rows in large batches with otpd's
//! pragmas, with nothing of otpd around it.
//!
//! ```text
//! cargo run --release -p otpd-actors --example sqlite_limits
//! ```
//!
//! Three shapes, each in transactions of 500 statements on a fresh WAL file with
//! 2 KiB pages, `synchronous = NORMAL` and prepared statements:
//!
//! - `append`: inserts of rows with a time-ordered text key (the `messages` shape:
//!   14 columns and three secondary indexes);
//! - `update`: updates of 20,000 existing rows at random keys (the `otp_state`
//!   shape: a `WITHOUT ROWID` table keyed by (app, phone));
//! - `bare`: inserts of a 3-column row with an integer key and no index, the floor.
//!
//! Prints rows/s and µs per row for each (the median of 5 runs of 100,000 rows).

#![allow(clippy::disallowed_methods)] // a benchmark measures real time

mod common;

use std::time::Instant;

use rand::Rng;
use rusqlite::{params, Connection};

const ROWS: usize = 100_000;
const BATCH: usize = 500;
const RUNS: usize = 5;
const PHONES: usize = 20_000;

fn open(dir: &std::path::Path, name: &str) -> Connection {
    let conn = common::open_like_the_writer(&dir.join(name));
    conn.execute_batch(
        "CREATE TABLE messages (
            message_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, channel TEXT NOT NULL,
            recipient TEXT NOT NULL, body TEXT, sender_id TEXT, purpose TEXT NOT NULL,
            status TEXT NOT NULL, error_code TEXT, error_message TEXT, provider_message_id TEXT,
            attempts INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
         CREATE INDEX messages_queued ON messages(status) WHERE status = 'queued';
         CREATE INDEX messages_provider_id ON messages(provider_message_id)
            WHERE provider_message_id IS NOT NULL;
         CREATE INDEX messages_recent ON messages(app_id, purpose, created_at);
         CREATE TABLE otp_state (app_id TEXT NOT NULL, phone TEXT NOT NULL, attempts INTEGER,
            code_hash BLOB, status TEXT, sends TEXT NOT NULL, updated_at INTEGER NOT NULL,
            PRIMARY KEY (app_id, phone)) WITHOUT ROWID;
         CREATE TABLE bare (id INTEGER PRIMARY KEY, a INTEGER, b TEXT);",
    )
    .expect("schema");
    conn
}

/// Runs `row(i)` for `ROWS` rows in transactions of `BATCH`; returns µs per row.
fn timed(conn: &Connection, mut row: impl FnMut(&Connection, usize)) -> f64 {
    let started = Instant::now();
    for chunk in 0..ROWS / BATCH {
        conn.execute_batch("BEGIN").expect("begin");
        for i in 0..BATCH {
            row(conn, chunk * BATCH + i);
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    started.elapsed().as_secs_f64() * 1e6 / ROWS as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let app = uuid::Uuid::new_v4().to_string();
    let mut results: Vec<(&str, Vec<f64>)> =
        vec![("append", vec![]), ("update", vec![]), ("bare", vec![])];
    for run in 0..RUNS {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(dir.path(), &format!("limits-{run}.sqlite3"));
        let t0 = chrono::Utc::now();
        results[0].1.push(timed(&conn, |c, i| {
            let at = t0 + chrono::Duration::microseconds(i as i64);
            let id = otpd_actors::secrets::ordered_id(at).to_string();
            c.prepare_cached(
                "INSERT INTO messages (message_id, app_id, channel, recipient, body, sender_id,
                 purpose, status, error_code, error_message, provider_message_id, attempts,
                 created_at, updated_at)
                 VALUES (?1, ?2, 'sms', ?3, NULL, NULL, 'otp', 'queued', NULL, NULL, NULL, 0, ?4, ?4)",
            )
            .expect("prepare")
            .execute(params![id, app, format!("2557{:08}", i % PHONES), at.timestamp_millis()])
            .expect("insert");
        }));
        for p in 0..PHONES {
            conn.execute(
                "INSERT INTO otp_state VALUES (?1, ?2, 0, zeroblob(32), 'pending', '', 0)",
                params![app, format!("2557{p:08}")],
            )
            .expect("seed");
        }
        let mut rng = rand::thread_rng();
        results[1].1.push(timed(&conn, |c, i| {
            let phone = format!("2557{:08}", rng.gen_range(0..PHONES));
            c.prepare_cached(
                "UPDATE otp_state SET attempts = ?3, status = 'pending', sends = ?4, updated_at = ?5
                 WHERE app_id = ?1 AND phone = ?2",
            )
            .expect("prepare")
            .execute(params![app, phone, i as i64 % 3, "1764672000000", i as i64])
            .expect("update");
        }));
        results[2].1.push(timed(&conn, |c, i| {
            c.prepare_cached("INSERT INTO bare (id, a, b) VALUES (?1, ?2, 'x')")
                .expect("prepare")
                .execute(params![i as i64, i as i64])
                .expect("insert");
        }));
    }
    for (name, runs) in results {
        let us = median(runs.clone());
        println!(
            "{name:>7}: {:>9.0} rows/s  {us:.2} µs/row  (runs: {})",
            1e6 / us,
            runs.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}
