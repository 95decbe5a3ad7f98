//! Durability across restarts, black-box (SPEC section 8): the real `otpd` binary,
//! real sockets, a temp database. A `kill -9` right after the last acknowledged
//! response, or a SIGTERM, loses nothing that was acknowledged — flakes, attempt
//! counts, verifications, rate-limit windows — and no plaintext code ever reaches
//! the database files.
//!
//! The log provider writes each message (code included) to stderr at `info`; that
//! is how these tests learn the codes, as a user of a development instance would.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::{client, Daemon, DaemonConfig};
use serde_json::{json, Value};

const API_KEY: &str = "sk_test_restart_0123456789abcdef";
const APP_KEY: &str = "restart";
const PHONES: [&str; 4] = [
    "255712000001",
    "255712000002",
    "255712000003",
    "255712000004",
];

/// A daemon (not started) in a temp dir with a config: ephemeral port, commit
/// durability, one app whose API key the test knows, 8-digit codes (so a code
/// cannot turn up in the database files by coincidence), a 30 s resend cooldown
/// and 3 attempts. Also returns the database path.
fn setup() -> (Daemon, PathBuf) {
    let daemon = DaemonConfig::new()
        .durability("commit")
        .app(
            "Restart test",
            APP_KEY,
            API_KEY,
            "code_length = 8\nresend_cooldown_secs = 30\nmax_attempts = 3",
        )
        .daemon();
    let db = daemon.dir().join("otpd.sqlite3");
    (daemon, db)
}

fn post(d: &Daemon, path: &str, body: Value) -> reqwest::blocking::Response {
    client()
        .post(d.url(path))
        .header("X-API-Key", API_KEY)
        .json(&body)
        .send()
        .expect("POST")
}

fn request(d: &Daemon, phone: &str) -> reqwest::blocking::Response {
    post(
        d,
        "/v1/otp/request",
        json!({"phone_number": phone, "app_key": APP_KEY}),
    )
}

fn verify(d: &Daemon, phone: &str, code: &str) -> reqwest::blocking::Response {
    post(
        d,
        "/v1/otp/verify",
        json!({"phone_number": phone, "app_key": APP_KEY, "code": code}),
    )
}

fn status(d: &Daemon, phone: &str) -> Value {
    let resp = client()
        .get(d.url("/v1/otp/status"))
        .query(&[("phone_number", phone), ("app_key", APP_KEY)])
        .header("X-API-Key", API_KEY)
        .send()
        .expect("GET status");
    assert_eq!(resp.status(), 200, "status for {phone}");
    resp.json::<Value>().expect("json")["data"].clone()
}

fn json_of(resp: reqwest::blocking::Response, expect: u16) -> Value {
    let status = resp.status().as_u16();
    let body: Value = resp.json().expect("a JSON body");
    assert_eq!(status, expect, "{body}");
    body
}

/// A different code of the same length.
fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| {
            if c == '9' {
                '0'
            } else {
                ((c as u8) + 1) as char
            }
        })
        .collect()
}

/// No code may appear, as ASCII, in the database or its WAL.
fn assert_no_plaintext_codes(db: &Path, codes: &[String]) {
    let mut files = 0;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        files += 1;
        for code in codes {
            assert!(
                !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
                "code {code} found in plaintext in {}",
                path.display()
            );
        }
    }
    assert!(files > 0, "no database file at {}", db.display());
}

#[test]
fn kill_9_after_acknowledged_responses_loses_nothing() {
    let (mut otpd, db) = setup();
    otpd.start();

    let mut flakes = Vec::new();
    for phone in PHONES {
        let body = json_of(request(&otpd, phone), 200);
        assert_eq!(body["data"]["phone_number"], phone);
        flakes.push(
            body["data"]["flake_id"]
                .as_str()
                .expect("flake_id")
                .to_string(),
        );
    }
    let (verified, attempted) = (PHONES[0], PHONES[1]);
    let code_verified = otpd.code_for(verified);
    let code_attempted = otpd.code_for(attempted);
    let mut codes = vec![code_verified.clone(), code_attempted.clone()];
    for phone in &PHONES[2..] {
        codes.push(otpd.code_for(phone));
    }
    assert!(codes.iter().all(|c| c.len() == 8), "{codes:?}");

    json_of(verify(&otpd, verified, &code_verified), 200);
    let body = json_of(verify(&otpd, attempted, &wrong(&code_attempted)), 422);
    assert_eq!(body["error"]["code"], "invalid_code");
    // The last acknowledged response is in: kill at once, no chance to flush.
    otpd.kill9();

    otpd.start();
    for (phone, flake) in PHONES.iter().zip(&flakes) {
        let s = status(&otpd, phone);
        assert_eq!(s["flake_id"], flake.as_str(), "{phone}: {s}");
    }
    assert_eq!(status(&otpd, verified)["status"], "verified");
    let s = status(&otpd, attempted);
    assert_eq!(
        (s["status"].as_str(), s["attempts"].as_u64()),
        (Some("pending"), Some(1)),
        "{s}"
    );
    assert_eq!(s["remaining_attempts"], 2, "{s}");
    for phone in &PHONES[2..] {
        let s = status(&otpd, phone);
        assert_eq!(
            (s["status"].as_str(), s["attempts"].as_u64()),
            (Some("pending"), Some(0)),
            "{s}"
        );
    }

    let body = json_of(verify(&otpd, verified, &code_verified), 422);
    assert_eq!(body["error"]["code"], "already_verified");

    let resp = request(&otpd, PHONES[2]);
    let retry_after: u64 = resp
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    let body = json_of(resp, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(status(&otpd, PHONES[2])["flake_id"], flakes[2].as_str());

    // The stored hash (and the pepper behind it) survived too: the right code works.
    json_of(verify(&otpd, attempted, &code_attempted), 200);

    otpd.kill9();
    assert_no_plaintext_codes(&db, &codes);
}

#[test]
fn sigterm_exits_0_within_10_seconds_and_state_survives() {
    let (mut otpd, db) = setup();
    otpd.start();
    let phone = PHONES[0];
    let flake = json_of(request(&otpd, phone), 200)["data"]["flake_id"]
        .as_str()
        .expect("flake_id")
        .to_string();
    let code = otpd.code_for(phone);
    json_of(verify(&otpd, phone, &wrong(&code)), 422);

    let (exit, took) = otpd.terminate();
    assert_eq!(exit.code(), Some(0), "graceful exit status");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    otpd.start();
    let s = status(&otpd, phone);
    assert_eq!(s["flake_id"], flake.as_str());
    assert_eq!(s["attempts"], 1, "{s}");
    json_of(verify(&otpd, phone, &code), 200);
    let (exit, _) = otpd.terminate();
    assert_eq!(exit.code(), Some(0));
    assert_no_plaintext_codes(&db, &[code]);
}
