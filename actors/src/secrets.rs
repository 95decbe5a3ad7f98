//! Codes, keyed hashes and API keys: the only place secrets are made or compared.
//!
//! A code exists in plaintext only between its generation and the provider call;
//! what is kept is `HMAC-SHA256(pepper, flake_id ‖ code)`, compared in constant time.
//! API keys are stored as SHA-256 digests (they are 32 random bytes, so a fast hash
//! is the right tool; a password KDF would only slow every request).

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// A 32-byte digest (code hash or API key hash).
pub type Digest32 = [u8; 32];

/// The server-wide secret that keys code hashes.
#[derive(Clone)]
pub struct Pepper {
    bytes: std::sync::Arc<[u8]>,
    /// HMAC keyed with the pepper: its inner and outer pads already hashed, so a
    /// code's hash costs two SHA-256 blocks, not four (one clone per hash).
    keyed: HmacSha256,
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(..)")
    }
}

impl Pepper {
    /// Wraps pepper bytes.
    pub fn new(bytes: &[u8]) -> Pepper {
        Pepper {
            bytes: bytes.into(),
            // HMAC accepts keys of any length, so this cannot fail.
            keyed: <HmacSha256 as Mac>::new_from_slice(bytes).expect("HMAC takes any key length"),
        }
    }

    /// 32 fresh random bytes, for a database that has no pepper yet.
    pub fn generate() -> Pepper {
        let bytes: [u8; 32] = rand::thread_rng().gen();
        Pepper::new(&bytes)
    }

    /// The raw bytes (for persisting a generated pepper).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `HMAC-SHA256(pepper, flake_id ‖ code)`.
    pub fn hash_code(&self, flake_id: &Uuid, code: &str) -> Digest32 {
        let mut mac = self.keyed.clone();
        mac.update(flake_id.as_bytes());
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `code` is the one whose hash is `stored`, in constant time.
    pub fn code_matches(&self, flake_id: &Uuid, code: &str, stored: &Digest32) -> bool {
        self.hash_code(flake_id, code).ct_eq(stored).into()
    }
}

/// A numeric code of `length` digits from the thread's CSPRNG (ChaCha, OS-seeded).
pub fn generate_code(length: u8) -> String {
    let mut rng = rand::thread_rng();
    (0..length)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

/// A new API key: `otpd_` + 32 random bytes as hex.
pub fn generate_api_key() -> String {
    format!("otpd_{}", random_hex(32))
}

/// SHA-256 of an API key, as stored.
pub fn hash_api_key(key: &str) -> Digest32 {
    Sha256::digest(key.as_bytes()).into()
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill(bytes.as_mut_slice());
    hex::encode(bytes)
}

/// A time-ordered id (UUID version 7) for a record made at `at` (the runtime
/// clock's time, so a `ManualClock` test gets stable ordering).
///
/// Ids that become primary keys of append-heavy tables (messages, flakes, events,
/// deliveries) are v7 rather than v4: consecutive rows land on the same B-tree leaf
/// instead of a random one, so a commit dirties (and writes to the WAL) a few pages
/// rather than one per row. They keep 74 random bits; none of them is a secret (every
/// lookup is scoped to the caller's app).
pub fn ordered_id(at: chrono::DateTime<chrono::Utc>) -> Uuid {
    let secs = u64::try_from(at.timestamp()).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs, at.timestamp_subsec_nanos());
    Uuid::new_v7(ts)
}

/// [`ordered_id`] as 32 lowercase hex digits (the `evt_…` / `dlv_…` id bodies).
pub fn ordered_hex(at: chrono::DateTime<chrono::Utc>) -> String {
    ordered_id(at).simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_requested_length_and_only_digits() {
        for len in 4..=10 {
            let code = generate_code(len);
            assert_eq!(code.len(), usize::from(len));
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn ordered_ids_sort_by_time_and_stay_unique() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00.123Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let later = t0 + chrono::Duration::milliseconds(1);
        let a = ordered_id(t0);
        assert_eq!(a.get_version_num(), 7);
        assert!(ordered_id(later) > a);
        assert!(ordered_hex(later) > ordered_hex(t0));
        assert_eq!(ordered_hex(t0).len(), 32);
        let same_ms: std::collections::HashSet<_> = (0..1000).map(|_| ordered_id(t0)).collect();
        assert_eq!(
            same_ms.len(),
            1000,
            "74 random bits keep ids of one millisecond apart"
        );
    }

    #[test]
    fn codes_are_not_constant() {
        let codes: std::collections::HashSet<_> = (0..50).map(|_| generate_code(10)).collect();
        assert!(codes.len() > 45);
    }

    #[test]
    fn code_hash_is_keyed_by_pepper_and_flake() {
        let pepper = Pepper::new(b"pepper");
        let flake = Uuid::new_v4();
        let stored = pepper.hash_code(&flake, "123456");
        assert!(pepper.code_matches(&flake, "123456", &stored));
        assert!(!pepper.code_matches(&flake, "123457", &stored));
        assert!(!pepper.code_matches(&flake, "12345", &stored));
        assert!(!pepper.code_matches(&Uuid::new_v4(), "123456", &stored));
        assert!(!Pepper::new(b"other").code_matches(&flake, "123456", &stored));
    }

    #[test]
    fn code_hash_is_plain_hmac_sha256_so_stored_hashes_keep_matching() {
        // Python: hmac.new(key, flake.bytes + b"123456", hashlib.sha256).hexdigest()
        let pepper = Pepper::new(b"otpd-test-pepper-0123456789abcdef");
        let flake = Uuid::parse_str("0190f3a2-7b1c-7d4e-9f00-123456789abc").unwrap();
        let first = pepper.hash_code(&flake, "123456");
        assert_eq!(
            hex::encode(first),
            "c3fd9da06a9cd1a446c2e4145ba8a4c81e53119e7fc2ee4c512555757315037f"
        );
        assert_eq!(
            pepper.hash_code(&flake, "123456"),
            first,
            "the keyed state is not used up"
        );
        assert_eq!(pepper.clone().hash_code(&flake, "123456"), first);
    }
}
