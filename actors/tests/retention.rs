//! Retention against a real database: bounded under sustained load, pending
//! deliveries (and their events) never pruned.

mod common;

use std::time::Duration;

use common::*;
use otpd_actors::config::RetentionConfig;
use rusqlite::Connection;

/// Rows per table, read through a second connection (as an operator would).
fn counts(db: &std::path::Path) -> [(&'static str, i64); 5] {
    let conn = Connection::open(db).unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    [
        ("deliveries", count("deliveries")),
        ("delivery_attempts", count("delivery_attempts")),
        ("events", count("events")),
        ("messages", count("messages")),
        ("otp_state", count("otp_state")),
    ]
}

fn pending_deliveries(db: &std::path::Path) -> i64 {
    let conn = Connection::open(db).unwrap();
    conn.query_row(
        "SELECT count(*) FROM deliveries WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[actix_rt::test]
async fn a_database_under_sustained_load_stays_bounded_and_keeps_pending_deliveries() {
    let ok = receiver(vec![Reply::Status(200, "")]).await;
    let dead = receiver(vec![Reply::Status(500, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = loopback_config(dir.path());
    cfg.retention = RetentionConfig {
        delivery_log_days: 1,
        messages_days: 1,
        finished_flakes_hours: 24,
        batch_rows: 7,
        ..RetentionConfig::default()
    };
    // A failed callback waits 12 days for its retry: it stays pending all test long.
    cfg.delivery.retry_schedule_secs = vec![1_000_000];
    let f = start(cfg, start_clock(), Default::default(), settings()).await;
    webhook(&f, &ok.url, "otp").await;

    const ROUNDS: usize = 8;
    const PER_ROUND: usize = 15;
    let mut peak = [0i64; 5];
    let mut delivered = 0;
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let phone = format!("+2557123{round:02}{i:03}");
            // One flake per round calls back a dead endpoint: its delivery stays pending.
            let cb = (i == 0).then(|| format!("{}/cb", dead.url));
            f.runtime
                .request(
                    &f.app,
                    send_with(&phone, cb.as_deref(), cb.as_ref().map(|_| "s3cret")),
                )
                .await
                .unwrap();
            let code = code_for(&f, &phone[1..]).await;
            f.runtime
                .verify(&f.app, verify(&phone, &code))
                .await
                .unwrap();
        }
        // otp.created and otp.verified per flake reach the webhook.
        delivered += 2 * PER_ROUND;
        ok.wait_for(delivered).await;
        let db = f.db.clone();
        let want = round as i64 + 1;
        eventually("the dead callbacks to have failed once", || {
            let conn = Connection::open(&db).unwrap();
            let attempted: i64 = conn
                .query_row(
                    "SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempts >= 1",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            let done: i64 = conn
                .query_row(
                    "SELECT count(*) FROM deliveries WHERE status = 'succeeded'
                     AND created_at >= (SELECT max(created_at) FROM deliveries) - 60000",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            attempted == want && done == 2 * PER_ROUND as i64
        })
        .await;

        // Half a day per round: two rounds' worth of records are inside the windows.
        f.clock.advance(Duration::from_secs(12 * 3600));
        f.runtime.prune_now().await.unwrap();
        let now = counts(&f.db);
        for (p, (_, n)) in peak.iter_mut().zip(now) {
            *p = (*p).max(n);
        }
        assert_eq!(
            pending_deliveries(&f.db),
            want,
            "a pending delivery was pruned (round {round})"
        );
    }
    // Created per round: 31 deliveries (30 webhook + 1 callback), 31 events, 15
    // messages, 15 flakes. Retained: at most the last two or three rounds (the
    // windows are one day, rounds half a day apart), plus the pending callbacks.
    let [deliveries, attempts, events, messages, flakes] = counts(&f.db).map(|(_, n)| n);
    let per_round = 2 * PER_ROUND as i64 + 1;
    assert!(
        deliveries <= 3 * per_round + ROUNDS as i64,
        "deliveries {deliveries}"
    );
    assert!(
        attempts <= 3 * per_round + ROUNDS as i64,
        "attempts {attempts}"
    );
    assert!(events <= 3 * per_round + ROUNDS as i64, "events {events}");
    assert!(messages <= 3 * PER_ROUND as i64, "messages {messages}");
    assert!(flakes <= 4 * PER_ROUND as i64, "flakes {flakes}");
    let created = (ROUNDS as i64) * per_round;
    assert!(
        peak[0] < created / 2,
        "the delivery log grew with history: peak {} of {created}",
        peak[0]
    );
    // The pending callbacks are all there, with their events.
    assert_eq!(pending_deliveries(&f.db), ROUNDS as i64);
    let conn = Connection::open(&f.db).unwrap();
    let orphans: i64 = conn
        .query_row(
            "SELECT count(*) FROM deliveries d WHERE NOT EXISTS
             (SELECT 1 FROM events e WHERE e.event_id = d.event_id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "an event of a kept delivery was pruned");
    f.runtime.shutdown().await;
}
