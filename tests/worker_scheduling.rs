//! `server.batch_scheduling`: the real `otpd serve` runs its HTTP worker threads
//! under `SCHED_BATCH` (and its storage writer, always), or, with the setting off,
//! leaves the workers under the default policy. Read from `/proc`, as an operator
//! would see it (`chrt -p`), while the daemon serves.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{client, DaemonConfig};

/// `SCHED_BATCH`, as `/proc/<pid>/task/<tid>/stat` reports a thread's policy.
const SCHED_BATCH: u32 = 3;

/// Each thread of `pid`: its name and its scheduling policy.
fn threads(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // `tid (comm) state …`: the name may hold spaces, the fields after it do not.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        // After the name come fields 3 onwards; the policy is field 41.
        let policy = stat[close + 1..]
            .split_whitespace()
            .nth(41 - 3)
            .and_then(|p| p.parse().ok());
        if let Some(policy) = policy {
            out.push((comm, policy));
        }
    }
    out
}

/// Waits (up to 10 s) until `want` holds for the threads of `pid`, and returns them.
#[allow(clippy::disallowed_methods)] // a real-time deadline for polling a real daemon
fn threads_when(pid: u32, want: impl Fn(&[(String, u32)]) -> bool) -> Vec<(String, u32)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = threads(pid);
        if want(&now) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Four requests, each on a connection of its own: actix hands connections to its
/// workers in turn, so both workers have started and served.
fn reach_every_worker(daemon: &common::daemon::Daemon) {
    for _ in 0..4 {
        let health = client()
            .get(daemon.url("/healthz"))
            .send()
            .expect("healthz");
        assert_eq!(health.status(), 200);
    }
}

/// actix names every thread it runs (HTTP workers, the runtime's arbiters)
/// `actix-rt|system…`.
fn batch_actix_threads(threads: &[(String, u32)]) -> usize {
    threads
        .iter()
        .filter(|(name, policy)| name.starts_with("actix-rt") && *policy == SCHED_BATCH)
        .count()
}

fn writer_policy(threads: &[(String, u32)]) -> Option<u32> {
    threads
        .iter()
        .find(|(name, _)| name == "otpd-snapshot")
        .map(|(_, policy)| *policy)
}

#[test]
fn the_http_workers_run_under_sched_batch_by_default_and_only_they() {
    // Two workers (the test configuration's `server.workers`).
    let mut daemon = DaemonConfig::new().daemon();
    daemon.start();
    reach_every_worker(&daemon);
    let pid = daemon.pid();
    let seen = threads_when(pid, |t| batch_actix_threads(t) >= 2);
    // Exactly the two workers: the runtime's own actix threads keep the default.
    assert_eq!(batch_actix_threads(&seen), 2, "{seen:?}");
    assert!(
        seen.iter()
            .filter(|(name, _)| name.starts_with("actix-rt"))
            .count()
            > 2,
        "the runtime's arbiters are actix threads too: {seen:?}"
    );
    assert_eq!(writer_policy(&seen), Some(SCHED_BATCH), "{seen:?}");
    daemon.wait_stderr_line(Duration::from_secs(5), |l| {
        l.contains("otpd listening") && l.contains("batch_scheduling=true")
    });
}

#[test]
fn with_batch_scheduling_off_the_http_workers_keep_the_default_policy() {
    let mut daemon = DaemonConfig::new()
        .daemon()
        .env("OTPD_SERVER__BATCH_SCHEDULING", "false");
    daemon.start();
    reach_every_worker(&daemon);
    let pid = daemon.pid();
    // Every worker has served, so each has run the app factory.
    let seen = threads_when(pid, |t| writer_policy(t) == Some(SCHED_BATCH));
    assert_eq!(batch_actix_threads(&seen), 0, "{seen:?}");
    assert_eq!(writer_policy(&seen), Some(SCHED_BATCH), "{seen:?}");
    daemon.wait_stderr_line(Duration::from_secs(5), |l| {
        l.contains("otpd listening") && l.contains("batch_scheduling=false")
    });
}
