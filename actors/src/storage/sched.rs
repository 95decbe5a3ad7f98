//! The writer thread's scheduling policy: Linux `SCHED_BATCH`.
//!
//! The writer commits whatever is queued when it wakes, and a commit costs about as
//! much again in fixed work (the WAL frames, the locks) as its statements do at the
//! batch sizes HTTP clients produce. Under the default policy a newly woken thread
//! may preempt the thread running on its CPU, so a writer woken by the first write of
//! a burst runs at once, commits that one write, and the rest of the burst waits for
//! the next commit. `SCHED_BATCH` only removes that wake-up preemption: the writer
//! keeps its fair share of the CPU and its nice value, starts at once on an idle CPU,
//! and when every CPU is busy waits until one is free (or the scheduler's tick),
//! gathering the writes that arrive meanwhile. Nobody's commit is skipped or delayed
//! by a timer; the batch is simply as large as the machine's load makes it.
//! `BENCHMARKS.md` ("Seventh pass") has the figures.
//!
//! Elsewhere, or where the call is refused (a seccomp filter), the writer runs
//! under the default policy, which is only slower.

/// Switches the calling thread to `SCHED_BATCH` (Linux), keeping its nice value.
#[cfg(target_os = "linux")]
pub(super) fn prefer_batching() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads `param` (a valid, initialised
    // `sched_param` that outlives the call) and changes only the scheduling policy of
    // the calling thread (`pid` 0). It touches no memory of this process.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Other systems have no such policy: the writer keeps the default one.
#[cfg(not(target_os = "linux"))]
pub(super) fn prefer_batching() -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// The calling thread's scheduling policy (`libc::SCHED_*`).
#[cfg(all(test, target_os = "linux"))]
fn policy() -> std::io::Result<i32> {
    // SAFETY: `sched_getscheduler` takes a pid (0: the calling thread) and no memory.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_getscheduler(0) };
    if rc >= 0 {
        Ok(rc)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_calling_thread_becomes_batch_and_keeps_its_nice_value() {
        let before = policy().expect("policy");
        std::thread::spawn(|| {
            let nice = rustix::process::getpriority_process(None).expect("nice value");
            prefer_batching().expect("SCHED_BATCH needs no privilege");
            assert_eq!(policy().expect("policy"), libc::SCHED_BATCH);
            assert_eq!(
                rustix::process::getpriority_process(None).expect("nice value"),
                nice
            );
        })
        .join()
        .expect("the test thread finished");
        // Only that thread changed.
        assert_eq!(policy().expect("policy"), before);
    }

    #[tokio::test]
    async fn the_writer_thread_runs_under_sched_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (snap, _h) =
            crate::storage::Snapshot::open(&crate::storage::tests::config(&dir)).expect("open");
        // `write_with` runs its closure on the writer thread.
        let on_writer = snap
            .write_with(|_| policy().map_err(|e| crate::storage::StorageError::Io(e.to_string())))
            .await
            .expect("policy of the writer thread");
        assert_eq!(on_writer, libc::SCHED_BATCH);
        snap.shutdown().await;
    }
}
