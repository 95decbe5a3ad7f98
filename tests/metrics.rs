//! `GET /metrics` (SPEC section 8): Prometheus text with every family the contract names.

mod common;

use common::{Fixture, PHONE};

#[test]
fn metrics_expose_requests_otp_outcomes_actors_deliveries_queue_and_commits() {
    let fx = Fixture::start();
    let issued = fx.request_otp(PHONE);
    let code = fx.code_for(issued["message_id"].as_str().expect("message_id"));
    fx.verify(PHONE, "00000000")
        .assert_error(422, "invalid_code");
    fx.verify(PHONE, &code).assert_ok(200);

    let resp = fx.call("GET", "/metrics").no_auth().send();
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    let text = resp.text.clone();
    for family in [
        "otpd_http_requests_total",
        "otpd_http_request_duration_seconds_bucket",
        "otpd_otp_sends_total",
        "otpd_otp_verifications_total",
        "otpd_otp_actors",
        "otpd_delivery_queue_depth",
        "otpd_snapshot_commits_total",
        "otpd_snapshot_last_batch_size",
        "otpd_snapshot_commit_seconds_total",
    ] {
        assert!(
            text.contains(family),
            "{family} missing from /metrics:\n{text}"
        );
    }
    assert!(text.contains(r#"outcome="verified""#));
    assert!(text.contains(r#"outcome="invalid_code""#));
    assert!(
        text.contains(r#"route="/v1/otp/verify""#),
        "routes are labelled by pattern"
    );
    assert!(!text.contains(&code), "no code in metrics");
}
