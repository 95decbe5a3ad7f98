//! The shim under real SQLite: real files, a second connection reading through the
//! default VFS, and "crash images" (the files copied while the writer is open, as
//! a `kill -9` would leave them) that must hold every commit that returned.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;

fn open_gathering(path: &Path, synchronous: &str) -> Connection {
    let vfs = otpd_walvfs::register().expect("the shim registers");
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)
        .expect("open through the shim");
    conn.pragma_update(None, "page_size", 1024).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", synchronous)
        .unwrap();
    conn.execute_batch(
        "PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);
         CREATE INDEX IF NOT EXISTS t_v ON t(v);",
    )
    .unwrap();
    conn
}

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// Copies the database and its WAL (not the shared-memory index, which recovery
/// rebuilds) and opens the copy with the default VFS.
fn crash_image(dir: &Path, path: &Path, n: usize) -> Connection {
    let copy = dir.join(format!("crash-{n}.sqlite3"));
    std::fs::copy(path, &copy).unwrap();
    let wal = path.with_extension("sqlite3-wal");
    if wal.exists() {
        std::fs::copy(&wal, copy.with_extension("sqlite3-wal")).unwrap();
    }
    let conn = Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    conn
}

fn exercise(synchronous: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let writer = open_gathering(&path, synchronous);
    let reader = Connection::open(&path).unwrap();
    let before = otpd_walvfs::counters();
    let mut rows = 0i64;
    let mut images = 0;
    for round in 0..40usize {
        // Commits of 1 to 40 rows at random-ish keys, as the writer's batches.
        let n = 1 + (round * 7) % 40;
        let tx = writer.unchecked_transaction().unwrap();
        for i in 0..n {
            let k = (round * 1_000 + i) as i64 * 7_919 % 1_000_003;
            let v = vec![(round + i) as u8; 100 + (i * 13) % 300];
            rows += tx
                .execute("INSERT OR IGNORE INTO t (k, v) VALUES (?1, ?2)", (k, v))
                .unwrap() as i64;
        }
        tx.commit().unwrap();
        // Another connection sees the commit at once, through its own file handles.
        assert_eq!(count(&reader), rows, "round {round}");
        if round % 8 == 7 {
            images += 1;
            assert_eq!(count(&crash_image(dir.path(), &path, images)), rows);
        }
        if round % 13 == 12 {
            // The log restarts: the writer's next frames go to offset 0 again.
            reader
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
    }

    // Up to here each commit was gathered into (about) one write.
    let rounds = otpd_walvfs::counters();
    let commits = 40;
    assert!(
        rounds.flushes - before.flushes <= 2 * commits,
        "frames are written together: {before:?} -> {rounds:?}"
    );
    assert!(rounds.gathered - before.gathered > 10 * commits);

    // A transaction larger than the page cache spills frames before its commit and
    // then writes some pages again; one rolled back first, then one committed.
    writer.pragma_update(None, "cache_size", 8).unwrap();
    for commit in [false, true] {
        let tx = writer.unchecked_transaction().unwrap();
        for i in 0..2_000i64 {
            let v = vec![(i % 251) as u8; 200];
            tx.execute(
                "INSERT OR IGNORE INTO t (k, v) VALUES (?1, ?2)",
                (2_000_000 + i, v),
            )
            .unwrap();
            if i % 97 == 0 {
                tx.execute(
                    "UPDATE t SET v = ?1 WHERE k = ?2",
                    (vec![1u8; 150], 2_000_000 + i / 2),
                )
                .unwrap();
            }
        }
        if commit {
            tx.commit().unwrap();
            rows += 2_000;
        } else {
            tx.rollback().unwrap();
        }
        assert_eq!(count(&reader), rows);
        images += 1;
        assert_eq!(count(&crash_image(dir.path(), &path, images)), rows);
    }
    let check: String = writer
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(writer);
    assert_eq!(count(&Connection::open(&path).unwrap()), rows);

    assert_eq!(
        otpd_walvfs::counters().late_flushes,
        0,
        "no commit waited for the last guard"
    );
}

/// One test, so that the process-wide counters see one workload at a time.
#[test]
fn every_commit_is_in_the_file_when_it_returns_and_in_one_write() {
    exercise("NORMAL");
    exercise("FULL");
}

#[test]
fn registering_twice_gives_the_same_name() {
    assert_eq!(otpd_walvfs::register().unwrap(), otpd_walvfs::VFS_NAME);
    assert_eq!(otpd_walvfs::register().unwrap(), otpd_walvfs::VFS_NAME);
}
