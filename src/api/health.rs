//! `GET /healthz` and `GET /readyz` (SPEC section 8), for load balancers and probes.
//!
//! These two answer bare `{"status": …}` objects (no envelope) when healthy, which
//! is what probes expect; a not-ready `/readyz` is the usual 503 envelope.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::error::ApiError;
use super::reply::json_response;
use super::ApiState;

/// `GET /healthz`: 200 whenever the process can answer.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "The process runs",
    responses((status = 200, description = "OK: {\"status\": \"ok\"}", content_type = "application/json"))
)]
pub async fn healthz() -> HttpResponse {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

/// `GET /readyz`: 200 once start-up recovery is done and storage takes a write.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Storage writable and recovery done",
    responses((status = 200, description = "Ready: {\"status\": \"ready\"}", content_type = "application/json"))
)]
pub async fn readyz(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    if state.runtime.is_ready() && state.runtime.storage_writable().await {
        Ok(json_response(
            StatusCode::OK,
            br#"{"status":"ready"}"#.to_vec(),
        ))
    } else {
        Err(ApiError::NotReady)
    }
}
