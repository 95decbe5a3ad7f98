//! Layered configuration (SPEC section 9): built-in defaults → one TOML file →
//! `OTPD_SECTION__KEY` environment variables, validated once at start-up.
//!
//! Every section refuses unknown keys, and so does every `[[apps]]` entry: a typo
//! (`max_atempts`, `OTPD_SERVER__LISTN`) is an error that names the key and where it
//! came from, never a silent fallback to a default. Environment names without the
//! `__` separator (`OTPD_PORT`, as Kubernetes injects) are not configuration and are
//! ignored. The runtime's own sections are
//! the `otpd_actors::config` types, so the daemon and embedders share one definition
//! of each key and its default; this module only adds `[server]` and `[[apps]]`.
//!
//! `config/default.toml` documents every key with its default; a unit test below
//! keeps it equal to [`Config::default`].

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use ipnet::IpNet;
use otpd_actors::config::{
    ActorConfig, CallbacksConfig, DeliveryConfig, ProviderConfig, RetentionConfig, SecurityConfig,
    StorageConfig,
};
use otpd_actors::{AppSettings, NewApp, RuntimeConfig};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// The prefix of environment overrides: `OTPD_SERVER__LISTEN` sets `server.listen`.
pub const ENV_PREFIX: &str = "OTPD_";

/// Separates nesting levels in an environment variable name (`SECTION__KEY`).
const ENV_SPLIT: &str = "__";

/// Why the configuration could not be used. Every message names the key (and the
/// file or environment variable) so the operator knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config FILE` was given but the file cannot be read.
    #[error("configuration file {}: {reason}", path.display())]
    File {
        /// The path as given.
        path: PathBuf,
        /// What went wrong (not found, permission denied, …).
        reason: String,
    },
    /// The file or environment does not fit the configuration's shape: an unknown
    /// key, a wrong type, bad TOML. One line per problem.
    #[error("{}", .0.join("\n"))]
    Shape(Vec<String>),
    /// A key has a value outside what otpd accepts.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `server.listen`.
        key: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// An `[[apps]]` entry is invalid.
    #[error("[[apps]] entry {index} ({app_key:?}): {reason}")]
    App {
        /// 1-based position of the entry in the file.
        index: usize,
        /// The entry's `app_key` as written.
        app_key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The whole daemon configuration: `[server]`, the runtime's sections, and `[[apps]]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// SQLite storage (path, durability, synchronous, group commit).
    pub storage: StorageConfig,
    /// The code pepper.
    pub security: SecurityConfig,
    /// The message provider.
    pub provider: ProviderConfig,
    /// Exceptions to the outbound URL policy.
    pub callbacks: CallbacksConfig,
    /// The outbound delivery engine (retries, timeouts, headers).
    pub delivery: DeliveryConfig,
    /// Actor placement and idle reaping.
    pub runtime: ActorConfig,
    /// How long finished records are kept.
    pub retention: RetentionConfig,
    /// The log on stderr.
    pub log: LogConfig,
    /// Apps created or updated at start-up (idempotent by `app_key`).
    pub apps: Vec<AppConfig>,
}

/// `[log]`: how the stderr log is written (its level is `RUST_LOG`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human-readable) or `json` (one JSON object per line).
    pub format: LogFormat,
}

/// The stderr log's line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`).
    Json,
}

/// `[server]`: what the HTTP front needs and the runtime does not.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket address to listen on; port 0 picks a free port (tests).
    pub listen: String,
    /// Bearer token of the admin API; the admin API is off when unset.
    pub admin_token: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or single addresses).
    #[serde(deserialize_with = "deserialize_proxies")]
    pub trusted_proxies: Vec<IpNet>,
    /// HTTP worker threads; 0 = one per core (see [`ServerConfig::worker_threads`]).
    pub workers: usize,
    /// The HTTP worker threads run under Linux's `SCHED_BATCH` policy (see
    /// [`crate::server::prepare_worker_thread`]); `false` leaves them under the
    /// default policy.
    pub batch_scheduling: bool,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_token: None,
            trusted_proxies: Vec::new(),
            workers: 0,
            batch_scheduling: true,
            shutdown_timeout_secs: 10,
        }
    }
}

impl ServerConfig {
    /// The HTTP worker threads to run: `workers`, or for 0 one per core this
    /// process may use.
    ///
    /// One per core stays the default although the storage writer is a busy thread
    /// of its own: one worker fewer did better only beside a CPU-heavy client on the
    /// same cores, and worse beside a light one (docs/benchmarks-passes.md, "Eleventh pass").
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("admin_token", &redacted(&self.admin_token))
            .field("trusted_proxies", &self.trusted_proxies)
            .field("workers", &self.workers)
            .field("batch_scheduling", &self.batch_scheduling)
            .field("shutdown_timeout_secs", &self.shutdown_timeout_secs)
            .finish()
    }
}

/// Accepts `"10.0.0.0/8"` and a bare `"10.0.0.1"` (a single host) alike.
fn deserialize_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not a CIDR (10.0.0.0/8) or an IP address"
                    ))
                })
        })
        .collect()
}

/// One `[[apps]]` entry: identity, a fixed API key, and any app setting as a key of
/// the same name (`max_attempts = 5`).
///
/// serde cannot combine `flatten` with `deny_unknown_fields`, so the entry is read
/// as its identity keys plus a map of everything else, and that map is then read
/// as [`AppSettings`], which refuses unknown keys — naming the key and the app.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawAppConfig", into = "RawAppConfig")]
pub struct AppConfig {
    /// Human name.
    pub name: String,
    /// Public key clients put in request bodies (3–64 of `[A-Za-z0-9_-]`).
    pub app_key: String,
    /// The API key clients send as `X-API-Key` (stored hashed).
    pub api_key: String,
    /// A fixed app id; generated at first start when absent.
    pub app_id: Option<Uuid>,
    /// OTP settings; keys not given keep their defaults.
    pub settings: AppSettings,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("name", &self.name)
            .field("app_key", &self.app_key)
            .field("api_key", &"<redacted>")
            .field("app_id", &self.app_id)
            .field("settings", &self.settings)
            .finish()
    }
}

/// The on-disk shape of an `[[apps]]` entry.
#[derive(Serialize, Deserialize)]
struct RawAppConfig {
    name: String,
    app_key: String,
    api_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app_id: Option<Uuid>,
    #[serde(flatten)]
    settings: serde_json::Map<String, serde_json::Value>,
}

impl TryFrom<RawAppConfig> for AppConfig {
    type Error = String;

    fn try_from(raw: RawAppConfig) -> Result<Self, String> {
        let settings =
            settings_from_map(&raw.settings).map_err(|e| format!("app {:?}: {e}", raw.app_key))?;
        Ok(AppConfig {
            name: raw.name,
            app_key: raw.app_key,
            api_key: raw.api_key,
            app_id: raw.app_id,
            settings,
        })
    }
}

impl From<AppConfig> for RawAppConfig {
    fn from(app: AppConfig) -> Self {
        let settings = match serde_json::to_value(&app.settings) {
            Ok(serde_json::Value::Object(map)) => {
                map.into_iter().filter(|(_, v)| !v.is_null()).collect()
            }
            _ => serde_json::Map::new(),
        };
        RawAppConfig {
            name: app.name,
            app_key: app.app_key,
            api_key: app.api_key,
            app_id: app.app_id,
            settings,
        }
    }
}

/// Reads the non-identity keys of an `[[apps]]` entry as [`AppSettings`]. On a type
/// error serde does not say which key was wrong, so each key is then tried alone
/// to name it.
fn settings_from_map(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<AppSettings, String> {
    let whole = serde_json::Value::Object(map.clone());
    match serde_json::from_value::<AppSettings>(whole) {
        Ok(settings) => Ok(settings),
        Err(e) => {
            for (key, value) in map {
                let single =
                    serde_json::Value::Object([(key.clone(), value.clone())].into_iter().collect());
                if let Err(e) = serde_json::from_value::<AppSettings>(single) {
                    let text = e.to_string();
                    return Err(if text.starts_with("unknown field") {
                        format!("unknown setting: {text}")
                    } else {
                        format!("setting `{key}`: {text}")
                    });
                }
            }
            Err(e.to_string())
        }
    }
}

impl Config {
    /// Loads defaults → `file` (when given; a missing file is an error) →
    /// `OTPD_SECTION__KEY` environment variables, then validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env_prefix(file, ENV_PREFIX)
    }

    /// [`Config::load`] with another environment prefix (lets tests run in parallel
    /// without sharing variables).
    pub fn load_with_env_prefix(file: Option<&Path>, prefix: &str) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            std::fs::File::open(path).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(EnvOverrides::new(prefix));
        Self::extract(figment, prefix)
    }

    /// Reads `toml` (as if it were the file) over the defaults, without environment
    /// overrides, then validates. For tests and embedders holding the text.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml));
        Self::extract(figment, ENV_PREFIX)
    }

    fn extract(figment: Figment, prefix: &str) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            ConfigError::Shape(e.into_iter().map(|e| describe(&e, prefix)).collect())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value once: the runtime's rules, the listen address, the admin
    /// token, and each `[[apps]]` entry (including duplicates across entries).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.runtime_config()
            .validate()
            .map_err(|reason| match reason.split_once(' ') {
                Some((key, rest)) if key.contains('.') => ConfigError::Invalid {
                    key: key.to_string(),
                    reason: rest.to_string(),
                },
                _ => ConfigError::Invalid {
                    key: "configuration".into(),
                    reason,
                },
            })?;
        self.listen_addr()?;
        if let Some(token) = &self.server.admin_token {
            if token.len() < 16 || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(ConfigError::Invalid {
                    key: "server.admin_token".into(),
                    reason: "must be 16–256 printable characters without spaces \
                             (unset it to disable the admin API)"
                        .into(),
                });
            }
        }
        if self.server.workers > 1024 {
            return Err(ConfigError::Invalid {
                key: "server.workers".into(),
                reason: "must be at most 1024 (0 = one per core)".into(),
            });
        }
        if self.server.shutdown_timeout_secs > 300 {
            return Err(ConfigError::Invalid {
                key: "server.shutdown_timeout_secs".into(),
                reason: "must be at most 300".into(),
            });
        }
        let mut app_keys = HashSet::new();
        let mut api_keys = HashSet::new();
        let mut app_ids = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let fail = |reason: String| ConfigError::App {
                index: i + 1,
                app_key: app.app_key.clone(),
                reason,
            };
            let name = app.name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(fail("name must be 1–100 characters".into()));
            }
            otpd_actors::app::validate_app_key(&app.app_key).map_err(fail)?;
            let key = &app.api_key;
            if key.len() < 16 || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(fail(
                    "api_key must be 16–256 printable characters without spaces".into(),
                ));
            }
            app.settings.clone().validated().map_err(fail)?;
            if !app_keys.insert(app.app_key.as_str()) {
                return Err(fail("app_key is used by an earlier [[apps]] entry".into()));
            }
            if !api_keys.insert(key.as_str()) {
                return Err(fail("api_key is used by an earlier [[apps]] entry".into()));
            }
            if let Some(id) = app.app_id {
                if !app_ids.insert(id) {
                    return Err(fail("app_id is used by an earlier [[apps]] entry".into()));
                }
            }
        }
        Ok(())
    }

    /// `server.listen` as a socket address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "server.listen".into(),
                reason: format!(
                    "{:?} is not a socket address such as \"127.0.0.1:8080\" or \"[::]:8080\"",
                    self.server.listen
                ),
            })
    }

    /// The sections the runtime starts from.
    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            storage: self.storage.clone(),
            security: self.security.clone(),
            provider: self.provider.clone(),
            callbacks: self.callbacks.clone(),
            delivery: self.delivery.clone(),
            runtime: self.runtime.clone(),
            retention: self.retention.clone(),
        }
    }

    /// The `[[apps]]` entries as the runtime's upsert input.
    pub fn app_entries(&self) -> Vec<NewApp> {
        self.apps
            .iter()
            .map(|app| NewApp {
                name: app.name.trim().to_string(),
                app_key: Some(app.app_key.clone()),
                app_id: app.app_id,
                settings: app.settings.clone(),
                api_key: Some(app.api_key.clone()),
            })
            .collect()
    }

    /// A human summary with every secret redacted (for `otpd check-config`).
    pub fn summary(&self) -> String {
        let set = |v: &Option<String>| if v.is_some() { "<set>" } else { "<unset>" };
        let mut out = String::new();
        let s = &self.server;
        let _ = writeln!(out, "server.listen            = {}", s.listen);
        let _ = writeln!(out, "server.admin_token       = {}", set(&s.admin_token));
        let _ = writeln!(
            out,
            "server.trusted_proxies   = [{}]",
            join(s.trusted_proxies.iter())
        );
        let _ = writeln!(out, "server.workers           = {}", s.workers);
        let _ = writeln!(
            out,
            "log.format               = {}",
            wire_name(&self.log.format)
        );
        let _ = writeln!(
            out,
            "storage.path             = {}",
            self.storage.path.display()
        );
        let _ = writeln!(
            out,
            "storage.durability       = {}",
            wire_name(&self.storage.durability)
        );
        let _ = writeln!(
            out,
            "storage.synchronous      = {}",
            wire_name(&self.storage.synchronous)
        );
        let pepper = match (&self.security.code_pepper, &self.security.code_pepper_file) {
            (Some(_), _) => "code_pepper <set>".to_string(),
            (None, Some(path)) => format!("code_pepper_file {}", path.display()),
            (None, None) => "generated and kept in the database".to_string(),
        };
        let _ = writeln!(out, "security                 = {pepper}");
        let _ = writeln!(
            out,
            "provider.kind            = {}",
            wire_name(&self.provider.kind)
        );
        if let Some(url) = &self.provider.url {
            let _ = writeln!(out, "provider.url             = {url}");
        }
        let _ = writeln!(
            out,
            "provider.auth_token      = {}",
            set(&self.provider.auth_token)
        );
        let _ = writeln!(
            out,
            "provider.status_token    = {}",
            set(&self.provider.status_token)
        );
        let _ = writeln!(
            out,
            "callbacks                = allow_http {}, allowed_cidrs [{}]",
            self.callbacks.allow_http,
            join(self.callbacks.allowed_cidrs.iter())
        );
        let _ = writeln!(
            out,
            "delivery.retry_schedule  = {:?} s",
            self.delivery.retry_schedule_secs
        );
        let _ = writeln!(out, "apps                     = {}", self.apps.len());
        for app in &self.apps {
            let _ = writeln!(
                out,
                "  - {} (app_key {}, api_key <redacted>)",
                app.name, app.app_key
            );
        }
        out
    }
}

fn redacted(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| "<redacted>")
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// The name a value has in the configuration file (`"commit"`, `"http"`).
fn wire_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// `OTPD_SECTION__KEY` variables as a figment provider.
///
/// figment's own `Env` reads every value as TOML-ish text, so a token made of
/// digits becomes a number (and loses leading zeros) and no longer fits a string
/// key. Here a key whose default is text (or unset) takes the variable verbatim;
/// every other key (numbers, booleans, lists) is parsed as figment's `Env` would.
struct EnvOverrides {
    env: Env,
    defaults: serde_json::Value,
}

impl EnvOverrides {
    fn new(prefix: &str) -> EnvOverrides {
        EnvOverrides {
            // Only `OTPD_SECTION__KEY` names are configuration: other `OTPD_*`
            // variables (Kubernetes injects `OTPD_PORT=tcp://…` for a Service named
            // otpd) are not ours and are ignored.
            env: Env::prefixed(prefix)
                .filter(|key| key.as_str().contains(ENV_SPLIT))
                .split(ENV_SPLIT),
            defaults: serde_json::to_value(Config::default()).unwrap_or_default(),
        }
    }

    /// Whether `key` (dotted) holds text, judged by its default value.
    fn is_text(&self, key: &str) -> bool {
        let mut at = &self.defaults;
        for part in key.split('.') {
            match at.get(part) {
                Some(next) => at = next,
                None => return false,
            }
        }
        at.is_string() || at.is_null()
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        self.env.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in self.env.iter() {
            let key = key.as_str();
            let quoted = raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"');
            let value = if self.is_text(key) && !quoted {
                Value::from(raw)
            } else {
                raw.parse::<Value>().unwrap_or_else(|e| match e {})
            };
            let parts: Vec<&str> = key.split('.').collect();
            insert_path(&mut dict, &parts, value);
        }
        let mut map = Map::new();
        map.insert(Profile::Default, dict);
        Ok(map)
    }
}

/// Puts `value` at `parts` (`["server", "listen"]`), creating tables on the way.
fn insert_path(dict: &mut Dict, parts: &[&str], value: Value) {
    match parts {
        [] => {}
        [last] => {
            dict.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// One figment error as a line naming the full key and where the value came from:
/// ``unknown key `server.listn` (expected one of …) in environment variable OTPD_SERVER__LISTN``.
fn describe(e: &figment::Error, prefix: &str) -> String {
    use figment::error::Kind;
    let mut path = e.path.clone();
    let what = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!(
                "unknown key `{}` (expected one of: {})",
                path.join("."),
                expected.join(", ")
            )
        }
        other if path.is_empty() => other.to_string(),
        other => format!("`{}`: {other}", path.join(".")),
    };
    let origin = match &e.metadata {
        Some(md) if md.name.contains("environment") => {
            let var: Vec<String> = path.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!(
                " in environment variable {}{}",
                prefix.to_ascii_uppercase(),
                var.join(ENV_SPLIT)
            )
        }
        Some(md) => match &md.source {
            Some(figment::Source::File(file)) => format!(" in {}", file.display()),
            _ => format!(" in {}", md.name),
        },
        None => String::new(),
    };
    format!("{what}{origin}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_actors::config::{Durability, ProviderKind, Synchronous};

    /// A unique environment prefix per test so tests can run in parallel.
    fn with_env(prefix: &str, vars: &[(&str, &str)]) -> impl Drop {
        struct Unset(Vec<String>);
        impl Drop for Unset {
            fn drop(&mut self) {
                for k in &self.0 {
                    std::env::remove_var(k);
                }
            }
        }
        let mut set = Vec::new();
        for (k, v) in vars {
            let name = format!("{prefix}{k}");
            std::env::set_var(&name, v);
            set.push(name);
        }
        Unset(set)
    }

    fn write_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write");
        file
    }

    fn err(text: &str) -> String {
        match Config::from_toml_str(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn zero_workers_is_one_per_core_and_a_set_count_is_kept() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let server = |workers| ServerConfig {
            workers,
            ..ServerConfig::default()
        };
        assert_eq!(server(0).worker_threads(), cores);
        assert_eq!(server(3).worker_threads(), 3);
        assert_eq!(server(1).worker_threads(), 1);
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = Config::load_with_env_prefix(None, "OTPD_TEST_DEFAULTS_").expect("defaults");
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.server.admin_token, None);
        assert_eq!(c.server.workers, 0);
        assert_eq!(c.server.shutdown_timeout_secs, 10);
        assert_eq!(c.storage.path, PathBuf::from("data/otpd.sqlite3"));
        assert_eq!(c.storage.durability, Durability::Commit);
        assert_eq!(c.storage.synchronous, Synchronous::Normal);
        assert_eq!(c.provider.kind, ProviderKind::Log);
        assert_eq!(c.delivery.retry_schedule_secs, vec![1, 4]);
        assert!(c.apps.is_empty());
    }

    #[test]
    fn default_toml_documents_exactly_the_defaults() {
        let text = include_str!("../config/default.toml");
        let from_file = Config::from_toml_str(text).expect("default.toml loads");
        assert_eq!(
            serde_json::to_value(&from_file).expect("json"),
            serde_json::to_value(Config::default()).expect("json"),
        );
        // Every key is written out (or, for a key without a default, shown commented
        // out), so the file documents all of them, not just the ones that differ.
        let parsed: serde_json::Value = Figment::from(Toml::string(text))
            .extract()
            .expect("default.toml is TOML");
        let defaults = serde_json::to_value(Config::default()).expect("json");
        for (section, keys) in defaults.as_object().expect("object") {
            let Some(keys) = keys.as_object() else {
                continue;
            };
            for (key, value) in keys {
                if value.is_null() {
                    assert!(
                        text.contains(&format!("# {key} = ")),
                        "default.toml must show `{section}.{key}` commented out"
                    );
                } else {
                    assert!(
                        parsed.get(section).and_then(|s| s.get(key)).is_some(),
                        "default.toml lacks `{section}.{key}`"
                    );
                }
            }
        }
    }

    #[test]
    fn default_toml_apps_example_names_every_app_setting_and_loads() {
        let text = include_str!("../config/default.toml");
        let start = text.find("\n# [[apps]]\n").expect("an [[apps]] example") + 1;
        let example: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::from_toml_str(&example).expect("the example loads");
        assert_eq!(config.apps.len(), 1);
        let keys: serde_json::Value = Figment::from(Toml::string(&example))
            .extract()
            .expect("toml");
        let entry = keys["apps"][0].as_object().expect("entry");
        let settings = serde_json::to_value(AppSettings::default()).expect("json");
        for key in settings.as_object().expect("object").keys() {
            assert!(
                entry.contains_key(key),
                "the [[apps]] example lacks `{key}`"
            );
        }
    }

    #[test]
    fn file_then_env_layering() {
        let file = write_file(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            workers = 3

            [storage]
            durability = "commit"
            path = "/tmp/x.sqlite3"
            "#,
        );
        let _env = with_env(
            "OTPD_TEST_LAYER_",
            &[
                ("SERVER__LISTEN", "127.0.0.1:7000"),
                ("STORAGE__DURABILITY", "async"),
                ("DELIVERY__RETRY_SCHEDULE_SECS", "[1,2]"),
                (
                    "SERVER__TRUSTED_PROXIES",
                    "[\"10.0.0.0/8\",\"192.168.1.1\"]",
                ),
                ("SERVER__ADMIN_TOKEN", "0123456789012345678"),
            ],
        );
        let c = Config::load_with_env_prefix(Some(file.path()), "OTPD_TEST_LAYER_").expect("loads");
        assert_eq!(c.server.listen, "127.0.0.1:7000", "env beats the file");
        assert_eq!(c.server.workers, 3, "the file beats the default");
        assert_eq!(c.storage.path, PathBuf::from("/tmp/x.sqlite3"));
        assert_eq!(c.storage.durability, Durability::Async);
        assert_eq!(c.delivery.retry_schedule_secs, vec![1, 2]);
        assert_eq!(
            c.delivery.attempt_timeout_secs, 8,
            "untouched keys keep defaults"
        );
        assert_eq!(
            c.server.trusted_proxies,
            vec![
                "10.0.0.0/8".parse::<IpNet>().expect("net"),
                "192.168.1.1/32".parse::<IpNet>().expect("net")
            ]
        );
        assert_eq!(
            c.server.admin_token.as_deref(),
            Some("0123456789012345678"),
            "a token of digits stays a string"
        );
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let e = Config::load_with_env_prefix(
            Some(Path::new("/nonexistent/otpd.toml")),
            "OTPD_TEST_MISSING_",
        )
        .expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/otpd.toml"), "{e}");
    }

    #[test]
    fn an_unknown_key_in_each_section_is_named() {
        for section in [
            "server",
            "storage",
            "security",
            "provider",
            "callbacks",
            "delivery",
            "runtime",
        ] {
            let e = err(&format!("[{section}]\nbogus_key = 1\n"));
            assert!(
                e.contains(&format!("`{section}.bogus_key`")),
                "{section}: {e}"
            );
        }
        let e = err("listen = \"127.0.0.1:1\"\n");
        assert!(e.contains("unknown key `listen`"), "{e}");
        let e = err("[sever]\nlisten = \"127.0.0.1:1\"\n");
        assert!(e.contains("`sever`"), "{e}");
    }

    #[test]
    fn an_unknown_key_in_the_file_names_the_file() {
        let file = write_file("[server]\nlistn = \"0.0.0.0:1\"\n");
        let e = Config::load_with_env_prefix(Some(file.path()), "OTPD_TEST_UNKFILE_")
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("`server.listn`"), "{e}");
        assert!(e.contains(&file.path().display().to_string()), "{e}");
    }

    #[test]
    fn an_unknown_env_key_names_the_variable() {
        let _env = with_env("OTPD_TEST_UNKENV_", &[("SERVER__LISTN", "0.0.0.0:1")]);
        let e = Config::load_with_env_prefix(None, "OTPD_TEST_UNKENV_")
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("`server.listn`"), "{e}");
        assert!(e.contains("OTPD_TEST_UNKENV_SERVER__LISTN"), "{e}");
    }

    #[test]
    fn an_unknown_app_setting_is_named_with_its_app() {
        let e = err(r#"
            [[apps]]
            name = "Shop"
            app_key = "shop"
            api_key = "sk_test_0123456789abcdef"
            max_atempts = 5
            "#);
        assert!(e.contains("max_atempts"), "{e}");
        assert!(e.contains("shop"), "{e}");
    }

    #[test]
    fn a_wrongly_typed_app_setting_is_named() {
        let e = err(r#"
            [[apps]]
            name = "Shop"
            app_key = "shop"
            api_key = "sk_test_0123456789abcdef"
            max_attempts = "five"
            "#);
        assert!(e.contains("max_attempts"), "{e}");
        assert!(e.contains("shop"), "{e}");
    }

    #[test]
    fn apps_entries_carry_every_setting_to_the_runtime() {
        let c = Config::from_toml_str(
            r#"
            [[apps]]
            name = "shop"
            app_key = "shop"
            api_key = "sk_live_0123456789abcdef"
            app_id = "6f1c1d2e-9a53-4c43-a2a4-3f1e2b0c9d11"
            max_attempts = 5
            resend_cooldown_secs = 0
            allowed_countries = ["TZ", "KE"]
            test_numbers = { "255700000001" = "123456" }
            "#,
        )
        .expect("loads");
        let entries = c.app_entries();
        assert_eq!(entries.len(), 1);
        let app = &entries[0];
        assert_eq!(app.app_key.as_deref(), Some("shop"));
        assert_eq!(app.api_key.as_deref(), Some("sk_live_0123456789abcdef"));
        assert!(app.app_id.is_some());
        assert_eq!(app.settings.max_attempts, 5);
        assert_eq!(app.settings.resend_cooldown_secs, 0);
        assert_eq!(app.settings.allowed_countries, vec!["TZ", "KE"]);
        assert_eq!(app.settings.code_length, 6, "unset settings keep defaults");
        assert_eq!(
            app.settings
                .test_numbers
                .get("255700000001")
                .map(String::as_str),
            Some("123456")
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("sk_live_0123456789abcdef"), "{debug}");
        assert!(!c.summary().contains("sk_live_0123456789abcdef"));
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        let cases = [
            ("[server]\nlisten = \"localhost\"\n", "server.listen"),
            ("[server]\nadmin_token = \"short\"\n", "server.admin_token"),
            ("[server]\ntrusted_proxies = [\"not-an-ip\"]\n", "not-an-ip"),
            (
                "[storage]\ndurability = \"sometimes\"\n",
                "storage.durability",
            ),
            (
                "[storage]\nflush_interval_ms = 0\n",
                "storage.flush_interval_ms",
            ),
            ("[provider]\nkind = \"http\"\n", "provider.url"),
            (
                "[delivery]\nretry_schedule_secs = \"1,4\"\n",
                "delivery.retry_schedule_secs",
            ),
            (
                "[delivery]\nheader_prefix = \"X Otpd\"\n",
                "delivery.header_prefix",
            ),
            (
                "[security]\ncode_pepper = \"short\"\n",
                "security.code_pepper",
            ),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert!(e.contains(key), "{text:?} → {e}");
        }
    }

    #[test]
    fn bad_app_entries_are_refused() {
        let app = |extra: &str| {
            format!(
                "[[apps]]\nname = \"Shop\"\napp_key = \"shop\"\napi_key = \"sk_test_0123456789abcdef\"\n{extra}\n"
            )
        };
        let e = err(&app("max_attempts = 50"));
        assert!(e.contains("max_attempts") && e.contains("shop"), "{e}");
        let e = err("[[apps]]\nname = \"Shop\"\napp_key = \"s p\"\napi_key = \"sk_test_0123456789abcdef\"\n");
        assert!(e.contains("app_key"), "{e}");
        let e = err("[[apps]]\nname = \"Shop\"\napp_key = \"shop\"\napi_key = \"short\"\n");
        assert!(e.contains("api_key"), "{e}");
        let e = err("[[apps]]\nname = \"Shop\"\napp_key = \"shop\"\n");
        assert!(e.contains("api_key"), "{e}");
        let twice = format!(
            "{}\n[[apps]]\nname = \"Other\"\napp_key = \"shop\"\napi_key = \"sk_test_other_0123456789\"\n",
            app("")
        );
        let e = err(&twice);
        assert!(e.contains("entry 2") && e.contains("app_key"), "{e}");
    }
}
