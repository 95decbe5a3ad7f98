//! `/v1/messages` (SPEC section 7): for now, reading one message's delivery status.

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::extract::{path_uuid, Authenticated};
use super::reply::Reply;
use super::ApiState;

/// `GET /v1/messages/{message_id}`: 404 for an unknown id, another app's message,
/// or a path segment that is not a UUID.
pub async fn get_message(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let message_id = path_uuid(&req, "message_id", "message")?;
    let record = state.runtime.message(&auth.0, message_id).await?;
    Ok(Reply::ok(&record)?.into_response())
}

/// Registers the message routes on the `/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/messages/{message_id}").route(web::get().to(get_message)));
}
