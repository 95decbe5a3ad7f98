//! Shared fixtures for the runtime's integration tests: a runtime on a temp database
//! with a manual clock and the capturing provider. The provider, the scripted HTTP
//! receiver and `eventually` come from `otpd-test-support` (re-exported here).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use otpd_actors::app::CreatedApp;
use otpd_actors::config::RuntimeConfig;
use otpd_actors::message::MessageStatus;
use otpd_actors::runtime::NewWebhook;
use otpd_actors::{
    App, AppSettings, ManualClock, NewApp, Runtime, RuntimeBuilder, SendOtp, VerifyOtp,
};
#[allow(unused_imports)]
pub use otpd_test_support::{eventually, CapturingProvider, Received, Receiver, Reply};

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
    start_with(config, clock, provider, settings, |builder| builder).await
}

/// As [`start`], with `tweak` applied to the runtime builder last (e.g. recover limits).
pub async fn start_with(
    config: RuntimeConfig,
    clock: Arc<ManualClock>,
    provider: Arc<CapturingProvider>,
    settings: AppSettings,
    tweak: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
) -> Fixture {
    let db = config.storage.path.clone();
    let builder = Runtime::builder(config)
        .clock(clock.clone())
        .provider(provider.clone());
    let runtime = tweak(builder).start().await.unwrap();
    let app = match runtime.apps().first() {
        Some(app) => app.clone(),
        None => test_app(&runtime, settings).await,
    };
    Fixture {
        runtime,
        clock,
        provider,
        app,
        db,
    }
}

/// Creates the app `test` (key `test`) with `settings` on `runtime`.
pub async fn test_app(runtime: &Runtime, settings: AppSettings) -> Arc<App> {
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

/// A scripted receiver (see [`otpd_test_support::receiver`]); async so existing
/// callers read `receiver(script).await`.
pub async fn receiver(script: Vec<Reply>) -> Receiver {
    Receiver::start(script)
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
    provider.codes()
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
    eventually("the n-th code", || provider.count_to(phone) >= n).await;
    f.provider.nth_text(phone, n).unwrap()
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
