//! Receivers' side, against real deliveries from the real `otpd` binary: a
//! registered webhook (`whsec_…` secret) and a per-request callback (a plain
//! `callback_secret`), captured by a real HTTP receiver, verify with
//! - the official `standardwebhooks` Rust crate,
//! - `examples/receivers/verify.py` (the README's Python snippet) with the official
//!   `standardwebhooks` PyPI package,
//! - `examples/receivers/verify.mjs` (the README's Node snippet) with the official
//!   `standardwebhooks` npm package.
//!
//! Python and Node tests print `SKIPPED` and pass when the tool or the package is
//! missing, except under `CI=true` (where `.ci/run` installs them): there they fail.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::daemon::{client, Daemon};
use otpd_test_support::{Received, Receiver, Reply};
use serde_json::{json, Value};

const PHONE: &str = "255712345678";
const CALLBACK_SECRET: &str = "s3cret";

/// Deliveries with the secret that signed each.
struct Captured {
    deliveries: Vec<(String, Received)>,
}

/// Starts the daemon, registers an `otp` webhook, requests an OTP with a callback
/// and verifies it, and returns what the receiver got (at least the webhook's
/// `otp.created` and `otp.verified` and the callback's `flake.verified`).
fn capture() -> (Daemon, Captured) {
    let rx = Receiver::start(vec![Reply::Status(200, "")]);
    let mut daemon = Daemon::without_config()
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0")
        .env("OTPD_CALLBACKS__ALLOW_HTTP", "true")
        .env("OTPD_CALLBACKS__ALLOWED_CIDRS", "[\"127.0.0.0/8\"]");
    daemon.start();
    let api_key = daemon
        .stdout_lines()
        .iter()
        .find_map(|l| l.trim().strip_prefix("api_key: ").map(str::to_string))
        .expect("the dev app's api_key on stdout");
    let http = client();
    let base = daemon.base().to_string();
    let post = |path: &str, body: Value| -> Value {
        let resp = http
            .post(format!("{base}{path}"))
            .header("x-api-key", &api_key)
            .json(&body)
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        let body: Value = resp.json().expect("JSON answer");
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body["data"].clone()
    };
    let webhook = post(
        "/v1/webhooks",
        json!({"url": format!("{}/webhooks/otp", rx.url), "service_type": "otp"}),
    );
    let whsec = webhook["secret"].as_str().expect("secret").to_string();
    post(
        "/v1/otp/request",
        json!({"phone_number": PHONE, "app_key": "dev",
               "callback_url": format!("{}/otp-callback", rx.url),
               "callback_secret": CALLBACK_SECRET}),
    );
    let code = daemon.code_for(PHONE);
    post(
        "/v1/otp/verify",
        json!({"phone_number": PHONE, "app_key": "dev", "code": code}),
    );
    let got = rx.wait_for_blocking(3);
    let deliveries: Vec<(String, Received)> = got
        .into_iter()
        .map(|r| {
            let secret = if r.path.contains("/webhooks/") {
                whsec.clone()
            } else {
                CALLBACK_SECRET.to_string()
            };
            (secret, r)
        })
        .collect();
    assert!(
        deliveries.iter().any(|(s, _)| s == CALLBACK_SECRET),
        "no callback delivery"
    );
    assert!(
        deliveries.iter().any(|(s, _)| s.starts_with("whsec_")),
        "no webhook delivery: {:?}",
        deliveries
            .iter()
            .map(|(_, r)| r.path.clone())
            .collect::<Vec<_>>()
    );
    (daemon, Captured { deliveries })
}

#[test]
fn the_official_rust_crate_verifies_webhook_and_callback_deliveries() {
    use base64::Engine;
    let (_daemon, captured) = capture();
    for (secret, r) in &captured.deliveries {
        // The same keying rule the README states: whsec_ as is, plain secrets base64'd.
        let key = if secret.starts_with("whsec_") {
            secret.clone()
        } else {
            base64::engine::general_purpose::STANDARD.encode(secret.as_bytes())
        };
        let verifier = standardwebhooks::Webhook::new(&key).expect("a valid key");
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &r.headers {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        verifier
            .verify(r.body.as_bytes(), &headers)
            .unwrap_or_else(|e| panic!("{} did not verify: {e}", r.path));
        // A changed body does not.
        let tampered = format!("{} ", r.body);
        assert!(verifier.verify(tampered.as_bytes(), &headers).is_err());
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/receivers")
}

/// `Ok(())`, or why the tool cannot run here (a failure under `CI=true`).
fn skip_or_fail(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI=true: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

/// Runs `program args` with each delivery as JSON on stdin; every one must print
/// `valid <event>`, and a tampered body must fail.
fn run_snippet(program: &str, args: &[&str], captured: &Captured) {
    for (secret, r) in &captured.deliveries {
        for (body, should_verify) in [(r.body.clone(), true), (format!("{} ", r.body), false)] {
            let input = json!({"secret": secret, "headers": r.headers, "body": body});
            let mut child = Command::new(program)
                .args(args)
                .current_dir(examples())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.to_string().as_bytes())
                .expect("write stdin");
            let out = child.wait_with_output().expect("wait");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let event = r.json()["event"].as_str().unwrap_or("").to_string();
            if should_verify {
                assert!(
                    out.status.success() && stdout.trim() == format!("valid {event}"),
                    "{program} refused {} ({event}): {}{}",
                    r.path,
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                assert!(!out.status.success(), "{program} accepted a tampered body");
            }
        }
    }
}

#[test]
fn the_readme_python_snippet_verifies_real_deliveries() {
    let ready = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        return skip_or_fail(
            "python3 with the standardwebhooks package (pip install standardwebhooks) is needed",
        );
    }
    let (_daemon, captured) = capture();
    run_snippet("python3", &["verify.py"], &captured);
}

#[test]
fn the_readme_node_snippet_verifies_real_deliveries() {
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_node {
        return skip_or_fail("node is needed");
    }
    if !examples().join("node_modules/standardwebhooks").exists() {
        let installed = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(examples())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return skip_or_fail("npm ci in examples/receivers failed (no registry?)");
        }
    }
    let (_daemon, captured) = capture();
    run_snippet("node", &["verify.mjs"], &captured);
}

/// The README's Python and Node blocks are the example files minus comments, so a
/// change to one without the other fails here.
#[test]
fn the_readme_quotes_the_tested_snippets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    for (fence, file) in [("```python\n", "verify.py"), ("```js\n", "verify.mjs")] {
        let source = std::fs::read_to_string(examples().join(file)).expect("example");
        let start = readme
            .find(&format!("examples/receivers/{file}"))
            .and_then(|at| readme[at..].find(fence).map(|f| at + f + fence.len()))
            .unwrap_or_else(|| panic!("README does not quote examples/receivers/{file}"));
        let block = &readme[start..start + readme[start..].find("```").expect("fence end")];
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                source.lines().any(|s| s == line),
                "README line not in examples/receivers/{file}: {line}"
            );
        }
    }
}
