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
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{json_object, query, Authenticated};
use super::idempotency::idempotent;
use super::reply::Reply;
use super::routes::Endpoint;
use super::schemas::{self, DeliveryDetail, DeliveryPage, DeliveryView, WebhookStats};
use super::ApiState;

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookCreate)]
struct CreateBody {
    /// Destination (the URL policy applies).
    url: String,
    /// Which events it can receive.
    #[schema(value_type = schemas::ServiceType)]
    service_type: String,
    /// Subscribed events (default: every active event of the type).
    events: Option<Vec<String>>,
    /// Free text.
    description: Option<String>,
}

/// Body of `PATCH /v1/webhooks/{id}`: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookPatch)]
struct PatchBody {
    /// New destination.
    url: Option<String>,
    /// New subscription.
    events: Option<Vec<String>>,
    /// Pause or resume deliveries.
    #[schema(value_type = Option<schemas::WebhookStatus>)]
    status: Option<String>,
    /// New description.
    description: Option<String>,
}

/// Body of `POST /v1/webhooks/{id}/recover`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Recover)]
struct RecoverBody {
    /// Failed deliveries created at or after this RFC 3339 time are retried.
    #[schema(format = DateTime)]
    since: String,
    /// … and before this one (default: now).
    #[schema(format = DateTime)]
    until: Option<String>,
}

/// Query of `GET /v1/webhooks/{id}/deliveries` and `GET /v1/deliveries`.
///
/// Values are checked by the runtime (400 `invalid_request` when bad); `limit` must
/// at least be a non-negative integer to get that far.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// `callback`, `webhook` or `report` (ignored on a webhook's own deliveries).
    #[param(value_type = Option<schemas::DeliveryKind>)]
    kind: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    #[param(value_type = Option<schemas::DeliveryStatus>)]
    status: Option<String>,
    /// Page size: 1–100, default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The `{id}` of a webhook route: `wh_<32 hex>`.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
struct WebhookId(String);

/// The `{delivery_id}` of a delivery route: `dlv_…`.
#[derive(IntoParams)]
#[into_params(names("delivery_id"), parameter_in = Path)]
#[allow(dead_code)]
struct DeliveryId(String);

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
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookWithSecret)]
struct CreatedWebhook<'a> {
    /// The webhook.
    #[serde(flatten)]
    #[schema(value_type = schemas::Webhook)]
    webhook: &'a Webhook,
    /// The signing secret (`whsec_…`).
    #[schema(example = "whsec_…")]
    secret: &'a str,
}

/// The answer of `GET /v1/webhooks`, oldest first.
#[derive(Serialize, ToSchema)]
struct WebhookList<'a> {
    /// The webhooks (no secrets).
    #[schema(value_type = Vec<schemas::Webhook>)]
    items: Vec<&'a Webhook>,
}

/// The answer of `GET …/secret`.
#[derive(Serialize, ToSchema)]
#[schema(as = Secret)]
struct SecretData<'a> {
    /// The current signing secret.
    secret: &'a str,
}

/// `POST …/secret/rotate`: the new secret and the end of the previous one's grace.
#[derive(Serialize, ToSchema)]
#[schema(as = RotatedSecret)]
struct RotatedData<'a> {
    /// The new signing secret.
    secret: &'a str,
    /// Until when the previous secret still signs.
    #[schema(format = DateTime)]
    previous_secret_expires_at: String,
}

/// The answer of `POST …/recover`.
#[derive(Serialize, ToSchema)]
#[schema(as = Count)]
struct RecoveredData {
    /// Deliveries given a new attempt series.
    count: usize,
}

/// The answer of `POST …/test`.
#[derive(Serialize, ToSchema)]
#[schema(as = DeliveryId)]
struct TestData {
    /// The test event's delivery.
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
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    summary = "Register a webhook",
    security(("apiKey" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created (secret shown)", body = CreatedWebhook),
        (status = 409, description = "A webhook for this service_type exists", body = ErrorEnvelope),
        (status = 422, description = "validation_failed, invalid_callback_url", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    summary = "List webhooks",
    security(("apiKey" = [])),
    responses(
        (status = 200, description = "Webhooks", body = WebhookList),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let webhooks = state.runtime.webhooks(&auth.0);
    let items = webhooks.iter().map(|w| w.as_ref()).collect();
    Ok(Reply::ok(&WebhookList { items })?.into_response())
}

/// `GET /v1/webhooks/{id}` (no secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "One webhook",
    security(("apiKey" = [])),
    params(WebhookId),
    responses(
        (status = 200, description = "The webhook", body = schemas::Webhook),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    )
)]
pub async fn get(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let webhook = state.runtime.webhook(&auth.0, segment(&req, "id")?)?;
    Ok(Reply::ok(webhook.as_ref())?.into_response())
}

/// `PATCH /v1/webhooks/{id}` `{url?, events?, status?, description?}` → the webhook.
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Change url, events, status or description",
    security(("apiKey" = [])),
    params(WebhookId),
    request_body = PatchBody,
    responses(
        (status = 200, description = "Updated", body = schemas::Webhook),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
        (status = 422, description = "validation_failed, invalid_callback_url", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook",
    security(("apiKey" = [])),
    params(WebhookId),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/secret",
    tag = "webhooks",
    summary = "The signing secret",
    security(("apiKey" = [])),
    params(WebhookId),
    responses(
        (status = 200, description = "Secret", body = SecretData),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/secret/rotate",
    tag = "webhooks",
    summary = "Rotate the secret (previous one valid for the grace period)",
    security(("apiKey" = [])),
    params(WebhookId),
    responses(
        (status = 200, description = "New secret", body = RotatedData),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/recover",
    tag = "webhooks",
    summary = "Retry failed deliveries created in a window",
    security(("apiKey" = [])),
    params(WebhookId),
    request_body = RecoverBody,
    responses(
        (status = 202, description = "Deliveries given a new attempt series", body = RecoveredData),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
        (status = 422, description = "validation_failed", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    tag = "webhooks",
    summary = "Send a signed <service_type>.test event",
    security(("apiKey" = [])),
    params(WebhookId),
    responses(
        (status = 202, description = "Queued", body = TestData),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "deliveries",
    summary = "A webhook's deliveries",
    security(("apiKey" = [])),
    params(WebhookId, DeliveriesQuery),
    responses(
        (status = 200, description = "A page", body = DeliveryPage),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/stats",
    tag = "webhooks",
    summary = "Counts, health and latency",
    security(("apiKey" = [])),
    params(WebhookId),
    responses(
        (status = 200, description = "Stats", body = WebhookStats),
        (status = 404, description = "No such webhook", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    summary = "The app's deliveries (callbacks, webhooks, reports)",
    security(("apiKey" = [])),
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "A page", body = DeliveryPage),
    )
)]
pub async fn deliveries(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: DeliveriesQuery = query(&req)?;
    deliveries_page(&state, &auth.0, q.into_query(None)).await
}

/// `GET /v1/webhooks/deliveries/{delivery_id}` → the item with `url`, `payload`,
/// `attempt_log` and the request `headers` (any delivery of the app: callbacks and
/// reports too).
#[utoipa::path(
    get,
    path = "/v1/webhooks/deliveries/{delivery_id}",
    tag = "deliveries",
    summary = "A delivery with its payload, attempt log and request headers",
    security(("apiKey" = [])),
    params(DeliveryId),
    responses(
        (status = 200, description = "The delivery", body = DeliveryDetail),
        (status = 404, description = "No such delivery", body = ErrorEnvelope),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/deliveries/{delivery_id}/retry",
    tag = "deliveries",
    summary = "A new attempt series (same event id and body)",
    security(("apiKey" = [])),
    params(DeliveryId),
    responses(
        (status = 202, description = "Retrying", body = DeliveryView),
        (status = 404, description = "No such delivery", body = ErrorEnvelope),
    )
)]
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

/// The routes of this module, in the `/v1` scope, in match order:
/// `/webhooks/deliveries/…` comes before `/webhooks/{id}…` so `deliveries` is never
/// read as a webhook id.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new("/webhooks")
            .get(|r| r.to(list))
            .post(|r| r.to(create)),
        Endpoint::new("/webhooks/deliveries/{delivery_id}").get(|r| r.to(delivery)),
        Endpoint::new("/webhooks/deliveries/{delivery_id}/retry").post(|r| r.to(retry)),
        Endpoint::new("/webhooks/{id}")
            .get(|r| r.to(get))
            .patch(|r| r.to(patch))
            .delete(|r| r.to(delete)),
        Endpoint::new("/webhooks/{id}/secret").get(|r| r.to(secret)),
        Endpoint::new("/webhooks/{id}/secret/rotate").post(|r| r.to(rotate_secret)),
        Endpoint::new("/webhooks/{id}/recover").post(|r| r.to(recover)),
        Endpoint::new("/webhooks/{id}/test").post(|r| r.to(test)),
        Endpoint::new("/webhooks/{id}/deliveries").get(|r| r.to(webhook_deliveries)),
        Endpoint::new("/webhooks/{id}/stats").get(|r| r.to(stats)),
        Endpoint::new("/deliveries").get(|r| r.to(deliveries)),
    ]
}
