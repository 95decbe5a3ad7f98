//! HTTP protocol limits on the real binary, over raw TCP: an oversized header block
//! is refused with 431 and the JSON envelope.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::daemon::Daemon;

/// Sends `raw` on a fresh connection and returns whatever comes back.
fn raw_exchange(addr: &str, raw: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    // The server may answer before it has read everything: ignore a reset.
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn a_100_kb_header_is_refused_with_431_and_the_json_envelope() {
    let mut daemon = Daemon::without_config()
        .env("RUST_LOG", "warn")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0");
    daemon.start();
    let addr = daemon
        .base()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    for path in ["/healthz", "/v1/otp/status", "/metrics"] {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: ").into_bytes();
        raw.extend(std::iter::repeat_n(b'a', 100 * 1024));
        raw.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(&addr, &raw);
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
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
