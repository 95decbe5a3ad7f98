//! `otpd-httpbench`: request + verify over HTTP through the real API, against a bare
//! actix-web route answering the same JSON, driven by one client in one process.
//!
//! # What it measures
//!
//! Two servers on `127.0.0.1` ephemeral ports, both actix-web with the HTTP workers
//! `otpd serve` runs by default, one per core (`--server-workers` sets another
//! count for both):
//!
//! - **real**: the otpd API mounted with the same [`otpd::api::configure`] the daemon
//!   uses, its workers prepared as `otpd serve` prepares them
//!   ([`otpd::server::prepare_worker_thread`]: under `SCHED_BATCH` unless
//!   `--server-batch-scheduling false`), on a real [`Runtime`] (a fresh SQLite
//!   file, `durability = "commit"` unless `--durability async`), with the daemon's Prometheus recorder installed (as
//!   `otpd serve` does; `--daemon-log` adds its stderr log, one line per request), with
//!   `otpd_test_support::HandoffProvider` as the provider so the client can read each
//!   code by `message_id`, as `otpd-loadtest` does. One app without rate limits
//!   (`resend_cooldown_secs = 0`, `max_sends_per_minute = 1_000_000`).
//! - **bare**: two routes, `POST /v1/otp/request` and `POST /v1/otp/verify`, that
//!   parse the same request bodies with serde and answer a JSON body of the same
//!   shape and size as otpd's; nothing else (plain actix-web: its workers keep the
//!   default scheduling policy).
//!
//! One cycle is `POST /v1/otp/request` (with `X-API-Key`) → the code from the
//! provider (real only) → `POST /v1/otp/verify`, which must answer `verified` (on
//! bare, with a fixed code). The client is reqwest on its own thread (a
//! current-thread tokio runtime) with `--connections` tasks, each with its own slice
//! of `--phones` numbers (no two cycles on one phone at once). The tasks share one
//! pool of keep-alive connections, as an application's HTTP client does: a call
//! takes an idle connection (most often the one its task just gave back, but not
//! always), so now and then a phone's call reaches another server worker than the
//! one holding its OTP actor (which lives on the worker that first called it), and
//! the actor is called across threads. `--client per-task` gives each task a
//! connection of its own instead, so every call of a phone lands on the worker that
//! holds its actor; `--client split` gives each task two, the request on one and
//! the verify on the other, so a task's verifies reach another worker than its
//! requests whenever its two connections landed on different workers (actix hands
//! connections to its workers in turn), as in production, where a phone's request
//! and verify come minutes apart through whatever connection the application's
//! pool hands out. Rounds alternate real, bare, real, bare … (`--rounds` of each,
//! `--round-secs` long), so both see the same machine; the client's own cost is in
//! both. Printed per round: cycles/s, CPU µs per cycle (the whole process's user +
//! system time over the round) and cycle latency p50/p99; then the snapshot
//! writer's commits, ops per commit and µs per op over the run (only the real side
//! writes; warm-up included), the medians and the **ratio real / bare** of cycles/s.
//!
//! # How to run
//!
//! ```text
//! cargo build --release --bin otpd-httpbench
//! target/release/otpd-httpbench
//! target/release/otpd-httpbench --connections 64 --rounds 3 --round-secs 5 --json
//! # logging as the daemon does, its stderr read through a pipe as journald would
//! target/release/otpd-httpbench --daemon-log 2>&1 >result.txt | cat >/dev/null
//! ```
//!
//! Exit status 0 when every cycle succeeded, 1 when any failed (the errors are
//! printed), 2 for bad arguments or a set-up failure.

#![forbid(unsafe_code)]
// A benchmark measures real time (round deadlines, latencies) by design.
#![allow(clippy::disallowed_methods)]

/// mimalloc, as in the `otpd` binary (see `BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use otpd::api::{self, ApiOptions};
use otpd_actors::config::Durability;
use otpd_actors::phone::Phone;
use otpd_actors::{AppSettings, NewApp, Runtime, RuntimeConfig};
use otpd_test_support::HandoffProvider;
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest a single HTTP call or code hand-over may take before the cycle fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Measures request + verify over HTTP: the real API against a bare route.
#[derive(Debug, Clone, Parser)]
#[command(name = "otpd-httpbench", version, about, long_about = None)]
struct Args {
    /// Client connections (one task each, cycles in flight).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Rounds of each side (real, bare, real, bare …).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per round.
    #[arg(long, default_value_t = 5)]
    round_secs: u64,
    /// Distinct phone numbers, split between the connections.
    #[arg(long, default_value_t = 20_000)]
    phones: usize,
    /// When the real side's changes are acknowledged: after their commit (the
    /// default, as `otpd serve`), or before it (`async`). In `async` the calls
    /// answer before their commit, but a code is still sent only after it (outbox
    /// before network), and the writer gathers for up to `flush_interval_ms`
    /// (10 ms) first: each cycle waits that long for its code, so this shows
    /// `async`'s latency, not the commit wait's CPU cost.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Commit)]
    durability: DurabilityArg,
    /// Log as `otpd serve` does: the stderr log at `info` (or `RUST_LOG`), one line
    /// per API request, through the daemon's own log writer. Redirect stderr.
    #[arg(long)]
    daemon_log: bool,
    /// HTTP workers of each server; 0 is what `otpd serve` runs with
    /// `server.workers = 0` (its default): one per core.
    #[arg(long, default_value_t = 0)]
    server_workers: usize,
    /// The real server's HTTP workers under `SCHED_BATCH`, as `otpd serve` runs them
    /// with `server.batch_scheduling = true` (its default); `false` leaves them
    /// under the default policy.
    #[arg(long, default_value_t = otpd::config::ServerConfig::default().batch_scheduling, action = clap::ArgAction::Set)]
    server_batch_scheduling: bool,
    /// How the client tasks hold their connections (see the module's doc comment):
    /// one shared pool, one connection per task, or two per task (request on one,
    /// verify on the other).
    #[arg(long, value_enum, default_value_t = ClientArg::Pool)]
    client: ClientArg,
    /// Print one JSON object instead of the human-readable block.
    #[arg(long)]
    json: bool,
}

/// `--client`: how the client tasks hold their connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientArg {
    /// One pool shared by every task.
    Pool,
    /// One connection per task.
    PerTask,
    /// Two connections per task: the request on the first, the verify on the second.
    Split,
}

/// `--durability`: `storage.durability` of the real side's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    Commit,
    Async,
}

/// An option's value as it is spelled on the command line (clap's own name for it).
fn arg_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Real,
    Bare,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Real => "real",
            Side::Bare => "bare",
        }
    }
}

/// The snapshot writer's counters (only the real side writes), warm-up included.
#[derive(Clone, Copy)]
struct WriterCounters {
    commits: u64,
    ops: u64,
    micros: u64,
    cpu_micros: u64,
    /// The WAL shim's writes: SQLite's frame writes it gathered, and the writes
    /// it made of them (`otpd-walvfs`, process-wide).
    wal: otpd_walvfs::Counters,
}

impl WriterCounters {
    fn read(runtime: &Runtime) -> WriterCounters {
        use std::sync::atomic::Ordering::Relaxed;
        let s = runtime.storage_stats();
        WriterCounters {
            commits: s.commits.load(Relaxed),
            ops: s.ops.load(Relaxed),
            micros: s.commit_micros.load(Relaxed),
            cpu_micros: s.commit_cpu_micros.load(Relaxed),
            wal: otpd_walvfs::counters(),
        }
    }

    fn since(self, before: WriterCounters) -> WriterCounters {
        WriterCounters {
            commits: self.commits - before.commits,
            ops: self.ops - before.ops,
            micros: self.micros - before.micros,
            cpu_micros: self.cpu_micros - before.cpu_micros,
            wal: self.wal.since(before.wal),
        }
    }

    fn ops_per_commit(self) -> f64 {
        self.ops as f64 / self.commits.max(1) as f64
    }

    fn us_per_op(self) -> f64 {
        self.micros as f64 / self.ops.max(1) as f64
    }

    /// The writer thread's CPU time per op (the rest of [`Self::us_per_op`] it
    /// waited for a core).
    fn cpu_us_per_op(self) -> f64 {
        self.cpu_micros as f64 / self.ops.max(1) as f64
    }

    fn json(self) -> Value {
        json!({
            "commits": self.commits,
            "ops": self.ops,
            "ops_per_commit": (self.ops_per_commit() * 10.0).round() / 10.0,
            "us_per_op": (self.us_per_op() * 100.0).round() / 100.0,
            "cpu_us_per_op": (self.cpu_us_per_op() * 100.0).round() / 100.0,
            "wal_frame_writes_gathered": self.wal.gathered,
            "wal_writes": self.wal.flushes,
            "wal_late_writes": self.wal.late_flushes,
        })
    }

    fn line(self) -> String {
        format!(
            "writer (real side, warm-up included): {} commits, {:.1} ops per commit, {:.2} µs per op ({:.2} on a CPU); WAL: {} frame writes in {} writes",
            self.commits,
            self.ops_per_commit(),
            self.us_per_op(),
            self.cpu_us_per_op(),
            self.wal.gathered,
            self.wal.flushes
        )
    }
}

/// What one round saw.
struct Round {
    side: Side,
    cycles: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    cpu_secs: f64,
    /// CPU time of each group of threads over the round.
    threads: ThreadCpu,
    latency: Histogram<u64>,
}

impl Round {
    fn per_sec(&self) -> f64 {
        self.cycles as f64 / self.secs.max(1e-9)
    }

    fn cpu_us_per_cycle(&self) -> f64 {
        if self.cycles == 0 {
            return 0.0;
        }
        self.cpu_secs * 1e6 / self.cycles as f64
    }

    /// CPU µs per cycle of each thread group, in [`THREAD_GROUPS`] order.
    fn thread_us_per_cycle(&self) -> Vec<(&'static str, f64)> {
        let cycles = self.cycles.max(1) as f64;
        THREAD_GROUPS
            .iter()
            .zip(self.threads.nanos)
            .map(|(group, ns)| (group.name, ns as f64 / 1e3 / cycles))
            .collect()
    }

    fn json(&self) -> Value {
        let ms = |q: f64| (self.latency.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
        let threads: serde_json::Map<String, Value> = self
            .thread_us_per_cycle()
            .into_iter()
            .map(|(name, us)| (name.to_string(), json!((us * 10.0).round() / 10.0)))
            .collect();
        json!({
            "side": self.side.name(),
            "cycles": self.cycles,
            "errors": self.errors,
            "per_sec": self.per_sec().round(),
            "cpu_us_per_cycle": (self.cpu_us_per_cycle() * 10.0).round() / 10.0,
            "cpu_us_per_cycle_by_thread": threads,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
        })
    }

    /// `workers 61.2  client 50.3  writer 36.9 …`: the non-zero groups.
    fn threads_line(&self) -> String {
        self.thread_us_per_cycle()
            .into_iter()
            .filter(|(_, us)| *us >= 0.05)
            .map(|(name, us)| format!("{name} {us:.1}"))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

// ----- CPU by thread -----------------------------------------------------------

/// A group of the process's threads, recognised by the start of the thread's name.
struct ThreadGroup {
    name: &'static str,
    prefixes: &'static [&'static str],
}

/// How the process's threads are grouped when the round's CPU is split by thread.
/// The HTTP workers of both servers and the runtime's arbiters are all actix
/// threads; a round drives only one server, so the other side's workers are idle.
const THREAD_GROUPS: [ThreadGroup; 6] = [
    ThreadGroup {
        name: "workers",
        prefixes: &["actix-rt", "actix-server"],
    },
    ThreadGroup {
        name: "client",
        prefixes: &["httpbench-clien"],
    },
    ThreadGroup {
        name: "writer",
        prefixes: &["otpd-snapshot"],
    },
    ThreadGroup {
        name: "checkpointer",
        prefixes: &["otpd-checkpoint"],
    },
    ThreadGroup {
        name: "readers",
        prefixes: &["otpd-read"],
    },
    // The log and metrics threads, the main thread, anything else.
    ThreadGroup {
        name: "other",
        prefixes: &[""],
    },
];

/// CPU time used so far by each [`THREAD_GROUPS`] group, in nanoseconds.
#[derive(Clone, Copy, Default)]
struct ThreadCpu {
    nanos: [u64; THREAD_GROUPS.len()],
}

impl ThreadCpu {
    /// Reads every thread's time on a CPU from `/proc/self/task/*/schedstat`
    /// (nanoseconds; `stat`'s clock ticks are too coarse for a 5-second round).
    /// Threads that end during a round take their time with them, so only threads
    /// that live through the round are counted exactly; here that is all of them.
    fn read() -> ThreadCpu {
        let mut out = ThreadCpu::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return out;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(i) = THREAD_GROUPS
                .iter()
                .position(|g| g.prefixes.iter().any(|p| comm.starts_with(p)))
            {
                out.nanos[i] += ns;
            }
        }
        out
    }

    fn since(self, before: ThreadCpu) -> ThreadCpu {
        let mut out = ThreadCpu::default();
        for (i, n) in out.nanos.iter_mut().enumerate() {
            *n = self.nanos[i].saturating_sub(before.nanos[i]);
        }
        out
    }
}

// ----- the bare side ---------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // parsed like otpd parses it; the values are not needed
struct RequestBody {
    phone_number: String,
    app_key: String,
    delivery_method: Option<String>,
    minutes_to_expire: Option<u32>,
    callback_url: Option<String>,
    callback_secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct VerifyBody {
    phone_number: String,
    app_key: String,
    code: String,
    callback_url: Option<String>,
    callback_secret: Option<String>,
}

async fn bare_request(body: web::Json<RequestBody>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"success": true, "data": {
        "flake_id": "019ea1f4-4200-714d-b898-65543414ff94",
        "phone_number": body.phone_number,
        "delivery_method": "sms",
        "expires_at": "2026-12-02T23:30:00.000Z",
        "message_id": "019ea1f4-4200-714d-b898-65543414ff95",
    }}))
}

async fn bare_verify(body: web::Json<VerifyBody>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"success": true, "data": {
        "flake_id": "019ea1f4-4200-714d-b898-65543414ff94",
        "phone_number": body.phone_number,
        "status": "verified",
        "verified_at": "2026-12-02T23:20:00.000Z",
    }}))
}

// ----- set-up ----------------------------------------------------------------

/// `--server-workers`, with 0 taken as `otpd serve` takes `server.workers = 0`.
fn workers(arg: usize) -> usize {
    otpd::config::ServerConfig {
        workers: arg,
        ..otpd::config::ServerConfig::default()
    }
    .worker_threads()
}

/// Valid Tanzanian mobile numbers (`25571…`), canonical.
fn phones(n: usize) -> Vec<String> {
    (0..10_000_000u32)
        .map(|k| format!("25571{k:07}"))
        .filter(|p| Phone::parse(p).is_ok())
        .take(n)
        .collect()
}

/// CPU time (user + system) this process has used so far, in seconds.
fn cpu_secs() -> f64 {
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

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

// ----- the client --------------------------------------------------------------

/// Everything a client task needs.
struct Target {
    /// The clients: one shared pool (`--client pool`), or single-connection
    /// clients, one per task (`per-task`) or two per task (`split`).
    clients: Vec<reqwest::Client>,
    /// Which of `clients` a task's request and verify use.
    mode: ClientArg,
    /// `request` and `verify` URLs of each side, parsed once (URL parsing is
    /// the client's cost, not the servers').
    real: [reqwest::Url; 2],
    bare: [reqwest::Url; 2],
    api_key: String,
    provider: Arc<HandoffProvider>,
}

/// One cycle on `side` for `phone`; `Err` says what failed.
async fn cycle(t: &Target, side: Side, phone: &str, task: usize) -> Result<(), String> {
    let (request_client, verify_client) = match t.mode {
        ClientArg::Pool => (&t.clients[0], &t.clients[0]),
        ClientArg::PerTask => (&t.clients[task], &t.clients[task]),
        ClientArg::Split => (&t.clients[2 * task], &t.clients[2 * task + 1]),
    };
    let [request_url, verify_url] = match side {
        Side::Real => &t.real,
        Side::Bare => &t.bare,
    };
    let post = |client: &reqwest::Client, url: &reqwest::Url, body: Value| {
        client
            .post(url.clone())
            .header("X-API-Key", &t.api_key)
            .json(&body)
            .timeout(CALL_TIMEOUT)
            .send()
    };
    let issued = post(
        request_client,
        request_url,
        json!({"phone_number": phone, "app_key": "bench"}),
    )
    .await
    .map_err(|e| format!("request: {e}"))?;
    if !issued.status().is_success() {
        return Err(format!("request answered {}", issued.status()));
    }
    let issued: Value = issued
        .json()
        .await
        .map_err(|e| format!("request body: {e}"))?;
    let code = match side {
        Side::Bare => "123456".to_string(),
        Side::Real => {
            let id = issued["data"]["message_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("request answered no message_id")?;
            t.provider
                .code_for(id, CALL_TIMEOUT)
                .await
                .ok_or("no code reached the provider")?
        }
    };
    let verified = post(
        verify_client,
        verify_url,
        json!({"phone_number": phone, "app_key": "bench", "code": code}),
    )
    .await
    .map_err(|e| format!("verify: {e}"))?;
    let status = verified.status();
    let body: Value = verified
        .json()
        .await
        .map_err(|e| format!("verify body: {e}"))?;
    if !status.is_success() || body["data"]["status"] != "verified" {
        return Err(format!("verify answered {status}: {body}"));
    }
    Ok(())
}

/// One round of `side` with `connections` tasks on the client's runtime.
async fn round(t: Arc<Target>, side: Side, phones: Arc<Vec<String>>, args: &Args) -> Round {
    let deadline = Instant::now() + Duration::from_secs(args.round_secs);
    let cpu_before = cpu_secs();
    let threads_before = ThreadCpu::read();
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|task| {
            let t = t.clone();
            let phones = phones.clone();
            let connections = args.connections;
            tokio::spawn(async move {
                let mine: Vec<usize> = (task..phones.len()).step_by(connections).collect();
                let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                    .expect("valid histogram bounds");
                let (mut cycles, mut errors, mut first_error) = (0u64, 0u64, None);
                let mut next = 0usize;
                while !mine.is_empty() && Instant::now() < deadline {
                    let phone = &phones[mine[next % mine.len()]];
                    next += 1;
                    let began = Instant::now();
                    match cycle(&t, side, phone, task).await {
                        Ok(()) => {
                            cycles += 1;
                            let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                            let _ = latency.record(us.max(1));
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (cycles, errors, first_error, latency)
            })
        })
        .collect();
    let mut out = Round {
        side,
        cycles: 0,
        errors: 0,
        first_error: None,
        secs: 0.0,
        cpu_secs: 0.0,
        threads: ThreadCpu::default(),
        latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
    };
    for task in tasks {
        match task.await {
            Ok((cycles, errors, first_error, latency)) => {
                out.cycles += cycles;
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first_error;
                }
                let _ = out.latency.add(&latency);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    out.secs = started.elapsed().as_secs_f64();
    out.cpu_secs = cpu_secs() - cpu_before;
    out.threads = ThreadCpu::read().since(threads_before);
    out
}

/// Runs every round on a thread of its own (the client), alternating the sides.
fn drive(t: Arc<Target>, phones: Vec<String>, args: Args) -> Result<Vec<Round>, String> {
    std::thread::Builder::new()
        .name("httpbench-client".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("client runtime: {e}"))?;
            let phones = Arc::new(phones);
            rt.block_on(async {
                // Warm both sides up (connections, first actor loads) before measuring.
                let warm = Args {
                    round_secs: 1,
                    ..args.clone()
                };
                round(t.clone(), Side::Real, phones.clone(), &warm).await;
                round(t.clone(), Side::Bare, phones.clone(), &warm).await;
                let mut rounds = Vec::new();
                for _ in 0..args.rounds {
                    for side in [Side::Real, Side::Bare] {
                        rounds.push(round(t.clone(), side, phones.clone(), &args).await);
                    }
                }
                Ok(rounds)
            })
        })
        .map_err(|e| format!("client thread: {e}"))?
        .join()
        .map_err(|_| "the client thread panicked".to_string())?
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

async fn run(args: Args, db: std::path::PathBuf) -> Result<(Value, String, u64), String> {
    if args.connections == 0 || args.rounds == 0 || args.round_secs == 0 || args.phones == 0 {
        return Err("--connections, --rounds, --round-secs and --phones must be at least 1".into());
    }
    // Both servers' count, and the one the report prints.
    let server_workers = workers(args.server_workers);
    let mut config = RuntimeConfig::default();
    config.storage.path = db;
    config.storage.durability = match args.durability {
        DurabilityArg::Commit => Durability::Commit,
        DurabilityArg::Async => Durability::Async,
    };
    config.security.code_pepper = Some("otpd-httpbench-pepper-0123456789".into());
    config.runtime.idle_actor_secs = 86_400;
    let provider = Arc::new(HandoffProvider::new(true));
    let runtime = Runtime::builder(config)
        .provider(provider.clone())
        .start()
        .await
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let created = runtime
        .create_app(NewApp {
            name: "httpbench".into(),
            app_key: Some("bench".into()),
            settings: AppSettings {
                resend_cooldown_secs: 0,
                max_sends_per_hour: 1_000,
                max_sends_per_minute: 1_000_000,
                message_template: "{code}".into(),
                ..AppSettings::default()
            },
            ..NewApp::default()
        })
        .await
        .map_err(|e| format!("creating the app: {e}"))?;

    let api_runtime = runtime.clone();
    // As `otpd serve`: the Prometheus recorder behind `/metrics`, and (with
    // `--daemon-log`) its stderr log, one INFO line per request.
    let options = ApiOptions {
        metrics: api::metrics::install_recorder(),
        ..ApiOptions::default()
    };
    let _log = args
        .daemon_log
        .then(|| otpd::logging::init(otpd::config::LogFormat::Text));
    let batch_scheduling = args.server_batch_scheduling;
    let real = HttpServer::new(move || {
        // As `otpd serve`'s factory: runs on each worker thread as it starts.
        otpd::server::prepare_worker_thread(batch_scheduling);
        let runtime = api_runtime.clone();
        let options = options.clone();
        App::new().configure(move |cfg| api::configure(cfg, runtime, options))
    })
    .workers(server_workers)
    .disable_signals()
    .bind("127.0.0.1:0")
    .map_err(|e| format!("binding the real server: {e}"))?;
    let bare = HttpServer::new(|| {
        App::new()
            .route("/v1/otp/request", web::post().to(bare_request))
            .route("/v1/otp/verify", web::post().to(bare_verify))
    })
    .workers(server_workers)
    .disable_signals()
    .bind("127.0.0.1:0")
    .map_err(|e| format!("binding the bare server: {e}"))?;
    let (real_addr, bare_addr) = (real.addrs()[0], bare.addrs()[0]);
    let (real, bare) = (real.run(), bare.run());
    let (real_handle, bare_handle) = (real.handle(), bare.handle());
    actix_rt::spawn(real);
    actix_rt::spawn(bare);

    let client = |connections: usize| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .build()
            .map_err(|e| format!("client: {e}"))
    };
    // `n` clients of one connection each.
    let single = |n: usize| (0..n).map(|_| client(1)).collect::<Result<Vec<_>, _>>();
    let clients = match args.client {
        ClientArg::Pool => vec![client(args.connections)?],
        ClientArg::PerTask => single(args.connections)?,
        ClientArg::Split => single(2 * args.connections)?,
    };
    let urls = |addr: SocketAddr| -> Result<[reqwest::Url; 2], String> {
        let url = |path: &str| {
            reqwest::Url::parse(&format!("http://{addr}{path}")).map_err(|e| e.to_string())
        };
        Ok([url("/v1/otp/request")?, url("/v1/otp/verify")?])
    };
    let target = Arc::new(Target {
        clients,
        mode: args.client,
        real: urls(real_addr)?,
        bare: urls(bare_addr)?,
        api_key: created.api_key,
        provider,
    });
    let load_before = loadavg();
    let writer_before = WriterCounters::read(&runtime);
    let phones = phones(args.phones);
    let driver_args = args.clone();
    let rounds = actix_rt::task::spawn_blocking(move || drive(target, phones, driver_args))
        .await
        .map_err(|e| format!("client: {e}"))??;
    let load_after = loadavg();
    let writer = WriterCounters::read(&runtime).since(writer_before);
    real_handle.stop(true).await;
    bare_handle.stop(true).await;
    runtime.shutdown().await;

    let side = |s: Side| rounds.iter().filter(move |r| r.side == s);
    let real_rate = median(side(Side::Real).map(Round::per_sec).collect());
    let bare_rate = median(side(Side::Bare).map(Round::per_sec).collect());
    let real_cpu = median(side(Side::Real).map(Round::cpu_us_per_cycle).collect());
    let bare_cpu = median(side(Side::Bare).map(Round::cpu_us_per_cycle).collect());
    // Each thread group's median over a side's rounds.
    let by_thread = |s: Side| -> Value {
        let groups: serde_json::Map<String, Value> = THREAD_GROUPS
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let us = median(side(s).map(|r| r.thread_us_per_cycle()[i].1).collect());
                (g.name.to_string(), json!((us * 10.0).round() / 10.0))
            })
            .collect();
        Value::Object(groups)
    };
    let ratio = if bare_rate > 0.0 {
        real_rate / bare_rate
    } else {
        0.0
    };
    let errors: u64 = rounds.iter().map(|r| r.errors).sum();
    let first_error = rounds.iter().find_map(|r| r.first_error.clone());
    let report = json!({
        "config": {
            "connections": args.connections,
            "rounds": args.rounds,
            "round_secs": args.round_secs,
            "phones": args.phones,
            "durability": arg_name(args.durability),
            "daemon_log": args.daemon_log,
            "server_workers": server_workers,
            "server_batch_scheduling": args.server_batch_scheduling,
            "client": arg_name(args.client),
        },
        "rounds": rounds.iter().map(Round::json).collect::<Vec<_>>(),
        "real_per_sec": real_rate.round(),
        "bare_per_sec": bare_rate.round(),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "real_cpu_us_per_cycle": (real_cpu * 10.0).round() / 10.0,
        "bare_cpu_us_per_cycle": (bare_cpu * 10.0).round() / 10.0,
        "real_cpu_us_per_cycle_by_thread": by_thread(Side::Real),
        "bare_cpu_us_per_cycle_by_thread": by_thread(Side::Bare),
        "errors": errors,
        "first_error": first_error,
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": load_after,
        "writer": writer.json(),
    });
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "otpd-httpbench: connections={} (client {}) rounds={}x{}s phones={} durability={} daemon log={} server workers={} (real: SCHED_BATCH {})",
        args.connections,
        arg_name(args.client),
        args.rounds,
        args.round_secs,
        args.phones,
        arg_name(args.durability),
        if args.daemon_log { "on" } else { "off" },
        server_workers,
        if args.server_batch_scheduling { "on" } else { "off" }
    );
    for r in &rounds {
        let _ = writeln!(
            text,
            "{:4}  {:>8.0} cycles/s  {:>6.1} µs CPU/cycle  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            r.side.name(),
            r.per_sec(),
            r.cpu_us_per_cycle(),
            r.latency.value_at_quantile(0.5) as f64 / 1000.0,
            r.latency.value_at_quantile(0.99) as f64 / 1000.0,
            r.errors
        );
        let _ = writeln!(text, "      CPU µs/cycle by thread: {}", r.threads_line());
    }
    let _ = writeln!(text, "{}", writer.line());
    let _ = write!(
        text,
        "median: real {real_rate:.0}/s ({real_cpu:.1} µs CPU), bare {bare_rate:.0}/s ({bare_cpu:.1} µs CPU); ratio real/bare {ratio:.3} (load average {load_before:.2} before, {load_after:.2} after)"
    );
    if let Some(e) = first_error {
        let _ = write!(text, "\nfirst error: {e}");
    }
    Ok((report, text, errors))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!(
        "otpd-httpbench-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let json = args.json;
    let result = actix_rt::System::new().block_on(run(args, dir.join("otpd.sqlite3")));
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok((report, text, errors)) => {
            println!("{}", if json { report.to_string() } else { text });
            if errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("otpd-httpbench: {e}");
            ExitCode::from(2)
        }
    }
}
