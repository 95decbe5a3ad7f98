//! Storage: the snapshot writer (the one SQLite connection that writes, on its own
//! thread, with group commit), the schema, and the loaders that read each record
//! family back.
//!
//! Every state change in otpd is a [`Change`] sent here. The writer takes everything
//! queued, applies it in one transaction, commits once, and only then answers each
//! sender. That is how "acknowledge after commit" stays fast: many callers share one
//! fsync.
//!
//! One bad write fails alone in its batch. Writes that can break a constraint
//! ([`Change::App`], [`Change::ApiKey`], [`Change::Webhook`]) run in their own
//! savepoint. The others are upserts, updates and inserts of fresh ids that cannot
//! conflict. The run of them at the head of a batch (up to its first maintenance
//! step or conflict-prone write; under load usually the whole batch) is applied with no
//! savepoint at all: if one fails, the whole transaction is rolled back and the
//! batch replayed by the careful path below, since nothing has read those writes yet.
//! In the careful path each run of writes between two maintenance steps shares one
//! *segment* savepoint. If a write without its own savepoint still fails (disk full,
//! I/O error), the segment is rolled back and replayed one write at a time, each in
//! its own savepoint, so the failure stays with the write that caused it. A
//! maintenance step ([`Snapshot::write_with`]) closes the segment first, so it never
//! observes a write that might be undone later.
//!
//! Reads ([`Snapshot::read`]) are queued like writes, so each comes after every
//! write queued before it, but the writer does not run them: once their batch has
//! committed it hands them to two read connections on threads of their own
//! (`readers.rs`), where each runs in its own read transaction and, under WAL, sees
//! that commit. A read therefore observes every earlier write and only committed
//! state, and the writer's thread — the one every commit waits on — spends no time
//! on actor loads, API lookups or delivery-log pages.
//!
//! Checkpoints are off the writer's path: the writer runs with
//! `wal_autocheckpoint = 0`, and a checkpointer thread with its own connection runs
//! `wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`] (every
//! [`CHECKPOINT_BUSY_EVERY`] while the WAL grows fast, every
//! [`CHECKPOINT_CLOSE_EVERY`] in its last quarter before a restart). A passive checkpoint never
//! blocks the writer, but under sustained load the WAL cannot restart while frames
//! keep arriving, so when it passes [`WAL_RESTART_FRAMES`] the writer itself runs a
//! passive checkpoint between two batches and the WAL starts over at its next
//! commit. That checkpoint is short because most frames are already copied by then
//! and, through `otpd-walvfs`'s checkpointer VFS, already synced into the database
//! file: SQLite syncs the database only at a checkpoint that reaches the WAL's end,
//! which under load is the writer's, and it would otherwise flush there every page
//! the checkpointer copied since the last restart.
//!
//! With `durability = "async"` the callers are answered before the commit; a
//! semaphore of [`ASYNC_IN_FLIGHT`] permits (held from the write until its commit)
//! makes them wait, without blocking a thread, when the writer falls behind.
//!
//! It is a plain thread rather than an actix actor because group commit needs to
//! drain the whole queue at once, and an actix `SyncArbiter` hands over one message
//! at a time. Reads that must observe every earlier write (rehydrating an actor)
//! go through the same queue, so they are ordered after the writes before them.
//!
//! The schema is a list of versioned migrations keyed on `PRAGMA user_version`
//! ([`SCHEMA_VERSION`]); [`open_connection`] applies the ones a file lacks and
//! refuses a file written by a newer otpd.
//!
//! ## Files
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | [`Snapshot`] (the handle), [`Ticket`], [`Change`], [`StorageError`], [`open_connection`] |
//! | `writer.rs` | the writer thread: group commit, `apply` (each [`Change`] as SQL), savepoints, segments and replay |
//! | `checkpoint.rs` | the checkpointer thread and the writer's WAL bounding |
//! | `readers.rs` | the read connections and their threads, which run [`Snapshot::read`]s after the commit |
//! | `schema.rs` | the schema as versioned migrations keyed on `PRAGMA user_version` |
//! | `schema_tests.rs`, `fixtures/` | each migration tested from a database of the previous version (frozen historical schemas) |
//! | `otp.rs` | [`load_otp`], [`recent_otp_sends`] |
//! | `messages.rs` | [`load_message`], [`load_message_any`], [`message_id_by_provider_id`], [`load_queued_messages`] |
//! | `apps.rs` | [`load_apps`], [`load_api_keys`], [`api_key_exists`], [`load_meta`], [`load_idempotency`] |
//! | `webhooks.rs` | [`load_webhooks`] |
//! | `deliveries.rs` | [`load_pending_deliveries`], [`load_delivery`], [`list_deliveries`] and [`DeliveryFilter`], [`webhook_counts`], [`failed_deliveries_between`] |
//!
//! Every write goes through [`Snapshot::write`] as a [`Change`]; the read modules are
//! plain functions over a [`Connection`], run on a read connection through
//! [`Snapshot::read`] (or, for admin tools, on a connection of their own).

mod apps;
mod checkpoint;
mod deliveries;
mod messages;
mod otp;
mod readers;
mod schema;
mod webhooks;
mod writer;

pub use apps::{api_key_exists, load_api_keys, load_apps, load_idempotency, load_meta, read_apps};
pub use deliveries::{
    failed_deliveries_between, list_deliveries, load_delivery, load_pending_deliveries,
    webhook_counts, DeliveryFilter,
};
pub use messages::{
    load_message, load_message_any, load_queued_messages, message_id_by_provider_id,
};
pub(crate) use otp::decode_sends;
pub use otp::{load_otp, recent_otp_sends};
pub use schema::SCHEMA_VERSION;
pub use webhooks::load_webhooks;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::app::App;
use crate::clock::Clock;
use crate::config::{Durability, StorageConfig, Synchronous};
use crate::delivery::model::{AttemptRecord, Delivery};
use crate::events::Event;
use crate::message::MessageRecord;
use crate::otp::OtpRecord;
use crate::secrets::Digest32;
use crate::webhooks::Webhook;
use checkpoint::Checkpointer;
use readers::ReadFn;
use writer::{exec, Op, Reply};

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
    /// The database was written by a newer otpd (its `user_version` is past what
    /// this build knows); opening it could corrupt it, so it is refused.
    #[error(
        "database schema version {found} is newer than this otpd supports ({supported}); \
         run the otpd that wrote it, or restore a backup"
    )]
    SchemaTooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
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
    /// The same, from an actor that has seen its row: an `UPDATE` (falling back to
    /// the upsert if the row is gone).
    OtpUpdate(OtpRecord),
    /// Upsert a message.
    Message(MessageRecord),
    /// The same, for a message whose row was committed before (a status change): an
    /// `UPDATE` of the columns a status change touches (falling back to the upsert if
    /// the row is gone).
    MessageUpdate(MessageRecord),
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
    /// Writes (and maintenance steps) carried by those commits.
    pub ops: AtomicU64,
    /// Reads handed to the read connections after the commit of their batch.
    pub reads: AtomicU64,
    /// Size of the last batch.
    pub last_batch: AtomicU64,
    /// Total commit time in microseconds (wall time, from the first write of a batch
    /// to its commit).
    pub commit_micros: AtomicU64,
    /// Of that, the writer thread's CPU time in microseconds: the difference is time
    /// the writer was ready but waiting for a core (or blocked in I/O).
    pub commit_cpu_micros: AtomicU64,
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
    /// The writer's checkpoint attempts (complete or not) while the WAL is too long.
    pub wal_restart_attempts: AtomicU64,
    /// Total time of those attempts in microseconds (on the writer's path: no
    /// commit happens meanwhile).
    pub wal_restart_micros: AtomicU64,
    /// The longest single attempt in microseconds.
    pub wal_restart_max_micros: AtomicU64,
}

/// How often the checkpointer thread runs `wal_checkpoint(PASSIVE)`.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// How soon the checkpointer passes again while the WAL grows by at least
/// [`CHECKPOINT_BUSY_RATE`] (an idle or slowly growing WAL, however long, keeps the
/// slow pace): under sustained load it then keeps behind the writer, so that no pass
/// has much to copy, and when the writer restarts the WAL itself
/// ([`WAL_RESTART_FRAMES`]) only a few frames are left for it to copy. 50 ms rather
/// than 20 gave the same restarts for a sixth less of the checkpointer's CPU
/// (docs/benchmarks-passes.md, "Seventeenth pass").
pub const CHECKPOINT_BUSY_EVERY: Duration = Duration::from_millis(50);

/// How soon the checkpointer passes again while a growing WAL is at least
/// [`CHECKPOINT_CLOSE_FRAMES`] long, i.e. close to the writer's restart: the restart
/// then finds few frames to copy and few un-synced bytes for its syncs. 2 ms
/// rather than 20 halves the writer's restart time and cuts the cycle p99 by a fifth
/// (docs/benchmarks-passes.md, "Third pass"); kept to the WAL's last quarter, the extra passes
/// (each with its fsyncs) do not slow delivery-heavy loads.
pub const CHECKPOINT_CLOSE_EVERY: Duration = Duration::from_millis(2);

/// The WAL length (frames) from which the checkpointer passes every
/// [`CHECKPOINT_CLOSE_EVERY`]: the last quarter before [`WAL_RESTART_FRAMES`].
pub const CHECKPOINT_CLOSE_FRAMES: u64 = WAL_RESTART_FRAMES / 4 * 3;

/// The WAL growth (frames per second, judged over windows of at least
/// [`CHECKPOINT_BUSY_EVERY`]) from which the checkpointer passes every [`CHECKPOINT_BUSY_EVERY`] instead of every
/// [`CHECKPOINT_EVERY`]: at this rate the WAL would reach [`WAL_RESTART_FRAMES`] in
/// 8 s. Slower, each slow pass has only a few hundred frames to copy and the WAL
/// starts over by itself whenever a pass finds nothing new.
pub const CHECKPOINT_BUSY_RATE: u64 = WAL_RESTART_FRAMES / 8;

/// WAL length (frames, i.e. pages) after which the writer restarts the WAL itself
/// between two batches: 16,384 frames ≈ 64 MiB with 4 KiB pages.
pub const WAL_RESTART_FRAMES: u64 = 16_384;

/// With `durability = "async"`: the most acknowledged changes not yet committed.
/// Callers past this wait (asynchronously) for a commit to free a permit.
pub const ASYNC_IN_FLIGHT: usize = 8_192;

/// With `durability = "async"`: the largest batch one commit takes (bigger batches
/// cost more per op, and delay every caller's commit in the batch).
pub const ASYNC_MAX_BATCH: usize = 1_024;

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
        // Nothing was written (`Ticket::done`, an unawaited write): nothing to wait
        // for in either mode, and no task to watch it.
        if self.rx.is_none() {
            on_commit();
            return Ok(());
        }
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

impl Snapshot {
    /// Opens (creating if needed) the database and starts the writer thread.
    ///
    /// Also starts the checkpointer thread (its own connection), which the writer
    /// stops and joins when it stops.
    /// With the system clock; the runtime passes its own through
    /// [`Snapshot::open_with_clock`].
    #[cfg(test)]
    pub fn open(config: &StorageConfig) -> Result<(Snapshot, JoinHandle<()>), StorageError> {
        Self::open_with_clock(config, Arc::new(crate::clock::SystemClock))
    }

    /// [`Snapshot::open`] with the clock whose time the writer stamps on rows that
    /// carry no time of their own (`updated_at` of OTP state and apps).
    pub fn open_with_clock(
        config: &StorageConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Snapshot, JoinHandle<()>), StorageError> {
        let conn = open_connection(&config.path, config.synchronous)?;
        writer::tune_writer(&conn)?;
        let stats = Arc::new(SnapshotStats::default());
        let wal_frames = Arc::new(AtomicU64::new(0));
        let checkpointer = Checkpointer::start(&config.path, stats.clone(), wal_frames.clone())?;
        let readers = readers::Readers::start(&config.path)?;
        let (tx, handle) = writer::spawn(
            conn,
            config,
            stats.clone(),
            wal_frames,
            checkpointer,
            readers,
            clock,
        )?;
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
        let rx = if self
            .tx
            .send(Op::Write(changes, Some(Reply::new(tx))))
            .is_err()
        {
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

    /// Queues `changes` for the next commit with nobody waiting for it: no reply is
    /// made, so the writer wakes no one. For changes whose commit nothing follows
    /// (a message's status with no event to dispatch); a failed commit is logged by
    /// the writer (`group commit failed`, `storage write refused`) and counted in
    /// `otpd_snapshot_commit_failures_total`.
    pub fn write_unawaited(&self, changes: Vec<Change>) {
        if self.tx.send(Op::Write(changes, None)).is_err() {
            tracing::error!("a storage write was dropped: the writer has stopped");
        }
    }

    /// Runs `f` on a read connection once every write queued before it has been
    /// committed (or refused), in a read transaction of its own: it sees those
    /// writes, and never one that is not committed.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        self.call(Op::Read, f).await
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
        self.call(Op::Maintain, move |conn| {
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

    /// Queues `f` as the op `kind` makes of it and waits for its answer.
    async fn call<T, F>(&self, kind: fn(ReadFn) -> Op, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op = kind(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        }));
        self.tx.send(op).map_err(|_| StorageError::Closed)?;
        rx.await.unwrap_or(Err(StorageError::Closed))
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

/// Page size of a newly created database file: 2 KiB rather than SQLite's 4 KiB.
///
/// Every cycle updates `otp_state` rows at random (app, phone) keys, so each update
/// dirties its own page, and every dirty page is written whole to the WAL at the
/// commit. Half-size pages halve those bytes; below 2 KiB the deeper B-trees cost
/// more than they save (BENCHMARKS.md, "What each change moved": 1 KiB was slower still).
pub const NEW_FILE_PAGE_SIZE: i64 = 2048;

/// Opens `path` through the `otpd-walvfs` VFS named by `vfs` (`register`'s or
/// `register_checkpointer`'s result), or through SQLite's default VFS when the
/// shim could not be registered, which is only slower; `what` names the VFS in
/// the warning.
pub(super) fn open_through_shim(
    path: &Path,
    vfs: Result<&'static str, otpd_walvfs::Error>,
    what: &str,
) -> Result<Connection, StorageError> {
    match vfs {
        Ok(vfs) => Ok(Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::default(),
            vfs,
        )?),
        Err(e) => {
            tracing::warn!(error = %e, "{what} is unavailable; using SQLite's default");
            Ok(Connection::open(path)?)
        }
    }
}

/// Opens a connection with otpd's pragmas and schema: a new database gets every
/// migration, an older one the migrations it lacks, and one whose schema is newer
/// than this build is refused ([`StorageError::SchemaTooNew`]).
///
/// This is the writer's connection, opened through `otpd-walvfs` so that each
/// commit's WAL frames reach the file in one write (the file format is SQLite's
/// own; any connection reads it).
pub fn open_connection(path: &Path, synchronous: Synchronous) -> Result<Connection, StorageError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_files::create_private_dir(dir)
            .map_err(|e| StorageError::Io(format!("creating {}: {e}", dir.display())))?;
    }
    crate::private_files::prepare_db_file(path)
        .map_err(|e| StorageError::Io(format!("{}: {e}", path.display())))?;
    // The writer's WAL frames reach the file in one write per commit.
    let conn = open_through_shim(path, otpd_walvfs::register(), "the WAL-gathering VFS")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Before any pragma that could rewrite the file: a newer otpd's file stays as it is.
    schema::refuse_unknown(schema::user_version(&conn)?)?;
    // Only a new, empty file takes it (SQLite ignores it once the file has pages), so
    // an existing database keeps its page size and works as before.
    conn.pragma_update(None, "page_size", NEW_FILE_PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    crate::private_files::restrict_db_files(path)
        .map_err(|e| StorageError::Io(format!("{}: {e}", path.display())))?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    schema::migrate(&conn)?;
    Ok(conn)
}

/// An id as stored: hyphenated, lowercase text. For an owned SQL value; a bound
/// parameter uses [`UuidText`].
fn uuid_text(id: &Uuid) -> String {
    id.hyphenated().to_string()
}

/// The text [`uuid_text`] makes, on the stack: how every id is bound. The writer
/// binds three or four ids per op, and each `String` was an allocation.
#[derive(Clone, Copy)]
struct UuidText([u8; uuid::fmt::Hyphenated::LENGTH]);

impl UuidText {
    fn new(id: &Uuid) -> UuidText {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        id.hyphenated().encode_lower(&mut text);
        UuidText(text)
    }
}

impl rusqlite::ToSql for UuidText {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Text(&self.0),
        ))
    }
}

fn parse_uuid(s: &str) -> Result<Uuid, StorageError> {
    Uuid::parse_str(s).map_err(|e| StorageError::Corrupt(format!("uuid {s:?}: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::otp::OtpKey;
    use crate::phone::Phone;

    /// A storage config on a fresh file in `dir`.
    pub(crate) fn config(dir: &tempfile::TempDir) -> StorageConfig {
        StorageConfig {
            path: dir.path().join("t.sqlite3"),
            ..StorageConfig::default()
        }
    }

    /// A fresh (app, phone) key.
    pub(crate) fn key() -> OtpKey {
        OtpKey {
            app_id: Uuid::new_v4(),
            phone: Phone::from_canonical("255712345678").expect("canonical"),
        }
    }

    #[test]
    fn a_stack_uuid_binds_the_same_text_as_uuid_text() {
        let conn = Connection::open_in_memory().unwrap();
        for id in [
            Uuid::nil(),
            Uuid::max(),
            crate::secrets::ordered_id(
                DateTime::from_timestamp_millis(1_765_000_000_000).unwrap_or_default(),
            ),
        ] {
            let bound: String = conn
                .query_row("SELECT ?1", [UuidText::new(&id)], |r| r.get(0))
                .unwrap();
            assert_eq!(bound, uuid_text(&id));
            let typed: String = conn
                .query_row("SELECT typeof(?1)", [UuidText::new(&id)], |r| r.get(0))
                .unwrap();
            assert_eq!(typed, "text");
        }
    }

    /// `.cargo/config.toml` builds the bundled SQLite without its process-wide page
    /// cache lock, allocation statistics, API armour, progress callback and shared
    /// cache (docs/benchmarks-passes.md, "Eleventh pass"); this fails if that setting stops
    /// reaching libsqlite3-sys.
    #[test]
    fn the_bundled_sqlite_is_built_without_its_global_locks() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for absent in ["ENABLE_MEMORY_MANAGEMENT", "ENABLE_API_ARMOR"] {
            assert!(
                !options.iter().any(|o| o == absent),
                "{absent}: {options:?}"
            );
        }
        for present in [
            "DEFAULT_MEMSTATUS=0",
            "OMIT_PROGRESS_CALLBACK",
            "OMIT_SHARED_CACHE",
            "OMIT_DEPRECATED",
            "THREADSAFE=1",
        ] {
            assert!(
                options.iter().any(|o| o == present),
                "{present}: {options:?}"
            );
        }
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
