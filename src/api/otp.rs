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
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{json_object, query, Authenticated};
use super::idempotency::idempotent;
use super::reply::Reply;
use super::ApiState;

/// Body of `POST /v1/otp/request`, `/send` and `/resend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    phone_number: String,
    app_key: String,
    delivery_method: Option<Channel>,
    /// Read as any integer so a value outside 1–60 is a 422 (the runtime's range
    /// check), while a non-integer is a 400.
    minutes_to_expire: Option<i64>,
    callback_url: Option<String>,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    phone_number: String,
    app_key: String,
    code: String,
    callback_url: Option<String>,
    callback_secret: Option<String>,
}

/// Body of `POST /v1/otp/invalidate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    phone_number: String,
    app_key: String,
}

/// Query of `GET /v1/otp/status`.
#[derive(Debug, Deserialize)]
struct StatusQuery {
    phone_number: String,
    app_key: String,
}

/// `POST /v1/otp/request` (and its alias `/v1/otp/send`).
pub async fn request(
    state: web::Data<ApiState>,
    auth: Authenticated,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    issue(state, auth, req, body, Kind::Request).await
}

/// `POST /v1/otp/resend`.
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

#[derive(Serialize)]
struct VerifiedData<'a> {
    flake_id: Uuid,
    phone_number: &'a str,
    status: &'static str,
    verified_at: String,
}

/// `POST /v1/otp/verify`: 200 when verified, else 422/404 as SPEC section 4's table.
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

#[derive(Serialize)]
struct InvalidatedData {
    flake_id: Uuid,
    status: &'static str,
}

/// `POST /v1/otp/invalidate`.
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

/// `GET /v1/otp/status?phone_number=…&app_key=…`.
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
