//! HTTP protocol limits on the real binary, over raw TCP: an oversized header block
//! is refused with 431 and the JSON envelope.

mod common;

use common::daemon::{raw_exchange, Daemon};

#[test]
fn a_100_kb_header_is_refused_with_431_and_the_json_envelope() {
    let mut daemon = Daemon::without_config()
        .env("RUST_LOG", "warn")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0");
    daemon.start();
    let addr = daemon.addr();
    for path in ["/healthz", "/v1/otp/status", "/metrics"] {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: ").into_bytes();
        raw.extend(std::iter::repeat_n(b'a', 100 * 1024));
        raw.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(&addr, &raw, true);
        assert!(answer.starts_with("HTTP/1.1 431"), "{path}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{path}: {answer}"
        );
        assert!(answer.contains("\"success\":false"), "{path}: {answer}");
        assert!(
            answer.contains("request_header_fields_too_large"),
            "{path}: {answer}"
        );
    }
    // Ordinary headers still pass.
    let answer = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        true,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
