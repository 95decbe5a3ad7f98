//! SPEC section 4 over real sockets: one test per rule, named after it.

mod common;

use std::collections::BTreeSet;

use common::{Fixture, APP_KEY, PHONE};
use serde_json::{json, Value};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn send_body(phone: &str) -> Value {
    json!({"phone_number": phone, "app_key": APP_KEY})
}

// ----- request --------------------------------------------------------------

#[test]
fn request_returns_exactly_the_flake_fields_and_never_the_code() {
    let fx = Fixture::start();
    let resp = fx.post("/v1/otp/request", &send_body(PHONE));
    let data = resp.assert_ok(200);
    assert_eq!(
        keys(data),
        set(&[
            "flake_id",
            "phone_number",
            "delivery_method",
            "expires_at",
            "message_id"
        ])
    );
    assert_eq!(data["phone_number"], PHONE);
    assert_eq!(data["delivery_method"], "sms");
    assert_eq!(data["expires_at"], "2026-06-07T12:10:00.000Z");
    let code = fx.code_for(data["message_id"].as_str().expect("message_id"));
    assert_eq!(code.len(), 6);
    assert!(!resp.text.contains(&code), "the code leaked: {}", resp.text);
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "envelope is JSON"
    );
}

#[test]
fn request_accepts_any_phone_spelling_and_answers_the_canonical_form() {
    let fx = Fixture::start();
    let resp = fx.post("/v1/otp/request", &send_body("+255 712-345-678"));
    assert_eq!(resp.assert_ok(200)["phone_number"], PHONE);
    // The same flake is found through another spelling.
    let status = fx.get(&format!(
        "/v1/otp/status?phone_number=00255.712.345.678&app_key={APP_KEY}"
    ));
    assert_eq!(
        status.assert_ok(200)["flake_id"],
        resp.data()["flake_id"].clone()
    );
}

#[test]
fn send_is_an_alias_of_request() {
    let fx = Fixture::start();
    let resp = fx.post("/v1/otp/send", &send_body(PHONE));
    let data = resp.assert_ok(200).clone();
    let code = fx.code_for(data["message_id"].as_str().expect("message_id"));
    fx.verify(PHONE, &code).assert_ok(200);
}

#[test]
fn request_with_a_delivery_method_uses_it() {
    let fx = Fixture::start();
    let resp = fx.post(
        "/v1/otp/request",
        &json!({"phone_number": PHONE, "app_key": APP_KEY, "delivery_method": "whatsapp"}),
    );
    assert_eq!(resp.assert_ok(200)["delivery_method"], "whatsapp");
}

#[test]
fn new_request_replaces_the_previous_flake_and_the_old_code_is_refused() {
    let fx = Fixture::start();
    let first = fx.request_otp(PHONE);
    let old_code = fx.code_for(first["message_id"].as_str().expect("id"));
    let second = fx.request_otp(PHONE);
    let new_code = fx.code_for(second["message_id"].as_str().expect("id"));
    assert_ne!(first["flake_id"], second["flake_id"]);
    if old_code != new_code {
        let resp = fx.verify(PHONE, &old_code);
        resp.assert_error(422, "invalid_code");
        assert_eq!(resp.data()["flake_id"], second["flake_id"]);
    }
    fx.verify(PHONE, &new_code).assert_ok(200);
}

#[test]
fn minutes_to_expire_sets_the_expiry() {
    let fx = Fixture::start();
    let resp = fx.post(
        "/v1/otp/request",
        &json!({"phone_number": PHONE, "app_key": APP_KEY, "minutes_to_expire": 5}),
    );
    assert_eq!(
        resp.assert_ok(200)["expires_at"],
        "2026-06-07T12:05:00.000Z"
    );
}

#[test]
fn minutes_to_expire_out_of_range_is_validation_failed() {
    let fx = Fixture::start();
    for minutes in [json!(0), json!(61), json!(-1), json!(4_294_967_297_i64)] {
        let resp = fx.post(
            "/v1/otp/request",
            &json!({"phone_number": PHONE, "app_key": APP_KEY, "minutes_to_expire": minutes}),
        );
        resp.assert_error(422, "validation_failed");
    }
    fx.settle();
    assert_eq!(fx.messages_to(PHONE), 0);
}

#[test]
fn minutes_to_expire_of_the_wrong_type_is_invalid_request() {
    let fx = Fixture::start();
    for minutes in [json!("10"), json!(10.5), json!(true), json!([10])] {
        let resp = fx.post(
            "/v1/otp/request",
            &json!({"phone_number": PHONE, "app_key": APP_KEY, "minutes_to_expire": minutes}),
        );
        resp.assert_error(400, "invalid_request");
    }
}

#[test]
fn unknown_delivery_method_is_invalid_request() {
    let fx = Fixture::start();
    let resp = fx.post(
        "/v1/otp/request",
        &json!({"phone_number": PHONE, "app_key": APP_KEY, "delivery_method": "fax"}),
    );
    resp.assert_error(400, "invalid_request");
    assert!(resp.text.contains("fax"), "{}", resp.text);
}

#[test]
fn invalid_phone_number_is_422() {
    let fx = Fixture::start();
    for phone in ["12345", "not a phone", "+999 123 456 789", ""] {
        fx.post("/v1/otp/request", &send_body(phone))
            .assert_error(422, "invalid_phone_number");
    }
}

#[test]
fn phone_outside_allowed_countries_is_country_not_allowed() {
    let fx = Fixture::with_settings(|s| s.allowed_countries = vec!["KE".into()]);
    fx.post("/v1/otp/request", &send_body(PHONE))
        .assert_error(422, "country_not_allowed");
    fx.post("/v1/otp/request", &send_body("254712345678"))
        .assert_ok(200);
    fx.settle();
    assert_eq!(fx.messages_to(PHONE), 0);
}

#[test]
fn callback_url_breaking_the_url_policy_is_refused_before_anything_is_sent() {
    let fx = Fixture::start();
    for url in [
        "http://93.184.216.34/cb",
        "https://127.0.0.1/cb",
        "https://10.0.0.1/cb",
        "https://[::ffff:127.0.0.1]/cb",
        "https://0x7f.1/cb",
        "https:///cb",
        "https://intranet/cb",
        "https://localhost./cb",
        "https://hooks.internal/cb",
        "https://metadata.google.internal/cb",
        "https://printer.local./cb",
        "https://api.test/cb",
        "https://foo.example/cb",
        "https://nas.home.arpa/cb",
        "https://x.invalid/cb",
        "https://a.localhost/cb",
        "not a url",
    ] {
        let resp = fx.post(
            "/v1/otp/request",
            &json!({"phone_number": PHONE, "app_key": APP_KEY, "callback_url": url}),
        );
        resp.assert_error(422, "invalid_callback_url");
    }
    fx.settle();
    assert_eq!(fx.messages_to(PHONE), 0);
    fx.status(PHONE).assert_error(404, "not_found");
}

#[test]
fn callback_secret_outside_1_to_256_chars_is_validation_failed() {
    let fx = Fixture::start();
    for secret in [String::new(), "s".repeat(257)] {
        let resp = fx.post(
            "/v1/otp/request",
            &json!({"phone_number": PHONE, "app_key": APP_KEY,
                    "callback_url": "https://93.184.216.34/cb", "callback_secret": secret}),
        );
        resp.assert_error(422, "validation_failed");
    }
}

// ----- rate limits ----------------------------------------------------------

#[test]
fn send_within_the_cooldown_is_rate_limited_with_retry_after() {
    let fx = Fixture::with_settings(|s| s.resend_cooldown_secs = 30);
    let first = fx.request_otp(PHONE);
    let code = fx.code_for(first["message_id"].as_str().expect("id"));

    let resp = fx.post("/v1/otp/request", &send_body(PHONE));
    resp.assert_error(429, "rate_limited");
    assert_eq!(resp.header("retry-after"), Some("30"));

    fx.advance(10);
    let resp = fx.post("/v1/otp/resend", &send_body(PHONE));
    resp.assert_error(429, "rate_limited");
    assert_eq!(resp.header("retry-after"), Some("20"));

    // Nothing was sent and the existing flake is untouched.
    fx.settle();
    assert_eq!(fx.messages_to(PHONE), 1);
    assert_eq!(fx.status(PHONE).data()["flake_id"], first["flake_id"]);
    fx.verify(PHONE, &code).assert_ok(200);

    fx.advance(20);
    fx.post("/v1/otp/request", &send_body(PHONE)).assert_ok(200);
}

#[test]
fn sends_beyond_max_sends_per_hour_are_rate_limited_until_the_oldest_leaves_the_window() {
    let fx = Fixture::with_settings(|s| s.max_sends_per_hour = 5);
    for _ in 0..5 {
        fx.request_otp(PHONE);
        fx.advance(60);
    }
    let resp = fx.post("/v1/otp/request", &send_body(PHONE));
    resp.assert_error(429, "rate_limited");
    // Five sends at t0, t0+60 … t0+240; now is t0+300; the first leaves at t0+3600.
    assert_eq!(resp.header("retry-after"), Some("3300"));
    // Another phone is not affected.
    fx.request_otp("255712345679");
    fx.advance(3300);
    fx.post("/v1/otp/request", &send_body(PHONE)).assert_ok(200);
}

#[test]
fn sends_beyond_the_apps_max_sends_per_minute_are_rate_limited_across_phones() {
    let fx = Fixture::with_settings(|s| s.max_sends_per_minute = 2);
    fx.request_otp("255712345671");
    fx.request_otp("255712345672");
    let resp = fx.post("/v1/otp/request", &send_body("255712345673"));
    resp.assert_error(429, "rate_limited");
    let retry: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    fx.advance(60);
    fx.request_otp("255712345673");
}

#[test]
fn test_numbers_use_the_fixed_code_send_nothing_and_skip_rate_limits() {
    let test_phone = "255712000001";
    let fx = Fixture::with_settings(|s| {
        s.resend_cooldown_secs = 30;
        s.max_sends_per_hour = 1;
        s.test_numbers.insert(test_phone.into(), "123456".into());
    });
    for _ in 0..3 {
        let data = fx.request_otp(test_phone);
        assert_eq!(data["message_id"], Value::Null);
    }
    fx.settle();
    assert!(fx.provider.messages().is_empty());
    // Attempts behave as for real numbers.
    fx.verify(test_phone, "000000")
        .assert_error(422, "invalid_code");
    let ok = fx.verify(test_phone, "123456");
    assert_eq!(ok.assert_ok(200)["status"], "verified");
}

// ----- resend ---------------------------------------------------------------

#[test]
fn resend_without_a_pending_flake_is_not_found() {
    let fx = Fixture::start();
    fx.post("/v1/otp/resend", &send_body(PHONE))
        .assert_error(404, "not_found");
    let data = fx.request_otp(PHONE);
    let code = fx.code_for(data["message_id"].as_str().expect("id"));
    fx.verify(PHONE, &code).assert_ok(200);
    fx.post("/v1/otp/resend", &send_body(PHONE))
        .assert_error(404, "not_found");
}

#[test]
fn resend_issues_a_new_flake_and_code_and_the_old_code_is_refused() {
    let fx = Fixture::start();
    let first = fx.request_otp(PHONE);
    let old_code = fx.code_for(first["message_id"].as_str().expect("id"));
    let resp = fx.post("/v1/otp/resend", &send_body(PHONE));
    let second = resp.assert_ok(200).clone();
    assert_eq!(
        keys(&second),
        set(&[
            "flake_id",
            "phone_number",
            "delivery_method",
            "expires_at",
            "message_id"
        ])
    );
    assert_ne!(first["flake_id"], second["flake_id"]);
    let new_code = fx.code_for(second["message_id"].as_str().expect("id"));
    if old_code != new_code {
        fx.verify(PHONE, &old_code)
            .assert_error(422, "invalid_code");
    }
    fx.verify(PHONE, &new_code).assert_ok(200);
}

#[test]
fn resend_without_a_delivery_method_keeps_the_previous_channel() {
    let fx = Fixture::start();
    fx.post(
        "/v1/otp/request",
        &json!({"phone_number": PHONE, "app_key": APP_KEY, "delivery_method": "telegram"}),
    )
    .assert_ok(200);
    let resp = fx.post("/v1/otp/resend", &send_body(PHONE));
    assert_eq!(resp.assert_ok(200)["delivery_method"], "telegram");
}

#[test]
fn resend_with_and_without_a_callback_keeps_working() {
    // The callback association is internal; this checks both shapes are accepted.
    let fx = Fixture::start();
    fx.post(
        "/v1/otp/request",
        &json!({"phone_number": PHONE, "app_key": APP_KEY,
                "callback_url": "https://93.184.216.34/cb", "callback_secret": "s3cret"}),
    )
    .assert_ok(200);
    fx.post("/v1/otp/resend", &send_body(PHONE)).assert_ok(200);
    let resp = fx.post(
        "/v1/otp/resend",
        &json!({"phone_number": PHONE, "app_key": APP_KEY,
                "callback_url": "https://93.184.216.35/other"}),
    );
    let code = fx.code_for(resp.assert_ok(200)["message_id"].as_str().expect("id"));
    fx.verify(PHONE, &code).assert_ok(200);
}

// ----- verify ---------------------------------------------------------------

#[test]
fn correct_code_verifies_with_exactly_the_spec_fields() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    let code = fx.code_for(data["message_id"].as_str().expect("id"));
    fx.advance(7);
    let resp = fx.verify(PHONE, &code);
    let v = resp.assert_ok(200);
    assert_eq!(
        keys(v),
        set(&["flake_id", "phone_number", "status", "verified_at"])
    );
    assert_eq!(v["flake_id"], data["flake_id"]);
    assert_eq!(v["phone_number"], PHONE);
    assert_eq!(v["status"], "verified");
    assert_eq!(v["verified_at"], "2026-06-07T12:00:07.000Z");
    assert!(!resp.text.contains(&code));
}

#[test]
fn a_code_is_good_once_then_already_verified() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    let code = fx.code_for(data["message_id"].as_str().expect("id"));
    fx.verify(PHONE, &code).assert_ok(200);
    let again = fx.verify(PHONE, &code);
    again.assert_error(422, "already_verified");
    assert_eq!(
        again.data(),
        &json!({"flake_id": data["flake_id"], "status": "verified"})
    );
}

#[test]
fn wrong_code_with_attempts_left_is_invalid_code_with_remaining_attempts() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    let resp = fx.verify(PHONE, "not-the-code");
    resp.assert_error(422, "invalid_code");
    assert_eq!(
        resp.data(),
        &json!({"flake_id": data["flake_id"], "status": "pending", "remaining_attempts": 2})
    );
    let resp = fx.verify(PHONE, "000000x");
    assert_eq!(resp.data()["remaining_attempts"], 1);
}

#[test]
fn wrong_code_using_the_last_attempt_is_max_attempts() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    fx.verify(PHONE, "a").assert_error(422, "invalid_code");
    fx.verify(PHONE, "b").assert_error(422, "invalid_code");
    let resp = fx.verify(PHONE, "c");
    resp.assert_error(422, "max_attempts");
    assert_eq!(
        resp.data(),
        &json!({"flake_id": data["flake_id"], "status": "failed", "remaining_attempts": 0})
    );
}

#[test]
fn verify_after_max_attempts_is_refused_even_with_the_correct_code() {
    let fx = Fixture::with_settings(|s| s.max_attempts = 1);
    let data = fx.request_otp(PHONE);
    let code = fx.code_for(data["message_id"].as_str().expect("id"));
    fx.verify(PHONE, "wrong").assert_error(422, "max_attempts");
    let resp = fx.verify(PHONE, &code);
    resp.assert_error(422, "max_attempts");
    assert_eq!(resp.data()["status"], "failed");
    assert_eq!(fx.status(PHONE).data()["status"], "failed");
}

#[test]
fn wrong_format_codes_count_as_wrong_codes() {
    let fx = Fixture::start();
    fx.request_otp(PHONE);
    for (code, left) in [("abcdef", 2), ("1", 1)] {
        let resp = fx.verify(PHONE, code);
        resp.assert_error(422, "invalid_code");
        assert_eq!(resp.data()["remaining_attempts"], left);
    }
    assert_eq!(fx.status(PHONE).data()["attempts"], 2);
}

#[test]
fn verify_after_expires_at_is_expired() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    let code = fx.code_for(data["message_id"].as_str().expect("id"));
    fx.advance(600);
    let resp = fx.verify(PHONE, &code);
    resp.assert_error(422, "expired");
    assert_eq!(
        resp.data(),
        &json!({"flake_id": data["flake_id"], "status": "expired"})
    );
    assert_eq!(fx.status(PHONE).data()["status"], "expired");
    // Resend needs a pending flake.
    fx.post("/v1/otp/resend", &send_body(PHONE))
        .assert_error(404, "not_found");
}

#[test]
fn verify_without_a_flake_is_not_found() {
    let fx = Fixture::start();
    fx.verify(PHONE, "123456").assert_error(404, "not_found");
}

#[test]
fn code_must_be_a_json_string() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    let code = fx.code_for(data["message_id"].as_str().expect("id"));
    let number: u64 = code.parse().expect("digits");
    let resp = fx.post(
        "/v1/otp/verify",
        &json!({"phone_number": PHONE, "app_key": APP_KEY, "code": number}),
    );
    resp.assert_error(400, "invalid_request");
    // The refused request used no attempt.
    assert_eq!(fx.status(PHONE).data()["attempts"], 0);
}

#[test]
fn concurrent_wrong_verifies_compare_exactly_max_attempts_codes() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    let code = fx.code_for(data["message_id"].as_str().expect("id"));
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    let r = fx.verify(PHONE, wrong);
                    (r.status, r.code().to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let invalid = answers.iter().filter(|(_, c)| c == "invalid_code").count();
    let max = answers.iter().filter(|(_, c)| c == "max_attempts").count();
    assert!(answers.iter().all(|(s, _)| *s == 422), "{answers:?}");
    assert_eq!((invalid, max), (2, 48), "{answers:?}");
    let status = fx.status(PHONE);
    assert_eq!(status.data()["attempts"], 3);
    assert_eq!(status.data()["remaining_attempts"], 0);
    assert_eq!(status.data()["status"], "failed");
    fx.verify(PHONE, &code).assert_error(422, "max_attempts");
}

// ----- invalidate and status ------------------------------------------------

#[test]
fn invalidate_then_verify_is_not_found() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    let code = fx.code_for(data["message_id"].as_str().expect("id"));
    let resp = fx.post("/v1/otp/invalidate", &send_body(PHONE));
    assert_eq!(
        resp.assert_ok(200),
        &json!({"flake_id": data["flake_id"], "status": "invalidated"})
    );
    fx.verify(PHONE, &code).assert_error(404, "not_found");
    assert_eq!(fx.status(PHONE).data()["status"], "invalidated");
    fx.post("/v1/otp/invalidate", &send_body(PHONE))
        .assert_error(404, "not_found");
    fx.post("/v1/otp/resend", &send_body(PHONE))
        .assert_error(404, "not_found");
}

#[test]
fn invalidate_without_a_pending_flake_is_not_found() {
    let fx = Fixture::start();
    fx.post("/v1/otp/invalidate", &send_body(PHONE))
        .assert_error(404, "not_found");
}

#[test]
fn status_reports_every_field() {
    let fx = Fixture::start();
    let data = fx
        .post(
            "/v1/otp/request",
            &json!({"phone_number": PHONE, "app_key": APP_KEY, "delivery_method": "whatsapp"}),
        )
        .assert_ok(200)
        .clone();
    fx.verify(PHONE, "wrong").assert_error(422, "invalid_code");
    let resp = fx.status(PHONE);
    let s = resp.assert_ok(200);
    assert_eq!(
        s,
        &json!({
            "flake_id": data["flake_id"],
            "phone_number": PHONE,
            "status": "pending",
            "attempts": 1,
            "remaining_attempts": 2,
            "expires_at": "2026-06-07T12:10:00.000Z",
            "delivery_method": "whatsapp",
            "message_id": data["message_id"],
        })
    );
}

#[test]
fn status_without_a_flake_is_not_found() {
    let fx = Fixture::start();
    fx.status(PHONE).assert_error(404, "not_found");
}

#[test]
fn status_needs_phone_number_and_app_key() {
    let fx = Fixture::start();
    fx.get("/v1/otp/status")
        .assert_error(400, "invalid_request");
    fx.get(&format!("/v1/otp/status?phone_number={PHONE}"))
        .assert_error(400, "invalid_request");
    fx.get(&format!("/v1/otp/status?app_key={APP_KEY}"))
        .assert_error(400, "invalid_request");
}

// ----- authentication -------------------------------------------------------

#[test]
fn missing_or_unknown_api_key_is_unauthorized_with_the_same_message() {
    let fx = Fixture::start();
    let missing = fx
        .call("POST", "/v1/otp/request")
        .no_auth()
        .json(&send_body(PHONE))
        .send();
    missing.assert_error(401, "unauthorized");
    let unknown = fx
        .call("POST", "/v1/otp/request")
        .api_key("sk_nobody_0123456789abcdef")
        .json(&send_body(PHONE))
        .send();
    unknown.assert_error(401, "unauthorized");
    assert_eq!(missing.body, unknown.body);
    fx.call(
        "GET",
        &format!("/v1/otp/status?phone_number={PHONE}&app_key={APP_KEY}"),
    )
    .api_key("")
    .send()
    .assert_error(401, "unauthorized");
    fx.settle();
    assert_eq!(fx.messages_to(PHONE), 0);
}

#[test]
fn app_key_of_another_app_is_app_mismatch() {
    let fx = Fixture::start();
    let other = fx.add_app("other", Default::default());
    for app_key in ["other", "nosuchapp"] {
        for path in [
            "/v1/otp/request",
            "/v1/otp/resend",
            "/v1/otp/verify",
            "/v1/otp/invalidate",
        ] {
            // Only verify takes a code: unknown fields are refused elsewhere.
            let mut body = json!({"phone_number": PHONE, "app_key": app_key});
            if path == "/v1/otp/verify" {
                body["code"] = json!("123456");
            }
            let resp = fx.post(path, &body);
            resp.assert_error(403, "app_mismatch");
        }
        fx.get(&format!(
            "/v1/otp/status?phone_number={PHONE}&app_key={app_key}"
        ))
        .assert_error(403, "app_mismatch");
    }
    // The other app's own key works for its own app_key.
    fx.call("POST", "/v1/otp/request")
        .api_key(&other.api_key)
        .json(&json!({"phone_number": PHONE, "app_key": "other"}))
        .send()
        .assert_ok(200);
}

#[test]
fn app_key_is_required_in_otp_bodies() {
    let fx = Fixture::start();
    for path in [
        "/v1/otp/request",
        "/v1/otp/resend",
        "/v1/otp/verify",
        "/v1/otp/invalidate",
    ] {
        fx.post(path, &json!({"phone_number": PHONE, "code": "123456"}))
            .assert_error(400, "invalid_request");
    }
}

#[test]
fn flakes_are_per_app() {
    let fx = Fixture::start();
    let other = fx.add_app("other", Default::default());
    fx.request_otp(PHONE);
    fx.call(
        "GET",
        &format!("/v1/otp/status?phone_number={PHONE}&app_key=other"),
    )
    .api_key(&other.api_key)
    .send()
    .assert_error(404, "not_found");
}

// ----- idempotency ----------------------------------------------------------

#[test]
fn idempotent_repeat_returns_the_first_response_and_sends_once() {
    let fx = Fixture::start();
    let first = fx
        .call("POST", "/v1/otp/request")
        .header("idempotency-key", "req-1")
        .json(&send_body(PHONE))
        .send();
    first.assert_ok(200);
    // Same request, keys in another order and different spacing.
    let repeat = fx
        .call("POST", "/v1/otp/request")
        .header("idempotency-key", "req-1")
        .body(format!(
            "{{ \"app_key\" : \"{APP_KEY}\", \"phone_number\": \"{PHONE}\" }}"
        ))
        .send();
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.text, first.text);
    fx.settle();
    assert_eq!(fx.messages_to(PHONE), 1);
    // A different key is a new request.
    let other = fx
        .call("POST", "/v1/otp/request")
        .header("idempotency-key", "req-2")
        .json(&send_body(PHONE))
        .send();
    assert_ne!(other.data()["flake_id"], first.data()["flake_id"]);
}

#[test]
fn idempotency_key_reused_with_a_different_body_is_refused() {
    let fx = Fixture::start();
    fx.call("POST", "/v1/otp/request")
        .header("idempotency-key", "req-1")
        .json(&send_body(PHONE))
        .send()
        .assert_ok(200);
    fx.call("POST", "/v1/otp/request")
        .header("idempotency-key", "req-1")
        .json(&send_body("255712345679"))
        .send()
        .assert_error(422, "idempotency_key_reused");
    // Same body on another route is a different request too.
    fx.call("POST", "/v1/otp/send")
        .header("idempotency-key", "req-1")
        .json(&send_body(PHONE))
        .send()
        .assert_error(422, "idempotency_key_reused");
    fx.settle();
    assert_eq!(fx.messages_to("255712345679"), 0);
}

#[test]
fn idempotent_verify_replays_the_refusal_without_using_another_attempt() {
    let fx = Fixture::start();
    fx.request_otp(PHONE);
    let verify = || {
        fx.call("POST", "/v1/otp/verify")
            .header("idempotency-key", "verify-1")
            .json(&json!({"phone_number": PHONE, "app_key": APP_KEY, "code": "nope"}))
            .send()
    };
    let first = verify();
    first.assert_error(422, "invalid_code");
    let again = verify();
    assert_eq!((again.status, &again.text), (422, &first.text));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(fx.status(PHONE).data()["attempts"], 1);
}

#[test]
fn idempotency_keys_are_per_app() {
    let fx = Fixture::start();
    let other = fx.add_app("other", Default::default());
    fx.call("POST", "/v1/otp/request")
        .header("idempotency-key", "shared")
        .json(&send_body(PHONE))
        .send()
        .assert_ok(200);
    fx.call("POST", "/v1/otp/request")
        .api_key(&other.api_key)
        .header("idempotency-key", "shared")
        .json(&json!({"phone_number": PHONE, "app_key": "other"}))
        .send()
        .assert_ok(200);
}

#[test]
fn invalid_idempotency_key_is_invalid_request() {
    let fx = Fixture::start();
    for key in [String::new(), "k".repeat(256)] {
        fx.call("POST", "/v1/otp/request")
            .header("idempotency-key", &key)
            .json(&send_body(PHONE))
            .send()
            .assert_error(400, "invalid_request");
    }
    fx.call("POST", "/v1/otp/request")
        .header("idempotency-key", &"k".repeat(255))
        .json(&send_body(PHONE))
        .send()
        .assert_ok(200);
}

#[test]
fn rate_limited_answers_are_not_replayed() {
    let fx = Fixture::with_settings(|s| s.resend_cooldown_secs = 30);
    fx.request_otp(PHONE);
    let call = || {
        fx.call("POST", "/v1/otp/request")
            .header("idempotency-key", "after-cooldown")
            .json(&send_body(PHONE))
            .send()
    };
    call().assert_error(429, "rate_limited");
    fx.advance(30);
    call().assert_ok(200);
}

// ----- messages -------------------------------------------------------------

#[test]
fn provider_failure_does_not_fail_the_request_and_the_message_records_it() {
    let fx = Fixture::start();
    fx.provider.set_failing(true);
    let data = fx.request_otp(PHONE);
    let path = format!("/v1/messages/{}", data["message_id"].as_str().expect("id"));
    // The default retry schedule is [1, 4] seconds on the manual clock.
    for secs in [1, 4] {
        assert!(
            fx.wait_until(|| fx.clock.sleepers() > 0),
            "no retry scheduled"
        );
        fx.advance(secs);
    }
    assert!(
        fx.wait_until(|| fx.get(&path).data()["status"] == "failed"),
        "message never failed: {}",
        fx.get(&path).text
    );
    let m = fx.get(&path);
    assert_eq!(m.data()["error_code"], "provider_error");
    // The flake itself is still there; a resend goes out once the provider is back.
    fx.provider.set_failing(false);
    let resend = fx.post("/v1/otp/resend", &send_body(PHONE));
    let code = fx.code_for(resend.assert_ok(200)["message_id"].as_str().expect("id"));
    fx.verify(PHONE, &code).assert_ok(200);
}

#[test]
fn otp_message_is_readable_by_its_app_only() {
    let fx = Fixture::start();
    let data = fx.request_otp(PHONE);
    let id = data["message_id"].as_str().expect("id").to_string();
    fx.code_for(&id);
    let resp = fx.get(&format!("/v1/messages/{id}"));
    let m = resp.assert_ok(200);
    assert_eq!(
        keys(m),
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
    assert_eq!(m["message_id"], id.as_str());
    assert_eq!(m["to"], PHONE);
    assert_eq!(m["channel"], "sms");
    let other = fx.add_app("other", Default::default());
    fx.call("GET", &format!("/v1/messages/{id}"))
        .api_key(&other.api_key)
        .send()
        .assert_error(404, "not_found");
    fx.get("/v1/messages/00000000-0000-4000-8000-000000000000")
        .assert_error(404, "not_found");
    fx.get("/v1/messages/not-a-uuid")
        .assert_error(404, "not_found");
}
