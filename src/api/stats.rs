//! `GET /v1/stats/otp`: read-only OTP counts over the last hour or day (the console's
//! OTP overview). Not in SPEC; an addition that changes no SPEC-defined response.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::error::ErrorEnvelope;
use super::extract::{query, Authenticated};
use super::reply::Reply;
use super::routes::Endpoint;
use super::schemas;
use super::ApiState;

/// The query of `GET /v1/stats/otp`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    /// `hour` (the default) or `day`.
    #[param(value_type = Option<schemas::StatsWindow>)]
    window: Option<String>,
}

/// The routes of this module, under `/v1`.
pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new("/stats/otp").get(|r| r.to(otp))]
}

/// `GET /v1/stats/otp?window=hour|day` → sends by status, outcomes, chart buckets.
#[utoipa::path(
    get,
    path = "/v1/stats/otp",
    tag = "stats",
    summary = "OTP sends and outcomes over the last hour or day, with chart buckets",
    security(("apiKey" = [])),
    params(StatsQuery),
    responses(
        (status = 200, description = "Stats", body = schemas::OtpStats),
        (status = 400, description = "window is not hour or day, or an unknown query field", body = ErrorEnvelope),
    )
)]
pub async fn otp(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: StatsQuery = query(&req)?;
    let stats = state
        .runtime
        .otp_stats(&auth.0, q.window.as_deref())
        .await?;
    Ok(Reply::ok(&stats)?.into_response())
}
