//! Each migration from a real database of the previous version: files built with the
//! exact historical schema (`fixtures/schema_v*.sql`) and a few rows in every table,
//! opened with today's code, read through the normal loaders, then written to.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use uuid::Uuid;

use super::{user_version, MIGRATIONS, RETIRED_V4, SCHEMA_VERSION};
use crate::clock::from_millis;
use crate::config::{StorageConfig, Synchronous};
use crate::delivery::model::{AttemptRecord, Delivery, DeliveryKind, DeliveryStatus};
use crate::events::{Event, ServiceType};
use crate::message::{Channel, MessageRecord, MessageStatus, Purpose, ReportTarget, ReportType};
use crate::otp::{FlakeStatus, OtpKey};
use crate::phone::Phone;
use crate::storage::{self, open_connection, Change, Snapshot, StorageError};
use crate::webhooks::{Webhook, WebhookStatus};

const V1: &str = include_str!("fixtures/schema_v1.sql");
const V2: &str = include_str!("fixtures/schema_v2.sql");
const V3: &str = include_str!("fixtures/schema_v3.sql");
const V4: &str = include_str!("fixtures/schema_v4.sql");
const V5: &str = include_str!("fixtures/schema_v5.sql");
const V6: &str = include_str!("fixtures/schema_v6.sql");

const APP: &str = "11111111-1111-4111-8111-111111111111";
const KEY_ID: &str = "22222222-2222-4222-8222-222222222222";
const FLAKE: &str = "33333333-3333-4333-8333-333333333333";
const MESSAGE: &str = "44444444-4444-4444-8444-444444444444";
const REPORTED: &str = "55555555-5555-4555-8555-555555555555";
const PHONE: &str = "255712345678";
const T0: i64 = 1_700_000_000_000;

/// Rows every version has: meta, an app, its key, a flake, an OTP message (without
/// the report columns of version 3), an idempotent response.
fn v1_rows() -> String {
    format!(
        "INSERT INTO meta VALUES ('code_pepper', X'00112233');
         INSERT INTO apps VALUES ('{APP}', 'old-app', 'Old app', '{{}}', {T0}, {T0});
         INSERT INTO api_keys VALUES ('{KEY_ID}', '{APP}', X'{hash}', {T0});
         INSERT INTO otp_state VALUES ('{APP}', '{PHONE}', '{FLAKE}', zeroblob(32), 'pending',
             1, 3, 'sms', '{MESSAGE}', 'https://example.com/cb', 's', {T0}, {exp}, NULL,
             '{T0}', {T0});
         INSERT INTO messages (message_id, app_id, channel, recipient, body, sender_id, purpose,
             status, error_code, error_message, provider_message_id, attempts, created_at,
             updated_at) VALUES ('{MESSAGE}', '{APP}', 'sms', '{PHONE}', NULL, NULL, 'otp',
             'sent', NULL, NULL, 'prov-1', 1, {T0}, {T0});
         INSERT INTO idempotency VALUES ('{APP}', 'idem-1', zeroblob(32), 201, X'7b7d', {T0});",
        hash = "ab".repeat(32),
        exp = T0 + 300_000,
    )
}

/// Rows of the tables version 2 added: a webhook, an event, a pending and a
/// succeeded delivery, one attempt.
fn v2_rows() -> String {
    format!(
        "INSERT INTO webhooks VALUES ('wh_old', '{APP}', 'otp', 'https://example.com/hook',
             '[\"otp.verified\"]', 'active', 'old hook', 'whsec_old', NULL, NULL, {T0}, {T0});
         INSERT INTO events VALUES ('evt_old', '{APP}', 'otp.verified', 'otp', '{{}}', {T0});
         INSERT INTO deliveries VALUES ('dlv_pending', '{APP}', 'evt_old', 'webhook', 'wh_old',
             'https://example.com/hook', 'whsec_old', 0, 'pending', 1, 0, 500, 'boom', {T0},
             {T0}, {T0});
         INSERT INTO deliveries VALUES ('dlv_done', '{APP}', 'evt_old', 'webhook', 'wh_old',
             'https://example.com/hook', 'whsec_old', 0, 'succeeded', 1, 0, 200, NULL, NULL,
             {T0}, {T0});
         INSERT INTO delivery_attempts VALUES ('dlv_done', 1, {T0}, 200, NULL, 12);"
    )
}

/// A message with a report target, as version 3 stores it.
fn v3_rows() -> String {
    format!(
        "INSERT INTO messages VALUES ('{REPORTED}', '{APP}', 'sms', '{PHONE}', 'hi', NULL,
             'message', 'delivered', NULL, NULL, 'prov-2', 1, {T0}, {T0},
             'https://example.com/report', 'final', 'rs');"
    )
}

/// The version 3 row reads back with its report target.
fn assert_v3_rows_load(conn: &Connection) {
    let id = Uuid::parse_str(REPORTED).unwrap();
    let m = storage::load_message(conn, &app_id(), &id)
        .unwrap()
        .expect("the reported message");
    let report = m.report.expect("its report target");
    assert_eq!(report.url, "https://example.com/report");
    assert_eq!(report.report_type, ReportType::Final);
    assert_eq!(report.secret.as_deref(), Some("rs"));
}

/// A file as an old otpd left it: its schema (which sets its `user_version`) and rows.
fn old_database(dir: &Path, schema: &str, rows: &[String]) -> PathBuf {
    let path = dir.join("old.sqlite3");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(schema).unwrap();
    for r in rows {
        conn.execute_batch(r).unwrap();
    }
    path
}

fn open(path: &Path) -> Result<Connection, StorageError> {
    open_connection(path, Synchronous::Normal)
}

fn app_id() -> Uuid {
    Uuid::parse_str(APP).unwrap()
}

/// Names, types, NOT NULL and key positions of every column, and every index, as
/// one comparable list (the SQL text differs between CREATE and ALTER).
fn shape(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    let mut tables = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = tables
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in tables {
        let mut cols = conn
            .prepare(&format!(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info('{t}')"
            ))
            .unwrap();
        for c in cols
            .query_map([], |r| {
                Ok(format!(
                    "{t}.{}:{}:{}:{}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?
                ))
            })
            .unwrap()
        {
            out.push(c.unwrap());
        }
    }
    let mut idx = conn
        .prepare("SELECT name, tbl_name, coalesce(sql, '') FROM sqlite_master WHERE type = 'index' ORDER BY name")
        .unwrap();
    for i in idx
        .query_map([], |r| {
            Ok(format!(
                "index {} on {}: {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?
            ))
        })
        .unwrap()
    {
        out.push(i.unwrap());
    }
    out
}

fn schema_cookie(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA schema_version", [], |r| r.get(0))
        .unwrap()
}

/// The shape of a file at the current version.
fn current_shape() -> Vec<String> {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(V6).unwrap();
    shape(&conn)
}

/// The frozen schema of each version a migration starts from or produces.
fn historical(version: i64) -> &'static str {
    match version {
        0 => "",
        1 => V1,
        2 => V2,
        3 => V3,
        5 => V5,
        6 => V6,
        other => panic!("no fixture for version {other}"),
    }
}

/// Rows from before the upgrade read back through the normal loaders.
fn assert_v1_rows_load(conn: &Connection) {
    let apps = storage::load_apps(conn).unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].app_id, app_id());
    assert_eq!(apps[0].app_key, "old-app");
    let keys = storage::load_api_keys(conn).unwrap();
    assert_eq!(
        keys,
        vec![([0xab; 32], Uuid::parse_str(KEY_ID).unwrap(), app_id())]
    );
    assert_eq!(
        storage::load_meta(conn, "code_pepper").unwrap(),
        Some(vec![0x00, 0x11, 0x22, 0x33])
    );
    let idem = storage::load_idempotency(conn, &app_id(), "idem-1")
        .unwrap()
        .expect("idempotency row");
    assert_eq!((idem.status, idem.body.as_slice()), (201, &b"{}"[..]));
    let key = OtpKey {
        app_id: app_id(),
        phone: Phone::from_canonical(PHONE).expect("canonical"),
    };
    let otp = storage::load_otp(conn, &key).unwrap();
    let flake = otp.flake.expect("the old flake");
    assert_eq!(flake.status, FlakeStatus::Pending);
    assert_eq!(flake.attempts, 1);
    assert_eq!(
        flake.callback.map(|c| c.url).as_deref(),
        Some("https://example.com/cb")
    );
    assert_eq!(otp.sends, [T0]);
    let message_id = Uuid::parse_str(MESSAGE).unwrap();
    let m = storage::load_message(conn, &app_id(), &message_id)
        .unwrap()
        .expect("the old message");
    assert_eq!(m.status, MessageStatus::Sent);
    assert!(m.report.is_none(), "no report columns before version 3");
    assert_eq!(
        storage::message_id_by_provider_id(conn, "prov-1").unwrap(),
        Some(message_id)
    );
    assert_eq!(
        storage::recent_otp_sends(conn, from_millis(0)).unwrap(),
        vec![(app_id(), T0)]
    );
}

/// Rows of the version 2 tables read back through the normal loaders.
fn assert_v2_rows_load(conn: &Connection) {
    let hooks = storage::load_webhooks(conn).unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].status, WebhookStatus::Active);
    assert_eq!(hooks[0].events, ["otp.verified"]);
    let pending = storage::load_pending_deliveries(conn).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].delivery_id, "dlv_pending");
    assert_eq!(pending[0].event.id, "evt_old");
    let (done, attempts) = storage::load_delivery(conn, &app_id(), "dlv_done")
        .unwrap()
        .expect("the old delivery");
    assert_eq!(done.status, DeliveryStatus::Succeeded);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].duration_ms, 12);
    let counts = storage::webhook_counts(conn, "wh_old").unwrap();
    assert_eq!((counts.total, counts.succeeded, counts.pending), (2, 1, 1));
}

/// Writes of every family through the writer, then read back.
async fn assert_new_writes_work(path: &Path) {
    let config = StorageConfig {
        path: path.to_path_buf(),
        ..StorageConfig::default()
    };
    let (snap, handle) = Snapshot::open(&config).unwrap();
    let now = from_millis(T0 + 60_000);
    let message = MessageRecord {
        body: Some("hello".into()),
        report: Some(ReportTarget {
            url: "https://example.com/report".into(),
            report_type: ReportType::Final,
            secret: Some("r".into()),
        }),
        ..MessageRecord::queued(
            Uuid::new_v4(),
            app_id(),
            Channel::Sms,
            PHONE.into(),
            Purpose::Message,
            now,
        )
    };
    let webhook = Webhook {
        id: "wh_new".into(),
        app_id: app_id(),
        service_type: ServiceType::Sms,
        url: "https://example.com/sms".into(),
        events: vec!["sms.sent".into()],
        status: WebhookStatus::Active,
        description: None,
        secret: "whsec_new".into(),
        previous_secret: None,
        created_at: now,
        updated_at: now,
    };
    let event = Event::new(
        "sms.sent",
        ServiceType::Sms,
        app_id(),
        now,
        serde_json::json!({}),
    );
    let delivery = Delivery::new(
        &event,
        DeliveryKind::Webhook,
        webhook.url.clone(),
        Some(webhook.id.clone()),
        Some(webhook.secret.clone()),
    );
    let attempt = AttemptRecord {
        delivery_id: delivery.delivery_id.clone(),
        attempt: 1,
        at: now,
        status_code: Some(503),
        error: None,
        duration_ms: 7,
    };
    snap.write(vec![
        Change::Message(message.clone()),
        Change::Webhook(webhook),
        Change::Outbox(event, vec![delivery.clone()]),
        Change::Attempt(attempt),
    ])
    .committed()
    .await
    .unwrap();
    let (id, did) = (message.message_id, delivery.delivery_id.clone());
    let (m, d, hooks) = snap
        .read(move |c| {
            Ok((
                storage::load_message(c, &app_id(), &id)?,
                storage::load_delivery(c, &app_id(), &did)?,
                storage::load_webhooks(c)?,
            ))
        })
        .await
        .unwrap();
    let m = m.expect("the new message");
    assert_eq!(
        m.report, message.report,
        "the version 3 columns are written"
    );
    assert_eq!(m.history().len(), 1, "queued only");
    let mut later = m.clone();
    later.set_status(MessageStatus::Sent, from_millis(T0 + 61_000));
    later.error_code = Some("undeliverable".into());
    later.set_status(MessageStatus::Failed, from_millis(T0 + 62_000));
    snap.write(vec![Change::Message(later.clone())])
        .committed()
        .await
        .unwrap();
    let again = snap
        .read(move |c| storage::load_message(c, &app_id(), &id))
        .await
        .unwrap()
        .expect("the message again");
    assert_eq!(
        again.reached, later.reached,
        "the version 5 columns are written"
    );
    assert_eq!(again.history(), later.history());
    let (d, attempts) = d.expect("the new delivery");
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(attempts.len(), 1);
    assert!(hooks.iter().any(|w| w.id == "wh_new"));
    snap.shutdown().await;
    handle.join().unwrap();
}

#[test]
fn migrations_are_chained_in_order() {
    let mut at = 0;
    for m in &MIGRATIONS {
        assert_eq!(m.from, at, "{}", m.adds);
        assert!(m.to > m.from && m.to != RETIRED_V4, "{}", m.adds);
        at = m.to;
    }
    assert_eq!(SCHEMA_VERSION, 6);
    assert_eq!(at, SCHEMA_VERSION);
}

#[test]
fn each_migration_turns_one_historical_schema_into_the_next() {
    for m in &MIGRATIONS {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(historical(m.from)).unwrap();
        (m.apply)(&conn).unwrap();
        let next = Connection::open_in_memory().unwrap();
        next.execute_batch(historical(m.to)).unwrap();
        assert_eq!(
            shape(&conn),
            shape(&next),
            "migration to {} ({})",
            m.to,
            m.adds
        );
    }
}

#[tokio::test]
async fn a_new_database_runs_every_migration_and_matches_the_current_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.sqlite3");
    let conn = open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    assert_eq!(shape(&conn), current_shape());
    drop(conn);
    assert_new_writes_work(&path).await;
}

#[tokio::test]
async fn opening_a_current_database_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twice.sqlite3");
    let (cookie, before) = {
        let conn = open(&path).unwrap();
        (schema_cookie(&conn), shape(&conn))
    };
    let conn = open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    assert_eq!(
        schema_cookie(&conn),
        cookie,
        "no DDL ran on the second open"
    );
    assert_eq!(shape(&conn), before);
}

#[tokio::test]
async fn a_version_1_database_is_migrated_to_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_database(dir.path(), V1, &[v1_rows()]);
    let conn = open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    assert_eq!(shape(&conn), current_shape());
    assert_v1_rows_load(&conn);
    assert!(storage::load_webhooks(&conn).unwrap().is_empty());
    drop(conn);
    assert_new_writes_work(&path).await;
}

#[tokio::test]
async fn a_version_2_database_is_migrated_to_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_database(dir.path(), V2, &[v1_rows(), v2_rows()]);
    let conn = open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    assert_eq!(shape(&conn), current_shape());
    assert_v1_rows_load(&conn);
    assert_v2_rows_load(&conn);
    drop(conn);
    assert_new_writes_work(&path).await;
}

#[tokio::test]
async fn a_version_3_database_is_migrated_and_its_messages_keep_the_time_of_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_database(dir.path(), V3, &[v1_rows(), v2_rows(), v3_rows()]);
    let conn = open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    assert_eq!(shape(&conn), current_shape());
    assert_v1_rows_load(&conn);
    assert_v2_rows_load(&conn);
    assert_v3_rows_load(&conn);
    assert_old_messages_have_a_history(&conn);
    drop(conn);
    assert_new_writes_work(&path).await;
}

/// `otp_state` rows as version 5 stores them: send times in the text form, one of
/// them with several, one with none, and one damaged.
fn v5_sends_rows() -> String {
    format!(
        "INSERT INTO otp_state (app_id, phone, status, expires_at, sends, updated_at) VALUES
             ('{APP}', '255700000001', 'verified', {T0}, '{T0},{t1},{t2}', {T0}),
             ('{APP}', '255700000002', 'verified', {T0}, '', {T0}),
             ('{APP}', '255700000003', 'verified', {T0}, '12,x', {T0});",
        t1 = T0 + 412,
        t2 = T0 + 60_000,
    )
}

#[tokio::test]
async fn a_version_5_database_gets_its_send_times_in_the_compact_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_database(dir.path(), V5, &[v1_rows(), v2_rows(), v5_sends_rows()]);
    let conn = open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    assert_eq!(shape(&conn), current_shape());
    assert_v1_rows_load(&conn);
    assert_v2_rows_load(&conn);
    let stored_as = |phone: &str| -> String {
        conn.query_row(
            "SELECT typeof(sends) FROM otp_state WHERE phone = ?1",
            [phone],
            |r| r.get(0),
        )
        .unwrap()
    };
    for phone in [PHONE, "255700000001", "255700000002"] {
        assert_eq!(stored_as(phone), "blob", "{phone}");
    }
    assert_eq!(
        stored_as("255700000003"),
        "text",
        "a damaged row is left as it was"
    );
    let load = |phone: &str| {
        storage::load_otp(
            &conn,
            &OtpKey {
                app_id: app_id(),
                phone: Phone::from_canonical(phone).expect("canonical"),
            },
        )
    };
    assert_eq!(
        load("255700000001").unwrap().sends,
        [T0, T0 + 412, T0 + 60_000]
    );
    assert!(load("255700000002").unwrap().sends.is_empty());
    assert!(matches!(
        load("255700000003"),
        Err(StorageError::Corrupt(_))
    ));
    drop(conn);
    assert_new_writes_work(&path).await;
}

/// Messages from before version 5: `queued` at their creation, then their status
/// at the `updated_at` the old row had (the statuses between are unknown).
fn assert_old_messages_have_a_history(conn: &Connection) {
    let load = |id: &str| {
        storage::load_message(conn, &app_id(), &Uuid::parse_str(id).unwrap())
            .unwrap()
            .expect("the old message")
    };
    let steps = |m: &MessageRecord| -> Vec<(MessageStatus, i64)> {
        m.history()
            .iter()
            .map(|s| (s.status, s.at.timestamp_millis()))
            .collect()
    };
    let sent = load(MESSAGE);
    assert_eq!(sent.reached.sent_at, Some(from_millis(T0)));
    assert_eq!(
        steps(&sent),
        [(MessageStatus::Queued, T0), (MessageStatus::Sent, T0)]
    );
    let delivered = load(REPORTED);
    assert_eq!(delivered.reached.sent_at, None, "not known");
    assert_eq!(
        steps(&delivered),
        [(MessageStatus::Queued, T0), (MessageStatus::Delivered, T0)]
    );
}

fn page_size(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_new_database_gets_small_pages_and_an_old_one_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("new.sqlite3");
    assert_eq!(
        page_size(&open(&fresh).unwrap()),
        storage::NEW_FILE_PAGE_SIZE
    );
    assert_new_writes_work(&fresh).await;

    let old_dir = tempfile::tempdir().unwrap();
    let old = old_database(old_dir.path(), V3, &[v1_rows(), v2_rows(), v3_rows()]);
    assert_eq!(page_size(&Connection::open(&old).unwrap()), 4096);
    let conn = open(&old).unwrap();
    assert_eq!(
        page_size(&conn),
        4096,
        "an existing file is never rewritten"
    );
    assert_v3_rows_load(&conn);
    drop(conn);
    assert_new_writes_work(&old).await;
}

#[tokio::test]
async fn a_version_3_database_left_without_its_report_columns_is_finished() {
    // The unversioned code set user_version = 3 before adding the columns.
    let dir = tempfile::tempdir().unwrap();
    let half = format!("{V2}\nPRAGMA user_version = 3;");
    let path = old_database(dir.path(), &half, &[v1_rows(), v2_rows()]);
    let conn = open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    assert_eq!(shape(&conn), current_shape());
    assert_v1_rows_load(&conn);
    drop(conn);
    assert_new_writes_work(&path).await;
}

#[tokio::test]
async fn a_version_4_database_loses_the_retired_index_and_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_database(dir.path(), V4, &[v1_rows(), v2_rows(), v3_rows()]);
    let found = user_version(&Connection::open(&path).unwrap()).unwrap();
    assert_eq!(found, RETIRED_V4);
    let conn = open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    let index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'deliveries_event'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0, "the retired index is dropped");
    assert_eq!(shape(&conn), current_shape());
    assert_v1_rows_load(&conn);
    assert_v2_rows_load(&conn);
    assert_v3_rows_load(&conn);
    assert_old_messages_have_a_history(&conn);
    drop(conn);
    assert_new_writes_work(&path).await;
}

#[test]
fn a_database_from_a_newer_otpd_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_database(dir.path(), &format!("{V6}\nPRAGMA user_version = 7;"), &[]);
    let cookie = schema_cookie(&Connection::open(&path).unwrap());
    let err = open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::SchemaTooNew {
                found: 7,
                supported: SCHEMA_VERSION
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("newer than this otpd supports"),
        "{err}"
    );
    let config = StorageConfig {
        path: path.clone(),
        ..StorageConfig::default()
    };
    assert!(matches!(
        Snapshot::open(&config),
        Err(StorageError::SchemaTooNew { found: 7, .. })
    ));
    let conn = Connection::open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), 7);
    assert_eq!(
        schema_cookie(&conn),
        cookie,
        "the newer file was not touched"
    );
}

#[test]
fn a_negative_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_database(dir.path(), "PRAGMA user_version = -1;", &[]);
    assert!(matches!(open(&path), Err(StorageError::Corrupt(_))));
}

#[test]
fn a_failing_migration_is_rolled_back_whole() {
    // A view where version 2 wants a table: its index cannot be created.
    let dir = tempfile::tempdir().unwrap();
    let path = old_database(
        dir.path(),
        V1,
        &["CREATE VIEW deliveries AS SELECT 1 AS app_id, 2 AS created_at;".to_string()],
    );
    assert!(open(&path).is_err());
    let conn = Connection::open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), 1, "the version did not move");
    let webhooks: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'webhooks'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(webhooks, 0, "the step's earlier statements were undone");
}
