//! The snapshot writer: the one SQLite connection, on its own thread, with group commit.
//!
//! Every state change in otpd is a [`Change`] sent here. The writer takes everything
//! queued, applies it in one transaction, commits once, and only then answers each
//! sender. That is how "acknowledge after commit" stays fast: many callers share one
//! fsync.
//!
//! One bad write fails alone in its batch. Writes that can break a constraint
//! ([`Change::App`], [`Change::ApiKey`], [`Change::Webhook`], [`Change::Outbox`]) run
//! in their own savepoint. The others are upserts and updates that cannot conflict,
//! so they run without one; instead each run of writes between two reads shares one
//! *segment* savepoint. If a write without its own savepoint still fails (disk full,
//! I/O error), the segment is rolled back and replayed one write at a time, each in
//! its own savepoint, so the failure stays with the write that caused it. Reads close
//! the segment first, so a read never observes a write that might be undone later.
//!
//! Checkpoints are off the writer's path: the writer runs with
//! `wal_autocheckpoint = 0`, and a checkpointer thread with its own connection runs
//! `wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`]. A passive checkpoint never
//! blocks the writer, but under sustained load the WAL cannot restart while frames
//! keep arriving, so when it passes [`WAL_RESTART_FRAMES`] the writer itself runs a
//! passive checkpoint between two batches (most frames are already copied by then,
//! so it is short) and the WAL starts over at its next commit.
//!
//! With `durability = "async"` the callers are answered before the commit; a
//! semaphore of [`ASYNC_IN_FLIGHT`] permits (held from the write until its commit)
//! makes them wait, without blocking a thread, when the writer falls behind.
//!
//! It is a plain thread rather than an actix actor because group commit needs to
//! drain the whole queue at once, and an actix `SyncArbiter` hands over one message
//! at a time. Reads that must observe every earlier write (rehydrating an actor)
//! go through the same queue, so they are ordered after the writes before them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::app::{App, AppSettings};
use crate::clock::{from_millis, to_millis, Clock, Stopwatch, SystemClock};
use crate::config::{Durability, StorageConfig, Synchronous};
use crate::delivery::{AttemptRecord, Delivery, DeliveryKind, DeliveryStatus, DeliveryView};
use crate::events::{Event, ServiceType};
use crate::message::{Channel, MessageRecord, MessageStatus, Purpose, ReportTarget, ReportType};
use crate::otp::{CallbackTarget, Flake, FlakeStatus, OtpKey, OtpRecord};
use crate::secrets::Digest32;
use crate::webhooks::{Webhook, WebhookStatus};

/// A storage failure. Cloneable because one failed commit answers many senders.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(String),
    /// The database directory could not be created.
    #[error("io: {0}")]
    Io(String),
    /// A row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer thread has stopped.
    #[error("storage writer has stopped")]
    Closed,
    /// A uniqueness rule was broken (e.g. an `app_key` already in use).
    #[error("{0}")]
    Conflict(String),
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(err, msg) = &e {
            if err.code == rusqlite::ErrorCode::ConstraintViolation {
                return StorageError::Conflict(
                    msg.clone().unwrap_or_else(|| "constraint violated".into()),
                );
            }
        }
        StorageError::Sqlite(e.to_string())
    }
}

/// A stored response for `Idempotency-Key` replays.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    /// App the key belongs to.
    pub app_id: Uuid,
    /// The client's key.
    pub key: String,
    /// SHA-256 of method, path and body of the first request.
    pub request_hash: Digest32,
    /// HTTP status of the first response.
    pub status: u16,
    /// Body of the first response.
    pub body: Vec<u8>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// One durable state change.
#[derive(Debug, Clone)]
pub enum Change {
    /// Upsert an OTP actor's snapshot.
    Otp(OtpRecord),
    /// Upsert a message.
    Message(MessageRecord),
    /// Upsert an app (insert fails on a duplicate `app_key`).
    App(App),
    /// Add an API key (hashed).
    ApiKey {
        /// Key id.
        key_id: Uuid,
        /// Owning app.
        app_id: Uuid,
        /// SHA-256 of the key.
        key_hash: Digest32,
        /// Created.
        created_at: DateTime<Utc>,
    },
    /// Remove an API key.
    DeleteApiKey {
        /// Owning app.
        app_id: Uuid,
        /// Key id.
        key_id: Uuid,
    },
    /// Remember a response for idempotent replays.
    Idempotency(IdempotencyRecord),
    /// Drop idempotency records older than this.
    PurgeIdempotency(DateTime<Utc>),
    /// A server-wide value (e.g. the generated pepper).
    Meta(String, Vec<u8>),
    /// An event and its deliveries (the outbox), committed before any attempt.
    Outbox(Event, Vec<Delivery>),
    /// A delivery's new state (status, attempts, next attempt).
    DeliveryState(Delivery),
    /// One attempt's log line.
    Attempt(AttemptRecord),
    /// Upsert a webhook (insert fails on a second one per app and service type).
    Webhook(Webhook),
    /// Remove a webhook.
    DeleteWebhook(String),
}

/// Counters the metrics endpoint reads.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Operations (writes and reads) carried by those commits.
    pub ops: AtomicU64,
    /// Size of the last batch.
    pub last_batch: AtomicU64,
    /// Total commit time in microseconds.
    pub commit_micros: AtomicU64,
    /// Failed commits.
    pub failures: AtomicU64,
    /// Segments replayed one write at a time after a write without a savepoint failed.
    pub replays: AtomicU64,
    /// Background passive checkpoints run.
    pub checkpoints: AtomicU64,
    /// Total time of those checkpoints in microseconds (off the writer's path).
    pub checkpoint_micros: AtomicU64,
    /// Checkpoints by the writer itself because the WAL grew too long (each lets the
    /// WAL start over at the next commit).
    pub wal_restarts: AtomicU64,
}

/// How often the checkpointer thread runs `wal_checkpoint(PASSIVE)`.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// WAL length (frames, i.e. pages) after which the writer restarts the WAL itself
/// between two batches: 16,384 frames ≈ 64 MiB with 4 KiB pages.
pub const WAL_RESTART_FRAMES: u64 = 16_384;

/// `journal_size_limit`: the WAL file is truncated to this after a restart.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Page cache of the writer connection, in KiB: 8 MiB (SQLite's default is 2 MiB).
/// A fixed cost, but it shows in the RSS-per-flake figure, so it stays modest.
const WRITER_CACHE_KIB: i64 = 8_192;

/// With `durability = "async"`: the most acknowledged changes not yet committed.
/// Callers past this wait (asynchronously) for a commit to free a permit.
pub const ASYNC_IN_FLIGHT: usize = 8_192;

/// With `durability = "async"`: the largest batch one commit takes (bigger batches
/// cost more per op, and delay every caller's commit in the batch).
pub const ASYNC_MAX_BATCH: usize = 1_024;

type ReadFn = Box<dyn FnOnce(&Connection) + Send>;
type Reply = oneshot::Sender<Result<(), StorageError>>;

/// A page of deliveries and the cursor `(created_at ms, delivery_id)` of the next one.
pub type DeliveryListing = (Vec<DeliveryView>, Option<(i64, String)>);

enum Op {
    Write(
        Vec<Change>,
        Option<oneshot::Sender<Result<(), StorageError>>>,
    ),
    Read(ReadFn),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the snapshot writer. Cheap to clone.
#[derive(Clone)]
pub struct Snapshot {
    tx: mpsc::Sender<Op>,
    stats: Arc<SnapshotStats>,
    /// Async-mode backpressure: one permit per acknowledged, uncommitted change.
    in_flight: Arc<Semaphore>,
}

/// A pending commit: resolves once the change is durable (or failed).
pub struct Ticket {
    rx: Option<oneshot::Receiver<Result<(), StorageError>>>,
    /// The snapshot's async backpressure (absent for a ticket that needed no write).
    in_flight: Option<Arc<Semaphore>>,
}

impl Ticket {
    /// Waits for the commit.
    pub async fn committed(self) -> Result<(), StorageError> {
        match self.rx {
            Some(rx) => rx.await.unwrap_or(Err(StorageError::Closed)),
            None => Ok(()),
        }
    }

    /// A ticket for a change that needed no write.
    pub fn done() -> Ticket {
        Ticket {
            rx: None,
            in_flight: None,
        }
    }

    /// A permit for an async acknowledgement, waiting (without blocking the thread)
    /// while [`ASYNC_IN_FLIGHT`] changes are acknowledged but not yet committed.
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        match (&self.rx, &self.in_flight) {
            (Some(_), Some(sem)) => sem.clone().acquire_owned().await.ok(),
            _ => None,
        }
    }
}

impl Ticket {
    /// Acknowledgement per durability mode. `commit`: waits for the commit, then runs
    /// `on_commit`. `async`: returns at once and runs `on_commit` (or `on_error`) when
    /// the commit lands. Either way `on_commit` — sending, dispatching — never runs
    /// before the commit: outbox before network.
    pub(crate) async fn settle(
        self,
        durability: Durability,
        on_commit: impl FnOnce() + Send + 'static,
        on_error: impl FnOnce() + Send + 'static,
    ) -> Result<(), StorageError> {
        match durability {
            Durability::Commit => match self.committed().await {
                Ok(()) => {
                    on_commit();
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; the change was not acknowledged");
                    on_error();
                    Err(e)
                }
            },
            Durability::Async => {
                // Backpressure: held until the commit lands, so callers cannot
                // outrun the writer by more than ASYNC_IN_FLIGHT changes.
                let permit = self.permit().await;
                actix_rt::spawn(async move {
                    let _permit = permit;
                    match self.committed().await {
                        Ok(()) => on_commit(),
                        Err(e) => {
                            tracing::error!(error = %e, "asynchronous commit failed");
                            on_error();
                        }
                    }
                });
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket")
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY, app_key TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    settings TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, key_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS api_keys_app ON api_keys(app_id);
CREATE TABLE IF NOT EXISTS otp_state (
    app_id TEXT NOT NULL, phone TEXT NOT NULL,
    flake_id TEXT, code_hash BLOB, status TEXT, attempts INTEGER, max_attempts INTEGER,
    delivery_method TEXT, message_id TEXT, callback_url TEXT, callback_secret TEXT,
    created_at INTEGER, expires_at INTEGER, finished_at INTEGER,
    sends TEXT NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, phone)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, channel TEXT NOT NULL,
    recipient TEXT NOT NULL, body TEXT, sender_id TEXT, purpose TEXT NOT NULL,
    status TEXT NOT NULL, error_code TEXT, error_message TEXT, provider_message_id TEXT,
    attempts INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    report_url TEXT, report_type TEXT, report_secret TEXT);
CREATE INDEX IF NOT EXISTS messages_queued ON messages(status) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS messages_provider_id ON messages(provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_recent ON messages(app_id, purpose, created_at);
CREATE TABLE IF NOT EXISTS idempotency (
    app_id TEXT NOT NULL, key TEXT NOT NULL, request_hash BLOB NOT NULL,
    status INTEGER NOT NULL, body BLOB NOT NULL, created_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency(created_at);
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, service_type TEXT NOT NULL,
    url TEXT NOT NULL, events TEXT NOT NULL, status TEXT NOT NULL, description TEXT,
    secret TEXT NOT NULL, previous_secret TEXT, previous_secret_until INTEGER,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    UNIQUE (app_id, service_type));
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, event TEXT NOT NULL, channel TEXT NOT NULL,
    body TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL,
    webhook_id TEXT, url TEXT NOT NULL, secret TEXT, report_secret INTEGER NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL, series_start INTEGER NOT NULL,
    last_status_code INTEGER, last_error TEXT, next_attempt_at INTEGER,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_app ON deliveries(app_id, created_at);
CREATE INDEX IF NOT EXISTS deliveries_webhook ON deliveries(webhook_id, created_at);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(status) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS delivery_attempts (
    delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL, at INTEGER NOT NULL,
    status_code INTEGER, error TEXT, duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)) WITHOUT ROWID;
PRAGMA user_version = 3;
"#;

impl Snapshot {
    /// Opens (creating if needed) the database and starts the writer thread.
    ///
    /// Also starts the checkpointer thread (its own connection), which the writer
    /// stops and joins when it stops.
    pub fn open(config: &StorageConfig) -> Result<(Snapshot, JoinHandle<()>), StorageError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// [`Snapshot::open`] with the clock whose time the writer stamps on rows that
    /// carry no time of their own (`updated_at` of OTP state and apps).
    pub fn open_with_clock(
        config: &StorageConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Snapshot, JoinHandle<()>), StorageError> {
        let conn = open_connection(&config.path, config.synchronous)?;
        tune_writer(&conn)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(SnapshotStats::default());
        let wal_frames = Arc::new(AtomicU64::new(0));
        let checkpointer = Checkpointer::start(&config.path, stats.clone(), wal_frames.clone())?;
        let max_batch = match config.durability {
            Durability::Commit => config.max_batch,
            Durability::Async => config.max_batch.min(ASYNC_MAX_BATCH),
        };
        let writer = Writer {
            conn,
            rx,
            stats: stats.clone(),
            durability: config.durability,
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            max_batch,
            wal_frames,
            checkpointer: Some(checkpointer),
            segment: Vec::new(),
            clock,
        };
        let handle = std::thread::Builder::new()
            .name("otpd-snapshot".into())
            .spawn(move || writer.run())
            .map_err(|e| StorageError::Io(e.to_string()))?;
        Ok((
            Snapshot {
                tx,
                stats,
                in_flight: Arc::new(Semaphore::new(ASYNC_IN_FLIGHT)),
            },
            handle,
        ))
    }

    /// Queues changes for the next group commit; the ticket resolves after it.
    /// Never blocks: this runs inside actor handlers on the runtime's arbiters.
    pub fn write(&self, changes: Vec<Change>) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let rx = if self.tx.send(Op::Write(changes, Some(tx))).is_err() {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Err(StorageError::Closed));
            rx
        } else {
            rx
        };
        Ticket {
            rx: Some(rx),
            in_flight: Some(self.in_flight.clone()),
        }
    }

    /// Runs `f` on the writer's connection, after every write queued before it.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op = Op::Read(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        }));
        self.tx.send(op).map_err(|_| StorageError::Closed)?;
        rx.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Runs `f` on the writer's connection inside the group transaction, in a
    /// savepoint of its own: what it writes commits with that batch, and an error
    /// undoes only its own part. For maintenance (retention) that must not race the
    /// one writer; the answer comes before the batch commits, so `f` must only make
    /// changes that are harmless to lose if that commit fails.
    pub async fn write_with<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        self.read(move |conn| {
            exec(conn, "SAVEPOINT maintenance")?;
            match f(conn) {
                Ok(v) => {
                    exec(conn, "RELEASE maintenance")?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = exec(conn, "ROLLBACK TO maintenance");
                    let _ = exec(conn, "RELEASE maintenance");
                    Err(e)
                }
            }
        })
        .await
    }

    /// Commits everything queued and stops the writer.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Commit counters.
    pub fn stats(&self) -> &SnapshotStats {
        &self.stats
    }
}

/// Opens a connection with otpd's pragmas and schema.
pub fn open_connection(path: &Path, synchronous: Synchronous) -> Result<Connection, StorageError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_files::create_private_dir(dir)
            .map_err(|e| StorageError::Io(format!("creating {}: {e}", dir.display())))?;
    }
    crate::private_files::prepare_db_file(path)
        .map_err(|e| StorageError::Io(format!("{}: {e}", path.display())))?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    crate::private_files::restrict_db_files(path)
        .map_err(|e| StorageError::Io(format!("{}: {e}", path.display())))?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.execute_batch(SCHEMA)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Brings a database made by an earlier otpd up to the current schema.
fn migrate(conn: &Connection) -> Result<(), StorageError> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('messages')")?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for column in ["report_url", "report_type", "report_secret"] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {column} TEXT"))?;
        }
    }
    Ok(())
}

/// Writer-only pragmas: a large page cache, temp tables in memory, no automatic
/// checkpoint (the checkpointer thread does it), a bounded WAL file, and room in the
/// statement cache for every statement the writer and the loaders use.
fn tune_writer(conn: &Connection) -> Result<(), StorageError> {
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.query_row("PRAGMA wal_autocheckpoint = 0", [], |_| Ok(()))
        .optional()?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

/// The checkpointer thread: `wal_checkpoint(PASSIVE)` from its own connection every
/// [`CHECKPOINT_EVERY`], so copying WAL frames into the database and the fsync that
/// follows run beside the writer instead of inside its commits.
struct Checkpointer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    fn start(
        path: &Path,
        stats: Arc<SnapshotStats>,
        wal_frames: Arc<AtomicU64>,
    ) -> Result<Checkpointer, StorageError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("otpd-checkpoint".into())
            .spawn(move || loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let started = Stopwatch::start();
                // (busy, frames in the WAL, frames copied into the database)
                let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                match result {
                    Ok((_, log, _)) => {
                        wal_frames.store(log.max(0) as u64, Ordering::Relaxed);
                        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                        stats.checkpoint_micros.fetch_add(
                            started.elapsed().as_micros() as u64,
                            Ordering::Relaxed,
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, db = %path.display(), "background checkpoint failed")
                    }
                }
            })
            .map_err(|e| StorageError::Io(e.to_string()))?;
        Ok(Checkpointer { stop, handle })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Op>,
    stats: Arc<SnapshotStats>,
    durability: Durability,
    flush_interval: Duration,
    max_batch: usize,
    /// WAL length at the checkpointer's last pass.
    wal_frames: Arc<AtomicU64>,
    checkpointer: Option<Checkpointer>,
    /// Writes of the open segment (kept until the segment is released, to replay them).
    segment: Vec<(Vec<Change>, Option<Reply>)>,
    /// The time stamped as `updated_at` where a change carries none.
    clock: Arc<dyn Clock>,
}

/// Whether a change can break a constraint, and so needs its own savepoint.
fn may_conflict(change: &Change) -> bool {
    matches!(
        change,
        Change::App(_) | Change::ApiKey { .. } | Change::Webhook(_) | Change::Outbox(..)
    )
}

/// Runs one cached statement with no parameters (savepoint control).
fn exec(conn: &Connection, sql: &str) -> Result<(), StorageError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Applies `changes` inside their own savepoint `w`: all or nothing.
fn apply_in_savepoint(
    conn: &Connection,
    changes: &[Change],
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    exec(conn, "SAVEPOINT w")?;
    match changes.iter().try_for_each(|c| apply(conn, c, now)) {
        Ok(()) => exec(conn, "RELEASE w"),
        Err(e) => {
            exec(conn, "ROLLBACK TO w")?;
            exec(conn, "RELEASE w")?;
            Err(e)
        }
    }
}

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<Op> = Vec::with_capacity(self.max_batch);
        loop {
            let Ok(first) = self.rx.recv() else {
                self.stop_checkpointer();
                return;
            };
            batch.push(first);
            match self.durability {
                // Callers wait for the commit: take what is already queued, no more.
                Durability::Commit => {
                    while batch.len() < self.max_batch {
                        match self.rx.try_recv() {
                            Ok(op) => batch.push(op),
                            Err(_) => break,
                        }
                    }
                }
                // Nobody waits: gather for up to flush_interval to make bigger batches.
                Durability::Async => {
                    let gathering = Stopwatch::start();
                    while batch.len() < self.max_batch {
                        let left = self.flush_interval.saturating_sub(gathering.elapsed());
                        match self.rx.recv_timeout(left) {
                            Ok(op) => batch.push(op),
                            Err(_) => break,
                        }
                    }
                }
            }
            if self.process(&mut batch) {
                self.stop_checkpointer();
                let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                return;
            }
            self.bound_wal();
        }
    }

    fn stop_checkpointer(&mut self) {
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
    }

    /// Under sustained load a passive checkpoint never finds the WAL fully copied
    /// between two commits, so SQLite never restarts it and it would only grow. Past
    /// `WAL_RESTART_FRAMES` the writer copies the few frames the checkpointer has not
    /// (a passive checkpoint of its own, between two batches); its next transaction
    /// then starts the WAL over. If the checkpointer is mid-pass the attempt returns
    /// busy at once (a passive checkpoint never waits) and is retried after the next
    /// batch, so the writer never stalls on the checkpointer.
    fn bound_wal(&mut self) {
        if self.wal_frames.load(Ordering::Relaxed) < WAL_RESTART_FRAMES {
            return;
        }
        let started = Stopwatch::start();
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        match result {
            Ok((0, log, done)) if log == done => {
                self.wal_frames.store(0, Ordering::Relaxed);
                self.stats.wal_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    frames = log,
                    micros = started.elapsed().as_micros() as u64,
                    "WAL fully checkpointed by the writer; it restarts with the next commit"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint by the writer failed"),
        }
    }

    /// Applies one batch; returns true when a shutdown was requested.
    fn process(&mut self, batch: &mut Vec<Op>) -> bool {
        let started = Stopwatch::start();
        let now = self.clock.now();
        let mut replies: Vec<(Reply, Result<(), StorageError>)> = Vec::with_capacity(batch.len());
        let mut shutdown: Vec<oneshot::Sender<()>> = Vec::new();
        let count = batch.len() as u64;
        let outcome = (|| -> Result<(), StorageError> {
            exec(&self.conn, "BEGIN")?;
            for op in batch.drain(..) {
                match op {
                    Op::Write(changes, reply) => {
                        if changes.iter().any(may_conflict) {
                            self.open_segment()?;
                            match apply_in_savepoint(&self.conn, &changes, now) {
                                // Kept in the segment: a later failure replays it too.
                                Ok(()) => self.segment.push((changes, reply)),
                                Err(e) => {
                                    if self.conn.is_autocommit() {
                                        // SQLite rolled the whole transaction back.
                                        return Err(e);
                                    }
                                    tracing::warn!(error = %e, "storage write refused");
                                    if let Some(reply) = reply {
                                        replies.push((reply, Err(e)));
                                    }
                                }
                            }
                        } else {
                            self.open_segment()?;
                            let result = changes.iter().try_for_each(|c| apply(&self.conn, c, now));
                            self.segment.push((changes, reply));
                            if let Err(e) = result {
                                self.replay_segment(&mut replies, e)?;
                            }
                        }
                    }
                    Op::Read(f) => {
                        // The read may observe every write before it: release them first.
                        self.release_segment(&mut replies)?;
                        f(&self.conn)
                    }
                    Op::Shutdown(done) => shutdown.push(done),
                }
            }
            self.release_segment(&mut replies)?;
            exec(&self.conn, "COMMIT")?;
            Ok(())
        })();
        let micros = started.elapsed().as_micros() as u64;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.ops.fetch_add(count, Ordering::Relaxed);
        self.stats.last_batch.store(count, Ordering::Relaxed);
        self.stats
            .commit_micros
            .fetch_add(micros, Ordering::Relaxed);
        // Writes of a segment that was never released (the batch failed midway).
        for (_, reply) in self.segment.drain(..) {
            if let Some(reply) = reply {
                replies.push((reply, Err(StorageError::Closed)));
            }
        }
        match outcome {
            Ok(()) => {
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "group commit failed");
                if !self.conn.is_autocommit() {
                    let _ = exec(&self.conn, "ROLLBACK");
                }
                for (reply, _) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        let stop = !shutdown.is_empty();
        for done in shutdown {
            let _ = done.send(());
        }
        stop
    }

    /// Opens the segment savepoint `seg` unless one is open.
    fn open_segment(&mut self) -> Result<(), StorageError> {
        if self.segment.is_empty() {
            exec(&self.conn, "SAVEPOINT seg")?;
        }
        Ok(())
    }

    /// Folds the open segment into the transaction; its writers' replies become final.
    fn release_segment(
        &mut self,
        replies: &mut Vec<(Reply, Result<(), StorageError>)>,
    ) -> Result<(), StorageError> {
        if self.segment.is_empty() {
            return Ok(());
        }
        exec(&self.conn, "RELEASE seg")?;
        for (_, reply) in self.segment.drain(..) {
            if let Some(reply) = reply {
                replies.push((reply, Ok(())));
            }
        }
        Ok(())
    }

    /// A write without its own savepoint failed (`cause`), possibly after some of its
    /// statements ran. Rolls the segment back and replays it one write at a time, each
    /// in its own savepoint, so only the writes that fail again are refused. If SQLite
    /// already rolled the whole transaction back, the error fails the batch.
    fn replay_segment(
        &mut self,
        replies: &mut Vec<(Reply, Result<(), StorageError>)>,
        cause: StorageError,
    ) -> Result<(), StorageError> {
        self.stats.replays.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %cause, writes = self.segment.len(), "a storage write failed; replaying its segment one write at a time");
        if self.conn.is_autocommit() {
            return Err(cause);
        }
        exec(&self.conn, "ROLLBACK TO seg")?;
        exec(&self.conn, "RELEASE seg")?;
        let now = self.clock.now();
        for (changes, reply) in std::mem::take(&mut self.segment) {
            let result = apply_in_savepoint(&self.conn, &changes, now);
            if self.conn.is_autocommit() {
                // The transaction is gone: nothing in this batch can commit.
                if let Some(reply) = reply {
                    replies.push((reply, Err(cause.clone())));
                }
                return Err(result.err().unwrap_or(cause));
            }
            if let Err(e) = &result {
                tracing::warn!(error = %e, "storage write refused");
            }
            if let Some(reply) = reply {
                replies.push((reply, result));
            }
        }
        Ok(())
    }
}

fn uuid_text(id: &Uuid) -> String {
    id.hyphenated().to_string()
}

fn parse_uuid(s: &str) -> Result<Uuid, StorageError> {
    Uuid::parse_str(s).map_err(|e| StorageError::Corrupt(format!("uuid {s:?}: {e}")))
}

/// Applies one change; `now` is the `updated_at` of rows whose change carries none.
fn apply(conn: &Connection, change: &Change, now: DateTime<Utc>) -> Result<(), StorageError> {
    match change {
        Change::Otp(rec) => {
            let sends = rec
                .sends
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let f = rec.flake.as_ref();
            let mut stmt = conn.prepare_cached(
                "INSERT INTO otp_state (app_id, phone, flake_id, code_hash, status, attempts,
                 max_attempts, delivery_method, message_id, callback_url, callback_secret, created_at,
                 expires_at, finished_at, sends, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT(app_id, phone) DO UPDATE SET flake_id = excluded.flake_id,
                 code_hash = excluded.code_hash, status = excluded.status, attempts = excluded.attempts,
                 max_attempts = excluded.max_attempts, delivery_method = excluded.delivery_method,
                 message_id = excluded.message_id, callback_url = excluded.callback_url,
                 callback_secret = excluded.callback_secret, created_at = excluded.created_at,
                 expires_at = excluded.expires_at, finished_at = excluded.finished_at,
                 sends = excluded.sends, updated_at = excluded.updated_at",
            )?;
            stmt.execute(params![
                uuid_text(&rec.key.app_id),
                rec.key.phone.as_str(),
                f.map(|f| uuid_text(&f.flake_id)),
                f.map(|f| f.code_hash.to_vec()),
                f.map(|f| f.status.as_str()),
                f.map(|f| f.attempts),
                f.map(|f| f.max_attempts),
                f.map(|f| f.delivery_method.as_str()),
                f.and_then(|f| f.message_id.as_ref().map(uuid_text)),
                f.and_then(|f| f.callback.as_ref().map(|c| c.url.clone())),
                f.and_then(|f| f.callback.as_ref().and_then(|c| c.secret.clone())),
                f.map(|f| to_millis(f.created_at)),
                f.map(|f| to_millis(f.expires_at)),
                f.and_then(|f| f.finished_at.map(to_millis)),
                sends,
                to_millis(now),
            ])?;
        }
        Change::Message(m) => {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO messages (message_id, app_id, channel, recipient, body, sender_id, purpose,
                 status, error_code, error_message, provider_message_id, attempts, created_at, updated_at,
                 report_url, report_type, report_secret)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT(message_id) DO UPDATE SET status = excluded.status,
                 error_code = excluded.error_code, error_message = excluded.error_message,
                 provider_message_id = excluded.provider_message_id, attempts = excluded.attempts,
                 body = excluded.body, updated_at = excluded.updated_at",
            )?;
            stmt.execute(params![
                uuid_text(&m.message_id),
                uuid_text(&m.app_id),
                m.channel.as_str(),
                m.to,
                m.body,
                m.sender_id,
                match m.purpose {
                    Purpose::Otp => "otp",
                    Purpose::Message => "message",
                },
                m.status.as_str(),
                m.error_code,
                m.error_message,
                m.provider_message_id,
                m.attempts,
                to_millis(m.created_at),
                to_millis(m.updated_at),
                m.report.as_ref().map(|r| r.url.clone()),
                m.report.as_ref().map(|r| r.report_type.as_str()),
                m.report.as_ref().and_then(|r| r.secret.clone()),
            ])?;
        }
        Change::App(app) => {
            let settings = serde_json::to_string(&app.settings)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            let mut stmt = conn.prepare_cached(
                "INSERT INTO apps (app_id, app_key, name, settings, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(app_id) DO UPDATE SET app_key = excluded.app_key, name = excluded.name,
                 settings = excluded.settings, updated_at = excluded.updated_at",
            )?;
            stmt.execute(params![
                uuid_text(&app.app_id),
                app.app_key,
                app.name,
                settings,
                to_millis(app.created_at),
                to_millis(now),
            ])?;
        }
        Change::ApiKey {
            key_id,
            app_id,
            key_hash,
            created_at,
        } => {
            conn.prepare_cached(
                "INSERT INTO api_keys (key_id, app_id, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key_hash) DO NOTHING",
            )?
            .execute(params![uuid_text(key_id), uuid_text(app_id), key_hash.to_vec(), to_millis(*created_at)])?;
        }
        Change::DeleteApiKey { app_id, key_id } => {
            conn.prepare_cached("DELETE FROM api_keys WHERE app_id = ?1 AND key_id = ?2")?
                .execute(params![uuid_text(app_id), uuid_text(key_id)])?;
        }
        Change::Idempotency(r) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO idempotency (app_id, key, request_hash, status, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                uuid_text(&r.app_id),
                r.key,
                r.request_hash.to_vec(),
                r.status,
                r.body,
                to_millis(r.created_at)
            ])?;
        }
        Change::PurgeIdempotency(before) => {
            conn.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
                .execute(params![to_millis(*before)])?;
        }
        Change::Meta(key, value) => {
            conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
                .execute(params![key, value])?;
        }
        Change::Outbox(event, deliveries) => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO events (event_id, app_id, event, channel, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                event.id,
                uuid_text(&event.app_id),
                event.event,
                event.channel.as_str(),
                &*event.body,
                to_millis(event.created_at)
            ])?;
            for d in deliveries {
                conn.prepare_cached(
                    "INSERT INTO deliveries (delivery_id, app_id, event_id, kind, webhook_id, url, secret,
                     report_secret, status, attempts, series_start, last_status_code, last_error,
                     next_attempt_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )?
                .execute(params![
                    d.delivery_id,
                    uuid_text(&d.app_id),
                    d.event.id,
                    d.kind.as_str(),
                    d.webhook_id,
                    d.url,
                    d.secret,
                    d.report_secret,
                    d.status.as_str(),
                    d.attempts,
                    d.series_start,
                    d.last_status_code,
                    d.last_error,
                    d.next_attempt_at.map(to_millis),
                    to_millis(d.created_at),
                    to_millis(d.updated_at),
                ])?;
            }
        }
        Change::DeliveryState(d) => {
            conn.prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = ?3, series_start = ?4, last_status_code = ?5,
                 last_error = ?6, next_attempt_at = ?7, updated_at = ?8 WHERE delivery_id = ?1",
            )?
            .execute(params![
                d.delivery_id,
                d.status.as_str(),
                d.attempts,
                d.series_start,
                d.last_status_code,
                d.last_error,
                d.next_attempt_at.map(to_millis),
                to_millis(d.updated_at),
            ])?;
        }
        Change::Attempt(a) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO delivery_attempts (delivery_id, attempt, at, status_code, error, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![a.delivery_id, a.attempt, to_millis(a.at), a.status_code, a.error, a.duration_ms])?;
        }
        Change::Webhook(w) => {
            let events = serde_json::to_string(&w.events)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            conn.prepare_cached(
                "INSERT INTO webhooks (webhook_id, app_id, service_type, url, events, status, description, secret,
                 previous_secret, previous_secret_until, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(webhook_id) DO UPDATE SET url = excluded.url, events = excluded.events,
                 status = excluded.status, description = excluded.description, secret = excluded.secret,
                 previous_secret = excluded.previous_secret, previous_secret_until = excluded.previous_secret_until,
                 updated_at = excluded.updated_at",
            )?
            .execute(params![
                w.id,
                uuid_text(&w.app_id),
                w.service_type.as_str(),
                w.url,
                events,
                w.status.as_str(),
                w.description,
                w.secret,
                w.previous_secret.as_ref().map(|(s, _)| s.clone()),
                w.previous_secret.as_ref().map(|(_, until)| to_millis(*until)),
                to_millis(w.created_at),
                to_millis(w.updated_at),
            ])?;
        }
        Change::DeleteWebhook(id) => {
            conn.prepare_cached("DELETE FROM webhooks WHERE webhook_id = ?1")?
                .execute(params![id])?;
        }
    }
    Ok(())
}

/// Loads one OTP actor's snapshot (an empty record when none exists).
pub fn load_otp(conn: &Connection, key: &OtpKey) -> Result<OtpRecord, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT flake_id, code_hash, status, attempts, max_attempts, delivery_method, message_id,
         callback_url, callback_secret, created_at, expires_at, finished_at, sends
         FROM otp_state WHERE app_id = ?1 AND phone = ?2",
    )?;
    let row = stmt
        .query_row(params![uuid_text(&key.app_id), key.phone.as_str()], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<u32>>(3)?,
                r.get::<_, Option<u32>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<i64>>(9)?,
                r.get::<_, Option<i64>>(10)?,
                r.get::<_, Option<i64>>(11)?,
                r.get::<_, String>(12)?,
            ))
        })
        .optional()?;
    let mut rec = OtpRecord::new(key.clone());
    let Some((
        flake_id,
        hash,
        status,
        attempts,
        max,
        method,
        message_id,
        cb_url,
        cb_secret,
        created,
        expires,
        finished,
        sends,
    )) = row
    else {
        return Ok(rec);
    };
    rec.sends = sends
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|e| StorageError::Corrupt(format!("sends: {e}")))
        })
        .collect::<Result<VecDeque<_>, _>>()?;
    if let (Some(flake_id), Some(hash), Some(status)) = (flake_id, hash, status) {
        let code_hash: Digest32 = hash
            .try_into()
            .map_err(|_| StorageError::Corrupt("code_hash is not 32 bytes".into()))?;
        rec.flake = Some(Flake {
            flake_id: parse_uuid(&flake_id)?,
            code_hash,
            status: FlakeStatus::parse(&status)
                .ok_or_else(|| StorageError::Corrupt(format!("status {status:?}")))?,
            attempts: attempts.unwrap_or(0),
            max_attempts: max.unwrap_or(3),
            delivery_method: method
                .as_deref()
                .unwrap_or("sms")
                .parse::<Channel>()
                .map_err(StorageError::Corrupt)?,
            message_id: message_id.as_deref().map(parse_uuid).transpose()?,
            callback: cb_url.map(|url| CallbackTarget {
                url,
                secret: cb_secret,
            }),
            created_at: from_millis(created.unwrap_or(0)),
            expires_at: from_millis(expires.unwrap_or(0)),
            finished_at: finished.map(from_millis),
        });
    }
    Ok(rec)
}

fn message_from_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<MessageRecord, StorageError>> {
    let id: String = r.get(0)?;
    let app: String = r.get(1)?;
    let channel: String = r.get(2)?;
    let purpose: String = r.get(6)?;
    let status: String = r.get(7)?;
    let build = || -> Result<MessageRecord, StorageError> {
        Ok(MessageRecord {
            message_id: parse_uuid(&id)?,
            app_id: parse_uuid(&app)?,
            channel: channel.parse().map_err(StorageError::Corrupt)?,
            to: r.get(3).map_err(StorageError::from)?,
            body: r.get(4).map_err(StorageError::from)?,
            sender_id: r.get(5).map_err(StorageError::from)?,
            purpose: if purpose == "otp" {
                Purpose::Otp
            } else {
                Purpose::Message
            },
            status: status
                .parse::<MessageStatus>()
                .map_err(StorageError::Corrupt)?,
            error_code: r.get(8).map_err(StorageError::from)?,
            error_message: r.get(9).map_err(StorageError::from)?,
            provider_message_id: r.get(10).map_err(StorageError::from)?,
            attempts: r.get(11).map_err(StorageError::from)?,
            created_at: from_millis(r.get(12).map_err(StorageError::from)?),
            updated_at: from_millis(r.get(13).map_err(StorageError::from)?),
            report: r
                .get::<_, Option<String>>(14)
                .map_err(StorageError::from)?
                .map(|url| ReportTarget {
                    url,
                    report_type: match r.get::<_, Option<String>>(15).ok().flatten().as_deref() {
                        Some("final") => ReportType::Final,
                        _ => ReportType::All,
                    },
                    secret: r.get(16).ok().flatten(),
                }),
        })
    };
    Ok(build())
}

const MESSAGE_COLUMNS: &str =
    "message_id, app_id, channel, recipient, body, sender_id, purpose, status,
     error_code, error_message, provider_message_id, attempts, created_at, updated_at,
     report_url, report_type, report_secret";

/// Loads one message of an app.
pub fn load_message(
    conn: &Connection,
    app_id: &Uuid,
    message_id: &Uuid,
) -> Result<Option<MessageRecord>, StorageError> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = ?1 AND app_id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let row = stmt
        .query_row(
            params![uuid_text(message_id), uuid_text(app_id)],
            message_from_row,
        )
        .optional()?;
    row.transpose()
}

/// The message a provider's id belongs to.
pub fn message_id_by_provider_id(
    conn: &Connection,
    provider_message_id: &str,
) -> Result<Option<Uuid>, StorageError> {
    let id: Option<String> = conn
        .prepare_cached("SELECT message_id FROM messages WHERE provider_message_id = ?1 ORDER BY created_at DESC LIMIT 1")?
        .query_row(params![provider_message_id], |r| r.get(0))
        .optional()?;
    id.as_deref().map(parse_uuid).transpose()
}

/// One message by id, whatever its app (status reports come from the provider).
pub fn load_message_any(
    conn: &Connection,
    message_id: &Uuid,
) -> Result<Option<MessageRecord>, StorageError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let row = stmt
        .query_row(params![uuid_text(message_id)], message_from_row)
        .optional()?;
    row.transpose()
}

/// Every message still `queued` (start-up recovery resumes them).
pub fn load_queued_messages(conn: &Connection) -> Result<Vec<MessageRecord>, StorageError> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = 'queued' ORDER BY created_at"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], message_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// OTP sends per app since `since` (rebuilds the app-wide per-minute window at start).
pub fn recent_otp_sends(
    conn: &Connection,
    since: DateTime<Utc>,
) -> Result<Vec<(Uuid, i64)>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT app_id, created_at FROM messages WHERE purpose = 'otp' AND created_at >= ?1 ORDER BY created_at",
    )?;
    let rows = stmt.query_map(params![to_millis(since)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (app, at) = row?;
        out.push((parse_uuid(&app)?, at));
    }
    Ok(out)
}

/// Every app with its settings.
pub fn load_apps(conn: &Connection) -> Result<Vec<App>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT app_id, app_key, name, settings, created_at FROM apps ORDER BY created_at",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, app_key, name, settings, created) = row?;
        let settings: AppSettings = serde_json::from_str(&settings)
            .map_err(|e| StorageError::Corrupt(format!("app settings: {e}")))?;
        out.push(App {
            app_id: parse_uuid(&id)?,
            app_key,
            name,
            settings,
            created_at: from_millis(created),
        });
    }
    Ok(out)
}

/// Every API key hash with its key id and app.
pub fn load_api_keys(conn: &Connection) -> Result<Vec<(Digest32, Uuid, Uuid)>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT key_hash, key_id, app_id FROM api_keys")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hash, key_id, app_id) = row?;
        let hash: Digest32 = hash
            .try_into()
            .map_err(|_| StorageError::Corrupt("key_hash".into()))?;
        out.push((hash, parse_uuid(&key_id)?, parse_uuid(&app_id)?));
    }
    Ok(out)
}

/// Whether an API key id exists for an app.
pub fn api_key_exists(
    conn: &Connection,
    app_id: &Uuid,
    key_id: &Uuid,
) -> Result<bool, StorageError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM api_keys WHERE app_id = ?1 AND key_id = ?2")?
        .query_row(params![uuid_text(app_id), uuid_text(key_id)], |r| r.get(0))?;
    Ok(n > 0)
}

/// A server-wide value.
pub fn load_meta(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()?)
}

/// A stored idempotent response.
pub fn load_idempotency(
    conn: &Connection,
    app_id: &Uuid,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StorageError> {
    let row = conn
        .prepare_cached("SELECT request_hash, status, body, created_at FROM idempotency WHERE app_id = ?1 AND key = ?2")?
        .query_row(params![uuid_text(app_id), key], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u16>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, i64>(3)?))
        })
        .optional()?;
    let Some((hash, status, body, created)) = row else {
        return Ok(None);
    };
    let request_hash: Digest32 = hash
        .try_into()
        .map_err(|_| StorageError::Corrupt("request_hash".into()))?;
    Ok(Some(IdempotencyRecord {
        app_id: *app_id,
        key: key.to_string(),
        request_hash,
        status,
        body,
        created_at: from_millis(created),
    }))
}

/// Every webhook.
pub fn load_webhooks(conn: &Connection) -> Result<Vec<Webhook>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT webhook_id, app_id, service_type, url, events, status, description, secret,
         previous_secret, previous_secret_until, created_at, updated_at FROM webhooks",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<i64>>(9)?,
            r.get::<_, i64>(10)?,
            r.get::<_, i64>(11)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            id,
            app,
            st,
            url,
            events,
            status,
            description,
            secret,
            prev,
            prev_until,
            created,
            updated,
        ) = row?;
        out.push(Webhook {
            id,
            app_id: parse_uuid(&app)?,
            service_type: st.parse::<ServiceType>().map_err(StorageError::Corrupt)?,
            url,
            events: serde_json::from_str(&events)
                .map_err(|e| StorageError::Corrupt(format!("events: {e}")))?,
            status: WebhookStatus::parse(&status)
                .ok_or_else(|| StorageError::Corrupt(format!("status {status:?}")))?,
            description,
            secret,
            previous_secret: prev.zip(prev_until.map(from_millis)),
            created_at: from_millis(created),
            updated_at: from_millis(updated),
        });
    }
    Ok(out)
}

const DELIVERY_COLUMNS: &str = "d.delivery_id, d.app_id, d.kind, d.webhook_id, d.url, d.secret, d.report_secret,
     d.status, d.attempts, d.series_start, d.last_status_code, d.last_error, d.next_attempt_at, d.created_at,
     d.updated_at, e.event_id, e.event, e.channel, e.body, e.created_at";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Delivery, StorageError>> {
    let app: String = r.get(1)?;
    let kind: String = r.get(2)?;
    let status: String = r.get(7)?;
    let channel: String = r.get(17)?;
    let event_app = app.clone();
    let build = || -> Result<Delivery, StorageError> {
        let app_id = parse_uuid(&app)?;
        Ok(Delivery {
            delivery_id: r.get(0)?,
            app_id,
            kind: DeliveryKind::parse(&kind)
                .ok_or_else(|| StorageError::Corrupt(format!("kind {kind:?}")))?,
            webhook_id: r.get(3)?,
            url: r.get(4)?,
            secret: r.get(5)?,
            report_secret: r.get(6)?,
            status: DeliveryStatus::parse(&status)
                .ok_or_else(|| StorageError::Corrupt(format!("status {status:?}")))?,
            attempts: r.get(8)?,
            series_start: r.get(9)?,
            last_status_code: r.get(10)?,
            last_error: r.get(11)?,
            next_attempt_at: r.get::<_, Option<i64>>(12)?.map(from_millis),
            created_at: from_millis(r.get(13)?),
            updated_at: from_millis(r.get(14)?),
            event: Event {
                id: r.get(15)?,
                event: r.get(16)?,
                channel: channel
                    .parse::<ServiceType>()
                    .map_err(StorageError::Corrupt)?,
                app_id: parse_uuid(&event_app)?,
                body: r.get::<_, String>(18)?.into(),
                created_at: from_millis(r.get(19)?),
            },
        })
    };
    Ok(build())
}

/// Every delivery still `pending` (start-up recovery resumes them), oldest first.
pub fn load_pending_deliveries(conn: &Connection) -> Result<Vec<Delivery>, StorageError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id
         WHERE d.status = 'pending' ORDER BY d.created_at"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], delivery_from_row)?;
    rows.map(|r| r?).collect()
}

/// One delivery of an app, with its attempt log.
pub fn load_delivery(
    conn: &Connection,
    app_id: &Uuid,
    delivery_id: &str,
) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StorageError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id
         WHERE d.delivery_id = ?1 AND d.app_id = ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let Some(delivery) = stmt
        .query_row(params![delivery_id, uuid_text(app_id)], delivery_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    let delivery = delivery?;
    let mut stmt = conn.prepare_cached(
        "SELECT attempt, at, status_code, error, duration_ms FROM delivery_attempts
         WHERE delivery_id = ?1 ORDER BY attempt",
    )?;
    let attempts = stmt
        .query_map(params![delivery_id], |r| {
            Ok(AttemptRecord {
                delivery_id: delivery_id.to_string(),
                attempt: r.get(0)?,
                at: from_millis(r.get(1)?),
                status_code: r.get(2)?,
                error: r.get(3)?,
                duration_ms: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((delivery, attempts)))
}

/// Which deliveries a list shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// The app (always).
    pub app_id: Uuid,
    /// Only this webhook's.
    pub webhook_id: Option<String>,
    /// Only this kind.
    pub kind: Option<DeliveryKind>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Continue after this `(created_at ms, delivery_id)`.
    pub after: Option<(i64, String)>,
    /// Page size.
    pub limit: usize,
}

/// A page of deliveries, newest first, with the cursor of the last one when more remain.
pub fn list_deliveries(
    conn: &Connection,
    f: &DeliveryFilter,
) -> Result<DeliveryListing, StorageError> {
    let mut sql = String::from(
        "SELECT d.delivery_id, d.event_id, e.event, d.kind, d.status, d.attempts, d.last_status_code,
         d.last_error, d.created_at, d.updated_at, d.next_attempt_at
         FROM deliveries d JOIN events e ON e.event_id = d.event_id WHERE d.app_id = ?1",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![uuid_text(&f.app_id).into()];
    if let Some(w) = &f.webhook_id {
        args.push(w.clone().into());
        sql += &format!(" AND d.webhook_id = ?{}", args.len());
    }
    if let Some(k) = f.kind {
        args.push(k.as_str().to_string().into());
        sql += &format!(" AND d.kind = ?{}", args.len());
    }
    if let Some(s) = f.status {
        args.push(s.as_str().to_string().into());
        sql += &format!(" AND d.status = ?{}", args.len());
    }
    if let Some((at, id)) = &f.after {
        args.push((*at).into());
        args.push(id.clone().into());
        sql += &format!(
            " AND (d.created_at < ?{a} OR (d.created_at = ?{a} AND d.delivery_id < ?{b}))",
            a = args.len() - 1,
            b = args.len()
        );
    }
    args.push(((f.limit + 1) as i64).into());
    sql += &format!(
        " ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT ?{}",
        args.len()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, u32>(5)?,
            r.get::<_, Option<u16>>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, i64>(9)?,
            r.get::<_, Option<i64>>(10)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (
            delivery_id,
            event_id,
            event,
            kind,
            status,
            attempts,
            code,
            error,
            created,
            updated,
            next,
        ) = row?;
        items.push(DeliveryView {
            delivery_id,
            event_id,
            event,
            kind: DeliveryKind::parse(&kind)
                .ok_or_else(|| StorageError::Corrupt(format!("kind {kind:?}")))?,
            status: DeliveryStatus::parse(&status)
                .ok_or_else(|| StorageError::Corrupt(format!("status {status:?}")))?,
            attempts,
            last_status_code: code,
            last_error: error,
            created_at: from_millis(created),
            updated_at: from_millis(updated),
            next_attempt_at: next.map(from_millis),
        });
    }
    let next = if items.len() > f.limit {
        items.truncate(f.limit);
        items
            .last()
            .map(|d| (to_millis(d.created_at), d.delivery_id.clone()))
    } else {
        None
    };
    Ok((items, next))
}

/// Counts and latencies behind `GET /v1/webhooks/{id}/stats`.
#[derive(Debug, Clone, Default)]
pub struct WebhookCounts {
    /// Deliveries in all.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed for good.
    pub failed: u64,
    /// Still pending.
    pub pending: u64,
    /// Last successful attempt.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last failed attempt.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Attempt latency percentiles (ms) over the last 1000 attempts.
    pub latency_p50: Option<i64>,
    /// 95th percentile.
    pub latency_p95: Option<i64>,
}

/// Computes a webhook's counts.
pub fn webhook_counts(conn: &Connection, webhook_id: &str) -> Result<WebhookCounts, StorageError> {
    let mut c = WebhookCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM deliveries WHERE webhook_id = ?1 GROUP BY status",
    )?;
    for row in stmt.query_map(params![webhook_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
    })? {
        let (status, n) = row?;
        c.total += n;
        match status.as_str() {
            "succeeded" => c.succeeded = n,
            "failed" => c.failed = n,
            _ => c.pending += n,
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT a.at, a.status_code, a.duration_ms FROM delivery_attempts a
         JOIN deliveries d ON d.delivery_id = a.delivery_id
         WHERE d.webhook_id = ?1 ORDER BY a.at DESC LIMIT 1000",
    )?;
    let mut latencies = Vec::new();
    for row in stmt.query_map(params![webhook_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<u16>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (at, code, ms) = row?;
        let ok = code.is_some_and(|c| (200..300).contains(&c));
        if ok && c.last_success_at.is_none() {
            c.last_success_at = Some(from_millis(at));
        }
        if !ok && c.last_failure_at.is_none() {
            c.last_failure_at = Some(from_millis(at));
        }
        latencies.push(ms);
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    c.latency_p50 = pick(0.5);
    c.latency_p95 = pick(0.95);
    Ok(c)
}

/// Failed deliveries of a webhook created in `[since, until]`, in `(created_at, delivery_id)`
/// order after `after`, at most `limit`.
pub fn failed_deliveries_between(
    conn: &Connection,
    webhook_id: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    after: Option<(i64, String)>,
    limit: usize,
) -> Result<Vec<Delivery>, StorageError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id
         WHERE d.webhook_id = ?1 AND d.status = 'failed' AND d.created_at >= ?2 AND d.created_at <= ?3
         AND (d.created_at, d.delivery_id) > (?4, ?5)
         ORDER BY d.created_at, d.delivery_id LIMIT ?6"
    );
    let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            webhook_id,
            to_millis(since),
            to_millis(until),
            after_ms,
            after_id,
            limit as i64
        ],
        delivery_from_row,
    )?;
    rows.map(|r| r?).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::Phone;
    use crate::secrets::Pepper;

    fn config(dir: &tempfile::TempDir) -> StorageConfig {
        StorageConfig {
            path: dir.path().join("t.sqlite3"),
            ..StorageConfig::default()
        }
    }

    fn key() -> OtpKey {
        OtpKey {
            app_id: Uuid::new_v4(),
            phone: Phone::from_canonical("255712345678".into()),
        }
    }

    #[tokio::test]
    async fn a_written_record_reads_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        let mut rec = OtpRecord::new(key());
        rec.sends.extend([1, 2, 3]);
        let now = from_millis(1_700_000_000_000);
        rec.issue(
            now,
            &Pepper::new(b"0123456789abcdef"),
            "123456",
            5,
            3,
            Channel::Whatsapp,
            Some(Uuid::new_v4()),
            Some(CallbackTarget {
                url: "https://example.com/cb".into(),
                secret: Some("s".into()),
            }),
        );
        snap.write(vec![Change::Otp(rec.clone())])
            .committed()
            .await
            .unwrap();
        let k = rec.key.clone();
        let back = snap.read(move |c| load_otp(c, &k)).await.unwrap();
        assert_eq!(back, rec);
    }

    #[tokio::test]
    async fn one_bad_write_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        let app = |key: &str| App {
            app_id: Uuid::new_v4(),
            app_key: key.into(),
            name: "n".into(),
            settings: AppSettings::default(),
            created_at: SystemClock.now(),
        };
        let a = snap.write(vec![Change::App(app("dup"))]);
        let b = snap.write(vec![Change::App(app("dup"))]);
        let c = snap.write(vec![Change::App(app("other"))]);
        assert!(a.committed().await.is_ok());
        assert!(matches!(
            b.committed().await,
            Err(StorageError::Conflict(_))
        ));
        assert!(c.committed().await.is_ok());
        let apps = snap.read(load_apps).await.unwrap();
        assert_eq!(apps.len(), 2);
    }

    #[tokio::test]
    async fn a_failing_write_without_savepoint_fails_alone_after_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        // A temporary trigger makes one otp_state upsert fail mid-batch.
        snap.read(|c| {
            c.execute_batch(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON otp_state
                 WHEN NEW.phone = '255700000002' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let rec = |phone: &str| {
            OtpRecord::new(OtpKey {
                app_id: Uuid::nil(),
                phone: Phone::from_canonical(phone.into()),
            })
        };
        let (good1, bad, good2) = (
            rec("255700000001"),
            rec("255700000002"),
            rec("255700000003"),
        );
        let a = snap.write(vec![Change::Otp(good1.clone())]);
        let b = snap.write(vec![Change::Otp(good2.clone()), Change::Otp(bad.clone())]);
        let c = snap.write(vec![Change::Otp(good2.clone())]);
        let k = good1.key.clone();
        let read = snap.read(move |c| load_otp(c, &k));
        assert!(a.committed().await.is_ok());
        assert!(b.committed().await.is_err());
        assert!(c.committed().await.is_ok());
        assert_eq!(read.await.unwrap(), good1);
        let count: i64 = snap
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM otp_state", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(
            count, 2,
            "good1 and good2 only; b's first statement was undone"
        );
        assert!(snap.stats().replays.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test]
    async fn committed_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let rec = OtpRecord::new(key());
        {
            let (snap, h) = Snapshot::open(&config(&dir)).unwrap();
            snap.write(vec![Change::Otp(rec.clone())])
                .committed()
                .await
                .unwrap();
            snap.shutdown().await;
            h.join().unwrap();
        }
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        let k = rec.key.clone();
        assert_eq!(snap.read(move |c| load_otp(c, &k)).await.unwrap(), rec);
    }
}
