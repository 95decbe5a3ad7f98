//! The delivery engine against real local HTTP receivers: events, signatures,
//! retries, timeouts, pause, isolation, manual retry, recover, rotation.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use otpd_actors::runtime::{DeliveryQuery, NewWebhook, WebhookPatch};
use otpd_actors::signing::{verify_otpd_signature, verify_standard_signature};
use otpd_actors::DeliveryStatus;
use otpd_actors::{Error, VerifyOtp};

const PHONE: &str = "+255712345678";
const CANON: &str = "255712345678";

fn check_signed(r: &Received, secret: &str) {
    let body = r.body.as_bytes();
    assert!(
        verify_otpd_signature(secret, body, r.header("x-otpd-signature")),
        "X-Otpd-Signature"
    );
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    assert!(verify_standard_signature(
        secret,
        r.header("webhook-id"),
        ts,
        body,
        r.header("webhook-signature")
    ));
}

#[actix_rt::test]
async fn verify_with_callback_sends_a_signed_flake_verified_with_every_header() {
    let cb = receiver(vec![Reply::Status(200, "{}")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    f.runtime
        .request(&f.app, send_with(PHONE, Some(&cb.url), Some("s3cret")))
        .await
        .unwrap();
    let code = code_for(&f, CANON).await;
    f.runtime
        .verify(&f.app, verify(PHONE, &code))
        .await
        .unwrap();
    let got = cb.wait_for(1).await;
    let r = &got[0];
    let body = r.json();
    assert_eq!(body["event"], "flake.verified");
    assert_eq!(body["channel"], "flake");
    assert_eq!(body["app_id"], f.app.app_id.to_string());
    assert_eq!(body["data"]["status"], "verified");
    assert_eq!(body["data"]["phone_number"], CANON);
    assert!(
        !r.body.contains(&code),
        "the code never travels in an event"
    );
    assert_eq!(r.header("x-otpd-event"), "flake.verified");
    assert_eq!(r.header("x-otpd-event-id"), body["id"].as_str().unwrap());
    assert_eq!(
        r.header("x-otpd-timestamp"),
        body["created_at"].as_str().unwrap()
    );
    assert_eq!(r.header("x-otpd-app-id"), f.app.app_id.to_string());
    assert_eq!(r.header("x-otpd-service-type"), "flake");
    assert!(r.header("x-otpd-delivery-id").starts_with("dlv_"));
    assert_eq!(r.header("x-otpd-attempt"), "1");
    assert_eq!(r.header("user-agent"), "otpd-webhook/1.0");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("webhook-id"), r.header("x-otpd-event-id"));
    check_signed(r, "s3cret");
}

#[actix_rt::test]
async fn the_otp_webhook_gets_created_failed_verified_and_expired_events() {
    let hook = receiver(vec![Reply::Status(204, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    let w = webhook(&f, &hook.url, "otp").await;
    assert!(w.secret.starts_with("whsec_"));
    f.runtime
        .request(&f.app, send_with(PHONE, None, None))
        .await
        .unwrap();
    let code = code_for(&f, CANON).await;
    f.runtime
        .verify(&f.app, verify(PHONE, "bad"))
        .await
        .unwrap();
    f.runtime
        .verify(&f.app, verify(PHONE, &code))
        .await
        .unwrap();
    f.runtime
        .request(&f.app, send_with("+255713000001", None, None))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(601));
    f.runtime
        .verify(&f.app, verify("+255713000001", "123456"))
        .await
        .unwrap();
    let got = hook.wait_for(5).await;
    let mut names: Vec<String> = got
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "otp.created",
            "otp.created",
            "otp.expired",
            "otp.failed",
            "otp.verified"
        ]
    );
    let failed = got
        .iter()
        .map(Received::json)
        .find(|b| b["event"] == "otp.failed")
        .unwrap();
    assert_eq!(failed["data"]["reason"], "invalid_code");
    assert_eq!(failed["data"]["remaining_attempts"], 2);
    for r in &got {
        assert_eq!(r.header("x-otpd-service-type"), "otp");
        check_signed(r, &w.secret);
    }
}

#[actix_rt::test]
async fn failed_attempts_retry_on_the_schedule_with_the_same_event_id_then_succeed() {
    let hook = receiver(vec![
        Reply::Status(500, "{}"),
        Reply::Reset,
        Reply::Status(200, "{}"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = loopback_config(dir.path());
    cfg.delivery.retry_schedule_secs = vec![5, 30];
    let f = start(cfg, start_clock(), Arc::default(), settings()).await;
    let w = webhook(&f, &hook.url, "otp").await;
    let delivery_id = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    hook.wait_for(1).await;
    let c = f.clock.clone();
    eventually("retry timer", || c.sleepers() == 1).await;
    f.clock.advance(Duration::from_secs(5));
    hook.wait_for(2).await;
    eventually("retry timer", || c.sleepers() == 1).await;
    f.clock.advance(Duration::from_secs(30));
    let got = hook.wait_for(3).await;
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("x-otpd-event-id").to_string())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    let attempts: Vec<_> = got
        .iter()
        .map(|r| r.header("x-otpd-attempt").to_string())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert_eq!(got[0].json()["event"], "otp.test");
    assert_eq!(got[0].json()["data"]["test"], true);
    let detail = wait_status(&f, &delivery_id, DeliveryStatus::Succeeded).await;
    assert_eq!(detail.attempt_log.len(), 3);
    assert_eq!(detail.attempt_log[0].status_code, Some(500));
    assert!(
        detail.attempt_log[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("connection")
            || detail.attempt_log[1].error.is_some()
    );
    assert_eq!(detail.attempt_log[2].status_code, Some(200));
    assert_eq!(detail.payload, got[0].body);
}

async fn wait_status(
    f: &Fixture,
    id: &str,
    status: DeliveryStatus,
) -> otpd_actors::runtime::DeliveryDetail {
    for _ in 0..300 {
        let d = f.runtime.delivery(&f.app, id).await.unwrap();
        if d.view.status == status {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("delivery {id} never became {status:?}");
}

#[actix_rt::test]
async fn gone_stops_retrying_and_retry_after_is_honoured_up_to_four_times_the_delay() {
    let gone = receiver(vec![Reply::Status(410, "")]).await;
    let busy = receiver(vec![
        Reply::RetryAfter(503, 3),
        Reply::RetryAfter(429, 1000),
        Reply::Status(200, ""),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = loopback_config(dir.path());
    cfg.delivery.retry_schedule_secs = vec![1, 2];
    let f = start(cfg, start_clock(), Arc::default(), settings()).await;
    let w = webhook(&f, &gone.url, "otp").await;
    let id = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    let d = wait_status(&f, &id, DeliveryStatus::Failed).await;
    assert_eq!((d.view.attempts, d.view.last_status_code), (1, Some(410)));

    f.runtime
        .update_webhook(
            &f.app,
            &w.id,
            WebhookPatch {
                url: Some(busy.url.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    busy.wait_for(1).await;
    let c = f.clock.clone();
    eventually("retry timer", || c.sleepers() == 1).await;
    // Retry-After: 3 is honoured over the 1 s schedule (cap 4 s).
    f.clock.advance(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(busy.hits(), 1);
    f.clock.advance(Duration::from_secs(1));
    busy.wait_for(2).await;
    eventually("retry timer", || c.sleepers() == 1).await;
    // Retry-After: 1000 is capped at 4 × 2 s.
    f.clock.advance(Duration::from_secs(8));
    busy.wait_for(3).await;
    wait_status(&f, &id, DeliveryStatus::Succeeded).await;
}

#[actix_rt::test]
async fn a_hanging_endpoint_times_out_and_does_not_delay_a_healthy_one() {
    let hang = receiver(vec![Reply::Hang]).await;
    let healthy = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = loopback_config(dir.path());
    cfg.delivery.attempt_timeout_secs = 3;
    cfg.delivery.retry_schedule_secs = vec![];
    cfg.delivery.max_in_flight = 4;
    let f = start(cfg, start_clock(), Arc::default(), settings()).await;
    let hung = webhook(&f, &hang.url, "otp").await;
    // Fill the hanging endpoint's in-flight slots and queue.
    let mut hung_ids = Vec::new();
    for _ in 0..10 {
        hung_ids.push(f.runtime.test_webhook(&f.app, &hung.id).await.unwrap());
    }
    // Callbacks to the healthy endpoint go through their own actor.
    for i in 0..5 {
        let phone = format!("+25571300000{i}");
        f.runtime
            .request(&f.app, send_with(&phone, Some(&healthy.url), None))
            .await
            .unwrap();
        let code = code_for(&f, &phone.replace('+', "")).await;
        f.runtime
            .verify(&f.app, verify(&phone, &code))
            .await
            .unwrap();
    }
    healthy.wait_for(5).await;
    // Every healthy delivery arrived while the hanging endpoint's first attempts
    // were still waiting for their 3 s timeout: nothing of it was shared.
    for id in &hung_ids {
        let d = f.runtime.delivery(&f.app, id).await.unwrap();
        assert_eq!(
            d.view.status,
            DeliveryStatus::Pending,
            "the hanging deliveries are still in flight"
        );
        assert!(d.attempt_log.is_empty());
    }
    let d = wait_status(&f, &hung_ids[0], DeliveryStatus::Failed).await;
    assert!(d.view.last_error.unwrap_or_default().contains("timed out"));
}

#[actix_rt::test]
async fn consecutive_failures_pause_the_endpoint_and_deliveries_wait_then_resume() {
    let hook = receiver(vec![
        Reply::Status(500, ""),
        Reply::Status(500, ""),
        Reply::Status(200, ""),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = loopback_config(dir.path());
    cfg.delivery.retry_schedule_secs = vec![];
    cfg.delivery.pause_after_failures = 2;
    cfg.delivery.pause_secs = 300;
    cfg.delivery.max_in_flight = 1;
    let f = start(cfg, start_clock(), Arc::default(), settings()).await;
    let w = webhook(&f, &hook.url, "otp").await;
    let a = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    wait_status(&f, &a, DeliveryStatus::Failed).await;
    let b = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    wait_status(&f, &b, DeliveryStatus::Failed).await;
    let stats = f.runtime.webhook_stats(&f.app, &w.id).await.unwrap();
    assert!(
        stats.paused_until.is_some(),
        "paused after 2 failed deliveries"
    );
    let c = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.hits(), 2, "a paused endpoint gets nothing");
    assert_eq!(
        f.runtime.delivery(&f.app, &c).await.unwrap().view.status,
        DeliveryStatus::Pending
    );
    f.clock.advance(Duration::from_secs(300));
    wait_status(&f, &c, DeliveryStatus::Succeeded).await;
    let stats = f.runtime.webhook_stats(&f.app, &w.id).await.unwrap();
    assert_eq!(
        (stats.total, stats.succeeded, stats.failed, stats.pending),
        (3, 1, 2, 0)
    );
    assert!(stats.paused_until.is_none());
    assert!(stats.latency_ms.p50.is_some());
}

#[actix_rt::test]
async fn manual_retry_and_recover_start_new_series_with_the_same_event() {
    let hook = receiver(vec![
        Reply::Status(500, ""),
        Reply::Status(500, ""),
        Reply::Status(200, ""),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = loopback_config(dir.path());
    cfg.delivery.retry_schedule_secs = vec![];
    let f = start(cfg, start_clock(), Arc::default(), settings()).await;
    let w = webhook(&f, &hook.url, "otp").await;
    let since = otpd_actors::Clock::now(&*f.clock);
    let a = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    let b = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    wait_status(&f, &a, DeliveryStatus::Failed).await;
    wait_status(&f, &b, DeliveryStatus::Failed).await;
    let failed = f
        .runtime
        .deliveries(
            &f.app,
            DeliveryQuery {
                status: Some("failed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 2);
    f.runtime.retry_delivery(&f.app, &a).await.unwrap();
    let d = wait_status(&f, &a, DeliveryStatus::Succeeded).await;
    assert_eq!(d.view.attempts, 2);
    let got = hook.received();
    assert_eq!(
        got[2].header("x-otpd-event-id"),
        got.iter()
            .find(|r| r.header("x-otpd-delivery-id") == a)
            .unwrap()
            .header("x-otpd-event-id")
    );
    assert_eq!(
        f.runtime
            .recover_webhook(&f.app, &w.id, since, None)
            .await
            .unwrap(),
        1
    );
    wait_status(&f, &b, DeliveryStatus::Succeeded).await;
}

#[actix_rt::test]
async fn rotated_secret_signs_alone_in_x_otpd_and_beside_the_old_one_in_standard_webhooks() {
    let hook = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    let w = webhook(&f, &hook.url, "otp").await;
    let old = w.secret.clone();
    let new = f
        .runtime
        .rotate_webhook_secret(&f.app, &w.id)
        .await
        .unwrap()
        .secret;
    assert_ne!(old, new);
    f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    let r = hook.wait_for(1).await.remove(0);
    assert!(verify_otpd_signature(
        &new,
        r.body.as_bytes(),
        r.header("x-otpd-signature")
    ));
    assert!(!verify_otpd_signature(
        &old,
        r.body.as_bytes(),
        r.header("x-otpd-signature")
    ));
    assert_eq!(r.header("webhook-signature").split(' ').count(), 2);
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    for s in [&old, &new] {
        assert!(verify_standard_signature(
            s,
            r.header("webhook-id"),
            ts,
            r.body.as_bytes(),
            r.header("webhook-signature")
        ));
    }
    f.clock.advance(Duration::from_secs(86_400));
    f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    let r = hook.wait_for(2).await.remove(1);
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
}

#[actix_rt::test]
async fn resend_keeps_the_callback_and_verify_can_override_it_reusing_the_secret() {
    let first = receiver(vec![Reply::Status(200, "")]).await;
    let second = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    f.runtime
        .request(&f.app, send_with(PHONE, Some(&first.url), Some("one")))
        .await
        .unwrap();
    f.runtime
        .resend(&f.app, send_with(PHONE, None, None))
        .await
        .unwrap();
    let code = nth_code(&f, CANON, 2).await;
    f.runtime
        .verify(&f.app, verify(PHONE, &code))
        .await
        .unwrap();
    check_signed(&first.wait_for(1).await[0], "one");

    f.runtime
        .request(&f.app, send_with(PHONE, Some(&first.url), Some("one")))
        .await
        .unwrap();
    let code = nth_code(&f, CANON, 3).await;
    let v = VerifyOtp {
        callback_url: Some(second.url.clone()),
        ..verify(PHONE, &code)
    };
    f.runtime.verify(&f.app, v).await.unwrap();
    check_signed(&second.wait_for(1).await[0], "one");
    assert_eq!(first.hits(), 1);
}

#[actix_rt::test]
async fn max_attempts_sends_flake_failed_to_the_callback() {
    let cb = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    f.runtime
        .request(&f.app, send_with(PHONE, Some(&cb.url), None))
        .await
        .unwrap();
    for _ in 0..4 {
        f.runtime.verify(&f.app, verify(PHONE, "x")).await.unwrap();
    }
    let got = cb.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cb.hits(), 1, "one flake.failed, nothing for later codes");
    let body = got[0].json();
    assert_eq!(body["event"], "flake.failed");
    assert_eq!(body["data"]["reason"], "max_attempts");
    assert_eq!(body["data"]["remaining_attempts"], 0);
    assert!(
        got[0].header("x-otpd-signature").is_empty(),
        "no secret, no signature"
    );
}

#[actix_rt::test]
async fn refused_callback_urls_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(
        config(dir.path()),
        start_clock(),
        Arc::default(),
        settings(),
    )
    .await;
    for url in [
        "http://example.com/cb",
        "https://127.0.0.1/cb",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://user:pw@example.com/",
        "https://0x7f.1/",
    ] {
        let r = f
            .runtime
            .request(&f.app, send_with(PHONE, Some(url), None))
            .await;
        assert!(
            matches!(r, Err(Error::InvalidCallbackUrl(_))),
            "{url}: {r:?}"
        );
    }
    assert!(matches!(
        f.runtime.status(&f.app, PHONE).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(f.provider.count(), 0);
    let r = f
        .runtime
        .create_webhook(
            &f.app,
            NewWebhook {
                url: "https://169.254.169.254/".into(),
                service_type: "otp".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(Error::InvalidCallbackUrl(_))));
}

#[actix_rt::test]
async fn webhook_management_rules() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    let w = webhook(&f, "http://127.0.0.1:9/x", "otp").await;
    assert_eq!(w.events.len(), 4);
    assert!(matches!(
        f.runtime
            .create_webhook(
                &f.app,
                NewWebhook {
                    url: "http://127.0.0.1:9/y".into(),
                    service_type: "otp".into(),
                    ..Default::default()
                }
            )
            .await,
        Err(Error::Conflict(_))
    ));
    let bad = NewWebhook {
        url: "http://127.0.0.1:9/y".into(),
        service_type: "sms".into(),
        events: Some(vec!["otp.created".into()]),
        ..Default::default()
    };
    assert!(matches!(
        f.runtime.create_webhook(&f.app, bad).await,
        Err(Error::Validation(_))
    ));
    let reserved = NewWebhook {
        url: "http://127.0.0.1:9/y".into(),
        service_type: "sms".into(),
        events: Some(vec!["identity.created".into(), "sms.sent".into()]),
        ..Default::default()
    };
    assert!(f.runtime.create_webhook(&f.app, reserved).await.is_ok());
    let flake = NewWebhook {
        url: "http://127.0.0.1:9/z".into(),
        service_type: "flake".into(),
        ..Default::default()
    };
    assert!(matches!(
        f.runtime.create_webhook(&f.app, flake).await,
        Err(Error::Validation(_))
    ));
    let patched = f
        .runtime
        .update_webhook(
            &f.app,
            &w.id,
            WebhookPatch {
                status: Some("disabled".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.status.as_str(), "disabled");
    assert_eq!(f.runtime.webhooks(&f.app).len(), 2);
    f.runtime.delete_webhook(&f.app, &w.id).await.unwrap();
    assert!(matches!(
        f.runtime.webhook(&f.app, &w.id),
        Err(Error::NotFound(_))
    ));
}

#[actix_rt::test]
async fn idle_callback_endpoint_actors_leave_the_registry() {
    let cb = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    f.runtime
        .request(&f.app, send_with(PHONE, Some(&cb.url), None))
        .await
        .unwrap();
    let code = code_for(&f, CANON).await;
    f.runtime
        .verify(&f.app, verify(PHONE, &code))
        .await
        .unwrap();
    cb.wait_for(1).await;
    assert_eq!(f.runtime.delivery_actors(), 1);
    // Idle time is clock time; the actor may still be recording the attempt (busy),
    // so each poll moves the clock past the idle limit and reaps again.
    let (runtime, clock) = (f.runtime.clone(), f.clock.clone());
    eventually("the idle endpoint actor to be reaped", || {
        clock.advance(Duration::from_millis(1100));
        runtime.reap_idle(Duration::from_secs(1));
        runtime.delivery_actors() == 0
    })
    .await;
    assert_eq!(f.runtime.delivery_actors(), 0);
}

#[actix_rt::test]
async fn unfinished_deliveries_resume_after_restart_with_the_same_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = loopback_config(dir.path());
    cfg.delivery.retry_schedule_secs = vec![3600];
    let hook = receiver(vec![Reply::Status(500, ""), Reply::Status(200, "")]).await;
    let clock = start_clock();
    let f = start(cfg.clone(), clock.clone(), Arc::default(), settings()).await;
    let w = webhook(&f, &hook.url, "otp").await;
    let id = f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
    let first = hook.wait_for(1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.runtime.shutdown().await;

    let f2 = start(cfg, clock, Arc::default(), settings()).await;
    let got = hook.wait_for(2).await;
    assert_eq!(
        got[1].header("x-otpd-event-id"),
        first.header("x-otpd-event-id")
    );
    assert_eq!(got[1].body, first.body);
    wait_status(&f2, &id, DeliveryStatus::Succeeded).await;
}

#[actix_rt::test]
async fn delivery_list_pages_with_a_cursor_and_filters_by_kind() {
    let hook = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    let w = webhook(&f, &hook.url, "otp").await;
    for _ in 0..5 {
        f.runtime.test_webhook(&f.app, &w.id).await.unwrap();
        f.clock.advance(Duration::from_millis(5));
    }
    hook.wait_for(5).await;
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .runtime
            .deliveries(
                &f.app,
                DeliveryQuery {
                    webhook_id: Some(w.id.clone()),
                    limit: Some(2),
                    cursor,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|d| d.delivery_id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    seen.dedup();
    assert_eq!(seen.len(), 5);
    let callbacks = f
        .runtime
        .deliveries(
            &f.app,
            DeliveryQuery {
                kind: Some("callback".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(callbacks.items.is_empty());
    assert!(matches!(
        f.runtime
            .deliveries(
                &f.app,
                DeliveryQuery {
                    cursor: Some("junk".into()),
                    ..Default::default()
                }
            )
            .await,
        Err(Error::InvalidRequest(_))
    ));
}

#[actix_rt::test]
async fn callback_endpoints_leave_memory_once_their_deliveries_finish() {
    let cb = receiver(vec![Reply::Status(200, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    const URLS: usize = 30;
    for i in 0..URLS {
        let phone = format!("+25571234{i:04}");
        let url = format!("{}/{i}", cb.url);
        f.runtime
            .request(&f.app, send_with(&phone, Some(&url), None))
            .await
            .unwrap();
        let code = code_for(&f, &phone[1..]).await;
        f.runtime
            .verify(&f.app, verify(&phone, &code))
            .await
            .unwrap();
    }
    cb.wait_for(URLS).await;
    assert!(f.runtime.gauges().delivery_endpoints_tracked >= 1);
    // Reaping idle endpoint actors also forgets their health: nothing is paused.
    let runtime = f.runtime.clone();
    let clock = f.clock.clone();
    eventually("every callback endpoint to be forgotten", || {
        // Idle time is clock time: each poll moves it past the idle limit.
        clock.advance(Duration::from_secs(1));
        runtime.reap_idle(Duration::from_secs(1));
        runtime.gauges().delivery_endpoints_tracked == 0
    })
    .await;
}

#[actix_rt::test]
async fn recover_pages_through_the_window_and_bounds_the_endpoint_backlog() {
    let down = receiver(vec![Reply::Status(500, "")]).await;
    let slow = receiver(vec![Reply::Slow(5)]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = loopback_config(dir.path());
    cfg.delivery.retry_schedule_secs = vec![];
    // Every failure reaches the receiver (no pause after ten in a row).
    cfg.delivery.pause_after_failures = 1_000;
    let f = start_with(cfg, start_clock(), Arc::default(), settings(), |b| {
        b.recover_limits(10, 20)
    })
    .await;
    let (runtime, app) = (f.runtime.clone(), f.app.clone());
    let w = webhook(&f, &down.url, "otp").await;
    const FAILED: usize = 100;
    for _ in 0..FAILED {
        runtime.test_webhook(&app, &w.id).await.unwrap();
    }
    down.wait_for(FAILED).await;
    let failed = |rt: &otpd_actors::Runtime| {
        let (rt, app, id) = (rt.clone(), app.clone(), w.id.clone());
        async move { rt.webhook_stats(&app, &id).await.unwrap().failed }
    };
    for _ in 0..500 {
        if failed(&runtime).await as usize == FAILED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(failed(&runtime).await as usize, FAILED);
    runtime
        .update_webhook(
            &app,
            &w.id,
            WebhookPatch {
                url: Some(slow.url.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Sample the queue depth while the recovery runs.
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (rt, peak, done) = (runtime.clone(), peak.clone(), done.clone());
        actix_rt::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rt.gauges().deliveries_pending, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let since = chrono::DateTime::UNIX_EPOCH;
    let count = runtime
        .recover_webhook(&app, &w.id, since, None)
        .await
        .unwrap();
    assert_eq!(count, FAILED);
    let got = slow.wait_for(FAILED).await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let ids: std::collections::HashSet<String> = got
        .iter()
        .map(|r| r.header("x-otpd-delivery-id").to_string())
        .collect();
    assert_eq!(
        ids.len(),
        FAILED,
        "every failed delivery retried exactly once"
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= 20 + 10,
        "the endpoint held {peak} deliveries: more than the backlog bound and one page"
    );
    runtime.shutdown().await;
}
