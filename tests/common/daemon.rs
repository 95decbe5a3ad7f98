//! The real `otpd` binary as a black box: a [`Daemon`] owns a temp working
//! directory (and its config file), starts `otpd serve` (or any subcommand that
//! prints a `… listening on http://ADDR` line), captures stdout and stderr line by
//! line, and can `kill -9`, SIGTERM and restart it on the same database. Dropping
//! it kills the process, so a failing test leaves nothing running.
//!
//! With the log provider and `RUST_LOG=info` (the default here) each message, code
//! included, is logged to stderr; [`Daemon::code_for`] reads it from there, as a
//! user of a development instance would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines one stream of the current process has written so far.
type Lines = Arc<Mutex<Vec<String>>>;

/// How long a start may take before the test fails (the first run of a debug
/// binary on a busy 2-core machine can be slow).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A blocking HTTP client that ignores proxy variables.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// One `otpd` process at a time in one temp working directory.
pub struct Daemon {
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    base: String,
    stdout: Lines,
    stderr: Lines,
}

impl Daemon {
    /// A daemon whose `otpd.toml` (in its temp dir) holds `toml`. Relative paths
    /// in it (`storage.path`) resolve inside the temp dir. Not started yet.
    pub fn with_config(toml: &str) -> Daemon {
        let mut daemon = Daemon::without_config();
        let path = daemon.dir().join("otpd.toml");
        std::fs::write(&path, toml).expect("write config");
        daemon.config = Some(path);
        daemon
    }

    /// A daemon on built-in defaults (plus any `OTPD_*` set with [`Daemon::env`]).
    pub fn without_config() -> Daemon {
        Daemon {
            dir: tempfile::tempdir().expect("temp dir"),
            config: None,
            env: vec![("RUST_LOG".into(), "info".into())],
            child: None,
            base: String::new(),
            stdout: Lines::default(),
            stderr: Lines::default(),
        }
    }

    /// Sets an environment variable for every following start.
    pub fn env(mut self, key: &str, value: &str) -> Daemon {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// The working directory (holds the config file and, with a relative
    /// `storage.path`, the database).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT` of the running process.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `HOST:PORT` of the running daemon, for raw sockets.
    pub fn addr(&self) -> String {
        self.base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts `otpd serve [--config otpd.toml]` and waits until it prints its
    /// listening line and `/readyz` answers 200. Returns `self` for chaining.
    pub fn start(&mut self) -> &mut Daemon {
        let mut args = vec!["serve".to_string()];
        if let Some(config) = &self.config {
            args.push("--config".into());
            args.push(config.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(&args);
        self.wait_ready();
        self
    }

    /// Kills the running process with SIGKILL (nothing flushed), then starts
    /// `otpd serve` again on the same directory, config and database.
    pub fn restart(&mut self) -> &mut Daemon {
        self.kill9();
        self.start()
    }

    /// Starts `otpd ARGS…` and waits for a stdout line `… listening on http://ADDR`;
    /// [`Daemon::base`] is that address. Output of a previous run is discarded.
    pub fn spawn(&mut self, args: &[&str]) {
        self.spawn_command(env!("CARGO_BIN_EXE_otpd"), args);
    }

    /// Like [`Daemon::spawn`], but runs `program ARGS…` (e.g. `sh -c "umask 0 &&
    /// exec otpd serve"`), which must end up printing otpd's listening line.
    pub fn spawn_command(&mut self, program: &str, args: &[&str]) {
        assert!(self.child.is_none(), "otpd is already running");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn otpd");
        self.stdout = Lines::default();
        self.stderr = Lines::default();
        collect(child.stdout.take().expect("stdout"), self.stdout.clone());
        collect(child.stderr.take().expect("stderr"), self.stderr.clone());
        self.child = Some(child);
        let line = self.wait_stdout_line(START_TIMEOUT, |l| l.contains(" listening on http://"));
        let at = line.find("http://").expect("an address");
        self.base = line[at..].trim().to_string();
    }

    /// Polls `/readyz` until it answers 200.
    pub fn wait_ready(&mut self) {
        let client = client();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = client
                .get(self.url("/readyz"))
                .send()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "never ready; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stdout lines of the current (or last) run so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stderr of the current (or last) run so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Waits until `f` finds what it looks for in the stdout lines so far.
    pub fn wait_stdout<T>(&mut self, timeout: Duration, f: impl Fn(&[String]) -> Option<T>) -> T {
        let lines = self.stdout.clone();
        self.wait_lines(&lines, timeout, f)
    }

    /// Waits for a stdout line matching `pred`; returns the latest such line.
    pub fn wait_stdout_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_stdout(timeout, |lines| latest(lines, &pred))
    }

    /// Waits for a stderr line matching `pred`; returns the latest such line.
    pub fn wait_stderr_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let lines = self.stderr.clone();
        self.wait_lines(&lines, timeout, |lines| latest(lines, &pred))
    }

    /// The code the log provider sent to `phone` in this run (the latest one).
    /// Assumes the default message template.
    pub fn code_for(&mut self, phone: &str) -> String {
        let needle = format!("to={phone} ");
        let line = self.wait_stderr_line(Duration::from_secs(10), |l| {
            l.contains("log provider") && l.contains(&needle)
        });
        let at = line
            .find("verification code is ")
            .expect("the default template")
            + "verification code is ".len();
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect()
    }

    /// SIGKILL: no chance to flush anything. A no-op when nothing runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().expect("reap otpd");
        }
    }

    /// The process id of the running `otpd`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("otpd is running").id()
    }

    /// SIGTERM, then waits up to 15 s; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("otpd is running");
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "otpd did not exit after SIGTERM; stderr:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_lines<T>(
        &mut self,
        lines: &Lines,
        timeout: Duration,
        f: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let found = f(&lines.lock().unwrap_or_else(|e| e.into_inner()));
            if let Some(found) = found {
                return found;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "timed out; stdout:\n{}\nstderr:\n{}",
                self.stdout_lines().join("\n"),
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails the test, with stderr, when the process has exited.
    fn assert_running(&mut self) {
        let exited = match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => panic!("otpd is not running"),
        };
        if let Some(status) = exited {
            // Give the reader threads a moment to drain the pipes.
            std::thread::sleep(Duration::from_millis(100));
            panic!("otpd exited ({status}); stderr:\n{}", self.stderr_text());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn latest(lines: &[String], pred: impl Fn(&str) -> bool) -> Option<String> {
    lines.iter().rev().find(|l| pred(l)).cloned()
}

/// Reads `stream` line by line into `into` on a thread of its own.
fn collect(stream: impl std::io::Read + Send + 'static, into: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => into.lock().unwrap_or_else(|e| e.into_inner()).push(line),
                Err(_) => return,
            }
        }
    });
}

/// The `otpd.toml` of a black-box test, built from the parts tests vary. It
/// starts as the common base: `[server] listen = "127.0.0.1:0"`, `workers = 2`,
/// `[storage] path = "otpd.sqlite3"`, `[provider] kind = "log"`, no apps.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    durability: Option<String>,
    provider: String,
    sections: Vec<String>,
    apps: Vec<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            durability: None,
            provider: r#"kind = "log""#.into(),
            sections: Vec::new(),
            apps: Vec::new(),
        }
    }
}

impl DaemonConfig {
    /// The common base (see the type's doc).
    pub fn new() -> DaemonConfig {
        DaemonConfig::default()
    }

    /// `storage.durability` (e.g. `"commit"`).
    pub fn durability(mut self, durability: &str) -> DaemonConfig {
        self.durability = Some(durability.into());
        self
    }

    /// The body of `[provider]` (TOML lines), replacing `kind = "log"`.
    pub fn provider(mut self, body: &str) -> DaemonConfig {
        self.provider = body.into();
        self
    }

    /// One more table, as TOML text (e.g. `"[delivery]\nretry_schedule_secs = [1]"`).
    pub fn section(mut self, toml: &str) -> DaemonConfig {
        self.sections.push(toml.trim().to_string());
        self
    }

    /// An `[[apps]]` entry with these keys, plus `extra` TOML lines (settings).
    pub fn app(mut self, name: &str, app_key: &str, api_key: &str, extra: &str) -> DaemonConfig {
        let mut app = format!(
            "[[apps]]\nname = \"{name}\"\napp_key = \"{app_key}\"\napi_key = \"{api_key}\""
        );
        if !extra.trim().is_empty() {
            app.push('\n');
            app.push_str(extra.trim());
        }
        self.apps.push(app);
        self
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let mut text = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[storage]\npath = \"otpd.sqlite3\"\n",
        );
        if let Some(durability) = &self.durability {
            text.push_str(&format!("durability = \"{durability}\"\n"));
        }
        text.push_str(&format!("\n[provider]\n{}\n", self.provider.trim()));
        for part in self.sections.iter().chain(&self.apps) {
            text.push('\n');
            text.push_str(part);
            text.push('\n');
        }
        text
    }

    /// A daemon (not started) with this configuration.
    pub fn daemon(&self) -> Daemon {
        Daemon::with_config(&self.toml())
    }
}

/// Sends `raw` bytes on a fresh TCP connection to `addr` and returns whatever
/// comes back (read until EOF or 3 s of silence). For tests that need bytes no
/// HTTP client would send. With `may_reset` a failed write is tolerated (the
/// server may answer and close before it has read everything); otherwise it
/// fails the test.
pub fn raw_exchange(addr: &str, raw: &[u8], may_reset: bool) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let written = s.write_all(raw);
    if !may_reset {
        written.expect("write");
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
