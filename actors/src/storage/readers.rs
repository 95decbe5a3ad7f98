//! The read connections: the threads that run [`Snapshot::read`](super::Snapshot::read)s.
//!
//! A read is queued to the writer like a write, so it is ordered after every write
//! queued before it; the writer does not run it but hands it here once the batch
//! holding it has committed (or failed). Under WAL a read transaction started after
//! that commit sees it, so a read still observes every write before it — now only
//! committed ones — while the writer's thread spends its time on writes alone.
//!
//! Each read runs in its own read transaction (one snapshot for all its statements)
//! on one of [`READERS`] connections, which take reads from one shared queue in
//! turn: a long read (a delivery-log page, a day of statistics) holds up neither the
//! writer nor the actor loads behind it on the other connection.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StorageError;

/// A read as the writer hands it over: it answers its caller itself.
pub(super) type ReadFn = Box<dyn FnOnce(&Connection) + Send>;

/// How many read connections (and threads) there are.
pub(super) const READERS: usize = 2;

/// Page cache of each read connection, in KiB: small, since the reads are point
/// lookups and short pages served from the OS page cache, and every KiB shows in
/// the RSS figures.
const READER_CACHE_KIB: i64 = 1_024;

/// The read threads and the queue that feeds them.
pub(super) struct Readers {
    tx: Option<mpsc::Sender<ReadFn>>,
    threads: Vec<JoinHandle<()>>,
}

impl Readers {
    /// Opens [`READERS`] connections to the (already migrated) database at `path`
    /// and starts their threads.
    pub(super) fn start(path: &Path) -> Result<Readers, StorageError> {
        let (tx, rx) = mpsc::channel::<ReadFn>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(READERS);
        for n in 0..READERS {
            let conn = open_reader(path)?;
            let rx = rx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("otpd-read-{n}"))
                .spawn(move || serve(&conn, &rx))
                .map_err(|e| StorageError::Io(e.to_string()))?;
            threads.push(thread);
        }
        Ok(Readers {
            tx: Some(tx),
            threads,
        })
    }

    /// Queues `read` for the next free connection.
    pub(super) fn run(&self, read: ReadFn) {
        if let Some(tx) = &self.tx {
            // The threads outlive the sender (they stop in `stop`), so this only
            // fails if one panicked; the read's caller then sees its answer dropped
            // (`StorageError::Closed`).
            let _ = tx.send(read);
        }
    }

    /// Lets the threads finish what is queued, then joins them.
    pub(super) fn stop(&mut self) {
        self.tx = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A connection for reads only: `query_only`, a small cache, the same busy timeout
/// as the writer's.
fn open_reader(path: &Path) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// One read thread: takes reads until the queue is closed and empty.
fn serve(conn: &Connection, rx: &Mutex<mpsc::Receiver<ReadFn>>) {
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(read) = next else { return };
        // One snapshot for every statement of the read. If BEGIN fails the read
        // still runs, statement by statement, and reports its own errors.
        let began = conn.execute_batch("BEGIN").is_ok();
        read(conn);
        if began && !conn.is_autocommit() {
            let _ = conn.execute_batch("COMMIT");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::otp::OtpRecord;
    use crate::storage::tests::{config, key};
    use crate::storage::{load_otp, Change, Snapshot, StorageError};

    #[tokio::test]
    async fn a_read_runs_on_a_read_connection_and_sees_the_writes_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, handle) = Snapshot::open(&config(&dir)).unwrap();
        let mut rec = OtpRecord::new(key());
        rec.sends.push_back(1_000);
        // Not awaited: the read is queued right behind the write.
        let ticket = snap.write(vec![Change::Otp(rec.clone())]);
        let k = rec.key.clone();
        let (thread, seen) = snap
            .read(move |c| {
                let name = std::thread::current().name().map(str::to_owned);
                Ok((name, load_otp(c, &k)?))
            })
            .await
            .unwrap();
        assert!(
            thread
                .as_deref()
                .is_some_and(|n| n.starts_with("otpd-read-")),
            "{thread:?}"
        );
        assert_eq!(seen, rec, "the write queued before the read");
        ticket.committed().await.unwrap();
        let stats = snap.stats();
        assert_eq!(stats.reads.load(Ordering::Relaxed), 1);
        assert_eq!(stats.ops.load(Ordering::Relaxed), 1, "only the write");
        // The read connections refuse writes.
        let refused = snap
            .read(|c| Ok(c.execute_batch("DELETE FROM otp_state")?))
            .await;
        assert!(
            matches!(refused, Err(StorageError::Sqlite(_))),
            "{refused:?}"
        );
        snap.shutdown().await;
        handle.join().unwrap();
    }

    #[tokio::test]
    async fn a_slow_read_holds_up_neither_commits_nor_the_other_read_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (snap, handle) = Snapshot::open(&config(&dir)).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let slow = {
            let snap = snap.clone();
            tokio::spawn(async move {
                snap.read(move |_| {
                    let _ = wait.recv();
                    Ok(())
                })
                .await
            })
        };
        // While that read is stuck, writes commit and another read is answered.
        let rec = OtpRecord::new(key());
        snap.write(vec![Change::Otp(rec.clone())])
            .committed()
            .await
            .unwrap();
        let k = rec.key.clone();
        assert_eq!(snap.read(move |c| load_otp(c, &k)).await.unwrap(), rec);
        release.send(()).unwrap();
        slow.await.unwrap().unwrap();
        snap.shutdown().await;
        handle.join().unwrap();
    }
}
