//! `otpd echo`, black-box (SPEC section 9): the real binary on an ephemeral port
//! prints each request it receives and whether its signatures verify.

mod common;

use std::time::Duration;

use common::daemon::{client, Daemon};
use otpd_actors::signing::{otpd_signature, standard_signature};

/// A registered-webhook style secret: `whsec_` + base64.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EVENT_ID: &str = "evt_0123456789abcdef0123456789abcdef";
const BODY: &str = r#"{"id":"evt_0123456789abcdef0123456789abcdef","event":"flake.verified","channel":"flake","app_id":"6f1c1d2e-9a53-4c43-a2a4-3f1e2b0c9d11","created_at":"2026-06-07T12:00:05.123Z","data":{"flake_id":"f","phone_number":"255712345678","status":"verified","verified_at":"2026-06-07T12:00:05.123Z"}}"#;

/// Starts `otpd echo` with `args` after `--listen 127.0.0.1:0`.
fn echo(args: &[&str]) -> Daemon {
    let mut daemon = Daemon::without_config();
    let mut all = vec!["echo", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    daemon.spawn(&all);
    daemon
}

/// POSTs `body` signed with `SECRET` over `signed_body` (equal unless tampering).
#[allow(clippy::disallowed_methods)] // the echo daemon checks timestamps against the real clock
fn post_signed(echo: &Daemon, signed_body: &str, body: &str) -> reqwest::blocking::Response {
    let ts = chrono::Utc::now().timestamp();
    client()
        .post(echo.url("/hooks/otpd"))
        .header("Content-Type", "application/json")
        .header("X-Otpd-Event", "flake.verified")
        .header("X-Otpd-Event-Id", EVENT_ID)
        .header("X-Otpd-Delivery-Id", "dlv_00000000000000000000000000000001")
        .header("X-Otpd-Attempt", "1")
        .header("X-Otpd-Service-Type", "flake")
        .header(
            "X-Otpd-Signature",
            otpd_signature(SECRET, signed_body.as_bytes()),
        )
        .header("webhook-id", EVENT_ID)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            standard_signature(SECRET, EVENT_ID, ts, signed_body.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .expect("echo answers")
}

/// Waits until the `n`-th printed block is complete (its `answered:` line) and
/// returns the text of that block.
fn block(echo: &mut Daemon, n: usize) -> String {
    echo.wait_stdout(Duration::from_secs(10), |lines| {
        let starts: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("=== "))
            .map(|(i, _)| i)
            .collect();
        let start = *starts.get(n - 1)?;
        let end = start
            + lines[start..]
                .iter()
                .position(|l| l.starts_with("answered:"))?;
        Some(lines[start..=end].join("\n"))
    })
}

#[test]
fn echo_prints_valid_for_a_signed_request_and_invalid_for_a_tampered_one() {
    let mut echo = echo(&["--secret", SECRET]);
    assert!(
        echo.base().starts_with("http://127.0.0.1:"),
        "{}",
        echo.base()
    );
    assert!(!echo.base().ends_with(":0"), "the real port is printed");

    let resp = post_signed(&echo, BODY, BODY);
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().expect("JSON answer");
    assert_eq!(answer, serde_json::json!({"received": true}));
    let good = block(&mut echo, 1);
    for expected in [
        "POST /hooks/otpd",
        "event:         flake.verified",
        &format!("event id:      {EVENT_ID}"),
        "delivery id:   dlv_00000000000000000000000000000001",
        "attempt:       1",
        "service type:  flake",
        "  webhook-id: evt_",
        "\"phone_number\": \"255712345678\"",
        "X-Otpd-Signature: valid",
        "webhook-signature (Standard Webhooks): valid",
        "answered: 200",
    ] {
        assert!(good.contains(expected), "missing {expected:?} in\n{good}");
    }
    assert!(!good.contains("warning"), "{good}");

    let tampered = BODY.replace("255712345678", "255712345679");
    assert_eq!(post_signed(&echo, BODY, &tampered).status(), 200);
    let bad = block(&mut echo, 2);
    assert!(bad.contains("X-Otpd-Signature: INVALID"), "{bad}");
    assert!(
        bad.contains("webhook-signature (Standard Webhooks): INVALID"),
        "{bad}"
    );
}

#[test]
fn echo_without_a_secret_answers_the_chosen_status_and_checks_nothing() {
    let mut echo = echo(&["--status", "503"]);
    let resp = post_signed(&echo, BODY, BODY);
    assert_eq!(resp.status(), 503);
    let text = block(&mut echo, 1);
    assert!(text.contains("X-Otpd-Signature: not checked"), "{text}");
    assert!(
        text.contains("webhook-signature (Standard Webhooks): not checked"),
        "{text}"
    );
    assert!(text.contains("answered: 503"), "{text}");

    let plain = client()
        .post(echo.url("/"))
        .body("not json")
        .send()
        .expect("answer");
    assert_eq!(plain.status(), 503);
    let text = block(&mut echo, 2);
    assert!(text.contains("X-Otpd-Signature: absent"), "{text}");
    assert!(text.contains("(not JSON) not json"), "{text}");
}
