//! `GET /v1/stats/otp` (a read-only addition for the console) over real sockets.

mod common;

use common::{Fixture, PHONE};

const OTHER: &str = "255712345679";

#[test]
fn stats_count_sends_and_outcomes_of_the_last_hour() {
    let fx = Fixture::start();
    let first = fx.request_otp(PHONE);
    let code = fx.code_for(first["message_id"].as_str().expect("message_id"));
    fx.verify(PHONE, &code).assert_ok(200);
    let second = fx.request_otp(OTHER);
    fx.code_for(second["message_id"].as_str().expect("message_id"));
    fx.settle();

    let resp = fx.get("/v1/stats/otp");
    let data = resp.assert_ok(200);
    assert_eq!(data["window"], "hour");
    assert_eq!(data["bucket_seconds"], 300);
    assert_eq!(data["outcomes"]["verified"], 1, "{}", resp.text);
    assert_eq!(data["outcomes"]["pending"], 1, "{}", resp.text);
    assert_eq!(data["outcomes"]["failed"], 0, "{}", resp.text);
    let sends: u64 = data["sends"]
        .as_object()
        .expect("sends")
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(sends, 2, "{}", resp.text);
    let buckets = data["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 12);
    let sent: u64 = buckets.iter().filter_map(|b| b["sent"].as_u64()).sum();
    assert_eq!(sent, 2);

    // Past expiry the pending flake reads as expired, as the status call says.
    fx.advance(601);
    let data = fx.get("/v1/stats/otp?window=day").body["data"].clone();
    assert_eq!(data["window"], "day");
    assert_eq!(data["buckets"].as_array().map(Vec::len), Some(24));
    assert_eq!(data["outcomes"]["expired"], 1);
    assert_eq!(data["outcomes"]["pending"], 0);
    assert_eq!(data["outcomes"]["verified"], 1);
}

#[test]
fn stats_refuse_an_unknown_window_and_unknown_parameters() {
    let fx = Fixture::start();
    fx.get("/v1/stats/otp?window=week")
        .assert_error(400, "invalid_request");
    fx.get("/v1/stats/otp?windw=day")
        .assert_error(400, "invalid_request");
}

#[test]
fn stats_need_an_api_key() {
    let fx = Fixture::start();
    let resp = fx.call("GET", "/v1/stats/otp").no_auth().send();
    assert_eq!(resp.status, 401, "{}", resp.text);
    assert_eq!(resp.body["success"], false);
}
