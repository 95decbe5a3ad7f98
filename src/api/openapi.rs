//! `GET /openapi.json` (SPEC section 8): the OpenAPI document, derived from the code.
//!
//! Nothing here describes an operation by hand. Each handler carries its own
//! `#[utoipa::path(...)]` (method, path, parameters, body, status codes), request
//! bodies are the handlers' own DTOs with `#[derive(ToSchema)]`, and response bodies
//! are the handlers' DTOs or, for records of `otpd-actors`, the descriptions in
//! `schemas.rs`. This module lists the handlers ([`ApiDoc`]) and adds what every
//! operation shares because it is implemented once ([`Shared`]): the security
//! schemes, the `Idempotency-Key` header, and the 400/401/413/503 answers of
//! `extract.rs`, `idempotency.rs` and `error.rs`.
//!
//! `tests/openapi.rs` checks that the documented operations are exactly the routed
//! ones ([`super::operations`]) and that real answers match the document.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Content, HttpMethod, OpenApi as Document, Ref, RefOr, Required, ResponseBuilder,
};
use utoipa::{Modify, OpenApi};

use super::error::ErrorEnvelope;
use super::schemas;
use super::{admin, health, messages, metrics, otp, providers, stats, webhooks};

/// The security scheme of `X-API-Key` (an app's API key).
pub const API_KEY: &str = "apiKey";
/// The security scheme of the admin bearer token (`server.admin_token`).
pub const ADMIN_TOKEN: &str = "adminToken";
/// The security scheme of the provider bearer token (`provider.status_token`).
pub const PROVIDER_TOKEN: &str = "providerToken";

/// The document: every handler of the API, and what they share.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "otpd",
        description = "Self-hosted one-time passcodes: issue, send, verify, and notify \
            reliably. Every /v1 and /admin/v1 body is the envelope {success, data} or \
            {success: false, error: {code, message}, data?}."
    ),
    paths(
        otp::request,
        otp::send,
        otp::resend,
        otp::verify,
        otp::invalidate,
        otp::status,
        messages::send_message,
        messages::get_message,
        messages::get_message_history,
        providers::report_status,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::patch,
        webhooks::delete,
        webhooks::secret,
        webhooks::rotate_secret,
        webhooks::recover,
        webhooks::test,
        webhooks::webhook_deliveries,
        webhooks::stats,
        webhooks::deliveries,
        webhooks::delivery,
        webhooks::retry,
        stats::otp,
        admin::create_app,
        admin::list_apps,
        admin::get_app,
        admin::patch_app,
        admin::create_api_key,
        admin::delete_api_key,
        health::healthz,
        health::readyz,
        metrics::render,
        serve,
    ),
    components(schemas(ErrorEnvelope)),
    modifiers(&Shared),
    tags(
        (name = "otp", description = "Issue, send, verify and invalidate codes (SPEC section 4)"),
        (name = "messages", description = "Messages and provider status reports (SPEC section 7)"),
        (name = "webhooks", description = "Webhook management (SPEC section 6)"),
        (name = "deliveries", description = "The delivery log: callbacks, webhooks, reports"),
        (name = "admin", description = "Apps and API keys, behind the admin token (SPEC section 2)"),
        (name = "operations", description = "Probes, metrics and this document (SPEC section 8)"),
    )
)]
pub struct ApiDoc;

/// What every operation shares because it is implemented once, added to each
/// operation the handlers describe.
///
/// - the success envelope `{"success": true, "data": …}` around every 2xx JSON body
///   of `/v1` and `/admin/v1` (`reply.rs`): handlers describe `data` only;
/// - the security schemes; an operation without `security` gets `[]` (public);
/// - `Idempotency-Key` on every `POST` under `/v1` that an app makes
///   (`idempotency.rs`; not the provider's status reports);
/// - 400 and 413 where a body or a query string is parsed (`extract.rs`), 401 where
///   credentials are checked, and 503 everywhere (`error.rs`: shutting down or
///   storage failing).
pub struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        for (name, description) in [
            (ADMIN_TOKEN, "server.admin_token"),
            (PROVIDER_TOKEN, "provider.status_token"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Patch, &mut item.patch),
                (HttpMethod::Delete, &mut item.delete),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    add_shared(path, &method, operation);
                }
            }
        }
    }
}

/// Names of the security schemes an operation accepts.
fn schemes(operation: &Operation) -> Vec<String> {
    let text = serde_json::to_value(&operation.security).unwrap_or_default();
    text.as_array()
        .into_iter()
        .flatten()
        .filter_map(|requirement| requirement.as_object())
        .flat_map(|requirement| requirement.keys().cloned())
        .collect()
}

fn add_shared(path: &str, method: &HttpMethod, operation: &mut Operation) {
    let schemes = schemes(operation);
    if operation.security.is_none() {
        operation.security = Some(Vec::new());
    }
    let by_provider = schemes.iter().any(|s| s == PROVIDER_TOKEN);
    if matches!(method, HttpMethod::Post) && path.starts_with("/v1/") && !by_provider {
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "1–255 printable ASCII; a repeat within 24 h replays the first response",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(255)),
            ))
            .build();
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(header);
    }
    if path.starts_with("/v1/") || path.starts_with("/admin/v1/") {
        wrap_in_envelope(operation);
    }
    let has_query = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    let responses = &mut operation.responses.responses;
    let mut add = |status: u16, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    };
    if operation.request_body.is_some() {
        add(400, "Malformed JSON, wrong types or missing fields");
        add(413, "Body over 64 KiB");
    } else if has_query {
        add(400, "A query parameter is missing or of the wrong type");
    }
    if !schemes.is_empty() {
        add(401, "Missing or unknown credentials");
    }
    add(503, "Shutting down or storage not writable (Retry-After)");
}

/// Puts `{"success": true, "data": <schema>}` around the JSON body of every 2xx.
fn wrap_in_envelope(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !status.starts_with('2') {
            continue;
        }
        let Some(content) = response.content.get_mut("application/json") else {
            continue;
        };
        let Some(data) = content.schema.take() else {
            continue;
        };
        let envelope = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("success", schemas::always_true())
            .property("data", data)
            .required("success")
            .required("data");
        content.schema = Some(envelope.into());
    }
}

/// A response whose body is the error envelope.
fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorEnvelope"))),
        )
        .build()
        .into()
}

/// The document as JSON, built once.
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json"))
)]
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
