//! # otpd-actors
//!
//! The otpd runtime: one supervised actor per (app, phone) holding the flake (code
//! hash, attempts, expiry, callback association), a registry that finds or starts
//! those actors, a SQLite snapshot writer with group commit, and the message path
//! to a provider. No HTTP server inside: the `otpd` crate puts an actix-web API in
//! front; the load-test harness and embedders call [`Runtime`] directly.
//!
//! ## What an embedder uses
//!
//! - [`Runtime`] (built with [`Runtime::builder`] from a [`RuntimeConfig`]): every
//!   OTP, message, app, webhook and delivery-log call, plus gauges and shutdown. Its
//!   inputs and outputs live beside it in [`runtime`] and in the record modules
//!   ([`otp`], [`message`], [`app`], [`webhooks`], [`events`]), and the delivery-log
//!   records are re-exported here ([`DeliveryView`], [`AttemptRecord`], ...).
//! - [`Provider`] to plug in a message sender, [`Clock`] / [`ManualClock`] to drive
//!   time, [`Error`] (with [`StorageError`]) for every failure.
//! - Helpers a receiver or an admin tool needs: [`signing`] (verify a delivery),
//!   [`phone`], [`url_policy`], [`private_files`], [`read_apps`].
//!
//! The actors, the registry, the snapshot writer, the delivery engine, the sender
//! and the rate limiter are internals (`pub(crate)`): they can change shape without
//! breaking an embedder.
//!
//! ## Layout
//!
//! | file | what lives there |
//! |---|---|
//! | `runtime/` | [`Runtime`], the handle everyone drives: `mod.rs` (the handle, commit waits, gauges, shutdown), `builder.rs` (start-up and wiring), `otp.rs` (the OTP calls and their input checks), `messages.rs`, `apps.rs`, `webhooks.rs` (the message, app-admin, webhook and delivery-log calls), `recovery.rs` (start-up recovery), `housekeeping.rs` (reaping, idempotency purge, retention rounds) |
//! | `otp.rs` | the OTP rules of SPEC section 4 as plain functions over [`otp::OtpRecord`] |
//! | `otp_actor.rs` | `otp_actor::OtpActor`: the one writer per (app, phone), supervised; emits `otp.*`/`flake.*` |
//! | `message_actor.rs` | `message_actor::MessageActor`: the one writer per message; rank guard, channel events, delivery reports |
//! | `delivery/` | the delivery engine: `model.rs` (the delivery records storage persists), `actor.rs` (one `DeliveryActor` per endpoint, one signed attempt), `dispatcher.rs` (`Dispatcher`, endpoint health and pause), `headers.rs` (the request headers of an attempt, also what the delivery log shows), `retry.rs` (`delivery::RetrySchedule`, also the sender's) |
//! | `events/` | `mod.rs`: the event catalogue and the one envelope; `outbox.rs`: `Outbox`, the events and deliveries an action commits |
//! | `signing.rs` | `X-Otpd-Signature` and Standard Webhooks signatures |
//! | `stats.rs` | OTP sends and outcomes over the last hour/day (`/v1/stats/otp`) |
//! | `webhooks.rs` | registered webhooks and their in-memory directory |
//! | `registry.rs` | get-or-spawn of actors over one arbiter per core; idle reaping |
//! | `storage/` | `storage::Snapshot`: the SQLite writer thread and group commit (`writer.rs`), checkpoints (`checkpoint.rs`), versioned migrations (`schema.rs`), one loader module per record family (`otp.rs`, `messages.rs`, `apps.rs`, `webhooks.rs`, `deliveries.rs`) |
//! | `sender.rs` | `PendingSend` and the sender that hands committed messages to the provider, retrying on the delivery `RetrySchedule` |
//! | `provider.rs` | the [`Provider`] trait, `log` and `http` providers |
//! | `message.rs` | message records, statuses and the status-rank guard |
//! | `ratelimit.rs` | the app-wide per-minute send cap |
//! | `retention.rs` | the pruner that keeps the database bounded (`[retention]`) |
//! | `apps.rs`, `app.rs` | apps, settings and hashed API keys |
//! | `idempotency.rs` | `Idempotency-Key` replays |
//! | `url_policy.rs` | the outbound URL policy (SSRF defence), request and connect time |
//! | `private_files.rs` | owner-only modes for the data directory and database files |
//! | `secrets.rs` | code generation, keyed hashes, constant-time compare, API keys |
//! | `phone.rs` | phone validation and canonicalisation (libphonenumber rules) |
//! | `telemetry.rs` | the runtime's labelled metrics, their handles cached per thread |
//! | `clock.rs` | the injectable [`Clock`] (wall time, monotonic time, sleeps, `Ticker`), and `Stopwatch` for measurements; the only place that reads the system clock |
//! | `config.rs` | runtime configuration sections and defaults |
//!
//! ## Data flow
//!
//! ```text
//! caller ──► Runtime ──► Registry (DashMap) ──► OtpActor (mailbox = one writer)
//!                                                 │ rules in otp.rs, events in the same commit
//!                                                 ├─► Snapshot: group commit ──► SQLite (WAL)
//!                                                 └─► Ticket ──► Runtime awaits the commit, then
//!                                                     ├─► MessageSender ──► Provider ──► MessageActor (sent/failed)
//!                                                     └─► Dispatcher ──► DeliveryActor per endpoint ──► receiver
//! provider status report ──► MessageActor (rank guard) ──► commit ──► Dispatcher
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
mod apps;
pub mod clock;
pub mod config;
pub(crate) mod delivery;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod message;
pub(crate) mod message_actor;
pub mod otp;
pub(crate) mod otp_actor;
pub mod phone;
pub mod private_files;
pub mod provider;
mod ratelimit;
mod registry;
pub mod retention;
pub mod runtime;
pub mod secrets;
mod sender;
pub mod signing;
pub mod stats;
pub(crate) mod storage;
mod telemetry;
pub mod url_policy;
pub mod webhooks;

pub use app::{App, AppSettings, NewApp};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::RuntimeConfig;
pub use delivery::model::{AttemptRecord, DeliveryKind, DeliveryStatus, DeliveryView};
pub use delivery::{PER_ATTEMPT, SECRET_NOT_SHOWN};
pub use error::Error;
pub use provider::{OutboundMessage, Provider, ProviderError, ProviderReceipt};
pub use registry::host_actors_here;
pub use runtime::{Runtime, RuntimeBuilder, RuntimeGauges, SendOtp, VerifyOtp, VerifyResult};
pub use storage::{read_apps, SnapshotStats, StorageError, SCHEMA_VERSION};

/// The concurrent maps every call looks into (actor registries, apps and API keys,
/// webhooks, the app-wide rate limiter), hashed with foldhash instead of the
/// standard SipHash: their keys (ids, phone numbers, key digests) are hashed several
/// times per request. foldhash is seeded at random per process, so a client choosing
/// phone numbers cannot aim them at one shard or bucket.
pub(crate) type FastDashMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;
