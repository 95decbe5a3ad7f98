//! The runtime driven directly (no HTTP): the rules that need actors, storage and
//! time together.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use otpd_actors::config::ProviderKind;
use otpd_actors::message::MessageStatus;
use otpd_actors::otp::{FlakeStatus, VerifyOutcome};
use otpd_actors::{Error, ManualClock, Runtime};

const PHONE: &str = "+255 712 345 678";
const CANON: &str = "255712345678";

#[actix_rt::test]
async fn fifty_concurrent_wrong_verifies_compare_exactly_max_attempts_codes() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(
        config(dir.path()),
        start_clock(),
        Arc::default(),
        settings(),
    )
    .await;
    f.runtime.request(&f.app, send(PHONE)).await.unwrap();
    let code = code_for(&f, CANON).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (rt, app) = (f.runtime.clone(), f.app.clone());
            actix_rt::spawn(async move { rt.verify(&app, verify(PHONE, wrong)).await })
        })
        .collect();
    let mut invalid = 0;
    let mut failed_now = 0;
    let mut failed_before = 0;
    for t in tasks {
        match t.await.unwrap().unwrap().outcome {
            VerifyOutcome::InvalidCode { .. } => invalid += 1,
            VerifyOutcome::MaxAttempts {
                just_failed: true, ..
            } => failed_now += 1,
            VerifyOutcome::MaxAttempts {
                just_failed: false, ..
            } => failed_before += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((invalid, failed_now, failed_before), (2, 1, 47));
    let status = f.runtime.status(&f.app, PHONE).await.unwrap();
    assert_eq!((status.attempts, status.status), (3, FlakeStatus::Failed));
    let after = f
        .runtime
        .verify(&f.app, verify(PHONE, &code))
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(after, VerifyOutcome::MaxAttempts { .. }),
        "{after:?}"
    );
}

#[actix_rt::test]
async fn supervisor_restarts_a_faulted_actor_from_its_snapshot_on_the_same_address() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(
        config(dir.path()),
        start_clock(),
        Arc::default(),
        settings(),
    )
    .await;
    f.runtime.request(&f.app, send(PHONE)).await.unwrap();
    let code = code_for(&f, CANON).await;
    let r = f
        .runtime
        .verify(&f.app, verify(PHONE, "999999x"))
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        VerifyOutcome::InvalidCode {
            remaining_attempts: 2,
            ..
        }
    ));
    let before = f
        .runtime
        .actor_addr(f.app.app_id, PHONE)
        .expect("actor registered");

    // An internal fault: storage refuses the next snapshot of this actor.
    let side = rusqlite::Connection::open(&f.db).unwrap();
    // (An actor that has seen its row writes an UPDATE; the upsert is an INSERT.)
    side.execute_batch(
        "CREATE TRIGGER fault BEFORE INSERT ON otp_state BEGIN SELECT RAISE(ABORT, 'injected fault'); END;
         CREATE TRIGGER fault_update BEFORE UPDATE ON otp_state BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
    )
    .unwrap();
    let err = f
        .runtime
        .verify(&f.app, verify(PHONE, "999999y"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    side.execute_batch("DROP TRIGGER fault; DROP TRIGGER fault_update;")
        .unwrap();

    // The in-memory attempt that failed to commit is gone: the actor reloaded the
    // snapshot (1 attempt), under the same supervised mailbox.
    let status = f.runtime.status(&f.app, PHONE).await.unwrap();
    assert_eq!(status.attempts, 1);
    let after = f
        .runtime
        .actor_addr(f.app.app_id, PHONE)
        .expect("still registered");
    assert!(before == after, "the supervisor keeps the actor's address");
    let ok = f
        .runtime
        .verify(&f.app, verify(PHONE, &code))
        .await
        .unwrap();
    assert!(matches!(ok.outcome, VerifyOutcome::Verified { .. }));
    assert_eq!(f.runtime.status(&f.app, PHONE).await.unwrap().attempts, 2);
}

#[actix_rt::test]
async fn idle_actors_leave_memory_and_rehydrate_from_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(
        config(dir.path()),
        start_clock(),
        Arc::default(),
        settings(),
    )
    .await;
    let issued = f.runtime.request(&f.app, send(PHONE)).await.unwrap();
    f.runtime
        .verify(&f.app, verify(PHONE, "wrong"))
        .await
        .unwrap();
    assert_eq!(f.runtime.live_actors(), 1);
    f.clock.advance(Duration::from_millis(1100));
    assert!(f.runtime.reap_idle(Duration::from_secs(1)) >= 1);
    let rt = f.runtime.clone();
    eventually("the reaped actor to stop", || rt.live_actors() == 0).await;
    let status = f.runtime.status(&f.app, PHONE).await.unwrap();
    assert_eq!((status.flake_id, status.attempts), (issued.flake_id, 1));
}

#[actix_rt::test]
async fn expiry_and_cooldown_follow_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let s = otpd_actors::AppSettings {
        resend_cooldown_secs: 30,
        ..settings()
    };
    let f = start(config(dir.path()), start_clock(), Arc::default(), s).await;
    f.runtime.request(&f.app, send(PHONE)).await.unwrap();
    let code = code_for(&f, CANON).await;
    match f.runtime.resend(&f.app, send(PHONE)).await {
        Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 30),
        other => panic!("expected 429, got {other:?}"),
    }
    f.clock.advance(Duration::from_secs(600));
    let r = f
        .runtime
        .verify(&f.app, verify(PHONE, &code))
        .await
        .unwrap();
    assert!(
        matches!(r.outcome, VerifyOutcome::Expired { .. }),
        "{:?}",
        r.outcome
    );
    assert!(matches!(
        f.runtime.resend(&f.app, send(PHONE)).await,
        Err(Error::NotFound(_))
    ));
}

#[actix_rt::test]
async fn http_provider_is_retried_on_the_schedule_then_marks_sent_with_its_id() {
    let rx = receiver(vec![
        Reply::Status(500, "{}"),
        Reply::Status(503, "{}"),
        Reply::Status(200, r#"{"provider_message_id":"abc-1"}"#),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.provider.kind = ProviderKind::Http;
    cfg.provider.url = Some(rx.url.clone());
    cfg.delivery.retry_schedule_secs = vec![5, 60];
    let clock = start_clock();
    let runtime = Runtime::builder(cfg)
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let app = test_app(&runtime, settings()).await;
    let issued = runtime.request(&app, send(PHONE)).await.unwrap();
    let id = issued.message_id.unwrap();
    eventually("first provider call", || rx.hits() == 1).await;
    let c = clock.clone();
    eventually("retry scheduled", || c.sleepers() == 1).await;
    clock.advance(Duration::from_secs(5));
    eventually("second provider call", || rx.hits() == 2).await;
    assert_eq!(
        runtime.message(&app, id).await.unwrap().status,
        MessageStatus::Queued
    );
    eventually("retry scheduled", || c.sleepers() == 1).await;
    clock.advance(Duration::from_secs(60));
    eventually("third provider call", || rx.hits() == 3).await;
    for _ in 0..100 {
        if runtime.message(&app, id).await.unwrap().status == MessageStatus::Sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let m = runtime.message(&app, id).await.unwrap();
    assert_eq!(m.status, MessageStatus::Sent);
    assert_eq!(m.provider_message_id.as_deref(), Some("abc-1"));
    let body: serde_json::Value = serde_json::from_str(&rx.bodies()[0]).unwrap();
    assert_eq!(body["to"], CANON);
    assert_eq!(body["message_id"], id.to_string());
}

#[actix_rt::test]
async fn provider_that_keeps_failing_leaves_the_message_failed_with_provider_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.delivery.retry_schedule_secs = vec![1];
    let provider: Arc<CapturingProvider> = Arc::default();
    provider.set_failing(true);
    let f = start(cfg, start_clock(), provider, settings()).await;
    let id = f
        .runtime
        .request(&f.app, send(PHONE))
        .await
        .unwrap()
        .message_id
        .unwrap();
    let c = f.clock.clone();
    eventually("retry scheduled", || c.sleepers() == 1).await;
    f.clock.advance(Duration::from_secs(1));
    let p = f.provider.clone();
    eventually("second call", || p.calls() == 2).await;
    let mut m = f.runtime.message(&f.app, id).await.unwrap();
    for _ in 0..100 {
        if m.status != MessageStatus::Queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        m = f.runtime.message(&f.app, id).await.unwrap();
    }
    assert_eq!(m.status, MessageStatus::Failed);
    assert_eq!(m.error_code.as_deref(), Some("provider_error"));
}

/// Starts otpd in `dir` with a provider that never answers, requests a code for
/// `PHONE` and stops otpd while that send is in flight: its message stays `queued`.
async fn stopped_with_a_send_in_flight(
    dir: &std::path::Path,
) -> (Fixture, otpd_actors::otp::Issued, Arc<ManualClock>) {
    let hanging: Arc<CapturingProvider> = Arc::default();
    hanging.set_hanging(true);
    let clock = start_clock();
    let f = start(config(dir), clock.clone(), hanging.clone(), settings()).await;
    let issued = f.runtime.request(&f.app, send(PHONE)).await.unwrap();
    eventually("provider called", || hanging.calls() == 1).await;
    f.runtime.shutdown().await;
    (f, issued, clock)
}

#[actix_rt::test]
async fn a_send_in_flight_at_shutdown_resumes_at_restart_with_a_fresh_working_code() {
    let dir = tempfile::tempdir().unwrap();
    let (_f, issued, clock) = stopped_with_a_send_in_flight(dir.path()).await;

    let f2 = start(config(dir.path()), clock, Arc::default(), settings()).await;
    let code = code_for(&f2, CANON).await;
    let m = f2.provider.messages()[0].clone();
    assert_eq!(
        Some(m.message_id),
        issued.message_id,
        "same message resumed"
    );
    let r = f2
        .runtime
        .verify(&f2.app, verify(PHONE, &code))
        .await
        .unwrap();
    match r.outcome {
        VerifyOutcome::Verified { flake_id, .. } => assert_eq!(flake_id, issued.flake_id),
        other => panic!("{other:?}"),
    }
}

#[actix_rt::test]
async fn a_queued_otp_send_whose_stored_recipient_is_not_canonical_is_left_alone_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (f, issued, clock) = stopped_with_a_send_in_flight(dir.path()).await;
    // Not something otpd writes: a recipient that is no canonical number.
    let id = issued.message_id.unwrap().to_string();
    let side = rusqlite::Connection::open(&f.db).unwrap();
    let changed = side
        .execute(
            "UPDATE messages SET recipient = '+0 not a number' WHERE message_id = ?1",
            [&id],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(side);

    let f2 = start(config(dir.path()), clock, Arc::default(), settings()).await;
    let id = issued.message_id.unwrap();
    let m = f2.runtime.message(&f2.app, id).await.unwrap();
    assert_eq!(m.status, MessageStatus::Queued, "left as it was");
    assert_eq!(f2.provider.count(), 0, "nothing sent to it");
    // The runtime serves the phone as before.
    f2.runtime.request(&f2.app, send(PHONE)).await.unwrap();
    let code = code_for(&f2, CANON).await;
    let r = f2
        .runtime
        .verify(&f2.app, verify(PHONE, &code))
        .await
        .unwrap();
    assert!(matches!(r.outcome, VerifyOutcome::Verified { .. }));
}

#[actix_rt::test]
async fn no_plaintext_code_reaches_the_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = otpd_actors::AppSettings {
        code_length: 10,
        ..settings()
    };
    let f = start(config(dir.path()), start_clock(), Arc::default(), s).await;
    let phones = [
        "+255712345678",
        "+255713000001",
        "+255714000002",
        "+254712345678",
    ];
    for p in phones {
        f.runtime.request(&f.app, send(p)).await.unwrap();
    }
    let provider = f.provider.clone();
    eventually("all codes sent", || provider.count() == phones.len()).await;
    let codes = codes(&f.provider);
    f.runtime
        .verify(&f.app, verify(phones[0], &codes["255712345678"]))
        .await
        .unwrap();
    f.runtime
        .verify(&f.app, verify(phones[1], "0000000000"))
        .await
        .unwrap();
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", f.db.display());
        bytes.extend(std::fs::read(&path).unwrap_or_default());
    }
    assert!(bytes.len() > 4096);
    for code in codes.values() {
        assert!(
            !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
            "code {code} found in the database"
        );
    }
}

#[actix_rt::test]
async fn actors_used_within_the_idle_time_are_not_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_loopback(dir.path()).await;
    f.runtime.request(&f.app, send(PHONE)).await.unwrap();
    f.clock.advance(Duration::from_millis(1100));
    f.runtime.reap_idle(Duration::from_secs(60));
    assert!(
        f.runtime.actor_addr(f.app.app_id, PHONE).is_some(),
        "a flake used a second ago stays in memory"
    );
    assert_eq!(f.runtime.live_actors(), 1);
}
