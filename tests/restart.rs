//! Durability across restarts, black-box (SPEC section 8): the real `otpd` binary,
//! real sockets, a temp database. A `kill -9` right after the last acknowledged
//! response, or a SIGTERM, loses nothing that was acknowledged — flakes, attempt
//! counts, verifications, rate-limit windows — and no plaintext code ever reaches
//! the database files.
//!
//! The log provider writes each message (code included) to stderr at `info`; that
//! is how these tests learn the codes, as a user of a development instance would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

const API_KEY: &str = "sk_test_restart_0123456789abcdef";
const APP_KEY: &str = "restart";
const PHONES: [&str; 4] = [
    "255712000001",
    "255712000002",
    "255712000003",
    "255712000004",
];

/// A running `otpd serve`, killed when dropped so a failing test leaves no process.
struct Daemon {
    child: Child,
    base: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `otpd serve --config config` in `dir` and waits until `/readyz` is 200.
    fn start(dir: &Path, config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_otpd"))
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn otpd");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("stdout"), stdout.clone());
        collect(child.stderr.take().expect("stderr"), stderr.clone());
        let mut daemon = Daemon {
            child,
            base: String::new(),
            stderr,
        };
        let line = daemon.wait_for(&stdout, Duration::from_secs(30), |l| {
            l.starts_with("otpd listening on http://")
        });
        daemon.base = line["otpd listening on ".len()..].trim().to_string();
        daemon.wait_ready();
        daemon
    }

    fn wait_for(
        &mut self,
        lines: &Arc<Mutex<Vec<String>>>,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = lines.lock().unwrap().iter().rev().find(|l| pred(l)) {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("otpd exited ({status}); stderr:\n{}", self.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "timed out; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("{}/readyz", self.base))
                .send()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never ready; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The code the log provider sent to `phone` (the latest one).
    fn code_for(&mut self, phone: &str) -> String {
        let stderr = self.stderr.clone();
        let needle = format!("to={phone} ");
        let line = self.wait_for(&stderr, Duration::from_secs(10), |l| {
            l.contains("log provider") && l.contains(&needle)
        });
        let at = line
            .find("verification code is ")
            .expect("the default template")
            + "verification code is ".len();
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGKILL: no chance to flush anything.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then waits up to 15 s; returns the exit status and how long it took.
    fn terminate(mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "otpd did not exit after SIGTERM; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => into.lock().unwrap().push(line),
                Err(_) => return,
            }
        }
    });
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A temp dir with a config: ephemeral port, commit durability, one app whose API
/// key the test knows, 8-digit codes (so a code cannot turn up in the database
/// files by coincidence), a 30 s resend cooldown and 3 attempts.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("otpd.sqlite3");
    let config = dir.path().join("otpd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[storage]
path = "{}"
durability = "commit"

[provider]
kind = "log"

[[apps]]
name = "Restart test"
app_key = "{APP_KEY}"
api_key = "{API_KEY}"
code_length = 8
resend_cooldown_secs = 30
max_attempts = 3
"#,
            db.display()
        ),
    )
    .expect("write config");
    (dir, config, db)
}

fn post(d: &Daemon, path: &str, body: Value) -> reqwest::blocking::Response {
    client()
        .post(format!("{}{path}", d.base))
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
        .get(format!("{}/v1/otp/status", d.base))
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
    let (dir, config, db) = setup();
    let mut first = Daemon::start(dir.path(), &config);

    let mut flakes = Vec::new();
    for phone in PHONES {
        let body = json_of(request(&first, phone), 200);
        assert_eq!(body["data"]["phone_number"], phone);
        flakes.push(
            body["data"]["flake_id"]
                .as_str()
                .expect("flake_id")
                .to_string(),
        );
    }
    let (verified, attempted) = (PHONES[0], PHONES[1]);
    let code_verified = first.code_for(verified);
    let code_attempted = first.code_for(attempted);
    let mut codes = vec![code_verified.clone(), code_attempted.clone()];
    for phone in &PHONES[2..] {
        codes.push(first.code_for(phone));
    }
    assert!(codes.iter().all(|c| c.len() == 8), "{codes:?}");

    json_of(verify(&first, verified, &code_verified), 200);
    let body = json_of(verify(&first, attempted, &wrong(&code_attempted)), 422);
    assert_eq!(body["error"]["code"], "invalid_code");
    // The last acknowledged response is in: kill at once, no chance to flush.
    first.kill9();

    let second = Daemon::start(dir.path(), &config);
    for (phone, flake) in PHONES.iter().zip(&flakes) {
        let s = status(&second, phone);
        assert_eq!(s["flake_id"], flake.as_str(), "{phone}: {s}");
    }
    assert_eq!(status(&second, verified)["status"], "verified");
    let s = status(&second, attempted);
    assert_eq!(
        (s["status"].as_str(), s["attempts"].as_u64()),
        (Some("pending"), Some(1)),
        "{s}"
    );
    assert_eq!(s["remaining_attempts"], 2, "{s}");
    for phone in &PHONES[2..] {
        let s = status(&second, phone);
        assert_eq!(
            (s["status"].as_str(), s["attempts"].as_u64()),
            (Some("pending"), Some(0)),
            "{s}"
        );
    }

    let body = json_of(verify(&second, verified, &code_verified), 422);
    assert_eq!(body["error"]["code"], "already_verified");

    let resp = request(&second, PHONES[2]);
    let retry_after: u64 = resp
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    let body = json_of(resp, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(status(&second, PHONES[2])["flake_id"], flakes[2].as_str());

    // The stored hash (and the pepper behind it) survived too: the right code works.
    json_of(verify(&second, attempted, &code_attempted), 200);

    second.kill9();
    assert_no_plaintext_codes(&db, &codes);
}

#[test]
fn sigterm_exits_0_within_10_seconds_and_state_survives() {
    let (dir, config, db) = setup();
    let mut first = Daemon::start(dir.path(), &config);
    let phone = PHONES[0];
    let flake = json_of(request(&first, phone), 200)["data"]["flake_id"]
        .as_str()
        .expect("flake_id")
        .to_string();
    let code = first.code_for(phone);
    json_of(verify(&first, phone, &wrong(&code)), 422);

    let (exit, took) = first.terminate();
    assert_eq!(exit.code(), Some(0), "graceful exit status");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let second = Daemon::start(dir.path(), &config);
    let s = status(&second, phone);
    assert_eq!(s["flake_id"], flake.as_str());
    assert_eq!(s["attempts"], 1, "{s}");
    json_of(verify(&second, phone, &code), 200);
    let (exit, _) = second.terminate();
    assert_eq!(exit.code(), Some(0));
    assert_no_plaintext_codes(&db, &[code]);
}
