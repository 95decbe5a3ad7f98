//! `tools/wal-pages.py`, the census of what each commit writes to the WAL behind
//! BENCHMARKS.md's "An HTTP cycle", on a real SQLite database whose log holds three
//! known commits: the tool must count each commit's pages under the table that owns
//! them, and leave out frames that no commit closes.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use rusqlite::Connection;
use serde_json::Value;

/// Two tables, then a log that starts over and holds three commits: a row in `a`;
/// a row in `a` and one in `b`; a row in `b`. Each table fits its one root page, so
/// each commit writes exactly the pages of the tables it touches.
fn database(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("t.db");
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(
        "PRAGMA page_size = 2048;
         PRAGMA journal_mode = WAL;
         PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT);",
    )
    .expect("schema");
    // The next write starts the log over, with new salts: only the commits below
    // are in its current generation.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    conn.execute_batch(
        "INSERT INTO a (v) VALUES ('one');
         BEGIN; INSERT INTO a (v) VALUES ('two'); INSERT INTO b (v) VALUES ('two'); COMMIT;
         INSERT INTO b (v) VALUES ('three');",
    )
    .expect("commits");
    // Keep the log: closing the last connection would checkpoint and delete it.
    std::mem::forget(conn);
    path
}

/// Appends one frame of page 2 with the log's salts and no commit mark: a
/// transaction still being written, which the tool must leave out.
fn append_open_frame(wal: &Path) {
    let bytes = std::fs::read(wal).expect("read the log");
    let salts = &bytes[16..24];
    let mut frame = Vec::new();
    frame.extend_from_slice(&2u32.to_be_bytes()); // page 2
    frame.extend_from_slice(&0u32.to_be_bytes()); // not a commit
    frame.extend_from_slice(salts);
    frame.extend_from_slice(&[0u8; 8]); // checksums: not what SQLite would write
    frame.extend_from_slice(&[0u8; 2048]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(wal)
        .expect("open the log");
    f.write_all(&frame).expect("append");
}

/// Runs the tool with `args` and returns its exit status and output.
fn wal_pages(args: &[&str]) -> (bool, String, String) {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/wal-pages.py");
    let out = Command::new("python3")
        .arg(&tool)
        .args(args)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, out, err) = wal_pages(args);
    assert!(ok, "wal-pages.py failed: {out}{err}");
    serde_json::from_str(&out).expect("one JSON object")
}

/// `(tree, type) -> pages per commit` from the report.
fn per_commit(report: &Value) -> Vec<(String, String, f64)> {
    report["by_tree"]
        .as_array()
        .expect("by_tree")
        .iter()
        .map(|row| {
            (
                row["tree"].as_str().expect("tree").to_string(),
                row["type"].as_str().expect("type").to_string(),
                row["per_commit"].as_f64().expect("per_commit"),
            )
        })
        .collect()
}

#[test]
fn each_commits_pages_are_counted_under_their_table_and_an_unclosed_frame_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(dir.path());
    let db = db.to_str().expect("UTF-8 path");
    append_open_frame(Path::new(&format!("{db}-wal")));

    let report = json(&["--json", db]);
    assert_eq!(report["page_size"], 2048);
    assert_eq!(report["commits"], 3);
    assert_eq!(report["frames"], 4);
    let mut trees = per_commit(&report);
    trees.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        trees,
        vec![
            ("a".to_string(), "leaf".to_string(), 2.0 / 3.0),
            ("b".to_string(), "leaf".to_string(), 2.0 / 3.0),
        ]
    );

    // The last commit alone: one page of `b`.
    let last = json(&["--json", "--last", "1", db]);
    assert_eq!(last["commits"], 1);
    assert_eq!(
        per_commit(&last),
        vec![("b".to_string(), "leaf".to_string(), 1.0)]
    );

    // The readable form says the same.
    let (ok, text, err) = wal_pages(&[db]);
    assert!(ok, "{text}{err}");
    assert!(
        text.starts_with(
            "3 commits, 1.33 frames and 1.33 distinct pages per commit (2048-byte pages)"
        ),
        "{text}"
    );
    assert!(text.contains("    0.67  a (leaf)"), "{text}");
}

#[test]
fn a_file_that_is_not_a_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("x.db");
    std::fs::write(&db, b"not a database").expect("write");
    std::fs::write(dir.path().join("x.db-wal"), [7u8; 64]).expect("write");
    let (ok, out, err) = wal_pages(&[db.to_str().expect("UTF-8 path")]);
    assert!(!ok, "{out}");
    assert!(err.contains("not a SQLite write-ahead log"), "{err}");
}
