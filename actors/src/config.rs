//! Runtime configuration: plain data with the defaults of SPEC section 9.
//!
//! Every section refuses unknown keys, so a typo in the daemon's TOML file is an
//! error that names the key rather than a silent fallback to a default. The daemon
//! (`otpd`) layers file and environment over these defaults and validates once.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the runtime needs to start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// SQLite storage.
    pub storage: StorageConfig,
    /// Code pepper.
    pub security: SecurityConfig,
    /// Message provider.
    pub provider: ProviderConfig,
    /// URL policy exceptions.
    pub callbacks: CallbacksConfig,
    /// Outbound delivery (retries, timeouts, headers).
    pub delivery: DeliveryConfig,
    /// Actor placement and reaping.
    pub runtime: ActorConfig,
    /// How long finished records are kept.
    pub retention: RetentionConfig,
}

/// When a state-changing call is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After the change is committed to SQLite (the default).
    #[default]
    Commit,
    /// Before the commit; the writer commits at least every `flush_interval_ms`.
    Async,
}

/// SQLite `synchronous` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// WAL + NORMAL: a commit survives a process crash (`kill -9`), not a power cut.
    #[default]
    Normal,
    /// WAL + FULL: a commit also survives power loss, at the cost of an fsync per batch.
    Full,
}

/// `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// When to acknowledge (see [`Durability`]).
    pub durability: Durability,
    /// SQLite `synchronous` pragma.
    pub synchronous: Synchronous,
    /// With `durability = "async"`: the longest a change waits before its commit.
    pub flush_interval_ms: u64,
    /// The most changes one group commit takes.
    pub max_batch: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("data/otpd.sqlite3"),
            durability: Durability::Commit,
            synchronous: Synchronous::Normal,
            flush_interval_ms: 10,
            max_batch: 4096,
        }
    }
}

/// `[security]`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// The pepper that keys code hashes (at least 16 bytes).
    pub code_pepper: Option<String>,
    /// A file holding the pepper (trailing newline ignored).
    pub code_pepper_file: Option<PathBuf>,
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field(
                "code_pepper",
                &self.code_pepper.as_ref().map(|_| "<redacted>"),
            )
            .field("code_pepper_file", &self.code_pepper_file)
            .finish()
    }
}

/// Which provider sends messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Development only: logs the text and marks the message sent.
    #[default]
    Log,
    /// POSTs each message to `provider.url`.
    Http,
}

/// `[provider]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// `log` or `http`.
    pub kind: ProviderKind,
    /// The provider's send endpoint (kind = "http").
    pub url: Option<String>,
    /// Bearer token otpd sends to the provider.
    pub auth_token: Option<String>,
    /// Bearer token the provider sends to `POST /v1/providers/status`.
    pub status_token: Option<String>,
    /// Bound on one provider call, in seconds.
    pub timeout_secs: u64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: ProviderKind::Log,
            url: None,
            auth_token: None,
            status_token: None,
            timeout_secs: 10,
        }
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "status_token",
                &self.status_token.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// `[callbacks]`: exceptions to the outbound URL policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Permit `http://` URLs (addresses are still checked).
    pub allow_http: bool,
    /// Destinations permitted even inside refused ranges (tests, private deployments).
    pub allowed_cidrs: Vec<ipnet::IpNet>,
}

/// `[delivery]`: the outbound retry engine (callbacks, webhooks, reports, provider calls).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Delays before the 2nd, 3rd, … attempts.
    pub retry_schedule_secs: Vec<u64>,
    /// Bound on one attempt.
    pub attempt_timeout_secs: u64,
    /// Consecutive failed deliveries before an endpoint pauses.
    pub pause_after_failures: u32,
    /// How long a paused endpoint waits.
    pub pause_secs: u64,
    /// How long a rotated-out webhook secret keeps signing.
    pub secret_grace_secs: u64,
    /// Prefix of otpd's own headers.
    pub header_prefix: String,
    /// `User-Agent` of outbound requests.
    pub user_agent: String,
    /// Concurrent attempts per endpoint.
    pub max_in_flight: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_schedule_secs: vec![1, 4],
            attempt_timeout_secs: 8,
            pause_after_failures: 10,
            pause_secs: 300,
            secret_grace_secs: 86_400,
            header_prefix: "X-Otpd".into(),
            user_agent: "otpd-webhook/1.0".into(),
            max_in_flight: 16,
        }
    }
}

/// `[retention]`: how long finished records are kept before the pruner removes them.
///
/// Pruning never removes a pending delivery, a queued message, or a flake whose
/// rate-limit window (one hour of sends) still counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Finished deliveries (succeeded or failed), their attempt log, and events no
    /// pending delivery needs, by creation time; 0 keeps them forever.
    pub delivery_log_days: u64,
    /// Messages that are no longer queued, by creation time; 0 keeps them forever.
    pub messages_days: u64,
    /// Flakes that are finished or expired and not touched for this long (at least 1:
    /// the hourly send limit reads them); 0 keeps them forever.
    pub finished_flakes_hours: u64,
    /// Seconds between pruning rounds.
    pub interval_secs: u64,
    /// Rows one pruning step deletes at most (each step is one short writer op).
    pub batch_rows: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            delivery_log_days: 30,
            messages_days: 30,
            finished_flakes_hours: 48,
            interval_secs: 60,
            batch_rows: 500,
        }
    }
}

/// `[runtime]`: actor placement and memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorConfig {
    /// Arbiters (threads) that host OTP actors; 0 = one per core.
    pub arbiters: usize,
    /// An OTP actor untouched this long stops and leaves the registry (its state stays in SQLite).
    pub idle_actor_secs: u64,
}

impl Default for ActorConfig {
    fn default() -> Self {
        ActorConfig {
            arbiters: 0,
            idle_actor_secs: 120,
        }
    }
}

impl RuntimeConfig {
    /// Checks cross-field rules; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.storage.flush_interval_ms == 0 || self.storage.flush_interval_ms > 10_000 {
            return Err("storage.flush_interval_ms must be between 1 and 10000".into());
        }
        if (1..24).contains(&self.retention.finished_flakes_hours) {
            return Err(
                "retention.finished_flakes_hours must be 0 (keep) or at least 24: \
                        the resend cooldown (up to a day) and the hourly send limit read them"
                    .into(),
            );
        }
        if self.retention.interval_secs == 0 || self.retention.interval_secs > 86_400 {
            return Err("retention.interval_secs must be between 1 and 86400".into());
        }
        if self.retention.batch_rows == 0 || self.retention.batch_rows > 100_000 {
            return Err("retention.batch_rows must be between 1 and 100000".into());
        }
        if self.storage.max_batch == 0 {
            return Err("storage.max_batch must be at least 1".into());
        }
        if let Some(p) = &self.security.code_pepper {
            if p.len() < 16 {
                return Err("security.code_pepper must be at least 16 bytes".into());
            }
        }
        if self.security.code_pepper.is_some() && self.security.code_pepper_file.is_some() {
            return Err(
                "set only one of security.code_pepper and security.code_pepper_file".into(),
            );
        }
        if self.provider.kind == ProviderKind::Http {
            let url = self.provider.url.as_deref().unwrap_or("");
            match url::Url::parse(url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => {
                    return Err(
                        "provider.url must be an http(s) URL when provider.kind = \"http\"".into(),
                    )
                }
            }
        }
        if self.provider.timeout_secs == 0 {
            return Err("provider.timeout_secs must be at least 1".into());
        }
        if self.delivery.retry_schedule_secs.len() > 20 {
            return Err("delivery.retry_schedule_secs may have at most 20 entries".into());
        }
        if self.delivery.attempt_timeout_secs == 0 {
            return Err("delivery.attempt_timeout_secs must be at least 1".into());
        }
        let prefix = &self.delivery.header_prefix;
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("delivery.header_prefix must be letters, digits and dashes".into());
        }
        if self.delivery.max_in_flight == 0 {
            return Err("delivery.max_in_flight must be at least 1".into());
        }
        if self.runtime.idle_actor_secs == 0 {
            return Err("runtime.idle_actor_secs must be at least 1".into());
        }
        Ok(())
    }
}
