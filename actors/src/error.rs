//! The runtime's error type: every way a call into the runtime can be refused.
//!
//! Each variant carries the wire `error.code` it maps to (SPEC section 1), so the
//! HTTP layer maps errors to the envelope in one place and embedders see the same
//! codes the daemon's clients do.

use crate::storage::StorageError;

/// A refusal or failure from the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or incomplete input (HTTP 400).
    #[error("{0}")]
    InvalidRequest(String),
    /// Missing or unknown API key (HTTP 401).
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The `app_key` in the body is not the app the API key belongs to (HTTP 403).
    #[error("app_key does not match the app of this API key")]
    AppMismatch,
    /// No such resource, or no active OTP for (phone, app) (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with existing state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The phone number is not a valid, possible number (HTTP 422).
    #[error("{0}")]
    InvalidPhoneNumber(String),
    /// The number's country is not in the app's `allowed_countries` (HTTP 422).
    #[error("phone numbers from {0} are not allowed for this app")]
    CountryNotAllowed(String),
    /// A callback/webhook URL broke the URL policy (HTTP 422).
    #[error("{0}")]
    InvalidCallbackUrl(String),
    /// A field has a value outside what the API accepts (HTTP 422).
    #[error("{0}")]
    Validation(String),
    /// An `Idempotency-Key` was reused with a different request (HTTP 422).
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// A send would exceed a rate limit (HTTP 429 with `Retry-After`).
    #[error("too many codes sent; retry in {retry_after_secs} s")]
    RateLimited {
        /// Whole seconds until the send would be allowed (at least 1).
        retry_after_secs: u64,
    },
    /// The runtime is shutting down, or storage is not writable (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed underneath a call (logged; HTTP 503 without detail).
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
}

impl Error {
    /// The stable snake_case `error.code` of SPEC section 1.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::Unauthorized => "unauthorized",
            Error::AppMismatch => "app_mismatch",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::InvalidPhoneNumber(_) => "invalid_phone_number",
            Error::CountryNotAllowed(_) => "country_not_allowed",
            Error::InvalidCallbackUrl(_) => "invalid_callback_url",
            Error::Validation(_) => "validation_failed",
            Error::IdempotencyKeyReused => "idempotency_key_reused",
            Error::RateLimited { .. } => "rate_limited",
            Error::Unavailable(_) | Error::Storage(_) => "unavailable",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidRequest(_) => 400,
            Error::Unauthorized => 401,
            Error::AppMismatch => 403,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::InvalidPhoneNumber(_)
            | Error::CountryNotAllowed(_)
            | Error::InvalidCallbackUrl(_)
            | Error::Validation(_)
            | Error::IdempotencyKeyReused => 422,
            Error::RateLimited { .. } => 429,
            Error::Unavailable(_) | Error::Storage(_) => 503,
        }
    }

    /// The message safe to show a caller: internal detail (storage) is hidden.
    pub fn public_message(&self) -> String {
        match self {
            Error::Storage(_) => "storage is not available; try again".to_string(),
            other => other.to_string(),
        }
    }
}
