//! `/v1/otp/*` (SPEC section 4): request (alias send), resend, verify, invalidate, status.
//!
//! Each handler authenticates, parses, checks `app_key`, and hands the call to the
//! runtime through the idempotency layer; every rule (attempts, expiry, limits,
//! URL policy) is the runtime's. The response bodies are exactly the spec's tables.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use otpd_actors::clock::rfc3339;
use otpd_actors::message::Channel;
use otpd_actors::otp::VerifyOutcome;
use otpd_actors::{Error, SendOtp, VerifyOtp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{json_object, query, Authenticated};
use super::idempotency::idempotent;
use super::reply::Reply;
use super::routes::Endpoint;
use super::schemas::{self, FlakeView, Issued};
use super::ApiState;

/// Body of `POST /v1/otp/request`, `/send` and `/resend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OtpSend)]
struct SendBody {
    /// The phone, in any format the number parser accepts (E.164 is safest).
    phone_number: String,
    /// The calling app's `app_key` (403 when it is another app's).
    app_key: String,
    /// The channel (default `sms`).
    #[schema(value_type = Option<schemas::Channel>)]
    delivery_method: Option<Channel>,
    /// Lifetime of this code in minutes (default: the app's setting).
    ///
    /// Read as any integer so a value outside 1–60 is a 422 (the runtime's range
    /// check), while a non-integer is a 400.
    #[schema(minimum = 1, maximum = 60)]
    minutes_to_expire: Option<i64>,
    /// Where the outcome of this flake is delivered, signed.
    callback_url: Option<String>,
    /// Secret signing the callbacks (default: a per-app derived secret).
    #[schema(min_length = 1, max_length = 256)]
    callback_secret: Option<String>,
}

impl SendBody {
    fn into_send(self) -> Result<SendOtp, ApiError> {
        let minutes_to_expire = self
            .minutes_to_expire
            .map(|m| {
                u32::try_from(m).map_err(|_| {
                    Error::Validation("minutes_to_expire must be between 1 and 60".into())
                })
            })
            .transpose()?;
        Ok(SendOtp {
            phone_number: self.phone_number,
            delivery_method: self.delivery_method,
            minutes_to_expire,
            callback_url: self.callback_url,
            callback_secret: self.callback_secret,
        })
    }
}

/// Body of `POST /v1/otp/verify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OtpVerify)]
struct VerifyBody {
    /// The phone the code was sent to.
    phone_number: String,
    /// The calling app's `app_key`.
    app_key: String,
    /// The code the user typed.
    code: String,
    /// Where the outcome is delivered, signed.
    callback_url: Option<String>,
    /// Secret signing that callback.
    callback_secret: Option<String>,
}

/// Body of `POST /v1/otp/invalidate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OtpPhone)]
struct InvalidateBody {
    /// The phone whose pending flake is invalidated.
    phone_number: String,
    /// The calling app's `app_key`.
    app_key: String,
}

/// Query of `GET /v1/otp/status`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusQuery {
    /// The phone of the flake.
    phone_number: String,
    /// The calling app's `app_key`.
    app_key: String,
}

/// The routes of this module, in the `/v1` scope.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new("/otp/request").post(|r| r.to(request)),
        Endpoint::new("/otp/send").post(|r| r.to(send)),
        Endpoint::new("/otp/resend").post(|r| r.to(resend)),
        Endpoint::new("/otp/verify").post(|r| r.to(verify)),
        Endpoint::new("/otp/invalidate").post(|r| r.to(invalidate)),
        Endpoint::new("/otp/status").get(|r| r.to(status)),
    ]
}

/// `POST /v1/otp/request`: issue a code, replacing any flake of the phone.
#[utoipa::path(
    post,
    path = "/v1/otp/request",
    tag = "otp",
    summary = "Issue a code (replaces any flake for the phone)",
    security(("apiKey" = [])),
    request_body = SendBody,
    responses(
        (status = 200, description = "Code issued and sent (never returned)", body = Issued),
        (status = 403, description = "app_key is not the app of this API key", body = ErrorEnvelope),
        (status = 422, description = "invalid_phone_number, country_not_allowed, invalid_callback_url, validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited (Retry-After header)", body = ErrorEnvelope),
    )
)]
pub async fn request(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    issue(state, auth, req, body, Kind::Request).await
}

/// `POST /v1/otp/send`: the alias of `/v1/otp/request`.
#[utoipa::path(
    post,
    path = "/v1/otp/send",
    tag = "otp",
    summary = "Alias of /v1/otp/request",
    security(("apiKey" = [])),
    request_body = SendBody,
    responses(
        (status = 200, description = "Code issued and sent (never returned)", body = Issued),
        (status = 403, description = "app_key is not the app of this API key", body = ErrorEnvelope),
        (status = 422, description = "invalid_phone_number, country_not_allowed, invalid_callback_url, validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited (Retry-After header)", body = ErrorEnvelope),
    )
)]
pub async fn send(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    issue(state, auth, req, body, Kind::Request).await
}

/// `POST /v1/otp/resend`: a new code for the pending flake.
#[utoipa::path(
    post,
    path = "/v1/otp/resend",
    tag = "otp",
    summary = "New code for a pending flake",
    security(("apiKey" = [])),
    request_body = SendBody,
    responses(
        (status = 200, description = "Code issued and sent (never returned)", body = Issued),
        (status = 403, description = "app_key is not the app of this API key", body = ErrorEnvelope),
        (status = 404, description = "No pending flake", body = ErrorEnvelope),
        (status = 422, description = "invalid_phone_number, country_not_allowed, invalid_callback_url, validation_failed", body = ErrorEnvelope),
        (status = 429, description = "rate_limited (Retry-After header)", body = ErrorEnvelope),
    )
)]
pub async fn resend(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    issue(state, auth, req, body, Kind::Resend).await
}

#[derive(Clone, Copy)]
enum Kind {
    Request,
    Resend,
}

async fn issue(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
    kind: Kind,
) -> Result<HttpResponse, ApiError> {
    let (parsed, bytes) = json_object::<SendBody>(body, state.body_limit)?;
    auth.check_app_key(&parsed.app_key)?;
    let app = auth.0;
    idempotent(&state, &app, &req, &bytes, || async {
        let send = parsed.into_send()?;
        let issued = match kind {
            Kind::Request => state.runtime.request(&app, send).await?,
            Kind::Resend => state.runtime.resend(&app, send).await?,
        };
        Reply::ok(&issued)
    })
    .await
}

/// The answer of a successful verify.
#[derive(Serialize, ToSchema)]
#[schema(as = Verified)]
struct VerifiedData<'a> {
    /// The flake.
    flake_id: Uuid,
    /// Canonical phone number (E.164 digits, no `+`).
    phone_number: &'a str,
    /// Always `verified`.
    #[schema(schema_with = schemas::literal_verified)]
    status: &'static str,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    verified_at: String,
}

/// `POST /v1/otp/verify`: 200 when verified, else 422/404 as SPEC section 4's table.
#[utoipa::path(
    post,
    path = "/v1/otp/verify",
    tag = "otp",
    summary = "Verify a code",
    security(("apiKey" = [])),
    request_body = VerifyBody,
    responses(
        (status = 200, description = "Verified", body = VerifiedData),
        (status = 403, description = "app_key mismatch", body = ErrorEnvelope),
        (status = 404, description = "No flake for (phone, app)", body = ErrorEnvelope),
        (status = 422, description = "invalid_code, max_attempts, expired, already_verified (data: flake state), invalid_phone_number, invalid_callback_url", body = ErrorEnvelope),
    )
)]
pub async fn verify(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (parsed, bytes) = json_object::<VerifyBody>(body, state.body_limit)?;
    auth.check_app_key(&parsed.app_key)?;
    let app = auth.0;
    idempotent(&state, &app, &req, &bytes, || async {
        let result = state
            .runtime
            .verify(
                &app,
                VerifyOtp {
                    phone_number: parsed.phone_number,
                    code: parsed.code,
                    callback_url: parsed.callback_url,
                    callback_secret: parsed.callback_secret,
                },
            )
            .await?;
        match result.outcome {
            VerifyOutcome::Verified {
                flake_id,
                verified_at,
            } => Reply::ok(&VerifiedData {
                flake_id,
                phone_number: &result.phone_number,
                status: "verified",
                verified_at: rfc3339(verified_at),
            }),
            refused => Err(refusal(refused)),
        }
    })
    .await
}

/// The 422 of a verify that found the flake but did not verify it.
fn refusal(outcome: VerifyOutcome) -> ApiError {
    use serde_json::json;
    match outcome {
        VerifyOutcome::InvalidCode {
            flake_id,
            remaining_attempts,
        } => ApiError::CodeRefused {
            code: "invalid_code",
            message: "the code is not correct".into(),
            data: json!({
                "flake_id": flake_id.to_string(),
                "status": "pending",
                "remaining_attempts": remaining_attempts,
            }),
        },
        VerifyOutcome::MaxAttempts { flake_id, .. } => ApiError::CodeRefused {
            code: "max_attempts",
            message: "too many wrong codes; request a new code".into(),
            data: json!({
                "flake_id": flake_id.to_string(),
                "status": "failed",
                "remaining_attempts": 0,
            }),
        },
        VerifyOutcome::Expired { flake_id, .. } => ApiError::CodeRefused {
            code: "expired",
            message: "the code has expired; request a new code".into(),
            data: json!({"flake_id": flake_id.to_string(), "status": "expired"}),
        },
        VerifyOutcome::AlreadyVerified { flake_id } => ApiError::CodeRefused {
            code: "already_verified",
            message: "this code was already used".into(),
            data: json!({"flake_id": flake_id.to_string(), "status": "verified"}),
        },
        VerifyOutcome::Verified { flake_id, .. } => ApiError::Internal(format!(
            "flake {flake_id}: a successful verify was treated as a refusal"
        )),
    }
}

/// The answer of an invalidate.
#[derive(Serialize, ToSchema)]
#[schema(as = Invalidated)]
struct InvalidatedData {
    /// The flake.
    flake_id: Uuid,
    /// Always `invalidated`.
    #[schema(schema_with = schemas::literal_invalidated)]
    status: &'static str,
}

/// `POST /v1/otp/invalidate`: the pending flake can no longer be verified.
#[utoipa::path(
    post,
    path = "/v1/otp/invalidate",
    tag = "otp",
    summary = "Invalidate the pending flake",
    security(("apiKey" = [])),
    request_body = InvalidateBody,
    responses(
        (status = 200, description = "Invalidated", body = InvalidatedData),
        (status = 403, description = "app_key mismatch", body = ErrorEnvelope),
        (status = 404, description = "No pending flake", body = ErrorEnvelope),
    )
)]
pub async fn invalidate(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (parsed, bytes) = json_object::<InvalidateBody>(body, state.body_limit)?;
    auth.check_app_key(&parsed.app_key)?;
    let app = auth.0;
    idempotent(&state, &app, &req, &bytes, || async {
        let (flake_id, _phone) = state.runtime.invalidate(&app, &parsed.phone_number).await?;
        Reply::ok(&InvalidatedData {
            flake_id,
            status: "invalidated",
        })
    })
    .await
}

/// `GET /v1/otp/status?phone_number=…&app_key=…`: the current flake of the phone.
#[utoipa::path(
    get,
    path = "/v1/otp/status",
    tag = "otp",
    summary = "Status of the current flake",
    security(("apiKey" = [])),
    params(StatusQuery),
    responses(
        (status = 200, description = "Flake status", body = FlakeView),
        (status = 403, description = "app_key mismatch", body = ErrorEnvelope),
        (status = 404, description = "No flake", body = ErrorEnvelope),
    )
)]
pub async fn status(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: StatusQuery = query(&req)?;
    auth.check_app_key(&q.app_key)?;
    let view = state.runtime.status(&auth.0, &q.phone_number).await?;
    Ok(Reply::ok(&view)?.into_response())
}
