//! `/v1/webhooks…` and `/v1/deliveries` (SPEC section 6). PLACEHOLDER: being written.

use actix_web::web;

/// Registers the webhook and delivery-log routes on the `/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let _ = cfg;
}
