//! `Idempotency-Key` on every `POST` under `/v1` (SPEC section 1), implemented once.
//!
//! Every POST handler hands its work to [`idempotent`] as a closure. Without the
//! header the closure just runs. With it, the runtime either replays the stored first
//! response (status and bytes, exactly), refuses a reuse with a different request
//! (422) or a duplicate still in flight (409), or lets the closure run and stores
//! what it answered before the client sees it. What counts as "the same request" is
//! the method, the path and the body as canonical JSON (object keys sorted, no
//! insignificant whitespace), so key order and spacing do not matter.

use std::future::Future;

use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use otpd_actors::idempotency::Begin;
use otpd_actors::App;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::reply::{json_response, Reply};
use super::ApiState;

/// The request header (a `HeaderName`: see [`super::extract::API_KEY_HEADER`]).
pub const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// Runs `run` at most once per `Idempotency-Key` (when the request carries one).
pub async fn idempotent<F, Fut>(
    state: &ApiState,
    app: &App,
    req: &HttpRequest,
    body: &[u8],
    run: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let Some(raw) = req.headers().get(IDEMPOTENCY_KEY_HEADER) else {
        return run().await.map(Reply::into_response);
    };
    let key = raw.to_str().map_err(|_| {
        ApiError::invalid_request("Idempotency-Key must be 1–255 printable ASCII characters")
    })?;
    let hash = request_hash(req.method().as_str(), req.path(), body);
    let guard = match state
        .runtime
        .idempotency_begin(app.app_id, key, hash)
        .await?
    {
        Begin::Replay { status, body } => {
            let status = StatusCode::from_u16(status)
                .map_err(|_| ApiError::Internal(format!("stored status {status} is invalid")))?;
            let mut response = json_response(status, body);
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
            return Ok(response);
        }
        Begin::Fresh(guard) => guard,
    };
    let outcome = run().await;
    let (status, bytes) = match &outcome {
        Ok(reply) => (reply.status, reply.body.clone()),
        Err(e) => (e.status(), e.body()),
    };
    let now = state.runtime.clock().now();
    if let Err(e) = guard.finish(status.as_u16(), bytes, now).await {
        // The work is done; refusing now would invite a retry that does it twice.
        // The client gets its answer, and a repeat of the key may run again.
        tracing::error!(error = %e, "storing an idempotent response failed");
    }
    match outcome {
        Ok(reply) => Ok(reply.into_response()),
        Err(e) => Ok(e.error_response()),
    }
}

/// SHA-256 over method, path and canonical body (raw bytes when not JSON).
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => {
            hasher.update(b"json");
            let mut out = Vec::with_capacity(body.len());
            write_canonical(&value, &mut out);
            hasher.update(&out);
        }
        Err(_) => {
            hasher.update(b"raw");
            hasher.update(body);
        }
    }
    hasher.finalize().into()
}

/// Compact JSON with object keys sorted, independent of serde_json's map order.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::Value::from(key.as_str()).to_string().as_bytes());
                out.push(b':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a = request_hash(
            "POST",
            "/v1/otp/request",
            br#"{"a":1,"b":[1,{"y":2,"x":1}]}"#,
        );
        let b = request_hash(
            "POST",
            "/v1/otp/request",
            br#"{ "b": [1, {"x":1, "y":2}], "a": 1 }"#,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn method_path_and_values_do_change_the_hash() {
        let base = request_hash("POST", "/v1/otp/request", br#"{"a":1}"#);
        assert_ne!(base, request_hash("POST", "/v1/otp/send", br#"{"a":1}"#));
        assert_ne!(base, request_hash("PUT", "/v1/otp/request", br#"{"a":1}"#));
        assert_ne!(base, request_hash("POST", "/v1/otp/request", br#"{"a":2}"#));
        assert_ne!(
            request_hash("POST", "/x", b"not json"),
            request_hash("POST", "/x", b"not json!")
        );
    }
}
