//! Shared fixture for the black-box API tests: a real otpd HTTP server on a real
//! socket, a runtime with a manual clock, and the capturing provider of
//! `otpd-test-support` so tests can read the code sent to a phone. The scripted
//! webhook receiver is `otpd_test_support::Receiver`; `daemon` runs the real binary.
//!
//! The server runs in an actix `System` on a background thread; tests are plain
//! `#[test]` functions that talk to it with blocking `reqwest` and move time with
//! [`Fixture::advance`]. Dropping the fixture stops the server and the runtime.

#![allow(dead_code)]
// Deadlines of polling loops against the server thread and the daemon are real time.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_rt::ArbiterHandle;
use otpd::api::ApiOptions;
use otpd_actors::app::CreatedApp;
use otpd_actors::{AppSettings, ManualClock, NewApp, OutboundMessage, Runtime, RuntimeConfig};
use otpd_test_support::poll_blocking;
use serde_json::Value;

pub mod daemon;

pub use otpd_test_support::CapturingProvider;

/// The seeded app's public key.
pub const APP_KEY: &str = "demo";
/// The seeded app's API key.
pub const API_KEY: &str = "sk_test_fixture_api_key_0123456789";
/// A valid Tanzanian mobile number (canonical form).
pub const PHONE: &str = "255712345678";

/// A last-minute change to the runtime configuration.
pub type ConfigTweak = Box<dyn FnOnce(&mut RuntimeConfig) + Send>;

/// What a test may choose about its server.
pub struct FixtureOptions {
    /// Settings of the seeded app `demo` (default: SPEC defaults, but cooldown 0 and
    /// 100 sends per hour, so tests can send freely unless they test the limits).
    pub settings: AppSettings,
    /// `server.admin_token` (admin API disabled when `None`).
    pub admin_token: Option<String>,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Last word on the runtime configuration (storage path is already set).
    pub tweak_config: Option<ConfigTweak>,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            settings: AppSettings {
                resend_cooldown_secs: 0,
                max_sends_per_hour: 100,
                ..AppSettings::default()
            },
            admin_token: None,
            trusted_proxies: Vec::new(),
            tweak_config: None,
        }
    }
}

/// A running otpd API with one seeded app.
pub struct Fixture {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The runtime behind the server.
    pub runtime: Runtime,
    /// The clock every rule reads.
    pub clock: Arc<ManualClock>,
    /// Captured messages.
    pub provider: Arc<CapturingProvider>,
    /// The seeded app.
    pub app: CreatedApp,
    /// The admin token, when the admin API is enabled.
    pub admin_token: Option<String>,
    client: reqwest::blocking::Client,
    arbiter: ArbiterHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

struct Started {
    addr: SocketAddr,
    runtime: Runtime,
    app: CreatedApp,
    arbiter: ArbiterHandle,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Fixture {
    /// A server with the default options.
    pub fn start() -> Fixture {
        Fixture::with(FixtureOptions::default())
    }

    /// A server whose seeded app has settings changed by `f` (from the fixture defaults).
    pub fn with_settings(f: impl FnOnce(&mut AppSettings)) -> Fixture {
        let mut options = FixtureOptions::default();
        f(&mut options.settings);
        Fixture::with(options)
    }

    /// A server with `options`.
    pub fn with(options: FixtureOptions) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = RuntimeConfig::default();
        config.storage.path = dir.path().join("otpd.sqlite3");
        config.security.code_pepper = Some("fixture-pepper-0123456789abcdef".into());
        config.runtime.arbiters = 1;
        if let Some(tweak) = options.tweak_config {
            tweak(&mut config);
        }
        let clock = ManualClock::new(
            chrono::DateTime::parse_from_rfc3339("2026-06-07T12:00:00Z")
                .expect("fixed start")
                .with_timezone(&chrono::Utc),
        );
        let provider = Arc::new(CapturingProvider::default());
        let api_options = ApiOptions {
            admin_token: options.admin_token.clone(),
            trusted_proxies: options.trusted_proxies,
            metrics: otpd::api::metrics::install_recorder(),
        };
        let settings = options.settings;
        let (tx, rx) = std::sync::mpsc::channel::<Result<Started, String>>();
        let (clock2, provider2) = (clock.clone(), provider.clone());
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let started = async {
                    let runtime = Runtime::builder(config)
                        .clock(clock2)
                        .provider(provider2)
                        .start()
                        .await
                        .map_err(|e| format!("runtime start: {e}"))?;
                    let app = runtime
                        .create_app(NewApp {
                            name: "Demo".into(),
                            app_key: Some(APP_KEY.into()),
                            app_id: None,
                            settings,
                            api_key: Some(API_KEY.into()),
                        })
                        .await
                        .map_err(|e| format!("seeding the app: {e}"))?;
                    let rt = runtime.clone();
                    let server = actix_web::HttpServer::new(move || {
                        let (rt, opts) = (rt.clone(), api_options.clone());
                        actix_web::App::new()
                            .configure(move |cfg| otpd::api::configure(cfg, rt, opts))
                    })
                    .workers(2)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .bind(("127.0.0.1", 0))
                    .map_err(|e| format!("bind: {e}"))?;
                    let addr = server.addrs()[0];
                    let server = server.run();
                    let handle = server.handle();
                    actix_rt::spawn(server);
                    let (stop, stopped) = tokio::sync::oneshot::channel();
                    Ok::<_, String>((
                        Started {
                            addr,
                            runtime: runtime.clone(),
                            app,
                            arbiter: actix_rt::Arbiter::current(),
                            stop,
                        },
                        handle,
                        stopped,
                        runtime,
                    ))
                }
                .await;
                match started {
                    Ok((started, handle, stopped, runtime)) => {
                        let _ = tx.send(Ok(started));
                        let _ = stopped.await;
                        handle.stop(false).await;
                        runtime.shutdown().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        let started = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server thread answers")
            .expect("server starts");
        Fixture {
            base: format!("http://{}", started.addr),
            addr: started.addr,
            runtime: started.runtime,
            clock,
            provider,
            app: started.app,
            admin_token: options.admin_token,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            arbiter: started.arbiter,
            stop: Some(started.stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Runs `f` with the runtime on the server's actix System and returns its output.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Runtime) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let runtime = self.runtime.clone();
        self.arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let _ = tx.send(f(runtime).await);
            });
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("runtime call answers")
    }

    /// Creates another app; returns it with its API key.
    pub fn add_app(&self, app_key: &str, settings: AppSettings) -> CreatedApp {
        let app_key = app_key.to_string();
        self.run(move |rt| async move {
            rt.create_app(NewApp {
                name: app_key.clone(),
                app_key: Some(app_key),
                app_id: None,
                settings,
                api_key: None,
            })
            .await
            .expect("create app")
        })
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    // ----- HTTP ----------------------------------------------------------------

    /// A request builder for `method path`, authenticated as the seeded app.
    pub fn call(&self, method: &str, path: &str) -> Call<'_> {
        Call {
            fixture: self,
            method: reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            path: path.to_string(),
            headers: vec![("x-api-key".into(), API_KEY.into())],
            body: None,
        }
    }

    /// `POST path` with a JSON body, as the seeded app.
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.call("POST", path).json(body).send()
    }

    /// `GET path`, as the seeded app.
    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path).send()
    }

    /// A call to the admin API with the fixture's admin token.
    pub fn admin(&self, method: &str, path: &str) -> Call<'_> {
        let call = self.call(method, path).no_auth();
        match &self.admin_token {
            Some(token) => call.header("authorization", &format!("Bearer {token}")),
            None => call,
        }
    }

    // ----- OTP helpers ----------------------------------------------------------

    /// `POST /v1/otp/request` for `phone` with the seeded app; asserts 200.
    pub fn request_otp(&self, phone: &str) -> Value {
        let resp = self.post(
            "/v1/otp/request",
            &serde_json::json!({"phone_number": phone, "app_key": APP_KEY}),
        );
        assert_eq!(resp.status, 200, "request failed: {}", resp.text);
        resp.body["data"].clone()
    }

    /// `POST /v1/otp/verify`.
    pub fn verify(&self, phone: &str, code: &str) -> Resp {
        self.post(
            "/v1/otp/verify",
            &serde_json::json!({"phone_number": phone, "app_key": APP_KEY, "code": code}),
        )
    }

    /// `GET /v1/otp/status` for `phone`.
    pub fn status(&self, phone: &str) -> Resp {
        self.get(&format!(
            "/v1/otp/status?phone_number={phone}&app_key={APP_KEY}"
        ))
    }

    /// The code carried by message `message_id`, waiting up to 5 s for the send.
    pub fn code_for(&self, message_id: &str) -> String {
        let text = self
            .wait_for(|m| m.message_id.to_string() == message_id)
            .unwrap_or_else(|| panic!("no message {message_id} was sent"))
            .text;
        first_digits(&text)
    }

    /// The code of the latest message to `phone`, waiting up to 5 s for one.
    pub fn last_code(&self, phone: &str) -> String {
        self.wait_for(|m| m.to == phone)
            .unwrap_or_else(|| panic!("no message to {phone} was sent"));
        let last = self
            .provider
            .messages()
            .into_iter()
            .rev()
            .find(|m| m.to == phone)
            .expect("a message to the phone");
        first_digits(&last.text)
    }

    /// Messages captured for `phone` so far (no waiting).
    pub fn messages_to(&self, phone: &str) -> usize {
        self.provider
            .messages()
            .iter()
            .filter(|m| m.to == phone)
            .count()
    }

    /// Gives in-flight sends a moment, for tests asserting that nothing was sent.
    pub fn settle(&self) {
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Polls `cond` every 10 ms for up to 5 s; returns whether it became true.
    pub fn wait_until(&self, cond: impl Fn() -> bool) -> bool {
        poll_blocking(Duration::from_secs(5), cond)
    }

    fn wait_for(&self, pred: impl Fn(&OutboundMessage) -> bool) -> Option<OutboundMessage> {
        let mut found = None;
        poll_blocking(Duration::from_secs(5), || {
            found = self.provider.messages().into_iter().find(|m| pred(m));
            found.is_some()
        });
        found
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The first run of digits in a message text: the code, with the default template.
pub fn first_digits(text: &str) -> String {
    text.chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect()
}

/// A request under construction.
pub struct Call<'a> {
    fixture: &'a Fixture,
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<reqwest::blocking::Body>,
}

impl Call<'_> {
    /// Adds (or replaces) a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends no `X-API-Key`.
    pub fn no_auth(mut self) -> Self {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("x-api-key"));
        self
    }

    /// Authenticates with `key` instead.
    pub fn api_key(self, key: &str) -> Self {
        self.header("x-api-key", key)
    }

    /// A JSON body with `Content-Type: application/json`.
    pub fn json(self, body: &Value) -> Self {
        let bytes = serde_json::to_vec(body).expect("json");
        self.header("content-type", "application/json").body(bytes)
    }

    /// Raw body bytes (with `Content-Length`), no `Content-Type` unless set.
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some(reqwest::blocking::Body::from(bytes.into()));
        self
    }

    /// Raw body bytes sent with chunked transfer encoding (no `Content-Length`).
    pub fn chunked(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some(reqwest::blocking::Body::new(std::io::Cursor::new(
            bytes.into(),
        )));
        self
    }

    /// Sends the request and reads the answer.
    pub fn send(self) -> Resp {
        let url = format!("{}{}", self.fixture.base, self.path);
        let mut req = self.fixture.client.request(self.method, url);
        for (name, value) in &self.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some(body) = self.body {
            req = req.body(body);
        }
        let resp = req.send().expect("request is answered");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }
}

/// An answer: status, headers and the body parsed as JSON (`Null` when it is not).
#[derive(Debug, Clone)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON, `Null` when empty or not JSON.
    pub body: Value,
    /// The raw body text.
    pub text: String,
}

impl Resp {
    /// `error.code`, or `""` on success.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// `data`.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// A header's value as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error envelope with `status` and `code`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer: {}",
            self.text
        );
        assert_eq!(self.body["success"], false, "{}", self.text);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.text
        );
    }

    /// Asserts a success envelope with `status`; returns `data`.
    #[track_caller]
    pub fn assert_ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        assert_eq!(self.body["success"], true, "{}", self.text);
        &self.body["data"]
    }
}
