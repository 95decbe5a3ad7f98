//! `otpd backup`, black-box: the real daemon under load, `otpd backup` run beside
//! it, and a second daemon started on the copy. Everything acknowledged before the
//! backup began is in the copy (flakes, a verification, the app and its API key,
//! which exists only in the database), the copy passes `PRAGMA integrity_check`, is
//! `0600`, and an existing file is not overwritten without `--force`.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{client, DaemonConfig};
use serde_json::{json, Value};

/// No `[[apps]]`: the app is created with `otpd apps create`, so on the second
/// daemon its API key can only come from the backup.
fn config() -> DaemonConfig {
    DaemonConfig::new().durability("commit")
}

struct App {
    app_key: String,
    api_key: String,
}

fn otpd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otpd"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run otpd")
}

fn request(base: &str, app: &App, phone: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{base}/v1/otp/request"))
        .header("X-API-Key", &app.api_key)
        .json(&json!({"phone_number": phone, "app_key": app.app_key}))
        .send()
        .expect("POST request")
}

fn status(base: &str, app: &App, phone: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{base}/v1/otp/status"))
        .query(&[("phone_number", phone), ("app_key", app.app_key.as_str())])
        .header("X-API-Key", &app.api_key)
        .send()
        .expect("GET status");
    let code = resp.status().as_u16();
    (code, resp.json::<Value>().unwrap_or(Value::Null))
}

#[test]
fn backup_of_a_live_database_under_load_restores_everything_acknowledged_before_it() {
    let mut live = config().daemon();
    let created = otpd(
        live.dir(),
        &[
            "apps",
            "create",
            "--name",
            "Backup",
            "--config",
            "otpd.toml",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let created: Value = serde_json::from_slice(&created.stdout).expect("apps create JSON");
    let app = App {
        app_key: created["app_key"].as_str().expect("app_key").to_string(),
        api_key: created["api_key"].as_str().expect("api_key").to_string(),
    };
    live.start();
    let base = live.base().to_string();

    // Acknowledged state: flakes for a few phones, one of them verified.
    let before: Vec<String> = (0..5).map(|i| format!("25571200{i:04}")).collect();
    let mut flakes = Vec::new();
    for phone in &before {
        let resp = request(&base, &app, phone);
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().expect("json");
        flakes.push(
            body["data"]["flake_id"]
                .as_str()
                .expect("flake_id")
                .to_string(),
        );
    }
    let code = live.code_for(&before[0]);
    let verified = client()
        .post(live.url("/v1/otp/verify"))
        .header("X-API-Key", &app.api_key)
        .json(&json!({"phone_number": before[0], "app_key": app.app_key, "code": code}))
        .send()
        .expect("verify");
    assert_eq!(verified.status(), 200);

    // Load: a new phone per request until told to stop; acknowledged phones recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, acked, base) = (stop.clone(), acked.clone(), base.clone());
        let app = App {
            app_key: app.app_key.clone(),
            api_key: app.api_key.clone(),
        };
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) && i < 400 {
                let phone = format!("2557131{i:05}");
                if request(&base, &app, &phone).status() == 200 {
                    acked.lock().unwrap_or_else(|e| e.into_inner()).push(phone);
                }
                i += 1;
            }
        })
    };
    // Let the load get going, then note what is acknowledged before the backup starts.
    while acked.lock().unwrap_or_else(|e| e.into_inner()).len() < 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let acked_before: Vec<String> = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let out = otpd(
        live.dir(),
        &["backup", "--to", "copy.sqlite3", "--config", "otpd.toml"],
    );
    let during = acked.lock().unwrap_or_else(|e| e.into_inner()).len();
    stop.store(true, Ordering::SeqCst);
    load.join().expect("load thread");
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("backup summary JSON");
    assert_eq!(summary["check"], "ok", "{summary}");
    assert!(summary["bytes"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert!(
        during > acked_before.len(),
        "the daemon kept acknowledging while the backup ran ({during} vs {})",
        acked_before.len()
    );

    let copy = live.dir().join("copy.sqlite3");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).expect("copy").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "backup file mode");
    }
    // An existing file is not overwritten without --force.
    let again = otpd(
        live.dir(),
        &["backup", "--to", "copy.sqlite3", "--config", "otpd.toml"],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    {
        let conn = rusqlite::Connection::open(&copy).expect("open copy");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok");
    }

    // Restore: the copy becomes the database of a fresh daemon.
    let mut restored = config().daemon();
    std::fs::copy(&copy, restored.dir().join("otpd.sqlite3")).expect("copy the backup");
    restored.start();
    let base2 = restored.base().to_string();
    for (phone, flake) in before.iter().zip(&flakes) {
        let (code, body) = status(&base2, &app, phone);
        assert_eq!(code, 200, "{phone}: {body}");
        assert_eq!(body["data"]["flake_id"], flake.as_str(), "{phone}: {body}");
    }
    assert_eq!(
        status(&base2, &app, &before[0]).1["data"]["status"],
        "verified"
    );
    for phone in &acked_before {
        let (code, body) = status(&base2, &app, phone);
        assert_eq!(
            code, 200,
            "{phone} was acknowledged before the backup: {body}"
        );
    }
    // The restored daemon takes new work.
    assert_eq!(request(&base2, &app, "255712999999").status(), 200);
}
