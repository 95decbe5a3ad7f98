//! The command line and configuration, black-box (SPEC section 9): the real `otpd`
//! binary in a temp working directory. Exit codes: 0 ok, 2 configuration error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::daemon::{client, Daemon};
use otpd_test_support::poll_value;
use serde_json::Value;

fn otpd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otpd"));
    cmd.args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run otpd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write file");
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn otpd_without_a_subcommand_prints_help() {
    let dir = tempfile::tempdir().expect("dir");
    let out = otpd(dir.path(), &[], &[]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("Usage"), "{all}");
    assert!(
        all.contains("serve") && all.contains("check-config"),
        "{all}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "help must not create a database"
    );
}

#[test]
fn check_config_accepts_the_documented_defaults() {
    let dir = tempfile::tempdir().expect("dir");
    let file = repo_file("config/default.toml");
    let out = otpd(dir.path(), &["check-config", "--config", arg(&file)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("configuration OK"));
}

#[test]
fn check_config_accepts_the_production_example_and_redacts_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    let file = repo_file("config/production.example.toml");
    let secrets = [
        ("OTPD_SERVER__ADMIN_TOKEN", "admin-token-0123456789abcdef"),
        ("OTPD_PROVIDER__AUTH_TOKEN", "provider-auth-token-xyz"),
        ("OTPD_PROVIDER__STATUS_TOKEN", "provider-status-token-xyz"),
    ];
    let out = otpd(
        dir.path(),
        &["check-config", "--config", arg(&file)],
        &secrets,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("provider.kind            = http"),
        "{stdout}"
    );
    assert!(
        stdout.contains("storage.synchronous      = full"),
        "{stdout}"
    );
    for (_, secret) in secrets {
        assert!(!stdout.contains(secret), "{secret} leaked:\n{stdout}");
    }
    let example = std::fs::read_to_string(&file).expect("read example");
    let api_key = example
        .lines()
        .find_map(|l| l.trim().strip_prefix("api_key = "))
        .expect("the example has an api_key")
        .trim_matches('"');
    assert!(!stdout.contains(api_key), "api_key leaked:\n{stdout}");
}

#[test]
fn check_config_names_an_unknown_key_in_the_file_and_exits_2() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "otpd.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\ndurabilty = \"commit\"\n",
    );
    let out = otpd(dir.path(), &["check-config", "--config", arg(&file)], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("storage.durabilty"), "{stderr}");
    assert!(stderr.contains("otpd.toml"), "{stderr}");
}

#[test]
fn check_config_names_an_unknown_environment_key_and_exits_2() {
    let dir = tempfile::tempdir().expect("dir");
    let out = otpd(
        dir.path(),
        &["check-config"],
        &[("OTPD_SERVER__LISTN", "0.0.0.0:8080")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("OTPD_SERVER__LISTN"), "{stderr}");
    assert!(stderr.contains("server.listn"), "{stderr}");
}

#[test]
fn check_config_names_an_unknown_app_setting_and_exits_2() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "otpd.toml",
        "[[apps]]\nname = \"Shop\"\napp_key = \"shop\"\napi_key = \"sk_test_0123456789abcdef\"\nmax_atempts = 5\n",
    );
    let out = otpd(dir.path(), &["check-config", "--config", arg(&file)], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("max_atempts") && stderr.contains("shop"),
        "{stderr}"
    );
}

#[test]
fn check_config_refuses_a_missing_file_with_exit_2() {
    let dir = tempfile::tempdir().expect("dir");
    let out = otpd(dir.path(), &["check-config", "--config", "nope.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope.toml"));
}

#[test]
fn apps_create_then_list_shows_the_app_without_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "otpd.toml",
        "[storage]\npath = \"db/otpd.sqlite3\"\n",
    );
    let out = otpd(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Shop",
            "--app-key",
            "shop",
            "--config",
            arg(&file),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(created["app_key"], "shop");
    assert!(created["app_id"].as_str().is_some_and(|s| s.len() == 36));
    let api_key = created["api_key"].as_str().expect("api_key").to_string();
    assert!(api_key.len() >= 16);
    assert!(dir.path().join("db/otpd.sqlite3").exists());

    let again = otpd(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Shop",
            "--app-key",
            "shop",
            "--config",
            arg(&file),
        ],
        &[],
    );
    assert_eq!(again.status.code(), Some(1), "a taken app_key is refused");

    let out = otpd(dir.path(), &["apps", "list", "--config", arg(&file)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let apps: Vec<Value> = listing
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(apps.len(), 1, "{listing}");
    assert_eq!(apps[0]["app_key"], "shop");
    assert_eq!(apps[0]["app_id"], created["app_id"]);
    assert!(!listing.contains(&api_key), "the API key leaked: {listing}");
    assert!(apps[0].get("api_key").is_none());
}

fn status_code_with_key(
    client: &reqwest::blocking::Client,
    base: &str,
    key: &str,
    app_key: &str,
) -> u16 {
    client
        .get(format!("{base}/v1/otp/status"))
        .query(&[("phone_number", "255712345678"), ("app_key", app_key)])
        .header("X-API-Key", key)
        .send()
        .expect("GET status")
        .status()
        .as_u16()
}

#[test]
#[allow(clippy::disallowed_methods)] // a real-time deadline for polling a real daemon
fn serve_without_config_creates_a_dev_app_once_and_its_key_authenticates() {
    let client = client();

    let mut serve = Daemon::without_config()
        .env("RUST_LOG", "warn")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0");
    serve.start();
    let (stdout, base) = (serve.stdout_lines(), serve.base().to_string());
    let shown = stdout.join("\n");
    assert!(shown.contains("app_key: dev"), "{shown}");
    assert!(shown.to_lowercase().contains("shown once"), "{shown}");
    let api_key = stdout
        .iter()
        .find_map(|l| l.trim().strip_prefix("api_key: "))
        .expect("the dev app's api_key on stdout")
        .to_string();
    assert!(
        serve.dir().join("data/otpd.sqlite3").exists(),
        "default storage.path"
    );
    assert_eq!(status_code_with_key(&client, &base, &api_key, "dev"), 404);
    assert_eq!(
        status_code_with_key(&client, &base, "sk_not_a_real_key_000000", "dev"),
        401
    );

    // An app created by the CLI while the daemon runs authenticates within a second or so.
    let out = otpd(
        serve.dir(),
        &["apps", "create", "--name", "Later", "--app-key", "later"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let later_key = created["api_key"].as_str().expect("api_key");
    let status = poll_value(
        Duration::from_secs(5),
        Duration::from_millis(200),
        || status_code_with_key(&client, &base, later_key, "later"),
        |status| *status == 404,
    );
    assert_eq!(status, 404, "the new key never authenticated");

    // The database has apps now: a second start creates no development app.
    serve.restart();
    let (stdout, base) = (serve.stdout_lines(), serve.base().to_string());
    assert!(!stdout.iter().any(|l| l.contains("api_key")), "{stdout:?}");
    assert_eq!(status_code_with_key(&client, &base, &api_key, "dev"), 404);
}

#[test]
fn check_config_ignores_otpd_variables_without_a_double_underscore() {
    let dir = tempfile::tempdir().expect("dir");
    // What Kubernetes injects for a Service named `otpd`, next to a real override.
    let out = otpd(
        dir.path(),
        &["check-config"],
        &[
            ("OTPD_PORT", "tcp://10.0.0.1:8080"),
            ("OTPD_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ("OTPD_SERVICE_HOST", "10.0.0.1"),
            ("OTPD_SERVER__LISTEN", "0.0.0.0:9191"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("0.0.0.0:9191"),
        "override not applied:\n{stdout}"
    );
}

/// Waits up to 5 s for a stderr line that satisfies `pred`.
#[allow(clippy::disallowed_methods)] // a real-time deadline for polling a real daemon
fn stderr_line(daemon: &Daemon, pred: impl Fn(&str) -> bool) -> Option<String> {
    poll_value(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            daemon
                .stderr_text()
                .lines()
                .find(|l| pred(l))
                .map(str::to_string)
        },
        Option::is_some,
    )
}

#[test]
fn serve_warns_at_start_up_when_callback_url_policy_exceptions_are_open() {
    let mut open = Daemon::without_config()
        .env("RUST_LOG", "warn")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0")
        .env("OTPD_CALLBACKS__ALLOW_HTTP", "true")
        .env("OTPD_CALLBACKS__ALLOWED_CIDRS", "[\"10.0.0.0/8\"]");
    open.start();
    let http = stderr_line(&open, |l| l.contains("WARN") && l.contains("allow_http"));
    assert!(
        http.is_some(),
        "no allow_http warning:\n{}",
        open.stderr_text()
    );
    let cidrs = stderr_line(&open, |l| l.contains("WARN") && l.contains("10.0.0.0/8"));
    assert!(
        cidrs.is_some(),
        "no allowed_cidrs warning:\n{}",
        open.stderr_text()
    );

    let mut closed = Daemon::without_config()
        .env("RUST_LOG", "warn")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0");
    closed.start();
    std::thread::sleep(Duration::from_millis(300));
    let text = closed.stderr_text();
    assert!(
        !text.contains("allow_http") && !text.contains("allowed_cidrs"),
        "{text}"
    );
}

/// `(mtime, len)` of `path`, or `None` when it does not exist.
fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[test]
fn apps_list_is_read_only_on_a_read_only_file_and_next_to_a_live_daemon() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "otpd.toml",
        "[storage]\npath = \"otpd.sqlite3\"\n",
    );
    let out = otpd(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "Shop",
            "--app-key",
            "shop",
            "--config",
            arg(&file),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let db = dir.path().join("otpd.sqlite3");
    let wal = dir.path().join("otpd.sqlite3-wal");
    let mut perms = std::fs::metadata(&db).expect("db").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&db, perms).expect("chmod 0444");
    let (db_before, wal_before) = (stamp(&db), stamp(&wal));
    std::thread::sleep(Duration::from_millis(20));

    let out = otpd(dir.path(), &["apps", "list", "--config", arg(&file)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"shop\""),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(stamp(&db), db_before, "apps list wrote the database file");
    // A read-only SQLite reader of a WAL database may create an empty `-wal` (when
    // the directory allows it) but never writes a frame into it.
    let wal_after = stamp(&wal);
    assert!(
        wal_after == wal_before || wal_after.is_some_and(|(_, len)| len == 0),
        "apps list wrote a WAL: {wal_before:?} -> {wal_after:?}"
    );
    assert!(stamp(&db).is_some_and(|(_, len)| len > 0));

    // A live daemon holds the (writable) database: listing still works beside it.
    let mut perms = std::fs::metadata(&db).expect("db").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&db, perms).expect("chmod 0644");
    let mut daemon = Daemon::with_config("[storage]\npath = \"otpd.sqlite3\"\n")
        .env("RUST_LOG", "warn")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0");
    daemon.start();
    let live_toml = daemon.dir().join("otpd.toml");
    let out = otpd(
        daemon.dir(),
        &["apps", "list", "--config", arg(&live_toml)],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"dev\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_failed_bind_prints_no_development_key_and_creates_no_app() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = otpd(
        dir.path(),
        &["serve"],
        &[("OTPD_SERVER__LISTEN", addr.as_str())],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains("api_key"), "a key was printed: {stdout}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains(&addr),
        "the error names the address: {stderr}"
    );
    drop(taken);
    // Nothing was created either: the database holds no app.
    if dir.path().join("data/otpd.sqlite3").exists() {
        let out = otpd(dir.path(), &["apps", "list"], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "", "an app was created");
    }

    // The port is free now: the development app is created (and shown) then.
    let mut serve = Daemon::without_config()
        .env("RUST_LOG", "warn")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0");
    serve.start();
    let shown = serve.stdout_lines().join("\n");
    assert!(shown.contains("api_key: "), "{shown}");
    assert!(shown.contains("otpd apps create"), "{shown}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line_and_request_lines_without_secrets() {
    let mut serve = Daemon::without_config()
        .env("RUST_LOG", "info")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0")
        .env("OTPD_LOG__FORMAT", "json");
    serve.start();
    let api_key = serve
        .stdout_lines()
        .iter()
        .find_map(|l| l.trim().strip_prefix("api_key: ").map(str::to_string))
        .expect("the dev app's api_key on stdout");
    let client = client();
    let resp = client
        .post(serve.url("/v1/otp/request"))
        .header("x-api-key", &api_key)
        .json(&serde_json::json!({"phone_number": "255712345678", "app_key": "dev"}))
        .send()
        .expect("POST /v1/otp/request");
    assert_eq!(resp.status().as_u16(), 200);
    // The log provider's line (development only) carries the code: read it from there.
    let sent = serve.wait_stderr_line(Duration::from_secs(10), |l| {
        l.contains("Your verification code is")
    });
    let sent: Value = serde_json::from_str(&sent).expect("JSON provider line");
    let code: String = sent["fields"]["text"]
        .as_str()
        .unwrap_or("")
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(code.len() >= 4, "no code in {sent}");
    let line = serve.wait_stderr_line(Duration::from_secs(10), |l| {
        l.contains("otpd::request") && l.contains("/v1/otp/request")
    });
    let stderr = serve.stderr_text();
    for l in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<Value, _> = serde_json::from_str(l);
        assert!(parsed.is_ok(), "not a JSON line: {l}");
    }
    let request: Value = serde_json::from_str(&line).expect("JSON request line");
    let fields = &request["fields"];
    assert_eq!(request["level"], "INFO", "{line}");
    assert_eq!(fields["method"], "POST", "{line}");
    assert_eq!(fields["route"], "/v1/otp/request", "{line}");
    assert_eq!(fields["status"], 200, "{line}");
    assert!(fields["latency_ms"].is_number(), "{line}");
    for secret in [
        api_key.as_str(),
        code.as_str(),
        "phone_number",
        "255712345678",
    ] {
        assert!(
            !line.contains(secret),
            "{secret} in the request line: {line}"
        );
    }
    // Only "text" and "json" are formats.
    let out = otpd(
        serve.dir(),
        &["check-config"],
        &[("OTPD_LOG__FORMAT", "xml")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// The log is written by its own thread, in gathered batches: a stop (SIGTERM) must
/// still write every line logged before it, in order, with "otpd stopped" last.
#[test]
fn sigterm_writes_out_every_queued_log_line_before_otpd_stopped() {
    let mut serve = Daemon::without_config()
        .env("RUST_LOG", "info")
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0");
    serve.start();
    let client = client();
    const REQUESTS: usize = 200;
    for _ in 0..REQUESTS {
        // Unauthenticated: answered 401, and logged like any request.
        let resp = client
            .post(serve.url("/v1/otp/request"))
            .json(&serde_json::json!({"phone_number": "255712345678"}))
            .send()
            .expect("POST /v1/otp/request");
        assert_eq!(resp.status().as_u16(), 401);
    }
    let (status, _) = serve.terminate();
    assert!(status.success(), "{status:?}");
    let stderr = serve.stderr_text();
    let lines: Vec<&str> = stderr.lines().collect();
    let logged = lines
        .iter()
        .filter(|l| l.contains("otpd::request") && l.contains("/v1/otp/request"))
        .count();
    assert_eq!(logged, REQUESTS, "request lines missing:\n{stderr}");
    let last_request = lines
        .iter()
        .rposition(|l| l.contains("otpd::request"))
        .expect("a request line");
    let stopped = lines
        .iter()
        .position(|l| l.contains("otpd stopped"))
        .unwrap_or_else(|| panic!("no \"otpd stopped\" line:\n{stderr}"));
    assert!(stopped > last_request, "lines out of order:\n{stderr}");
}
