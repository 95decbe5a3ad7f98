//! The writer thread: the one connection that writes, group commit, savepoints,
//! segments and their replay, and [`apply`], where each [`Change`] becomes SQL.
//!
//! [`Snapshot`](super::Snapshot) queues [`Op`]s; the thread drains the queue into one
//! transaction (see the module doc of [`storage`](super) for the savepoint and
//! segment rules) and answers every sender after the commit, each waiting thread's
//! answers together.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Statement, ToSql};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::checkpoint::{Checkpointer, WalBound};
use super::readers::{ReadFn, Readers};
use super::{Change, SnapshotStats, StorageError, UuidText, ASYNC_MAX_BATCH};
use crate::clock::{thread_cpu_time, to_millis, Clock, Stopwatch};
use crate::config::{Durability, StorageConfig};
use crate::message::{MessageRecord, Purpose};
use crate::otp::OtpRecord;

/// `journal_size_limit`: the WAL file is truncated to this after a restart.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Page cache of the writer connection, in KiB: 8 MiB (SQLite's default is 2 MiB).
/// A fixed cost, but it shows in the RSS-per-flake figure, so it stays modest.
const WRITER_CACHE_KIB: i64 = 8_192;

/// Who waits for a write's commit: the reply channel, and a tag of the thread that
/// queued the write ([`caller_thread`]).
pub(super) struct Reply {
    tx: oneshot::Sender<Result<(), StorageError>>,
    thread: u32,
}

impl Reply {
    /// A reply for the calling thread.
    pub(super) fn new(tx: oneshot::Sender<Result<(), StorageError>>) -> Reply {
        Reply {
            tx,
            thread: caller_thread(),
        }
    }

    fn send(self, result: Result<(), StorageError>) {
        let _ = self.tx.send(result);
    }
}

/// The batch's answers, each waiting thread's together, in queue order within a
/// thread (see [`caller_thread`]).
fn by_thread<T>(mut replies: Vec<(Reply, T)>) -> Vec<(Reply, T)> {
    replies.sort_by_key(|(reply, _)| reply.thread);
    replies
}

/// A small number naming the calling thread, given out on its first write.
///
/// The writer answers a batch's writers grouped by this tag: the first answer to an
/// idle thread wakes it (a system call and, from another core, an interrupt); the
/// answers right after it find it already woken and cost no more. Answered in queue
/// order instead, two threads' answers alternate, and a thread that woke and went
/// back to sleep between two of them is woken again.
fn caller_thread() -> u32 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    thread_local! {
        static TAG: u32 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TAG.with(|tag| *tag)
}

/// What the writer thread is asked to do, in queue order.
pub(super) enum Op {
    /// Changes to apply together, and who to answer after the commit.
    Write(Vec<Change>, Option<Reply>),
    /// A read that sees every write queued before it: handed to the read
    /// connections once the batch holding it has committed.
    Read(ReadFn),
    /// A maintenance step, run on the writer's connection inside the batch after
    /// every write queued before it (retention: it must not race the one writer).
    Maintain(ReadFn),
    /// Commit what is queued, stop, and say so.
    Shutdown(oneshot::Sender<()>),
}

/// Whether someone waits for the commit of the batch holding `op` before going on,
/// whatever the durability mode: a read runs only after that commit, and a shutdown
/// waits for it. (Writes in `async` mode were acknowledged when queued; a
/// maintenance step is answered inside the batch.)
fn awaits_commit(op: &Op) -> bool {
    matches!(op, Op::Read(_) | Op::Shutdown(_))
}

/// Starts the writer thread on `conn` (already opened and migrated).
pub(super) fn spawn(
    conn: Connection,
    config: &StorageConfig,
    stats: Arc<SnapshotStats>,
    wal_frames: Arc<AtomicU64>,
    checkpointer: Checkpointer,
    readers: Readers,
    clock: Arc<dyn Clock>,
) -> Result<(mpsc::Sender<Op>, JoinHandle<()>), StorageError> {
    let (tx, rx) = mpsc::channel();
    let max_batch = match config.durability {
        Durability::Commit => config.max_batch,
        Durability::Async => config.max_batch.min(ASYNC_MAX_BATCH),
    };
    let durability = config.durability;
    let flush_interval = Duration::from_millis(config.flush_interval_ms);
    let handle = std::thread::Builder::new()
        .name("otpd-snapshot".into())
        .spawn(move || {
            // No wake-up preemption: under load, bigger commits (see otpd-sched).
            if let Err(e) = otpd_sched::prefer_batching() {
                // Once, at start: an operator can see why commits stay smaller.
                tracing::info!(error = %e, "the storage writer could not switch to SCHED_BATCH; it keeps the default scheduling policy");
            }
            // The statements borrow the connection, so both live on this thread's stack.
            let conn = conn;
            Writer {
                sql: Sql::new(&conn),
                rx,
                stats,
                durability,
                flush_interval,
                max_batch,
                wal: WalBound::new(wal_frames),
                checkpointer: Some(checkpointer),
                readers,
                reads: Vec::new(),
                segment: Vec::new(),
                clock,
            }
            .run()
        })
        .map_err(|e| StorageError::Io(e.to_string()))?;
    Ok((tx, handle))
}

/// Writer-only pragmas: a large page cache, temp tables in memory, no automatic
/// checkpoint (the checkpointer thread does it), a bounded WAL file, and room in the
/// statement cache for every statement the writer and the loaders use.
pub(super) fn tune_writer(conn: &Connection) -> Result<(), StorageError> {
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.query_row("PRAGMA wal_autocheckpoint = 0", [], |_| Ok(()))
        .optional()?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

/// The most values one statement run through [`Sql::run`] may take (the message
/// upsert takes 21): each is a bit of the statement's patterns of NULLs and names.
const MAX_VALUES: usize = 32;

/// One value of a statement run through [`Sql::run`]; the [`args!`] macro makes
/// them from values as rusqlite's `params!` takes them.
enum Arg<'a> {
    /// Bound, unless it is NULL (then written into the statement as `NULL`).
    Value(&'a dyn ToSql),
    /// An enum's name (`Name`), written into the statement as a string literal.
    Name(&'static str),
}

/// An enum's name (`status`, `channel` …) as a statement's value: written into the
/// statement's text as a string literal instead of bound, as NULLs are (see
/// [`Sql`]). Only for the handful of names an enum has, each a literal of the
/// code: every distinct name makes its own prepared statement. Never for text that
/// comes from outside.
struct Name(&'static str);

/// What [`args!`] turns each value into.
trait IntoArg<'a> {
    fn into_arg(self) -> Arg<'a>;
}

impl<'a, T: ToSql> IntoArg<'a> for &'a T {
    fn into_arg(self) -> Arg<'a> {
        Arg::Value(self)
    }
}

impl<'a> IntoArg<'a> for &'a Name {
    fn into_arg(self) -> Arg<'a> {
        Arg::Name(self.0)
    }
}

/// A [`Name`] or NULL (an optional enum's name).
struct MaybeName(Option<&'static str>);

impl<'a> IntoArg<'a> for &'a MaybeName {
    fn into_arg(self) -> Arg<'a> {
        match self.0 {
            Some(name) => Arg::Name(name),
            None => Arg::Value(&rusqlite::types::Null),
        }
    }
}

/// A statement's values for [`Sql::run`], written as rusqlite's `params!` takes
/// them; a value that is a [`Name`] (or a [`MaybeName`]) is an enum's name.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$(IntoArg::into_arg(&$value)),*] as &[Arg<'_>]
    };
}

/// Which prepared statement a run uses: the statement literal's address and
/// length, which of its values are NULL (bit `i` for value `i`), which are names,
/// and those names in order.
type Variant = (usize, usize, u32, u32, SmallVec<[&'static str; 4]>);

/// The writer's connection with its statements prepared once.
///
/// rusqlite's `prepare_cached` looks a statement up by hashing and comparing its
/// whole SQL text (several hundred bytes for the upserts) on every call, which was
/// about a tenth of the writer's time. Every statement the writer runs is a string
/// literal, so here it is found by the literal's address and length instead.
///
/// A value that is NULL is not bound: it is written into the statement's text as
/// `NULL`, and an enum's name ([`Name`]) as a string literal (see
/// [`with_values`]). Each pattern of NULLs and names a statement meets is a
/// statement prepared once (a handful per statement: the patterns its callers
/// produce). Binding a parameter costs SQLite a call and rusqlite a conversion,
/// and binding text costs SQLite a copy of it; an OTP cycle's writes carry about
/// 24 NULLs (a new message's empty status columns, an OTP without a callback) and
/// 8 names. Written values mean exactly what bound ones do.
pub(super) struct Sql<'c> {
    conn: &'c Connection,
    /// By [`Variant`]; hashed with foldhash, as no key comes from outside.
    prepared: RefCell<HashMap<Variant, Statement<'c>, foldhash::fast::RandomState>>,
}

impl<'c> Sql<'c> {
    fn new(conn: &'c Connection) -> Sql<'c> {
        Sql {
            conn,
            prepared: RefCell::new(HashMap::default()),
        }
    }

    /// Runs the statement `sql` with `args` for its placeholders `?1` … `?N`
    /// (`args[i]` for `?{i+1}`), and returns the number of rows it changed. The
    /// statement is prepared on the first use of its pattern of NULL values and
    /// names, with those written into it; the other values are bound.
    fn run(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<usize, StorageError> {
        if args.len() > MAX_VALUES {
            return Err(StorageError::Sqlite(format!(
                "{} values for one statement, more than {MAX_VALUES}",
                args.len()
            )));
        }
        // Each value's SQL form; the NULLs only as bits of the pattern, the names
        // as bits and in order.
        let mut bound: SmallVec<[ToSqlOutput<'_>; MAX_VALUES]> = SmallVec::new();
        let (mut nulls, mut named) = (0u32, 0u32);
        let mut names: SmallVec<[&'static str; 4]> = SmallVec::new();
        for (i, arg) in args.iter().enumerate() {
            match arg {
                Arg::Name(name) => {
                    named |= 1 << i;
                    names.push(name);
                }
                Arg::Value(value) => match value.to_sql()? {
                    ToSqlOutput::Owned(Value::Null) | ToSqlOutput::Borrowed(ValueRef::Null) => {
                        nulls |= 1 << i;
                    }
                    out => bound.push(out),
                },
            }
        }
        let mut prepared = self.prepared.borrow_mut();
        let stmt = match prepared.entry((sql.as_ptr() as usize, sql.len(), nulls, named, names)) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let (_, _, nulls, named, names) = v.key();
                let text = with_values(sql, *nulls, *named, names);
                v.insert(self.conn.prepare(&text)?)
            }
        };
        // Every placeholder of this variant is bound anew, so nothing of an earlier
        // run's values is left in it.
        if stmt.parameter_count() != bound.len() {
            return Err(StorageError::Sqlite(format!(
                "statement takes {} values, given {} besides {} NULLs and {} names: {sql}",
                stmt.parameter_count(),
                bound.len(),
                nulls.count_ones(),
                named.count_ones()
            )));
        }
        for (n, out) in bound.iter().enumerate() {
            stmt.raw_bind_parameter(n + 1, out)?;
        }
        Ok(stmt.raw_execute()?)
    }

    /// Runs one statement with no parameters (savepoint and transaction control).
    fn exec(&self, sql: &'static str) -> Result<(), StorageError> {
        self.run(sql, &[]).map(|_| ())
    }
}

/// `sql` with each placeholder `?k` whose value is NULL (bit `k - 1` of `nulls`)
/// replaced by `NULL`, each whose value is a name (bit `k - 1` of `named`; the
/// names in `names`, in order) by that name as a string literal, and the others
/// numbered anew in order (`?1`, `?2`, …), so that the statement takes the bound
/// values in their order. A placeholder may appear more than once. The writer's
/// statements are literals whose placeholders are all `?N` and that have no `?`
/// inside a string.
fn with_values(sql: &str, nulls: u32, named: u32, names: &[&str]) -> String {
    if nulls | named == 0 {
        return sql.to_owned();
    }
    let written = nulls | named;
    let mut out = String::with_capacity(sql.len() + 16 * names.len());
    let mut rest = sql;
    while let Some(at) = rest.find('?') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - at - 1);
        match rest[at + 1..at + 1 + digits].parse::<u32>() {
            Ok(k) if (1..=MAX_VALUES as u32).contains(&k) => {
                let bit = 1u32 << (k - 1);
                let below = bit - 1;
                if nulls & bit != 0 {
                    out.push_str("NULL");
                } else if named & bit != 0 {
                    let name = names
                        .get((below & named).count_ones() as usize)
                        .copied()
                        .unwrap_or_default();
                    out.push('\'');
                    out.push_str(&name.replace('\'', "''"));
                    out.push('\'');
                } else {
                    // The placeholders before it that stay placeholders, plus one.
                    out.push('?');
                    out.push_str(&((below & !written).count_ones() + 1).to_string());
                }
            }
            // Not a numbered placeholder: kept as written (SQLite will refuse it).
            _ => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// The writer thread's state: its connection, its queue, and the open segment.
struct Writer<'c> {
    sql: Sql<'c>,
    rx: mpsc::Receiver<Op>,
    stats: Arc<SnapshotStats>,
    durability: Durability,
    flush_interval: Duration,
    max_batch: usize,
    /// The WAL's length at the checkpointer's last pass, and the writer's restarts.
    wal: WalBound,
    checkpointer: Option<Checkpointer>,
    /// The read connections the batch's reads go to after its commit.
    readers: Readers,
    /// The reads of the batch being applied.
    reads: Vec<ReadFn>,
    /// Writes of the open segment (kept until the segment is released, to replay them).
    segment: Vec<(Vec<Change>, Option<Reply>)>,
    /// The time stamped as `updated_at` where a change carries none.
    clock: Arc<dyn Clock>,
}

/// Whether a change can break a constraint, and so needs its own savepoint.
///
/// An outbox row cannot: its event and delivery ids are fresh (time-ordered with 74
/// random bits) and the event insert is `OR IGNORE`. If one ever failed, it would
/// fail like any other write and be replayed alone.
fn may_conflict(change: &Change) -> bool {
    matches!(
        change,
        Change::App(_) | Change::ApiKey { .. } | Change::Webhook(_)
    )
}

/// Runs one cached statement with no parameters (savepoint control).
pub(super) fn exec(conn: &Connection, sql: &str) -> Result<(), StorageError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Applies `changes` inside their own savepoint `w`: all or nothing.
fn apply_in_savepoint(
    sql: &Sql<'_>,
    changes: &[Change],
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    sql.exec("SAVEPOINT w")?;
    match changes.iter().try_for_each(|c| apply(sql, c, now)) {
        Ok(()) => sql.exec("RELEASE w"),
        Err(e) => {
            sql.exec("ROLLBACK TO w")?;
            sql.exec("RELEASE w")?;
            Err(e)
        }
    }
}

impl Writer<'_> {
    fn run(mut self) {
        let mut batch: Vec<Op> = Vec::with_capacity(self.max_batch);
        loop {
            let Ok(first) = self.rx.recv() else {
                self.stop_helpers();
                return;
            };
            // Someone waits for this commit (in commit mode every caller; in async
            // mode a read or a shutdown): take what is already queued, no more.
            // Otherwise (async writes, acknowledged before their commit) gather for
            // up to flush_interval to make bigger batches, until a read or a
            // shutdown arrives: a read (an actor's first load, an API lookup) never
            // waits out the interval.
            let mut awaited =
                matches!(self.durability, Durability::Commit) || awaits_commit(&first);
            let gathering = Stopwatch::start();
            batch.push(first);
            while batch.len() < self.max_batch {
                let next = if awaited {
                    self.rx.try_recv().ok()
                } else {
                    let left = self.flush_interval.saturating_sub(gathering.elapsed());
                    self.rx.recv_timeout(left).ok()
                };
                let Some(op) = next else { break };
                awaited |= awaits_commit(&op);
                batch.push(op);
            }
            if self.process(&mut batch) {
                self.stop_helpers();
                let _ = self
                    .sql
                    .conn
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                return;
            }
            self.wal.between_batches(self.sql.conn, &self.stats);
        }
    }

    /// Stops the checkpointer and the read connections (after the reads they hold):
    /// the threads the writer started with.
    fn stop_helpers(&mut self) {
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
        self.readers.stop();
    }

    /// Applies one batch; returns true when a shutdown was requested.
    fn process(&mut self, batch: &mut Vec<Op>) -> bool {
        let started = Stopwatch::start();
        let cpu_started = thread_cpu_time();
        let now = self.clock.now();
        let mut replies: Vec<(Reply, Result<(), StorageError>)> = Vec::with_capacity(batch.len());
        let mut shutdown: Vec<oneshot::Sender<()>> = Vec::new();
        // Reads wait for the commit and run on the read connections: not the writer's.
        let count = batch.iter().filter(|op| !matches!(op, Op::Read(_))).count() as u64;
        let outcome = (|| -> Result<(), StorageError> {
            self.sql.exec("BEGIN")?;
            self.apply_prefix(batch, now, &mut replies)?;
            for op in batch.drain(..) {
                match op {
                    Op::Write(changes, reply) => {
                        if changes.iter().any(may_conflict) {
                            self.open_segment()?;
                            match apply_in_savepoint(&self.sql, &changes, now) {
                                // Kept in the segment: a later failure replays it too.
                                Ok(()) => self.segment.push((changes, reply)),
                                Err(e) => {
                                    if self.sql.conn.is_autocommit() {
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
                            let result = changes.iter().try_for_each(|c| apply(&self.sql, c, now));
                            self.segment.push((changes, reply));
                            if let Err(e) = result {
                                self.replay_segment(&mut replies, e)?;
                            }
                        }
                    }
                    Op::Maintain(f) => {
                        // The step may observe every write before it: release them first.
                        self.release_segment(&mut replies)?;
                        f(self.sql.conn)
                    }
                    Op::Read(f) => self.reads.push(f),
                    Op::Shutdown(done) => shutdown.push(done),
                }
            }
            self.release_segment(&mut replies)?;
            self.sql.exec("COMMIT")?;
            Ok(())
        })();
        let micros = started.elapsed().as_micros() as u64;
        let cpu_micros = thread_cpu_time().saturating_sub(cpu_started).as_micros() as u64;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.ops.fetch_add(count, Ordering::Relaxed);
        self.stats.last_batch.store(count, Ordering::Relaxed);
        self.stats
            .commit_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.stats
            .commit_cpu_micros
            .fetch_add(cpu_micros, Ordering::Relaxed);
        // Writes of a segment that was never released (the batch failed midway).
        for (_, reply) in self.segment.drain(..) {
            if let Some(reply) = reply {
                replies.push((reply, Err(StorageError::Closed)));
            }
        }
        match outcome {
            Ok(()) => {
                for (reply, result) in by_thread(replies) {
                    reply.send(result);
                }
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "group commit failed");
                if !self.sql.conn.is_autocommit() {
                    let _ = self.sql.exec("ROLLBACK");
                }
                for (reply, _) in by_thread(replies) {
                    reply.send(Err(e.clone()));
                }
            }
        }
        // Committed (or refused): the reads may now see everything queued before them.
        self.stats
            .reads
            .fetch_add(self.reads.len() as u64, Ordering::Relaxed);
        for read in self.reads.drain(..) {
            self.readers.run(read);
        }
        let stop = !shutdown.is_empty();
        for done in shutdown {
            let _ = done.send(());
        }
        stop
    }

    /// The fast path: the writes at the head of the batch that cannot break a
    /// constraint, up to its first maintenance step or conflict-prone write (reads
    /// wait for the commit, so they do not end it), applied with no savepoint at all
    /// (a savepoint makes SQLite copy every page it first touches into a
    /// sub-journal). Nothing has read them yet, so if one fails the whole
    /// transaction can be rolled back and the batch replayed by the careful path,
    /// where every write is undone alone. On success they are taken off the batch;
    /// their replies wait for the commit like any other.
    fn apply_prefix(
        &mut self,
        batch: &mut Vec<Op>,
        now: DateTime<Utc>,
        replies: &mut Vec<(Reply, Result<(), StorageError>)>,
    ) -> Result<(), StorageError> {
        let prefix = batch
            .iter()
            .take_while(|op| match op {
                Op::Write(changes, _) => !changes.iter().any(may_conflict),
                Op::Read(_) => true,
                Op::Maintain(_) | Op::Shutdown(_) => false,
            })
            .count();
        let applied = batch[..prefix].iter().try_for_each(|op| match op {
            Op::Write(changes, _) => changes.iter().try_for_each(|c| apply(&self.sql, c, now)),
            Op::Read(_) | Op::Maintain(_) | Op::Shutdown(_) => Ok(()),
        });
        match applied {
            Ok(()) => {
                for op in batch.drain(..prefix) {
                    match op {
                        Op::Write(_, Some(reply)) => replies.push((reply, Ok(()))),
                        Op::Read(f) => self.reads.push(f),
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.stats.replays.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, writes = prefix, "a storage write failed; replaying the batch one write at a time");
                if !self.sql.conn.is_autocommit() {
                    self.sql.exec("ROLLBACK")?;
                }
                self.sql.exec("BEGIN")
            }
        }
    }

    /// Opens the segment savepoint `seg` unless one is open.
    fn open_segment(&mut self) -> Result<(), StorageError> {
        if self.segment.is_empty() {
            self.sql.exec("SAVEPOINT seg")?;
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
        self.sql.exec("RELEASE seg")?;
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
        if self.sql.conn.is_autocommit() {
            return Err(cause);
        }
        self.sql.exec("ROLLBACK TO seg")?;
        self.sql.exec("RELEASE seg")?;
        let now = self.clock.now();
        for (changes, reply) in std::mem::take(&mut self.segment) {
            let result = apply_in_savepoint(&self.sql, &changes, now);
            if self.sql.conn.is_autocommit() {
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

/// Applies one change; `now` is the `updated_at` of rows whose change carries none.
fn apply(sql: &Sql<'_>, change: &Change, now: DateTime<Utc>) -> Result<(), StorageError> {
    match change {
        Change::Otp(rec) => write_otp(sql, rec, now, false)?,
        Change::OtpUpdate(rec) => write_otp(sql, rec, now, true)?,
        Change::Message(m) => write_message(sql, m, false)?,
        Change::MessageUpdate(m) => write_message(sql, m, true)?,
        Change::App(app) => {
            let settings = serde_json::to_string(&app.settings)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            sql.run(
                "INSERT INTO apps (app_id, app_key, name, settings, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(app_id) DO UPDATE SET app_key = excluded.app_key, name = excluded.name,
                 settings = excluded.settings, updated_at = excluded.updated_at",
                args![
                    UuidText::new(&app.app_id),
                    app.app_key,
                    app.name,
                    settings,
                    to_millis(app.created_at),
                    to_millis(now),
                ],
            )?;
        }
        Change::ApiKey {
            key_id,
            app_id,
            key_hash,
            created_at,
        } => {
            sql.run(
                "INSERT INTO api_keys (key_id, app_id, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key_hash) DO NOTHING", args![UuidText::new(key_id), UuidText::new(app_id), key_hash.to_vec(), to_millis(*created_at)])?;
        }
        Change::DeleteApiKey { app_id, key_id } => {
            sql.run(
                "DELETE FROM api_keys WHERE app_id = ?1 AND key_id = ?2",
                args![UuidText::new(app_id), UuidText::new(key_id)],
            )?;
        }
        Change::Idempotency(r) => {
            sql.run(
                "INSERT OR REPLACE INTO idempotency (app_id, key, request_hash, status, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)", args![
                UuidText::new(&r.app_id),
                r.key,
                r.request_hash.to_vec(),
                r.status,
                r.body,
                to_millis(r.created_at)
            ])?;
        }
        Change::PurgeIdempotency(before) => {
            sql.run(
                "DELETE FROM idempotency WHERE created_at < ?1",
                args![to_millis(*before)],
            )?;
        }
        Change::Meta(key, value) => {
            sql.run(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                args![key, value],
            )?;
        }
        Change::Outbox(event, deliveries) => {
            sql.run(
                "INSERT OR IGNORE INTO events (event_id, app_id, event, channel, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![
                    event.id,
                    UuidText::new(&event.app_id),
                    event.event,
                    Name(event.channel.as_str()),
                    &*event.body,
                    to_millis(event.created_at)
                ],
            )?;
            for d in deliveries {
                sql.run(
                    "INSERT INTO deliveries (delivery_id, app_id, event_id, kind, webhook_id, url, secret,
                     report_secret, status, attempts, series_start, last_status_code, last_error,
                     next_attempt_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)", args![
                    d.delivery_id,
                    UuidText::new(&d.app_id),
                    d.event.id,
                    Name(d.kind.as_str()),
                    d.webhook_id,
                    d.url,
                    d.secret,
                    d.report_secret,
                    Name(d.status.as_str()),
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
            sql.run(
                "UPDATE deliveries SET status = ?2, attempts = ?3, series_start = ?4, last_status_code = ?5,
                 last_error = ?6, next_attempt_at = ?7, updated_at = ?8 WHERE delivery_id = ?1", args![
                d.delivery_id,
                Name(d.status.as_str()),
                d.attempts,
                d.series_start,
                d.last_status_code,
                d.last_error,
                d.next_attempt_at.map(to_millis),
                to_millis(d.updated_at),
            ])?;
        }
        Change::Attempt(a) => {
            sql.run(
                "INSERT OR REPLACE INTO delivery_attempts (delivery_id, attempt, at, status_code, error, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)", args![a.delivery_id, a.attempt, to_millis(a.at), a.status_code, a.error, a.duration_ms])?;
        }
        Change::Webhook(w) => {
            let events = serde_json::to_string(&w.events)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            sql.run(
                "INSERT INTO webhooks (webhook_id, app_id, service_type, url, events, status, description, secret,
                 previous_secret, previous_secret_until, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(webhook_id) DO UPDATE SET url = excluded.url, events = excluded.events,
                 status = excluded.status, description = excluded.description, secret = excluded.secret,
                 previous_secret = excluded.previous_secret, previous_secret_until = excluded.previous_secret_until,
                 updated_at = excluded.updated_at", args![
                w.id,
                UuidText::new(&w.app_id),
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
            sql.run("DELETE FROM webhooks WHERE webhook_id = ?1", args![id])?;
        }
    }
    Ok(())
}

/// Writes a message. With `update_first` (its row was committed before: a status
/// change) it is a plain `UPDATE` of the columns a status change can touch, one seek
/// of the primary key; if that changes no row (the row was purged meanwhile) it falls
/// back to the upsert, which first tries the insert and then updates on the conflict.
fn write_message(sql: &Sql<'_>, m: &MessageRecord, update_first: bool) -> Result<(), StorageError> {
    let message_id = UuidText::new(&m.message_id);
    if update_first {
        let updated = sql.run(
            "UPDATE messages SET status = ?2, error_code = ?3, error_message = ?4,
             provider_message_id = ?5, attempts = ?6, body = ?7, updated_at = ?8, sent_at = ?9,
             delivered_at = ?10, read_at = ?11, failed_at = ?12 WHERE message_id = ?1",
            args![
                message_id,
                Name(m.status.as_str()),
                m.error_code,
                m.error_message,
                m.provider_message_id,
                m.attempts,
                m.body,
                to_millis(m.updated_at),
                m.reached.sent_at.map(to_millis),
                m.reached.delivered_at.map(to_millis),
                m.reached.read_at.map(to_millis),
                m.reached.failed_at.map(to_millis),
            ],
        )?;
        if updated > 0 {
            return Ok(());
        }
    }
    sql.run(
        "INSERT INTO messages (message_id, app_id, channel, recipient, body, sender_id, purpose,
         status, error_code, error_message, provider_message_id, attempts, created_at, updated_at,
         report_url, report_type, report_secret, sent_at, delivered_at, read_at, failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
         ?18, ?19, ?20, ?21)
         ON CONFLICT(message_id) DO UPDATE SET status = excluded.status,
         error_code = excluded.error_code, error_message = excluded.error_message,
         provider_message_id = excluded.provider_message_id, attempts = excluded.attempts,
         body = excluded.body, updated_at = excluded.updated_at,
         sent_at = excluded.sent_at, delivered_at = excluded.delivered_at,
         read_at = excluded.read_at, failed_at = excluded.failed_at",
        args![
            message_id,
            UuidText::new(&m.app_id),
            Name(m.channel.as_str()),
            m.to,
            m.body,
            m.sender_id,
            Name(match m.purpose {
                Purpose::Otp => "otp",
                Purpose::Message => "message",
            }),
            Name(m.status.as_str()),
            m.error_code,
            m.error_message,
            m.provider_message_id,
            m.attempts,
            to_millis(m.created_at),
            to_millis(m.updated_at),
            m.report.as_ref().map(|r| r.url.clone()),
            MaybeName(m.report.as_ref().map(|r| r.report_type.as_str())),
            m.report.as_ref().and_then(|r| r.secret.clone()),
            m.reached.sent_at.map(to_millis),
            m.reached.delivered_at.map(to_millis),
            m.reached.read_at.map(to_millis),
            m.reached.failed_at.map(to_millis),
        ],
    )?;
    Ok(())
}

/// Writes an OTP actor's snapshot. With `update_first` (the actor has seen its row)
/// it is a plain `UPDATE`, one seek of the primary key; if that changes no row (the
/// row was purged meanwhile) it falls back to the upsert, which probes for the row
/// before it inserts or updates.
fn write_otp(
    sql: &Sql<'_>,
    rec: &OtpRecord,
    now: DateTime<Utc>,
    update_first: bool,
) -> Result<(), StorageError> {
    let sends = super::otp::encode_sends(&rec.sends);
    let f = rec.flake.as_ref();
    let app_id = UuidText::new(&rec.key.app_id);
    let flake_id = f.map(|f| UuidText::new(&f.flake_id));
    let code_hash = f.map(|f| &f.code_hash[..]);
    let message_id = f.and_then(|f| f.message_id.as_ref().map(UuidText::new));
    let callback = f.and_then(|f| f.callback.as_deref());
    let phone = rec.key.phone.digits();
    // The values, for the statement the write turns out to need (a closure: the
    // array borrows temporaries, which live only as long as the call they are in).
    let run = |statement: &'static str| {
        sql.run(
            statement,
            args![
                app_id,
                &*phone,
                flake_id,
                code_hash,
                MaybeName(f.map(|f| f.status.as_str())),
                f.map(|f| f.attempts),
                f.map(|f| f.max_attempts),
                MaybeName(f.map(|f| f.delivery_method.as_str())),
                message_id,
                callback.map(|c| c.url.as_str()),
                callback.and_then(|c| c.secret.as_deref()),
                f.map(|f| to_millis(f.created_at)),
                f.map(|f| to_millis(f.expires_at)),
                f.and_then(|f| f.finished_at.map(to_millis)),
                sends,
                to_millis(now),
            ],
        )
    };
    if update_first {
        let updated = run(
            "UPDATE otp_state SET flake_id = ?3, code_hash = ?4, status = ?5, attempts = ?6,
             max_attempts = ?7, delivery_method = ?8, message_id = ?9, callback_url = ?10,
             callback_secret = ?11, created_at = ?12, expires_at = ?13, finished_at = ?14,
             sends = ?15, updated_at = ?16 WHERE app_id = ?1 AND phone = ?2",
        )?;
        if updated > 0 {
            return Ok(());
        }
    }
    run(
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::clock::{Clock, SystemClock};
    use uuid::Uuid;

    use crate::app::{App, AppSettings};
    use crate::otp::{OtpKey, OtpRecord};
    use crate::phone::Phone;
    use crate::storage::tests::config;
    use crate::storage::{load_apps, load_otp, Change, Snapshot, StorageError};

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
    async fn in_async_mode_a_read_ends_the_gathering_instead_of_waiting_out_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::storage::StorageConfig {
            durability: crate::config::Durability::Async,
            // Far longer than the test may take: only a read ending the gathering
            // lets it finish.
            flush_interval_ms: 10_000,
            ..config(&dir)
        };
        let (snap, _h) = Snapshot::open(&config).unwrap();
        let rec = OtpRecord::new(OtpKey {
            app_id: Uuid::nil(),
            phone: Phone::from_canonical("255700000001").expect("canonical"),
        });
        // Acknowledged before its commit, as async mode does; the writer starts
        // gathering with it.
        snap.write_unawaited(vec![Change::Otp(rec.clone())]);
        let key = rec.key.clone();
        let read = snap.read(move |c| load_otp(c, &key));
        let loaded = tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("the read waited for the flush interval")
            .unwrap();
        // It sees the write queued before it: both went in one commit.
        assert_eq!(loaded, rec);
        assert_eq!(snap.stats().commits.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_writers_commits_are_gathered_by_the_wal_vfs_and_readable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        let before = otpd_walvfs::counters();
        let records: Vec<OtpRecord> = (0..50)
            .map(|i| {
                OtpRecord::new(OtpKey {
                    app_id: Uuid::nil(),
                    phone: Phone::from_canonical(&format!("2557000{i:05}")).expect("canonical"),
                })
            })
            .collect();
        let tickets: Vec<_> = records
            .iter()
            .map(|r| snap.write(vec![Change::Otp(r.clone())]))
            .collect();
        for t in tickets {
            t.committed().await.unwrap();
        }
        // Each commit is on the file, and so on the read connections, when acknowledged.
        for r in records {
            let key = r.key.clone();
            assert_eq!(snap.read(move |c| load_otp(c, &key)).await.unwrap(), r);
        }
        let after = otpd_walvfs::counters();
        assert!(after.gathered > before.gathered, "{before:?} -> {after:?}");
        assert_eq!(after.late_flushes, 0);

        // The checkpointer's connection is on the shim's checkpointer VFS: its next
        // pass copies these commits and syncs the database file right after.
        let waited = crate::clock::Stopwatch::start();
        while otpd_walvfs::counters().checkpoint_syncs == before.checkpoint_syncs {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(5),
                "no checkpoint pass synced the database file"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(otpd_walvfs::counters().checkpoint_sync_failures, 0);
    }

    #[tokio::test]
    async fn a_failing_write_without_savepoint_fails_alone_after_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        // A temporary trigger (on the writer's connection) makes one otp_state
        // upsert fail mid-batch.
        snap.write_with(|c| {
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
                phone: Phone::from_canonical(phone).expect("canonical"),
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
    async fn an_otp_update_for_a_row_that_is_gone_writes_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        let mut rec = OtpRecord::new(OtpKey {
            app_id: Uuid::nil(),
            phone: Phone::from_canonical("255700000009").expect("canonical"),
        });
        rec.sends.push_back(1_000);
        // No row yet: the UPDATE changes nothing and the upsert inserts.
        snap.write(vec![Change::OtpUpdate(rec.clone())])
            .committed()
            .await
            .unwrap();
        let k = rec.key.clone();
        assert_eq!(snap.read(move |c| load_otp(c, &k)).await.unwrap(), rec);
        // The row exists: the UPDATE changes it.
        rec.sends.push_back(2_000);
        snap.write(vec![Change::OtpUpdate(rec.clone())])
            .committed()
            .await
            .unwrap();
        let k = rec.key.clone();
        assert_eq!(snap.read(move |c| load_otp(c, &k)).await.unwrap(), rec);
    }

    #[tokio::test]
    async fn a_message_update_changes_its_row_and_indexes_and_rewrites_a_row_that_is_gone() {
        use crate::message::{Channel, MessageRecord, MessageStatus, Purpose};
        use crate::storage::{load_message_any, load_queued_messages, message_id_by_provider_id};

        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        let now = SystemClock.now();
        let mut rec = MessageRecord {
            sender_id: Some("otpd".into()),
            ..MessageRecord::queued(
                Uuid::now_v7(),
                Uuid::nil(),
                Channel::Sms,
                "+255700000009".into(),
                Purpose::Otp,
                now,
            )
        };
        // Writes `rec` as a status change and reads its row back.
        let update = |snap: &Snapshot, rec: &MessageRecord| {
            let (snap, rec) = (snap.clone(), rec.clone());
            async move {
                let id = rec.message_id;
                snap.write(vec![Change::MessageUpdate(rec)])
                    .committed()
                    .await
                    .unwrap();
                let row = snap.read(move |c| load_message_any(c, &id)).await.unwrap();
                serde_json::to_value(row.expect("the row exists")).unwrap()
            }
        };
        // No row yet: the UPDATE changes nothing and the upsert inserts.
        assert_eq!(
            update(&snap, &rec).await,
            serde_json::to_value(&rec).unwrap()
        );
        let queued = snap.read(load_queued_messages).await.unwrap();
        assert_eq!(queued.len(), 1);
        // The row exists: the UPDATE changes the status, its time stamps, the
        // provider's id and both indexes that follow them.
        rec.provider_message_id = Some("prov-1".into());
        rec.attempts = 1;
        rec.set_status(MessageStatus::Sent, now + chrono::Duration::milliseconds(5));
        assert_eq!(
            update(&snap, &rec).await,
            serde_json::to_value(&rec).unwrap()
        );
        assert!(snap.read(load_queued_messages).await.unwrap().is_empty());
        let found = snap
            .read(|c| message_id_by_provider_id(c, "prov-1"))
            .await
            .unwrap();
        assert_eq!(found, Some(rec.message_id));
    }

    #[test]
    fn each_thread_has_its_own_tag_for_good() {
        let here = super::caller_thread();
        assert_eq!(super::caller_thread(), here);
        let there = std::thread::spawn(super::caller_thread).join().unwrap();
        assert_ne!(there, here);
    }

    #[test]
    fn answers_are_grouped_by_thread_in_queue_order() {
        let (mut receivers, mut replies) = (Vec::new(), Vec::new());
        // Queued by threads 2, 1, 2, 1, 2, as two workers' writes interleave.
        for (n, thread) in [2, 1, 2, 1, 2].into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            receivers.push(rx);
            replies.push((super::Reply { tx, thread }, n));
        }
        let order: Vec<(u32, usize)> = super::by_thread(replies)
            .into_iter()
            .map(|(reply, n)| {
                let thread = reply.thread;
                reply.send(Ok(()));
                (thread, n)
            })
            .collect();
        assert_eq!(order, [(1, 1), (1, 3), (2, 0), (2, 2), (2, 4)]);
        for mut rx in receivers {
            assert!(matches!(rx.try_recv(), Ok(Ok(()))));
        }
    }

    #[test]
    fn null_values_and_names_are_written_into_the_statement_and_the_rest_renumbered() {
        use super::with_values;
        let sql = "UPDATE t SET a = ?2, b = ?3, c = ?10 WHERE id = ?1 AND ?3 IS NOT ?1";
        assert_eq!(with_values(sql, 0, 0, &[]), sql);
        // ?3 (bit 2) NULL: every ?3 is NULL, and ?10 is the ninth value left.
        assert_eq!(
            with_values(sql, 0b100, 0, &[]),
            "UPDATE t SET a = ?2, b = NULL, c = ?9 WHERE id = ?1 AND NULL IS NOT ?1"
        );
        // ?1 and ?10 NULL: ?2 and ?3 move down to ?1 and ?2.
        assert_eq!(
            with_values(sql, 1 | 1 << 9, 0, &[]),
            "UPDATE t SET a = ?1, b = ?2, c = NULL WHERE id = NULL AND ?2 IS NOT NULL"
        );
        // Text after the last placeholder, and a placeholder at the very end.
        assert_eq!(
            with_values("VALUES (?1, ?2)", 0b01, 0, &[]),
            "VALUES (NULL, ?1)"
        );
        assert_eq!(with_values("x = ?2", 0b01, 0, &[]), "x = ?1");
        // Names in their order, each wherever its placeholder appears; NULLs
        // beside them; the rest renumbered past both.
        assert_eq!(
            with_values(sql, 1 << 1, 1 << 2 | 1 << 9, &["sent", "otp"]),
            "UPDATE t SET a = NULL, b = 'sent', c = 'otp' WHERE id = ?1 AND 'sent' IS NOT ?1"
        );
        assert_eq!(
            with_values("VALUES (?1, ?2, ?3)", 0, 0b010, &["it's"]),
            "VALUES (?1, 'it''s', ?2)"
        );
    }

    #[test]
    fn a_statement_gives_the_same_rows_whichever_of_its_values_are_null_or_names() {
        use super::{Arg, IntoArg, MaybeName, Name};
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c BLOB)")
            .unwrap();
        let sql = super::Sql::new(&conn);
        const UPSERT: &str = "INSERT INTO t (id, a, b, c) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET a = ?2, b = ?3, c = ?4";
        let row = |id: i64| -> (Option<String>, Option<i64>, Option<Vec<u8>>) {
            conn.query_row("SELECT a, b, c FROM t WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
        };
        let (none_s, none_i, none_b) = (None::<&str>, None::<i64>, None::<&[u8]>);
        let none_name = MaybeName(None);
        // Each pattern in turn, on one row and then on another: no value of an
        // earlier run (of this pattern or another) stays bound, and each name is
        // its own statement.
        for id in [1, 2] {
            assert_eq!(sql.run(UPSERT, args![id, "x", 7, &b"z"[..]]).unwrap(), 1);
            assert_eq!(row(id), (Some("x".into()), Some(7), Some(b"z".to_vec())));
            assert_eq!(sql.run(UPSERT, args![id, none_s, 8, none_b]).unwrap(), 1);
            assert_eq!(row(id), (None, Some(8), None));
            assert_eq!(
                sql.run(UPSERT, args![id, "y", none_i, &b"w"[..]]).unwrap(),
                1
            );
            assert_eq!(row(id), (Some("y".into()), None, Some(b"w".to_vec())));
            assert_eq!(
                sql.run(UPSERT, args![id, none_s, none_i, none_b]).unwrap(),
                1
            );
            assert_eq!(row(id), (None, None, None));
            assert_eq!(
                sql.run(UPSERT, args![id, Name("sent"), 9, none_b]).unwrap(),
                1
            );
            assert_eq!(row(id), (Some("sent".into()), Some(9), None));
            assert_eq!(
                sql.run(UPSERT, args![id, Name("it's"), 10, &b"v"[..]])
                    .unwrap(),
                1
            );
            assert_eq!(
                row(id),
                (Some("it's".into()), Some(10), Some(b"v".to_vec()))
            );
            assert_eq!(
                sql.run(UPSERT, args![id, MaybeName(Some("failed")), none_i, none_b])
                    .unwrap(),
                1
            );
            assert_eq!(row(id), (Some("failed".into()), None, None));
            assert_eq!(
                sql.run(UPSERT, args![id, none_name, 11, none_b]).unwrap(),
                1
            );
            assert_eq!(row(id), (None, Some(11), None));
        }
        // A name matches as its text does, in a WHERE as in a SET.
        assert_eq!(
            sql.run("UPDATE t SET b = ?2 WHERE a IS ?1", args![Name("x"), 1])
                .unwrap(),
            0
        );
        sql.run(UPSERT, args![3, Name("x"), 1, none_b]).unwrap();
        assert_eq!(
            sql.run("UPDATE t SET b = ?2 WHERE a = ?1", args![Name("x"), 5])
                .unwrap(),
            1
        );
        assert_eq!(row(3), (Some("x".into()), Some(5), None));
        // A NULL key matches nothing, bound or written.
        assert_eq!(
            sql.run("UPDATE t SET b = ?2 WHERE id = ?1", args![none_i, 1])
                .unwrap(),
            0
        );
        // Fewer values than placeholders is refused, whatever is NULL or a name.
        assert!(sql.run(UPSERT, args![4, none_s, 1]).is_err());
        assert!(sql.run(UPSERT, args![4, "a", 1]).is_err());
        assert!(sql.run(UPSERT, args![4, Name("a"), 1]).is_err());
    }

    #[tokio::test]
    async fn the_writer_thread_runs_under_sched_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, _h) = Snapshot::open(&config(&dir)).unwrap();
        // `write_with` runs its closure on the writer thread.
        let on_writer = snap
            .write_with(|_| {
                otpd_sched::current_policy().map_err(|e| StorageError::Io(e.to_string()))
            })
            .await
            .unwrap();
        assert_eq!(on_writer, otpd_sched::Policy::Batch);
        snap.shutdown().await;
    }
}
