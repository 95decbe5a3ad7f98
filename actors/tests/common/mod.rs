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
use otpd_actors::provider::{OutboundMessage, Provider, ProviderError, ProviderReceipt};
use otpd_actors::{App, AppSettings, ManualClock, NewApp, Runtime};
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

/// A real HTTP receiver on 127.0.0.1 answering each request with the next status
/// from `script` (the last one repeats) and counting requests.
pub struct Receiver {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    pub bodies: Arc<Mutex<Vec<String>>>,
}

pub async fn receiver(script: Vec<(u16, &'static str)>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/send", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (h, b) = (hits.clone(), bodies.clone());
    actix_rt::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = h.fetch_add(1, Ordering::SeqCst);
            let (status, body) = script[n.min(script.len() - 1)];
            let b = b.clone();
            actix_rt::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers and a Content-Length body.
                loop {
                    let Ok(k) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            b.lock().unwrap().push(
                                String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string(),
                            );
                            break;
                        }
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Receiver { url, hits, bodies }
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
