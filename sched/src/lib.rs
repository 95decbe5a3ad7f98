//! `otpd-sched`: the one scheduling-policy call otpd makes (for its storage writer
//! and its HTTP workers), kept apart (as is the WAL shim, `otpd-walvfs`) so that
//! every other crate of the workspace forbids `unsafe` code.
//!
//! otpd's storage writer commits whatever is queued when it wakes, and a commit
//! costs about as much again in fixed work (the WAL frames, the locks) as its
//! statements do at the batch sizes HTTP clients produce. Under Linux's default
//! policy a newly woken thread may preempt the thread running on its CPU, so a
//! writer woken by the first write of a burst runs at once, commits that one write,
//! and the rest of the burst waits for the next commit. [`prefer_batching`] puts the
//! calling thread under `SCHED_BATCH`, which removes only that wake-up preemption:
//! the thread keeps its fair share of the CPU and its nice value, starts at once on
//! an idle CPU, and when every CPU is busy waits until one frees up (or until the
//! scheduler's tick), gathering the writes that arrive meanwhile. No timer delays
//! anything. `docs/benchmarks-passes.md` ("Seventh pass") has the figures.
//!
//! `otpd serve` makes the same call on its HTTP worker threads
//! (`server.batch_scheduling`): a worker woken by a request or by the writer's
//! answer while its CPU is busy then handles more of both per wake-up, and queues
//! more writes before the writer commits ("Eighteenth pass").
//!
//! A process needs no privilege to choose `SCHED_BATCH` for its own threads. Where
//! the call is refused (a seccomp filter) or the system has no such policy, the
//! caller keeps the default policy, which is only slower under load.

#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::io;

/// A thread's scheduling policy, as Linux reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER`, the default.
    Other,
    /// `SCHED_BATCH`: fair share, no wake-up preemption.
    Batch,
    /// `SCHED_IDLE`: runs only when nothing else wants the CPU.
    Idle,
    /// A real-time policy (`SCHED_FIFO`, `SCHED_RR`, `SCHED_DEADLINE`), by number.
    RealTime(i32),
}

/// Switches the calling thread to `SCHED_BATCH`, keeping its nice value.
///
/// # Errors
/// The system's refusal (`EPERM` under a seccomp filter that denies
/// `sched_setscheduler`), or `Unsupported` where there is no such policy.
#[cfg(target_os = "linux")]
pub fn prefer_batching() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` only reads `param`, a valid, initialised
    // `sched_param` that outlives the call, and changes nothing but the scheduling
    // policy of the calling thread (`pid` 0). No memory of this process is written.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Switches the calling thread to `SCHED_BATCH`: not on this system.
///
/// # Errors
/// Always `Unsupported`.
#[cfg(not(target_os = "linux"))]
pub fn prefer_batching() -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The calling thread's scheduling policy.
///
/// # Errors
/// The system's refusal, or `Unsupported` off Linux.
#[cfg(target_os = "linux")]
pub fn current_policy() -> io::Result<Policy> {
    // SAFETY: `sched_getscheduler` takes a pid (0: the calling thread) and touches
    // no memory of this process.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_getscheduler(0) };
    match rc {
        libc::SCHED_OTHER => Ok(Policy::Other),
        libc::SCHED_BATCH => Ok(Policy::Batch),
        libc::SCHED_IDLE => Ok(Policy::Idle),
        n if n >= 0 => Ok(Policy::RealTime(n)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The calling thread's scheduling policy: not on this system.
///
/// # Errors
/// Always `Unsupported`.
#[cfg(not(target_os = "linux"))]
pub fn current_policy() -> io::Result<Policy> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_calling_thread_becomes_batch_and_keeps_its_nice_value() {
        let before = current_policy().expect("policy");
        std::thread::spawn(|| {
            let nice = rustix::process::getpriority_process(None).expect("nice value");
            prefer_batching().expect("SCHED_BATCH needs no privilege");
            assert_eq!(current_policy().expect("policy"), Policy::Batch);
            assert_eq!(
                rustix::process::getpriority_process(None).expect("nice value"),
                nice
            );
        })
        .join()
        .expect("the test thread finished");
        // Only that thread changed.
        assert_eq!(current_policy().expect("policy"), before);
    }
}
