//! The HTTP benchmark as a user runs it: the real `otpd-httpbench` binary for one
//! tiny round of each side, checked through its `--json` report (figures belong in
//! BENCHMARKS.md; this checks the benchmark works: real cycles through the API,
//! codes from the provider, verified, and a ratio).

use std::process::Command;

/// Runs the benchmark with one round of one second per side and `args`, and
/// returns its `--json` report; fails the test when it does not succeed.
fn one_round(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_otpd-httpbench"))
        .args(["--rounds", "1", "--round-secs", "1", "--json"])
        .args(args)
        .output()
        .expect("run otpd-httpbench");
    assert!(
        out.status.success(),
        "otpd-httpbench {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn one_round_of_each_side_reports_rates_cpu_and_their_ratio() {
    let r = one_round(&["--connections", "4", "--phones", "200"]);
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["config"]["client"], "pool", "one shared pool by default");
    let real = r["real_per_sec"].as_f64().unwrap();
    let bare = r["bare_per_sec"].as_f64().unwrap();
    assert!(real > 0.0 && bare > 0.0, "{r}");
    let ratio = r["ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 2.0, "{r}");
    assert!(r["real_cpu_us_per_cycle"].as_f64().unwrap() > 0.0);
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0]["side"], "real");
    assert_eq!(rounds[1]["side"], "bare");
    // The real side's CPU split by thread: the writer works only on the real side,
    // and the groups add up to the process's CPU per cycle (both read from /proc).
    let real_threads = &rounds[0]["cpu_us_per_cycle_by_thread"];
    let bare_threads = &rounds[1]["cpu_us_per_cycle_by_thread"];
    for group in [
        "workers",
        "client",
        "writer",
        "checkpointer",
        "readers",
        "other",
    ] {
        assert!(real_threads[group].is_f64(), "{group}: {real_threads}");
    }
    assert!(
        real_threads["workers"].as_f64().unwrap() > 0.0,
        "{real_threads}"
    );
    assert!(
        real_threads["writer"].as_f64().unwrap() > 0.0,
        "{real_threads}"
    );
    assert!(
        bare_threads["writer"].as_f64().unwrap() < 1.0,
        "{bare_threads}"
    );
    let summed: f64 = real_threads
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    let whole = rounds[0]["cpu_us_per_cycle"].as_f64().unwrap();
    assert!(
        summed > whole * 0.5 && summed < whole * 1.5 + 50.0,
        "by thread {summed} against {whole} in all"
    );
    assert_eq!(
        r["real_cpu_us_per_cycle_by_thread"]
            .as_object()
            .unwrap()
            .len(),
        6
    );
    let writer = &r["writer"];
    assert!(
        writer["ops"].as_u64().unwrap() >= 3 * rounds[0]["cycles"].as_u64().unwrap(),
        "the real side's request, receipt and verify are writer ops: {writer}"
    );
    assert!(
        writer["ops_per_commit"].as_f64().unwrap() >= 1.0,
        "{writer}"
    );
}

#[test]
fn zero_connections_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_otpd-httpbench"))
        .args(["--connections", "0"])
        .output()
        .expect("run otpd-httpbench");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--connections"));
}

#[test]
fn every_client_mode_runs_verified_cycles_on_both_sides() {
    for mode in ["per-task", "split"] {
        let r = one_round(&["--connections", "3", "--phones", "60", "--client", mode]);
        assert_eq!(r["config"]["client"], mode, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        let rounds = r["rounds"].as_array().unwrap();
        assert!(
            rounds
                .iter()
                .all(|round| round["cycles"].as_u64().unwrap() > 0),
            "{mode}: {r}"
        );
    }
}
