//! Checkpoints and WAL bounding, off the writer's path.
//!
//! The writer runs with `wal_autocheckpoint = 0`. The [`Checkpointer`] thread, with
//! its own connection, runs `wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`]
//! (every [`CHECKPOINT_BUSY_EVERY`] while the WAL is long and growing, every
//! [`CHECKPOINT_CLOSE_EVERY`] near [`WAL_RESTART_FRAMES`], to keep close behind the
//! writer) and records the WAL's length; [`bound_wal`] is the writer's own short checkpoint,
//! between two batches, once that length passes [`WAL_RESTART_FRAMES`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::clock::Stopwatch;

use super::{
    SnapshotStats, StorageError, CHECKPOINT_BUSY_EVERY, CHECKPOINT_BUSY_FRAMES,
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
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("otpd-checkpoint".into())
            .spawn(move || {
                // The WAL length at the last pass, and how soon to pass again.
                let (mut last_log, mut pause) = (0i64, CHECKPOINT_EVERY);
                loop {
                    match stopped.recv_timeout(pause) {
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
                            let frames = log.max(0) as u64;
                            pause = next_pass(frames, log != last_log);
                            last_log = log;
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

/// How soon the checkpointer passes again, from the WAL's length in `frames` and
/// whether it `moved` (grew, or started over) since the last pass.
///
/// An idle WAL, however long, keeps the slow pace ([`CHECKPOINT_EVERY`]). A long one
/// that has grown (or started over) since the last pass means a busy writer: every
/// [`CHECKPOINT_BUSY_EVERY`], and every [`CHECKPOINT_CLOSE_EVERY`] once it nears the
/// length at which the writer restarts it, so that the restart finds little left.
fn next_pass(frames: u64, moved: bool) -> Duration {
    if frames < CHECKPOINT_BUSY_FRAMES || !moved {
        CHECKPOINT_EVERY
    } else if frames >= CHECKPOINT_CLOSE_FRAMES {
        CHECKPOINT_CLOSE_EVERY
    } else {
        CHECKPOINT_BUSY_EVERY
    }
}

/// Under sustained load a passive checkpoint never finds the WAL fully copied
/// between two commits, so SQLite never restarts it and it would only grow. Past
/// `WAL_RESTART_FRAMES` the writer copies the few frames the checkpointer has not
/// (a passive checkpoint of its own, between two batches); its next transaction
/// then starts the WAL over. If the checkpointer is mid-pass the attempt returns
/// busy at once (a passive checkpoint never waits) and is retried after the next
/// batch, so the writer never stalls on the checkpointer.
pub(super) fn bound_wal(conn: &Connection, wal_frames: &AtomicU64, stats: &SnapshotStats) {
    if wal_frames.load(Ordering::Relaxed) < WAL_RESTART_FRAMES {
        return;
    }
    let started = Stopwatch::start();
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
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
            wal_frames.store(0, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpointer_hurries_only_while_a_long_wal_grows() {
        let long = CHECKPOINT_BUSY_FRAMES;
        let close = CHECKPOINT_CLOSE_FRAMES;
        assert_eq!(
            next_pass(long, true),
            CHECKPOINT_BUSY_EVERY,
            "long and grown"
        );
        assert_eq!(
            next_pass(close, true),
            CHECKPOINT_CLOSE_EVERY,
            "grown and near the restart"
        );
        assert_eq!(
            next_pass(long, true),
            CHECKPOINT_BUSY_EVERY,
            "started over and long again: busy, no longer near"
        );
        assert_eq!(next_pass(long, false), CHECKPOINT_EVERY, "long but idle");
        assert_eq!(next_pass(close, false), CHECKPOINT_EVERY, "near but idle");
        assert_eq!(next_pass(10, true), CHECKPOINT_EVERY, "growing but short");
    }
}
