//! The request headers of a delivery (SPEC section 6), built in one place.
//!
//! [`request_headers`] is what a real attempt sends (`actor.rs`) and what the delivery
//! log shows (`GET /v1/webhooks/deliveries/{id}` → `headers`), so the two cannot drift.
//! The log has no attempt in hand: values that are computed when each attempt is made
//! (attempt number, timestamps, signatures) are named with [`PER_ATTEMPT`] instead,
//! and a secret is never shown.

use super::model::Delivery;
use crate::clock::rfc3339;
use crate::config::DeliveryConfig;
use crate::signing::{otpd_signature, standard_signature_header};

/// The value the delivery log shows for a header computed when each attempt is made.
pub const PER_ATTEMPT: &str = "computed per attempt";

/// The value the delivery log shows for a report's `<prefix>-Webhook-Secret`.
pub const SECRET_NOT_SHOWN: &str = "the delivery report's webhook_secret (not shown)";

/// Which headers to build: a real attempt's, or the delivery log's description.
#[derive(Clone, Copy)]
pub(crate) enum Stamp<'a> {
    /// One real attempt: its number, its unix time and the secrets signing it
    /// (current first, then the previous one in its grace period).
    Attempt {
        /// 1, 2, 3 …
        number: u32,
        /// Unix seconds of this attempt (`webhook-timestamp`).
        unix_ts: i64,
        /// The signing secrets.
        secrets: &'a [String],
    },
    /// The delivery log: how many secrets sign right now (0 = unsigned).
    Described {
        /// The number of signing secrets.
        secrets: usize,
    },
}

/// The headers of a request for `d`, in the order they are sent, names as written.
pub(crate) fn request_headers(
    config: &DeliveryConfig,
    d: &Delivery,
    stamp: Stamp<'_>,
) -> Vec<(String, String)> {
    let p = &config.header_prefix;
    let per_attempt = || PER_ATTEMPT.to_string();
    let attempt = match &stamp {
        Stamp::Attempt { number, .. } => number.to_string(),
        Stamp::Described { .. } => per_attempt(),
    };
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("User-Agent".to_string(), config.user_agent.clone()),
        (format!("{p}-Event"), d.event.event.clone()),
        (format!("{p}-Event-Id"), d.event.id.clone()),
        (format!("{p}-Timestamp"), rfc3339(d.event.created_at)),
        (format!("{p}-App-Id"), d.app_id.to_string()),
        (
            format!("{p}-Service-Type"),
            d.event.channel.as_str().to_string(),
        ),
        (format!("{p}-Delivery-Id"), d.delivery_id.clone()),
        (format!("{p}-Attempt"), attempt),
    ];
    let secrets = match stamp {
        Stamp::Attempt { secrets, .. } => secrets.len(),
        Stamp::Described { secrets } => secrets,
    };
    if secrets == 0 {
        return headers;
    }
    let body = d.event.body.as_bytes();
    let (signature, timestamp, standard, previous) = match stamp {
        Stamp::Attempt {
            unix_ts, secrets, ..
        } => {
            let all: Vec<&str> = secrets.iter().map(String::as_str).collect();
            (
                otpd_signature(&secrets[0], body),
                unix_ts.to_string(),
                standard_signature_header(&all, &d.event.id, unix_ts, body),
                secrets.get(1).map(|old| otpd_signature(old, body)),
            )
        }
        Stamp::Described { .. } => (
            per_attempt(),
            per_attempt(),
            per_attempt(),
            (secrets > 1).then(per_attempt),
        ),
    };
    headers.push((format!("{p}-Signature"), signature));
    headers.push(("webhook-id".to_string(), d.event.id.clone()));
    headers.push(("webhook-timestamp".to_string(), timestamp));
    headers.push(("webhook-signature".to_string(), standard));
    // During a rotation's grace the primary header stays one exact value (receivers
    // that compare it as a string keep working); the previous secret signs here.
    if let Some(previous) = previous {
        headers.push((format!("{p}-Signature-Previous"), previous));
    }
    if d.report_secret {
        let value = match stamp {
            Stamp::Attempt { secrets, .. } => secrets[0].clone(),
            Stamp::Described { .. } => SECRET_NOT_SHOWN.to_string(),
        };
        headers.push((format!("{p}-Webhook-Secret"), value));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::DeliveryKind;
    use crate::events::{Event, ServiceType};
    use chrono::{TimeZone, Utc};

    fn delivery(report_secret: bool) -> Delivery {
        let at = Utc
            .with_ymd_and_hms(2026, 6, 7, 12, 0, 0)
            .single()
            .expect("a time");
        let event = Event::new(
            "otp.test",
            ServiceType::Otp,
            uuid::Uuid::nil(),
            at,
            serde_json::json!({"test": true}),
        );
        let mut d = Delivery::new(
            &event,
            DeliveryKind::Report,
            "https://example.com/r".into(),
            None,
            Some("s3cret".into()),
        );
        d.report_secret = report_secret;
        d
    }

    fn names(headers: &[(String, String)]) -> Vec<&str> {
        headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn the_delivery_log_lists_the_names_an_attempt_sends_without_secrets() {
        let config = DeliveryConfig::default();
        let secrets = ["s3cret".to_string(), "old".to_string()];
        for (report_secret, signing) in [(false, 0), (false, 1), (false, 2), (true, 1)] {
            let d = delivery(report_secret);
            let sent = request_headers(
                &config,
                &d,
                Stamp::Attempt {
                    number: 3,
                    unix_ts: 1_780_833_600,
                    secrets: &secrets[..signing],
                },
            );
            let shown = request_headers(&config, &d, Stamp::Described { secrets: signing });
            assert_eq!(names(&sent), names(&shown));
            assert!(shown.iter().all(|(_, v)| !v.contains("s3cret")));
            for ((name, sent), (_, shown)) in sent.iter().zip(&shown) {
                if shown != sent {
                    assert!(
                        shown == PER_ATTEMPT || shown == SECRET_NOT_SHOWN,
                        "{name}: {shown}"
                    );
                }
            }
        }
    }
}
