//! `otpd echo`: a local receiver for integrators (SPEC section 9).
//!
//! It accepts a `POST` on any path, prints one readable block per request — the
//! delivery headers, the pretty-printed body and whether each signature verifies —
//! and answers `{"received": true}` with a chosen status (200 by default; another
//! status lets you watch otpd retry).
//!
//! Everything worth testing is a plain function: [`inspect`] computes the verdicts
//! from headers and body, [`render`] turns a request into the printed block. The
//! actix-web server in [`run`] only glues them to a socket. Signatures are checked
//! with [`otpd_actors::signing`], the same code otpd signs with.

use crate::stdout::print_stdout;
use std::net::SocketAddr;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::{DateTime, SecondsFormat, Utc};
use otpd_actors::clock::{Clock as _, SystemClock};
use otpd_actors::signing::{verify_otpd_signature, verify_standard_signature};

/// How far `webhook-timestamp` may be from the receiver's clock before [`render`]
/// warns — the tolerance the Standard Webhooks libraries apply.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// The largest body the receiver reads (otpd's own payloads are far smaller).
const BODY_LIMIT: usize = 1024 * 1024;

/// What `otpd echo` was asked to do.
#[derive(Clone)]
pub struct EchoOptions {
    /// Address to listen on; port 0 picks a free port (the real one is printed).
    pub listen: SocketAddr,
    /// The secret to verify signatures with; `None` reports them as not checked.
    pub secret: Option<String>,
    /// The status every request is answered with.
    pub status: u16,
    /// `delivery.header_prefix` of the sending otpd (default `X-Otpd`).
    pub header_prefix: String,
}

impl std::fmt::Debug for EchoOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoOptions")
            .field("listen", &self.listen)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("status", &self.status)
            .field("header_prefix", &self.header_prefix)
            .finish()
    }
}

/// The outcome of checking one signature (or secret) header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The header verifies with the secret.
    Valid,
    /// The header is there but does not verify (or is malformed).
    Invalid,
    /// The request carries no such header.
    Absent,
    /// No `--secret` was given, so nothing could be checked.
    NotChecked,
}

impl Verdict {
    /// The word printed for this verdict; failures are upper-case so they stand out.
    pub fn word(self, valid: &'static str, invalid: &'static str) -> &'static str {
        match self {
            Verdict::Valid => valid,
            Verdict::Invalid => invalid,
            Verdict::Absent => "absent",
            Verdict::NotChecked => "not checked",
        }
    }
}

/// Everything [`inspect`] concluded about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// `<prefix>-Signature`: HMAC-SHA256 of the raw body, keyed by the secret.
    pub otpd_signature: Verdict,
    /// `webhook-signature` (Standard Webhooks) over `id.timestamp.body`.
    pub standard_signature: Verdict,
    /// Seconds `webhook-timestamp` is away from now, when it parses.
    pub timestamp_skew_secs: Option<i64>,
    /// `<prefix>-Webhook-Secret` (delivery reports only) compared with the secret;
    /// `None` when the header is absent.
    pub report_secret: Option<Verdict>,
}

/// A request's headers as `(lower-case name, value)` pairs.
pub type Headers = [(String, String)];

/// The first value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Checks both signatures and the delivery-report secret of one request against
/// `secret`, as of `now`. A stale `webhook-timestamp` does not change the verdict;
/// it is reported in [`Inspection::timestamp_skew_secs`] for [`render`] to warn about.
pub fn inspect(
    headers: &Headers,
    body: &[u8],
    secret: Option<&str>,
    prefix: &str,
    now: DateTime<Utc>,
) -> Inspection {
    let otpd_header = header(headers, &format!("{prefix}-Signature"));
    let otpd_signature = match (otpd_header, secret) {
        (None, _) => Verdict::Absent,
        (Some(_), None) => Verdict::NotChecked,
        (Some(h), Some(s)) => valid_if(verify_otpd_signature(s, body, h)),
    };

    let timestamp = header(headers, "webhook-timestamp").and_then(|t| t.trim().parse::<i64>().ok());
    let standard_signature = match (header(headers, "webhook-signature"), secret) {
        (None, _) => Verdict::Absent,
        (Some(_), None) => Verdict::NotChecked,
        (Some(sig), Some(s)) => match (header(headers, "webhook-id"), timestamp) {
            (Some(id), Some(ts)) => valid_if(verify_standard_signature(s, id, ts, body, sig)),
            // Without an id or a readable timestamp nothing can verify.
            _ => Verdict::Invalid,
        },
    };

    let report_secret = header(headers, &format!("{prefix}-Webhook-Secret")).map(|given| {
        match secret {
            None => Verdict::NotChecked,
            // A local debugging aid: a plain comparison is enough here.
            Some(s) => valid_if(given == s),
        }
    });

    Inspection {
        otpd_signature,
        standard_signature,
        timestamp_skew_secs: timestamp.map(|ts| now.timestamp() - ts),
        report_secret,
    }
}

fn valid_if(ok: bool) -> Verdict {
    if ok {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
}

/// The body for printing: pretty JSON when it parses, else the raw text.
pub fn pretty_body(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
        Err(_) if body.is_empty() => "(empty body)".into(),
        Err(_) => format!("(not JSON) {}", String::from_utf8_lossy(body)),
    }
}

/// One received request as printed: a header line, the delivery summary, the
/// otpd and Standard Webhooks headers, the body, then the verdicts.
pub fn render(
    received_at: DateTime<Utc>,
    path: &str,
    headers: &Headers,
    body: &[u8],
    inspection: &Inspection,
    prefix: &str,
) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let get = |suffix: &str| header(headers, &format!("{prefix}-{suffix}")).unwrap_or("-");
    line(format!(
        "=== {} POST {path}",
        received_at.to_rfc3339_opts(SecondsFormat::Millis, true)
    ));
    line(format!("event:         {}", get("Event")));
    line(format!("event id:      {}", get("Event-Id")));
    line(format!("delivery id:   {}", get("Delivery-Id")));
    line(format!("attempt:       {}", get("Attempt")));
    line(format!("service type:  {}", get("Service-Type")));
    line("headers:".into());
    let ours = format!("{}-", prefix.to_ascii_lowercase());
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(&ours) || lower.starts_with("webhook-") {
            line(format!("  {name}: {value}"));
        }
    }
    line("body:".into());
    for body_line in pretty_body(body).lines() {
        line(format!("  {body_line}"));
    }
    line(format!(
        "{prefix}-Signature: {}",
        inspection.otpd_signature.word("valid", "INVALID")
    ));
    line(format!(
        "webhook-signature (Standard Webhooks): {}",
        inspection.standard_signature.word("valid", "INVALID")
    ));
    if let Some(skew) = inspection.timestamp_skew_secs {
        if skew.abs() > TIMESTAMP_TOLERANCE_SECS {
            line(format!(
                "  warning: webhook-timestamp is {} s {} this clock (tolerance {TIMESTAMP_TOLERANCE_SECS} s); \
                 Standard Webhooks libraries would refuse it",
                skew.abs(),
                if skew > 0 { "behind" } else { "ahead of" },
            ));
        }
    }
    if let Some(verdict) = inspection.report_secret {
        line(format!(
            "{prefix}-Webhook-Secret: {}",
            verdict.word("matches", "DIFFERS")
        ));
    }
    out
}

/// Binds `options.listen`, prints `otpd echo listening on http://ADDR` (the real
/// address) and serves until Ctrl-C / SIGTERM. Must run inside an actix `System`.
pub async fn run(options: EchoOptions) -> std::io::Result<()> {
    let state = web::Data::new(options.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .default_service(web::to(receive))
    })
    .workers(1)
    .bind(options.listen)?;
    let addr = server.addrs().first().copied().unwrap_or(options.listen);
    print_stdout(&format!("otpd echo listening on http://{addr}\n"));
    if options.secret.is_none() {
        print_stdout("no --secret given: signatures are shown but not checked\n");
    }
    server.run().await
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    options: web::Data<EchoOptions>,
) -> HttpResponse {
    if req.method() != actix_web::http::Method::POST {
        return HttpResponse::MethodNotAllowed()
            .insert_header(("Allow", "POST"))
            .json(serde_json::json!({"received": false, "error": "only POST is accepted"}));
    }
    // Timestamps are checked against the real wall clock of this machine.
    let now = SystemClock.now();
    let mut headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // The header map has no stable order; sorted, blocks are easy to compare.
    headers.sort();
    let prefix = options.header_prefix.as_str();
    let inspection = inspect(&headers, &body, options.secret.as_deref(), prefix, now);
    let mut block = render(now, req.path(), &headers, &body, &inspection, prefix);
    block.push_str(&format!("answered: {}\n\n", options.status));
    print_stdout(&block);
    let status = actix_web::http::StatusCode::from_u16(options.status)
        .unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(status).json(serde_json::json!({"received": true}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_actors::signing::{otpd_signature, standard_signature};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] = br#"{"id":"evt_1","event":"flake.verified","data":{}}"#;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("time")
    }

    fn signed(secret: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
        vec![
            ("x-otpd-event".into(), "flake.verified".into()),
            ("x-otpd-event-id".into(), "evt_1".into()),
            ("x-otpd-delivery-id".into(), "dlv_1".into()),
            ("x-otpd-attempt".into(), "2".into()),
            ("x-otpd-service-type".into(), "flake".into()),
            ("x-otpd-signature".into(), otpd_signature(secret, body)),
            ("webhook-id".into(), "evt_1".into()),
            ("webhook-timestamp".into(), ts.to_string()),
            (
                "webhook-signature".into(),
                standard_signature(secret, "evt_1", ts, body),
            ),
            ("user-agent".into(), "otpd-webhook/1.0".into()),
        ]
    }

    #[test]
    fn a_correctly_signed_request_verifies_both_ways() {
        let h = signed(SECRET, now().timestamp(), BODY);
        let i = inspect(&h, BODY, Some(SECRET), "X-Otpd", now());
        assert_eq!(i.otpd_signature, Verdict::Valid);
        assert_eq!(i.standard_signature, Verdict::Valid);
        assert_eq!(i.timestamp_skew_secs, Some(0));
        assert_eq!(i.report_secret, None);
    }

    #[test]
    fn a_tampered_body_fails_both_signatures() {
        let h = signed(SECRET, now().timestamp(), BODY);
        let i = inspect(&h, b"{\"tampered\":1}", Some(SECRET), "X-Otpd", now());
        assert_eq!(i.otpd_signature, Verdict::Invalid);
        assert_eq!(i.standard_signature, Verdict::Invalid);
    }

    #[test]
    fn the_wrong_secret_fails_both_signatures() {
        let h = signed(SECRET, now().timestamp(), BODY);
        let i = inspect(&h, BODY, Some("whsec_other"), "X-Otpd", now());
        assert_eq!(
            (i.otpd_signature, i.standard_signature),
            (Verdict::Invalid, Verdict::Invalid)
        );
    }

    #[test]
    fn unsigned_requests_report_absent_and_no_secret_reports_not_checked() {
        let plain = vec![("x-otpd-event".to_string(), "flake.verified".to_string())];
        let i = inspect(&plain, BODY, Some(SECRET), "X-Otpd", now());
        assert_eq!(
            (i.otpd_signature, i.standard_signature),
            (Verdict::Absent, Verdict::Absent)
        );
        let h = signed(SECRET, now().timestamp(), BODY);
        let i = inspect(&h, BODY, None, "X-Otpd", now());
        assert_eq!(
            (i.otpd_signature, i.standard_signature),
            (Verdict::NotChecked, Verdict::NotChecked)
        );
    }

    #[test]
    fn a_stale_timestamp_still_verifies_but_is_warned_about() {
        let ts = now().timestamp() - 600;
        let h = signed(SECRET, ts, BODY);
        let i = inspect(&h, BODY, Some(SECRET), "X-Otpd", now());
        assert_eq!(i.standard_signature, Verdict::Valid);
        assert_eq!(i.timestamp_skew_secs, Some(600));
        let text = render(now(), "/hook", &h, BODY, &i, "X-Otpd");
        assert!(
            text.contains("warning: webhook-timestamp is 600 s behind"),
            "{text}"
        );
        let fresh = signed(SECRET, now().timestamp() - 10, BODY);
        let i = inspect(&fresh, BODY, Some(SECRET), "X-Otpd", now());
        let text = render(now(), "/hook", &fresh, BODY, &i, "X-Otpd");
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn an_unreadable_timestamp_makes_the_standard_signature_invalid() {
        let mut h = signed(SECRET, now().timestamp(), BODY);
        for (n, v) in &mut h {
            if n == "webhook-timestamp" {
                *v = "yesterday".into();
            }
        }
        let i = inspect(&h, BODY, Some(SECRET), "X-Otpd", now());
        assert_eq!(i.standard_signature, Verdict::Invalid);
        assert_eq!(i.otpd_signature, Verdict::Valid);
    }

    #[test]
    fn delivery_reports_compare_the_webhook_secret_header() {
        let secret = "report-secret";
        let mut h = signed(secret, now().timestamp(), BODY);
        h.push(("x-otpd-webhook-secret".into(), secret.into()));
        let i = inspect(&h, BODY, Some(secret), "X-Otpd", now());
        assert_eq!(i.report_secret, Some(Verdict::Valid));
        let text = render(now(), "/dr", &h, BODY, &i, "X-Otpd");
        assert!(text.contains("X-Otpd-Webhook-Secret: matches"), "{text}");
        let i = inspect(&h, BODY, Some("another"), "X-Otpd", now());
        assert_eq!(i.report_secret, Some(Verdict::Invalid));
        let text = render(now(), "/dr", &h, BODY, &i, "X-Otpd");
        assert!(text.contains("X-Otpd-Webhook-Secret: DIFFERS"), "{text}");
    }

    #[test]
    fn a_custom_header_prefix_is_honoured() {
        let body = b"{}";
        let h = vec![
            ("x-acme-event".to_string(), "otp.created".to_string()),
            ("x-acme-signature".to_string(), otpd_signature("k", body)),
        ];
        let i = inspect(&h, body, Some("k"), "X-Acme", now());
        assert_eq!(i.otpd_signature, Verdict::Valid);
        let text = render(now(), "/", &h, body, &i, "X-Acme");
        assert!(text.contains("event:         otp.created"), "{text}");
        assert!(text.contains("X-Acme-Signature: valid"), "{text}");
    }

    #[test]
    fn the_block_shows_the_delivery_headers_pretty_body_and_verdicts() {
        let h = signed(SECRET, now().timestamp(), BODY);
        let i = inspect(&h, BODY, Some(SECRET), "X-Otpd", now());
        let text = render(now(), "/hook", &h, BODY, &i, "X-Otpd");
        for expected in [
            "=== 2023-11-14T22:13:20.000Z POST /hook",
            "event:         flake.verified",
            "event id:      evt_1",
            "delivery id:   dlv_1",
            "attempt:       2",
            "service type:  flake",
            "  x-otpd-signature: sha256=",
            "  webhook-id: evt_1",
            "    \"event\": \"flake.verified\"",
            "X-Otpd-Signature: valid",
            "webhook-signature (Standard Webhooks): valid",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(
            !text.contains("user-agent"),
            "only delivery headers: {text}"
        );
        assert!(!text.contains("Webhook-Secret"), "{text}");
    }

    #[test]
    fn bodies_that_are_not_json_are_shown_raw() {
        assert_eq!(pretty_body(b""), "(empty body)");
        assert_eq!(pretty_body(b"hello"), "(not JSON) hello");
        assert_eq!(pretty_body(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
    }
}
