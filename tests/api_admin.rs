//! SPEC section 2's admin API and section 8's probes, over real sockets.

mod common;

use common::{Fixture, FixtureOptions, APP_KEY, PHONE};
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-for-tests-0123456789";

fn admin_fixture() -> Fixture {
    Fixture::with(FixtureOptions {
        admin_token: Some(TOKEN.into()),
        ..FixtureOptions::default()
    })
}

fn create(fx: &Fixture, body: Value) -> Value {
    let resp = fx.admin("POST", "/admin/v1/apps").json(&body).send();
    resp.assert_ok(201).clone()
}

#[test]
fn admin_api_is_disabled_without_a_token() {
    let fx = Fixture::start();
    for (method, path) in [
        ("GET", "/admin/v1/apps"),
        ("POST", "/admin/v1/apps"),
        (
            "PATCH",
            "/admin/v1/apps/00000000-0000-4000-8000-000000000000",
        ),
    ] {
        fx.call(method, path)
            .no_auth()
            .header("authorization", "Bearer anything")
            .json(&json!({"name": "x"}))
            .send()
            .assert_error(404, "not_found");
    }
}

#[test]
fn wrong_or_missing_admin_token_is_unauthorized() {
    let fx = admin_fixture();
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer "),
        Some(TOKEN),
        Some("Basic YWRtaW46YWRtaW4="),
    ] {
        let mut call = fx.call("GET", "/admin/v1/apps").no_auth();
        if let Some(auth) = auth {
            call = call.header("authorization", auth);
        }
        let resp = call.send();
        resp.assert_error(401, "unauthorized");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    }
    // An app's API key is not an admin credential.
    fx.call("GET", "/admin/v1/apps")
        .send()
        .assert_error(401, "unauthorized");
    // The scheme is case-insensitive.
    fx.call("GET", "/admin/v1/apps")
        .no_auth()
        .header("authorization", &format!("bearer {TOKEN}"))
        .send()
        .assert_ok(200);
}

#[test]
fn created_app_shows_its_key_once_and_the_key_works_on_v1() {
    let fx = admin_fixture();
    let app = create(
        &fx,
        json!({"name": "Shop", "app_key": "shop", "settings": {"max_attempts": 5}}),
    );
    for field in [
        "app_id",
        "app_key",
        "name",
        "api_key",
        "key_id",
        "settings",
        "created_at",
    ] {
        assert!(app.get(field).is_some(), "missing {field}: {app}");
    }
    assert_eq!(app["app_key"], "shop");
    assert_eq!(app["settings"]["max_attempts"], 5);
    assert_eq!(app["settings"]["code_length"], 6);
    let api_key = app["api_key"].as_str().expect("api_key");
    let resp = fx
        .call("POST", "/v1/otp/request")
        .api_key(api_key)
        .json(&json!({"phone_number": PHONE, "app_key": "shop"}))
        .send();
    resp.assert_ok(200);
    // The new app's flake allows five attempts.
    let status = fx
        .call(
            "GET",
            &format!("/v1/otp/status?phone_number={PHONE}&app_key=shop"),
        )
        .api_key(api_key)
        .send();
    assert_eq!(status.assert_ok(200)["remaining_attempts"], 5);
}

#[test]
fn created_app_without_app_key_gets_a_generated_one() {
    let fx = admin_fixture();
    let app = create(&fx, json!({"name": "Generated"}));
    let key = app["app_key"].as_str().expect("app_key");
    assert!((3..=64).contains(&key.len()), "{key}");
}

#[test]
fn create_app_refuses_bad_input() {
    let fx = admin_fixture();
    let cases = [
        (
            json!({"name": "x", "settings": {"max_attempts": 50}}),
            422,
            "validation_failed",
        ),
        (
            json!({"name": "x", "settings": {"max_atempts": 5}}),
            422,
            "validation_failed",
        ),
        (
            json!({"name": "x", "settings": {"max_attempts": "5"}}),
            422,
            "validation_failed",
        ),
        (
            json!({"name": "x", "settings": [1, 2]}),
            422,
            "validation_failed",
        ),
        (
            json!({"name": "x", "app_key": "a b"}),
            422,
            "validation_failed",
        ),
        (json!({"name": ""}), 422, "validation_failed"),
        (json!({"name": "x", "setings": {}}), 400, "invalid_request"),
        (json!({"app_key": "nameless"}), 400, "invalid_request"),
        (json!({"name": 5}), 400, "invalid_request"),
        (json!([{"name": "x"}]), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let resp = fx.admin("POST", "/admin/v1/apps").json(&body).send();
        assert_eq!(
            (resp.status, resp.code()),
            (status, code),
            "{body}: {}",
            resp.text
        );
    }
    // Duplicate app_key.
    fx.admin("POST", "/admin/v1/apps")
        .json(&json!({"name": "again", "app_key": APP_KEY}))
        .send()
        .assert_error(409, "conflict");
    // Nothing was created.
    let list = fx.admin("GET", "/admin/v1/apps").send();
    assert_eq!(
        list.assert_ok(200)["items"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn list_shows_every_app_without_secrets() {
    let fx = admin_fixture();
    let created = create(&fx, json!({"name": "Shop", "app_key": "shop"}));
    let resp = fx.admin("GET", "/admin/v1/apps").send();
    let items = resp.assert_ok(200)["items"]
        .as_array()
        .expect("items")
        .clone();
    let keys: Vec<&str> = items.iter().filter_map(|a| a["app_key"].as_str()).collect();
    assert_eq!(keys, vec![APP_KEY, "shop"]);
    for item in &items {
        let fields: Vec<&str> = item
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            vec!["app_id", "app_key", "created_at", "name", "settings"]
        );
    }
    let secret = created["api_key"].as_str().expect("api_key");
    assert!(!resp.text.contains(secret));
    assert!(!resp.text.contains(common::API_KEY));
}

#[test]
fn patch_changes_only_the_named_settings_and_the_name() {
    let fx = admin_fixture();
    let id = fx.app.app.app_id;
    let resp = fx
        .admin("PATCH", &format!("/admin/v1/apps/{id}"))
        .json(&json!({"settings": {"max_attempts": 7}, "name": "Renamed"}))
        .send();
    let app = resp.assert_ok(200);
    assert_eq!(app["settings"]["max_attempts"], 7);
    assert_eq!(app["settings"]["resend_cooldown_secs"], 0, "untouched");
    assert_eq!(app["name"], "Renamed");
    assert!(app.get("api_key").is_none());
    // New flakes use the new settings.
    fx.request_otp(PHONE);
    assert_eq!(fx.status(PHONE).data()["remaining_attempts"], 7);
    let got = fx.admin("GET", &format!("/admin/v1/apps/{id}")).send();
    assert_eq!(got.assert_ok(200)["name"], "Renamed");
}

#[test]
fn patch_refuses_bad_settings_and_unknown_apps() {
    let fx = admin_fixture();
    let id = fx.app.app.app_id;
    let path = format!("/admin/v1/apps/{id}");
    fx.admin("PATCH", &path)
        .json(&json!({"settings": {"code_length": 2}}))
        .send()
        .assert_error(422, "validation_failed");
    fx.admin("PATCH", &path)
        .json(&json!({"settings": {"nope": 1}}))
        .send()
        .assert_error(422, "validation_failed");
    fx.admin("PATCH", &path)
        .json(&json!({"settinsg": {}}))
        .send()
        .assert_error(400, "invalid_request");
    fx.admin(
        "PATCH",
        "/admin/v1/apps/00000000-0000-4000-8000-000000000000",
    )
    .json(&json!({"name": "x"}))
    .send()
    .assert_error(404, "not_found");
    fx.admin("PATCH", "/admin/v1/apps/not-a-uuid")
        .json(&json!({"name": "x"}))
        .send()
        .assert_error(404, "not_found");
    // Nothing changed.
    let got = fx.admin("GET", &path).send();
    assert_eq!(got.assert_ok(200)["settings"]["code_length"], 6);
}

#[test]
fn api_keys_can_be_added_and_deleted_and_a_deleted_key_is_refused() {
    let fx = admin_fixture();
    let id = fx.app.app.app_id;
    let resp = fx
        .admin("POST", &format!("/admin/v1/apps/{id}/api-keys"))
        .send();
    let created = resp.assert_ok(201).clone();
    assert_eq!(
        created.as_object().map(|o| o.len()),
        Some(2),
        "only key_id and api_key: {created}"
    );
    let new_key = created["api_key"].as_str().expect("api_key");
    let key_id = created["key_id"].as_str().expect("key_id");
    let status_path = format!("/v1/otp/status?phone_number={PHONE}&app_key={APP_KEY}");
    fx.call("GET", &status_path)
        .api_key(new_key)
        .send()
        .assert_error(404, "not_found");

    let del = fx
        .admin("DELETE", &format!("/admin/v1/apps/{id}/api-keys/{key_id}"))
        .send();
    assert_eq!(del.status, 204, "{}", del.text);
    assert!(del.text.is_empty());
    fx.call("GET", &status_path)
        .api_key(new_key)
        .send()
        .assert_error(401, "unauthorized");
    // The other key still works; deleting again is 404.
    fx.get(&status_path).assert_error(404, "not_found");
    fx.admin("DELETE", &format!("/admin/v1/apps/{id}/api-keys/{key_id}"))
        .send()
        .assert_error(404, "not_found");
}

#[test]
fn the_seeded_key_can_be_deleted_too() {
    let fx = admin_fixture();
    let id = fx.app.app.app_id;
    let key_id = fx.app.key_id;
    let del = fx
        .admin("DELETE", &format!("/admin/v1/apps/{id}/api-keys/{key_id}"))
        .send();
    assert_eq!(del.status, 204);
    fx.post(
        "/v1/otp/request",
        &json!({"phone_number": PHONE, "app_key": APP_KEY}),
    )
    .assert_error(401, "unauthorized");
}

#[test]
fn api_key_routes_refuse_unknown_apps_and_keys() {
    let fx = admin_fixture();
    let id = fx.app.app.app_id;
    let nobody = "00000000-0000-4000-8000-000000000000";
    fx.admin("POST", &format!("/admin/v1/apps/{nobody}/api-keys"))
        .send()
        .assert_error(404, "not_found");
    fx.admin("POST", "/admin/v1/apps/xyz/api-keys")
        .send()
        .assert_error(404, "not_found");
    fx.admin("DELETE", &format!("/admin/v1/apps/{id}/api-keys/{nobody}"))
        .send()
        .assert_error(404, "not_found");
    fx.admin("DELETE", &format!("/admin/v1/apps/{id}/api-keys/xyz"))
        .send()
        .assert_error(404, "not_found");
    // Another app's key id under this app is not found either.
    let other = fx.add_app("other", Default::default());
    fx.admin(
        "DELETE",
        &format!("/admin/v1/apps/{id}/api-keys/{}", other.key_id),
    )
    .send()
    .assert_error(404, "not_found");
}

#[test]
fn healthz_is_ok_and_readyz_is_ready() {
    let fx = Fixture::start();
    let health = fx.call("GET", "/healthz").no_auth().send();
    assert_eq!(
        (health.status, &health.body),
        (200, &json!({"status": "ok"}))
    );
    let ready = fx.call("GET", "/readyz").no_auth().send();
    assert_eq!(
        (ready.status, &ready.body),
        (200, &json!({"status": "ready"}))
    );
}

#[test]
fn readyz_is_unavailable_once_shutdown_begins() {
    let fx = Fixture::start();
    fx.run(|rt| async move { rt.shutdown().await });
    let ready = fx.call("GET", "/readyz").no_auth().send();
    ready.assert_error(503, "unavailable");
    let health = fx.call("GET", "/healthz").no_auth().send();
    assert_eq!(health.status, 200);
    // API calls during shutdown are 503 with a generic message, never a 500.
    let resp = fx.post(
        "/v1/otp/request",
        &json!({"phone_number": PHONE, "app_key": APP_KEY}),
    );
    resp.assert_error(503, "unavailable");
    assert!(resp.header("retry-after").is_some());
}
