//! Getting trustworthy input out of a request: who is calling, and what they sent.
//!
//! - [`Authenticated`]: `X-API-Key` → the app it belongs to (401 otherwise).
//! - [`AdminAuth`]: `Authorization: Bearer <admin token>`, compared in constant time
//!   (404 when the admin API is disabled, 401 when the token is wrong).
//! - [`json_object`]: the body as a JSON object parsed into a request DTO, whatever
//!   the `Content-Type` says; every failure is a 400 (or 413 for an oversized body).
//! - [`query`] and [`path_uuid`]: query strings and path ids without actix's own
//!   plain-text error responses.
//!
//! Handlers take the body as `Result<web::Bytes, actix_web::Error>` and call
//! [`json_object`] after authenticating, so the order of refusals is always
//! 401, then 400/413, then 403, then the runtime's semantic answers.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderName};
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use otpd_actors::{App, Error};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::error::ApiError;
use super::ApiState;

/// The header carrying an app's API key.
///
/// A `HeaderName`, not a `&str`: actix-web's `HeaderMap::get` parses a `&str` into
/// a new, allocated name on every lookup of a non-standard header.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// The app whose `X-API-Key` authenticated the request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<App>);

impl Authenticated {
    /// Refuses (403 `app_mismatch`) a body or query `app_key` naming another app.
    pub fn check_app_key(&self, app_key: &str) -> Result<(), ApiError> {
        if app_key == self.0.app_key {
            Ok(())
        } else {
            Err(Error::AppMismatch.into())
        }
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        // A header that is not visible ASCII cannot be a key we issued: same 401.
        let key = req
            .headers()
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Box::pin(async move {
            let state = state?;
            let key = key.ok_or(Error::Unauthorized)?;
            Ok(Authenticated(state.runtime.authenticate(&key).await?))
        })
    }
}

/// A request carrying the right admin bearer token.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(admin_auth(req))
    }
}

fn admin_auth(req: &HttpRequest) -> Result<AdminAuth, ApiError> {
    let state = state(req)?;
    // Disabled looks exactly like an unknown route: no hint that the API exists.
    let Some(expected) = state.admin_token_digest else {
        return Err(ApiError::RouteNotFound {
            method: req.method().to_string(),
            path: req.path().to_string(),
        });
    };
    if bearer_matches(req, &expected) {
        Ok(AdminAuth)
    } else {
        Err(ApiError::AdminUnauthorized)
    }
}

/// Whether the request carries `Authorization: Bearer <token>` whose digest is
/// `expected`, compared in constant time (admin API, provider status reports).
pub fn bearer_matches(req: &HttpRequest, expected: &[u8; 32]) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .is_some_and(|presented| digests_equal(&token_digest(presented), expected))
}

/// SHA-256 of a token: what the admin token is compared as, so the comparison
/// takes the same time whatever the token's length and content.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two digests ([`subtle::ConstantTimeEq`]: no early exit).
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

fn state(req: &HttpRequest) -> Result<web::Data<ApiState>, ApiError> {
    req.app_data::<web::Data<ApiState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("the API state is not registered".into()))
}

/// Parses the body as a JSON object into `T`.
///
/// `Content-Type` is not checked: clients that forget it still get parsed. Anything
/// that is not a JSON object (empty, malformed, invalid UTF-8, an array, too deep)
/// is 400 `invalid_request` with serde's description, which names the missing field
/// or the wrong type and its position; an oversized body is 413.
pub fn json_object<T: DeserializeOwned>(
    body: Result<Bytes, actix_web::Error>,
    limit: usize,
) -> Result<(T, Bytes), ApiError> {
    let bytes = body.map_err(|e| match e.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::PayloadTooLarge { limit },
        Some(other) => {
            ApiError::invalid_request(format!("could not read the request body: {other}"))
        }
        None => ApiError::invalid_request("could not read the request body"),
    })?;
    if bytes.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let Some(&first) = first else {
        return Err(ApiError::invalid_request(
            "the request body is empty; expected a JSON object",
        ));
    };
    // The usual case, parsed once: a body that opens with `{` and reads as `T`.
    // serde_json checks syntax, nesting depth and trailing bytes the same way here
    // as for a `Value`, and a `T` read from text that opens with `{` was read from
    // an object. Anything else takes the careful path below, which says what is wrong.
    if first == b'{' {
        if let Ok(parsed) = serde_json::from_slice(&bytes) {
            return Ok((parsed, bytes));
        }
    }
    // Parsing to a `Value` first catches syntax and nesting depth, and lets us refuse
    // arrays: serde would otherwise read a struct from a positional array.
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid_request(
            "the request body must be a JSON object",
        ));
    }
    // Deserializing from the bytes (not the `Value`) keeps line and column in errors.
    let parsed = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid_request(format!("invalid request body: {e}")))?;
    Ok((parsed, bytes))
}

/// Parses the query string into `T` (400 `invalid_request` on failure).
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    // serde's own description ("unknown variant `x`, expected one of ..."), not
    // actix's "Query deserialize error:" wrapper around it.
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| {
            let reason = match e {
                actix_web::error::QueryPayloadError::Deserialize(inner) => inner.to_string(),
                other => other.to_string(),
            };
            ApiError::invalid_request(format!("invalid query string: {reason}"))
        })
}

/// A UUID path segment; anything that is not one names no resource (404).
pub fn path_uuid(req: &HttpRequest, name: &str, what: &str) -> Result<Uuid, ApiError> {
    req.match_info()
        .get(name)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::not_found(format!("no such {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Dto {
        #[allow(dead_code)]
        name: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        #[allow(dead_code)]
        name: String,
    }

    fn parse_strict(body: &[u8]) -> Result<Strict, ApiError> {
        json_object::<Strict>(Ok(Bytes::copy_from_slice(body)), 64).map(|(d, _)| d)
    }

    fn parse(body: &[u8]) -> Result<Dto, ApiError> {
        json_object::<Dto>(Ok(Bytes::copy_from_slice(body)), 64).map(|(d, _)| d)
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(parse(br#"{"name":"x"}"#).is_ok());
        for bad in [
            &b""[..],
            b"  ",
            b"[\"x\"]",
            b"{",
            b"\"x\"",
            b"{\"name\":5}",
            b"{}",
            b"\xff\xfe",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{bad:?}");
        }
        // Read once on the fast path, and the same answers as the careful one.
        assert!(parse(b" \n{\"name\": \"x\"} ").is_ok());
        for bad in [
            &b"{\"name\":\"x\"} trailing"[..],
            b"{\"name\":\"x\",\"name\":\"y\"}",
            b"{\"name\":\"x\",\"other\":1}",
        ] {
            let err = parse_strict(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{bad:?}");
        }
        let err = parse(&[b' '; 65]).unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
    }

    #[test]
    fn digest_comparison_is_exact() {
        let a = token_digest("secret-token");
        assert!(digests_equal(&a, &token_digest("secret-token")));
        assert!(!digests_equal(&a, &token_digest("secret-tokem")));
    }
}
