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
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            cycles: 0,
            errors: BTreeMap::new(),
            request: histogram(),
            code_wait: histogram(),
            verify: histogram(),
            cycle: histogram(),
        }
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
    pub(crate) micros: u64,
    pub(crate) failures: u64,
    pub(crate) checkpoints: u64,
    pub(crate) checkpoint_micros: u64,
    pub(crate) wal_restarts: u64,
    pub(crate) replays: u64,
}

impl StorageCounters {
    pub(crate) fn read(runtime: &Runtime) -> StorageCounters {
        let s = runtime.storage_stats();
        StorageCounters {
            commits: s.commits.load(Ordering::Relaxed),
            ops: s.ops.load(Ordering::Relaxed),
            micros: s.commit_micros.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
            checkpoint_micros: s.checkpoint_micros.load(Ordering::Relaxed),
            wal_restarts: s.wal_restarts.load(Ordering::Relaxed),
            replays: s.replays.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn since(self, before: StorageCounters) -> StorageCounters {
        StorageCounters {
            commits: self.commits - before.commits,
            ops: self.ops - before.ops,
            micros: self.micros - before.micros,
            failures: self.failures - before.failures,
            checkpoints: self.checkpoints - before.checkpoints,
            checkpoint_micros: self.checkpoint_micros - before.checkpoint_micros,
            wal_restarts: self.wal_restarts - before.wal_restarts,
            replays: self.replays - before.replays,
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
            "avg_commit_us": per(self.micros),
            "writer_busy_pct": (self.micros as f64 / 1e6 / elapsed.as_secs_f64() * 1000.0).round() / 10.0,
            "failures": self.failures,
            "checkpoints": self.checkpoints,
            "checkpointer_busy_pct": (self.checkpoint_micros as f64 / 1e6 / elapsed.as_secs_f64() * 1000.0).round() / 10.0,
            "wal_restarts": self.wal_restarts,
            "replays": self.replays,
        })
    }
}
