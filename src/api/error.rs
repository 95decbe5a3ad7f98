//! `ApiError`: the one place an error becomes the JSON envelope of SPEC section 1.
//!
//! Handlers return `Result<HttpResponse, ApiError>` and never build error JSON by
//! hand. Runtime refusals keep the `error.code` and HTTP status the runtime gives
//! them ([`otpd_actors::Error::code`]); the few cases only HTTP knows about (body too
//! large, unknown route, wrong method, admin token) are variants here. Nothing maps to
//! a 500: internal failures are logged with their detail and answered 503 with a
//! generic message, so internals never leak.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// What a caller is told when storage or the runtime fails underneath a call.
const UNAVAILABLE_MESSAGE: &str = "otpd is temporarily unavailable; try again";

/// Every way an API call can be refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal from the runtime (carries its own code and status).
    #[error(transparent)]
    Runtime(#[from] otpd_actors::Error),
    /// The body is over the size limit (413 `payload_too_large`).
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No route matches the path (404 `not_found`).
    #[error("no such route: {method} {path}")]
    RouteNotFound {
        /// Request method.
        method: String,
        /// Request path (without the query string).
        path: String,
    },
    /// The route exists but not with this method (405 `method_not_allowed`).
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The request's header block is over the limit (431
    /// `request_header_fields_too_large`).
    #[error("the request headers are larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes (names, values and separators of every header).
        limit: usize,
    },
    /// Missing or wrong admin bearer token (401 `unauthorized`).
    #[error("missing or invalid admin token")]
    AdminUnauthorized,
    /// Missing or wrong provider status token on `/v1/providers/status` (401 `unauthorized`).
    #[error("missing or invalid provider status token")]
    ProviderUnauthorized,
    /// A verify that found the flake but refused the code (422, SPEC section 4's
    /// table): the envelope carries `data` so the client sees the flake's state.
    #[error("{message}")]
    CodeRefused {
        /// `invalid_code`, `max_attempts`, `expired` or `already_verified`.
        code: &'static str,
        /// Human text.
        message: String,
        /// `{flake_id, status, remaining_attempts?}`.
        data: serde_json::Value,
    },
    /// Start-up recovery is not done, shutdown has begun, or storage refuses writes
    /// (503 `unavailable`; probes poll this, so it is not logged as an error).
    #[error("otpd is not ready")]
    NotReady,
    /// Something inside the API layer failed (logged; 503 without detail).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 `invalid_request` with `message`.
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::Runtime(otpd_actors::Error::InvalidRequest(message.into()))
    }

    /// A 404 `not_found` with `message`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::Runtime(otpd_actors::Error::NotFound(message.into()))
    }

    /// The stable snake_case `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Runtime(e) => e.code(),
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::HeadersTooLarge { .. } => "request_header_fields_too_large",
            ApiError::RouteNotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::AdminUnauthorized | ApiError::ProviderUnauthorized => "unauthorized",
            ApiError::CodeRefused { code, .. } => code,
            ApiError::NotReady | ApiError::Internal(_) => "unavailable",
        }
    }

    /// The HTTP status; never a 5xx other than 503.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Runtime(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AdminUnauthorized | ApiError::ProviderUnauthorized => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::CodeRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotReady | ApiError::Internal(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The message a caller may see: internal detail is replaced by a generic text.
    fn public_message(&self) -> String {
        match self {
            ApiError::Runtime(
                otpd_actors::Error::Storage(_) | otpd_actors::Error::Unavailable(_),
            )
            | ApiError::Internal(_) => UNAVAILABLE_MESSAGE.to_string(),
            ApiError::Runtime(e) => e.public_message(),
            other => other.to_string(),
        }
    }

    /// The envelope bytes: `{"success": false, "error": {code, message}, "data"?}`.
    /// Also what the idempotency layer stores for a refused request.
    pub fn body(&self) -> Vec<u8> {
        let envelope = ErrorEnvelope {
            success: false,
            error: ErrorBody {
                code: self.code(),
                message: self.public_message(),
            },
            data: match self {
                ApiError::CodeRefused { data, .. } => Some(data),
                _ => None,
            },
        };
        // Serializing plain strings and a `Value` cannot fail; the fallback is a
        // fixed, valid envelope all the same.
        serde_json::to_vec(&envelope).unwrap_or_else(|_| {
            br#"{"success":false,"error":{"code":"unavailable","message":"otpd is temporarily unavailable; try again"}}"#.to_vec()
        })
    }

    /// Logs failures whose detail must not reach the caller.
    fn log(&self) {
        match self {
            ApiError::Runtime(otpd_actors::Error::Storage(e)) => {
                tracing::error!(error = %e, "storage failed under an API call");
            }
            ApiError::Runtime(otpd_actors::Error::Unavailable(reason)) => {
                tracing::error!(%reason, "runtime unavailable under an API call");
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error under an API call");
            }
            _ => {}
        }
    }
}

/// `{"success": false, "error": {code, message}, "data"?}`: every refusal.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorEnvelope<'a> {
    /// Always `false`.
    #[schema(schema_with = always_false)]
    success: bool,
    /// What went wrong.
    error: ErrorBody,
    /// The flake's state, on the 422s of a verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    data: Option<&'a serde_json::Value>,
}

/// `error` of the envelope.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
struct ErrorBody {
    /// Stable snake_case code (`invalid_request`, `not_found`, `rate_limited`, …).
    code: &'static str,
    /// Human text; never internal detail.
    message: String,
}

/// `{"type": "boolean", "enum": [false]}`.
fn always_false() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Boolean)
        .enum_values(Some([false]))
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let mut response = HttpResponse::build(self.status());
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        match self {
            ApiError::Runtime(otpd_actors::Error::RateLimited { retry_after_secs }) => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Runtime(
                otpd_actors::Error::Storage(_) | otpd_actors::Error::Unavailable(_),
            )
            | ApiError::NotReady
            | ApiError::Internal(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            ApiError::AdminUnauthorized | ApiError::ProviderUnauthorized => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            _ => {}
        }
        response.body(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn parts(e: ApiError) -> (u16, serde_json::Value, Option<String>) {
        let resp = e.error_response();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = resp.status().as_u16();
        let bytes = resp.into_body().try_into_bytes().unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap(), retry)
    }

    #[test]
    fn rate_limited_is_429_with_retry_after() {
        let (status, body, retry) = parts(ApiError::Runtime(otpd_actors::Error::RateLimited {
            retry_after_secs: 17,
        }));
        assert_eq!(status, 429);
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(retry.as_deref(), Some("17"));
    }

    #[test]
    fn internal_failures_are_503_without_detail() {
        let (status, body, _) = parts(ApiError::Internal("secret detail".into()));
        assert_eq!(status, 503);
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(!body.to_string().contains("secret detail"));
        let (status, body, _) = parts(ApiError::Runtime(otpd_actors::Error::Unavailable(
            "actor mailbox closed".into(),
        )));
        assert_eq!(status, 503);
        assert!(!body.to_string().contains("mailbox"));
    }

    #[test]
    fn refused_codes_carry_data() {
        let (status, body, _) = parts(ApiError::CodeRefused {
            code: "invalid_code",
            message: "wrong".into(),
            data: serde_json::json!({"remaining_attempts": 2}),
        });
        assert_eq!(status, 422);
        assert_eq!(body["success"], false);
        assert_eq!(body["data"]["remaining_attempts"], 2);
    }
}
