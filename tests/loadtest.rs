//! The load-test harness as a user runs it: the real `otpd-loadtest` binary with
//! tiny numbers, in each mode, checked through its `--json` report. (The figures
//! themselves belong in BENCHMARKS.md, not in a test: these only check the modes
//! work and report what they promise.)

use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_otpd-loadtest"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run otpd-loadtest");
    assert!(
        out.status.success(),
        "otpd-loadtest {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

#[test]
fn closed_loop_cycles_report_cpu_and_writer_figures_per_cycle() {
    let r = run(&["--phones", "300", "--concurrency", "16", "--cycles", "600"]);
    assert_eq!(r["completed"], 600);
    assert_eq!(r["failed"], 0);
    assert!(num(&r, "cpu_us_per_cycle") > 0.0);
    assert!(num(&r, "writer_us_per_op") > 0.0);
    let ops = num(&r, "writer_ops_per_cycle");
    assert!(
        (2.9..=3.1).contains(&ops),
        "request, the provider's receipt and verify are one writer op each: {ops}"
    );
    assert!(
        num(&r["storage"], "reads") >= 300.0,
        "each of the 300 actors loaded its row through a read connection: {}",
        r["storage"]
    );
    let c = &r["completions"];
    assert!(num(c, "per_second_max") >= num(c, "per_second_min"));
    assert!(c["longest_gap_ms"].is_u64());
    assert!(r.get("rate").is_none(), "closed loop has no schedule");
    assert!(r.get("stats_readers").is_none(), "none asked for");
    assert_eq!(
        r["config"]["actors"], "local",
        "the drivers host the actors"
    );
}

#[test]
fn stats_readers_read_the_otp_overview_while_cycles_run() {
    let r = run(&[
        "--phones",
        "300",
        "--concurrency",
        "16",
        "--cycles",
        "3000",
        "--stats-readers",
        "1",
        "--actors",
        "pool",
    ]);
    assert_eq!(r["completed"], 3000);
    assert_eq!(r["config"]["actors"], "pool");
    assert_eq!(r["failed"], 0);
    let s = &r["stats_readers"];
    assert_eq!(s["tasks"], 1);
    assert!(num(s, "reads") >= 1.0, "{s}");
    assert_eq!(s["latency"]["count"], s["reads"]);
}

#[test]
fn open_loop_runs_at_the_asked_rate_and_counts_late_starts() {
    let r = run(&[
        "--phones",
        "300",
        "--concurrency",
        "32",
        "--rate",
        "200",
        "--duration-secs",
        "2",
    ]);
    assert_eq!(r["failed"], 0);
    let rate = &r["rate"];
    assert_eq!(num(rate, "target_per_sec"), 200.0);
    let achieved = num(rate, "achieved_per_sec");
    assert!(
        (150.0..=230.0).contains(&achieved),
        "open loop at 200/s achieved {achieved}/s"
    );
    assert!(rate["late_starts"].is_u64());
    // About 400 cycles in 2 s, not as many as the drivers could do.
    let done = num(&r, "completed");
    assert!((300.0..=460.0).contains(&done), "{done}");
}

#[test]
fn open_loop_callbacks_report_the_return_to_arrival_delay() {
    let r = run(&[
        "--deliveries",
        "300",
        "--phones",
        "300",
        "--concurrency",
        "16",
        "--rate",
        "150",
        "--duration-secs",
        "2",
    ]);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["unmatched"], 0);
    assert_eq!(r["received"], r["produced"]);
    assert!(r["delay"]["p99_ms"].as_f64().is_some());
    assert!(r["cycle"]["p99_ms"].as_f64().is_some());
    assert!(num(&r, "cpu_us_per_delivery") > 0.0);
    assert!(num(&r, "writer_ops_per_delivery") > 0.0);
    assert!(num(&r["rate"], "achieved_per_sec") > 100.0);
}

#[test]
fn a_rate_that_is_not_positive_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_otpd-loadtest"))
        .args(["--rate", "0"])
        .output()
        .expect("run otpd-loadtest");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}

#[test]
fn hold_mode_reports_memory_per_live_flake_and_its_slope() {
    let r = run(&["--hold-flakes", "3000", "--concurrency", "32"]);
    assert_eq!(r["completed"], 3000);
    assert_eq!(r["live_actors"], 3000, "every flake's actor is kept");
    assert!(num(&r, "rss_per_live_flake_bytes") > 0.0, "{r}");
    assert!(
        r["rss_per_flake_second_half_bytes"].is_number(),
        "sampled from half the flakes on: {r}"
    );
}
