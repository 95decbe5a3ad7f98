//! Shared fixtures for the runtime's integration tests: a runtime on a temp database
//! with a manual clock, a provider that captures codes, and a real HTTP receiver.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use otpd_actors::app::CreatedApp;
use otpd_actors::config::RuntimeConfig;
use otpd_actors::message::MessageStatus;
use otpd_actors::provider::{OutboundMessage, Provider, ProviderError, ProviderReceipt};
use otpd_actors::runtime::NewWebhook;
use otpd_actors::{App, AppSettings, ManualClock, NewApp, Runtime, SendOtp, VerifyOtp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A provider that records every message (so tests can read the code) and can be
/// told to refuse or to hang.
#[derive(Default)]
pub struct CapturingProvider {
    pub sent: Mutex<Vec<OutboundMessage>>,
    pub fail: AtomicBool,
    pub hang: AtomicBool,
    pub calls: AtomicUsize,
}

impl CapturingProvider {
    /// The code in the last message to `phone` (template is `{code}`).
    pub fn last_code(&self, phone: &str) -> Option<String> {
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .rev()
            .find(|m| m.to == phone)
            .map(|m| m.text.clone())
    }

    pub fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

impl Provider for CapturingProvider {
    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<ProviderReceipt, ProviderError>> {
        async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang.load(Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(ProviderError("refused by test".into()));
            }
            self.sent.lock().unwrap().push(message.clone());
            Ok(ProviderReceipt {
                provider_message_id: Some(format!("prov-{}", message.message_id)),
            })
        }
        .boxed()
    }
}

pub struct Fixture {
    pub runtime: Runtime,
    pub clock: Arc<ManualClock>,
    pub provider: Arc<CapturingProvider>,
    pub app: Arc<App>,
    pub db: std::path::PathBuf,
}

pub fn config(dir: &std::path::Path) -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config.storage.path = dir.join("otpd.sqlite3");
    config.security.code_pepper = Some("test-pepper-0123456789abcdef".into());
    config.runtime.arbiters = 2;
    config
}

pub fn settings() -> AppSettings {
    AppSettings {
        message_template: "{code}".into(),
        resend_cooldown_secs: 0,
        ..AppSettings::default()
    }
}

pub fn start_clock() -> Arc<ManualClock> {
    ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-06-07T12:00:00Z")
            .unwrap()
            .to_utc(),
    )
}

/// Starts a runtime (inside the current actix System) and creates one app if none exists.
pub async fn start(
    config: RuntimeConfig,
    clock: Arc<ManualClock>,
    provider: Arc<CapturingProvider>,
    settings: AppSettings,
) -> Fixture {
    let db = config.storage.path.clone();
    let runtime = Runtime::builder(config)
        .clock(clock.clone())
        .provider(provider.clone())
        .start()
        .await
        .unwrap();
    let app = match runtime.apps().first() {
        Some(app) => app.clone(),
        None => {
            let CreatedApp { app, .. } = runtime
                .create_app(NewApp {
                    name: "test".into(),
                    app_key: Some("test".into()),
                    settings,
                    ..NewApp::default()
                })
                .await
                .unwrap();
            Arc::new(app)
        }
    };
    Fixture {
        runtime,
        clock,
        provider,
        app,
        db,
    }
}

/// Waits (real time, bounded) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// This status and body.
    Status(u16, &'static str),
    /// This status with a `Retry-After` header (seconds).
    RetryAfter(u16, u64),
    /// Never answer (until the client gives up).
    Hang,
    /// Close the connection without answering.
    Reset,
    /// Answer 200 after this many milliseconds.
    Slow(u64),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A real HTTP receiver on 127.0.0.1 answering each request with the next reply
/// from `script` (the last one repeats), recording what it got.
pub struct Receiver {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.body).collect()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let got = self.got.clone();
        eventually(&format!("{n} requests at {}", self.url), || {
            got.lock().unwrap().len() >= n
        })
        .await;
        self.received()
    }
}

pub async fn receiver(script: Vec<Reply>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (h, g) = (hits.clone(), got.clone());
    actix_rt::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (h, g, script) = (h.clone(), g.clone(), script.clone());
            actix_rt::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let received = loop {
                    let Ok(k) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let mut lines = head.lines();
                    let path = lines
                        .next()
                        .unwrap_or("")
                        .split(' ')
                        .nth(1)
                        .unwrap_or("")
                        .to_string();
                    let headers: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len = headers
                        .get("content-length")
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let body =
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                        break Received {
                            path,
                            headers,
                            body,
                        };
                    }
                };
                let n = h.fetch_add(1, Ordering::SeqCst);
                g.lock().unwrap().push(received);
                let reply = script[n.min(script.len() - 1)];
                let (status, extra, body) = match reply {
                    Reply::Status(s, b) => (s, String::new(), b),
                    Reply::RetryAfter(s, secs) => (s, format!("retry-after: {secs}\r\n"), "{}"),
                    Reply::Hang => {
                        futures::future::pending::<()>().await;
                        return;
                    }
                    Reply::Reset => {
                        drop(sock);
                        return;
                    }
                    Reply::Slow(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        (200, String::new(), "{}")
                    }
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Receiver { url, hits, got }
}

/// A config whose URL policy lets deliveries reach loopback receivers.
pub fn loopback_config(dir: &std::path::Path) -> RuntimeConfig {
    let mut c = config(dir);
    c.callbacks.allow_http = true;
    c.callbacks.allowed_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    c
}

/// A runtime on a fresh database in `dir`, whose deliveries may reach loopback
/// receivers, with a manual clock, a capturing provider and the test settings.
pub async fn start_loopback(dir: &std::path::Path) -> Fixture {
    start(
        loopback_config(dir),
        start_clock(),
        Arc::default(),
        settings(),
    )
    .await
}

/// Map of phone → code from a provider, for convenience.
pub fn codes(provider: &CapturingProvider) -> HashMap<String, String> {
    provider
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|m| (m.to.clone(), m.text.clone()))
        .collect()
}

/// A request for `phone` with an optional callback target.
pub fn send(phone: &str) -> SendOtp {
    send_with(phone, None, None)
}

pub fn send_with(phone: &str, cb: Option<&str>, secret: Option<&str>) -> SendOtp {
    SendOtp {
        phone_number: phone.into(),
        callback_url: cb.map(str::to_string),
        callback_secret: secret.map(str::to_string),
        ..SendOtp::default()
    }
}

pub fn verify(phone: &str, code: &str) -> VerifyOtp {
    VerifyOtp {
        phone_number: phone.into(),
        code: code.into(),
        ..VerifyOtp::default()
    }
}

pub async fn code_for(f: &Fixture, phone: &str) -> String {
    let provider = f.provider.clone();
    let p = phone.to_string();
    eventually("the code to be sent", || provider.last_code(&p).is_some()).await;
    f.provider.last_code(phone).unwrap()
}

/// The code of the `n`-th message (1-based) sent to `phone`.
pub async fn nth_code(f: &Fixture, phone: &str, n: usize) -> String {
    let provider = f.provider.clone();
    let p = phone.to_string();
    let sent_to = move || {
        provider
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.to == p)
            .count()
    };
    eventually("the n-th code", || sent_to() >= n).await;
    let sent = f.provider.sent.lock().unwrap();
    sent.iter()
        .filter(|m| m.to == phone)
        .nth(n - 1)
        .unwrap()
        .text
        .clone()
}

pub async fn wait_message(f: &Fixture, id: uuid::Uuid, status: MessageStatus) {
    for _ in 0..300 {
        if f.runtime.message(&f.app, id).await.unwrap().status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("message never became {status:?}");
}

pub async fn webhook(
    f: &Fixture,
    url: &str,
    service_type: &str,
) -> Arc<otpd_actors::webhooks::Webhook> {
    let new = NewWebhook {
        url: url.into(),
        service_type: service_type.into(),
        ..Default::default()
    };
    f.runtime.create_webhook(&f.app, new).await.unwrap()
}
