//! `GET /openapi.json` (SPEC section 8): an OpenAPI document whose operations are
//! exactly the routed ones, whose every operation answers, and whose schemas are
//! what the routes really send.
//!
//! The routed operations come from `otpd::api::operations()`, the table
//! `otpd::api::configure` registers; the probes below check that each of them is
//! really served, so neither list can drift from the other.

mod common;

use std::collections::BTreeSet;

use common::{Fixture, FixtureOptions, APP_KEY};
use otpd_actors::RuntimeConfig;
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789abcdef";
const STATUS: &str = "prov-status-token-0123456789";

#[test]
fn openapi_document_describes_only_and_all_routed_operations() {
    let fx = Fixture::with(FixtureOptions {
        admin_token: Some(ADMIN.into()),
        tweak_config: Some(Box::new(|c| c.provider.status_token = Some(STATUS.into()))),
        ..FixtureOptions::default()
    });
    let resp = fx.call("GET", "/openapi.json").no_auth().send();
    assert_eq!(resp.status, 200);
    let doc = resp.body.clone();
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item").keys();
            methods.map(move |m| (m.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = otpd::api::operations()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routed, not documented: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(unrouted.is_empty(), "documented, not routed: {unrouted:?}");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{message_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{app_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{key_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{delivery_id}", "dlv_00000000000000000000000000000000")
            .replace("{id}", "wh_00000000000000000000000000000000");
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            let method = method.to_ascii_uppercase();
            let security = op["security"].to_string();
            let mut call = fx.call(&method, &concrete);
            if security.contains("adminToken") {
                call = fx.admin(&method, &concrete);
            } else if security.contains("providerToken") {
                call = call
                    .no_auth()
                    .header("authorization", &format!("Bearer {STATUS}"));
            }
            let resp = call.send();
            let what = format!("{method} {path}");
            assert_ne!(
                resp.status, 405,
                "{what} is documented but not routed for that method"
            );
            let message = resp.body["error"]["message"].as_str().unwrap_or("");
            assert!(
                !message.starts_with("no such route"),
                "{what} is documented but not routed"
            );
            assert!(
                resp.status < 500 || resp.status == 503,
                "{what}: {}",
                resp.status
            );
            let errors = answer_errors(&doc, op, &resp);
            assert!(errors.is_empty(), "{what}: {errors:?}");
        }
    }
    assert!(
        operations >= 33,
        "every route documented ({operations} operations)"
    );
}

/// Collects the JSON pointer of every `required` array that OpenAPI 3.0 forbids:
/// its Schema Object says `required` has `minItems: 1` and `uniqueItems: true`.
fn bad_required(at: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{at}/{key}");
                if key == "required" {
                    if let Some(items) = child.as_array() {
                        let mut seen = std::collections::HashSet::new();
                        let unique = items.iter().all(|i| seen.insert(i.to_string()));
                        if items.is_empty() || !unique || !items.iter().all(|i| i.is_string()) {
                            out.push(here.clone());
                        }
                    }
                }
                bad_required(&here, child, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                bad_required(&format!("{at}/{i}"), child, out);
            }
        }
        _ => {}
    }
}

#[test]
fn openapi_document_has_no_empty_or_duplicate_required_arrays() {
    let fx = Fixture::start();
    let resp = fx.call("GET", "/openapi.json").no_auth().send();
    assert_eq!(resp.status, 200);
    let mut bad = Vec::new();
    bad_required("", &resp.body, &mut bad);
    assert!(bad.is_empty(), "invalid `required` arrays: {bad:?}");
    // Structurally an OpenAPI 3.1 document: it reads back into utoipa's model.
    let parsed = serde_json::from_value::<utoipa::openapi::OpenApi>(resp.body.clone());
    if let Err(e) = parsed {
        panic!("not an OpenAPI document: {e}");
    }
}

/// The official validator: `openapi-spec-validator` (PyPI), which checks the document
/// against the OpenAPI 3.0 JSON Schema and the rules the schema cannot express.
/// `.ci/run` installs it; elsewhere the test says how and skips when it is missing.
#[test]
fn openapi_document_validates_against_the_openapi_3_schema() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install openapi-spec-validator (see .ci/run)"
        );
        eprintln!(
            "SKIPPED: openapi-spec-validator is not installed \
             (python3 -m pip install openapi-spec-validator==0.9.0)"
        );
        return;
    }
    let fx = Fixture::start();
    let resp = fx.call("GET", "/openapi.json").no_auth().send();
    assert_eq!(resp.status, 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, resp.body.to_string()).expect("write the document");
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "the document is not valid OpenAPI 3:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ----- answers against the document ------------------------------------------------

/// What is wrong with `resp` as an answer of operation `op`: its status must be
/// documented, and a JSON body must match the documented schema.
fn answer_errors(doc: &Value, op: &Value, resp: &common::Resp) -> Vec<String> {
    let status = resp.status.to_string();
    let Some(documented) = op["responses"].get(&status) else {
        return vec![format!("status {status} is not documented: {}", resp.text)];
    };
    let Some(schema) = documented["content"]["application/json"].get("schema") else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    check(doc, schema, &resp.body, "", true, &mut errors);
    if !errors.is_empty() {
        errors.push(format!("body: {}", resp.text));
    }
    errors
}

/// The schema a `$ref` names, or `schema` itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// The property names an object schema declares (through `allOf` too).
fn declared(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
    let schema = resolve(doc, schema);
    if let Some(props) = schema["properties"].as_object() {
        out.extend(props.keys().cloned());
    }
    for branch in schema["allOf"].as_array().into_iter().flatten() {
        declared(doc, branch, out);
    }
}

/// Checks `value` against `schema` (the subset of JSON Schema the document uses:
/// `$ref`, `allOf`, `oneOf`, `type`, `enum`, `format` uuid and date-time,
/// `properties`, `required`, `items`, `additionalProperties`). With `closed`, an
/// object may hold no property its schema does not declare.
fn check(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    closed: bool,
    errors: &mut Vec<String>,
) {
    let schema = resolve(doc, schema);
    if let Some(branches) = schema["allOf"].as_array() {
        for branch in branches {
            check(doc, branch, value, at, false, errors);
        }
    }
    if let Some(branches) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let fits = branches.iter().any(|branch| {
            let mut e = Vec::new();
            check(doc, branch, value, at, closed, &mut e);
            e.is_empty()
        });
        if !fits {
            errors.push(format!("{at}: {value} fits no branch of {schema}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let fits = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        });
        if !fits {
            errors.push(format!("{at}: {value} is not of type {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !value.is_null() && !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(text) = value.as_str() {
        let ok = match schema["format"].as_str() {
            Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: {text:?} is not a {}", schema["format"]));
        }
    }
    if let Some(object) = value.as_object() {
        let props = schema["properties"].as_object();
        for (name, sub) in props.into_iter().flatten() {
            if let Some(v) = object.get(name) {
                check(doc, sub, v, &format!("{at}/{name}"), true, errors);
            }
        }
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                errors.push(format!("{at}: required {name:?} is missing"));
            }
        }
        if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            for (name, v) in object {
                check(doc, extra, v, &format!("{at}/{name}"), true, errors);
            }
        }
        let mut known = BTreeSet::new();
        declared(doc, schema, &mut known);
        let open = known.is_empty() || schema.get("additionalProperties").is_some();
        if closed && !open {
            for name in object.keys().filter(|n| !known.contains(*n)) {
                errors.push(format!("{at}: {name:?} is not documented"));
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, v) in values.iter().enumerate() {
            check(doc, items, v, &format!("{at}/{i}"), true, errors);
        }
    }
}

/// The documented operation `method path` (OpenAPI path syntax).
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// Calls `method concrete` as `call` does and checks the answer against the
/// operation `method path`; returns the answer's `data`.
#[track_caller]
fn conforms(doc: &Value, method: &str, path: &str, resp: common::Resp, status: u16) -> Value {
    assert_eq!(resp.status, status, "{method} {path}: {}", resp.text);
    let errors = answer_errors(doc, operation(doc, method, path), &resp);
    assert!(errors.is_empty(), "{method} {path}: {errors:?}");
    resp.body["data"].clone()
}

/// Every route's success answer (and the refusals that carry data) matches the
/// schema the document gives it, with no undocumented field: the schemas of
/// `src/api/schemas.rs` describe what the runtime really sends.
#[test]
fn real_answers_match_the_documented_schemas() {
    const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
    let fx = Fixture::with(FixtureOptions {
        admin_token: Some(ADMIN_TOKEN.into()),
        tweak_config: Some(Box::new(|c: &mut RuntimeConfig| {
            c.callbacks.allow_http = true;
            c.callbacks.allowed_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
            c.delivery.retry_schedule_secs = Vec::new();
            c.provider.status_token = Some(STATUS.into());
        })),
        ..FixtureOptions::default()
    });
    let doc = fx.call("GET", "/openapi.json").no_auth().send().body;
    let doc = &doc;
    let phone = "+14155550100";
    let otp = |path: &str, extra: Value| {
        let mut body = json!({"phone_number": phone, "app_key": APP_KEY});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        fx.post(path, &body)
    };

    // OTP: issue, resend, status, a refused and a good verify, invalidate.
    let issued = conforms(
        doc,
        "POST",
        "/v1/otp/request",
        otp("/v1/otp/request", json!({})),
        200,
    );
    conforms(
        doc,
        "POST",
        "/v1/otp/send",
        otp("/v1/otp/send", json!({})),
        200,
    );
    let resent = conforms(
        doc,
        "POST",
        "/v1/otp/resend",
        otp("/v1/otp/resend", json!({})),
        200,
    );
    let status = fx.status(phone);
    conforms(doc, "GET", "/v1/otp/status", status, 200);
    let message_id = resent["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    let code = fx.code_for(&message_id);
    let wrong = if code.starts_with('0') { "1" } else { "0" }.repeat(code.len());
    let refused = otp("/v1/otp/verify", json!({"code": wrong}));
    conforms(doc, "POST", "/v1/otp/verify", refused, 422);
    let verified = otp("/v1/otp/verify", json!({"code": code}));
    conforms(doc, "POST", "/v1/otp/verify", verified, 200);
    otp("/v1/otp/request", json!({}));
    let invalidated = otp("/v1/otp/invalidate", json!({}));
    conforms(doc, "POST", "/v1/otp/invalidate", invalidated, 200);
    assert!(issued["flake_id"].is_string());

    // Messages and a provider's status report.
    let queued = fx.post(
        "/v1/messages",
        &json!({"channel": "sms", "to": phone, "text": "hello",
                "delivery_report": {"webhook_url": "http://127.0.0.1:9/report"}}),
    );
    let queued = conforms(doc, "POST", "/v1/messages", queued, 202);
    let id = queued["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    fx.wait_until(|| fx.get(&format!("/v1/messages/{id}")).body["data"]["status"] != "queued");
    let message = fx.get(&format!("/v1/messages/{id}"));
    conforms(doc, "GET", "/v1/messages/{message_id}", message, 200);
    let report = fx
        .call("POST", "/v1/providers/status")
        .no_auth()
        .header("authorization", &format!("Bearer {STATUS}"))
        .json(&json!({"message_id": id, "status": "delivered"}))
        .send();
    conforms(doc, "POST", "/v1/providers/status", report, 200);
    let history = fx.get(&format!("/v1/messages/{id}/history"));
    let history = conforms(
        doc,
        "GET",
        "/v1/messages/{message_id}/history",
        history,
        200,
    );
    assert_eq!(history["history"][0]["status"], "queued");

    // Webhooks and the delivery log.
    let hook = fx.post(
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/hook", "service_type": "otp", "description": "d"}),
    );
    let hook = conforms(doc, "POST", "/v1/webhooks", hook, 201);
    let wh = hook["id"].as_str().expect("id").to_string();
    let at = |rest: &str| format!("/v1/webhooks/{wh}{rest}");
    conforms(doc, "GET", "/v1/webhooks", fx.get("/v1/webhooks"), 200);
    conforms(doc, "GET", "/v1/webhooks/{id}", fx.get(&at("")), 200);
    let patched = fx
        .call("PATCH", &at(""))
        .json(&json!({"description": "e"}))
        .send();
    conforms(doc, "PATCH", "/v1/webhooks/{id}", patched, 200);
    conforms(
        doc,
        "GET",
        "/v1/webhooks/{id}/secret",
        fx.get(&at("/secret")),
        200,
    );
    let rotated = fx.post(&at("/secret/rotate"), &json!({}));
    conforms(doc, "POST", "/v1/webhooks/{id}/secret/rotate", rotated, 200);
    let tested = conforms(
        doc,
        "POST",
        "/v1/webhooks/{id}/test",
        fx.post(&at("/test"), &json!({})),
        202,
    );
    let dlv = tested["delivery_id"]
        .as_str()
        .expect("delivery_id")
        .to_string();
    let detail = format!("/v1/webhooks/deliveries/{dlv}");
    fx.wait_until(|| fx.get(&detail).body["data"]["status"] == "failed");
    conforms(
        doc,
        "GET",
        "/v1/webhooks/deliveries/{delivery_id}",
        fx.get(&detail),
        200,
    );
    let stats = fx.get(&at("/stats"));
    conforms(doc, "GET", "/v1/webhooks/{id}/stats", stats, 200);
    let page = fx.get(&at("/deliveries?limit=10"));
    conforms(doc, "GET", "/v1/webhooks/{id}/deliveries", page, 200);
    conforms(doc, "GET", "/v1/deliveries", fx.get("/v1/deliveries"), 200);
    // The OTP overview, after the request/verify above: both windows.
    for window in ["hour", "day"] {
        let stats = fx.get(&format!("/v1/stats/otp?window={window}"));
        assert!(
            stats.body["data"]["buckets"]
                .as_array()
                .is_some_and(|b| !b.is_empty()),
            "{window}: {}",
            stats.body
        );
        conforms(doc, "GET", "/v1/stats/otp", stats, 200);
    }
    let since = json!({"since": "2000-01-01T00:00:00Z"});
    conforms(
        doc,
        "POST",
        "/v1/webhooks/{id}/recover",
        fx.post(&at("/recover"), &since),
        202,
    );
    fx.wait_until(|| fx.get(&detail).body["data"]["status"] == "failed");
    let retried = fx.post(&format!("{detail}/retry"), &json!({}));
    conforms(
        doc,
        "POST",
        "/v1/webhooks/deliveries/{delivery_id}/retry",
        retried,
        202,
    );
    let deleted = fx.call("DELETE", &at("")).send();
    assert_eq!(deleted.status, 204, "{}", deleted.text);

    // The admin API.
    let created = fx
        .admin("POST", "/admin/v1/apps")
        .json(&json!({"name": "Second", "settings": {"code_length": 8}}))
        .send();
    let created = conforms(doc, "POST", "/admin/v1/apps", created, 201);
    let app = format!(
        "/admin/v1/apps/{}",
        created["app_id"].as_str().expect("app_id")
    );
    conforms(
        doc,
        "GET",
        "/admin/v1/apps",
        fx.admin("GET", "/admin/v1/apps").send(),
        200,
    );
    conforms(
        doc,
        "GET",
        "/admin/v1/apps/{app_id}",
        fx.admin("GET", &app).send(),
        200,
    );
    let patched = fx
        .admin("PATCH", &app)
        .json(&json!({"name": "Renamed"}))
        .send();
    conforms(doc, "PATCH", "/admin/v1/apps/{app_id}", patched, 200);
    let key = fx.admin("POST", &format!("{app}/api-keys")).send();
    let key = conforms(doc, "POST", "/admin/v1/apps/{app_id}/api-keys", key, 201);
    let key_path = format!("{app}/api-keys/{}", key["key_id"].as_str().expect("key_id"));
    assert_eq!(fx.admin("DELETE", &key_path).send().status, 204);
}
