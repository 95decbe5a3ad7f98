//! Checkpoints and WAL bounding, off the writer's path.
//!
//! The writer runs with `wal_autocheckpoint = 0`. The [`Checkpointer`] thread, with
//! its own connection, runs `wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`]
//! (every [`CHECKPOINT_BUSY_EVERY`] while the WAL grows fast, every
//! [`CHECKPOINT_CLOSE_EVERY`] near [`WAL_RESTART_FRAMES`], to keep close behind the
//! writer) and records the WAL's length; [`WalBound`] is the writer's own short checkpoint,
//! between two batches, once that length passes [`WAL_RESTART_FRAMES`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::clock::Stopwatch;

use super::{
    open_through_shim, SnapshotStats, StorageError, CHECKPOINT_BUSY_EVERY, CHECKPOINT_BUSY_RATE,
    CHECKPOINT_CLOSE_EVERY, CHECKPOINT_CLOSE_FRAMES, CHECKPOINT_EVERY, WAL_RESTART_FRAMES,
};

/// The checkpointer thread: `wal_checkpoint(PASSIVE)` from its own connection every
/// [`CHECKPOINT_EVERY`], so copying WAL frames into the database and the fsync that
/// follows run beside the writer instead of inside its commits.
pub(super) struct Checkpointer {
    /// Dropping or sending on it ends the thread's loop.
    stop: mpsc::Sender<()>,
    /// The thread, joined by [`Checkpointer::stop`].
    handle: JoinHandle<()>,
}

impl Checkpointer {
    /// Opens the checkpointer's own connection to `path` and starts its thread.
    pub(super) fn start(
        path: &Path,
        stats: Arc<SnapshotStats>,
        wal_frames: Arc<AtomicU64>,
    ) -> Result<Checkpointer, StorageError> {
        // Syncs the database file after every pass that copied pages, so that the
        // writer's restart has only its own few pages to sync.
        let conn = open_through_shim(
            path,
            otpd_walvfs::register_checkpointer(),
            "the checkpointer's VFS",
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("otpd-checkpoint".into())
            .spawn(move || {
                let mut pace = Pace::default();
                let mut pause = CHECKPOINT_EVERY;
                loop {
                    match stopped.recv_timeout(pause) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let started = Stopwatch::start();
                    match passive_checkpoint(&conn) {
                        // The writer holds the checkpoint lock: it is copying the
                        // last frames itself and the WAL is about to start over.
                        Ok((_, log, _)) if log < 0 => pause = CHECKPOINT_CLOSE_EVERY,
                        Ok((_, log, _)) => {
                            let frames = log as u64;
                            pause = pace.next_pass(frames, started);
                            wal_frames.store(frames, Ordering::Relaxed);
                            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                            stats.checkpoint_micros.fetch_add(
                                started.elapsed().as_micros() as u64,
                                Ordering::Relaxed,
                            );
                        }
                        Err(e) => {
                            pause = CHECKPOINT_EVERY;
                            tracing::warn!(error = %e, db = %path.display(), "background checkpoint failed")
                        }
                    }
                }
            })
            .map_err(|e| StorageError::Io(e.to_string()))?;
        Ok(Checkpointer { stop, handle })
    }

    /// Stops the thread and waits for it (the writer does this when it stops).
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}

/// What the checkpointer remembers between passes to set its pace: the WAL's
/// length at the start of the window its growth is measured over, and the verdict
/// of the last window.
#[derive(Debug, Default)]
struct Pace {
    /// The WAL's length at the window's first pass, and when that pass started.
    window: Option<(u64, Stopwatch)>,
    /// Whether the WAL grew by at least [`CHECKPOINT_BUSY_RATE`] over the last
    /// whole window.
    busy: bool,
}

impl Pace {
    /// How soon to pass again after a pass that `started` and found the WAL `frames`
    /// long.
    ///
    /// The growth is judged over windows of at least [`CHECKPOINT_BUSY_EVERY`], not
    /// pass by pass: near a restart the passes come every [`CHECKPOINT_CLOSE_EVERY`],
    /// and a few milliseconds without a commit (or a pass right after the writer's
    /// restart, which still sees the finished log) would otherwise read as an idle
    /// WAL and send the checkpointer to sleep for [`CHECKPOINT_EVERY`] while the
    /// writer fills the next log.
    fn next_pass(&mut self, frames: u64, started: Stopwatch) -> Duration {
        match self.window {
            Some((first, at)) => {
                let elapsed = at.elapsed().saturating_sub(started.elapsed());
                if elapsed >= CHECKPOINT_BUSY_EVERY {
                    // Frames appended over the window: the growth, or the whole new
                    // length if the WAL started over in between.
                    let grown = if frames >= first {
                        frames - first
                    } else {
                        frames
                    };
                    self.busy = grows_fast(grown, elapsed);
                    self.window = Some((frames, started));
                }
            }
            None => self.window = Some((frames, started)),
        }
        next_pass(frames, self.busy)
    }
}

/// Whether `grown` frames in `elapsed` is at least [`CHECKPOINT_BUSY_RATE`].
fn grows_fast(grown: u64, elapsed: Duration) -> bool {
    grown > 0
        && u128::from(grown) * 1_000_000
            >= u128::from(CHECKPOINT_BUSY_RATE) * elapsed.as_micros().max(1)
}

/// How soon the checkpointer passes again after a pass that found the WAL `frames`
/// long, `busy` if it grows by at least [`CHECKPOINT_BUSY_RATE`].
///
/// A WAL growing slower, however long, keeps the slow pace ([`CHECKPOINT_EVERY`]):
/// each pass then finds little to copy and the WAL starts over by itself. A faster
/// one means a busy writer that would make the WAL reach [`WAL_RESTART_FRAMES`]
/// within seconds: every [`CHECKPOINT_BUSY_EVERY`], so that no pass has much to copy,
/// and every [`CHECKPOINT_CLOSE_EVERY`] once it nears that length, so that the
/// writer's restart finds little left.
fn next_pass(frames: u64, busy: bool) -> Duration {
    if !busy {
        CHECKPOINT_EVERY
    } else if frames >= CHECKPOINT_CLOSE_FRAMES {
        CHECKPOINT_CLOSE_EVERY
    } else {
        CHECKPOINT_BUSY_EVERY
    }
}

/// Runs `wal_checkpoint(PASSIVE)` on `conn`: (busy, frames in the WAL, frames
/// copied into the database), the lengths −1 when another connection holds the
/// checkpoint lock.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// The writer's side of bounding the WAL.
///
/// Under sustained load a passive checkpoint never finds the WAL fully copied
/// between two commits, so SQLite never restarts it and it would only grow. Past
/// `WAL_RESTART_FRAMES` the writer copies the few frames the checkpointer has not
/// (a passive checkpoint of its own, between two batches); its next transaction
/// then starts the WAL over. If the checkpointer is mid-pass the attempt returns
/// busy at once (a passive checkpoint never waits) and is retried after the next
/// batch, so the writer never stalls on the checkpointer.
pub(super) struct WalBound {
    /// The WAL's length at the checkpointer's last pass.
    frames: Arc<AtomicU64>,
    /// The length of the log the writer last copied in full. The log starts over
    /// only at the writer's next commit, so a checkpointer pass in between still
    /// reports that length; it is no reason to copy again.
    finished: Option<u64>,
}

impl WalBound {
    /// Bounds the WAL whose length the checkpointer reports in `frames`.
    pub(super) fn new(frames: Arc<AtomicU64>) -> WalBound {
        WalBound {
            frames,
            finished: None,
        }
    }

    /// Between two batches: copies the rest of a WAL that has passed
    /// `WAL_RESTART_FRAMES`, so that the next commit starts it over.
    pub(super) fn between_batches(&mut self, conn: &Connection, stats: &SnapshotStats) {
        let frames = self.frames.load(Ordering::Relaxed);
        if frames < WAL_RESTART_FRAMES || self.finished == Some(frames) {
            return;
        }
        let started = Stopwatch::start();
        let result = passive_checkpoint(conn);
        let micros = started.elapsed().as_micros() as u64;
        stats.wal_restart_attempts.fetch_add(1, Ordering::Relaxed);
        stats
            .wal_restart_micros
            .fetch_add(micros, Ordering::Relaxed);
        stats
            .wal_restart_max_micros
            .fetch_max(micros, Ordering::Relaxed);
        match result {
            Ok((0, log, done)) if log == done => {
                self.frames.store(0, Ordering::Relaxed);
                self.finished = Some(log as u64);
                stats.wal_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    frames = log,
                    micros,
                    "WAL fully checkpointed by the writer; it restarts with the next commit"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint by the writer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpointer_hurries_only_while_the_wal_grows_fast() {
        let near = CHECKPOINT_CLOSE_FRAMES;
        assert_eq!(next_pass(near / 2, true), CHECKPOINT_BUSY_EVERY, "busy");
        assert_eq!(
            next_pass(near, true),
            CHECKPOINT_CLOSE_EVERY,
            "busy, near the restart"
        );
        assert_eq!(next_pass(near, false), CHECKPOINT_EVERY, "near but slow");
        assert_eq!(next_pass(0, false), CHECKPOINT_EVERY, "empty");

        let second = Duration::from_secs(1);
        assert!(grows_fast(CHECKPOINT_BUSY_RATE, second));
        assert!(!grows_fast(CHECKPOINT_BUSY_RATE - 1, second));
        assert!(
            grows_fast(200, Duration::from_millis(20)),
            "10,000 frames a second"
        );
        assert!(!grows_fast(0, Duration::ZERO), "no growth is never fast");
    }

    #[test]
    fn the_pace_is_judged_over_windows_not_single_passes() {
        // The growths below stay above the busy rate even if a sleep of one window
        // (50 ms) overshoots by seconds on a loaded machine.
        let mut pace = Pace::default();
        assert_eq!(
            pace.next_pass(5_000, Stopwatch::start()),
            CHECKPOINT_EVERY,
            "nothing to compare yet"
        );
        std::thread::sleep(CHECKPOINT_BUSY_EVERY);
        // 7,000 frames in one window: far above the busy rate.
        assert_eq!(
            pace.next_pass(12_000, Stopwatch::start()),
            CHECKPOINT_BUSY_EVERY
        );
        // A pass right after, with nothing new: the window is too short to judge,
        // so the pace holds.
        assert_eq!(
            pace.next_pass(12_000, Stopwatch::start()),
            CHECKPOINT_BUSY_EVERY
        );
        std::thread::sleep(CHECKPOINT_BUSY_EVERY);
        // The WAL started over and is 4,000 frames long again: still busy.
        assert_eq!(
            pace.next_pass(4_000, Stopwatch::start()),
            CHECKPOINT_BUSY_EVERY
        );
        std::thread::sleep(CHECKPOINT_BUSY_EVERY);
        assert_eq!(
            pace.next_pass(4_000, Stopwatch::start()),
            CHECKPOINT_EVERY,
            "a whole window without growth"
        );
    }

    fn passive(conn: &Connection) -> (i64, i64, i64) {
        passive_checkpoint(conn).unwrap()
    }

    #[test]
    fn the_writer_copies_a_long_log_once_and_not_again_before_it_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA page_size = 512;
                 PRAGMA journal_mode = WAL;
                 PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);",
            )
            .unwrap();
        // A log past the restart length: about a page per row.
        let tx = writer.unchecked_transaction().unwrap();
        for k in 0..WAL_RESTART_FRAMES as i64 {
            tx.execute("INSERT INTO t VALUES (?1, zeroblob(400))", [k])
                .unwrap();
        }
        tx.commit().unwrap();
        let wal = std::fs::metadata(dir.path().join("db.sqlite3-wal")).unwrap();
        let log = (wal.len() - 32) / (512 + 24);
        assert!(log >= WAL_RESTART_FRAMES, "{log} frames");

        let checkpointer = Connection::open(&path).unwrap();
        let stats = SnapshotStats::default();
        let frames = Arc::new(AtomicU64::new(0));
        let mut bound = WalBound::new(frames.clone());
        let attempts = |stats: &SnapshotStats| stats.wal_restart_attempts.load(Ordering::Relaxed);

        bound.between_batches(&writer, &stats);
        assert_eq!(attempts(&stats), 0, "no report yet: nothing to do");

        // The checkpointer reports the length; the writer copies the log in full.
        frames.store(log, Ordering::Relaxed);
        bound.between_batches(&writer, &stats);
        assert_eq!(attempts(&stats), 1);
        assert_eq!(stats.wal_restarts.load(Ordering::Relaxed), 1);
        assert_eq!(frames.load(Ordering::Relaxed), 0);

        // Until the writer's next commit the finished log is still there, and the
        // checkpointer's next pass reports its length again: not a reason to copy.
        let (busy, reported, done) = passive(&checkpointer);
        assert_eq!((busy, reported as u64, done as u64), (0, log, log));
        frames.store(reported as u64, Ordering::Relaxed);
        bound.between_batches(&writer, &stats);
        assert_eq!(attempts(&stats), 1, "the finished log is not copied again");

        // The next commit starts the log over.
        writer
            .execute("INSERT INTO t VALUES (-1, x'00')", [])
            .unwrap();
        let (_, reported, _) = passive(&checkpointer);
        assert!((reported as u64) < 10, "started over: {reported} frames");
    }
}
