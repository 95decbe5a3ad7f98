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
        "otpd_snapshot_commit_cpu_seconds_total",
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

fn protocol_errors(daemon: &common::daemon::Daemon) -> u64 {
    let text = common::daemon::client()
        .get(daemon.url("/metrics"))
        .send()
        .expect("GET /metrics")
        .text()
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("otpd_http_protocol_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
#[allow(clippy::disallowed_methods)] // a real-time deadline for polling a real daemon
fn malformed_http_requests_are_counted_and_not_logged_as_errors() {
    let mut daemon = common::daemon::Daemon::without_config()
        .env("RUST_LOG", "info")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0");
    daemon.start();
    let addr = daemon.addr();
    let before = protocol_errors(&daemon);
    for raw in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"[..],
        &b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"[..],
        &b"GARBAGE\r\n\r\n"[..],
    ] {
        let answer = common::daemon::raw_exchange(&addr, raw, false);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert!(
        otpd_test_support::poll_blocking(std::time::Duration::from_secs(5), || {
            protocol_errors(&daemon) >= before + 3
        }),
        "otpd_http_protocol_errors_total did not count 3 malformed requests"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stderr = daemon.stderr_text();
    assert!(
        !stderr.lines().any(|l| l.contains("ERROR")),
        "ERROR lines for client mistakes:\n{stderr}"
    );
}

/// Every family in a scrape has `# HELP` and `# TYPE`; counters end in `_total`,
/// gauges do not; `otpd_build_info` carries the version.
#[test]
fn every_family_is_described_and_named_for_its_type() {
    let fx = Fixture::start();
    fx.request_otp(PHONE);
    fx.settle();
    let text = fx.call("GET", "/metrics").no_auth().send().text;
    let mut helped = std::collections::BTreeSet::new();
    let mut types = std::collections::BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name), Some(_)) => {
                helped.insert(name.to_string());
            }
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                types.insert(name.to_string(), kind.to_string());
            }
            _ => {}
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.split(['{', ' ']).next().unwrap_or("");
        let family = types
            .keys()
            .find(|f| {
                series == f.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| series.strip_suffix(s) == Some(f.as_str()))
            })
            .unwrap_or_else(|| panic!("{series} has no # TYPE:\n{text}"));
        assert!(helped.contains(family), "{family} has no # HELP:\n{text}");
    }
    for (name, kind) in &types {
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name}"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "histogram {name}"),
            other => panic!("{name}: unexpected type {other}"),
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!("otpd_build_info{{version=\"{version}\"}} 1")),
        "{text}"
    );
    assert!(types.contains_key("otpd_provider_sends_total"), "{text}");
    assert!(
        types.contains_key("otpd_provider_send_duration_seconds"),
        "{text}"
    );
}

/// The `method` label takes the standard methods only: a client inventing methods
/// cannot grow `/metrics` (and the recorder's memory) one series per name.
#[test]
fn invented_http_methods_share_one_method_label() {
    let fx = Fixture::start();
    for i in 0..20 {
        let resp = fx.call(&format!("INVENTED{i}"), "/v1/otp/request").send();
        assert!(
            (400..500).contains(&resp.status),
            "INVENTED{i}: {}",
            resp.status
        );
    }
    let text = fx.call("GET", "/metrics").no_auth().send().text;
    assert!(
        !text.contains("INVENTED"),
        "a series per invented method:\n{text}"
    );
    let other = text
        .lines()
        .find(|l| l.starts_with("otpd_http_requests_total") && l.contains(r#"method="other""#))
        .unwrap_or_else(|| panic!("no method=\"other\" series:\n{text}"));
    let count: f64 = other
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(count >= 20.0, "{other}");
}
