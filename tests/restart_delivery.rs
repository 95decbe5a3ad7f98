//! Outbound deliveries survive `kill -9`, black-box (SPEC sections 6 and 8): the
//! real `otpd` binary, a real receiver, a temp database with commit durability.
//! "Every event and delivery is written durably before its first attempt; on
//! restart, unfinished deliveries resume" — with the same event id, so a receiver
//! can deduplicate.

mod common;

use std::time::Duration;

use common::daemon::{client, Daemon, DaemonConfig};
use otpd_actors::signing::verify_otpd_signature;
use otpd_test_support::{poll_value, Receiver, Reply};
use serde_json::{json, Value};

const API_KEY: &str = "sk_test_restart_delivery_0123456789";
const APP_KEY: &str = "redeliver";
const PHONE: &str = "255712000011";
const CALLBACK_SECRET: &str = "cb-s3cret";

/// Loopback receivers allowed, retries 1 s apart (then a long pause, so a test
/// never sees the series end by exhaustion), 8-digit codes, no resend cooldown.
fn daemon() -> Daemon {
    daemon_with(
        "[1, 1, 1, 60]",
        r#"kind = "log"
status_token = "status-token-0123456789""#,
    )
}

/// As [`daemon`], with this `delivery.retry_schedule_secs` and `[provider]` section.
fn daemon_with(retry_schedule: &str, provider: &str) -> Daemon {
    let mut daemon = DaemonConfig::new()
        .durability("commit")
        .provider(provider)
        .section("[callbacks]\nallow_http = true\nallowed_cidrs = [\"127.0.0.0/8\"]")
        .section(&format!(
            "[delivery]\nretry_schedule_secs = {retry_schedule}"
        ))
        .app(
            "Redelivery test",
            APP_KEY,
            API_KEY,
            "code_length = 8\nresend_cooldown_secs = 0",
        )
        .daemon();
    daemon.start();
    daemon
}

fn post(d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(d.url(path))
        .header("X-API-Key", API_KEY)
        .json(&body)
        .send()
        .expect("POST");
    (resp.status().as_u16(), resp.json().expect("JSON body"))
}

fn get(d: &Daemon, path: &str) -> (u16, Value) {
    let resp = client()
        .get(d.url(path))
        .header("X-API-Key", API_KEY)
        .send()
        .expect("GET");
    (resp.status().as_u16(), resp.json().expect("JSON body"))
}

/// Polls `f` every 100 ms for up to `secs`; returns its last answer.
#[allow(clippy::disallowed_methods)] // a real-time deadline for a real daemon
fn poll<T>(secs: u64, f: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    poll_value(
        Duration::from_secs(secs),
        Duration::from_millis(100),
        f,
        done,
    )
}

#[test]
fn a_callback_failing_when_otpd_is_killed_resumes_after_restart_with_the_same_event_id() {
    // 500, 500, then 200: the series must carry on across the restart.
    let receiver = Receiver::start(vec![
        Reply::Status(500, "{}"),
        Reply::Status(500, "{}"),
        Reply::Status(200, "{}"),
    ]);
    let mut otpd = daemon();

    let (status, body) = post(
        &otpd,
        "/v1/otp/request",
        json!({"phone_number": PHONE, "app_key": APP_KEY,
               "callback_url": receiver.url, "callback_secret": CALLBACK_SECRET}),
    );
    assert_eq!(status, 200, "{body}");
    let code = otpd.code_for(PHONE);
    assert_eq!(code.len(), 8, "{code}");
    let (status, body) = post(
        &otpd,
        "/v1/otp/verify",
        json!({"phone_number": PHONE, "app_key": APP_KEY, "code": code}),
    );
    assert_eq!(status, 200, "{body}");

    // The first attempt failed; the second is due in a second. Kill now.
    let first = receiver.wait_for_blocking(1)[0].clone();
    otpd.kill9();
    assert_eq!(first.header("X-Otpd-Event"), "flake.verified");
    assert_eq!(first.header("X-Otpd-Attempt"), "1");
    let event_id = first.header("X-Otpd-Event-Id").to_string();
    let delivery_id = first.header("X-Otpd-Delivery-Id").to_string();
    assert!(event_id.starts_with("evt_"), "{event_id}");
    assert!(delivery_id.starts_with("dlv_"), "{delivery_id}");

    otpd.start();
    let all = receiver.wait_for_blocking(3);
    let last = &all[2];
    for (i, got) in all.iter().enumerate() {
        assert_eq!(got.header("X-Otpd-Event-Id"), event_id, "attempt {}", i + 1);
        assert_eq!(got.header("X-Otpd-Delivery-Id"), delivery_id);
        assert_eq!(got.json()["id"], event_id.as_str(), "body id = header id");
        assert!(
            verify_otpd_signature(
                CALLBACK_SECRET,
                got.body.as_bytes(),
                got.header("X-Otpd-Signature")
            ),
            "attempt {} is signed",
            i + 1
        );
    }
    assert_eq!(last.body, first.body, "the same body byte for byte");
    let attempt: u32 = last
        .header("X-Otpd-Attempt")
        .parse()
        .expect("a numeric attempt");
    assert!(
        attempt > 1,
        "the series resumed, not restarted: attempt {attempt}"
    );

    // The log knows it succeeded (the record of the last attempt commits just
    // after the receiver answered).
    let (status, body) = poll(
        10,
        || get(&otpd, &format!("/v1/webhooks/deliveries/{delivery_id}")),
        |(_, b)| b["data"]["status"] == "succeeded",
    );
    assert_eq!(status, 200, "{body}");
    let d = &body["data"];
    assert_eq!(d["status"], "succeeded", "{body}");
    assert_eq!(d["event_id"], event_id.as_str(), "{body}");
    assert_eq!(d["event"], "flake.verified", "{body}");
    assert_eq!(d["last_status_code"], 200, "{body}");
    assert!(d["attempts"].as_u64().is_some_and(|n| n > 1), "{body}");
    assert_eq!(d["payload"], first.body.as_str(), "{body}");

    // Nothing more arrives: the delivery is finished, not re-run.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.received().len(), 3);
}

#[test]
fn a_late_provider_status_report_applies_after_a_restart() {
    let mut otpd = daemon();
    let (status, body) = post(
        &otpd,
        "/v1/messages",
        json!({"channel": "sms", "to": "+255 712 000 012", "text": "Your parcel is on its way"}),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["status"], "queued", "{body}");
    let message_id = body["data"]["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    // The log provider marks it sent; wait for that before killing.
    let path = format!("/v1/messages/{message_id}");
    let (_, body) = poll(
        10,
        || get(&otpd, &path),
        |(_, b)| b["data"]["status"] == "sent",
    );
    assert_eq!(body["data"]["status"], "sent", "{body}");
    otpd.kill9();

    otpd.start();
    let report = |otpd: &Daemon, status: &str| {
        let resp = client()
            .post(otpd.url("/v1/providers/status"))
            .header("Authorization", "Bearer status-token-0123456789")
            .json(&json!({"message_id": message_id, "status": status}))
            .send()
            .expect("POST status");
        let code = resp.status().as_u16();
        (code, resp.json::<Value>().expect("JSON body"))
    };
    let (code, body) = report(&otpd, "delivered");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["applied"], true, "{body}");
    assert_eq!(body["data"]["status"], "delivered", "{body}");
    let (_, body) = get(&otpd, &path);
    assert_eq!(body["data"]["status"], "delivered", "{body}");
    assert_eq!(body["data"]["to"], "255712000012", "{body}");

    // A duplicate after another restart is a no-op.
    otpd.restart();
    let (code, body) = report(&otpd, "delivered");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["applied"], false, "{body}");
    let (_, body) = get(&otpd, &path);
    assert_eq!(body["data"]["status"], "delivered", "{body}");
}

#[test]
fn a_message_still_queued_when_otpd_is_killed_is_sent_after_restart() {
    // The provider refuses the first call; the next retry is an hour away, so the
    // message is still `queued` when otpd dies. Restart must send it.
    let provider = Receiver::start(vec![
        Reply::Status(500, ""),
        Reply::Status(200, r#"{"provider_message_id":"p-1"}"#),
    ]);
    let mut otpd = daemon_with(
        "[3600]",
        &format!(
            r#"kind = "http"
url = "{}"
status_token = "status-token-0123456789""#,
            provider.url
        ),
    );
    let (status, body) = post(
        &otpd,
        "/v1/messages",
        json!({"channel": "telegram", "to": "+255 712 000 013", "text": "Queued across a crash"}),
    );
    assert_eq!(status, 202, "{body}");
    let message_id = body["data"]["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    provider.wait_for_blocking(1);
    let path = format!("/v1/messages/{message_id}");
    assert_eq!(get(&otpd, &path).1["data"]["status"], "queued");
    otpd.kill9();

    otpd.start();
    let got = provider.wait_for_blocking(2);
    let sent: Value = serde_json::from_str(&got[1].body).expect("provider body");
    assert_eq!(sent["message_id"], message_id.as_str());
    assert_eq!(sent["text"], "Queued across a crash");
    let (_, body) = poll(
        10,
        || get(&otpd, &path),
        |(_, b)| b["data"]["status"] == "sent",
    );
    assert_eq!(body["data"]["status"], "sent", "{body}");
}
