//! `/v1/providers/status` (SPEC section 7): the SMS/WhatsApp/Telegram provider
//! reports what became of a message.
//!
//! This is the one `/v1` route that is not called by an app: it carries no
//! `X-API-Key`, and the provider authenticates with
//! `Authorization: Bearer <provider.status_token>`. The handler only authenticates
//! and parses; the status-rank guard, the events and the delivery reports are the
//! message actor's (`otpd_actors::message::status_applies`).

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use otpd_actors::message::MessageStatus;
use otpd_actors::runtime::StatusReport;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{bearer_matches, json_object, token_digest};
use super::reply::Reply;
use super::routes::Endpoint;
use super::schemas::{self, Applied};
use super::ApiState;

/// Body of `POST /v1/providers/status`.
///
/// `status` is typed, so an unknown status is a 400 here; `queued` parses but the
/// runtime refuses it (400), as a provider cannot un-send a message. The ids stay
/// strings: a `message_id` that is not a UUID names no message (404), like any
/// unknown id.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = StatusReport)]
struct StatusBody {
    /// otpd's id of the message (wins when both ids are given).
    message_id: Option<String>,
    /// The provider's id of the message.
    provider_message_id: Option<String>,
    /// What became of the message (`queued` is refused: 400).
    #[schema(schema_with = schemas::reported_status)]
    status: MessageStatus,
    /// Machine-readable failure reason.
    error_code: Option<String>,
    /// Human failure detail.
    error_message: Option<String>,
}

impl From<StatusBody> for StatusReport {
    fn from(body: StatusBody) -> StatusReport {
        StatusReport {
            message_id: body.message_id,
            provider_message_id: body.provider_message_id,
            status: body.status,
            error_code: body.error_code,
            error_message: body.error_message,
        }
    }
}

/// `POST /v1/providers/status` → 200 `{applied, status}`.
///
/// - **Authentication.** `Authorization: Bearer <provider.status_token>`, compared as
///   SHA-256 digests in constant time. When no token is configured (or it is blank)
///   the route answers 401 to everyone: status reports are then simply not accepted,
///   which is the safe default for the `log` provider and for deployments whose
///   provider does not push reports. The token is checked before the body is read,
///   so an unauthenticated caller learns nothing about message ids.
/// - **Idempotency.** `Idempotency-Key` is ignored here: the response store is per
///   app and this caller is no app. None is needed either — reports are idempotent
///   by the status-rank guard: a duplicate or late report answers
///   `{"applied": false, "status": <current>}` and changes and emits nothing.
/// - **Refusals.** Unknown `status`, `queued`, wrong types, or neither `message_id`
///   nor `provider_message_id` → 400 `invalid_request`; an id naming no message →
///   404 `not_found`. When both ids are given, `message_id` wins.
#[utoipa::path(
    post,
    path = "/v1/providers/status",
    tag = "messages",
    summary = "Provider status report (Bearer provider.status_token)",
    security(("providerToken" = [])),
    request_body = StatusBody,
    responses(
        (status = 200, description = "Applied or not (rank guard)", body = Applied),
        (status = 404, description = "No such message", body = ErrorEnvelope),
    )
)]
pub async fn report_status(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    authenticate_provider(&state, &req)?;
    let (parsed, _) = json_object::<StatusBody>(body, state.body_limit)?;
    let applied = state.runtime.report_status(parsed.into()).await?;
    Ok(Reply::ok(&applied)?.into_response())
}

/// Checks the provider's bearer token against `provider.status_token`.
fn authenticate_provider(state: &ApiState, req: &HttpRequest) -> Result<(), ApiError> {
    // A blank token would let `Authorization: Bearer ` in: treat it as unset.
    let Some(expected) = state
        .runtime
        .config()
        .provider
        .status_token
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(token_digest)
    else {
        return Err(ApiError::ProviderUnauthorized);
    };
    if bearer_matches(req, &expected) {
        Ok(())
    } else {
        Err(ApiError::ProviderUnauthorized)
    }
}

/// The route of this module, in the `/v1` scope.
pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new("/providers/status").post(|r| r.to(report_status))]
}
