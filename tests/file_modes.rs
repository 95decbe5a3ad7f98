//! File permissions, black-box (Unix): a fresh data directory otpd creates is
//! `0700`, and the database with its `-wal` and `-shm` files is `0600`, whatever
//! the umask of the process.

#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::daemon::{client, Daemon};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn data_dir_is_0700_and_database_files_are_0600_under_a_permissive_umask() {
    let mut daemon = Daemon::with_config(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[storage]
path = "data/state/otpd.sqlite3"

[provider]
kind = "log"

[[apps]]
name = "Modes"
app_key = "modes"
api_key = "sk_test_modes_0123456789abcdef"
"#,
    );
    // A umask of 0 would give 0777 dirs and 0666 files without explicit modes.
    let script = format!(
        "umask 000 && exec {} serve --config otpd.toml",
        env!("CARGO_BIN_EXE_otpd")
    );
    daemon.spawn_command("sh", &["-c", &script]);
    daemon.wait_ready();
    // A write, so the WAL and shared-memory files certainly exist.
    let resp = client()
        .post(daemon.url("/v1/otp/request"))
        .header("X-API-Key", "sk_test_modes_0123456789abcdef")
        .json(&serde_json::json!({"phone_number": "255712000009", "app_key": "modes"}))
        .send()
        .expect("POST");
    assert_eq!(resp.status(), 200);

    let dir = daemon.dir().to_path_buf();
    assert_eq!(mode(&dir.join("data")), 0o700, "data");
    assert_eq!(mode(&dir.join("data/state")), 0o700, "data/state");
    for file in ["otpd.sqlite3", "otpd.sqlite3-wal", "otpd.sqlite3-shm"] {
        assert_eq!(mode(&dir.join("data/state").join(file)), 0o600, "{file}");
    }
}
