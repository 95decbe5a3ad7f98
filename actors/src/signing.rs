//! Signatures on outbound deliveries (SPEC section 6): the one home of both schemes.
//!
//! - `X-Otpd-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`, keyed by the
//!   secret string's UTF-8 bytes exactly as the user holds it.
//! - Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`,
//!   where the key of a `whsec_` secret is the base64-decoded remainder (so the
//!   official libraries verify unchanged) and any other secret keys with its bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `sha256=<lowercase hex>` over the raw body.
pub fn otpd_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &[body])))
}

/// The Standard Webhooks signing key of a secret.
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// One `v1,<base64>` entry.
pub fn standard_signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let sig = hmac(
        &standard_key(secret),
        &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(sig))
}

/// The `webhook-signature` header: one entry per valid secret, space-separated.
pub fn standard_signature_header(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| standard_signature(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks an `X-Otpd-Signature` header in constant time.
pub fn verify_otpd_signature(secret: &str, body: &[u8], header: &str) -> bool {
    otpd_signature(secret, body)
        .as_bytes()
        .ct_eq(header.trim().as_bytes())
        .into()
}

/// Checks a `webhook-signature` header: true when any `v1` entry matches.
pub fn verify_standard_signature(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let expected = standard_signature(secret, msg_id, timestamp, body);
    header
        .split_whitespace()
        .any(|entry| bool::from(entry.as_bytes().ct_eq(expected.as_bytes())))
}

/// A new registered-webhook secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_webhook_secret() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    format!("whsec_{}", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector_verifies() {
        // The test vector of the Standard Webhooks reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = standard_signature(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn otpd_signature_is_hex_hmac_of_the_raw_body_keyed_by_the_whole_secret() {
        let sig = otpd_signature("whsec_abc", b"{}");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert!(verify_otpd_signature("whsec_abc", b"{}", &sig));
        assert!(!verify_otpd_signature("whsec_abd", b"{}", &sig));
        assert!(!verify_otpd_signature("whsec_abc", b"{ }", &sig));
    }

    #[test]
    fn plain_secrets_key_standard_signatures_with_their_bytes() {
        assert_eq!(standard_key("s3cret"), b"s3cret".to_vec());
        let header = standard_signature_header(&["new", "old"], "evt_1", 10, b"x");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify_standard_signature("old", "evt_1", 10, b"x", &header));
        assert!(verify_standard_signature("new", "evt_1", 10, b"x", &header));
        assert!(!verify_standard_signature(
            "other", "evt_1", 10, b"x", &header
        ));
    }

    #[test]
    fn generated_secrets_decode_to_32_bytes() {
        let s = generate_webhook_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(standard_key(&s).len(), 32);
    }
}
