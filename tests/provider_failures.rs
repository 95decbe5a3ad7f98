//! A failing provider, black-box: the real daemon sends through `provider.kind =
//! "http"` to a real receiver that answers 500. The OTP requests are still
//! acknowledged, `/readyz` stays 200 (readiness is storage and recovery, not the
//! provider), every failed call is counted in `otpd_provider_sends_total`, the
//! send latency histogram is there, and the log carries one WARN for the burst of
//! failures rather than one per failure.

mod common;

use std::time::Duration;

use common::daemon::{client, Daemon, DaemonConfig};
use otpd_test_support::{poll_value, Receiver, Reply};
use serde_json::json;

const API_KEY: &str = "sk_test_provider_fail_0123456789";
const APP_KEY: &str = "provfail";

/// The value of the `otpd_provider_sends_total` series with these labels (0 if absent).
fn sends(metrics: &str, provider: &str, outcome: &str) -> f64 {
    let (p, o) = (
        format!(r#"provider="{provider}""#),
        format!(r#"outcome="{outcome}""#),
    );
    metrics
        .lines()
        .filter(|l| l.starts_with("otpd_provider_sends_total{") && l.contains(&p) && l.contains(&o))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn scrape(d: &Daemon) -> String {
    let resp = client()
        .get(d.url("/metrics"))
        .send()
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    resp.text().expect("metrics text")
}

#[test]
#[allow(clippy::disallowed_methods)] // a real-time deadline for polling a real daemon
fn provider_answering_500_is_counted_and_warned_at_a_bounded_rate_while_ready() {
    let provider = Receiver::start(vec![Reply::Status(500, r#"{"error":"down"}"#)]);
    let mut daemon = DaemonConfig::new()
        .provider(&format!(
            "kind = \"http\"\nurl = \"{}\"\ntimeout_secs = 5",
            provider.url
        ))
        .section("[delivery]\nretry_schedule_secs = [1]")
        .app(
            "Provider failures",
            APP_KEY,
            API_KEY,
            "resend_cooldown_secs = 0",
        )
        .daemon();
    daemon.start();

    const SENDS: usize = 4;
    for i in 0..SENDS {
        let resp = client()
            .post(daemon.url("/v1/otp/request"))
            .header("X-API-Key", API_KEY)
            .json(&json!({"phone_number": format!("25571200{i:04}"), "app_key": APP_KEY}))
            .send()
            .expect("POST request");
        assert_eq!(
            resp.status(),
            200,
            "acknowledged although the provider fails"
        );
    }
    // First attempts plus one retry each: 2 calls per message reach the receiver.
    provider.wait_for_blocking(2 * SENDS);

    let metrics = poll_value(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || scrape(&daemon),
        |text| sends(text, "http", "failed") >= (2 * SENDS) as f64,
    );
    assert_eq!(
        sends(&metrics, "http", "failed"),
        (2 * SENDS) as f64,
        "{metrics}"
    );
    assert_eq!(sends(&metrics, "http", "accepted"), 0.0, "{metrics}");
    assert!(
        metrics.contains("otpd_provider_send_duration_seconds_bucket"),
        "{metrics}"
    );

    let ready = client().get(daemon.url("/readyz")).send().expect("readyz");
    assert_eq!(
        ready.status(),
        200,
        "a failing provider does not make otpd unready"
    );

    let stderr = daemon.stderr_text();
    let warns: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("provider send failed"))
        .collect();
    assert_eq!(warns.len(), 1, "one WARN per interval:\n{stderr}");
    assert!(
        warns[0].contains("provider=\"http\"") || warns[0].contains("provider=http"),
        "{}",
        warns[0]
    );
    assert!(warns[0].contains("provider answered 500"), "{}", warns[0]);
}
