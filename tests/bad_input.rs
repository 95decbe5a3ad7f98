//! Malformed input on every route: always a 4xx JSON envelope, never a 5xx, and
//! nothing changes (no code sent, no attempt used, no app created).

mod common;

use common::{Call, Fixture, FixtureOptions, Resp, APP_KEY, PHONE};
use serde_json::json;

const TOKEN: &str = "admin-token-for-tests-0123456789";
/// A phone with no flake, so a junk request that got through would show up as 200.
const OTHER_PHONE: &str = "255712345679";
const LIMIT: usize = 64 * 1024;

/// The provider status token the fixture is configured with.
const STATUS_TOKEN: &str = "prov-status-token-0123456789";

#[derive(Clone, Copy)]
enum Auth {
    ApiKey,
    Admin,
    /// `Authorization: Bearer <provider.status_token>` (`/v1/providers/status`).
    Provider,
}

/// Every route that reads a body.
fn body_routes(fx: &Fixture) -> Vec<(&'static str, String, Auth)> {
    let id = fx.app.app.app_id;
    vec![
        ("POST", "/v1/otp/request".into(), Auth::ApiKey),
        ("POST", "/v1/otp/send".into(), Auth::ApiKey),
        ("POST", "/v1/otp/resend".into(), Auth::ApiKey),
        ("POST", "/v1/otp/verify".into(), Auth::ApiKey),
        ("POST", "/v1/otp/invalidate".into(), Auth::ApiKey),
        ("POST", "/v1/messages".into(), Auth::ApiKey),
        ("POST", "/v1/webhooks".into(), Auth::ApiKey),
        ("POST", "/v1/providers/status".into(), Auth::Provider),
        ("POST", "/admin/v1/apps".into(), Auth::Admin),
        ("PATCH", format!("/admin/v1/apps/{id}"), Auth::Admin),
    ]
}

/// Every route, with a method it does not accept.
fn all_routes(fx: &Fixture) -> Vec<(&'static str, String, Auth, &'static str)> {
    let id = fx.app.app.app_id;
    let key = fx.app.key_id;
    vec![
        ("POST", "/v1/otp/request".into(), Auth::ApiKey, "GET"),
        ("POST", "/v1/otp/send".into(), Auth::ApiKey, "PUT"),
        ("POST", "/v1/otp/resend".into(), Auth::ApiKey, "DELETE"),
        ("POST", "/v1/otp/verify".into(), Auth::ApiKey, "GET"),
        ("POST", "/v1/otp/invalidate".into(), Auth::ApiKey, "PATCH"),
        ("GET", "/v1/otp/status".into(), Auth::ApiKey, "POST"),
        (
            "GET",
            "/v1/messages/00000000-0000-4000-8000-000000000000".into(),
            Auth::ApiKey,
            "DELETE",
        ),
        ("GET", "/admin/v1/apps".into(), Auth::Admin, "DELETE"),
        ("POST", "/admin/v1/apps".into(), Auth::Admin, "PUT"),
        ("PATCH", format!("/admin/v1/apps/{id}"), Auth::Admin, "POST"),
        (
            "POST",
            format!("/admin/v1/apps/{id}/api-keys"),
            Auth::Admin,
            "GET",
        ),
        (
            "DELETE",
            format!("/admin/v1/apps/{id}/api-keys/{key}"),
            Auth::Admin,
            "POST",
        ),
        ("GET", "/healthz".into(), Auth::ApiKey, "POST"),
        ("GET", "/readyz".into(), Auth::ApiKey, "DELETE"),
    ]
}

fn call<'a>(fx: &'a Fixture, method: &str, path: &str, auth: Auth) -> Call<'a> {
    match auth {
        Auth::ApiKey => fx.call(method, path),
        Auth::Admin => fx.admin(method, path),
        Auth::Provider => fx
            .call(method, path)
            .no_auth()
            .header("authorization", &format!("Bearer {STATUS_TOKEN}")),
    }
}

fn fixture() -> Fixture {
    let fx = Fixture::with(FixtureOptions {
        admin_token: Some(TOKEN.into()),
        tweak_config: Some(Box::new(|c| {
            c.provider.status_token = Some(STATUS_TOKEN.into())
        })),
        ..FixtureOptions::default()
    });
    // One live flake whose state must survive all the junk.
    fx.request_otp(PHONE);
    fx
}

/// The flake, the messages and the app list are as `fixture()` left them.
fn assert_nothing_changed(fx: &Fixture) {
    fx.settle();
    assert_eq!(fx.provider.messages().len(), 1, "a message was sent");
    let status = fx.status(PHONE);
    assert_eq!(status.data()["attempts"], 0, "an attempt was used");
    assert_eq!(status.data()["status"], "pending");
    fx.status(OTHER_PHONE).assert_error(404, "not_found");
    let apps = fx.admin("GET", "/admin/v1/apps").send();
    let apps = apps.assert_ok(200)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(apps.len(), 1, "an app was created");
    assert_eq!(apps[0]["name"], "Demo", "the app was changed");
    assert_eq!(
        apps[0]["settings"]["max_attempts"], 3,
        "the app was changed"
    );
}

#[track_caller]
fn assert_refused(resp: &Resp, what: &str) {
    assert!(
        (400..500).contains(&resp.status),
        "{what}: status {} body {}",
        resp.status,
        resp.text
    );
    assert_eq!(resp.body["success"], false, "{what}: {}", resp.text);
    assert!(
        resp.body["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{what}: no error.code in {}",
        resp.text
    );
    assert!(
        resp.body["error"]["message"].is_string(),
        "{what}: no error.message in {}",
        resp.text
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{what}"
    );
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = "{\"a\":".repeat(depth);
    s.push('1');
    s.push_str(&"}".repeat(depth));
    s.into_bytes()
}

/// Bodies that must be refused with 400 wherever a body is read.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let other = OTHER_PHONE;
    vec![
        ("empty", Vec::new()),
        ("whitespace", b"  \n\t ".to_vec()),
        ("truncated", b"{\"phone_number\":".to_vec()),
        ("single quotes", b"{'phone_number': '1'}".to_vec()),
        ("trailing garbage", format!("{{\"name\":\"x\",\"phone_number\":\"{other}\",\"app_key\":\"{APP_KEY}\",\"code\":\"1\"}} x").into_bytes()),
        ("bare word", b"nul".to_vec()),
        ("array", b"[]".to_vec()),
        ("array of object", format!("[{{\"phone_number\":\"{other}\",\"app_key\":\"{APP_KEY}\"}}]").into_bytes()),
        ("string", b"\"hello\"".to_vec()),
        ("number", b"42".to_vec()),
        ("null", b"null".to_vec()),
        ("bool", b"true".to_vec()),
        ("deeply nested objects", nested(6_000)),
        ("deeply nested arrays", ["[".repeat(30_000), "]".repeat(30_000)].concat().into_bytes()),
        ("invalid utf-8", b"{\"name\":\"\xff\xfe\",\"phone_number\":\"\xc3\x28\",\"app_key\":\"demo\"}".to_vec()),
        ("lone surrogate escape", b"{\"name\":\"\\ud800\",\"phone_number\":\"\\ud800\",\"app_key\":\"demo\"}".to_vec()),
        ("raw control character", b"{\"name\":\"a\x01b\",\"phone_number\":\"a\x00b\",\"app_key\":\"demo\"}".to_vec()),
        ("utf-16 bom", b"\xfe\xff\x00{\x00}".to_vec()),
    ]
}

#[test]
fn malformed_bodies_are_invalid_request_on_every_body_route() {
    let fx = fixture();
    for (method, path, auth) in body_routes(&fx) {
        for (name, body) in malformed_bodies() {
            let what = format!("{method} {path} with {name}");
            let resp = call(&fx, method, &path, auth)
                .header("content-type", "application/json")
                .body(body)
                .send();
            assert_refused(&resp, &what);
            assert_eq!(resp.code(), "invalid_request", "{what}: {}", resp.text);
        }
    }
    assert_nothing_changed(&fx);
}

#[test]
fn wrong_types_and_missing_fields_are_invalid_request() {
    let fx = fixture();
    let other = OTHER_PHONE;
    let otp_cases = vec![
        json!({}),
        json!({"app_key": APP_KEY}),
        json!({"phone_number": other}),
        json!({"phone_number": 255712345679_u64, "app_key": APP_KEY, "code": "1"}),
        json!({"phone_number": null, "app_key": APP_KEY, "code": "1"}),
        json!({"phone_number": [other], "app_key": APP_KEY, "code": "1"}),
        json!({"phone_number": {"n": other}, "app_key": APP_KEY, "code": "1"}),
        json!({"phone_number": other, "app_key": 7, "code": "1"}),
        json!({"phone_number": other, "app_key": [APP_KEY], "code": "1"}),
        json!({"phone_number": other, "app_key": null, "code": "1"}),
    ];
    for (method, path, auth) in body_routes(&fx) {
        let cases: Vec<serde_json::Value> = match auth {
            Auth::ApiKey | Auth::Provider => otp_cases.clone(),
            Auth::Admin => vec![
                json!({"name": 5}),
                json!({"name": ["x"]}),
                json!({"name": "x", "bogus": true}),
                json!({"app_key": {"k": 1}, "name": "x"}),
            ],
        };
        for body in cases {
            let what = format!("{method} {path} with {body}");
            let resp = call(&fx, method, &path, auth).json(&body).send();
            assert_refused(&resp, &what);
            assert_eq!(resp.code(), "invalid_request", "{what}: {}", resp.text);
        }
    }
    // Per-route field types.
    for body in [
        json!({"phone_number": other, "app_key": APP_KEY, "code": 123456}),
        json!({"phone_number": other, "app_key": APP_KEY, "code": null}),
        json!({"phone_number": other, "app_key": APP_KEY}),
        json!({"phone_number": other, "app_key": APP_KEY, "code": "1", "callback_url": 5}),
    ] {
        let resp = fx.post("/v1/otp/verify", &body);
        assert_refused(&resp, &body.to_string());
        assert_eq!(resp.code(), "invalid_request", "{body}");
    }
    for body in [
        json!({"phone_number": other, "app_key": APP_KEY, "delivery_method": "pigeon"}),
        json!({"phone_number": other, "app_key": APP_KEY, "delivery_method": "SMS"}),
        json!({"phone_number": other, "app_key": APP_KEY, "delivery_method": 1}),
        json!({"phone_number": other, "app_key": APP_KEY, "minutes_to_expire": "5"}),
        json!({"phone_number": other, "app_key": APP_KEY, "callback_secret": ["s"]}),
    ] {
        for path in ["/v1/otp/request", "/v1/otp/resend"] {
            let resp = fx.post(path, &body);
            assert_refused(&resp, &body.to_string());
            assert_eq!(resp.code(), "invalid_request", "{path} {body}");
        }
    }
    assert_nothing_changed(&fx);
}

#[test]
fn unicode_junk_nul_bytes_and_huge_strings_are_refused_without_effect() {
    let fx = fixture();
    let long = "9".repeat(60_000);
    let junk = [
        "\u{0000}\u{0000}\u{0000}",
        "２５５７１２３４５６７９",
        "\u{202e}255712345679",
        "💥💥💥",
        "255712345679\u{0000}",
        "%00",
        "' OR 1=1 --",
        long.as_str(),
    ];
    for value in junk {
        for path in [
            "/v1/otp/request",
            "/v1/otp/resend",
            "/v1/otp/verify",
            "/v1/otp/invalidate",
        ] {
            // Junk phone.
            let resp = fx.post(
                path,
                &json!({"phone_number": value, "app_key": APP_KEY, "code": "123456"}),
            );
            assert_refused(&resp, &format!("{path} phone {value:.20}"));
            // Junk app_key.
            let resp = fx.post(
                path,
                &json!({"phone_number": OTHER_PHONE, "app_key": value, "code": "123456"}),
            );
            assert_refused(&resp, &format!("{path} app_key {value:.20}"));
            // Junk everywhere else.
            let resp = fx.post(
                path,
                &json!({"phone_number": OTHER_PHONE, "app_key": APP_KEY, "code": value,
                        "callback_url": value, "callback_secret": value,
                        "delivery_method": value}),
            );
            assert_refused(&resp, &format!("{path} fields {value:.20}"));
        }
        let resp = fx.get(&format!(
            "/v1/otp/status?phone_number={}&app_key={APP_KEY}",
            urlencode(value)
        ));
        assert_refused(&resp, &format!("status {value:.20}"));
        for (method, path) in [
            ("POST", "/admin/v1/apps".to_string()),
            ("PATCH", format!("/admin/v1/apps/{}", fx.app.app.app_id)),
        ] {
            let resp = fx
                .admin(method, &path)
                .json(&json!({"name": value, "app_key": value}))
                .send();
            assert_refused(&resp, &format!("{method} {path} {value:.20}"));
        }
    }
    assert_nothing_changed(&fx);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn oversized_bodies_are_payload_too_large_with_or_without_content_length() {
    let fx = fixture();
    let big = format!(
        "{{\"phone_number\":\"{OTHER_PHONE}\",\"app_key\":\"{APP_KEY}\",\"name\":\"x\",\"pad\":\"{}\"}}",
        "x".repeat(LIMIT)
    );
    for (method, path, auth) in body_routes(&fx) {
        let resp = call(&fx, method, &path, auth)
            .header("content-type", "application/json")
            .body(big.clone())
            .send();
        resp.assert_error(413, "payload_too_large");
        assert_refused(&resp, &format!("{method} {path} big"));
        let resp = call(&fx, method, &path, auth)
            .header("content-type", "application/json")
            .chunked(big.clone())
            .send();
        resp.assert_error(413, "payload_too_large");
    }
    assert_nothing_changed(&fx);
}

#[test]
fn a_body_of_exactly_the_limit_is_read() {
    let fx = fixture();
    // Padded with JSON whitespace: unknown fields are refused, so no `pad` field.
    let head =
        format!("{{\"phone_number\":\"{OTHER_PHONE}\",\"app_key\":\"{APP_KEY}\",\"code\":\"1\"");
    let tail = "}";
    let body = format!(
        "{head}{}{tail}",
        " ".repeat(LIMIT - head.len() - tail.len())
    );
    assert_eq!(body.len(), LIMIT);
    let resp = fx.call("POST", "/v1/otp/verify").body(body).send();
    resp.assert_error(404, "not_found");
}

#[test]
fn bodies_are_parsed_as_json_whatever_the_content_type() {
    let fx = fixture();
    let body =
        format!("{{\"phone_number\":\"{OTHER_PHONE}\",\"app_key\":\"{APP_KEY}\",\"code\":\"1\"}}");
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("garbage"),
    ] {
        let mut call = fx.call("POST", "/v1/otp/verify").body(body.clone());
        if let Some(ct) = content_type {
            call = call.header("content-type", ct);
        }
        call.send().assert_error(404, "not_found");
    }
}

#[test]
fn a_corrupt_content_encoding_is_invalid_request() {
    let fx = fixture();
    let resp = fx
        .call("POST", "/v1/otp/verify")
        .header("content-encoding", "gzip")
        .body(b"this is not gzip at all".to_vec())
        .send();
    assert_refused(&resp, "corrupt gzip");
    assert_nothing_changed(&fx);
}

#[test]
fn unauthenticated_junk_is_unauthorized_before_the_body_is_read() {
    let fx = fixture();
    let big = "x".repeat(LIMIT * 2);
    for (method, path, auth) in body_routes(&fx) {
        for body in [big.clone(), "{".to_string(), String::new()] {
            let mut c = call(&fx, method, &path, auth).no_auth().body(body);
            if matches!(auth, Auth::Admin | Auth::Provider) {
                c = c.header("authorization", "Bearer wrong");
            }
            c.send().assert_error(401, "unauthorized");
        }
    }
    for key in [
        "",
        "ключ",
        "x".repeat(10_000).as_str(),
        "sk_test_fixture_api_key_012345678",
    ] {
        fx.call("POST", "/v1/otp/request")
            .api_key(key)
            .json(&json!({"phone_number": OTHER_PHONE, "app_key": APP_KEY}))
            .send()
            .assert_error(401, "unauthorized");
    }
    assert_nothing_changed(&fx);
}

#[test]
fn wrong_methods_are_method_not_allowed_on_every_route() {
    let fx = fixture();
    for (_, path, auth, wrong) in all_routes(&fx) {
        let resp = call(&fx, wrong, &path, auth)
            .json(&json!({"phone_number": OTHER_PHONE, "app_key": APP_KEY}))
            .send();
        assert_refused(&resp, &format!("{wrong} {path}"));
        assert_eq!(resp.status, 405, "{wrong} {path}: {}", resp.text);
        assert_eq!(resp.code(), "method_not_allowed");
    }
    assert_nothing_changed(&fx);
}

#[test]
fn unknown_routes_are_not_found() {
    let fx = fixture();
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v1/otp",
        "/v1/otp/",
        "/v1/otp/request/",
        "/v1/otp/request/extra",
        "/v1/otp/verify%00",
        "/v1/%ff%fe",
        "/v1/OTP/REQUEST",
        "/v2/otp/request",
        "/v1/messages/",
        "/admin",
        "/admin/v1",
        "/admin/v1/nope",
        "/admin/v1/apps/x/y/z",
        "/wp-login.php",
    ] {
        for method in ["GET", "POST"] {
            let resp = fx
                .admin(method, path)
                .api_key(common::API_KEY)
                .json(&json!({"phone_number": OTHER_PHONE, "app_key": APP_KEY}))
                .send();
            assert_refused(&resp, &format!("{method} {path}"));
            assert!(
                matches!(resp.status, 404 | 405),
                "{method} {path}: {}",
                resp.text
            );
        }
    }
    assert_nothing_changed(&fx);
}

#[test]
fn bad_path_ids_are_not_found() {
    let fx = fixture();
    for id in [
        "x",
        "1",
        "00000000-0000-0000-0000-00000000000g",
        "%00",
        "..%2f..%2fetc",
    ] {
        fx.get(&format!("/v1/messages/{id}"))
            .assert_error(404, "not_found");
        fx.admin("GET", &format!("/admin/v1/apps/{id}"))
            .send()
            .assert_error(404, "not_found");
        fx.admin("PATCH", &format!("/admin/v1/apps/{id}"))
            .json(&json!({"name": "x"}))
            .send()
            .assert_error(404, "not_found");
        fx.admin("POST", &format!("/admin/v1/apps/{id}/api-keys"))
            .send()
            .assert_error(404, "not_found");
        fx.admin(
            "DELETE",
            &format!("/admin/v1/apps/{}/api-keys/{id}", fx.app.app.app_id),
        )
        .send()
        .assert_error(404, "not_found");
    }
    assert_nothing_changed(&fx);
}

#[test]
fn bad_query_strings_are_invalid_request() {
    let fx = fixture();
    for query in [
        "",
        "?",
        "?phone_number",
        "?app_key=demo",
        "?phone_number=255712345679",
        "?phone_number[]=1&app_key=demo",
        "?phone_number=%ff&app_key=demo",
        "?phone_number=%&app_key=demo",
    ] {
        let resp = fx.get(&format!("/v1/otp/status{query}"));
        assert_refused(&resp, query);
    }
    assert_nothing_changed(&fx);
}

#[test]
fn idempotency_key_junk_is_refused_without_effect() {
    let fx = fixture();
    for key in [String::new(), "k".repeat(256), "ключ".into(), "a\tb".into()] {
        let resp = fx
            .call("POST", "/v1/otp/request")
            .header("idempotency-key", &key)
            .json(&json!({"phone_number": OTHER_PHONE, "app_key": APP_KEY}))
            .send();
        resp.assert_error(400, "invalid_request");
    }
    assert_nothing_changed(&fx);
}

#[test]
fn unknown_fields_in_otp_and_message_bodies_are_invalid_request_naming_the_field() {
    let fx = fixture();
    let other = OTHER_PHONE;
    let cases = vec![
        (
            "/v1/otp/request",
            json!({"phone_number": other, "app_key": APP_KEY,
                   "callback_url": "https://example.com/cb", "callback_secert": "s"}),
            "callback_secert",
        ),
        (
            "/v1/otp/send",
            json!({"phone_number": other, "app_key": APP_KEY, "minutes_to_expir": 5}),
            "minutes_to_expir",
        ),
        (
            "/v1/otp/resend",
            json!({"phone_number": PHONE, "app_key": APP_KEY, "delivery": "sms"}),
            "delivery",
        ),
        (
            "/v1/otp/verify",
            json!({"phone_number": PHONE, "app_key": APP_KEY, "code": "000000",
                   "callback_secert": "s"}),
            "callback_secert",
        ),
        (
            "/v1/otp/invalidate",
            json!({"phone_number": PHONE, "app_key": APP_KEY, "reason": "x"}),
            "reason",
        ),
        (
            "/v1/messages",
            json!({"channel": "sms", "to": other, "text": "hi", "sender": "x"}),
            "sender",
        ),
        (
            "/v1/messages",
            json!({"channel": "sms", "to": other, "text": "hi",
                   "delivery_report": {"webhook_url": "https://example.com/r",
                                       "webhook_secert": "s"}}),
            "webhook_secert",
        ),
    ];
    for (path, body, field) in cases {
        let what = format!("{path} with {body}");
        let resp = fx.post(path, &body);
        assert_refused(&resp, &what);
        assert_eq!(resp.status, 400, "{what}: {}", resp.text);
        assert_eq!(resp.code(), "invalid_request", "{what}: {}", resp.text);
        let message = resp.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{what}: message {message:?}");
    }
    assert_nothing_changed(&fx);
}
