//! The checkpointer's VFS under real SQLite: a connection opened with it syncs the
//! database file after every checkpoint that copied pages (SQLite alone syncs only
//! at one that reaches the WAL's end), and nothing else changes. Its own test
//! binary, so that the process-wide counters see this workload only.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;

fn open(path: &Path, vfs: &str) -> Connection {
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)
        .expect("open through the shim");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

/// (busy, frames in the WAL, frames copied) of a passive checkpoint on `conn`.
fn checkpoint(conn: &Connection) -> (i64, i64, i64) {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

fn commit_rows(writer: &Connection, from: i64, n: i64) {
    let tx = writer.unchecked_transaction().unwrap();
    for k in from..from + n {
        tx.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2)",
            (k * 7_919 % 1_000_003, vec![(k % 251) as u8; 300]),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn the_checkpointer_vfs_syncs_after_every_pass_that_copied_pages() {
    let gather = otpd_walvfs::register().expect("the shim registers");
    let checkpointer_vfs = otpd_walvfs::register_checkpointer().expect("the shim registers");
    assert_eq!(checkpointer_vfs, otpd_walvfs::CHECKPOINT_VFS_NAME);
    assert_ne!(gather, checkpointer_vfs);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let writer = open(&path, gather);
    writer
        .execute_batch(
            "PRAGMA page_size = 1024;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);",
        )
        .unwrap();
    let checkpointer = open(&path, checkpointer_vfs);
    // The same passes through the gathering VFS alone sync nothing of their own.
    let plain = open(&path, gather);

    let mut rows = 0;
    let mut expected_syncs = 0;
    for round in 0..12i64 {
        commit_rows(&writer, round * 1_000, 50);
        rows += 50;
        let before = otpd_walvfs::counters();
        let conn = if round % 3 == 2 {
            &plain
        } else {
            &checkpointer
        };
        let (busy, log, done) = checkpoint(conn);
        assert_eq!((busy, log), (0, done), "round {round}: every frame copied");
        let after = otpd_walvfs::counters().since(before);
        if round % 3 == 2 {
            assert_eq!(
                after.checkpoint_syncs, 0,
                "round {round}: not the checkpointer's VFS"
            );
        } else {
            expected_syncs += 1;
            assert_eq!(
                after.checkpoint_syncs, 1,
                "round {round}: one sync for the pass"
            );
        }
        // A pass with nothing left to copy syncs nothing more.
        let before = otpd_walvfs::counters();
        checkpoint(&checkpointer);
        assert_eq!(otpd_walvfs::counters().since(before).checkpoint_syncs, 0);
    }
    // The case the VFS exists for: a pass that cannot reach the WAL's end (here a
    // reader holds an older snapshot; under load, new commits do), after which
    // SQLite alone would leave the copied pages unsynced.
    commit_rows(&writer, 100_000, 50);
    let reader = Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    commit_rows(&writer, 200_000, 50);
    rows += 100;
    let before = otpd_walvfs::counters();
    let (_, log, done) = checkpoint(&checkpointer);
    assert!(
        0 < done && done < log,
        "a pass short of the end: {done} of {log}"
    );
    assert_eq!(otpd_walvfs::counters().since(before).checkpoint_syncs, 1);
    expected_syncs += 1;
    assert_eq!(seen, rows - 50, "the reader's snapshot");
    reader.execute_batch("COMMIT").unwrap();

    let total = otpd_walvfs::counters();
    assert_eq!(total.checkpoint_syncs, expected_syncs);
    assert_eq!(total.checkpoint_sync_failures, 0);

    // The database and the log stay SQLite's: whole, readable by any connection,
    // and the log starts over once a pass has copied it all.
    let (_, log_before, _) = checkpoint(&checkpointer);
    commit_rows(&writer, 1_000_000, 1);
    rows += 1;
    let (_, log_after, _) = checkpoint(&checkpointer);
    assert!(
        log_after < log_before,
        "the WAL started over: {log_before} -> {log_after}"
    );
    let check: String = checkpointer
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop((writer, checkpointer, plain));
    let count: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, rows);
}
