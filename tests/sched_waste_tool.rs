//! `tools/sched-waste.py`, the measurement behind BENCHMARKS.md's "Idle CPU while a
//! thread waits", on hand-written `perf sched script` traces whose answer is known:
//! the tool must count a CPU's idle time as wasted exactly while another CPU has a
//! runnable thread queued, and stop counting once that thread runs or migrates.

use std::path::Path;
use std::process::Command;

/// A `perf sched script` line: `thread` (`comm pid`) on `cpu` at `t` seconds.
fn line(thread: (&str, u32), cpu: u32, t: f64, event: &str, fields: &str) -> String {
    format!(
        "{:>16} {:>5} [{cpu:03}] {t:12.6}: sched:{event}: {fields}\n",
        thread.0, thread.1
    )
}

fn switch(cpu: u32, t: f64, prev: (&str, u32), state: &str, next: (&str, u32)) -> String {
    line(
        prev,
        cpu,
        t,
        "sched_switch",
        &format!(
            "prev_comm={} prev_pid={} prev_prio=120 prev_state={state} ==> next_comm={} next_pid={} next_prio=120",
            prev.0, prev.1, next.0, next.1
        ),
    )
}

const IDLE0: (&str, u32) = ("swapper/0", 0);
const IDLE1: (&str, u32) = ("swapper/1", 0);
const CLIENT: (&str, u32) = ("httpbench-clien", 100);
const WORKER: (&str, u32) = ("actix-rt|system", 200);
const WRITER: (&str, u32) = ("otpd-snapshot", 300);

/// 10 ms: the client runs on CPU 0 and wakes the writer there at 1 ms; the worker
/// on CPU 1 blocks at 2 ms, leaving CPU 1 idle; then `rest` (from 3 ms on).
fn trace(rest: &[String]) -> String {
    let mut t = String::new();
    t += &switch(0, 1.000, IDLE0, "R", CLIENT);
    t += &switch(1, 1.000, IDLE1, "R", WORKER);
    t += &line(
        CLIENT,
        0,
        1.001,
        "sched_waking",
        "comm=otpd-snapshot pid=300 prio=120 target_cpu=000",
    );
    t += &switch(1, 1.002, WORKER, "S", IDLE1);
    for r in rest {
        t += r;
    }
    t
}

/// The line the tool prints for `cpu`: its idle share of the trace, and the share
/// during which another CPU had a thread queued.
fn cpu_line(cpu: u32, idle: f64, wasted: f64) -> String {
    format!("cpu{cpu}: idle {idle:.1} %, of which another CPU had a thread queued {wasted:.1} %")
}

/// Runs the tool on `trace` and returns what it printed.
fn sched_waste(dir: &Path, trace: &str) -> String {
    let file = dir.join("events.txt");
    std::fs::write(&file, trace).expect("write the trace");
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sched-waste.py");
    let out = Command::new("python3")
        .arg(&tool)
        .arg("--text")
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "sched-waste.py failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn idle_time_counts_as_wasted_while_the_other_cpu_has_a_thread_queued() {
    let dir = tempfile::tempdir().unwrap();
    // The writer waits behind the client until the client blocks at 4 ms, and runs
    // until 10 ms: CPU 1 is idle from 2 ms to the end (80 %), wasted 2–4 ms (20 %).
    let out = sched_waste(
        dir.path(),
        &trace(&[
            switch(0, 1.004, CLIENT, "S", WRITER),
            switch(0, 1.010, WRITER, "S", IDLE0),
        ]),
    );
    assert!(out.contains("0.010 s recorded"), "{out}");
    assert!(out.contains(&cpu_line(0, 0.0, 0.0)), "{out}");
    assert!(out.contains(&cpu_line(1, 80.0, 20.0)), "{out}");
    // 2 ms of 10, split by (who waited, who woke it, who ran ahead of it).
    assert!(
        out.contains("('otpd-snapshot', 'httpbench-clien', 'httpbench-clien')"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("200.0"), "{out}");
}

#[test]
fn a_thread_that_migrates_to_the_idle_cpu_stops_the_waste() {
    let dir = tempfile::tempdir().unwrap();
    // At 3 ms the balancer moves the writer to CPU 1, which switches to it at
    // 3.5 ms and runs it until 10 ms: CPU 1 is idle 2–3.5 ms (15 %), wasted only
    // until the move (10 %): from then on the waiting thread is its own.
    let out = sched_waste(
        dir.path(),
        &trace(&[
            line(
                IDLE1,
                1,
                1.003,
                "sched_migrate_task",
                "comm=otpd-snapshot pid=300 prio=120 orig_cpu=0 dest_cpu=1",
            ),
            switch(1, 1.0035, IDLE1, "R", WRITER),
            switch(1, 1.010, WRITER, "S", IDLE1),
        ]),
    );
    assert!(out.contains(&cpu_line(1, 15.0, 10.0)), "{out}");
    assert!(out.contains(&cpu_line(0, 0.0, 0.0)), "{out}");
}
