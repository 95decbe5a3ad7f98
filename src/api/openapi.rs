//! `GET /openapi.json` (SPEC section 8): an OpenAPI 3 document of every route.
//!
//! The document is assembled here from small helpers so it stays readable next to
//! the routes it describes; `tests/openapi.rs` checks that every documented
//! operation is routed, so the two cannot drift apart silently.

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

/// How an operation authenticates.
#[derive(Clone, Copy)]
enum Auth {
    Public,
    ApiKey,
    Admin,
    Provider,
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `{"success": true, "data": <schema>}`.
fn ok(status: u16, description: &str, data: Option<&str>) -> (String, Value) {
    let content = match data {
        Some(name) => json!({"application/json": {"schema": {
            "type": "object", "required": ["success", "data"],
            "properties": {"success": {"type": "boolean", "enum": [true]}, "data": schema_ref(name)}
        }}}),
        None => Value::Null,
    };
    let mut response = json!({"description": description});
    if !content.is_null() {
        response["content"] = content;
    }
    (status.to_string(), response)
}

fn err(status: u16, description: &str) -> (String, Value) {
    (
        status.to_string(),
        json!({"description": description, "content": {"application/json": {"schema": schema_ref("ErrorEnvelope")}}}),
    )
}

struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    auth: Auth,
    body: Option<&'static str>,
    query: &'static [(&'static str, &'static str)],
    responses: Vec<(String, Value)>,
}

fn operation(op: &Op) -> Value {
    let mut params: Vec<Value> = Vec::new();
    let mut rest = op.path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .unwrap_or(rest.len());
        let name = &rest[start + 1..end];
        params.push(
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
        );
        rest = &rest[end..];
    }
    for (name, description) in op.query {
        params.push(json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}}));
    }
    if op.method == "post" && op.path.starts_with("/v1/") && !matches!(op.auth, Auth::Provider) {
        params.push(
            json!({"name": "Idempotency-Key", "in": "header", "required": false,
            "description": "1–255 printable ASCII; a repeat within 24 h replays the first response",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}}),
        );
    }
    let mut responses: Map<String, Value> = op.responses.iter().cloned().collect();
    let (code, bad) = err(400, "Malformed JSON, wrong types or missing fields");
    if op.body.is_some() {
        responses.entry(code).or_insert(bad);
        let (code, big) = err(413, "Body over 64 KiB");
        responses.entry(code).or_insert(big);
    }
    if !matches!(op.auth, Auth::Public) {
        let (code, unauthorized) = err(401, "Missing or unknown credentials");
        responses.entry(code).or_insert(unauthorized);
    }
    let (code, unavailable) = err(503, "Shutting down or storage not writable");
    responses.entry(code).or_insert(unavailable);
    let mut out = json!({"summary": op.summary, "tags": [op.tag], "responses": responses});
    if !params.is_empty() {
        out["parameters"] = Value::Array(params);
    }
    if let Some(body) = op.body {
        out["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema_ref(body)}}});
    }
    out["security"] = match op.auth {
        Auth::Public => json!([]),
        Auth::ApiKey => json!([{"apiKey": []}]),
        Auth::Admin => json!([{"adminToken": []}]),
        Auth::Provider => json!([{"providerToken": []}]),
    };
    out
}

fn operations() -> Vec<Op> {
    use Auth::*;
    let otp_errors = || {
        vec![
            err(403, "app_key is not the app of this API key"),
            err(422, "invalid_phone_number, country_not_allowed, invalid_callback_url, validation_failed"),
            err(429, "rate_limited (Retry-After header)"),
        ]
    };
    let issued = |mut extra: Vec<(String, Value)>| {
        extra.insert(
            0,
            ok(200, "Code issued and sent (never returned)", Some("Issued")),
        );
        extra
    };
    let webhook_404 = || err(404, "No such webhook");
    vec![
        Op { method: "post", path: "/v1/otp/request", summary: "Issue a code (replaces any flake for the phone)", tag: "otp", auth: ApiKey, body: Some("OtpSend"), query: &[], responses: issued(otp_errors()) },
        Op { method: "post", path: "/v1/otp/send", summary: "Alias of /v1/otp/request", tag: "otp", auth: ApiKey, body: Some("OtpSend"), query: &[], responses: issued(otp_errors()) },
        Op { method: "post", path: "/v1/otp/resend", summary: "New code for a pending flake", tag: "otp", auth: ApiKey, body: Some("OtpSend"), query: &[], responses: issued([otp_errors(), vec![err(404, "No pending flake")]].concat()) },
        Op { method: "post", path: "/v1/otp/verify", summary: "Verify a code", tag: "otp", auth: ApiKey, body: Some("OtpVerify"), query: &[], responses: vec![
            ok(200, "Verified", Some("Verified")), err(403, "app_key mismatch"),
            err(404, "No flake for (phone, app)"),
            err(422, "invalid_code, max_attempts, expired, already_verified (data: flake state), invalid_phone_number, invalid_callback_url"),
        ] },
        Op { method: "post", path: "/v1/otp/invalidate", summary: "Invalidate the pending flake", tag: "otp", auth: ApiKey, body: Some("OtpPhone"), query: &[], responses: vec![ok(200, "Invalidated", Some("Invalidated")), err(403, "app_key mismatch"), err(404, "No pending flake")] },
        Op { method: "get", path: "/v1/otp/status", summary: "Status of the current flake", tag: "otp", auth: ApiKey, body: None, query: &[("phone_number", "required"), ("app_key", "required")], responses: vec![ok(200, "Flake status", Some("FlakeStatus")), err(403, "app_key mismatch"), err(404, "No flake")] },
        Op { method: "post", path: "/v1/messages", summary: "Queue a message", tag: "messages", auth: ApiKey, body: Some("MessageSend"), query: &[], responses: vec![ok(202, "Queued", Some("MessageAccepted")), err(422, "invalid_phone_number, validation_failed, invalid_callback_url")] },
        Op { method: "get", path: "/v1/messages/{message_id}", summary: "A message and its delivery status", tag: "messages", auth: ApiKey, body: None, query: &[], responses: vec![ok(200, "The message", Some("Message")), err(404, "No such message")] },
        Op { method: "post", path: "/v1/providers/status", summary: "Provider status report (Bearer provider.status_token)", tag: "messages", auth: Provider, body: Some("StatusReport"), query: &[], responses: vec![ok(200, "Applied or not (rank guard)", Some("Applied")), err(404, "No such message")] },
        Op { method: "post", path: "/v1/webhooks", summary: "Register a webhook", tag: "webhooks", auth: ApiKey, body: Some("WebhookCreate"), query: &[], responses: vec![ok(201, "Created (secret shown)", Some("WebhookWithSecret")), err(409, "A webhook for this service_type exists"), err(422, "validation_failed, invalid_callback_url")] },
        Op { method: "get", path: "/v1/webhooks", summary: "List webhooks", tag: "webhooks", auth: ApiKey, body: None, query: &[], responses: vec![ok(200, "Webhooks", Some("WebhookList"))] },
        Op { method: "get", path: "/v1/webhooks/{id}", summary: "One webhook", tag: "webhooks", auth: ApiKey, body: None, query: &[], responses: vec![ok(200, "The webhook", Some("Webhook")), webhook_404()] },
        Op { method: "patch", path: "/v1/webhooks/{id}", summary: "Change url, events, status or description", tag: "webhooks", auth: ApiKey, body: Some("WebhookPatch"), query: &[], responses: vec![ok(200, "Updated", Some("Webhook")), webhook_404(), err(422, "validation_failed, invalid_callback_url")] },
        Op { method: "delete", path: "/v1/webhooks/{id}", summary: "Delete a webhook", tag: "webhooks", auth: ApiKey, body: None, query: &[], responses: vec![ok(204, "Deleted", None), webhook_404()] },
        Op { method: "get", path: "/v1/webhooks/{id}/secret", summary: "The signing secret", tag: "webhooks", auth: ApiKey, body: None, query: &[], responses: vec![ok(200, "Secret", Some("Secret")), webhook_404()] },
        Op { method: "post", path: "/v1/webhooks/{id}/secret/rotate", summary: "Rotate the secret (previous one valid for the grace period)", tag: "webhooks", auth: ApiKey, body: None, query: &[], responses: vec![ok(200, "New secret", Some("RotatedSecret")), webhook_404()] },
        Op { method: "post", path: "/v1/webhooks/{id}/recover", summary: "Retry failed deliveries created in a window", tag: "webhooks", auth: ApiKey, body: Some("Recover"), query: &[], responses: vec![ok(202, "Deliveries given a new attempt series", Some("Count")), webhook_404(), err(422, "validation_failed")] },
        Op { method: "post", path: "/v1/webhooks/{id}/test", summary: "Send a signed <service_type>.test event", tag: "webhooks", auth: ApiKey, body: None, query: &[], responses: vec![ok(202, "Queued", Some("DeliveryId")), webhook_404()] },
        Op { method: "get", path: "/v1/webhooks/{id}/deliveries", summary: "A webhook's deliveries", tag: "deliveries", auth: ApiKey, body: None, query: &[("status", "pending|succeeded|failed"), ("limit", "1–100, default 50"), ("cursor", "next_cursor of the previous page")], responses: vec![ok(200, "A page", Some("DeliveryPage")), webhook_404()] },
        Op { method: "get", path: "/v1/webhooks/{id}/stats", summary: "Counts, health and latency", tag: "webhooks", auth: ApiKey, body: None, query: &[], responses: vec![ok(200, "Stats", Some("WebhookStats")), webhook_404()] },
        Op { method: "get", path: "/v1/deliveries", summary: "The app's deliveries (callbacks, webhooks, reports)", tag: "deliveries", auth: ApiKey, body: None, query: &[("kind", "callback|webhook|report"), ("status", "pending|succeeded|failed"), ("limit", "1–100, default 50"), ("cursor", "next_cursor of the previous page")], responses: vec![ok(200, "A page", Some("DeliveryPage"))] },
        Op { method: "get", path: "/v1/webhooks/deliveries/{delivery_id}", summary: "A delivery with its payload and attempt log", tag: "deliveries", auth: ApiKey, body: None, query: &[], responses: vec![ok(200, "The delivery", Some("DeliveryDetail")), err(404, "No such delivery")] },
        Op { method: "post", path: "/v1/webhooks/deliveries/{delivery_id}/retry", summary: "A new attempt series (same event id and body)", tag: "deliveries", auth: ApiKey, body: None, query: &[], responses: vec![ok(202, "Retrying", Some("Delivery")), err(404, "No such delivery")] },
        Op { method: "post", path: "/admin/v1/apps", summary: "Create an app (API key shown once)", tag: "admin", auth: Admin, body: Some("AppCreate"), query: &[], responses: vec![ok(201, "Created", Some("CreatedApp")), err(409, "app_key taken"), err(422, "validation_failed")] },
        Op { method: "get", path: "/admin/v1/apps", summary: "List apps (no secrets)", tag: "admin", auth: Admin, body: None, query: &[], responses: vec![ok(200, "Apps", Some("AppList"))] },
        Op { method: "get", path: "/admin/v1/apps/{app_id}", summary: "One app", tag: "admin", auth: Admin, body: None, query: &[], responses: vec![ok(200, "The app", Some("App")), err(404, "No such app")] },
        Op { method: "patch", path: "/admin/v1/apps/{app_id}", summary: "Change settings and/or name", tag: "admin", auth: Admin, body: Some("AppPatch"), query: &[], responses: vec![ok(200, "Updated", Some("App")), err(404, "No such app"), err(422, "validation_failed")] },
        Op { method: "post", path: "/admin/v1/apps/{app_id}/api-keys", summary: "Add an API key (shown once)", tag: "admin", auth: Admin, body: None, query: &[], responses: vec![ok(201, "Created", Some("ApiKey")), err(404, "No such app")] },
        Op { method: "delete", path: "/admin/v1/apps/{app_id}/api-keys/{key_id}", summary: "Revoke an API key", tag: "admin", auth: Admin, body: None, query: &[], responses: vec![ok(204, "Revoked", None), err(404, "No such key")] },
        Op { method: "get", path: "/healthz", summary: "The process runs", tag: "operations", auth: Public, body: None, query: &[], responses: vec![("200".into(), json!({"description": "OK"}))] },
        Op { method: "get", path: "/readyz", summary: "Storage writable and recovery done", tag: "operations", auth: Public, body: None, query: &[], responses: vec![("200".into(), json!({"description": "Ready"}))] },
        Op { method: "get", path: "/metrics", summary: "Prometheus text", tag: "operations", auth: Public, body: None, query: &[], responses: vec![("200".into(), json!({"description": "Prometheus exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}))] },
        Op { method: "get", path: "/openapi.json", summary: "This document", tag: "operations", auth: Public, body: None, query: &[], responses: vec![("200".into(), json!({"description": "OpenAPI 3 document"}))] },
    ]
}

/// An object schema. OpenAPI 3.0 forbids an empty `required` array (`minItems: 1`),
/// so it is left out when no property is required.
fn obj(required: &[&str], props: Value) -> Value {
    let mut schema = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let ts =
        json!({"type": "string", "format": "date-time", "example": "2026-06-07T12:00:05.123Z"});
    let uuid = json!({"type": "string", "format": "uuid"});
    let channel = json!({"type": "string", "enum": ["sms", "whatsapp", "telegram"]});
    let delivery_item = json!({"delivery_id": s("string"), "event_id": s("string"), "event": s("string"),
        "kind": {"type": "string", "enum": ["callback", "webhook", "report"]},
        "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]}, "attempts": s("integer"),
        "last_status_code": {"type": "integer", "nullable": true}, "last_error": {"type": "string", "nullable": true},
        "created_at": ts, "updated_at": ts, "next_attempt_at": {"type": "string", "format": "date-time", "nullable": true}});
    let webhook = json!({"id": s("string"), "url": s("string"), "service_type": {"type": "string", "enum": ["otp", "sms", "whatsapp", "telegram"]},
        "events": {"type": "array", "items": s("string")}, "status": {"type": "string", "enum": ["active", "disabled"]},
        "description": {"type": "string", "nullable": true}, "created_at": ts, "updated_at": ts});
    let mut webhook_with_secret = webhook.clone();
    webhook_with_secret["secret"] = json!({"type": "string", "example": "whsec_…"});
    let mut detail = delivery_item.clone();
    detail["url"] = s("string");
    detail["payload"] = json!({"type": "string", "description": "The exact body sent"});
    detail["attempt_log"] = json!({"type": "array", "items": obj(&["attempt", "at", "duration_ms"], json!({
        "attempt": s("integer"), "at": ts, "status_code": {"type": "integer", "nullable": true},
        "error": {"type": "string", "nullable": true}, "duration_ms": s("integer")}))});
    let app = json!({"app_id": uuid, "app_key": s("string"), "name": s("string"), "settings": schema_ref("AppSettings"), "created_at": ts});
    let mut created_app = app.clone();
    created_app["api_key"] = s("string");
    created_app["key_id"] = uuid.clone();
    let list: Vec<(&str, Value)> = vec![
        (
            "ErrorEnvelope",
            obj(
                &["success", "error"],
                json!({"success": {"type": "boolean", "enum": [false]},
            "error": obj(&["code", "message"], json!({"code": s("string"), "message": s("string")})), "data": s("object")}),
            ),
        ),
        (
            "OtpSend",
            obj(
                &["phone_number", "app_key"],
                json!({"phone_number": s("string"), "app_key": s("string"), "delivery_method": channel,
            "minutes_to_expire": {"type": "integer", "minimum": 1, "maximum": 60}, "callback_url": s("string"),
            "callback_secret": {"type": "string", "minLength": 1, "maxLength": 256}}),
            ),
        ),
        (
            "OtpVerify",
            obj(
                &["phone_number", "app_key", "code"],
                json!({"phone_number": s("string"), "app_key": s("string"), "code": s("string"),
            "callback_url": s("string"), "callback_secret": s("string")}),
            ),
        ),
        (
            "OtpPhone",
            obj(
                &["phone_number", "app_key"],
                json!({"phone_number": s("string"), "app_key": s("string")}),
            ),
        ),
        (
            "Issued",
            obj(
                &[
                    "flake_id",
                    "phone_number",
                    "delivery_method",
                    "expires_at",
                    "message_id",
                ],
                json!({"flake_id": uuid, "phone_number": s("string"),
            "delivery_method": channel, "expires_at": ts, "message_id": {"type": "string", "format": "uuid", "nullable": true}}),
            ),
        ),
        (
            "Verified",
            obj(
                &["flake_id", "phone_number", "status", "verified_at"],
                json!({"flake_id": uuid, "phone_number": s("string"), "status": {"type": "string", "enum": ["verified"]}, "verified_at": ts}),
            ),
        ),
        (
            "Invalidated",
            obj(
                &["flake_id", "status"],
                json!({"flake_id": uuid, "status": {"type": "string", "enum": ["invalidated"]}}),
            ),
        ),
        (
            "FlakeStatus",
            obj(
                &[
                    "flake_id",
                    "phone_number",
                    "status",
                    "attempts",
                    "remaining_attempts",
                    "expires_at",
                    "delivery_method",
                ],
                json!({"flake_id": uuid,
            "phone_number": s("string"), "status": {"type": "string", "enum": ["pending", "verified", "failed", "expired", "invalidated"]},
            "attempts": s("integer"), "remaining_attempts": s("integer"), "expires_at": ts, "delivery_method": channel,
            "message_id": {"type": "string", "format": "uuid", "nullable": true}}),
            ),
        ),
        (
            "MessageSend",
            obj(
                &["channel", "to", "text"],
                json!({"channel": channel, "to": s("string"), "text": {"type": "string", "minLength": 1, "maxLength": 1600},
            "sender_id": s("string"), "delivery_report": obj(&["webhook_url"], json!({"webhook_url": s("string"),
            "delivery_report_type": {"type": "string", "enum": ["all", "final"]}, "webhook_secret": s("string")}))}),
            ),
        ),
        (
            "MessageAccepted",
            obj(
                &["message_id", "status"],
                json!({"message_id": uuid, "status": {"type": "string", "enum": ["queued"]}}),
            ),
        ),
        (
            "Message",
            obj(
                &[
                    "message_id",
                    "channel",
                    "to",
                    "status",
                    "created_at",
                    "updated_at",
                ],
                json!({"message_id": uuid, "channel": channel, "to": s("string"),
            "status": {"type": "string", "enum": ["queued", "sent", "delivered", "read", "failed"]}, "error_code": {"type": "string", "nullable": true},
            "error_message": {"type": "string", "nullable": true}, "sender_id": {"type": "string", "nullable": true}, "created_at": ts, "updated_at": ts}),
            ),
        ),
        (
            "StatusReport",
            obj(
                &["status"],
                json!({"message_id": s("string"), "provider_message_id": s("string"),
            "status": {"type": "string", "enum": ["sent", "delivered", "read", "failed"]}, "error_code": s("string"), "error_message": s("string")}),
            ),
        ),
        (
            "Applied",
            obj(
                &["applied", "status"],
                json!({"applied": s("boolean"), "status": s("string")}),
            ),
        ),
        (
            "WebhookCreate",
            obj(
                &["url", "service_type"],
                json!({"url": s("string"), "service_type": {"type": "string", "enum": ["otp", "sms", "whatsapp", "telegram"]},
            "events": {"type": "array", "items": s("string")}, "description": s("string")}),
            ),
        ),
        (
            "WebhookPatch",
            obj(
                &[],
                json!({"url": s("string"), "events": {"type": "array", "items": s("string")},
            "status": {"type": "string", "enum": ["active", "disabled"]}, "description": s("string")}),
            ),
        ),
        (
            "Webhook",
            obj(
                &[
                    "id",
                    "url",
                    "service_type",
                    "events",
                    "status",
                    "created_at",
                ],
                webhook,
            ),
        ),
        (
            "WebhookWithSecret",
            obj(
                &[
                    "id",
                    "url",
                    "service_type",
                    "events",
                    "status",
                    "secret",
                    "created_at",
                ],
                webhook_with_secret,
            ),
        ),
        (
            "WebhookList",
            obj(
                &["items"],
                json!({"items": {"type": "array", "items": schema_ref("Webhook")}}),
            ),
        ),
        ("Secret", obj(&["secret"], json!({"secret": s("string")}))),
        (
            "RotatedSecret",
            obj(
                &["secret", "previous_secret_expires_at"],
                json!({"secret": s("string"),
                    "previous_secret_expires_at": {"type": "string", "format": "date-time"}}),
            ),
        ),
        (
            "Recover",
            obj(&["since"], json!({"since": ts, "until": ts})),
        ),
        ("Count", obj(&["count"], json!({"count": s("integer")}))),
        (
            "DeliveryId",
            obj(&["delivery_id"], json!({"delivery_id": s("string")})),
        ),
        (
            "Delivery",
            obj(
                &["delivery_id", "event_id", "event", "status", "attempts"],
                delivery_item,
            ),
        ),
        (
            "DeliveryPage",
            obj(
                &["items", "next_cursor"],
                json!({"items": {"type": "array", "items": schema_ref("Delivery")}, "next_cursor": {"type": "string", "nullable": true}}),
            ),
        ),
        (
            "DeliveryDetail",
            obj(&["delivery_id", "url", "payload", "attempt_log"], detail),
        ),
        (
            "WebhookStats",
            obj(
                &["total", "succeeded", "failed", "pending"],
                json!({"total": s("integer"), "succeeded": s("integer"), "failed": s("integer"),
            "pending": s("integer"), "success_rate": {"type": "number", "nullable": true}, "consecutive_failures": s("integer"),
            "paused_until": {"type": "string", "format": "date-time", "nullable": true}, "last_success_at": {"type": "string", "format": "date-time", "nullable": true},
            "last_failure_at": {"type": "string", "format": "date-time", "nullable": true},
            "latency_ms": obj(&[], json!({"p50": {"type": "integer", "nullable": true}, "p95": {"type": "integer", "nullable": true}}))}),
            ),
        ),
        (
            "AppSettings",
            obj(
                &[],
                json!({"code_length": {"type": "integer", "minimum": 4, "maximum": 10}, "minutes_to_expire": {"type": "integer", "minimum": 1, "maximum": 60},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10}, "resend_cooldown_secs": s("integer"), "max_sends_per_hour": s("integer"),
            "sender_id": {"type": "string", "nullable": true}, "message_template": s("string"), "max_sends_per_minute": s("integer"),
            "allowed_countries": {"type": "array", "items": s("string")}, "test_numbers": {"type": "object", "additionalProperties": s("string")}}),
            ),
        ),
        (
            "AppCreate",
            obj(
                &["name"],
                json!({"name": s("string"), "app_key": s("string"), "settings": schema_ref("AppSettings")}),
            ),
        ),
        (
            "AppPatch",
            obj(
                &[],
                json!({"name": s("string"), "settings": schema_ref("AppSettings")}),
            ),
        ),
        ("App", obj(&["app_id", "app_key", "name", "settings"], app)),
        (
            "AppList",
            obj(
                &["items"],
                json!({"items": {"type": "array", "items": schema_ref("App")}}),
            ),
        ),
        (
            "CreatedApp",
            obj(&["app_id", "app_key", "api_key", "key_id"], created_app),
        ),
        (
            "ApiKey",
            obj(
                &["key_id", "api_key"],
                json!({"key_id": uuid, "api_key": s("string")}),
            ),
        ),
    ];
    Value::Object(list.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// The whole document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in operations() {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation(&op);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "otpd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted one-time passcodes: issue, send, verify, and notify reliably. Every /v1 and /admin/v1 body is the envelope {success, data} or {success: false, error: {code, message}, data?}."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "server.admin_token"},
                "providerToken": {"type": "http", "scheme": "bearer", "description": "provider.status_token"}
            }
        }
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_every_path_has_operations() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for (i, _) in text.match_indices("#/components/schemas/") {
            let rest = &text[i + "#/components/schemas/".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 28);
        for (path, item) in paths {
            assert!(!item.as_object().expect("path item").is_empty(), "{path}");
        }
    }
}
