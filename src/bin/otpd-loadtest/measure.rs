//! Measurements: latency histograms, the per-driver tally, process CPU/RSS/load
//! and the runtime's storage counters.

use super::*;

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_MICROS, 3).expect("valid histogram bounds")
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What one driver task saw.
pub(crate) struct Tally {
    pub(crate) cycles: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) request: Histogram<u64>,
    pub(crate) code_wait: Histogram<u64>,
    pub(crate) verify: Histogram<u64>,
    pub(crate) cycle: Histogram<u64>,
    /// Completions per [`BUCKET`] since driving started (the timeline that shows
    /// stalls: checkpoints, WAL restarts, reaping).
    pub(crate) timeline: Vec<u32>,
}

/// Resolution of the completion timeline.
pub(crate) const BUCKET: Duration = Duration::from_millis(10);

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            cycles: 0,
            errors: BTreeMap::new(),
            request: histogram(),
            code_wait: histogram(),
            verify: histogram(),
            cycle: histogram(),
            timeline: Vec::new(),
        }
    }

    /// Notes one completion at `since_start` on the timeline.
    pub(crate) fn completed_at(&mut self, since_start: Duration) {
        let i = (since_start.as_micros() / BUCKET.as_micros()) as usize;
        if self.timeline.len() <= i {
            self.timeline.resize(i + 1, 0);
        }
        self.timeline[i] += 1;
    }

    pub(crate) fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_insert(0) += 1;
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.cycles += other.cycles;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_insert(0) += n;
        }
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.request.add(&other.request);
        let _ = self.code_wait.add(&other.code_wait);
        let _ = self.verify.add(&other.verify);
        let _ = self.cycle.add(&other.cycle);
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), 0);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            *mine += theirs;
        }
    }

    /// The completion timeline over the driving window `driven`: completions per
    /// whole second (min / median / max) and the longest run of [`BUCKET`]s with
    /// none, from the first completion to the end of driving.
    pub(crate) fn timeline_json(&self, driven: Duration) -> serde_json::Value {
        let per_sec_buckets = (Duration::from_secs(1).as_micros() / BUCKET.as_micros()) as usize;
        let whole_secs = (driven.as_secs_f64().floor() as usize).max(1);
        let mut per_sec: Vec<u64> = (0..whole_secs)
            .map(|s| {
                self.timeline
                    .iter()
                    .skip(s * per_sec_buckets)
                    .take(per_sec_buckets)
                    .map(|&n| u64::from(n))
                    .sum()
            })
            .collect();
        let end = ((driven.as_micros() / BUCKET.as_micros()) as usize).min(self.timeline.len());
        let first = self.timeline.iter().position(|&n| n > 0).unwrap_or(end);
        let (mut longest, mut run, mut longest_end) = (0usize, 0usize, first);
        for (i, &n) in self.timeline.iter().enumerate().take(end).skip(first) {
            run = if n == 0 { run + 1 } else { 0 };
            if run > longest {
                (longest, longest_end) = (run, i + 1);
            }
        }
        per_sec.sort_unstable();
        serde_json::json!({
            "per_second_min": per_sec.first().copied().unwrap_or(0),
            "per_second_median": per_sec[per_sec.len() / 2],
            "per_second_max": per_sec.last().copied().unwrap_or(0),
            "longest_gap_ms": (longest as u128 * BUCKET.as_millis()) as u64,
            // When that gap began, from the start of driving.
            "longest_gap_at_ms": ((longest_end - longest) as u128 * BUCKET.as_millis()) as u64,
        })
    }

    pub(crate) fn failures(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// p50 / p99 / max of a histogram, in milliseconds.
pub(crate) fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    if h.is_empty() {
        return serde_json::json!({"count": 0});
    }
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

/// The `errors:` line of a report, when any call failed.
pub(crate) fn write_errors(text: &mut String, errors: &BTreeMap<String, u64>) {
    use std::fmt::Write as _;
    if errors.is_empty() {
        return;
    }
    let list: Vec<String> = errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let _ = writeln!(text, "errors:           {}", list.join(" "));
}

pub(crate) fn summary_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "n/a".into();
    }
    format!(
        "p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    )
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`); 0 when unavailable.
pub(crate) fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used so far, in seconds.
pub(crate) fn cpu_secs() -> f64 {
    // /proc/self/stat: fields 14 and 15 (utime, stime) in clock ticks, counted
    // after the parenthesised command name, which may contain spaces.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// The 1-minute load average (how busy the shared machine was).
pub(crate) fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub(crate) fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

#[derive(Clone, Copy, Default)]
pub(crate) struct StorageCounters {
    pub(crate) commits: u64,
    pub(crate) ops: u64,
    pub(crate) reads: u64,
    pub(crate) micros: u64,
    /// Of `micros`, the writer thread's CPU time.
    pub(crate) cpu_micros: u64,
    pub(crate) failures: u64,
    pub(crate) checkpoints: u64,
    pub(crate) checkpoint_micros: u64,
    pub(crate) wal_restarts: u64,
    pub(crate) wal_restart_attempts: u64,
    pub(crate) wal_restart_micros: u64,
    /// Since the runtime started (a maximum cannot be differenced).
    pub(crate) wal_restart_max_micros: u64,
    pub(crate) replays: u64,
    /// The WAL shim's writes (`otpd-walvfs`, process-wide).
    pub(crate) wal: otpd_walvfs::Counters,
}

impl StorageCounters {
    pub(crate) fn read(runtime: &Runtime) -> StorageCounters {
        let s = runtime.storage_stats();
        StorageCounters {
            commits: s.commits.load(Ordering::Relaxed),
            ops: s.ops.load(Ordering::Relaxed),
            reads: s.reads.load(Ordering::Relaxed),
            micros: s.commit_micros.load(Ordering::Relaxed),
            cpu_micros: s.commit_cpu_micros.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
            checkpoint_micros: s.checkpoint_micros.load(Ordering::Relaxed),
            wal_restarts: s.wal_restarts.load(Ordering::Relaxed),
            wal_restart_attempts: s.wal_restart_attempts.load(Ordering::Relaxed),
            wal_restart_micros: s.wal_restart_micros.load(Ordering::Relaxed),
            wal_restart_max_micros: s.wal_restart_max_micros.load(Ordering::Relaxed),
            replays: s.replays.load(Ordering::Relaxed),
            wal: otpd_walvfs::counters(),
        }
    }

    pub(crate) fn since(self, before: StorageCounters) -> StorageCounters {
        StorageCounters {
            commits: self.commits - before.commits,
            ops: self.ops - before.ops,
            reads: self.reads - before.reads,
            micros: self.micros - before.micros,
            cpu_micros: self.cpu_micros - before.cpu_micros,
            failures: self.failures - before.failures,
            checkpoints: self.checkpoints - before.checkpoints,
            checkpoint_micros: self.checkpoint_micros - before.checkpoint_micros,
            wal_restarts: self.wal_restarts - before.wal_restarts,
            wal_restart_attempts: self.wal_restart_attempts - before.wal_restart_attempts,
            wal_restart_micros: self.wal_restart_micros - before.wal_restart_micros,
            wal_restart_max_micros: self.wal_restart_max_micros,
            replays: self.replays - before.replays,
            wal: self.wal.since(before.wal),
        }
    }

    /// µs of writer time per op, and ops per unit of work (cycle or delivery).
    pub(crate) fn per_unit(self, units: u64) -> (f64, f64) {
        let ops_per_unit = if units == 0 {
            0.0
        } else {
            self.ops as f64 / units as f64
        };
        (
            self.per_op(self.micros),
            (ops_per_unit * 100.0).round() / 100.0,
        )
    }

    /// µs of the writer thread's CPU time per op (the wall-time figure of
    /// [`StorageCounters::per_unit`] less the time the writer waited for a core).
    pub(crate) fn cpu_us_per_op(self) -> f64 {
        self.per_op(self.cpu_micros)
    }

    /// `micros` per op, to 0.01 µs (0 without ops).
    fn per_op(self, micros: u64) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            (micros as f64 / self.ops as f64 * 100.0).round() / 100.0
        }
    }

    pub(crate) fn json(self, elapsed: Duration) -> serde_json::Value {
        let per = |x: u64| {
            if self.commits == 0 {
                0.0
            } else {
                (x as f64 / self.commits as f64 * 10.0).round() / 10.0
            }
        };
        serde_json::json!({
            "commits": self.commits,
            "commits_per_sec": (self.commits as f64 / elapsed.as_secs_f64()).round(),
            "ops": self.ops,
            "ops_per_commit": per(self.ops),
            "reads": self.reads,
            "avg_commit_us": per(self.micros),
            "writer_busy_pct": (self.micros as f64 / 1e6 / elapsed.as_secs_f64() * 1000.0).round() / 10.0,
            "writer_cpu_pct": (self.cpu_micros as f64 / 1e6 / elapsed.as_secs_f64() * 1000.0).round() / 10.0,
            "failures": self.failures,
            "checkpoints": self.checkpoints,
            "checkpointer_busy_pct": (self.checkpoint_micros as f64 / 1e6 / elapsed.as_secs_f64() * 1000.0).round() / 10.0,
            "wal_restarts": self.wal_restarts,
            "wal_restart_attempts": self.wal_restart_attempts,
            "wal_restart_ms": self.wal_restart_micros / 1000,
            "wal_restart_max_ms": (self.wal_restart_max_micros as f64 / 100.0).round() / 10.0,
            "replays": self.replays,
            "wal_frame_writes_gathered": self.wal.gathered,
            "wal_writes": self.wal.flushes,
            "wal_late_writes": self.wal.late_flushes,
            "checkpoint_syncs": self.wal.checkpoint_syncs,
        })
    }
}

/// µs of CPU per unit of work, from CPU seconds used.
pub(crate) fn per_unit_us(cpu_secs: f64, units: u64) -> f64 {
    if units == 0 {
        return 0.0;
    }
    (cpu_secs * 1e6 / units as f64 * 10.0).round() / 10.0
}

/// The `--rate` figures: asked, achieved, and starts that fell behind the schedule.
pub(crate) fn pace_json(pace: &Pace, done: u64, driven: Duration) -> serde_json::Value {
    serde_json::json!({
        "target_per_sec": pace.target_per_sec,
        "achieved_per_sec": (done as f64 / driven.as_secs_f64().max(1e-9)).round(),
        "late_starts": pace.late.load(Ordering::Relaxed),
        "late_after_ms": LATE_AFTER.as_millis() as u64,
    })
}

pub(crate) fn pace_line(p: &serde_json::Value) -> String {
    format!(
        "open loop at {}/s: achieved {}/s, {} starts more than {} ms behind schedule",
        p["target_per_sec"], p["achieved_per_sec"], p["late_starts"], p["late_after_ms"]
    )
}

pub(crate) fn timeline_line(t: &serde_json::Value) -> String {
    format!(
        "per second min {} / median {} / max {}; longest gap without one {} ms (at {} ms)",
        t["per_second_min"],
        t["per_second_median"],
        t["per_second_max"],
        t["longest_gap_ms"],
        t["longest_gap_at_ms"]
    )
}

/// Hold mode: samples (live OTP actors, RSS KiB) every 5 ms on a thread of its own,
/// so the cost of one more live flake can be read off the second half of the run.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(usize, u64)>>,
}

impl RssSampler {
    pub(crate) fn start(runtime: Runtime) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push((runtime.live_actors(), proc_status_kib("VmRSS")));
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        });
        RssSampler { stop, thread }
    }

    /// The samples, oldest first.
    pub(crate) fn stop(self) -> Vec<(usize, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
