//! `/v1/webhooks…` and `/v1/deliveries` (SPEC section 6): webhook management and the
//! delivery log of the calling app.
//!
//! Handlers authenticate, parse, call the runtime and render the envelope; every rule
//! (URL policy, event names, one webhook per service type, retries) is the runtime's.
//! A webhook's secret is shown only where the spec says: on creation, by
//! `GET …/secret` and by `POST …/secret/rotate`. Every `POST` goes through
//! [`idempotent`]; the body-less ones (`rotate`, `test`, `retry`) ignore any body, so
//! an `Idempotency-Key` is keyed by method and path alone.
//!
//! Interpretations where the spec is silent:
//! - create and patch bodies refuse unknown fields (400): a typo such as `"event"`
//!   must not silently subscribe a webhook to every event;
//! - `since`/`until` of `recover` that are not RFC 3339 are 422 `validation_failed`
//!   (the JSON is well-formed, the value is not acceptable), like `until < since`;
//! - an unknown webhook id on any route, including `…/deliveries` and `…/stats`, is
//!   404 `not_found`, never an empty list.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use otpd_actors::clock::rfc3339;
use otpd_actors::runtime::{DeliveryQuery, NewWebhook, WebhookPatch};
use otpd_actors::webhooks::Webhook;
use otpd_actors::App;
use otpd_actors::Error;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{json_object, query, Authenticated};
use super::idempotency::idempotent;
use super::reply::Reply;
use super::ApiState;

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    service_type: String,
    events: Option<Vec<String>>,
    description: Option<String>,
}

/// Body of `PATCH /v1/webhooks/{id}`: only the fields given change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    status: Option<String>,
    description: Option<String>,
}

/// Body of `POST /v1/webhooks/{id}/recover`.
#[derive(Debug, Deserialize)]
struct RecoverBody {
    since: String,
    until: Option<String>,
}

/// Query of `GET /v1/webhooks/{id}/deliveries` and `GET /v1/deliveries`.
///
/// Values are checked by the runtime (400 `invalid_request` when bad); `limit` must
/// at least be a non-negative integer to get that far.
#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    kind: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl DeliveriesQuery {
    /// The runtime query: one webhook's deliveries (any `kind` is ignored there),
    /// or all of the app's.
    fn into_query(self, webhook_id: Option<String>) -> DeliveryQuery {
        let kind = if webhook_id.is_some() {
            None
        } else {
            self.kind
        };
        DeliveryQuery {
            webhook_id,
            kind,
            status: self.status,
            cursor: self.cursor,
            limit: self.limit,
        }
    }
}

/// One page of the delivery log as the envelope.
async fn deliveries_page(
    state: &ApiState,
    app: &App,
    q: DeliveryQuery,
) -> Result<HttpResponse, ApiError> {
    let page = state.runtime.deliveries(app, q).await?;
    Ok(Reply::ok(&page)?.into_response())
}

/// A webhook with its secret: the answer of `POST /v1/webhooks`.
#[derive(Serialize)]
struct CreatedWebhook<'a> {
    #[serde(flatten)]
    webhook: &'a Webhook,
    secret: &'a str,
}

#[derive(Serialize)]
struct WebhookList<'a> {
    items: Vec<&'a Webhook>,
}

#[derive(Serialize)]
struct SecretData<'a> {
    secret: &'a str,
}

/// `POST …/secret/rotate`: the new secret and the end of the previous one's grace.
#[derive(Serialize)]
struct RotatedData<'a> {
    secret: &'a str,
    previous_secret_expires_at: String,
}

#[derive(Serialize)]
struct RecoveredData {
    count: usize,
}

#[derive(Serialize)]
struct TestData {
    delivery_id: String,
}

/// A path segment by name (the router only matches when it is present).
fn segment<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    req.match_info()
        .get(name)
        .ok_or_else(|| ApiError::Internal(format!("route without a {{{name}}} segment")))
}

/// An RFC 3339 timestamp from a `recover` body (422 `validation_failed` otherwise).
fn timestamp(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::Validation(format!(
                "{field} must be an RFC 3339 timestamp such as 2026-06-07T12:00:00Z: {e}"
            ))
            .into()
        })
}

/// `POST /v1/webhooks` → 201 with the webhook and its secret.
pub async fn create(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (parsed, bytes) = json_object::<CreateBody>(body, state.body_limit)?;
    let app = auth.0;
    idempotent(&state, &app, &req, &bytes, || async {
        let webhook = state
            .runtime
            .create_webhook(
                &app,
                NewWebhook {
                    url: parsed.url,
                    service_type: parsed.service_type,
                    events: parsed.events,
                    description: parsed.description,
                },
            )
            .await?;
        Reply::created(&CreatedWebhook {
            webhook: webhook.as_ref(),
            secret: &webhook.secret,
        })
    })
    .await
}

/// `GET /v1/webhooks` → `{items: [...]}`, oldest first, no secrets.
pub async fn list(
    state: web::Data<ApiState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let webhooks = state.runtime.webhooks(&auth.0);
    let items = webhooks.iter().map(|w| w.as_ref()).collect();
    Ok(Reply::ok(&WebhookList { items })?.into_response())
}

/// `GET /v1/webhooks/{id}` (no secret).
pub async fn get(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let webhook = state.runtime.webhook(&auth.0, segment(&req, "id")?)?;
    Ok(Reply::ok(webhook.as_ref())?.into_response())
}

/// `PATCH /v1/webhooks/{id}` `{url?, events?, status?, description?}` → the webhook.
pub async fn patch(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (parsed, _) = json_object::<PatchBody>(body, state.body_limit)?;
    let webhook = state
        .runtime
        .update_webhook(
            &auth.0,
            segment(&req, "id")?,
            WebhookPatch {
                url: parsed.url,
                events: parsed.events,
                status: parsed.status,
                description: parsed.description,
            },
        )
        .await?;
    Ok(Reply::ok(webhook.as_ref())?.into_response())
}

/// `DELETE /v1/webhooks/{id}` → 204 with no body.
pub async fn delete(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state
        .runtime
        .delete_webhook(&auth.0, segment(&req, "id")?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/webhooks/{id}/secret` → `{secret}`.
pub async fn secret(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let webhook = state.runtime.webhook(&auth.0, segment(&req, "id")?)?;
    Ok(Reply::ok(&SecretData {
        secret: &webhook.secret,
    })?
    .into_response())
}

/// `POST /v1/webhooks/{id}/secret/rotate` → `{secret, previous_secret_expires_at}`.
pub async fn rotate_secret(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let app = auth.0;
    let id = segment(&req, "id")?;
    idempotent(&state, &app, &req, &[], || async {
        let rotated = state.runtime.rotate_webhook_secret(&app, id).await?;
        Reply::ok(&RotatedData {
            secret: &rotated.secret,
            previous_secret_expires_at: rfc3339(rotated.previous_secret_expires_at),
        })
    })
    .await
}

/// `POST /v1/webhooks/{id}/recover` `{since, until?}` → 202 `{count}`.
pub async fn recover(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (parsed, bytes) = json_object::<RecoverBody>(body, state.body_limit)?;
    let app = auth.0;
    let id = segment(&req, "id")?;
    idempotent(&state, &app, &req, &bytes, || async {
        let since = timestamp("since", &parsed.since)?;
        let until = parsed
            .until
            .as_deref()
            .map(|u| timestamp("until", u))
            .transpose()?;
        let count = state
            .runtime
            .recover_webhook(&app, id, since, until)
            .await?;
        Reply::with_status(StatusCode::ACCEPTED, &RecoveredData { count })
    })
    .await
}

/// `POST /v1/webhooks/{id}/test` → 202 `{delivery_id}` of a `<service_type>.test` event.
pub async fn test(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let app = auth.0;
    let id = segment(&req, "id")?;
    idempotent(&state, &app, &req, &[], || async {
        let delivery_id = state.runtime.test_webhook(&app, id).await?;
        Reply::with_status(StatusCode::ACCEPTED, &TestData { delivery_id })
    })
    .await
}

/// `GET /v1/webhooks/{id}/deliveries?status&limit&cursor` → `{items, next_cursor}`.
pub async fn webhook_deliveries(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: DeliveriesQuery = query(&req)?;
    let webhook = state.runtime.webhook(&auth.0, segment(&req, "id")?)?;
    deliveries_page(&state, &auth.0, q.into_query(Some(webhook.id.clone()))).await
}

/// `GET /v1/webhooks/{id}/stats`.
pub async fn stats(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let stats = state
        .runtime
        .webhook_stats(&auth.0, segment(&req, "id")?)
        .await?;
    Ok(Reply::ok(&stats)?.into_response())
}

/// `GET /v1/deliveries?kind&status&limit&cursor` → every delivery of the app.
pub async fn deliveries(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: DeliveriesQuery = query(&req)?;
    deliveries_page(&state, &auth.0, q.into_query(None)).await
}

/// `GET /v1/webhooks/deliveries/{delivery_id}` → the item with `url`, `payload` and
/// `attempt_log` (any delivery of the app: callbacks and reports too).
pub async fn delivery(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let detail = state
        .runtime
        .delivery(&auth.0, segment(&req, "delivery_id")?)
        .await?;
    Ok(Reply::ok(&detail)?.into_response())
}

/// `POST /v1/webhooks/deliveries/{delivery_id}/retry` → 202 with the delivery item.
pub async fn retry(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let app = auth.0;
    let id = segment(&req, "delivery_id")?;
    idempotent(&state, &app, &req, &[], || async {
        let view = state.runtime.retry_delivery(&app, id).await?;
        Reply::with_status(StatusCode::ACCEPTED, &view)
    })
    .await
}

/// Registers the webhook and delivery-log routes on the `/v1` scope.
///
/// `/webhooks/deliveries/…` comes before `/webhooks/{id}…` so `deliveries` is never
/// read as a webhook id.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(
        resource("/webhooks")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(resource("/webhooks/deliveries/{delivery_id}").route(web::get().to(delivery)))
    .service(resource("/webhooks/deliveries/{delivery_id}/retry").route(web::post().to(retry)))
    .service(
        resource("/webhooks/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete)),
    )
    .service(resource("/webhooks/{id}/secret").route(web::get().to(secret)))
    .service(resource("/webhooks/{id}/secret/rotate").route(web::post().to(rotate_secret)))
    .service(resource("/webhooks/{id}/recover").route(web::post().to(recover)))
    .service(resource("/webhooks/{id}/test").route(web::post().to(test)))
    .service(resource("/webhooks/{id}/deliveries").route(web::get().to(webhook_deliveries)))
    .service(resource("/webhooks/{id}/stats").route(web::get().to(stats)))
    .service(resource("/deliveries").route(web::get().to(deliveries)));
}
