//! `Reply`: a successful answer, already rendered as `{"success": true, "data": …}`.
//!
//! Handlers produce a `Reply` rather than an `HttpResponse` so the idempotency layer
//! can store exactly the status and bytes the client received, and replay them.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

use super::error::ApiError;

/// A success envelope with its status, ready to send or to store for replay.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status (200 or 201).
    pub status: StatusCode,
    /// The serialized envelope.
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct SuccessEnvelope<'a, T: Serialize> {
    success: bool,
    data: &'a T,
}

impl Reply {
    /// 200 with `data` in the envelope.
    pub fn ok<T: Serialize>(data: &T) -> Result<Reply, ApiError> {
        Reply::with_status(StatusCode::OK, data)
    }

    /// 201 with `data` in the envelope.
    pub fn created<T: Serialize>(data: &T) -> Result<Reply, ApiError> {
        Reply::with_status(StatusCode::CREATED, data)
    }

    /// `status` with `data` in the envelope.
    pub fn with_status<T: Serialize>(status: StatusCode, data: &T) -> Result<Reply, ApiError> {
        let body = serde_json::to_vec(&SuccessEnvelope {
            success: true,
            data,
        })
        .map_err(|e| ApiError::Internal(format!("serializing a response: {e}")))?;
        Ok(Reply { status, body })
    }

    /// The HTTP response carrying this reply.
    pub fn into_response(self) -> HttpResponse {
        json_response(self.status, self.body)
    }
}

/// A JSON response with `status` and pre-rendered `body`.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(body)
}
