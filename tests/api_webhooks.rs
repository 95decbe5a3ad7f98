//! SPEC section 6 over real sockets: webhook management, the delivery log, manual
//! retry and recovery, and what a receiver actually gets (headers, signatures, body).
//!
//! Receivers are real HTTP servers on 127.0.0.1 (`otpd_test_support::Receiver`); the fixture
//! opens the URL policy for them with `callbacks.allow_http` and `allowed_cidrs`.

mod common;

use std::collections::BTreeSet;

use common::{Fixture, FixtureOptions, Resp, APP_KEY, PHONE};
use otpd_actors::signing::{verify_otpd_signature, verify_standard_signature};
use otpd_actors::RuntimeConfig;
use otpd_test_support::{Received, Receiver, Reply};
use serde_json::{json, Value};

// ----- helpers ----------------------------------------------------------------

/// A fixture whose deliveries may reach 127.0.0.1 over plain HTTP, retrying after
/// the delays in `schedule` (seconds on the manual clock; `[]` = one attempt only).
fn fixture(schedule: &[u64]) -> Fixture {
    let schedule = schedule.to_vec();
    Fixture::with(FixtureOptions {
        tweak_config: Some(Box::new(move |c: &mut RuntimeConfig| {
            c.callbacks.allow_http = true;
            c.callbacks.allowed_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
            c.delivery.retry_schedule_secs = schedule;
        })),
        ..FixtureOptions::default()
    })
}

/// A URL on 127.0.0.1 nobody listens on: fine for tests that deliver nothing.
const QUIET_URL: &str = "http://127.0.0.1:9/hook";

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// `POST /v1/webhooks` for `service_type` at `url`; asserts 201 and returns `data`.
fn create(fx: &Fixture, service_type: &str, url: &str) -> Value {
    let resp = fx.post(
        "/v1/webhooks",
        &json!({"url": url, "service_type": service_type}),
    );
    resp.assert_ok(201).clone()
}

/// `POST /v1/webhooks/{id}/test`; asserts 202 and returns the delivery id.
fn send_test(fx: &Fixture, id: &str) -> String {
    let resp = fx.post(&format!("/v1/webhooks/{id}/test"), &json!({}));
    str_of(resp.assert_ok(202), "delivery_id").to_string()
}

fn detail(fx: &Fixture, delivery_id: &str) -> Value {
    fx.get(&format!("/v1/webhooks/deliveries/{delivery_id}"))
        .assert_ok(200)
        .clone()
}

/// Polls a delivery until `cond` holds on its detail; returns that detail.
#[track_caller]
fn wait_delivery(fx: &Fixture, delivery_id: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/v1/webhooks/deliveries/{delivery_id}");
    let ok = fx.wait_until(|| {
        let d = fx.get(&path);
        d.status == 200 && cond(d.data())
    });
    let last = detail(fx, delivery_id);
    assert!(ok, "delivery {delivery_id} never reached the state: {last}");
    last
}

fn items(resp: &Resp) -> Vec<Value> {
    resp.assert_ok(200)["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no items in {}", resp.text))
}

/// The `X-Otpd-Signature` of `r` verifies with `secret`.
fn otpd_signed_by(r: &Received, secret: &str) -> bool {
    verify_otpd_signature(secret, r.body.as_bytes(), r.header("x-otpd-signature"))
}

/// The `webhook-signature` of `r` has a `v1` entry made with `secret`.
fn standard_signed_by(r: &Received, secret: &str) -> bool {
    let ts: i64 = r
        .header("webhook-timestamp")
        .parse()
        .expect("webhook-timestamp is unix seconds");
    verify_standard_signature(
        secret,
        r.header("webhook-id"),
        ts,
        r.body.as_bytes(),
        r.header("webhook-signature"),
    )
}

// ----- create -----------------------------------------------------------------

#[test]
fn create_answers_201_with_a_whsec_secret_and_every_active_event_by_default() {
    let fx = fixture(&[]);
    let resp = fx.post(
        "/v1/webhooks",
        &json!({"url": QUIET_URL, "service_type": "otp", "description": "ops"}),
    );
    let data = resp.assert_ok(201);
    assert_eq!(
        keys(data),
        set(&[
            "id",
            "url",
            "service_type",
            "events",
            "status",
            "description",
            "secret",
            "created_at",
            "updated_at"
        ])
    );
    let id = str_of(data, "id");
    let hex = id.strip_prefix("wh_").expect("wh_ prefix");
    assert_eq!(hex.len(), 32);
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    // `whsec_` + base64 of 32 bytes: 44 characters ending in one `=`.
    let b64 = str_of(data, "secret")
        .strip_prefix("whsec_")
        .expect("whsec_ prefix");
    assert_eq!(b64.len(), 44, "{b64}");
    assert!(b64.ends_with('=') && !b64.ends_with("=="));
    assert!(b64[..43]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'));
    assert_eq!(
        data["events"],
        json!(["otp.created", "otp.verified", "otp.failed", "otp.expired"])
    );
    assert_eq!(data["status"], "active");
    assert_eq!(data["service_type"], "otp");
    assert_eq!(data["url"], QUIET_URL);
    assert_eq!(data["description"], "ops");
    assert_eq!(data["created_at"], "2026-06-07T12:00:00.000Z");
    assert_eq!(data["updated_at"], "2026-06-07T12:00:00.000Z");

    let sms = create(&fx, "sms", QUIET_URL);
    assert_eq!(
        sms["events"],
        json!(["sms.sent", "sms.delivered", "sms.failed"])
    );
    assert_ne!(
        sms["secret"], data["secret"],
        "each webhook has its own secret"
    );
}

#[test]
fn reserved_events_are_accepted() {
    let fx = fixture(&[]);
    let resp = fx.post(
        "/v1/webhooks",
        &json!({"url": QUIET_URL, "service_type": "otp",
                "events": ["otp.verified", "identity.created", "application.deleted"]}),
    );
    assert_eq!(
        resp.assert_ok(201)["events"],
        json!(["otp.verified", "identity.created", "application.deleted"])
    );
}

#[test]
fn unknown_or_foreign_events_are_validation_failed_and_create_nothing() {
    let fx = fixture(&[]);
    for events in [
        json!(["otp.exploded"]),
        json!(["sms.sent"]),
        json!(["flake.verified"]),
        json!([]),
    ] {
        fx.post(
            "/v1/webhooks",
            &json!({"url": QUIET_URL, "service_type": "otp", "events": events}),
        )
        .assert_error(422, "validation_failed");
    }
    assert!(items(&fx.get("/v1/webhooks")).is_empty());
}

#[test]
fn flake_and_unknown_service_types_are_validation_failed() {
    let fx = fixture(&[]);
    for service_type in ["flake", "email", "OTP", ""] {
        fx.post(
            "/v1/webhooks",
            &json!({"url": QUIET_URL, "service_type": service_type}),
        )
        .assert_error(422, "validation_failed");
    }
    assert!(items(&fx.get("/v1/webhooks")).is_empty());
}

#[test]
fn second_webhook_for_the_same_service_type_is_conflict() {
    let fx = fixture(&[]);
    let first = create(&fx, "otp", QUIET_URL);
    // The list is oldest first; give the second one a later `created_at`.
    fx.advance(1);
    fx.post(
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.2:9/other", "service_type": "otp"}),
    )
    .assert_error(409, "conflict");
    // Another service type is fine, and so is the same type for another app.
    create(&fx, "telegram", QUIET_URL);
    let other = fx.add_app("other", otpd_actors::AppSettings::default());
    fx.call("POST", "/v1/webhooks")
        .api_key(&other.api_key)
        .json(&json!({"url": QUIET_URL, "service_type": "otp"}))
        .send()
        .assert_ok(201);
    let list = items(&fx.get("/v1/webhooks"));
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], first["id"]);
}

#[test]
fn concurrent_creates_for_one_service_type_make_exactly_one_webhook() {
    let fx = fixture(&[]);
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let fx = &fx;
                s.spawn(move || {
                    let r = fx.post(
                        "/v1/webhooks",
                        &json!({"url": format!("http://127.0.0.1:9/{n}"), "service_type": "sms"}),
                    );
                    (r.status, r.code().to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let conflicts = answers.iter().filter(|(_, c)| c == "conflict").count();
    assert_eq!((created, conflicts), (1, 7), "{answers:?}");
    assert_eq!(items(&fx.get("/v1/webhooks")).len(), 1);
}

#[test]
fn refused_url_is_invalid_callback_url_and_creates_nothing() {
    let fx = fixture(&[]);
    for url in [
        "http://10.0.0.1/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://0xa.1/hook",
        "http://[fc00::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://user:pw@127.0.0.1:9/hook",
        "ftp://127.0.0.1/hook",
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
        let resp = fx.post("/v1/webhooks", &json!({"url": url, "service_type": "otp"}));
        assert_eq!(
            (resp.status, resp.code()),
            (422, "invalid_callback_url"),
            "{url}: {}",
            resp.text
        );
    }
    assert!(items(&fx.get("/v1/webhooks")).is_empty());
}

#[test]
fn https_only_unless_allow_http_is_set() {
    let fx = Fixture::start();
    fx.post(
        "/v1/webhooks",
        &json!({"url": "http://93.184.216.34/hook", "service_type": "otp"}),
    )
    .assert_error(422, "invalid_callback_url");
    fx.post(
        "/v1/webhooks",
        &json!({"url": "https://127.0.0.1/hook", "service_type": "otp"}),
    )
    .assert_error(422, "invalid_callback_url");
    assert!(items(&fx.get("/v1/webhooks")).is_empty());
}

#[test]
fn malformed_bodies_and_wrong_types_are_invalid_request_and_create_nothing() {
    let fx = fixture(&[]);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("truncated", b"{\"url\":".to_vec()),
        ("array", b"[]".to_vec()),
        ("not utf-8", b"\xff\xfe".to_vec()),
        (
            "url a number",
            br#"{"url":5,"service_type":"otp"}"#.to_vec(),
        ),
        (
            "events a string",
            br#"{"url":"http://127.0.0.1:9/","service_type":"otp","events":"otp.created"}"#
                .to_vec(),
        ),
        (
            "events of numbers",
            br#"{"url":"http://127.0.0.1:9/","service_type":"otp","events":[1]}"#.to_vec(),
        ),
        (
            "description an object",
            br#"{"url":"http://127.0.0.1:9/","service_type":"otp","description":{}}"#.to_vec(),
        ),
        ("missing url", br#"{"service_type":"otp"}"#.to_vec()),
        (
            "missing service_type",
            br#"{"url":"http://127.0.0.1:9/"}"#.to_vec(),
        ),
        (
            "unknown field",
            br#"{"url":"http://127.0.0.1:9/","service_type":"otp","event":["otp.created"]}"#
                .to_vec(),
        ),
    ];
    for (what, body) in bad {
        let resp = fx.call("POST", "/v1/webhooks").body(body).send();
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_request"),
            "{what}: {}",
            resp.text
        );
        assert_eq!(resp.header("content-type"), Some("application/json"));
    }
    let big = format!(
        r#"{{"url":"http://127.0.0.1:9/","service_type":"otp","description":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    fx.call("POST", "/v1/webhooks")
        .body(big)
        .send()
        .assert_error(413, "payload_too_large");
    assert!(items(&fx.get("/v1/webhooks")).is_empty());

    // The same on the other body routes.
    let id = str_of(&create(&fx, "otp", QUIET_URL), "id").to_string();
    for (method, path, body) in [
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            &br#"{"status":1}"#[..],
        ),
        ("PATCH", format!("/v1/webhooks/{id}"), b"{"),
        ("PATCH", format!("/v1/webhooks/{id}"), br#"{"secret":"x"}"#),
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            br#"{"events":"otp.created"}"#,
        ),
        ("POST", format!("/v1/webhooks/{id}/recover"), b"{}"),
        (
            "POST",
            format!("/v1/webhooks/{id}/recover"),
            br#"{"since":5}"#,
        ),
        ("POST", format!("/v1/webhooks/{id}/recover"), b"nope"),
    ] {
        let resp = fx.call(method, &path).body(body.to_vec()).send();
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_request"),
            "{method} {path} {}: {}",
            String::from_utf8_lossy(body),
            resp.text
        );
    }
    let after = fx.get(&format!("/v1/webhooks/{id}"));
    assert_eq!(
        after.assert_ok(200)["status"],
        "active",
        "the webhook changed"
    );
}

// ----- list, get, patch, delete -------------------------------------------------

#[test]
fn list_and_get_never_show_the_secret() {
    let fx = fixture(&[]);
    let created = create(&fx, "otp", QUIET_URL);
    let id = str_of(&created, "id");
    let secret = str_of(&created, "secret");

    let list = fx.get("/v1/webhooks");
    let all = items(&list);
    assert_eq!(all.len(), 1);
    assert!(!list.text.contains(secret), "the list shows the secret");
    assert!(all[0].get("secret").is_none());
    assert_eq!(all[0]["id"], id);

    let one = fx.get(&format!("/v1/webhooks/{id}"));
    let data = one.assert_ok(200);
    assert!(!one.text.contains(secret), "get shows the secret");
    let mut expected = created.clone();
    if let Some(o) = expected.as_object_mut() {
        o.remove("secret");
    }
    assert_eq!(data, &expected);
}

#[test]
fn patch_changes_only_the_fields_given() {
    let fx = fixture(&[]);
    let created = create(&fx, "otp", QUIET_URL);
    let id = str_of(&created, "id");
    let path = format!("/v1/webhooks/{id}");
    fx.advance(5);

    let resp = fx
        .call("PATCH", &path)
        .json(&json!({"events": ["otp.verified"], "description": "only verified"}))
        .send();
    let data = resp.assert_ok(200);
    assert_eq!(data["events"], json!(["otp.verified"]));
    assert_eq!(data["description"], "only verified");
    assert_eq!(data["url"], QUIET_URL);
    assert_eq!(data["status"], "active");
    assert_eq!(data["created_at"], created["created_at"]);
    assert_eq!(data["updated_at"], "2026-06-07T12:00:05.000Z");
    assert!(data.get("secret").is_none());

    let data = fx
        .call("PATCH", &path)
        .json(&json!({"status": "disabled", "url": "http://127.0.0.2:9/new"}))
        .send()
        .assert_ok(200)
        .clone();
    assert_eq!(data["status"], "disabled");
    assert_eq!(data["url"], "http://127.0.0.2:9/new");
    assert_eq!(data["events"], json!(["otp.verified"]));
    assert_eq!(fx.get(&path).assert_ok(200), &data, "the change is stored");

    fx.call("PATCH", &path)
        .json(&json!({"status": "paused"}))
        .send()
        .assert_error(422, "validation_failed");
    fx.call("PATCH", &path)
        .json(&json!({"events": ["sms.sent"]}))
        .send()
        .assert_error(422, "validation_failed");
    fx.call("PATCH", &path)
        .json(&json!({"url": "http://10.1.2.3/"}))
        .send()
        .assert_error(422, "invalid_callback_url");
    assert_eq!(
        fx.get(&path).assert_ok(200),
        &data,
        "refused patches change nothing"
    );
}

#[test]
fn delete_answers_204_with_no_body_and_the_webhook_is_gone() {
    let fx = fixture(&[]);
    let id = str_of(&create(&fx, "otp", QUIET_URL), "id").to_string();
    let resp = fx.call("DELETE", &format!("/v1/webhooks/{id}")).send();
    assert_eq!(resp.status, 204, "{}", resp.text);
    assert!(resp.text.is_empty(), "204 with a body: {}", resp.text);
    fx.get(&format!("/v1/webhooks/{id}"))
        .assert_error(404, "not_found");
    fx.call("DELETE", &format!("/v1/webhooks/{id}"))
        .send()
        .assert_error(404, "not_found");
    assert!(items(&fx.get("/v1/webhooks")).is_empty());
    // The service type is free again.
    create(&fx, "otp", QUIET_URL);
}

#[test]
fn unknown_ids_and_other_apps_webhooks_are_not_found_everywhere() {
    let fx = fixture(&[]);
    let id = str_of(&create(&fx, "otp", QUIET_URL), "id").to_string();
    let other = fx.add_app("other", otpd_actors::AppSettings::default());
    let since = json!({"since": "2026-06-07T11:00:00Z"});
    let routes = |id: &str| -> Vec<(&'static str, String, Option<Value>)> {
        vec![
            ("GET", format!("/v1/webhooks/{id}"), None),
            ("PATCH", format!("/v1/webhooks/{id}"), Some(json!({}))),
            ("DELETE", format!("/v1/webhooks/{id}"), None),
            ("GET", format!("/v1/webhooks/{id}/secret"), None),
            ("POST", format!("/v1/webhooks/{id}/secret/rotate"), None),
            (
                "POST",
                format!("/v1/webhooks/{id}/recover"),
                Some(since.clone()),
            ),
            ("POST", format!("/v1/webhooks/{id}/test"), None),
            ("GET", format!("/v1/webhooks/{id}/deliveries"), None),
            ("GET", format!("/v1/webhooks/{id}/stats"), None),
        ]
    };
    // Another app's key on our webhook, and unknown ids with our key.
    for (method, path, body) in routes(&id) {
        let mut call = fx.call(method, &path).api_key(&other.api_key);
        if let Some(b) = &body {
            call = call.json(b);
        }
        let resp = call.send();
        assert_eq!(
            (resp.status, resp.code()),
            (404, "not_found"),
            "{method} {path} as another app: {}",
            resp.text
        );
    }
    for unknown in [
        "wh_00000000000000000000000000000000",
        "nope",
        &"x".repeat(300),
    ] {
        for (method, path, body) in routes(unknown) {
            let mut call = fx.call(method, &path);
            if let Some(b) = &body {
                call = call.json(b);
            }
            let resp = call.send();
            assert_eq!(
                (resp.status, resp.code()),
                (404, "not_found"),
                "{method} {path}: {}",
                resp.text
            );
        }
    }
    // Our webhook survived all of that.
    fx.get(&format!("/v1/webhooks/{id}")).assert_ok(200);

    // Deliveries: unknown ids, and another app's delivery.
    let dlv = send_test(&fx, &id);
    for unknown in [
        "dlv_00000000000000000000000000000000",
        "nope",
        &"d".repeat(100),
    ] {
        fx.get(&format!("/v1/webhooks/deliveries/{unknown}"))
            .assert_error(404, "not_found");
        fx.post(
            &format!("/v1/webhooks/deliveries/{unknown}/retry"),
            &json!({}),
        )
        .assert_error(404, "not_found");
    }
    fx.call("GET", &format!("/v1/webhooks/deliveries/{dlv}"))
        .api_key(&other.api_key)
        .send()
        .assert_error(404, "not_found");
    fx.call("POST", &format!("/v1/webhooks/deliveries/{dlv}/retry"))
        .api_key(&other.api_key)
        .send()
        .assert_error(404, "not_found");
    let theirs = fx
        .call("GET", "/v1/deliveries")
        .api_key(&other.api_key)
        .send();
    assert!(items(&theirs).is_empty(), "another app sees our deliveries");
}

#[test]
fn every_webhook_route_needs_an_api_key() {
    let fx = fixture(&[]);
    let id = str_of(&create(&fx, "otp", QUIET_URL), "id").to_string();
    let dlv = "dlv_00000000000000000000000000000000";
    let routes = [
        ("GET", "/v1/webhooks".to_string()),
        ("POST", "/v1/webhooks".to_string()),
        ("GET", format!("/v1/webhooks/{id}")),
        ("PATCH", format!("/v1/webhooks/{id}")),
        ("DELETE", format!("/v1/webhooks/{id}")),
        ("GET", format!("/v1/webhooks/{id}/secret")),
        ("POST", format!("/v1/webhooks/{id}/secret/rotate")),
        ("POST", format!("/v1/webhooks/{id}/recover")),
        ("POST", format!("/v1/webhooks/{id}/test")),
        ("GET", format!("/v1/webhooks/{id}/deliveries")),
        ("GET", format!("/v1/webhooks/{id}/stats")),
        ("GET", "/v1/deliveries".to_string()),
        ("GET", format!("/v1/webhooks/deliveries/{dlv}")),
        ("POST", format!("/v1/webhooks/deliveries/{dlv}/retry")),
    ];
    for (method, path) in &routes {
        for call in [
            fx.call(method, path).no_auth(),
            fx.call(method, path).api_key("sk_wrong"),
        ] {
            let resp = call
                .json(&json!({"url": QUIET_URL, "service_type": "sms"}))
                .send();
            assert_eq!(
                (resp.status, resp.code()),
                (401, "unauthorized"),
                "{method} {path}: {}",
                resp.text
            );
        }
    }
    // Nothing happened: the webhook is there, unchanged, and alone.
    let list = items(&fx.get("/v1/webhooks"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
}

#[test]
fn wrong_methods_get_the_405_envelope() {
    let fx = fixture(&[]);
    let id = str_of(&create(&fx, "otp", QUIET_URL), "id").to_string();
    for (method, path) in [
        ("PUT", "/v1/webhooks".to_string()),
        ("POST", format!("/v1/webhooks/{id}")),
        ("POST", format!("/v1/webhooks/{id}/secret")),
        ("GET", format!("/v1/webhooks/{id}/secret/rotate")),
        ("GET", format!("/v1/webhooks/{id}/test")),
        ("DELETE", format!("/v1/webhooks/{id}/stats")),
        ("POST", "/v1/deliveries".to_string()),
        ("DELETE", "/v1/webhooks/deliveries/dlv_x".to_string()),
        ("GET", "/v1/webhooks/deliveries/dlv_x/retry".to_string()),
    ] {
        fx.call(method, &path)
            .send()
            .assert_error(405, "method_not_allowed");
    }
}

// ----- secrets and signatures ----------------------------------------------------

#[test]
fn test_event_arrives_signed_with_every_header_of_the_spec() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![Reply::Status(200, "")]);
    let created = create(&fx, "otp", &rx.url);
    let (id, secret) = (str_of(&created, "id"), str_of(&created, "secret"));
    let delivery_id = send_test(&fx, id);

    let got = rx.wait_for_blocking(1);
    let r = &got[0];
    let body = r.json();
    assert_eq!(
        keys(&body),
        set(&["id", "event", "channel", "app_id", "created_at", "data"])
    );
    let event_id = str_of(&body, "id");
    assert!(
        event_id.starts_with("evt_") && event_id.len() == 36,
        "{event_id}"
    );
    assert_eq!(body["event"], "otp.test");
    assert_eq!(body["channel"], "otp");
    assert_eq!(body["data"], json!({"test": true}));
    let app_id = fx.app.app.app_id.to_string();
    assert_eq!(body["app_id"], app_id.as_str());
    assert_eq!(body["created_at"], "2026-06-07T12:00:00.000Z");

    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("user-agent"), "otpd-webhook/1.0");
    assert_eq!(r.header("x-otpd-event"), "otp.test");
    assert_eq!(r.header("x-otpd-event-id"), event_id);
    assert_eq!(r.header("x-otpd-timestamp"), "2026-06-07T12:00:00.000Z");
    assert_eq!(r.header("x-otpd-app-id"), app_id);
    assert_eq!(r.header("x-otpd-service-type"), "otp");
    assert_eq!(r.header("x-otpd-delivery-id"), delivery_id);
    assert_eq!(r.header("x-otpd-attempt"), "1");
    assert!(r.header("x-otpd-signature").starts_with("sha256="));
    assert!(
        otpd_signed_by(r, secret),
        "X-Otpd-Signature does not verify"
    );
    assert_eq!(r.header("webhook-id"), event_id);
    // 2026-06-07T12:00:00Z in unix seconds.
    assert_eq!(r.header("webhook-timestamp"), "1780833600");
    assert!(r.header("webhook-signature").starts_with("v1,"));
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    assert!(
        standard_signed_by(r, secret),
        "webhook-signature does not verify"
    );
    assert!(!otpd_signed_by(r, "whsec_other"));
}

#[test]
fn secret_is_readable_and_rotation_signs_with_both_during_the_grace_period() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![Reply::Status(200, "")]);
    let created = create(&fx, "otp", &rx.url);
    let (id, old) = (str_of(&created, "id"), str_of(&created, "secret"));

    let got = fx.get(&format!("/v1/webhooks/{id}/secret"));
    assert_eq!(got.assert_ok(200), &json!({"secret": old}));

    let rotated = fx.post(&format!("/v1/webhooks/{id}/secret/rotate"), &json!({}));
    let data = rotated.assert_ok(200);
    assert_eq!(keys(data), set(&["secret", "previous_secret_expires_at"]));
    // The fixture's clock reads 2026-06-07T12:00:00Z; the grace is one day.
    assert_eq!(
        str_of(data, "previous_secret_expires_at"),
        "2026-06-08T12:00:00.000Z"
    );
    let new = str_of(data, "secret");
    assert!(new.starts_with("whsec_") && new.len() == old.len());
    assert_ne!(new, old);
    assert_eq!(
        fx.get(&format!("/v1/webhooks/{id}/secret")).assert_ok(200),
        &json!({"secret": new})
    );

    send_test(&fx, id);
    let r = &rx.wait_for_blocking(1)[0];
    let entries: Vec<&str> = r.header("webhook-signature").split(' ').collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.starts_with("v1,")));
    assert!(standard_signed_by(r, new), "the new secret signs");
    assert!(standard_signed_by(r, old), "the old secret still signs");
    assert!(
        otpd_signed_by(r, new),
        "X-Otpd-Signature uses the new secret"
    );
    assert!(
        !otpd_signed_by(r, old),
        "X-Otpd-Signature uses the new secret only"
    );
    assert!(
        verify_otpd_signature(
            old,
            r.body.as_bytes(),
            r.header("x-otpd-signature-previous")
        ),
        "X-Otpd-Signature-Previous carries the previous secret's signature"
    );

    // After the grace period (one day by default) only the new secret signs.
    fx.advance(86_401);
    send_test(&fx, id);
    let r = &rx.wait_for_blocking(2)[1];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    assert!(standard_signed_by(r, new));
    assert!(!standard_signed_by(r, old));
    assert!(!r.headers.contains_key("x-otpd-signature-previous"));
}

// ----- the delivery log ---------------------------------------------------------

#[test]
fn deliveries_filter_by_status_and_page_with_a_cursor() {
    // One retry after 60 s (manual clock): a failed first attempt stays pending.
    let fx = fixture(&[60]);
    let rx = Receiver::start(vec![
        Reply::Status(200, ""),
        Reply::Status(200, ""),
        Reply::Status(500, ""),
    ]);
    let id = str_of(&create(&fx, "otp", &rx.url), "id").to_string();
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(send_test(&fx, &id));
        rx.wait_for_blocking(n);
        fx.advance(1);
    }
    let list = |query: &str| items(&fx.get(&format!("/v1/webhooks/{id}/deliveries{query}")));
    // The receiver answering comes before the log records it: wait for the log.
    assert!(
        fx.wait_until(|| {
            let pending = list("?status=pending");
            pending.len() == 2
                && pending.iter().all(|d| d["attempts"] == 1)
                && list("?status=succeeded").len() == 2
        }),
        "two deliveries succeeded and two wait for their retry"
    );
    assert!(list("?status=failed").is_empty());

    let all = list("");
    assert_eq!(all.len(), 4);
    let newest_first: Vec<&str> = all.iter().map(|d| str_of(d, "delivery_id")).collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.reverse();
    assert_eq!(newest_first, expected, "newest first");
    let item = &all[0];
    for field in [
        "delivery_id",
        "event_id",
        "event",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "created_at",
        "updated_at",
        "next_attempt_at",
    ] {
        assert!(item.get(field).is_some(), "item without {field}: {item}");
    }
    assert_eq!(item["event"], "otp.test");
    assert_eq!(item["status"], "pending");
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["last_status_code"], 500);
    assert!(item["next_attempt_at"].is_string());

    // Both retries fail too: the series is over.
    assert!(fx.wait_until(|| fx.clock.sleepers() >= 2));
    fx.advance(60);
    rx.wait_for_blocking(6);
    assert!(fx.wait_until(|| list("?status=failed").len() == 2));
    assert!(list("?status=pending").is_empty());
    let failed = list("?status=failed");
    assert_eq!(failed[0]["attempts"], 2);
    assert!(failed[0]["next_attempt_at"].is_null());

    // Paging: 3 + 1, no overlap, then no cursor.
    let first = fx.get(&format!("/v1/webhooks/{id}/deliveries?limit=3"));
    let page1 = items(&first);
    assert_eq!(page1.len(), 3);
    let cursor = str_of(first.data(), "next_cursor").to_string();
    let second = fx.get(&format!(
        "/v1/webhooks/{id}/deliveries?limit=3&cursor={cursor}"
    ));
    let page2 = items(&second);
    assert_eq!(page2.len(), 1);
    assert!(second.data()["next_cursor"].is_null());
    let mut seen: Vec<&str> = page1
        .iter()
        .chain(page2.iter())
        .map(|d| str_of(d, "delivery_id"))
        .collect();
    seen.reverse();
    assert_eq!(seen, ids.iter().map(String::as_str).collect::<Vec<_>>());

    // The app-wide log shows the same, and filters by kind.
    assert_eq!(items(&fx.get("/v1/deliveries?kind=webhook")).len(), 4);
    assert!(items(&fx.get("/v1/deliveries?kind=callback")).is_empty());
    assert_eq!(
        items(&fx.get("/v1/deliveries?kind=webhook&status=succeeded&limit=1")).len(),
        1
    );
}

#[test]
fn bad_query_values_are_invalid_request() {
    let fx = fixture(&[]);
    let id = str_of(&create(&fx, "otp", QUIET_URL), "id").to_string();
    for query in [
        "status=bogus",
        "status=",
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "cursor=abc",
        "cursor=1.evt_x",
        "cursor=x.dlv_1",
        "cursor=%FF",
    ] {
        for path in [
            format!("/v1/webhooks/{id}/deliveries"),
            "/v1/deliveries".into(),
        ] {
            let resp = fx.get(&format!("{path}?{query}"));
            assert_eq!(
                (resp.status, resp.code()),
                (400, "invalid_request"),
                "{path}?{query}: {}",
                resp.text
            );
        }
    }
    for query in ["kind=bogus", "kind=WEBHOOK", "kind="] {
        fx.get(&format!("/v1/deliveries?{query}"))
            .assert_error(400, "invalid_request");
    }
    // Good values of every parameter are accepted.
    fx.get("/v1/deliveries?kind=report&status=failed&limit=100")
        .assert_ok(200);
    fx.get(&format!(
        "/v1/webhooks/{id}/deliveries?status=pending&limit=1"
    ))
    .assert_ok(200);
}

#[test]
fn delivery_detail_has_the_exact_payload_and_the_attempt_log() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![Reply::Status(200, "")]);
    let id = str_of(&create(&fx, "otp", &rx.url), "id").to_string();
    let delivery_id = send_test(&fx, &id);
    let received = rx.wait_for_blocking(1)[0].clone();
    let d = wait_delivery(&fx, &delivery_id, |d| d["status"] == "succeeded");

    assert_eq!(
        keys(&d),
        set(&[
            "delivery_id",
            "event_id",
            "event",
            "kind",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "created_at",
            "updated_at",
            "next_attempt_at",
            "url",
            "payload",
            "attempt_log",
            "headers"
        ])
    );
    assert_eq!(d["delivery_id"], delivery_id.as_str());
    assert_eq!(d["kind"], "webhook");
    assert_eq!(d["url"], rx.url.as_str());
    assert_eq!(
        str_of(&d, "payload"),
        received.body,
        "payload is byte-exact"
    );
    assert_eq!(d["event_id"], received.json()["id"]);
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["last_status_code"], 200);
    let log = d["attempt_log"].as_array().expect("attempt_log");
    assert_eq!(log.len(), 1);
    assert_eq!(
        keys(&log[0]),
        set(&["attempt", "at", "status_code", "error", "duration_ms"])
    );
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[0]["status_code"], 200);
    assert_eq!(log[0]["at"], "2026-06-07T12:00:00.000Z");
    assert!(log[0]["duration_ms"].as_i64().is_some_and(|ms| ms >= 0));
}

/// Names whose value is computed when each attempt is made.
const PER_ATTEMPT_HEADERS: [&str; 5] = [
    "X-Otpd-Attempt",
    "X-Otpd-Signature",
    "X-Otpd-Signature-Previous",
    "webhook-timestamp",
    "webhook-signature",
];

/// Compares a detail's `headers` with what a receiver really got: every listed header
/// arrived with that value (or, per attempt, under that name), and every otpd header
/// that arrived is listed.
#[track_caller]
fn assert_headers_match(listed: &Value, got: &Received) {
    let listed = listed.as_object().expect("headers is an object");
    for (name, value) in listed {
        let value = value.as_str().expect("header values are strings");
        let arrived = got.headers.get(&name.to_ascii_lowercase());
        if PER_ATTEMPT_HEADERS.contains(&name.as_str()) {
            assert_eq!(value, otpd_actors::PER_ATTEMPT, "{name}");
            assert!(arrived.is_some_and(|v| !v.is_empty()), "{name} was sent");
        } else {
            assert_eq!(arrived.map(String::as_str), Some(value), "{name}");
        }
    }
    let listed_lower: BTreeSet<String> = listed.keys().map(|k| k.to_ascii_lowercase()).collect();
    for name in got.headers.keys() {
        if name.starts_with("x-otpd-") || name.starts_with("webhook-") {
            assert!(
                listed_lower.contains(name),
                "{name} was sent but is not listed"
            );
        }
    }
}

#[test]
fn delivery_detail_headers_are_the_headers_the_receiver_got() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![Reply::Status(200, "")]);
    let created = create(&fx, "otp", &rx.url);
    let (id, secret) = (str_of(&created, "id"), str_of(&created, "secret"));
    let delivery_id = send_test(&fx, id);
    let got = rx.wait_for_blocking(1)[0].clone();
    let d = wait_delivery(&fx, &delivery_id, |d| d["status"] == "succeeded");
    let headers = &d["headers"];
    assert_headers_match(headers, &got);
    assert_eq!(headers["Content-Type"], "application/json");
    assert_eq!(headers["User-Agent"], "otpd-webhook/1.0");
    assert_eq!(headers["X-Otpd-Delivery-Id"], delivery_id.as_str());
    assert_eq!(headers["webhook-id"], got.header("webhook-id"));
    assert!(headers.get("X-Otpd-Signature-Previous").is_none());
    assert!(
        !d.to_string().contains(secret),
        "the detail never shows the secret"
    );

    // During a rotation's grace the previous secret's header is listed too.
    fx.post(&format!("/v1/webhooks/{id}/secret/rotate"), &json!({}))
        .assert_ok(200);
    let second = send_test(&fx, id);
    let got = rx.wait_for_blocking(2)[1].clone();
    let d = wait_delivery(&fx, &second, |d| d["status"] == "succeeded");
    assert_headers_match(&d["headers"], &got);
    assert_eq!(
        d["headers"]["X-Otpd-Signature-Previous"],
        otpd_actors::PER_ATTEMPT
    );
}

#[test]
fn manual_retry_resends_the_same_event_with_the_next_attempt_number() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![Reply::Status(500, ""), Reply::Status(200, "")]);
    let id = str_of(&create(&fx, "otp", &rx.url), "id").to_string();
    let delivery_id = send_test(&fx, &id);
    rx.wait_for_blocking(1);
    let failed = wait_delivery(&fx, &delivery_id, |d| d["status"] == "failed");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["last_status_code"], 500);

    let resp = fx.post(
        &format!("/v1/webhooks/deliveries/{delivery_id}/retry"),
        &json!({}),
    );
    let item = resp.assert_ok(202);
    assert_eq!(item["delivery_id"], delivery_id.as_str());
    assert_eq!(item["status"], "pending");

    let got = rx.wait_for_blocking(2);
    let (first, second) = (&got[0], &got[1]);
    assert_eq!(second.body, first.body, "same body");
    assert_eq!(
        second.header("x-otpd-event-id"),
        first.header("x-otpd-event-id")
    );
    assert_eq!(second.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(second.header("x-otpd-delivery-id"), delivery_id);
    assert_eq!(first.header("x-otpd-attempt"), "1");
    assert_eq!(second.header("x-otpd-attempt"), "2");

    let done = wait_delivery(&fx, &delivery_id, |d| d["status"] == "succeeded");
    assert_eq!(done["attempts"], 2);
    let log = done["attempt_log"].as_array().expect("attempt_log");
    let codes: Vec<&Value> = log.iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [&json!(500), &json!(200)]);
}

#[test]
fn recover_gives_failed_deliveries_in_the_window_a_new_series() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![
        Reply::Status(500, ""),
        Reply::Status(500, ""),
        Reply::Status(200, ""),
    ]);
    let id = str_of(&create(&fx, "otp", &rx.url), "id").to_string();
    let path = format!("/v1/webhooks/{id}/recover");
    let a = send_test(&fx, &id);
    let b = send_test(&fx, &id);
    rx.wait_for_blocking(2);
    wait_delivery(&fx, &a, |d| d["status"] == "failed");
    wait_delivery(&fx, &b, |d| d["status"] == "failed");
    fx.advance(60);

    // A window before anything happened.
    let none = fx.post(
        &path,
        &json!({"since": "2026-06-07T11:00:00Z", "until": "2026-06-07T11:30:00Z"}),
    );
    assert_eq!(none.assert_ok(202), &json!({"count": 0}));
    // Unparsable or inverted windows.
    for body in [
        json!({"since": "yesterday"}),
        json!({"since": "2026-06-07"}),
        json!({"since": "2026-06-07T11:00:00Z", "until": "soon"}),
        json!({"since": "2026-06-07T12:00:00Z", "until": "2026-06-07T11:00:00Z"}),
    ] {
        fx.post(&path, &body).assert_error(422, "validation_failed");
    }
    fx.settle();
    assert_eq!(rx.hits(), 2, "nothing was resent");

    // Offsets other than Z are the same instant.
    let resp = fx.post(&path, &json!({"since": "2026-06-07T13:59:00+02:00"}));
    assert_eq!(resp.assert_ok(202), &json!({"count": 2}));
    let got = rx.wait_for_blocking(4);
    let mut ids: Vec<&str> = got[2..]
        .iter()
        .map(|r| r.header("x-otpd-delivery-id"))
        .collect();
    ids.sort_unstable();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    wait_delivery(&fx, &a, |d| d["status"] == "succeeded");
    wait_delivery(&fx, &b, |d| d["status"] == "succeeded");

    // Nothing failed is left in the window.
    let again = fx.post(&path, &json!({"since": "2026-06-07T11:00:00Z"}));
    assert_eq!(again.assert_ok(202), &json!({"count": 0}));
}

#[test]
fn stats_count_outcomes_and_report_health_and_latency() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![Reply::Status(200, ""), Reply::Status(500, "")]);
    let id = str_of(&create(&fx, "otp", &rx.url), "id").to_string();
    let path = format!("/v1/webhooks/{id}/stats");

    let empty = fx.get(&path);
    let data = empty.assert_ok(200);
    assert_eq!(
        keys(data),
        set(&[
            "total",
            "succeeded",
            "failed",
            "pending",
            "success_rate",
            "consecutive_failures",
            "paused_until",
            "last_success_at",
            "last_failure_at",
            "latency_ms"
        ])
    );
    assert_eq!(data["total"], 0);
    assert!(data["success_rate"].is_null());

    let ok = send_test(&fx, &id);
    rx.wait_for_blocking(1);
    wait_delivery(&fx, &ok, |d| d["status"] == "succeeded");
    let bad = send_test(&fx, &id);
    rx.wait_for_blocking(2);
    wait_delivery(&fx, &bad, |d| d["status"] == "failed");

    assert!(fx.wait_until(|| fx.get(&path).data()["consecutive_failures"] == 1));
    let stats = fx.get(&path).assert_ok(200).clone();
    assert_eq!(stats["total"], 2);
    assert_eq!(stats["succeeded"], 1);
    assert_eq!(stats["failed"], 1);
    assert_eq!(stats["pending"], 0);
    assert_eq!(stats["success_rate"], 0.5);
    assert_eq!(stats["consecutive_failures"], 1);
    assert!(stats["paused_until"].is_null());
    assert_eq!(stats["last_success_at"], "2026-06-07T12:00:00.000Z");
    assert_eq!(stats["last_failure_at"], "2026-06-07T12:00:00.000Z");
    assert_eq!(keys(&stats["latency_ms"]), set(&["p50", "p95"]));
    assert!(stats["latency_ms"]["p50"].is_i64());
    assert!(stats["latency_ms"]["p95"].is_i64());
}

// ----- idempotency --------------------------------------------------------------

#[test]
fn webhook_posts_are_idempotent() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![Reply::Status(200, "")]);
    let body = json!({"url": rx.url, "service_type": "otp"});
    let first = fx
        .call("POST", "/v1/webhooks")
        .header("idempotency-key", "create-1")
        .json(&body)
        .send();
    let again = fx
        .call("POST", "/v1/webhooks")
        .header("idempotency-key", "create-1")
        .json(&body)
        .send();
    assert_eq!(first.status, 201);
    assert_eq!((again.status, &again.text), (201, &first.text));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(items(&fx.get("/v1/webhooks")).len(), 1);
    fx.call("POST", "/v1/webhooks")
        .header("idempotency-key", "create-1")
        .json(&json!({"url": rx.url, "service_type": "sms"}))
        .send()
        .assert_error(422, "idempotency_key_reused");

    let id = str_of(first.data(), "id").to_string();
    let test = |key: &str| {
        fx.call("POST", &format!("/v1/webhooks/{id}/test"))
            .header("idempotency-key", key)
            .send()
    };
    let t1 = test("test-1");
    let t2 = test("test-1");
    assert_eq!(t1.status, 202);
    assert_eq!(t2.text, t1.text, "the same delivery_id");
    rx.wait_for_blocking(1);
    fx.settle();
    assert_eq!(rx.hits(), 1, "one event for one key");

    let rotate = |key: &str| {
        fx.call("POST", &format!("/v1/webhooks/{id}/secret/rotate"))
            .header("idempotency-key", key)
            .send()
    };
    let r1 = rotate("rotate-1");
    assert_eq!(rotate("rotate-1").text, r1.text);
    assert_eq!(
        fx.get(&format!("/v1/webhooks/{id}/secret")).data()["secret"],
        r1.data()["secret"],
        "rotated once"
    );
}

// ----- callbacks and the OTP flow -----------------------------------------------

#[test]
fn verify_with_a_callback_url_shows_up_as_a_callback_delivery() {
    let fx = fixture(&[]);
    let rx = Receiver::start(vec![Reply::Status(200, "")]);
    let issued = fx.request_otp(PHONE);
    let code = fx.code_for(str_of(&issued, "message_id"));
    let resp = fx.post(
        "/v1/otp/verify",
        &json!({"phone_number": PHONE, "app_key": APP_KEY, "code": code,
                "callback_url": rx.url}),
    );
    resp.assert_ok(200);
    let r = rx.wait_for_blocking(1)[0].clone();
    assert_eq!(r.json()["event"], "flake.verified");

    let callbacks = items(&fx.get("/v1/deliveries?kind=callback"));
    assert_eq!(callbacks.len(), 1);
    let item = &callbacks[0];
    assert_eq!(item["event"], "flake.verified");
    assert_eq!(item["kind"], "callback");
    assert_eq!(item["event_id"], r.json()["id"]);
    assert!(items(&fx.get("/v1/deliveries?kind=webhook")).is_empty());

    // The detail route works for callbacks too.
    let delivery_id = str_of(item, "delivery_id");
    let d = wait_delivery(&fx, delivery_id, |d| d["status"] == "succeeded");
    assert_eq!(d["url"], rx.url.as_str());
    assert_eq!(str_of(&d, "payload"), r.body);
    // No secret was given anywhere: nothing is signed.
    assert_eq!(r.header("x-otpd-signature"), "");
    assert_eq!(r.header("webhook-signature"), "");
}

#[test]
fn otp_flow_sends_a_signed_callback_and_the_otp_webhook_events() {
    let fx = fixture(&[]);
    let hooks = Receiver::start(vec![Reply::Status(200, "")]);
    let callback = Receiver::start(vec![Reply::Status(200, "")]);
    let created = create(&fx, "otp", &hooks.url);
    let webhook_secret = str_of(&created, "secret").to_string();
    let callback_secret = "s3cret";

    let resp = fx.post(
        "/v1/otp/request",
        &json!({"phone_number": PHONE, "app_key": APP_KEY,
                "callback_url": callback.url, "callback_secret": callback_secret}),
    );
    let issued = resp.assert_ok(200).clone();
    let flake_id = str_of(&issued, "flake_id").to_string();
    let code = fx.code_for(str_of(&issued, "message_id"));
    hooks.wait_for_blocking(1);
    fx.advance(3);
    fx.verify(PHONE, &code).assert_ok(200);

    // The per-request callback: flake.verified, signed with the callback secret.
    let cb = callback.wait_for_blocking(1)[0].clone();
    let body = cb.json();
    assert_eq!(body["event"], "flake.verified");
    assert_eq!(body["channel"], "flake");
    assert_eq!(
        body["data"],
        json!({"flake_id": flake_id, "phone_number": PHONE, "status": "verified",
               "verified_at": "2026-06-07T12:00:03.000Z"})
    );
    assert_eq!(cb.header("x-otpd-service-type"), "flake");
    assert_eq!(cb.header("x-otpd-event"), "flake.verified");
    assert!(otpd_signed_by(&cb, callback_secret));
    assert!(standard_signed_by(&cb, callback_secret));

    // The otp webhook: otp.created then otp.verified, signed with the webhook secret.
    let got = hooks.wait_for_blocking(2);
    let mut events: Vec<Value> = got.iter().map(Received::json).collect();
    events.sort_by_key(|e| e["created_at"].as_str().map(str::to_string));
    assert_eq!(events[0]["event"], "otp.created");
    assert_eq!(events[0]["data"]["flake_id"], flake_id.as_str());
    assert_eq!(events[0]["data"]["phone_number"], PHONE);
    assert_eq!(events[0]["data"]["delivery_method"], "sms");
    assert_eq!(events[1]["event"], "otp.verified");
    assert_eq!(
        events[1]["data"],
        json!({"flake_id": flake_id, "phone_number": PHONE,
               "verified_at": "2026-06-07T12:00:03.000Z"})
    );
    for r in &got {
        assert_eq!(r.header("x-otpd-service-type"), "otp");
        assert!(otpd_signed_by(r, &webhook_secret));
        assert!(standard_signed_by(r, &webhook_secret));
        assert!(!r.body.contains(&code), "the code leaked into {}", r.body);
    }
    assert!(!cb.body.contains(&code));

    // Both routes are in the log; the webhook's stats see its two deliveries.
    assert_eq!(items(&fx.get("/v1/deliveries?kind=callback")).len(), 1);
    assert_eq!(items(&fx.get("/v1/deliveries?kind=webhook")).len(), 2);
    let id = str_of(&created, "id");
    assert!(
        fx.wait_until(|| { fx.get(&format!("/v1/webhooks/{id}/stats")).data()["succeeded"] == 2 })
    );
}

#[test]
fn webhook_errors_speak_the_api_not_the_library() {
    let fx = fixture(&[]);
    let unknown = fx.post(
        "/v1/webhooks",
        &json!({"url": QUIET_URL, "service_type": "email"}),
    );
    unknown.assert_error(422, "validation_failed");
    let message = unknown.body["error"]["message"].as_str().unwrap_or("");
    for valid in ["otp", "sms", "whatsapp", "telegram"] {
        assert!(message.contains(valid), "{message}");
    }
    create(&fx, "otp", QUIET_URL);
    let again = fx.post(
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.2:9/other", "service_type": "otp"}),
    );
    again.assert_error(409, "conflict");
    let message = again.body["error"]["message"].as_str().unwrap_or("");
    assert!(!message.contains("a otp"), "{message}");
    assert!(message.contains("\"otp\""), "{message}");

    let bad = fx.get("/v1/deliveries?limit=bogus");
    bad.assert_error(400, "invalid_request");
    let message = bad.body["error"]["message"].as_str().unwrap_or("");
    assert!(!message.contains("deserialize"), "{message}");
    assert!(message.starts_with("invalid query string: "), "{message}");
    assert!(!message.contains("Query"), "{message}");
}
