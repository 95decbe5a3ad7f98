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
//! snapshot writer (commits, operations per commit, average commit time), and per
//! cycle: **CPU µs per cycle** (the process's user + system time over the run ÷
//! cycles), **writer µs per op** (time inside commits ÷ writer operations) and
//! **writer ops per cycle**. The **completion timeline** (completions per 10 ms)
//! gives completions per whole second (min / median / max) and the longest gap with
//! none, so a periodic stall (checkpoint, WAL restart, reaping) shows. Writer ops
//! are writes only: reads (actor loads) run on the storage's read connections and
//! are counted apart (`storage.reads`). `storage.wal_frame_writes_gathered` and
//! `storage.wal_writes` are the WAL shim's (`otpd-walvfs`): SQLite's frame writes
//! and the writes that carried them to the file; `storage.wal_late_writes` counts
//! its last guard and is 0; `storage.checkpoint_syncs` counts the checkpointer's
//! passes that synced the database file (the shim's checkpointer VFS).
//!
//! **A console alongside** (`--stats-readers N`, cycle mode). N tasks read the OTP
//! overview (`Runtime::otp_stats`, window `day`, as the console's OTP page does)
//! back to back for the whole run; their reads per second and latency are printed,
//! and the cycle figures show what such reads cost the service.
//!
//! **Actor placement** (`--actors local|pool`). By default each driver thread hosts
//! the OTP actors it first calls (`otpd_actors::host_actors_here`), as the daemon's
//! HTTP workers host those of their requests: a cycle then crosses threads only to
//! the writer and back. `pool` puts them on the runtime's arbiters instead, where
//! every call is handed from the driver's thread to the actor's and back.
//!
//! **Open loop** (`--rate N`, any mode). Cycles (or webhook calls) start on a fixed
//! schedule, slot k at start + k/N, whether or not earlier ones finished: whichever
//! driver task is free takes the next slot, so `--concurrency` is the cap on cycles
//! in flight. Latency counts from the slot, not from when a task got to it, so a
//! slow server cannot slow the client down and hide its own latency (no coordinated
//! omission). Starts more than 2 ms behind their slot (tokio timers have 1 ms
//! granularity) are counted as `late_starts`; the achieved rate is reported. With
//! `--deliveries N` (callbacks driver) this measures verify-return → callback-arrival
//! at a fixed rate.
//!
//! **Hold mode** (`--hold-flakes N`). Issues N requests (no verify) for N distinct
//! phones with actors kept alive (`runtime.idle_actor_secs` set very large), then
//! reports the live actor count and the resident memory each live flake costs:
//! (RSS after − RSS before issuing) / N, which includes the fixed costs that fill
//! during the run (SQLite page caches, allocator arenas), and the **slope** over the
//! second half, sampled every 5 ms: (RSS at N − RSS when N/2 were live) / (N − N/2),
//! what one more live flake costs.
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
//! target/release/otpd-loadtest --deliveries 2000 --rate 200 --phones 5000 --concurrency 64 --duration-secs 10
//! target/release/otpd-loadtest --deliveries 20000 --rate 2000 --phones 20000 --concurrency 256 --duration-secs 10
//! target/release/otpd-loadtest --rate 30000 --phones 20000 --concurrency 1024 --duration-secs 10
//! ```
//!
//! The database is a fresh file in the system temp directory, deleted afterwards,
//! unless `--db PATH` is given (then it is kept). The exit status is non-zero when
//! any cycle failed; the error counts are printed. `RUST_LOG` sets the log filter
//! (default `warn`, to stderr).

#![forbid(unsafe_code)]
// A load-test harness measures real time (latencies, run deadlines) by design.
#![allow(clippy::disallowed_methods)]

/// mimalloc, chosen over glibc malloc for the hot path (see `BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Where the OTP actors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ActorsArg {
    /// On the driver thread that first calls them, as the daemon's HTTP workers
    /// host theirs (`otpd_actors::host_actors_here`).
    Local,
    /// On the runtime's own arbiter pool (what a caller from an unmarked thread gets).
    Pool,
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
    /// Open loop: start cycles (or webhook calls) at this fixed rate per second,
    /// whether or not earlier ones finished; `--concurrency` caps those in flight
    /// and starts that fall behind are counted. Default: closed loop (each driver
    /// task starts its next cycle when its last one is done).
    #[arg(long)]
    rate: Option<f64>,
    /// Cycles mode: this many tasks that read the OTP overview
    /// (`Runtime::otp_stats`, window `day`: the console's OTP page) back to back
    /// for the whole run, as a busy operator console or a dashboard would; their
    /// reads per second and latency are printed.
    #[arg(long, default_value_t = 0)]
    stats_readers: usize,
    /// Where the OTP actors live: `local` (each driver thread hosts those it first
    /// calls, as the daemon's HTTP workers do; they stop with the run) or `pool`
    /// (the runtime's arbiters). Hold mode, which counts actors after the drivers
    /// stop, always uses `pool`.
    #[arg(long, value_enum, default_value_t = ActorsArg::Local)]
    actors: ActorsArg,
    /// Print one JSON object instead of the human-readable block.
    #[arg(long)]
    json: bool,
}

mod deliveries;
mod drive;
mod measure;

use deliveries::*;
use drive::*;
use measure::*;

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
                out.push(p.to_string());
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

/// Apps `loadtest-0` .. `loadtest-{n-1}`, upserted: a kept `--db` from an earlier run
/// already has them.
async fn upsert_apps(runtime: &Runtime, n: usize) -> Result<Vec<Arc<App>>, String> {
    let mut apps = Vec::with_capacity(n);
    for i in 0..n {
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
    Ok(apps)
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
    let apps = upsert_apps(&runtime, args.apps).await?;
    let tasks = args.concurrency.min(n_phones);
    // Hold mode counts the actors after the drivers (and their threads) stop.
    let local_actors = args.actors == ActorsArg::Local && hold.is_none();
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
        started: Instant::now(),
        pace: args.rate.map(|r| Pace::new(r, Instant::now())),
        local_actors,
    });
    let rss_before = proc_status_kib("VmRSS");
    let storage_before = StorageCounters::read(&runtime);
    let load_before = loadavg();
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let readers = StatsReaders::start(&runtime, &plan.apps[0], args.stats_readers);
    let rss_sampler = hold.map(|_| RssSampler::start(runtime.clone()));
    let tally = run_drivers(plan.clone(), tasks, args.driver_threads).await;
    let elapsed = started.elapsed();
    let stats_reads = readers.stop().await;
    let rss_samples = rss_sampler.map(RssSampler::stop).unwrap_or_default();
    // Let the writer drain (async durability leaves a backlog; the provider's
    // status writes trail every mode) before reading counters and memory.
    let drain = settle_storage(&runtime).await;
    let storage = StorageCounters::read(&runtime).since(storage_before);
    let cpu_used = cpu_secs() - cpu_before;
    let cpu_cores = cpu_used / (elapsed + drain).as_secs_f64();
    let load_after = loadavg();
    let rss_after = proc_status_kib("VmRSS");
    let peak = proc_status_kib("VmHWM");
    let live = runtime.live_actors();
    let registered = runtime.registered_actors();
    let message_actors = runtime.message_actors();
    let provider_sends = provider.sends();
    let pace = plan
        .pace
        .as_ref()
        .map(|p| pace_json(p, tally.cycles, elapsed));
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
        "actors": if local_actors { "local" } else { "pool" },
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
    let (us_per_op, ops_per_cycle) = storage.per_unit(tally.cycles);
    let cpu_us_per_cycle = per_unit_us(cpu_used, tally.cycles);
    report["cpu_us_per_cycle"] = serde_json::json!(cpu_us_per_cycle);
    report["writer_us_per_op"] = serde_json::json!(us_per_op);
    report["writer_cpu_us_per_op"] = serde_json::json!(storage.cpu_us_per_op());
    report["writer_ops_per_cycle"] = serde_json::json!(ops_per_cycle);
    report["completions"] = tally.timeline_json(elapsed);
    if args.stats_readers > 0 {
        report["stats_readers"] = serde_json::json!({
            "tasks": args.stats_readers,
            "reads": stats_reads.len(),
            "per_sec": (stats_reads.len() as f64 / elapsed.as_secs_f64()).round(),
            "latency": summary(&stats_reads),
        });
    }
    if let Some(p) = &pace {
        report["rate"] = p.clone();
    }
    let s = report["storage"].clone();
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "otpd-loadtest: mode={} phones={} apps={} concurrency={} durability={} synchronous={} arbiters={} driver_threads={} actors={} duration_limit={}s cycles_limit={}",
        config["mode"].as_str().unwrap_or(""),
        n_phones,
        args.apps,
        tasks,
        config["durability"].as_str().unwrap_or(""),
        config["synchronous"].as_str().unwrap_or(""),
        if args.arbiters == 0 { "cores".to_string() } else { args.arbiters.to_string() },
        args.driver_threads.max(1),
        config["actors"].as_str().unwrap_or(""),
        args.duration_secs,
        args.cycles.map_or("none".to_string(), |c| c.to_string()),
    );
    if let Some(n) = hold {
        let per_flake = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / n as f64;
        report["rss_per_live_flake_bytes"] = serde_json::json!(per_flake.round());
        // The slope over the second half: what one more live flake costs, without
        // the fixed costs (page caches, allocator arenas) that fill during the run.
        let mid = rss_samples.iter().find(|(live, _)| *live >= n / 2).copied();
        let marginal = mid
            .filter(|(live, _)| *live < n)
            .map(|(live, rss)| rss_after.saturating_sub(rss) as f64 * 1024.0 / (n - live) as f64);
        report["rss_per_flake_second_half_bytes"] = serde_json::json!(marginal.map(f64::round));
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
        if let (Some(m), Some((live, rss))) = (marginal, mid) {
            let _ = writeln!(
                text,
                "RSS slope:        {m:.0} bytes per flake from {live} live flakes ({:.1} MiB) to {n} (fixed costs excluded)",
                mib(rss)
            );
        }
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
        "writer:           {us_per_op:.2} µs/op ({:.2} of them on a CPU), {ops_per_cycle:.2} ops per cycle",
        storage.cpu_us_per_op()
    );
    let _ = writeln!(
        text,
        "WAL:              {} checkpoints by the checkpointer ({} of them synced the database); the writer's own: {} attempts, {} restarts, {} ms in all, longest {} ms; {} frame writes in {} writes",
        s["checkpoints"], s["checkpoint_syncs"], s["wal_restart_attempts"], s["wal_restarts"], s["wal_restart_ms"], s["wal_restart_max_ms"],
        s["wal_frame_writes_gathered"], s["wal_writes"]
    );
    let _ = writeln!(
        text,
        "cpu:              {:.2} cores used by otpd-loadtest of {} = {cpu_us_per_cycle:.1} µs per cycle (load average {:.2} before, {:.2} after)",
        cpu_cores,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_after
    );
    let _ = writeln!(
        text,
        "completions:      {}",
        timeline_line(&report["completions"])
    );
    if let Some(p) = &pace {
        let _ = writeln!(text, "rate:             {}", pace_line(p));
    }
    if args.stats_readers > 0 {
        let _ = writeln!(
            text,
            "stats reads:      {} by {} tasks ({:.0}/s), {}",
            stats_reads.len(),
            args.stats_readers,
            stats_reads.len() as f64 / elapsed.as_secs_f64(),
            summary_line(&stats_reads)
        );
    }
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
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        eprintln!("otpd-loadtest: --rate must be a positive number of cycles per second");
        return ExitCode::from(2);
    }
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
