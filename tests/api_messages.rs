//! SPEC section 7 over real sockets: sending messages, provider status reports and
//! the status-rank guard, channel events and per-message delivery reports — one
//! test per rule, named after it.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Fixture, FixtureOptions, Resp, API_KEY, PHONE};
use otpd_actors::message::{status_applies, Channel, MessageStatus};
use otpd_actors::signing::verify_otpd_signature;
use otpd_actors::RuntimeConfig;
use otpd_test_support::{Received, Receiver, Reply};
use serde_json::{json, Value};

/// `provider.status_token` of the test server.
const STATUS_TOKEN: &str = "prov-status-token-0123456789";
/// The secret given with per-message delivery reports.
const REPORT_SECRET: &str = "report-secret-for-tests";

// ----- helpers ---------------------------------------------------------------

/// A server that accepts provider reports and may deliver to the local receiver.
fn fixture() -> Fixture {
    fixture_with(|_| {})
}

/// [`fixture`] with one more configuration change.
fn fixture_with(tweak: impl FnOnce(&mut RuntimeConfig) + Send + 'static) -> Fixture {
    Fixture::with(FixtureOptions {
        tweak_config: Some(Box::new(move |config: &mut RuntimeConfig| {
            config.provider.status_token = Some(STATUS_TOKEN.into());
            config.callbacks.allow_http = true;
            config.callbacks.allowed_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
            tweak(config);
        })),
        ..FixtureOptions::default()
    })
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn message_body(channel: &str) -> Value {
    json!({"channel": channel, "to": PHONE, "text": "Hello from otpd"})
}

/// `POST /v1/messages` with `body`; asserts 202 and returns the message id.
fn send(fx: &Fixture, body: &Value) -> String {
    let resp = fx.post("/v1/messages", body);
    let data = resp.assert_ok(202);
    assert_eq!(data["status"], "queued", "{}", resp.text);
    data["message_id"].as_str().expect("message_id").to_string()
}

/// Sends a message on `channel` and waits until the provider accepted it (`sent`).
fn send_and_wait_sent(fx: &Fixture, channel: &str) -> String {
    let id = send(fx, &message_body(channel));
    wait_status(fx, &id, "sent");
    id
}

/// `GET /v1/messages/{id}`'s data.
fn get_message(fx: &Fixture, id: &str) -> Value {
    fx.get(&format!("/v1/messages/{id}")).assert_ok(200).clone()
}

/// Polls `GET /v1/messages/{id}` until it shows `status`; returns that view.
#[track_caller]
fn wait_status(fx: &Fixture, id: &str, status: &str) -> Value {
    let reached = fx.wait_until(|| get_message(fx, id)["status"] == status);
    let view = get_message(fx, id);
    assert!(reached, "message {id} never became {status}: {view}");
    view
}

/// `POST /v1/providers/status` with the provider's token and no API key.
fn report(fx: &Fixture, body: &Value) -> Resp {
    fx.call("POST", "/v1/providers/status")
        .no_auth()
        .header("authorization", &format!("Bearer {STATUS_TOKEN}"))
        .json(body)
        .send()
}

/// Reports `status` for message `id`; asserts 200 and returns `(applied, status)`.
#[track_caller]
fn report_status(fx: &Fixture, id: &str, status: &str) -> (bool, String) {
    let resp = report(fx, &json!({"message_id": id, "status": status}));
    let data = resp.assert_ok(200);
    assert_eq!(keys(data), set(&["applied", "status"]), "{}", resp.text);
    (
        data["applied"].as_bool().expect("applied"),
        data["status"].as_str().expect("status").to_string(),
    )
}

/// Registers the app's webhook for `service_type` at `url` through
/// `POST /v1/webhooks`; returns its secret.
fn register_webhook(fx: &Fixture, service_type: &str, url: &str) -> String {
    let resp = fx.post(
        "/v1/webhooks",
        &json!({"url": url, "service_type": service_type}),
    );
    resp.assert_ok(201)["secret"]
        .as_str()
        .expect("secret")
        .to_string()
}

/// The event names the receiver got for message `id`, in arrival order.
fn events_for(received: &[Received], id: &str) -> Vec<String> {
    received
        .iter()
        .map(Received::json)
        .filter(|e| e["data"]["message_id"] == id)
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits until the receiver got `n` events for message `id`, then a little longer
/// so that an extra (duplicate) delivery would have arrived too; returns them all.
#[track_caller]
fn settled_events(fx: &Fixture, receiver: &Receiver, id: &str, n: usize) -> Vec<String> {
    let arrived = fx.wait_until(|| events_for(&receiver.received(), id).len() >= n);
    std::thread::sleep(Duration::from_millis(300));
    let events = events_for(&receiver.received(), id);
    assert!(arrived, "expected {n} events for {id}, got {events:?}");
    events
}

// ----- POST /v1/messages -------------------------------------------------------

#[test]
fn send_message_is_queued_and_the_provider_gets_the_text() {
    let fx = fixture();
    let resp = fx.post(
        "/v1/messages",
        &json!({"channel": "telegram", "to": "+255 712-345-678", "text": "Karibu 👋", "sender_id": "OTPD"}),
    );
    let data = resp.assert_ok(202);
    assert_eq!(keys(data), set(&["message_id", "status"]));
    assert_eq!(data["status"], "queued");
    let id = data["message_id"].as_str().expect("message_id").to_string();

    assert!(
        fx.wait_until(|| fx.messages_to(PHONE) == 1),
        "the provider got nothing"
    );
    let sent = &fx.provider.messages()[0];
    assert_eq!(sent.message_id.to_string(), id);
    assert_eq!(sent.text, "Karibu 👋");
    assert_eq!(sent.channel, Channel::Telegram);
    assert_eq!(sent.to, PHONE, "the recipient is canonicalised");
    assert_eq!(sent.sender_id.as_deref(), Some("OTPD"));

    let view = wait_status(&fx, &id, "sent");
    assert_eq!(
        keys(&view),
        set(&[
            "message_id",
            "channel",
            "to",
            "status",
            "error_code",
            "error_message",
            "sender_id",
            "created_at",
            "updated_at"
        ])
    );
    assert_eq!(view["message_id"], id.as_str());
    assert_eq!(view["channel"], "telegram");
    assert_eq!(view["to"], PHONE);
    assert_eq!(view["sender_id"], "OTPD");
    assert_eq!(view["error_code"], Value::Null);
    assert_eq!(view["created_at"], "2026-06-07T12:00:00.000Z");
}

#[test]
fn send_message_with_a_failing_provider_ends_failed_with_provider_error() {
    let fx = fixture_with(|c| c.delivery.retry_schedule_secs = vec![]);
    fx.provider.set_failing(true);
    let id = send(&fx, &message_body("sms"));
    let view = wait_status(&fx, &id, "failed");
    assert_eq!(view["error_code"], "provider_error", "{view}");
    assert_eq!(fx.provider.messages().len(), 0);
}

#[test]
fn send_message_honours_the_idempotency_key() {
    let fx = fixture();
    let body = message_body("sms");
    let first = fx
        .call("POST", "/v1/messages")
        .header("idempotency-key", "msg-key-1")
        .json(&body)
        .send();
    first.assert_ok(202);
    let again = fx
        .call("POST", "/v1/messages")
        .header("idempotency-key", "msg-key-1")
        .json(&body)
        .send();
    assert_eq!((again.status, &again.text), (202, &first.text));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    fx.call("POST", "/v1/messages")
        .header("idempotency-key", "msg-key-1")
        .json(&json!({"channel": "sms", "to": PHONE, "text": "another text"}))
        .send()
        .assert_error(422, "idempotency_key_reused");
    fx.settle();
    assert_eq!(fx.provider.messages().len(), 1, "one message, sent once");
}

#[test]
fn text_length_is_1_to_1600_characters() {
    let fx = fixture();
    // Characters, not bytes: 1600 two-byte characters are fine.
    send(
        &fx,
        &json!({"channel": "sms", "to": PHONE, "text": "é".repeat(1600)}),
    );
    for text in [String::new(), "x".repeat(1601), "é".repeat(1601)] {
        fx.post(
            "/v1/messages",
            &json!({"channel": "sms", "to": PHONE, "text": text}),
        )
        .assert_error(422, "validation_failed");
    }
    fx.settle();
    assert_eq!(
        fx.provider.messages().len(),
        1,
        "only the valid text went out"
    );
}

#[test]
fn invalid_recipient_is_invalid_phone_number() {
    let fx = fixture();
    for to in ["12345", "+999 123", "not a phone", "☎☎☎☎☎☎☎☎", ""] {
        fx.post(
            "/v1/messages",
            &json!({"channel": "sms", "to": to, "text": "hi"}),
        )
        .assert_error(422, "invalid_phone_number");
    }
    fx.settle();
    assert!(fx.provider.messages().is_empty());
}

#[test]
fn refused_delivery_report_url_is_invalid_callback_url_and_nothing_is_queued() {
    let fx = fixture();
    for url in [
        "http://10.0.0.1/hook",
        "https://169.254.169.254/latest",
        "https://user:pw@example.com/hook",
        "ftp://example.com/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https:///hook",
        "https://intranet/hook",
        "https://hooks.internal/hook",
        "https://metadata.google.internal/hook",
        "https://printer.local./hook",
        "https://api.test/hook",
        "https://foo.example/hook",
        "https://nas.home.arpa/hook",
        "https://x.invalid/hook",
        "not a url",
    ] {
        fx.post(
            "/v1/messages",
            &json!({"channel": "sms", "to": PHONE, "text": "hi",
                    "delivery_report": {"webhook_url": url}}),
        )
        .assert_error(422, "invalid_callback_url");
    }
    fx.settle();
    assert!(fx.provider.messages().is_empty());
}

#[test]
fn send_message_bad_input_is_a_4xx_envelope_and_queues_nothing() {
    let fx = fixture();
    let ok = message_body("sms");
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = ok.clone();
        body.as_object_mut().expect("object").remove(key);
        body
    };
    let with_report = |r: Value| with("delivery_report", r);
    let invalid_request = [
        with("channel", json!("email")),
        with("channel", json!("SMS")),
        with("channel", json!(5)),
        with("channel", Value::Null),
        with("to", json!(255712345678u64)),
        with("text", json!(["hi"])),
        with("sender_id", json!(7)),
        without("channel"),
        without("to"),
        without("text"),
        with_report(json!("https://example.com/hook")),
        with_report(json!({})),
        with_report(
            json!({"webhook_url": "https://example.com/h", "delivery_report_type": "some"}),
        ),
        with_report(json!({"webhook_url": "https://example.com/h", "webhook_secret": 12})),
        json!([ok.clone()]),
        json!("channel"),
        json!(null),
    ];
    for body in invalid_request {
        let resp = fx
            .call("POST", "/v1/messages")
            .body(serde_json::to_vec(&body).expect("json"))
            .send();
        resp.assert_error(400, "invalid_request");
    }
    for raw in [
        &b""[..],
        b"   ",
        b"{",
        b"{\"channel\": \"sms\",}",
        b"\xff\xfe\x00{}",
        "{\"channel\":\"sms\",\"to\":\"\u{202e}\u{0}\",\"text\":\"\u{fffd}\"".as_bytes(),
    ] {
        fx.call("POST", "/v1/messages")
            .body(raw)
            .send()
            .assert_error(400, "invalid_request");
    }
    // Unicode junk in the right types is a semantic refusal, still a 4xx.
    let resp = fx.post(
        "/v1/messages",
        &json!({"channel": "sms", "to": "\u{202e}\u{0}٢٥٥٧١٢", "text": "\u{0}\u{fffd}"}),
    );
    resp.assert_error(422, "invalid_phone_number");
    fx.call("POST", "/v1/messages")
        .body(vec![b' '; 65 * 1024])
        .send()
        .assert_error(413, "payload_too_large");
    fx.call("POST", "/v1/messages")
        .no_auth()
        .json(&ok)
        .send()
        .assert_error(401, "unauthorized");
    fx.settle();
    assert!(fx.provider.messages().is_empty(), "nothing was queued");
}

// ----- GET /v1/messages/{id} ---------------------------------------------------

/// `GET /v1/messages/{id}{suffix}` is 404 `not_found` for another app's message,
/// an unknown id and a segment that is not a UUID.
fn assert_only_the_owner_finds(suffix: &str) {
    let fx = fixture();
    let id = send(&fx, &message_body("sms"));
    let other = fx.add_app("other", otpd_actors::AppSettings::default());
    fx.call("GET", &format!("/v1/messages/{id}{suffix}"))
        .api_key(&other.api_key)
        .send()
        .assert_error(404, "not_found");
    for junk in [
        "00000000-0000-4000-8000-000000000000",
        "not-a-uuid",
        "%E2%98%83",
    ] {
        fx.get(&format!("/v1/messages/{junk}{suffix}"))
            .assert_error(404, "not_found");
    }
    fx.get(&format!("/v1/messages/{id}{suffix}")).assert_ok(200);
}

#[test]
fn get_message_of_another_app_or_unknown_id_is_not_found() {
    assert_only_the_owner_finds("");
}

// ----- GET /v1/messages/{id}/history ----------------------------------------------

/// `GET /v1/messages/{id}/history`'s steps as `(status, at)`.
fn history(fx: &Fixture, id: &str) -> Vec<(String, String)> {
    let resp = fx.get(&format!("/v1/messages/{id}/history"));
    let data = resp.assert_ok(200);
    assert_eq!(
        keys(data),
        set(&["message_id", "status", "history"]),
        "{}",
        resp.text
    );
    assert_eq!(data["message_id"], id);
    let steps = data["history"].as_array().expect("history");
    assert_eq!(
        data["status"],
        steps.last().expect("a step")["status"],
        "the current status is the last step"
    );
    steps
        .iter()
        .map(|s| {
            (
                s["status"].as_str().expect("status").to_string(),
                s["at"].as_str().expect("at").to_string(),
            )
        })
        .collect()
}

#[test]
fn history_lists_each_status_the_message_reached_with_its_time() {
    let fx = fixture();
    let id = send_and_wait_sent(&fx, "whatsapp");
    fx.advance(5);
    assert_eq!(
        report_status(&fx, &id, "delivered"),
        (true, "delivered".into())
    );
    fx.advance(60);
    assert_eq!(report_status(&fx, &id, "read"), (true, "read".into()));
    // Reports that do not apply leave no step.
    assert_eq!(report_status(&fx, &id, "sent"), (false, "read".into()));
    assert_eq!(
        history(&fx, &id),
        [
            ("queued".to_string(), "2026-06-07T12:00:00.000Z".to_string()),
            ("sent".into(), "2026-06-07T12:00:00.000Z".into()),
            ("delivered".into(), "2026-06-07T12:00:05.000Z".into()),
            ("read".into(), "2026-06-07T12:01:05.000Z".into()),
        ]
    );
    let view = get_message(&fx, &id);
    assert_eq!(view["updated_at"], "2026-06-07T12:01:05.000Z");
}

#[test]
fn history_shows_a_skipped_status_as_absent_and_a_failure_with_its_reason() {
    let fx = fixture_with(|c| c.delivery.retry_schedule_secs = vec![]);
    // The provider fails: queued, then failed with the reason, nothing between.
    fx.provider.set_failing(true);
    let failed = send(&fx, &message_body("sms"));
    wait_status(&fx, &failed, "failed");
    let resp = fx.get(&format!("/v1/messages/{failed}/history"));
    let steps = resp.assert_ok(200)["history"].clone();
    assert_eq!(steps.as_array().map(Vec::len), Some(2), "{steps}");
    assert_eq!(steps[0]["status"], "queued");
    assert_eq!(
        keys(&steps[0]),
        set(&["status", "at"]),
        "no error fields on queued"
    );
    assert_eq!(steps[1]["status"], "failed");
    assert_eq!(steps[1]["error_code"], "provider_error");
    assert!(steps[1]["error_message"].is_string(), "{steps}");

    // A delivered report ahead of a receipt: sent is never reached.
    fx.provider.set_failing(false);
    let id = send_and_wait_sent(&fx, "sms");
    assert_eq!(history(&fx, &id).len(), 2);
    assert_eq!(
        report_status(&fx, &id, "delivered"),
        (true, "delivered".into())
    );
    let statuses: Vec<String> = history(&fx, &id).into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses, ["queued", "sent", "delivered"]);
}

#[test]
fn history_of_another_app_or_unknown_id_is_not_found() {
    assert_only_the_owner_finds("/history");
    fixture()
        .call(
            "GET",
            &format!("/v1/messages/{}/history", uuid::Uuid::nil()),
        )
        .no_auth()
        .send()
        .assert_error(401, "unauthorized");
}

// ----- POST /v1/providers/status --------------------------------------------------

#[test]
fn status_report_by_message_id_applies() {
    let fx = fixture();
    let id = send_and_wait_sent(&fx, "sms");
    assert_eq!(
        report_status(&fx, &id, "delivered"),
        (true, "delivered".into())
    );
    assert_eq!(get_message(&fx, &id)["status"], "delivered");
}

#[test]
fn status_report_by_provider_message_id_applies() {
    let fx = fixture();
    let id = send_and_wait_sent(&fx, "whatsapp");
    let resp = report(
        &fx,
        &json!({"provider_message_id": format!("prov-{id}"), "status": "read"}),
    );
    assert_eq!(
        resp.assert_ok(200),
        &json!({"applied": true, "status": "read"})
    );
    assert_eq!(get_message(&fx, &id)["status"], "read");
}

#[test]
fn status_report_without_the_right_bearer_token_is_unauthorized() {
    let fx = fixture();
    let id = send_and_wait_sent(&fx, "sms");
    let body = json!({"message_id": id, "status": "delivered"});
    let call = || {
        fx.call("POST", "/v1/providers/status")
            .no_auth()
            .json(&body)
    };
    call().send().assert_error(401, "unauthorized");
    for auth in [
        "Bearer wrong-token".to_string(),
        format!("Bearer {STATUS_TOKEN}x"),
        format!("Basic {STATUS_TOKEN}"),
        format!("Bearer{STATUS_TOKEN}"),
        "Bearer ".to_string(),
    ] {
        call()
            .header("authorization", &auth)
            .send()
            .assert_error(401, "unauthorized");
    }
    // An app's API key is not a provider credential.
    call()
        .api_key(API_KEY)
        .send()
        .assert_error(401, "unauthorized");
    // The token is checked before the body: junk without it is a 401 too.
    fx.call("POST", "/v1/providers/status")
        .no_auth()
        .body("{")
        .send()
        .assert_error(401, "unauthorized");
    assert_eq!(get_message(&fx, &id)["status"], "sent", "nothing applied");
}

#[test]
fn status_reports_are_unauthorized_when_no_status_token_is_configured() {
    let fx = fixture_with(|c| c.provider.status_token = None);
    let id = send_and_wait_sent(&fx, "sms");
    for auth in [format!("Bearer {STATUS_TOKEN}"), "Bearer ".to_string()] {
        fx.call("POST", "/v1/providers/status")
            .no_auth()
            .header("authorization", &auth)
            .json(&json!({"message_id": id, "status": "delivered"}))
            .send()
            .assert_error(401, "unauthorized");
    }
    assert_eq!(get_message(&fx, &id)["status"], "sent");
}

#[test]
fn rank_guard_decides_which_reports_apply() {
    let fx = fixture();
    let sms = send_and_wait_sent(&fx, "sms");
    let whatsapp = send_and_wait_sent(&fx, "whatsapp");
    let failed = send_and_wait_sent(&fx, "telegram");
    // (message, reported status, applied, status after)
    let table: [(&str, &str, bool, &str); 12] = [
        (&sms, "delivered", true, "delivered"),
        (&sms, "sent", false, "delivered"),
        (&sms, "failed", false, "delivered"),
        (&sms, "read", false, "delivered"),
        (&sms, "delivered", false, "delivered"),
        (&whatsapp, "delivered", true, "delivered"),
        (&whatsapp, "read", true, "read"),
        (&whatsapp, "delivered", false, "read"),
        (&failed, "failed", true, "failed"),
        (&failed, "sent", false, "failed"),
        (&failed, "delivered", false, "failed"),
        (&failed, "read", false, "failed"),
    ];
    for (id, status, applied, after) in table {
        assert_eq!(
            report_status(&fx, id, status),
            (applied, after.to_string()),
            "{status} on {id}"
        );
        assert_eq!(get_message(&fx, id)["status"], after);
    }
    assert_eq!(
        report_status(&fx, &failed, "failed"),
        (false, "failed".into())
    );
}

#[test]
fn failed_report_keeps_its_error_code_and_message() {
    let fx = fixture();
    let id = send_and_wait_sent(&fx, "sms");
    let resp = report(
        &fx,
        &json!({"message_id": id, "status": "failed",
                "error_code": "undeliverable", "error_message": "handset unreachable"}),
    );
    resp.assert_ok(200);
    let view = get_message(&fx, &id);
    assert_eq!(view["status"], "failed");
    assert_eq!(view["error_code"], "undeliverable");
    assert_eq!(view["error_message"], "handset unreachable");
}

#[test]
fn a_report_that_is_not_applied_changes_nothing_and_emits_nothing() {
    let fx = fixture();
    let receiver = Receiver::start(vec![Reply::Status(200, "{}")]);
    register_webhook(&fx, "sms", &receiver.url);
    let id = send_and_wait_sent(&fx, "sms");
    assert!(report_status(&fx, &id, "delivered").0);
    settled_events(&fx, &receiver, &id, 2);
    fx.advance(5);
    let before = get_message(&fx, &id);
    for status in ["sent", "delivered", "read", "failed", "delivered"] {
        assert_eq!(report_status(&fx, &id, status), (false, "delivered".into()));
    }
    assert_eq!(
        get_message(&fx, &id),
        before,
        "updated_at did not move either"
    );
    assert_eq!(
        settled_events(&fx, &receiver, &id, 2),
        ["sms.sent", "sms.delivered"]
    );
}

#[test]
fn status_report_bad_input_is_a_4xx_envelope() {
    let fx = fixture();
    let id = send_and_wait_sent(&fx, "sms");
    let invalid_request = [
        json!({"message_id": id, "status": "bounced"}),
        json!({"message_id": id, "status": "queued"}),
        json!({"message_id": id, "status": "DELIVERED"}),
        json!({"message_id": id, "status": 2}),
        json!({"message_id": id}),
        json!({"status": "delivered"}),
        json!({"message_id": null, "provider_message_id": null, "status": "delivered"}),
        json!({"message_id": 42, "status": "delivered"}),
        json!({"message_id": id, "status": "failed", "error_code": ["x"]}),
        json!([{"message_id": id, "status": "delivered"}]),
    ];
    for body in invalid_request {
        report(&fx, &body).assert_error(400, "invalid_request");
    }
    // Well-typed but out of range: the runtime's bounds (1–100 and 1–1000 chars).
    for body in [
        json!({"message_id": id, "status": "failed", "error_code": ""}),
        json!({"message_id": id, "status": "failed", "error_message": "x".repeat(1001)}),
    ] {
        report(&fx, &body).assert_error(422, "validation_failed");
    }
    for raw in [&b""[..], b"{", b"\xff\xfe", b"{\"status\":\"sent\"\x00}"] {
        fx.call("POST", "/v1/providers/status")
            .no_auth()
            .header("authorization", &format!("Bearer {STATUS_TOKEN}"))
            .body(raw)
            .send()
            .assert_error(400, "invalid_request");
    }
    let not_found = [
        json!({"message_id": "00000000-0000-4000-8000-000000000000", "status": "delivered"}),
        json!({"message_id": "not-a-uuid", "status": "delivered"}),
        json!({"message_id": "☃", "status": "delivered"}),
        json!({"provider_message_id": "prov-nothing", "status": "delivered"}),
        json!({"provider_message_id": "", "status": "delivered"}),
        json!({"provider_message_id": "p".repeat(300), "status": "delivered"}),
    ];
    for body in not_found {
        report(&fx, &body).assert_error(404, "not_found");
    }
    assert_eq!(get_message(&fx, &id)["status"], "sent", "nothing applied");
}

// ----- events under concurrency ------------------------------------------------------

/// A small deterministic shuffle (xorshift), so a failing order can be replayed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn status_of(name: &str) -> MessageStatus {
    name.parse().expect("a message status")
}

#[test]
fn concurrent_shuffled_duplicate_reports_apply_each_status_once_in_rank_order() {
    const THREADS: usize = 40;
    let fx = fixture();
    let receiver = Receiver::start(vec![Reply::Status(200, "{}")]);
    register_webhook(&fx, "whatsapp", &receiver.url);
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/v1/providers/status", fx.base);

    // Rounds with and without `failed` in the mix: with it, whichever of `failed`
    // and `delivered`/`read` the actor takes first decides the outcome.
    for (round, with_failed) in [(1u64, true), (2, false), (3, true), (4, true)] {
        let id = send_and_wait_sent(&fx, "whatsapp");
        let mut mix: Vec<&str> = (0..THREADS)
            .map(|i| match i % 4 {
                0 => "sent",
                1 => "delivered",
                2 => "read",
                _ if with_failed => "failed",
                _ => "delivered",
            })
            .collect();
        shuffle(&mut mix, 0x9e37_79b9_7f4a_7c15 ^ round);

        let barrier = Arc::new(Barrier::new(THREADS));
        let answers: Vec<(MessageStatus, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = mix
                .iter()
                .map(|status| {
                    let (client, url, barrier, id) = (&client, &url, barrier.clone(), &id);
                    s.spawn(move || {
                        barrier.wait();
                        let resp = client
                            .post(url)
                            .bearer_auth(STATUS_TOKEN)
                            .json(&json!({"message_id": id, "status": status}))
                            .send()
                            .expect("answered");
                        assert_eq!(resp.status().as_u16(), 200);
                        let body: Value = resp.json().expect("json");
                        (status_of(status), body["data"].clone())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("reporter thread"))
                .collect()
        });

        let mut applied: Vec<MessageStatus> = answers
            .iter()
            .filter(|(_, data)| data["applied"] == true)
            .map(|(status, data)| {
                assert_eq!(
                    data["status"],
                    status.as_str(),
                    "applied answers its status"
                );
                *status
            })
            .collect();
        let before_dedup = applied.len();
        applied.sort_by_key(|s| {
            ["sent", "delivered", "read", "failed"]
                .iter()
                .position(|n| *n == s.as_str())
        });
        applied.dedup();
        assert_eq!(
            applied.len(),
            before_dedup,
            "a status applied twice: {answers:?}"
        );
        // The applied statuses form one chain of the rank guard, starting at `sent`.
        let mut current = MessageStatus::Sent;
        for &next in &applied {
            assert!(
                status_applies(Channel::Whatsapp, current, next),
                "{current:?} -> {next:?} applied: {applied:?}"
            );
            current = next;
        }
        let expected_final = if applied.contains(&MessageStatus::Failed) {
            MessageStatus::Failed
        } else {
            MessageStatus::Read
        };
        assert_eq!(current, expected_final, "round {round}: {applied:?}");
        if !with_failed {
            assert_ne!(current, MessageStatus::Failed);
        }
        assert_eq!(get_message(&fx, &id)["status"], expected_final.as_str());

        // Exactly the applied transitions reached the webhook, each once.
        let mut expected: Vec<String> = vec!["whatsapp.sent".into()];
        expected.extend(applied.iter().map(|s| format!("whatsapp.{}", s.as_str())));
        let mut got = settled_events(&fx, &receiver, &id, expected.len());
        got.sort_by_key(|e| expected.iter().position(|x| x == e));
        assert_eq!(got, expected, "round {round}");
    }
}

#[test]
fn otp_messages_share_the_lifecycle_and_emit_channel_events() {
    let fx = fixture();
    let receiver = Receiver::start(vec![Reply::Status(200, "{}")]);
    let secret = register_webhook(&fx, "sms", &receiver.url);
    let otp = fx.request_otp(PHONE);
    let id = otp["message_id"].as_str().expect("message_id").to_string();
    let code = fx.code_for(&id);

    assert_eq!(settled_events(&fx, &receiver, &id, 1), ["sms.sent"]);
    assert_eq!(
        report_status(&fx, &id, "delivered"),
        (true, "delivered".into())
    );
    assert_eq!(
        settled_events(&fx, &receiver, &id, 2),
        ["sms.sent", "sms.delivered"]
    );
    for got in receiver.received() {
        let event = got.json();
        assert_eq!(event["channel"], "sms");
        assert_eq!(event["data"]["to"], PHONE);
        assert_eq!(
            got.header("x-otpd-event"),
            event["event"].as_str().unwrap_or("")
        );
        assert!(verify_otpd_signature(
            &secret,
            got.body.as_bytes(),
            got.header("x-otpd-signature")
        ));
        assert!(!got.body.contains(&code), "the code leaked: {}", got.body);
    }
    assert_eq!(get_message(&fx, &id)["status"], "delivered");
    assert_eq!(report_status(&fx, &id, "sent"), (false, "delivered".into()));
}

// ----- per-message delivery reports ----------------------------------------------------

/// Checks the report headers: the secret echoed and the signature keyed by it.
#[track_caller]
fn assert_signed_with_report_secret(got: &Received) {
    assert_eq!(got.header("x-otpd-webhook-secret"), REPORT_SECRET);
    assert!(
        verify_otpd_signature(
            REPORT_SECRET,
            got.body.as_bytes(),
            got.header("x-otpd-signature")
        ),
        "signature {:?} over {}",
        got.header("x-otpd-signature"),
        got.body
    );
}

#[test]
fn delivery_report_all_reports_sent_and_delivered_signed_with_the_webhook_secret() {
    let fx = fixture();
    let receiver = Receiver::start(vec![Reply::Status(200, "{}")]);
    let id = send(
        &fx,
        &json!({"channel": "sms", "to": PHONE, "text": "hi", "sender_id": "OTPD",
                "delivery_report": {"webhook_url": receiver.url, "webhook_secret": REPORT_SECRET}}),
    );
    let got = receiver.wait_for_blocking(1);
    assert_eq!(
        got[0].json(),
        json!({"message_id": id, "delivery_report_type": "all", "is_final": false,
               "channel": "sms", "status": "sent", "sender_id": "OTPD"})
    );
    assert_signed_with_report_secret(&got[0]);

    assert!(report_status(&fx, &id, "delivered").0);
    let got = receiver.wait_for_blocking(2);
    assert_eq!(
        got[1].json(),
        json!({"message_id": id, "delivery_report_type": "all", "is_final": true,
               "channel": "sms", "status": "delivered", "sender_id": "OTPD"})
    );
    assert_signed_with_report_secret(&got[1]);
    fx.settle();
    assert_eq!(
        receiver.received().len(),
        2,
        "one report per applied status"
    );

    // The reports are in the app's delivery log.
    let log = fx.get("/v1/deliveries?kind=report");
    let events: BTreeSet<String> = log.assert_ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["event"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(events, set(&["sms.sent", "sms.delivered"]));

    // A report's detail names the secret header but never shows the secret.
    let delivery_id = got[1].header("x-otpd-delivery-id");
    let detail = fx.get(&format!("/v1/webhooks/deliveries/{delivery_id}"));
    let detail = detail.assert_ok(200);
    assert_eq!(
        detail["headers"]["X-Otpd-Webhook-Secret"],
        otpd_actors::SECRET_NOT_SHOWN
    );
    assert_eq!(detail["headers"]["X-Otpd-Delivery-Id"], delivery_id);
    assert!(!detail.to_string().contains(REPORT_SECRET));
}

#[test]
fn delivery_report_final_sends_only_delivered() {
    let fx = fixture();
    let receiver = Receiver::start(vec![Reply::Status(200, "{}")]);
    let id = send(
        &fx,
        &json!({"channel": "whatsapp", "to": PHONE, "text": "hi",
                "delivery_report": {"webhook_url": receiver.url, "delivery_report_type": "final"}}),
    );
    wait_status(&fx, &id, "sent");
    assert!(report_status(&fx, &id, "delivered").0);
    assert!(report_status(&fx, &id, "read").0);
    let got = receiver.wait_for_blocking(1);
    fx.settle();
    assert_eq!(receiver.received().len(), 1, "no report for sent or read");
    assert_eq!(
        got[0].json(),
        json!({"message_id": id, "delivery_report_type": "final", "is_final": true,
               "channel": "whatsapp", "status": "delivered"})
    );
    // No secret given: no secret header and no signature.
    assert_eq!(got[0].header("x-otpd-webhook-secret"), "");
    assert_eq!(got[0].header("x-otpd-signature"), "");
}

#[test]
fn failed_delivery_report_carries_the_reason() {
    let fx = fixture();
    let receiver = Receiver::start(vec![Reply::Status(200, "{}")]);
    let id = send(
        &fx,
        &json!({"channel": "sms", "to": PHONE, "text": "hi",
                "delivery_report": {"webhook_url": receiver.url, "delivery_report_type": "final",
                                    "webhook_secret": REPORT_SECRET}}),
    );
    wait_status(&fx, &id, "sent");
    report(
        &fx,
        &json!({"message_id": id, "status": "failed",
                "error_code": "undeliverable", "error_message": "handset unreachable"}),
    )
    .assert_ok(200);
    let got = receiver.wait_for_blocking(1);
    assert_eq!(
        got[0].json(),
        json!({"message_id": id, "delivery_report_type": "final", "is_final": true,
               "channel": "sms", "status": "failed", "reason": "handset unreachable"})
    );
    assert_signed_with_report_secret(&got[0]);
}
