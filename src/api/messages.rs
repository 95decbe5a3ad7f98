//! `/v1/messages` (SPEC section 7): queueing a message and reading its status.
//!
//! `POST /v1/messages` parses the body into the runtime's [`SendMessage`] and hands
//! it over through the idempotency layer; the runtime validates the phone number,
//! the text length, the sender ID and the delivery-report URL, and commits the
//! message as `queued` before the provider is called — hence 202. What happens next
//! (sent, delivered, failed) is visible through `GET /v1/messages/{message_id}`, the
//! channel webhook and the message's own delivery reports;
//! `GET /v1/messages/{message_id}/history` (an otpd addition) lists every status
//! the message reached and when.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use otpd_actors::message::{Channel, MessageStatus, ReportType, StatusStep};
use otpd_actors::runtime::{DeliveryReportRequest, SendMessage};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{json_object, path_uuid, Authenticated};
use super::idempotency::idempotent;
use super::reply::Reply;
use super::routes::Endpoint;
use super::schemas::{self, MessageRecord};
use super::ApiState;

/// Body of `POST /v1/messages`.
///
/// Types are checked here (a wrong type, a missing field, an unknown `channel` or
/// `delivery_report_type` is a 400); values — phone, text length, URL — are the
/// runtime's rules and come back as 422s.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MessageSend)]
struct SendBody {
    /// The channel.
    ///
    /// Required: the spec marks no default, and silently texting over SMS when a
    /// client forgot the field would be a surprise (and a cost).
    #[schema(value_type = schemas::Channel)]
    channel: Channel,
    /// The phone, in any format the number parser accepts.
    to: String,
    /// The text.
    #[schema(min_length = 1, max_length = 1600)]
    text: String,
    /// Sender ID passed to the provider.
    sender_id: Option<String>,
    /// Per-message delivery reports, signed, to a URL of the caller.
    #[schema(inline)]
    delivery_report: Option<ReportBody>,
}

/// `delivery_report` of `POST /v1/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    /// Where the reports go.
    webhook_url: String,
    /// Which statuses are reported (default `all`).
    #[schema(value_type = Option<schemas::ReportType>)]
    delivery_report_type: Option<ReportType>,
    /// Secret signing the reports.
    webhook_secret: Option<String>,
}

impl From<SendBody> for SendMessage {
    fn from(body: SendBody) -> SendMessage {
        SendMessage {
            channel: body.channel,
            to: body.to,
            text: body.text,
            sender_id: body.sender_id,
            delivery_report: body.delivery_report.map(|r| DeliveryReportRequest {
                webhook_url: r.webhook_url,
                delivery_report_type: r.delivery_report_type,
                webhook_secret: r.webhook_secret,
            }),
        }
    }
}

/// The 202 answer of `POST /v1/messages`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MessageAccepted)]
struct QueuedData {
    /// The message.
    message_id: Uuid,
    /// Always `queued`: the answer is given once the message is committed, before
    /// the provider is called.
    #[schema(schema_with = schemas::literal_queued)]
    status: MessageStatus,
}

/// The routes of this module, in the `/v1` scope.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new("/messages").post(|r| r.to(send_message)),
        Endpoint::new("/messages/{message_id}").get(|r| r.to(get_message)),
        Endpoint::new("/messages/{message_id}/history").get(|r| r.to(get_message_history)),
    ]
}

/// `POST /v1/messages`: 202 `{message_id, status: "queued"}`.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "messages",
    summary = "Queue a message",
    security(("apiKey" = [])),
    request_body = SendBody,
    responses(
        (status = 202, description = "Queued", body = QueuedData),
        (status = 422, description = "invalid_phone_number, validation_failed, invalid_callback_url", body = ErrorEnvelope),
    )
)]
pub async fn send_message(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (parsed, bytes) = json_object::<SendBody>(body, state.body_limit)?;
    let app = auth.0;
    idempotent(&state, &app, &req, &bytes, || async {
        let record = state.runtime.send_message(&app, parsed.into()).await?;
        Reply::with_status(
            StatusCode::ACCEPTED,
            &QueuedData {
                message_id: record.message_id,
                status: record.status,
            },
        )
    })
    .await
}

/// `GET /v1/messages/{message_id}`: 404 for an unknown id, another app's message,
/// or a path segment that is not a UUID.
#[utoipa::path(
    get,
    path = "/v1/messages/{message_id}",
    tag = "messages",
    summary = "A message and its delivery status",
    security(("apiKey" = [])),
    params(("message_id" = Uuid, Path, description = "The message")),
    responses(
        (status = 200, description = "The message", body = MessageRecord),
        (status = 404, description = "No such message", body = ErrorEnvelope),
    )
)]
pub async fn get_message(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let message_id = path_uuid(&req, "message_id", "message")?;
    let record = state.runtime.message(&auth.0, message_id).await?;
    Ok(Reply::ok(&record)?.into_response())
}

/// The answer of `GET /v1/messages/{message_id}/history`.
#[derive(Debug, Serialize)]
struct HistoryData {
    message_id: Uuid,
    status: MessageStatus,
    history: Vec<StatusStep>,
}

/// `GET /v1/messages/{message_id}/history`: the statuses a message reached, oldest
/// first. Not in SPEC (an addition that changes no SPEC-defined response); 404 as
/// for `GET /v1/messages/{message_id}`.
#[utoipa::path(
    get,
    path = "/v1/messages/{message_id}/history",
    tag = "messages",
    summary = "A message's status history",
    security(("apiKey" = [])),
    params(("message_id" = Uuid, Path, description = "The message")),
    responses(
        (status = 200, description = "Its history", body = schemas::MessageHistory),
        (status = 404, description = "No such message", body = ErrorEnvelope),
    )
)]
pub async fn get_message_history(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let message_id = path_uuid(&req, "message_id", "message")?;
    let record = state.runtime.message(&auth.0, message_id).await?;
    let data = HistoryData {
        message_id: record.message_id,
        status: record.status,
        history: record.history(),
    };
    Ok(Reply::ok(&data)?.into_response())
}
