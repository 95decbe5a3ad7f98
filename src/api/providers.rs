//! `/v1/providers/status` (SPEC section 7). PLACEHOLDER: being written.

use actix_web::web;

/// Registers the provider status route on the `/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let _ = cfg;
}
