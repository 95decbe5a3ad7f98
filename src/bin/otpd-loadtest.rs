//! `otpd-loadtest`: drives the otpd runtime in-process (no HTTP) and reports what
//! it sustains.
//!
//! # What it measures
//!
//! **Cycle mode** (the default). One cycle is what a real user of otpd does:
//!
//! 1. `Runtime::request` for a phone (the call returns once the new flake and its
//!    queued message are committed, with `--durability commit`);
//! 2. the runtime hands the message to the provider. The harness plugs in
//!    `otpd_test_support::HandoffProvider`, which takes the code out of the text (the apps use
//!    `message_template = "{code}"`) and hands it to the waiting cycle by
//!    `message_id`;
//! 3. `Runtime::verify` with that code, which must answer `Verified`.
//!
//! `--concurrency C` driver tasks each loop over their own slice of the phones, so
//! there are C cycles in flight and never two on one (app, phone). The run stops
//! after `--duration-secs` or `--cycles`, whichever comes first; in-flight cycles
//! finish. It reports cycles/s, errors by kind, request / verify / full-cycle
//! latency percentiles, live actors, peak RSS and the group-commit counters of the
//! snapshot writer (commits, operations per commit, average commit time).
//!
//! **Hold mode** (`--hold-flakes N`). Issues N requests (no verify) for N distinct
//! phones with actors kept alive (`runtime.idle_actor_secs` set very large), then
//! reports the live actor count and the resident memory each live flake costs:
//! (RSS after − RSS before issuing) / N.
//!
//! Every app is created with settings that do not rate-limit the load
//! (`resend_cooldown_secs = 0`, `max_sends_per_hour = 1000`,
//! `max_sends_per_minute = 1_000_000`). The last is the ceiling the runtime accepts
//! and it is per app: above ~16,000 cycles/s sustained for a minute, use `--apps`.
//! Phone `i` belongs to app `i % apps`.
//!
//! **Delivery mode** (`--deliveries N --endpoints E`). Measures signed deliveries
//! from the runtime to a local receiver: `otpd_test_support::Receiver` (hyper) on
//! `127.0.0.1:<ephemeral>` inside this process, on its own thread (a current-thread
//! tokio runtime), which answers every request `200` with keep-alive and records
//! when each one arrived. Only loopback traffic; the run is bounded by N, by
//! `--duration-secs` for starting work, and by [`DELIVERY_WAIT`] for the receiver
//! to see the last delivery. Two drivers (`--delivery-driver`):
//!
//! - `callbacks` (default): full cycles whose verify carries `callback_url` (endpoint
//!   `i % E`, i.e. `http://127.0.0.1:<port>/cb/<i % E>`, each URL its own delivery
//!   actor) and a `callback_secret`, so each verify emits one signed `flake.verified`
//!   callback. The receiver matches it to its verify by the `flake_id` in the body:
//!   **verify→callback delay** = arrival at the receiver − the moment `verify`
//!   returned (a callback can arrive before the driver sees the return: that counts as 0).
//! - `webhooks`: E apps with one `otp` webhook each (endpoint e), and the driver calls
//!   `Runtime::test_webhook` in a loop: one committed outbox row and one signed
//!   delivery per call, without the OTP cycle's cost. Matched by `X-Otpd-Delivery-Id`.
//!
//! Reported: deliveries/s at the receiver (received ÷ time from the start of driving to
//! the last arrival), deliveries the runtime counted as succeeded / failed, the delay
//! percentiles, and the storage counters. `--max-in-flight` sets
//! `delivery.max_in_flight` (concurrent attempts per endpoint, default 16).
//!
//! # How to run
//!
//! ```text
//! cargo build --release --bin otpd-loadtest
//! target/release/otpd-loadtest --phones 20000 --concurrency 512 --duration-secs 10
//! target/release/otpd-loadtest --durability async --json
//! target/release/otpd-loadtest --hold-flakes 100000
//! target/release/otpd-loadtest --deliveries 50000 --endpoints 1
//! target/release/otpd-loadtest --deliveries 50000 --endpoints 100 --delivery-driver webhooks
//! ```
//!
//! The database is a fresh file in the system temp directory, deleted afterwards,
//! unless `--db PATH` is given (then it is kept). The exit status is non-zero when
//! any cycle failed; the error counts are printed. `RUST_LOG` sets the log filter
//! (default `warn`, to stderr).

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Arbiter;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use otpd_actors::config::{Durability, Synchronous};
use otpd_actors::otp::VerifyOutcome;
use otpd_actors::phone::Phone;
use otpd_actors::runtime::NewWebhook;
use otpd_actors::{App, AppSettings, NewApp, Runtime, RuntimeConfig, SendOtp, VerifyOtp};
use otpd_test_support::{HandoffProvider, Received, Reply};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Longest any single runtime call or code hand-over may take before the cycle
/// counts as failed (keeps the run bounded if something wedges).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Histogram range: 1 µs to 10 minutes, 3 significant digits.
const HIST_MAX_MICROS: u64 = 600_000_000;

/// Delivery mode: how long to wait, after driving stops, for the last delivery.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);

// The driver threads each hold a clone of the runtime handle.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Runtime>();
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    Commit,
    Async,
}

/// What produces the deliveries in delivery mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeliveryDriver {
    /// Request + verify cycles whose verify carries a callback URL.
    Callbacks,
    /// `Runtime::test_webhook` on one webhook per endpoint.
    Webhooks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SynchronousArg {
    Normal,
    Full,
}

/// Drives the otpd runtime in-process and reports throughput, latency and memory.
#[derive(Debug, Clone, Parser)]
#[command(name = "otpd-loadtest", version, about, long_about = None)]
struct Args {
    /// Distinct phone numbers (each one an OTP actor per run).
    #[arg(long, default_value_t = 10_000)]
    phones: usize,
    /// Apps; phone i belongs to app i % apps.
    #[arg(long, default_value_t = 1)]
    apps: usize,
    /// Cycles in flight (driver tasks).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Stop starting cycles after this many seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Stop after this many cycles (whichever of the two limits comes first).
    #[arg(long)]
    cycles: Option<u64>,
    /// When a change is acknowledged: after its commit, or before.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Commit)]
    durability: DurabilityArg,
    /// SQLite `synchronous` pragma (WAL mode).
    #[arg(long, value_enum, default_value_t = SynchronousArg::Normal)]
    synchronous: SynchronousArg,
    /// Database file (kept). Default: a fresh file in the temp directory, deleted after.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Arbiters hosting OTP actors (0 = one per core).
    #[arg(long, default_value_t = 0)]
    arbiters: usize,
    /// Threads running the driver tasks (each an actix Arbiter).
    #[arg(long, default_value_t = 1)]
    driver_threads: usize,
    /// Hold mode: issue this many requests for distinct phones, keep the actors
    /// alive, report live actors and RSS per live flake (no verify).
    #[arg(long)]
    hold_flakes: Option<usize>,
    /// Delivery mode: produce this many signed deliveries to a local receiver.
    #[arg(long)]
    deliveries: Option<u64>,
    /// Delivery mode: distinct endpoints (URLs, or webhooks with `--delivery-driver webhooks`).
    #[arg(long, default_value_t = 1)]
    endpoints: usize,
    /// Delivery mode: what produces the deliveries.
    #[arg(long, value_enum, default_value_t = DeliveryDriver::Callbacks)]
    delivery_driver: DeliveryDriver,
    /// `delivery.max_in_flight`: concurrent attempts per endpoint.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Print one JSON object instead of the human-readable block.
    #[arg(long)]
    json: bool,
}

// ----- measurements ----------------------------------------------------------

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_MICROS, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What one driver task saw.
struct Tally {
    cycles: u64,
    errors: BTreeMap<String, u64>,
    request: Histogram<u64>,
    code_wait: Histogram<u64>,
    verify: Histogram<u64>,
    cycle: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            cycles: 0,
            errors: BTreeMap::new(),
            request: histogram(),
            code_wait: histogram(),
            verify: histogram(),
            cycle: histogram(),
        }
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_insert(0) += 1;
    }

    fn merge(&mut self, other: Tally) {
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

    fn failures(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// p50 / p99 / max of a histogram, in milliseconds.
fn summary(h: &Histogram<u64>) -> serde_json::Value {
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
fn write_errors(text: &mut String, errors: &BTreeMap<String, u64>) {
    use std::fmt::Write as _;
    if errors.is_empty() {
        return;
    }
    let list: Vec<String> = errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let _ = writeln!(text, "errors:           {}", list.join(" "));
}

fn summary_line(h: &Histogram<u64>) -> String {
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
fn proc_status_kib(field: &str) -> u64 {
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
fn cpu_secs() -> f64 {
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
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

#[derive(Clone, Copy, Default)]
struct StorageCounters {
    commits: u64,
    ops: u64,
    micros: u64,
    failures: u64,
    checkpoints: u64,
    checkpoint_micros: u64,
    wal_restarts: u64,
    replays: u64,
}

impl StorageCounters {
    fn read(runtime: &Runtime) -> StorageCounters {
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

    fn since(self, before: StorageCounters) -> StorageCounters {
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

    fn json(self, elapsed: Duration) -> serde_json::Value {
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

// ----- set-up ----------------------------------------------------------------

/// Tanzanian mobile ranges (libphonenumber TZ); every candidate is still checked.
const PREFIXES: [&str; 12] = [
    "25571", "25574", "25575", "25576", "25578", "25579", "25565", "25567", "25568", "25569",
    "25562", "25573",
];

/// `n` valid, distinct phones in canonical form, and the average parse time.
fn phones(n: usize) -> Result<(Vec<String>, Duration), String> {
    let mut out = Vec::with_capacity(n);
    let started = Instant::now();
    let mut parsed = 0u32;
    'outer: for prefix in PREFIXES {
        for k in 0..10_000_000u32 {
            if out.len() == n {
                break 'outer;
            }
            let candidate = format!("{prefix}{k:07}");
            parsed += 1;
            if let Ok(p) = Phone::parse(&candidate) {
                out.push(p.as_str().to_string());
            }
        }
    }
    if out.len() < n {
        return Err(format!(
            "only {} valid phones could be generated",
            out.len()
        ));
    }
    Ok((out, started.elapsed() / parsed.max(1)))
}

fn settings() -> AppSettings {
    AppSettings {
        resend_cooldown_secs: 0,
        max_sends_per_hour: 1_000,
        max_sends_per_minute: 1_000_000,
        message_template: "{code}".into(),
        ..AppSettings::default()
    }
}

/// The database location and whether to delete it afterwards.
fn database(args: &Args) -> (PathBuf, Option<PathBuf>) {
    match &args.db {
        Some(p) => (p.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "otpd-loadtest-{}-{}",
                std::process::id(),
                Uuid::new_v4().simple()
            ));
            (dir.join("otpd.sqlite3"), Some(dir))
        }
    }
}

fn runtime_config(args: &Args, db: PathBuf) -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config.storage.path = db;
    config.storage.durability = match args.durability {
        DurabilityArg::Commit => Durability::Commit,
        DurabilityArg::Async => Durability::Async,
    };
    config.storage.synchronous = match args.synchronous {
        SynchronousArg::Normal => Synchronous::Normal,
        SynchronousArg::Full => Synchronous::Full,
    };
    config.security.code_pepper = Some("otpd-loadtest-pepper-0123456789".into());
    config.runtime.arbiters = args.arbiters;
    if args.deliveries.is_some() {
        // Only the in-process receiver on loopback is ever a destination.
        config.callbacks.allow_http = true;
        config.callbacks.allowed_cidrs = vec!["127.0.0.0/8".parse().expect("valid CIDR")];
    }
    if let Some(n) = args.max_in_flight {
        config.delivery.max_in_flight = n.max(1);
    }
    // Long enough that no actor is reaped during a run (hold mode counts them).
    config.runtime.idle_actor_secs = 86_400;
    config
}

// ----- driving -----------------------------------------------------------------

/// Shared by every driver task.
struct Plan {
    runtime: Runtime,
    provider: Arc<HandoffProvider>,
    apps: Vec<Arc<App>>,
    phones: Arc<Vec<String>>,
    deadline: Instant,
    /// Cycles not yet claimed (`u64::MAX` = unlimited).
    budget: AtomicU64,
    /// Hold mode: request only, each phone once.
    hold: bool,
    /// Delivery mode with the callbacks driver: where verifies send their callback.
    callbacks: Option<Arc<Callbacks>>,
}

/// The callback side of delivery mode: endpoint URLs, and when each verify returned.
struct Callbacks {
    urls: Vec<String>,
    /// Correlation key (flake id or delivery id) → when the driver's call returned.
    returned: Mutex<HashMap<String, Instant>>,
}

impl Plan {
    fn claim(&self) -> bool {
        if !self.hold && Instant::now() >= self.deadline {
            return false;
        }
        self.budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1))
            .is_ok()
    }
}

/// One driver task: phones `task, task + C, task + 2C, …`, in a loop.
/// Records into its thread's `tally` (never borrowed across an await).
async fn drive(plan: Arc<Plan>, task: usize, tasks: usize, tally: Rc<RefCell<Tally>>) {
    let mine: Vec<usize> = (task..plan.phones.len()).step_by(tasks).collect();
    if mine.is_empty() {
        return;
    }
    let mut next = 0usize;
    loop {
        if plan.hold && next == mine.len() {
            break;
        }
        if !plan.claim() {
            break;
        }
        let i = mine[next % mine.len()];
        next += 1;
        let app = &plan.apps[i % plan.apps.len()];
        let phone = &plan.phones[i];
        let started = Instant::now();
        let send = SendOtp {
            phone_number: phone.clone(),
            ..SendOtp::default()
        };
        let issued = match tokio::time::timeout(CALL_TIMEOUT, plan.runtime.request(app, send)).await
        {
            Ok(Ok(issued)) => issued,
            Ok(Err(e)) => {
                tally.borrow_mut().error(format!("request_{}", e.code()));
                continue;
            }
            Err(_) => {
                tally.borrow_mut().error("request_timeout");
                continue;
            }
        };
        let requested = Instant::now();
        let _ = tally
            .borrow_mut()
            .request
            .record(micros(requested - started));
        if plan.hold {
            tally.borrow_mut().cycles += 1;
            continue;
        }
        let Some(message_id) = issued.message_id else {
            tally.borrow_mut().error("request_without_message");
            continue;
        };
        let Some(code) = plan.provider.code_for(message_id, CALL_TIMEOUT).await else {
            tally.borrow_mut().error("code_timeout");
            continue;
        };
        let coded = Instant::now();
        let _ = tally
            .borrow_mut()
            .code_wait
            .record(micros(coded - requested));
        let (callback_url, callback_secret) = match &plan.callbacks {
            Some(cb) => (
                Some(cb.urls[i % cb.urls.len()].clone()),
                Some("otpd-loadtest-callback-secret".to_string()),
            ),
            None => (None, None),
        };
        let verify = VerifyOtp {
            phone_number: phone.clone(),
            code,
            callback_url,
            callback_secret,
        };
        match tokio::time::timeout(CALL_TIMEOUT, plan.runtime.verify(app, verify)).await {
            Ok(Ok(result)) => match result.outcome {
                VerifyOutcome::Verified { flake_id, .. } => {
                    if let Some(cb) = &plan.callbacks {
                        cb.returned
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(flake_id.to_string(), Instant::now());
                    }
                }
                VerifyOutcome::InvalidCode { .. } => {
                    tally.borrow_mut().error("verify_invalid_code");
                    continue;
                }
                VerifyOutcome::MaxAttempts { .. } => {
                    tally.borrow_mut().error("verify_max_attempts");
                    continue;
                }
                VerifyOutcome::Expired { .. } => {
                    tally.borrow_mut().error("verify_expired");
                    continue;
                }
                VerifyOutcome::AlreadyVerified { .. } => {
                    tally.borrow_mut().error("verify_already_verified");
                    continue;
                }
            },
            Ok(Err(e)) => {
                tally.borrow_mut().error(format!("verify_{}", e.code()));
                continue;
            }
            Err(_) => {
                tally.borrow_mut().error("verify_timeout");
                continue;
            }
        }
        let done = Instant::now();
        let mut t = tally.borrow_mut();
        let _ = t.verify.record(micros(done - coded));
        let _ = t.cycle.record(micros(done - started));
        t.cycles += 1;
    }
}

/// Runs `tasks` driver tasks spread over `threads` new arbiters; merges the
/// per-thread tallies.
async fn run_drivers(plan: Arc<Plan>, tasks: usize, threads: usize) -> Tally {
    let threads = threads.clamp(1, tasks);
    let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
    let mut results = Vec::with_capacity(threads);
    for (t, arbiter) in arbiters.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        results.push(rx);
        let plan = plan.clone();
        // spawn_fn runs the closure on the arbiter's thread; the driver futures
        // never cross threads, so they need not be Send.
        arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let tally = Rc::new(RefCell::new(Tally::new()));
                let handles: Vec<_> = (t..tasks)
                    .step_by(threads)
                    .map(|task| actix_rt::spawn(drive(plan.clone(), task, tasks, tally.clone())))
                    .collect();
                for h in handles {
                    if h.await.is_err() {
                        tally.borrow_mut().error("driver_task_panicked");
                    }
                }
                let _ = tx.send(tally.replace(Tally::new()));
            });
        });
    }
    let mut total = Tally::new();
    for rx in results {
        match rx.await {
            Ok(t) => total.merge(t),
            Err(_) => total.error("driver_thread_lost"),
        }
    }
    for a in arbiters {
        a.stop();
    }
    total
}

/// Waits until the snapshot writer has committed everything queued so far: a tiny
/// committed write (`storage_writable`) is queued behind the backlog, twice, so the
/// provider's trailing status writes are included. Returns how long that took.
async fn settle_storage(runtime: &Runtime) -> Duration {
    let started = Instant::now();
    for _ in 0..2 {
        let barrier = tokio::time::timeout(Duration::from_secs(120), runtime.storage_writable());
        if !matches!(barrier.await, Ok(true)) {
            tracing::warn!("the storage barrier did not commit; counters may be partial");
        }
    }
    started.elapsed()
}

// ----- main --------------------------------------------------------------------

struct Outcome {
    report: serde_json::Value,
    text: String,
    failures: u64,
}

async fn run(args: Args, db: PathBuf) -> Result<Outcome, String> {
    if args.deliveries.is_some() {
        return run_deliveries(args, db).await;
    }
    let hold = args.hold_flakes;
    let n_phones = hold.unwrap_or(args.phones);
    if n_phones == 0 || args.apps == 0 || args.concurrency == 0 {
        return Err("--phones/--hold-flakes, --apps and --concurrency must be at least 1".into());
    }
    let (phones, parse_avg) = phones(n_phones)?;
    let provider = Arc::new(HandoffProvider::new(hold.is_none()));
    let runtime = Runtime::builder(runtime_config(&args, db))
        .provider(provider.clone())
        .start()
        .await
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let mut apps = Vec::with_capacity(args.apps);
    for i in 0..args.apps {
        // upsert: a kept `--db` from an earlier run already has these apps.
        let app = runtime
            .upsert_app(NewApp {
                name: format!("loadtest {i}"),
                app_key: Some(format!("loadtest-{i}")),
                settings: settings(),
                ..NewApp::default()
            })
            .await
            .map_err(|e| format!("creating app {i}: {e}"))?;
        apps.push(app);
    }
    let tasks = args.concurrency.min(n_phones);
    let plan = Arc::new(Plan {
        runtime: runtime.clone(),
        provider: provider.clone(),
        apps,
        phones: Arc::new(phones),
        deadline: Instant::now() + Duration::from_secs(args.duration_secs),
        budget: AtomicU64::new(match hold {
            Some(n) => n as u64,
            None => args.cycles.unwrap_or(u64::MAX),
        }),
        hold: hold.is_some(),
        callbacks: None,
    });
    let rss_before = proc_status_kib("VmRSS");
    let storage_before = StorageCounters::read(&runtime);
    let load_before = loadavg();
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let tally = run_drivers(plan.clone(), tasks, args.driver_threads).await;
    let elapsed = started.elapsed();
    // Let the writer drain (async durability leaves a backlog; the provider's
    // status writes trail every mode) before reading counters and memory.
    let drain = settle_storage(&runtime).await;
    let storage = StorageCounters::read(&runtime).since(storage_before);
    let cpu_cores = (cpu_secs() - cpu_before) / (elapsed + drain).as_secs_f64();
    let load_after = loadavg();
    let rss_after = proc_status_kib("VmRSS");
    let peak = proc_status_kib("VmHWM");
    let live = runtime.live_actors();
    let registered = runtime.registered_actors();
    let message_actors = runtime.message_actors();
    let provider_sends = provider.sends();
    drop(plan);
    runtime.shutdown().await;

    let config = serde_json::json!({
        "mode": if hold.is_some() { "hold" } else { "cycles" },
        "phones": n_phones,
        "apps": args.apps,
        "concurrency": tasks,
        "duration_secs": args.duration_secs,
        "cycles_limit": args.cycles,
        "durability": format!("{:?}", args.durability).to_lowercase(),
        "synchronous": format!("{:?}", args.synchronous).to_lowercase(),
        "arbiters": args.arbiters,
        "driver_threads": args.driver_threads.max(1),
        "db": args.db.as_ref().map(|p| p.display().to_string()),
    });
    let failures = tally.failures();
    let rate = tally.cycles as f64 / elapsed.as_secs_f64();
    let mut report = serde_json::json!({
        "config": config,
        "completed": tally.cycles,
        "failed": failures,
        "errors": tally.errors,
        "duration_secs": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "per_sec": rate.round(),
        "request": summary(&tally.request),
        "live_actors": live,
        "registered_actors": registered,
        "message_actors": message_actors,
        "provider_sends": provider_sends,
        "peak_rss_mib": mib(peak),
        "rss_before_mib": mib(rss_before),
        "rss_after_mib": mib(rss_after),
        "storage": storage.json(elapsed + drain),
        "storage_drain_ms": drain.as_millis() as u64,
        "per_sec_including_drain": (tally.cycles as f64 / (elapsed + drain).as_secs_f64()).round(),
        "cpu_cores_used": (cpu_cores * 100.0).round() / 100.0,
        "machine_cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": load_after,
        "phone_parse_us": (parse_avg.as_secs_f64() * 1e7).round() / 10.0,
    });
    let s = report["storage"].clone();
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "otpd-loadtest: mode={} phones={} apps={} concurrency={} durability={} synchronous={} arbiters={} driver_threads={} duration_limit={}s cycles_limit={}",
        config["mode"].as_str().unwrap_or(""),
        n_phones,
        args.apps,
        tasks,
        config["durability"].as_str().unwrap_or(""),
        config["synchronous"].as_str().unwrap_or(""),
        if args.arbiters == 0 { "cores".to_string() } else { args.arbiters.to_string() },
        args.driver_threads.max(1),
        args.duration_secs,
        args.cycles.map_or("none".to_string(), |c| c.to_string()),
    );
    if let Some(n) = hold {
        let per_flake = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / n as f64;
        report["rss_per_live_flake_bytes"] = serde_json::json!(per_flake.round());
        let _ = writeln!(
            text,
            "requests issued:  {} of {} in {:.2} s ({:.0}/s), failed {}",
            tally.cycles,
            n,
            elapsed.as_secs_f64(),
            rate,
            failures
        );
        let _ = writeln!(text, "request latency:  {}", summary_line(&tally.request));
        let _ = writeln!(
            text,
            "live actors:      {live} (registered {registered}); message actors {message_actors}"
        );
        let _ = writeln!(
            text,
            "RSS:              before {:.1} MiB, after {:.1} MiB, peak {:.1} MiB",
            mib(rss_before),
            mib(rss_after),
            mib(peak)
        );
        let _ = writeln!(
            text,
            "RSS per live flake: {:.0} bytes ({:.2} KiB)",
            per_flake,
            per_flake / 1024.0
        );
    } else {
        report["request_code_wait"] = summary(&tally.code_wait);
        report["verify"] = summary(&tally.verify);
        report["cycle"] = summary(&tally.cycle);
        let _ = writeln!(
            text,
            "cycles verified:  {} in {:.2} s = {:.0} cycles/s, failed {}",
            tally.cycles,
            elapsed.as_secs_f64(),
            rate,
            failures
        );
        let _ = writeln!(text, "request latency:  {}", summary_line(&tally.request));
        let _ = writeln!(text, "code hand-over:   {}", summary_line(&tally.code_wait));
        let _ = writeln!(text, "verify latency:   {}", summary_line(&tally.verify));
        let _ = writeln!(text, "full cycle:       {}", summary_line(&tally.cycle));
        let _ = writeln!(
            text,
            "live actors:      {live} (registered {registered}); provider sends {provider_sends}"
        );
        let _ = writeln!(text, "peak RSS:         {:.1} MiB", mib(peak));
        let _ = writeln!(
            text,
            "storage drain:    {} ms after the last cycle ({:.0} cycles/s counting it)",
            drain.as_millis(),
            tally.cycles as f64 / (elapsed + drain).as_secs_f64()
        );
    }
    write_errors(&mut text, &tally.errors);
    let _ = writeln!(
        text,
        "group commit:     {} commits ({}/s), {} ops/commit avg, {} µs/commit avg, writer busy {}% (incl. drain), {} failed",
        s["commits"], s["commits_per_sec"], s["ops_per_commit"], s["avg_commit_us"], s["writer_busy_pct"], s["failures"]
    );
    let _ = writeln!(
        text,
        "cpu:              {:.2} cores used by otpd-loadtest of {} (load average {:.2} before, {:.2} after)",
        cpu_cores,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_after
    );
    let _ = write!(
        text,
        "phone parse:      {:.1} µs avg (Phone::parse, measured while generating phones)",
        parse_avg.as_secs_f64() * 1e6
    );
    Ok(Outcome {
        report,
        text,
        failures,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (db, cleanup) = database(&args);
    let json = args.json;
    let result = actix_rt::System::new().block_on(run(args, db));
    if let Some(dir) = cleanup {
        let _ = std::fs::remove_dir_all(dir);
    }
    match result {
        Ok(outcome) => {
            if json {
                println!("{}", outcome.report);
            } else {
                println!("{}", outcome.text);
            }
            if outcome.failures > 0 {
                eprintln!(
                    "otpd-loadtest: {} cycle(s) failed: {}",
                    outcome.failures, outcome.report["errors"]
                );
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("otpd-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

// ----- delivery mode -------------------------------------------------------------

/// What the in-process receiver saw.
#[derive(Default)]
struct Arrivals {
    /// Correlation key (flake id from the body, else the delivery id header) → arrival.
    arrived: HashMap<String, Instant>,
    requests: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// The loopback receiver: the shared test receiver (a real HTTP/1.1 server,
/// keep-alive on, nothing recorded) answering `200` with an empty body, and an
/// observer noting each request's arrival.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Arrivals>>,
    server: otpd_test_support::Receiver,
}

impl Receiver {
    fn start() -> Result<Receiver, String> {
        let seen = Arc::new(Mutex::new(Arrivals::default()));
        let state = seen.clone();
        let server = otpd_test_support::Receiver::builder(vec![Reply::Status(200, "")])
            .keep_alive(true)
            .record(false)
            .observe(move |r: &Received| {
                let now = Instant::now();
                let key = correlation_key(r);
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                s.requests += 1;
                s.first.get_or_insert(now);
                s.last = Some(now);
                if let Some(k) = key {
                    s.arrived.insert(k, now);
                }
            })
            .start()
            .map_err(|e| format!("starting the receiver: {e}"))?;
        Ok(Receiver {
            port: server.addr.port(),
            seen,
            server,
        })
    }

    fn requests(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).requests
    }

    fn stop(self) -> Arrivals {
        self.server.stop();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The correlation key: the `flake_id` in a callback body, else the delivery id.
fn correlation_key(r: &Received) -> Option<String> {
    const FIELD: &str = "\"flake_id\":\"";
    if let Some(at) = r.body.find(FIELD) {
        let rest = &r.body[at + FIELD.len()..];
        let end = rest.find('"')?;
        return Some(rest[..end].to_string());
    }
    r.headers.get("x-otpd-delivery-id").cloned()
}

/// One webhook-driver task: `test_webhook` on endpoint `task % E`, in a loop.
async fn drive_webhooks(
    plan: Arc<Plan>,
    hooks: Arc<Vec<(Arc<App>, String)>>,
    task: usize,
    tally: Rc<RefCell<Tally>>,
) {
    let cb = plan.callbacks.clone().expect("delivery mode");
    let mut n = task;
    while plan.claim() {
        let (app, id) = &hooks[n % hooks.len()];
        n += 1;
        let started = Instant::now();
        match tokio::time::timeout(CALL_TIMEOUT, plan.runtime.test_webhook(app, id)).await {
            Ok(Ok(delivery_id)) => {
                let done = Instant::now();
                cb.returned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(delivery_id, done);
                let mut t = tally.borrow_mut();
                let _ = t.request.record(micros(done - started));
                t.cycles += 1;
            }
            Ok(Err(e)) => tally
                .borrow_mut()
                .error(format!("test_webhook_{}", e.code())),
            Err(_) => tally.borrow_mut().error("test_webhook_timeout"),
        }
    }
}

/// Runs `tasks` webhook-driver tasks on one new arbiter.
async fn run_webhook_drivers(
    plan: Arc<Plan>,
    hooks: Arc<Vec<(Arc<App>, String)>>,
    tasks: usize,
) -> Tally {
    let arbiter = Arbiter::new();
    let (tx, rx) = oneshot::channel();
    arbiter.spawn_fn(move || {
        actix_rt::spawn(async move {
            let tally = Rc::new(RefCell::new(Tally::new()));
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    actix_rt::spawn(drive_webhooks(
                        plan.clone(),
                        hooks.clone(),
                        t,
                        tally.clone(),
                    ))
                })
                .collect();
            for h in handles {
                if h.await.is_err() {
                    tally.borrow_mut().error("driver_task_panicked");
                }
            }
            let _ = tx.send(tally.replace(Tally::new()));
        });
    });
    let total = rx.await.unwrap_or_else(|_| {
        let mut t = Tally::new();
        t.error("driver_thread_lost");
        t
    });
    arbiter.stop();
    total
}

/// Delivery mode (see the module docs).
async fn run_deliveries(args: Args, db: PathBuf) -> Result<Outcome, String> {
    let n = args.deliveries.unwrap_or(0);
    let endpoints = args.endpoints;
    if n == 0 || endpoints == 0 || args.concurrency == 0 {
        return Err("--deliveries, --endpoints and --concurrency must be at least 1".into());
    }
    let receiver = Receiver::start()?;
    let urls: Vec<String> = (0..endpoints)
        .map(|e| format!("http://127.0.0.1:{}/cb/{e}", receiver.port))
        .collect();
    let driver = args.delivery_driver;
    let capture = driver == DeliveryDriver::Callbacks;
    let provider = Arc::new(HandoffProvider::new(capture));
    let runtime = Runtime::builder(runtime_config(&args, db))
        .provider(provider.clone())
        .start()
        .await
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let n_apps = match driver {
        DeliveryDriver::Callbacks => args.apps,
        DeliveryDriver::Webhooks => endpoints,
    };
    let mut apps = Vec::with_capacity(n_apps);
    for i in 0..n_apps {
        let app = runtime
            .upsert_app(NewApp {
                name: format!("loadtest {i}"),
                app_key: Some(format!("loadtest-{i}")),
                settings: settings(),
                ..NewApp::default()
            })
            .await
            .map_err(|e| format!("creating app {i}: {e}"))?;
        apps.push(app);
    }
    let mut hooks = Vec::new();
    if driver == DeliveryDriver::Webhooks {
        for (app, url) in apps.iter().zip(&urls) {
            let w = runtime
                .create_webhook(
                    app,
                    NewWebhook {
                        url: url.clone(),
                        service_type: "otp".into(),
                        events: None,
                        description: Some("otpd-loadtest receiver".into()),
                    },
                )
                .await
                .map_err(|e| format!("creating a webhook: {e}"))?;
            hooks.push((app.clone(), w.id.clone()));
        }
    }
    let phones = match driver {
        DeliveryDriver::Callbacks => phones(args.phones)?.0,
        DeliveryDriver::Webhooks => Vec::new(),
    };
    let callbacks = Arc::new(Callbacks {
        urls: urls.clone(),
        returned: Mutex::new(HashMap::new()),
    });
    let plan = Arc::new(Plan {
        runtime: runtime.clone(),
        provider: provider.clone(),
        apps,
        phones: Arc::new(phones),
        deadline: Instant::now() + Duration::from_secs(args.duration_secs),
        budget: AtomicU64::new(n),
        hold: false,
        callbacks: Some(callbacks.clone()),
    });
    let storage_before = StorageCounters::read(&runtime);
    let (ok_before, failed_before) = runtime.deliveries_finished();
    let load_before = loadavg();
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let tally = match driver {
        DeliveryDriver::Callbacks => {
            let tasks = args.concurrency.min(plan.phones.len());
            run_drivers(plan.clone(), tasks, args.driver_threads).await
        }
        DeliveryDriver::Webhooks => {
            run_webhook_drivers(plan.clone(), Arc::new(hooks), args.concurrency).await
        }
    };
    let driven = started.elapsed();
    // Every successful call produced one delivery: wait (bounded) until all arrived.
    let expected = tally.cycles;
    let wait_until = Instant::now() + DELIVERY_WAIT;
    while receiver.requests() < expected && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = started.elapsed();
    let drain = settle_storage(&runtime).await;
    let storage = StorageCounters::read(&runtime).since(storage_before);
    let (ok_after, failed_after) = runtime.deliveries_finished();
    let cpu_cores = (cpu_secs() - cpu_before) / (waited + drain).as_secs_f64();
    let load_after = loadavg();
    let peak = proc_status_kib("VmHWM");
    drop(plan);
    runtime.shutdown().await;
    let seen = receiver.stop();

    let returned =
        std::mem::take(&mut *callbacks.returned.lock().unwrap_or_else(|e| e.into_inner()));
    let mut delay = histogram();
    let mut early = 0u64;
    let mut unmatched = 0u64;
    for (key, at) in &returned {
        match seen.arrived.get(key) {
            Some(arrived) if arrived >= at => {
                let _ = delay.record(micros(*arrived - *at));
            }
            Some(_) => {
                early += 1;
                let _ = delay.record(1);
            }
            None => unmatched += 1,
        }
    }
    let span = seen.last.map_or(waited, |last| last - started);
    let rate = seen.requests as f64 / span.as_secs_f64().max(1e-9);
    let failures = tally.failures() + unmatched;
    let driver_name = format!("{driver:?}").to_lowercase();
    let report = serde_json::json!({
        "config": {
            "mode": "deliveries",
            "driver": driver_name,
            "deliveries_limit": n,
            "endpoints": endpoints,
            "apps": n_apps,
            "concurrency": args.concurrency,
            "duration_secs": args.duration_secs,
            "durability": format!("{:?}", args.durability).to_lowercase(),
            "max_in_flight": runtime.config().delivery.max_in_flight,
            "arbiters": args.arbiters,
        },
        "produced": tally.cycles,
        "failed": tally.failures(),
        "errors": tally.errors,
        "received": seen.requests,
        "unmatched": unmatched,
        "arrived_before_return": early,
        "runtime_succeeded": ok_after - ok_before,
        "runtime_failed": failed_after - failed_before,
        "drive_secs": (driven.as_secs_f64() * 1000.0).round() / 1000.0,
        "span_secs": (span.as_secs_f64() * 1000.0).round() / 1000.0,
        "produced_per_sec": (tally.cycles as f64 / driven.as_secs_f64()).round(),
        "deliveries_per_sec": rate.round(),
        "call": summary(&tally.request),
        "delay": summary(&delay),
        "peak_rss_mib": mib(peak),
        "storage": storage.json(waited + drain),
        "cpu_cores_used": (cpu_cores * 100.0).round() / 100.0,
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": load_after,
    });
    let mut text = String::new();
    use std::fmt::Write as _;
    let s = &report["storage"];
    let _ = writeln!(
        text,
        "otpd-loadtest: mode=deliveries driver={driver_name} endpoints={endpoints} limit={n} concurrency={} durability={} max_in_flight={}",
        args.concurrency,
        report["config"]["durability"].as_str().unwrap_or(""),
        report["config"]["max_in_flight"],
    );
    let _ = writeln!(
        text,
        "produced:         {} in {:.2} s ({:.0}/s), failed {}; call {}",
        tally.cycles,
        driven.as_secs_f64(),
        tally.cycles as f64 / driven.as_secs_f64(),
        tally.failures(),
        summary_line(&tally.request)
    );
    let _ = writeln!(
        text,
        "received:         {} in {:.2} s = {:.0} deliveries/s (runtime: {} succeeded, {} failed); unmatched {unmatched}",
        seen.requests,
        span.as_secs_f64(),
        rate,
        ok_after - ok_before,
        failed_after - failed_before
    );
    let _ = writeln!(
        text,
        "return→arrival:   {} ({early} arrived before the call returned, counted as 0)",
        summary_line(&delay)
    );
    write_errors(&mut text, &tally.errors);
    let _ = writeln!(
        text,
        "group commit:     {} commits, {} ops/commit avg, {} µs/commit avg, writer busy {}%",
        s["commits"], s["ops_per_commit"], s["avg_commit_us"], s["writer_busy_pct"]
    );
    let _ = write!(
        text,
        "cpu:              {:.2} cores used (load average {:.2} before, {:.2} after); peak RSS {:.1} MiB",
        cpu_cores,
        load_before,
        load_after,
        mib(peak)
    );
    Ok(Outcome {
        report,
        text,
        failures,
    })
}
