//! The web console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver by `fantoccini`, against the real `otpd`
//! binary with a real receiver as the webhook URL. One test walks every page the way
//! an operator would: sign in (a wrong key first), create a webhook with a hostile
//! description, send a test event, find it in the delivery log, open its payload,
//! headers and attempts, retry it, edit the webhook, recover a window, look up a
//! message and its history, read the OTP overview, sign out. The browser's log must
//! show no Content-Security-Policy violation.
//!
//! Without a browser it prints `SKIPPED` and passes, except under `CI=true` (where
//! `.ci/run` installs both packages): there it fails. With
//! `OTPD_CONSOLE_SCREENSHOTS=<dir>` it saves one 1280×800 PNG per page there
//! (`docs/console/` holds the README's).

#![allow(clippy::disallowed_methods)] // real-time deadlines for a real browser and daemon

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{client, Daemon, DaemonConfig};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use otpd_test_support::{Receiver, Reply};
use serde_json::{json, Value};

const APP_KEY: &str = "demo";
const API_KEY: &str = "otpd_console_browser_test_key_0123456789";
const PHONE: &str = "255712345678";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one wait for the page may take (a debug daemon on a busy 2-core machine).
const WAIT: Duration = Duration::from_secs(20);
/// Shown as text, never run: the console builds nodes with `textContent`.
const HOSTILE: &str = r#"<img src=x onerror="window.__xss=1">"#;

/// `chromedriver --port=N`, killed on drop. It and the Chromium it starts keep
/// their temporary files (Chromium's `scoped_dir`s, a few MB a run) in a directory
/// of their own (`TMPDIR`), removed after them: otherwise every run would leave
/// them in `/tmp`.
struct Driver {
    child: Child,
    url: String,
    // Declared after `child`: removed once `drop` has killed and reaped it.
    _tmp: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let tmp = tempfile::tempdir().expect("a temporary directory for Chromium");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _tmp: tmp,
        };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium's console log since the last read (`POST /session/{id}/se/log`, which
/// chromedriver serves for `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// A blocking face on the async WebDriver client, so the test reads top to bottom
/// and can call the blocking daemon helpers in between.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    base: String,
    shots: Option<PathBuf>,
    _driver: Driver,
}

impl Browser {
    fn start(base: &str) -> Browser {
        let driver = Driver::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800",
                         "--force-device-scale-factor=1"],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&driver.url),
            )
            .expect("a WebDriver session with headless Chromium");
        let shots = std::env::var_os("OTPD_CONSOLE_SCREENSHOTS").map(PathBuf::from);
        if let Some(dir) = &shots {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        Browser {
            rt,
            client: Some(client),
            base: base.to_string(),
            shots,
            _driver: driver,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("an open session")
    }

    fn goto(&self, hash: &str) {
        let url = format!("{}/console{hash}", self.base);
        self.rt.block_on(self.c().goto(&url)).expect("goto");
    }

    /// Sizes the window so the page itself (what a screenshot shows) is 1280×800.
    fn viewport(&self, width: u32, height: u32) {
        let chrome = self.js("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];");
        let extra = |i: usize| chrome[i].as_u64().unwrap_or(0) as u32;
        self.rt
            .block_on(
                self.c()
                    .set_window_size(width + extra(0), height + extra(1)),
            )
            .expect("set the window size");
    }

    /// Sets the hash route without reloading, as a click on a link would.
    fn route(&self, hash: &str) {
        self.js(&format!("location.hash = {}; return true;", json!(hash)));
    }

    fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Waits until `css` matches an element whose text satisfies `pred`; its text.
    #[track_caller]
    fn wait_text(&self, css: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::from("<no element>");
        loop {
            let found = self.rt.block_on(async {
                let e = self.c().find(Locator::Css(css)).await?;
                e.text().await
            });
            if let Ok(text) = found {
                if pred(&text) {
                    return text;
                }
                last = text;
            }
            if Instant::now() > deadline {
                self.save("failure");
                panic!("{css} never matched; last text: {last:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `css` to exist; its text.
    #[track_caller]
    fn wait(&self, css: &str) -> String {
        self.wait_text(css, |_| true)
    }

    #[track_caller]
    fn click(&self, css: &str) {
        self.wait(css);
        self.rt
            .block_on(async { self.c().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    #[track_caller]
    fn type_into(&self, css: &str, text: &str) {
        self.wait(css);
        self.rt
            .block_on(async {
                let e = self.c().find(Locator::Css(css)).await?;
                e.clear().await?;
                e.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    #[track_caller]
    fn select(&self, css: &str, value: &str) {
        self.wait(css);
        self.rt
            .block_on(async {
                self.c()
                    .find(Locator::Css(css))
                    .await?
                    .select_by_value(value)
                    .await
            })
            .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    fn count(&self, css: &str) -> usize {
        self.rt
            .block_on(self.c().find_all(Locator::Css(css)))
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// The browser log entries since the last call.
    fn log(&self) -> Vec<String> {
        let entries = self
            .rt
            .block_on(self.c().issue_cmd(BrowserLog))
            .expect("the browser log");
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a screenshot as `<name>.png` when screenshots were asked for.
    fn save(&self, name: &str) {
        let Some(dir) = &self.shots else { return };
        match self.rt.block_on(self.c().screenshot()) {
            Ok(png) => std::fs::write(dir.join(format!("{name}.png")), png).expect("write png"),
            Err(e) => eprintln!("screenshot {name}: {e}"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
    }
}

/// `None` when both programs are installed, else why not.
fn missing_browser() -> Option<String> {
    [CHROMIUM, CHROMEDRIVER]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| {
            format!("{p} not found: apt-get install chromium chromium-driver to run the console browser test")
        })
}

fn api(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client()
        .request(method, d.url(path))
        .header("X-API-Key", API_KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().expect("the daemon answers");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// CSP violations and uncaught errors among browser log lines.
fn csp_or_script_errors(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| {
            l.contains("Content Security Policy")
                || l.contains("Refused to")
                || l.contains("Uncaught")
        })
        .collect()
}

#[test]
fn the_console_works_in_headless_chromium() {
    if let Some(why) = missing_browser() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "under CI=true: {why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    // The test event, its manual retry, a second test event that fails, its recovery.
    let rx = Receiver::start(vec![
        Reply::Status(200, ""),
        Reply::Status(200, ""),
        Reply::Status(500, ""),
        Reply::Status(200, ""),
    ]);
    let mut daemon = DaemonConfig::new()
        .section("[callbacks]\nallow_http = true\nallowed_cidrs = [\"127.0.0.0/8\"]")
        .section("[delivery]\nretry_schedule_secs = []")
        .app("Console test", APP_KEY, API_KEY, "resend_cooldown_secs = 0")
        .daemon();
    daemon.start();
    let b = Browser::start(daemon.base());

    // ----- sign in: a wrong key shows the API's own message -------------------
    b.goto("");
    b.viewport(1280, 800);
    b.wait("#sign-in");
    let hidden = "return [document.getElementById('nav'), document.getElementById('sign-out')]\
                  .every((e) => e.offsetParent === null);";
    assert_eq!(b.js(hidden), json!(true), "no navigation before sign-in");
    b.save("sign-in");
    let wrong = client()
        .get(daemon.url("/v1/webhooks"))
        .header("X-API-Key", "otpd_wrong")
        .send()
        .expect("401");
    let wrong: Value = wrong.json().expect("JSON");
    let message = wrong["error"]["message"].as_str().expect("a message");
    b.type_into("#api-key", "otpd_wrong");
    b.click("#sign-in-button");
    let shown = b.wait("#sign-in-status .notice-error");
    assert!(shown.contains(message), "{shown:?} shows {message:?}");
    assert_eq!(b.js("return sessionStorage.length;"), json!(0));

    b.type_into("#api-key", API_KEY);
    b.click("#sign-in-button");
    b.wait("#create-webhook");
    assert_eq!(
        b.js("return sessionStorage.getItem('otpd.console.api_key');"),
        json!(API_KEY)
    );
    assert_eq!(
        b.js("return localStorage.length + document.cookie.length;"),
        json!(0)
    );

    // ----- create a webhook with a hostile description --------------------------
    b.type_into("#new-url", &rx.url);
    b.select("#new-service-type", "otp");
    b.type_into("#new-description", HOSTILE);
    b.click("#create-button");
    let created = b.wait_text("#create-status .notice-ok", |t| t.contains("whsec_"));
    let (_, hooks) = api(&daemon, "GET", "/v1/webhooks", None);
    let hook = &hooks["data"]["items"][0];
    let id = hook["id"]
        .as_str()
        .expect("a webhook was created")
        .to_string();
    assert!(created.contains(&id));
    assert_eq!(hook["description"], HOSTILE);
    assert_eq!(hook["events"].as_array().map(Vec::len), Some(4));
    let card = format!("article.webhook[data-id=\"{id}\"]");
    let description = b.wait(&format!("{card} .description"));
    assert_eq!(description, HOSTILE, "the description is shown as text");
    assert_eq!(
        b.count(&format!("{card} img")),
        0,
        "no element was parsed from it"
    );
    assert_eq!(b.js("return window.__xss === undefined;"), json!(true));

    // ----- send a test event: the receiver gets it, the stats show it ----------
    b.click(&format!("{card} button.send-test"));
    let queued = b.wait(&format!("{card} a.test-delivery"));
    let delivery_id = queued.trim().to_string();
    assert!(delivery_id.starts_with("dlv_"), "{delivery_id}");
    let got = rx.wait_for_blocking(1);
    assert_eq!(got[0].header("x-otpd-delivery-id"), delivery_id);
    assert_eq!(got[0].header("x-otpd-event"), "otp.test");
    b.wait_text(&format!("{card} .test-outcome"), |t| {
        t.contains("succeeded (HTTP 200)")
    });
    b.wait_text(&format!("{card} .rate"), |t| t.contains("100.0% delivered"));
    b.wait_text(&format!("{card} .numbers"), |t| t.contains("1 succeeded"));
    assert_eq!(
        b.count(&format!("{card} svg.gauge rect.gauge-fill.good")),
        1
    );

    // ----- the delivery log: succeeded, filters, chart -------------------------
    b.route("#/deliveries");
    let row = format!("#delivery-table tr[data-id=\"{delivery_id}\"]");
    b.wait_text(&row, |t| t.contains("succeeded"));
    assert!(b.count("#delivery-chart svg.chart rect.s-ok") >= 1);
    b.select("#filter-kind", "webhook");
    b.select("#filter-status", "failed");
    b.click("#filters button[type=submit]");
    b.wait_text("#delivery-table", |t| t.contains("No deliveries match"));
    b.select("#filter-status", "succeeded");
    b.click("#filters button[type=submit]");
    b.wait(&row);

    // ----- a delivery's detail: payload, headers, attempts; retry --------------
    b.click(&format!("{row} a"));
    b.wait_text("#delivery-id", |t| t == delivery_id);
    let exact = b.wait("#payload-exact");
    assert_eq!(exact, got[0].body, "the exact body string");
    let pretty = b.wait("#payload-pretty");
    assert!(pretty.contains("\"event\": \"otp.test\""), "{pretty}");
    let headers = b.wait("#delivery-headers");
    for name in [
        "Content-Type",
        "User-Agent",
        "X-Otpd-Event",
        "X-Otpd-Delivery-Id",
        "X-Otpd-Signature",
        "webhook-id",
        "webhook-signature",
    ] {
        assert!(headers.contains(name), "{name} in {headers}");
    }
    assert!(headers.contains(&delivery_id));
    assert!(headers.contains("computed per attempt"));
    assert_eq!(b.count("#attempt-log tbody tr"), 1);
    b.save("delivery");

    b.click("#retry-button");
    b.wait_text("#retry-status", |t| t.contains("new attempt series"));
    let got = rx.wait_for_blocking(2);
    assert_eq!(got[1].header("x-otpd-delivery-id"), delivery_id);
    assert_eq!(
        got[1].header("x-otpd-event-id"),
        got[0].header("x-otpd-event-id")
    );
    assert_eq!(got[1].header("x-otpd-attempt"), "2");
    b.wait("#attempt-log tbody tr[data-attempt=\"2\"]");

    // ----- a failing test event: stats, the log, recovering the window ----------
    b.route("#/webhooks");
    b.click(&format!("{card} button.send-test"));
    b.wait_text(&format!("{card} .test-outcome"), |t| {
        t.contains("failed (HTTP 500)")
    });
    let failed_id = b
        .wait(&format!("{card} a.test-delivery"))
        .trim()
        .to_string();
    b.wait_text(&format!("{card} .rate"), |t| t.contains("50.0% delivered"));
    b.wait_text(&format!("{card} .numbers"), |t| t.contains("1 failed"));
    assert_eq!(
        b.count(&format!("{card} svg.gauge rect.gauge-fill.poor")),
        1
    );
    b.save("webhooks");

    b.route("#/deliveries");
    b.wait_text(
        &format!("#delivery-table tr[data-id=\"{failed_id}\"]"),
        |t| t.contains("failed"),
    );
    assert!(b.count("#delivery-chart svg.chart rect.s-bad") >= 1);
    b.save("deliveries");
    b.select("#recover-webhook", &id);
    b.click("#recover-button");
    b.wait_text("#recover-status", |t| {
        t.contains("1 failed delivery queued again")
    });
    let got = rx.wait_for_blocking(4);
    assert_eq!(got[3].header("x-otpd-delivery-id"), failed_id);
    assert_eq!(
        got[3].header("x-otpd-event-id"),
        got[2].header("x-otpd-event-id")
    );

    // ----- cursor paging: one delivery a page, newest first ----------------------
    b.route("#/deliveries?limit=1");
    b.wait(&format!("#delivery-table tr[data-id=\"{failed_id}\"]"));
    assert_eq!(b.count("#delivery-table tbody tr"), 1);
    b.click("#next-page");
    b.wait(&row);
    assert_eq!(b.count("#delivery-table tbody tr"), 1);
    b.click("#first-page");
    b.wait(&format!("#delivery-table tr[data-id=\"{failed_id}\"]"));

    // ----- show and rotate the secret ----------------------------------------------
    b.route("#/webhooks");
    let (_, secret) = api(&daemon, "GET", &format!("/v1/webhooks/{id}/secret"), None);
    let secret = secret["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    b.click(&format!("{card} button.show-secret"));
    b.wait_text(&format!("{card} .out code.secret"), |t| t == secret);
    b.click(&format!("{card} button.rotate-secret"));
    let rotated = b.wait_text(&format!("{card} .out"), |t| t.contains("New secret"));
    let (_, now) = api(&daemon, "GET", &format!("/v1/webhooks/{id}/secret"), None);
    let now = now["data"]["secret"].as_str().expect("secret").to_string();
    assert_ne!(now, secret);
    assert!(rotated.contains(&now) && rotated.contains("previous one keeps signing"));

    // ----- delete takes a second, confirming click --------------------------------
    b.type_into("#new-url", &format!("{}/sms", rx.url));
    b.select("#new-service-type", "sms");
    b.click("#create-button");
    b.wait_text("#create-status .notice-ok", |t| t.contains("whsec_"));
    let sms_card = "article.webhook:nth-of-type(2)";
    b.wait_text(&format!("{sms_card} .url"), |t| t.ends_with("/sms"));
    b.click(&format!("{sms_card} button.delete"));
    b.wait_text(&format!("{sms_card} button.delete"), |t| {
        t == "Confirm delete"
    });
    let (_, listed) = api(&daemon, "GET", "/v1/webhooks", None);
    assert_eq!(listed["data"]["items"].as_array().map(Vec::len), Some(2));
    b.click(&format!("{sms_card} button.delete"));
    b.wait_text("#webhook-list", |_| b.count("article.webhook") == 1);
    let (_, listed) = api(&daemon, "GET", "/v1/webhooks", None);
    assert_eq!(listed["data"]["items"].as_array().map(Vec::len), Some(1));

    // ----- edit the webhook: URL and events -------------------------------------
    b.route("#/webhooks");
    b.click(&format!("{card} button.edit"));
    let edited_url = format!("{}?edited=1", rx.url);
    b.type_into(&format!("{card} input.edit-url"), &edited_url);
    b.click(&format!("{card} input[value=\"otp.expired\"]"));
    b.click(&format!("{card} button.save"));
    b.wait_text(&format!("{card} .url"), |t| t == edited_url);
    let events = b.wait(&format!("{card} .event-list"));
    assert_eq!(events, "otp.created, otp.verified, otp.failed");
    let (_, hook) = api(&daemon, "GET", &format!("/v1/webhooks/{id}"), None);
    assert_eq!(hook["data"]["url"], edited_url.as_str());
    assert_eq!(hook["data"]["events"].as_array().map(Vec::len), Some(3));

    // ----- an OTP request and verify, then the message and the overview ---------
    let (status, requested) = api(
        &daemon,
        "POST",
        "/v1/otp/request",
        Some(json!({"phone_number": PHONE, "app_key": APP_KEY})),
    );
    assert_eq!(status, 200, "{requested}");
    let message_id = requested["data"]["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    let code = daemon.code_for(PHONE);
    let (status, verified) = api(
        &daemon,
        "POST",
        "/v1/otp/verify",
        Some(json!({"phone_number": PHONE, "app_key": APP_KEY, "code": code})),
    );
    assert_eq!(status, 200, "{verified}");

    b.route("#/messages");
    b.type_into("#message-id", &message_id);
    b.click("#message-lookup button[type=submit]");
    b.wait_text("#message-status", |t| t == "sent");
    let (history_status, history) = api(
        &daemon,
        "GET",
        &format!("/v1/messages/{message_id}/history"),
        None,
    );
    if history_status == 200 {
        let statuses: Vec<&str> = history["data"]["history"]
            .as_array()
            .expect("history")
            .iter()
            .filter_map(|h| h["status"].as_str())
            .collect();
        b.wait_text("#message-history", |t| {
            statuses.iter().all(|s| t.contains(s))
        });
        assert_eq!(b.count("#message-history li"), statuses.len());
    } else {
        b.wait_text("#message-history", |t| t.contains("current status is sent"));
    }
    b.save("messages");

    b.route("#/otp");
    b.wait_text(".tiles.outcomes li[data-key=\"verified\"] strong", |t| {
        t == "1"
    });
    b.wait_text(".tiles.sends", |t| t.contains("sent"));
    assert!(b.count("#otp-stats svg.chart rect.s-ok") >= 1);
    b.click("#window-day");
    b.wait_text("#window-day", |_| true);
    b.wait_text(".tiles.outcomes li[data-key=\"verified\"] strong", |t| {
        t == "1"
    });
    b.route("#/otp?window=hour");
    b.wait_text(".tiles.outcomes li[data-key=\"verified\"] strong", |t| {
        t == "1"
    });
    b.save("otp");

    // ----- no CSP violation or script error in the whole session ----------------
    let log = b.log();
    let bad = csp_or_script_errors(&log);
    assert!(bad.is_empty(), "browser log: {bad:#?}");

    // The check can see a violation: an inline script injected now is refused.
    b.js("const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s); return true;");
    assert_eq!(b.js("return window.__inline === undefined;"), json!(true));
    let log = b.log();
    assert!(
        !csp_or_script_errors(&log).is_empty(),
        "the injected inline script is reported: {log:#?}"
    );

    // ----- sign out clears the key ------------------------------------------------
    b.click("#sign-out");
    b.wait("#sign-in");
    assert_eq!(b.js(hidden), json!(true), "no navigation after sign-out");

    // A key the API stops accepting mid-session sends the console back to sign-in.
    b.js(
        "sessionStorage.setItem('otpd.console.api_key', 'otpd_revoked'); \
          location.hash = '#/deliveries'; return true;",
    );
    let shown = b.wait("#sign-in-status .notice-error");
    assert!(shown.contains(message), "{shown:?} shows {message:?}");
    assert_eq!(b.js("return sessionStorage.length;"), json!(0));
    assert_eq!(b.js("return sessionStorage.length;"), json!(0));
}
