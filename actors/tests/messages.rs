//! Messages at the runtime level: the status-rank guard under concurrency, channel
//! events, delivery reports, and messages leaving memory when final.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use otpd_actors::message::{Channel, MessageStatus, ReportType};
use otpd_actors::runtime::{DeliveryQuery, DeliveryReportRequest, SendMessage, StatusReport};
use otpd_actors::signing::verify_otpd_signature;
use otpd_actors::{Error, SendOtp};
use rand::seq::SliceRandom;

fn message(channel: Channel, report: Option<DeliveryReportRequest>) -> SendMessage {
    SendMessage {
        channel,
        to: "+255 712 345 678".into(),
        text: "hello".into(),
        sender_id: None,
        delivery_report: report,
    }
}

fn report(id: uuid::Uuid, status: MessageStatus) -> StatusReport {
    StatusReport {
        message_id: Some(id.to_string()),
        status,
        ..StatusReport::default()
    }
}

#[actix_rt::test]
async fn shuffled_duplicated_concurrent_reports_never_regress_and_emit_each_event_once() {
    let hook = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    webhook(&f, &hook.url, "whatsapp").await;
    let provider = f.provider.clone();
    provider.set_hanging(true); // reports race ahead of the provider's own "sent"
    let m = f
        .runtime
        .send_message(&f.app, message(Channel::Whatsapp, None))
        .await
        .unwrap();
    let mut reports = Vec::new();
    for status in [
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ] {
        for _ in 0..10 {
            reports.push(status);
        }
    }
    reports.shuffle(&mut rand::thread_rng());
    let tasks: Vec<_> = reports
        .into_iter()
        .map(|s| {
            let rt = f.runtime.clone();
            actix_rt::spawn(async move { rt.report_status(report(m.message_id, s)).await.unwrap() })
        })
        .collect();
    let mut applied = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        if a.applied {
            applied.push(a.status);
        }
    }
    // Every applied status ranks above the one before it, and none repeats.
    let rank = |s: &MessageStatus| {
        [
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Read,
        ]
        .iter()
        .position(|x| x == s)
    };
    let final_status = f
        .runtime
        .message(&f.app, m.message_id)
        .await
        .unwrap()
        .status;
    if applied.contains(&MessageStatus::Failed) {
        // failed only from queued/sent, and terminal.
        assert_eq!(final_status, MessageStatus::Failed);
        assert!(applied.len() <= 2);
    } else {
        assert_eq!(final_status, MessageStatus::Read);
        let ranks: Vec<_> = applied.iter().map(rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{applied:?}");
    }
    let got = hook.wait_for(applied.len()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events: Vec<String> = hook
        .received()
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = applied
        .iter()
        .map(|s| format!("whatsapp.{}", s.as_str()))
        .collect();
    assert_eq!(got.len(), expected.len());
    let (mut e1, mut e2) = (events.clone(), expected.clone());
    e1.sort();
    e2.sort();
    assert_eq!(e1, e2, "exactly one event per applied status");
}

#[actix_rt::test]
async fn reports_that_do_not_apply_change_nothing_and_emit_nothing() {
    let hook = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    webhook(&f, &hook.url, "sms").await;
    let m = f
        .runtime
        .send_message(&f.app, message(Channel::Sms, None))
        .await
        .unwrap();
    wait_message(&f, m.message_id, MessageStatus::Sent).await;
    hook.wait_for(1).await; // sms.sent
    let r = f
        .runtime
        .report_status(report(m.message_id, MessageStatus::Delivered))
        .await
        .unwrap();
    assert!(r.applied);
    hook.wait_for(2).await;
    for s in [
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ] {
        let r = f
            .runtime
            .report_status(report(m.message_id, s))
            .await
            .unwrap();
        assert!(!r.applied, "{s:?} after delivered");
        assert_eq!(r.status, MessageStatus::Delivered);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.hits(), 2);
    let by_provider = StatusReport {
        provider_message_id: Some(format!("prov-{}", m.message_id)),
        status: MessageStatus::Failed,
        ..StatusReport::default()
    };
    assert!(!f.runtime.report_status(by_provider).await.unwrap().applied);
    let unknown = report(uuid::Uuid::new_v4(), MessageStatus::Sent);
    assert!(matches!(
        f.runtime.report_status(unknown).await,
        Err(Error::NotFound(_))
    ));
}

#[actix_rt::test]
async fn delivery_reports_follow_their_type_and_carry_the_secret_and_signature() {
    let all = receiver(vec![Reply::Status(200, "")]).await;
    let fin = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    let req = |url: &str, t| DeliveryReportRequest {
        webhook_url: url.into(),
        delivery_report_type: Some(t),
        webhook_secret: Some("rep-secret".into()),
    };
    let a = f
        .runtime
        .send_message(
            &f.app,
            message(Channel::Sms, Some(req(&all.url, ReportType::All))),
        )
        .await
        .unwrap();
    let b = f
        .runtime
        .send_message(
            &f.app,
            message(Channel::Telegram, Some(req(&fin.url, ReportType::Final))),
        )
        .await
        .unwrap();
    wait_message(&f, a.message_id, MessageStatus::Sent).await;
    wait_message(&f, b.message_id, MessageStatus::Sent).await;
    f.runtime
        .report_status(report(a.message_id, MessageStatus::Delivered))
        .await
        .unwrap();
    let failed = StatusReport {
        error_code: Some("unreachable".into()),
        error_message: Some("handset off".into()),
        ..report(b.message_id, MessageStatus::Failed)
    };
    f.runtime.report_status(failed).await.unwrap();

    let got = all.wait_for(2).await;
    let mut bodies: Vec<_> = got.iter().map(|r| r.json()).collect();
    bodies.sort_by_key(|b| b["is_final"].as_bool());
    assert_eq!(
        (
            bodies[0]["status"].as_str(),
            bodies[0]["is_final"].as_bool()
        ),
        (Some("sent"), Some(false))
    );
    assert_eq!(
        (
            bodies[1]["status"].as_str(),
            bodies[1]["is_final"].as_bool()
        ),
        (Some("delivered"), Some(true))
    );
    assert_eq!(bodies[0]["delivery_report_type"], "all");
    assert_eq!(bodies[0]["channel"], "sms");
    assert!(bodies[0].get("reason").is_none());
    for r in &got {
        assert_eq!(r.header("x-otpd-webhook-secret"), "rep-secret");
        assert!(verify_otpd_signature(
            "rep-secret",
            r.body.as_bytes(),
            r.header("x-otpd-signature")
        ));
    }
    let got = fin.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fin.hits(), 1, "final: no report for sent");
    let body = got[0].json();
    assert_eq!(
        (body["status"].as_str(), body["is_final"].as_bool()),
        (Some("failed"), Some(true))
    );
    assert_eq!(body["reason"], "handset off");
    let reports = f
        .runtime
        .deliveries(
            &f.app,
            DeliveryQuery {
                kind: Some("report".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(reports.items.len(), 3);
}

#[actix_rt::test]
async fn final_messages_leave_memory_and_a_late_report_rehydrates_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    let m = f
        .runtime
        .send_message(&f.app, message(Channel::Whatsapp, None))
        .await
        .unwrap();
    wait_message(&f, m.message_id, MessageStatus::Sent).await;
    f.runtime
        .report_status(report(m.message_id, MessageStatus::Delivered))
        .await
        .unwrap();
    assert_eq!(f.runtime.message_actors(), 1);
    f.runtime.reap_idle(Duration::from_secs(3600));
    assert_eq!(
        f.runtime.message_actors(),
        1,
        "kept for the done-grace after its update"
    );
    f.clock.advance(Duration::from_millis(2300));
    f.runtime.reap_idle(Duration::from_secs(3600));
    assert_eq!(
        f.runtime.message_actors(),
        0,
        "a final message is not kept in memory"
    );
    let r = f
        .runtime
        .report_status(report(m.message_id, MessageStatus::Read))
        .await
        .unwrap();
    assert!(
        r.applied,
        "whatsapp read after delivered applies after rehydration"
    );
    assert_eq!(
        f.runtime
            .message(&f.app, m.message_id)
            .await
            .unwrap()
            .status,
        MessageStatus::Read
    );
}

#[actix_rt::test]
async fn an_otp_message_has_the_same_lifecycle_and_events() {
    let hook = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    webhook(&f, &hook.url, "sms").await;
    let issued = f
        .runtime
        .request(
            &f.app,
            SendOtp {
                phone_number: "+255712345678".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = issued.message_id.unwrap();
    wait_message(&f, id, MessageStatus::Sent).await;
    assert!(
        f.runtime
            .report_status(report(id, MessageStatus::Delivered))
            .await
            .unwrap()
            .applied
    );
    let got = hook.wait_for(2).await;
    let events: Vec<_> = got
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert!(
        events.contains(&"sms.sent".to_string()) && events.contains(&"sms.delivered".to_string()),
        "{events:?}"
    );
    let sent = got
        .iter()
        .map(|r| r.json())
        .find(|b| b["event"] == "sms.sent")
        .unwrap();
    assert_eq!(sent["data"]["message_id"], id.to_string());
    assert_eq!(sent["data"]["to"], "255712345678");
    assert!(
        !got.iter().any(|r| r.body.contains("text")),
        "the text (with the code) never travels in an event"
    );
}

#[actix_rt::test]
async fn the_providers_receipt_needs_no_actor_and_a_later_report_builds_on_it() {
    let hook = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    webhook(&f, &hook.url, "whatsapp").await;
    let m = f
        .runtime
        .send_message(&f.app, message(Channel::Whatsapp, None))
        .await
        .unwrap();
    wait_message(&f, m.message_id, MessageStatus::Sent).await;
    assert_eq!(
        f.runtime.message_actors(),
        0,
        "the sender applies the receipt to the committed record without an actor"
    );
    let r = f
        .runtime
        .report_status(report(m.message_id, MessageStatus::Delivered))
        .await
        .unwrap();
    assert!(
        r.applied,
        "the report's actor loaded `sent` and applies `delivered` over it"
    );
    let got = hook.wait_for(2).await;
    let mut events: Vec<String> = got
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    events.sort();
    assert_eq!(events, ["whatsapp.delivered", "whatsapp.sent"]);
}

#[actix_rt::test]
async fn reports_racing_the_providers_receipt_never_regress_a_message() {
    let hook = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    webhook(&f, &hook.url, "whatsapp").await;
    const N: usize = 40;
    let mut ids = Vec::new();
    let mut reports = Vec::new();
    for _ in 0..N {
        let m = f
            .runtime
            .send_message(&f.app, message(Channel::Whatsapp, None))
            .await
            .unwrap();
        ids.push(m.message_id);
        // Right behind the commit, racing the sender's own `sent`.
        let rt = f.runtime.clone();
        let id = m.message_id;
        reports.push(actix_rt::spawn(async move {
            rt.report_status(report(id, MessageStatus::Delivered))
                .await
                .unwrap()
        }));
    }
    for r in reports {
        assert!(
            r.await.unwrap().applied,
            "delivered ranks above queued and sent"
        );
    }
    for id in &ids {
        wait_message(&f, *id, MessageStatus::Delivered).await;
    }
    // Let any late `sent` land: it must be refused, never regress `delivered`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut delivered = 0;
    for id in &ids {
        let m = f.runtime.message(&f.app, *id).await.unwrap();
        assert_eq!(m.status, MessageStatus::Delivered, "{id}");
        delivered += 1;
    }
    assert_eq!(delivered, N);
    let delivered_events = |events: &[serde_json::Value]| {
        events
            .iter()
            .filter(|e| e["event"] == "whatsapp.delivered")
            .count()
    };
    let mut events: Vec<serde_json::Value> = Vec::new();
    for _ in 0..200 {
        events = hook.received().iter().map(|r| r.json()).collect();
        if delivered_events(&events) >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        let of = |name: &str| {
            events
                .iter()
                .filter(|e| e["event"] == name && e["data"]["message_id"] == id.to_string())
                .count()
        };
        assert_eq!(of("whatsapp.delivered"), 1, "{id}");
        assert!(of("whatsapp.sent") <= 1, "{id}");
    }
}

#[actix_rt::test]
async fn queued_messages_are_sent_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hanging: Arc<CapturingProvider> = Arc::default();
    hanging.set_hanging(true);
    let clock = start_clock();
    let f = start(
        loopback_config(dir.path()),
        clock.clone(),
        hanging,
        settings(),
    )
    .await;
    let m = f
        .runtime
        .send_message(&f.app, message(Channel::Telegram, None))
        .await
        .unwrap();
    f.runtime.shutdown().await;
    let f2 = start(
        loopback_config(dir.path()),
        clock,
        Arc::default(),
        settings(),
    )
    .await;
    wait_message(&f2, m.message_id, MessageStatus::Sent).await;
    assert_eq!(f2.provider.messages()[0].text, "hello");
}

#[actix_rt::test]
async fn bad_messages_are_refused_before_anything_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    let long = SendMessage {
        text: "x".repeat(1601),
        ..message(Channel::Sms, None)
    };
    assert!(matches!(
        f.runtime.send_message(&f.app, long).await,
        Err(Error::Validation(_))
    ));
    let empty = SendMessage {
        text: String::new(),
        ..message(Channel::Sms, None)
    };
    assert!(matches!(
        f.runtime.send_message(&f.app, empty).await,
        Err(Error::Validation(_))
    ));
    let bad_to = SendMessage {
        to: "12".into(),
        ..message(Channel::Sms, None)
    };
    assert!(matches!(
        f.runtime.send_message(&f.app, bad_to).await,
        Err(Error::InvalidPhoneNumber(_))
    ));
    let private = DeliveryReportRequest {
        webhook_url: "https://10.1.2.3/r".into(),
        ..Default::default()
    };
    let r = f
        .runtime
        .send_message(&f.app, message(Channel::Sms, Some(private)))
        .await;
    assert!(matches!(r, Err(Error::InvalidCallbackUrl(_))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.provider.calls(), 0);
}

/// A provider with a bug: every send panics.
struct PanickingProvider;

impl otpd_actors::Provider for PanickingProvider {
    fn send<'a>(
        &'a self,
        _message: &'a otpd_actors::OutboundMessage,
    ) -> futures::future::BoxFuture<
        'a,
        Result<otpd_actors::ProviderReceipt, otpd_actors::ProviderError>,
    > {
        panic!("a provider bug");
    }
}

#[actix_rt::test]
async fn a_panicking_provider_fails_only_its_send_and_the_message_stays_queued() {
    let dir = tempfile::tempdir().unwrap();
    let clock = start_clock();
    // The send starts on the caller's thread: the panic must not reach the caller.
    let runtime = otpd_actors::Runtime::builder(loopback_config(dir.path()))
        .clock(clock.clone())
        .provider(Arc::new(PanickingProvider))
        .start()
        .await
        .unwrap();
    let app = test_app(&runtime, settings()).await;
    let first = runtime
        .send_message(&app, message(Channel::Sms, None))
        .await
        .unwrap();
    let second = runtime
        .send_message(&app, message(Channel::Sms, None))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for id in [first.message_id, second.message_id] {
        let m = runtime.message(&app, id).await.unwrap();
        assert_eq!(m.status, MessageStatus::Queued, "{id}");
    }
    runtime.shutdown().await;
    // Still queued in storage: the next start sends them.
    let f = start(
        loopback_config(dir.path()),
        clock,
        Arc::default(),
        settings(),
    )
    .await;
    wait_message(&f, first.message_id, MessageStatus::Sent).await;
    wait_message(&f, second.message_id, MessageStatus::Sent).await;
}
